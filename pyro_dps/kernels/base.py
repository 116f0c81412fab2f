"""The shared machinery of every minibatch SG-MCMC kernel.

A kernel is an `UpdateRule` (how one block moves given its gradient: the only thing SGLD, pSGLD,
SGHMC and the paper's noisy optimiser differ in) plugged into one blocked-Langevin step:

    state = init(theta, table)
    state = step(state, (train_idx, meta_idx))

theta gets the minibatch gradient of the full log joint; only the batch's rows of the per-example
table move, with their exact conditional gradient; `sum_i w_i` is kept incrementally. Nothing in a
step is O(N_t) and nothing is read back to the host, so a step runs asynchronously on CUDA.
`SGMCMCKernel` wraps the same pair as a `pyro.infer.mcmc.MCMCKernel`.
"""
from __future__ import annotations

import math
import multiprocessing
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch.distributions.transforms import identity_transform

from ..chain import CHECK_EVERY, MAX_REJECTIONS, ChainControl, GuardSettings, chain_generator, progress, start_chain
from ..chain import initial_weights  # noqa: F401 (its home was here)
from ..context import ModelContext, Problem
from ..errors import ConfigError
from ..potential import TracePotential, make_potential, weight_sum
from ..schedules import make_schedule
from ..useful_fraction import resolve_beta
from .compiled import check_compilable, compiled_step, count_rejection
from .conditional import conditional_weights, exact_weights_reason

Batch = tuple[torch.Tensor, torch.Tensor]
U_CLAMP = 15.0  # |u| bound: sigmoid(15) < 1 in float32, so weights stay inside (0, 1)


@dataclass
class SGMCMCState:
    """A chain's position and kernel state; a plain record, updated in place and returned."""

    theta: torch.Tensor  # flat unconstrained global position
    table: torch.Tensor | None  # per-example unconstrained weights u (w = sigmoid(u)), length N_t
    theta_aux: dict[str, Any]  # the rule's state for theta (momentum, preconditioner, ...)
    table_aux: dict[str, torch.Tensor]  # the rule's per-row state for the table
    w_sum: torch.Tensor  # float64 scalar, sum_i w_i
    step: int = 0
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    rejected: torch.Tensor | None = None  # count of rejected (non-finite) steps, on the device
    run: torch.Tensor | None = None  # current run of consecutive rejections
    max_run: torch.Tensor | None = None  # longest such run so far


