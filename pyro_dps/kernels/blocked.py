"""The step every kernel shares: blocked SG-MCMC on (theta, w), dispatching the batch's weights to exact
conditional draws (`exact_step`) or to Langevin steps on their logits (`langevin_table`)."""
from __future__ import annotations

import torch

from ..bounds import MAX_TEMPERATURE, check_choice, check_flag, check_real
from ..potential import SiteLayout
from .conditional import conditional_weights, exact_weights_reason
from .exact_step import exact_gibbs_langevin
from .langevin_table import langevin_table
from .rule import UpdateRule
from .state import SamplingAlgorithm

WEIGHT_UPDATES = ("auto", "exact", "langevin")


def blocked_langevin(potential: SiteLayout, rule: UpdateRule, step_size, temperature: float = 1.0,
                     local_step_size=None, local_rule: UpdateRule | None = None,
                     generator: torch.Generator | None = None, guard: bool = True, comm=None,
                     noise_rows: tuple[int, int] | None = None, compile: bool = False,
                     weight_update: str = "auto", candidates: int = 8) -> SamplingAlgorithm:
    """Random-scan blocked SG-MCMC on (theta, w): the step every kernel shares.

    theta moves by the kernel's rule on the minibatch gradient of the log joint. The batch's table weights
    are drawn exactly from their conditional given theta (`weight_update = "exact"`, the default wherever
    the model allows it: `kernels/exact_step.py`), or take a Langevin step of the kernel's rule on their
    logits with `local_step_size` (`"langevin"`). With `guard`, a step whose gradient is not finite is
    rejected on the device (the old values are kept by `torch.where`, no host read) and counted in
    `state.rejected` / `state.run`; the driver reads the counters when it reports progress, reduces the
    step size and stops after too many. The step-size multiplier `scale` (a host float set by the driver)
    multiplies the schedules. Distributed (`comm`, a `distributed.Communicator`): theta's gradient is
    averaged over ranks (with a finiteness flag, so every rank accepts or rejects together), `state.w_sum`
    is this rank's shard sum and the total is all-reduced before each step; `noise_rows` slices the
    table's noise (`noise_source`). With `compile`, the whole step runs as one `torch.compile`d function
    (`kernels/compiled.py`; fused potential only) and follows the same random stream as the eager step.
    """
    temperature = check_real(temperature, "temperature", 0.0, MAX_TEMPERATURE)
    check_flag(compile, "compile")
    local_rule = local_rule or rule
    if resolve_weight_update(weight_update, potential, temperature, local_rule):
        return exact_gibbs_langevin(potential, rule, step_size, temperature, generator, guard, comm, noise_rows,
                                    compile, candidates)
    return langevin_table(potential, rule, local_rule, step_size, local_step_size, temperature, generator, guard,
                          comm, noise_rows, compile)


def resolve_weight_update(weight_update: str, potential: SiteLayout, temperature: float,
                          rule: UpdateRule) -> bool:
    """True for exact conditional draws of the table weights, False for Langevin steps on their logits.

    "auto": exact wherever the model's structure allows it (`kernels/conditional.py`), and never for the
    paper's noisy optimiser (its weight update is part of what it reproduces).
    """
    check_choice(weight_update, "weight_update", WEIGHT_UPDATES)
    if potential.local_site is None or weight_update == "langevin":
        return False
    if weight_update == "auto":
        return getattr(rule, "compilable", True) and not exact_weights_reason(potential, temperature)
    conditional_weights(potential, temperature)  # raises, naming what is missing
    return True
