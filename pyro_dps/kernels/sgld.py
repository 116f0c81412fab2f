"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011): x += eps/2 * g + sqrt(eps * T) * xi."""
from __future__ import annotations

import math

from .base import SGMCMCKernel, UpdateRule, blocked_langevin, noise_like


class SGLDRule(UpdateRule):
    def init(self, x):
        return {}

    def apply(self, x, g, aux, eps, temperature, generator):
        x.add_(g, alpha=eps / 2)
        if temperature > 0:
            x.add_(noise_like(x, generator), alpha=math.sqrt(eps * temperature))


def sgld(potential, step_size, temperature: float = 1.0, local_step_size=None, generator=None,
          guard: bool = True):
    """SGLD as an (init, step) pair."""
    return blocked_langevin(potential, SGLDRule(), step_size, temperature, local_step_size, generator=generator,
                            guard=guard)


class SGLD(SGMCMCKernel):
    """SGLD as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(sgld)
