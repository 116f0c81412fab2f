"""BADS with the selection fraction beta as a latent variable (draft)."""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_dps.models.bads import base_prior, default_sigma, theta_prior


def model(ctx, a0: float = 1.0, b0: float = 1.0, sigma: float | None = None, rho_t: float = 1.0,
          rho_m: float = 1.0, prior_scale: float = 1.0, base_a: float = 1.0, base_b: float = 1.0,
          reject_loss: float | None = math.log(10)) -> None:
    theta = theta_prior(ctx, prior_scale)
    beta = pyro.sample("beta", dist.Beta(torch.tensor(float(a0)), torch.tensor(float(b0))))
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", base_prior(base_a, base_b))
        l = ctx.train_losses(theta)
        if reject_loss is not None:
            l = l - reject_loss
        pyro.factor("train_lik", -rho_t * w * l)
    n = ctx.n_train
    sd = (n * beta * (1 - beta)).sqrt() if sigma is None else sigma
    pyro.sample("w_sum", dist.Normal(n * beta, sd), obs=ctx.w_sum(w))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -rho_m * ctx.meta_losses(theta))
