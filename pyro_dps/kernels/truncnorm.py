"""Proposals for a normal truncated to [0, 1], with their importance weights (float64).

A weight's conditional under the uniform base prior and the Normal sum prior is N(mu, s^2) on [0, 1],
with mu often hundreds of s outside the interval (a clearly bad or clearly good example at a cold
temperature). The interval is reflected so that it lies in the normal's lower tail, where log Phi is
accurate. Rows whose interval is within reach of float64 get the exact inverse-CDF draw (importance
weight constant); rows in the far tail, where Phi(b) underflows, get a truncated exponential with the
density's slope at the near end, which is the truncated normal up to a factor exp(-t^2 / 2s^2) that the
importance weight carries. The i-SIR step that uses them (`kernels/isir.py`) is exact for any proposal.
"""
from __future__ import annotations

import math

import torch

LOG_TINY = -700.0  # exp(-700) ~ 1e-304: below this Phi is not representable in float64
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _reflected(mu: torch.Tensor, s: float):
    """(flip, m, far, log Z): the mean after reflecting x -> 1 - x where mu < 1/2, whether the row is in the
    far tail, and the log mass of [0, 1] under N(m, s^2) (valid where not far)."""
    flip = mu < 0.5
    m = torch.where(flip, 1.0 - mu, mu)
    lo, hi = torch.special.log_ndtr(-m / s), torch.special.log_ndtr((1.0 - m) / s)
    far = hi < LOG_TINY
    log_z = hi + torch.log1p(-torch.exp(torch.clamp(lo - hi, max=0.0)))
    return flip, m, far, lo, hi, log_z


def _rate(m: torch.Tensor, s: float) -> torch.Tensor:
    """The log density's slope at x = 1 (reflected frame), the far-tail proposal's exponential rate."""
    return torch.clamp((m - 1.0) / (s * s), min=1e-12)


def propose(mu: torch.Tensor, s: float, u: torch.Tensor, x_old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates (the shape of u; rows of mu, (B, 1)) with the current values appended as a last column
    (x_old, (B, 1)), and the log importance weights log(pi / r) of all of them up to a per-row constant, where
    pi is N(mu, s^2) on [0, 1] and r the proposal the row uses."""
    flip, m, far, lo, hi, log_z = _reflected(mu, s)
    log_p = hi + torch.log(u + (1.0 - u) * torch.exp(lo - hi))  # inverse CDF in log space
    direct = m + s * torch.special.ndtri(torch.exp(torch.clamp(log_p, min=LOG_TINY)))
    rate = _rate(m, s)
    tail = 1.0 + torch.log1p(-u * -torch.expm1(-rate)) / rate  # 1 - Exp(rate) truncated to [0, 1]
    x = torch.cat([torch.where(far, tail, direct).clamp(0.0, 1.0), torch.where(flip, 1.0 - x_old, x_old)], dim=1)
    lw = _log_weight_reflected(x, m, s, far, log_z, rate)
    return torch.where(flip, 1.0 - x, x), lw


def _log_weight_reflected(x, m, s, far, log_z, rate):
    # exact rows: pi / r = s sqrt(2 pi) Z, a constant; far rows: exp(-(x-m)^2/2s^2) over the exponential's density
    exact = log_z + math.log(s) + _HALF_LOG_2PI
    log_r_tail = torch.log(rate) - torch.log(-torch.expm1(-rate)) - rate * (1.0 - x)
    tail = -(x - m) ** 2 / (2 * s * s) - log_r_tail
    return torch.where(far, tail, exact.expand_as(tail))
