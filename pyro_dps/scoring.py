"""Score unseen examples with a finished run's weight network (`pyro-dps score RUN_DIR DATA`).

A run writes `posterior.safetensors` (theta snapshots and final theta of every chain, the model, its
hyper-parameters and the network's settings; tensors in safetensors, settings as JSON, so reading it runs
no code). Scoring rebuilds the network, evaluates the model's deterministic weight site on the new rows at
every snapshot, and summarises over snapshots: the posterior mean weight, its sd and a 90% interval. Only
weight-network models generalise this way; a per-example table has nothing to say about an example it
never saw. A run directory never makes pyro-dps import a file it names: a run with a model file of its
own is scored only with `--model FILE` given by the user, and that file must hash as the run's did.
"""
from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .bounds import MAX_CLASSES, MAX_SNAPSHOTS, MAX_WIDTH
from .context import Problem
from .draws import weight_summary
from .errors import ConfigError, DataError
from .fingerprint import model_identity, plain
from .model_loader import load_model
from .outputs import write_atomic
from .potential import TracePotential
from .safefile import load_tree, save_tree

STATE_FILE = "posterior.safetensors"
LEGACY_FILE = "posterior.pt"  # the pickle of pyro-dps 0.1: refused; `pyro-dps upgrade RUN_DIR` converts it
FORMAT = "pyro-dps posterior 1"
MAX_SCORE_ROWS = 10 ** 7


def save_posterior_state(path: Path, posterior, config: dict, input_shape: tuple[int, ...], num_classes: int) -> None:
    """What scoring (and later prediction) needs from a run, as tensors and plain settings."""
    save_tree(path, {"format": FORMAT, "snapshots": [t.cpu() for t in posterior.snapshots],
                     "final_theta": [t.cpu() for t in posterior.final_theta], "model": config["model"]["file"],
                     "model_identity": model_identity(posterior.potential.model), "hyper": plain(posterior.hyper),
                     "network": config["network"], "input_shape": list(input_shape), "num_classes": int(num_classes),
                     "weight_site": posterior.potential.weight_site})


