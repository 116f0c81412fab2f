"""Run directories: what --overwrite replaces (only pyro-dps's files), stale staging, the lock, safe files,
resume identity through the API, upgrade/score of run files, a full disk, and the report's bounds."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pyro_dps.models import bads
from test_hostile import TINY, evil_pickle, fast_report  # noqa: F401 - fast_report is autouse here too
from torch import nn

from pyro_dps import SamplerConfig, fit
from pyro_dps.cli import main
from pyro_dps.context import Problem
from pyro_dps.errors import ConfigError, DPSError
from pyro_dps.rundir import MANIFEST, read_manifest, run_lock
from pyro_dps.safefile import load_tree, save_tree


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["run", str(cfg), "--out", str(out), "--quiet", *extra])


@pytest.fixture
def tiny(tmp_path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    return cfg


def test_overwrite_replaces_only_what_pyro_dps_wrote(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny, out) == 0
    ours = read_manifest(out)
    assert {"metrics.json", "weights.csv", "draws.nc", "posterior.safetensors", "report.html",
            "report.selection.csv", "examples.npz"} <= set(ours)
    (out / "notes.txt").write_text("the user's")
    assert _run(tiny, out) == 2 and "--overwrite" in capsys.readouterr().err
    old = (out / "metrics.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert _run(tiny, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "the user's"  # kept
    assert (out / "metrics.json").stat().st_mtime_ns != old  # replaced
    assert "notes.txt" not in read_manifest(out)
    # a run file the user changed since is no longer pyro-dps's: even --overwrite keeps it
    (out / "weights.csv").write_text("edited by hand\n")
    assert _run(tiny, out, "--overwrite") == 2
    assert "weights.csv" in capsys.readouterr().err and (out / "weights.csv").read_text() == "edited by hand\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "out"]  # no lock, staging or side file


def test_an_empty_existing_directory_is_used(tiny, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _run(tiny, out) == 0 and (out / "metrics.json").is_file() and (out / MANIFEST).is_file()


def test_stale_staging_of_a_killed_run_is_removed_by_the_next_run(tiny, tmp_path):
    stale = tmp_path / ".out.staging-killed"
    stale.mkdir()
    (stale / ".pyro-dps-staging").touch()
    (stale / "metrics.json").write_text("half")
    lookalike = tmp_path / ".out.staging-mine"  # not marked as pyro-dps's: kept
    lookalike.mkdir()
    (lookalike / "data").write_text("x")
    assert _run(tiny, tmp_path / "out") == 0
    assert not stale.exists() and (lookalike / "data").read_text() == "x"


def test_the_lock_is_exclusive_across_processes_and_released(tiny, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(["python3", "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(tmp_path / '.out.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(ConfigError, match="another pyro-dps run"):
            with run_lock(out):
                pass
        assert time.perf_counter() - start < 1  # at once, no waiting
    finally:
        holder.kill()
        holder.wait()
    with run_lock(out) as path:
        assert path.read_text() == str(os.getpid())
    assert not path.exists()


def test_safe_file_round_trip_and_refusals(tmp_path):
    tree = {"t": torch.arange(3.0), "n": np.ones((2, 2)), "opt": {0: {"step": torch.tensor(3.0)}},
            "tup": (1, "a", None, True), "nan": float("nan"), "big": 2 ** 70, "empty": torch.zeros(0)}
    save_tree(tmp_path / "f", tree)
    back = load_tree(tmp_path / "f", "file", DPSError)
    assert torch.equal(back["t"], tree["t"]) and np.array_equal(back["n"], tree["n"])
    assert back["opt"][0]["step"].item() == 3.0 and back["tup"] == (1, "a", None, True)
    assert np.isnan(back["nan"]) and back["big"] == 2 ** 70 and back["empty"].numel() == 0
    marker = tmp_path / "MARKER"
    for zip_format in (False, True):
        evil_pickle(tmp_path / "evil", marker, zip_format)
        with pytest.raises(DPSError, match="is a pickle"):
            load_tree(tmp_path / "evil", "file", DPSError)
    assert not marker.exists()


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return Problem(nn.Linear(4, 2), x, y, x[:20], y[:20])


def _config(**kw):
    return SamplerConfig(**{"kernel": "psgld", "step_size": 1e-3, "local_step_size": 0.05, "chains": 2, "warmup": 30,
                            "samples": 5, "thin": 4, "batch_size": 16, "progress": False, "checkpoint_every": 10,
                            "check_every": 10, **kw})


def test_api_resume_is_bit_identical_and_checks_identity(tmp_path, monkeypatch):
    import pyro_dps.kernels.chain as chain_control

    full = fit(bads.model, _problem(), {"beta": 0.5}, _config()).dataset()
    ckpt = tmp_path / "c.safetensors"
    guard = chain_control.guard

    def stop(state, chain, t, *args):
        if chain == 1 and t == 20:
            raise KeyboardInterrupt
        return guard(state, chain, t, *args)

    monkeypatch.setattr(chain_control, "guard", stop)
    with pytest.raises(KeyboardInterrupt):
        fit(bads.model, _problem(), {"beta": 0.5}, _config(), checkpoint=ckpt)
    monkeypatch.setattr(chain_control, "guard", guard)
    for hyper, cfg, field in (({"beta": 0.3}, {}, "hyper.beta"), ({"beta": 0.5}, {"thin": 5}, "sampler.thin"),
                              ({"beta": 0.5}, {"seed": 1}, "sampler.seed")):
        with pytest.raises(ConfigError, match=field):
            fit(bads.model, _problem(), hyper, _config(**cfg), checkpoint=ckpt, resume=True)
    other = _problem()
    other.y_train[0] = 1 - other.y_train[0]
    with pytest.raises(ConfigError, match="tensors.train"):
        fit(bads.model, other, {"beta": 0.5}, _config(), checkpoint=ckpt, resume=True)
    resumed = fit(bads.model, _problem(), {"beta": 0.5}, _config(log_every=7), checkpoint=ckpt, resume=True).dataset()
    np.testing.assert_array_equal(full["weights"].values, resumed["weights"].values)
    np.testing.assert_array_equal(full["theta_norm"].values, resumed["theta_norm"].values)


def test_api_resume_refuses_a_pickle_without_running_it(tmp_path):
    marker = tmp_path / "MARKER"
    evil_pickle(tmp_path / "c.safetensors", marker, zip_format=True)
    with pytest.raises(ConfigError, match="pickle"):
        fit(bads.model, _problem(), {"beta": 0.5}, _config(), checkpoint=tmp_path / "c.safetensors", resume=True)
    assert not marker.exists()


@pytest.fixture(scope="module")
def user_model_run(tmp_path_factory):
    """A weight-network run whose model is a user's file."""
    root = tmp_path_factory.mktemp("user_model")
    (root / "wn.py").write_text("from pyro_dps.models import weight_net\n\n\ndef model(ctx, **hyper):\n"
                                "    weight_net.model(ctx, **hyper)\n")
    (root / "c.toml").write_text(TINY)
    assert main(["run", str(root / "c.toml"), "--out", str(root / "run"), "--quiet", "--model",
                 str(root / "wn.py")]) == 0
    np.savez(root / "x.npz", x=np.random.default_rng(0).random((4, 64)), y=np.arange(4))
    return root


