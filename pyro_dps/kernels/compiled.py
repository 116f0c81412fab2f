"""The whole blocked-Langevin step as one `torch.compile`d function (opt-in: `[sampler] compile = true`).

Eager PyTorch dispatches about 150 small ops per BADS step (the rule for two blocks, the guard, the
table's gather and scatter) against about 40 for an SGD step; on a small network that dispatch, not the
arithmetic, is the step's cost. For the fused BADS structure the gradient here comes from
`torch.func.grad` of `FusedPotential.batch_log_joint`, so inductor fuses the forward and backward
passes, both update rules, the guard and the scatter into a few kernels.

The update rules use tensor arithmetic with the step size (no `alpha=` / `value=` keyword, no `math.sqrt`),
so a schedule's new value every step does not make dynamo specialise on it: after one recompile the step
size is a symbolic input (with the keyword forms every value recompiled, up to dynamo's limit, and the
step then ran eagerly).

The noise is drawn outside the compiled function, from the chain's generator and in the eager step's
order (theta's, then the batch rows'), so a compiled chain follows the eager chain's random stream: the
two agree up to float rounding (a test checks it).
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..potential import weight_sum

_compiled = None  # one compiled function for every chain and kernel: dynamo guards on the rule's type and settings
_compiled_exact = None  # the same for the exact-weights step


def check_compilable(potential, rule, local_rule, comm=None) -> None:
    """Raise ConfigError unless the step can be compiled: fused potential, arithmetic rules, one process."""
    if not hasattr(potential, "batch_log_joint") or not potential.supported():
        reason = getattr(potential, "fused_reason", "") or getattr(potential, "reason", "") \
            or "it is evaluated by tracing the model"
        raise ConfigError(f"compile = true needs the fused potential, but this model cannot use it: {reason}")
    for r in (rule, local_rule):
        if not getattr(r, "compilable", True):
            raise ConfigError(f"compile = true is not available for the {type(r).__name__} rule "
                              "(it steps a torch optimiser eagerly)")
    if comm is not None and comm.world > 1:
        raise ConfigError("compile = true is not available for sharded (torchrun) runs yet")


def count_rejection(ok: torch.Tensor, rejected: torch.Tensor, run: torch.Tensor, max_run: torch.Tensor) -> None:
    """On the device: count a rejected step (`ok` false) in the total, the current run and the longest run
    (used by the eager step too)."""
    bad = (~ok).long()
    rejected.add_(bad)
    run.mul_(bad).add_(bad)
    max_run.copy_(torch.maximum(max_run, run))


def _step(potential, rule, local_rule, guard: bool, temperature: float, theta: torch.Tensor,
          theta_aux: dict[str, Any], table: torch.Tensor, table_aux: dict[str, torch.Tensor],
          train_idx: torch.Tensor, meta_idx: torch.Tensor, w_sum: torch.Tensor, eps_t: float, eps_u: float,
          noise_t: torch.Tensor | None, noise_u: torch.Tensor | None, counters: tuple[torch.Tensor, ...],
          u_clamp: float):
    """One step, mutating theta, the aux states, the table and the counters in place; returns (w_sum, stats)."""
    p = potential.problem
    u = table[train_idx]
    rows_aux = {k: v[train_idx] for k, v in table_aux.items()}
    rest = w_sum - weight_sum(potential, torch.sigmoid(u), train_idx)
    x, y = p.batch(train_idx, meta_idx)
    grad_fn = torch.func.grad(potential.batch_log_joint, argnums=(0, 1), has_aux=True)
    (g_theta, g_u), stats = grad_fn(theta, u, x, y, rest, temperature)
    noise_theta, noise_rows = (lambda x: noise_t), (lambda x: noise_u)
    if guard:
        ok = torch.isfinite(g_theta.sum() + g_u.sum())
        rule.apply_guarded(theta, g_theta, theta_aux, eps_t, temperature, noise_theta, ok)
        local_rule.apply_guarded(u, g_u, rows_aux, eps_u, temperature, noise_rows, ok)
        count_rejection(ok, *counters)
    else:
        rule.apply(theta, g_theta, theta_aux, eps_t, temperature, noise_theta)
        local_rule.apply(u, g_u, rows_aux, eps_u, temperature, noise_rows)
    u.clamp_(-u_clamp, u_clamp)
    table[train_idx] = u
    for k, v in rows_aux.items():
        table_aux[k][train_idx] = v
    return rest + weight_sum(potential, torch.sigmoid(u), train_idx), stats


def _exact_step(potential, weights, rule, guard: bool, temperature: float, theta: torch.Tensor,
                theta_aux: dict[str, Any], w_old: torch.Tensor, rest: torch.Tensor, labels: torch.Tensor | None,
                train_idx: torch.Tensor, meta_idx: torch.Tensor, uniforms: torch.Tensor, eps_t: float,
                noise_t: torch.Tensor | None, counters: tuple[torch.Tensor, ...]):
    """One step of `kernels/exact_step.py`: theta's gradient (torch.func.grad of `theta_log_joint`) with the
    batch's weights drawn exactly in between its forward and backward pass; mutates theta, its rule state
    and the counters; returns (new weights, stats)."""
    p = potential.problem
    x, y = p.batch(train_idx, meta_idx)
    draw = lambda losses: weights.draw(losses, w_old, rest, labels, temperature, uniforms)  # noqa: E731
    grad_fn = torch.func.grad(potential.theta_log_joint, argnums=0, has_aux=True)
    g_theta, (w_new, stats) = grad_fn(theta, x, y, train_idx.shape[0], draw)
    noise = lambda x: noise_t  # noqa: E731
    if not guard:
        rule.apply(theta, g_theta, theta_aux, eps_t, temperature, noise)
        return w_new, stats
    ok = torch.isfinite(g_theta.sum() + w_new.sum())
    rule.apply_guarded(theta, g_theta, theta_aux, eps_t, temperature, noise, ok)
    count_rejection(ok, *counters)
    return torch.where(ok, w_new, w_old), stats


def compiled_step():
    """The compiled Langevin-table step (compiled at its first call, once per process; inductor caches its
    kernels on disk)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_step)
    return _reporting_failures(_compiled)


def compiled_exact_step():
    """The compiled exact-weights step (`_exact_step`), compiled once per process."""
    global _compiled_exact
    if _compiled_exact is None:
        _compiled_exact = torch.compile(_exact_step)
    return _reporting_failures(_compiled_exact)


def _reporting_failures(fn):
    """`fn` with a compiler failure (inductor needs a C++ compiler on CPU, triton on CUDA) turned into a
    ConfigError that says how to run without it."""
    import torch._dynamo.exc
    import torch._inductor.exc
    failures = (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError)

    def run(*args):
        try:
            return fn(*args)
        except failures as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"compile = true: torch.compile could not build the step ({first}); it needs a C++ "
                              "compiler on CPU and triton on CUDA; set compile = false to run eagerly") from exc
    return run
