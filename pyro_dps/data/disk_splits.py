"""[data] sources of files a user has, read into the in-memory DataSplits of a config run:

    source = "image_folder"  train, meta, test: folders <dir>/<class name>/*.png|jpg (image_mode "RGB" or "L")
    source = "npy"           train, meta, test: .npy features; train_labels, meta_labels, test_labels: .npy labels
    source = "table"         train, meta, test: .csv or .parquet files; label_column, feature_columns (optional)
    source = "hf_dataset"    train, meta, test: folders of `datasets.Dataset.save_to_disk`; the same columns

under one of two protocols: "noisy" (the default: D_t, D_m and the test set as the files have them, optionally
with synthetic label noise on D_t so that a selection can be scored on one's own data) or "binary_imbalance"
(two classes by index or name, n_major + n_minor of them in D_t, relabelled minority 0 / majority 1).
Files are only read. Labels are read first; the features of the chosen rows are then read CHUNK_ROWS at a time,
and more than MAX_IN_MEMORY_BYTES of them is a ConfigError: the Python API (`pyro_dps.data.DatasetRows`) reads
rows from disk as the sampler asks for them instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pyro_dps.data._convert import check_int, derive_seeds, make_generator
from pyro_dps.data.builders import NoiseKind, _check_noise, _corrupt, _subsample
from pyro_dps.data.classes import binary_classes
from pyro_dps.data.corruption import binary_imbalance
from pyro_dps.data.files import NpyRows, image_folder
from pyro_dps.data.rows import DatasetRows
from pyro_dps.data.splits import SPLIT_NAMES, DataSplits
from pyro_dps.errors import ConfigError, DataError, MetaCoverageWarning

MAX_IN_MEMORY_BYTES = 4 << 30  # float32 features of the three splits together; past this a config run refuses
CHUNK_ROWS = 4096
SOURCE_KEYS = {
    "image_folder": ("train", "meta", "test", "image_mode"),
    "npy": ("train", "train_labels", "meta", "meta_labels", "test", "test_labels"),
    "table": ("train", "meta", "test", "label_column", "feature_columns"),
    "hf_dataset": ("train", "meta", "test", "label_column", "feature_columns"),
}
OPTIONAL_KEYS = {"image_folder": ("image_mode",), "table": ("feature_columns",)}  # a table: its numeric columns
REQUIRED_KEYS = {source: tuple(k for k in keys if k not in OPTIONAL_KEYS.get(source, ()))
                 for source, keys in SOURCE_KEYS.items()}
PROTOCOL_KEYS = {"noisy": ("seed", "noise", "noise_rate", "meta_per_class", "n_train", "n_test"),
                 "binary_imbalance": ("seed", "minority", "majority", "n_minor", "n_major", "meta_per_class",
                                      "n_test")}
META_GAP_GROUP = "class_without_meta"  # the group of a config run's D_t marking the classes D_m lacks (spec.py)
FOLDER_KEYS = {"image_folder": ("train", "meta", "test"), "hf_dataset": ("train", "meta", "test")}
PATH_KEYS = ("train", "meta", "test", "train_labels", "meta_labels", "test_labels")  # the keys that name files


@dataclass
class _Opened:
    """A file source's three splits opened, nothing but labels read: datasets of feature rows, labels in the
    train set's class space, the class names."""

    datasets: dict[str, Dataset]
    labels: dict[str, torch.Tensor]
    names: tuple[str, ...]
    paths: dict[str, str]


def file_splits(source: str, protocol: str = "noisy", **spec: Any) -> DataSplits:
    """The DataSplits of a file source ([data] keys of SOURCE_KEYS and PROTOCOL_KEYS); every key and path is
    checked before a file is opened, so that a typo costs nothing."""
    check_file_keys(source, protocol, spec)
    _check_paths(source, spec)
    opened = _open(source, {key: spec.pop(key) for key in SOURCE_KEYS[source] if key in spec})
    if protocol == "binary_imbalance":
        return _binary_splits(opened, source, **spec)
    return _noisy_splits(opened, source, **spec)


