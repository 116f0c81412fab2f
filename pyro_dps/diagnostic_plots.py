"""The diagnostics' figures (matplotlib): trace and rank plots of the per-draw scalars and chosen weights,
histograms of the weights' R-hat and ESS against the thresholds, and the weights by group (pooled draws,
posterior means, and every example's mean and interval, sorted). The checks themselves are `diagnostics`."""
from __future__ import annotations

import math

import numpy as np

from .arviz_data import example_groups, weight_draws
from .diagnostics import Diagnostics, Thresholds, diagnosed_variables

PLOT_POINTS = 5000  # examples drawn in the sorted-means panel (evenly spaced in rank when N_t is larger)
PLOT_LEVELS = 30  # group levels drawn per grouping (the largest)


# ------------------------------------------------------------------------------------------------ plots
def pyplot():
    """matplotlib.pyplot drawing to files (Agg), unless an interactive backend is already in use."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # an interactive backend is already in use (notebooks): keep it
            pass
    import matplotlib.pyplot as plt

    return plt


def _series(data, var_names: list[str] | None, examples: list | None) -> list[tuple[str, np.ndarray]]:
    """(label, (chain, draw) array) for the chosen scalars and example weights."""
    ds, wname = diagnosed_variables(data)
    out = []
    for name in ([n for n in ds.data_vars if n != wname] if var_names is None else var_names):
        out.append((name, ds[name].transpose("chain", "draw").values.astype(np.float64)))
    for ex in examples or []:
        out.append((f"w[{ex}]", weight_draws(data).sel(example=ex).transpose("chain", "draw").values
                    .astype(np.float64)))
    return out


def plot_trace(data, examples: list | None = None, var_names: list[str] | None = None):
    """Trace (right) and per-chain histogram (left) of scalars and chosen example weights; a Figure.

    Drawn with matplotlib directly: the 0.x `az.plot_trace` and the 1.x `arviz_plots` APIs differ entirely,
    and one code path keeps the figures identical on both lines.
    """
    plt = pyplot()
    series = _series(data, var_names, examples)
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 1.7 * len(series) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.4]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (label, values) in enumerate(series):
        finite = values[np.isfinite(values)]
        bins = np.linspace(finite.min(), finite.max(), 30) if finite.size and finite.min() < finite.max() else 10
        for c in range(values.shape[0]):
            color = colors[c % len(colors)]
            axes[row, 0].hist(values[c][np.isfinite(values[c])], bins=bins, histtype="step", color=color)
            axes[row, 1].plot(values[c], color=color, lw=0.9, alpha=0.85, label=f"chain {c}")
        axes[row, 0].set_ylabel(label)
        axes[row, 0].set_yticks([])
    axes[0, 1].legend(loc="upper right", fontsize=7, ncol=min(values.shape[0], 4))
    axes[-1, 1].set_xlabel("draw (after thinning)")
    axes[-1, 0].set_xlabel("value")
    fig.suptitle("trace plots: per-chain distribution (left) and draws (right)")
    fig.tight_layout()
    return fig


def rank_counts(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Per-chain histogram counts (chain, bins) of the pooled ranks of (chain, draw) draws."""
    from scipy.stats import rankdata

    ranks = rankdata(values.reshape(-1)).reshape(values.shape)
    edges = np.linspace(0.5, values.size + 0.5, bins + 1)
    return np.stack([np.histogram(ranks[c], bins=edges)[0] for c in range(values.shape[0])])


