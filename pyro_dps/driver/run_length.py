"""The run's "auto" settings: how many steps a chain warms up for, how far apart its kept draws are, and
theta's step-size schedule between them.

`warmup = "auto"`: max(2,000 steps, 10 epochs), so that the network has trained (a few thousand updates
for the small networks of the benchmarks) and every weight has been redrawn at least ten times.
`thin = "auto"`: one epoch of D_t, ceil(N_t / batch_size) steps, and at least `MIN_CYCLE_STEPS`, so that
between two kept draws every weight is redrawn from its conditional at least once (the exact weight
update needs no more: a draw does not depend on the weight's previous value, only on theta and the
other weights) and theta has time for one cycle of its schedule.
`step_size = "auto"`: cyclical SG-MCMC (Zhang et al., ICLR 2020), one cosine cycle per kept draw, from
`CYCLE_PEAK` down to almost 0 at the step that produces the draw: the large steps carry theta out of the
mode it sits in (at T = 0.01 a constant step of 1e-3 keeps each chain in its own mode for the whole run,
so chains disagree on the meta loss and on the weights of ambiguous examples), the small ones let it
settle before the draw. Cycles are aligned so that every kept draw ends one (a warm-up of "auto" length is
rounded up to whole cycles; a given warm-up shifts the cycles instead).
"""
from __future__ import annotations

import math
from dataclasses import replace

MIN_WARMUP_STEPS = 2000
WARMUP_EPOCHS = 10
MIN_CYCLE_STEPS = 32  # a cosine cycle of fewer steps has too few small steps to settle (measured: docs/defaults.md)
CYCLE_PEAK = 5e-3  # theta's largest step, at each cycle's start (pSGLD's drift there is RMSprop's at lr 2.5e-3)


def epoch_steps(n_train: int, batch_size: int) -> int:
    """Steps in which every training example is visited once."""
    return max(1, math.ceil(n_train / max(1, batch_size)))


def auto_schedule(cycle_length: int, warmup: int) -> dict:
    """The `step_size = "auto"` schedule as a table (recorded as data in metrics.json and draws.nc): one cycle per
    kept draw, ending at the step that produces it (draws follow steps warmup + k * cycle_length)."""
    return {"kind": "cyclical", "eps0": CYCLE_PEAK, "cycle_length": int(cycle_length),
            "offset": int(warmup % cycle_length)}


def resolve_length(config, n_train: int):
    """The config with warmup, thin and step_size as numbers or tables (the rules above for "auto")."""
    epoch = epoch_steps(n_train, config.batch_size)
    auto_step = isinstance(config.step_size, str) and config.step_size == "auto"
    thin = max(epoch, MIN_CYCLE_STEPS) if config.thin == "auto" else config.thin
    warmup = max(MIN_WARMUP_STEPS, WARMUP_EPOCHS * epoch) if config.warmup == "auto" else config.warmup
    if auto_step and config.warmup == "auto":
        warmup = math.ceil(warmup / thin) * thin
    step_size = auto_schedule(thin, warmup) if auto_step else config.step_size
    return replace(config, warmup=warmup, thin=thin, step_size=step_size)
