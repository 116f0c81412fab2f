"""Training features read on demand: a map-style Dataset behind the `Problem`, read a minibatch's rows at a time.

    rows = DatasetRows(dataset)            # items x or (x, ...); the dataset's own transforms run per item
    problem = Problem(net, rows, y_train, x_meta, y_meta)
    rows.loads, rows.largest_gather        # items read so far, the most read by one gather

`gather(idx)` reads items `idx` (in that order) and stacks their features; nothing reads all rows at once
unless asked (`rows[a:b]` reads rows a..b-1: the report's suggested labels read D_t so, in chunks).
A dataset with `__getitems__` (torch's batched-fetch protocol; `NpyRows` has one) is read with one call per
gather. The user's transforms (e.g. random augmentation) are applied on every read: the same row gives a new
view at every step that batches it.

    rows = DatasetRows(dataset, workers=4)  # a DataLoader with 4 worker processes reads the next batches ahead

With `workers` set (0 = the loader in this process), a run reads its training batches through a torch
`DataLoader` (`pin_memory` when the features go to a GPU) that runs ahead of the sampler
(`pyro_dps.data.prefetch`); the batch order then comes from its own generator, so any number of workers gives
the same draws. Without it (None) each step reads its rows when it asks, in the order of the in-memory path.

Small sets are read whole: `read_pairs` (items of any dataset) and `read_iterable` (an IterableDataset meta set).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import Dataset

from pyro_dps.errors import DataError


class _Counter:
    """Items read and the largest single gather, shared by every view of one source (`to`, `rows`)."""

    def __init__(self) -> None:
        self.loads = 0
        self.largest = 0
        self.gathers = 0
        self.memo: dict | None = None  # rows read within `repeatable()`: a second gather of them reads nothing
        self.feed = None  # a `prefetch.LoaderFeed` reading the sampler's next batches ahead, while a run has one


class DatasetRows:
    """The features of a map-style `torch.utils.data.Dataset` (items x or (x, ...)) as rows read on demand.

    Quacks like the feature tensor where the package reads a few rows: `shape`, `dtype`, `device`, `len`,
    `gather(idx)` and `self[int | slice | LongTensor]` (each a gather), `to(device)` (gathered rows are moved
    there) and `rows(lo, hi)` (a view of rows [lo, hi), for a shard). Item 0 is read once, to learn the
    per-item feature shape and dtype; every item must match them.
    """

    def __init__(self, dataset: Dataset, device: torch.device | str = "cpu", workers: int | None = None,
                 prefetch_factor: int = 2, *, _view: tuple | None = None):
        if not isinstance(dataset, Dataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DataError(f"DatasetRows needs a map-style torch.utils.data.Dataset (with __getitem__ and __len__), "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset
        self.device = torch.empty(0, device=device).device
        self.workers, self.prefetch_factor = _loader_settings(workers, prefetch_factor)
        if _view is not None:
            self.offset, self.n, self.feature_shape, self.dtype, self._counter = _view
            return
        self.offset, self.n, self._counter = 0, len(dataset), _Counter()
        if self.n == 0:
            raise DataError("the dataset is empty: at least 1 row is required")
        first = item_features(dataset[0], 0)
        self._counter.loads = 1
        self.feature_shape, self.dtype = tuple(first.shape), first.dtype

    # ---- what the package reads ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n, *self.feature_shape))

    @property
    def loads(self) -> int:
        """Items read from the dataset so far (item 0 at construction, then every gather's; over every view)."""
        return self._counter.loads

    @property
    def largest_gather(self) -> int:
        return self._counter.largest

    @property
    def gathers(self) -> int:
        return self._counter.gathers

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The features of rows `idx` (a LongTensor, any device), stacked (len(idx), *feature_shape), on `device`."""
        rows = [int(i) for i in torch.as_tensor(idx).reshape(-1).tolist()]
        if not rows:
            return torch.empty((0, *self.feature_shape), dtype=self.dtype, device=self.device)
        bad = [i for i in rows if not -self.n <= i < self.n]
        if bad:
            raise DataError(f"row {bad[0]} is out of range for {self.n} rows")
        items = [self.offset + (i % self.n) for i in rows]
        memo, c = self._counter.memo, self._counter
        if memo is not None and tuple(items) in memo:
            return memo[tuple(items)].to(self.device)
        out = c.feed.take(items) if c.feed is not None else None
        if out is None:
            out = self.read(items)
        c.loads, c.gathers, c.largest = c.loads + len(items), c.gathers + 1, max(c.largest, len(items))
        if memo is not None:
            memo[tuple(items)] = out
        return out.to(self.device, non_blocking=out.is_pinned())

    def read(self, items: list[int]) -> torch.Tensor:
        """Dataset items `items` (absolute indices) read in this process and stacked (nothing counted)."""
        return stack_features(read_items(self.dataset, items), items, self.feature_shape, self.dtype)

    @contextmanager
    def repeatable(self) -> Iterator[None]:
        """Within it, gathering the same rows again gives the same tensor, not a new read (a random
        augmentation would differ): for checks that evaluate one batch twice and compare."""
        self._counter.memo = {}
        try:
            yield
        finally:
            self._counter.memo = None

    def __getitem__(self, key: Any) -> torch.Tensor:
        """Rows as a tensor: `self[i]` one row (no batch dimension), `self[a:b]` and `self[idx]` stacked."""
        if isinstance(key, int) or (torch.is_tensor(key) and key.dim() == 0):
            return self.gather(torch.tensor([int(key)]))[0]
        if isinstance(key, slice):
            return self.gather(torch.arange(self.n)[key])
        return self.gather(torch.as_tensor(key))

    def to(self, device: torch.device | str) -> "DatasetRows":
        """The same rows, gathered onto `device` (the dataset and its load count are shared)."""
        return DatasetRows(self.dataset, device, self.workers, self.prefetch_factor,
                           _view=(self.offset, self.n, self.feature_shape, self.dtype, self._counter))

    def rows(self, lo: int, hi: int) -> "DatasetRows":
        """A view of rows [lo, hi) (nothing is read)."""
        lo, hi = max(0, lo), min(self.n, hi)
        return DatasetRows(self.dataset, self.device, self.workers, self.prefetch_factor,
                           _view=(self.offset + lo, max(0, hi - lo), self.feature_shape, self.dtype, self._counter))

    def empty(self) -> torch.Tensor:
        """No rows, as a tensor of this source's feature shape and dtype (a problem without a meta set)."""
        return torch.empty((0, *self.feature_shape), dtype=self.dtype, device=self.device)

    def fingerprint(self) -> dict:
        """What a checkpoint records of these rows: their kind, count, shape and dtype (their bytes are not read),
        and whether a loader reads them ahead (which sets the batch order; the number of workers does not)."""
        return {"rows": type(self.dataset).__name__, "shape": list(self.shape), "dtype": str(self.dtype),
                "read_ahead": self.workers is not None}

    def __repr__(self) -> str:
        return f"DatasetRows({type(self.dataset).__name__}, shape={tuple(self.shape)}, dtype={self.dtype})"


def read_items(dataset: Dataset, items: list[int]) -> list:
    """Dataset items `items`, with one `__getitems__` call when the dataset has torch's batched-fetch protocol."""
    return dataset.__getitems__(items) if hasattr(dataset, "__getitems__") else [dataset[i] for i in items]


def _loader_settings(workers: int | None, prefetch_factor: int) -> tuple[int | None, int]:
    """`workers` (None or an int >= 0) and `prefetch_factor` (>= 1) checked, else a DataError naming them."""
    for name, value, low in (("workers", workers, 0), ("prefetch_factor", prefetch_factor, 1)):
        if value is None and name == "workers":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"DatasetRows {name} must be an integer >= {low}, got {value!r}")
    return workers, prefetch_factor


