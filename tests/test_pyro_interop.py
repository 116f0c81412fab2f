"""`pyro.infer.MCMC` runs the SG-MCMC kernels as a Pyro user expects (run under .venv (ArviZ 0.x) and
.venv-arviz1 (1.x)).

- `num_chains = 2` gives two independent chains, each reproducible: chain k of a kernel seeded s is `fit`'s
  chain k of seed s, draw for draw (same initial weights, batches, end of warm-up and step-size control),
  in Pyro's worker processes too;
- the progress bar advances and shows the kernel's step size, losses and mean weight (conftest makes any
  logging error raise);
- rejected (non-finite) steps are the `divergences` and set the `acceptance rate`, and halve the step size
  as in `fit`; warm-up's end fixes pSGLD's preconditioner;
- `arviz.from_pyro(mcmc)` (ArviZ 0.x) and `arviz_data.from_mcmc(mcmc)` (both lines) hold both chains, and
  ArviZ's R-hat over them is near 1.

A tiny problem: 30 training points (5 labels flipped), 10 meta points, logistic regression; fixed seeds.
"""
from __future__ import annotations

import contextlib
import io
import re
import time
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing
from pyro.infer import MCMC
from pyro.infer.mcmc.api import _MultiSampler

from pyro_dps.arviz_data import ARVIZ_1, from_mcmc, posterior_group, sample_stats_group
from pyro_dps.context import Problem
from pyro_dps.diagnostics import compute_stats
from pyro_dps import SamplerConfig, fit
from pyro_dps.errors import ConfigError
from pyro_dps.kernels import PSGLD
from pyro_dps.models import bads

pytestmark = pytest.mark.usefixtures("progress_bars_on")

N, M = 30, 10
HYPER = dict(beta=0.6, sigma=2.0)
STEP = 0.02
KERNEL = dict(batch_size=15, meta_batch_size=10, steps_per_sample=2, seed=3, step_size=STEP, alpha=0.999,
              temperature=1.0)
WARMUP, SAMPLES = 100, 300  # Pyro counts samples: 2 steps each


def _problem(poisoned: int | None = None) -> Problem:
    """Two Gaussian blobs in 2-D, labels of every 7th training point flipped. With `poisoned`, a third class
    whose only member (that training row) has a NaN loss: every step that batches it is rejected."""
    g = torch.Generator().manual_seed(0)

    def blobs(n):
        y = torch.arange(n) % 2
        return torch.randn(n, 2, generator=g) * 0.8 + (2.0 * y - 1.0).unsqueeze(1) * torch.tensor([1.0, 0.7]), y

    (x_train, y_train), (x_meta, y_meta) = blobs(N), blobs(M)
    y_train[::7] = 1 - y_train[::7]
    torch.manual_seed(0)
    if poisoned is None:
        return Problem(torch.nn.Linear(2, 2), x_train, y_train, x_meta, y_meta)
    y_train[poisoned] = 2

    def loss(outputs, targets):
        nll = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
        return nll + torch.where(targets == 2, float("nan"), 0.0)

    return Problem(torch.nn.Linear(2, 3), x_train, y_train, x_meta, y_meta, loss=loss)


def _fit(problem: Problem, warmup: int, samples: int, chains: int = 1, **kernel):
    """`fit` on the same settings as a Pyro run of PSGLD(**kernel) with `warmup` / `samples` samples."""
    k = {**KERNEL, **kernel}
    config = SamplerConfig(kernel="psgld", step_size=k["step_size"], temperature=k["temperature"],
                           kernel_kwargs={"alpha": k["alpha"]}, chains=chains, warmup=warmup * k["steps_per_sample"],
                           samples=samples, thin=k["steps_per_sample"], batch_size=k["batch_size"],
                           meta_batch_size=k["meta_batch_size"], seed=k["seed"], snapshots=0, progress=False,
                           check_every=k.get("check_every", 50))
    return fit(bads.model, problem, HYPER, config)


def _weights(mcmc: MCMC) -> np.ndarray:
    return mcmc.get_samples(group_by_chain=True)["w"].numpy()


