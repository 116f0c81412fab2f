"""Tests of pyro_dps.data.loaders on small files written in tmp_path (IDX, npz, CIFAR pickles)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dps.data import (
    channel_stats,
    data_file,
    images_to_float,
    load_cifar10,
    load_cifar10_batches,
    load_idx,
    load_mnist,
    load_mnist_idx,
    load_npz,
    mnist_4v9_splits,
    mnist_like_noisy_splits,
)
from pyro_dps.errors import DataError

IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the IDX format: 0x0000, type code, ndim, big-endian uint32 dims, big-endian data."""
    header = struct.pack(">HBB", 0, IDX_CODES[array.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# ---------------------------------------------------------------- IDX

_RNG = np.random.default_rng(0)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    "array",
    [
        _RNG.integers(0, 256, size=(5, 7, 3)).astype(np.uint8),
        _RNG.integers(-128, 128, size=(11,)).astype(np.int8),
        _RNG.integers(-30000, 30000, size=(4, 2)).astype(np.int16),
        _RNG.integers(-(2**31), 2**31 - 1, size=(6,)).astype(np.int32),
        _RNG.normal(size=(3, 4)).astype(np.float32),
        _RNG.normal(size=(2, 2, 2, 2)).astype(np.float64),
    ],
    ids=["ubyte-3d", "byte", "short", "int", "float", "double-4d"],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = write_idx(tmp_path / ("a.idx" + (".gz" if compress else "")), array, compress)
    back = load_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        pytest.param(
            b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "bad IDX magic number 0x01000801", id="bad-magic"
        ),
        pytest.param(
            b"\x00\x00\x0a\x01" + struct.pack(">I", 2) + b"ab", "bad IDX magic number 0x00000a01", id="bad-type"
        ),
        pytest.param(b"\x00\x00\x08\x00", "bad IDX magic number", id="zero-dims"),
        pytest.param(b"\x00\x00", "too short for an IDX header", id="short-header"),
        pytest.param(b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated inside its IDX header", id="cut-dims"),
        pytest.param(idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "17 data bytes but its header shape", id="truncated"),
        pytest.param(idx_bytes(np.zeros(4, np.int32)) + b"x", "17 data bytes but its header shape", id="trailing"),
        pytest.param(b"\x1f\x8b" + b"not really gzip", "cannot read", id="bad-gzip"),
        pytest.param(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-10], "cannot read", id="truncated-gzip"),
    ],
)
def test_corrupt_idx_raises(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as info:
        load_idx(path)
    assert "bad-idx" in str(info.value)  # the message names the file


def test_missing_idx_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="IDX file not found"):
        load_idx(tmp_path / "nope")


def _write_mnist_dir(folder: Path, n_train: int = 6, n_test: int = 4, dotted: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    sep = "." if dotted else "-"
    names = {
        "x_train": (f"train-images{sep}idx3-ubyte", True),
        "y_train": (f"train-labels{sep}idx1-ubyte", False),
        "x_test": (f"t10k-images{sep}idx3-ubyte", True),
        "y_test": (f"t10k-labels{sep}idx1-ubyte", False),
    }
    for key, (name, compress) in names.items():
        write_idx(folder / (name + (".gz" if compress else "")), arrays[key], compress)
    return arrays


@pytest.mark.parametrize("dotted", [False, True])
def test_load_mnist_idx_directory(tmp_path: Path, dotted: bool) -> None:
    arrays = _write_mnist_dir(tmp_path, dotted=dotted)
    for loaded in (load_mnist_idx(tmp_path), load_mnist(tmp_path)):
        assert set(loaded) == set(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)


def test_load_mnist_idx_errors(tmp_path: Path) -> None:
    _write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))  # 3 labels for 4 images
    with pytest.raises(DataError, match=r"x_test .* has shape \(4, 28, 28\) but y_test has 3 labels"):
        load_mnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path)
    with pytest.raises(DataError, match="MNIST IDX directory not found"):
        load_mnist_idx(tmp_path / "absent")


# ---------------------------------------------------------------- npz


def test_load_npz_round_trip_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x, y = np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1, 2], np.uint8)
    np.savez_compressed(path, x_train=x, y_train=y, x_test=x, y_test=y, extra=np.ones(3))
    loaded = load_npz(path)
    assert set(loaded) == {"x_train", "y_train", "x_test", "y_test"}
    np.testing.assert_array_equal(loaded["x_train"], x)
    assert set(load_npz(path, keys=None)) == {"x_train", "y_train", "x_test", "y_test", "extra"}
    with pytest.raises(DataError, match=r"missing keys \['class_names'\]"):
        load_npz(path, keys=("x_train", "class_names"))


