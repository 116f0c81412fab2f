"""The selection a report page shows, a pure function of the weight draws and the run's beta: the budget
k = floor(N beta), the top-k and probability rules, the examples whose interval straddles the top-k cut,
and which examples the galleries and the flagged table show."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..selection import beta_budget, credible_interval, select_budget, select_by_probability
from ..useful_fraction import BUDGET, selection_fraction
from .html import MAX_FLAGGED, N_SHOW


@dataclass
class _Plan:
    """The selection the report shows, a pure function of the draws and the run's beta."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    beta: float
    beta_note: str
    k: int
    keep_top: np.ndarray
    keep_prob: np.ndarray
    unsure: np.ndarray
    order: np.ndarray  # positions by decreasing posterior mean
    unsure_order: np.ndarray  # uncertain positions, widest interval first
    cut: float
    tau: float = 0.5
    q: float = 0.9


def _beta(config: dict, ds, as_run: dict | None) -> tuple[float, str]:
    """(beta, where it came from): model.hyper, else the beta the run resolved (metrics.json "hyper"), else the
    latent beta's posterior mean, else 0.5."""
    beta = selection_fraction((config.get("model") or {}).get("hyper"))
    beta_note = f"beta = {beta:g} from model.hyper" if beta is not None else ""
    if beta is None and BUDGET not in ds:
        beta = selection_fraction(as_run)
        beta_note = f"beta = {beta:.3g}, as the run resolved it" if beta is not None else ""
    if beta is None:
        post_beta = float(np.nanmean(ds[BUDGET].values)) if BUDGET in ds else None
        beta = post_beta if post_beta is not None and 0 < post_beta <= 1 else 0.5
        beta_note = (f"beta = {beta:.3g}, the posterior mean of the latent beta" if post_beta is not None
                     else "beta = 0.5 (the model gives no fixed beta)")
    return beta, beta_note


def _plan(draws: np.ndarray, config: dict, ds, as_run: dict | None = None) -> _Plan:
    """Budget k = floor(N beta) (beta from model.hyper, else the beta the run resolved (metrics.json "hyper"),
    else the latent beta's posterior mean, else 0.5),
    the top-k and probability rules, and the examples whose interval straddles the top-k cut."""
    n = draws.shape[-1]
    mean = draws.reshape(-1, n).mean(0)
    lo, hi = credible_interval(draws, 0.9)
    beta, beta_note = _beta(config, ds, as_run)
    k = beta_budget(n, beta)
    order = np.argsort(-mean, kind="stable")
    cut = float((mean[order[k - 1]] + mean[order[k]]) / 2) if 0 < k < n else (0.5 if k == 0 else float(mean.min()))
    unsure = (lo < cut) & (hi > cut)  # selection.uncertain, from the bounds already at hand
    unsure_pos = np.flatnonzero(unsure)
    unsure_order = unsure_pos[np.argsort(-(hi - lo)[unsure_pos], kind="stable")]
    return _Plan(mean, lo, hi, beta, beta_note, k, select_budget(mean, k), select_by_probability(draws, 0.5, 0.9),
                 unsure, order, unsure_order, cut)


def gallery_positions(plan: _Plan) -> np.ndarray:
    """Positions (into the example axis) of every example a gallery shows, from the selection plan."""
    return np.unique(np.concatenate([plan.order[:N_SHOW], plan.order[::-1][:N_SHOW], plan.unsure_order[:N_SHOW],
                                     flagged_order(plan)[:MAX_FLAGGED]]))


def flagged_order(plan: _Plan) -> np.ndarray:
    """Positions the report's selection (top-beta) drops, lowest posterior mean weight first."""
    return plan.order[::-1][:len(plan.order) - plan.k]
