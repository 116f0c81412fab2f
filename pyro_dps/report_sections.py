"""The report's first sections, the ones a person acts on: the ten-second summary, the flagged examples with
their suggested labels, and the label confusion among them; plus the page's small sort/filter script.

Suggested label: the class the run's posterior predictive finds most likely for the example, the softmax
averaged over the run's theta snapshots. The run writes it for every example into weights.csv
(`pyro_dps.suggested`); for a run directory of an older pyro-dps without those columns, it is recomputed
from `posterior.safetensors` (read as `pyro-dps score` reads it, no pickle) on the model inputs examples.npz
stores for the listed examples, when the run's model is a built-in one (a run directory never makes pyro-dps
import a file it names).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .report_html import MAX_FLAGGED, MAX_LEVELS, MAX_TEXT, _Examples, _Plan, _badge, _cell, _esc, _fmt, _table, \
    filter_box, flagged_order
from .selection import corruption_rate, corruption_rate_by_group
from .suggested import read_suggestions

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
        var text = Array.prototype.map.call(r.cells, function (c) { return c.textContent; }).join('\t');
        r.style.display = text.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  });
})();
"""


# ------------------------------------------------------------------------------------------- suggested labels
@dataclass
class Suggestions:
    """Suggested label and its probability per example position (-1 and NaN where unknown), with a note on
    where they came from; `every_example`: read from weights.csv, so every example has one."""

    label: np.ndarray
    prob: np.ndarray
    note: str
    every_example: bool = False

    def get(self, pos: int) -> tuple[int | None, float | None]:
        """(suggested class, its probability) of example position `pos`, or (None, None)."""
        return (int(self.label[pos]), float(self.prob[pos])) if self.label[pos] >= 0 else (None, None)


def suggest_labels(run_dir: Path, info: _Examples, labels: np.ndarray | None, ids: np.ndarray) -> Suggestions:
    """The run's suggested labels for every example (weights.csv); for a run directory without them (an older
    pyro-dps), the posterior predictive recomputed on the listed examples whose inputs examples.npz stored."""
    n = len(ids)
    try:
        read = read_suggestions(run_dir / "weights.csv", ids)
        problem = ""
    except DataError as exc:
        read, problem = None, f"The suggested labels in weights.csv cannot be used ({str(exc)[:160]}). "
    if read is not None:
        return Suggestions(read["label"], read["prob"], "Suggested label: the most likely class under the posterior "
                           "predictive (softmax averaged over the run's theta snapshots), computed by the run for "
                           "every example (weights.csv, columns suggested_label and p_suggested).", True)
    found, note = _stored_suggestions(run_dir, info, labels)
    label, prob = np.full(n, -1, np.int64), np.full(n, np.nan)
    for pos, (c, q) in found.items():
        label[pos], prob[pos] = c, q
    return Suggestions(label, prob, problem + note)


def _stored_suggestions(run_dir: Path, info: _Examples, labels: np.ndarray | None) -> tuple[dict, str]:
    """({position: (suggested class, its probability)}, note) for the examples whose inputs the run stored."""
    if not info.inputs:
        return {}, ("Suggested labels need weights.csv's suggested_label column or the examples' model inputs in "
                    "examples.npz; this run has neither (a run of an older pyro-dps, or inputs larger than the "
                    "report keeps).")
    try:
        probs, k = _predictive(run_dir, info, labels)
    except Exception as exc:  # noqa: BLE001 - a page without suggestions is still a page
        return {}, f"Suggested labels unavailable: {type(exc).__name__}: {str(exc)[:160]}"
    pos = sorted(info.inputs)
    best = probs.argmax(1)
    out = {p: (int(c), float(probs[i, c])) for i, (p, c) in enumerate(zip(pos, best))}
    return out, (f"Suggested label: the most likely class under the posterior predictive (softmax averaged over "
                 f"the run's {k} theta snapshots), recomputed for the listed examples only: this run's weights.csv "
                 "has no suggested_label column (a run of an older pyro-dps, or one that could not compute them).")


