"""The three data sets of data point selection: (possibly noisy) train D_t, curated meta D_m, and test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from pyro_dps.data._convert import ArrayLike, as_features, as_labels, as_mask, check_int, is_integer_dtype, preview
from pyro_dps.data.rows import read_pairs
from pyro_dps.errors import DataError, MetaCoverageWarning

SPLIT_NAMES = ("train", "meta", "test")


@dataclass(eq=False, repr=False)
class DataSplits:
    """Train, meta and test tensors plus the ground truth needed to score a data point selection."""

    x_train: torch.Tensor  # float32 [N_t, ...features]
    y_train: torch.Tensor  # int64 [N_t], possibly corrupted labels
    x_meta: torch.Tensor  # float32 [N_m, ...features], curated
    y_meta: torch.Tensor  # int64 [N_m]
    x_test: torch.Tensor  # float32 [N_test, ...features]
    y_test: torch.Tensor  # int64 [N_test]
    num_classes: int
    clean: torch.Tensor | None = None  # bool [N_t]: ground truth "this train example is clean"
    y_train_true: torch.Tensor | None = None  # int64 [N_t]: labels before corruption, when known
    groups: dict[str, torch.Tensor] = field(default_factory=dict)  # int64 [N_t] group ids
    name: str = "custom"
    texts_train: tuple[str, ...] | None = None  # [N_t] the texts of text data, shown by the report; else None

    @property
    def n_train(self) -> int:
        """Number of training examples N_t."""
        return int(self.x_train.shape[0])

    @property
    def n_meta(self) -> int:
        """Number of meta examples N_m."""
        return int(self.x_meta.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example's features (shared by all splits)."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy with every tensor on `device`, so that training can run on an accelerator."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_meta=self.x_meta.to(device),
            y_meta=self.y_meta.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            clean=move(self.clean),
            y_train_true=move(self.y_train_true),
            groups={key: value.to(device) for key, value in self.groups.items()},
        )

    def classes_without_meta(self) -> list[int]:
        """Classes of D_t or the test set with no example in the meta set."""
        seen = set(torch.unique(self.y_train).tolist()) | set(torch.unique(self.y_test).tolist())
        return sorted(seen - set(torch.unique(self.y_meta).tolist()))

    def without_meta_mask(self) -> torch.Tensor:
        """bool [N_t]: the training examples whose class has no example in the meta set."""
        missing = torch.tensor(self.classes_without_meta(), dtype=self.y_train.dtype, device=self.y_train.device)
        return torch.isin(self.y_train, missing)

    def _warn_uncovered_classes(self) -> None:
        """A meta set that lacks some classes is allowed (the curated set may be what the user has), with a
        warning naming them and how many training examples carry them: nothing in D_m speaks for those."""
        missing = self.classes_without_meta()
        if missing:
            affected = int(self.without_meta_mask().sum())
            warnings.warn(f"y_meta has no example of classes {missing}: {affected} of the {self.n_train} training "
                          "examples carry those labels, and their weights and the test accuracy on those classes "
                          "rest on D_t alone", MetaCoverageWarning, stacklevel=3)

    def validate(self) -> DataSplits:
        """Check shapes, dtypes, finiteness, label ranges and meta coverage; raise DataError naming the field."""
        if not isinstance(self.name, str):
            raise DataError(f"name must be a string, got {self.name!r}")
        num_classes = check_int(self.num_classes, "num_classes", minimum=2)
        feature_shape: tuple[int, ...] | None = None
        for split in SPLIT_NAMES:
            x_field, y_field = f"x_{split}", f"y_{split}"
            x, y = getattr(self, x_field), getattr(self, y_field)
            _check_features(x, x_field)
            _check_labels(y, y_field, num_classes)
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{x_field} has {x.shape[0]} examples but {y_field} has {y.shape[0]} labels")
            if feature_shape is None:
                feature_shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != feature_shape:
                raise DataError(
                    f"{x_field} has feature shape {tuple(x.shape[1:])} but x_train has {feature_shape}; "
                    "all splits must share one feature shape"
                )
        if self.n_train == 0:
            raise DataError("x_train is empty: at least 1 training example is required")
        if self.n_meta == 0:
            raise DataError("x_meta is empty: at least 1 meta example is required")
        self._warn_uncovered_classes()
        if self.clean is not None:
            if not isinstance(self.clean, torch.Tensor) or self.clean.dtype != torch.bool:
                raise DataError(f"clean must be a bool tensor, got {_kind(self.clean)}")
            _check_length(self.clean, "clean", self.n_train)
        if self.y_train_true is not None:
            _check_labels(self.y_train_true, "y_train_true", num_classes)
            _check_length(self.y_train_true, "y_train_true", self.n_train)
        if not isinstance(self.groups, dict):
            raise DataError(f"groups must be a dict of str -> int64 tensor, got {_kind(self.groups)}")
        for key, value in self.groups.items():
            if not isinstance(key, str):
                raise DataError(f"groups keys must be strings, got {key!r}")
            if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.ndim != 1:
                raise DataError(f"groups[{key!r}] must be an int64 tensor of shape [N_t], got {_kind(value)}")
            _check_length(value, f"groups[{key!r}]", self.n_train)
        if self.texts_train is not None:
            _check_texts(self.texts_train, self.n_train)
        return self

    def __repr__(self) -> str:
        """A one-line summary; the default dataclass repr would print whole tensors."""
        extra = [f"clean={self.clean.float().mean().item():.3f}"] if self.clean is not None and self.n_train else []
        extra += [f"groups={sorted(self.groups)}"] if self.groups else []
        return (
            f"DataSplits(name={self.name!r}, n_train={self.n_train}, n_meta={self.n_meta}, n_test={self.n_test}, "
            f"num_classes={self.num_classes}, feature_shape={self.feature_shape}"
            + "".join(", " + e for e in extra)
            + ")"
        )


def _kind(value: Any) -> str:
    """Describe a value's type (and dtype/shape for tensors) for an error message."""
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__


