"""Tests of pyro_dps.data: DataSplits validation, label corruption and the digits scenario."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset, TensorDataset

from pyro_dps.data import (
    CIFAR10_ASYMMETRIC,
    DataSplits,
    asymmetric_noise,
    binary_imbalance,
    digits_splits,
    from_arrays,
    from_datasets,
    long_tail,
    long_tail_counts,
    stratified_split,
    symmetric_noise,
)
from pyro_dps.errors import ConfigError, DataError

# ---------------------------------------------------------------- DataSplits


def _arrays(k: int = 3, d: int = 4) -> dict[str, np.ndarray]:
    """A small valid set of arrays: every class in each split."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(12, d)),
        "y_train": np.arange(12) % k,
        "x_meta": rng.normal(size=(6, d)),
        "y_meta": np.arange(6) % k,
        "x_test": rng.normal(size=(9, d)),
        "y_test": np.arange(9) % k,
    }



def test_a_meta_set_without_some_classes_is_accepted_with_a_warning_naming_them():
    """Users bring the curated set they have: missing classes warn (class and count of training examples),
    they do not refuse the data."""
    from pyro_dps.errors import MetaCoverageWarning

    arrays = _bad(y_meta=np.array([0, 0, 0, 2, 2, 2]))
    with pytest.warns(MetaCoverageWarning, match=r"no example of classes \[1\]: 4 of the 12 training examples"):
        splits = from_arrays(**arrays)
    assert splits.classes_without_meta() == [1]

def test_from_arrays_converts_dtypes_and_infers_classes() -> None:
    a = _arrays()
    a["y_train"] = a["y_train"].astype(np.uint8)
    splits = from_arrays(**a)
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    assert splits.num_classes == 3
    assert (splits.n_train, splits.n_meta, splits.n_test) == (12, 6, 9)
    np.testing.assert_allclose(splits.x_meta.numpy(), a["x_meta"].astype(np.float32))
    assert splits.y_train.tolist() == a["y_train"].tolist()
    assert splits.feature_shape == (4,)


def test_from_arrays_does_not_scale_uint8_features() -> None:
    a = _arrays()
    for key in ("x_train", "x_meta", "x_test"):
        a[key] = np.full(a[key].shape, 200, dtype=np.uint8)
    assert float(from_arrays(**a).x_train.max()) == 200.0


