"""Random-select: D_m plus a random `beta` fraction of D_t (the data-agnostic selection at BADS's budget)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data import DataSplits
from ..training import train


def random_subset(n_train: int, beta: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of round(beta * n_train) training rows (at least one), drawn without replacement."""
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    k = max(1, min(n_train, int(math.floor(beta * n_train + 0.5))))
    gen = torch.Generator().manual_seed(10_007 + seed)
    return torch.randperm(n_train, generator=gen)[:k].sort().values


def random_select(net: nn.Module, data: DataSplits, steps: int, beta: float = 0.5, seed: int = 0,
                  **train_kwargs) -> nn.Module:
    """The network trained on D_m and a random `beta` fraction of D_t."""
    keep = random_subset(data.n_train, beta, seed).to(data.x_train.device)
    x = torch.cat([data.x_meta, data.x_train[keep]])
    y = torch.cat([data.y_meta, data.y_train[keep]])
    return train(net, x, y, steps, seed=seed, **train_kwargs)
