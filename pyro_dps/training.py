"""One plain minibatch training loop that every optimisation baseline shares (no copy-pasted loops)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .losses import cross_entropy

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}

# A batch hook: given the step, the network and the batch's rows, return per-example weights (or None).
WeightHook = Callable[[int, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int = 128,
          lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0,
          loss=cross_entropy, weights: torch.Tensor | None = None, hook: WeightHook | None = None) -> nn.Module:
    """Minimise the (weighted) mean per-example loss over `steps` minibatches of (x, y).

    `weights` fixes a per-example weight; `hook` computes one per batch (BLO-style methods).
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = OPTIMIZERS[optimizer](net.parameters(), lr=lr, weight_decay=weight_decay)
    n, b = x.shape[0], min(batch_size, x.shape[0])
    perm, pos = torch.randperm(n, generator=gen, device=x.device), 0
    net.train()
    for step in range(steps):
        if pos + b > n:
            perm, pos = torch.randperm(n, generator=gen, device=x.device), 0
        rows = perm[pos:pos + b]
        pos += b
        xb, yb = x[rows], y[rows]
        w = hook(step, net, xb, yb, rows) if hook is not None else (weights[rows] if weights is not None else None)
        per_example = loss(net(xb), yb)
        objective = per_example.mean() if w is None else (w * per_example).sum() / w.sum().clamp_min(1e-12)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
    net.eval()
    return net


@torch.no_grad()
def predict_proba(net: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Softmax outputs of a trained network."""
    net.eval()
    return torch.cat([net(x[i:i + batch_size]).softmax(-1) for i in range(0, x.shape[0], batch_size)]).cpu()
