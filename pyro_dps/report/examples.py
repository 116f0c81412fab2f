"""The examples a report shows, stored beside the run: examples.npz holds the thumbnails (or texts), true
labels and model inputs of the examples the galleries and the flagged table show, so that `pyro-dps report`
never reads the data set itself. It is read without pickle and checked; the report works without it.

    save_gallery_examples(run_dir, data)          # the run's hook (a DataSplits); a failure only warns
    arrays = gallery_arrays(ds, metrics, x_train, own_rows)   # what examples.npz holds, from memory
    info = examples_from_arrays(arrays, ids)      # what the page shows per example position
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arviz_data import load_run
from ..outputs import write_atomic
from ..probes import non_probe_mask
from .html import MAX_FLAGGED, MAX_TEXT, N_SHOW, _data_uri, png_bytes
from .load import ReportError, split_probes
from .plan import _plan, gallery_positions

EXAMPLES_FILE = "examples.npz"
MAX_EXAMPLES_BYTES = 20 * 2 ** 20
MAX_STORED = 3 * N_SHOW + MAX_FLAGGED  # examples examples.npz holds at most
MAX_INPUT_BYTES = 8 * 2 ** 20  # model inputs examples.npz stores (for suggested labels); none beyond
THUMB_SIDE = 64  # thumbnails are at most this many pixels a side
KEYS = ("position", "example", "true_label", "image", "text", "x")


@dataclass
class _Examples:
    """What the galleries show per example position: thumbnails or texts, and the true label when known."""

    images: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)
    true_labels: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # position -> the model's input row (for suggested labels)
    note: str = ""

    def image_uri(self, pos: int) -> str | None:
        """A thumbnail of training example `pos` (encoded on demand), or None."""
        img = self.images.get(pos)
        return None if img is None else _data_uri(png_bytes(img))


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """One example's features as a displayable uint8 image, or None when they are not an image."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        side = int(round(np.sqrt(x.size)))
        if side * side != x.size or side < 4:
            return None
        x = x.reshape(side, side)
    elif x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    elif x.ndim == 3 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else x
    elif x.ndim != 2:
        return None
    lo, hi = float(np.min(x)), float(np.max(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    image = np.round(x * 255).astype(np.uint8)
    if max(image.shape[:2]) > THUMB_SIDE:  # a thumbnail: the page shows 72 px cards
        from PIL import Image

        thumb = Image.fromarray(image)
        thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image = np.asarray(thumb, dtype=np.uint8)
    return image


def gallery_arrays(ds, metrics: dict, x_train, own_rows: np.ndarray, true_labels=None,
                   texts=None) -> dict[str, np.ndarray]:
    """What examples.npz holds for the examples the page shows: their positions and ids, true labels (when
    known), texts or thumbnails, and model inputs (when small). `ds`: the draws of the user's own examples
    (`split_probes`); `own_rows`: their rows of `x_train` (a tensor); `true_labels`, `texts`: per row of it."""
    plan = _plan(np.asarray(ds["weights"].transpose("chain", "draw", "example").values, dtype=np.float64),
                 metrics.get("config", {}) or {}, ds, metrics.get("hyper"))
    pos = gallery_positions(plan)
    rows = np.asarray(own_rows)[pos]  # the rows of D_t at those positions
    arrays = {"position": pos.astype(np.int64), "example": np.asarray(ds["example"].values)[pos]}
    if true_labels is not None:
        arrays["true_label"] = as_numpy(true_labels)[rows]
    if texts is not None:
        arrays["text"] = np.array([str(texts[int(r)])[:MAX_TEXT] for r in rows], dtype=f"<U{MAX_TEXT}")
    else:
        images = [_as_image(x_train[int(r)].cpu().numpy()) for r in rows]
        if pos.size and all(img is not None and img.shape == images[0].shape for img in images):
            arrays["image"] = np.stack(images)
    row = x_train[0] if len(rows) else None
    if row is not None and len(rows) * row.numel() * row.element_size() <= MAX_INPUT_BYTES:
        import torch

        arrays["x"] = x_train[torch.as_tensor(rows, device=x_train.device)].cpu().numpy()  # suggested labels
    return arrays


def as_numpy(values) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def save_gallery_examples(run_dir: str | os.PathLike, data, echo: Callable[[str], Any] = print) -> Path | None:
    """examples.npz: thumbnails (or texts) and true labels of the examples the report shows, so that
    `pyro-dps report` never needs the data set itself. A failure only warns, like the report."""
    own_rows = np.flatnonzero(non_probe_mask(data))
    return store_gallery_examples(run_dir, data.x_train, own_rows, getattr(data, "y_train_true", None),
                                  getattr(data, "texts_train", None), echo)


def store_gallery_examples(run_dir: str | os.PathLike, x_train, own_rows: np.ndarray, true_labels=None,
                           texts=None, echo: Callable[[str], Any] = print) -> Path | None:
    """examples.npz of the run directory's draws (`gallery_arrays`); a failure only warns."""
    run_dir = Path(run_dir)
    try:
        ds, metrics = load_run(run_dir)
        ds, _ = split_probes(ds)  # the report's positions: the user's own examples
        arrays = gallery_arrays(ds, metrics, x_train, own_rows, true_labels, texts)
        path = run_dir / EXAMPLES_FILE
        write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), binary=True, error=ReportError)
        return path
    except Exception as exc:  # noqa: BLE001 - a gallery without thumbnails is no reason to lose a run
        echo(f"warning: {EXAMPLES_FILE} not written: {exc}")
        return None


