"""BLO: learning to reweight examples by a one-step look-ahead (Ren et al., ICML 2018).

For each training minibatch B and a meta minibatch, perturb the batch's weights by eps (at eps = 0),
take a virtual SGD step with them and read the weights off the gradient of the meta loss:

    w_i = max(0, -d L_meta(theta'(eps)) / d eps_i |_{eps=0}),   w <- w / sum(w)   (all zero stays zero)

(at eps = 0 this is alpha * max(0, <grad l_i(theta), grad L_meta(theta)>): an example is kept in
proportion to how well its gradient agrees with the meta set's). The real step then minimises the
weighted batch loss in the shared loop. Per-example score: the mean weight an example received
(scaled so that a uniform batch gives 1), for `pyro_dps.metrics.noise_auroc`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data import DataSplits
from ..losses import cross_entropy
from ..training import train
from .lookahead import MetaBatches, ScoreTracker, detached_params, mean_loss, virtual_step


def blo_weights(net: nn.Module, x: torch.Tensor, y: torch.Tensor, x_meta: torch.Tensor, y_meta: torch.Tensor,
                virtual_lr: float = 1e-3, loss=cross_entropy) -> torch.Tensor:
    """The batch's normalised learning-to-reweight weights (sum 1, or all 0 when no example helps)."""
    params, buffers = detached_params(net)

    def meta_after_step(eps: torch.Tensor) -> torch.Tensor:
        return mean_loss(net, virtual_step(net, params, buffers, loss, x, y, eps, virtual_lr), buffers, loss,
                         x_meta, y_meta)

    eps = torch.zeros(x.shape[0], device=x.device, dtype=next(iter(params.values())).dtype)
    w = (-torch.func.grad(meta_after_step)(eps)).clamp_min(0)
    total = w.sum()
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), w).detach()


def blo_hook(data: DataSplits, meta_batch_size: int, virtual_lr: float, seed: int, tracker: ScoreTracker | None = None,
             loss=cross_entropy):
    """The per-batch weight hook for the shared loop (records each example's weight in `tracker`)."""
    meta = MetaBatches(data.x_meta, data.y_meta, meta_batch_size, seed)

    def hook(step: int, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        w = blo_weights(net, xb, yb, *meta(), virtual_lr=virtual_lr, loss=loss)
        if tracker is not None:
            tracker.add(rows, w * rows.numel())
        return w

    return hook


def blo_with_scores(net: nn.Module, data: DataSplits, steps: int, seed: int = 0, lr: float = 1e-3,
                    batch_size: int = 128, meta_batch_size: int | None = None, virtual_lr: float | None = None,
                    **train_kwargs) -> tuple[nn.Module, torch.Tensor]:
    """Train with learning-to-reweight weights; returns the network and each example's mean weight.

    `virtual_lr` (the look-ahead step) defaults to `lr`; with eps = 0 and normalised weights it only
    sets the scale of the meta gradient, not the weights.
    """
    tracker = ScoreTracker(data.n_train, data.x_train.device)
    hook = blo_hook(data, meta_batch_size or batch_size, virtual_lr or lr, seed, tracker)
    net = train(net, data.x_train, data.y_train, steps, batch_size=batch_size, lr=lr, seed=seed, hook=hook,
                **train_kwargs)
    return net, tracker.scores()


def blo(net: nn.Module, data: DataSplits, steps: int, **settings) -> nn.Module:
    """The network trained with learning-to-reweight (the `BASELINES` entry point)."""
    return blo_with_scores(net, data, steps, **settings)[0]
