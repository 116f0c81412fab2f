"""Readers for data set files already on disk (npz, IDX, CIFAR-10 pickles); nothing is ever downloaded."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pyro_dps.data._convert import ArrayLike, to_tensor
from pyro_dps.errors import DataError

DATA_ENV_VAR = "PYRO_DPS_DATA"
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")

# IDX type codes (third magic byte) -> big-endian numpy dtype, per the IDX specification.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def data_file(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Path of a data file in `directory`, else in $PYRO_DPS_DATA; DataError if it is not there."""
    root = directory if directory is not None else os.environ.get(DATA_ENV_VAR)
    if root is None:
        raise DataError(f"no directory given and {DATA_ENV_VAR} is not set; cannot locate {name!r}")
    path = Path(root) / name
    if not path.exists():
        raise DataError(f"data file not found: {str(path)!r}")
    return path


def _existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """The path as a Path, checked to be an existing regular file."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} file not found: {str(file)!r}")
    return file


def _check_pairs(arrays: dict[str, np.ndarray], source: str) -> None:
    """x_<s> and y_<s> must have the same number of rows, and labels must be 1-D."""
    for key, labels in arrays.items():
        if not key.startswith("y_"):
            continue
        if labels.ndim != 1:
            raise DataError(f"{key} in {source} must be 1-dimensional, got shape {labels.shape}")
        features = arrays.get("x_" + key[2:])
        if features is not None and (features.ndim == 0 or features.shape[0] != labels.shape[0]):
            raise DataError(
                f"x_{key[2:]} in {source} has shape {features.shape} but {key} has {labels.shape[0]} labels"
            )


def load_npz(path: str | os.PathLike[str], keys: Sequence[str] | None = MNIST_KEYS) -> dict[str, np.ndarray]:
    """Arrays `keys` (all keys when None) of an npz file, e.g. mnist.npz; x_*/y_* row counts are checked."""
    file = _existing_file(path, "npz")
    try:
        with np.load(file, allow_pickle=False) as archive:
            available = list(archive.files)
            wanted = available if keys is None else list(keys)
            missing = [k for k in wanted if k not in available]
            if missing:
                raise DataError(f"{str(file)!r} is missing keys {missing}; it has {available}")
            arrays = {k: archive[k] for k in wanted}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise DataError(f"cannot read npz file {str(file)!r}: {exc}") from exc
    _check_pairs(arrays, repr(str(file)))
    return arrays


def _read_maybe_gzip(file: Path) -> bytes:
    """File contents, gunzipped when they start with the gzip magic bytes."""
    try:
        raw = file.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {str(file)!r}: {exc}") from exc


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (plain or gzipped; ubyte/byte/short/int/float/double) as a native-endian numpy array."""
    file = _existing_file(path, "IDX")
    raw = _read_maybe_gzip(file)
    if len(raw) < 4:
        raise DataError(f"{str(file)!r} is too short for an IDX header ({len(raw)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{str(file)!r} has a bad IDX magic number 0x{raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{str(file)!r} is truncated inside its IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{str(file)!r} has {len(raw) - header} data bytes but its header shape {shape} needs {expected} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, names: Iterable[str]) -> Path:
    """The first of the candidate IDX names present in `directory`, plain or .gz."""
    candidates = [directory / (n + suffix) for n in names for suffix in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"none of {[c.name for c in candidates]} found in {str(directory)!r}")


def load_mnist_idx(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """MNIST-format IDX files of a directory (train-images-idx3-ubyte[.gz] etc.) as x_/y_ train/test arrays."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DataError(f"MNIST IDX directory not found: {str(folder)!r}")
    arrays = {key: load_idx(_find_idx(folder, names)) for key, names in MNIST_IDX_FILES.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise DataError(f"{key} in {str(folder)!r} must be images [N, H, W], got shape {arrays[key].shape}")
    _check_pairs(arrays, repr(str(folder)))
    return arrays


def load_mnist(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """MNIST-format data from an npz file (mnist.npz, fashion_mnist.npz) or a directory of IDX files."""
    location = Path(path)
    if location.is_dir():
        return load_mnist_idx(location)
    arrays = load_npz(location, MNIST_KEYS)
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise DataError(f"{key} in {str(location)!r} must be images [N, H, W], got shape {arrays[key].shape}")
    return arrays


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and plain containers, so a batch file cannot run code."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only whitelisted globals."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle_batch(file: Path) -> dict[str, Any]:
    """A CIFAR python batch as a dict with str keys."""
    try:
        with file.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"cannot read CIFAR batch {str(file)!r}: {exc}") from exc
    if not isinstance(content, dict):
        raise DataError(f"CIFAR batch {str(file)!r} must hold a dict, got {type(content).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _cifar_arrays(batch: dict[str, Any], file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,32,32,3] uint8 and labels [N] int64 of one decoded batch."""
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"CIFAR batch {str(file)!r} lacks 'data' or 'labels'; it has {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"'data' in {str(file)!r} must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"'labels' in {str(file)!r} must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)


def load_cifar10_batches(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """CIFAR-10 python batches (data_batch_1..5, test_batch, optional batches.meta) as x_/y_ arrays.

    Images come back as uint8 [N, 32, 32, 3]; a `cifar-10-batches-py` subfolder is also looked into.
    The pickles are read with an unpickler that only rebuilds numpy arrays.
    """
    folder = Path(directory)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 batch directory not found: {str(folder)!r}")
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        for name in names:
            file = _existing_file(folder / name, "CIFAR-10 batch")
            parts[split].append(_cifar_arrays(_unpickle_batch(file), file))
    arrays = {
        "x_train": np.concatenate([x for x, _ in parts["train"]]),
        "y_train": np.concatenate([y for _, y in parts["train"]]),
        "x_test": parts["test"][0][0],
        "y_test": parts["test"][0][1],
    }
    meta_file = folder / "batches.meta"
    if meta_file.is_file():
        names_raw = _unpickle_batch(meta_file).get("label_names")
        if names_raw is not None:
            arrays["class_names"] = np.array([n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names_raw])
    return arrays


def load_cifar10(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """CIFAR-10 from a directory of python batches or an npz (e.g. cifar10_subset.npz); x are uint8 [N,32,32,3]."""
    location = Path(path)
    if location.is_dir():
        arrays = load_cifar10_batches(location)
    else:
        arrays = load_npz(location, MNIST_KEYS)
        try:
            with np.load(location, allow_pickle=False) as archive:
                if "class_names" in archive.files:
                    arrays["class_names"] = archive["class_names"]
        except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"cannot read class_names of {str(location)!r}: {exc}") from exc
    for key in ("x_train", "x_test"):
        if arrays[key].shape[1:] != (32, 32, 3):
            raise DataError(f"{key} in {str(location)!r} must be images [N, 32, 32, 3], got {arrays[key].shape}")
    arrays.setdefault("class_names", np.array(CIFAR10_CLASS_NAMES))
    return arrays


def channel_stats(x: ArrayLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N,H,W] or [N,H,W,C] after scaling to [0, 1]."""
    images = _uint8_images(x, "x")
    scaled = images.to(torch.float64) / 255.0
    dims = tuple(range(scaled.ndim - 1)) if scaled.ndim == 4 else tuple(range(scaled.ndim))
    mean = scaled.mean(dim=dims).reshape(-1)
    std = scaled.std(dim=dims).reshape(-1)
    return tuple(mean.tolist()), tuple(std.tolist())


def _uint8_images(x: ArrayLike, field: str) -> torch.Tensor:
    """Images as a uint8 tensor of rank 3 [N,H,W] or 4 [N,H,W,C]."""
    images = to_tensor(x, field)
    if images.dtype != torch.uint8:
        raise DataError(f"{field} must be uint8 images, got dtype {images.dtype}")
    if images.ndim not in (3, 4):
        raise DataError(f"{field} must have shape [N, H, W] or [N, H, W, C], got {tuple(images.shape)}")
    return images


def images_to_float(
    x: ArrayLike,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """uint8 images [N,H,W] or [N,H,W,C] -> float32 [N,C,H,W] in [0,1], then (x - mean) / std if given."""
    images = _uint8_images(x, "x")
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    out = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    channels = out.shape[1]
    if mean is not None or std is not None:
        m = _per_channel(0.0 if mean is None else mean, "mean", channels)
        s = _per_channel(1.0 if std is None else std, "std", channels)
        if bool((s <= 0).any()) or not bool(torch.isfinite(s).all()):
            raise DataError(f"std must be finite and > 0, got {s.tolist()}")
        if not bool(torch.isfinite(m).all()):
            raise DataError(f"mean must be finite, got {m.tolist()}")
        out = (out - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
    return out


def _per_channel(value: float | Sequence[float], field: str, channels: int) -> torch.Tensor:
    """A scalar or one number per channel, as a float32 tensor [channels]."""
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{field} must be a number or one number per channel, got {value!r}") from exc
    if tensor.numel() == 1:
        tensor = tensor.expand(channels)
    if tensor.numel() != channels:
        raise DataError(f"{field} must have {channels} values (one per channel), got {tensor.numel()}")
    return tensor
