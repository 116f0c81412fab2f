"""The Langevin weight update: the batch's logits u = logit(w) take a step of the kernel's rule on their exact
conditional gradient (no N/B factor), theta moves by the rule on its minibatch gradient."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..potential import weight_sum
from .compiled import check_compilable, compiled_step, count_rejection
from .noise import noise_source
from .schedules import make_schedule
from .state import Batch, SamplingAlgorithm, SGMCMCState, initial_state
from .theta_move import move_theta, reduce_gradient

U_CLAMP = 15.0  # |u| bound: sigmoid(15) < 1 in float32, so weights stay inside (0, 1)


def langevin_table(potential, rule, local_rule, step_size, local_step_size, temperature, generator, guard, comm,
                   noise_rows, compile) -> SamplingAlgorithm:
    """Langevin steps of the rule on theta and on the batch's logits u = logit(w) (their exact conditional
    gradient, no N/B factor); `sum_i w_i` kept incrementally."""
    eps_theta = make_schedule(step_size)
    eps_local = make_schedule(step_size if local_step_size is None else local_step_size)
    has_table = potential.local_site is not None
    theta_noise, local_noise = noise_source(generator), noise_source(generator, noise_rows)
    distributed = comm is not None and comm.world > 1
    if compile:
        check_compilable(potential, rule, local_rule, comm)
        fused_step = compiled_step()

    def init(theta: torch.Tensor, weights: torch.Tensor | None = None) -> SGMCMCState:
        return _init_state(potential, rule, local_rule, compile, theta, weights)

    def step(state: SGMCMCState, batch: Batch, scale: float = 1.0) -> SGMCMCState:
        train_idx, meta_idx = batch
        t = state.step
        eps_t, eps_u = eps_theta(t) * scale, eps_local(t) * scale
        if compile:
            noisy = temperature > 0  # compilable rules draw theta's noise, then the rows', iff T > 0
            noise_t = theta_noise(state.theta) if noisy else None
            noise_u = local_noise(state.table.new_empty(train_idx.shape[0])) if noisy else None
            state.w_sum, state.stats = fused_step(
                potential, rule, local_rule, guard, temperature, state.theta, state.theta_aux, state.table,
                state.table_aux, train_idx, meta_idx, state.w_sum, eps_t, eps_u, noise_t, noise_u,
                (state.rejected, state.run, state.max_run), U_CLAMP)
            state.step = t + 1
            return state
        host_idx = None
        if has_table and state.table.device != state.theta.device:  # a host table: move the batch's rows only
            host_idx, train_idx = train_idx, train_idx.to(state.theta.device, non_blocking=True)
        if has_table:
            u = state.table[train_idx if host_idx is None else host_idx].to(state.theta.device, non_blocking=True)
            local_rest = state.w_sum - weight_sum(potential, potential.weights(u), train_idx)
            rest = local_rest + (comm.sum(state.w_sum) - state.w_sum) if distributed else local_rest
        else:
            u, rest = None, state.w_sum
        grads = potential.grads(state.theta, u, train_idx, meta_idx, rest, temperature)
        g_theta, ok = reduce_gradient(grads.theta, grads.local, comm, guard)
        move_theta(rule, state, g_theta, ok, eps_t, temperature, theta_noise)
        if has_table:
            at = train_idx if host_idx is None else host_idx
            _move_rows(local_rule, state, u, at, grads.local, ok, eps_u, temperature, local_noise)
            state.w_sum = local_rest + weight_sum(potential, potential.weights(u), train_idx)
        if ok is not None:
            count_rejection(ok, state.rejected, state.run, state.max_run)
        state.step = t + 1
        state.stats = grads.stats
        return state

    return SamplingAlgorithm(init, step, potential.weights, "langevin" if has_table else "none",
                             lambda state: rule.end_warmup(state.theta_aux))


def _init_state(potential, rule, local_rule, compile: bool, theta: torch.Tensor,
                weights: torch.Tensor | None) -> SGMCMCState:
    """A chain's first state: the table holds logit(w) of the starting weights, clamped to |u| <= U_CLAMP; a
    pinned starting table (a host table beside a GPU network) stays pinned, so its rows move asynchronously."""
    theta = theta.detach().clone()
    table, w_sum, table_aux = None, torch.zeros((), dtype=torch.float64, device=theta.device), {}
    if potential.local_site is not None:
        pinned = weights.is_pinned()
        w = weights.detach().float().clamp(torch.sigmoid(torch.tensor(-U_CLAMP)), torch.sigmoid(torch.tensor(U_CLAMP)))
        table = torch.logit(w).clamp_(-U_CLAMP, U_CLAMP)
        w_sum = weight_sum(potential, potential.weights(table)).to(theta.device)
        table_aux = local_rule.init(table)
        if compile and table.device != theta.device:
            raise ConfigError("compile = true needs the weight table on the network's device (table_device unset)")
        if pinned:
            table = table.pin_memory()
            table_aux = {k: v.pin_memory() for k, v in table_aux.items()}
    return initial_state(theta, table, table_aux, w_sum, rule)


def _move_rows(local_rule, state: SGMCMCState, u: torch.Tensor, at: torch.Tensor, g_local: torch.Tensor, ok,
               eps_u: float, temperature: float, noise) -> None:
    """The batch's logits (and their rule state) moved by the rule, masked by `ok` when guarded, clamped, and
    written back to the table's rows `at` (on the table's device)."""
    rows = {k: v[at].to(u.device, non_blocking=True) for k, v in state.table_aux.items()}
    if ok is not None:
        local_rule.apply_guarded(u, g_local, rows, eps_u, temperature, noise, ok)
    else:
        local_rule.apply(u, g_local, rows, eps_u, temperature, noise)
    u.clamp_(-U_CLAMP, U_CLAMP)
    state.table[at] = u.to(state.table.device)
    for k, v in rows.items():
        state.table_aux[k][at] = v.to(state.table.device)
