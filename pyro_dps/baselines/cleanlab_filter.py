"""Confident learning with cleanlab (optional extra: `pip install pyro-dps[cleanlab]`).

1. out-of-sample class probabilities for D_t by K-fold cross-validation, each fold's network trained
   with the shared loop from the same initialisation as the final network;
2. `cleanlab.filter.find_label_issues` flags likely label errors, `cleanlab.rank.get_label_quality_scores`
   scores every example (higher = more trusted);
3. the network is trained on the unflagged part of D_t together with D_m (as in mixing).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..data import DataSplits
from ..losses import cross_entropy
from ..training import predict_proba, train


def _require_cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the cleanlab baseline needs the optional extra: pip install 'pyro-dps[cleanlab]'") from exc
    return cleanlab


def fold_indices(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs: stratified when every class has at least `folds` examples."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(y)
    stratify = counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def out_of_fold_proba(net: nn.Module, x: torch.Tensor, y: torch.Tensor, folds: int, steps: int, seed: int = 0,
                      loss=cross_entropy, **train_kwargs) -> np.ndarray:
    """Class probabilities for every row of (x, y) from a network that did not train on that row."""
    probs = None
    for k, (fit_rows, held_rows) in enumerate(fold_indices(y.cpu().numpy(), folds, seed)):
        fit_rows_t = torch.as_tensor(fit_rows, device=x.device)
        model = train(copy.deepcopy(net), x[fit_rows_t], y[fit_rows_t], steps, seed=seed + 100 + k, loss=loss,
                      **train_kwargs)
        p = predict_proba(model, x[torch.as_tensor(held_rows, device=x.device)]).numpy()
        if probs is None:
            probs = np.zeros((x.shape[0], p.shape[1]), dtype=np.float64)
        probs[held_rows] = p
    return probs


def label_issues(labels: np.ndarray, pred_probs: np.ndarray, filter_by: str = "prune_by_noise_rate",
                 method: str = "self_confidence") -> tuple[np.ndarray, np.ndarray]:
    """(flagged as a label issue, label quality score) per example, from cleanlab."""
    cl = _require_cleanlab()
    issues = cl.filter.find_label_issues(labels, pred_probs, filter_by=filter_by)
    quality = cl.rank.get_label_quality_scores(labels, pred_probs, method=method)
    return np.asarray(issues, dtype=bool), np.asarray(quality, dtype=np.float64)


def cleanlab_with_scores(net: nn.Module, data: DataSplits, steps: int, seed: int = 0, folds: int = 3,
                         fold_steps: int | None = None, filter_by: str = "prune_by_noise_rate",
                         include_meta: bool = True, **train_kwargs) -> tuple[nn.Module, torch.Tensor]:
    """Train on the examples cleanlab keeps; returns the network and every example's label quality.

    Each of the `folds` cross-validation networks gets `fold_steps` (default: `steps`) steps.
    """
    _require_cleanlab()
    pred_probs = out_of_fold_proba(net, data.x_train, data.y_train, folds, fold_steps or steps, seed,
                                   **train_kwargs)
    issues, quality = label_issues(data.y_train.cpu().numpy(), pred_probs, filter_by=filter_by)
    keep = torch.as_tensor(~issues, device=data.x_train.device)
    if not bool(keep.any()) and not include_meta:
        raise ValueError("cleanlab flagged every training example and include_meta is False: nothing to train on")
    x, y = data.x_train[keep], data.y_train[keep]
    if include_meta:
        x, y = torch.cat([x, data.x_meta]), torch.cat([y, data.y_meta])
    net = train(net, x, y, steps, seed=seed, **train_kwargs)
    return net, torch.as_tensor(quality, dtype=torch.float32)


def cleanlab_baseline(net: nn.Module, data: DataSplits, steps: int, **settings) -> nn.Module:
    """The network trained on cleanlab's kept examples (the `BASELINES` entry point)."""
    return cleanlab_with_scores(net, data, steps, **settings)[0]


def cleanlab_available() -> bool:
    """Whether the optional cleanlab package is installed."""
    try:
        _require_cleanlab()
    except ImportError:
        return False
    return True
