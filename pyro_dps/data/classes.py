"""The classes of a protocol chosen by index or by name (a class folder's name, a CIFAR-10 class, a table's
label, an MNIST digit "0".."9"), checked against the data before anything is drawn."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pyro_dps.data._convert import check_int
from pyro_dps.errors import ConfigError, DataError


def class_index(value: int | str, names: Sequence[str], key: str) -> int:
    """A class given by index or by name as its index, so that a protocol's classes can be named as the data
    names them; ConfigError listing the names when it is neither."""
    if isinstance(value, str):
        if value not in names:
            raise ConfigError(f"{key} = {value!r} is not a class name; the classes are {_listed(names)}")
        return list(names).index(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{key} must be a class index or a class name, got {value!r}")
    if not 0 <= int(value) < len(names):
        raise ConfigError(f"{key} = {value} is not a class index: the {len(names)} classes are 0..{len(names) - 1} "
                          f"({_listed(names)})")
    return int(value)


def _listed(names: Sequence[str], limit: int = 20) -> str:
    """Class names for a message, the first `limit` of them when there are more."""
    shown = [str(n) for n in names[:limit]]
    return str(shown) if len(names) <= limit else f"{shown[:-1] + ['...']} ({len(names)} classes)"


def binary_classes(labels: torch.Tensor, minority: int | str, majority: int | str, names: Sequence[str],
                   counts: Mapping[str, int | None], where: str = "") -> tuple[int, int, int, int]:
    """(minority, majority) as class indices and (n_minor, n_major) checked against the classes' sizes in
    `labels` (None: every example of the class), so that a bad choice is named before anything is drawn."""
    minor = class_index(minority, names, f"{where}minority")
    major = class_index(majority, names, f"{where}majority")
    if minor == major:
        raise ConfigError(f"{where}minority and {where}majority must be different classes, got {names[minor]!r} "
                          "for both")
    sizes = []
    for key, cls in (("n_minor", minor), ("n_major", major)):
        have = int((labels == cls).sum())
        wanted = have if counts.get(key) is None else check_int(counts[key], f"{where}{key}", minimum=0)
        if wanted > have:
            raise DataError(f"{where}{key} = {wanted} exceeds the {have} training examples of class "
                            f"{names[cls]!r}")
        sizes.append(wanted)
    return minor, major, sizes[0], sizes[1]


def digit_names(arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The class names of MNIST-format data: its labels as strings, "0", "1", ... (the digits of MNIST)."""
    largest = max(int(np.max(arrays[key], initial=0)) for key in ("y_train", "y_test"))
    return tuple(str(c) for c in range(max(largest + 1, 2)))
