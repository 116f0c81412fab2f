"""A chain's plain record and the (init, step) pair that moves it (BlackJAX style)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..potential import SiteLayout, weight_sum

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SGMCMCState:
    """A chain's position and kernel state; a plain record, updated in place and returned."""

    theta: torch.Tensor  # flat unconstrained global position
    table: torch.Tensor | None  # per-example unconstrained weights u (w = sigmoid(u)), length N_t
    theta_aux: dict[str, Any]  # the rule's state for theta (momentum, preconditioner, ...)
    table_aux: dict[str, torch.Tensor]  # the rule's per-row state for the table
    w_sum: torch.Tensor  # float64 scalar, sum_i w_i
    step: int = 0
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    rejected: torch.Tensor | None = None  # count of rejected (non-finite) steps, on the device
    run: torch.Tensor | None = None  # current run of consecutive rejections
    max_run: torch.Tensor | None = None  # longest such run so far


@dataclass
class SamplingAlgorithm:
    """A sampler as a pair of functions (BlackJAX style), plus how to read the weights off its table."""

    init: Callable[..., SGMCMCState]
    step: Callable[[SGMCMCState, Batch], SGMCMCState]
    weights: Callable[[torch.Tensor], torch.Tensor] = lambda table: table  # table -> w in [0, 1]
    weight_update: str = "none"  # "exact", "langevin", or "none" (no per-example table)
    end_warmup: Callable[[SGMCMCState], None] = lambda state: None  # fix what adapted during warm-up


def initial_state(theta: torch.Tensor, table, table_aux, w_sum, rule) -> SGMCMCState:
    """A chain's first state: theta copied, the rule's state for it, zeroed rejection counters."""
    zero = torch.zeros((), dtype=torch.long, device=theta.device)
    return SGMCMCState(theta, table, rule.init_global(theta), table_aux, w_sum, rejected=zero.clone(),
                       run=zero.clone(), max_run=zero.clone())


def resync_w_sum(potential: SiteLayout, state: SGMCMCState, weights: Callable | None = None) -> None:
    """Recompute sum_i w_i exactly (O(N_t)); the driver does it when it records a draw. `weights` reads the
    algorithm's table (`SamplingAlgorithm.weights`; the potential's sigmoid of logits by default)."""
    if state.table is not None:
        w = (weights or potential.weights)(state.table)
        state.w_sum = weight_sum(potential, w).to(state.theta.device)
