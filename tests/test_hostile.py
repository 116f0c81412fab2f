"""The bad-input suite: hostile input through the CLI (`run`, `demo`, `report`, `score`, `upgrade`), the TOML
parser, data files, model files, checkpoints and run directories.

Every case runs in a folder of its own (the current directory during the call) and must give exit code 2,
one line on stderr naming the problem (`pyro-dps: error: ...`, no traceback), and leave every file there
exactly as it was: nothing of the user's changed, nothing half-written, no staging folder, lock or
temporary file left, and no marker file from a crafted pickle (nothing executed).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_configs import TINY

from pyro_dps.cli import main
from pyro_dps.rundir import run_lock
from pyro_dps.safefile import load_tree, save_tree

NPZ = TINY.replace('source = "digits"', 'source = "npz"\npath = "data.npz"').replace("test_per_class = 5\n", "")
MODEL = "from pyro_dps.models import bads\n\n\ndef model(ctx, **hyper):\n    bads.model(ctx, **hyper)\n"
CUDA = torch.cuda.is_available()


class Evil:
    """Unpickling this runs `touch MARKER`: the test that a file is never unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(path: Path, marker: Path, zip_format: bool = False) -> None:
    if zip_format:  # what torch.save writes (a zip archive holding the pickle)
        torch.save({"x": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"x": Evil(marker)}, protocol=4))


