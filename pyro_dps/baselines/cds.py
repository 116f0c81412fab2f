"""CDS: contrastive data selection (Wang et al., WMT 2018, "Denoising NMT training with trusted data").

1. base model: the network trained on D_t;
2. trusted model: the base model fine-tuned on D_m;
3. score_i = log p(y_i | x_i; trusted) - log p(y_i | x_i; base)  (how much the trusted data likes z_i);
4. the network is trained on D_t keeping, in each minibatch, the `beta` fraction with the highest score.

Both helper models run through the shared loop; the main network starts from its own (untrained)
initialisation. Per-example score: step 3, for `pyro_dps.metrics.noise_auroc`.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..data import DataSplits
from ..losses import cross_entropy
from ..training import per_example_loss, train


def contrastive_scores(net: nn.Module, data: DataSplits, score_steps: int, finetune_steps: int,
                       finetune_lr: float | None = None, seed: int = 0, loss=cross_entropy,
                       **train_kwargs) -> torch.Tensor:
    """log p(y|x; fine-tuned on D_m) - log p(y|x; trained on D_t) for every training example (`net` is not touched)."""
    base = train(copy.deepcopy(net), data.x_train, data.y_train, score_steps, seed=seed + 1, loss=loss, **train_kwargs)
    tuned_kwargs = dict(train_kwargs)
    if finetune_lr is not None:
        tuned_kwargs["lr"] = finetune_lr
    tuned = train(copy.deepcopy(base), data.x_meta, data.y_meta, finetune_steps, seed=seed + 2, loss=loss,
                  **tuned_kwargs)
    return (per_example_loss(base, data.x_train, data.y_train, loss)
            - per_example_loss(tuned, data.x_train, data.y_train, loss))


def top_fraction_hook(scores: torch.Tensor, beta: float):
    """A shared-loop hook that keeps (weight 1) the ceil(beta * |B|) highest-scoring rows of each batch."""
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")

    def hook(step: int, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        s = scores[rows]
        k = max(1, math.ceil(beta * rows.numel()))
        w = torch.zeros_like(s)
        w[s.topk(k).indices] = 1.0
        return w

    return hook


def cds_with_scores(net: nn.Module, data: DataSplits, steps: int, beta: float = 0.5, seed: int = 0,
                    score_steps: int | None = None, finetune_steps: int | None = None,
                    finetune_lr: float | None = None, **train_kwargs) -> tuple[nn.Module, torch.Tensor]:
    """Train with contrastive per-batch selection; returns the network and the contrastive scores.

    The base model gets `score_steps` (default: `steps`) on D_t, the fine-tuning `finetune_steps`
    (default: max(10, steps // 10)) on D_m at `finetune_lr` (default: the training lr).
    """
    scores = contrastive_scores(net, data, score_steps or steps, finetune_steps or max(10, steps // 10),
                                finetune_lr, seed, **train_kwargs)
    net = train(net, data.x_train, data.y_train, steps, seed=seed, hook=top_fraction_hook(scores, beta),
                **train_kwargs)
    return net, scores.float().cpu()


def cds(net: nn.Module, data: DataSplits, steps: int, **settings) -> nn.Module:
    """The network trained with contrastive data selection (the `BASELINES` entry point)."""
    return cds_with_scores(net, data, steps, **settings)[0]
