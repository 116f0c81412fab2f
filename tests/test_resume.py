"""A run killed (SIGKILL) or stopped (SIGTERM, SIGINT) part-way and resumed gives the same draws, bit for bit,
as an uninterrupted run; a diverging or exploding run is stopped by the guard with a clear error."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from pyro_dps.arviz_data import load_draws_file
from pyro_dps.context import Problem
from pyro_dps import SamplerConfig, fit
from pyro_dps.errors import DivergenceError, DPSError
from pyro_dps.models import bads
from pyro_dps.safefile import load_tree

CONFIG = """
name = "resume"
[data]
source = "digits"
noise_rate = 0.4
[network]
kind = "mlp"
hidden = [32]
[sampler]
kernel = "psgld"
step_size = 1e-3
local_step_size = 0.05
temperature = 0.01
chains = 2
warmup = 300
samples = 40
thin = 10
batch_size = 64
snapshots = 3
[baselines]
"""


def _cli(*args):
    return [sys.executable, "-m", "pyro_dps", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted."""
    root = tmp_path_factory.mktemp("resume")
    (root / "c.toml").write_text(CONFIG)
    subprocess.run(_cli("run", str(root / "c.toml"), "--out", str(root / "full"), "--quiet", "--checkpoint-every",
                        "50"), check=True, env=ENV)
    return root


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_then_resume_matches_uninterrupted(uninterrupted, tmp_path, sig):
    """Killed (SIGKILL) or stopped (SIGTERM, SIGINT: exit 128 + signal, one line, staging and lock removed)
    in the second chain, then resumed: the draws are bit-identical to the uninterrupted run's."""
    cfg, full = uninterrupted / "c.toml", uninterrupted / "full"
    out = tmp_path / "killed"
    ckpt = tmp_path / "killed.checkpoint.safetensors"
    proc = subprocess.Popen(_cli("run", str(cfg), "--out", str(out), "--quiet", "--checkpoint-every", "50"), env=ENV,
                            stderr=subprocess.PIPE, text=True)
    # stop it once the second chain has checkpointed (chain index 1 in the checkpoint)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                if load_tree(ckpt, "checkpoint", DPSError)["chain"] == 1:
                    break
            except Exception:  # being replaced right now: look again
                pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped; make it longer"
    os.kill(proc.pid, sig)
    err = proc.communicate()[1]
    assert not out.exists() and ckpt.exists()
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig and err.strip().splitlines()[-1].startswith("pyro-dps: interrupted")
        assert "Traceback" not in err
        assert not [p.name for p in tmp_path.iterdir() if "staging" in p.name or p.name.endswith(".lock")]
    subprocess.run(_cli("run", str(cfg), "--out", str(out), "--quiet", "--checkpoint-every", "50", "--resume"),
                   check=True, env=ENV)
    a = load_draws_file(full / "draws.nc")
    b = load_draws_file(out / "draws.nc")
    np.testing.assert_array_equal(a["weights"].values, b["weights"].values)
    for k in ("log_joint", "theta_norm", "w_mean"):
        np.testing.assert_array_equal(a[k].values, b[k].values)
    assert not ckpt.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed"]  # no staging, lock or spill file left


def test_divergence_guard_stops_an_explosion_with_clear_error():
    """A step size that is allowed (<= 1e3) but far too large: theta stays finite for a while yet explodes by
    orders of magnitude; the guard stops the chain and names the setting instead of "succeeding"."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    problem = Problem(nn.Linear(4, 2), x, y, x[:20], y[:20])
    config = SamplerConfig(kernel="sgld", step_size=10.0, chains=1, warmup=400, samples=2, thin=1, batch_size=32,
                           progress=False, check_every=10, max_rejections=20)
    with pytest.raises(DivergenceError, match=r"theta exploded by step 10 .*lower sampler.step_size \(now 10.0\)"):
        fit(bads.model, problem, {"beta": 0.5}, config)


def test_divergence_guard_stops_after_consecutive_nonfinite_steps():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    y_train = y.clone()
    y_train[2:] = 2  # every training row but the two the start-up probe reads has a NaN loss

    def nan_loss(outputs, targets):
        loss = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
        return loss + torch.where(targets == 2, float("nan"), 0.0)

    problem = Problem(nn.Linear(4, 3), x, y_train, x[:20], y[:20], loss=nan_loss)
    config = SamplerConfig(kernel="sgld", step_size=1e-3, chains=1, warmup=400, samples=2, thin=1, batch_size=32,
                           progress=False, check_every=10, max_rejections=20)
    with pytest.raises(DivergenceError, match="consecutive non-finite steps"):
        fit(bads.model, problem, {"beta": 0.5}, config)


def test_guard_rejects_nonfinite_steps_and_keeps_state_finite():
    """One poisoned example whose loss is NaN: every step that batches it is rejected (so its weight never
    moves from the start value), the rejections are counted, the step size is lowered, all else stays finite."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    y[7] = 2  # the poisoned example's label

    def poisoned_loss(outputs, targets):
        loss = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
        return loss + torch.where(targets == 2, float("nan"), 0.0)

    problem = Problem(nn.Linear(4, 3), x, y, x[20:40], y[20:40], loss=poisoned_loss)
    config = SamplerConfig(kernel="psgld", step_size=1e-3, local_step_size=0.05, chains=1, warmup=200, samples=20,
                           thin=5, batch_size=32, progress=False, check_every=5, max_rejections=10_000)
    post = fit(bads.model, problem, {"beta": 0.5}, config)
    ds = post.dataset()
    assert ds["rejected_steps"].values[0, -1] > 0
    assert ds["step_scale"].values[0, -1] < 1.0
    weights = ds["weights"].values[0]
    np.testing.assert_array_equal(weights[:, 7], 0.5)
    others = np.delete(weights, 7, axis=1)
    assert np.isfinite(others).all() and np.isfinite(ds["theta_norm"].values).all()
    assert np.abs(others - 0.5).max() > 0.1  # the rest of the chain moved
