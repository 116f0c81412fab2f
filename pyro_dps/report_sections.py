"""The report's first sections, the ones a person acts on: the ten-second summary, the flagged examples with
their suggested labels, and the label confusion among them; plus the page's small sort/filter script.

Suggested label: the class the run's posterior predictive finds most likely for the example, the softmax
averaged over the run's theta snapshots (`posterior.safetensors`, read as `pyro-dps score` reads it, no
pickle) on the model inputs examples.npz stores for the listed examples. It is shown only when both are
there and the run's model is a built-in one (a run directory never makes pyro-dps import a file it names).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import MAX_FLAGGED, MAX_LEVELS, MAX_TEXT, _Examples, _Plan, _badge, _cell, _esc, _fmt, _table, \
    filter_box, flagged_order
from .selection import corruption_rate, corruption_rate_by_group

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '' && !isNaN(v)) return parseFloat(v);
    var t = cell.textContent.trim();
    return (t !== '' && !isNaN(t)) ? parseFloat(t) : t.toLowerCase();
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('thead th');
    heads.forEach(function (th, i) {
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var asc = th.getAttribute('data-dir') !== 'asc', body = table.tBodies[0];
        heads.forEach(function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        Array.from(body.rows).map(function (r, n) { return [key(r.cells[i]), n, r]; }).sort(function (a, b) {
          var x = a[0], y = b[0], c;
          if (typeof x === typeof y) c = x < y ? -1 : (x > y ? 1 : 0); else c = typeof x === 'number' ? -1 : 1;
          return (asc ? c : -c) || a[1] - b[1];
        }).forEach(function (e) { body.appendChild(e[2]); });
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function (box) {
    var table = document.getElementById(box.getAttribute('data-table'));
    box.addEventListener('input', function () {
      var q = box.value.trim().toLowerCase();
      Array.from(table.tBodies[0].rows).forEach(function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  });
})();
"""


# ------------------------------------------------------------------------------------------- suggested labels
def suggest_labels(run_dir: Path, info: _Examples, labels: np.ndarray | None) -> tuple[dict, str]:
    """({position: (suggested class, its probability)}, note) for the examples whose inputs the run stored."""
    if not info.inputs:
        return {}, (f"Suggested labels need the examples' model inputs in examples.npz, which this run did not "
                    "store (a run of an older pyro-dps, or inputs larger than the report keeps).")
    try:
        probs, k = _predictive(run_dir, info, labels)
    except Exception as exc:  # noqa: BLE001 - a page without suggestions is still a page
        return {}, f"Suggested labels unavailable: {type(exc).__name__}: {str(exc)[:160]}"
    pos = sorted(info.inputs)
    best = probs.argmax(1)
    out = {p: (int(c), float(probs[i, c])) for i, (p, c) in enumerate(zip(pos, best))}
    return out, (f"Suggested label: the most likely class under the posterior predictive (softmax averaged over "
                 f"the run's {k} theta snapshots).")


