"""Ready experimental scenarios: validated DataSplits, each fully determined by its arguments and seed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pyro_dps.data._convert import as_labels, check_fraction, check_int, derive_seeds, make_generator
from pyro_dps.data.classes import binary_classes, digit_names
from pyro_dps.data.corruption import CIFAR10_ASYMMETRIC, asymmetric_noise, binary_imbalance, long_tail, symmetric_noise
from pyro_dps.data.loaders import channel_stats, images_to_float, load_cifar10, load_mnist
from pyro_dps.data.splits import DataSplits
from pyro_dps.errors import ConfigError, DataError

NoiseKind = Literal["symmetric", "asymmetric"] | None
NOISE_KINDS = ("symmetric", "asymmetric", None)
PathLike = str | os.PathLike[str]


def _check_noise(noise: NoiseKind, noise_rate: float) -> float:
    """Validate the noise kind (ConfigError) and rate (DataError) before any data is read."""
    if noise not in NOISE_KINDS:
        raise ConfigError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    return check_fraction(noise_rate, "noise_rate")


def _noise_name(noise: NoiseKind, noise_rate: float) -> str:
    """The noise part of a scenario name, e.g. 'symmetric-0.5' or 'clean'."""
    return "clean" if noise is None else f"{noise}-{noise_rate:g}"


def _corrupt(
    y_true: torch.Tensor,
    noise: NoiseKind,
    noise_rate: float,
    num_classes: int,
    seed: int,
    mapping: Mapping[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed labels and clean mask for one noise kind (None keeps every label)."""
    if noise == "symmetric":
        return symmetric_noise(y_true, noise_rate, num_classes, seed)
    if noise == "asymmetric":
        return asymmetric_noise(y_true, noise_rate, num_classes, seed, mapping=mapping)
    return y_true.clone(), torch.ones_like(y_true, dtype=torch.bool)


