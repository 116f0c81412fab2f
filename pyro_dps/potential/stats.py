"""What a step reports besides its gradients: weight sums, the batch's losses and weights, the log joint.

All functions here read a potential's attributes (`sum_groups`, `problem`, and on the fused path its
priors) and never evaluate the model; `summarize_stats` and `log_joint_estimate` read the device back
(call them at record time, not every step).
"""
from __future__ import annotations

import torch

from ..context import ModelContext


def weight_sum(potential, w: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """sum of the weights w (of training rows `rows`, all rows when None) in float64: a scalar, or per class
    when the model keeps per-class sums (`potential.sum_groups`)."""
    if potential.sum_groups is None:
        return w.double().sum()
    groups = potential.sum_groups if rows is None else potential.sum_groups[rows]
    return torch.zeros(potential.problem.n_outputs, dtype=torch.float64, device=w.device).index_add_(
        0, groups.to(w.device), w.double())


def _batch_stats(losses: torch.Tensor, w: torch.Tensor, lik: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused step's statistics: the batch's train losses (the first len(w) rows), meta losses, weights and
    likelihood estimate, detached."""
    n_t = w.shape[0]
    return {"train_losses": losses[:n_t].detach(), "meta_losses": losses[n_t:].detach(), "w": w.detach(),
            "log_lik": lik.detach()}


def _loss_stats(ctx: ModelContext, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """A traced step's statistics: the losses the model asked its context for, and the batch's weights."""
    if ctx._losses is None:
        return {}
    l_t, l_m = ctx._losses[1]
    return {"train_losses": l_t.detach(), "meta_losses": l_m.detach(), "w": w.detach()}


def summarize_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalars for progress and draws from a step's raw statistics (reads the device: call sparingly)."""
    out = {}
    if "train_losses" in stats:
        out["train_loss"] = float(stats["train_losses"].mean())
        out["weighted_train_loss"] = float((stats["w"] * stats["train_losses"]).mean())
    if "meta_losses" in stats and stats["meta_losses"].numel():
        out["meta_loss"] = float(stats["meta_losses"].mean())
    for key in ("log_lik", "log_joint"):
        if key in stats:
            out[key] = float(stats[key])
    return out


def log_joint_estimate(potential, theta: torch.Tensor, w: torch.Tensor | None,
                       stats: dict[str, torch.Tensor]) -> float:
    """Per-draw log joint: the last minibatch's likelihood estimate plus exact priors (O(N_t), at record time
    only); `w` are all N_t table weights. A traced step's stats carry the log joint itself; a fused step's
    carry the likelihood estimate, and the priors are the fused potential's."""
    if "log_joint" in stats:
        return float(stats["log_joint"])
    value = stats["log_lik"] + potential.log_prior_theta(theta)
    if w is not None:
        value = value + potential._sparsity_log_prob(weight_sum(potential, w))
        if potential.base is not None:
            value = value + potential.base.log_prob(w.clamp(1e-6, 1 - 1e-6)).sum()
    return float(value)
