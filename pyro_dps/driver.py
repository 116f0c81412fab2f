"""The run driver: several chains of a minibatch SG-MCMC kernel, thinned draws, snapshots, progress.

    posterior = fit(model, problem, hyper, SamplerConfig(chains=4, warmup=2000, samples=100, thin=20))
    posterior.weight_summary()["mean"], posterior.predict_proba(x_test)
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .context import Problem
from .chain import CHECK_EVERY, MAX_REJECTIONS, ChainControl, GuardSettings, chain_generator, chain_seed, progress, \
    start_chain
from .draws import DrawStore
from .outputs import config_dict
from .posterior import Posterior
from .checkpoint import check_position, check_sampler_state, load_checkpoint, restore_state, save_checkpoint, \
    state_to_payload
from .distributed import Communicator, ShardedSampler, ShardLayout, SlicedSampler
from .bounds import MAX_CHAINS, MAX_DRAWS, MAX_MEMORY_MB, MAX_SNAPSHOTS, MAX_STEPS, MAX_TEMPERATURE, SEED_MAX, \
    check_device, check_int, check_real, check_schedule
from .errors import ConfigError, ModelError
from .fingerprint import run_fingerprint
from .kernels import ALGORITHMS, MinibatchSampler
from .kernels.base import resync_w_sum
from .potential import TracePotential, log_joint_estimate, make_potential, summarize_stats
from .run_length import resolve_length
from .useful_fraction import resolve_beta

MAX_DRAW_BYTES = 2 ** 40  # weight draws of a run (1 TiB; streamed to disk beyond memory_budget_mb)
MAX_THETA_BYTES = 2 ** 36  # theta snapshots and final thetas kept in memory (64 GiB)
SCALARS = ["log_joint", "meta_loss", "train_loss", "w_mean", "theta_norm", "rejected_steps", "step_scale"]


@dataclass
class SamplerConfig:
    """How to sample: kernel and its settings, chains, warm-up, draws, thinning, batches, device."""

    kernel: str = "psgld"
    step_size: Any = "auto"  # "auto": cyclical, one cycle per kept draw (pyro_dps/run_length.py); a number; a schedule
    local_step_size: Any = None
    temperature: float = 0.01  # cold posterior (docs/defaults.md): 1 is the posterior itself
    kernel_kwargs: dict = field(default_factory=dict)
    chains: int = 4
    warmup: int | str = "auto"  # steps; "auto": max(2000 steps, 10 epochs) (pyro_dps/run_length.py)
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
        checks = [
            (isinstance(self.kernel_kwargs, dict), f"kernel_kwargs must be a table, got {self.kernel_kwargs!r}"),
            (isinstance(self.progress, bool), f"progress must be true or false, got {self.progress!r}"),
            (self.weight_update in ("auto", "exact", "langevin"),
             f"weight_update must be 'auto', 'exact' or 'langevin', got {self.weight_update!r}"),
            (isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}"),
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
        if self.potential not in ("auto", "fused", "trace"):
            raise ConfigError(f"potential must be 'auto', 'fused' or 'trace', got {self.potential!r}")
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
                continue  # resolved from N_t and the batch size (pyro_dps/run_length.py)
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
    import inspect

    from .kernels.paper import OPTIMIZERS

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


def fit(model: Callable, problem: Problem, hyper: dict | None = None, config: SamplerConfig | None = None,
        spill_path: str | None = None, example_ids: np.ndarray | None = None,
        checkpoint: str | Path | None = None, resume: bool = False, comm: Communicator | None = None,
        fingerprint: dict | None = None) -> Posterior | None:
    """Run `config.chains` chains of BADS inference on `problem` and keep thinned draws.

    With `checkpoint`, the run is saved atomically every `config.checkpoint_every` steps and after each
    chain; `resume=True` continues from that file, which must have been written by the same run: same
    settings, model, data tensors and package version, plus whatever the caller adds as `fingerprint`
    (the scenario adds its resolved configuration and the hashes of the files it read).
    Under torchrun (an initialised process group, or `comm`), every rank passes the whole problem and
    keeps only its shard of D_t (`pyro_dps.distributed`); rank 0 returns the Posterior, the others None.
    """
    comm = comm or Communicator()
    if comm.world > 1:
        config = config or SamplerConfig()
        if config.shards not in (1, comm.world):
            raise ConfigError(f"shards={config.shards} but the process group has {comm.world} ranks")
        config = SamplerConfig(**{**asdict(config), "shards": comm.world})
    config = resolve_length((config or SamplerConfig()).validate(problem), problem.n_train)
    identity = run_fingerprint(model, problem, dict(hyper or {}), config_dict(config), fingerprint) if checkpoint \
        else None
    device = torch.device(config.device)
    table_device = torch.device(config.table_device) if config.table_device else device
    host_table = table_device != device  # only the batch's rows cross to the compute device
    layout = ShardLayout(problem.n_train, config.shards)
    owned = [comm.rank] if comm.world > 1 else list(range(config.shards))
    problem = problem.to(device)
    hyper, fraction = resolve_beta(model, problem, dict(hyper or {}), config.seed, comm)  # beta = "auto"
    if comm.world > 1:
        problem = problem.shard(*layout.bounds(comm.rank))
        if checkpoint is not None and comm.rank:
            checkpoint = Path(f"{checkpoint}.rank{comm.rank}")
    potential = make_potential(model, problem, hyper, config.potential, torch.Generator().manual_seed(config.seed))
    if potential.theta_size == 0:
        raise ModelError(f"model {getattr(model, '__name__', model)!r} samples no network parameters (no theta.<name> "
                         "site): a BADS model must sample them, see models/bads.py")
    has_table = potential.local_site is not None
    n, n_total = problem.n_train, problem.n_train_total
    ids = np.arange(n_total) if example_ids is None else np.asarray(example_ids)
    latent = _latent_globals(potential)
    resumed = load_checkpoint(checkpoint, identity) if checkpoint and resume and Path(checkpoint).exists() else None
    if resumed:
        check_position(resumed, checkpoint, config.chains, config.warmup, config.samples, config.thin)
    store = DrawStore(config.chains, config.samples, ids if potential.has_weights else ids[:0],
                      {**dict.fromkeys(SCALARS, ()), **latent}, config.memory_budget_mb, spill_path,
                      append=resumed is not None, weights_name=weights_site(potential)) if comm.main else None
    n_snap = min(config.snapshots, config.samples)  # evenly spaced over the kept draws
    keep = set(np.linspace(0, config.samples - 1, n_snap).round().astype(int).tolist()) if n_snap else set()
    finals, snapshots = [], []
    start = time.perf_counter()
    total_steps = config.warmup + config.samples * config.thin
    guard_settings = GuardSettings(config.check_every, config.max_rejections, config.temperature, config.step_size)
    first_chain = 0
    if resumed:
        if store is not None:
            store.load_state_dict(resumed["store"])
        finals, snapshots = (_saved_thetas(resumed, key, potential.theta_size, device)
                             for key in ("finals", "snapshots"))
        first_chain = resumed["chain"]
    for chain in range(first_chain, config.chains):
        gen = chain_generator(config.seed, chain, device)
        sharding = {} if comm.world == 1 else {
            "comm": comm, "noise_rows": (config.batch_size, comm.rank * (config.batch_size // comm.world))}
        algorithm = ALGORITHMS[config.kernel](potential, config.step_size, temperature=config.temperature,
                                              local_step_size=config.local_step_size, generator=gen,
                                              compile=config.compile, **_weight_settings(config), **sharding,
                                              **config.kernel_kwargs)
        # batch indices are drawn where the table lives (a host table gets its own host generator)
        batch_gen = torch.Generator().manual_seed(chain_seed(config.seed, chain) + 7) if host_table else gen
        if config.shards == 1:
            train_batches = MinibatchSampler(n, config.batch_size, batch_gen, table_device)
        else:
            train_batches = ShardedSampler(layout, config.batch_size // config.shards, chain_seed(config.seed, chain),
                                           owned, table_device)
        meta_batches = SlicedSampler(MinibatchSampler(problem.n_meta, config.meta_batch_size or config.batch_size,
                                                      gen, device), comm.rank, comm.world)
        state = start_chain(potential, algorithm, gen, table_device, pin=host_table and device.type == "cuda")
        control = ChainControl(chain, config.warmup, guard_settings, checkpoint)
        t0, draw = 0, 0
        if resumed and resumed.get("state") is not None and chain == first_chain:
            restore_state(state, resumed["state"], device)
            _restore_streams(resumed, train_batches, meta_batches, gen, batch_gen if host_table else None,
                             potential, (n, problem.n_meta))
            t0, draw = resumed["t"], resumed["draw"]
            control.scale, control.seen_rejected = resumed["scale"], resumed["seen_rejected"]

        def save(t: int) -> None:
            save_checkpoint(checkpoint, _checkpoint_payload(
                identity, chain, t, draw, control.scale, control.seen_rejected, store, finals, snapshots,
                (state, train_batches, meta_batches, gen, batch_gen, potential.memory)))

        label = f"chain {chain + 1}/{config.chains}"
        bar = tqdm(total=total_steps, initial=t0, desc=f"{label} {'warm-up' if t0 < config.warmup else 'sampling'}",
                   disable=not (config.progress and comm.main), leave=False, dynamic_ncols=True)
        for t in range(t0 + 1, total_steps + 1):
            state = algorithm.step(state, (train_batches(), meta_batches()), control.scale)
            if t == config.warmup + 1:
                bar.set_description(f"{label} sampling", refresh=False)
            control.after_step(algorithm, state, t, last=t == total_steps)
            if t % config.log_every == 0 or t == total_steps:
                bar.update(t - bar.n)
                bar.set_postfix(progress(state, n_total, comm.sum(state.w_sum) if has_table else None),
                                refresh=False)
            if t > config.warmup and (t - config.warmup) % config.thin == 0:
                resync_w_sum(potential, state, algorithm.weights)
                table = comm.gather_rows(state.table, layout) if has_table else None  # every rank takes part
                w_all = algorithm.weights(table) if has_table else comm.gather_rows(
                    potential.network_weights(state.theta), layout) if potential.weight_site else None
                if store is not None:
                    weights = w_all.float().cpu().numpy() if w_all is not None else np.zeros(0)
                    store.record(chain, draw, weights, {**_scalars(potential, state, w_all, n_total),
                                                        "rejected_steps": float(state.rejected),
                                                        "step_scale": control.scale})
                if draw in keep:
                    snapshots.append(state.theta.detach().clone())
                draw += 1
            if checkpoint and config.checkpoint_every and t % config.checkpoint_every == 0 and t < total_steps:
                save(t)
        bar.close()
        finals.append(state.theta.detach().clone())
        if checkpoint and config.checkpoint_every:
            state = None  # the next chain starts fresh
            save_checkpoint(checkpoint, _checkpoint_payload(identity, chain + 1, 0, 0, 1.0, 0, store, finals,
                                                            snapshots, None))
    seconds = time.perf_counter() - start
    if not comm.main:
        return None
    return Posterior(store, finals, snapshots, potential, problem, config, potential.hyper, seconds, fraction,
                     algorithm.weight_update)


def _checkpoint_payload(identity: dict, chain: int, t: int, draw: int, scale: float, seen_rejected: int, store,
                        finals: list, snapshots: list, live: tuple | None) -> dict[str, Any]:
    """What a checkpoint holds: the run's fingerprint, its position, the draws so far and, inside a chain
    (`live` = (state, train batches, meta batches, generator, batch generator, model memory)), its streams."""
    payload = {"fingerprint": identity, "chain": chain, "t": t, "draw": draw, "scale": float(scale),
               "seen_rejected": seen_rejected, "state": None, "store": store.state_dict() if store else None,
               "finals": [f.cpu() for f in finals], "snapshots": [x.cpu() for x in snapshots]}
    if live is not None:
        state, train_batches, meta_batches, gen, batch_gen, memory = live
        payload.update({"state": state_to_payload(state), "train_batches": train_batches.state_dict(),
                        "meta_batches": meta_batches.state_dict(), "generator": gen.get_state(),
                        "batch_generator": batch_gen.get_state(), "memory": memory})
    return payload


def _saved_thetas(resumed: dict, key: str, size: int, device: torch.device) -> list[torch.Tensor]:
    """The checkpoint's list of theta vectors (finished chains or snapshots), each checked to be `size` long."""
    saved = resumed.get(key)
    if not isinstance(saved, list) or not all(torch.is_tensor(t) and t.shape == (size,) for t in saved):
        raise ConfigError(f"checkpoint {key} must be theta vectors of {size} values; the checkpoint does not fit "
                          "this run, remove it")
    return [t.to(device) for t in saved]


