"""The ArviZ adapter on both ArviZ lines (run under .venv (0.x) and .venv-arviz1 (1.x)).

Set PYRO_DPS_EXPECT_ARVIZ=0 or =1 to make the run fail when the interpreter has the other line installed.
"""
import json
import os
import types

import arviz
import numpy as np
import pytest
import xarray as xr
from packaging.version import Version

from pyro_dps.arviz_data import (ARVIZ_1, RunDirError, arviz_line, example_groups, get_group, group_names,
                                 is_arviz_data, load_run, nonfinite_steps, posterior_group, rejected_steps,
                                 sample_stats_group, scalar_names, step_sizes, to_arviz, weight_draws)
from pyro_dps.arviz_data import save_draws
from pyro_dps import SamplerConfig
from pyro_dps.errors import DataError, DPSError

C, D, N = 4, 30, 9


def draws_dataset(seed: int = 0, n: int = N, beta: bool = True) -> xr.Dataset:
    """Shaped like Posterior.dataset() plus the label/clean coordinates a run records."""
    rng = np.random.default_rng(seed)
    w = rng.random((C, D, n)).astype(np.float32)
    scalars = {k: rng.normal(size=(C, D)) for k in ("log_joint", "meta_loss", "train_loss", "theta_norm")}
    scalars["w_mean"] = w.astype(np.float64).sum(-1) / max(n, 1)
    if beta:
        scalars["beta"] = rng.random((C, D))
    ds = xr.Dataset({"weights": (("chain", "draw", "example"), w),
                     **{k: (("chain", "draw"), v) for k, v in scalars.items()}},
                    coords={"chain": np.arange(C), "draw": np.arange(D), "example": 100 + 3 * np.arange(n)})
    return ds.assign_coords(label=("example", np.arange(n) % 3), clean=("example", np.arange(n) % 2 == 0))


def write_run(path, ds: xr.Dataset, sampler: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    config = {"name": "test", "sampler": sampler or {"step_size": 1e-3, "local_step_size": 0.05, "warmup": 100,
                                                     "thin": 5, "samples": D, "chains": C}}
    save_draws(ds, path / "draws.nc", config["sampler"])
    (path / "metrics.json").write_text(json.dumps({"scenario": "test", "methods": {}, "weights": None,
                                                   "config": config}))
    return path


def test_line_is_decided_by_the_installed_version():
    installed = Version(arviz.__version__)
    assert ARVIZ_1 == (installed >= Version("1.0"))
    assert arviz_line() == ("1.x" if ARVIZ_1 else "0.x")
    expected = os.environ.get("PYRO_DPS_EXPECT_ARVIZ")
    if expected is not None:
        assert ARVIZ_1 == (expected == "1"), f"expected ArviZ line {expected}, found {arviz.__version__}"
    if ARVIZ_1:
        assert installed >= Version("1.3")


def test_object_type_per_line():
    data = to_arviz(draws_dataset())
    assert is_arviz_data(data)
    if ARVIZ_1:
        assert type(data) is xr.DataTree  # not a legacy InferenceData look-alike
    else:
        assert isinstance(data, arviz.InferenceData)
        assert not isinstance(data, xr.DataTree)
    assert set(group_names(data)) == {"posterior", "sample_stats", "observed_data", "constant_data"}
    assert set(group_names(to_arviz(draws_dataset().drop_vars(["label", "clean"])))) == {"posterior", "sample_stats"}


def test_weights_round_trip_exactly_with_coordinates():
    ds = draws_dataset()
    data = to_arviz(ds)
    w = weight_draws(data)
    assert w.dims == ("chain", "draw", "example")
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w.values, ds["weights"].values)  # exact, not approximately
    np.testing.assert_array_equal(w["example"].values, ds["example"].values)
    groups = example_groups(data)
    np.testing.assert_array_equal(groups["label"], ds["label"].values)
    np.testing.assert_array_equal(groups["clean"], ds["clean"].values)
    post = posterior_group(data)
    assert list(post.data_vars)[0] == "w" and post.attrs["pyro_dps_weights"] == "w"  # the Pyro site's name
    for name in ("meta_loss", "train_loss", "w_mean", "theta_norm", "beta"):
        np.testing.assert_array_equal(post[name].values, ds[name].values)
        assert post[name].dims == ("chain", "draw")
    assert set(scalar_names(data)) == {"meta_loss", "train_loss", "w_mean", "theta_norm", "beta"}
    np.testing.assert_array_equal(sample_stats_group(data)["lp"].values, ds["log_joint"].values)  # ArviZ's name
    assert "log_joint" not in post
    np.testing.assert_array_equal(get_group(data, "observed_data")["label"].values, ds["label"].values)
    np.testing.assert_array_equal(get_group(data, "constant_data")["clean"].values, ds["clean"].values)
    # w_mean is sum_i w_i / N_t
    np.testing.assert_allclose(post["w_mean"].values, ds["weights"].values.astype(np.float64).mean(-1), rtol=1e-12)


