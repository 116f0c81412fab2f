"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011): x += eps/2 * g + sqrt(eps * T) * xi."""
from __future__ import annotations

import torch

from .blocked import blocked_langevin
from .pyro_adapter import SGMCMCKernel
from .rule import UpdateRule


class SGLDRule(UpdateRule):
    def init(self, x):
        return {}

    def apply(self, x, g, aux, eps, temperature, noise):
        self._move(x, g, eps, temperature, noise, None)

    def apply_guarded(self, x, g, aux, eps, temperature, noise, ok):
        self._move(x, g, eps, temperature, noise, ok)

    @staticmethod
    def _move(x, g, eps, temperature, noise, ok):
        """The update, written once; a rejected step (`ok` false) takes neither gradient nor noise."""
        if ok is not None:
            g = torch.where(ok, g, 0.0)
        x.add_(g * (eps / 2))
        if temperature > 0:
            xi = noise(x) if ok is None else noise(x) * ok.to(x.dtype)
            x.add_(xi * (eps * temperature) ** 0.5)


def sgld(potential, step_size, temperature: float = 1.0, local_step_size=None, generator=None,
          guard: bool = True, comm=None, noise_rows=None, compile: bool = False, weight_update: str = "auto",
          candidates: int = 8):
    """SGLD as an (init, step) pair."""
    return blocked_langevin(potential, SGLDRule(), step_size, temperature, local_step_size, generator=generator,
                            guard=guard, comm=comm, noise_rows=noise_rows, compile=compile,
                            weight_update=weight_update, candidates=candidates)


class SGLD(SGMCMCKernel):
    """SGLD as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(sgld)
