"""One plain minibatch training loop that every optimisation baseline shares (no copy-pasted loops).

    net = train(net, x, y, steps=1000, lr=1e-3)                      # the whole loop
    trainer = Trainer(net, x, y, hook=my_hook); trainer.step()        # one step at a time (benchmarks)

A method changes the loop only through per-example weights: fixed `weights`, or a `hook` that is
called once per minibatch with the current network and returns the batch's weights (BLO,
Meta-Weight-Net, CDS). The objective is the weight-normalised batch loss
`sum_i w_i l_i / sum_i w_i`, the plain mean when no weights are given.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .data.batches import MinibatchSampler
from .losses import cross_entropy

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}

# A batch hook: given the step, the network and the batch's rows, return per-example weights (or None).
WeightHook = Callable[[int, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]


class Trainer:
    """The state of the shared loop; `step()` is one minibatch update, `run(steps)` the loop."""

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0, loss=cross_entropy,
                 weights: torch.Tensor | None = None, hook: WeightHook | None = None):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        self.net, self.x, self.y, self.loss, self.weights, self.hook = net, x, y, loss, weights, hook
        if x.shape[0] < 1:
            raise ValueError(f"cannot sample minibatches from {x.shape[0]} rows")
        self.rows = MinibatchSampler(x.shape[0], batch_size, torch.Generator(device=x.device).manual_seed(seed),
                                     x.device)
        self.opt = OPTIMIZERS[optimizer](net.parameters(), lr=lr, weight_decay=weight_decay)
        self.t = 0
        net.train()

    def step(self) -> torch.Tensor:
        """One update on the next minibatch; returns the (detached) objective."""
        rows = self.rows()
        xb, yb = self.x[rows], self.y[rows]
        if self.hook is not None:
            w = self.hook(self.t, self.net, xb, yb, rows)
        else:
            w = self.weights[rows] if self.weights is not None else None
        per_example = self.loss(self.net(xb), yb)
        objective = per_example.mean() if w is None else (w * per_example).sum() / w.sum().clamp_min(1e-12)
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        self.opt.step()
        self.t += 1
        return objective.detach()

    def run(self, steps: int) -> nn.Module:
        for _ in range(steps):
            self.step()
        self.net.eval()
        return self.net


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int = 128,
          lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0,
          loss=cross_entropy, weights: torch.Tensor | None = None, hook: WeightHook | None = None) -> nn.Module:
    """Minimise the (weighted) mean per-example loss over `steps` minibatches of (x, y).

    `weights` fixes a per-example weight; `hook` computes one per batch (BLO-style methods).
    """
    return Trainer(net, x, y, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                   seed=seed, loss=loss, weights=weights, hook=hook).run(steps)


@torch.no_grad()
def predict_proba(net: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Softmax outputs of a trained network."""
    net.eval()
    return torch.cat([net(x[i:i + batch_size]).softmax(-1) for i in range(0, x.shape[0], batch_size)]).cpu()


@torch.no_grad()
def per_example_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=cross_entropy,
                     batch_size: int = 1024) -> torch.Tensor:
    """l(z_i; theta) for every row of (x, y), on x's device (evaluation mode)."""
    net.eval()
    return torch.cat([loss(net(x[i:i + batch_size]), y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
