"""Score unseen examples with a finished run's weight network (`pyro-dps score RUN_DIR DATA`).

A run writes `posterior.pt` (theta snapshots and final theta of every chain, the model, its
hyper-parameters and the network's settings). Scoring rebuilds the network, evaluates the model's
deterministic weight site on the new rows at every snapshot, and summarises over snapshots: the
posterior mean weight, its sd and a 90% interval. Only weight-network models generalise this way; a
per-example table has nothing to say about an example it never saw.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .context import Problem
from .errors import ConfigError, DataError
from .model_loader import load_model
from .outputs import write_atomic
from .potential import TracePotential

STATE_FILE = "posterior.pt"


def save_posterior_state(path: Path, posterior, config: dict, input_shape: tuple[int, ...], num_classes: int) -> None:
    """What scoring (and later prediction) needs from a run, as plain tensors and settings."""
    torch.save({"snapshots": [t.cpu() for t in posterior.snapshots], "final_theta": [t.cpu() for t in posterior.final_theta],
                "model": config["model"]["file"], "hyper": posterior.hyper, "network": config["network"],
                "input_shape": list(input_shape), "num_classes": int(num_classes),
                "weight_site": posterior.potential.weight_site}, path)


def load_posterior_state(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist: RUN_DIR must be the output directory of a finished run")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(f"{str(path)!r} cannot be read: {exc}") from exc


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
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{str(path)!r}: x must be numeric, got dtype {x.dtype}")
    if y is not None and (not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],)):
        raise DataError(f"{str(path)!r}: y must be {x.shape[0]} integer labels, got dtype {y.dtype} shape {y.shape}")
    return torch.as_tensor(x, dtype=torch.float32), None if y is None else torch.as_tensor(y, dtype=torch.long)


def score(run_dir: str | os.PathLike, x: torch.Tensor, y: torch.Tensor | None = None, device: str = "cpu",
          quantiles: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
    """Posterior mean, sd and quantiles of the weight of each row of x (over the run's theta snapshots)."""
    state = load_posterior_state(run_dir)
    if state.get("weight_site") is None:
        raise ConfigError(f"run {str(run_dir)!r} used per-example table weights: they do not extend to unseen "
                          "examples; run a weight-network model (e.g. model.file = 'weight_net') to score")
    if tuple(x.shape[1:]) != tuple(state["input_shape"]):
        raise DataError(f"x rows have shape {tuple(x.shape[1:])}, the run was trained on {tuple(state['input_shape'])}")
    if x.shape[0] == 0:
        raise DataError("x is empty: nothing to score")
    if y is None:
        if state["hyper"].get("label_mode", "none") != "none":
            raise DataError(f"the run's weight network reads labels (label_mode={state['hyper']['label_mode']!r}): "
                            "DATA needs an array 'y'")
        y = torch.zeros(x.shape[0], dtype=torch.long)
    from .scenario import build_network  # the run's network, rebuilt from its settings

    shape_only = _ShapeOnly(x.shape[1:], state["num_classes"])
    net = build_network(state["network"], shape_only).to(device)
    x, y = x.to(device), y.to(device)
    problem = Problem(net, x, y, x[:1], y[:1])
    potential = TracePotential(load_model(state["model"]), problem, state["hyper"])
    thetas = state["snapshots"] or state["final_theta"]
    if thetas[0].numel() != potential.theta_size:
        raise DataError(f"the run's theta has {thetas[0].numel()} values but this network and model need "
                        f"{potential.theta_size}: the data does not match the run")
    draws = torch.stack([potential.network_weights(t.to(device)) for t in thetas]).double().cpu().numpy()
    return {"mean": draws.mean(0), "sd": draws.std(0, ddof=1) if len(draws) > 1 else np.zeros(draws.shape[1]),
            f"q{int(quantiles[0] * 100):02d}": np.quantile(draws, quantiles[0], axis=0),
            f"q{int(quantiles[1] * 100):02d}": np.quantile(draws, quantiles[1], axis=0)}


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
