"""Whether a model is the BADS structure the fused path evaluates, and its constants, read off the probe trace.

`structure_problem` says what keeps a model off the fused path (empty when nothing does); `read_priors`
reads what the fused path needs from the probe trace: rho_t and rho_m whatever the model calls them,
the weights' base prior, the sum prior (in closed form when Normal) and theta's Gaussian prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.poutine.util import site_is_subsample

from ..errors import ModelError
from .layout import SiteLayout, _support

EXPECTED_SITES = {"w", "w_sum", "train_lik", "meta_lik"}


@dataclass
class FusedPriors:
    """The constants and distributions a fused step evaluates; `reason` is non-empty when they could not be read."""

    reason: str = ""
    rho_t: float = 1.0
    rho_m: float = 1.0
    base: Any = None  # the weights' per-example base prior; None for Uniform(0, 1)
    sparsity: Any = None  # the w_sum site's distribution
    normal_sparsity: Any = None  # (loc, scale) of a Normal sum prior with one scale, else None
    theta_loc: torch.Tensor | None = None  # None when every location is 0
    theta_precision: Any = None  # a float when all scales are equal, else a flat tensor


def structure_problem(layout: SiteLayout) -> str:
    """What keeps the model off the fused path, or an empty string when its sites are the BADS structure."""
    nodes = layout.reference.nodes
    names = {n for n, s in nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    theta_sites = {n for n in names if n.startswith("theta.")}
    if names - theta_sites != EXPECTED_SITES:
        return f"sites {sorted(names - theta_sites)} differ from {sorted(EXPECTED_SITES)}"
    if layout.local_site != "w":
        return "no per-example site 'w' in the 'train' plate"
    for name in theta_sites:
        fn = nodes[name]["fn"]
        while isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        if not isinstance(fn, torch.distributions.Normal):
            return f"prior of {name} is {type(fn).__name__}, not Normal"
    if {s.name for s in layout.globals} != theta_sites:
        return "global latent sites other than theta.*"
    support = _support(nodes["w"]["fn"])
    if not (getattr(support, "lower_bound", None) == 0.0 and getattr(support, "upper_bound", None) == 1.0):
        return "weight support is not [0, 1]"
    if not nodes["w_sum"]["is_observed"]:
        return "w_sum is not observed"
    return ""


def read_priors(layout: SiteLayout) -> FusedPriors:
    """The fused step's constants and distributions, read off the probe trace of a model with the BADS structure."""
    out = FusedPriors()
    out.rho_t, out.rho_m = _factor_constants(layout, out)
    if out.reason:
        return out
    nodes = layout.reference.nodes
    base = nodes["w"]["fn"]
    out.base = None if isinstance(base, dist.Uniform) and float(base.low.max()) == 0.0 \
        and float(base.high.min()) == 1.0 else base
    if out.base is not None and out.base.batch_shape:
        out.base = _unexpand(out.base)
    if out.base is not None:
        _without_validation(out.base)
    out.sparsity = _without_validation(nodes["w_sum"]["fn"])
    out.normal_sparsity = _normal_sparsity(out.sparsity, layout)
    out.theta_loc, out.theta_precision = _theta_prior(layout)
    return out


def _factor_constants(layout: SiteLayout, out: FusedPriors) -> tuple[float, float]:
    """(rho_t, rho_m) read off the probe trace: train_lik = -rho_t w l and meta_lik = -rho_m l, whatever the
    model calls its hyper-parameters or however it derives them (e.g. a default from the data sizes); sets
    `out.reason` (and returns (1, 1)) when a factor is not of that form."""
    nodes, (l_t, l_m) = layout.reference.nodes, layout._probe_ctx._losses[1]
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
            out.reason = out.reason or f"factor {site!r} is not a constant times -{'w * loss' if site == 'train_lik' else 'loss'}"
            return 1.0, 1.0
        consts.append(float(ratio.to(value.dtype)))  # the constant as the model's dtype holds it
    return consts[0], consts[1]


def _normal_sparsity(sparsity: torch.distributions.Distribution, layout: SiteLayout):
    """(loc, scale) of a Normal sum prior with one scale (loc per class for class sums): its gradient has a
    closed form; None for any other sum prior."""
    fn = sparsity.base_dist if isinstance(sparsity, dist.Independent) else sparsity
    if type(fn) is dist.Normal and bool((fn.scale == fn.scale.reshape(-1)[0]).all()):
        scale = float(fn.scale.reshape(-1)[0])
        if layout.sum_groups is None and fn.loc.numel() == 1:
            return float(fn.loc), scale
        if layout.sum_groups is not None and fn.loc.shape == (layout.problem.n_outputs,):  # one target per class
            return fn.loc.detach().double(), scale
    return None


def _theta_prior(layout: SiteLayout) -> tuple[torch.Tensor | None, Any]:
    """theta's Gaussian prior as (location, precision), flat over the global sites: the location None when
    all 0, the precision a float when all scales are equal."""
    locs, scales = [], []
    for s in layout.globals:
        fn = layout.reference.nodes[s.name]["fn"]
        while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
            fn = fn.base_dist
        locs.append(fn.loc.detach().expand(s.shape).reshape(-1))
        scales.append(fn.scale.detach().expand(s.shape).reshape(-1))
    loc, scale = torch.cat(locs).float(), torch.cat(scales).float()
    return (None if bool((loc == 0).all()) else loc,
            float(1 / scale[0] ** 2) if bool((scale == scale[0]).all()) else scale.pow(-2))


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
