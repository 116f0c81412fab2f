"""The BADS model of Xu et al. (NeurIPS 2024), eqs. 2-4 and 8, declared in Pyro.

    log p(theta, w | D_t, D_m) = log p(w) + log p(theta)
                                 - rho_t * sum_i w_i * l(z_i; theta)
                                 - rho_m * sum_j l(z_j; theta) + const

Copy this file to write another prior: keep the site names (`theta.<param>`, `w` in the `train` plate,
`w_sum`, `train_lik`, `meta_lik`) and the library's fast path keeps working; anything else still runs
through the Pyro trace path.
"""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist

from pyro_dps.errors import ConfigError, DataError, UnresolvedAuto


def theta_prior(ctx, prior_scale: float) -> dict:
    """Zero-mean Gaussian prior on every network parameter (weight decay 1 / prior_scale^2)."""
    return {
        name: pyro.sample(f"theta.{name}", dist.Normal(0.0, prior_scale).expand(shape).to_event(len(shape)))
        for name, shape in ctx.param_shapes.items()
    }


def base_prior(base_a: float, base_b: float) -> dist.Distribution:
    """Per-weight base prior on [0, 1]: uniform for (1, 1), else Beta(a, b)."""
    if base_a == 1.0 and base_b == 1.0:
        return dist.Uniform(0.0, 1.0)
    return dist.Beta(base_a, base_b)


def default_sigma(n_train: int, beta: float) -> float:
    """sqrt(N_t) * min(beta, 1/10), at least 1: the spread of sum_i w_i around floor(N_t beta).

    At most sqrt(N_t)/10, a tenth of the spread of a sum of N_t free weights, so the mean weight stays near
    beta. For a small beta it shrinks with the target: the N_t examples near w = 0 push the sum above its
    target by about sigma sqrt(T N_t) (each carries a truncated-normal tail of mean sigma^2 T / excess), so
    sigma <= beta sqrt(N_t) keeps that excess within sqrt(T) of the target (10% at T = 0.01). The paper's
    1e-5 is an almost hard constraint that only a noisy optimiser tolerates."""
    return max(1.0, math.sqrt(n_train) * min(float(beta), 0.1))


def sparsity_prior(n_train: int, beta: float, sigma: float | None) -> dist.Distribution:
    """Eq. 8: sum_i w_i ~ Normal(floor(N_t * beta), sigma); sigma None means `default_sigma(N_t, beta)`."""
    sigma = default_sigma(n_train, beta) if sigma is None else sigma
    return dist.Normal(float(math.floor(n_train * beta)), sigma)


def meta_weight(n_train: int, n_meta: int, beta: float, rho_t: float, rho_m: float | None) -> float:
    """rho_m, or for None the default: the curated set's likelihood weighs as much as the selected part of D_t,
    rho_m N_m = rho_t floor(N_t beta), and never less than one count per curated example.

    With rho_m = 1 a D_m of 100 against a selected D_t of 5,000 barely moves theta, so an example's loss says
    little about whether it fits the curated distribution. Equal weight is the largest that leaves D_t's
    information in theta: more would fit D_m alone (a few examples per class: overfitting).
    """
    if rho_m is not None:
        return rho_m
    return max(1.0, rho_t * math.floor(n_train * beta) / max(n_meta, 1))


def check_hyper(beta: float, sigma: float | None, **positive: float | None) -> None:
    """Impossible hyper-parameters raise ConfigError naming the field and the value (None: a derived default);
    beta = "auto" raises UnresolvedAuto, after the others are checked."""
    if sigma is not None and (not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0):
        raise ConfigError(f"sigma must be > 0, got {sigma!r}")
    for name, value in positive.items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0):
            raise ConfigError(f"{name} must be > 0, got {value!r}")
    if beta == "auto":
        raise UnresolvedAuto("beta = 'auto' is resolved by pyro_dps.fit (it estimates the useful fraction of D_t "
                             "from the data); call the model with a number")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 < beta <= 1:
        raise ConfigError(f"beta must be in (0, 1], got {beta!r}")


def model(ctx, beta: float | str = "auto", sigma: float | None = None, rho_t: float = 1.0,
          rho_m: float | None = None, prior_scale: float = 1.0, base_a: float = 1.0, base_b: float = 1.0) -> None:
    """Joint density of network parameters theta and per-example weights w (one minibatch's view).

    The `train` and `meta` plates subsample; Pyro scales their terms by N/|B|. `beta = "auto"` is estimated
    by `pyro_dps.fit` before sampling (`pyro_dps.useful_fraction`); `rho_m = None` is `meta_weight`'s rule.
    """
    check_hyper(beta, sigma, rho_t=rho_t, rho_m=rho_m, prior_scale=prior_scale, base_a=base_a, base_b=base_b)
    if ctx.n_meta == 0:
        raise DataError("the meta set D_m is empty: BADS needs at least one curated example")
    theta = theta_prior(ctx, prior_scale)
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", base_prior(base_a, base_b))
        pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta))
    pyro.sample("w_sum", sparsity_prior(ctx.n_train, beta, sigma), obs=ctx.w_sum(w))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -meta_weight(ctx.n_train, ctx.n_meta, beta, rho_t, rho_m) * ctx.meta_losses(theta))
