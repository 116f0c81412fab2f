"""Minibatch row indices: fixed-size batches without replacement within an epoch (the sampler's streams, the
baselines' training loop and their meta batches all draw them here)."""
from __future__ import annotations

import torch

from ..errors import DataError


class MinibatchSampler:
    """Fixed-size batches without replacement within an epoch, drawn on the data's device."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.empty(0, dtype=torch.long, device=device)
        self.pos = 0

    def __call__(self) -> torch.Tensor:
        if self.n == 0:
            return self.perm[:0]
        if self.pos + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.pos = 0
        out = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return out

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"].to(self.device), int(state["pos"])


def row_indices(idx, n: int, name: str, distinct: bool = False, what: str = "row indices") -> torch.Tensor:
    """A caller's `idx` as a 1-D long tensor of rows in [0, n) (distinct rows when asked), else a DataError
    naming `name`; `what` is how the message calls the rows."""
    try:
        idx = torch.as_tensor(idx)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{name} must be a 1-D integer tensor of {what}, got {type(idx).__name__}") from exc
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex() or idx.dim() != 1:
        raise DataError(f"{name} must be a 1-D integer tensor of {what}, got {idx.dtype} of shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise DataError(f"{name} must hold {what} in [0, {n}), got values in [{int(idx.min())}, {int(idx.max())}]")
    if distinct and idx.unique().numel() != idx.numel():
        raise DataError(f"{name} repeats a row: each row's weight is updated once per step")
    return idx.long()