def _balanced_draws(
    labels: torch.Tensor, num_classes: int, sizes: Mapping[str, int], generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Disjoint class-balanced index sets (sizes[name] per class) and the shuffled remaining indices."""
    counts = torch.bincount(labels, minlength=num_classes)
    needed = sum(sizes.values())
    short = [c for c in range(num_classes) if int(counts[c]) < needed]
    if short:
        fields = " + ".join(f"{name}={size}" for name, size in sizes.items())
        raise DataError(
            f"{fields} needs {needed} examples per class but classes {short} have only "
            f"{[int(counts[c]) for c in short]}"
        )
    chosen: dict[str, list[torch.Tensor]] = {name: [] for name in sizes}
    rest: list[torch.Tensor] = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(members.shape[0], generator=generator)]
        start = 0
        for name, size in sizes.items():
            chosen[name].append(members[start : start + size])
            start += size
        rest.append(members[start:])

    def shuffled(parts: list[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(parts)
        return joined[torch.randperm(joined.shape[0], generator=generator)]

    return {name: shuffled(parts) for name, parts in chosen.items()}, shuffled(rest)


def _subsample(indices: torch.Tensor, limit: int | None, field: str, generator: torch.Generator) -> torch.Tensor:
    """A random subset of at most `limit` indices (all of them when limit is None), order kept."""
    if limit is None:
        return indices
    limit = check_int(limit, field, minimum=1)
    if limit >= indices.shape[0]:
        return indices
    keep = torch.sort(torch.randperm(indices.shape[0], generator=generator)[:limit]).values
    return indices[keep]


def digits_splits(
    seed: int = 0,
    noise: NoiseKind = "symmetric",
    noise_rate: float = 0.5,
    meta_per_class: int = 10,
    test_per_class: int = 30,
    imbalance_factor: float | None = None,
    noise_mapping: Mapping[int, int] | None = None,
) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features in [0,1]): balanced clean meta/test, noisy D_t.

    D_t is what is left after the class-balanced test (`test_per_class`) and meta (`meta_per_class`)
    draws; it is optionally made long-tailed (`imbalance_factor`), then corrupted (`noise`). No download.
    """
    from sklearn.datasets import load_digits

    check_int(seed, "seed")
    noise_rate = _check_noise(noise, noise_rate)
    meta_per_class = check_int(meta_per_class, "meta_per_class", minimum=1)
    test_per_class = check_int(test_per_class, "test_per_class", minimum=0)
    split_seed, tail_seed, noise_seed = derive_seeds(seed, 3)
    digits = load_digits()
    x = torch.from_numpy(np.asarray(digits.data, dtype=np.float32) / 16.0)
    y = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    num_classes = 10
    draws, train_idx = _balanced_draws(
        y,
        num_classes,
        {"test_per_class": test_per_class, "meta_per_class": meta_per_class},
        make_generator(split_seed),
    )
    name = f"digits-{_noise_name(noise, noise_rate)}"
    if imbalance_factor is not None:
        keep = long_tail(y[train_idx], imbalance_factor, num_classes, tail_seed)
        train_idx = train_idx[keep]
        name += f"-lt{imbalance_factor:g}"
    y_true = y[train_idx]
    y_noisy, clean = _corrupt(y_true, noise, noise_rate, num_classes, noise_seed, noise_mapping)
    meta_idx, test_idx = draws["meta_per_class"], draws["test_per_class"]
    return DataSplits(
        x_train=x[train_idx],
        y_train=y_noisy,
        x_meta=x[meta_idx],
        y_meta=y[meta_idx],
        x_test=x[test_idx],
        y_test=y[test_idx],
        num_classes=num_classes,
        clean=clean,
        y_train_true=y_true,
        name=name,
    ).validate()


def _binary_pool_splits(arrays: dict[str, np.ndarray], names: Sequence[str], base: str, normalise: bool,
                        seed: int, meta_per_class: int, counts: Mapping[str, int], minority: int | str,
                        majority: int | str) -> DataSplits:
    """The binary-imbalance protocol on train/test image arrays: D_t = n_major + n_minor train images of the
    two classes (label 0 = minority), meta drawn class-balanced from the rest of them, test = every test image
    of the two classes."""
    check_int(seed, "seed")
    meta_per_class = check_int(meta_per_class, "meta_per_class", minimum=1)
    subset_seed, meta_seed = derive_seeds(seed, 2)
    y_train = as_labels(arrays["y_train"], "y_train")
    y_test = as_labels(arrays["y_test"], "y_test")
    minority, majority, n_minor, n_major = binary_classes(y_train, minority, majority, names, counts)
    train_idx, train_labels = binary_imbalance(
        None, y_train, majority, minority, n_major, n_minor, subset_seed, classes=(minority, majority)
    )
    unused = torch.ones_like(y_train, dtype=torch.bool)
    unused[train_idx] = False
    pool = ((y_train == minority) | (y_train == majority)) & unused
    pool_idx = pool.nonzero().flatten()
    pool_labels = (y_train[pool_idx] == majority).to(torch.int64)
    draws, _ = _balanced_draws(pool_labels, 2, {"meta_per_class": meta_per_class}, make_generator(meta_seed))
    meta_idx = pool_idx[draws["meta_per_class"]]
    test_idx = ((y_test == minority) | (y_test == majority)).nonzero().flatten()
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    mean, std = channel_stats(x_train) if normalise else (None, None)

    def images(x: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
        return images_to_float(x[idx.numpy()], mean=mean, std=std)

    return DataSplits(
        x_train=images(x_train, train_idx),
        y_train=train_labels,
        x_meta=images(x_train, meta_idx),
        y_meta=(y_train[meta_idx] == majority).to(torch.int64),
        x_test=images(x_test, test_idx),
        y_test=(y_test[test_idx] == majority).to(torch.int64),
        num_classes=2,
        clean=None,
        y_train_true=None,
        groups={"class": train_labels.clone()},
        name=f"{base}-{names[minority]}v{names[majority]}",
    ).validate()


def mnist_4v9_splits(
    path: PathLike,
    seed: int = 0,
    meta_per_class: int = 25,
    n_major: int = 4975,
    n_minor: int = 25,
    minority: int | str = 4,
    majority: int | str = 9,
) -> DataSplits:
    """The paper's imbalanced MNIST 4-vs-9 task: D_t = n_major nines + n_minor fours, label 0 = four, 1 = nine.

    The meta set has `meta_per_class` of each class, drawn from the train images not in D_t; the test
    set is every MNIST test image of the two classes. Images are float32 [N,1,28,28] in [0,1];
    `clean` is None (nothing is corrupted) and groups["class"] holds the D_t labels.
    `path` is mnist.npz or a directory of MNIST IDX files (any MNIST-format data: `minority` and `majority`
    are class indices or their names "0".."9").
    """
    arrays = load_mnist(path)
    return _binary_pool_splits(arrays, digit_names(arrays), "mnist", False, seed, meta_per_class,
                               {"n_major": n_major, "n_minor": n_minor}, minority, majority)


def mnist_like_binary_splits(
    path: PathLike,
    minority: int | str,
    majority: int | str,
    seed: int = 0,
    meta_per_class: int = 25,
    n_major: int = 4975,
    n_minor: int = 25,
) -> DataSplits:
    """The protocol of `mnist_4v9_splits` on any MNIST-format data (fashion_mnist.npz, an IDX directory) and any
    two of its classes, by index or name ("0".."9"); the splits are named after the file."""
    arrays = load_mnist(path)
    return _binary_pool_splits(arrays, digit_names(arrays), Path(path).stem, False, seed, meta_per_class,
                               {"n_major": n_major, "n_minor": n_minor}, minority, majority)


def cifar10_binary_splits(
    path: PathLike,
    minority: int | str,
    majority: int | str,
    seed: int = 0,
    meta_per_class: int = 25,
    n_major: int = 4975,
    n_minor: int = 25,
) -> DataSplits:
    """The binary-imbalance protocol of `mnist_4v9_splits` on CIFAR-10 (npz or batch directory): two classes
    by index or name ("cat", "dog", ...: the file's class_names), images standardised per channel as in
    `cifar10_noisy_splits`."""
    arrays = load_cifar10(path)
    names = tuple(str(n) for n in arrays["class_names"])
    return _binary_pool_splits(arrays, names, "cifar10", True, seed, meta_per_class,
                               {"n_major": n_major, "n_minor": n_minor}, minority, majority)


MAX_CLASSES = 10 ** 5  # beyond this, "labels" are not class indices (and bincount would allocate gigabytes)


def _class_labels(values, field: str) -> torch.Tensor:
    """Labels of a data file as int64 class indices in [0, MAX_CLASSES), with at least one row."""
    labels = as_labels(values, field)
    if labels.numel() == 0:
        raise DataError(f"{field} is empty: the data file has no examples")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= MAX_CLASSES:
        raise DataError(f"{field} has labels in [{low}, {high}]; labels must be class indices in [0, {MAX_CLASSES})")
    return labels


def _noisy_image_splits(
    arrays: dict[str, np.ndarray],
    base_name: str,
    seed: int,
    meta_per_class: int,
    noise: NoiseKind,
    noise_rate: float,
    noise_mapping: Mapping[int, int] | None,
    n_train: int | None,
    n_test: int | None,
    normalise: bool,
) -> DataSplits:
    """Clean class-balanced meta from the train images, noisy D_t from the rest, test = the test images."""
    check_int(seed, "seed")
    noise_rate = _check_noise(noise, noise_rate)
    meta_per_class = check_int(meta_per_class, "meta_per_class", minimum=1)
    split_seed, noise_seed = derive_seeds(seed, 2)
    generator = make_generator(split_seed)
    y_pool = _class_labels(arrays["y_train"], "y_train")
    y_test_all = _class_labels(arrays["y_test"], "y_test")
    num_classes = int(max(int(y_pool.max()), int(y_test_all.max()))) + 1
    draws, train_idx = _balanced_draws(y_pool, num_classes, {"meta_per_class": meta_per_class}, generator)
    train_idx = _subsample(train_idx, n_train, "n_train", generator)
    test_idx = _subsample(torch.arange(y_test_all.shape[0]), n_test, "n_test", generator)
    meta_idx = draws["meta_per_class"]
    y_true = y_pool[train_idx]
    y_noisy, clean = _corrupt(y_true, noise, noise_rate, num_classes, noise_seed, noise_mapping)
    mean, std = channel_stats(arrays["x_train"]) if normalise else (None, None)

    def images(x: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
        return images_to_float(x[idx.numpy()], mean=mean, std=std)

    return DataSplits(
        x_train=images(arrays["x_train"], train_idx),
        y_train=y_noisy,
        x_meta=images(arrays["x_train"], meta_idx),
        y_meta=y_pool[meta_idx],
        x_test=images(arrays["x_test"], test_idx),
        y_test=y_test_all[test_idx],
        num_classes=num_classes,
        clean=clean,
        y_train_true=y_true,
        name=f"{base_name}-{_noise_name(noise, noise_rate)}",
    ).validate()


def cifar10_noisy_splits(
    path: PathLike,
    seed: int = 0,
    meta_per_class: int = 100,
    noise: NoiseKind = "symmetric",
    noise_rate: float = 0.5,
    noise_mapping: Mapping[int, int] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
) -> DataSplits:
    """CIFAR-10 (npz such as cifar10_subset.npz, or a batch directory) with clean meta and noisy D_t.

    Images are float32 [N,3,32,32] standardised per channel with the mean/std of all train images.
    Asymmetric noise defaults to CIFAR10_ASYMMETRIC; n_train / n_test cap D_t / test at random.
    """
    _check_noise(noise, noise_rate)
    mapping = CIFAR10_ASYMMETRIC if noise_mapping is None else noise_mapping
    return _noisy_image_splits(
        load_cifar10(path),
        "cifar10",
        seed,
        meta_per_class,
        noise,
        noise_rate,
        mapping,
        n_train,
        n_test,
        normalise=True,
    )


def mnist_like_noisy_splits(
    path: PathLike,
    seed: int = 0,
    meta_per_class: int = 100,
    noise: NoiseKind = "symmetric",
    noise_rate: float = 0.5,
    noise_mapping: Mapping[int, int] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    name: str | None = None,
) -> DataSplits:
    """MNIST-format data (mnist.npz, fashion_mnist.npz or an IDX directory) with clean meta and noisy D_t.

    Images are float32 [N,1,28,28] in [0,1]; asymmetric noise defaults to c -> (c+1) % 10
    (pass MNIST_ASYMMETRIC for the usual MNIST pairs). The name defaults to the file stem.
    """
    _check_noise(noise, noise_rate)
    base = name if name is not None else Path(path).stem
    return _noisy_image_splits(
        load_mnist(path),
        base,
        seed,
        meta_per_class,
        noise,
        noise_rate,
        noise_mapping,
        n_train,
        n_test,
        normalise=False,
    )
