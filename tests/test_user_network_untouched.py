"""`fit` leaves the user's objects as it found them: the network's parameters (the same objects, values,
gradients and flags) and its attributes; and a Problem holds its data once (no concatenated copy)."""
import pytest
import torch
from pyro_dps.models import bads
from torch import nn

import pyro_dps as dps
from pyro_dps.context import Problem


def _data(seed=0, n=48, m=12):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g),
            torch.randn(m, 5, generator=g), torch.randint(0, 3, (m,), generator=g))


def _snapshot(net: nn.Module) -> dict:
    return {
        "ids": {name: id(p) for name, p in net.named_parameters()},
        "values": {name: p.detach().clone() for name, p in net.named_parameters()},
        "grads": {name: None if p.grad is None else (id(p.grad), p.grad.clone()) for name, p in net.named_parameters()},
        "requires_grad": {name: p.requires_grad for name, p in net.named_parameters()},
        "dicts": {name: sorted(m.__dict__) for name, m in net.named_modules()},
        "param_dicts": {name: {k: id(v) for k, v in m._parameters.items()} for name, m in net.named_modules()},
        "training": {name: m.training for name, m in net.named_modules()},
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["ids"] == before["ids"]
    for name, value in before["values"].items():
        assert torch.equal(after["values"][name], value), name
    for name, grad in before["grads"].items():
        now = after["grads"][name]
        assert (now is None) == (grad is None), name
        if grad is not None:
            assert now[0] == grad[0] and torch.equal(now[1], grad[1]), name
    for key in ("requires_grad", "dicts", "param_dicts", "training"):
        assert after[key] == before[key], key


@pytest.mark.parametrize("weight_update", ["exact", "langevin"])
def test_fit_on_the_fused_path_leaves_the_users_network_unchanged(weight_update):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    net[2].bias.grad = torch.full((3,), 0.25)  # a gradient the user left there stays, as it was
    net[0].bias.requires_grad_(False)  # and so does a frozen flag (the sampler still samples it)
    problem = dps.Problem(net, *_data())
    before = _snapshot(net)
    config = dps.SamplerConfig(chains=1, warmup=12, samples=3, thin=2, batch_size=16, meta_batch_size=4,
                               potential="fused", weight_update=weight_update, progress=False, snapshots=1)
    posterior = dps.fit(bads.model, problem, {"beta": 0.5}, config)
    assert posterior.potential.kind == "fused"
    _assert_same(before, _snapshot(net))
    # the run's network is the potential's own copy, and it moved: the draws are not the user's values
    theta = posterior.final_theta[0]
    assert not torch.equal(posterior.potential.network_params(theta)["2.bias"], before["values"]["2.bias"])
    # a second fit on the same (untouched) network starts where the first did, and gives the same draws
    again = dps.fit(bads.model, problem, {"beta": 0.5}, config)
    assert torch.equal(again.final_theta[0], theta)
    _assert_same(before, _snapshot(net))


def _storages(problem: Problem) -> dict[int, int]:
    """data_ptr -> nbytes of every distinct tensor storage held by the Problem's attributes (tensors and
    containers of tensors; the network's own parameters and buffers are its, not the data's)."""
    found = {}

    def visit(value):
        if torch.is_tensor(value):
            storage = value.untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for name, value in vars(problem).items():
        if name not in ("net", "buffers"):
            visit(value)
    return found


@pytest.mark.parametrize("with_meta", [True, False])
def test_a_problem_holds_one_copy_of_its_data(with_meta):
    x_t, y_t, x_m, y_m = _data()
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    problem = Problem(net, x_t, y_t, x_m, y_m) if with_meta else Problem(net, x_t, y_t)
    inputs = [x_t, y_t, x_m, y_m] if with_meta else [x_t, y_t]
    expected = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in inputs}
    held = _storages(problem)
    assert held == expected  # the inputs' own storages, and nothing more (no concatenation of them)
    assert sum(held.values()) == sum(t.untyped_storage().nbytes() for t in inputs)
    assert not any(name.endswith("_all") for name in vars(problem))


def test_a_batch_is_its_train_rows_then_its_meta_rows():
    x_t, y_t, x_m, y_m = _data()
    problem = Problem(nn.Linear(5, 3), x_t, y_t, x_m, y_m)
    idx, jdx = torch.tensor([5, 0, 47, 5]), torch.tensor([11, 2])
    x, y = problem.batch(idx, jdx)
    assert torch.equal(x, torch.cat([x_t[idx], x_m[jdx]])) and torch.equal(y, torch.cat([y_t[idx], y_m[jdx]]))
    x, y = problem.batch(idx)  # train rows only
    assert torch.equal(x, x_t[idx]) and torch.equal(y, y_t[idx])
    x, y = problem.batch(idx, jdx[:0])
    assert torch.equal(x, x_t[idx]) and torch.equal(y, y_t[idx])
    params = dict(problem.net.named_parameters())
    want = torch.nn.functional.cross_entropy(problem.net(torch.cat([x_t[idx], x_m[jdx]])),
                                             torch.cat([y_t[idx], y_m[jdx]]), reduction="none")
    assert torch.allclose(problem.losses(params, idx, jdx), want)
    assert torch.allclose(problem.losses(params, idx), want[:4])


def test_moving_a_problem_copies_its_network_and_leaves_the_users_where_it_is():
    from pyro_dps.context import _network_on

    net = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 5))
    net[2].weight = net[0].weight  # tied: one parameter in two places
    net[2].bias.requires_grad_(False)
    before = _snapshot(net)
    assert _network_on(net, "cpu") is net  # already there: used as it is
    plain = nn.Linear(5, 3)
    assert Problem(plain, *_data()).to("cpu").net is plain
    moved = _network_on(net, "meta")  # (no GPU here: the meta device stands in for one)
    _assert_same(before, _snapshot(net))
    assert all(t.device.type == "cpu" for t in [*net.parameters(), *net.buffers()])
    assert all(t.device.type == "meta" for t in [*moved.parameters(), *moved.buffers()])
    assert moved[2].weight is moved[0].weight and not moved[2].bias.requires_grad
    assert [n for n, _ in moved.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert [n for n, _ in moved.named_buffers()] == [n for n, _ in net.named_buffers()]
