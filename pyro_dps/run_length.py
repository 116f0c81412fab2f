"""Run length in epochs: how many steps a chain warms up for and how far apart its kept draws are.

`warmup = "auto"`: max(2,000 steps, 10 epochs), so that the network has trained (a few thousand updates
for the small networks of the benchmarks) and every weight has been redrawn at least ten times.
`thin = "auto"`: one epoch of D_t, ceil(N_t / batch_size) steps, so that between two kept draws every
weight is redrawn from its conditional once (the exact weight update needs no more: a draw does not
depend on the weight's previous value, only on theta and the other weights).
"""
from __future__ import annotations

import math
from dataclasses import replace

MIN_WARMUP_STEPS = 2000
WARMUP_EPOCHS = 10


def epoch_steps(n_train: int, batch_size: int) -> int:
    """Steps in which every training example is visited once."""
    return max(1, math.ceil(n_train / max(1, batch_size)))


def resolve_length(config, n_train: int):
    """The config with warmup and thin as step counts (the rule above for "auto")."""
    epoch = epoch_steps(n_train, config.batch_size)
    warmup = max(MIN_WARMUP_STEPS, WARMUP_EPOCHS * epoch) if config.warmup == "auto" else config.warmup
    thin = epoch if config.thin == "auto" else config.thin
    return replace(config, warmup=warmup, thin=thin)