def plot_rank(data, examples: list | None = None, var_names: list[str] | None = None, bins: int = 10):
    """Rank plots (Vehtari et al. 2021): per-chain histograms of pooled ranks; flat bars = chains agree."""
    plt = pyplot()
    series = _series(data, var_names, examples)
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 1.9 * nrows + 0.6), squeeze=False)
    for k, (label, values) in enumerate(series):
        ax = axes[k // ncols, k % ncols]
        counts = rank_counts(values, bins)
        chains = counts.shape[0]
        width = 1.0 / bins
        left = np.arange(bins) * width
        for c in range(chains):  # a uniform histogram (what agreeing chains give) reaches the dashed line
            height = counts[c] / max(counts[c].sum() / bins, 1e-12) * 0.4
            ax.bar(left + width / 2, height, width=width * 0.9, bottom=c, color=f"C{c}", align="center")
            ax.axhline(c + 0.4, color="k", lw=0.6, ls="--")
        ax.set_yticks(np.arange(chains) + 0.2, [f"chain {c}" for c in range(chains)], fontsize=7)
        ax.set_xticks([])
        ax.set_title(label, fontsize=9)
    for k in range(len(series), nrows * ncols):
        axes[k // ncols, k % ncols].axis("off")
    fig.suptitle("rank plots: bars near the dashed line in every chain = chains agree")
    fig.tight_layout()
    return fig


def plot_diagnostic_histograms(diag: Diagnostics, thresholds: Thresholds | None = None):
    """Histograms of the weights' R-hat and bulk ESS with the thresholds marked."""
    plt = pyplot()
    th = thresholds or Thresholds()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    r = diag.weights["rhat"].to_numpy(dtype=float)
    r = r[np.isfinite(r)]
    if r.size:
        axes[0].hist(r, bins=40, color="tab:gray")
    for x, color in ((th.rhat_warn, "tab:orange"), (th.rhat_fail, "tab:red")):
        axes[0].axvline(x, color=color, ls="--", label=f"{x}")
    axes[0].set_xlabel("R-hat (rank-normalised, split)")
    axes[0].set_ylabel("weights")
    axes[0].legend(title="threshold", fontsize=8)
    e = diag.weights["ess_bulk"].to_numpy(dtype=float)
    e = e[np.isfinite(e)]
    if e.size:
        axes[1].hist(e, bins=40, color="tab:gray")
    floor = th.ess_needed(diag.chains)
    axes[1].axvline(floor, color="tab:red", ls="--", label=f"floor {floor:.0f} ({th.ess_floor:.0f} per chain)")
    axes[1].set_xlabel(f"bulk ESS (of {diag.chains * diag.draws} draws)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _group_labels(key: str, values: np.ndarray) -> tuple[list, list[str]]:
    levels = sorted(np.unique(values).tolist())
    if key == "clean" and set(levels) <= {False, True, 0, 1}:
        return levels, ["noisy" if not v else "clean" for v in levels]
    return levels, [str(v) for v in levels]


def plot_weights_by_group(data, groups: list[str] | None = None, interval: float = 0.9):
    """Weight posteriors by group: per grouping coordinate (class, source, clean/noisy), the posterior means
    of each group's examples (box) over the pooled draws (violin); plus every example's mean and central
    interval, sorted, coloured by clean/noisy when known. Bounded whatever N_t: at most PLOT_LEVELS levels
    per grouping and PLOT_POINTS examples (evenly spaced in rank) in the sorted panel."""
    plt = pyplot()
    w = weight_draws(data).values
    flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    mean = flat.mean(0)
    coords = example_groups(data)
    keys = [k for k in (groups if groups is not None else list(coords)) if k in coords]
    ratios = [max(1.0, min(len(np.unique(coords[k])), PLOT_LEVELS) / 4) for k in keys] + [1.6]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1) + 1, 3.6), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    axes = axes[0]
    rng = np.random.default_rng(0)
    for ax, key in zip(axes, keys):
        levels, names = _group_labels(key, coords[key])
        if len(levels) > PLOT_LEVELS:
            counts = np.array([(coords[key] == v).sum() for v in levels])
            keep = np.sort(np.argsort(-counts, kind="stable")[:PLOT_LEVELS])
            levels, names = [levels[i] for i in keep], [names[i] for i in keep]
        pooled, means = [], []
        for level in levels:
            cols = coords[key] == level
            sample = flat[:, cols].reshape(-1)
            pooled.append(sample if sample.size <= 2000 else rng.choice(sample, 2000, replace=False))
            means.append(mean[cols])
        pos = np.arange(1, len(levels) + 1)
        parts = ax.violinplot(pooled, positions=pos, widths=0.85, showextrema=False)
        for body in parts["bodies"]:
            body.set_alpha(0.35)
        ax.boxplot(means, positions=pos, widths=0.3, showfliers=False)
        ax.set_xticks(pos, [f"{n}\n(n={len(m)})" if len(levels) <= 4 else n for n, m in zip(names, means)],
                      fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"by {key}", fontsize=10)
        ax.set_ylabel("weight")
    ax = axes[-1]
    order = np.argsort(mean, kind="stable")
    x = np.arange(len(order))
    if len(order) > PLOT_POINTS:
        x = np.linspace(0, len(order) - 1, PLOT_POINTS).round().astype(int)
        order = order[x]
    lo, hi = np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    lo[order], hi[order] = np.quantile(flat[:, order], [(1 - interval) / 2, (1 + interval) / 2], axis=0)
    clean = coords.get("clean")
    colors = np.where(clean[order].astype(bool), "tab:blue", "tab:red") if clean is not None else "tab:blue"
    ax.vlines(x, lo[order], hi[order], colors=colors, alpha=0.25, lw=0.8)
    ax.scatter(x, mean[order], c=colors, s=2)
    ax.set_xlabel("examples, sorted by posterior mean")
    ax.set_ylabel(f"mean and {int(interval * 100)}% interval")
    if clean is not None:
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], color="tab:blue", marker="o", ls="", label="clean"),
                           Line2D([], [], color="tab:red", marker="o", ls="", label="noisy")], fontsize=8)
    ax.set_title("every example", fontsize=10)
    fig.tight_layout()
    return fig
