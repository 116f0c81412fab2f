"""One chain of the run driver: its kernel and batch streams set up (or restored), its steps, its draws."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.prefetch import read_ahead
from ..kernels import ALGORITHMS, MinibatchSampler, SamplingAlgorithm, SGMCMCState
from ..kernels.chain import ChainControl, chain_generator, chain_seed, progress, start_chain
from ..kernels.state import Batch
from .checkpoint import restore_state, save_checkpoint
from .distributed import ShardedSampler, SlicedSampler
from .recorder import record_draw
from .resume import checkpoint_payload, restore_streams
from .run_context import RunContext
from .sampler_config import weight_settings


def make_algorithm(run: RunContext, generator: torch.Generator) -> SamplingAlgorithm:
    """The configured kernel's (init, step) pair for one chain (with this rank's noise rows when sharded)."""
    config, comm = run.config, run.comm
    sharding = {} if comm.world == 1 else {
        "comm": comm, "noise_rows": (config.batch_size, comm.rank * (config.batch_size // comm.world))}
    return ALGORITHMS[config.kernel](run.potential, config.step_size, temperature=config.temperature,
                                     local_step_size=config.local_step_size, generator=generator,
                                     compile=config.compile, **weight_settings(config), **sharding,
                                     **config.kernel_kwargs)


def batch_streams(run: RunContext, chain: int, generator: torch.Generator) -> tuple:
    """(train batches, meta batches, chain generator, batch generator): the indices are drawn where the table
    lives; a host table, and rows a loader reads ahead, get their own batch-order generator."""
    config, comm = run.config, run.comm
    batch_gen = torch.Generator(run.table_device).manual_seed(chain_seed(config.seed, chain) + 7) \
        if run.own_batch_order else generator
    if config.shards == 1:
        train = MinibatchSampler(run.problem.n_train, config.batch_size, batch_gen, run.table_device)
    else:
        train = ShardedSampler(run.layout, config.batch_size // config.shards, chain_seed(config.seed, chain),
                               run.owned, run.table_device)
    meta = SlicedSampler(MinibatchSampler(run.problem.n_meta, config.meta_batch_size or config.batch_size,
                                          generator, run.device), comm.rank, comm.world)
    return train, meta, generator, batch_gen


@dataclass
class LiveChain:
    """One chain between its steps: its kernel, state, host-side control and batch streams, the steps done
    (`t`) and the draws kept (`draw`). `slot`: the chain's row in the run's draw store."""

    run: RunContext
    chain: int
    slot: int
    algorithm: SamplingAlgorithm
    state: SGMCMCState
    control: ChainControl
    streams: tuple  # batch_streams(...)
    t: int = 0
    draw: int = 0

    def next_batch(self) -> Batch:
        """The next (train, meta) indices of the chain's batch streams."""
        return self.streams[0](), self.streams[1]()

    def step(self, batch: Batch) -> None:
        """Step t + 1 on `batch`, then the chain's control (end of warm-up, the divergence guard)."""
        self.t += 1
        self.state = self.algorithm.step(self.state, batch, self.control.scale)
        self.control.after_step(self.algorithm, self.state, self.t, last=self.t == self.run.total_steps)

    def record_if_due(self) -> bool:
        """At every `thin`-th step after warm-up, the draw recorded (`record_draw`); whether one was."""
        warmup, thin = self.run.config.warmup, self.run.config.thin
        if self.t <= warmup or (self.t - warmup) % thin:
            return False
        record_draw(self.run, self.algorithm, self.state, self.slot, self.draw, self.control.scale)
        self.draw += 1
        return True

    def payload(self) -> dict:
        """The run's checkpoint payload at this point of the chain (its live state only after a step)."""
        run, live = self.run, (self.state, *self.streams, self.run.potential.memory) if self.t else None
        return checkpoint_payload(run.identity, self.slot, self.t, self.draw, self.control.scale,
                                  self.control.seen_rejected, run.store, run.finals, run.snapshots, live)


def open_chain(run: RunContext, chain: int, resumed: dict | None = None, slot: int | None = None) -> LiveChain:
    """Chain `chain` at its start, or where `resumed` (a checkpoint payload taken inside it) left it; its draws
    go to row `slot` of the store (default: `chain`)."""
    config = run.config
    gen = chain_generator(config.seed, chain, run.device)
    algorithm = make_algorithm(run, gen)
    streams = batch_streams(run, chain, gen)
    state = start_chain(run.potential, algorithm, gen, run.table_device,
                        pin=run.host_table and run.device.type == "cuda")
    control = ChainControl(chain, config.warmup, run.guard_settings, run.checkpoint)
    live = LiveChain(run, chain, chain if slot is None else slot, algorithm, state, control, streams)
    if resumed and resumed.get("state") is not None:
        restore_state(state, resumed["state"], run.device)
        restore_streams(resumed, streams[0], streams[1], gen, streams[3] if run.own_batch_order else None,
                        run.potential, (run.problem.n_train, run.problem.n_meta))
        live.t, live.draw = resumed["t"], resumed["draw"]
        control.scale, control.seen_rejected = resumed["scale"], resumed["seen_rejected"]
    return live


def run_chain(run: RunContext, chain: int, resumed: dict | None = None) -> SamplingAlgorithm:
    """Chain `chain` from its start (or from `resumed`, a checkpoint taken inside it) to its last step; its
    final theta is appended to `run.finals`."""
    config = run.config
    live = open_chain(run, chain, resumed)
    with read_ahead(run.problem.x_train, live.streams[0]):
        _steps(run, live)
    run.finals.append(live.state.theta.detach().clone())
    if run.checkpoint and config.checkpoint_every:  # the next chain starts fresh
        save_checkpoint(run.checkpoint, checkpoint_payload(run.identity, chain + 1, 0, 0, 1.0, 0, run.store,
                                                           run.finals, run.snapshots, None))
    return live.algorithm


def _steps(run: RunContext, live: LiveChain) -> None:
    """The chain's remaining steps: each followed by the chain's control, a progress update every `log_every`,
    a recorded draw every `thin` steps after warm-up, and a checkpoint every `checkpoint_every`."""
    config, total = run.config, run.total_steps
    has_table = run.potential.local_site is not None
    label = f"chain {live.chain + 1}/{config.chains}"
    bar = tqdm(total=total, initial=live.t, desc=f"{label} {'warm-up' if live.t < config.warmup else 'sampling'}",
               disable=not (config.progress and run.comm.main), leave=False, dynamic_ncols=True)
    while live.t < total:
        live.step(live.next_batch())
        t = live.t
        if t == config.warmup + 1:
            bar.set_description(f"{label} sampling", refresh=False)
        if t % config.log_every == 0 or t == total:
            bar.update(t - bar.n)
            bar.set_postfix(progress(live.state, run.problem.n_train_total,
                                     run.comm.sum(live.state.w_sum) if has_table else None), refresh=False)
        live.record_if_due()
        if run.checkpoint and config.checkpoint_every and t % config.checkpoint_every == 0 and t < total:
            save_checkpoint(run.checkpoint, live.payload())
    bar.close()