def _restore_streams(resumed: dict, train_batches, meta_batches, gen, batch_gen, potential, sizes) -> None:
    """Batch samplers, generators and the model's running memory from a checkpoint, each checked first."""
    check_sampler_state(resumed.get("train_batches"), sizes[0], "train_batches")
    check_sampler_state(resumed.get("meta_batches"), sizes[1], "meta_batches")
    train_batches.load_state_dict(resumed["train_batches"])
    meta_batches.load_state_dict(resumed["meta_batches"])
    for generator, key in ((gen, "generator"), (batch_gen, "batch_generator")):
        if generator is None:
            continue
        try:
            generator.set_state(resumed[key])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ConfigError(f"checkpoint {key} state does not fit this run ({exc}); remove the checkpoint") from exc
    memory = resumed.get("memory", {})
    if not isinstance(memory, dict) or not all(isinstance(v, list) and all(map(torch.is_tensor, v))
                                               for v in memory.values()):
        raise ConfigError("checkpoint memory must map names to lists of tensors; remove the checkpoint")
    potential.memory.update(memory)


def _weight_settings(config: SamplerConfig) -> dict:
    """The weight-update settings a kernel takes (the paper's kernel keeps its own default update unless set)."""
    out = {"candidates": config.candidates}
    if config.weight_update != "auto" or config.kernel != "paper":
        out["weight_update"] = config.weight_update
    return out


