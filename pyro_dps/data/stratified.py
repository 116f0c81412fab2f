"""A seeded per-class split of a labelled set into a fit part and a held-out part (e.g. D_m for validation)."""

from __future__ import annotations

import math

import torch


def stratified_split(labels: torch.Tensor, val_fraction: float = 0.5,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, held-out rows) of `labels`, split class by class so both parts keep the class mix.

    Each class's rows are shuffled with a generator seeded by `seed`; a class of n >= 2 rows puts
    round(val_fraction * n) of them (at least 1, at most n - 1) into the held-out part, the rest into
    the fit part; a class with one row puts it into the fit part. Rows are concatenated in class
    order; the indices are int64 on `labels`' device.
    """
    gen = torch.Generator().manual_seed(seed)
    y = labels.cpu()
    fit_rows, val_rows = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for c in torch.unique(y):
        rows = (y == c).nonzero().flatten()
        rows = rows[torch.randperm(rows.numel(), generator=gen)]
        n = rows.numel()
        n_val = min(n - 1, max(1, math.floor(val_fraction * n + 0.5))) if n > 1 else 0
        fit_rows.append(rows[:n - n_val])
        val_rows.append(rows[n - n_val:])
    return torch.cat(fit_rows).to(labels.device), torch.cat(val_rows).to(labels.device)