def test_score_a_user_model_only_when_the_user_names_the_same_file(user_model_run, tmp_path, capsys):
    root = user_model_run
    args = ["score", str(root / "run"), str(root / "x.npz"), "--out"]
    assert main(args + [str(tmp_path / "a.csv")]) == 2 and "--model" in capsys.readouterr().err
    assert main(args + [str(tmp_path / "a.csv"), "--model", str(root / "wn.py")]) == 0
    changed = tmp_path / "wn.py"
    changed.write_text((root / "wn.py").read_text() + "# another file\n")
    assert main(args + [str(tmp_path / "b.csv"), "--model", str(changed)]) == 2
    assert "SHA-256 differs" in capsys.readouterr().err and not (tmp_path / "b.csv").exists()


def test_upgrade_converts_a_legit_old_posterior(user_model_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(user_model_run / "run", run)
    state = load_tree(run / "posterior.safetensors", "state", DPSError)
    old = {k: v for k, v in state.items() if k not in ("format", "model_identity")}
    torch.save(old, run / "posterior.pt")
    (run / "posterior.safetensors").unlink()
    x = str(user_model_run / "x.npz")
    model = ["--model", str(user_model_run / "wn.py")]
    assert main(["score", str(run), x, "--out", str(tmp_path / "s.csv"), *model]) == 2
    assert "pyro-dps upgrade" in capsys.readouterr().err
    assert main(["upgrade", str(run)]) == 0
    assert main(["score", str(run), x, "--out", str(tmp_path / "s.csv"), *model]) == 0
    assert main(["score", str(user_model_run / "run"), x, "--out", str(tmp_path / "t.csv"), *model]) == 0
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "t.csv").read_text()


def test_report_reads_nothing_outside_the_run_directory(tiny, tmp_path, monkeypatch):
    import pyro_dps.scenario as scenario

    copy = tmp_path / "run"
    assert _run(tiny, copy) == 0
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["config"]["data"] = {"source": "npz", "path": "/etc/shadow", "n_train": 10 ** 12}
    (copy / "metrics.json").write_text(json.dumps(metrics))

    def never(*a, **k):
        raise AssertionError("report rebuilt the data")

    monkeypatch.setattr(scenario, "build_data", never)
    assert main(["report", str(copy), "--out", str(tmp_path / "r.html")]) == 0
    # a crafted examples.npz (a pickle) is not loaded: the galleries fall back to ids
    evil_pickle(copy / "examples.npz", tmp_path / "MARKER")
    assert main(["report", str(copy), "--out", str(tmp_path / "r2.html")]) == 0
    assert "examples are shown by id only" in (tmp_path / "r2.html").read_text()
    assert not (tmp_path / "MARKER").exists()