def _latent_globals(potential: TracePotential) -> dict[str, tuple[int, ...]]:
    """Global latent sites other than the network's `theta.*`, of any shape (a latent `beta`, a per-class
    location, a weight network's `phi.*`): name -> shape, recorded per draw."""
    sites = {s.name: tuple(s.shape) for s in potential.globals if not s.name.startswith("theta.")}
    clash = sorted(set(sites) & {*SCALARS, "weights"})
    if clash:
        raise ModelError(f"the model's latent site(s) {clash} have a name pyro-dps records draws under; rename them")
    return sites


def weights_site(potential: TracePotential) -> str:
    """The Pyro site of the per-example weights (`w` in models/bads.py): their name in draws.nc."""
    return potential.local_site or potential.weight_site or "w"


def _scalars(potential: TracePotential, state, weights: torch.Tensor | None,
             n_total: int) -> dict[str, float | np.ndarray]:
    """Per-draw scalars and latent globals; `weights` are all N_t table weights (gathered), or the weight network's."""
    stats = summarize_stats(state.stats)
    values = potential.unpack(state.theta)
    table_w = weights if potential.local_site is not None else None
    return {**{name: values[name].detach().double().cpu().numpy() for name in _latent_globals(potential)},
        "log_joint": log_joint_estimate(potential, state.theta, table_w, state.stats),
        "meta_loss": float(stats.get("meta_loss", float("nan"))),
        "train_loss": float(stats.get("train_loss", float("nan"))),
        "w_mean": float(weights.double().sum()) / n_total if weights is not None else float("nan"),
        "theta_norm": float(state.theta.norm()),
    }