def check_file_keys(source: str, protocol: str, spec: dict) -> None:
    """[data] of a file source names only keys its source and protocol take, and every key it needs."""
    if source not in SOURCE_KEYS:
        raise ConfigError(f"data.source must be one of {sorted(SOURCE_KEYS)}, got {source!r}")
    if protocol not in PROTOCOL_KEYS:
        raise ConfigError(f"data.protocol must be one of {sorted(PROTOCOL_KEYS)}, got {protocol!r}")
    takes = set(SOURCE_KEYS[source]) | set(PROTOCOL_KEYS[protocol])
    unused = sorted(set(spec) - takes)
    if unused:
        raise ConfigError(f"data.{unused[0]} is not used by data.source = {source!r} with data.protocol = "
                          f"{protocol!r} (it takes {sorted(takes | {'protocol', 'source'})})")
    needed = REQUIRED_KEYS[source] + (("minority", "majority") if protocol == "binary_imbalance" else ())
    missing = [key for key in needed if key not in spec]
    if missing:
        raise ConfigError(f"data.{missing[0]} is required for data.source = {source!r} with data.protocol = "
                          f"{protocol!r}")
    columns = spec.get("feature_columns")
    if columns is not None and (not isinstance(columns, list) or not columns
                                or not all(isinstance(c, str) for c in columns)):
        raise ConfigError(f"data.feature_columns must be a non-empty list of column names, got {columns!r}")
    if spec.get("image_mode", "RGB") not in ("RGB", "L"):
        raise ConfigError(f"data.image_mode must be 'RGB' or 'L', got {spec['image_mode']!r}")


def _check_paths(source: str, spec: dict) -> None:
    """Every path of the source exists, a folder where the source reads a folder and a file elsewhere."""
    folders = FOLDER_KEYS.get(source, ())
    for key in (k for k in SOURCE_KEYS[source] if k in PATH_KEYS):
        path = Path(spec[key])
        if not path.exists():
            raise ConfigError(f"data.{key} = {spec[key]!r} does not exist")
        if key in folders and not path.is_dir():
            raise ConfigError(f"data.{key} = {spec[key]!r} is not a directory (data.source = {source!r} reads one)")
        if key not in folders and not path.is_file():
            raise ConfigError(f"data.{key} = {spec[key]!r} is not a file (data.source = {source!r} reads one)")


def _open(source: str, keys: dict) -> _Opened:
    """The source's splits opened (labels read, features not), their classes aligned on the train set's."""
    datasets, labels, names = {}, {}, {}
    for split in SPLIT_NAMES:
        try:
            datasets[split], labels[split], names[split] = _open_split(source, split, keys)
        except DataError as exc:
            raise DataError(str(exc) if str(exc).startswith("data.") else f"data.{split}: {exc}") from None
    aligned, classes = _align(labels, names)
    return _Opened(datasets, aligned, classes, {s: keys[s] for s in SPLIT_NAMES})


def _open_split(source: str, split: str, keys: dict) -> tuple[Dataset, torch.Tensor, list[str] | None]:
    """One split of the source: (its dataset of feature rows, its int64 labels, its class names or None when
    its labels are class indices)."""
    path = keys[split]
    if source == "image_folder":
        dataset, labels = image_folder(path, mode=keys.get("image_mode", "RGB"))
        return dataset, labels, list(dataset.classes)
    if source == "npy":
        dataset = NpyRows(path)
        return dataset, _npy_labels(keys[f"{split}_labels"], f"{split}_labels", len(dataset)), None
    from pyro_dps.data import tables  # reads CSV/Parquet (pandas/pyarrow) and saved HF data sets (`datasets`)

    columns = keys.get("feature_columns")
    if source == "table":
        dataset, labels = tables.table_rows(path, keys["label_column"], columns)
    else:
        dataset, labels = tables.hf_rows(path, columns, keys["label_column"])
    classes = getattr(dataset, "classes", None)
    return dataset, torch.as_tensor(labels).to(torch.int64), None if classes is None else [str(c) for c in classes]