def test_sample_stats_default_to_zero_counts_and_unknown_step_size():
    data = to_arviz(draws_dataset(beta=False))
    stats = sample_stats_group(data)
    assert stats["rejected_steps"].dims == ("chain", "draw")
    assert int(stats["rejected_steps"].sum()) == 0 and int(stats["nonfinite_steps"].sum()) == 0
    assert np.isnan(stats["step_size"].values).all()  # a bare Dataset does not say its step size
    assert "beta" not in posterior_group(data)
    assert nonfinite_steps(data) == 0 and rejected_steps(data) == 0


def test_recorded_step_counts_and_extra_sample_stats_are_used():
    ds = draws_dataset()
    nonfinite = np.zeros((C, D), dtype=np.int64)
    nonfinite[1, 3:] = 2  # a running total: 2 non-finite steps between draws 2 and 3 of chain 1
    ds["nonfinite"] = (("chain", "draw"), nonfinite)
    data = to_arviz(ds, sample_stats={"rejected_steps": np.ones((C, D), dtype=np.int64),
                                      "step_size": np.full((C, D), 0.25)})
    assert nonfinite_steps(data) == 2
    per_draw = sample_stats_group(data)["nonfinite_steps"].values
    assert per_draw[1, 3] == 2 and per_draw.sum() == 2
    assert rejected_steps(data) == C * D
    assert "nonfinite" not in posterior_group(data)  # a sampler statistic, not a posterior quantity
    np.testing.assert_array_equal(sample_stats_group(data)["step_size"].values, 0.25)
    with pytest.raises(DataError, match="shape"):
        to_arviz(ds, sample_stats={"step_size": np.ones(3)})


def test_driver_guard_statistics_go_to_sample_stats(tmp_path):
    """The driver records `rejected_steps` (running total per chain, float) and `step_scale` per draw."""
    ds = draws_dataset()
    running = np.zeros((C, D))
    running[2, 10:] = 1.0
    running[2, 20:] = 3.0
    scale = np.ones((C, D))
    scale[2, 10:] = 0.5
    scale[2, 20:] = 0.25
    ds["rejected_steps"] = (("chain", "draw"), running)
    ds["step_scale"] = (("chain", "draw"), scale)
    data = to_arviz(write_run(tmp_path / "run", ds))
    post, stats = posterior_group(data), sample_stats_group(data)
    assert "rejected_steps" not in post and "step_scale" not in post
    assert "rejected_steps" not in scalar_names(data)
    counts = stats["rejected_steps"].values
    assert counts[2, 10] == 1 and counts[2, 20] == 2 and counts.sum() == 3 == rejected_steps(data)
    np.testing.assert_allclose(stats["step_size"].values, 1e-3 * scale)
    np.testing.assert_allclose(stats["step_scale"].values, scale)


def test_run_directory_and_draws_file(tmp_path):
    ds = draws_dataset(seed=3)
    run = write_run(tmp_path / "run", ds)
    for source in (run, run / "draws.nc", str(run)):
        data = to_arviz(source)
        np.testing.assert_array_equal(weight_draws(data).values, ds["weights"].values)
        stats = sample_stats_group(data)
        np.testing.assert_array_equal(stats["step_size"].values, 1e-3)
        np.testing.assert_array_equal(stats["step_size_local"].values, 0.05)
    loaded, metrics = load_run(run)
    assert metrics["scenario"] == "test" and loaded.sizes["example"] == N


