"""Uncertainty-aware data point selection from weight draws: a functional core (arrays in, arrays out).

Draws are arrays of shape (samples, N) or (chain, draw, N); means are arrays of shape (N,). Every rule
returns a boolean mask of shape (N,) ("keep this example").

    keep = select_top_beta(draws.mean((0, 1)), beta=0.5)       # the top floor(N * beta) by posterior mean
    keep = select_by_probability(draws, tau=0.5, q=0.9)        # P(w_i > tau) >= q
    unsure = uncertain(draws, threshold=0.5, interval=0.9)     # 90% interval straddles the threshold
    chain_jaccard(draws, top_beta_rule(0.5))                   # do the chains agree on the selection?
    selection_table(draws, ids, {"label": y}, keep, tau=0.5)   # one row per example (pandas DataFrame)

Ties in the mean-based rules are broken by position (stable sort), so the result is deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .errors import DataError

Rule = Callable[[np.ndarray], np.ndarray]  # draws (samples, N) -> bool mask (N,)


# ------------------------------------------------------------------------------------------- helpers
def pooled_draws(draws) -> np.ndarray:
    """Every chain's draws pooled into one (samples, N) float array, from (samples, N) or (chain, draw, N)."""
    a = np.asarray(draws, dtype=np.float64)
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2:
        raise DataError(f"draws must have shape (samples, N) or (chain, draw, N), got {a.shape}")
    if a.shape[0] == 0:
        raise DataError("draws are empty: at least one draw is needed")
    return a


def _mean(mean) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float64)
    if m.ndim != 1:
        raise DataError(f"mean must have shape (N,), got {m.shape}")
    if not np.isfinite(m).all():
        raise DataError(f"mean has {int((~np.isfinite(m)).sum())} non-finite values")
    return m