def _npy_labels(path: str, key: str, rows: int) -> torch.Tensor:
    """A .npy of labels (never unpickled): 1-D non-negative integers, one per row of the features."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"data.{key} = {path!r} cannot be read as a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"data.{key} = {path!r} must hold a 1-D array of integer labels, got "
                        f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}")
    if array.shape[0] != rows:
        raise DataError(f"data.{key} has {array.shape[0]} labels but its features have {rows} rows")
    if array.size and int(array.min()) < 0:
        raise DataError(f"data.{key} has negative labels ({int(array.min())}); labels are class indices from 0")
    return torch.from_numpy(array.astype(np.int64))


def _align(labels: dict[str, torch.Tensor], names: dict[str, list[str] | None]
           ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Labels of the three splits in one class space: the train set's class names (each split numbers its
    own names from 0), or 0..K-1 when the labels are indices. A class of the meta or test set that the train
    set lacks is an error; the meta and test sets may lack classes."""
    if all(n is None for n in names.values()):
        for split, y in labels.items():
            if y.numel() and int(y.min()) < 0:
                raise DataError(f"data.{split} has negative labels ({int(y.min())}); integer labels are class "
                                "indices from 0")
        largest = max((int(y.max()) for y in labels.values() if y.numel()), default=1)
        return labels, tuple(str(c) for c in range(max(largest + 1, 2)))
    if any(n is None for n in names.values()):
        kinds = {s: "class indices" if n is None else "class names" for s, n in names.items()}
        raise DataError(f"the splits' labels must all be names or all be indices, got {kinds}")
    train = names["train"]
    out = {"train": labels["train"]}
    for split in ("meta", "test"):
        extra = sorted(set(names[split]) - set(train))
        if extra:
            raise DataError(f"data.{split} has classes {extra} that data.train lacks (its classes: {train}); "
                            "the splits must share one set of class names")
        remap = torch.tensor([train.index(n) for n in names[split]], dtype=torch.int64)
        out[split] = remap[labels[split]] if labels[split].numel() else labels[split]
    return out, tuple(train)


