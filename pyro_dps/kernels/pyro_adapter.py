"""`SGMCMCKernel`: a kernel's (init, step) core as a `pyro.infer.mcmc.MCMCKernel`, each chain set up and
controlled as `fit` does its (a thin client of the same chain start, schedule and guard)."""
from __future__ import annotations

import multiprocessing
from collections import OrderedDict
from typing import Any, Callable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch.distributions.transforms import identity_transform

from ..context import ModelContext, Problem
from ..data.batches import MinibatchSampler
from ..errors import ConfigError
from ..potential import SiteLayout, make_potential
from ..useful_fraction import resolve_beta
from .chain import CHECK_EVERY, MAX_REJECTIONS, ChainControl, GuardSettings, chain_generator, progress, start_chain
from .schedules import make_schedule
from .state import Batch, SamplingAlgorithm, SGMCMCState, resync_w_sum


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
        self.potential: SiteLayout | None = None
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