def load_posterior_state(run_dir: str | os.PathLike) -> dict:
    """The run's posterior state, read without unpickling and checked field by field."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.exists():
        if (run_dir / LEGACY_FILE).exists():
            raise DataError(f"{str(run_dir / LEGACY_FILE)!r} is the pickle format of pyro-dps 0.1, which is never "
                            f"loaded (a pickle can run code); convert it once with `pyro-dps upgrade {run_dir}` "
                            "(torch's weights-only reader, which runs no code)")
        raise DataError(f"{str(path)!r} does not exist: RUN_DIR must be the output directory of a finished run")
    state = load_tree(path, "posterior state", DataError,
                      f"convert it with `pyro-dps upgrade {run_dir}`")
    return check_posterior_state(state, path)


def check_posterior_state(state, path) -> dict:
    """Every field scoring reads, of the type and in the range it needs (a crafted file is refused here)."""
    from .config import check_network

    def bad(message: str) -> DataError:
        return DataError(f"{str(path)!r} is not a valid posterior state: {message}")

    if not isinstance(state, dict):
        raise bad("not a table")
    thetas = [state.get("snapshots"), state.get("final_theta")]
    if not all(isinstance(v, list) and len(v) <= MAX_SNAPSHOTS and all(torch.is_tensor(t) and t.dim() == 1
                                                                         and t.is_floating_point() for t in v)
               for v in thetas) or not (thetas[0] or thetas[1]):
        raise bad("snapshots and final_theta must be lists of theta vectors, not both empty")
    if not isinstance(state.get("model"), str) or not isinstance(state.get("hyper"), dict):
        raise bad("model must be a string and hyper a table")
    shape, classes = state.get("input_shape"), state.get("num_classes")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_WIDTH for d in shape)):
        raise bad(f"input_shape must be 1 to 4 sizes in [1, {MAX_WIDTH}], got {shape!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 2 <= classes <= MAX_CLASSES:
        raise bad(f"num_classes must be an integer in [2, {MAX_CLASSES}], got {classes!r}")
    if not isinstance(state.get("network"), dict):
        raise bad("network must be a table")
    try:
        check_network(state["network"], "network")
    except ConfigError as exc:
        raise bad(str(exc)) from None
    if state.get("weight_site") is not None and not isinstance(state["weight_site"], str):
        raise bad("weight_site must be a string or absent")
    return state


def upgrade_posterior(run_dir: str | os.PathLike) -> Path:
    """Convert a 0.1 run directory's posterior.pt to posterior.safetensors with torch's weights-only
    unpickler (an allow-list of tensors and plain containers: a crafted file fails and runs nothing)."""
    import pickle

    from .rundir import check_out_file, record

    run_dir = Path(run_dir)
    source, target = run_dir / LEGACY_FILE, run_dir / STATE_FILE
    if not source.is_file():
        raise DataError(f"{str(source)!r} does not exist: nothing to upgrade")
    check_out_file(target, what="posterior state")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"{str(source)!r} cannot be read by the weights-only loader, so it is not converted "
                        f"({first})") from None
    state = check_posterior_state(state, source)
    state = {**state, "format": FORMAT, "hyper": plain(state["hyper"]), "model_identity": None}
    save_tree(target, state)
    record(run_dir, [STATE_FILE])
    return target


def scoring_model(state: dict, model: str | None):
    """The run's model function: a built-in by the name the run stored, or the user's `model` file, which
    must hash as the run's did. A model file named only inside the run directory is never imported."""
    spec = state["model"]
    if model is None:
        if ".py" in spec or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
            raise ConfigError(f"the run used the model file {spec!r}; a run directory never makes pyro-dps import "
                              "a file it names: pass --model PATH[:function] (the run's own file) to score with it")
        fn = load_model(spec)
        return fn
    fn = load_model(model)
    saved = state.get("model_identity")
    if isinstance(saved, dict) and saved.get("source_sha256") not in (None, "unknown"):
        now = model_identity(fn)
        if now["source_sha256"] != saved["source_sha256"]:
            raise ConfigError(f"--model {model!r} is not the file the run used (its SHA-256 differs from the one "
                              "stored in the run directory)")
    return fn


def read_examples(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Examples to score from an .npz file: `x` (rows of the training input shape) and optional `y` labels."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise DataError(f"{str(path)!r} has no array 'x' (it has {sorted(npz.files)})")
            x = np.asarray(npz["x"])
            y = np.asarray(npz["y"]) if "y" in npz.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{str(path)!r}: x must be numeric, got dtype {x.dtype}")
    if y is not None and (not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],)):
        raise DataError(f"{str(path)!r}: y must be {x.shape[0]} integer labels, got dtype {y.dtype} shape {y.shape}")
    return torch.as_tensor(x, dtype=torch.float32), None if y is None else torch.as_tensor(y, dtype=torch.long)


