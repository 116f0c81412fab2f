"""Minibatch row indices: fixed-size batches without replacement within an epoch (the sampler's streams, the
baselines' training loop and their meta batches all draw them here)."""
from __future__ import annotations

import torch


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
