"""The paper's sampler: a torch optimiser step on -log p plus Gaussian noise of fixed standard deviation.

Xu et al. run eta = 1 with noise std 1e-5: in practice a noisy optimiser, kept for reproduction.
theta moves with the named torch optimiser; the batch's weight rows with plain gradient ascent.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..training import OPTIMIZERS
from .blocked import blocked_langevin
from .pyro_adapter import SGMCMCKernel
from .rule import UpdateRule


class OptimizerNoiseRule(UpdateRule):
    """x <- optimiser step on -g, then x += noise_std * xi; eps is the optimiser's learning rate."""

    compilable = False  # a torch optimiser steps eagerly; its noise does not depend on the temperature

    def __init__(self, optimizer: str = "sgd", noise_std: float = 1e-5, **optimizer_kwargs):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if not noise_std >= 0:
            raise ConfigError(f"noise_std must be >= 0, got {noise_std!r}")
        self.optimizer, self.noise_std, self.kwargs = optimizer, noise_std, optimizer_kwargs

    def init(self, x):
        return {"optimizer": OPTIMIZERS[self.optimizer]([x], lr=1.0, **self.kwargs)}

    def apply(self, x, g, aux, eps, temperature, noise):
        opt = aux["optimizer"]
        opt.param_groups[0]["lr"] = eps
        x.grad = g.neg()
        opt.step()
        x.grad = None
        if self.noise_std > 0:
            x.add_(noise(x), alpha=self.noise_std)


class GradientAscentNoiseRule(OptimizerNoiseRule):
    """Per-row version for the weight table: plain ascent, no optimiser state to gather."""

    def __init__(self, noise_std: float = 1e-5):
        super().__init__("sgd", noise_std)

    def init(self, x):
        return {}

    def apply(self, x, g, aux, eps, temperature, noise):
        x.add_(g, alpha=eps)
        if self.noise_std > 0:
            x.add_(noise(x), alpha=self.noise_std)


def paper(potential, step_size, temperature: float = 1.0, local_step_size=None, optimizer: str = "sgd",
          noise_std: float = 1e-5, generator=None, guard: bool = True, comm=None, noise_rows=None,
          compile: bool = False, weight_update: str = "langevin", candidates: int = 8, **optimizer_kwargs):
    """The paper's noisy optimiser as an (init, step) pair (its noise is fixed, not set by the temperature).

    The weights move by the paper's gradient ascent on their logits (`weight_update = "langevin"`), whose
    gradient still carries the logit's log-Jacobian times `temperature` (the potential's convention for
    a tempered density in u); "exact" draws them from their conditional at `temperature` instead, with
    theta still moved by the optimiser."""
    return blocked_langevin(potential, OptimizerNoiseRule(optimizer, noise_std, **optimizer_kwargs), step_size,
                            temperature, local_step_size, local_rule=GradientAscentNoiseRule(noise_std),
                            generator=generator, guard=guard, comm=comm, noise_rows=noise_rows,
                            compile=compile, weight_update=weight_update, candidates=candidates)


class PaperSampler(SGMCMCKernel):
    """The paper's noisy optimiser as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(paper)
