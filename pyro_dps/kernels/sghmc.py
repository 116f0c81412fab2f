"""Stochastic-gradient Hamiltonian Monte Carlo (Chen et al. 2014), in its momentum-SGD form (their eq. 15).

    v <- (1 - alpha) v + eta g + sqrt(2 alpha eta T) xi,    x <- x + v

alpha is the friction (1 - momentum); the gradient-noise estimate beta_hat is taken as 0.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .blocked import blocked_langevin
from .pyro_adapter import SGMCMCKernel
from .rule import UpdateRule


class SGHMCRule(UpdateRule):
    def __init__(self, friction: float = 0.1):
        if not 0 < friction <= 1:
            raise ConfigError(f"friction must be in (0, 1], got {friction!r}")
        self.friction = friction

    def init(self, x):
        return {"momentum": torch.zeros_like(x)}

    def apply(self, x, g, aux, eps, temperature, noise):
        self._move(x, g, aux["momentum"], eps, temperature, noise, None)

    def apply_guarded(self, x, g, aux, eps, temperature, noise, ok):
        self._move(x, g, aux["momentum"], eps, temperature, noise, ok)

    def _move(self, x, g, v, eps, temperature, noise, ok):
        """The update, written once; a rejected step (`ok` false) leaves the momentum and x as they were."""
        if ok is None:
            v.mul_(1 - self.friction).add_(g * eps)
        else:
            v.mul_(torch.where(ok, 1 - self.friction, 1.0)).add_(torch.where(ok, g, 0.0) * eps)
        if temperature > 0:
            xi = noise(x) if ok is None else noise(x) * ok.to(x.dtype)
            v.add_(xi * (2 * self.friction * eps * temperature) ** 0.5)
        if ok is None:
            x.add_(v)
        else:
            x.addcmul_(v, ok.to(x.dtype))


def sghmc(potential, step_size, temperature: float = 1.0, local_step_size=None, friction: float = 0.1,
          generator=None, guard: bool = True, comm=None, noise_rows=None, compile: bool = False, weight_update: str = "auto",
          candidates: int = 8):
    """SGHMC as an (init, step) pair; the per-example momentum moves only when its row is in the batch."""
    return blocked_langevin(potential, SGHMCRule(friction), step_size, temperature, local_step_size,
                            generator=generator, guard=guard, comm=comm, noise_rows=noise_rows, compile=compile,
                            weight_update=weight_update, candidates=candidates)


class SGHMC(SGMCMCKernel):
    """SGHMC as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(sghmc)
