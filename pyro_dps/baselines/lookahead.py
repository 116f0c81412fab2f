"""The one-step look-ahead shared by BLO and Meta-Weight-Net, written with `torch.func`.

Both methods ask how the meta loss would change if the network took one virtual SGD step on a
weighted training batch:

    theta'(w) = theta - alpha * grad_theta sum_i w_i l(z_i; theta)
    L_meta(theta'(w)) = mean_j l(z_j; theta'(w))

and differentiate `L_meta(theta'(w))` with respect to the weights (BLO) or to the parameters of the
network that produces them (Meta-Weight-Net). The network is never copied: its parameters are read
as a dict and `functional_call` evaluates it at `theta` and at `theta'`; `torch.func.grad` composes
the inner gradient (the virtual step) with the outer one.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..data.batches import MinibatchSampler

Params = dict[str, torch.Tensor]


def detached_params(net: nn.Module) -> tuple[Params, Params]:
    """The network's parameters (detached: the outer optimiser owns them) and buffers, as dicts."""
    return ({k: p.detach() for k, p in net.named_parameters()}, dict(net.named_buffers()))


def virtual_step(net: nn.Module, params: Params, buffers: Params, loss: Callable, x: torch.Tensor, y: torch.Tensor,
                 weights: torch.Tensor, lr: float) -> Params:
    """theta - lr * grad_theta sum_i weights_i l(z_i; theta), differentiable in `weights` (via torch.func)."""

    def weighted_loss(p: Params) -> torch.Tensor:
        return (weights * loss(functional_call(net, (p, buffers), (x,)), y)).sum()

    g = torch.func.grad(weighted_loss)(params)
    return {k: params[k] - lr * g[k] for k in params}


def mean_loss(net: nn.Module, params: Params, buffers: Params, loss: Callable, x: torch.Tensor,
              y: torch.Tensor) -> torch.Tensor:
    """mean_j l(z_j; params)."""
    return loss(functional_call(net, (params, buffers), (x,)), y).mean()


class MetaBatches:
    """Minibatches of the meta set for a hook (its own seeded generator, so the train stream is untouched)."""

    def __init__(self, x_meta: torch.Tensor, y_meta: torch.Tensor, batch_size: int, seed: int):
        self.x, self.y = x_meta, y_meta
        if x_meta.shape[0] < 1:
            raise ValueError(f"cannot sample minibatches from {x_meta.shape[0]} rows")
        self.rows = MinibatchSampler(x_meta.shape[0], batch_size,
                                     torch.Generator(device=x_meta.device).manual_seed(7919 + seed), x_meta.device)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows()
        return self.x[rows], self.y[rows]


class ScoreTracker:
    """Running mean of the weight each training example received over the steps that visited it."""

    def __init__(self, n: int, device: torch.device | str):
        self.total = torch.zeros(n, dtype=torch.float64, device=device)
        self.count = torch.zeros(n, dtype=torch.float64, device=device)

    def add(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        self.total.index_add_(0, rows, values.detach().to(torch.float64))
        self.count.index_add_(0, rows, torch.ones_like(rows, dtype=torch.float64))

    def scores(self) -> torch.Tensor:
        """Per-example mean weight (float32, CPU); examples never visited get the overall mean."""
        seen = self.count > 0
        mean = self.total / self.count.clamp_min(1)
        fill = (self.total[seen].sum() / self.count[seen].sum()) if bool(seen.any()) else torch.zeros((), dtype=mean.dtype)
        return torch.where(seen, mean, fill.to(mean.device)).float().cpu()
