"""The default step for table weights: theta by the kernel's rule, the batch's weights drawn exactly.

One forward pass gives the batch's losses under theta; the batch's weights are then drawn from their
exact conditional given theta and the other weights (`kernels/conditional.py`: a systematic-scan Gibbs
sweep of the rows, no step size); one backward pass gives theta's gradient with the new weights, and the
rule moves theta. That is a blocked Gibbs sampler with a Langevin move for theta: the weights' block is
exact for the current theta, theta's move is the kernel's (stochastic-gradient) Langevin move given the
weights. The table holds the weights themselves (no logits), so nothing about them needs a clamp.
Nothing is O(N_t); in a sharded run each rank proposes for its rows and every rank runs the same scan
over the whole batch (one all-gather of a few numbers per row).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..potential import weight_sum
from .compiled import check_compilable, compiled_exact_step, count_rejection
from .conditional import conditional_weights
from .noise import noise_source
from .schedules import make_schedule
from .state import Batch, SamplingAlgorithm, SGMCMCState, initial_state
from .theta_move import move_theta, reduce_gradient


def exact_gibbs_langevin(potential, rule, step_size, temperature: float, generator=None, guard: bool = True,
                         comm=None, noise_rows: tuple[int, int] | None = None, compile: bool = False,
                         candidates: int = 8) -> SamplingAlgorithm:
    """theta by `rule`, the batch's table weights by exact conditional draws, as an (init, step) pair."""
    cw = conditional_weights(potential, temperature, candidates)
    eps_theta = make_schedule(step_size)
    theta_noise = noise_source(generator)
    total, start = noise_rows if noise_rows is not None else (None, 0)
    distributed = comm is not None and comm.world > 1
    gather = comm.all_gather_cat if distributed else None
    groups = potential.sum_groups
    if compile:
        check_compilable(potential, rule, rule, comm)
        fused_step = compiled_exact_step()

    def init(theta: torch.Tensor, weights: torch.Tensor) -> SGMCMCState:
        return _init_state(potential, rule, compile, theta, weights)

    def uniforms(rows: int) -> torch.Tensor:
        """The whole global batch's uniforms (every rank draws them all from the shared chain generator)."""
        shape = cw.uniforms_shape(total if total is not None else rows)
        return torch.rand(shape, generator=generator, device=potential.problem.device, dtype=torch.float64)

    def step(state: SGMCMCState, batch: Batch, scale: float = 1.0) -> SGMCMCState:
        train_idx, meta_idx = batch
        eps_t = eps_theta(state.step) * scale
        host_idx = None
        if state.table.device != state.theta.device:  # a host table: only the batch's rows move
            host_idx, train_idx = train_idx, train_idx.to(state.theta.device, non_blocking=True)
        at = train_idx if host_idx is None else host_idx
        w_old = state.table[at].to(state.theta.device, non_blocking=True)
        local_rest = state.w_sum - weight_sum(potential, w_old, train_idx)
        rest = local_rest + (comm.sum(state.w_sum) - state.w_sum) if distributed else local_rest
        labels = None if groups is None else groups[train_idx]
        u = uniforms(train_idx.shape[0])
        if compile:
            noise_t = theta_noise(state.theta) if temperature > 0 else None
            w_new, state.stats = fused_step(potential, cw, rule, guard, temperature, state.theta, state.theta_aux,
                                            w_old, rest, labels, train_idx, meta_idx, u, eps_t, noise_t,
                                            (state.rejected, state.run, state.max_run))
        else:
            draw = lambda losses: cw.draw(losses, w_old, rest, labels, temperature, u, gather, start)  # noqa: E731
            grads = potential.grads_given(state.theta, train_idx, meta_idx, draw)
            g_theta, ok = reduce_gradient(grads.theta, grads.local, comm, guard)
            move_theta(rule, state, g_theta, ok, eps_t, temperature, theta_noise)
            w_new = grads.local if ok is None else torch.where(ok, grads.local, w_old)
            if ok is not None:
                count_rejection(ok, state.rejected, state.run, state.max_run)
            state.stats = grads.stats
        state.table[at] = w_new.to(state.table.device)
        state.w_sum = local_rest + weight_sum(potential, w_new, train_idx)
        state.step += 1
        return state

    return SamplingAlgorithm(init, step, lambda table: table, "exact", lambda state: rule.end_warmup(state.theta_aux))


def _init_state(potential, rule, compile: bool, theta: torch.Tensor, weights: torch.Tensor) -> SGMCMCState:
    """A chain's first state: the table holds the starting weights themselves, in [0, 1] (a pinned starting
    table stays pinned)."""
    theta = theta.detach().clone()
    table = weights.detach().float().clamp(0.0, 1.0)
    if compile and table.device != theta.device:
        raise ConfigError("compile = true needs the weight table on the network's device (table_device unset)")
    table = table.pin_memory() if weights.is_pinned() else table.clone()
    w_sum = weight_sum(potential, table).to(theta.device)
    return initial_state(theta, table, {}, w_sum, rule)
