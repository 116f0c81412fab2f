"""The class-balanced sparsity prior (`models/class_balanced.py`) and the per-class weight sums the kernel keeps.

The behavioural case is the paper's balancing problem in small: D_t has 300 examples of one class and 6 of
another, the meta set is balanced, beta is small. The paper's single-total prior spends the budget on the
easy majority examples and drops the minority ones; the class-balanced prior keeps them.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pyro_dps.models import bads, class_balanced
from torch import nn

from pyro_dps import SamplerConfig, fit
from pyro_dps.context import Problem
from pyro_dps.kernels import psgld
from pyro_dps.potential import FusedPotential, TracePotential, make_potential, weight_sum


def _imbalanced(seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(6, dtype=torch.long)])
    x = torch.randn(306, 4, generator=g) + 2.0 * F.one_hot(y, 4)[:, :4].float()  # overlapping, separable-ish
    ym = torch.tensor([0] * 6 + [1] * 6)
    xm = torch.randn(12, 4, generator=g) + 2.0 * F.one_hot(ym, 4)[:, :4].float()
    torch.manual_seed(seed)
    return Problem(nn.Linear(4, 2), x, y, xm, ym)


@pytest.mark.parametrize("path", ["trace", "fused", "compiled-objective"])
def test_per_class_gradient_equals_hand_written_formula(path):
    """w_B gets -rho_t l_i - (S_{y_i} - target_{y_i}) / sigma^2 (plus the tempered Jacobian) in u-space,
    from the trace path, the fused path and torch.func.grad of the compiled step's objective."""
    problem = _imbalanced()
    hyper = {"beta": 0.04, "sigma": 1.5, "rho_t": 1.0, "rho_m": 1.0, "prior_scale": 1.0}
    potential = (TracePotential if path == "trace" else FusedPotential)(class_balanced.model, problem, hyper)
    assert potential.sum_groups is not None
    if path != "trace":
        assert potential.supported(), potential.reason
    gen = torch.Generator().manual_seed(2)
    theta = potential.init_theta(gen)
    u_all = torch.randn(problem.n_train, generator=gen)
    idx = torch.tensor([3, 17, 301, 304, 150])
    w_all = torch.sigmoid(u_all).double()
    sums = torch.zeros(2, dtype=torch.float64).index_add_(0, problem.y_train, w_all)
    rest = sums - torch.zeros(2, dtype=torch.float64).index_add_(0, problem.y_train[idx], w_all[idx])
    if path == "compiled-objective":
        (_, got), _ = torch.func.grad(potential.batch_log_joint, argnums=(0, 1), has_aux=True)(
            theta, u_all[idx], *problem.batch(idx, torch.arange(12)), rest, 0.3)
    else:
        got = potential.grads(theta, u_all[idx], idx, torch.arange(12), rest, temperature=0.3).local

    u = u_all[idx].clone().requires_grad_()
    w = torch.sigmoid(u)
    params = potential.network_params(theta)
    l_t = F.cross_entropy(problem.x_train[idx] @ params["weight"].T + params["bias"], problem.y_train[idx],
                          reduction="none")
    target = torch.minimum(math.floor(306 * 0.04) * torch.tensor([0.5, 0.5], dtype=torch.float64),
                           torch.tensor([300.0, 6.0], dtype=torch.float64))
    s = rest + torch.zeros(2, dtype=torch.float64).index_add(0, problem.y_train[idx], w.double())
    log_w = -(w * l_t.detach()).sum() - ((s - target) ** 2).sum() / (2 * 1.5 ** 2) \
        + 0.3 * torch.log(w * (1 - w)).sum()
    want, = torch.autograd.grad(log_w, [u])
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)


def test_make_potential_takes_the_fused_path_for_the_class_balanced_model():
    """The per-class sums are part of the fused structure; `make_potential` checks it against the trace."""
    potential = make_potential(class_balanced.model, _imbalanced(), {"beta": 0.04, "sigma": 1.0})
    assert potential.kind == "fused" and potential.sum_groups is not None
    assert potential.normal_sum_prior is not None  # the per-class Normal's gradient in closed form


@pytest.mark.parametrize("kind", ["fused", "trace"])
def test_kernel_keeps_per_class_sums_incrementally(kind):
    problem = _imbalanced()
    potential = make_potential(class_balanced.model, problem, {"beta": 0.04, "sigma": 1.0}, kind)
    gen = torch.Generator().manual_seed(0)
    alg = psgld(potential, 1e-3, temperature=0.01, local_step_size=1.0, generator=gen)
    state = alg.init(potential.init_theta(gen), torch.full((problem.n_train,), 0.5))
    for _ in range(200):
        state = alg.step(state, (torch.randperm(306, generator=gen)[:32], torch.randperm(12, generator=gen)[:6]))
    exact = weight_sum(potential, alg.weights(state.table))
    assert state.w_sum.shape == (2,)
    # float64 sums of float32 weights: 200 steps of add/subtract leave ~1e-8 of rounding, far below one weight
    torch.testing.assert_close(state.w_sum, exact, rtol=0, atol=1e-6)


def test_class_balanced_prior_keeps_the_minority_that_the_single_total_drops():
    """Measured (seed 0): minority mean weight 0.024 under the paper's prior, 0.951 under the
    class-balanced one (its target: floor(306 * 0.04) / 2 = 6 = every minority example)."""
    config = SamplerConfig(kernel="psgld", step_size=1e-3, local_step_size=2.0, temperature=0.01, chains=1,
                           warmup=1500, samples=20, thin=25, batch_size=32, meta_batch_size=12, progress=False)
    hyper = {"beta": 0.04, "sigma": 1.0}
    minority = np.arange(300, 306)
    single = fit(bads.model, _imbalanced(), hyper, config).weight_summary()["mean"]
    balanced = fit(class_balanced.model, _imbalanced(), hyper, config).weight_summary()["mean"]
    assert balanced[minority].mean() > 0.6 > 0.2 > single[minority].mean()
    # both priors keep the total near floor(N_t beta) = 12; the balanced one splits it by the meta shares
    assert abs(balanced.sum() - 12) < 4 and abs(balanced[:300].sum() - 6) < 3
