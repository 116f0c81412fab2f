"""What both potentials know of a model before any step: its sites, read off one trace on a probe batch.

`SiteLayout` traces the model once, finds its global latent sites (theta and friends: their places in
one flat unconstrained vector), its per-example latent site in the `train` plate (the weights) and a
deterministic per-example weight site (weight-network models), and maps a flat theta to site values
and network parameters. `TracePotential` (`trace.py`) and `FusedPotential` (`fused.py`) add how they
evaluate a step's gradients; `Gradients` is what that evaluation returns.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..context import ModelContext, Problem
from ..errors import DPSError, ModelError

LOCAL_PLATE = "train"
PROBE_ROWS = 16  # rows of the probe batch the model is traced on once


class _AtModuleParameters(Messenger):
    """Sites `theta.<name>` take the module's current parameter values (still latent sites): the probe's losses
    are those of the initial network, not of a prior draw so confident that every loss is exactly 0 (a loss
    of 0 says nothing of the factor's constant)."""

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        self.values = {f"theta.{k}": v.detach() for k, v in params.items()}

    def _pyro_sample(self, msg) -> None:
        value = self.values.get(msg["name"])
        if value is not None and not msg["is_observed"] and tuple(msg["fn"].shape()) == tuple(value.shape):
            msg["value"], msg["done"] = value, True


@dataclass
class GlobalSite:
    """A global latent site's place in the flat unconstrained theta vector."""

    name: str
    shape: torch.Size
    offset: int
    numel: int
    transform: Any


@dataclass
class Gradients:
    """What one potential evaluation returns to a kernel (all tensors; nothing read on the host)."""

    theta: torch.Tensor  # flat, d log p / d theta_unconstrained, minibatch estimate
    local: torch.Tensor | None  # d log p(w_B | rest) / d u_B, exact conditional
    stats: dict[str, torch.Tensor]


def _bind_hyper(model: Callable, hyper: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword hyper-parameters with defaults filled in; unknown names are an error."""
    sig = inspect.signature(model)
    params = list(sig.parameters.values())[1:]
    names = {p.name for p in params}
    unknown = sorted(set(hyper) - names)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ModelError(f"model {getattr(model, '__name__', model)!r} has no hyper-parameter(s) {unknown}; "
                         f"it takes {sorted(names)}")
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    out.update(hyper)
    return out


def _support(fn) -> Any:
    """A site's support with any `independent` wrapper removed (what `biject_to` and bound checks need)."""
    return getattr(fn.support, "base_constraint", fn.support)


def _in_local_plate(site: dict) -> bool:
    return any(f.name == LOCAL_PLATE for f in site["cond_indep_stack"])


class SiteLayout:
    """A model's sites as one probe trace shows them, and the flat theta vector's layout over them (the
    base of both potentials; not a potential itself: it evaluates no gradient)."""

    def __init__(self, model: Callable, problem: Problem, hyper: dict[str, Any] | None = None):
        self.model = model
        self.problem = problem
        self.hyper = _bind_hyper(model, hyper or {})
        self.reference = self._reference_trace()
        # labels to keep per-class weight sums by (a model that uses ctx.w_sum_by_label), else None
        self.sum_groups = problem.y_train if self._probe_ctx.used_label_sums else None
        # (loc, scale) of a Normal prior on the weights' sum (per class with sum_groups) when a path reads it in
        # closed form (the fused path), else None: what the exact weight draws and the chains' start use
        self.normal_sum_prior = None
        self.globals: list[GlobalSite] = []
        self.local_site: str | None = None
        self.weight_site: str | None = None  # a deterministic per-example weight (weight-network models)
        self.memory: dict = {}  # the model's running averages (ModelContext.running_mean); reset per chain
        self.theta_size = self._lay_out_sites()
        # The module's own tensors, not copies: nothing in the package writes them (the fused path steps its
        # own copy of the network), and a pretrained language model's weights are not held twice.
        self._start_values = {n: v.detach() for n, v in problem.net.named_parameters()} \
            if getattr(problem.net, "init_from_module", False) else None

    def _lay_out_sites(self) -> int:
        """Finds the per-example sites and gives each global latent site its place; returns theta's size."""
        offset = 0
        for name, site in self.reference.nodes.items():
            if site["type"] == "sample" and site["infer"].get("_deterministic") and _in_local_plate(site):
                self.weight_site = self.weight_site or name
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            if _in_local_plate(site):
                if self.local_site is not None:
                    raise ModelError(f"model has two per-example latent sites ({self.local_site!r}, {name!r}); "
                                     "one (the weights) is supported")
                if site["fn"].event_shape != torch.Size():
                    raise ModelError(f"per-example site {name!r} must be scalar per example")
                self.local_site = name
                self.local_transform = biject_to(_support(site["fn"]))
                continue
            shape = site["value"].shape
            self.globals.append(GlobalSite(name, shape, offset, shape.numel(), biject_to(_support(site["fn"]))))
            offset += shape.numel()
        return offset

    def _reference_trace(self) -> poutine.Trace:
        """The model traced once on a probe batch at the module's current parameters (a network's losses, not
        a prior draw's); at a prior draw when those give non-finite factors (a module an earlier run left
        diverged) or fail."""
        try:
            trace = self._probe(_AtModuleParameters(dict(self.problem.net.named_parameters())))
            if all(bool(torch.isfinite(site["fn"].log_factor).any()) for site in trace.nodes.values()
                   if site["type"] == "sample" and hasattr(site["fn"], "log_factor")):
                return trace  # (a row whose data give a non-finite loss is no reason to leave the module's values)
        except ModelError:
            pass
        return self._probe(None)

    def _probe(self, messenger: Messenger | None) -> poutine.Trace:
        p = self.problem
        idx = torch.arange(min(PROBE_ROWS, p.n_train), device=p.device)
        jdx = torch.arange(min(PROBE_ROWS, p.n_meta), device=p.device)
        ctx = self._probe_ctx = ModelContext(p, idx, jdx, torch.zeros((), dtype=torch.float64, device=p.device))
        try:  # the probe's own random stream: its values do not depend on (nor advance) the caller's
            devices = [p.device] if p.device.type == "cuda" else []
            # validation off: a training row whose data give a non-finite loss must not stop the probe (the
            # divergence guard rejects the steps that batch it)
            with torch.no_grad(), torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
                torch.manual_seed(0)
                model = self.model if messenger is None else messenger(self.model)
                return poutine.trace(model).get_trace(ctx, **self.hyper)
        except DPSError:
            raise
        except Exception as exc:  # a broken user model: say which model and why
            raise ModelError(f"model {getattr(self.model, '__name__', self.model)!r} failed on a probe batch: "
                             f"{type(exc).__name__}: {exc}") from exc

    # ---- positions -------------------------------------------------------------------------
    def init_theta(self, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
        """A flat unconstrained theta: network parameters from the module's own initialiser, others at the prior's median.

        A network with `init_from_module = True` (e.g. a pretrained language model) starts every chain at
        its current parameter values instead of a fresh random draw.
        """
        pieces = []
        named = dict(self.problem.net.named_parameters())
        for site in self.globals:
            pname = site.name[len("theta."):] if site.name.startswith("theta.") else None
            if self._start_values is not None and pname in self._start_values:
                value = self._start_values[pname].clone()
            elif pname in named:
                value = self._reinit_like(named[pname], generator) * scale
            else:
                value = self.reference.nodes[site.name]["fn"].mean.detach().expand(site.shape)
                value = value if torch.isfinite(value).all() else torch.zeros(site.shape)
            pieces.append(site.transform.inv(value.to(self.problem.device)).reshape(-1))
        if not pieces:
            return torch.zeros(0, device=self.problem.device)
        return torch.cat(pieces).detach().float()

    @staticmethod
    def _reinit_like(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Kaiming-uniform-like draw with the chain's own generator, so chains start apart.
        fan_in = p.shape[1:].numel() if p.dim() > 1 else p.numel()
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        u = torch.rand(p.shape, generator=generator, device=p.device)
        return (u * 2 - 1) * bound * (math.sqrt(3.0) if p.dim() > 1 else 1.0)

    def unpack(self, theta: torch.Tensor, constrained: bool = True) -> dict[str, torch.Tensor]:
        """Flat unconstrained theta -> {site: value}."""
        out = {}
        for s in self.globals:
            u = theta[s.offset:s.offset + s.numel].view(s.shape)
            out[s.name] = s.transform(u) if constrained else u
        return out

    def network_params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat theta -> {parameter name: tensor} for `Problem.forward`."""
        return {k[len("theta."):]: v for k, v in self.unpack(theta).items() if k.startswith("theta.")}

    def weights(self, table: torch.Tensor) -> torch.Tensor:
        """Per-example weights w from their unconstrained table."""
        return self.local_transform(table)

    def constants(self) -> dict[str, Any]:
        """What the model's hyper-parameters resolved to, as far as this potential reads them off the model
        (the fused path: `FusedPotential.constants`); the trace path evaluates the model as it is: none."""
        return {}

    @property
    def has_weights(self) -> bool:
        """Whether the model gives per-example weights: a latent table or a deterministic weight site."""
        return self.local_site is not None or self.weight_site is not None

    @torch.no_grad()
    def network_weights(self, theta: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """The deterministic weight site for every training row at theta (O(N_t): for draws and scoring only)."""
        if self.weight_site is None:
            raise ModelError("the model has no deterministic per-example weight site in the 'train' plate")
        data = self.unpack(theta)
        p = self.problem
        meta = torch.arange(min(1, p.n_meta), device=p.device)
        out = []
        for lo in range(0, p.n_train, chunk):
            rows = torch.arange(lo, min(lo + chunk, p.n_train), device=p.device)
            ctx = ModelContext(p, rows, meta, torch.zeros((), dtype=torch.float64, device=p.device))
            with pyro.validation_enabled(False):
                tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(ctx, **self.hyper)
            out.append(tr.nodes[self.weight_site]["value"].detach().reshape(-1))
        return torch.cat(out)
