"""Model-to-potential plumbing: from a Pyro model to the gradients a minibatch Langevin kernel uses.

Two paths compute the same thing:
- `TracePotential` runs the model under `poutine.trace` every step. It works for any model whose
  latent sites are global (theta and friends) or per-example inside the subsampled `train` plate.
- `FusedPotential` traces the model once to learn its sites, then evaluates the BADS structure
  directly in torch: the Gaussian prior on theta analytically, both likelihood factors from one
  forward pass, and the weight priors from the distributions found in that trace. It costs about a
  plain SGD step. `make_potential` checks it against the trace path before using it.

Gradients (BADS.md, random-scan blocked Langevin): theta gets the minibatch estimate of the full log
joint (plate terms scaled by N/|B|); the batch's weights get the gradient of their exact conditional
(terms unscaled).
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .context import ModelContext, Problem
from .errors import DPSError, ModelError

LOCAL_PLATE = "train"
_BIND_TOKENS = itertools.count()
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


class TracePotential:
    """Gradients from a full Pyro trace of the model at every step (general, slower)."""

    kind = "trace"

    def __init__(self, model: Callable, problem: Problem, hyper: dict[str, Any] | None = None):
        self.model = model
        self.problem = problem
        self.hyper = _bind_hyper(model, hyper or {})
        self.reference = self._reference_trace()
        # labels to keep per-class weight sums by (a model that uses ctx.w_sum_by_label), else None
        self.sum_groups = problem.y_train if self._probe_ctx.used_label_sums else None
        self.globals: list[GlobalSite] = []
        self.local_site: str | None = None
        self.weight_site: str | None = None  # a deterministic per-example weight (weight-network models)
        self.memory: dict = {}  # the model's running averages (ModelContext.running_mean); reset per chain
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
        self.theta_size = offset
        # Copied now: the fused path later rebinds the module's parameters to its own buffer.
        self._start_values = {n: v.detach().clone() for n, v in problem.net.named_parameters()} \
            if getattr(problem.net, "init_from_module", False) else None

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

    # ---- gradients -------------------------------------------------------------------------
    def _leaves(self, theta: torch.Tensor) -> list[torch.Tensor]:
        return [theta[s.offset:s.offset + s.numel].view(s.shape).detach().requires_grad_()
                for s in self.globals]

    def grads(self, theta: torch.Tensor, u_batch: torch.Tensor | None, train_idx: torch.Tensor,
              meta_idx: torch.Tensor, w_sum_rest: torch.Tensor, temperature: float = 1.0) -> Gradients:
        """Gradients at one minibatch. The change-of-variables terms are multiplied by `temperature`, so
        a kernel at temperature T targets p(values)^(1/T) in the constrained space (the Jacobian itself
        is not tempered: tempering it would pull every weight towards 1/2)."""
        leaves = self._leaves(theta)
        data, log_jac = {}, 0.0
        for s, u in zip(self.globals, leaves):
            value = s.transform(u)
            data[s.name] = value
            log_jac = log_jac + s.transform.log_abs_det_jacobian(u, value).sum()
        u_leaf = None
        if self.local_site is not None:
            u_leaf = u_batch.detach().requires_grad_()
            w = self.local_transform(u_leaf)
            data[self.local_site] = w
        ctx = ModelContext(self.problem, train_idx, meta_idx, w_sum_rest, self.memory)
        # Validation off for the log probs too: Pyro's NaN/inf warnings read each site's value back to the host
        # (a device sync per site) and hook every gradient; a non-finite step is the divergence guard's to reject.
        with pyro.validation_enabled(False):
            tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(ctx, **self.hyper)
            tr.compute_log_prob()
        scaled = temperature * log_jac
        unscaled = 0.0
        for site in tr.nodes.values():
            if site["type"] == "sample":
                scaled = scaled + site["log_prob_sum"]
                unscaled = unscaled + site["unscaled_log_prob"].sum()
        stats = {"log_joint": torch.as_tensor(scaled).detach()}
        if u_leaf is None:
            g = torch.autograd.grad(scaled, leaves, allow_unused=True)
            if self.weight_site is not None:
                stats.update(_loss_stats(ctx, tr.nodes[self.weight_site]["value"]))
            return Gradients(self._flat(g, leaves), None, stats)
        jac_local = self.local_transform.log_abs_det_jacobian(u_leaf, w)
        scale = tr.nodes[self.local_site]["scale"]
        g = torch.autograd.grad(scaled + temperature * scale * jac_local.sum(), leaves, retain_graph=True,
                                allow_unused=True)
        g_local, = torch.autograd.grad(unscaled + temperature * jac_local.sum(), [u_leaf])
        stats.update(_loss_stats(ctx, w))
        return Gradients(self._flat(g, leaves), g_local, stats)

    @staticmethod
    def _flat(grads, leaves) -> torch.Tensor:
        if not leaves:
            return torch.zeros(0)
        return torch.cat([(torch.zeros_like(l) if g is None else g).reshape(-1) for g, l in zip(grads, leaves)])


def weight_sum(potential, w: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """sum of the weights w (of training rows `rows`, all rows when None) in float64: a scalar, or per class
    when the model keeps per-class sums (`potential.sum_groups`)."""
    if potential.sum_groups is None:
        return w.double().sum()
    groups = potential.sum_groups if rows is None else potential.sum_groups[rows]
    return torch.zeros(potential.problem.n_outputs, dtype=torch.float64, device=w.device).index_add_(
        0, groups.to(w.device), w.double())


def _batch_stats(losses: torch.Tensor, w: torch.Tensor, lik: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused step's statistics: the batch's train losses (the first len(w) rows), meta losses, weights and
    likelihood estimate, detached."""
    n_t = w.shape[0]
    return {"train_losses": losses[:n_t].detach(), "meta_losses": losses[n_t:].detach(), "w": w.detach(),
            "log_lik": lik.detach()}