class UpdateRule(ABC):
    """How a block x moves given d log p / dx: in place, on x's device, no host reads."""

    # plain tensor arithmetic that calls noise(x) once per move iff temperature > 0: `torch.compile` can take it
    compilable = True

    @abstractmethod
    def init(self, x: torch.Tensor) -> dict[str, Any]:
        """Per-coordinate state for a block shaped like x (the per-example table: one entry per row)."""

    def init_global(self, x: torch.Tensor) -> dict[str, Any]:
        """State for the global block theta, which always moves as a whole (a rule may keep scalars)."""
        return self.init(x)

    def end_warmup(self, aux: dict[str, Any]) -> None:
        """Fix whatever the rule adapts from the chain's gradients (called once, at the end of warm-up)."""

    @abstractmethod
    def apply(self, x: torch.Tensor, g: torch.Tensor, aux: dict[str, Any], eps: float,
              temperature: float, noise: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """One move of x (and aux) with step size eps at the given temperature; `noise(x)` is N(0, 1) like x."""

    def apply_guarded(self, x: torch.Tensor, g: torch.Tensor, aux: dict[str, Any], eps: float, temperature: float,
                      noise: Callable[[torch.Tensor], torch.Tensor], ok: torch.Tensor) -> None:
        """`apply` where the 0-dim bool `ok` holds, else leave x and aux as they are (g may be non-finite then).

        This default keeps copies and restores them with `torch.where`; rules override it with a masked
        update that needs no copies. The noise is drawn either way, so the random stream does not depend
        on which steps were rejected.
        """
        kept = {"x": x.clone(), **{k: v.clone() for k, v in _tensor_aux(aux).items()}}
        self.apply(x, torch.where(ok, g, 0.0), aux, eps, temperature, noise)
        x.copy_(torch.where(ok, x, kept["x"]))
        for k, v in _tensor_aux(aux).items():
            v.copy_(torch.where(ok, v, kept[k]))


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise drawn on x's device from the chain's generator."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def noise_source(generator: torch.Generator | None, rows: tuple[int, int] | None = None):
    """`noise(x)` for a rule. With `rows=(total, start)` the noise of a whole global batch of `total` rows is
    drawn and rows [start, start + len(x)) are returned: a rank holding part of the batch gets exactly the
    values one process holding all of it would."""
    if rows is None:
        return lambda x: noise_like(x, generator)
    total, start = rows
    return lambda x: torch.randn(total, generator=generator, device=x.device, dtype=x.dtype)[start:start + x.shape[0]]


class MinibatchSampler:
    """Fixed-size batches without replacement within an epoch, drawn on the data's device."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.empty(0, dtype=torch.long, device=device)
        self.pos = 0

    def __call__(self) -> torch.Tensor:
        if self.n == 0:
            return self.perm[:0]
        if self.pos + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.pos = 0
        out = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return out

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"].to(self.device), int(state["pos"])


@dataclass
class SamplingAlgorithm:
    """A sampler as a pair of functions (BlackJAX style), plus how to read the weights off its table."""

    init: Callable[..., SGMCMCState]
    step: Callable[[SGMCMCState, Batch], SGMCMCState]
    weights: Callable[[torch.Tensor], torch.Tensor] = lambda table: table  # table -> w in [0, 1]
    weight_update: str = "none"  # "exact", "langevin", or "none" (no per-example table)
    end_warmup: Callable[[SGMCMCState], None] = lambda state: None  # fix what adapted during warm-up


def _tensor_aux(aux: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in aux.items() if torch.is_tensor(v)}


def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0 \
            or not math.isfinite(temperature):
        raise ConfigError(f"temperature must be >= 0 and finite, got {temperature!r}")
    return float(temperature)


def resolve_weight_update(weight_update: str, potential: TracePotential, temperature: float,
                          rule: UpdateRule) -> bool:
    """True for exact conditional draws of the table weights, False for Langevin steps on their logits.

    "auto": exact wherever the model's structure allows it (`kernels/conditional.py`), and never for the
    paper's noisy optimiser (its weight update is part of what it reproduces).
    """
    if weight_update not in ("auto", "exact", "langevin"):
        raise ConfigError(f"weight_update must be 'auto', 'exact' or 'langevin', got {weight_update!r}")
    if potential.local_site is None or weight_update == "langevin":
        return False
    if weight_update == "auto":
        return getattr(rule, "compilable", True) and not exact_weights_reason(potential, temperature)
    conditional_weights(potential, temperature)  # raises, naming what is missing
    return True


def initial_state(theta: torch.Tensor, table, table_aux, w_sum, rule: UpdateRule) -> SGMCMCState:
    """A chain's first state: theta copied, the rule's state for it, zeroed rejection counters."""
    zero = torch.zeros((), dtype=torch.long, device=theta.device)
    return SGMCMCState(theta, table, rule.init_global(theta), table_aux, w_sum, rejected=zero.clone(),
                       run=zero.clone(), max_run=zero.clone())


def reduce_gradient(g_theta: torch.Tensor, local: torch.Tensor | None, comm, guard: bool):
    """(theta's gradient, ok): averaged over ranks in one all-reduce that also carries a flag that is NaN if
    any rank's rows are, so every rank accepts or rejects the step together; ok is None without a guard."""
    if comm is not None and comm.world > 1:
        flag = local.sum().mul(0).reshape(1).to(g_theta.dtype) if local is not None else g_theta[:0]
        reduced = comm.mean_(torch.cat([g_theta, flag]))
        return reduced[:g_theta.numel()], torch.isfinite(reduced.sum()) if guard else None
    if not guard:
        return g_theta, None
    return g_theta, torch.isfinite(g_theta.sum()) if local is None else torch.isfinite(g_theta.sum() + local.sum())


def move_theta(rule: UpdateRule, state: SGMCMCState, g_theta, ok, eps: float, temperature: float, noise) -> None:
    """theta's rule update, masked by `ok` when the step is guarded (ok not None)."""
    if ok is None:
        rule.apply(state.theta, g_theta, state.theta_aux, eps, temperature, noise)
    else:
        rule.apply_guarded(state.theta, g_theta, state.theta_aux, eps, temperature, noise, ok)


def langevin_table(potential, rule, local_rule, step_size, local_step_size, temperature, generator, guard, comm,
                   noise_rows, compile) -> SamplingAlgorithm:
    """Langevin steps of the rule on theta and on the batch's logits u = logit(w) (their exact conditional
    gradient, no N/B factor); `sum_i w_i` kept incrementally."""
    eps_theta = make_schedule(step_size)
    eps_local = make_schedule(step_size if local_step_size is None else local_step_size)
    has_table = potential.local_site is not None
    theta_noise, local_noise = noise_source(generator), noise_source(generator, noise_rows)
    distributed = comm is not None and comm.world > 1
    if compile:
        check_compilable(potential, rule, local_rule, comm)
        fused_step = compiled_step()

    def init(theta: torch.Tensor, weights: torch.Tensor | None = None) -> SGMCMCState:
        theta = theta.detach().clone()
        table, w_sum, table_aux = None, torch.zeros((), dtype=torch.float64, device=theta.device), {}
        if has_table:
            pinned = weights.is_pinned()
            w = weights.detach().float().clamp(torch.sigmoid(torch.tensor(-U_CLAMP)), torch.sigmoid(torch.tensor(U_CLAMP)))
            table = torch.logit(w).clamp_(-U_CLAMP, U_CLAMP)
            w_sum = weight_sum(potential, potential.weights(table)).to(theta.device)
            table_aux = local_rule.init(table)
            if compile and table.device != theta.device:
                raise ConfigError("compile = true needs the weight table on the network's device (table_device unset)")
            if pinned:  # a host table beside a GPU network: pinned, so its rows move asynchronously
                table = table.pin_memory()
                table_aux = {k: v.pin_memory() for k, v in table_aux.items()}
        return initial_state(theta, table, table_aux, w_sum, rule)

    def step(state: SGMCMCState, batch: Batch, scale: float = 1.0) -> SGMCMCState:
        train_idx, meta_idx = batch
        t = state.step
        eps_t, eps_u = eps_theta(t) * scale, eps_local(t) * scale
        if compile:
            noisy = temperature > 0  # compilable rules draw theta's noise, then the rows', iff T > 0
            noise_t = theta_noise(state.theta) if noisy else None
            noise_u = local_noise(state.table.new_empty(train_idx.shape[0])) if noisy else None
            state.w_sum, state.stats = fused_step(
                potential, rule, local_rule, guard, temperature, state.theta, state.theta_aux, state.table,
                state.table_aux, train_idx, meta_idx, state.w_sum, eps_t, eps_u, noise_t, noise_u,
                (state.rejected, state.run, state.max_run), U_CLAMP)
            state.step = t + 1
            return state
        host_idx = None
        if has_table and state.table.device != state.theta.device:  # a host table: move the batch's rows only
            host_idx, train_idx = train_idx, train_idx.to(state.theta.device, non_blocking=True)
        if has_table:
            u = state.table[train_idx if host_idx is None else host_idx].to(state.theta.device, non_blocking=True)
            local_rest = state.w_sum - weight_sum(potential, potential.weights(u), train_idx)
            rest = local_rest + (comm.sum(state.w_sum) - state.w_sum) if distributed else local_rest
        else:
            u, rest = None, state.w_sum
        grads = potential.grads(state.theta, u, train_idx, meta_idx, rest, temperature)
        g_theta, ok = reduce_gradient(grads.theta, grads.local, comm, guard)
        move_theta(rule, state, g_theta, ok, eps_t, temperature, theta_noise)
        if has_table:
            at = train_idx if host_idx is None else host_idx
            rows = {k: v[at].to(u.device, non_blocking=True) for k, v in state.table_aux.items()}
            if ok is not None:
                local_rule.apply_guarded(u, grads.local, rows, eps_u, temperature, local_noise, ok)
            else:
                local_rule.apply(u, grads.local, rows, eps_u, temperature, local_noise)
            u.clamp_(-U_CLAMP, U_CLAMP)
            state.table[at] = u.to(state.table.device)
            for k, v in rows.items():
                state.table_aux[k][at] = v.to(state.table.device)
            state.w_sum = local_rest + weight_sum(potential, potential.weights(u), train_idx)
        if ok is not None:
            count_rejection(ok, state.rejected, state.run, state.max_run)
        state.step = t + 1
        state.stats = grads.stats
        return state

    return SamplingAlgorithm(init, step, potential.weights, "langevin" if has_table else "none",
                             lambda state: rule.end_warmup(state.theta_aux))


def resync_w_sum(potential: TracePotential, state: SGMCMCState, weights: Callable | None = None) -> None:
    """Recompute sum_i w_i exactly (O(N_t)); the driver does it when it records a draw. `weights` reads the
    algorithm's table (`SamplingAlgorithm.weights`; the potential's sigmoid of logits by default)."""
    if state.table is not None:
        w = (weights or potential.weights)(state.table)
        state.w_sum = weight_sum(potential, w).to(state.theta.device)


def pyro_worker_chain() -> int:
    """The chain a `pyro.infer.MCMC` worker process runs (its `_MultiSampler` names each worker process by its
    chain id); 0 in any other process."""
    process = multiprocessing.current_process()
    return int(process.name) if multiprocessing.parent_process() is not None and process.name.isdigit() else 0


class FullDataModel:
    """The model on all of D_t and D_m at the run's hyper-parameters: the zero-argument Pyro model that
    `pyro.infer.MCMC` users and `arviz.from_pyro` call as `kernel.model` (one forward pass over all the data)."""

    def __init__(self, model: Callable, problem: Problem, hyper: dict):
        self.model, self.problem, self.hyper = model, problem, hyper

    def __call__(self):
        p = self.problem
        ctx = ModelContext(p, torch.arange(p.n_train, device=p.device), torch.arange(p.n_meta, device=p.device),
                           torch.zeros((), device=p.device))
        return self.model(ctx, **self.hyper)


class SGMCMCKernel(MCMCKernel):
    """A minibatch SG-MCMC kernel that `pyro.infer.MCMC` runs, each chain set up and controlled as `fit` does its.

    Pyro's MCMC passes no data to `sample`, so the kernel owns the minibatch samplers. Each call to `sample`
    makes `steps_per_sample` steps (thinning inside the kernel); Pyro's `warmup_steps` count samples, so warm-up
    ends after `warmup_steps * steps_per_sample` steps (`end_warmup`, where pSGLD with `freeze_preconditioner`
    fixes its preconditioner).
    The n-th `setup` of a kernel object starts chain n (in a worker process of a parallel run: the worker's
    chain id), seeded and started like `fit`'s chain n of the same seed: with `steps_per_sample = thin`, the
    same draws. The divergence guard (`check_every`, `max_rejections`) halves the step size as in `fit`.
    """

    algorithm: Callable[..., SamplingAlgorithm]  # set by subclasses: the kernel's functional core

    def __init__(self, model: Callable, problem: Problem, hyper: dict | None = None, *, batch_size: int = 128,
                 meta_batch_size: int | None = None, steps_per_sample: int = 1, seed: int = 0,
                 potential: str = "auto", check_every: int = CHECK_EVERY, max_rejections: int = MAX_REJECTIONS,
                 **algorithm_kwargs):
        self.batch_model, self.problem, self.hyper = model, problem, hyper or {}
        self.batch_size = batch_size
        self.meta_batch_size = meta_batch_size or batch_size
        self.steps_per_sample = steps_per_sample
        self.seed = seed
        self.potential_kind = potential
        self.guard_settings = GuardSettings(check_every, max_rejections, algorithm_kwargs.get("temperature", 1.0),
                                            algorithm_kwargs.get("step_size"))
        self.algorithm_kwargs = algorithm_kwargs
        self.potential: TracePotential | None = None
        self._setups = 0
        self._state: SGMCMCState | None = None

    @property
    def model(self) -> FullDataModel:
        """The model with its data bound (what Pyro calls with `mcmc.run`'s arguments: none here)."""
        return FullDataModel(self.batch_model, self.problem, self.hyper)

    def _prepare(self) -> None:
        """The run's potential, built once per kernel as `fit` builds one for all its chains (beta = "auto"
        resolved first)."""
        if self.potential is None:
            self.hyper, self.useful_fraction = resolve_beta(self.batch_model, self.problem, self.hyper, self.seed)
            self.potential = make_potential(self.batch_model, self.problem, self.hyper, self.potential_kind,
                                            torch.Generator().manual_seed(self.seed))

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """Start the next chain as `fit` starts its chain of that index; warm-up is `warmup_steps` samples."""
        if args or kwargs:
            raise ConfigError("the kernel holds its data (the Problem): call mcmc.run() without arguments")
        self.chain = pyro_worker_chain() + self._setups
        self._setups += 1
        self._prepare()
        device = self.problem.device
        self.generator = chain_generator(self.seed, self.chain, device)
        self.core = type(self).algorithm(self.potential, generator=self.generator, **self.algorithm_kwargs)
        self.step_schedule = make_schedule(self.algorithm_kwargs["step_size"])
        self.train_batches = MinibatchSampler(self.problem.n_train, self.batch_size, self.generator, device)
        self.meta_batches = MinibatchSampler(self.problem.n_meta, self.meta_batch_size, self.generator, device)
        self._state = start_chain(self.potential, self.core, self.generator)
        self.control = ChainControl(self.chain, warmup_steps * self.steps_per_sample, self.guard_settings)
        self.warmup_samples, self.samples = warmup_steps, 0
        self.divergences: list[int] = []  # post-warm-up draws whose steps include a rejected one
        self._rejected_seen = self._rejected_in_warmup = 0  # rejected steps by the last draw, and in warm-up

    @property
    def state(self) -> SGMCMCState:
        return self._state

    def next_batch(self) -> Batch:
        return self.train_batches(), self.meta_batches()

    def advance(self, n: int) -> SGMCMCState:
        """n steps of the chain, each followed by fit's control (end of warm-up, divergence guard)."""
        for _ in range(n):
            self._state = self.core.step(self._state, self.next_batch(), self.control.scale)
            self.control.after_step(self.core, self._state, self._state.step)
        return self._state

    @property
    def transforms(self) -> dict:
        out = {s.name: s.transform.inv for s in self.potential.globals}
        if self.potential.local_site:  # an exact-weights table holds the weights themselves
            out[self.potential.local_site] = identity_transform if self.core.weight_update == "exact" \
                else self.potential.local_transform.inv
        return out

    def _params(self) -> dict[str, torch.Tensor]:
        params = {k: v.detach().clone() for k, v in self.potential.unpack(self._state.theta, constrained=False).items()}
        if self._state.table is not None:
            params[self.potential.local_site] = self._state.table.clone()
        return params

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self._params()

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError("SG-MCMC kernels start from the network's initialiser; set the seed instead")

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.advance(self.steps_per_sample)
        self.samples += 1
        rejected = int(self._state.rejected)  # one host read per draw, as the progress bar's already is
        if self.samples <= self.warmup_samples:
            self._rejected_in_warmup = rejected
        else:  # a kept draw: sum_i w_i exact again, as fit records its draws
            resync_w_sum(self.potential, self._state, self.core.weights)
            if rejected > self._rejected_seen:
                self.divergences.append(self.samples - self.warmup_samples - 1)
        self._rejected_seen = rejected
        return self._params()

    def logging(self) -> OrderedDict:
        """What Pyro's progress bar shows after each sample: the last step's size (times the guard's
        multiplier), the batch's losses and the mean weight."""
        s = self._state
        eps = self.step_schedule(max(s.step - 1, 0)) * self.control.scale
        return OrderedDict([("step size", f"{eps:.2e}"), *progress(s, self.problem.n_train_total).items()])

    def diagnostics(self) -> dict[str, Any]:
        """Per chain: the kept draws with a rejected (non-finite) step as `divergences` and the accepted share
        of their steps as `acceptance rate` (what HMC/NUTS report and `arviz.from_pyro` reads), the guard's
        step-size multiplier, rejected steps in all (warm-up too), and how the chain ran."""
        s = self._state
        kept_steps = (self.samples - self.warmup_samples) * self.steps_per_sample
        accepted = 1 - (int(s.rejected) - self._rejected_in_warmup) / kept_steps if kept_steps else float("nan")
        out = {"divergences": list(self.divergences), "acceptance rate": accepted, "rejected steps": int(s.rejected),
               "step scale": self.control.scale, "chain": self.chain, "steps": s.step,
               "potential": self.potential.kind, "compiled": bool(self.algorithm_kwargs.get("compile", False))}
        if s.table is not None:
            out["w_mean"] = float(s.w_sum.sum()) / self.problem.n_train
        return out
