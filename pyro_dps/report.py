"""report.html: one self-contained page a person reads in a browser (figures as base64 PNG, inline CSS,
nothing fetched), built from a run directory's own files: metrics.json, draws.nc, weights.csv (the suggested
labels) and examples.npz.

    pyro-dps report runs/demo                  # writes runs/demo/report.html and report.selection.csv
    write_report("runs/demo", "/tmp/r.html")   # and /tmp/r.selection.csv

Sections (HTML ids), in order: summary (what to read in ten seconds: counts, the estimated corruption rate
overall and per class/group, the probes' detection quality, one sentence on convergence), flagged (the
examples the selection drops, lowest weight first, with their suggested label: `report_sections`),
confusion (given x suggested label, each example weighted by its posterior expected drop), diagnostics
(trace/rank/ESS plots drawn by ArviZ's own functions: `report_plots`), weights, trusted, uncertain, selection,
probes (the self-check with probe examples, when the run had them: `pyro_dps.probes`), metrics, config (folded).
Ground-truth columns appear only when the run's data had them. The flagged and checks tables sort on a
header click and filter by a text box (a small inline script; nothing fetched). Probe examples are left out of
every other section: those report on the user's own training examples only.
The page is bounded whatever N_t: galleries show N_SHOW examples, tables at most MAX_LEVELS groups,
plots at most MAX_POINTS examples; the full per-example table is the CSV beside the page. The report
never reads data from outside the run directory: the run stores the shown examples' thumbnails (or
texts), true labels and model inputs in examples.npz, read without pickle and checked. A missing or corrupt file
raises `ReportError` (a `DPSError`) naming the file; both files are written to temporary files and
renamed into place, so a failure leaves no half-written report.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .arviz_data import ARVIZ_VERSION, RunDirError, arviz_line, example_groups, load_run, to_arviz, weight_draws
from .diagnostic_plots import plot_diagnostic_histograms, plot_weights_by_group
from .diagnostics import Thresholds, diagnose, overall, summary, worst_examples
from .outputs import write_atomic
from .report_html import MAX_FLAGGED, MAX_LEVELS, MAX_TEXT, N_SHOW, _Examples, _Plan, _as_image, _badge, _cell, _esc, \
    _figure, _figure_uri, _fmt, _num, _table, filter_box, gallery_positions
from .report_plots import diagnostic_figures, plot_certainty
from . import report_sections as rs
from .probes import NOT_PROBE, PROBE_GROUP, ProbeSet, non_probe_mask, probe_report, probes_from_group
from .errors import DPSError
from .selection import beta_budget, chain_jaccard, credible_interval, jaccard, mean_offdiagonal, probability_rule, \
    select_budget, select_by_probability, selection_table, top_beta_rule

SECTIONS = ["summary", "flagged", "confusion", "diagnostics", "weights", "trusted", "uncertain", "selection",
            "metrics", "config"]
PROBE_SECTION = "probes"  # shown (after "selection") when the run had probe examples
MAX_ROWS = 100  # rows of any other table (configuration keys, methods, metrics)
MAX_DIAG_EXAMPLES = 1000  # weights whose R-hat/ESS/MCSE the report computes (a fixed random sample beyond)
MAX_REPORT_VALUES = 2 ** 31  # chain x draw x example values of draws.nc that a report reads (8 GB as float32)
EXAMPLES_FILE = "examples.npz"
MAX_EXAMPLES_BYTES = 20 * 2 ** 20
MAX_STORED = 3 * N_SHOW + MAX_FLAGGED  # examples examples.npz holds at most
MAX_INPUT_BYTES = 8 * 2 ** 20  # model inputs examples.npz stores (for suggested labels); none beyond


class ReportError(RunDirError):
    """The run directory cannot be turned into a report (missing or corrupt files, no weight draws)."""


# ------------------------------------------------------------------------------------------- encoding








# ------------------------------------------------------------------------------------------- the run






def save_gallery_examples(run_dir: str | os.PathLike, data, echo: Callable[[str], Any] = print) -> Path | None:
    """examples.npz: thumbnails (or texts) and true labels of the examples the report shows, so that
    `pyro-dps report` never needs the data set itself. A failure only warns, like the report."""
    run_dir = Path(run_dir)
    try:
        ds, metrics = load_run(run_dir)
        ds, _ = split_probes(ds)  # the report's positions: the user's own examples
        plan = _plan(np.asarray(ds["weights"].transpose("chain", "draw", "example").values, dtype=np.float64),
                     metrics.get("config", {}) or {}, ds, metrics.get("hyper"))
        pos = gallery_positions(plan)
        rows = np.flatnonzero(non_probe_mask(data))[pos]  # the rows of D_t at those positions
        arrays = {"position": pos.astype(np.int64), "example": np.asarray(ds["example"].values)[pos]}
        if data.y_train_true is not None:
            arrays["true_label"] = data.y_train_true.numpy()[rows]
        texts = getattr(data, "texts_train", None)
        if texts is not None:
            arrays["text"] = np.array([str(texts[int(r)])[:MAX_TEXT] for r in rows], dtype=f"<U{MAX_TEXT}")
        else:
            images = [_as_image(data.x_train[int(r)].numpy()) for r in rows]
            if pos.size and all(img is not None and img.shape == images[0].shape for img in images):
                arrays["image"] = np.stack(images)
        row = data.x_train[0] if len(rows) else None
        if row is not None and len(rows) * row.numel() * row.element_size() <= MAX_INPUT_BYTES:
            import torch

            arrays["x"] = data.x_train[torch.as_tensor(rows)].cpu().numpy()  # model inputs: suggested labels
        path = run_dir / EXAMPLES_FILE
        write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), binary=True, error=ReportError)
        return path
    except Exception as exc:  # noqa: BLE001 - a gallery without thumbnails is no reason to lose a run
        echo(f"warning: {EXAMPLES_FILE} not written: {exc}")
        return None


def _stored_examples(run_dir: Path, ids: np.ndarray) -> _Examples:
    """The gallery examples the run stored (examples.npz), checked; the report works without them."""
    path = run_dir / EXAMPLES_FILE
    if not path.is_file():
        return _Examples(note=f"{EXAMPLES_FILE} is absent; examples are shown by id only")
    try:
        if path.stat().st_size > MAX_EXAMPLES_BYTES:
            raise ValueError(f"larger than {MAX_EXAMPLES_BYTES} bytes")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("position", "example", "true_label", "image", "text", "x")}
        pos = np.asarray(arrays["position"])
        k = pos.shape[0]
        if pos.ndim != 1 or k > MAX_STORED or pos.dtype.kind not in "iu" \
                or (k and (pos.min() < 0 or pos.max() >= len(ids))):
            raise ValueError("bad positions")
        if not np.array_equal(arrays["example"], ids[pos]):
            raise ValueError("its example ids do not match draws.nc")
        out = _Examples()
        if "true_label" in arrays and arrays["true_label"].shape == (k,) and arrays["true_label"].dtype.kind in "iu":
            out.true_labels = dict(zip(pos.tolist(), arrays["true_label"].tolist()))
        image = arrays.get("image")
        if image is not None and image.dtype == np.uint8 and image.shape[0] == k and image.ndim in (3, 4) \
                and max(image.shape[1:3]) <= 256 and (image.ndim == 3 or image.shape[3] == 3):
            out.images = dict(zip(pos.tolist(), image))
        text = arrays.get("text")
        if text is not None and text.dtype.kind == "U" and text.shape == (k,):
            out.texts = {p: str(t)[:MAX_TEXT] for p, t in zip(pos.tolist(), text)}
        x = arrays.get("x")
        if x is not None and x.dtype.kind in "iuf" and x.ndim >= 2 and x.shape[0] == k and x.nbytes <= MAX_INPUT_BYTES:
            out.inputs = dict(zip(pos.tolist(), x))
        return out
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign: show ids only, and say why
        return _Examples(note=f"{EXAMPLES_FILE} cannot be used ({type(exc).__name__}: {str(exc)[:120]}); "
                              "examples are shown by id only")


# ------------------------------------------------------------------------------------------- html bits














CSS = """
:root { --pass:#1a7f37; --warn:#9a6700; --fail:#cf222e; --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9d1d9; font-size: 13px; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0; }
nav a { margin-right: 18px; color: #0969da; text-decoration: none; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 24px 20px;
          margin: 20px 0; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { margin-bottom: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; min-width: 46px; text-align: center; border-radius: 10px; padding: 1px 8px;
         font-size: 12px; font-weight: 600; color: #fff; }
.badge.pass { background: var(--pass); }
.badge.warn { background: var(--warn); }
.badge.fail { background: var(--fail); }
.summary-line { font-size: 16px; margin: 10px 0; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
figcaption { color: var(--muted); font-size: 13px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 10px; margin: 8px 0 18px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px; font-size: 12px; background: #fff; }
.card img { width: 72px; height: 72px; image-rendering: pixelated; display: block; margin: 0 auto 4px;
            border: 1px solid var(--line); }
.card .text { font-family: ui-monospace, monospace; font-size: 11px; max-height: 6em; overflow: hidden; }
.card.noisy { border-color: var(--fail); } .card.clean { border-color: #8cc8a0; }
.muted { color: var(--muted); } .note { color: var(--muted); font-style: italic; }
ul.key { font-size: 15.5px; padding-left: 20px; } ul.key li { margin: 4px 0; }
details > summary { cursor: pointer; color: #0969da; margin: 6px 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " \\25B2"; }
table.sortable th[data-dir="desc"]::after { content: " \\25BC"; }
input.filter { margin: 6px 0; padding: 4px 8px; width: 280px; border: 1px solid var(--line); border-radius: 6px; }
img.thumb { width: 48px; height: 48px; image-rendering: pixelated; border: 1px solid var(--line); }
b.sug { color: var(--fail); }
table.confusion td.num { text-align: center; }
.cfg { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0 24px; }
"""


HINT = ("<p><b>Why the chains may disagree, and what helps.</b> At a cold temperature each chain settles "
        "in its own mode of the network; an example that one mode explains and another does not is kept by "
        "one chain and dropped by another, and such examples are the ones with a high R-hat (an ambiguous "
        "example, not a broken sampler). More chains, a longer <code>warmup</code> and more draws "
        "(<code>samples</code>) raise the ESS. theta_norm is not checked: the network's permutation "
        "symmetries give each chain an equivalent mode with its own |theta|.</p>")


# ------------------------------------------------------------------------------------------- build




def _plan(draws: np.ndarray, config: dict, ds, as_run: dict | None = None) -> _Plan:
    """Budget k = floor(N beta) (beta from model.hyper, else the beta the run resolved (metrics.json "hyper"),
    else the latent beta's posterior mean, else 0.5),
    the top-k and probability rules, and the examples whose interval straddles the top-k cut."""
    n = draws.shape[-1]
    mean = draws.reshape(-1, n).mean(0)
    lo, hi = credible_interval(draws, 0.9)
    hyper = (config.get("model") or {}).get("hyper") or {}
    beta = _num(hyper.get("beta")) if isinstance(hyper, dict) else None
    beta_note = f"beta = {beta:g} from model.hyper" if beta is not None else ""
    if (beta is None or not 0 < beta <= 1) and isinstance(as_run, dict) and "beta" not in ds:
        beta = _num(as_run.get("beta"))
        beta_note = f"beta = {beta:.3g}, as the run resolved it" if beta is not None else ""
    if beta is None or not 0 < beta <= 1:
        post_beta = float(np.nanmean(ds["beta"].values)) if "beta" in ds else None
        beta = post_beta if post_beta is not None and 0 < post_beta <= 1 else 0.5
        beta_note = (f"beta = {beta:.3g}, the posterior mean of the latent beta" if post_beta is not None
                     else "beta = 0.5 (the model gives no fixed beta)")
    k = beta_budget(n, beta)
    order = np.argsort(-mean, kind="stable")
    cut = float((mean[order[k - 1]] + mean[order[k]]) / 2) if 0 < k < n else (0.5 if k == 0 else float(mean.min()))
    unsure = (lo < cut) & (hi > cut)  # selection.uncertain, from the bounds already at hand
    unsure_pos = np.flatnonzero(unsure)
    unsure_order = unsure_pos[np.argsort(-(hi - lo)[unsure_pos], kind="stable")]
    return _Plan(mean, lo, hi, beta, beta_note, k, select_budget(mean, k), select_by_probability(draws, 0.5, 0.9),
                 unsure, order, unsure_order, cut)


def _load(run_dir: Path):
    """(draws Dataset, metrics) of a run directory, with the draws bounded in size; ReportError otherwise."""
    try:
        ds, metrics = load_run(run_dir)
    except ReportError:
        raise
    except RunDirError as exc:
        raise ReportError(str(exc)) from exc
    if ds.sizes.get("example", 0) == 0:
        raise ReportError(f"{str(run_dir / 'draws.nc')!r} holds no per-example weight draws "
                          "(a weight-network run); nothing to report per example")
    size = int(np.prod([ds.sizes[d] for d in ("chain", "draw", "example")], dtype=np.int64))
    if size > MAX_REPORT_VALUES:
        raise ReportError(f"{str(run_dir / 'draws.nc')!r} holds {size} weight values, more than a report reads "
                          f"({MAX_REPORT_VALUES}); thin the draws first")
    return ds, metrics


def build_report(run_dir: str | os.PathLike, run_label: str | None = None,
                 thresholds: Thresholds | None = None) -> str:
    """The report's HTML text for a run directory."""
    return _build(Path(run_dir), run_label, thresholds, "report.selection.csv")[0]


def _build(run_dir: Path, run_label: str | None, thresholds: Thresholds | None, csv_name: str):
    """(HTML text, full per-example selection table) of a run directory."""

    ds, metrics = _load(run_dir)
    ds, probes = split_probes(ds)
    config = metrics.get("config", {}) or {}
    th = thresholds or Thresholds()
    data = to_arviz(ds)
    diag_data, sampled = _diagnosed_sample(ds, data)
    diag = diagnose(diag_data)
    checks = summary(diag, th)
    w = weight_draws(data)
    draws = np.asarray(w.values, dtype=np.float64)  # (chain, draw, N)
    ids = np.asarray(w["example"].values)
    groups = example_groups(data)
    plan = _plan(draws, config, ds, metrics.get("hyper"))
    info = _stored_examples(run_dir, ids)
    sug = rs.suggest_labels(run_dir, info, groups.get("label"), ids)
    n = draws.shape[-1]
    parts = [_head(run_dir, run_label, metrics, config, n, probes, diag),
             rs.summary_section(draws, plan, groups, metrics, overall(checks), checks, sug),
             rs.flagged_section(plan, ids, groups, info, sug),
             rs.confusion_section(plan, groups, sug),
             _diagnostics_section(diag, checks, th, diag_data, n, sampled),
             _weights_section(data, draws, groups, plan), _gallery_sections(plan, ids, groups, info, n),
             _selection_section(plan, draws, groups, csv_name),
             _probe_section(*probes, plan.tau, plan.q, config) if probes else "",
             _metrics_section(metrics), _config_section(config, metrics),
             f"</main><script>{rs.SORT_SCRIPT}</script></body></html>"]
    table = selection_table(draws, ids, groups, plan.keep_top, tau=plan.tau, threshold=plan.cut, interval=0.9)
    if sug.every_example:  # the CSV beside the page holds every example's suggested label too
        table = table.assign(suggested_label=sug.label, p_suggested=sug.prob)
    return "\n".join(parts), table


def _head(run_dir: Path, run_label: str | None, metrics: dict, config: dict, n: int, probes, diag) -> str:
    """The page's head, header line and navigation."""
    title = metrics.get("scenario") or config.get("name") or run_dir.name
    label = run_label if run_label is not None else str(run_dir)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>BADS report: {_esc(_cell(title))}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Bayesian data point selection: {_esc(_cell(title))}</h1>"
            f"<p>run {_esc(_cell(label))} &middot; {n} training examples"
            + (f" (+ {probes[0].shape[-1]} probe examples)" if probes else "")
            + f" &middot; {diag.chains} chains &times; {diag.draws} draws &middot; ArviZ {_esc(ARVIZ_VERSION)} "
            f"({arviz_line()}) &middot; generated {now}</p></header>"
            "<nav>" + "".join(f'<a href="#{s}">{s}</a>' for s in _sections(probes is not None)) + "</nav><main>")


def _sections(with_probes: bool) -> list[str]:
    """The page's section ids in order (the probe section after the selection, when the run had probes)."""
    if not with_probes:
        return list(SECTIONS)
    at = SECTIONS.index("selection") + 1
    return SECTIONS[:at] + [PROBE_SECTION] + SECTIONS[at:]


def split_probes(ds):
    """(the draws Dataset of the user's own examples, (probe rows' draws (chain, draw, P), ProbeSet over
    them) or None): a run with probe examples keeps them in the `probe` coordinate (1 good, 2 corrupted)."""
    if PROBE_GROUP not in ds.coords or ds[PROBE_GROUP].dims != ("example",):
        return ds, None
    status = np.asarray(ds[PROBE_GROUP].values)
    probes = probes_from_group(status)
    own = ds.isel(example=np.flatnonzero(status == NOT_PROBE)).drop_vars(PROBE_GROUP)
    if len(probes) == 0:
        return own, None
    w = ds["weights"].isel(example=probes.rows).transpose("chain", "draw", "example").values
    k = len(probes.good)
    return own, (np.asarray(w, dtype=np.float64), ProbeSet(np.arange(k), np.arange(k, len(probes))))




def _model_as_run(metrics: dict) -> str:
    """The table of the model as it ran (metrics.json): the potential path, every hyper-parameter it used and
    the constants the fused path derived; empty for a run that did not record them."""
    if "potential" not in metrics:
        return ""
    why = metrics.get("potential_reason")
    rows = [["potential path", _esc(_cell(f"{metrics['potential']}" + (f" ({why})" if why else "")))]]
    for prefix, table in (("", metrics.get("hyper")), ("derived ", metrics.get("hyper_derived"))):
        if isinstance(table, dict):
            rows += [[_esc(_cell(prefix + str(k))), _cell(_fmt(v))] for k, v in list(table.items())[:MAX_ROWS]]
    return f"<div><h3>model as run</h3>{_table(['key', 'value'], rows)}</div>"


def _config_section(config: dict, metrics: dict | None = None) -> str:
    cfg_tables = [_model_as_run(metrics or {})]
    for section in ("data", "network", "model", "sampler", "baselines"):
        value = config.get(section)
        if not isinstance(value, dict):
            continue
        flat = value
        if section == "model" and isinstance(value.get("hyper"), dict):
            flat = {**value["hyper"], "file": value.get("file")}
        rows = [[_esc(_cell(key)), _cell(_fmt(v))] for key, v in list(flat.items())[:MAX_ROWS]]
        cfg_tables.append(f"<div><h3>{section}</h3>{_table(['key', 'value'], rows)}</div>")
    cfg_tables = [t for t in cfg_tables if t]
    return ('<section id="config"><h2>Run configuration</h2><details><summary>the resolved configuration and '
            'the model as it ran</summary>'
            + (f'<div class="cfg">{"".join(cfg_tables)}</div>' if cfg_tables
               else '<p class="note">metrics.json has no resolved configuration.</p>') + "</details></section>")


def _diagnosed_sample(ds, data):
    """(ArviZ data the convergence checks run on, sample note): all weights up to MAX_DIAG_EXAMPLES, else a
    fixed random sample of them (ArviZ's per-variable statistics cost milliseconds per weight)."""
    n = ds.sizes["example"]
    if n <= MAX_DIAG_EXAMPLES:
        return data, ""
    pick = np.sort(np.random.default_rng(0).choice(n, MAX_DIAG_EXAMPLES, replace=False))
    note = (f" The per-weight statistics below are of a fixed random sample of {MAX_DIAG_EXAMPLES} of the {n} "
            "weights (their fractions estimate those of all weights to about &plusmn;2 points).")
    return to_arviz(ds.isel(example=pick)), note


def _diagnostics_section(diag, checks, th: Thresholds, data, n: int, sampled: str = "") -> str:
    frac = diag.rhat_fraction(th.rhat_fail)
    rows = [[_badge(c.status), _esc(c.name), _esc(c.value), _esc(c.threshold), _esc(c.message)] for c in checks]
    worst = worst_examples(diag, 3)
    return (
        '<section id="diagnostics"><h2>Convergence diagnostics</h2>'
        f'<p class="summary-line">Overall: {_badge(overall(checks))} &nbsp; {100 * frac:.1f}% of the weights have '
        f'R-hat &lt; {th.rhat_fail} (target: at least 95%).</p>'
        f'<p class="muted">Rank-normalised split R-hat, bulk/tail ESS and MCSE from ArviZ. Thresholds: R-hat '
        f'&gt; {th.rhat_warn} warns, &gt; {th.rhat_fail} fails; ESS below {th.ess_floor:.0f} per chain '
        f'warns; theta_norm is reported, not checked (permutation symmetries); for the {n} weights a check '
        f'fails when more than {100 * th.max_bad_fraction:.0f}% of them are past the limit. Non-finite draws or steps fail; steps the divergence guard rejected '
        f'warn.{sampled}</p>'
        + filter_box("checks-table", "filter the checks")
        + _table(["status", "check", "value", "threshold", "detail"], rows, "checks sortable", "checks-table")
        + (HINT if frac < 0.95 else "")
        + _figure(_figure_uri(plot_diagnostic_histograms(diag, th)), "R-hat and ESS histograms",
                  "Per-example R-hat and bulk ESS of the weights, thresholds dashed.")
        + "".join(_figure(_figure_uri(f.figure), f.alt, f.caption)
                  for f in diagnostic_figures(data, worst, th.ess_needed(diag.chains)))
        + "</section>")


def _weights_section(data, draws: np.ndarray, groups: dict, plan: _Plan) -> str:
    rows, cut = [], []
    for key, values in groups.items():
        levels, counts = np.unique(values, return_counts=True)
        shown = levels[np.sort(np.argsort(-counts, kind="stable")[:MAX_LEVELS])]
        if len(levels) > len(shown):
            cut.append(f"{key}: the {len(shown)} largest of {len(levels)} levels")
        for level in shown.tolist():
            cols = values == level
            name = ("clean" if level else "noisy") if key == "clean" else str(level)
            rows.append([_esc(key), _esc(_cell(name)), str(int(cols.sum())), _fmt(float(plan.mean[cols].mean())),
                         _fmt(float(np.median(plan.mean[cols]))), _fmt(float(plan.keep_top[cols].mean()))])
    note = f'<p class="note">Shown: {_esc("; ".join(cut))} (all of them in the CSV).</p>' if cut else ""
    return ('<section id="weights"><h2>Weight distributions by group</h2>'
            + _figure(_figure_uri(plot_weights_by_group(data)), "weights by group",
                      "Pooled weight draws (violins) and posterior means (boxes) per group; right: every "
                      "example's posterior mean and 90% interval, sorted.")
            + _figure(_figure_uri(plot_certainty(draws, groups.get("clean"), plan.tau)), "certainty of each weight",
                      f"Each example's P(w &gt; {plan.tau:g}) against the width of its 90% interval: decided examples "
                      "sit at 0 or 1 with narrow intervals; those in between, with wide intervals, are the ones to "
                      "look at by hand.")
            + _table(["group", "level", "examples", "mean weight", "median of means",
                      f"selected at beta={plan.beta:g}"], rows)
            + note + "</section>")


def _gallery_sections(plan: _Plan, ids: np.ndarray, groups: dict, info: _Examples, n: int) -> str:
    labels = groups.get("label")
    clean = groups["clean"].astype(bool) if "clean" in groups else None

    def card(pos: int) -> str:
        ex = ids[pos]
        cls = "" if clean is None else (" clean" if clean[pos] else " noisy")
        lines = [f"<b>#{_esc(ex)}</b>"]
        if labels is not None:
            given = f"label {_esc(labels[pos])}"
            true = info.true_labels.get(pos)
            if true is not None and true != labels[pos]:
                given += f" (true {_esc(true)})"
            lines.append(given)
        if clean is not None:
            lines.append("clean" if clean[pos] else "noisy")
        lines += [f"w = {plan.mean[pos]:.3f}", f"90%: [{plan.lo[pos]:.2f}, {plan.hi[pos]:.2f}]"]
        uri = info.image_uri(pos)
        media = f'<img src="{uri}" alt="example {_esc(ex)}">' if uri else ""
        if pos in info.texts:
            media = f'<div class="text">{_esc(info.texts[pos][:MAX_TEXT])}</div>'
        return f'<div class="card{cls}">{media}' + "<br>".join(lines) + "</div>"

    def gallery(positions) -> str:
        return '<div class="gallery">' + "".join(card(int(p)) for p in positions) + "</div>"

    note = f'<p class="note">{_esc(info.note)}</p>' if info.note else ""
    unsure = plan.unsure_order
    return ('<section id="trusted"><h2>Most and least trusted examples</h2>' + note
            + f"<h3>Most trusted (highest posterior mean weight)</h3>{gallery(plan.order[:N_SHOW])}"
            + f"<h3>Least trusted (lowest posterior mean weight)</h3>{gallery(plan.order[::-1][:N_SHOW])}"
            + "</section>"
            + '<section id="uncertain"><h2>Uncertain examples</h2>'
            f"<p>{len(unsure)} of {n} examples ({100 * len(unsure) / n:.1f}%) have a 90% interval that "
            f"straddles the selection boundary w = {plan.cut:.3f} (the cut of the top-beta selection below): "
            f"their keep/drop decision is not settled by the posterior. Widest intervals first (the {N_SHOW} "
            "widest shown).</p>"
            + (gallery(unsure[:N_SHOW]) if len(unsure) else '<p class="note">none</p>') + "</section>")


def _selection_section(plan: _Plan, draws: np.ndarray, groups: dict, csv_name: str) -> str:
    clean = groups["clean"].astype(bool) if "clean" in groups else None

    def quality(mask: np.ndarray) -> list[str]:
        if clean is None:
            return ["&ndash;", "&ndash;"]
        sel = int(mask.sum())
        prec = float(clean[mask].mean()) if sel else float("nan")
        rec = float(mask[clean].mean()) if clean.any() else float("nan")
        return [_fmt(prec, 3), _fmt(rec, 3)]

    rules = [(f"top-beta by posterior mean ({plan.beta_note}; k = floor(N beta) = {plan.k})", plan.keep_top,
              top_beta_rule(plan.beta)),
             (f"P(w &gt; {plan.tau:g}) &ge; {plan.q:g}", plan.keep_prob, probability_rule(plan.tau, plan.q))]
    rows = []
    for name, mask, rule in rules:
        agreement = mean_offdiagonal(chain_jaccard(draws, rule)) if draws.shape[0] > 1 else float("nan")
        rows.append([name, str(int(mask.sum())), _fmt(float(mask.mean()), 3), *quality(mask),
                     _fmt(agreement, 3), str(int((mask & plan.unsure).sum()))])
    return ('<section id="selection"><h2>Selection at the configured budget</h2>'
            + _table(["rule", "selected", "fraction", "precision (clean among selected)",
                      "recall (of clean)", "chain agreement (mean pairwise Jaccard)", "of them uncertain"], rows)
            + f"<p>Jaccard agreement of the two rules: {jaccard(plan.keep_top, plan.keep_prob):.3f}. Chain "
              "agreement: the rule applied to each chain's draws alone, compared pairwise.</p>"
            + f'<p>The full selection table is the file <code class="csv">{_esc(csv_name)}</code> beside '
              "this page (not embedded, so the page stays small whatever N_t): one row per example with groups, "
              f"mean, 90% interval, P(w &gt; {plan.tau:g}), the top-beta decision and the uncertain flag.</p>"
              "</section>")


def plot_reliability(table: list[dict], ece: float | None, tau: float):
    """The probes' reliability diagram: fraction of good probes against mean P(w > tau) per bin (left), and
    the probes per bin (right)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    full = [b for b in table if b["count"]]
    left.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="calibrated")
    left.plot([b["mean_p"] for b in full], [b["fraction_good"] for b in full], "o-", color="tab:blue",
              label=f"probes (ECE {ece:.3f})" if ece is not None else "probes")
    for b in full:
        left.annotate(str(b["count"]), (b["mean_p"], b["fraction_good"]), textcoords="offset points",
                      xytext=(4, -10), fontsize=8)
    left.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel=f"mean P(w > {tau:g}) in the bin",
             ylabel="fraction of good probes")
    left.legend(fontsize=8, loc="upper left")
    centers = [(b["lower"] + b["upper"]) / 2 for b in table]
    width = table[0]["upper"] - table[0]["lower"] if table else 0.1
    good = np.array([round(b["count"] * b["fraction_good"]) if b["count"] else 0 for b in table])
    bad = np.array([b["count"] for b in table]) - good
    right.bar(centers, good, width=0.9 * width, color="tab:blue", label="good")
    right.bar(centers, bad, width=0.9 * width, bottom=good, color="tab:red", label="corrupted")
    right.set(xlim=(0, 1), xlabel=f"P(w > {tau:g})", ylabel="probes")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _probe_section(w: np.ndarray, probes: ProbeSet, tau: float, q: float, config: dict) -> str:
    """Self-check with probe examples: how well the weights tell the known-good probes from their corrupted
    copies (AUROC, the selection rule's precision/recall, calibration of P(w > tau), the calibrated q)."""
    r = probe_report(w, probes, tau, q)
    per_class = (config.get("data") or {}).get("probes_per_class")
    how = f"{per_class} per class, " if isinstance(per_class, int) else ""
    rows = [["AUROC of the posterior mean (good vs corrupted)", _fmt(r["auroc"], 3),
             "1: every good copy weighs more than every corrupted one; 0.5: chance"],
            [f"selected by P(w &gt; {tau:g}) &ge; {q:g}", f"{r['selected']} of {len(probes)}",
             "the rule of the selection section"],
            ["precision", _fmt(r["precision"], 3), "good probes among the selected ones"],
            ["recall", _fmt(r["recall"], 3), "selected probes among the good ones"],
            ["mean weight, good / corrupted",
             f"{_fmt(r['mean_weight_good'], 3)} / {_fmt(r['mean_weight_bad'], 3)}", ""],
            ["ECE", _fmt(r["ece"], 3), f"mean gap between P(w &gt; {tau:g}) and the fraction of good probes "
                                      "at that probability (0: calibrated)"],
            [f"calibrated q (precision &ge; {r['target_precision']:g})",
             "none in 0, 0.01, ..., 1" if r["calibrated_q"] is None else f"{r['calibrated_q']:g} "
             f"(recall {_fmt(r['calibrated_recall'], 3)})",
             "the smallest q whose rule reaches that precision on the probes"]]
    bins = [[f"[{b['lower']:.1f}, {b['upper']:.1f}{']' if b['upper'] >= 1 else ')'}", str(b["count"]),
             _fmt(b["mean_p"], 3), _fmt(b["fraction_good"], 3)] for b in r["reliability"]]
    return (f'<section id="{PROBE_SECTION}"><h2>Self-check with probe examples</h2>'
            f"<p>Before the run, {r['n_good']} curated examples ({how}taken out of the meta set) were added to "
            "the training set twice: once as they are (known good) and once with a wrong label (known corrupted). "
            "The sampler is not told which copy is which, so how well the weights tell them apart is a check of "
            "the weights on this data set. The probes are left out of every other number on this page.</p>"
            + _table(["check", "value", "meaning"], rows)
            + _figure(_figure_uri(plot_reliability(r["reliability"], r["ece"], tau)), "reliability diagram",
                      f"Reliability of P(w &gt; {tau:g}) on the probes: per bin of the probability, the fraction "
                      "of good probes (numbers: probes in the bin); on the dashed line the probability is "
                      "calibrated.")
            + _table(["P(w &gt; tau) bin", "probes", "mean P", "fraction good"], bins)
            + f'<p class="note">With {len(probes)} probes, one probe more or less moves the precision or a '
              "bin's fraction by a large step: these are rough numbers; more probes per class make them finer.</p>"
              "</section>")


def _metrics_section(metrics: dict) -> str:
    rows = []
    for name, m in list(metrics.get("methods", {}).items())[:MAX_ROWS]:
        m = m if isinstance(m, dict) else {}
        rows.append([_esc(_cell(name)), _fmt(m.get("test_accuracy")), _fmt(m.get("test_accuracy_ensemble")),
                     _fmt(m.get("seconds"), 3)])
    wm = metrics.get("weights") or {}
    wrows = [[_esc(_cell(k)), _cell(_fmt(v))] for k, v in list(wm.items())[:MAX_ROWS]] if isinstance(wm, dict) else []
    return ('<section id="metrics"><h2>Metrics against baselines</h2>'
            + _table(["method", "test accuracy (last iterate)", "test accuracy (ensemble)", "seconds"], rows)
            + (f"<h3>Weights against the ground truth</h3>{_table(['metric', 'value'], wrows)}" if wrows else "")
            + "</section>")


def write_csv(fh, table) -> None:
    """A DataFrame as CSV, several times faster than pandas' writer at 10^6 rows (floats with 6 decimals)."""
    columns = []
    for name in table.columns:
        values = table[name].to_numpy()
        if values.dtype.kind == "f":
            columns.append([f"{v:.6f}" for v in values.tolist()])
        else:
            columns.append([str(v) for v in values.tolist()])
    fh.write(",".join(map(str, table.columns)) + "\n")
    for start in range(0, len(table), 100_000):
        fh.write("\n".join(map(",".join, zip(*(c[start:start + 100_000] for c in columns)))) + "\n")


def selection_csv_path(html: Path) -> Path:
    """Where the full per-example table goes beside a report page: NAME.selection.csv."""
    return html.with_name(f"{html.stem}.selection.csv")


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 run_label: str | None = None, overwrite: bool = False) -> Path:
    """Write the report (default RUN_DIR/report.html) and its CSV atomically; return the page's path.
    An existing file is replaced only with `overwrite`, or when it is pyro-dps's own in its run directory."""
    from .rundir import RUN_FILES, check_out_file, record

    run_dir = Path(run_dir)
    out = run_dir / "report.html" if out is None else Path(out)
    csv = selection_csv_path(out)
    for path in (out, csv):
        check_out_file(path, overwrite, "report file")
    text, table = _build(run_dir, run_label, None, csv.name)
    write_atomic(csv, lambda fh: write_csv(fh, table), error=ReportError)
    write_atomic(out, lambda fh: fh.write(text), error=ReportError)
    if out.parent.resolve() == run_dir.resolve() and {out.name, csv.name} <= RUN_FILES \
            and (run_dir / ".pyro-dps-manifest.json").is_file():
        record(run_dir, [out.name, csv.name])
    return out


def write_run_report(run_dir: str | os.PathLike, run_label: str | None = None,
                     echo: Callable[[str], Any] = print) -> Path | None:
    """The hook `run_scenario` calls: write RUN_DIR/report.html; a failure is reported, not raised, so that
    a finished run's draws and metrics are never lost to a report problem."""
    try:
        return write_report(run_dir, None, run_label)
    except Exception as exc:  # noqa: BLE001 - see docstring
        kind = "" if isinstance(exc, DPSError) else f"{type(exc).__name__}: "
        echo(f"warning: report.html not written: {kind}{exc}")
        return None