def _predictive(run_dir: Path, info: _Examples, labels: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(class probabilities (examples, classes) averaged over the snapshots, snapshots used)."""
    import torch

    from .context import Problem
    from .errors import DataError
    from .potential import TracePotential
    from .scenario import build_network
    from .scoring import _ShapeOnly, load_posterior_state, scoring_model

    state = load_posterior_state(run_dir)
    model = scoring_model(state, None)  # built-in models only: ConfigError for a run's own model file
    pos = sorted(info.inputs)
    x = torch.as_tensor(np.stack([info.inputs[p] for p in pos]))
    x = x.float() if x.is_floating_point() else x
    if tuple(x.shape[1:]) != tuple(state["input_shape"]):
        raise DataError(f"stored inputs have shape {tuple(x.shape[1:])}, the run's {tuple(state['input_shape'])}")
    y = torch.as_tensor(np.asarray(labels)[pos] if labels is not None else np.zeros(len(pos)), dtype=torch.long)
    net = build_network(state["network"], _ShapeOnly(x.shape[1:], state["num_classes"]))
    problem = Problem(net, x, y, x[:1], y[:1])
    potential = TracePotential(model, problem, state["hyper"])
    thetas = state["snapshots"] or state["final_theta"]
    if any(t.numel() != potential.theta_size for t in thetas):
        raise DataError("the run's theta does not fit the rebuilt network")
    with torch.no_grad():
        total = sum(problem.forward(potential.network_params(t.float()), x).softmax(-1) for t in thetas)
    return (total / len(thetas)).double().numpy(), len(thetas)


# ------------------------------------------------------------------------------------------- summary
def _rate(est: float, lo: float, hi: float) -> str:
    return f"<b>{100 * est:.1f}%</b> <span class=\"muted\">(90%: {100 * lo:.1f}&ndash;{100 * hi:.1f}%)</span>"


def _convergence_sentence(status: str, checks) -> str:
    bad = [c.name for c in checks if c.status != "pass"]
    if status == "pass":
        return f"{_badge(status)} Convergence: every check passes; the numbers below can be trusted as estimates."
    return (f"{_badge(status)} Convergence: {len(bad)} check(s) do not pass ({_esc(', '.join(bad[:6]))}). Run more "
            "chains and more draws (<code>sampler.chains</code>, <code>sampler.samples</code>, a longer "
            "<code>warmup</code>) before acting on borderline examples. The examples with a high R-hat are "
            "ones some chains keep and others drop: ambiguous examples to look at by hand, not a broken sampler "
            "(see <a href=\"#diagnostics\">diagnostics</a> and <a href=\"#uncertain\">uncertain examples</a>).")


def _probe_sentence(probes) -> str:
    if not isinstance(probes, dict) or "auroc" not in probes:
        return ""
    return (f"<li>Self-check with {_fmt(probes.get('n_good'))} known-good and {_fmt(probes.get('n_bad'))} "
            f"known-corrupted probe examples: AUROC {_fmt(probes.get('auroc'), 3)}, precision "
            f"{_fmt(probes.get('precision'), 3)} and recall {_fmt(probes.get('recall'), 3)} of the rule "
            f"P(w &gt; {_fmt(probes.get('tau'))}) &ge; {_fmt(probes.get('q'))} "
            "(<a href=\"#probes\">details</a>).</li>")


def _rate_rows(draws: np.ndarray, groups: dict, flagged: np.ndarray) -> list[list]:
    """Per class, then per other group level: examples, flagged, estimated corruption rate and interval."""
    rows = []
    for key in ["label"] + [k for k in groups if k != "label"]:
        if key not in groups:
            continue
        r = corruption_rate_by_group(draws, groups[key])
        shown = np.sort(np.argsort(-r["count"], kind="stable")[:MAX_LEVELS])
        codes = np.searchsorted(r["level"], groups[key])
        nflag = np.bincount(codes[flagged], minlength=len(r["level"]))
        for i in shown.tolist():
            level = r["level"][i]
            name = (("clean" if level else "corrupted") + " (ground truth)") if key == "clean" else str(level)
            rows.append([_esc("class" if key == "label" else key), _esc(_cell(name)),
                         (str(r["count"][i]), r["count"][i]), (str(nflag[i]), nflag[i]),
                         (f"{100 * r['estimate'][i]:.1f}%", r["estimate"][i]),
                         f"{100 * r['lower'][i]:.1f}&ndash;{100 * r['upper'][i]:.1f}%"])
    return rows


def summary_section(draws: np.ndarray, plan: _Plan, groups: dict, metrics: dict, status: str, checks) -> str:
    """The page's first section: what a person reads in ten seconds."""
    n = draws.shape[-1]
    flagged = ~plan.keep_top
    clean = groups.get("clean")
    truth = (f"<li>Ground truth (benchmark data): {100 * (1 - np.asarray(clean, bool).mean()):.1f}% of the "
             "examples are corrupted.</li>") if clean is not None else ""
    table = _rate_rows(draws, groups, flagged)
    return ('<section id="summary"><h2>Summary</h2><ul class="key">'
            f"<li><b>{n}</b> training examples; <b>{int(flagged.sum())}</b> flagged "
            f"({100 * flagged.mean():.1f}%): dropped by the report's selection rule, the top floor(N beta) = "
            f"{plan.k} by posterior mean weight ({_esc(plan.beta_note)}).</li>"
            f"<li>Estimated corruption rate: {_rate(*corruption_rate(draws))}.</li>{truth}"
            + _probe_sentence(metrics.get("probes"))
            + f"<li>{_convergence_sentence(status, checks)}</li></ul>"
            + "<details><summary>estimated corruption rate per class and group</summary>"
            + _table(["grouping", "level", "examples", "flagged", "est. corruption rate", "90% interval"], table,
                     "sortable", "rates-table")
            + '<p class="muted">Estimated corruption rate: 1 &minus; the posterior mean weight, averaged over the '
              "examples; 90% interval: the 5% and 95% quantiles over the draws of each draw's average "
              "1 &minus; w.</p></details></section>")


# ------------------------------------------------------------------------------------------- flagged
def _media(pos: int, info: _Examples, ex) -> str:
    if pos in info.texts:
        return f'<div class="text">{_esc(info.texts[pos][:MAX_TEXT])}</div>'
    uri = info.image_uri(pos)
    return f'<img class="thumb" src="{uri}" alt="example {_esc(ex)}">' if uri else ""


def flagged_section(plan: _Plan, ids: np.ndarray, groups: dict, info: _Examples, suggested: dict, note: str) -> str:
    """The flagged examples with the lowest weights: thumbnail or text, given and suggested label, weight."""
    order = flagged_order(plan)
    shown = order[:MAX_FLAGGED]
    labels, clean = groups.get("label"), groups.get("clean")
    truth = bool(info.true_labels)
    headers = ["example", "id", "given label", "suggested label", "P(suggested)", "weight mean", "90% interval"]
    headers += (["true label"] if truth else []) + (["clean (ground truth)"] if clean is not None else [])
    rows = []
    for pos in shown.tolist():
        given = labels[pos] if labels is not None else None
        sug, prob = suggested.get(pos, (None, None))
        differs = sug is not None and given is not None and sug != given
        row = [_media(pos, info, ids[pos]), (_esc(ids[pos]), ids[pos] if ids.dtype.kind in "iuf" else None),
               _esc(given) if given is not None else "&ndash;",
               (f'<b class="sug">{sug}</b>' if differs else _esc(sug)) if sug is not None else "&ndash;",
               (f"{prob:.3f}" if prob is not None else "&ndash;", prob), (f"{plan.mean[pos]:.3f}", plan.mean[pos]),
               f"[{plan.lo[pos]:.2f}, {plan.hi[pos]:.2f}]"]
        true = info.true_labels.get(pos)
        row += [_esc(true) if true is not None else "&ndash;"] if truth else []
        row += [("yes" if clean[pos] else "no")] if clean is not None else []
        rows.append(row)
    head = (f"<p>{len(order)} examples are flagged; the {len(shown)} with the lowest posterior mean weight are "
            "listed (all of them in the CSV, column <code>selected</code> = False). Click a header to sort, type "
            "to filter.</p>")
    notes = "".join(f'<p class="note">{_esc(t)}</p>' for t in (note, info.note) if t)
    return ('<section id="flagged"><h2>Flagged examples</h2>' + head + notes
            + (filter_box("flagged-table", "filter: id, label, ...")
               + _table(headers, rows, "sortable flagged", "flagged-table") if rows else '<p class="note">none</p>')
            + "</section>")


def confusion_section(plan: _Plan, groups: dict, suggested: dict) -> str:
    """Given label x suggested label, counted among the listed flagged examples."""
    labels = groups.get("label")
    shown = [p for p in flagged_order(plan)[:MAX_FLAGGED].tolist() if p in suggested]
    if labels is None or not shown:
        return ('<section id="confusion"><h2>Label confusion among flagged examples</h2><p class="note">No '
                "suggested labels for the flagged examples (see above), so no confusion table.</p></section>")
    given = np.asarray([labels[p] for p in shown])
    sug = np.asarray([suggested[p][0] for p in shown])
    classes = np.unique(np.concatenate([given, sug]))
    rows = []
    for g in classes:
        counts = [int(((given == g) & (sug == s)).sum()) for s in classes]
        if sum(counts):
            rows.append([f"<b>{_esc(g)}</b>"] + [(str(c) if c else "&middot;", c) for c in counts]
                        + [(str(sum(counts)), sum(counts))])
    changed = int((given != sug).sum())
    return ('<section id="confusion"><h2>Label confusion among flagged examples</h2>'
            f"<p>Counts (not weighted) among the {len(shown)} flagged examples listed above: rows the given label, "
            f"columns the suggested label. {changed} of them would change label; the diagonal holds flagged "
            "examples whose given label the network agrees with (suspect for another reason: ambiguous, "
            "atypical, or a weight the chains disagree on).</p>"
            + _table(["given \\ suggested"] + [_esc(s) for s in classes] + ["total"], rows, "confusion")
            + "</section>")
