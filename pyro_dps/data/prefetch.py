"""Training batches read ahead by a torch `DataLoader` (worker processes, pinned memory, the user's transforms)
while the chain computes, in exactly the order the chain's batch sampler will ask for them.

    with read_ahead(rows, train_batches):   # rows = DatasetRows(dataset, workers=4)
        ... every step: idx = train_batches(); rows.gather(idx) is served from the loader ...

The loader's batch sampler is a copy of the chain's (its position and generator state), so it yields the same
index batches the chain will draw; a gather whose rows are the next batch takes it, any other gather (the
report, a check that evaluates a batch twice) reads directly. So the weight table's rows and the data stay
aligned whatever the loader does, and the draws do not depend on the number of workers.
"""
from __future__ import annotations

import copy
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .rows import DatasetRows, read_items, stack_features


class _Ahead:
    """The loader's batch sampler: the copied sampler's batches, forever, as lists of dataset items; each one is
    also queued in `pending`, so that the loader's i-th batch is known to hold `pending`'s i-th items."""

    def __init__(self, sampler: Callable[[], torch.Tensor], offset: int, n: int):
        self.sampler, self.offset, self.n = sampler, offset, n
        self.pending: deque[tuple[int, ...]] = deque()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            items = tuple(self.offset + (i % self.n) for i in self.sampler().tolist())
            self.pending.append(items)
            yield list(items)


class _Numbered(Dataset):
    """The dataset's items with their indices, (i, item): a worker's error can name the item it read."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]

    def __getitems__(self, items: list[int]) -> list:
        return list(zip(items, read_items(self.dataset, items), strict=True))


class _Collate:
    """A loader batch of (index, item) pairs as one stacked feature tensor, each item checked (picklable, for
    the worker processes)."""

    def __init__(self, shape: tuple, dtype: torch.dtype):
        self.shape, self.dtype = shape, dtype

    def __call__(self, numbered: list) -> torch.Tensor:
        return stack_features([item for _, item in numbered], [i for i, _ in numbered], self.shape, self.dtype)


class LoaderFeed:
    """A running `DataLoader` over the rows' dataset with the sampler copy's order; `take` hands out its batches."""

    def __init__(self, rows: DatasetRows, sampler: Callable[[], torch.Tensor]):
        self.ahead = _Ahead(copy.deepcopy(sampler), rows.offset, rows.n)
        workers = rows.workers
        self.loader = DataLoader(_Numbered(rows.dataset), batch_sampler=self.ahead, num_workers=workers,
                                 collate_fn=_Collate(rows.feature_shape, rows.dtype),
                                 pin_memory=rows.device.type == "cuda",
                                 prefetch_factor=rows.prefetch_factor if workers else None)
        self.iterator = iter(self.loader)
        self.next: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.taken = 0

    def take(self, items: list[int]) -> torch.Tensor | None:
        """The features of `items` when they are the loader's next batch (then it is consumed), else None."""
        if self.next is None:
            features = next(self.iterator)
            self.next = (self.ahead.pending.popleft(), features)
        if self.next[0] != tuple(items):
            return None
        features, self.next = self.next[1], None
        self.taken += 1
        return features

    def close(self) -> None:
        """Stop the loader's workers (their read-ahead batches are dropped)."""
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.iterator = None


@contextmanager
def read_ahead(rows, sampler: Callable[[], torch.Tensor]) -> Iterator[LoaderFeed | None]:
    """While open, `rows`' gathers of `sampler`'s batches come from a `LoaderFeed` (when `rows` is a
    `DatasetRows` with `workers` set; otherwise nothing changes and None is given)."""
    if not isinstance(rows, DatasetRows) or rows.workers is None:
        yield None
        return
    feed = LoaderFeed(rows, sampler)
    rows._counter.feed = feed
    try:
        yield feed
    finally:
        rows._counter.feed = None
        feed.close()
