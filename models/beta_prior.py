"""The BADS model (Xu et al., NeurIPS 2024) with a Beta(a, b) base prior on every weight.

    log p(theta, w | D_t, D_m) = sum_i log Beta(w_i; a, b) + log N(sum_i w_i; floor(N_t beta), sigma)
                                 + log p(theta) - rho_t sum_i w_i l(z_i; theta) - rho_m sum_j l(z_j; theta)

Same sites as `models/bads.py` (`theta.<param>`, `w` in the `train` plate, `w_sum`, `train_lik`,
`meta_lik`); the base prior is a constant-parameter distribution on [0, 1], so the library's fused fast
path runs it (checked against the Pyro trace before it is used).

Temperature: the kernels target p^(1/T), and the base prior is tempered with everything else. At
T = 0.01 a Beta(a, b) acts like Beta(1 + (a - 1) / T, 1 + (b - 1) / T) against an untempered likelihood,
so keep a and b close to 1 when sampling cold. Measured on the digits demo (50% noise, one chain of
2,400 steps), mean weight of clean / noisy examples and noise AUROC:
    a = b = 1 (bads.py)  0.92 / 0.05, 0.986      a = b = 1.05 (default)  0.91 / 0.06, 0.990
    a = b = 1.2          0.85 / 0.12, 0.994      a = b = 2               0.62 / 0.35, 0.991
    a = b = 0.9          0.94 / 0.04, 0.974
The default softens the hardest decisions a little without moving the threshold the sparsity prior
sets; a = b = 2 shrinks every weight towards 1/2 (the ranking survives, the weights' meaning does not).
a, b < 1 - T make the tempered density improper at the ends: the weights then run to the clamp of the
unconstrained table.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist

from pyro_dps.models.bads import check_hyper, meta_weight, sparsity_prior, theta_prior


def model(ctx, beta: float | str = "auto", sigma: float | None = None, a: float = 1.05, b: float = 1.05,
          rho_t: float = 1.0, rho_m: float | None = None, prior_scale: float = 1.0) -> None:
    """BADS with w_i ~ Beta(a, b) before the sparsity prior (a = b = 1 is `models/bads.py`)."""
    check_hyper(beta, sigma, a=a, b=b, rho_t=rho_t, rho_m=rho_m, prior_scale=prior_scale)
    theta = theta_prior(ctx, prior_scale)
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", dist.Beta(float(a), float(b)))
        pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta))
    pyro.sample("w_sum", sparsity_prior(ctx.n_train, beta, sigma), obs=ctx.w_sum(w))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -meta_weight(ctx.n_train, ctx.n_meta, beta, rho_t, rho_m) * ctx.meta_losses(theta))