def _stored_examples(run_dir: Path, ids: np.ndarray) -> _Examples:
    """The gallery examples the run stored (examples.npz), checked; the report works without them."""
    path = run_dir / EXAMPLES_FILE
    if not path.is_file():
        return _Examples(note=f"{EXAMPLES_FILE} is absent; examples are shown by id only")
    try:
        if path.stat().st_size > MAX_EXAMPLES_BYTES:
            raise ValueError(f"larger than {MAX_EXAMPLES_BYTES} bytes")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in KEYS}
        return examples_from_arrays(arrays, ids)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign: show ids only, and say why
        return _Examples(note=f"{EXAMPLES_FILE} cannot be used ({type(exc).__name__}: {str(exc)[:120]}); "
                              "examples are shown by id only")


def examples_from_arrays(arrays: dict[str, np.ndarray], ids: np.ndarray) -> _Examples:
    """What the page shows per example position, from examples.npz's arrays, each checked (ValueError or
    KeyError when the positions are unusable; an unusable optional array is left out)."""
    pos = np.asarray(arrays["position"])
    k = pos.shape[0]
    if pos.ndim != 1 or k > MAX_STORED or pos.dtype.kind not in "iu" \
            or (k and (pos.min() < 0 or pos.max() >= len(ids))):
        raise ValueError("bad positions")
    if not np.array_equal(arrays["example"], ids[pos]):
        raise ValueError("its example ids do not match draws.nc")
    out = _Examples()
    if "true_label" in arrays and arrays["true_label"].shape == (k,) and arrays["true_label"].dtype.kind in "iu":
        out.true_labels = dict(zip(pos.tolist(), arrays["true_label"].tolist()))
    image = arrays.get("image")
    if image is not None and image.dtype == np.uint8 and image.shape[0] == k and image.ndim in (3, 4) \
            and max(image.shape[1:3]) <= 256 and (image.ndim == 3 or image.shape[3] == 3):
        out.images = dict(zip(pos.tolist(), image))
    text = arrays.get("text")
    if text is not None and text.dtype.kind == "U" and text.shape == (k,):
        out.texts = {p: str(t)[:MAX_TEXT] for p, t in zip(pos.tolist(), text)}
    x = arrays.get("x")
    if x is not None and x.dtype.kind in "iuf" and x.ndim >= 2 and x.shape[0] == k and x.nbytes <= MAX_INPUT_BYTES:
        out.inputs = dict(zip(pos.tolist(), x))
    return out