def test_report_is_bounded_at_large_n(tmp_path, monkeypatch):
    """The page does not grow with N_t (galleries, tables and plots are bounded; the table is a CSV beside
    it); beyond MAX_DIAG_EXAMPLES the per-weight diagnostics are computed on a sample, and the page says so."""
    import sys

    import pyro_dps.report.convergence as convergence
    from pyro_dps.report.write import write_report

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from report_scale import synthetic_run

    monkeypatch.setattr(convergence, "MAX_DIAG_EXAMPLES", 200)
    sizes = {}
    for n in (2_000, 20_000):
        html = write_report(synthetic_run(tmp_path / str(n), n, chains=2, draws=10))
        sizes[n] = html.stat().st_size
        text = html.read_text()
        assert "fixed random sample of 200" in text and "text/csv" not in text
        csv = html.with_name("report.selection.csv").read_text().splitlines()
        assert len(csv) == n + 1
    assert sizes[20_000] < 1.2 * sizes[2_000] and sizes[20_000] < 2 ** 20


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("checkpoint_every", ["0", "10"])
def test_disk_full_is_a_clear_error_and_leaves_nothing(tiny, tmp_path, capsys, checkpoint_every):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "48k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        (disk / "keep.txt").write_text("the user's")
        assert _run(tiny, disk / "out", "--checkpoint-every", checkpoint_every) == 2
        err = capsys.readouterr().err
        assert err.startswith("pyro-dps: error:") and err.count("\n") == 1 and "No space left" in err, err
        left = sorted(p.name for p in disk.iterdir())
        assert left in (["keep.txt"], ["keep.txt", "out.checkpoint.safetensors"]), left  # a last good checkpoint
        assert (disk / "keep.txt").read_text() == "the user's"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_causal_lm_with_pickled_weights_is_refused(tmp_path):
    """A model directory whose weights are a pytorch_model.bin (a pickle) is not loaded: nothing runs."""
    pytest.importorskip("transformers")
    from test_causal_lm import _save_tiny_lm

    from pyro_dps.text.causal_lm import load_causal_lm

    model = tmp_path / "model"
    _save_tiny_lm(model)
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    evil_pickle(model / "pytorch_model.bin", tmp_path / "MARKER", zip_format=True)
    with pytest.raises(DPSError, match="cannot be loaded"):
        load_causal_lm(model)
    assert not (tmp_path / "MARKER").exists()


def test_a_run_killed_while_publishing_leaves_a_directory_the_next_run_reuses(tiny, tmp_path, monkeypatch):
    import pyro_dps.rundir as rundir

    out = tmp_path / "out"
    assert _run(tiny, out) == 0
    real, moves = os.replace, []

    def killed_after_two(src, dst):
        if Path(src).parent.name.startswith(".out.staging-") and len(moves) == 2:
            raise KeyboardInterrupt("SIGKILL stand-in")
        moves.append(dst)
        return real(src, dst)

    monkeypatch.setattr(rundir.os, "replace", killed_after_two)
    assert _run(tiny, out, "--overwrite") == 130  # two files new, the others old
    monkeypatch.setattr(rundir.os, "replace", real)
    assert len(moves) == 2
    assert _run(tiny, out, "--overwrite") == 0
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_results_are_kept_when_out_changes_during_the_run(tiny, tmp_path, capsys, monkeypatch):
    import pyro_dps.scenario as scenario

    out = tmp_path / "out"

    def user_writes_into_out(*args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "meanwhile.txt").write_text("the user's")

    monkeypatch.setattr(scenario, "write_run_report", user_writes_into_out)  # the report is written last
    assert _run(tiny, out) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "files are kept in" in err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".out.staging-")]
    assert len(kept) == 1 and (kept[0] / "metrics.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["meanwhile.txt"]
    assert _run(tiny, tmp_path / "other") == 0 and kept[0].exists()  # not mistaken for a leftover


def test_settings_that_would_allocate_terabytes_are_refused_before_any_work():
    x = torch.zeros(30_000, 1)
    y = torch.zeros(30_000, dtype=torch.long)
    y[1] = 1
    problem = Problem(nn.Linear(1, 2), x, y, x[:4], y[:4])
    with pytest.raises(ConfigError, match=r"weight draws need \d+ GiB"):
        SamplerConfig(chains=1000, samples=10_000).validate(problem)
    big = Problem(nn.Linear(1000, 10_000), torch.zeros(8, 1000), torch.arange(8), torch.zeros(4, 1000),
                  torch.arange(4))
    with pytest.raises(ConfigError, match="keep fewer snapshots"):
        SamplerConfig(chains=1, samples=10_000, snapshots=10_000, batch_size=8).validate(big)
    SamplerConfig(chains=1, samples=10_000, snapshots=10, batch_size=8).validate(big)  # a sane run passes