@pytest.fixture(scope="module")
def two_chains(progress_bars_on):
    """One run of two chains (100 warm-up and 300 kept samples of 2 steps each) one after the other, as Pyro
    runs them with fewer than 3 cores, progress bars on, their output kept."""
    kernel, err = PSGLD(bads.model, _problem(), HYPER, **KERNEL), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.multiprocessing, "cpu_count", lambda: 2)
        with pytest.warns(UserWarning, match="drawn sequentially"):
            mcmc = MCMC(kernel, num_samples=SAMPLES, warmup_steps=WARMUP, num_chains=2)
    threads = torch.get_num_threads()  # conftest's one thread is set per test, after module fixtures
    torch.set_num_threads(1)
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        mcmc.run()
    torch.set_num_threads(threads)
    return SimpleNamespace(mcmc=mcmc, kernel=kernel, stderr=err.getvalue(), seconds=time.perf_counter() - start)


def test_two_chains_are_independent_and_are_fits_chains(two_chains):
    """The chains differ (they were bit-identical when setup re-applied one seed), each starting from its own
    theta, and are `fit`'s two chains of the same seed, bit for bit: reproducible from the seed."""
    w = _weights(two_chains.mcmc)
    assert w.shape == (2, SAMPLES, N)
    assert np.abs(w[0] - w[1]).max() > 0.5
    theta = two_chains.mcmc.get_samples(group_by_chain=True)["theta.weight"]
    assert (theta[0, 0] - theta[1, 0]).abs().min() > 0
    assert two_chains.mcmc.diagnostics()["chain"] == {"chain 0": 0, "chain 1": 1}
    np.testing.assert_array_equal(_fit(_problem(), WARMUP, SAMPLES, chains=2).draws.weights().values, w)
    print(f"\n  2 chains x {WARMUP + SAMPLES} samples: {two_chains.seconds:.1f}s")


def test_each_setup_starts_the_next_chain(two_chains):
    """A fresh kernel of the same seed repeats chain 0; set up again, it runs chain 1."""
    kernel, w = PSGLD(bads.model, _problem(), HYPER, **KERNEL), _weights(two_chains.mcmc)
    for chain in (0, 1):
        mcmc = MCMC(kernel, num_samples=40, warmup_steps=WARMUP)
        mcmc.run()
        np.testing.assert_array_equal(_weights(mcmc)[0], w[chain, :40])


def test_parallel_workers_run_the_same_chains(two_chains, monkeypatch):
    """With a core per chain Pyro runs each chain in a worker process (`_MultiSampler`): the same two chains."""
    monkeypatch.setattr(torch.multiprocessing, "cpu_count", lambda: 4)
    mcmc = MCMC(PSGLD(bads.model, _problem(), HYPER, **KERNEL), num_samples=40, warmup_steps=WARMUP, num_chains=2)
    assert isinstance(mcmc.sampler, _MultiSampler)
    with contextlib.redirect_stderr(io.StringIO()):
        mcmc.run()
    np.testing.assert_array_equal(_weights(mcmc), _weights(two_chains.mcmc)[:, :40])


def test_progress_bar_advances_and_shows_the_kernel(two_chains):
    """Each chain's bar reaches its end, its postfix the kernel's step size, losses and mean weight."""
    total, out = WARMUP + SAMPLES, two_chains.stderr
    assert "Logging error" not in out
    for chain in (0, 1):
        assert re.search(rf"Sample \[{chain}\]: 100%\|[^|]*\| {total}/{total} ", out), out[-500:]
    postfix = re.findall(r"step size=([0-9.e+-]+), train_loss=[0-9.]+, meta_loss=[0-9.]+, w_mean=0\.\d{3}\]", out)
    assert postfix and {float(eps) for eps in postfix} == {STEP}
    logged = two_chains.kernel.logging()
    assert isinstance(logged, OrderedDict) and list(logged) == ["step size", "train_loss", "meta_loss", "w_mean"]


@pytest.mark.skipif(ARVIZ_1, reason="ArviZ 1.x has no from_pyro (arviz-base 1.3 converts NumPyro only): "
                                    "test_from_mcmc_holds_both_chains covers both lines")
def test_arviz_from_pyro_holds_both_chains(two_chains):
    """`az.from_pyro(mcmc)`: both chains' draws, no divergence, the model's observed sites over all the data
    (`kernel.model` is the model on the whole of D_t and D_m); R-hat of every weight below 1.1. ArviZ cannot
    vectorise the network over draws, so it leaves out the log-likelihood group, with a warning."""
    import arviz as az

    with pytest.warns(UserWarning, match="log_likelihood group will be omitted"):
        data = az.from_pyro(two_chains.mcmc)
    assert set(data.groups()) == {"posterior", "sample_stats", "observed_data"}
    np.testing.assert_array_equal(data.posterior["w"].values, _weights(two_chains.mcmc))
    assert data.sample_stats["diverging"].shape == (2, SAMPLES) and not data.sample_stats["diverging"].any()
    assert data.observed_data["train_lik"].shape[0] == N and data.observed_data["meta_lik"].shape[0] == M
    rhat = az.rhat(data, var_names=["w"])["w"].values
    print(f"\n  R-hat of the 30 weights over 2 chains: max {rhat.max():.3f}, median {np.median(rhat):.3f}")
    assert rhat.max() < 1.1


