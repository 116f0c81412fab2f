"""Exact conditional draws of the batch's weights given theta (the default weight update).

For the BADS structure (base prior b on [0, 1], factor -rho_t w_i l_i, Normal prior on sum_i w_i or on
per-class sums), at temperature T the weights' conditional given theta is

    log p(w | theta) = sum_i [log b(w_i) / T - (rho_t / T) w_i l_i] - (S_g - k_g)^2 / (2 sigma^2 T),

independent tilted densities coupled only through the sums S_g (docs/method.md, last section). Row i given
every other weight is b(x)^(1/T) N(x; mu_i, s^2) on [0, 1] with mu_i = k_g - S_{-i} - sigma^2 rho_t l_i
and s^2 = sigma^2 T: a truncated normal for the uniform base. Each visit draws M candidates per row from
that conditional with the other batch rows at their old values (`kernels/truncnorm.py` for the uniform
base; for any other base a piecewise-exponential fit on a grid, whose exact log density at the
candidates corrects it), then `kernels/isir.py` walks the rows in order and picks, per row, a candidate
or the old value by its importance weight given the rows already updated: a systematic-scan Gibbs sweep
of the block, exact for any M. No step size; the cost is prior evaluations and a few flops per candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import truncnorm
from .isir import isir_scan


@dataclass
class ConditionalWeights:
    """The sum prior's targets `loc` (a number, or one per group), its scale, rho_t and the base prior."""

    rho_t: float
    loc: torch.Tensor  # float64, one entry per group (length 1 for a single total)
    scale: float
    base: torch.distributions.Distribution | None = None  # None: uniform on [0, 1]
    candidates: int = 8
    grid: int = 64

    def uniforms_shape(self, rows: int) -> tuple[int, int]:
        """Uniforms a draw of `rows` rows consumes: (rows, 3M + 1): candidates (grid bases: cells, then
        positions within them), then the Gumbel noise of the pick among M candidates and the old value."""
        return rows, 3 * self.candidates + 1

    def draw(self, losses: torch.Tensor, w_old: torch.Tensor, rest: torch.Tensor, groups: torch.Tensor | None,
             temperature: float, uniforms: torch.Tensor, gather: Callable | None = None,
             start: int = 0) -> torch.Tensor:
        """New weights of the batch's rows (the weights' dtype) given their losses under theta.

        `rest` is the sum of the weights outside the batch (per group when `groups` is given, the global
        sum minus this process's batch rows in a sharded run); `uniforms` are `uniforms_shape(B)` U(0, 1)
        numbers of the whole global batch of B rows, from the chain's generator. Sharded (`gather`, which
        concatenates every rank's rows in rank order; this rank's rows start at `start`), each rank proposes
        for its rows and every rank runs the same scan over the whole batch.
        """
        m, rows = self.candidates, w_old.shape[0]
        v = self.scale ** 2 * temperature
        g = torch.zeros_like(w_old, dtype=torch.long) if groups is None else groups
        w0 = w_old.double()
        others = rest.double().reshape(-1) + torch.zeros_like(self.loc).index_add(0, g, w0)  # sums before the scan
        mu = (self.loc[g] - (others[g] - w0) - self.scale ** 2 * self.rho_t * losses.double())[:, None]
        own = uniforms.double()[start:start + rows]
        if self.base is None:
            values, lw = truncnorm.propose(mu, math.sqrt(v), own[:, :m], w0[:, None])
        else:
            values, lw = self._grid_candidates(mu, math.sqrt(v), temperature, w0[:, None], own[:, :2 * m])
        scores = lw - torch.log(-torch.log(own[:, 2 * m:].clamp(min=1e-300)))  # plus Gumbel noise: pick = argmax
        if gather is not None:
            values, scores, g = gather(values), gather(scores), gather(g)
        new = isir_scan(values, scores, g, 1.0 / v, self.loc.numel())[start:start + rows]
        # a row whose loss is not finite gets a NaN weight, so that the divergence guard rejects the step
        return torch.where(torch.isfinite(losses), new, float("nan")).to(w_old.dtype)

    def _grid_candidates(self, mu, s, temperature, w0, u):
        """Candidates from a piecewise-exponential fit of b(x)^(1/T) N(x; mu, s^2) on `grid` cells with the old
        values appended as a last column, and the log ratios exact / fitted density at all of them."""
        m, cells = self.candidates, self.grid
        nodes = torch.linspace(0.0, 1.0, cells + 1, dtype=torch.float64, device=mu.device)
        log_b = self._log_base(nodes) / temperature
        f = log_b - (nodes - mu) ** 2 / (2 * s * s)  # (rows, cells + 1) log density at the nodes
        f = torch.maximum(f, f.max(dim=1, keepdim=True).values - 700.0)  # a zero of b: a tiny, finite fit
        delta = f[:, 1:] - f[:, :-1]
        log_mass = f[:, :-1] + _log_expm1_over(delta)  # log of each cell's integral / cell width
        cell = _sample_categorical(log_mass, u[:, :m])
        t = _inverse_exp_cdf(torch.gather(delta, 1, cell), u[:, m:2 * m])
        cand = ((cell + t) / cells).clamp(0.0, 1.0)
        fitted = torch.gather(f, 1, cell) + torch.gather(delta, 1, cell) * t
        old_cell = (w0 * cells).floor().clamp(max=cells - 1).long()
        t_old = w0 * cells - old_cell
        old_fit = torch.gather(f, 1, old_cell) + torch.gather(delta, 1, old_cell) * t_old
        values = torch.cat([cand, w0], dim=1)
        return values, self._exact_minus_fit(values, torch.cat([fitted, old_fit], dim=1), mu, s, temperature)

    def _log_base(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-12
        return self.base.log_prob(x.clamp(eps, 1 - eps)).double()

    def _exact_minus_fit(self, x, fitted, mu, s, temperature):
        exact = self._log_base(x) / temperature - (x - mu) ** 2 / (2 * s * s)
        return exact - fitted


def _log_expm1_over(delta: torch.Tensor) -> torch.Tensor:
    """log((e^delta - 1) / delta), stable for every delta (0 at delta = 0)."""
    a = delta.abs()
    # (e^d - 1)/d = e^max(d,0) (1 - e^-|d|)/|d|
    val = torch.clamp(delta, min=0) + torch.log((-torch.expm1(-a)).clamp(min=1e-300)) - torch.log(a.clamp(min=1e-300))
    return torch.where(a < 1e-8, delta / 2, val)


def _inverse_exp_cdf(delta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """t in [0, 1] with density proportional to exp(delta t), by inverse CDF at u (stable for any delta)."""
    a = delta.abs()
    # for delta > 0 sample from the top: t = 1 + log(u' + (1 - u') e^-delta) / delta, symmetric for delta < 0
    s = 1.0 + torch.log(u + (1.0 - u) * torch.exp(-a)) / a.clamp(min=1e-300)
    t = torch.where(delta > 0, s, 1.0 - s)
    return torch.where(a < 1e-8, u, t).clamp(0.0, 1.0)


def _sample_categorical(log_mass: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Cell indices (rows, k) drawn with probabilities softmax(log_mass) per row, by inverse CDF at u."""
    p = F.softmax(log_mass, dim=1)
    cdf = torch.cumsum(p, dim=1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.contiguous()).clamp(max=log_mass.shape[1] - 1)


def exact_weights_reason(potential, temperature: float) -> str:
    """Why the exact weight update cannot run for this model ('' when it can)."""
    if getattr(potential, "local_site", None) is None:
        return "the model has no per-example weight table"
    if not hasattr(potential, "grads_given") or not potential.supported():
        why = getattr(potential, "reason", "") or getattr(potential, "fused_reason", "") or "the trace path runs"
        return f"it needs the fused potential ({why})"
    if potential.normal_sum_prior is None:
        return "the prior on the weights' sum is not Normal with one scale"
    if not temperature > 0:
        return "temperature is 0 (the conditional has no spread to draw from)"
    return ""


def conditional_weights(potential, temperature: float, candidates: int = 8) -> ConditionalWeights:
    """The exact weight update for a fused-path model; a ConfigError names what prevents it."""
    reason = exact_weights_reason(potential, temperature)
    if reason:
        raise ConfigError(f"weight_update = 'exact' is not available: {reason}; use weight_update = 'langevin'")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or not 1 <= candidates <= 1024:
        raise ConfigError(f"candidates must be an integer in [1, 1024], got {candidates!r}")
    loc, scale = potential.normal_sum_prior
    loc = torch.as_tensor(loc, dtype=torch.float64, device=potential.problem.device).reshape(-1)
    return ConditionalWeights(potential.rho_t, loc, scale, potential.base, candidates)
