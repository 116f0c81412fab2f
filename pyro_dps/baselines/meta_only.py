"""Meta-only: train on the curated meta set D_m alone and ignore D_t."""
from __future__ import annotations

from torch import nn

from ..data import DataSplits
from ..training import train


def meta_only(net: nn.Module, data: DataSplits, steps: int, **train_kwargs) -> nn.Module:
    """The network trained on the meta set only."""
    return train(net, data.x_meta, data.y_meta, steps, **train_kwargs)
