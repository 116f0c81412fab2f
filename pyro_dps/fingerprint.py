"""The identity of a run: what a checkpoint must share with the run that resumes it.

A fingerprint is a nested dict of plain values: the resolved settings, a SHA-256 of every data file read,
of the model's source file, of the training and meta tensors, and the package version.
`first_differences(saved, now)` lists the fields that differ as (dotted path, saved, now), so a refused
resume can say which setting changed.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a directory's regular files (names and contents, two levels deep)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in list(path.iterdir()) + [q for d in path.iterdir() if d.is_dir() for q in d.iterdir()]
                       if p.is_file())
        for file in files:
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file_digest(file).encode())
        return digest.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes (the data a run actually trained on)."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_identity(model: Callable) -> dict[str, str]:
    """The model function's qualified name and a SHA-256 of its source file (when it has one)."""
    name = f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__name__)}"
    try:
        source = inspect.getsourcefile(model)
    except TypeError:
        source = None
    return {"name": name.split("pyro_dps_user_model_")[0] if "pyro_dps_user_model_" in name else name,
            "source_sha256": file_digest(source) if source and Path(source).is_file() else "unknown"}


def plain(value: Any) -> Any:
    """A JSON-able copy (tuples as lists, numpy scalars as Python numbers, callables by repr)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if torch.is_tensor(value):
        return tensor_digest(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def package() -> dict[str, str]:
    """The versions that shape a chain's numbers."""
    return {"pyro_dps": __version__, "torch": torch.__version__.split("+")[0]}


FREE_SAMPLER_KEYS = ("progress", "log_every", "device", "compile", "checkpoint_every")


def run_fingerprint(model: Callable, problem, hyper: dict, sampler: dict, extra: dict | None = None) -> dict:
    """What a chain's numbers depend on. Settings that do not change them (progress, logging, device,
    compile: the same draws to float rounding, checkpoint frequency) are left out, so they may differ."""
    return {**plain(extra or {}),
            "sampler": plain({k: v for k, v in sampler.items() if k not in FREE_SAMPLER_KEYS}),
            "hyper": plain(hyper), "model": model_identity(model),
            "tensors": {"train": _data_digest(problem.x_train, problem.y_train),
                        "meta": _data_digest(problem.x_meta, problem.y_meta),
                        "network": {k: list(v) for k, v in problem.param_shapes.items()}},
            "package": package()}


def _data_digest(x, y: torch.Tensor) -> str | dict:
    """`tensor_digest` of features and labels; of rows read on demand (a DatasetRows), their `fingerprint()`
    (kind, shape, dtype: their bytes are not read) and the labels' digest."""
    if torch.is_tensor(x):
        return tensor_digest(x, y)
    return {"rows": x.fingerprint(), "labels": tensor_digest(y)}


def first_differences(saved: Any, now: Any, where: str = "") -> list[tuple[str, str, str]]:
    """Every leaf where two fingerprints differ, as (dotted path, saved value, current value)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in list(saved) + [k for k in now if k not in saved]:
            path = f"{where}.{key}" if where else str(key)
            if key not in saved or key not in now:
                out.append((path, _show(saved.get(key, "absent")), _show(now.get(key, "absent"))))
            else:
                out.extend(first_differences(saved[key], now[key], path))
        return out
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)) and len(saved) == len(now):
        return [d for i, (a, b) in enumerate(zip(saved, now)) for d in first_differences(a, b, f"{where}[{i}]")]
    if type(saved) is not type(now) and not (_number(saved) and _number(now)):
        return [(where, _show(saved), _show(now))]
    return [] if saved == now else [(where, _show(saved), _show(now))]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