def _per_class(labels: torch.Tensor, limit: int | None, key: str, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most `limit` examples of each class, drawn at random (all of them when limit is None)."""
    if limit is None:
        return torch.arange(labels.shape[0])
    limit = check_int(limit, key, minimum=1)
    keep = [members[torch.randperm(members.shape[0], generator=generator)[:limit]]
            for members in ((labels == c).nonzero().flatten() for c in torch.unique(labels))]
    return torch.sort(torch.cat(keep)).values if keep else torch.arange(0)


def _noisy_splits(opened: _Opened, source: str, seed: int = 0, noise: NoiseKind = None,
                  noise_rate: float | None = None, meta_per_class: int | None = None, n_train: int | None = None,
                  n_test: int | None = None) -> DataSplits:
    """The files' D_t (n_train of it at random), D_m (at most meta_per_class per class) and test set (n_test),
    D_t's labels corrupted by `noise` when asked: then `clean` and `y_train_true` say which were."""
    check_int(seed, "data.seed")
    if noise is not None and noise_rate is None:
        raise ConfigError(f"data.noise = {noise!r} needs data.noise_rate (the fraction of D_t's labels to corrupt)")
    if noise is None and noise_rate:
        raise ConfigError(f"data.noise_rate = {noise_rate} needs data.noise = 'symmetric' or 'asymmetric' (without "
                          "it the files' labels are used as they are)")
    rate = _check_noise(noise, 0.0 if noise_rate is None else noise_rate)
    split_seed, noise_seed = derive_seeds(seed, 2)
    generator = make_generator(split_seed)
    y = opened.labels
    idx = {"train": _subsample(torch.arange(y["train"].shape[0]), n_train, "data.n_train", generator),
           "meta": _per_class(y["meta"], meta_per_class, "data.meta_per_class", generator),
           "test": _subsample(torch.arange(y["test"].shape[0]), n_test, "data.n_test", generator)}
    x = _read(opened, idx)
    num_classes = len(opened.names)
    y_true = y["train"][idx["train"]]
    y_train, clean = _corrupt(y_true, noise, rate, num_classes, noise_seed, None)
    corrupted = noise is not None
    splits = DataSplits(x_train=x["train"], y_train=y_train, x_meta=x["meta"], y_meta=y["meta"][idx["meta"]],
                      x_test=x["test"], y_test=y["test"][idx["test"]], num_classes=num_classes,
                      clean=clean if corrupted else None, y_train_true=y_true if corrupted else None,
                      name=source if not corrupted else f"{source}-{noise}-{rate:g}")
    return _validated(splits, opened.names)


def _binary_splits(opened: _Opened, source: str, minority: int | str, majority: int | str, seed: int = 0,
                   n_minor: int | None = None, n_major: int | None = None, meta_per_class: int | None = None,
                   n_test: int | None = None) -> DataSplits:
    """The binary-imbalance protocol on the files: D_t = n_major + n_minor train examples of the two classes
    (every one when not given; label 0 = minority, 1 = majority), D_m = the meta set's examples of them (at most
    meta_per_class each), test = the test set's (n_test of them at random)."""
    check_int(seed, "data.seed")
    subset_seed, split_seed = derive_seeds(seed, 2)
    generator = make_generator(split_seed)
    y, names = opened.labels, opened.names
    minor, major, n_minor, n_major = binary_classes(y["train"], minority, majority, names,
                                                    {"n_minor": n_minor, "n_major": n_major}, "data.")
    train_idx, y_train = binary_imbalance(None, y["train"], major, minor, n_major, n_minor, subset_seed,
                                          classes=(minor, major))
    pools = {s: ((y[s] == minor) | (y[s] == major)).nonzero().flatten() for s in ("meta", "test")}
    if not pools["meta"].numel():
        raise DataError(f"data.meta has no example of {names[minor]!r} or {names[major]!r}: the meta set must "
                        "hold at least one example of the two classes")
    idx = {"train": train_idx,
           "meta": pools["meta"][_per_class(y["meta"][pools["meta"]], meta_per_class, "data.meta_per_class",
                                            generator)],
           "test": _subsample(pools["test"], n_test, "data.n_test", generator)}
    x = _read(opened, idx)
    splits = DataSplits(x_train=x["train"], y_train=y_train, x_meta=x["meta"],
                        y_meta=(y["meta"][idx["meta"]] == major).to(torch.int64), x_test=x["test"],
                        y_test=(y["test"][idx["test"]] == major).to(torch.int64), num_classes=2,
                        groups={"class": y_train.clone()}, name=f"{source}-{names[minor]}v{names[major]}")
    return _validated(splits, (names[minor], names[major]))


def _validated(splits: DataSplits, names: Sequence[str]) -> DataSplits:
    """`splits.validate()`, with a meta set that lacks classes warned about by the classes' names
    (MetaCoverageWarning): allowed, and the training examples of those classes are kept and counted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetaCoverageWarning)  # said below, with the names
        splits.validate()
    missing = splits.classes_without_meta()
    if missing:
        affected = int(splits.without_meta_mask().sum())
        kept = (f"; they are kept, their weights rest on D_t alone, and the run's metrics and report count them "
                f"(group {META_GAP_GROUP!r})") if affected else ""
        warnings.warn(f"data.meta has no example of classes {[names[c] for c in missing]}: {affected} of the "
                      f"{splits.n_train} training examples carry those labels{kept}", MetaCoverageWarning,
                      stacklevel=3)
    return splits


def _read(opened: _Opened, idx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The features of rows `idx` of each split as float32 tensors, read CHUNK_ROWS at a time, once their
    shapes agree and their size is within MAX_IN_MEMORY_BYTES."""
    rows, shape = {}, None
    for split in SPLIT_NAMES:
        try:
            rows[split] = DatasetRows(opened.datasets[split])
        except DataError as exc:
            raise DataError(f"data.{split} ({opened.paths[split]!r}): {exc}") from None
        if shape is not None and rows[split].feature_shape != shape:
            raise DataError(f"data.{split} has rows of shape {rows[split].feature_shape} but data.train has "
                            f"{shape}: the splits must share one shape (resize the images, or give the Python API "
                            "a transform)")
        shape = rows[split].feature_shape
    per_row = 4 * int(np.prod(shape, dtype=np.int64))
    total = sum(per_row * int(i.numel()) for i in idx.values())
    if total > MAX_IN_MEMORY_BYTES:
        raise ConfigError(f"the chosen rows of data.train, data.meta and data.test take {total / 2 ** 30:.1f} GiB as "
                          f"float32, more than a config run reads into memory ({MAX_IN_MEMORY_BYTES / 2 ** 30:g} "
                          "GiB): use fewer rows (data.n_train, data.n_test), or the Python API, which reads rows "
                          "from disk as the sampler asks for them (pyro_dps.data.DatasetRows)")
    return {split: _gather(rows[split], idx[split], f"data.{split} ({opened.paths[split]!r})")
            for split in SPLIT_NAMES}


def _gather(rows: DatasetRows, idx: torch.Tensor, where: str) -> torch.Tensor:
    """Rows `idx` of one split, read CHUNK_ROWS at a time into one float32 tensor."""
    out = torch.empty((idx.numel(), *rows.feature_shape), dtype=torch.float32)
    try:
        for start in range(0, idx.numel(), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = rows.gather(idx[start:start + CHUNK_ROWS]).to(torch.float32)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    return out
