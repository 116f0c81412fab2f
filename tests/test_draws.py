"""Draws stream to netCDF past the memory budget and read back equal to the in-memory store; draws.nc is the same
file on both paths, and a resumed streamed run appends to its spill file."""
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from pyro_dps.context import Problem
from pyro_dps.draws import DrawStore
from pyro_dps import SamplerConfig, fit
from pyro_dps.errors import ConfigError
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


CFG = dict(kernel="psgld", step_size=1e-3, local_step_size=0.1, chains=2, warmup=20, samples=15, thin=3,
           batch_size=32, progress=False, seed=5)


def _groups(path):
    """Every group of a draws.nc file, loaded."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        names = list(nc.groups)
    out = {}
    for name in names:
        with xr.open_dataset(path, group=name) as ds:
            out[name] = ds.load()
    return out


def test_streamed_file_is_the_memory_file_completed_in_place(tmp_path):
    """Past the memory budget the weights go into the spill file's /posterior while sampling; saving adds the
    other groups to that file and moves it (same inode: no rewrite), and the file reads exactly as the
    in-memory path's draws.nc, group by group."""
    coords = {"label": _problem().y_train.numpy(), "domain": np.arange(200) % 3}
    mem = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**CFG))
    spill = tmp_path / "spill.nc"
    disk = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**CFG, memory_budget_mb=0.001),
               spill_path=str(spill))
    assert disk.draws.streamed and not mem.draws.streamed
    mem.save_draws(tmp_path / "mem.nc", coords)
    inode = spill.stat().st_ino
    disk.save_draws(tmp_path / "disk.nc", coords)
    assert not spill.exists() and (tmp_path / "disk.nc").stat().st_ino == inode
    a, b = _groups(tmp_path / "mem.nc"), _groups(tmp_path / "disk.nc")
    assert set(a) == set(b) == {"posterior", "sample_stats", "observed_data", "constant_data"}
    for name in a:
        xr.testing.assert_identical(a[name], b[name])
    np.testing.assert_array_equal(a["posterior"]["w"].values, mem.dataset()["weights"].values)
    np.testing.assert_array_equal(a["posterior"]["domain"].values, coords["domain"])
    np.testing.assert_array_equal(a["constant_data"]["domain"].values, coords["domain"])
    np.testing.assert_array_equal(a["observed_data"]["label"].values, coords["label"])
    np.testing.assert_array_equal(a["sample_stats"]["lp"].values, mem.dataset()["log_joint"].values)


def test_resumed_streamed_run_appends_to_its_spill_file(tmp_path, monkeypatch):
    """A streamed run stopped in its second chain and resumed keeps the weights already in the spill file and
    appends the rest: its draws.nc is identical to an uninterrupted streamed run's."""
    import pyro_dps.kernels.chain as chain_control

    cfg = dict(CFG, memory_budget_mb=0.001, checkpoint_every=10, check_every=10)
    full = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**cfg), spill_path=str(tmp_path / "full.nc"))
    full.save_draws(tmp_path / "full_draws.nc")
    guard = chain_control.guard

    def stop(state, chain, t, *args):
        if chain == 1 and t == 40:
            raise KeyboardInterrupt
        return guard(state, chain, t, *args)

    spill, ckpt = tmp_path / "spill.nc", tmp_path / "c.safetensors"
    monkeypatch.setattr(chain_control, "guard", stop)
    with pytest.raises(KeyboardInterrupt):
        fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**cfg), spill_path=str(spill), checkpoint=ckpt)
    monkeypatch.setattr(chain_control, "guard", guard)
    with xr.open_dataset(spill, group="posterior") as part:  # chain 0 is in the file, chain 1 not yet complete
        assert np.isfinite(part["w"].values[0]).all() and np.isnan(part["w"].values[1, -1]).all()
    resumed = fit(bads.model, _problem(), {"beta": 0.6}, SamplerConfig(**cfg), spill_path=str(spill),
                  checkpoint=ckpt, resume=True)
    assert resumed.draws.streamed
    resumed.save_draws(tmp_path / "resumed_draws.nc")
    a, b = _groups(tmp_path / "full_draws.nc"), _groups(tmp_path / "resumed_draws.nc")
    assert set(a) == set(b)
    for name in a:
        xr.testing.assert_identical(a[name], b[name])


def test_resume_refuses_a_spill_file_of_the_old_layout(tmp_path):
    spill = tmp_path / "spill.nc"
    xr.Dataset({"weights": (("chain", "draw", "example"), np.zeros((1, 2, 3), np.float32))}).to_netcdf(spill)
    with pytest.raises(ConfigError, match="not in the layout"):
        DrawStore(1, 2, np.arange(3), ["log_joint"], memory_budget_mb=1e-9, spill_path=spill, append=True)
