"""theta's move, shared by both weight updates: the gradient reduced over ranks with a finiteness flag, then
the rule's update, masked when the step is guarded."""
from __future__ import annotations

import torch

from .rule import UpdateRule
from .state import SGMCMCState


def reduce_gradient(g_theta: torch.Tensor, local: torch.Tensor | None, comm, guard: bool):
    """(theta's gradient, ok): averaged over ranks in one all-reduce that also carries a flag that is NaN if
    any rank's rows are, so every rank accepts or rejects the step together; ok is None without a guard."""
    if comm is not None and comm.world > 1:
        flag = local.sum().mul(0).reshape(1).to(g_theta.dtype) if local is not None else g_theta[:0]
        reduced = comm.mean_(torch.cat([g_theta, flag]))
        return reduced[:g_theta.numel()], torch.isfinite(reduced.sum()) if guard else None
    if not guard:
        return g_theta, None
    return g_theta, torch.isfinite(g_theta.sum()) if local is None else torch.isfinite(g_theta.sum() + local.sum())


def move_theta(rule: UpdateRule, state: SGMCMCState, g_theta, ok, eps: float, temperature: float, noise) -> None:
    """theta's rule update, masked by `ok` when the step is guarded (ok not None)."""
    if ok is None:
        rule.apply(state.theta, g_theta, state.theta_aux, eps, temperature, noise)
    else:
        rule.apply_guarded(state.theta, g_theta, state.theta_aux, eps, temperature, noise, ok)
