"""No host synchronisation inside a step: on CUDA a step must never wait for the device.

CI has no GPU, so the check runs on CPU through the dispatcher: every way torch reads a tensor back to
the host (`.item()`, `bool(t)`, `float(t)`, `if t:`) and every op whose output size depends on the values
(nonzero, masked_select, unique, indexing with a boolean mask) goes through one of the ops in SYNC_OPS
or is an index with a boolean tensor, and a TorchDispatchMode sees each op a step runs. Every built-in model (fused and trace paths) x every kernel, batch draws included.
This test found syncs in 24 of the 28 cases: Pyro's NaN/inf checks on the trace path's log probs (run
with validation on), and validated log_probs (a support check read back) of the fused path's Beta and
spike-and-slab base priors and of the class-balanced sum prior.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_dps.context import Problem
from pyro_dps.kernels import ALGORITHMS, MinibatchSampler
from pyro_dps.models import bads, beta_prior, class_balanced, latent_beta, spike_slab, weight_net
from pyro_dps.networks import mlp
from pyro_dps.potential import make_potential

SYNC_OPS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.is_nonzero.default",
            "aten.nonzero.default", "aten.masked_select.default", "aten._unique2.default",
            "aten.unique_dim.default", "aten.unique_consecutive.default"}
MODELS = {"bads": (bads.model, "auto"), "bads-trace": (bads.model, "trace"), "beta_prior": (beta_prior.model, "auto"),
          "spike_slab": (spike_slab.model, "auto"), "class_balanced": (class_balanced.model, "auto"),
          "latent_beta": (latent_beta.model, "auto"), "weight_net": (weight_net.model, "auto")}
EXPECTED_KIND = {"bads": "fused", "bads-trace": "trace", "beta_prior": "fused", "spike_slab": "fused",
                 "class_balanced": "fused", "latent_beta": "trace", "weight_net": "trace"}


class HostReads(TorchDispatchMode):
    """Records the ops that read the device back (SYNC_OPS, boolean-mask indexing) while it is active."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in SYNC_OPS:
            self.seen.append(str(func))
        elif str(func).startswith(("aten.index.", "aten.index_put")) and any(
                torch.is_tensor(i) and i.dtype == torch.bool for i in args[1] if i is not None):
            self.seen.append(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(260, 6, generator=g), torch.randint(0, 3, (260,), generator=g)
    return Problem(mlp(6, 3, (16,)), x[:200], y[:200], x[200:], y[200:])


def test_the_spy_sees_a_host_read():
    spy = HostReads()
    with spy:
        bool(torch.ones(3).sum() > 0)
        torch.ones(4)[torch.ones(4) > 0]
    assert spy.seen == ["aten._local_scalar_dense.default", "aten.index.Tensor with a boolean mask"]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("kernel", ["sgld", "psgld", "sghmc", "paper"])
def test_a_step_never_reads_the_device_back(problem, name, kernel):
    model, kind = MODELS[name]
    hyper = {} if name == "latent_beta" else {"beta": 0.5}  # a number: 'auto' is fit's to resolve
    potential = make_potential(model, problem, hyper, kind, torch.Generator().manual_seed(0))
    assert potential.kind == EXPECTED_KIND[name]
    gen = torch.Generator().manual_seed(1)
    alg = ALGORITHMS[kernel](potential, 1e-3, temperature=0.01, local_step_size=0.1, generator=gen)
    state = alg.init(potential.init_theta(gen), torch.full((problem.n_train,), 0.5) if potential.local_site else None)
    train, meta = MinibatchSampler(200, 32, gen, problem.device), MinibatchSampler(60, 20, gen, problem.device)
    for _ in range(3):  # first steps may set things up
        state = alg.step(state, (train(), meta()))
    spy = HostReads()
    with spy:
        for _ in range(8):  # crosses an epoch boundary of the meta sampler (a new permutation)
            state = alg.step(state, (train(), meta()))
    assert spy.seen == [], f"{name} / {kernel}: host reads inside a step: {sorted(set(spy.seen))}"
    assert state.step == 11 and bool(torch.isfinite(state.theta).all())
