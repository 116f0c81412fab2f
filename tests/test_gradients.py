"""The gradient a kernel uses equals the docs/method.md formula written by hand in plain torch."""
import math

import pytest
import torch
import torch.nn.functional as F
from pyro_dps.models import bads
from torch import nn

from pyro_dps.context import Problem
from pyro_dps.potential import FusedPotential, TracePotential, make_potential


def _problem(seed=0, n=60, m=12):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    return Problem(net, torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g),
                   torch.randn(m, 5, generator=g), torch.randint(0, 3, (m,), generator=g))


def _by_hand(problem, theta_list, u_all, idx, jdx, hyper, temperature=1.0):
    """docs/method.md: theta gets grad of log p(theta) - rho_t N/B sum w l - rho_m M/Bm sum l;
    w_B (in u-space, with the sigmoid Jacobian) the exact conditional gradient, no N/B factor."""
    beta, sigma, rho_t, rho_m, s = hyper["beta"], hyper["sigma"], hyper["rho_t"], hyper["rho_m"], hyper["prior_scale"]
    a, b = hyper.get("base_a", 1.0), hyper.get("base_b", 1.0)
    params = [p.detach().clone().requires_grad_() for p in theta_list]
    u = u_all[idx].detach().clone().requires_grad_()
    w = torch.sigmoid(u)
    w1, b1, w2, b2 = params

    def f(x):
        return torch.tanh(x @ w1.T + b1) @ w2.T + b2

    l_t = F.cross_entropy(f(problem.x_train[idx]), problem.y_train[idx], reduction="none")
    l_m = F.cross_entropy(f(problem.x_meta[jdx]), problem.y_meta[jdx], reduction="none")
    n, m = problem.n_train, problem.n_meta
    log_prior = sum(-(p ** 2).sum() / (2 * s ** 2) for p in params)
    theta_obj = log_prior - rho_t * n / len(idx) * (w.detach() * l_t).sum() - rho_m * m / len(jdx) * l_m.sum()
    g_theta = torch.autograd.grad(theta_obj, params)
    total = torch.sigmoid(u_all).sum() - w.detach().sum() + w.sum()
    k = math.floor(n * beta)
    log_w = -(total - k) ** 2 / (2 * sigma ** 2) - rho_t * (w * l_t.detach()).sum() \
        + ((a - 1) * torch.log(w) + (b - 1) * torch.log1p(-w)).sum() + temperature * torch.log(w * (1 - w)).sum()
    g_u, = torch.autograd.grad(log_w, [u])
    return torch.cat([g.reshape(-1) for g in g_theta]), g_u


@pytest.mark.parametrize("path", ["fused", "trace", "compiled-objective"])
@pytest.mark.parametrize("base", [(1.0, 1.0), (2.0, 0.7)])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_kernel_gradient_equals_hand_written_formula(path, base, temperature):
    """At temperature T the sigmoid Jacobian enters with weight T (the target is p(w)^(1/T) on [0, 1]).

    `compiled-objective`: torch.func.grad of `FusedPotential.batch_log_joint`, what the compiled step uses.
    """
    problem = _problem()
    hyper = {"beta": 0.4, "sigma": 3.0, "rho_t": 1.7, "rho_m": 0.8, "prior_scale": 0.9, "base_a": base[0],
             "base_b": base[1]}
    potential = (TracePotential if path == "trace" else FusedPotential)(bads.model, problem, hyper)
    if path != "trace":
        assert potential.supported(), potential.reason
    gen = torch.Generator().manual_seed(3)
    theta = potential.init_theta(gen)
    u_all = torch.randn(problem.n_train, generator=gen)
    idx, jdx = torch.tensor([3, 17, 42, 8, 59, 0]), torch.tensor([1, 5, 11])
    rest = torch.sigmoid(u_all).double().sum() - torch.sigmoid(u_all[idx]).double().sum()
    if path == "compiled-objective":
        (got_theta, got_u), _ = torch.func.grad(potential.batch_log_joint, argnums=(0, 1), has_aux=True)(
            theta, u_all[idx], *problem.batch(idx, jdx), rest, temperature)
    else:
        got = potential.grads(theta, u_all[idx], idx, jdx, rest, temperature)
        got_theta, got_u = got.theta, got.local
    pieces = [v for v in potential.unpack(theta).values()]
    want_theta, want_u = _by_hand(problem, pieces, u_all, idx, jdx, hyper, temperature)
    torch.testing.assert_close(got_theta, want_theta, rtol=1e-5, atol=1e-5 * float(want_theta.abs().max()))
    torch.testing.assert_close(got_u.float(), want_u, rtol=1e-5, atol=1e-5 * float(want_u.abs().max()))


