"""Mixing with early stopping on a held-out part of D_m: the strong cheap baseline a practitioner tries first.

Rule:
1. D_m is split per class (stratified, seeded: `pyro_dps.data.stratified_split` with seed
   `SPLIT_SEED + seed`) into a fit part and a held-out validation part, `val_fraction` of each class
   held out (default half; a class with one example goes to the fit part);
2. the network trains on D_t together with the fit part of D_m in the shared loop
   (`pyro_dps.training.Trainer`, the same optimiser / lr / batch settings as mixing), for exactly
   `steps` updates: the same budget as every method;
3. every `eval_every` steps (default: ceil(steps / 20), about 20 evaluations) and after the last
   step, the mean loss (cross-entropy by default) and the accuracy on the held-out part are
   computed without gradients (the held-out rows only, never test data), and a copy of the
   parameters and buffers is kept whenever the held-out loss is the lowest so far (ties: the
   earlier step);
4. the network is returned restored to that best checkpoint, in evaluation mode.

Why: on noisy D_t a network first fits the shared clean signal and later memorises the wrong
labels; stopping where the curated held-out loss is lowest is what a practitioner would do with
mixing before reaching for data selection, so BADS should be compared with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import DataSplits, stratified_split
from ..errors import ConfigError, DataError, require
from ..losses import cross_entropy
from ..training import Trainer

SPLIT_SEED = 30_011  # offset of the D_m split's generator seed from the run's seed
EVALUATIONS = 20  # the default number of held-out evaluations over the step budget


@dataclass
class EarlyStopHistory:
    """The held-out evaluations of one run: step, loss and accuracy, plus which D_m rows were held out."""

    fit_rows: torch.Tensor  # rows of D_m trained on (with all of D_t)
    val_rows: torch.Tensor  # rows of D_m held out for the stopping rule
    steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_step: int | None = None  # the step whose checkpoint was returned (None: no finite loss; the last state)


def check_settings(val_fraction: float, eval_every: int | None) -> None:
    """Raise ConfigError naming the field unless 0 < val_fraction < 1 and eval_every is an int >= 1 (or None)."""
    require(isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
            and 0 < val_fraction < 1, ConfigError, f"mixing_es: val_fraction must be in (0, 1), got {val_fraction!r}")
    require(eval_every is None or (isinstance(eval_every, int) and not isinstance(eval_every, bool)
                                   and eval_every >= 1),
            ConfigError, f"mixing_es: eval_every must be an integer >= 1, got {eval_every!r}")


def evaluation_steps(steps: int, eval_every: int | None) -> list[int]:
    """The steps after which the held-out set is evaluated: every `eval_every`-th and the last one."""
    every = eval_every or max(1, math.ceil(steps / EVALUATIONS))
    points = list(range(every, steps + 1, every))
    return points + [steps] if steps > 0 and (not points or points[-1] != steps) else points


@torch.no_grad()
def held_out_metrics(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=cross_entropy,
                     batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of `net` on (x, y) in evaluation mode, one forward pass per chunk."""
    net.eval()
    outputs = torch.cat([net(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    return float(loss(outputs, y).mean()), float((outputs.argmax(-1) == y).float().mean())


def mixing_es_with_history(net: nn.Module, data: DataSplits, steps: int, seed: int = 0, val_fraction: float = 0.5,
                           eval_every: int | None = None, loss=cross_entropy,
                           **train_kwargs) -> tuple[nn.Module, EarlyStopHistory]:
    """Mixing on D_t and part of D_m, restored to the step with the lowest loss on the rest of D_m."""
    check_settings(val_fraction, eval_every)
    fit_rows, val_rows = stratified_split(data.y_meta, val_fraction, SPLIT_SEED + seed)
    require(val_rows.numel() > 0, DataError,
            "mixing_es needs a held-out part of D_m, but no class of y_meta has 2 or more examples")
    history = EarlyStopHistory(fit_rows, val_rows)
    x_val, y_val = data.x_meta[val_rows], data.y_meta[val_rows]
    trainer = Trainer(net, torch.cat([data.x_train, data.x_meta[fit_rows]]),
                      torch.cat([data.y_train, data.y_meta[fit_rows]]), seed=seed, loss=loss, **train_kwargs)
    best, best_loss = None, math.inf
    for point in evaluation_steps(steps, eval_every):
        while trainer.t < point:
            trainer.step()
        val_loss, val_acc = held_out_metrics(net, x_val, y_val, loss)
        net.train()
        if val_loss < best_loss:  # strict: ties keep the earlier checkpoint; NaN never wins
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best_loss, history.best_step = val_loss, point
        history.steps.append(point)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
    if best is not None:
        net.load_state_dict(best)
    net.eval()
    return net, history


def mixing_es(net: nn.Module, data: DataSplits, steps: int, **settings) -> nn.Module:
    """The early-stopped mixing network (the `BASELINES` entry point)."""
    return mixing_es_with_history(net, data, steps, **settings)[0]
