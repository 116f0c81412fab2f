"""BADS with a class-balanced sparsity prior: the selected mass of each class follows the meta set.

The paper's prior (eq. 8) fixes only the total, sum_i w_i ~ N(floor(N_t beta), sigma). With a small
beta each weight's conditional then ranks examples by loss alone, so on an imbalanced D_t the budget
goes to the easiest examples of the majority class (MNIST 4-vs-9: the easy nines) and the rare class's
examples are dropped. The meta set is a sample of the target distribution, so its class proportions
pi_c say how the selected mass should split:

    S_c = sum_{i: y_i = c} w_i ~ Normal(min(floor(N_t beta) pi_c, n_c), sigma)    for every class c

(n_c: the examples of class c in D_t, so a target never exceeds what there is). The kernel keeps the
per-class sums incrementally, as it keeps the total for the paper's model (`ctx.w_sum_by_label`).
"""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_dps.errors import DataError
from pyro_dps.models.bads import base_prior, check_hyper, default_sigma, meta_weight, theta_prior


def class_targets(ctx, beta: float) -> torch.Tensor:
    """Per-class targets of the selected mass: the meta set's class shares of floor(N_t beta), capped at n_c."""
    p, k = ctx.problem, ctx.problem.n_outputs
    shares = torch.bincount(p.y_meta, minlength=k).double() / p.n_meta
    counts = torch.bincount(p.y_train, minlength=k).double() * (p.n_train_total / p.n_train)  # a shard: scaled up
    return torch.minimum(math.floor(ctx.n_train * beta) * shares, counts)


def model(ctx, beta: float | str = "auto", sigma: float | None = None, rho_t: float = 1.0,
          rho_m: float | None = None, prior_scale: float = 1.0, base_a: float = 1.0, base_b: float = 1.0) -> None:
    """The paper's model with one sparsity prior per class (targets from the meta set's class shares)."""
    check_hyper(beta, sigma, rho_t=rho_t, rho_m=rho_m, prior_scale=prior_scale, base_a=base_a, base_b=base_b)
    if ctx.n_meta == 0:
        raise DataError("the meta set D_m is empty: BADS needs at least one curated example")
    theta = theta_prior(ctx, prior_scale)
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", base_prior(base_a, base_b))
        pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta))
    sums = ctx.w_sum_by_label(w)
    scale = default_sigma(ctx.n_train, beta) if sigma is None else sigma
    targets = class_targets(ctx, beta).to(sums.dtype)
    pyro.sample("w_sum", dist.Normal(targets, scale).to_event(1), obs=sums)
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -meta_weight(ctx.n_train, ctx.n_meta, beta, rho_t, rho_m) * ctx.meta_losses(theta))
