"""Preconditioned SGLD (Li et al. 2016): an RMSprop preconditioner G = 1 / (lambda + sqrt(V)).

    V <- alpha V + (1 - alpha) g^2         (bias-corrected by the count of updates, per row)
    x <- x + eps/2 * G g + sqrt(eps * T * G) * xi

theta's step size adapts from its gradients' statistics: each coordinate moves by eps/2 times its
gradient over the running root mean square of its gradients (eps = 1e-3, like Adam's and RMSprop's
default learning rate, is then a dimensionless step). V keeps adapting after warm-up, as in Li et al.'s
and the paper's experiments (the Gamma(theta) correction term is dropped). `freeze_preconditioner=True`
freezes V at the end of warm-up (`end_warmup`), which makes the sampling phase SGLD with a fixed
preconditioner (Gamma exactly zero); it is not the default because a coordinate whose gradients were
small when V froze then takes steps its later gradients make huge: a CIFAR-10 ResNet-8 after an 80-step
warm-up reached |theta| ~ 1e16 within 70 steps (benchmarks/quality.py --quick, seed 1), stable without it.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .blocked import blocked_langevin
from .pyro_adapter import SGMCMCKernel
from .rule import UpdateRule


class PSGLDRule(UpdateRule):
    def __init__(self, alpha: float = 0.99, eps_precond: float = 1e-5, freeze: bool = False):
        if not 0 <= alpha < 1:
            raise ConfigError(f"alpha (preconditioner decay) must be in [0, 1), got {alpha!r}")
        if not eps_precond > 0:
            raise ConfigError(f"eps_precond must be > 0, got {eps_precond!r}")
        self.alpha, self.lam, self.freeze = alpha, eps_precond, bool(freeze)

    def init(self, x):
        return {"v": torch.zeros_like(x), "n": torch.zeros_like(x)}  # per-row counts: a row moves only in its batches

    def init_global(self, x):
        # one count; `adapt` is 1 while V follows the gradients (warm-up) and 0 once it is frozen
        return {"v": torch.zeros_like(x), "n": torch.zeros((), dtype=x.dtype, device=x.device),
                "adapt": torch.ones((), dtype=x.dtype, device=x.device)}

    def end_warmup(self, aux):
        if self.freeze and "adapt" in aux:
            aux["adapt"].zero_()

    def apply(self, x, g, aux, eps, temperature, noise):
        self._second_moment(aux, g, None)
        self._move(x, g, aux, eps, temperature, noise, aux["v"] > 0)

    def apply_guarded(self, x, g, aux, eps, temperature, noise, ok):
        # a rejected step: g -> 0, V keeps its value (decay 1), the count does not advance, no noise
        g = torch.where(ok, g, 0.0)
        self._second_moment(aux, g, ok)
        self._move(x, g, aux, eps, temperature, noise, (aux["v"] > 0) & ok)

    def _second_moment(self, aux, g, ok):
        """V <- alpha V + (1 - alpha) g^2 and the count advance where the step is accepted (`ok`) and V adapts."""
        adapt = aux.get("adapt")
        on = ok if adapt is None else (adapt > 0) if ok is None else ok & (adapt > 0)
        if on is None:
            aux["n"].add_(1)
            aux["v"].mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
            return
        g = torch.where(on, g, 0.0)
        aux["n"].add_(on.to(g.dtype))
        aux["v"].mul_(torch.where(on, self.alpha, 1.0)).addcmul_(g, g, value=1 - self.alpha)

    def _move(self, x, g, aux, eps, temperature, noise, noisy):
        # G = 1 / (lam + sqrt(V / (1 - alpha^n))); n >= 1 wherever V > 0 (elsewhere V = 0 and g = 0)
        bias = torch.pow(self.alpha, aux["n"].clamp(min=1)).neg_().add_(1)
        precond = aux["v"].div(bias).sqrt_().add_(self.lam).reciprocal_()
        x.add_(precond * g * (eps / 2))
        if temperature > 0:
            # no noise where no gradient has been seen yet (V = 0 would make G = 1/lambda, a huge jump)
            x.add_(precond.sqrt_().mul_(noisy) * noise(x) * (eps * temperature) ** 0.5)


def psgld(potential, step_size, temperature: float = 1.0, local_step_size=None, alpha: float = 0.99,
          eps_precond: float = 1e-5, generator=None, guard: bool = True, comm=None, noise_rows=None,
          compile: bool = False, weight_update: str = "auto",
          candidates: int = 8, freeze_preconditioner: bool = False):
    """pSGLD as an (init, step) pair."""
    rule = PSGLDRule(alpha, eps_precond, freeze_preconditioner)
    return blocked_langevin(potential, rule, step_size, temperature, local_step_size,
                            generator=generator, guard=guard, comm=comm, noise_rows=noise_rows, compile=compile,
                            weight_update=weight_update, candidates=candidates)


class PSGLD(SGMCMCKernel):
    """pSGLD as a `pyro.infer.mcmc.MCMCKernel`."""

    algorithm = staticmethod(psgld)