def _predictive(run_dir: Path, info: _Examples, labels: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(class probabilities (examples, classes) averaged over the snapshots, snapshots used)."""
    import torch

    from .context import Problem
    from .potential import TracePotential
    from .spec import build_network
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


def _cold_note(metrics: dict) -> str:
    """What the rate's interval means when the run sampled a cold posterior (T < 1), else nothing."""
    t = (metrics.get("config") or {}).get("sampler", {}).get("temperature")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t >= 1:
        return ""
    return (f" The interval is that of a cold posterior (T = {t:g}): it says how firmly the chains agree, not "
            "how far the estimate may be from the truth.")


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


def _relabel_sentence(plan: _Plan, groups: dict, sug: Suggestions | None) -> str:
    """How many flagged examples the posterior predictive would give another label (every example's known)."""
    labels = groups.get("label")
    if sug is None or not sug.every_example or labels is None:
        return ""
    flagged = ~plan.keep_top
    other = int((flagged & (sug.label != np.asarray(labels))).sum())
    return (f"<li><b>{other}</b> of the {int(flagged.sum())} flagged examples have a suggested label other than "
            'their given one (<a href="#confusion">estimated label confusion</a>).</li>')


def summary_section(draws: np.ndarray, plan: _Plan, groups: dict, metrics: dict, status: str, checks,
                    sug: Suggestions | None = None) -> str:
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
            + _relabel_sentence(plan, groups, sug)
            + f"<li>Estimated corruption rate: {_rate(*corruption_rate(draws))}.{_cold_note(metrics)}</li>{truth}"
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


def flagged_section(plan: _Plan, ids: np.ndarray, groups: dict, info: _Examples, sug: Suggestions) -> str:
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
        guess, prob = sug.get(pos)
        differs = guess is not None and given is not None and guess != given
        row = [_media(pos, info, ids[pos]), (_esc(ids[pos]), ids[pos] if ids.dtype.kind in "iuf" else None),
               _esc(given) if given is not None else "&ndash;",
               (f'<b class="sug">{guess}</b>' if differs else _esc(guess)) if guess is not None else "&ndash;",
               (f"{prob:.3f}" if prob is not None else "&ndash;", prob), (f"{plan.mean[pos]:.3f}", plan.mean[pos]),
               f"[{plan.lo[pos]:.2f}, {plan.hi[pos]:.2f}]"]
        true = info.true_labels.get(pos)
        row += [_esc(true) if true is not None else "&ndash;"] if truth else []
        row += [("yes" if clean[pos] else "no")] if clean is not None else []
        rows.append(row)
    head = (f"<p>{len(order)} examples are flagged; the {len(shown)} with the lowest posterior mean weight are "
            "listed (all of them in the CSV, column <code>selected</code> = False). Click a header to sort, type "
            "to filter.</p>")
    notes = "".join(f'<p class="note">{_esc(t)}</p>' for t in (sug.note, info.note) if t)
    return ('<section id="flagged"><h2>Flagged examples</h2>' + head + notes
            + (filter_box("flagged-table", "filter: id, label, text, ...")
               + _table(headers, rows, "sortable flagged", "flagged-table") if rows else '<p class="note">none</p>')
            + "</section>")


MAX_CONFUSION = 20  # classes the confusion table shows (those with the most weight); the others are "other"


def confusion_counts(given: np.ndarray, suggested: np.ndarray, weights: np.ndarray,
                     max_classes: int = MAX_CONFUSION) -> tuple[list[str], np.ndarray]:
    """(class names, (M, K, K) sums of each of the M rows of `weights` (M, N) per (given, suggested) pair): the
    `max_classes` classes with the most of the first row's weight as given or suggested label, the rest folded
    into a last class "other"."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    classes = np.unique(np.concatenate([given, suggested]))
    k = len(classes)
    cell = np.searchsorted(classes, given) * k + np.searchsorted(classes, suggested)
    mass = np.stack([np.bincount(cell, weights=w, minlength=k * k).reshape(k, k) for w in weights])
    if k <= max_classes:
        return [str(c) for c in classes], mass
    keep = np.sort(np.argsort(-(mass[0].sum(0) + mass[0].sum(1)), kind="stable")[:max_classes])
    index = np.full(k, max_classes)
    index[keep] = np.arange(max_classes)
    folded = np.zeros((len(weights), max_classes + 1, max_classes + 1))
    np.add.at(folded, (slice(None), index[:, None], index[None, :]), mass)
    return [str(c) for c in classes[keep]] + ["other"], folded


def confusion_section(plan: _Plan, groups: dict, sug: Suggestions) -> str:
    """Given label x suggested label, each example weighted by its posterior probability of being dropped."""
    title = '<section id="confusion"><h2>Estimated label confusion</h2>'
    labels = groups.get("label")
    known = np.flatnonzero(sug.label >= 0)
    if not sug.every_example:  # an older run directory: the listed flagged examples' recomputed suggestions
        known = np.intersect1d(known, flagged_order(plan)[:MAX_FLAGGED])
    if labels is None or not known.size:
        return (title + '<p class="note">No suggested labels (see the flagged examples above), so no confusion '
                "table.</p></section>")
    given, suggested, drop = np.asarray(labels)[known], sug.label[known], 1.0 - plan.mean[known]
    names, (mass, flagged) = confusion_counts(given, suggested, np.stack([drop, ~plan.keep_top[known]]))
    rows = []
    for i, name in enumerate(names):
        if mass[i].sum() >= 0.05 or flagged[i].sum():
            rows.append([f"<b>{_esc(name)}</b>"] + [(f"{v:.1f}" if v >= 0.05 else "&middot;", v) for v in mass[i]]
                        + [(f"{mass[i].sum():.1f}", mass[i].sum()), (str(int(flagged[i].sum())), flagged[i].sum())])
    off = float(mass.sum() - np.trace(mass))  # ("other" x "other" counts as diagonal)
    scope = (f"all {len(known)} examples (the {int((~plan.keep_top).sum())} flagged ones included)"
             if sug.every_example else f"the {len(known)} listed flagged examples only (see the note above)")
    return (title + f"<p>Estimated number of corrupted examples per given label (rows) and suggested label "
            f"(columns), over {scope}: each example contributes 1 &minus; its posterior mean weight (its posterior "
            "expected drop, as in the summary's corruption rate) to the cell of its given and suggested label. "
            f"Total {mass.sum():.1f}, of which {off:.1f} off the diagonal: examples the network would relabel. The "
            "diagonal holds examples whose given label the network agrees with, suspect for another reason "
            "(ambiguous, atypical, or a weight the chains disagree on). Last column: the flagged examples "
            "(counted, not weighted) per given label.</p>"
            + _table(["given \\ suggested"] + [_esc(n) for n in names] + ["total", "flagged"], rows,
                     "confusion sortable", "confusion-table")
            + "</section>")
