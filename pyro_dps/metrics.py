"""Evaluation metrics (scikit-learn underneath)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def accuracy(probs: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy of predicted class probabilities."""
    probs, y = np.asarray(probs), np.asarray(y)
    return float((probs.argmax(-1) == y).mean())


def noise_auroc(scores: np.ndarray, clean: np.ndarray | None) -> float | None:
    """AUROC of `scores` (higher = more trusted) for telling clean from corrupted examples; None without both kinds."""
    if clean is None:
        return None
    clean = np.asarray(clean).astype(bool)
    if clean.all() or not clean.any():
        return None
    return float(roc_auc_score(clean, np.asarray(scores)))