def test_step_size_schedule_is_evaluated_at_each_draw():
    sampler = {"step_size": {"kind": "polynomial", "a": 1.0, "b": 1.0, "gamma": 0.5}, "warmup": 10, "thin": 2}
    eps = step_sizes(sampler, 2, 3)
    expected = [(1.0 + t) ** -0.5 for t in (11, 13, 15)]  # 0-based step of draws 0, 1, 2
    np.testing.assert_allclose(eps, np.tile(expected, (2, 1)))
    assert np.isnan(step_sizes(None, 2, 3)).all()


def test_posterior_like_object():
    ds = draws_dataset()
    fake = types.SimpleNamespace(dataset=lambda: ds, config=SamplerConfig(step_size=0.01, warmup=0, thin=1))
    data = to_arviz(fake)
    np.testing.assert_array_equal(sample_stats_group(data)["step_size"].values, 0.01)


def test_weight_network_run_has_no_weights():
    ds = draws_dataset(n=0)
    data = to_arviz(ds)
    assert "weights" not in posterior_group(data)
    with pytest.raises(DataError, match="weights"):
        weight_draws(data)


def test_helpers_accept_a_plain_dataset():
    ds = draws_dataset()
    assert get_group(ds, "posterior") is ds
    np.testing.assert_array_equal(weight_draws(ds).values, ds["weights"].values)
    with pytest.raises(KeyError):
        get_group(to_arviz(ds), "prior")


