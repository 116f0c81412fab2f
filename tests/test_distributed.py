"""Scale-out: 2 gloo processes give the same draws as 1 process with the same global batch and seed.

The two runs sum the same per-example terms in a different order (two half-batch forward passes and an
all-reduce against one forward pass), so they agree to float rounding, not bitwise: the tolerance is a
few hundred float32 ulps of the O(1) weights after the steps below.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_dps.context import Problem
from pyro_dps.driver.distributed import Communicator, ShardLayout, ShardedSampler
from pyro_dps import SamplerConfig, fit
from pyro_dps.errors import ConfigError
from pyro_dps.models.bads import model
from pyro_dps.networks import mlp

ROOT = Path(__file__).resolve().parents[1]


def _problem() -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 6, generator=g)
    y = (x[:, 0] > 0).long()
    y[:30] = 1 - y[:30]  # a third of the labels flipped: weights have something to learn
    xm = torch.randn(12, 6, generator=g)
    torch.manual_seed(0)
    return Problem(mlp(6, 2, (8,)), x, y, xm, (xm[:, 0] > 0).long())


# The two runs' rounding differences grow along a chain: for fixed random numbers a batch's exactly redrawn
# weights all follow the sum of the others (a factor of about the number of undecided rows per step), and
# pSGLD's preconditioner multiplies the rounding of near-zero gradients by up to eps / (2 lambda) (hence
# lambda = 1e-2 here). So the runs are compared over a few steps (exact: 5, Langevin: 26 per chain); beyond
# that they agree in distribution, not to rounding.
LENGTH = {"langevin": dict(warmup=10, samples=8, thin=2), "exact": dict(warmup=0, samples=5, thin=1)}


def _config(kernel: str, shards: int, weight_update: str = "exact") -> SamplerConfig:
    extra = {"kernel_kwargs": {"eps_precond": 1e-2}} if kernel == "psgld" else {}
    return SamplerConfig(kernel=kernel, step_size=2e-3, local_step_size=0.5, temperature=0.05, chains=2,
                         batch_size=16, meta_batch_size=8, snapshots=2, seed=5, progress=False, shards=shards,
                         weight_update=weight_update, **LENGTH[weight_update], **extra)


def _worker(rank: int, world: int, init_file: str, out: str, kernel: str, weight_update: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        post = fit(model, _problem(), {"beta": 0.6}, _config(kernel, 1, weight_update))  # shards: the world size
        if rank == 0:
            torch.save({"w": torch.as_tensor(post.draws.weights().values), "theta": torch.stack(post.final_theta),
                        "w_mean": torch.as_tensor(post.draws.dataset()["w_mean"].values)}, out)
        else:
            assert post is None
    finally:
        dist.destroy_process_group()


class _Crash(RuntimeError):
    pass


def _resume_worker(rank: int, world: int, init_file: str, out: str, ckpt: str, crash_at: int, resume: bool) -> None:
    """One rank of a 2-process run with checkpoints every 20 steps; `crash_at` > 0 kills both ranks at that step."""
    import pyro_dps.kernels.chain as chain_control

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    guard, seen = chain_control.guard, []

    def crashing(state, chain, t, *args):
        seen.append((chain, t))
        if crash_at and chain == 1 and t == crash_at:
            raise _Crash(f"rank {rank} killed at chain {chain} step {t}")
        return guard(state, chain, t, *args)

    chain_control.guard = crashing
    config = SamplerConfig(**{**_config("psgld", 1).__dict__, "warmup": 30, "samples": 8, "thin": 5,
                              "checkpoint_every": 20, "check_every": 10})  # 70 steps a chain, bit for bit
    try:
        post = fit(model, _problem(), {"beta": 0.6}, config, checkpoint=ckpt, resume=resume)
        if rank == 0:
            torch.save({"w": torch.as_tensor(post.draws.weights().values), "first": seen[0]}, out)
    except _Crash:
        pass
    finally:
        dist.destroy_process_group()


def test_distributed_run_resumes_from_its_per_rank_checkpoints(tmp_path):
    """Both ranks die in the second chain (after a checkpoint); a resumed run gives the uninterrupted draws."""
    ckpt = str(tmp_path / "run.ckpt")
    full, resumed = str(tmp_path / "full.pt"), str(tmp_path / "resumed.pt")
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "i1"), full, str(tmp_path / "other.ckpt"), 0, False), nprocs=2)
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "i2"), resumed, ckpt, 50, False), nprocs=2)
    assert Path(ckpt).exists() and Path(ckpt + ".rank1").exists() and not Path(resumed).exists()
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "i3"), resumed, ckpt, 0, True), nprocs=2)
    result = torch.load(resumed)
    assert result["first"] == (1, 50)  # it continued from the step-40 checkpoint of chain 1, not from scratch
    assert torch.equal(result["w"], torch.load(full)["w"])  # bit for bit: same ranks, same order


@pytest.mark.parametrize("weight_update", ["exact", "langevin"])
@pytest.mark.parametrize("kernel", ["psgld", "sghmc"])
def test_two_gloo_processes_match_one_process(tmp_path, kernel, weight_update):
    out = tmp_path / "ranks.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out), kernel, weight_update), nprocs=2, join=True)
    two = {k: v.numpy() if k != "theta" else v for k, v in torch.load(out).items()}
    one = fit(model, _problem(), {"beta": 0.6}, _config(kernel, 2, weight_update))
    w_one = one.draws.weights().values
    assert two["w"].shape == w_one.shape == (2, LENGTH[weight_update]["samples"], 90)
    assert np.std(w_one) > 0.05  # the weights moved: the comparison is not between two initial tables
    np.testing.assert_allclose(two["w"], w_one, atol=2e-5, rtol=0)
    torch.testing.assert_close(two["theta"], torch.stack(one.final_theta), atol=2e-5, rtol=0)
    np.testing.assert_allclose(two["w_mean"], one.draws.dataset()["w_mean"].values, atol=1e-6)
    # and a different sharding is a different (equally valid) run, so the match above is not automatic
    other = fit(model, _problem(), {"beta": 0.6}, _config(kernel, 1, weight_update)).draws.weights().values
    assert np.abs(other - w_one).max() > 1e-3


def test_sharded_sampler_covers_each_shard_once_per_epoch():
    layout = ShardLayout(10, 2)
    sampler = ShardedSampler(layout, 5, seed=1, owned=[0, 1], device="cpu")
    batch = sampler()
    assert sorted(batch[:5].tolist()) == [0, 1, 2, 3, 4] and sorted(batch[5:].tolist()) == [5, 6, 7, 8, 9]
    rank1 = ShardedSampler(layout, 5, seed=1, owned=[1], device="cpu")
    assert torch.equal(rank1() + 5, batch[5:])  # the rank's local rows are the global batch's shard part


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 15}, "multiple of shards"),
    ({"meta_batch_size": 7}, "meta batch"),
    ({"shards": 0}, "shards must be an integer >= 1"),
])
def test_bad_sharding_is_refused(change, message):
    config = SamplerConfig(**{**_config("psgld", 2).__dict__, **change})
    with pytest.raises(ConfigError, match=message):
        fit(model, _problem(), {"beta": 0.6}, config)


def test_table_device_must_be_a_device():
    config = SamplerConfig(**{**_config("psgld", 1).__dict__, "table_device": "floppy"})
    with pytest.raises(ConfigError, match="table_device must be a torch device such as 'cpu', got 'floppy'"):
        fit(model, _problem(), {"beta": 0.6}, config)


def test_more_shards_than_examples_is_refused():
    with pytest.raises(ConfigError, match="more than the 3 training examples"):
        ShardLayout(3, 4)


def test_a_world_of_one_does_nothing():
    comm = Communicator()
    x = torch.ones(3)
    assert comm.world == 1 and comm.main and comm.mean_(x) is x and comm.sum(x) is x


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_cli_run_writes_the_same_weights_as_one_sharded_process(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\n[data]\nsource = "digits"\nmeta_per_class = 2\ntest_per_class = 5\n'
        '[network]\nkind = "mlp"\nhidden = [16]\n'
        '[sampler]\nchains = 1\nwarmup = 1\nsamples = 5\nthin = 1\nbatch_size = 32\nmeta_batch_size = 10\n'
        'snapshots = 2\nshards = 2\n[baselines]\n')
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "pyro_dps", "run",
                          str(config), "--out", str(tmp_path / "ddp"), "--quiet", "--device", "cpu"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "pyro_dps", "run", str(config), "--out", str(tmp_path / "single"),
                          "--quiet", "--device", "cpu"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "ddp" / "weights.csv"), pd.read_csv(tmp_path / "single" / "weights.csv")
    assert len(a) == 1797 - 10 * (2 + 5)
    np.testing.assert_allclose(a["mean"], b["mean"], atol=1e-4)
    assert not list(tmp_path.glob("*.rank*"))  # the ranks' side files are gone
