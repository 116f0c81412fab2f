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
    rejected_steps, scalar_names, to_arviz
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
    ds, wname = diagnosed_variables(data)
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


def diagnosed_variables(data) -> tuple[xr.Dataset, str | None]:
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