def test_bad_run_directories_name_the_file(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        to_arviz(tmp_path / "missing")
    run = write_run(tmp_path / "run", draws_dataset())
    (run / "draws.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(RunDirError, match="draws.nc"):
        to_arviz(run)
    run2 = write_run(tmp_path / "run2", draws_dataset())
    (run2 / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="metrics.json"):
        to_arviz(run2)
    (run2 / "metrics.json").write_text("{not json")
    with pytest.raises(DPSError, match="metrics.json"):
        to_arviz(run2)
    with pytest.raises(TypeError):
        to_arviz(42)


# ------------------------------------------------------------------------------------ draws.nc as ArviZ reads it
def _problem(n: int = 120):
    import torch
    from torch import nn

    from pyro_dps.context import Problem

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return Problem(nn.Linear(4, 2), x, y, x[:20], y[:20])


def _fit(model, hyper: dict, **kw):
    from pyro_dps import fit

    cfg = dict(kernel="psgld", step_size=1e-3, local_step_size=0.05, chains=2, warmup=30, samples=12, thin=3,
               batch_size=16, progress=False, seed=3)
    return fit(model, _problem(), hyper, SamplerConfig(**{**cfg, **kw}))


def test_draws_file_opens_with_arviz_itself(tmp_path):
    """`arviz.from_netcdf(draws.nc)` gives ArviZ's groups: `w` as recorded, `lp` in sample_stats, labels as
    observed data, groups (a domain) as coordinates and constant data; az.summary's R-hat is the library's."""
    from pyro_dps.diagnostics import diagnose
    from pyro_dps.models import bads

    post = _fit(bads.model, {"beta": 0.5})
    flat = post.dataset()
    labels, domain = np.arange(120) % 2, np.arange(120) % 3
    path = post.save_draws(tmp_path / "draws.nc", {"label": labels, "domain": domain})
    data = arviz.from_netcdf(path)
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= set(group_names(data))
    w = posterior_group(data)["w"]
    assert w.dims == ("chain", "draw", "example") and w.dtype == np.float32
    np.testing.assert_array_equal(w.values, flat["weights"].values)
    np.testing.assert_array_equal(sample_stats_group(data)["lp"].values, flat["log_joint"].values)
    np.testing.assert_array_equal(w["domain"].values, domain)
    np.testing.assert_array_equal(get_group(data, "observed_data")["label"].values, labels)
    np.testing.assert_array_equal(get_group(data, "constant_data")["domain"].values, domain)
    summary = arviz.summary(data, var_names=["w"], round_to="none")
    assert len(summary) == 120
    np.testing.assert_allclose(summary["r_hat"].to_numpy(dtype=float), diagnose(to_arviz(path)).weights["rhat"],
                               rtol=1e-12)
    xr.testing.assert_identical(posterior_group(to_arviz(path)), posterior_group(data))  # one layout


VECTOR_MODEL = '''
import pyro
import pyro.distributions as dist
import torch


def model(ctx, beta=0.5, spread=0.1):
    """BADS with a per-class location `mu` (shape (2,)), a global site outside the network: trace path."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor([-3.0, 3.0]), spread).to_event(1))
    theta = {name: pyro.sample(f"theta.{name}", dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))
             for name, shape in ctx.param_shapes.items()}
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", dist.Uniform(0.0, 1.0))
        pyro.factor("train_lik", -w * ctx.train_losses(theta))
    pyro.sample("w_sum", dist.Normal(beta * ctx.n_train, ctx.n_train ** 0.5), obs=ctx.w_sum(w))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -ctx.meta_losses(theta))
'''


def test_vector_valued_global_site_is_kept_with_its_shape(tmp_path):
    """A user model's per-class location `mu` is in draws.nc as (chain, draw, mu_dim_0), component by component;
    the run records that the trace path ran and every hyper-parameter, the model's own default included."""
    from pyro_dps.model_loader import load_model

    (tmp_path / "vector_prior.py").write_text(VECTOR_MODEL)
    # SGLD: pSGLD adds no noise to a coordinate before it has seen a gradient, and mu starts at its prior's mode
    post = _fit(load_model(f"{tmp_path / 'vector_prior.py'}:model"), {"beta": 0.4}, kernel="sgld")
    mu = posterior_group(arviz.from_netcdf(post.save_draws(tmp_path / "draws.nc")))["mu"]
    assert mu.dims == ("chain", "draw", "mu_dim_0") and mu.shape == (2, 12, 2)
    np.testing.assert_array_equal(mu.values, post.dataset()["mu"].values)
    np.testing.assert_allclose(mu.mean(("chain", "draw")).values, [-3.0, 3.0], atol=0.5)
    assert float(mu.std(("chain", "draw")).min()) > 0  # sampled, not a constant
    record = post.model_record()
    assert record["potential"] == "trace" and "potential_reason" in record
    assert record["hyper"] == {"beta": 0.4, "spread": 0.1} and record["hyper_derived"] == {}


def test_old_flat_draws_file_is_read_by_a_compatibility_path(tmp_path):
    """A draws.nc of pyro-dps 0.1 (one flat root group: `weights`, `log_joint`, ...) still loads, as the groups a
    run now writes; ArviZ itself sees no groups in it."""
    ds = draws_dataset(seed=4)
    run = tmp_path / "run"
    write_run(run, ds)
    ds.to_netcdf(run / "draws.nc")  # the old layout
    data = to_arviz(run)
    np.testing.assert_array_equal(weight_draws(data).values, ds["weights"].values)
    np.testing.assert_array_equal(sample_stats_group(data)["lp"].values, ds["log_joint"].values)
    np.testing.assert_array_equal(sample_stats_group(data)["step_size"].values, 1e-3)  # from metrics.json
    loaded, _ = load_run(run)
    np.testing.assert_array_equal(loaded["weights"].values, ds["weights"].values)
    (run / "other.nc").write_bytes((run / "draws.nc").read_bytes())
    xr.Dataset({"x": ("a", np.arange(3))}).to_netcdf(run / "draws.nc")  # netCDF, but no draws in it
    with pytest.raises(RunDirError, match="not a pyro-dps draws file"):
        to_arviz(run)


def test_flat_view_round_trips_to_the_file_groups(tmp_path):
    """load_run's flat Dataset (what the report reads) maps back to exactly the groups in draws.nc."""
    from pyro_dps.arviz_data import draws_groups, load_draws_file, read_draws

    ds = draws_dataset(seed=5)
    ds["rejected_steps"] = (("chain", "draw"), np.cumsum(np.arange(C * D).reshape(C, D) % 2, axis=1).astype(float))
    run = write_run(tmp_path / "run", ds)
    stored = read_draws(run / "draws.nc")
    again = draws_groups(load_draws_file(run / "draws.nc"))
    assert set(stored) == set(again)
    for name in stored:
        xr.testing.assert_identical(stored[name], again[name])