def test_make_potential_picks_fused_for_the_paper_model_and_trace_otherwise():
    problem = _problem()
    assert make_potential(bads.model, problem, {"beta": 0.5}).kind == "fused"

    def with_extra_site(ctx, **hyper):
        import pyro
        import pyro.distributions as dist
        pyro.sample("extra", dist.Normal(0.0, 1.0))
        bads.model(ctx, **hyper)

    assert make_potential(with_extra_site, problem, {"beta": 0.5}).kind == "trace"


def test_fused_path_disagreeing_with_its_model_is_caught():
    """A model that keeps the site names but changes a formula must not get the fused path."""
    import pyro
    import pyro.distributions as dist

    from pyro_dps.errors import ModelError

    def squared_loss_model(ctx, beta=0.5, sigma=None, rho_t=1.0, rho_m=1.0, prior_scale=1.0):
        theta = bads.theta_prior(ctx, prior_scale)
        with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
            w = pyro.sample("w", dist.Uniform(0.0, 1.0))
            pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta) ** 2)
        pyro.sample("w_sum", bads.sparsity_prior(ctx.n_train, beta, sigma), obs=ctx.w_sum(w))
        with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
            pyro.factor("meta_lik", -rho_m * ctx.meta_losses(theta))

    def doubled_sum_model(ctx, beta=0.5, sigma=None, rho_t=1.0, rho_m=1.0, prior_scale=1.0):
        theta = bads.theta_prior(ctx, prior_scale)
        with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
            w = pyro.sample("w", dist.Uniform(0.0, 1.0))
            pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta))
        pyro.sample("w_sum", bads.sparsity_prior(ctx.n_train, beta, sigma), obs=2 * ctx.w_sum(w))
        with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
            pyro.factor("meta_lik", -rho_m * ctx.meta_losses(theta))

    problem = _problem()
    # the factor's form is read off the probe trace: a squared loss is not -rho_t * w * loss
    assert make_potential(squared_loss_model, problem, {}).kind == "trace"
    with pytest.raises(ModelError, match="train_lik"):
        make_potential(squared_loss_model, problem, {}, kind="fused")
    # the same sites and factors but the sum prior on 2 * sum w: only the gradient check against the trace sees it
    assert make_potential(doubled_sum_model, problem, {}).kind == "trace"
    with pytest.raises(ModelError, match="disagrees"):
        make_potential(doubled_sum_model, problem, {}, kind="fused")


def test_two_fused_potentials_on_one_network_do_not_share_parameters():
    """Each fused potential binds the module's parameters to its own flat buffer; interleaving two on the
    same network (as the step-cost benchmark does) must rebind, not read the other's theta."""
    problem = _problem()
    a, b = (FusedPotential(bads.model, problem, {"beta": beta}) for beta in (0.3, 0.7))
    gen = torch.Generator().manual_seed(5)
    theta_a, theta_b = a.init_theta(gen), b.init_theta(gen)
    u = torch.randn(6, generator=gen)
    idx, jdx = torch.tensor([3, 17, 42, 8, 59, 0]), torch.tensor([1, 5, 11])
    rest = torch.tensor(20.0, dtype=torch.float64)
    first = a.grads(theta_a, u, idx, jdx, rest).theta.clone()
    b.grads(theta_b, u, idx, jdx, rest)
    again = a.grads(theta_a, u, idx, jdx, rest).theta
    torch.testing.assert_close(again, first, rtol=0, atol=0)