def test_from_mcmc_holds_both_chains(two_chains):
    """`arviz_data.from_mcmc` on the installed line: the draws with dims (chain, draw, example), the
    divergences as `diverging`, and ArviZ's R-hat of every weight below 1.1."""
    data = from_mcmc(two_chains.mcmc)
    w = posterior_group(data)["w"]
    assert w.dims == ("chain", "draw", "example")
    np.testing.assert_array_equal(w.values, _weights(two_chains.mcmc))
    assert not sample_stats_group(data)["diverging"].values.any()
    rhat = compute_stats(posterior_group(data)[["w"]])["rhat"]["w"].values
    print(f"\n  rank R-hat of the 30 weights over 2 chains ({ARVIZ_1 and 'ArviZ 1.x' or 'ArviZ 0.x'}): "
          f"max {rhat.max():.3f}, median {np.median(rhat):.3f}")
    assert rhat.shape == (N,) and rhat.max() < 1.1


def test_rejected_steps_are_divergences_and_halve_the_step_size():
    """One poisoned example: the kept draws whose steps batched it are the `divergences` (as `arviz` reads
    them), the accepted share of kept steps the `acceptance rate`; the guard halves the step size as in `fit`
    (same draws, multiplier and count) and the progress bar shows the lowered step size."""
    problem, counts = _problem(poisoned=7), []
    settings = dict(batch_size=10, steps_per_sample=1, seed=5, check_every=5)
    kernel = PSGLD(bads.model, problem, HYPER, **{**KERNEL, **settings})
    mcmc = MCMC(kernel, num_samples=30, warmup_steps=15,
                hook_fn=lambda kernel, params, stage, i: counts.append(int(kernel.state.rejected)))
    mcmc.run()
    per_draw = np.diff(counts, prepend=0)[15:]  # rejected steps in each kept draw
    expected = np.flatnonzero(per_draw).tolist()
    assert 0 < len(expected) < 30
    diag = {k: v["chain 0"] for k, v in mcmc.diagnostics().items() if k in ("divergences", "acceptance rate",
                                                                             "rejected steps", "step scale")}
    assert diag["divergences"] == expected
    assert diag["acceptance rate"] == pytest.approx(1 - per_draw.sum() / 30)
    assert np.flatnonzero(sample_stats_group(from_mcmc(mcmc))["diverging"].values[0]).tolist() == expected
    reference = _fit(problem, 15, 30, **settings).dataset()
    np.testing.assert_array_equal(reference["weights"].values[0], _weights(mcmc)[0])
    assert diag["rejected steps"] == counts[-1] == reference["rejected_steps"].values[0, -1]
    assert diag["step scale"] == reference["step_scale"].values[0, -1] < 1
    assert kernel.logging()["step size"] == f"{STEP * diag['step scale']:.2e}"


@pytest.mark.parametrize("freeze", [True, False])
def test_end_of_warmup_reaches_the_psgld_preconditioner(freeze):
    """The adapter ends warm-up where Pyro does: with `freeze_preconditioner`, pSGLD's second-moment estimate V
    follows the gradients for warm-up's 10 samples (20 steps) and stays fixed from then on; by default it
    keeps following them."""
    seen = []
    mcmc = MCMC(PSGLD(bads.model, _problem(), HYPER, **KERNEL, freeze_preconditioner=freeze), num_samples=10,
                warmup_steps=10, hook_fn=lambda kernel, params, stage, i: seen.append(kernel.state.theta_aux["v"].clone()))
    mcmc.run()
    v = torch.stack(seen)
    assert (v[1:10] != v[:9]).all()
    assert (v[10:] == v[9]).all() if freeze else (v[10:] != v[9]).any(dim=1).all()


def test_run_arguments_are_refused():
    """The kernel holds its data: arguments to mcmc.run (which Pyro would pass to the model) are an error."""
    mcmc = MCMC(PSGLD(bads.model, _problem(), HYPER, **KERNEL), num_samples=2, warmup_steps=0)
    with pytest.raises(ConfigError, match=r"mcmc.run\(\) without arguments"):
        mcmc.run(torch.zeros(3))
