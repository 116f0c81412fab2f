"""Per-example losses l(z; theta): the model multiplies them by weights, so none of them reduce over the batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of a categorical label, one value per example."""
    return F.cross_entropy(outputs, targets, reduction="none")


def sequence_nll(outputs: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Token-averaged next-token NLL per sequence; `targets` use `ignore_index` for prompt and padding."""
    tokens = F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none", ignore_index=ignore_index)
    counts = (targets != ignore_index).sum(dim=1).clamp_min(1)
    return tokens.sum(dim=1) / counts
