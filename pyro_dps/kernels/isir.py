"""The sequential part of the exact weight update: an i-SIR move on each of the batch's rows in turn.

Given theta, the weights' conditional is a product of one-dimensional tilted densities coupled only
through the Normal prior on their (per-group) sum. Row i's conditional, given every other weight, is
`pi_i(x) ~ c_i(x) exp(-x D_g / v)` where c_i is its conditional with the other batch rows at their old
values, D_g the change of the group's sum made by the rows updated before it in this scan, and
v = sigma^2 T.

Iterated sampling importance resampling (i-SIR; Tjelmeland 2004, Andrieu, Lee & Vihola 2018): with the
current value x_0 and M candidates x_1..x_M drawn from a proposal r_i, pick x_j with probability
proportional to its importance weight pi_i(x_j) / r_i(x_j). That is a Gibbs step on an extended space,
so it leaves pi_i invariant for any M and any proposal; the scan over the batch's rows is a
systematic-scan Gibbs sampler of the batch's block, exact for the block's joint conditional. The
D-independent part of each log weight, plus Gumbel noise (so that the pick is an argmax, the Gumbel-max
trick), is computed in torch, vectorised: here only the scalar deficit is carried from row to row. The
loop runs under numba when numba is installed (else the same function runs as Python, slower).
"""
from __future__ import annotations

import numpy as np
import torch

try:  # numba compiles the loop (microseconds for a batch); without it the same function runs as Python
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install usable
    def njit(*args, **kwargs):
        return (lambda f: f) if not args or not callable(args[0]) else args[0]


@njit(cache=True, nogil=True)
def isir_scan_numpy(values, scores, group, inv_v, n_groups):  # pragma: no cover - compiled by numba
    """Rows in order: the new value is values[i, argmax_j(scores[i, j] - values[i, j] D_g / v)]; the last
    column of `values` is the row's current value."""
    n, k = values.shape
    out = np.empty(n)
    deficit = np.zeros(n_groups)
    for i in range(n):
        g = group[i]
        slope = -deficit[g] * inv_v
        best, pick = -np.inf, k - 1
        for j in range(k):
            score = scores[i, j] + slope * values[i, j]
            if score > best:
                best, pick = score, j
        out[i] = values[i, pick]
        deficit[g] += values[i, pick] - values[i, k - 1]
    return out


def _scan(values: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, inv_v: float,
          n_groups: int) -> torch.Tensor:
    arrays = [t.detach().cpu().numpy() for t in (values, scores, group)]
    return torch.from_numpy(isir_scan_numpy(*arrays, float(inv_v), int(n_groups))).to(values.device)


@torch.library.custom_op("pyro_dps::isir_scan", mutates_args=())
def _isir_scan_op(values: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, inv_v: float,
                  n_groups: int) -> torch.Tensor:
    return _scan(values, scores, group, inv_v, n_groups)


@_isir_scan_op.register_fake
def _(values, scores, group, inv_v, n_groups):
    return values.new_empty(values.shape[0])


def isir_scan(values: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, inv_v: float,
              n_groups: int) -> torch.Tensor:
    """The batch's new weights (float64): rows of `values` are (candidates..., current value); `scores` their
    log importance weights without the scan's term, plus Gumbel noise.

    Under `torch.compile` or a `torch.func` transform it is one opaque custom op; plain eager calls numba
    directly (the custom op's dispatch costs more than the scan). On CUDA its inputs (a few numbers per
    row) go to the host and back: one synchronisation per step.
    """
    if torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(values):
        return _isir_scan_op(values, scores, group, inv_v, n_groups)  # inside torch.compile / torch.func
    return _scan(values, scores, group, inv_v, n_groups)
