"""report.html: one self-contained page a person reads in a browser (figures as base64 PNG, inline CSS,
nothing fetched), built from a run directory's metrics.json and draws.nc.

    pyro-dps report runs/demo                  # writes runs/demo/report.html
    write_report("runs/demo", "/tmp/r.html")

Sections (HTML ids): config, diagnostics, weights, trusted, uncertain, selection, metrics.
A missing or corrupt file raises `ReportError` (a `DPSError`) naming the file; the page is written to a
temporary file and renamed into place, so a failure leaves no half-written report.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .arviz_data import ARVIZ_VERSION, RunDirError, arviz_line, example_groups, load_run, to_arviz, weight_draws
from .diagnostics import Thresholds, diagnose, overall, plot_diagnostic_histograms, plot_rank, plot_trace, \
    plot_weights_by_group, summary, worst_examples
from .outputs import write_atomic
from .errors import DPSError
from .selection import beta_budget, chain_jaccard, credible_interval, jaccard, mean_offdiagonal, probability_rule, \
    select_budget, select_by_probability, selection_table, top_beta_rule, uncertain

SECTIONS = ["config", "diagnostics", "weights", "trusted", "uncertain", "selection", "metrics"]
N_SHOW = 12  # examples shown per gallery


class ReportError(RunDirError):
    """The run directory cannot be turned into a report (missing or corrupt files, no weight draws)."""


# ------------------------------------------------------------------------------------------- encoding
def png_bytes(image: np.ndarray) -> bytes:
    """A PNG file of an (H, W) grayscale or (H, W, 3) RGB uint8 image (no dependencies)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 2:
        color, rows = 0, image
    elif image.ndim == 3 and image.shape[2] == 3:
        color, rows = 2, image.reshape(image.shape[0], -1)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _data_uri(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """One example's features as a displayable uint8 image, or None when they are not an image."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        side = int(round(np.sqrt(x.size)))
        if side * side != x.size or side < 4:
            return None
        x = x.reshape(side, side)
    elif x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    elif x.ndim == 3 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else x
    elif x.ndim != 2:
        return None
    lo, hi = float(np.min(x)), float(np.max(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.round(x * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- the run
@dataclass
class _Examples:
    """What the galleries show per example: images (features) or texts, and the true label when known."""

    features: np.ndarray | None = None
    texts: list[str] | None = None
    true_labels: np.ndarray | None = None
    note: str = ""

    def image_uri(self, pos: int) -> str | None:
        """A thumbnail of training example `pos` (encoded on demand), or None."""
        if self.features is None:
            return None
        img = _as_image(self.features[pos])
        return None if img is None else _data_uri(png_bytes(img))


def _recover_examples(config: dict, labels: np.ndarray | None) -> _Examples:
    """Rebuild the training set from the run's data spec (deterministic) to show the examples themselves."""
    spec = config.get("data")
    if not isinstance(spec, dict):
        return _Examples(note="the run configuration has no data specification; examples are shown by id only")
    try:
        from .scenario import build_data

        data = build_data(spec)
    except Exception as exc:  # data files not present here, an unknown source, ...: the report still works
        return _Examples(note=f"examples could not be rebuilt from the data specification ({exc}); "
                              "shown by id only")
    y = data.y_train.numpy()
    if labels is not None and (len(labels) != len(y) or not np.array_equal(labels, y)):
        return _Examples(note="the rebuilt training set does not match the run's labels; shown by id only")
    true = data.y_train_true.numpy() if data.y_train_true is not None else None
    texts = getattr(data, "texts_train", None)
    if texts is not None:
        return _Examples(texts=[str(t) for t in texts], true_labels=true)
    x = data.x_train.numpy()
    if not len(x) or _as_image(x[0]) is None:
        return _Examples(true_labels=true, note="the features are not images; examples are shown by id only")
    return _Examples(features=x, true_labels=true)


# ------------------------------------------------------------------------------------------- html bits
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "&ndash;"
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, (dict, list)):
        return _esc(json.dumps(value))
    return _esc(value)


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status.upper()}</span>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_esc(alt)}">{cap}</figure>'


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
.cfg { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0 24px; }
"""


HINT = ("<p><b>Why the chains may disagree, and what helps.</b> A weight moves only when its example is in "
        "the minibatch, so with small local steps the weights mix slowly and every chain keeps its own values. "
        "A larger <code>sampler.local_step_size</code>, a longer <code>warmup</code> and more draws "
        "(<code>samples</code> &times; <code>thin</code>) raise the ESS and bring R-hat down. Network-level "
        "scalars (theta_norm, meta_loss) usually keep a high R-hat: each chain settles in its own mode of the "
        "network, which SG-MCMC does not leave.</p>")


# ------------------------------------------------------------------------------------------- build
def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def build_report(run_dir: str | os.PathLike, run_label: str | None = None,
                 thresholds: Thresholds | None = None) -> str:
    """The report's HTML text for a run directory."""
    run_dir = Path(run_dir)
    try:
        ds, metrics = load_run(run_dir)
    except ReportError:
        raise
    except RunDirError as exc:
        raise ReportError(str(exc)) from exc
    config = metrics.get("config", {}) or {}
    if ds.sizes.get("example", 0) == 0:
        raise ReportError(f"{str(run_dir / 'draws.nc')!r} holds no per-example weight draws "
                          "(a weight-network run); nothing to report per example")
    th = thresholds or Thresholds()
    data = to_arviz(run_dir)
    diag = diagnose(data)
    checks = summary(diag, th)
    w = weight_draws(data)
    draws = np.asarray(w.values, dtype=np.float64)  # (chain, draw, N)
    ids = np.asarray(w["example"].values)
    groups = example_groups(data)
    labels = groups.get("label")
    clean = groups["clean"].astype(bool) if "clean" in groups else None
    n = draws.shape[-1]
    mean = draws.reshape(-1, n).mean(0)
    lo, hi = credible_interval(draws, 0.9)

    hyper = (config.get("model") or {}).get("hyper") or {}
    beta = _num(hyper.get("beta"))
    beta_note = f"beta = {beta:g} from model.hyper"
    if beta is None or not 0 < beta <= 1:
        post_beta = diag.scalars["mean"].get("beta") if "beta" in diag.scalars.index else None
        beta = float(post_beta) if post_beta is not None and 0 < post_beta <= 1 else 0.5
        beta_note = (f"beta = {beta:.3g}, the posterior mean of the latent beta" if post_beta is not None
                     else "beta = 0.5 (the model gives no fixed beta)")
    k = beta_budget(n, beta)
    keep_top = select_budget(mean, k)
    order = np.argsort(-mean, kind="stable")
    cut = float((mean[order[k - 1]] + mean[order[k]]) / 2) if 0 < k < n else (0.5 if k == 0 else float(mean.min()))
    tau, q = 0.5, 0.9
    keep_prob = select_by_probability(draws, tau, q)
    unsure = uncertain(draws, cut, 0.9)

    info = _recover_examples(config, labels)
    title = metrics.get("scenario") or config.get("name") or run_dir.name
    label = run_label if run_label is not None else str(run_dir)
    status = overall(checks)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>BADS report: {_esc(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>Bayesian data point selection: {_esc(title)}</h1>"
             f"<p>run {_esc(label)} &middot; {n} training examples &middot; {diag.chains} chains &times; "
             f"{diag.draws} draws &middot; ArviZ {_esc(ARVIZ_VERSION)} ({arviz_line()}) &middot; generated {now}</p>"
             f"</header>",
             "<nav>" + "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS) + "</nav><main>"]

    # --- config
    cfg_tables = []
    for section in ("data", "network", "model", "sampler", "baselines"):
        value = config.get(section)
        if not isinstance(value, dict):
            continue
        flat = value
        if section == "model" and isinstance(value.get("hyper"), dict):
            flat = {**value["hyper"], "file": value.get("file")}
        rows = [[_esc(key), _fmt(v)] for key, v in flat.items()]
        cfg_tables.append(f"<div><h3>{section}</h3>{_table(['key', 'value'], rows)}</div>")
    parts.append('<section id="config"><h2>Run configuration</h2>'
                 + (f'<div class="cfg">{"".join(cfg_tables)}</div>' if cfg_tables
                    else '<p class="note">metrics.json has no resolved configuration.</p>') + "</section>")

    # --- diagnostics
    frac = diag.rhat_fraction(th.rhat_fail)
    rows = [[_badge(c.status), _esc(c.name), _esc(c.value), _esc(c.threshold), _esc(c.message)] for c in checks]
    worst = worst_examples(diag, 3)
    parts.append(
        '<section id="diagnostics"><h2>Convergence diagnostics</h2>'
        f'<p class="summary-line">Overall: {_badge(status)} &nbsp; {100 * frac:.1f}% of the weights have '
        f'R-hat &lt; {th.rhat_fail} (target: at least 95%).</p>'
        f'<p class="muted">Rank-normalised split R-hat, bulk/tail ESS and MCSE from ArviZ. Thresholds: R-hat '
        f'&gt; {th.rhat_warn} warns, &gt; {th.rhat_fail} fails; ESS below {th.ess_floor:.0f} (all chains '
        f'together) warns; for the {n} weights a check fails when more than {100 * th.max_bad_fraction:.0f}% '
        f'of them are past the limit. Non-finite draws or steps fail; steps the divergence guard rejected '
        f'warn.</p>'
        + _table(["status", "check", "value", "threshold", "detail"], rows, "checks")
        + (HINT if frac < 0.95 else "")
        + _figure(_figure_uri(plot_diagnostic_histograms(diag, th)), "R-hat and ESS histograms",
                  "Per-example R-hat and bulk ESS of the weights, thresholds dashed.")
        + _figure(_figure_uri(plot_trace(data, examples=worst)), "trace plots",
                  f"Per-draw scalars and the weights with the highest R-hat (examples {', '.join(map(str, worst))}).")
        + _figure(_figure_uri(plot_rank(data, examples=worst)), "rank plots",
                  "Rank plots: every chain should spread evenly over all ranks.")
        + "</section>")

    # --- weights by group
    rows = []
    for key, values in groups.items():
        for level in sorted(np.unique(values).tolist()):
            cols = values == level
            name = ("clean" if level else "noisy") if key == "clean" else str(level)
            rows.append([_esc(key), _esc(name), str(int(cols.sum())), _fmt(float(mean[cols].mean())),
                         _fmt(float(np.median(mean[cols]))), _fmt(float(keep_top[cols].mean()))])
    parts.append('<section id="weights"><h2>Weight distributions by group</h2>'
                 + _figure(_figure_uri(plot_weights_by_group(data)), "weights by group",
                           "Pooled weight draws (violins) and posterior means (boxes) per group; right: every "
                           "example's posterior mean and 90% interval, sorted.")
                 + _table(["group", "level", "examples", "mean weight", "median of means",
                           f"selected at beta={beta:g}"], rows)
                 + "</section>")

    # --- galleries
    def card(pos: int) -> str:
        ex = ids[pos]
        cls = "" if clean is None else (" clean" if clean[pos] else " noisy")
        lines = [f"<b>#{_esc(ex)}</b>"]
        if labels is not None:
            given = f"label {_esc(labels[pos])}"
            if info.true_labels is not None and info.true_labels[pos] != labels[pos]:
                given += f" (true {_esc(info.true_labels[pos])})"
            lines.append(given)
        if clean is not None:
            lines.append("clean" if clean[pos] else "noisy")
        lines.append(f"w = {mean[pos]:.3f}")
        lines.append(f"90%: [{lo[pos]:.2f}, {hi[pos]:.2f}]")
        uri = info.image_uri(pos)
        media = f'<img src="{uri}" alt="example {_esc(ex)}">' if uri else ""
        if info.texts is not None:
            media = f'<div class="text">{_esc(info.texts[pos][:300])}</div>'
        return f'<div class="card{cls}">{media}' + "<br>".join(lines) + "</div>"

    def gallery(positions) -> str:
        return '<div class="gallery">' + "".join(card(int(p)) for p in positions) + "</div>"

    note = f'<p class="note">{_esc(info.note)}</p>' if info.note else ""
    parts.append('<section id="trusted"><h2>Most and least trusted examples</h2>' + note
                 + f"<h3>Most trusted (highest posterior mean weight)</h3>{gallery(order[:N_SHOW])}"
                 + f"<h3>Least trusted (lowest posterior mean weight)</h3>{gallery(order[::-1][:N_SHOW])}"
                 + "</section>")
    unsure_pos = np.flatnonzero(unsure)
    unsure_pos = unsure_pos[np.argsort(-(hi - lo)[unsure_pos], kind="stable")]
    parts.append('<section id="uncertain"><h2>Uncertain examples</h2>'
                 f"<p>{len(unsure_pos)} of {n} examples ({100 * len(unsure_pos) / n:.1f}%) have a 90% interval that "
                 f"straddles the selection boundary w = {cut:.3f} (the cut of the top-beta selection below): "
                 "their keep/drop decision is not settled by the posterior. Widest intervals first.</p>"
                 + (gallery(unsure_pos[:N_SHOW]) if len(unsure_pos) else '<p class="note">none</p>')
                 + "</section>")

    # --- selection
    def quality(mask: np.ndarray) -> list[str]:
        if clean is None:
            return ["&ndash;", "&ndash;"]
        sel = int(mask.sum())
        prec = float(clean[mask].mean()) if sel else float("nan")
        rec = float(mask[clean].mean()) if clean.any() else float("nan")
        return [_fmt(prec, 3), _fmt(rec, 3)]

    rules = [(f"top-beta by posterior mean ({beta_note}; k = floor(N beta) = {k})", keep_top, top_beta_rule(beta)),
             (f"P(w &gt; {tau:g}) &ge; {q:g}", keep_prob, probability_rule(tau, q))]
    rows = []
    for name, mask, rule in rules:
        agreement = mean_offdiagonal(chain_jaccard(draws, rule)) if draws.shape[0] > 1 else float("nan")
        rows.append([name, str(int(mask.sum())), _fmt(float(mask.mean()), 3), *quality(mask),
                     _fmt(agreement, 3), str(int((mask & unsure).sum()))])
    table = selection_table(draws, ids, groups, keep_top, tau=tau, threshold=cut, interval=0.9)
    csv_uri = _data_uri(table.to_csv(index=False).encode(), "text/csv")
    parts.append('<section id="selection"><h2>Selection at the configured budget</h2>'
                 + _table(["rule", "selected", "fraction", "precision (clean among selected)",
                           "recall (of clean)", "chain agreement (mean pairwise Jaccard)", "of them uncertain"],
                          rows)
                 + f"<p>Jaccard agreement of the two rules: {jaccard(keep_top, keep_prob):.3f}. Chain agreement: "
                   "the rule applied to each chain's draws alone, compared pairwise.</p>"
                 + f'<p><a download="selection.csv" href="{csv_uri}">Download the selection table (CSV)</a>: '
                   f"one row per example with groups, mean, 90% interval, P(w &gt; {tau:g}), the top-beta decision "
                   "and the uncertain flag.</p></section>")

    # --- metrics
    methods = metrics.get("methods", {})
    rows = []
    for name, m in methods.items():
        m = m if isinstance(m, dict) else {}
        rows.append([_esc(name), _fmt(m.get("test_accuracy")), _fmt(m.get("test_accuracy_ensemble")),
                     _fmt(m.get("seconds"), 3)])
    wm = metrics.get("weights") or {}
    wrows = [[_esc(k), _fmt(v)] for k, v in wm.items()]
    parts.append('<section id="metrics"><h2>Metrics against baselines</h2>'
                 + _table(["method", "test accuracy (last iterate)", "test accuracy (ensemble)", "seconds"], rows)
                 + (f"<h3>Weights against the ground truth</h3>{_table(['metric', 'value'], wrows)}" if wrows else "")
                 + "</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 run_label: str | None = None) -> Path:
    """Write the report (default RUN_DIR/report.html) atomically; return its path."""
    run_dir = Path(run_dir)
    out = run_dir / "report.html" if out is None else Path(out)
    text = build_report(run_dir, run_label)
    write_atomic(out, lambda fh: fh.write(text), error=ReportError)
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
