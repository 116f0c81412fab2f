"""One chain's set-up and host-side control, shared by `fit` and the `pyro.infer.MCMC` kernels.

    generator = chain_generator(seed, chain, device)      # chain k of a run seeded s: seed s * 1000 + k
    state = start_chain(potential, algorithm, generator)  # theta from the initialiser, weights at initial_weights
    control = ChainControl(chain, warmup, GuardSettings(...))
    for t in range(1, steps + 1):
        state = algorithm.step(state, batches(), control.scale)
        control.after_step(algorithm, state, t)            # end of warm-up; the divergence guard

Both runners go through these, so a kernel run by Pyro's MCMC follows `fit`'s chain of the same seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DivergenceError
from ..potential import SiteLayout
from ..useful_fraction import selection_fraction

CHECK_EVERY = 50  # steps between the guard's host reads of the rejection counters
MAX_REJECTIONS = 20  # consecutive rejected steps after which a chain stops
THETA_RMS_LIMIT = 1e4  # per-coordinate RMS of theta past which a chain has exploded (times sqrt(T) when T > 1)


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain `chain` of a run seeded `seed` (`bounds.SEED_MAX` keeps it below 2^63)."""
    return seed * 1000 + chain


def chain_generator(seed: int, chain: int, device: torch.device | str) -> torch.Generator:
    """Chain `chain`'s generator on `device`: its noise, batches and initial theta are drawn from it."""
    return torch.Generator(device=device).manual_seed(chain_seed(seed, chain))


def initial_weights(potential: SiteLayout) -> torch.Tensor:
    """Every chain's starting weights (length N_t of this process): the sum prior's target spread evenly,
    k_g / n_g in each group g (the mode of the prior's sum), else the model's `beta`, else 1/2."""
    p = potential.problem
    normal = potential.normal_sum_prior
    if normal is None:
        beta = selection_fraction(potential.hyper)
        beta = 0.5 if beta is None else beta
        return torch.full((p.n_train,), min(max(beta, 1e-3), 1 - 1e-3))
    loc = torch.as_tensor(normal[0], dtype=torch.float64).reshape(-1).cpu()
    scale_up = p.n_train_total / p.n_train  # a shard: its counts stand for the whole set's
    if potential.sum_groups is None:
        return torch.full((p.n_train,), float(loc[0]) / p.n_train_total).clamp(0.0, 1.0).float()
    groups = potential.sum_groups.cpu()
    counts = torch.bincount(groups, minlength=loc.numel()).double() * scale_up
    return (loc / counts.clamp(min=1))[groups].clamp(0.0, 1.0).float()


def start_chain(potential: SiteLayout, algorithm, generator: torch.Generator,
                table_device: torch.device | None = None, pin: bool = False):
    """A chain's first state: theta from the network's initialiser on the chain's generator, the weight table
    (on `table_device`, pinned with `pin`) at `initial_weights`; the model's running averages start afresh."""
    table = None
    if potential.local_site is not None:
        table = initial_weights(potential).to(table_device or potential.problem.device)
        table = table.pin_memory() if pin else table
    state = algorithm.init(potential.init_theta(generator), table)
    potential.memory.clear()
    return state


@dataclass(frozen=True)
class GuardSettings:
    """What the divergence guard needs: how often it looks, when it stops, and the settings it names."""

    check_every: int = CHECK_EVERY
    max_rejections: int = MAX_REJECTIONS
    temperature: float = 1.0
    step_size: Any = None


def guard(state, chain: int, t: int, scale: float, seen: int, settings: GuardSettings, checkpoint=None
          ) -> tuple[float, int]:
    """Host-side half of the divergence guard: halve the step size after rejections; stop after a run of them,
    or as soon as theta has exploded (finite but far outside any plausible region). Returns (scale, seen)."""
    rejected = int(state.rejected)
    if rejected > seen:
        scale *= 0.5
    where = f"; the last good checkpoint is {str(checkpoint)!r}" if checkpoint else ""
    if int(state.max_run) >= settings.max_rejections:
        raise DivergenceError(f"chain {chain}: {int(state.max_run)} consecutive non-finite steps by step {t} "
                              f"(max_rejections={settings.max_rejections}); lower step_size{where}")
    rms = float(state.theta.norm()) / math.sqrt(max(state.theta.numel(), 1))
    limit = THETA_RMS_LIMIT * max(1.0, math.sqrt(float(settings.temperature)))
    if not rms <= limit:
        culprit = (f"sampler.temperature (now {settings.temperature:g})" if settings.temperature > 1
                   else f"sampler.step_size (now {settings.step_size!r})")
        raise DivergenceError(f"chain {chain}: theta exploded by step {t} (RMS |theta| = {rms:.3g}, limit {limit:.3g}):"
                              f" the chain has left any plausible region; lower {culprit}{where}")
    return scale, rejected


@dataclass
class ChainControl:
    """The host side of one chain between its steps: tell the algorithm when warm-up's `warmup` steps are done
    (`end_warmup`: pSGLD freezes its preconditioner there when asked to), and run the divergence `guard`
    every `check_every` steps, which sets `scale`."""

    chain: int
    warmup: int
    settings: GuardSettings
    checkpoint: Any = None  # named in the guard's message
    scale: float = 1.0  # the step-size multiplier (halved per check that saw new rejections)
    seen_rejected: int = 0

    def after_step(self, algorithm, state, t: int, last: bool = False) -> None:
        """After step t (1-based) of the chain; `last` forces a guard check (the run's final step)."""
        if t == self.warmup:
            algorithm.end_warmup(state)  # e.g. pSGLD with freeze_preconditioner fixes its V here
        if t % self.settings.check_every == 0 or last:
            self.scale, self.seen_rejected = guard(state, self.chain, t, self.scale, self.seen_rejected,
                                                   self.settings, self.checkpoint)


def step_scalars(state, n_total: int, w_sum: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The last step's mean train and meta losses and the mean weight, as 0-d tensors left on the device (no
    host read): what the progress bar and `LoopSampler.step` report. `w_sum`: the table's total over all ranks."""
    stats, out = state.stats, {}
    if "train_losses" in stats:
        out["train_loss"] = stats["train_losses"].mean()
    if "meta_losses" in stats and stats["meta_losses"].numel():
        out["meta_loss"] = stats["meta_losses"].mean()
    if state.table is not None:
        out["w_mean"] = (state.w_sum if w_sum is None else w_sum).sum() / n_total
    elif "w" in stats:  # a weight network: the batch's mean weight
        out["w_mean"] = stats["w"].mean()
    return out


def progress(state, n_total: int, w_sum: torch.Tensor | None = None) -> dict[str, str]:
    """`step_scalars` as a progress bar shows them (read from the device)."""
    return {k: f"{float(v):.3f}" if k == "w_mean" else f"{float(v):.3g}"
            for k, v in step_scalars(state, n_total, w_sum).items()}
