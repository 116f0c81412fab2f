"""The report's trace, rank and ESS plots, drawn by the installed ArviZ line's own plotting functions.

ArviZ 0.x: `arviz.plot_trace`, `arviz.plot_rank` and `arviz.plot_ess(kind="evolution")`; ArviZ 1.x: their
`arviz_plots` equivalents (`plot_trace_dist`, `plot_rank`, `plot_ess_evolution`, matplotlib backend); an ArviZ 1.x
without arviz-plots gets the hand-drawn trace and rank plots of `pyro_dps.diagnostics`, and so does a run ArviZ
cannot plot (one chain of two draws, on ArviZ 1.x), with the reason in the caption. Each plot shows the per-draw
scalars (meta_loss, w_mean, the log joint lp, ...) and a few weights (those with the highest R-hat).

    for fig in diagnostic_figures(data, examples=[12, 40], min_ess=400):
        fig.figure, fig.alt, fig.caption
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..arviz_data import ARVIZ_1, ARVIZ_VERSION, get_group, posterior_group, scalar_names, weights_name
from ..errors import DataError
from ..quiet import arviz_plotting
from ..selection import credible_interval, prob_above

MAX_PLOTTED_WEIGHTS = 4  # weights shown beside the scalars (more would make the figures unreadably tall)


@dataclass(frozen=True)
class DiagnosticFigure:
    """A matplotlib Figure, its alt text and its caption (which names the function that drew it)."""

    figure: Any
    alt: str
    caption: str


def plotting_line() -> str:
    """Which plotting functions the report uses: "arviz" (0.x), "arviz_plots" (1.x) or "pyro_dps" (hand-drawn)."""
    if not ARVIZ_1:
        return "arviz"
    return "arviz_plots" if importlib.util.find_spec("arviz_plots") is not None else "pyro_dps"


def diagnostic_panel(data, examples: list | None = None) -> xr.Dataset:
    """The variables the plots show, (chain, draw[, example]) each: the posterior's per-draw scalars, `lp` of
    sample_stats, and the weights of `examples` (at most MAX_PLOTTED_WEIGHTS); variables with a non-finite
    draw are left out (ArviZ's density estimates need finite values). DataError when nothing is left."""
    post = posterior_group(data)
    panel = post[scalar_names(data)]
    try:
        stats = get_group(data, "sample_stats")
    except KeyError:
        stats = None
    if stats is not None and "lp" in stats and "lp" not in panel:
        panel = panel.assign(lp=stats["lp"])
    wname = weights_name(post)
    if wname and examples:
        w = post[wname].sel(example=list(examples)[:MAX_PLOTTED_WEIGHTS])
        panel = panel.assign({wname: w.drop_vars([c for c in w.coords if c not in w.dims])})
    panel = panel[[name for name, v in panel.data_vars.items() if np.isfinite(v.values).all()]]
    if not panel.data_vars:
        raise DataError("no finite per-draw variable to plot")
    return panel.transpose("chain", "draw", ...)


def diagnostic_figures(data, examples: list | None = None, min_ess: float = 400.0) -> list[DiagnosticFigure]:
    """Trace, rank and ESS figures of `diagnostic_panel(data, examples)`, drawn by the installed ArviZ line's
    functions (`plotting_line`); `min_ess` is the ESS the ESS plot marks (the report's floor)."""
    line = plotting_line()
    if line == "pyro_dps":
        return _hand_drawn(data, examples, "arviz-plots is not installed")
    try:
        panel = diagnostic_panel(data, examples)
        with arviz_plotting():
            figures = _arviz0(panel, min_ess) if line == "arviz" else _arviz1(panel, min_ess)
    except Exception as exc:  # noqa: BLE001 - a run ArviZ cannot plot still gets its page, and is told why
        return _hand_drawn(data, examples, f"ArviZ could not plot this run: {type(exc).__name__}: {str(exc)[:120]}")
    for fig in figures:
        fig.figure.tight_layout()
    return figures


def _sizes(panel: xr.Dataset) -> tuple[int, int, int]:
    """(plotted quantities, columns, rows) of a grid of one small panel per quantity."""
    count = sum(int(np.prod([v.sizes[d] for d in v.dims if d not in ("chain", "draw")])) for v in panel.values())
    cols = min(4, count)
    return count, cols, math.ceil(count / cols)


def _captions(source: str, names: tuple[str, str, str]) -> list[tuple[str, str]]:
    """(alt, caption) of the trace, rank and ESS figures, naming the function that drew each."""
    version = f"ArviZ {ARVIZ_VERSION}"
    return [("trace plots", f"<code>{source}.{names[0]}</code> ({version}): per-chain distributions (left) and "
                            "draws (right) of the per-draw scalars and of the weights with the highest R-hat."),
            ("rank plots", f"<code>{source}.{names[1]}</code> ({version}): ranks of each chain's draws among all "
                           "chains' draws; agreeing chains spread evenly over all ranks."),
            ("ESS evolution", f"<code>{source}.{names[2]}</code> ({version}): bulk and tail ESS as the draws "
                              "accumulate; the dashed line is the report's ESS floor.")]


def _arviz0(panel: xr.Dataset, min_ess: float) -> list[DiagnosticFigure]:
    """The three figures by ArviZ 0.x's own functions."""
    import arviz as az

    count, cols, rows = _sizes(panel)
    trace = az.plot_trace(panel, compact=False, figsize=(10, 1.5 * count + 0.6), show=False)
    rank = az.plot_rank(panel, grid=(rows, cols), figsize=(3.4 * cols, 2.2 * rows + 0.4), show=False)
    ess = az.plot_ess(panel, kind="evolution", min_ess=min_ess, grid=(rows, cols),
                      figsize=(3.4 * cols, 2.4 * rows + 0.4), show=False)
    figures = [np.ravel(axes)[0].get_figure() for axes in (trace, rank, ess)]
    texts = _captions("arviz", ("plot_trace", "plot_rank", 'plot_ess(kind="evolution")'))
    return [DiagnosticFigure(f, alt, cap) for f, (alt, cap) in zip(figures, texts)]


def _arviz1(panel: xr.Dataset, min_ess: float) -> list[DiagnosticFigure]:
    """The three figures by arviz_plots (ArviZ 1.x), matplotlib backend."""
    import arviz_plots as azp

    count, cols, rows = _sizes(panel)
    grid = {"backend": "matplotlib", "col_wrap": cols}
    trace = azp.plot_trace_dist(panel, compact=False, backend="matplotlib",
                                figure_kwargs={"figsize": (10, 1.5 * count + 0.6)})
    rank = azp.plot_rank(panel, **grid, method="mtc_c" if panel.sizes["chain"] > 1 else "envelope",
                         figure_kwargs={"figsize": (3.4 * cols, 2.2 * rows + 0.4)})
    ess = azp.plot_ess_evolution(panel, **grid, min_ess=min_ess,
                                 figure_kwargs={"figsize": (3.4 * cols, 2.4 * rows + 0.4)})
    figures = [pc.viz["figure"].item() for pc in (trace, rank, ess)]
    texts = _captions("arviz_plots", ("plot_trace_dist", "plot_rank", "plot_ess_evolution"))
    return [DiagnosticFigure(f, alt, cap) for f, (alt, cap) in zip(figures, texts)]


def _hand_drawn(data, examples: list | None, why: str) -> list[DiagnosticFigure]:
    """The trace and rank plots of `pyro_dps.diagnostics`, when ArviZ's cannot be drawn (`why`)."""
    from html import escape

    from ..diagnostic_plots import plot_rank, plot_trace

    shown, why = ", ".join(map(str, examples or [])), escape(why)
    return [DiagnosticFigure(plot_trace(data, examples=examples), "trace plots",
                             f"Per-draw scalars and the weights with the highest R-hat (examples {shown}); drawn "
                             f"by pyro-dps ({why})."),
            DiagnosticFigure(plot_rank(data, examples=examples), "rank plots",
                             "Rank plots: every chain should spread evenly over all ranks; drawn by pyro-dps "
                             f"({why}).")]


CERTAINTY_POINTS = 5000  # examples drawn in the certainty scatter (evenly spaced in P(w > tau) order beyond)


def plot_certainty(draws: np.ndarray, clean: np.ndarray | None = None, tau: float = 0.5, interval: float = 0.9):
    """P(w_i > tau) against the width of each example's `interval` credible interval, one point per example
    (at most CERTAINTY_POINTS), coloured clean / corrupted when known: the decided examples sit at P = 0 or 1
    with narrow intervals; the ones to look at by hand sit in between with wide ones."""
    from ..diagnostic_plots import pyplot

    plt = pyplot()
    p = prob_above(draws, tau)
    lo, hi = credible_interval(draws, interval)
    rows = np.argsort(p, kind="stable")
    if rows.size > CERTAINTY_POINTS:
        rows = rows[np.linspace(0, rows.size - 1, CERTAINTY_POINTS).round().astype(int)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if clean is None:
        ax.scatter((hi - lo)[rows], p[rows], s=6, alpha=0.5, color="tab:blue")
    else:
        clean = np.asarray(clean, bool)
        for flag, color, label in ((True, "tab:green", "clean"), (False, "tab:red", "corrupted")):
            keep = rows[clean[rows] == flag]
            ax.scatter((hi - lo)[keep], p[keep], s=6, alpha=0.5, color=color, label=label)
        ax.legend(loc="center right", fontsize=8)
    ax.set_xlabel(f"width of the {interval:.0%} interval of w")
    ax.set_ylabel(f"P(w > {tau:g})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.03, 1.03)
    return fig
