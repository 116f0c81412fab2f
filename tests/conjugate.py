"""Helpers for the statistical tests: a Bayesian linear regression with a closed-form posterior, and
Monte-Carlo error estimates (integrated autocorrelation time, MCSE) for correlated chains.

Nothing here imports the samplers; the tests compare the kernels' draws against these exact answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_dps.context import Problem


@dataclass
class Regression:
    """y = X coef + noise_sd * e, e ~ N(0, I), with prior coef ~ N(0, prior_sd^2 I) on each coefficient."""

    x: torch.Tensor  # (N, D) float32, what the model sees
    y: torch.Tensor  # (N,) float32
    noise_sd: float
    prior_sd: float
    mean: np.ndarray  # exact posterior mean (D,), float64
    cov: np.ndarray  # exact posterior covariance (D, D), float64

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    def problem(self) -> Problem:
        """A `Problem` holding the data; the regression model ignores its network and loss."""
        return Problem(torch.nn.Linear(1, 1), self.x, torch.zeros(self.n, dtype=torch.long))

    def model(self, copies: int = 1):
        """The regression as a pyro_dps model `model(ctx)`.

        `copies > 1` declares that many independent coefficient vectors, each with the same prior and
        the same likelihood: the joint posterior is the product of `copies` identical regression
        posteriors, so one SG-MCMC run advances `copies` chains of the regression at once (they see
        the same minibatches; the tests' error estimates allow for the correlation that induces).
        """
        x, y, s, p, d, n = self.x, self.y, self.noise_sd, self.prior_sd, self.d, self.n

        if copies == 1:
            def lr_model(ctx):
                coef = pyro.sample("coef", dist.Normal(0.0, p).expand([d]).to_event(1))
                with pyro.plate("train", n, subsample=ctx.train_idx):
                    pyro.sample("y", dist.Normal(x[ctx.train_idx] @ coef, s), obs=y[ctx.train_idx])
            return lr_model

        def lr_model_copies(ctx):
            coef = pyro.sample("coef", dist.Normal(0.0, p).expand([copies, d]).to_event(2))
            idx = ctx.train_idx
            with pyro.plate("train", n, subsample=idx):  # plate dim -1: batch shape (copies, |B|)
                pyro.sample("y", dist.Normal(coef @ x[idx].T, s), obs=y[idx].expand(copies, -1))
        return lr_model_copies


def make_regression(n: int = 1000, d: int = 3, noise_sd: float = 1.0, prior_sd: float = 1.0,
                    seed: int = 0) -> Regression:
    """Synthetic data drawn from the model itself, and the exact Gaussian posterior (in float64).

    Posterior precision P = I / prior_sd^2 + X^T X / noise_sd^2, mean = P^{-1} X^T y / noise_sd^2.
    It is computed from the float32 tensors the model sees, so the only difference is rounding.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    coef = torch.randn(d, generator=g) * prior_sd
    y = x @ coef + noise_sd * torch.randn(n, generator=g)
    xd, yd = x.double().numpy(), y.double().numpy()
    precision = np.eye(d) / prior_sd ** 2 + xd.T @ xd / noise_sd ** 2
    cov = np.linalg.inv(precision)
    mean = cov @ (xd.T @ yd) / noise_sd ** 2
    return Regression(x, y, noise_sd, prior_sd, mean, cov)


# ---- Monte-Carlo error ------------------------------------------------------------------------
def iact(x: np.ndarray) -> float:
    """Integrated autocorrelation time tau of a 1-D chain (ESS = n / tau).

    Autocovariances by FFT; Geyer's (1992) initial monotone sequence estimator: sum the pairs
    Gamma_k = rho_2k + rho_2k+1 while they are positive, forced non-increasing; tau = -1 + 2 sum Gamma_k.
    This is the estimator Stan and ArviZ use (there with a multi-chain rho).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    x = x - x.mean()
    f = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(f * np.conj(f))[:n] / n
    if acov[0] <= 0:
        return 1.0
    rho = acov / acov[0]
    m = (n - 1) // 2
    pairs = rho[0:2 * m:2] + rho[1:2 * m:2]
    stop = int(np.argmax(pairs <= 0)) if (pairs <= 0).any() else m
    pairs = np.minimum.accumulate(pairs[:stop])
    return max(-1.0 + 2.0 * float(pairs.sum()), 1.0 / np.log10(max(n, 10)))


def mcse(x: np.ndarray) -> tuple[float, float]:
    """(Monte-Carlo standard error of the mean of chain x, its effective sample size)."""
    x = np.asarray(x, dtype=np.float64)
    ess = x.size / iact(x)
    return float(x.std() / np.sqrt(ess)), float(ess)
