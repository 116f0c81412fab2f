"""Draws stream to netCDF past the memory budget and read back equal to the in-memory store."""
import numpy as np
import torch
from torch import nn

from pyro_dps.context import Problem
from pyro_dps.driver import SamplerConfig, fit
from pyro_dps.models import bads


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return Problem(nn.Linear(4, 2), x, y, x[:20], y[:20])


def test_streamed_draws_equal_in_memory_draws(tmp_path):
    cfg = dict(kernel="psgld", step_size=1e-3, local_step_size=0.1, chains=2, warmup=20, samples=15, thin=3,
               batch_size=32, progress=False, seed=5)
    mem = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**cfg))
    disk = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**cfg, memory_budget_mb=0.001),
               spill_path=str(tmp_path / "spill.nc"))
    assert not mem.draws.streamed and disk.draws.streamed
    np.testing.assert_array_equal(mem.draws.weights().values, disk.draws.weights().values)
    assert not np.isnan(mem.draws.weights().values).any()
    # the draws move: a chain's weights are not frozen
    assert mem.draws.weights().std("draw").mean() > 1e-3
    for k in ("log_joint", "meta_loss", "w_mean", "theta_norm"):
        assert np.isfinite(mem.dataset()[k].values).all()


def test_w_mean_scalar_matches_recorded_weights():
    post = fit(bads.model, _problem(), {"beta": 0.6},
               SamplerConfig(chains=1, warmup=10, samples=5, thin=2, batch_size=32, progress=False))
    ds = post.dataset()
    np.testing.assert_allclose(ds["w_mean"].values, ds["weights"].mean("example").values, rtol=1e-5)
