"""Meta-Weight-Net (Shu et al., NeurIPS 2019): a small MLP maps an example's loss to its weight.

Per training minibatch, with V_phi the loss -> weight net (sigmoid output):

    v_i = V_phi(l_i(theta))  (loss input detached),   v <- v / sum(v)
    theta'(phi) = theta - alpha * grad_theta sum_i v_i l_i(theta)             (virtual step)
    phi <- phi - meta-optimiser step on grad_phi L_meta(theta'(phi))
    real step: minimise sum_i V_phi(l_i) l_i / sum_i V_phi(l_i)  in the shared loop

The virtual step is a `torch.func.grad` inside the `torch.func.grad` over phi; the network is not
copied. Per-example score: the mean weight V_phi gave an example over the run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..data import DataSplits
from ..losses import cross_entropy
from ..training import train
from .lookahead import MetaBatches, ScoreTracker, detached_params, mean_loss


class WeightNet(nn.Module):
    """loss -> weight in (0, 1): Linear(1, hidden) - ReLU - Linear(hidden, 1) - sigmoid (the paper's 1-100-1)."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(losses.unsqueeze(-1))).squeeze(-1)


class MetaWeightHook:
    """The shared loop's per-batch hook: one meta update of the weight net, then the batch's weights."""

    def __init__(self, data: DataSplits, meta_batch_size: int, virtual_lr: float, meta_lr: float = 1e-3,
                 meta_weight_decay: float = 1e-4, hidden: int = 100, seed: int = 0,
                 tracker: ScoreTracker | None = None, loss=cross_entropy):
        with torch.random.fork_rng(devices=[]):  # a seeded weight net that leaves the global stream alone
            torch.manual_seed(31_337 + seed)
            self.vnet = WeightNet(hidden).to(data.x_train.device)
        self.opt = torch.optim.Adam(self.vnet.parameters(), lr=meta_lr, weight_decay=meta_weight_decay)
        self.meta = MetaBatches(data.x_meta, data.y_meta, meta_batch_size, seed)
        self.virtual_lr, self.tracker, self.loss = virtual_lr, tracker, loss

    def meta_gradient(self, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, x_meta: torch.Tensor,
                      y_meta: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """grad_phi L_meta(theta'(phi)) and the batch's losses at theta (detached)."""
        params, buffers = detached_params(net)
        phi = {k: p.detach() for k, p in self.vnet.named_parameters()}
        loss, vnet, alpha = self.loss, self.vnet, self.virtual_lr

        def meta_after_step(phi):
            def weighted_loss(p):
                losses = loss(functional_call(net, (p, buffers), (xb,)), yb)
                v = functional_call(vnet, phi, (losses.detach(),))
                v = v / v.sum().clamp_min(1e-12)
                return (v * losses).sum(), losses.detach()

            g, losses = torch.func.grad(weighted_loss, has_aux=True)(params)
            stepped = {k: params[k] - alpha * g[k] for k in params}
            return mean_loss(net, stepped, buffers, loss, x_meta, y_meta), losses

        return torch.func.grad(meta_after_step, has_aux=True)(phi)

    def __call__(self, step: int, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
        grads, losses = self.meta_gradient(net, xb, yb, *self.meta())
        for name, p in self.vnet.named_parameters():
            p.grad = grads[name]
        self.opt.step()
        with torch.no_grad():
            w = self.vnet(losses)
        if self.tracker is not None:
            self.tracker.add(rows, w)
        return w


def mwn_with_scores(net: nn.Module, data: DataSplits, steps: int, seed: int = 0, lr: float = 1e-3,
                    batch_size: int = 128, meta_batch_size: int | None = None, virtual_lr: float | None = None,
                    meta_lr: float = 1e-3, hidden: int = 100, **train_kwargs) -> tuple[nn.Module, torch.Tensor]:
    """Train with Meta-Weight-Net weights; returns the network and each example's mean weight.

    `virtual_lr` (the look-ahead step) defaults to `lr`; `meta_lr` is the weight net's Adam step.
    """
    tracker = ScoreTracker(data.n_train, data.x_train.device)
    hook = MetaWeightHook(data, meta_batch_size or batch_size, virtual_lr or lr, meta_lr=meta_lr, hidden=hidden,
                          seed=seed, tracker=tracker)
    net = train(net, data.x_train, data.y_train, steps, batch_size=batch_size, lr=lr, seed=seed, hook=hook,
                **train_kwargs)
    return net, tracker.scores()


def mwn(net: nn.Module, data: DataSplits, steps: int, **settings) -> nn.Module:
    """The network trained with Meta-Weight-Net (the `BASELINES` entry point)."""
    return mwn_with_scores(net, data, steps, **settings)[0]
