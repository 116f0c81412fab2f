"""Preconditioned SGLD (Li et al. 2016): an RMSprop preconditioner G = 1 / (lambda + sqrt(V)).

    V <- alpha V + (1 - alpha) g^2         (bias-corrected by the count of updates, per row)
    x <- x + eps/2 * G g + sqrt(eps * T * G) * xi

The Gamma(theta) correction term is dropped, as in the paper's experiments; it vanishes as V settles.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import SGMCMCKernel, UpdateRule, blocked_langevin, noise_like


class PSGLDRule(UpdateRule):
    def __init__(self, alpha: float = 0.99, eps_precond: float = 1e-5):
        if not 0 <= alpha < 1:
            raise ConfigError(f"alpha (preconditioner decay) must be in [0, 1), got {alpha!r}")
        if not eps_precond > 0:
            raise ConfigError(f"eps_precond must be > 0, got {eps_precond!r}")
        self.alpha, self.lam = alpha, eps_precond

    def init(self, x):
        return {"v": torch.zeros_like(x), "n": torch.zeros_like(x)}

    def apply(self, x, g, aux, eps, temperature, generator):
        v, n = aux["v"], aux["n"]
        n.add_(1)
        v.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        # G = 1 / (lam + sqrt(V / (1 - alpha^n)))
        precond = v.div(1 - torch.pow(self.alpha, n)).sqrt_().add_(self.lam).reciprocal_()
        x.addcmul_(precond, g, value=eps / 2)
        if temperature > 0:
            # no noise where no gradient has been seen yet (V = 0 would make G = 1/lambda, a huge jump)
            x.addcmul_(precond.sqrt_().mul_(v > 0), noise_like(x, generator), value=math.sqrt(eps * temperature))


def psgld(potential, step_size, temperature: float = 1.0, local_step_size=None, alpha: float = 0.99,
          eps_precond: float = 1e-5, generator=None, guard: bool = True):
    """pSGLD as an (init, step) pair."""
    return blocked_langevin(potential, PSGLDRule(alpha, eps_precond), step_size, temperature, local_step_size,
                            generator=generator, guard=guard)


class PSGLD(SGMCMCKernel):
    """pSGLD as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(psgld)
