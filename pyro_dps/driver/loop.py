"""`LoopSampler`: one chain of `fit`, stepped from a training loop you keep (plain PyTorch, Lightning's
`training_step`, a callback).

    sampler = LoopSampler(model, problem, hyper, SamplerConfig(warmup=200, samples=20, thin=10))
    for _ in range(sampler.total_steps):
        train_idx, meta_idx = sampler.next_batch()   # the rows fit would use next (or your own)
        w = sampler.weights(train_idx)               # multiply your per-example loss by these
        info = sampler.step((train_idx, meta_idx))   # one step, fit's control, a draw every `thin`
    posterior = Posterior.from_result(sampler.result())

It is fit's chain `chain` of the same settings (the same set-up, kernel, batch streams, guard and
recorder), so stepping it to the end on the batches it hands out gives fit's draws of that chain, bit for bit
on CPU. One process only (not under torchrun); draws are kept in memory.
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from ..context import Problem
from ..data.batches import row_indices
from ..draws import DrawStore
from ..errors import ConfigError, DataError
from ..fingerprint import run_fingerprint
from ..kernels.chain import step_scalars
from ..kernels.schedules import make_schedule
from ..kernels.state import Batch
from ..outputs import config_dict
from .chain_runner import open_chain
from .checkpoint import check_fingerprint, check_position, load_checkpoint, save_checkpoint
from .distributed import Communicator
from .fit import prepare_run, resolved_config
from .result import RunResult
from .resume import saved_thetas
from .run_context import run_context
from .sampler_config import SamplerConfig


class LoopSampler:
    """The potential, kernel state and weight table of one chain (`fit`'s chain `chain` of `config`), stepped
    by the caller. Its result holds one chain: the draws kept so far and the current theta as its final."""

    def __init__(self, model: Callable, problem: Problem, hyper: dict | None = None,
                 config: SamplerConfig | None = None, chain: int = 0):
        comm = Communicator()
        if comm.world > 1:
            raise ConfigError("LoopSampler runs in one process; under torchrun use fit (it shards D_t over ranks)")
        config = resolved_config(config, problem, comm)
        if not isinstance(chain, int) or isinstance(chain, bool) or not 0 <= chain < config.chains:
            raise ConfigError(f"chain must be an integer in [0, {config.chains}) (config.chains), got {chain!r}")
        need = config.samples * problem.n_train * 4
        if need > config.memory_budget_mb * 2 ** 20:
            raise ConfigError(f"{config.samples} draws of {problem.n_train} weights need {need / 2 ** 20:.0f} MB, "
                              f"more than memory_budget_mb = {config.memory_budget_mb}; raise it or keep fewer draws")
        layout, problem, potential, self.useful_fraction = prepare_run(model, problem, hyper, config, comm)
        self.config, self.chain, self._model, self._hyper = config, chain, model, dict(hyper or {})
        self.run = run_context(replace(config, chains=1), potential, problem, comm, layout, None, None, None, None,
                               append=False)
        self.live = open_chain(self.run, chain, slot=0)
        self._schedule = make_schedule(config.step_size)
        self.seconds = 0.0

    @property
    def total_steps(self) -> int:
        """The chain's steps: warmup + samples * thin."""
        return self.run.total_steps

    @property
    def steps_done(self) -> int:
        return self.live.t

    def next_batch(self) -> Batch:
        """(train_idx, meta_idx): the rows `fit`'s chain uses next (each call draws the next batch)."""
        return self.live.next_batch()

    def weights(self, train_idx=None) -> torch.Tensor:
        """The current weights of training rows `train_idx` (all N_t when None), on the network's device: what
        the next step sees for them. A weight network's are computed at the current theta (O(N_t))."""
        potential, state = self.run.potential, self.live.state
        idx = None if train_idx is None else self._rows(train_idx, self.run.problem.n_train, "train_idx",
                                                        self.run.table_device)
        if potential.local_site is not None:
            w = self.live.algorithm.weights(state.table if idx is None else state.table[idx])
        elif potential.weight_site is not None:
            w = potential.network_weights(state.theta)
            w = w if idx is None else w[idx.to(w.device)]
        else:
            raise ConfigError("the model keeps no per-example weights (no table, no weight site)")
        return w.detach().to(self.run.device, copy=True)

    def step(self, batch=None) -> dict[str, Any]:
        """One step on `batch` (default `next_batch()`; or your (train_idx, meta_idx), or train indices alone,
        the meta rows then from the chain's stream), then fit's control (end of warm-up, divergence guard) and,
        every `thin` steps after warm-up, a draw kept as fit keeps it. Returns step, step_size, recorded (a
        draw was kept) and train_loss, meta_loss, w_mean as 0-dim tensors (no host sync; `float()` them)."""
        live = self.live
        if live.t >= self.total_steps:
            raise ConfigError(f"the chain has made all its {self.total_steps} steps (warmup + samples * thin); "
                              "read result(), or start a LoopSampler with more samples")
        batch = live.next_batch() if batch is None else self._batch(batch)
        scale, start = live.control.scale, time.perf_counter()
        live.step(batch)
        recorded = live.record_if_due()
        self.seconds += time.perf_counter() - start
        return self._info(self._schedule(live.t - 1) * scale, recorded)

    def result(self) -> RunResult:
        """The run so far as fit's result of one chain: the draws kept, snapshots, current theta as final."""
        run, live, store = self.run, self.live, self.run.store
        kept = live.draw
        saved = store.state_dict()
        draws = DrawStore(1, kept, store.example_ids, {k: v.shape[2:] for k, v in store.values.items()},
                          weights_name=store.weights_name)
        draws.load_state_dict({"scalars": {k: v[:, :kept] for k, v in saved["scalars"].items()},
                               "weights": saved["weights"][:, :kept]})
        return RunResult(draws, [live.state.theta.detach().clone()], [s.clone() for s in run.snapshots],
                         run.potential, run.problem, replace(self.config, chains=1, samples=kept),
                         run.potential.hyper, self.seconds, self.useful_fraction, live.algorithm.weight_update)

    def state_dict(self) -> dict[str, Any]:
        """The chain as a checkpoint payload (`driver.checkpoint`; `save_checkpoint` writes it to a safe file)."""
        self._identity()
        return copy.deepcopy(self.live.payload())

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Continue from `state_dict()` of the same model, data, settings and chain (ConfigError otherwise)."""
        if not isinstance(payload, dict):
            raise ConfigError(f"a LoopSampler state is a dict from state_dict(), got {type(payload).__name__}")
        payload = copy.deepcopy(payload)
        check_fingerprint(payload, self._identity(), "the LoopSampler state")
        c = self.config
        check_position(payload, "LoopSampler state", 1, c.warmup, c.samples, c.thin, finished=True)
        if payload["chain"] != 0:
            raise ConfigError("the LoopSampler state is a finished run's, not a chain's; remove it")
        snapshots = saved_thetas(payload, "snapshots", self.run.potential.theta_size, self.run.device)
        memory = self.run.potential.memory
        kept = {k: list(v) for k, v in memory.items()}  # the running chain's, should the state be refused
        try:
            live = open_chain(self.run, self.chain, payload, slot=0)
            self.run.store.load_state_dict(payload["store"])  # checked before it changes anything
        except Exception:
            memory.clear()
            memory.update(kept)
            raise
        self.run.snapshots, self.live = snapshots, live

    def save(self, path) -> None:
        """`state_dict()` as a safe file (no pickle), written atomically as fit writes its checkpoints."""
        save_checkpoint(path, self.state_dict())

    def load(self, path) -> None:
        """Continue from a file `save` wrote for the same model, data, settings and chain."""
        self.load_state_dict(load_checkpoint(path, self._identity()))

    def _identity(self) -> dict:
        """The run's fingerprint (`pyro_dps.fingerprint`, the chain's index added), computed on first use."""
        if self.run.identity is None:
            self.run.identity = run_fingerprint(self._model, self.run.problem, self._hyper, config_dict(self.config),
                                                {"loop_chain": self.chain})
        return self.run.identity

    def _batch(self, batch) -> Batch:
        """A caller's batch, checked: (train_idx, meta_idx), or train indices alone."""
        n, n_meta = self.run.problem.n_train, self.run.problem.n_meta
        train, meta = batch if isinstance(batch, tuple) and len(batch) == 2 else (batch, None)
        train = self._rows(train, n, "train_idx", self.run.table_device, distinct=True)
        meta = self.live.streams[1]() if meta is None else self._rows(meta, n_meta, "meta_idx", self.run.device)
        if train.numel() == 0 or (n_meta and meta.numel() == 0):
            raise DataError(f"a batch needs at least one training row and, with a meta set, one meta row; got "
                            f"{train.numel()} and {meta.numel()}")
        return train, meta

    @staticmethod
    def _rows(idx, n: int, name: str, device: torch.device, distinct: bool = False) -> torch.Tensor:
        """`idx` checked (`data.batches.row_indices`) and moved to `device`."""
        return row_indices(idx, n, name, distinct).to(device)

    def _info(self, step_size: float, recorded: bool) -> dict[str, Any]:
        """What the step reports: its number, step size, whether a draw was kept, and `step_scalars` (the
        losses and mean weight the progress bar shows, as tensors)."""
        return {"step": self.live.t, "step_size": step_size, "recorded": recorded,
                **step_scalars(self.live.state, self.run.problem.n_train_total)}
