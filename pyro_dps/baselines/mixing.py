"""Mixing: train on D_t and D_m together, as if all data were equally trustworthy."""
from __future__ import annotations

import torch
from torch import nn

from ..data import DataSplits
from ..training import train


def mixing(net: nn.Module, data: DataSplits, steps: int, **train_kwargs) -> nn.Module:
    """The network trained on the union of the training and meta sets."""
    x = torch.cat([data.x_train, data.x_meta])
    y = torch.cat([data.y_train, data.y_meta])
    return train(net, x, y, steps, **train_kwargs)
