"""Choosing a model's potential: the fused path where it provably matches the Pyro trace, else the trace."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..context import Problem
from ..errors import ModelError
from .fused import FusedPotential
from .layout import SiteLayout
from .stats import weight_sum
from .trace import TracePotential

POTENTIAL_KINDS = ("auto", "fused", "trace")  # "auto": fused where the model allows it, else trace


def check_agreement(a: SiteLayout, b: SiteLayout, theta: torch.Tensor, table: torch.Tensor,
                    train_idx: torch.Tensor, meta_idx: torch.Tensor, rtol: float = 1e-4,
                    temperature: float = 0.5) -> str:
    """Empty string when both potentials give the same gradients at this state and batch, else what differs."""
    w_all = a.weights(table)
    rest = weight_sum(a, w_all) - weight_sum(a, w_all[train_idx], train_idx)
    ga = a.grads(theta, table[train_idx], train_idx, meta_idx, rest, temperature)
    gb = b.grads(theta, table[train_idx], train_idx, meta_idx, rest, temperature)
    for name, x, y in (("theta", ga.theta, gb.theta), ("w", ga.local, gb.local)):
        finite = torch.isfinite(x)
        if not torch.equal(finite, torch.isfinite(y)):
            return f"gradient of {name} is non-finite in one path only"
        x, y = x[finite], y[finite]
        if not x.numel():
            continue
        scale = float(x.abs().max()) + 1e-12
        err = float((x - y).abs().max())
        if err > rtol * scale:
            return f"gradient of {name} differs by {err:.3g} (scale {scale:.3g})"
    return ""


def make_potential(model: Callable, problem: Problem, hyper: dict[str, Any] | None = None,
                   kind: str = "auto", generator: torch.Generator | None = None) -> TracePotential | FusedPotential:
    """The fastest potential that provably matches the model: fused when it agrees with the trace, else trace."""
    if kind not in POTENTIAL_KINDS:
        raise ModelError(f"potential must be 'auto', 'fused' or 'trace', got {kind!r}")
    if kind == "trace":
        return _traced(model, problem, hyper, "potential = 'trace' was asked for")
    try:
        fused = FusedPotential(model, problem, hyper)
    except ModelError as exc:
        if kind == "fused":
            raise
        return _traced(model, problem, hyper, str(exc))
    if not fused.supported():
        if kind == "fused":
            raise ModelError(f"the fused path does not support this model: {fused.reason}")
        return _traced(model, problem, hyper, fused.reason)
    trace = TracePotential(model, problem, hyper)
    theta = trace.init_theta(generator)
    table = torch.randn(problem.n_train, generator=generator, device=problem.device) if generator is None \
        else torch.randn(problem.n_train, generator=generator).to(problem.device)
    b = min(8, problem.n_train)
    with problem.repeatable_reads():  # both paths see the same rows (a random augmentation reads them once)
        disagreement = check_agreement(fused, trace, theta, table, torch.arange(b, device=problem.device),
                                       torch.arange(min(4, problem.n_meta), device=problem.device))
    if disagreement:
        if kind == "fused":
            raise ModelError(f"fused path disagrees with the Pyro trace: {disagreement}")
        trace.fused_reason = f"the fused path disagrees with the Pyro trace: {disagreement}"
        return trace
    return fused


def _traced(model: Callable, problem: Problem, hyper: dict[str, Any] | None, why: str) -> TracePotential:
    """The trace potential, noting why the fused path is not used (`compile = true` reports it)."""
    trace = TracePotential(model, problem, hyper)
    trace.fused_reason = why
    return trace
