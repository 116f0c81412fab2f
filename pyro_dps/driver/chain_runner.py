"""One chain of the run driver: its kernel and batch streams set up (or restored), its steps, its draws."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..kernels import ALGORITHMS, MinibatchSampler, SamplingAlgorithm, SGMCMCState
from ..kernels.chain import ChainControl, chain_generator, chain_seed, progress, start_chain
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
    lives (a host table gets its own host generator)."""
    config, comm = run.config, run.comm
    batch_gen = torch.Generator().manual_seed(chain_seed(config.seed, chain) + 7) if run.host_table else generator
    if config.shards == 1:
        train = MinibatchSampler(run.problem.n_train, config.batch_size, batch_gen, run.table_device)
    else:
        train = ShardedSampler(run.layout, config.batch_size // config.shards, chain_seed(config.seed, chain),
                               run.owned, run.table_device)
    meta = SlicedSampler(MinibatchSampler(run.problem.n_meta, config.meta_batch_size or config.batch_size,
                                          generator, run.device), comm.rank, comm.world)
    return train, meta, generator, batch_gen


def run_chain(run: RunContext, chain: int, resumed: dict | None = None) -> SamplingAlgorithm:
    """Chain `chain` from its start (or from `resumed`, a checkpoint taken inside it) to its last step; its
    final theta is appended to `run.finals`."""
    config = run.config
    gen = chain_generator(config.seed, chain, run.device)
    algorithm = make_algorithm(run, gen)
    streams = batch_streams(run, chain, gen)
    state = start_chain(run.potential, algorithm, gen, run.table_device,
                        pin=run.host_table and run.device.type == "cuda")
    control = ChainControl(chain, config.warmup, run.guard_settings, run.checkpoint)
    t0, draw = 0, 0
    if resumed and resumed.get("state") is not None:
        restore_state(state, resumed["state"], run.device)
        restore_streams(resumed, streams[0], streams[1], gen, streams[3] if run.host_table else None,
                        run.potential, (run.problem.n_train, run.problem.n_meta))
        t0, draw = resumed["t"], resumed["draw"]
        control.scale, control.seen_rejected = resumed["scale"], resumed["seen_rejected"]
    state = _steps(run, chain, algorithm, state, control, streams, t0, draw)
    run.finals.append(state.theta.detach().clone())
    if run.checkpoint and config.checkpoint_every:  # the next chain starts fresh
        save_checkpoint(run.checkpoint, checkpoint_payload(run.identity, chain + 1, 0, 0, 1.0, 0, run.store,
                                                           run.finals, run.snapshots, None))
    return algorithm


def _steps(run: RunContext, chain: int, algorithm: SamplingAlgorithm, state: SGMCMCState, control: ChainControl,
           streams: tuple, t0: int, draw: int) -> SGMCMCState:
    """Steps t0 + 1 .. the last: each followed by the chain's control, a progress update every `log_every`,
    a recorded draw every `thin` steps after warm-up, and a checkpoint every `checkpoint_every`."""
    config, total = run.config, run.total_steps
    has_table = run.potential.local_site is not None
    label = f"chain {chain + 1}/{config.chains}"
    bar = tqdm(total=total, initial=t0, desc=f"{label} {'warm-up' if t0 < config.warmup else 'sampling'}",
               disable=not (config.progress and run.comm.main), leave=False, dynamic_ncols=True)
    for t in range(t0 + 1, total + 1):
        state = algorithm.step(state, (streams[0](), streams[1]()), control.scale)
        if t == config.warmup + 1:
            bar.set_description(f"{label} sampling", refresh=False)
        control.after_step(algorithm, state, t, last=t == total)
        if t % config.log_every == 0 or t == total:
            bar.update(t - bar.n)
            bar.set_postfix(progress(state, run.problem.n_train_total,
                                     run.comm.sum(state.w_sum) if has_table else None), refresh=False)
        if t > config.warmup and (t - config.warmup) % config.thin == 0:
            record_draw(run, algorithm, state, chain, draw, control.scale)
            draw += 1
        if run.checkpoint and config.checkpoint_every and t % config.checkpoint_every == 0 and t < total:
            save_checkpoint(run.checkpoint, checkpoint_payload(
                run.identity, chain, t, draw, control.scale, control.seen_rejected, run.store, run.finals,
                run.snapshots, (state, *streams, run.potential.memory)))
    bar.close()
    return state
