"""Files of tensors and settings that load without running code: safetensors plus a JSON skeleton.

    save_tree(path, {"theta": tensor, "step": 7, "aux": {"opt": optimizer.state_dict()}})
    tree = load_tree(path, what="checkpoint", error=ConfigError)

A nested structure of dicts (any JSON-able keys), lists, tuples, None, bool, int, float, str, torch
tensors and numpy arrays is split into its tensors (stored by safetensors) and a JSON skeleton that
refers to them by name (stored in the safetensors header's metadata). Reading parses a length-prefixed
JSON header and raw tensor bytes: no pickle, so a crafted file cannot run code. Files in the old
pickle formats (torch.save zip or a raw pickle) are recognised by their first bytes and refused.
The write is atomic: a unique temporary file beside `path`, fsync, rename.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DPSError
from .outputs import write_atomic

SKELETON_KEY = "pyro_dps"
MAX_HEADER = 100 * 2 ** 20  # safetensors' own limit on the JSON header
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a raw pickle's PROTO opcode


class _Packer:
    """Turns a tree into (skeleton, tensors); every JSON object in the skeleton is a one-key tag."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def _store(self, value: torch.Tensor) -> str:
        name = str(len(self.tensors))
        self.tensors[name] = value.detach().cpu().contiguous().clone()
        return name

    def pack(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return {"f": repr(value)}  # exact, and NaN/inf survive strict JSON
        if isinstance(value, np.generic):
            return self.pack(value.item())
        if torch.is_tensor(value):
            return {"T": self._store(value)}
        if isinstance(value, np.ndarray):
            return {"N": self._store(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, (list, tuple)):
            return {"l" if isinstance(value, list) else "t": [self.pack(v) for v in value]}
        if isinstance(value, dict):
            return {"d": [[self.pack(k), self.pack(v)] for k, v in value.items()]}
        raise TypeError(f"cannot store a {type(value).__name__} in a safe file")


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The tree a skeleton describes; a node of any other form raises ValueError."""
    if node is None or isinstance(node, (bool, int, str)):
        return node
    if isinstance(node, list):
        return [_unpack(v, tensors) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unexpected node {str(node)[:80]!r}")
    (tag, body), = node.items()
    if tag == "f" and isinstance(body, str):
        return float(body)
    if tag in ("T", "N") and isinstance(body, str) and body in tensors:
        return tensors[body] if tag == "T" else tensors[body].numpy()
    if tag in ("l", "t") and isinstance(body, list):
        items = [_unpack(v, tensors) for v in body]
        return items if tag == "l" else tuple(items)
    if tag == "d" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
        return {_hashable(_unpack(k, tensors)): _unpack(v, tensors) for k, v in body}
    raise ValueError(f"unexpected node {str(node)[:80]!r}")


def _hashable(key: Any) -> Any:
    if isinstance(key, (str, int, float, bool, tuple)) or key is None:
        return key
    raise ValueError(f"a dict key must be a scalar, got {type(key).__name__}")


def save_tree(path: str | os.PathLike, tree: Any) -> Path:
    """Write `tree` to `path` atomically (`outputs.write_atomic`: unique temporary file, fsync, rename)."""
    from safetensors.torch import save

    path = Path(path)
    packer = _Packer()
    skeleton = json.dumps(packer.pack(tree), allow_nan=False)
    blob = save(packer.tensors, metadata={SKELETON_KEY: skeleton})
    return write_atomic(path, lambda fh: fh.write(blob), binary=True, error=DPSError)


def is_pickle_file(path: str | os.PathLike) -> bool:
    """True when the file starts like torch.save's archive or a raw pickle (the formats never loaded)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return any(head.startswith(m) for m in PICKLE_MAGIC)


def load_tree(path: str | os.PathLike, what: str, error: type[DPSError], legacy_hint: str = "") -> Any:
    """The tree stored at `path`; `error` naming the file when it is missing, a pickle, or not a safe file."""
    from safetensors.torch import load

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    if any(raw.startswith(m) for m in PICKLE_MAGIC):
        raise error(f"{what} {str(path)!r} is a pickle (an old pyro-dps format); pickles are never loaded, "
                    f"since one can run code{'; ' + legacy_hint if legacy_hint else ''}")
    try:
        header_len = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or not 2 <= header_len <= min(MAX_HEADER, len(raw) - 8):
            raise ValueError("no safetensors header")
        header = json.loads(raw[8:8 + header_len])
        skeleton = json.loads(header.get("__metadata__", {})[SKELETON_KEY])
        tensors = load(raw)
        return _unpack(skeleton, tensors)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own type; any failure means "not ours"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise error(f"{what} {str(path)!r} is not a readable pyro-dps file (corrupt or of another kind: "
                    f"{first})") from None
