"""Convergence diagnostics of a run's draws: per-example R-hat, ESS and MCSE of the weights, the same for
the per-draw scalars, a pass/warn/fail summary, and plots.

    data = to_arviz("runs/demo")
    diag = diagnose(data)                  # diag.weights: one row per example; diag.scalars: one per scalar
    for check in summary(diag): print(check.status, check.name, check.message)

Statistics come from ArviZ: rank-normalised split R-hat (Vehtari et al. 2021), bulk and tail ESS, MCSE of
the mean. `_STAT_FUNCTIONS` is the one place that picks the 0.x (`arviz.rhat/ess/mcse`) or the 1.x
(`arviz_stats.rhat/ess/mcse`) functions; both take a Dataset with dims (chain, draw, ...).

Thresholds (`Thresholds`, all stated in the report):
- R-hat: > 1.01 warns, > 1.05 fails. For the N_t weights the check fails when more than 5% of them
  (`max_bad_fraction`) exceed 1.05, and warns when more of them exceed 1.01 than chance alone explains;
  a scalar fails/warns on its own value.
- ESS (bulk and tail): below 100 PER CHAIN (`ess_floor` x chains: 400 for 4 chains, as Vehtari et al.
  2021 ask, so that R-hat itself is reliable) warns; for the weights the check fails when more than 5% of
  them are below the floor, and warns when more are below it than chance alone explains.
- Chance, for thousands of weights: even independent, perfectly mixed draws put some quantities past a
  threshold (at 100 draws per chain about half of them have ESS below 100 per chain, and a few percent
  R-hat above 1.01). `chance_rates` measures that fraction on independent normal draws of the run's own
  shape (the rank-normalised statistics do not depend on the distribution), and a weights check warns
  only when its count is improbable under it (binomial tail below `Thresholds.chance_level`, 1%).
- Parameter-space scalars (`theta_norm`) are reported but not checked: a network's permutation
  symmetries give every chain its own, equivalent mode, so |theta| cannot agree across chains however
  well the function they compute mixes. Convergence is checked on function-space quantities: the weights,
  `w_mean` (sum w / N_t), the meta loss (the predictive on D_m), the train loss and the log joint.
- Non-finite draws or non-finite sampler steps fail; steps the divergence guard rejected (non-finite
  gradients, undone and followed by a smaller step size) warn.
Weights whose draws are all identical in every chain (R-hat undefined) count as agreeing, and are reported.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from .arviz_data import ARVIZ_1, example_groups, get_group, is_arviz_data, nonfinite_steps, posterior_group, \
    rejected_steps, scalar_names, to_arviz, weight_draws
from .draws import weights_name
from .quiet import arviz_stats

STATUSES = ("pass", "warn", "fail")


def _stat_functions() -> dict:
    """rhat / ess_bulk / ess_tail / mcse_mean as functions of a Dataset: the one version dispatch."""
    if ARVIZ_1:
        import arviz_stats as azs

        return {"rhat": lambda ds: azs.rhat(ds, method="rank"),
                "ess_bulk": lambda ds: azs.ess(ds, method="bulk"),
                "ess_tail": lambda ds: azs.ess(ds, method="tail"),
                "mcse_mean": lambda ds: azs.mcse(ds, method="mean"),
                "summary": lambda data, var_names: azs.summary(data, var_names=var_names, kind="all")}
    import arviz as az

    return {"rhat": lambda ds: az.rhat(ds, method="rank"),
            "ess_bulk": lambda ds: az.ess(ds, method="bulk"),
            "ess_tail": lambda ds: az.ess(ds, method="tail"),
            "mcse_mean": lambda ds: az.mcse(ds, method="mean"),
            "summary": lambda data, var_names: az.summary(data, var_names=var_names, kind="all")}


@dataclass(frozen=True)
class Thresholds:
    """The limits `summary` checks against."""

    rhat_warn: float = 1.01
    rhat_fail: float = 1.05
    ess_floor: float = 100.0  # per chain
    max_bad_fraction: float = 0.05
    chance_level: float = 0.01  # a weights count warns when chance gives one as high with lower probability

    def ess_needed(self, chains: int) -> float:
        """The ESS a quantity needs over all `chains` together (the per-chain floor times the chains)."""
        return self.ess_floor * max(int(chains), 1)


PARAMETER_SPACE = ("theta_norm",)  # reported, not checked (module docstring)


@dataclass
class Diagnostics:
    """Per-example (`weights`) and per-scalar (`scalars`) tables of mean, sd, R-hat, ESS and MCSE."""

    weights: pd.DataFrame
    scalars: pd.DataFrame
    chains: int
    draws: int
    nonfinite_draws: dict[str, int] = field(default_factory=dict)
    nonfinite_steps: int = 0
    rejected_steps: int = 0

    def rhat_fraction(self, below: float = 1.05) -> float:
        """Fraction of weights with R-hat < `below` (identical-draws weights count as below)."""
        if self.weights.empty:
            return float("nan")
        r = self.weights["rhat"].to_numpy()
        return float(np.mean((r < below) | self.weights["constant"].to_numpy()))


@dataclass(frozen=True)
class Check:
    """One diagnostic check: `status` is 'pass', 'warn' or 'fail'."""

    name: str
    status: str
    value: str
    threshold: str
    message: str


STATS = ("rhat", "ess_bulk", "ess_tail", "mcse_mean")


def compute_stats(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """{'rhat', 'ess_bulk', 'ess_tail', 'mcse_mean'} of every variable of `ds` (dims chain, draw, ...)."""
    out = {}
    functions = _stat_functions()
    with warnings.catch_warnings(), arviz_stats():  # constant draws give 0/0 inside ArviZ: NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in STATS:
            out[name] = functions[name](ds)
    return out


def arviz_summary(data, var_names: list[str] | None = None) -> pd.DataFrame:
    """ArviZ's own summary table (mean, sd, HDI/ETI, MCSE, ESS, R-hat) of ArviZ data, on either line.

    Columns differ slightly between the lines (0.x: hdi_3%/hdi_97%; 1.x: eti/hdi columns of its
    `ci_prob`); `diagnose` gives the same statistics with fixed column names.
    """
    if not is_arviz_data(data):
        data = to_arviz(data)
    with warnings.catch_warnings(), arviz_stats():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _stat_functions()["summary"](data, var_names)


def diagnose(data) -> Diagnostics:
    """Diagnostics of ArviZ data (from `to_arviz`), a draws Dataset or a run directory."""
    if not is_arviz_data(data):  # a draws Dataset, a run directory, a draws.nc path or a Posterior
        data = to_arviz(data)
    post = posterior_group(data)
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    ds, wname = _diagnosed_variables(data)
    scalars = [name for name in ds.data_vars if name != wname]
    stats = compute_stats(ds) if chains * draws > 3 else {}
    nonfinite = {name: int((~np.isfinite(ds[name].values)).sum()) for name in ds.data_vars}
    rows = []
    for name in scalars:
        values = ds[name].values.astype(np.float64)
        row = {"name": name, "mean": float(np.nanmean(values)), "sd": float(np.nanstd(values, ddof=1))
               if values.size > 1 else float("nan"), "constant": bool(np.nanmax(values) == np.nanmin(values))}
        for stat, result in stats.items():
            row[stat] = float(result[name].values)
        rows.append(row)
    scalar_table = pd.DataFrame(rows, columns=["name", "mean", "sd", "rhat", "ess_bulk", "ess_tail", "mcse_mean",
                                               "constant"]).set_index("name")
    if wname is not None:
        w = ds[wname].transpose("chain", "draw", "example")
        values = w.values.astype(np.float64)
        flat = values.reshape(chains * draws, -1)
        table = pd.DataFrame({"example": post["example"].values, "mean": flat.mean(0),
                              "sd": flat.std(0, ddof=1) if flat.shape[0] > 1 else np.nan,
                              "constant": flat.max(0) == flat.min(0)})
        for stat, result in stats.items():
            table[stat] = np.asarray(result[wname].transpose("example").values, dtype=np.float64)
        for key, group in example_groups(data).items():
            table[key] = group
        weight_table = table.set_index("example")
    else:
        weight_table = pd.DataFrame(columns=["mean", "sd", "constant", "rhat", "ess_bulk", "ess_tail", "mcse_mean"])
    for table in (scalar_table, weight_table):
        for col in ("rhat", "ess_bulk", "ess_tail", "mcse_mean"):
            if col not in table:
                table[col] = np.nan
    return Diagnostics(weight_table, scalar_table, chains, draws, nonfinite, nonfinite_steps(data),
                       rejected_steps(data))


def _diagnosed_variables(data) -> tuple[xr.Dataset, str | None]:
    """(what `diagnose` computes statistics of, the weights' name): the posterior's per-draw scalars, the log
    joint (`lp` of sample_stats) and the per-example weights."""
    post = posterior_group(data)
    wname = weights_name(post)
    ds = post[scalar_names(data) + ([wname] if wname else [])]
    try:
        stats = get_group(data, "sample_stats")
    except KeyError:
        return ds, wname
    if "lp" in stats and "lp" not in ds:
        ds = ds.assign(lp=stats["lp"])
    return ds, wname


CHANCE_QUANTITIES = 1000  # independent quantities simulated per (chains, draws) (a few seconds with ArviZ 0.x)


@functools.lru_cache(maxsize=16)
def chance_rates(chains: int, draws: int, rhat_warn: float, ess_floor: float) -> dict[str, float]:
    """How often independent, perfectly mixed quantities have R-hat above `rhat_warn` and bulk / tail ESS
    below `ess_floor` per chain at `chains` x `draws`: measured on iid normal draws (a fixed seed), each rate
    as the upper end of its 95% Clopper-Pearson interval, so that simulation noise never makes a check warn."""
    from scipy.stats import beta

    x = np.random.default_rng(0).normal(size=(chains, draws, CHANCE_QUANTITIES))
    ds = xr.Dataset({"x": (("chain", "draw", "q"), x)})
    functions = _stat_functions()
    with warnings.catch_warnings(), arviz_stats():
        warnings.simplefilter("ignore", RuntimeWarning)
        past = {"rhat": functions["rhat"](ds)["x"].values > rhat_warn,
                **{kind: functions[kind](ds)["x"].values < ess_floor * chains for kind in ("ess_bulk", "ess_tail")}}
    return {kind: float(beta.ppf(0.95, k + 1, CHANCE_QUANTITIES - k)) if k < CHANCE_QUANTITIES else 1.0
            for kind, k in ((kind, int(flags.sum())) for kind, flags in past.items())}


def beyond_chance(count: int, n: int, rate: float, level: float) -> bool:
    """Whether `count` of `n` quantities past a threshold is improbable (P < `level`) when each is past it
    with probability `rate` by chance alone."""
    from scipy.stats import binom

    return count > 0 and float(binom.sf(count - 1, n, rate)) < level


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=STATUSES.index) if statuses else "pass"


def summary(data, thresholds: Thresholds | None = None) -> list[Check]:
    """Checks with pass/warn/fail: finiteness, sampler steps, R-hat and ESS of weights and scalars."""
    th = thresholds or Thresholds()
    diag = data if isinstance(data, Diagnostics) else diagnose(data)
    checks: list[Check] = []
    bad_draws = {k: v for k, v in diag.nonfinite_draws.items() if v}
    checks.append(Check("finite draws", "fail" if bad_draws else "pass",
                        str(sum(bad_draws.values())), "0 non-finite values",
                        f"non-finite values in {sorted(bad_draws)}" if bad_draws else "all draws are finite"))
    checks.append(Check("non-finite sampler steps", "fail" if diag.nonfinite_steps else "pass",
                        str(diag.nonfinite_steps), "0 (fail otherwise)",
                        "the sampler took steps with non-finite values" if diag.nonfinite_steps
                        else "no non-finite steps reported"))
    checks.append(Check("rejected sampler steps", "warn" if diag.rejected_steps else "pass",
                        str(diag.rejected_steps), "0 (warn otherwise)",
                        "the divergence guard rejected steps with non-finite gradients and reduced the step size"
                        if diag.rejected_steps else "no rejected steps reported"))
    if diag.chains < 2:
        checks.append(Check("chains", "warn", str(diag.chains), ">= 2",
                            "R-hat needs at least 2 chains; run more chains to assess convergence"))
    w = diag.weights
    if not w.empty:
        n = len(w)
        rhat = w["rhat"].to_numpy()
        const = w["constant"].to_numpy()
        assessed = ~const
        over_fail = int(np.sum(assessed & ~(rhat <= th.rhat_fail)))  # NaN R-hat of a varying weight counts as bad
        over_warn = int(np.sum(assessed & ~(rhat <= th.rhat_warn)))
        frac_fail = over_fail / n
        chance = chance_rates(diag.chains, diag.draws, th.rhat_warn, th.ess_floor)
        n_assessed = int(assessed.sum())
        warn = beyond_chance(over_warn, n_assessed, chance["rhat"], th.chance_level)
        status = "fail" if frac_fail > th.max_bad_fraction else ("warn" if warn else "pass")
        checks.append(Check(
            "R-hat of weights", status, f"{100 * (1 - frac_fail):.1f}% < {th.rhat_fail}; max {np.nanmax(rhat):.3f}"
            if np.isfinite(rhat).any() else "not computable",
            f"fail if > {100 * th.max_bad_fraction:.0f}% of weights exceed {th.rhat_fail}; warn if more exceed "
            f"{th.rhat_warn} than chance explains",
            f"{over_fail} of {n} weights have R-hat > {th.rhat_fail}, {over_warn} > {th.rhat_warn} (chance alone: "
            f"{100 * chance['rhat']:.1f}% of perfectly mixed ones at {diag.draws} draws per chain)"
            + (f"; {int(const.sum())} have identical draws in every chain" if const.any() else "")))
        floor = th.ess_needed(diag.chains)
        for kind in ("ess_bulk", "ess_tail"):
            ess = w[kind].to_numpy()
            low = int(np.sum(assessed & ~(ess >= floor)))
            warn = beyond_chance(low, n_assessed, chance[kind], th.chance_level)
            status = "fail" if low / n > th.max_bad_fraction else ("warn" if warn else "pass")
            label = "bulk" if kind == "ess_bulk" else "tail"
            checks.append(Check(
                f"{label} ESS of weights", status,
                f"median {np.nanmedian(ess):.0f}; min {np.nanmin(ess):.0f}" if np.isfinite(ess).any() else "n/a",
                f"fail if > {100 * th.max_bad_fraction:.0f}% of weights below {floor:.0f} ({th.ess_floor:.0f} "
                f"per chain); warn if more are below than chance explains",
                f"{low} of {n} weights have {label} ESS < {floor:.0f} ({diag.chains * diag.draws} draws; chance "
                f"alone: {100 * chance[kind]:.1f}% of perfectly mixed ones)"))
    checks += _scalar_checks(diag, th)
    return checks


def _scalar_checks(diag: Diagnostics, th: Thresholds) -> list[Check]:
    """R-hat and ESS of every function-space scalar; parameter-space ones are named as not checked."""
    checks, floor = [], th.ess_needed(diag.chains)
    for name, row in diag.scalars.iterrows():
        if name in PARAMETER_SPACE:
            checks.append(Check(f"{name} (not checked)", "pass", f"R-hat {row['rhat']:.3f}", "-",
                                "a parameter-space scalar: permutation symmetries keep each chain in its own "
                                "equivalent mode; convergence is judged on function-space quantities"))
            continue
        if row["constant"]:
            checks.append(Check(f"{name}", "pass", "constant", "-", f"{name} is the same in every draw"))
            continue
        r = row["rhat"]
        status = "fail" if not (r <= th.rhat_fail) else ("warn" if r > th.rhat_warn else "pass")
        checks.append(Check(f"R-hat of {name}", status, f"{r:.3f}" if math.isfinite(r) else "n/a",
                            f"warn > {th.rhat_warn}, fail > {th.rhat_fail}",
                            f"rank-normalised split R-hat over {diag.chains} chains"))
        ess = min(row["ess_bulk"], row["ess_tail"])
        checks.append(Check(f"ESS of {name}", "warn" if not (ess >= floor) else "pass",
                            f"bulk {row['ess_bulk']:.0f}, tail {row['ess_tail']:.0f}",
                            f"warn < {floor:.0f} ({th.ess_floor:.0f} per chain)",
                            f"effective sample size out of {diag.chains * diag.draws} draws"))
    return checks


def overall(checks: list[Check]) -> str:
    """The worst status of a list of checks."""
    return _worst([c.status for c in checks])


def checks_table(checks: list[Check]) -> pd.DataFrame:
    """Checks as a DataFrame (for notebooks)."""
    return pd.DataFrame([c.__dict__ for c in checks])


def worst_examples(diag: Diagnostics, n: int = 4) -> list:
    """Example ids with the highest R-hat (NaN last): the ones to look at in trace and rank plots."""
    if diag.weights.empty:
        return []
    order = diag.weights["rhat"].fillna(-np.inf).sort_values(ascending=False)
    return list(order.index[:n])


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
    ds, wname = _diagnosed_variables(data)
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


PLOT_POINTS = 5000  # examples drawn in the sorted-means panel (evenly spaced in rank when N_t is larger)
PLOT_LEVELS = 30  # group levels drawn per grouping (the largest)


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