def _check_features(x: Any, field_name: str) -> None:
    """Features must be a float32 tensor [N, ...] with finite values."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{field_name} must be a torch.Tensor, got {_kind(x)} (use from_arrays to convert)")
    if x.dtype != torch.float32:
        raise DataError(f"{field_name} must have dtype float32, got {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{field_name} must have shape [N, ...features], got shape {tuple(x.shape)}")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        flat = bad.reshape(x.shape[0], -1)
        row = int(flat.any(dim=1).nonzero()[0, 0])
        value = x.reshape(x.shape[0], -1)[row][flat[row]][0].item()
        count = int(flat.any(dim=1).sum())
        raise DataError(f"{field_name} has non-finite features ({value} in example {row}; {count} examples affected)")


def _check_texts(texts: Any, n_train: int) -> None:
    """texts_train must be a tuple of N_t strings: the report shows a train example's text by its row."""
    if not isinstance(texts, tuple) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"texts_train must be a tuple of strings, got {_kind(texts)}")
    if len(texts) != n_train:
        raise DataError(f"texts_train must have {n_train} texts (one per train example), got {len(texts)}")


def _check_labels(y: Any, field_name: str, num_classes: int) -> None:
    """Labels must be an int64 tensor [N] with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{field_name} must be a torch.Tensor, got {_kind(y)} (use from_arrays to convert)")
    if y.dtype != torch.int64:
        raise DataError(f"{field_name} must have dtype int64, got {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"{field_name} must have shape [N], got shape {tuple(y.shape)}")
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        raise DataError(f"{field_name} has labels outside [0, {num_classes}): {preview(y[bad])}")


def _check_length(value: torch.Tensor, field_name: str, n_train: int) -> None:
    """A per-train-example tensor must have shape [N_t]."""
    if value.ndim != 1 or value.shape[0] != n_train:
        raise DataError(
            f"{field_name} must have shape [{n_train}] (one entry per train example), got {tuple(value.shape)}"
        )


def _infer_num_classes(labels: list[torch.Tensor]) -> int:
    """1 + the largest label seen (at least 2), used when num_classes is not given."""
    largest = max((int(y.max()) for y in labels if y.numel()), default=1)
    return max(2, largest + 1)


def from_arrays(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_meta: ArrayLike,
    y_meta: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    num_classes: int | None = None,
    clean: ArrayLike | None = None,
    y_train_true: ArrayLike | None = None,
    groups: Mapping[str, ArrayLike] | None = None,
    name: str = "custom",
) -> DataSplits:
    """Validated DataSplits from numpy arrays or tensors (features -> float32 unscaled, labels -> int64)."""
    xs = {f"x_{s}": as_features(v, f"x_{s}") for s, v in zip(SPLIT_NAMES, (x_train, x_meta, x_test), strict=True)}
    ys = {f"y_{s}": as_labels(v, f"y_{s}") for s, v in zip(SPLIT_NAMES, (y_train, y_meta, y_test), strict=True)}
    true = None if y_train_true is None else as_labels(y_train_true, "y_train_true")
    if num_classes is None:
        num_classes = _infer_num_classes([*ys.values(), *([true] if true is not None else [])])
    group_tensors: dict[str, torch.Tensor] = {}
    for key, value in (groups or {}).items():
        group_tensors[key] = as_labels(value, f"groups[{key!r}]")
    return DataSplits(
        **xs,
        **ys,
        num_classes=num_classes,
        clean=None if clean is None else as_mask(clean, "clean"),
        y_train_true=true,
        groups=group_tensors,
        name=name,
    ).validate()


def _stack_dataset(dataset: Dataset[Any], split: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Read every (x, y) pair of a dataset into stacked features and int64 labels (x is None when empty)."""
    items = (dataset[i] for i in range(len(dataset))) if hasattr(dataset, "__len__") else iter(dataset)
    x, labels = read_pairs(items, f"the {split} dataset")
    ys = [_scalar_label(y, f"y_{split}[{index}]") for index, y in enumerate(labels)]
    return x, torch.tensor(ys, dtype=torch.int64)