def _loss_stats(ctx: ModelContext, w: torch.Tensor) -> dict[str, torch.Tensor]:
    if ctx._losses is None:
        return {}
    l_t, l_m = ctx._losses[1]
    return {"train_losses": l_t.detach(), "meta_losses": l_m.detach(), "w": w.detach()}


def summarize_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalars for progress and draws from a step's raw statistics (reads the device: call sparingly)."""
    out = {}
    if "train_losses" in stats:
        out["train_loss"] = float(stats["train_losses"].mean())
        out["weighted_train_loss"] = float((stats["w"] * stats["train_losses"]).mean())
    if "meta_losses" in stats and stats["meta_losses"].numel():
        out["meta_loss"] = float(stats["meta_losses"].mean())
    for key in ("log_lik", "log_joint"):
        if key in stats:
            out[key] = float(stats[key])
    return out


class FusedPotential(TracePotential):
    """The BADS structure evaluated in plain torch: same gradients as the trace path at SGD cost.

    Recognised structure (the sites of `models/bads.py`): global sites `theta.<param>` with Normal
    priors of fixed location and scale; the per-example site `w` on [0, 1]; an observed `w_sum` site
    at `ctx.w_sum(w)`, or at the per-class sums `ctx.w_sum_by_label(w)` (`models/class_balanced.py`);
    factors `train_lik = -rho_t * w * l_t` and `meta_lik = -rho_m * l_m`; any other site makes
    `supported()` false.
    """

    kind = "fused"
    EXPECTED = {"w", "w_sum", "train_lik", "meta_lik"}

    def __init__(self, model: Callable, problem: Problem, hyper: dict[str, Any] | None = None):
        super().__init__(model, problem, hyper)
        self.reason = self._structure_problem()
        self._token = next(_BIND_TOKENS)  # which potential's flat buffer the network's parameters view
        if self.reason:
            return
        nodes = self.reference.nodes
        self.rho_t, self.rho_m = self._factor_constants()
        if self.reason:
            return
        base = nodes["w"]["fn"]
        self.base = None if isinstance(base, dist.Uniform) and float(base.low.max()) == 0.0 \
            and float(base.high.min()) == 1.0 else base
        if self.base is not None and self.base.batch_shape:
            self.base = _unexpand(self.base)
        if self.base is not None:
            _without_validation(self.base)
        self.sparsity = _without_validation(nodes["w_sum"]["fn"])
        fn = self.sparsity.base_dist if isinstance(self.sparsity, dist.Independent) else self.sparsity
        self._normal_sparsity = None  # (loc, scale) of a Normal sum prior with one scale: a closed-form gradient
        if type(fn) is dist.Normal and bool((fn.scale == fn.scale.reshape(-1)[0]).all()):
            scale = float(fn.scale.reshape(-1)[0])
            if self.sum_groups is None and fn.loc.numel() == 1:
                self._normal_sparsity = (float(fn.loc), scale)
            elif self.sum_groups is not None and fn.loc.shape == (problem.n_outputs,):  # one target per class
                self._normal_sparsity = (fn.loc.detach().double(), scale)
        locs, scales = [], []
        for s in self.globals:
            fn = nodes[s.name]["fn"]
            while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
                fn = fn.base_dist
            locs.append(fn.loc.detach().expand(s.shape).reshape(-1))
            scales.append(fn.scale.detach().expand(s.shape).reshape(-1))
        loc, scale = torch.cat(locs).float(), torch.cat(scales).float()
        self.prior_loc = None if bool((loc == 0).all()) else loc
        self.prior_precision = float(1 / scale[0] ** 2) if bool((scale == scale[0]).all()) else scale.pow(-2)

    def _structure_problem(self) -> str:
        nodes = self.reference.nodes
        names = {n for n, s in nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
        theta_sites = {n for n in names if n.startswith("theta.")}
        if names - theta_sites != self.EXPECTED:
            return f"sites {sorted(names - theta_sites)} differ from {sorted(self.EXPECTED)}"
        if self.local_site != "w":
            return "no per-example site 'w' in the 'train' plate"
        for name in theta_sites:
            fn = nodes[name]["fn"]
            while isinstance(fn, torch.distributions.Independent):
                fn = fn.base_dist
            if not isinstance(fn, torch.distributions.Normal):
                return f"prior of {name} is {type(fn).__name__}, not Normal"
        if {s.name for s in self.globals} != theta_sites:
            return "global latent sites other than theta.*"
        support = _support(nodes["w"]["fn"])
        if not (getattr(support, "lower_bound", None) == 0.0 and getattr(support, "upper_bound", None) == 1.0):
            return "weight support is not [0, 1]"
        if not nodes["w_sum"]["is_observed"]:
            return "w_sum is not observed"
        return ""

    def _factor_constants(self) -> tuple[float, float]:
        """(rho_t, rho_m) read off the probe trace: train_lik = -rho_t w l and meta_lik = -rho_m l, whatever the
        model calls its hyper-parameters or however it derives them (e.g. a default from the data sizes)."""
        nodes, (l_t, l_m) = self.reference.nodes, self._probe_ctx._losses[1]
        w = nodes["w"]["value"]
        consts = []
        for site, per_unit in (("train_lik", w * l_t), ("meta_lik", l_m)):
            value = nodes[site]["fn"].log_factor
            finite = torch.isfinite(value) & torch.isfinite(per_unit)  # a poisoned row says nothing either way
            value, per_unit = value[finite], per_unit[finite]
            ratios = -value.double() / per_unit.double()
            ratios = ratios[torch.isfinite(ratios)]
            ratio = ratios.median() if ratios.numel() else torch.tensor(float("nan"), dtype=torch.float64)
            if not ratios.numel() or not bool(torch.allclose(value.double(), -ratio * per_unit.double(), rtol=1e-4,
                                                              atol=1e-6)):
                self.reason = self.reason or f"factor {site!r} is not a constant times -{'w * loss' if site == 'train_lik' else 'loss'}"
                return 1.0, 1.0
            consts.append(float(ratio.to(value.dtype)))  # the constant as the model's dtype holds it
        return consts[0], consts[1]

    def supported(self) -> bool:
        return not self.reason

    def constants(self) -> dict[str, Any]:
        """rho_t and rho_m, and the loc and scale of a Normal w_sum prior (one per class for class sums), as
        read off the probe trace: what defaults such as sigma = None or rho_m = None resolved to."""
        out: dict[str, Any] = {"rho_t": self.rho_t, "rho_m": self.rho_m}
        if self._normal_sparsity is not None:
            loc, scale = self._normal_sparsity
            out.update(w_sum_loc=loc if isinstance(loc, float) else loc.tolist(), w_sum_scale=scale)
        return out

    def weights(self, table: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(table)

    def _bind_flat_parameters(self) -> None:
        # The module's parameters become views of one flat buffer (and their .grad views of one flat
        # gradient), so a step copies theta in with one op, runs the module itself (no functional_call)
        # and reads the whole gradient without concatenating.
        net = self.problem.net
        if not hasattr(self, "_theta_buffer"):
            self._theta_buffer = torch.zeros(self.theta_size, device=self.problem.device)
            self._grad_buffer = torch.zeros_like(self._theta_buffer)
        self._params = []
        for s in self.globals:
            module_name, _, attr = s.name[len("theta."):].rpartition(".")
            module = net.get_submodule(module_name) if module_name else net
            param = torch.nn.Parameter(self._theta_buffer[s.offset:s.offset + s.numel].view(s.shape))
            param.grad = self._grad_buffer[s.offset:s.offset + s.numel].view(s.shape)
            setattr(module, attr, param)
            self._params.append(param)
        net.__dict__["_dps_flat_owner"] = self._token  # another potential on the same network rebinds it

    def _forward(self, theta: torch.Tensor, train_idx: torch.Tensor, meta_idx: torch.Tensor) -> torch.Tensor:
        """The batch's per-example losses (train rows, then meta rows), on the module bound to theta's buffer."""
        p = self.problem
        if p.net.__dict__.get("_dps_flat_owner", -1) != self._token:
            self._bind_flat_parameters()
        with torch.no_grad():
            self._theta_buffer.copy_(theta)
            self._grad_buffer.zero_()
        rows = torch.cat([train_idx, meta_idx + p.n_train]) if meta_idx.numel() else train_idx
        return p.loss(p.net(p.x_all[rows]), p.y_all[rows])

    def _likelihood(self, w: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """theta's minibatch estimate of the two likelihood factors (plate scales N/|B|), weights held fixed."""
        p, n_t = self.problem, w.shape[0]
        lik = (-self.rho_t * p.n_train_total / n_t) * torch.dot(w.detach(), losses[:n_t])
        if losses.shape[0] > n_t:
            lik = lik + (-self.rho_m * p.n_meta / (losses.shape[0] - n_t)) * losses[n_t:].sum()
        return lik

    def _theta_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """The flat gradient buffer (holding the likelihood's gradient) plus the Gaussian prior's gradient."""
        g = self._grad_buffer
        centred = theta if self.prior_loc is None else theta - self.prior_loc
        if isinstance(self.prior_precision, float):
            g.add_(centred, alpha=-self.prior_precision)
        else:
            g.sub_(centred * self.prior_precision)
        return g

    def grads_given(self, theta: torch.Tensor, train_idx: torch.Tensor, meta_idx: torch.Tensor,
                    weights_for: Callable[[torch.Tensor], torch.Tensor]) -> Gradients:
        """One forward and one backward pass with the batch's weights chosen from their losses in between:
        `weights_for(losses)` returns the weights (the exact conditional draw given theta), theta's gradient
        uses them, and they come back as `local`."""
        losses = self._forward(theta, train_idx, meta_idx)
        n_t = train_idx.numel()
        w = weights_for(losses[:n_t].detach())
        lik = self._likelihood(w, losses)
        lik.backward()
        return Gradients(self._theta_gradient(theta), w, _batch_stats(losses, w, lik))

    def grads(self, theta, u_batch, train_idx, meta_idx, w_sum_rest, temperature: float = 1.0) -> Gradients:
        analytic = self.base is None and self._normal_sparsity is not None
        u = u_batch.detach() if analytic else u_batch.detach().requires_grad_()
        w = torch.sigmoid(u)
        losses = self._forward(theta, train_idx, meta_idx)
        n_t = train_idx.numel()
        w_d, l_t_d = w.detach(), losses[:n_t].detach()
        lik = self._likelihood(w_d, losses)  # theta: minibatch estimate of the likelihood factors
        # w_B: exact conditional, unscaled
        labels = None if self.sum_groups is None else self.sum_groups[train_idx]
        if analytic:  # uniform base, Normal sum prior: d/du [-rho_t w l + log N(S) + log w(1-w)] in closed form
            lik.backward()
            loc, scale = self._normal_sparsity
            pull = (self._totals(w_sum_rest, w, labels) - loc) * (-1.0 / scale ** 2)
            dw = l_t_d.mul(-self.rho_t).add_((pull if labels is None else pull[labels]).float())
            g_u = dw.mul_(w * (1 - w)).add_(1 - 2 * w, alpha=temperature)
        else:
            log_w = (-self.rho_t) * torch.dot(w, l_t_d) + self._sparsity_log_prob(self._totals(w_sum_rest, w, labels)) \
                + temperature * (F.logsigmoid(u).sum() + F.logsigmoid(-u).sum())
            if self.base is not None:
                log_w = log_w + self.base.log_prob(w).sum()
            (lik + log_w).backward()
            g_u = u.grad
        return Gradients(self._theta_gradient(theta), g_u, _batch_stats(losses, w_d, lik))

    def batch_log_joint(self, theta: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        w_sum_rest: torch.Tensor, temperature: float = 1.0):
        """The step's objective as a pure function of (theta, u): `torch.func.grad` of it is `grads`' gradient.

        x, y are the train batch's rows followed by the meta batch's. theta's terms hold the weights
        constant and u's terms the losses (the two blocked conditionals), so one gradient gives both
        blocks; written without module state or `.backward()` so that `torch.compile` can fuse the step
        (`kernels/compiled.py`). Returns (value, stats).
        """
        n_t = u.shape[0]
        losses = self._functional_losses(theta, x, y)
        w = torch.sigmoid(u)
        w_d, l_t_d = w.detach(), losses[:n_t].detach()
        lik = self._likelihood(w_d, losses)
        labels = None if self.sum_groups is None else y[:n_t]  # the train rows' labels are the sum groups
        log_w = (-self.rho_t) * torch.dot(w, l_t_d) \
            + self._sparsity_log_prob(self._totals(w_sum_rest, w, labels)).float() \
            + temperature * (F.logsigmoid(u).sum() + F.logsigmoid(-u).sum())
        if self.base is not None:
            log_w = log_w + self.base.log_prob(w).sum()
        value = lik + log_w + self.log_prior_theta(theta)
        return value, _batch_stats(losses, w_d, lik)

    def theta_log_joint(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_t: int,
                        weights_for: Callable[[torch.Tensor], torch.Tensor]):
        """`grads_given`'s objective as a pure function of theta (for `torch.func.grad` in the compiled step):
        the first `n_t` rows of (x, y) are the train batch; returns (value, (weights, stats))."""
        losses = self._functional_losses(theta, x, y)
        w = weights_for(losses[:n_t].detach())
        lik = self._likelihood(w, losses)
        stats = _batch_stats(losses, w, lik)
        return lik + self.log_prior_theta(theta), (w.detach(), stats)

    def _functional_losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {s.name[len("theta."):]: theta[s.offset:s.offset + s.numel].view(s.shape) for s in self.globals}
        return self.problem.loss(self.problem.forward(params, x), y)

    @staticmethod
    def _totals(w_sum_rest: torch.Tensor, w: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The sum prior's argument: the rest's sum plus the batch's weights (per class when `labels` is given)."""
        if labels is None:
            return w_sum_rest + w.sum()
        return w_sum_rest.index_add(0, labels, w.to(w_sum_rest.dtype))

    def _sparsity_log_prob(self, total: torch.Tensor) -> torch.Tensor:
        if self._normal_sparsity is not None:
            loc, scale = self._normal_sparsity
            return -0.5 * ((total - loc) / scale).square().sum()
        return self.sparsity.log_prob(total)

    def log_prior_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """log p(theta) up to a constant (for the per-draw log joint)."""
        centred = theta if self.prior_loc is None else theta - self.prior_loc
        return -0.5 * (centred.square() * self.prior_precision).sum()


def _without_validation(fn: torch.distributions.Distribution) -> torch.distributions.Distribution:
    """Validation off on a distribution and the distributions inside it (a mixture's components): a
    validated log_prob checks its value's support on the host, a device sync in every step."""
    fn._validate_args = False
    for value in vars(fn).values():
        if isinstance(value, torch.distributions.Distribution):
            _without_validation(value)
    return fn


def _unexpand(fn: dist.Distribution) -> dist.Distribution:
    """A per-example distribution with its batch dimension dropped when all rows are equal."""
    params = {k: getattr(fn, k) for k in fn.arg_constraints if hasattr(fn, k)}
    try:
        flat = {k: v.reshape(-1)[0] for k, v in params.items() if torch.is_tensor(v)}
        if all(bool((params[k] == v).all()) for k, v in flat.items()):
            return type(fn)(**flat)
    except (TypeError, ValueError, NotImplementedError):
        pass
    raise ModelError(f"per-example base prior {type(fn).__name__} varies across examples; use potential='trace'")


def check_agreement(a: TracePotential, b: TracePotential, theta: torch.Tensor, table: torch.Tensor,
                    train_idx: torch.Tensor, meta_idx: torch.Tensor, rtol: float = 1e-4,
                    temperature: float = 0.5) -> str:
    """Empty string when both potentials give the same gradients at this state and batch, else what differs."""
    w_all = a.weights(table)
    rest = weight_sum(a, w_all) - weight_sum(a, w_all[train_idx], train_idx)
    ga = a.grads(theta, table[train_idx], train_idx, meta_idx, rest, temperature)
    gb = b.grads(theta, table[train_idx], train_idx, meta_idx, rest, temperature)
    for name, x, y in (("theta", ga.theta, gb.theta), ("w", ga.local, gb.local)):
        finite = torch.isfinite(x)
        if not torch.equal(finite, torch.isfinite(y)):
            return f"gradient of {name} is non-finite in one path only"
        x, y = x[finite], y[finite]
        if not x.numel():
            continue
        scale = float(x.abs().max()) + 1e-12
        err = float((x - y).abs().max())
        if err > rtol * scale:
            return f"gradient of {name} differs by {err:.3g} (scale {scale:.3g})"
    return ""


def make_potential(model: Callable, problem: Problem, hyper: dict[str, Any] | None = None,
                   kind: str = "auto", generator: torch.Generator | None = None) -> TracePotential:
    """The fastest potential that provably matches the model: fused when it agrees with the trace, else trace."""
    if kind not in ("auto", "fused", "trace"):
        raise ModelError(f"potential must be 'auto', 'fused' or 'trace', got {kind!r}")
    if kind == "trace":
        return _traced(model, problem, hyper, "potential = 'trace' was asked for")
    try:
        fused = FusedPotential(model, problem, hyper)
    except ModelError as exc:
        if kind == "fused":
            raise
        return _traced(model, problem, hyper, str(exc))
    if not fused.supported():
        if kind == "fused":
            raise ModelError(f"the fused path does not support this model: {fused.reason}")
        return _traced(model, problem, hyper, fused.reason)
    trace = TracePotential(model, problem, hyper)
    theta = trace.init_theta(generator)
    table = torch.randn(problem.n_train, generator=generator, device=problem.device) if generator is None \
        else torch.randn(problem.n_train, generator=generator).to(problem.device)
    b = min(8, problem.n_train)
    disagreement = check_agreement(fused, trace, theta, table, torch.arange(b, device=problem.device),
                                   torch.arange(min(4, problem.n_meta), device=problem.device))
    if disagreement:
        if kind == "fused":
            raise ModelError(f"fused path disagrees with the Pyro trace: {disagreement}")
        trace.fused_reason = f"the fused path disagrees with the Pyro trace: {disagreement}"
        return trace
    return fused


def _traced(model: Callable, problem: Problem, hyper: dict[str, Any] | None, why: str) -> TracePotential:
    """The trace potential, noting why the fused path is not used (`compile = true` reports it)."""
    trace = TracePotential(model, problem, hyper)
    trace.fused_reason = why
    return trace


def log_joint_estimate(potential: TracePotential, theta: torch.Tensor, w: torch.Tensor | None,
                       stats: dict[str, torch.Tensor]) -> float:
    """Per-draw log joint: the last minibatch's likelihood estimate plus exact priors (O(N_t), at record time
    only); `w` are all N_t table weights."""
    if "log_joint" in stats:
        return float(stats["log_joint"])
    value = stats["log_lik"] + potential.log_prior_theta(theta)
    if w is not None:
        value = value + potential._sparsity_log_prob(weight_sum(potential, w))
        if potential.base is not None:
            value = value + potential.base.log_prob(w.clamp(1e-6, 1 - 1e-6)).sum()
    return float(value)
