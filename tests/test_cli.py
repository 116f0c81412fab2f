"""The CLI: `run CONFIG.toml`, and bad input answered on one line with exit code 2 and no output left."""
import csv
import json
import shutil
from pathlib import Path

import pytest

from pyro_dps.cli import main

SMALL = """
name = "tiny-digits"
[data]
source = "digits"
noise_rate = 0.3
[network]
kind = "mlp"
hidden = [32]
[sampler]
kernel = "sgld"
step_size = 1e-4
local_step_size = 0.05
temperature = 0.01
chains = 2
warmup = 100
samples = 10
thin = 5
snapshots = 2
"""


def test_run_config(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["scenario"] == "tiny-digits"
    assert doc["config"]["sampler"]["kernel"] == "sgld" and doc["config"]["sampler"]["chains"] == 2
    # per-label mean weights, consistent with weights.csv
    rows = list(csv.DictReader((out / "weights.csv").open()))
    by_label = doc["mean_weight_by_group"]["label"]
    assert sorted(by_label, key=int) == [str(k) for k in range(10)]
    for label, value in by_label.items():
        means = [float(r["mean"]) for r in rows if r["label"] == label]
        assert abs(value - sum(means) / len(means)) < 1e-5


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile (inductor) needs a C++ compiler on CPU")
def test_run_with_compile_flag_matches_the_eager_run(tmp_path):
    """`--compile` sets [sampler] compile = true; the compiled chains give the eager run's weights (measured
    max difference of the posterior means 1e-6, the CSV's rounding; allowed 1e-4). Six steps per chain: with
    exact weight draws the chains agree to rounding only for a few steps (test_compiled_step.py says why)."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(SMALL.replace("warmup = 100", "warmup = 1").replace("samples = 10", "samples = 5")
                   .replace("thin = 5", "thin = 1"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "eager"), "--quiet"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "compiled"), "--quiet", "--compile"]) == 0
    doc = json.loads((tmp_path / "compiled" / "metrics.json").read_text())
    assert doc["config"]["sampler"]["compile"] is True
    eager, compiled = ([float(r["mean"]) for r in csv.DictReader((tmp_path / d / "weights.csv").open())]
                       for d in ("eager", "compiled"))
    assert len(eager) == len(compiled) and max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4


@pytest.mark.parametrize("text, needle", [
    (SMALL + "\nbogus = 1\n", "bogus"),
    (SMALL.replace('kernel = "sgld"', 'kernel = "nuts"'), "kernel"),
    (SMALL.replace("chains = 2", "chains = 0"), "chains"),
    (SMALL.replace("temperature = 0.01", "temperature = -1.0"), "temperature"),
    (SMALL.replace("hidden = [32]", "hidden = [32]\nwidht = 3"), "widht"),
    (SMALL + "\n[model]\nhyper = {beta = 1.5}\n", "beta"),
    (SMALL + "\n[model]\nhyper = {sigma = 0.0}\n", "sigma"),
    (SMALL + "\n[model]\nfile = \"/nonexistent/model.py\"\n", "nonexistent"),
    (SMALL.replace("noise_rate = 0.3", "noise_rate = 1.3"), "noise_rate"),
    (SMALL.replace("noise_rate = 0.3", 'noise_rate = "high"'), "noise_rate"),
    ("this is [not toml", "TOML"),
    (SMALL.replace("noise_rate = 0.3", "noise_rate = 0.3\nn_train = 100"), "data.n_train is not used by data.source = 'digits'"),
    (SMALL.replace("[sampler]", "[sampler]\nshards = 3"),
     "multiple of shards"),
    (SMALL.replace("[sampler]", '[sampler]\ncompile = "yes"'), "compile must be true or false"),
    (SMALL.replace("[sampler]", "[sampler]\ncompile = true") + '\n[model]\nfile = "latent_beta"\n',
     "compile = true needs the fused potential"),
])
def test_bad_config_exits_2_and_leaves_nothing(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-dps: error:") and needle in err and "\n" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_unreadable_config_and_unwritable_output(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    cfg = tmp_path / "s.toml"
    cfg.write_text(SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", str(cfg), "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_user_model_file_by_path(tmp_path):
    model_file = tmp_path / "my_prior.py"
    model_file.write_text(
        "from pyro_dps.models import bads\n"
        "def strict(ctx, **hyper):\n"
        "    hyper.setdefault('beta', 0.7)\n"
        "    bads.model(ctx, **hyper)\n")
    cfg = tmp_path / "s.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--model", f"{model_file}:strict", "--quiet"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--model", f"{model_file}:nothere", "--quiet"]) == 2


# ------------------------------------------------------------------ issue 17: --version, --set, validate, quiet runs
from tiny_configs import TINY  # noqa: E402


def test_version(capsys):
    from pyro_dps import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"pyro-dps {__version__}\n"


def test_set_overrides_reach_the_run_and_baselines_use_the_sampler_batch(tmp_path, capsys, monkeypatch):
    """--set values are merged before validation and run as if the file said them; a baseline without a
    batch size of its own trains on the sampler's (as benchmarks/quality.py runs it); the progress bars say
    warm-up, then sampling."""
    import pyro_dps.scenario as scenario

    seen = {}
    mixing = scenario.BASELINES["mixing"]

    def recording(net, data, **kwargs):
        seen.update(kwargs)
        return mixing(net, data, **kwargs)

    monkeypatch.setitem(scenario.BASELINES, "mixing", recording)
    import pyro_dps.driver.chain_runner as driver

    labels = []

    class Bar(driver.tqdm):  # records every label a chain's bar shows
        def __init__(self, *args, **kwargs):
            labels.append(kwargs.get("desc"))
            super().__init__(*args, **kwargs)

        def set_description(self, desc=None, refresh=True):
            labels.append(desc)
            super().set_description(desc, refresh)

    monkeypatch.setattr(driver, "tqdm", Bar)
    cfg = tmp_path / "s.toml"
    cfg.write_text(TINY.replace("[baselines]", '[baselines.mixing]\nlr = 1e-3\noptimizer = "adam"\nsteps = 5'))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--set", "sampler.chains=2", "--set", "data.noise_rate=0.2",
                 "--set", "model.hyper.beta=0.4", "--set", "sampler.batch_size=16", "--set", "name=renamed"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["scenario"] == "renamed"
    assert doc["config"]["sampler"]["chains"] == 2 and doc["config"]["sampler"]["batch_size"] == 16
    assert doc["config"]["data"]["noise_rate"] == 0.2 and doc["hyper"]["beta"] == 0.4
    assert seen["batch_size"] == 16 and seen["steps"] == 5
    assert labels == ["chain 1/2 warm-up", "chain 1/2 sampling", "chain 2/2 warm-up", "chain 2/2 sampling"]


def test_baseline_settings_agree_with_the_quality_benchmark():
    """`pyro-dps run` and benchmarks/quality.py give a baseline the same batch sizes."""
    from pyro_dps.scenario import baseline_settings

    assert baseline_settings("mixing", {"lr": 1e-3}, 64)["batch_size"] == 64
    assert baseline_settings("mixing", {"batch_size": 8}, 64)["batch_size"] == 8  # its own wins
    assert "meta_batch_size" not in baseline_settings("mixing", {}, 64)
    assert baseline_settings("blo", {}, 64)["meta_batch_size"] == 64
    assert baseline_settings("mwn", {}, 64, 10)["meta_batch_size"] == 10
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parents[1] / "benchmarks/quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    config = {"baselines": {"blo": {"lr": 1e-3}}, "sampler": {"batch_size": 32, "meta_batch_size": 16}}
    settings = quality.method_settings(config, "blo", 100, {}, 0.5)
    assert (settings["batch_size"], settings["meta_batch_size"]) == (32, 16)


def test_validate_prints_the_resolved_configuration_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SMALL)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["validate", "s.toml", "--set", "sampler.chains=3", "--set", 'sampler.step_size="auto"',
                 "--set", "sampler.kernel=psgld"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["name"] == "tiny-digits"
    assert resolved["sampler"]["chains"] == 3 and resolved["sampler"]["step_size"] == "auto"
    assert resolved["sampler"]["kernel"] == "psgld"
    assert resolved["sampler"]["batch_size"] == 128 and resolved["sampler"]["potential"] == "auto"  # defaults
    assert resolved["data"]["meta_per_class"] == 10 and resolved["model"]["file"] == "bads"  # the demo's defaults
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("argv, needle", [
    (["validate", "s.toml", "--set", "sampler.chainz=2"], "sampler.chainz"),
    (["validate", "s.toml", "--set", "sampler.chains=0"], "sampler.chains"),
    (["validate", "s.toml", "--set", "data.noise_rate=1.5"], "data.noise_rate"),
    (["validate", "s.toml", "--set", "data.noise_rate=high"], "data.noise_rate"),
    (["validate", "s.toml", "--set", "model.hyper.beta=2"], "model.hyper.beta"),
    (["validate", "s.toml", "--set", "bogus.key=1"], "bogus"),
    (["validate", "s.toml", "--set", "sampler.chains"], "SECTION.KEY=VALUE"),
    (["validate", "s.toml", "--set", "chains=2"], "SECTION.KEY=VALUE"),
    (["validate", "s.toml", "--set", "data.noise_rate.x=1"], "data.noise_rate is not a table"),
    (["validate", "empty.toml"], "[data]"),
    (["run", "empty.toml", "--out", "out", "--quiet"], "[data]"),
    (["run", "nodata.toml", "--out", "out", "--quiet"], "no [data] table"),
    (["demo", "--out", "out", "--quiet", "--set", "sampler.kernel=nuts"], "kernel"),
])
def test_bad_settings_exit_2_on_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SMALL)
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "nodata.toml").write_text(SMALL.split("[data]")[0] + "[sampler]\nchains = 1\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("pyro-dps: error:") and needle in err and "\n" not in err, err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("extra, needle", [
    (["--set", "model.hyper.bogus=1"], "bogus"),
    (["--model", "m.py"], "oops"),
])
def test_model_errors_come_before_the_run_header(tmp_path, capsys, monkeypatch, extra, needle):
    """Nothing is printed before everything that can be checked without sampling has passed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY)
    (tmp_path / "m.py").write_text("def model(ctx, **hyper):\n    raise ValueError('oops')\n")
    assert main(["run", "s.toml", "--out", "out", "--quiet", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and needle in captured.err
    assert not (tmp_path / "out").exists()


def test_a_quiet_run_prints_no_third_party_warning(tmp_path):
    """A one-chain run with a fresh ArviZ cache (its once-a-day refactor notice due) writes nothing to stderr:
    neither ArviZ's import-time FutureWarning nor its shape warning for one chain."""
    import os
    import subprocess
    import sys

    (tmp_path / "s.toml").write_text(TINY)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "pyro_dps", "run", "s.toml", "--out", "out", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_the_sampler_seed_and_progress_of_the_configuration_are_honoured(capsys):
    """`[sampler] seed` (or --set sampler.seed=...) seeds the chains when --seed is not given, and
    `[sampler] progress = false` silences the bars without --quiet (both were overridden by the CLI's defaults)."""
    import tomllib

    from pyro_dps.config import validate_config
    from pyro_dps.scenario import run_scenario

    def weights(extra: str) -> dict:
        config = validate_config(tomllib.loads(TINY.replace("[sampler]", "[sampler]\n" + extra)))
        return run_scenario(config, None, echo=lambda *a: None)["weights"]

    default = weights("")
    assert "warm-up" in capsys.readouterr().err  # progress bars by default
    explicit, other = weights("seed = 0"), weights("seed = 5")
    assert default == explicit  # the data's seed (0) seeds the chains by default: same numbers
    assert other != default
    capsys.readouterr()
    weights("progress = false")
    assert "warm-up" not in capsys.readouterr().err
