"""Controlled corruption of a training set (label noise, class imbalance) with known ground truth.

All functions are pure: they take labels (tensor or numpy array, never modified) and a seed (an int, or
a `torch.Generator` that is used and advanced), and return new tensors on the labels' device. Random
numbers are always drawn on the CPU, so results are identical on every device for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from pyro_dps.data._convert import (
    ArrayLike,
    Seed,
    as_labels,
    check_at_least,
    check_fraction,
    check_int,
    make_generator,
    preview,
)
from pyro_dps.errors import DataError

# CIFAR-10 class-dependent noise of Patrini et al. (2017): truck->automobile, bird->airplane,
# cat<->dog, deer->horse; the other classes are never flipped.
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

# MNIST class-dependent noise of Han et al. (2018): 2->7, 3->8, 5<->6, 7->1.
MNIST_ASYMMETRIC: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


def _labels_in_range(y: ArrayLike, num_classes: int, field: str = "y") -> torch.Tensor:
    """Labels as int64 on the CPU, checked to lie in [0, num_classes)."""
    labels = as_labels(y, field).cpu()
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        raise DataError(f"{field} has labels outside [0, {num_classes}): {preview(labels[bad])}")
    return labels


def _device_of(y: ArrayLike) -> torch.device:
    """The device results go back to: the labels' own device, else the CPU."""
    return y.device if isinstance(y, torch.Tensor) else torch.device("cpu")


def symmetric_noise(y: ArrayLike, rate: float, num_classes: int, seed: Seed) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each label with probability `rate` to a uniformly drawn DIFFERENT class; return (y_noisy, clean).

    Because a flipped label never equals the original, the expected clean fraction is exactly
    1 - rate (unlike the convention that redraws uniformly over all K classes, where it is
    1 - rate * (K - 1) / K). `clean` is the bool mask y_noisy == y.
    """
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    labels = _labels_in_range(y, num_classes)
    rate = check_fraction(rate, "rate")
    generator = make_generator(seed)
    n = labels.shape[0]
    flip = torch.rand(n, generator=generator) < rate
    offset = torch.randint(1, num_classes, (n,), generator=generator)  # uniform over the K-1 other classes
    noisy = torch.where(flip, (labels + offset) % num_classes, labels)
    device = _device_of(y)
    return noisy.to(device), (~flip).to(device)


def asymmetric_noise(
    y: ArrayLike,
    rate: float,
    num_classes: int,
    seed: Seed,
    mapping: Mapping[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each label c with probability `rate` to mapping[c] (default (c+1) % K); return (y_noisy, clean).

    Classes absent from `mapping` are never flipped, so the expected clean fraction is
    1 - rate * (fraction of examples whose class is in the mapping).
    """
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    labels = _labels_in_range(y, num_classes)
    rate = check_fraction(rate, "rate")
    if mapping is None:
        mapping = {c: (c + 1) % num_classes for c in range(num_classes)}
    if not isinstance(mapping, Mapping):
        raise DataError(f"mapping must be a dict of class -> class, got {type(mapping).__name__}")
    target = torch.arange(num_classes)
    flippable = torch.zeros(num_classes, dtype=torch.bool)
    for source, destination in mapping.items():
        for value, role in ((source, "key"), (destination, "value")):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < num_classes:
                raise DataError(f"mapping {role} {value!r} is not a class in [0, {num_classes})")
        source, destination = int(source), int(destination)
        if source == destination:
            raise DataError(f"mapping[{source}] = {destination} maps a class to itself; leave it out instead")
        target[source] = destination
        flippable[source] = True
    generator = make_generator(seed)
    flip = (torch.rand(labels.shape[0], generator=generator) < rate) & flippable[labels]
    noisy = torch.where(flip, target[labels], labels)
    device = _device_of(y)
    return noisy.to(device), (~flip).to(device)


def long_tail_counts(class_counts: list[int], imbalance_factor: float) -> list[int]:
    """Per-class sizes n_c = floor(n_max * factor^(-c/(K-1))), with the largest n_max the counts allow.

    n_max = min_c count_c * factor^(c/(K-1)), so n_0 = n_max and n_c <= count_c; for a balanced set
    of n examples per class this is n_max = n (Cui et al., 2019). Every class keeps at least 1 example.
    """
    factor = check_at_least(imbalance_factor, "imbalance_factor", 1.0)
    k = len(class_counts)
    if k < 2:
        raise DataError(f"class_counts must have at least 2 classes, got {k}")
    empty = [c for c, n in enumerate(class_counts) if n <= 0]
    if empty:
        raise DataError(f"y has no examples of classes {empty}; long_tail needs every class present")
    exponents = [c / (k - 1) for c in range(k)]
    n_max = min(n * factor**e for n, e in zip(class_counts, exponents, strict=True))
    return [
        min(n, max(1, math.floor(n_max * factor ** (-e) + 1e-9))) for n, e in zip(class_counts, exponents, strict=True)
    ]


def long_tail(y: ArrayLike, imbalance_factor: float, num_classes: int, seed: Seed) -> torch.Tensor:
    """Sorted indices of a random long-tailed subset following the exponential profile of `long_tail_counts`."""
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    labels = _labels_in_range(y, num_classes)
    check_at_least(imbalance_factor, "imbalance_factor", 1.0)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    targets = long_tail_counts(counts, imbalance_factor)
    generator = make_generator(seed)
    kept = []
    for c, n_keep in enumerate(targets):
        members = (labels == c).nonzero().flatten()
        kept.append(members[torch.randperm(members.shape[0], generator=generator)[:n_keep]])
    return torch.sort(torch.cat(kept)).values.to(_device_of(y))


def binary_imbalance(
    x: ArrayLike | None,
    y: ArrayLike,
    majority: int,
    minority: int,
    n_majority: int,
    n_minority: int,
    seed: Seed,
    classes: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n_majority + n_minority examples of two classes and relabel them 0/1; return (indices, labels).

    This is the paper's MNIST 4-vs-9 protocol (majority=9, minority=4, 4975 + 25). New label 0 is
    classes[0] and 1 is classes[1]; by default classes = (minority, majority), i.e. minority -> 0.
    Indices are sorted ascending. `x` (may be None) is only checked to have one row per label.
    """
    labels = as_labels(y, "y").cpu()
    if x is not None and len(x) != labels.shape[0]:
        raise DataError(f"x has {len(x)} examples but y has {labels.shape[0]} labels")
    majority = check_int(majority, "majority", minimum=0)
    minority = check_int(minority, "minority", minimum=0)
    if majority == minority:
        raise DataError(f"majority and minority must be different classes, got {majority} for both")
    if classes is None:
        classes = (minority, majority)
    if sorted(classes) != sorted((majority, minority)):
        raise DataError(f"classes must be an ordering of ({minority}, {majority}), got {classes!r}")
    generator = make_generator(seed)
    chosen = []
    for cls, count, field in ((majority, n_majority, "n_majority"), (minority, n_minority, "n_minority")):
        count = check_int(count, field, minimum=0)
        members = (labels == cls).nonzero().flatten()
        if count > members.shape[0]:
            raise DataError(f"{field}={count} exceeds the {members.shape[0]} examples of class {cls} in y")
        chosen.append(members[torch.randperm(members.shape[0], generator=generator)[:count]])
    indices = torch.sort(torch.cat(chosen)).values
    new_labels = (labels[indices] == classes[1]).to(torch.int64)
    device = _device_of(y)
    return indices.to(device), new_labels.to(device)
