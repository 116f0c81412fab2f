"""`run_chains`: several chains of a minibatch SG-MCMC kernel on a problem, thinned draws, snapshots, resume.

    result = run_chains(model, problem, hyper, SamplerConfig(chains=4, warmup=2000, samples=100, thin=20))
    result.weight_summary()["mean"], result.predict_proba(x_test)  # pyro_dps.fit wraps it in a Posterior
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..context import Problem
from ..errors import ConfigError, ModelError
from ..fingerprint import run_fingerprint
from ..outputs import config_dict
from ..potential import SiteLayout, make_potential
from ..useful_fraction import FractionEstimate, resolve_beta
from .chain_runner import make_algorithm, run_chain
from .checkpoint import check_position, load_checkpoint
from .distributed import Communicator, ShardLayout
from .result import RunResult
from .resume import saved_thetas
from .run_context import run_context
from .run_length import resolve_length
from .sampler_config import SamplerConfig


def run_chains(model: Callable, problem: Problem, hyper: dict | None = None, config: SamplerConfig | None = None,
        spill_path: str | None = None, example_ids: np.ndarray | None = None,
        checkpoint: str | Path | None = None, resume: bool = False, comm: Communicator | None = None,
        fingerprint: dict | None = None) -> RunResult | None:
    """Run `config.chains` chains of BADS inference on `problem` and keep thinned draws.

    With `checkpoint`, the run is saved atomically every `config.checkpoint_every` steps and after each
    chain; `resume=True` continues from that file, which must have been written by the same run: same
    settings, model, data tensors and package version, plus whatever the caller adds as `fingerprint`
    (the scenario adds its resolved configuration and the hashes of the files it read).
    Under torchrun (an initialised process group, or `comm`), every rank passes the whole problem and
    keeps only its shard of D_t (`pyro_dps.driver.distributed`); rank 0 returns the Posterior, the others None.
    """
    comm = comm or Communicator()
    config = resolved_config(config, problem, comm)
    identity = run_fingerprint(model, problem, dict(hyper or {}), config_dict(config), fingerprint) if checkpoint \
        else None
    layout, problem, potential, fraction = prepare_run(model, problem, hyper, config, comm)
    if comm.world > 1 and checkpoint is not None and comm.rank:
        checkpoint = Path(f"{checkpoint}.rank{comm.rank}")
    resumed = load_checkpoint(checkpoint, identity) if checkpoint and resume and Path(checkpoint).exists() else None
    if resumed:
        check_position(resumed, checkpoint, config.chains, config.warmup, config.samples, config.thin)
    run = run_context(config, potential, problem, comm, layout, checkpoint, identity, spill_path, example_ids,
                      append=resumed is not None)
    start, first_chain = time.perf_counter(), 0
    if resumed:
        if run.store is not None:
            run.store.load_state_dict(resumed["store"])
        run.finals, run.snapshots = (saved_thetas(resumed, key, potential.theta_size, run.device)
                                     for key in ("finals", "snapshots"))
        first_chain = resumed["chain"]
    algorithm = None
    for chain in range(first_chain, config.chains):
        algorithm = run_chain(run, chain, resumed if chain == first_chain else None)
    seconds = time.perf_counter() - start
    if not comm.main:
        return None
    weight_update = (algorithm or make_algorithm(run, torch.Generator())).weight_update
    return RunResult(run.store, run.finals, run.snapshots, potential, problem, config, potential.hyper, seconds,
                     fraction, weight_update)


def resolved_config(config: SamplerConfig | None, problem: Problem, comm: Communicator) -> SamplerConfig:
    """The settings validated against the problem, "auto" run lengths resolved, `shards` set to the torchrun
    world size under torchrun."""
    config = config or SamplerConfig()
    if comm.world > 1:
        if config.shards not in (1, comm.world):
            raise ConfigError(f"shards={config.shards} but the process group has {comm.world} ranks")
        config = SamplerConfig(**{**asdict(config), "shards": comm.world})
    return resolve_length(config.validate(problem), problem.n_train)


def prepare_run(model: Callable, problem: Problem, hyper: dict | None, config: SamplerConfig,
                comm: Communicator) -> tuple[ShardLayout, Problem, SiteLayout, FractionEstimate | None]:
    """(shard layout, this process's problem on the device, the run's potential, the useful-fraction estimate
    behind beta = "auto" or None): what every chain of a run shares, for resolved settings `config`."""
    layout = ShardLayout(problem.n_train, config.shards)
    problem = problem.to(torch.device(config.device))
    hyper, fraction = resolve_beta(model, problem, dict(hyper or {}), config.seed, comm)  # beta = "auto"
    if comm.world > 1:
        problem = problem.shard(*layout.bounds(comm.rank))
    return layout, problem, _potential(model, problem, hyper, config), fraction


def _potential(model: Callable, problem: Problem, hyper: dict, config: SamplerConfig) -> SiteLayout:
    """The run's potential (fused where the model allows it), which must have network parameters to sample."""
    potential = make_potential(model, problem, hyper, config.potential, torch.Generator().manual_seed(config.seed))
    if potential.theta_size == 0:
        raise ModelError(f"model {getattr(model, '__name__', model)!r} samples no network parameters (no theta.<name> "
                         "site): a BADS model must sample them, see models/bads.py")
    return potential