def test_load_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="npz file not found"):
        load_npz(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"cannot read npz file .*junk.npz"):
        load_npz(junk)
    good = tmp_path / "good.npz"
    np.savez(
        good,
        x_train=np.zeros((100, 5)),
        y_train=np.zeros(100, np.int64),
        x_test=np.zeros((1, 5)),
        y_test=np.zeros(1, np.int64),
    )
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.npz"):
        load_npz(cut)
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, x_train=np.zeros((3, 2)), y_train=np.zeros(4), x_test=np.zeros((1, 2)), y_test=np.zeros(1))
    with pytest.raises(DataError, match=r"x_train .* has shape \(3, 2\) but y_train has 4 labels"):
        load_npz(mismatched)


# ---------------------------------------------------------------- CIFAR-10 python batches


def _cifar_images(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).tolist()


def _write_batch(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """A batch as the original files store it: bytes keys, data row = R plane, G plane, B plane."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with path.open("wb") as handle:
        pickle.dump(
            {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"f"] * len(labels)},
            handle,
            protocol=2,
        )


def _write_cifar_dir(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _cifar_images(3, seed=i)
        _write_batch(folder / f"data_batch_{i}", x, y)
        xs.append(x)
        ys += y
    x_test, y_test = _cifar_images(2, seed=9)
    _write_batch(folder / "test_batch", x_test, y_test)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in "abcdefghij"]}, handle, protocol=2)
    return np.concatenate(xs), np.array(ys), x_test, np.array(y_test)


def test_cifar_batches_round_trip(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = _write_cifar_dir(tmp_path / "cifar-10-batches-py")
    for loaded in (load_cifar10_batches(tmp_path), load_cifar10(tmp_path / "cifar-10-batches-py")):
        assert loaded["x_train"].shape == (15, 32, 32, 3) and loaded["x_train"].dtype == np.uint8
        np.testing.assert_array_equal(loaded["x_train"], x_train)  # pixel layout recovered exactly
        np.testing.assert_array_equal(loaded["y_train"], y_train)
        np.testing.assert_array_equal(loaded["x_test"], x_test)
        np.testing.assert_array_equal(loaded["y_test"], y_test)
        assert loaded["class_names"].tolist() == list("abcdefghij")


def test_cifar_batch_errors(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    _write_cifar_dir(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"cannot read CIFAR batch .*data_batch_3"):
        load_cifar10_batches(folder)
    _write_batch(folder / "data_batch_3", np.zeros((2, 32, 32, 3), np.uint8), [0, 1, 2])
    with pytest.raises(DataError, match=r"'labels' in .*data_batch_3.* must be 2 integers"):
        load_cifar10_batches(folder)
    with (folder / "data_batch_3").open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(DataError, match=r"'data' in .*data_batch_3.* must be uint8 \[N, 3072\]"):
        load_cifar10_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"CIFAR-10 batch file not found: .*data_batch_3"):
        load_cifar10_batches(folder)


class _Exploit:
    """Unpickling this would call os.system; the restricted unpickler must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    _write_cifar_dir(folder)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": []}, handle)
    with pytest.raises(DataError, match="is not allowed in a CIFAR batch"):
        load_cifar10_batches(folder)


def test_load_cifar10_npz(tmp_path: Path) -> None:
    x, y = _cifar_images(4, seed=0)
    path = tmp_path / "c.npz"
    np.savez(
        path,
        x_train=x,
        y_train=np.array(y),
        x_test=x[:2],
        y_test=np.array(y[:2]),
        class_names=np.array(list("abcdefghij")),
    )
    loaded = load_cifar10(path)
    np.testing.assert_array_equal(loaded["x_train"], x)
    assert loaded["class_names"].tolist() == list("abcdefghij")
    np.savez(path, x_train=x.transpose(0, 3, 1, 2), y_train=np.array(y), x_test=x[:2], y_test=np.array(y[:2]))
    with pytest.raises(DataError, match=r"x_train in .* must be images \[N, 32, 32, 3\], got \(4, 3, 32, 32\)"):
        load_cifar10(path)


# ---------------------------------------------------------------- image conversion


def test_images_to_float_layout_and_range() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 5, 6)).astype(np.uint8)
    out = images_to_float(gray)
    assert out.shape == (3, 1, 5, 6) and out.dtype == torch.float32
    np.testing.assert_allclose(out[:, 0].numpy() * 255, gray, atol=1e-4)
    colour = rng.integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    colour[0, 1, 2] = (0, 128, 255)
    out = images_to_float(torch.from_numpy(colour))
    assert out.shape == (2, 3, 4, 5)
    assert out[0, :, 1, 2].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_images_to_float_standardises() -> None:
    colour = np.random.default_rng(1).integers(0, 256, (50, 4, 4, 3)).astype(np.uint8)
    mean, std = channel_stats(colour)
    np.testing.assert_allclose(mean, (colour / 255.0).mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(std, (colour / 255.0).std(axis=(0, 1, 2), ddof=1), rtol=1e-10)
    out = images_to_float(colour, mean=mean, std=std)
    np.testing.assert_allclose(out.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-4)
    scalar = images_to_float(colour[..., 0], mean=0.5, std=0.25)
    np.testing.assert_allclose(scalar[:, 0].numpy(), (colour[..., 0] / 255.0 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize(
    ("x", "kwargs", "pattern"),
    [
        (np.zeros((2, 4, 4), np.float32), {}, "x must be uint8 images, got dtype torch.float32"),
        (np.zeros((2, 4), np.uint8), {}, r"x must have shape \[N, H, W\] or \[N, H, W, C\], got \(2, 4\)"),
        (
            np.zeros((2, 4, 4, 3), np.uint8),
            {"std": [1.0, 0.0, 1.0]},
            r"std must be finite and > 0, got \[1.0, 0.0, 1.0\]",
        ),
        (np.zeros((2, 4, 4, 3), np.uint8), {"mean": [0.1, 0.2]}, "mean must have 3 values"),
    ],
)
def test_images_to_float_errors(x: np.ndarray, kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        images_to_float(x, **kwargs)  # type: ignore[arg-type]


def test_data_file_uses_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"")
    monkeypatch.setenv("PYRO_DPS_DATA", str(tmp_path))
    assert data_file("mnist.npz") == tmp_path / "mnist.npz"
    with pytest.raises(DataError, match=r"data file not found: .*cifar.npz"):
        data_file("cifar.npz")
    monkeypatch.delenv("PYRO_DPS_DATA")
    with pytest.raises(DataError, match="PYRO_DPS_DATA is not set"):
        data_file("mnist.npz")


# ---------------------------------------------------------------- builders on synthetic files


def test_mnist_4v9_builder_on_synthetic_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(10, dtype=np.uint8), 40)
    x_train = rng.integers(0, 256, (400, 28, 28)).astype(np.uint8)
    x_train[:, 0, 0] = np.arange(400) % 256  # make images distinguishable
    x_train[:, 0, 1] = np.arange(400) // 256
    y_test = np.array([4, 9, 1, 9, 4, 4, 0], np.uint8)
    path = tmp_path / "m.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train[:7], y_test=y_test)
    s = mnist_4v9_splits(path, seed=0, meta_per_class=5, n_major=30, n_minor=3)
    assert (s.n_train, s.n_meta, s.n_test) == (33, 10, 5)
    assert s.y_train.tolist().count(0) == 3 and s.y_test.tolist() == [0, 1, 1, 0, 0]
    assert s.clean is None and torch.equal(s.groups["class"], s.y_train)
    keys = lambda x: {tuple((t[0, 0, :2] * 255).round().int().tolist()) for t in x}  # noqa: E731
    assert not keys(s.x_train) & keys(s.x_meta)  # meta drawn from images not in D_t
    with pytest.raises(
        DataError, match="meta_per_class=8 needs 8 examples per class but classes \\[0\\] have only \\[7\\]"
    ):
        mnist_4v9_splits(path, seed=0, meta_per_class=8, n_major=30, n_minor=33)


def test_mnist_like_builder_on_idx_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (200, 28, 28)).astype(np.uint8),
        "y_train": (np.arange(200) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (30, 28, 28)).astype(np.uint8),
        "y_test": (np.arange(30) % 10).astype(np.uint8),
    }
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    for key, name in names.items():
        write_idx(tmp_path / name, arrays[key])
    s = mnist_like_noisy_splits(
        tmp_path, seed=3, meta_per_class=2, noise="asymmetric", noise_rate=1.0, n_train=50, n_test=20, name="toy"
    )
    assert s.name == "toy-asymmetric-1" and (s.n_train, s.n_meta, s.n_test) == (50, 20, 20)
    assert s.x_train.shape[1:] == (1, 28, 28) and torch.equal(s.y_train, (s.y_train_true + 1) % 10)
