"""Baselines of the paper, each a small module over the shared loop in `pyro_dps.training`.

    net = BASELINES[name](net, data, steps=..., seed=..., **settings)            # a trained nn.Module
    net, scores = run_baseline(name, net, data, steps=..., seed=..., **settings)  # scores: None or [N_t]

Scores are per training example, higher = more trusted (BLO and Meta-Weight-Net: the mean weight an
example received; CDS: the contrastive log-likelihood; cleanlab: the label quality), ready for
`pyro_dps.metrics.noise_auroc`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..data import DataSplits
from .blo import blo, blo_weights, blo_with_scores
from .cds import cds, cds_with_scores, contrastive_scores
from .cleanlab_filter import cleanlab_available, cleanlab_baseline, cleanlab_with_scores
from .duplicate_meta import duplicate_meta, duplicate_rows
from .meta_only import meta_only
from .mixing import mixing
from .mixing_early_stop import EarlyStopHistory, mixing_es, mixing_es_with_history
from .mwn import MetaWeightHook, WeightNet, mwn, mwn_with_scores
from .random_select import random_select, random_subset

BASELINES: dict[str, Callable[..., nn.Module]] = {
    "mixing": mixing,
    "mixing_es": mixing_es,  # mixing stopped at the best loss on a held-out part of D_m
    "meta_only": meta_only,
    "random_select": random_select,
    "duplicate_meta": duplicate_meta,
    "blo": blo,
    "mwn": mwn,
    "cds": cds,
    "cleanlab": cleanlab_baseline,  # needs the optional `cleanlab` package
}

# The baselines that score training examples: same arguments, return (net, scores).
SCORED_BASELINES: dict[str, Callable[..., tuple[nn.Module, torch.Tensor]]] = {
    "blo": blo_with_scores,
    "mwn": mwn_with_scores,
    "cds": cds_with_scores,
    "cleanlab": cleanlab_with_scores,
}

# Baselines that take the fraction `beta` of D_t believed useful (the same beta as BADS's prior).
BETA_BASELINES = frozenset({"random_select", "cds"})

# Settings a baseline accepts beyond the shared loop's (steps, seed, lr, optimizer, batch_size, weight_decay).
EXTRA_SETTINGS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "mixing_es": {"val_fraction": float, "eval_every": int},
    "random_select": {"beta": float},
    "blo": {"meta_batch_size": int, "virtual_lr": float},
    "mwn": {"meta_batch_size": int, "virtual_lr": float, "meta_lr": float, "hidden": int},
    "cds": {"beta": float, "score_steps": int, "finetune_steps": int, "finetune_lr": float},
    "cleanlab": {"folds": int, "fold_steps": int, "filter_by": str, "include_meta": bool},
}


def run_baseline(name: str, net: nn.Module, data: DataSplits, steps: int,
                 **settings) -> tuple[nn.Module, torch.Tensor | None]:
    """Train baseline `name`; returns (network, per-example scores or None for non-scoring baselines)."""
    if name in SCORED_BASELINES:
        return SCORED_BASELINES[name](net, data, steps, **settings)
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r} (known: {sorted(BASELINES)})")
    return BASELINES[name](net, data, steps, **settings), None


__all__ = ["BASELINES", "BETA_BASELINES", "EXTRA_SETTINGS", "EarlyStopHistory", "MetaWeightHook", "SCORED_BASELINES",
           "WeightNet", "blo", "blo_weights", "blo_with_scores", "cds", "cds_with_scores", "cleanlab_available",
           "cleanlab_baseline", "cleanlab_with_scores", "contrastive_scores", "duplicate_meta", "duplicate_rows",
           "meta_only", "mixing", "mixing_es", "mixing_es_with_history", "mwn", "mwn_with_scores", "random_select",
           "random_subset", "run_baseline"]