def test_from_arrays_keeps_ground_truth_and_groups() -> None:
    a = _arrays()
    clean = np.arange(12) % 2 == 0
    splits = from_arrays(
        **a, num_classes=5, clean=clean, y_train_true=a["y_train"], groups={"source": np.arange(12) // 6}
    )
    assert splits.num_classes == 5
    assert splits.clean.tolist() == clean.tolist()
    assert splits.groups["source"].dtype == torch.int64 and splits.groups["source"].tolist() == [0] * 6 + [1] * 6


def test_empty_test_split_is_allowed() -> None:
    a = _arrays()
    a["x_test"], a["y_test"] = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    assert from_arrays(**a).n_test == 0


def _bad(**changes: object) -> dict[str, object]:
    """Valid from_arrays arguments with some replaced."""
    args: dict[str, object] = dict(_arrays())
    args.update(changes)
    return args


_A = _arrays()
_NAN = _A["x_meta"].copy()
_NAN[2, 1] = np.nan
_INF = _A["x_test"].copy()
_INF[5, 0] = -np.inf


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        pytest.param(_bad(y_train=_A["y_train"][:-1]), r"x_train has 12 examples but y_train has 11", id="length"),
        pytest.param(_bad(x_meta=_NAN), r"x_meta has non-finite features \(nan in example 2", id="nan"),
        pytest.param(_bad(x_test=_INF), r"x_test has non-finite features \(-inf in example 5", id="inf"),
        pytest.param(
            _bad(y_train=_A["y_train"].astype(np.float64)),
            r"y_train must have an integer dtype, got torch.float64",
            id="float-labels",
        ),
        pytest.param(_bad(y_train=_A["y_train"].astype(bool)), r"y_train must have an integer dtype", id="bool-labels"),
        pytest.param(
            _bad(y_meta=np.array([0, 1, 2, 0, 1, 7]), num_classes=3),
            r"y_meta has labels outside \[0, 3\): \[7\]",
            id="label-high",
        ),
        pytest.param(
            _bad(y_test=np.array([0, 1, 2, -1, 1, 2, 0, 1, 2])),
            r"y_test has labels outside \[0, 3\): \[-1\]",
            id="label-negative",
        ),
        pytest.param(
            _bad(x_meta=np.zeros((0, 4)), y_meta=np.zeros(0, dtype=np.int64)), r"x_meta is empty", id="empty-meta"
        ),
        pytest.param(
            _bad(x_test=np.zeros((9, 5))), r"x_test has feature shape \(5,\) but x_train has \(4,\)", id="feature-shape"
        ),
        pytest.param(_bad(x_train=np.zeros(12)), r"x_train must have shape \[N, \.\.\.features\]", id="x-1d"),
        pytest.param(_bad(y_train=np.zeros((12, 1), dtype=np.int64)), r"y_train must be 1-dimensional", id="y-2d"),
        pytest.param(_bad(x_train=np.array([["a"] * 4] * 12)), r"x_train must be numeric", id="x-strings"),
        pytest.param(_bad(clean=np.ones(11, dtype=bool)), r"clean must have shape \[12\]", id="clean-length"),
        pytest.param(
            _bad(clean=np.ones(12, dtype=np.int64)),
            r"clean must be a boolean mask, got dtype torch.int64",
            id="clean-dtype",
        ),
        pytest.param(
            _bad(y_train_true=np.full(12, 9), num_classes=3),
            r"y_train_true has labels outside \[0, 3\): \[9\]",
            id="true-range",
        ),
        pytest.param(
            _bad(groups={"source": np.zeros(3, dtype=np.int64)}),
            r"groups\['source'\] must have shape \[12\]",
            id="group-length",
        ),
        pytest.param(_bad(num_classes=1), r"num_classes must be >= 2, got 1", id="num-classes"),
    ],
)
def test_validation_errors_name_field_and_value(args: dict[str, object], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        from_arrays(**args)


def test_validate_rejects_wrong_dtypes_on_direct_construction() -> None:
    good = from_arrays(**_arrays())
    bad = DataSplits(good.x_train.double(), good.y_train, good.x_meta, good.y_meta, good.x_test, good.y_test, 3)
    with pytest.raises(DataError, match=r"x_train must have dtype float32, got torch.float64"):
        bad.validate()
    bad = DataSplits(good.x_train, good.y_train.int(), good.x_meta, good.y_meta, good.x_test, good.y_test, 3)
    with pytest.raises(DataError, match=r"y_train must have dtype int64, got torch.int32"):
        bad.validate()
    assert good.validate() is good


def test_to_moves_every_tensor_and_keeps_values() -> None:
    splits = from_arrays(**_arrays(), clean=np.ones(12, dtype=bool), groups={"g": np.zeros(12, dtype=np.int64)})
    moved = splits.to("meta")  # the meta device exercises the move without an accelerator
    assert moved is not splits and moved.name == splits.name and moved.num_classes == 3
    tensors = [
        moved.x_train,
        moved.y_train,
        moved.x_meta,
        moved.y_meta,
        moved.x_test,
        moved.y_test,
        moved.clean,
        moved.groups["g"],
    ]
    assert all(t.device.type == "meta" for t in tensors)
    back = splits.to("cpu")
    assert torch.equal(back.x_train, splits.x_train) and back.y_train_true is None


def test_repr_is_a_short_summary() -> None:
    text = repr(from_arrays(**_arrays(), clean=np.arange(12) < 3, name="toy"))
    assert text.startswith("DataSplits(name='toy', n_train=12, n_meta=6, n_test=9") and "clean=0.250" in text
    assert len(text) < 200


class _PairDataset(Dataset):
    """Yields (numpy features, python int label)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], int(self.y[i])


def test_from_datasets_matches_from_arrays() -> None:
    a = _arrays()
    train = TensorDataset(torch.as_tensor(a["x_train"]), torch.as_tensor(a["y_train"]))
    meta = _PairDataset(a["x_meta"], a["y_meta"])
    test = _PairDataset(a["x_test"], a["y_test"])
    splits = from_datasets(train, meta, test, name="ds")
    reference = from_arrays(**a)
    for key in ("x_train", "y_train", "x_meta", "y_meta", "x_test", "y_test"):
        assert torch.equal(getattr(splits, key), getattr(reference, key)), key
    assert splits.name == "ds"


def test_from_datasets_errors() -> None:
    a = _arrays()
    good = _PairDataset(a["x_meta"], a["y_meta"])
    float_labels = TensorDataset(torch.zeros(3, 4), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match=r"y_train\[0\] must be one integer label"):
        from_datasets(float_labels, good, good)
    with pytest.raises(DataError, match="meta dataset is empty"):
        from_datasets(good, _PairDataset(a["x_meta"][:0], a["y_meta"][:0]), good)
    ragged = [(np.zeros(4), 0), (np.zeros(5), 1)]
    with pytest.raises(DataError, match=r"item 1 of the test dataset has features of shape \(5,\), but item 0 has \(4,\)"):
        from_datasets(good, good, ragged)  # type: ignore[arg-type]


# ---------------------------------------------------------------- stratified split


def test_stratified_split_holds_out_a_fraction_of_every_class_and_keeps_singletons_for_fitting() -> None:
    y = torch.tensor([0] * 10 + [1] * 5 + [2] + [3] * 2)
    fit, val = stratified_split(y, 0.5, seed=3)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(y.numel()))  # a partition of the rows
    assert torch.bincount(y[val], minlength=4).tolist() == [5, 3, 0, 1]  # n / 2 rounded half up; the singleton fits
    assert torch.bincount(y[fit], minlength=4).tolist() == [5, 2, 1, 1]
    # 0.2 of 10 and of 5 rounds to 2 and 1; a class of 2 still holds one out (at least 1, at most n - 1)
    assert torch.bincount(y[stratified_split(y, 0.2, seed=3)[1]], minlength=4).tolist() == [2, 1, 0, 1]
    assert torch.equal(val, stratified_split(y, 0.5, seed=3)[1])
    assert not torch.equal(val, stratified_split(y, 0.5, seed=4)[1])


# ---------------------------------------------------------------- symmetric noise


def test_symmetric_noise_rate_and_consistency() -> None:
    n, k, rate = 20_000, 10, 0.5
    y = torch.arange(n) % k
    y_before = y.clone()
    noisy, clean = symmetric_noise(y, rate, k, seed=123)
    assert torch.equal(y, y_before)  # input untouched
    assert noisy.dtype == torch.int64 and clean.dtype == torch.bool
    assert torch.equal(clean, noisy == y)  # a flipped label never equals the original
    flipped = 1.0 - clean.float().mean().item()
    sd = math.sqrt(rate * (1 - rate) / n)  # binomial standard error of the flipped fraction
    assert abs(flipped - rate) < 3 * sd


def test_symmetric_noise_flips_uniformly_to_other_classes() -> None:
    n, k = 18_000, 10
    y = torch.full((n,), 3)
    noisy, clean = symmetric_noise(y, 1.0, k, seed=7)
    assert not clean.any()
    counts = torch.bincount(noisy, minlength=k).double()
    assert counts[3] == 0
    others = counts[torch.arange(k) != 3]
    expected = n / (k - 1)
    # Each count is Binomial(n, 1/9): sd = sqrt(n p (1-p)) ~ 42; 4 sd per class keeps the joint
    # false-alarm rate below 9 * 6e-5 for a fair draw.
    sd = math.sqrt(n * (1 / (k - 1)) * (1 - 1 / (k - 1)))
    assert (others - expected).abs().max().item() < 4 * sd
    # Pearson chi-square with 8 degrees of freedom; its 0.999 quantile is 26.12.
    chi2 = (((others - expected) ** 2) / expected).sum().item()
    assert chi2 < 26.12


def test_symmetric_noise_offsets_are_uniform_for_mixed_labels() -> None:
    n, k = 30_000, 5
    y = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(0))
    noisy, clean = symmetric_noise(y, 0.6, k, seed=1)
    offsets = ((noisy - y) % k)[~clean]
    counts = torch.bincount(offsets, minlength=k).double()
    assert counts[0] == 0
    expected = offsets.numel() / (k - 1)
    chi2 = (((counts[1:] - expected) ** 2) / expected).sum().item()
    assert chi2 < 16.27  # 0.999 quantile of chi-square with 3 degrees of freedom


def test_noise_rate_extremes_and_determinism() -> None:
    y = torch.arange(100) % 4
    assert symmetric_noise(y, 0.0, 4, 0)[1].all()
    assert not symmetric_noise(y, 1.0, 4, 0)[1].any()
    a = symmetric_noise(y, 0.3, 4, seed=5)
    b = symmetric_noise(y, 0.3, 4, seed=torch.Generator().manual_seed(5))
    c = symmetric_noise(y, 0.3, 4, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_noise_accepts_numpy_labels() -> None:
    y = np.arange(50) % 5
    noisy, clean = symmetric_noise(y, 0.5, 5, 0)
    assert isinstance(noisy, torch.Tensor) and torch.equal(clean, noisy == torch.from_numpy(y))
    assert y.tolist() == (np.arange(50) % 5).tolist()


# ---------------------------------------------------------------- asymmetric noise


def test_asymmetric_noise_follows_cifar_mapping() -> None:
    n, k, rate = 20_000, 10, 0.4
    y = torch.arange(n) % k
    noisy, clean = asymmetric_noise(y, rate, k, seed=3, mapping=CIFAR10_ASYMMETRIC)
    assert torch.equal(clean, noisy == y)
    for c in range(k):
        in_class = y == c
        if c not in CIFAR10_ASYMMETRIC:
            assert clean[in_class].all(), f"class {c} is not in the mapping and must stay clean"
        else:
            assert (noisy[in_class & ~clean] == CIFAR10_ASYMMETRIC[c]).all()
    mapped = torch.isin(y, torch.tensor(list(CIFAR10_ASYMMETRIC)))
    m = int(mapped.sum())
    flipped = 1.0 - clean[mapped].float().mean().item()
    assert abs(flipped - rate) < 3 * math.sqrt(rate * (1 - rate) / m)  # binomial standard error


def test_asymmetric_noise_default_is_next_class() -> None:
    y = torch.arange(1000) % 7
    noisy, clean = asymmetric_noise(y, 1.0, 7, seed=0)
    assert torch.equal(noisy, (y + 1) % 7) and not clean.any()


@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        ({3: 3}, r"mapping\[3\] = 3 maps a class to itself"),
        ({1: 12}, r"mapping value 12 is not a class"),
        ({-1: 2}, "mapping key -1"),
    ],
)
def test_asymmetric_mapping_errors(mapping: dict[int, int], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        asymmetric_noise(torch.arange(10) % 10, 0.5, 10, 0, mapping=mapping)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda y: symmetric_noise(y, 1.5, 3, 0), r"rate must be in \[0, 1\], got 1.5"),
        (lambda y: symmetric_noise(y, -0.1, 3, 0), r"rate must be in \[0, 1\], got -0.1"),
        (lambda y: asymmetric_noise(y, float("nan"), 3, 0), r"rate must be in \[0, 1\], got nan"),
        (lambda y: symmetric_noise(y, 0.5, 1, 0), r"num_classes must be >= 2, got 1"),
        (lambda y: symmetric_noise(y, 0.5, 2, 0), r"y has labels outside \[0, 2\): \[2\]"),
        (lambda y: symmetric_noise(y.double(), 0.5, 3, 0), r"y must have an integer dtype"),
        (lambda y: symmetric_noise(y, 0.5, 3, seed=1.5), r"seed must be an integer, got 1.5"),
        (lambda y: long_tail(y, 0.5, 3, 0), r"imbalance_factor must be a finite number >= 1.0, got 0.5"),
        (lambda y: long_tail(y, float("inf"), 3, 0), r"imbalance_factor must be a finite number >= 1.0, got inf"),
        (lambda y: long_tail(y, 10, 4, 0), r"y has no examples of classes \[3\]"),
    ],
)
def test_corruption_argument_errors(call, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=pattern):
        call(torch.arange(30) % 3)


# ---------------------------------------------------------------- imbalance


def test_long_tail_follows_exponential_profile() -> None:
    k, per_class, factor = 10, 500, 100.0
    y = torch.arange(k * per_class) % k
    kept = long_tail(y, factor, k, seed=0)
    assert torch.equal(kept, torch.unique(kept))  # sorted, no repeats
    counts = torch.bincount(y[kept], minlength=k).tolist()
    expected = [math.floor(per_class * factor ** (-c / (k - 1)) + 1e-9) for c in range(k)]
    assert counts == expected
    assert counts[0] == 500 and counts[-1] == 5


def test_long_tail_counts_respect_available_examples() -> None:
    available = [100, 40, 90, 10]
    counts = long_tail_counts(available, 10.0)
    # n_max = min(100 * 1, 40 * 10^(1/3), 90 * 10^(2/3), 10 * 10) = 40 * 10^(1/3) ~ 86.18 (class 1 binds),
    # so n_c = floor(86.18 * 10^(-c/3)) = [86, 40, 18, 8].
    assert counts == [86, 40, 18, 8]
    assert all(c <= a for c, a in zip(counts, available, strict=True))
    assert long_tail_counts([5, 5], 1.0) == [5, 5]
    assert long_tail_counts([1000, 1000, 1000], 1e6) == [1000, 1, 1]  # every class keeps at least one


def test_binary_imbalance_protocol() -> None:
    y = torch.arange(20_000) % 10
    x = torch.zeros(20_000, 2)
    idx, labels = binary_imbalance(x, y, majority=9, minority=4, n_majority=1990, n_minority=10, seed=0)
    assert idx.shape == (2000,) and torch.equal(idx, torch.unique(idx))
    assert int((y[idx] == 4).sum()) == 10 and int((y[idx] == 9).sum()) == 1990
    assert torch.equal(labels, (y[idx] == 9).long())  # classes default (minority, majority): 4 -> 0, 9 -> 1
    _, flipped = binary_imbalance(x, y, 9, 4, 1990, 10, seed=0, classes=(9, 4))
    assert torch.equal(flipped, 1 - labels)


def test_binary_imbalance_errors() -> None:
    y = torch.arange(100) % 10
    with pytest.raises(DataError, match="n_minority=11 exceeds the 10 examples of class 4"):
        binary_imbalance(None, y, 9, 4, 5, 11, 0)
    with pytest.raises(DataError, match="majority and minority must be different"):
        binary_imbalance(None, y, 4, 4, 5, 5, 0)
    with pytest.raises(DataError, match="x has 3 examples but y has 100"):
        binary_imbalance(np.zeros((3, 2)), y, 9, 4, 5, 5, 0)


# ---------------------------------------------------------------- property test


@st.composite
def _labels_and_classes(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    k = draw(st.integers(2, 12))
    labels = draw(st.lists(st.integers(0, k - 1), max_size=300))
    return torch.tensor(labels, dtype=torch.int64), k


@settings(max_examples=60, deadline=None)
@given(case=_labels_and_classes(), rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**63 - 1), asym=st.booleans())
def test_noise_properties(case: tuple[torch.Tensor, int], rate: float, seed: int, asym: bool) -> None:
    y, k = case
    before = y.clone()
    fn = asymmetric_noise if asym else symmetric_noise
    noisy, clean = fn(y, rate, k, seed)
    assert torch.equal(y, before)
    assert noisy.shape == y.shape and noisy.dtype == torch.int64 and clean.dtype == torch.bool
    assert bool(((noisy >= 0) & (noisy < k)).all())
    assert torch.equal(clean, noisy == y)
    if rate == 0.0:
        assert clean.all()
    if rate == 1.0:
        assert not clean.any()
    again = fn(y, rate, k, seed)
    assert torch.equal(again[0], noisy)


# ---------------------------------------------------------------- digits scenario


def _digits_reference() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


@pytest.fixture(scope="module")
def digits_default() -> DataSplits:
    return digits_splits(seed=0)


def test_digits_partition_sizes_and_clean_meta(digits_default: DataSplits) -> None:
    s = digits_default
    assert s.name == "digits-symmetric-0.5" and s.num_classes == 10 and s.feature_shape == (64,)
    assert s.n_train + s.n_meta + s.n_test == 1797
    assert (s.n_meta, s.n_test) == (100, 300)
    assert torch.bincount(s.y_meta, minlength=10).tolist() == [10] * 10
    assert torch.bincount(s.y_test, minlength=10).tolist() == [30] * 10
    x_ref, y_ref = _digits_reference()
    # The three splits partition the data set exactly (as multisets of rows, duplicates included).
    all_rows = torch.cat([s.x_train, s.x_meta, s.x_test]).numpy()
    np.testing.assert_array_equal(_sorted_rows(all_rows), _sorted_rows(x_ref))
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) <= 1.0
    # Meta and test labels are the true labels of their images; so is y_train_true.
    truth = {}
    for row, label in zip(x_ref, y_ref, strict=True):
        truth.setdefault(row.tobytes(), set()).add(int(label))
    for x, y in ((s.x_meta, s.y_meta), (s.x_test, s.y_test), (s.x_train, s.y_train_true)):
        assert all(int(label) in truth[row.tobytes()] for row, label in zip(x.numpy(), y, strict=True))


def test_digits_noise_fraction(digits_default: DataSplits) -> None:
    s = digits_default
    assert torch.equal(s.clean, s.y_train == s.y_train_true)
    flipped = 1.0 - s.clean.float().mean().item()
    assert abs(flipped - 0.5) < 3 * math.sqrt(0.25 / s.n_train)  # binomial standard error


def test_digits_deterministic_per_seed(digits_default: DataSplits) -> None:
    again = digits_splits(seed=0)
    other = digits_splits(seed=1)
    assert torch.equal(again.x_train, digits_default.x_train) and torch.equal(again.y_train, digits_default.y_train)
    assert torch.equal(again.x_meta, digits_default.x_meta)
    assert not torch.equal(other.y_train, digits_default.y_train)
    assert not torch.equal(other.x_meta, digits_default.x_meta)


def test_digits_split_does_not_depend_on_noise_rate(digits_default: DataSplits) -> None:
    lighter = digits_splits(seed=0, noise_rate=0.2)
    assert torch.equal(lighter.x_train, digits_default.x_train) and torch.equal(lighter.x_meta, digits_default.x_meta)


def test_digits_asymmetric_and_clean_variants() -> None:
    asym = digits_splits(seed=2, noise="asymmetric", noise_rate=0.3)
    assert asym.name == "digits-asymmetric-0.3"
    flipped = ~asym.clean
    assert torch.equal(asym.y_train[flipped], (asym.y_train_true[flipped] + 1) % 10)
    clean = digits_splits(seed=2, noise=None, meta_per_class=5, test_per_class=0)
    assert clean.name == "digits-clean" and clean.clean.all() and clean.n_test == 0 and clean.n_meta == 50


def test_digits_long_tail() -> None:
    s = digits_splits(seed=0, noise=None, imbalance_factor=10)
    assert s.name == "digits-clean-lt10"
    counts = torch.bincount(s.y_train_true, minlength=10).tolist()
    assert counts == sorted(counts, reverse=True)
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.15)
    available = torch.bincount(digits_splits(seed=0, noise=None).y_train_true, minlength=10).tolist()
    assert counts == long_tail_counts(available, 10)


def test_digits_argument_errors() -> None:
    with pytest.raises(ConfigError, match="noise must be one of"):
        digits_splits(noise="pairflip")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"noise_rate must be in \[0, 1\], got 2"):
        digits_splits(noise_rate=2)
    with pytest.raises(DataError, match="meta_per_class must be >= 1, got 0"):
        digits_splits(meta_per_class=0)
    with pytest.raises(DataError, match=r"test_per_class=100 \+ meta_per_class=100 needs 200 examples per class"):
        digits_splits(meta_per_class=100, test_per_class=100)
