"""CUDA checks, skipped without a GPU (CI has none; run them on a GPU machine with `pytest tests/test_cuda.py`).

Every kernel runs a few steps on CUDA under `torch.cuda.set_sync_debug_mode("error")` (a step that reads the
device back raises; the exact weight update's host scan is the one documented exception, so those steps run
with the Langevin update); a deterministic short chain (temperature 0, Langevin weights, the same batches fed
to both) on CUDA matches the CPU chain within float32 tolerance; the weight table in pinned host memory
beside a CUDA network gives the chain it gives on the device."""
import numpy as np
import pytest
import torch
from torch import nn

from pyro_dps import LoopSampler, Problem, SamplerConfig
from pyro_dps.kernels import ALGORITHMS
from pyro_dps.models import bads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
HYPER = {"beta": 0.6}


def _problem(device: str) -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    return Problem(net.to(device), x.to(device), y.to(device), x[:32].to(device), y[:32].to(device))


def _config(**changes) -> SamplerConfig:
    settings = dict(kernel="psgld", step_size=1e-3, local_step_size=0.1, warmup=10, samples=4, thin=5,
                    batch_size=32, progress=False, seed=3, snapshots=2, chains=1, weight_update="langevin")
    return SamplerConfig(**{**settings, **changes})


def _batches(n: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [(torch.randperm(256, generator=g)[:32], torch.randperm(32, generator=g)[:16]) for _ in range(steps)]


@pytest.mark.parametrize("kernel", sorted(ALGORITHMS))
def test_every_kernel_steps_on_cuda_without_reading_the_device_back(kernel):
    sampler = LoopSampler(bads.model, _problem("cuda"), HYPER, _config(kernel=kernel, device="cuda"))
    sampler.step()  # set-up (first-step allocations, the generator) outside the sync check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(8):
            batch = sampler.next_batch()
            sampler.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    w = sampler.weights()
    assert w.device.type == "cuda" and bool(torch.isfinite(w).all()) and 0 <= float(w.min()) <= float(w.max()) <= 1


def _deterministic_chain(device: str, table_device: str | None = None) -> np.ndarray:
    """Weights after a temperature-0 chain on fixed batches (no random number is drawn for a move)."""
    sampler = LoopSampler(bads.model, _problem(device), HYPER,
                          _config(device=device, table_device=table_device, temperature=0.0))
    for train_idx, meta_idx in _batches(256, sampler.total_steps):
        sampler.step((train_idx.to(sampler.run.table_device), meta_idx.to(device)))
    return sampler.weights().double().cpu().numpy()


def test_a_deterministic_chain_on_cuda_matches_the_cpu_chain():
    """float32 on two devices: the same arithmetic up to reduction order; 30 steps keep them within 1e-4."""
    np.testing.assert_allclose(_deterministic_chain("cuda"), _deterministic_chain("cpu"), atol=1e-4)


def test_a_host_weight_table_beside_a_cuda_network_gives_the_device_chain():
    np.testing.assert_allclose(_deterministic_chain("cuda", table_device="cpu"), _deterministic_chain("cuda"),
                               atol=1e-6)
