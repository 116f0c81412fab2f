"""Loaders and builders on the real shared data files; skipped when the files are absent.

The files are looked for in $PYRO_DPS_DATA, else in <repo>/../shared/data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dps.data import (
    DataSplits,
    cifar10_noisy_splits,
    load_cifar10,
    load_mnist,
    mnist_4v9_splits,
    mnist_like_noisy_splits,
)


def _data_dir() -> Path:
    env = os.environ.get("PYRO_DPS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require(name: str) -> Path:
    path = _data_dir() / name
    if not path.is_file():
        pytest.skip(f"real data file {path} not available")
    return path


@pytest.fixture(scope="module")
def mnist_path() -> Path:
    return _require("mnist.npz")


@pytest.fixture(scope="module")
def mnist(mnist_path: Path) -> dict[str, np.ndarray]:
    return load_mnist(mnist_path)


@pytest.fixture(scope="module")
def four_nine(mnist_path: Path) -> DataSplits:
    return mnist_4v9_splits(mnist_path, seed=0)


def test_mnist_npz_shapes(mnist: dict[str, np.ndarray]) -> None:
    assert mnist["x_train"].shape == (60000, 28, 28) and mnist["x_train"].dtype == np.uint8
    assert mnist["x_test"].shape == (10000, 28, 28)
    assert mnist["y_train"].shape == (60000,) and mnist["y_test"].shape == (10000,)
    assert sorted(np.unique(mnist["y_train"]).tolist()) == list(range(10))


def test_mnist_4v9_sizes_match_the_data(four_nine: DataSplits, mnist: dict[str, np.ndarray]) -> None:
    s = four_nine
    assert s.name == "mnist-4v9" and s.num_classes == 2 and s.feature_shape == (1, 28, 28)
    assert s.n_train == 5000
    assert int((s.y_train == 0).sum()) == 25 and int((s.y_train == 1).sum()) == 4975
    y_test = mnist["y_test"]
    expected_test = int(((y_test == 4) | (y_test == 9)).sum())
    assert expected_test == 1991 and s.n_test == expected_test
    assert int((s.y_test == 0).sum()) == int((y_test == 4).sum())
    assert torch.bincount(s.y_meta).tolist() == [25, 25]
    assert s.clean is None and torch.equal(s.groups["class"], s.y_train)
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) == 1.0


def test_mnist_4v9_images_carry_their_labels(four_nine: DataSplits, mnist: dict[str, np.ndarray]) -> None:
    """Every D_t / meta image is an MNIST train image of the class its new label says; meta is disjoint from D_t."""
    index = {
        img.tobytes(): int(lab) for img, lab in zip(mnist["x_train"], mnist["y_train"], strict=True) if lab in (4, 9)
    }

    def keys(x: torch.Tensor) -> list[bytes]:
        return [img.tobytes() for img in (x[:, 0] * 255).round().to(torch.uint8).numpy()]

    train_keys, meta_keys = keys(four_nine.x_train), keys(four_nine.x_meta)
    assert [index[k] for k in train_keys] == [4 if y == 0 else 9 for y in four_nine.y_train.tolist()]
    assert [index[k] for k in meta_keys] == [4 if y == 0 else 9 for y in four_nine.y_meta.tolist()]
    assert not set(train_keys) & set(meta_keys)


def test_mnist_like_on_fashion() -> None:
    s = mnist_like_noisy_splits(_require("fashion_mnist.npz"), seed=0, meta_per_class=10, n_train=3000, n_test=500)
    assert s.name == "fashion_mnist-symmetric-0.5" and (s.n_train, s.n_meta, s.n_test) == (3000, 100, 500)
    assert abs((1 - s.clean.float().mean().item()) - 0.5) < 3 * (0.25 / 3000) ** 0.5  # binomial standard error


def test_cifar10_subset_builder() -> None:
    path = _require("cifar10_subset.npz")
    raw = load_cifar10(path)
    assert raw["x_train"].shape == (10000, 32, 32, 3) and raw["class_names"].shape == (10,)
    s = cifar10_noisy_splits(path, seed=0, noise="asymmetric", noise_rate=0.4)
    assert s.name == "cifar10-asymmetric-0.4" and s.feature_shape == (3, 32, 32)
    assert (s.n_train, s.n_meta, s.n_test) == (9000, 1000, 2000)
    assert torch.bincount(s.y_meta).tolist() == [100] * 10
    for c in (0, 1, 6, 7, 8):  # classes outside CIFAR10_ASYMMETRIC are never flipped
        assert s.clean[s.y_train_true == c].all()
    pooled = torch.cat([s.x_train, s.x_meta])  # the whole train pool is standardised per channel
    assert pooled.mean(dim=(0, 2, 3)).abs().max().item() < 1e-3
    assert (pooled.std(dim=(0, 2, 3)) - 1).abs().max().item() < 1e-3