def write_npz(path: Path, n_per_class: int = 30, seed: int = 0, **override) -> None:
    """A small MNIST-format file (8x8 uint8 images of 10 classes)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    x = (rng.random((len(y), 8, 8)) * 255).astype(np.uint8)
    x[np.arange(len(y)), y % 8, :] = 255  # a class-dependent stripe
    arrays = {"x_train": x, "y_train": y, "x_test": x[::3], "y_test": y[::3], **override}
    np.savez(path, **arrays)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root (hidden ones too) with a hash of its content."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def fast_report():
    """The runs here are about refusals, not diagnostics: R-hat/ESS of 100 weights keep each run short."""
    import pyro_dps.report.convergence as convergence

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(convergence, "MAX_DIAG_EXAMPLES", 100)
        yield


@pytest.fixture(scope="module")
def npz_base(tmp_path_factory):
    """data.npz, model.py, c.toml (relative paths) and out.checkpoint.safetensors of an interrupted run."""
    import pyro_dps.kernels.chain as chain_control

    base = tmp_path_factory.mktemp("npz_base")
    write_npz(base / "data.npz")
    (base / "model.py").write_text(MODEL)
    (base / "c.toml").write_text(NPZ.replace("warmup = 20", "warmup = 40") + '[model]\nfile = "model.py"\n')
    guard = chain_control.guard

    def stop_at_40(state, chain, t, *args):
        if t == 40:
            raise KeyboardInterrupt("SIGINT")
        return guard(state, chain, t, *args)

    cwd = os.getcwd()
    os.chdir(base)
    try:
        chain_control.guard = stop_at_40
        assert main(["run", "c.toml", "--out", "out", "--quiet", "--checkpoint-every", "10"]) == 130
    finally:
        chain_control.guard = guard
        os.chdir(cwd)
    assert (base / "out.checkpoint.safetensors").is_file() and not (base / "out").exists()
    return base


@pytest.fixture(scope="module")
def wnet_run(tmp_path_factory):
    """A finished weight-network run (scorable) and a table-weights run, both tiny."""
    root = tmp_path_factory.mktemp("runs")
    (root / "c.toml").write_text(TINY)
    for name, model in (("wnet", "weight_net"), ("table", "bads")):
        assert main(["run", str(root / "c.toml"), "--out", str(root / name), "--quiet", "--model", model]) == 0
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.savez(root / "unseen.npz", x=x, y=np.arange(5))
    return root


def _cfg(d: Path, text: str, *extra: str) -> list[str]:
    (d / "c.toml").write_text(text)
    return ["run", "c.toml", "--out", "out", "--quiet", *extra]


def _sampler(line: str, text: str = TINY) -> str:
    """TINY with one [sampler] line replaced (or added)."""
    key = line.split("=")[0].strip()
    lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
    at = lines.index("[sampler]") + 1
    return "\n".join(lines[:at] + [line] + lines[at:]) + "\n"


def _table(section: str, body: str, text: str = TINY) -> str:
    return text.replace(f"[{section}]\n", f"[{section}]\n{body}\n")


def _npz_case(**override):
    def case(d):
        write_npz(d / "data.npz", **override)
        return _cfg(d, NPZ), None
    return case


def _copy_base(d: Path, base: Path) -> None:
    for item in base.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, d / item.name)


def _edit_checkpoint(d: Path, edit) -> None:
    path = d / "out.checkpoint.safetensors"
    tree = load_tree(path, "checkpoint", ValueError)
    edit(tree)
    save_tree(path, tree)


# ------------------------------------------------------------------------------------------- the cases
def _toml_cases():
    s = _sampler
    return {
        # the TOML file itself
        "toml: not UTF-8": (lambda d: ((d / "c.toml").write_bytes(TINY.encode() + b"# \xff\xfe latin\n"),
                                       ["run", "c.toml", "--out", "out"])[1], "not UTF-8"),
        "toml: syntax": (lambda d: _cfg(d, "this is [not toml"), "not valid TOML"),
        "toml: a directory": (lambda d: ((d / "c.toml").mkdir(), ["run", "c.toml", "--out", "out"])[1],
                              "cannot be read"),
        "toml: missing file": (lambda d: ["run", "nope.toml", "--out", "out"], "nope.toml"),
        "toml: over 1 MB": (lambda d: _cfg(d, TINY + "#" * (1 << 20) + "\n"), "larger than"),
        "toml: unknown section": (lambda d: _cfg(d, TINY + "[extra]\na = 1\n"), "extra"),
        "toml: unknown sampler key": (lambda d: _cfg(d, s("chainz = 2")), "chainz"),
        "toml: empty file": (lambda d: _cfg(d, ""), "[data]"),
        "toml: no [data] table": (lambda d: _cfg(d, TINY.split("[data]")[0] + TINY.split("test_per_class = 5\n")[1]),
                                  "no [data] table"),
        # sampler settings
        "sampler: chains = true": (lambda d: _cfg(d, s("chains = true")), "sampler.chains"),
        "sampler: chains = 0": (lambda d: _cfg(d, s("chains = 0")), "sampler.chains"),
        "sampler: chains = 10^6": (lambda d: _cfg(d, s("chains = 1000000")), "sampler.chains"),
        "sampler: log_every = 0": (lambda d: _cfg(d, s("log_every = 0")), "sampler.log_every"),
        "sampler: check_every = 0": (lambda d: _cfg(d, s("check_every = 0")), "sampler.check_every"),
        "sampler: thin = 0": (lambda d: _cfg(d, s("thin = 0")), "sampler.thin"),
        "sampler: samples = -1": (lambda d: _cfg(d, s("samples = -1")), "sampler.samples"),
        "sampler: warmup = 10^12": (lambda d: _cfg(d, s("warmup = 1000000000000")), "sampler.warmup"),
        "sampler: seed beyond 64 bits": (lambda d: _cfg(d, s("seed = 99999999999999999999999")), "sampler.seed"),
        "sampler: step_size = 1e6": (lambda d: _cfg(d, s("step_size = 1e6")), "sampler.step_size"),
        "sampler: step_size = inf": (lambda d: _cfg(d, s("step_size = inf")), "sampler.step_size"),
        "sampler: step_size = 0": (lambda d: _cfg(d, s("step_size = 0.0")), "sampler.step_size"),
        "sampler: schedule 0^-gamma": (lambda d: _cfg(d, s('step_size = {kind = "polynomial", a = 1.0, b = 0.0}')),
                                       "sampler.step_size"),
        "sampler: schedule unknown kind": (lambda d: _cfg(d, s('step_size = {kind = "wavy"}')), "wavy"),
        "sampler: local_step_size = 1e9": (lambda d: _cfg(d, s("local_step_size = 1e9")),
                                           "sampler.local_step_size"),
        "sampler: temperature = 1e30": (lambda d: _cfg(d, s("temperature = 1e30")), "sampler.temperature"),
        "sampler: temperature = nan": (lambda d: _cfg(d, s("temperature = nan")), "sampler.temperature"),
        "sampler: memory_budget_mb = 0": (lambda d: _cfg(d, s("memory_budget_mb = 0")), "memory_budget_mb"),
        "sampler: kernel_kwargs not a table": (lambda d: _cfg(d, s("kernel_kwargs = 3")), "kernel_kwargs"),
        "sampler: kernel_kwargs unknown": (lambda d: _cfg(d, s("kernel_kwargs = {bogus = 1}")), "kernel_kwargs.bogus"),
        "sampler: paper optimizer kwarg": (lambda d: _cfg(d, s('kernel = "paper"') + "[sampler.kernel_kwargs]\n"
                                                          "optimizer = \"adam\"\nmomentum = 0.9\n"),
                                           "kernel_kwargs.momentum"),
        "sampler: potential unknown": (lambda d: _cfg(d, s('potential = "magic"')), "sampler.potential"),
        "sampler: batch_size > N_t": (lambda d: _cfg(d, s("batch_size = 100000")), "batch_size"),
        "sampler: 10^7 x 1024 draws": (lambda d: _cfg(d, s("samples = 10000000", s("chains = 1024"))),
                                       "chains * samples"),
        "sampler: device = cuda": (lambda d: _cfg(d, s('device = "cuda"')), "CUDA is not available"),
        "sampler: device = tpu": (lambda d: _cfg(d, s('device = "tpu"')), "sampler.device"),
        # network
        "network: hidden = [0]": (lambda d: _cfg(d, TINY.replace("hidden = [8]", "hidden = [0]")),
                                  "network.hidden[0]"),
        "network: hidden = [-4]": (lambda d: _cfg(d, TINY.replace("hidden = [8]", "hidden = [-4]")),
                                   "network.hidden[0]"),
        "network: hidden = ['a']": (lambda d: _cfg(d, TINY.replace("hidden = [8]", 'hidden = ["a"]')),
                                    "network.hidden[0]"),
        "network: 10^10 parameters": (lambda d: _cfg(d, TINY.replace("hidden = [8]", "hidden = [100000, 100000]")),
                                      "parameters"),
        "network: unknown kind": (lambda d: _cfg(d, TINY.replace("hidden = [8]", 'kind = "transformer"')),
                                  "network.kind"),
        "network: resnet depth 9": (lambda d: _cfg(d, TINY.replace("hidden = [8]", 'kind = "resnet"\ndepth = 9')),
                                    "network.depth"),
        "network: lenet5 on 8x8 rows": (lambda d: _cfg(d, TINY.replace("hidden = [8]", 'kind = "lenet5"')),
                                        "does not take rows"),
        "network: hidden with lenet5": (
            lambda d: _cfg(d, TINY.replace("hidden = [8]", 'kind = "lenet5"\nhidden = [8]')),
            "network.hidden is not used"),
        # model hyper-parameters
        "model: beta = 1.5": (lambda d: _cfg(d, TINY + "[model]\nhyper = {beta = 1.5}\n"), "beta"),
        "model: rho_t = nan": (lambda d: _cfg(d, TINY + "[model]\nhyper = {rho_t = nan}\n"), "rho_t"),
        "model: beta = true": (lambda d: _cfg(d, TINY + "[model]\nhyper = {beta = true}\n"), "model.hyper.beta"),
        # data settings
        "data: meta_per_class = 0": (lambda d: _cfg(d, TINY.replace("meta_per_class = 5", "meta_per_class = 0")),
                                     "meta_per_class"),
        "data: probes_per_class = 5 of 5 meta": (
            lambda d: _cfg(d, TINY.replace("meta_per_class = 5", "meta_per_class = 5\nprobes_per_class = 5")),
            "data.probes_per_class"),
        "data: noise_rate = 1.5": (lambda d: _cfg(d, TINY.replace("noise_rate = 0.3", "noise_rate = 1.5")),
                                   "noise_rate"),
        "data: seed = -1": (lambda d: _cfg(d, TINY.replace("noise_rate = 0.3", "noise_rate = 0.3\nseed = -1")),
                            "data.seed"),
        "data: unknown source": (
            lambda d: _cfg(d, TINY.replace('source = "digits"', 'source = "imagenet"\npath = "x"')), "data.source"),
        "data: path missing": (lambda d: _cfg(d, NPZ.replace('path = "data.npz"', 'path = "missing.npz"')),
                               "missing.npz"),
        # baselines: checked before the BADS run, not after it
        "baselines: lr = -1": (lambda d: _cfg(d, TINY + "[baselines.mixing]\nlr = -1.0\n"), "baselines.mixing.lr"),
        "baselines: optimizer": (lambda d: _cfg(d, TINY + '[baselines.mixing]\noptimizer = "adagrad"\n'),
                                 "baselines.mixing.optimizer"),
        "baselines: unknown": (lambda d: _cfg(d, TINY + "[baselines.magic]\n"), "baselines.magic"),
        "baselines: blo meta_batch_size = 0": (lambda d: _cfg(d, TINY + "[baselines.blo]\nmeta_batch_size = 0\n"),
                                               "baselines.blo.meta_batch_size"),
        "baselines: cds beta = 2": (lambda d: _cfg(d, TINY + "[baselines.cds]\nbeta = 2.0\n"), "baselines.cds.beta"),
        "baselines: steps = 10^12": (lambda d: _cfg(d, TINY + "[baselines.mixing]\nsteps = 1000000000000\n"),
                                     "baselines.mixing.steps"),
    }


def _cli_cases():
    run = ["--quiet"]

    def holding_lock(d):  # another run holds OUT's lock while this one starts
        (d / "c.toml").write_text(TINY)
        return ["run", "c.toml", "--out", "out", *run], None

    def nested(d, out):
        (d / "a" / "b").mkdir(parents=True)
        (d / "c.toml").write_text(TINY)
        (d / "a" / "keep.txt").write_text("mine")
        os.chdir(d / "a" / "b")
        return ["run", str(d / "c.toml"), "--out", out, *run]

    return {
        "cli: --device cuda without CUDA": (lambda d: _cfg(d, TINY, "--device", "cuda"), "CUDA is not available"),
        "cli: --device nonsense": (lambda d: _cfg(d, TINY, "--device", "gpu0"), "--device"),
        "cli: --chains 0": (lambda d: _cfg(d, TINY, "--chains", "0"), "chains"),
        "cli: --chains abc": (lambda d: _cfg(d, TINY, "--chains", "abc"), "--chains"),
        "cli: --seed -1": (lambda d: _cfg(d, TINY, "--seed", "-1"), "seed"),
        "cli: --seed 2^70": (lambda d: _cfg(d, TINY, "--seed", str(2 ** 70)), "seed"),
        "cli: --checkpoint-every -5": (lambda d: _cfg(d, TINY, "--checkpoint-every", "-5"), "checkpoint_every"),
        "cli: unknown command": (lambda d: ["explode"], "invalid choice"),
        # --set SECTION.KEY=VALUE: validated exactly as the same setting in the file
        "cli: --set unknown key": (lambda d: _cfg(d, TINY, "--set", "sampler.chainz=2"), "sampler.chainz"),
        "cli: --set unknown section": (lambda d: _cfg(d, TINY, "--set", "extra.a=1"), "extra"),
        "cli: --set wrong type": (lambda d: _cfg(d, TINY, "--set", "data.noise_rate=high"), "data.noise_rate"),
        "cli: --set out of range": (lambda d: _cfg(d, TINY, "--set", "sampler.temperature=-1"),
                                    "sampler.temperature"),
        "cli: --set without =": (lambda d: _cfg(d, TINY, "--set", "sampler.chains"), "SECTION.KEY=VALUE"),
        "cli: --set into a number": (lambda d: _cfg(d, TINY, "--set", "data.noise_rate.x=1"),
                                     "data.noise_rate is not a table"),
        "cli: --set unknown hyper-parameter": (lambda d: _cfg(d, TINY, "--set", "model.hyper.bogus=1"), "bogus"),
        "demo: --set beta = 1.5": (lambda d: ["demo", "--out", "out", *run, "--set", "model.hyper.beta=1.5"],
                                   "model.hyper.beta"),
        "validate: --set chains = 0": (lambda d: ["validate", _cfg(d, TINY)[1], "--set", "sampler.chains=0"],
                                       "sampler.chains"),
        "validate: empty file": (lambda d: ["validate", _cfg(d, "")[1]], "[data]"),
        "cli: run without --out": (lambda d: ["run", "c.toml"], "--out"),
        "cli: --model missing file": (lambda d: _cfg(d, TINY, "--model", "nothere.py"), "nothere.py"),
        # output directories that a run must not damage
        "out: . (the cwd)": (lambda d: ((d / "c.toml").write_text(TINY), ["demo", "--out", ".", *run])[1],
                             "the current directory"),
        "out: .. (a parent)": (lambda d: nested(d, ".."), "parent of the current directory"),
        "out: an absolute parent": (lambda d: nested(d, str(d / "a")), "parent of the current directory"),
        "out: /": (lambda d: _cfg(d, TINY)[:3] + ["/", *run], "root directory"),
        "out: home": (lambda d: (os.environ.__setitem__("HOME", str(d / "home")), (d / "home").mkdir(),
                                 _cfg(d, TINY)[:3] + [str(d / "home")])[2], "home directory"),
        "out: non-empty without --overwrite": (
            lambda d: ((d / "out").mkdir(), (d / "out" / "thesis.tex").write_text("years of work"), _cfg(d, TINY))[2],
            "not empty"),
        "out: user's metrics.json with --overwrite": (
            lambda d: ((d / "out").mkdir(), (d / "out" / "metrics.json").write_text("{}"),
                       _cfg(d, TINY, "--overwrite"))[2], "not written by pyro-dps"),
        "out: an existing file": (lambda d: ((d / "out").write_text("x"), _cfg(d, TINY))[1], "not a directory"),
        "out: locked by another run": (holding_lock, "another pyro-dps run"),
        "demo: --out . --overwrite": (lambda d: ["demo", "--out", ".", "--overwrite", *run], "current directory"),
        "demo: --chains 0": (lambda d: ["demo", "--out", "out", "--chains", "0", *run], "chains"),
    }


def _data_cases():
    return {
        "npz: negative labels": (_npz_case(y_train=np.repeat(np.arange(10), 30) - 3), "labels"),
        "npz: labels of 10^9": (_npz_case(y_train=np.repeat(np.arange(10), 30) * 10 ** 8), "labels"),
        "npz: empty x_train": (_npz_case(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.int64)),
                               "y_train"),
        "npz: float labels": (_npz_case(y_train=np.repeat(np.arange(10.0), 30)), "y_train"),
        "npz: x_train 2-D": (_npz_case(x_train=np.zeros((300, 64), np.uint8)), "x_train"),
        "npz: rows mismatch": (_npz_case(y_train=np.arange(10)), "x_train"),
        "npz: object array (pickle inside)": (_npz_case(x_test=np.array([{"a": 1}] * 100, dtype=object)),
                                              "data.npz"),
        "npz: missing keys": (lambda d: (np.savez(d / "data.npz", x_train=np.zeros((3, 8, 8))), _cfg(d, NPZ))[1],
                              "missing keys"),
        "npz: corrupt bytes": (lambda d: ((d / "data.npz").write_bytes(b"PK\x03\x04 broken"), _cfg(d, NPZ))[1],
                               "data.npz"),
        "npz: a pickle renamed": (lambda d: (evil_pickle(d / "data.npz", d / "MARKER"), _cfg(d, NPZ))[1],
                                  "data.npz"),
    }


def _model_cases():
    def model_file(text, spec="m.py"):
        def case(d):
            (d / "m.py").write_text(text)
            return _cfg(d, TINY, "--model", spec)
        return case

    return {
        "model: no sample site": (model_file("def model(ctx, **hyper):\n    return None\n"), "sample"),
        "model: import fails": (model_file("raise RuntimeError('broken on import')\n"), "failed to import"),
        "model: syntax error": (model_file("def model(:\n"), "failed to import"),
        "model: no such function": (model_file(MODEL, "m.py:nothing"), "nothing"),
        "model: unknown built-in": (lambda d: _cfg(d, TINY, "--model", "os"), "no built-in model"),
        "model: raises inside": (model_file("def model(ctx, **hyper):\n    raise ValueError('oops')\n"), "oops"),
    }


def _resume_cases(base_fixture):
    def resumed(edit):
        def case(d):
            _copy_base(d, base_fixture())
            edit(d)
            return ["run", "c.toml", "--out", "out", "--quiet", "--resume", "--checkpoint-every", "10"]
        return case

    def toml(old, new):
        return lambda d: (d / "c.toml").write_text((d / "c.toml").read_text().replace(old, new))

    def ckpt(mutate):
        return lambda d: _edit_checkpoint(d, mutate)

    def evil(name, zip_format=False):
        return lambda d: evil_pickle(d / name, d / "MARKER", zip_format)

    def no_new(d):
        (d / "out.checkpoint.safetensors").unlink()

    return {
        "resume: pickle checkpoint (code execution)": (resumed(evil("out.checkpoint.safetensors")), "pickle"),
        "resume: torch.save checkpoint (code execution)": (resumed(evil("out.checkpoint.safetensors", True)),
                                                           "pickle"),
        "resume: old checkpoint.pt (code execution)": (
            resumed(lambda d: (no_new(d), evil_pickle(d / "out.checkpoint.pt", d / "MARKER"))), "never loaded"),
        "resume: corrupt checkpoint": (resumed(lambda d: (d / "out.checkpoint.safetensors").write_bytes(b"\0" * 64)),
                                       "not a readable pyro-dps file"),
        "resume: truncated checkpoint": (resumed(lambda d: (d / "out.checkpoint.safetensors").write_bytes(
            (d / "out.checkpoint.safetensors").read_bytes()[:5000])), "checkpoint"),
        "resume: another beta": (resumed(toml("[baselines]", "[baselines]\n[model.hyper]\nbeta = 0.3")),
                                 "config.model.hyper.beta"),
        "resume: another noise rate": (resumed(toml("noise_rate = 0.3", "noise_rate = 0.4")),
                                       "config.data.noise_rate"),
        "resume: another model file": (resumed(lambda d: (d / "model.py").write_text(MODEL + "# edited\n")),
                                       "model.source_sha256"),
        "resume: another data file": (resumed(lambda d: write_npz(d / "data.npz", seed=1)), "files.data.path"),
        "resume: another step size": (resumed(toml("step_size = 1e-4", "step_size = 2e-4")), "step_size"),
        "resume: step beyond the run": (resumed(ckpt(lambda t: t.update(t=10 ** 6))), "outside"),
        "resume: chain beyond the run": (resumed(ckpt(lambda t: t.update(chain=7))), "chain 7"),
        "resume: draw count edited": (resumed(ckpt(lambda t: t.update(draw=3))), "draw 3"),
        "resume: theta of another shape": (resumed(ckpt(lambda t: t["state"].update(theta=torch.zeros(5)))),
                                           "theta"),
        "resume: batch order out of range": (resumed(ckpt(lambda t: t["train_batches"].update(
            perm=torch.full((10,), 10 ** 6)))), "train_batches"),
        "resume: no fingerprint (old)": (resumed(ckpt(lambda t: t.pop("fingerprint"))), "fingerprint"),
    }


def _score_cases(runs_fixture):
    def scoring(prepare, *extra):
        def case(d):
            shutil.copytree(runs_fixture() / "wnet", d / "run")
            shutil.copy2(runs_fixture() / "unseen.npz", d / "unseen.npz")
            prepare(d)
            return ["score", "run", "unseen.npz", "--out", "s.csv", *extra]
        return case

    def legacy_evil(d):
        (d / "run" / "posterior.safetensors").unlink()
        evil_pickle(d / "run" / "posterior.pt", d / "MARKER", zip_format=True)

    def crafted_model_path(d):
        (d / "evil.py").write_text(f"open({str(d / 'MARKER')!r}, 'w').close()\n" + MODEL)
        state = load_tree(d / "run" / "posterior.safetensors", "state", ValueError)
        save_tree(d / "run" / "posterior.safetensors", {**state, "model": str(d / "evil.py")})

    def upgrade(d):
        shutil.copytree(runs_fixture() / "wnet", d / "run")
        legacy_evil(d)
        return ["upgrade", "run"]

    return {
        "score: legacy posterior.pt (code execution)": (scoring(legacy_evil), "never loaded"),
        "score: pickle as posterior.safetensors (code execution)": (
            scoring(lambda d: evil_pickle(d / "run" / "posterior.safetensors", d / "MARKER")), "pickle"),
        "score: model file named by the run dir (code execution)": (scoring(crafted_model_path), "--model"),
        "upgrade: crafted posterior.pt (code execution)": (upgrade, "weights-only"),
        "score: corrupt posterior": (scoring(lambda d: (d / "run" / "posterior.safetensors").write_bytes(b"junk")),
                                     "posterior"),
        "score: crafted num_classes": (scoring(lambda d: save_tree(d / "run" / "posterior.safetensors", {
            **load_tree(d / "run" / "posterior.safetensors", "s", ValueError), "num_classes": 10 ** 12})),
            "num_classes"),
        "score: table-weights run": (lambda d: (shutil.copytree(runs_fixture() / "table", d / "run"),
                                                shutil.copy2(runs_fixture() / "unseen.npz", d / "u.npz"),
                                                ["score", "run", "u.npz", "--out", "s.csv"])[2], "table weights"),
        "score: DATA without x": (scoring(lambda d: np.savez(d / "unseen.npz", z=np.zeros(3))), "no array 'x'"),
        "score: DATA corrupt": (scoring(lambda d: (d / "unseen.npz").write_bytes(b"PK\x03\x04")), "unseen.npz"),
        "score: DATA of another shape": (scoring(lambda d: np.savez(d / "unseen.npz", x=np.zeros((3, 5)))),
                                         "shape"),
        "score: DATA with NaN": (scoring(lambda d: np.savez(d / "unseen.npz", x=np.full((3, 64), np.nan))),
                                 "non-finite"),
        "score: labels out of range": (scoring(lambda d: np.savez(d / "unseen.npz", x=np.zeros((3, 64)),
                                                                 y=np.array([0, 1, 99]))), "labels"),
        "score: --out exists": (scoring(lambda d: (d / "s.csv").write_text("mine")), "already exists"),
        "score: --out is a directory": (scoring(lambda d: (d / "s.csv").mkdir()), "is a directory"),
        "score: --device cuda": (scoring(lambda d: None, "--device", "cuda"), "CUDA is not available"),
        "score: no run dir": (lambda d: ["score", "nothere", "u.npz", "--out", "s.csv"], "u.npz"),
    }


def _report_cases(run_dir_fixture):
    def reporting(prepare, argv=("--out", "r.html")):
        def case(d):
            shutil.copytree(run_dir_fixture(), d / "run")
            prepare(d)
            return ["report", "run", *argv]
        return case

    return {
        "report: no run dir": (lambda d: ["report", "nothere", "--out", "r.html"], "does not exist"),
        "report: metrics.json corrupt": (reporting(lambda d: (d / "run" / "metrics.json").write_text("{x")),
                                         "metrics.json"),
        "report: metrics.json not a table": (reporting(lambda d: (d / "run" / "metrics.json").write_text("[1]")),
                                             "metrics.json"),
        "report: draws.nc garbage": (reporting(lambda d: (d / "run" / "draws.nc").write_bytes(b"\x89HDF junk")),
                                     "draws.nc"),
        "report: --out exists": (reporting(lambda d: (d / "r.html").write_text("mine")), "already exists"),
        "report: selection CSV exists": (reporting(lambda d: (d / "r.selection.csv").write_text("mine")),
                                         "r.selection.csv"),
        "report: --out is a directory": (reporting(lambda d: (d / "r.html").mkdir()), "is a directory"),
        "report: user's report.html in the run dir": (
            reporting(lambda d: (d / "run" / "report.html").write_text("my notes"), ()), "already exists"),
    }


# ------------------------------------------------------------------------------------------- the harness
class _Lazy:
    """Fixture values for case builders that run inside the test (after the fixture exists)."""

    values: dict = {}


CASES = {**_toml_cases(), **_cli_cases(), **_data_cases(), **_model_cases(),
         **_resume_cases(lambda: _Lazy.values["npz_base"]), **_score_cases(lambda: _Lazy.values["wnet_run"]),
         **_report_cases(lambda: _Lazy.values["wnet_run"] / "table")}
NEEDS = {"resume:": "npz_base", "score:": "wnet_run", "upgrade:": "wnet_run", "report:": "wnet_run"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exit_2_one_line_nothing_changed(name, tmp_path, capsys, monkeypatch, request):
    if "cuda" in name.lower() and CUDA:
        pytest.skip("this machine has CUDA")
    for prefix, fixture in NEEDS.items():
        if name.startswith(prefix):
            _Lazy.values[fixture] = request.getfixturevalue(fixture)
    make, needle = CASES[name]
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.setenv("HOME", os.environ.get("HOME", "/root"))
    argv = make(d)
    if isinstance(argv, tuple):
        argv = argv[0]
    before = snapshot(tmp_path)
    capsys.readouterr()
    if name == "out: locked by another run":
        with run_lock(d / "out"):
            before = snapshot(tmp_path)
            code = _main(argv)
    else:
        code = _main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.startswith("pyro-dps: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, (needle, err)
    if name == "out: locked by another run":
        before.pop("case/.out.lock", None)
    after = snapshot(tmp_path)
    after.pop("case/.out.lock", None)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not (d / "MARKER").exists(), "a crafted file ran code"


def _main(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


def test_the_suite_is_large_enough():
    categories = {name.split(":")[0] for name in CASES}
    assert len(CASES) >= 60 and {"toml", "sampler", "cli", "out", "npz", "model", "resume", "score", "report",
                                 "demo", "upgrade"} <= categories
