"""`SamplerConfig`: how to sample, every setting validated here and only here (before any work starts)."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from ..bounds import (MAX_CHAINS, MAX_DRAWS, MAX_MEMORY_MB, MAX_SNAPSHOTS, MAX_STEPS, MAX_TEMPERATURE, SEED_MAX,
                      check_choice, check_device, check_flag, check_int, check_real, check_schedule)
from ..context import Problem
from ..errors import ConfigError
from ..kernels import ALGORITHMS
from ..kernels.blocked import WEIGHT_UPDATES
from ..kernels.chain import CHECK_EVERY, MAX_REJECTIONS
from ..potential import POTENTIAL_KINDS
from ..training import OPTIMIZERS
from .run_length import resolve_length

MAX_DRAW_BYTES = 2 ** 40  # weight draws of a run (1 TiB; streamed to disk beyond memory_budget_mb)
MAX_THETA_BYTES = 2 ** 36  # theta snapshots and final thetas kept in memory (64 GiB)


@dataclass
class SamplerConfig:
    """How to sample: kernel and its settings, chains, warm-up, draws, thinning, batches, device."""

    kernel: str = "psgld"
    step_size: Any = "auto"  # "auto": cyclical, one cycle per kept draw (pyro_dps/driver/run_length.py); a number; a schedule
    local_step_size: Any = None
    temperature: float = 0.01  # cold posterior (docs/defaults.md): 1 is the posterior itself
    kernel_kwargs: dict = field(default_factory=dict)
    chains: int = 4
    warmup: int | str = "auto"  # steps; "auto": max(2000 steps, 10 epochs) (pyro_dps/driver/run_length.py)
    samples: int = 250  # per chain: ESS >= 100 per chain needs well over 100 draws (diagnostics.chance_rates)
    thin: int | str = "auto"  # steps between kept draws; "auto": one epoch, at least 32 steps
    batch_size: int = 128
    meta_batch_size: int | None = None
    snapshots: int = 10
    seed: int = 0
    device: str = "cpu"
    potential: str = "auto"
    memory_budget_mb: float = 512.0
    progress: bool = True
    log_every: int = 200
    check_every: int = CHECK_EVERY
    max_rejections: int = MAX_REJECTIONS
    checkpoint_every: int = 0
    table_device: str | None = None  # where the weight table lives ("cpu": pinned host memory beside a GPU network)
    shards: int = 1  # training-set shards: the torchrun world size, or K in one process to reproduce a K-rank run
    compile: bool = False  # the whole step as one torch.compile'd function (fused potential; kernels/compiled.py)
    weight_update: str = "auto"  # table weights: "exact" conditional draws (auto where the model allows), "langevin"
    candidates: int = 8  # candidates per row and visit of the exact weight update (kernels/conditional.py)

    def validate(self, problem: Problem | None) -> "SamplerConfig":
        """Every setting in its range (`pyro_dps.bounds`), before any work starts; ConfigError naming the field.
        Without a problem (a configuration checked before its data is read) the data-dependent bounds are skipped."""
        if not isinstance(self.kernel, str) or self.kernel not in ALGORITHMS:
            raise ConfigError(f"kernel must be one of {sorted(ALGORITHMS)}, got {self.kernel!r}")
        self._check_counts(problem)
        length = self._length(problem)
        total = length.warmup + self.samples * length.thin
        check_schedule(length.step_size, "step_size", total)
        if self.local_step_size is not None:
            check_schedule(self.local_step_size, "local_step_size", total)
        check_real(self.temperature, "temperature", 0.0, MAX_TEMPERATURE)
        check_real(self.memory_budget_mb, "memory_budget_mb", 0.0, MAX_MEMORY_MB, low_open=True)
        check_flag(self.progress, "progress")
        check_choice(self.weight_update, "weight_update", WEIGHT_UPDATES)
        check_flag(self.compile, "compile")
        check_choice(self.potential, "potential", POTENTIAL_KINDS)
        checks = [
            (isinstance(self.kernel_kwargs, dict), f"kernel_kwargs must be a table, got {self.kernel_kwargs!r}"),
            (self.batch_size % self.shards == 0,
             f"batch_size ({self.batch_size!r}) must be a multiple of shards ({self.shards!r})"),
        ]
        if problem is not None:
            meta = min(self.meta_batch_size or self.batch_size, problem.n_meta)
            checks.append((self.shards <= 1 or meta % self.shards == 0,
                           f"the meta batch (min(meta_batch_size, N_m) = {meta}) must be a multiple of shards "
                           f"({self.shards!r})"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        _check_kernel_kwargs(self.kernel, self.kernel_kwargs)
        check_device(self.device, "device")
        if self.table_device is not None:
            check_device(self.table_device, "table_device")
        return self

    def _check_counts(self, problem: Problem | None) -> None:
        """The integer settings: each an int (not a bool) in a range that fits in time and memory."""
        n_train = MAX_STEPS if problem is None else problem.n_train
        for name, low, high in (("chains", 1, MAX_CHAINS), ("warmup", 0, MAX_STEPS), ("samples", 1, MAX_DRAWS),
                                ("thin", 1, MAX_STEPS), ("batch_size", 1, n_train),
                                ("snapshots", 0, MAX_SNAPSHOTS), ("seed", 0, SEED_MAX), ("log_every", 1, MAX_STEPS),
                                ("check_every", 1, MAX_STEPS), ("max_rejections", 1, MAX_STEPS),
                                ("checkpoint_every", 0, MAX_STEPS), ("shards", 1, max(n_train, 1)),
                                ("candidates", 1, 1024)):
            if name in ("warmup", "thin") and getattr(self, name) == "auto":
                continue  # resolved from N_t and the batch size (pyro_dps/driver/run_length.py)
            label = f"{name} (N_t = {n_train})" if name == "batch_size" and problem is not None else name
            check_int(getattr(self, name), label, low, high)
        if self.meta_batch_size is not None:
            check_int(self.meta_batch_size, "meta_batch_size", 1, MAX_STEPS)
        length = self._length(problem)
        if length.warmup + self.samples * length.thin > MAX_STEPS:
            raise ConfigError(f"warmup + samples * thin = {length.warmup + self.samples * length.thin} steps per "
                              f"chain is more than {MAX_STEPS}")
        if self.chains * self.samples > MAX_DRAWS:
            raise ConfigError(f"chains * samples = {self.chains * self.samples} draws is more than {MAX_DRAWS}")
        if problem is not None:
            self._check_memory(problem)

    def _length(self, problem: Problem | None) -> "SamplerConfig":
        """The config with "auto" run lengths resolved (for N_t of the problem; one batch per epoch without one)."""
        return resolve_length(self, problem.n_train if problem is not None else self.batch_size)

    def _check_memory(self, problem: Problem) -> None:
        """Draws and theta copies that fit: weight draws within MAX_DRAW_BYTES (on disk when streamed), the
        kept snapshots and final thetas within MAX_THETA_BYTES of memory."""
        draws = self.chains * self.samples * problem.n_train * 4
        if draws > MAX_DRAW_BYTES:
            raise ConfigError(f"chains * samples * N_t = {self.chains} * {self.samples} * {problem.n_train} weight "
                              f"draws need {draws / 2 ** 30:.0f} GiB, more than {MAX_DRAW_BYTES // 2 ** 30} GiB; "
                              "keep fewer draws (samples) or chains")
        size = sum(math.prod(shape) for shape in problem.param_shapes.values())
        copies = (min(self.snapshots, self.samples) + self.chains) * size * 4
        if copies > MAX_THETA_BYTES:
            raise ConfigError(f"{min(self.snapshots, self.samples)} snapshots and {self.chains} final thetas of "
                              f"{size} parameters need {copies / 2 ** 30:.0f} GiB, more than "
                              f"{MAX_THETA_BYTES // 2 ** 30} GiB; keep fewer snapshots")


DRIVER_KWARGS = {"potential", "step_size", "temperature", "local_step_size", "generator", "compile", "comm",
                 "noise_rows"}  # what fit passes to every kernel itself


def _check_kernel_kwargs(kernel: str, kwargs: dict) -> None:
    """kernel_kwargs that the kernel (and, for `paper`, its torch optimizer) takes, with finite numbers."""
    params = inspect.signature(ALGORITHMS[kernel]).parameters
    takes = {k for k, p in params.items() if p.kind is not p.VAR_KEYWORD} - DRIVER_KWARGS
    if kernel == "paper":
        name = kwargs.get("optimizer", "sgd")
        optimizer = OPTIMIZERS.get(name) if isinstance(name, str) else None
        if optimizer is None:
            raise ConfigError(f"kernel_kwargs.optimizer must be one of {sorted(OPTIMIZERS)}, "
                              f"got {kwargs['optimizer']!r}")
        takes |= set(inspect.signature(optimizer).parameters) - {"params", "lr"}
    for key, value in kwargs.items():
        if key not in takes:
            raise ConfigError(f"kernel_kwargs.{key} is not a setting of kernel {kernel!r} (it takes {sorted(takes)})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"kernel_kwargs.{key} must be finite, got {value!r}")


def weight_settings(config: SamplerConfig) -> dict:
    """The weight-update settings a kernel takes (the paper's kernel keeps its own default update unless set)."""
    out = {"candidates": config.candidates}
    if config.weight_update != "auto" or config.kernel != "paper":
        out["weight_update"] = config.weight_update
    return out