def score(run_dir: str | os.PathLike, x: torch.Tensor, y: torch.Tensor | None = None, device: str = "cpu",
          quantiles: tuple[float, float] = (0.05, 0.95), model: str | None = None) -> dict[str, np.ndarray]:
    """Posterior mean, sd and quantiles of the weight of each row of x (over the run's theta snapshots).
    `model`: the run's own model file, needed (and checked) when the run did not use a built-in model."""
    from .bounds import check_device

    check_device(device)
    state = load_posterior_state(run_dir)
    if state.get("weight_site") is None:
        raise ConfigError(f"run {str(run_dir)!r} used per-example table weights: they do not extend to unseen "
                          "examples; run a weight-network model (e.g. model.file = 'weight_net') to score")
    if tuple(x.shape[1:]) != tuple(state["input_shape"]):
        raise DataError(f"x rows have shape {tuple(x.shape[1:])}, the run was trained on {tuple(state['input_shape'])}")
    if x.shape[0] == 0:
        raise DataError("x is empty: nothing to score")
    if x.shape[0] > MAX_SCORE_ROWS:
        raise DataError(f"x has {x.shape[0]} rows; score at most {MAX_SCORE_ROWS} at a time")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x has non-finite values (NaN or inf)")
    if y is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= state["num_classes"]):
        raise DataError(f"y must be labels in [0, {state['num_classes']}), got values in "
                        f"[{int(y.min())}, {int(y.max())}]")
    if y is None:
        if state["hyper"].get("label_mode", "none") != "none":
            raise DataError(f"the run's weight network reads labels (label_mode={state['hyper']['label_mode']!r}): "
                            "DATA needs an array 'y'")
        y = torch.zeros(x.shape[0], dtype=torch.long)
    from .spec import build_network  # the run's network, rebuilt from its settings

    shape_only = _ShapeOnly(x.shape[1:], state["num_classes"])
    net = build_network(state["network"], shape_only).to(device)
    x, y = x.to(device), y.to(device)
    problem = Problem(net, x, y, x[:1], y[:1])
    potential = TracePotential(scoring_model(state, model), problem, state["hyper"])
    thetas = state["snapshots"] or state["final_theta"]
    if any(t.numel() != potential.theta_size for t in thetas):
        raise DataError(f"the run's theta has {thetas[0].numel()} values but this network and model need "
                        f"{potential.theta_size}: the data does not match the run")
    draws = torch.stack([potential.network_weights(t.to(device)) for t in thetas]).double().cpu().numpy()
    return weight_summary(draws, quantiles)


def predictive_probs(run_dir: str | os.PathLike, x: torch.Tensor,
                     y: torch.Tensor | None = None) -> tuple[np.ndarray, int]:
    """(class probabilities (rows, classes) of the rows of `x`, the softmax averaged over the run's theta
    snapshots (every chain's last theta when it kept none), snapshots used), from posterior.safetensors.
    Built-in models only: a run's own model file is never imported (ConfigError)."""
    from .spec import build_network

    state = load_posterior_state(run_dir)
    model = scoring_model(state, None)
    x = x.float() if x.is_floating_point() else x
    if tuple(x.shape[1:]) != tuple(state["input_shape"]):
        raise DataError(f"stored inputs have shape {tuple(x.shape[1:])}, the run's {tuple(state['input_shape'])}")
    y = torch.zeros(len(x), dtype=torch.long) if y is None else y.long()
    net = build_network(state["network"], _ShapeOnly(x.shape[1:], state["num_classes"]))
    problem = Problem(net, x, y, x[:1], y[:1])
    potential = TracePotential(model, problem, state["hyper"])
    thetas = state["snapshots"] or state["final_theta"]
    if any(t.numel() != potential.theta_size for t in thetas):
        raise DataError("the run's theta does not fit the rebuilt network")
    with torch.no_grad():
        total = sum(problem.forward(potential.network_params(t.float()), x).softmax(-1) for t in thetas)
    return (total / len(thetas)).double().numpy(), len(thetas)


def write_scores(path: str | os.PathLike, scores: dict[str, np.ndarray], labels: torch.Tensor | None) -> Path:
    """CSV (index, label, mean, sd, q05, q95), written to a temporary file and renamed into place."""
    path = Path(path)
    if not path.parent.exists():
        raise ConfigError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    cols = ["mean", "sd"] + [k for k in scores if k.startswith("q")]
    def write(fh):
        fh.write(",".join(["index", "label"] + cols) + "\n")
        for i in range(len(scores["mean"])):
            label = "" if labels is None else int(labels[i])
            fh.write(",".join([str(i), str(label)] + [f"{scores[c][i]:.6f}" for c in cols]) + "\n")
    return write_atomic(path, write)


class _ShapeOnly:
    """The two facts `build_network` reads from a DataSplits."""

    def __init__(self, shape, num_classes: int):
        self.x_train = torch.empty((0, *shape))
        self.num_classes = num_classes