def item_features(item: Any, index: int, shape: tuple | None = None, dtype: torch.dtype | None = None,
                  where: str = "the dataset") -> torch.Tensor:
    """Item `index`'s features (x of an item x or (x, ...)) as a tensor, checked against `shape` and `dtype`."""
    x = item[0] if isinstance(item, (tuple, list)) else item
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"item {index} of {where} has features of type {type(x).__name__}, not a tensor "
                            "(give a transform that makes one, e.g. torchvision's ToTensor)") from exc
    if shape is not None and tuple(x.shape) != shape:
        raise DataError(f"item {index} of {where} has features of shape {tuple(x.shape)}, but item 0 has "
                        f"{shape}: every item must have the same shape")
    if dtype is not None and x.dtype != dtype:
        raise DataError(f"item {index} of {where} has dtype {x.dtype}, but item 0 has {dtype}")
    return x


def read_pairs(items: Iterable, where: str, max_rows: int | None = None) -> tuple[torch.Tensor | None, list]:
    """(the stacked features, the list of labels as given) of (x, y, ...) items read once, each x checked
    against item 0's shape and dtype (None when there are no items); past `max_rows` items a DataError:
    for sets small enough to hold in memory. `where` names the source in errors."""
    xs, ys = [], []
    for i, item in enumerate(items):
        if max_rows is not None and i >= max_rows:
            raise DataError(f"{where} has more than max_rows={max_rows} items: a set read into memory is meant to "
                            "be small; give a map-style Dataset (read on demand) instead, or raise max_rows")
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"item {i} of {where} is not an (x, y) pair, got {type(item).__name__}")
        first = xs[0] if xs else None
        xs.append(item_features(item, i, None if first is None else tuple(first.shape),
                                None if first is None else first.dtype, where))
        ys.append(item[1])
    return (torch.stack(xs) if xs else None), ys


def stack_features(items: list, indices: list[int], shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """The features of dataset items (read at `indices`), each checked, stacked (len(items), *shape)."""
    return torch.stack([item_features(item, i, shape, dtype) for item, i in zip(items, indices, strict=True)])


def take(x: torch.Tensor | DatasetRows, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` of a feature tensor (indexing, as ever) or of a row source (a gather)."""
    return x.gather(idx) if isinstance(x, DatasetRows) else x[idx]


def read_iterable(dataset: Iterable, max_rows: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) stacked from one pass over an IterableDataset of (x, y) items: for a small curated meta set
    (read into memory, so at most `max_rows` items; a larger set belongs in a map-style Dataset)."""
    x, labels = read_pairs(dataset, "the iterable dataset", max_rows)
    if x is None:
        raise DataError("the iterable dataset yields no items")
    ys = []
    for i, label in enumerate(labels):
        try:
            t = torch.as_tensor(label)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"item {i} of the iterable dataset has y of type {type(label).__name__}, not "
                            "numbers") from exc
        if ys and (t.shape != ys[0].shape or t.dtype != ys[0].dtype):
            raise DataError(f"item {i} of the iterable dataset has y of shape {tuple(t.shape)} and dtype {t.dtype}, "
                            f"but item 0 has {tuple(ys[0].shape)} and {ys[0].dtype}")
        ys.append(t)
    y = torch.stack(ys)
    return x, (y.long() if not y.is_floating_point() else y)