def _scalar_label(y: Any, field_name: str) -> int:
    """One label as a Python int; floats and bools are refused (labels need an integer dtype)."""
    if isinstance(y, torch.Tensor | np.ndarray | np.generic):
        tensor = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
        if tensor.numel() != 1 or not is_integer_dtype(tensor.dtype):
            raise DataError(f"{field_name} must be one integer label, got {_kind(tensor)}")
        return int(tensor.reshape(()).item())
    if isinstance(y, bool) or not isinstance(y, int):
        raise DataError(f"{field_name} must be an integer label, got {y!r}")
    return y


def from_datasets(
    train: Dataset[Any],
    meta: Dataset[Any],
    test: Dataset[Any],
    num_classes: int | None = None,
    clean: ArrayLike | None = None,
    y_train_true: ArrayLike | None = None,
    groups: Mapping[str, ArrayLike] | None = None,
    name: str = "custom",
) -> DataSplits:
    """Validated DataSplits from torch Datasets yielding (x, y) pairs (all items are read into memory)."""
    x_train, y_train = _stack_dataset(train, "train")
    x_meta, y_meta = _stack_dataset(meta, "meta")
    x_test, y_test = _stack_dataset(test, "test")
    if x_train is None:
        raise DataError("train dataset is empty: at least 1 training example is required")
    if x_meta is None:
        raise DataError("meta dataset is empty: at least 1 meta example is required")
    if x_test is None:
        x_test = torch.zeros((0, *x_train.shape[1:]), dtype=torch.float32)
    return from_arrays(
        x_train,
        y_train,
        x_meta,
        y_meta,
        x_test,
        y_test,
        num_classes=num_classes,
        clean=clean,
        y_train_true=y_train_true,
        groups=groups,
        name=name,
    )