def _prob(name: str, value: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise DataError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def posterior_mean(draws) -> np.ndarray:
    """Per-example posterior mean (N,)."""
    return pooled_draws(draws).mean(0)


def prob_above(draws, tau: float) -> np.ndarray:
    """P(w_i > tau) per example, estimated by the fraction of draws above tau."""
    return (pooled_draws(draws) > tau).mean(0)


def credible_interval(draws, interval: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed central `interval` of each example's draws: (lower, upper), each (N,)."""
    interval = _prob("interval", interval, low_open=True)
    flat = pooled_draws(draws)
    qs = [(1 - interval) / 2, (1 + interval) / 2]
    if not np.isfinite(flat).all():
        lo, hi = np.quantile(flat, qs, axis=0)
        return lo, hi
    ordered = np.sort(flat, axis=0)  # one sort for both bounds; numpy's 'linear' quantile from it, bit for bit
    return tuple(_linear_quantile(ordered, q) for q in qs)


def _linear_quantile(ordered: np.ndarray, q: float) -> np.ndarray:
    """np.quantile(method='linear') along axis 0 of already sorted rows (same interpolation formula)."""
    virtual = q * (ordered.shape[0] - 1)
    below = int(np.floor(virtual))
    above = min(below + 1, ordered.shape[0] - 1)
    t = virtual - below
    a, b = ordered[below], ordered[above]
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


# ------------------------------------------------------------------------------------------- rules
def select_budget(mean, budget: int) -> np.ndarray:
    """Keep the `budget` examples with the highest posterior mean."""
    m = _mean(mean)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 0 <= budget <= len(m):
        raise DataError(f"budget must be an integer in [0, N={len(m)}], got {budget!r}")
    keep = np.zeros(len(m), dtype=bool)
    keep[np.argsort(-m, kind="stable")[:int(budget)]] = True
    return keep


def beta_budget(n: int, beta: float) -> int:
    """floor(N * beta): the number of examples the sparsity prior believes useful (BADS eq. 8)."""
    beta = _prob("beta", beta, low_open=True)
    return int(math.floor(n * beta + 1e-9))


def select_top_beta(mean, beta: float) -> np.ndarray:
    """Keep the top floor(N * beta) examples by posterior mean (the paper's selection at budget beta)."""
    m = _mean(mean)
    return select_budget(m, beta_budget(len(m), beta))


def select_by_probability(draws, tau: float = 0.5, q: float = 0.9) -> np.ndarray:
    """Keep examples with P(w_i > tau) >= q: trusted with posterior probability at least q."""
    _prob("tau", tau)
    q = _prob("q", q)
    return prob_above(draws, tau) >= q


def uncertain(draws, threshold: float, interval: float = 0.9) -> np.ndarray:
    """Examples whose central `interval` straddles `threshold` (lower < threshold < upper): the draws do
    not settle on which side of the decision boundary the example lies."""
    lo, hi = credible_interval(draws, interval)
    return (lo < threshold) & (hi > threshold)


def top_beta_rule(beta: float) -> Rule:
    """`select_top_beta` as a rule on draws (for `chain_jaccard`)."""
    return lambda draws: select_top_beta(posterior_mean(draws), beta)


def budget_rule(budget: int) -> Rule:
    """`select_budget` as a rule on draws."""
    return lambda draws: select_budget(posterior_mean(draws), budget)


def probability_rule(tau: float = 0.5, q: float = 0.9) -> Rule:
    """`select_by_probability` as a rule on draws."""
    return lambda draws: select_by_probability(draws, tau, q)


def jaccard(a, b) -> float:
    """|a & b| / |a | b| of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.sum(a | b)
    return 1.0 if union == 0 else float(np.sum(a & b) / union)


def chain_jaccard(draws, rule: Rule) -> np.ndarray:
    """Pairwise Jaccard agreement (chain, chain) of the selections `rule` makes from each chain alone.

    `draws` has shape (chain, draw, N); `rule` maps one chain's (draw, N) draws to a mask. Off-diagonal
    values near 1 mean the chains would select the same examples; use `mean_offdiagonal` for one number.
    """
    a = np.asarray(draws, dtype=np.float64)
    if a.ndim != 3:
        raise DataError(f"chain_jaccard needs draws of shape (chain, draw, N), got {a.shape}")
    masks = [np.asarray(rule(a[c]), dtype=bool) for c in range(a.shape[0])]
    c = len(masks)
    out = np.ones((c, c))
    for i in range(c):
        for j in range(i + 1, c):
            out[i, j] = out[j, i] = jaccard(masks[i], masks[j])
    return out


def mean_offdiagonal(matrix: np.ndarray) -> float:
    """Mean of the off-diagonal entries (NaN for a 1x1 matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] < 2:
        return float("nan")
    return float(m[~np.eye(m.shape[0], dtype=bool)].mean())


def selection_table(draws, example_ids=None, groups: Mapping[str, np.ndarray] | None = None,
                    selected=None, tau: float = 0.5, threshold: float | None = None, interval: float = 0.9):
    """One row per example: id, groups, mean, sd, interval, P(w > tau), decision, uncertain flag.

    `selected`: the decision mask (default: `select_by_probability(draws, tau, 0.9)`). `threshold`: where
    `uncertain` looks for a straddling interval (default `tau`). Returns a pandas DataFrame;
    `table.to_csv(path, index=False)` writes the CSV.
    """
    import pandas as pd

    flat = pooled_draws(draws)
    n = flat.shape[1]
    ids = np.arange(n) if example_ids is None else np.asarray(example_ids)
    if len(ids) != n:
        raise DataError(f"example_ids has {len(ids)} entries but the draws have N={n}")
    keep = select_by_probability(flat, tau, 0.9) if selected is None else np.asarray(selected, dtype=bool)
    if keep.shape != (n,):
        raise DataError(f"selected must have shape ({n},), got {keep.shape}")
    lo, hi = credible_interval(flat, interval)
    pct = int(round(interval * 100))
    table = {"example": ids}
    for key, values in (groups or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise DataError(f"groups[{key!r}] must have shape ({n},), got {values.shape}")
        table[key] = values
    table.update({"mean": flat.mean(0), "sd": flat.std(0, ddof=1) if flat.shape[0] > 1 else np.full(n, np.nan),
                  f"lower{pct}": lo, f"upper{pct}": hi, f"p_above_{tau:g}": prob_above(flat, tau),
                  "selected": keep,
                  "uncertain": uncertain(flat, tau if threshold is None else threshold, interval)})
    return pd.DataFrame(table)


# ------------------------------------------------------------------------------------------- convenience
@dataclass
class WeightSelection:
    """Weight draws (chain, draw, N) with their example ids and groups; the rules as methods.

        sel = WeightSelection.from_data(to_arviz("runs/demo"))
        sel.table(sel.top_beta(0.5)).to_csv("selection.csv", index=False)
    """

    draws: np.ndarray
    example_ids: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data) -> "WeightSelection":
        """From ArviZ data (`to_arviz`), a draws Dataset, a run directory or a draws.nc path."""
        import xarray as xr

        from .arviz_data import example_groups, is_arviz_data, to_arviz, weight_draws

        if not is_arviz_data(data) and not isinstance(data, xr.Dataset):
            data = to_arviz(data)
        w = weight_draws(data)
        return cls(np.asarray(w.values), np.asarray(w["example"].values), example_groups(data))

    @property
    def mean(self) -> np.ndarray:
        return posterior_mean(self.draws)

    def top_beta(self, beta: float) -> np.ndarray:
        return select_top_beta(self.mean, beta)

    def budget(self, budget: int) -> np.ndarray:
        return select_budget(self.mean, budget)

    def by_probability(self, tau: float = 0.5, q: float = 0.9) -> np.ndarray:
        return select_by_probability(self.draws, tau, q)

    def uncertain(self, threshold: float, interval: float = 0.9) -> np.ndarray:
        return uncertain(self.draws, threshold, interval)

    def chain_jaccard(self, rule: Rule) -> np.ndarray:
        return chain_jaccard(self.draws, rule)

    def table(self, selected=None, tau: float = 0.5, threshold: float | None = None, interval: float = 0.9):
        return selection_table(self.draws, self.example_ids, self.groups, selected, tau, threshold, interval)


# ------------------------------------------------------------------------------------------- corruption rate
def corruption_rate(draws, interval: float = 0.9) -> tuple[float, float, float]:
    """Estimated fraction of corrupted examples: (estimate, lower, upper). The estimate is 1 - the posterior
    mean weight averaged over examples; the interval is the equal-tailed `interval` over draws of each draw's
    average 1 - w (whose mean is the estimate), so it says how much the draws disagree on the rate."""
    interval = _prob("interval", interval, low_open=True)
    per_draw = 1.0 - pooled_draws(draws).mean(1)
    lo, hi = np.quantile(per_draw, [(1 - interval) / 2, (1 + interval) / 2])
    return float(per_draw.mean()), float(lo), float(hi)


def corruption_rate_by_group(draws, values, interval: float = 0.9) -> dict[str, np.ndarray]:
    """`corruption_rate` per level of a grouping (N,): {"level", "count", "estimate", "lower", "upper"}, each
    (levels,), levels sorted. One pass of bincount per draw: O(samples x N) time, O(samples x levels) memory."""
    interval = _prob("interval", interval, low_open=True)
    flat = pooled_draws(draws)
    values = np.asarray(values)
    if values.shape != (flat.shape[1],):
        raise DataError(f"values must have shape ({flat.shape[1]},), got {values.shape}")
    levels, codes, counts = np.unique(values, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    sums = np.stack([np.bincount(codes, weights=1.0 - row, minlength=len(levels)) for row in flat])
    per_draw = sums / counts  # (samples, levels)
    lo, hi = np.quantile(per_draw, [(1 - interval) / 2, (1 + interval) / 2], axis=0)
    return {"level": levels, "count": counts, "estimate": per_draw.mean(0), "lower": lo, "upper": hi}
