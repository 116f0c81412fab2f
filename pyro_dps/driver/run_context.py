"""What every chain of a run shares: the resolved settings, the potential, the data's layout and the draw store."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..context import Problem
from ..draws import DrawStore
from ..kernels.chain import GuardSettings
from ..potential import SiteLayout
from .distributed import Communicator, ShardLayout
from .recorder import SCALARS, latent_globals, weights_site
from .sampler_config import SamplerConfig


@dataclass
class RunContext:
    """A run's shared parts; `finals` (each chain's last theta) and `snapshots` grow as chains finish."""

    config: SamplerConfig
    potential: SiteLayout
    problem: Problem  # this rank's shard
    comm: Communicator
    layout: ShardLayout
    device: torch.device
    table_device: torch.device
    checkpoint: Path | None
    identity: dict | None  # the run's fingerprint, which a checkpoint must match
    store: DrawStore | None  # None on ranks other than 0
    keep: set[int]  # the kept draws whose theta is snapshotted
    finals: list[torch.Tensor] = field(default_factory=list)
    snapshots: list[torch.Tensor] = field(default_factory=list)

    @property
    def host_table(self) -> bool:
        """The weight table lives off the compute device: only the batch's rows cross."""
        return self.table_device != self.device

    @property
    def own_batch_order(self) -> bool:
        """The train batch order has its own generator, not the chain's: for a host table, and for rows a
        DataLoader reads ahead (`DatasetRows(workers=...)`), whose order must be known before the steps run."""
        return self.host_table or getattr(self.problem.x_train, "workers", None) is not None

    @property
    def owned(self) -> list[int]:
        """The shards of D_t this process holds (its rank's under torchrun, all of them in one process)."""
        return [self.comm.rank] if self.comm.world > 1 else list(range(self.config.shards))

    @property
    def total_steps(self) -> int:
        return self.config.warmup + self.config.samples * self.config.thin

    @property
    def guard_settings(self) -> GuardSettings:
        c = self.config
        return GuardSettings(c.check_every, c.max_rejections, c.temperature, c.step_size)


def run_context(config: SamplerConfig, potential: SiteLayout, problem: Problem, comm: Communicator,
                layout: ShardLayout, checkpoint: Path | None, identity: dict | None, spill_path: str | None,
                example_ids: np.ndarray | None, append: bool) -> RunContext:
    """The run's context with its draw store (rank 0 only; `append` when a checkpoint is resumed)."""
    n_total = problem.n_train_total
    ids = np.arange(n_total) if example_ids is None else np.asarray(example_ids)
    store = DrawStore(config.chains, config.samples, ids if potential.has_weights else ids[:0],
                      {**dict.fromkeys(SCALARS, ()), **latent_globals(potential)}, config.memory_budget_mb,
                      spill_path, append=append, weights_name=weights_site(potential)) if comm.main else None
    n_snap = min(config.snapshots, config.samples)  # evenly spaced over the kept draws
    keep = set(np.linspace(0, config.samples - 1, n_snap).round().astype(int).tolist()) if n_snap else set()
    device = torch.device(config.device)
    table_device = torch.device(config.table_device) if config.table_device else device
    return RunContext(config, potential, problem, comm, layout, device, table_device, checkpoint, identity, store,
                      keep)
