"""Duplicate-meta: D_t plus copies of D_m up to |D_t| rows, so that half of every epoch is curated data."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data import DataSplits
from ..training import train


def duplicate_rows(n_meta: int, n_train: int) -> torch.Tensor:
    """Meta row indices tiled to max(n_train, n_meta) rows: every meta example ceil or floor(n_train/n_meta) times."""
    reps = max(1, math.ceil(n_train / n_meta))
    return torch.arange(n_meta).repeat(reps)[:max(n_train, n_meta)]


def duplicate_meta(net: nn.Module, data: DataSplits, steps: int, **train_kwargs) -> nn.Module:
    """The network trained on D_t together with |D_t| rows of repeated meta examples."""
    rows = duplicate_rows(data.n_meta, data.n_train).to(data.x_meta.device)
    x = torch.cat([data.x_train, data.x_meta[rows]])
    y = torch.cat([data.y_train, data.y_meta[rows]])
    return train(net, x, y, steps, **train_kwargs)
