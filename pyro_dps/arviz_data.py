"""A run's draws as ArviZ data, for both ArviZ lines, in the layout of its draws.nc.

    data = to_arviz("runs/demo")              # or a draws Dataset, a draws.nc path, or a Posterior
    weight_draws(data)                        # (chain, draw, example), works for both return types
    arviz.from_netcdf("runs/demo/draws.nc")   # the same groups, read by ArviZ itself
    from_mcmc(mcmc)                           # a pyro.infer.MCMC run of a pyro-dps kernel

ArviZ 0.x returns `arviz.InferenceData`; ArviZ >= 1.0 (tested with 1.3: arviz-base/-stats/-plots) returns
`xarray.DataTree`. Which one is decided once, from the installed version (`ARVIZ_1`), never by trying one
call and falling back: the 1.x call form passed to 0.x builds a wrong object without an error.

Groups (`draws_groups`; draws.nc holds exactly these):
- `posterior`: the weights under their Pyro site name (`w` for models/bads.py; the group's attribute
  `pyro_dps_weights` names it) with dims (chain, draw, example), the example ids as the `example`
  coordinate and the per-example `label`, `clean` and group coordinates (e.g. a review's `domain`) a run
  recorded; the per-draw scalars `meta_loss`, `train_loss`, `w_mean` (= sum_i w_i / N_t), `theta_norm`;
  and every latent global site of the model outside the network's `theta.*` (kept as snapshots in
  posterior.safetensors), of any shape, with dims (chain, draw, NAME_dim_0, ...), e.g. `beta`.
- `sample_stats`: `lp` (the log joint: the last minibatch's likelihood estimate plus the exact priors),
  `step_size` (eps of theta at the step that produced each draw, times the divergence guard's `step_scale`
  when recorded; `step_size_local` for the weights when it differs), `step_scale`, and per-draw
  `rejected_steps` / `nonfinite_steps` (steps since the previous kept draw; the flat Dataset holds running
  totals per chain, as the driver records them) when the run recorded them, else zeros.
- `observed_data`: `label` (example), the training labels; `constant_data`: `clean` and the other groups.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from packaging.version import Version

from . import __version__
from .draws import FORMAT, FORMAT_ATTR, WEIGHT_DIMS, WEIGHTS_ATTR, read_groups, weights_name, write_groups
from .errors import DataError
from .outputs import config_dict

try:  # arviz is a dependency; importing it here keeps the version decision in one place
    from .quiet import arviz_import

    with arviz_import():  # without ArviZ 0.x's import-time notice of its refactor (pyro-dps supports both lines)
        import arviz as _az

    ARVIZ_VERSION = Version(_az.__version__)
except ImportError as exc:  # pragma: no cover - arviz is a hard dependency
    raise ImportError("pyro_dps.arviz_data needs arviz (0.x or >= 1.3)") from exc

#: True on the ArviZ 1.x line (DataTree, arviz-base/arviz-stats), False on 0.x (InferenceData).
ARVIZ_1 = ARVIZ_VERSION >= Version("1.0")

SAMPLE_DIMS = ("chain", "draw")
#: sample_stats variables and the names a draws Dataset may carry them under.
COUNT_STATS = {"rejected_steps": ("rejected_steps", "rejected", "n_rejected"),
               "nonfinite_steps": ("nonfinite_steps", "nonfinite", "non_finite", "n_nonfinite")}
#: per-draw variables of a draws Dataset that describe the sampler, not the posterior: they go to sample_stats.
#: `rejected_steps` as the driver records it is the chain's running total of steps its divergence guard
#: rejected (non-finite gradients); `step_scale` is the step-size multiplier the guard set (halved per rejection).
_STAT_NAMES = {"step_size", "step_size_local", "step_scale"} | {a for names in COUNT_STATS.values() for a in names}
LOG_JOINT = ("log_joint", "lp")  # the driver's name for the log joint, and ArviZ's (in sample_stats)
#: per-example coordinates that are observed data of the model (the rest go to constant_data)
OBSERVED = ("label",)


class RunDirError(DataError):
    """A run directory (or one of its files) that is missing, unreadable or not what a run writes."""


def arviz_line() -> str:
    """'1.x' (DataTree) or '0.x' (InferenceData), from the installed ArviZ version."""
    return "1.x" if ARVIZ_1 else "0.x"


# --------------------------------------------------------------------------------------------- loading
def load_run(run_dir: str | os.PathLike) -> tuple[xr.Dataset, dict]:
    """(flat draws Dataset, metrics.json document) of a run directory; RunDirError naming the file otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    metrics = load_metrics(run_dir / "metrics.json")
    return load_draws_file(run_dir / "draws.nc", metrics.get("config", {}).get("sampler")), metrics


def load_metrics(path: str | os.PathLike) -> dict:
    """metrics.json of a run: parsed and checked for the keys the reports read."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{str(path)!r} is missing: not a pyro-dps run directory?") from None
    except OSError as exc:
        raise RunDirError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("methods"), dict):
        raise RunDirError(f"{str(path)!r} is not a pyro-dps metrics document (no 'methods' table)")
    if not isinstance(document.get("config", {}), dict):
        raise RunDirError(f"{str(path)!r}: 'config' must be a table")
    return document


def read_draws(path: str | os.PathLike, sampler: Mapping[str, Any] | None = None) -> dict[str, xr.Dataset]:
    """The ArviZ groups of a draws.nc file; RunDirError naming the file when it is missing or not a draws file.
    A flat file of pyro-dps 0.1 (`weights` in the root group) is read too: its groups are built as a run
    now writes them (`sampler`, the run's resolved settings, gives the step sizes that file lacks)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{str(path)!r} is missing: not a pyro-dps run directory?")
    try:
        groups = read_groups(path)
    except Exception as exc:  # netCDF/HDF5 raise many types (OSError, ValueError, RuntimeError, KeyError)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RunDirError(f"{str(path)!r} is not a readable netCDF draws file ({type(exc).__name__}: {first})") \
            from exc
    post = groups.get("posterior")
    if post is not None and (weights_name(post) or post.attrs.get(FORMAT_ATTR) == FORMAT):  # ours, maybe no weights
        return groups
    root = groups.get("")
    if root is not None and "weights" in root and tuple(root["weights"].dims) == WEIGHT_DIMS:
        return draws_groups(root, sampler)
    raise RunDirError(f"{str(path)!r} has no weights variable with dims (chain, draw, example) in a 'posterior' "
                      "group: not a pyro-dps draws file")


def load_draws_file(path: str | os.PathLike, sampler: Mapping[str, Any] | None = None) -> xr.Dataset:
    """draws.nc as the flat draws Dataset (`flat_draws`), in memory; RunDirError naming the file when bad."""
    return flat_draws(read_draws(path, sampler))


def flat_draws(groups: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """The driver's flat view of ArviZ groups, `draws_groups` inverted: the weights as `weights`, the log joint
    as `log_joint`, the other sample_stats beside them (step counts as running totals per chain)."""
    post = groups["posterior"]
    name = weights_name(post)
    flat = post.rename({name: "weights"}) if name not in (None, "weights") else post.copy()
    flat.attrs = {WEIGHTS_ATTR: name} if name else {}
    stats = groups.get("sample_stats")
    for key, values in ({} if stats is None else stats.data_vars).items():
        if key == "lp":
            flat["log_joint"] = values
        else:
            flat[key] = values.cumsum("draw") if key in COUNT_STATS else values
    return flat


def _source_groups(source: Any, sample_stats: Mapping[str, Any] | None) -> dict[str, xr.Dataset]:
    """The ArviZ groups of whatever `to_arviz` was given (see there)."""
    if isinstance(source, xr.Dataset):
        return draws_groups(source, None, sample_stats)
    if hasattr(source, "dataset") and hasattr(source, "config"):  # a driver.Posterior
        return draws_groups(source.dataset(), config_dict(source.config), sample_stats)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"to_arviz needs a draws Dataset, a run directory, a draws.nc path or a Posterior, "
                        f"got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise RunDirError(f"{str(path)!r} does not exist (expected a run directory or a draws.nc file)")
    if not path.is_dir() and not path.is_file():
        raise RunDirError(f"{str(path)!r} is neither a run directory nor a draws.nc file")
    metrics_file = path / "metrics.json" if path.is_dir() else path.with_name("metrics.json")
    metrics = load_metrics(metrics_file) if path.is_dir() or metrics_file.is_file() else {}
    groups = read_draws(path / "draws.nc" if path.is_dir() else path, metrics.get("config", {}).get("sampler"))
    if sample_stats:
        extra = _checked_stats(sample_stats, groups["posterior"])
        groups["sample_stats"] = groups["sample_stats"].assign({k: (SAMPLE_DIMS, v) for k, v in extra.items()})
    return groups


# --------------------------------------------------------------------------------------------- adapter
def to_arviz(draws_dataset_or_run_dir: Any, sample_stats: Mapping[str, Any] | None = None):
    """ArviZ data (InferenceData on 0.x, DataTree on 1.x) in the layout of draws.nc (`draws_groups`).

    `draws_dataset_or_run_dir`: `Posterior.dataset()` (or any Dataset with `weights` (chain, draw,
    example) and per-draw variables (chain, draw, ...)), a run directory, a draws.nc path, or a `Posterior`.
    `sample_stats`: extra or overriding per-draw statistics, arrays of shape (chain, draw), used as given
    (counts here are per draw, not running totals).
    The weight values are passed through unchanged (same dtype), so they round-trip exactly.
    """
    return _as_arviz(_source_groups(draws_dataset_or_run_dir, sample_stats))


def _as_arviz(groups: dict[str, xr.Dataset]):
    """Groups as the installed line's object: a DataTree on 1.x, an InferenceData on 0.x."""
    if ARVIZ_1:
        return xr.DataTree.from_dict(groups)
    return _az.InferenceData(**groups)


def from_mcmc(mcmc):
    """A `pyro.infer.MCMC` run of a pyro-dps kernel as ArviZ data on either line: `posterior` with every site
    (dims chain, draw, ...; the weights' dim is `example`) and `sample_stats.diverging` from the kernel's
    `divergences`. On 0.x, `arviz.from_pyro(mcmc)` gives the same two groups (plus the model's observed sites);
    ArviZ 1.x has no Pyro converter (arviz-base 1.3 converts NumPyro only), hence this one."""
    samples = {k: v.detach().cpu().numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = np.zeros((mcmc.num_chains, mcmc.num_samples), dtype=bool)
    for chain, draws in enumerate(mcmc.diagnostics()["divergences"].values()):
        diverging[chain, draws] = True
    local = getattr(getattr(mcmc.kernel, "potential", None), "local_site", None)
    coords = {"chain": np.arange(mcmc.num_chains), "draw": np.arange(mcmc.num_samples)}
    posterior = {k: ([*SAMPLE_DIMS, *(["example"] if k == local else [f"{k}_dim_{i}" for i in range(v.ndim - 2)])], v)
                 for k, v in samples.items()}
    return _as_arviz({"posterior": xr.Dataset(posterior, coords=coords),
                      "sample_stats": xr.Dataset({"diverging": (SAMPLE_DIMS, diverging)}, coords=coords)})


def draws_groups(ds: xr.Dataset, sampler: Mapping[str, Any] | None = None,
                 sample_stats: Mapping[str, Any] | None = None) -> dict[str, xr.Dataset]:
    """ArviZ's groups of a flat draws Dataset: posterior, sample_stats, observed_data and constant_data (the
    module docstring says what goes where); the weights keep their dtype and lazy backing (a spill file)."""
    if "chain" not in ds.dims or "draw" not in ds.dims:
        raise DataError(f"draws need dims (chain, draw), got {dict(ds.sizes)}")
    ds = ds.assign_coords(chain=ds["chain"].values, draw=ds["draw"].values)
    posterior = _posterior(ds)
    in_ds = {k: np.asarray(v.transpose(*SAMPLE_DIMS).values) for k, v in ds.data_vars.items()
             if set(v.dims) == set(SAMPLE_DIMS) and (k in _STAT_NAMES or k in LOG_JOINT)}
    stats = _sample_stats(in_ds, sampler, ds.sizes["chain"], ds.sizes["draw"])
    stats.update(_checked_stats(sample_stats or {}, posterior))
    groups = {"posterior": posterior,
              "sample_stats": xr.Dataset({k: (SAMPLE_DIMS, v) for k, v in stats.items()},
                                         coords={d: ds[d].values for d in SAMPLE_DIMS})}
    per_example = {k: c for k, c in ds.coords.items() if k != "example" and c.dims == ("example",)}
    for group, keys in (("observed_data", [k for k in per_example if k in OBSERVED]),
                        ("constant_data", [k for k in per_example if k not in OBSERVED])):
        if keys:
            groups[group] = xr.Dataset({k: ("example", per_example[k].values) for k in keys},
                                       coords={"example": ds["example"].values})
    attrs = _group_attrs()
    return {name: group.assign_attrs({**attrs, **group.attrs}) for name, group in groups.items()}


def _posterior(ds: xr.Dataset) -> xr.Dataset:
    """The posterior group: the weights first, under their site name, with the per-example coordinates; then
    the per-draw scalars (not the sampler's statistics nor the log joint) and every other (chain, draw, ...)
    variable, e.g. a vector-valued latent global."""
    source = weights_name(ds)
    name = ds.attrs.get(WEIGHTS_ATTR) or "w"
    others = [k for k, v in ds.data_vars.items() if v.dims[:2] == SAMPLE_DIMS and k != source
              and k not in _STAT_NAMES and k not in LOG_JOINT]
    if source and ds.sizes.get("example", 0) > 0:
        post = ds[[source, *others]].rename({source: name})
        post[name] = post[name].transpose(*WEIGHT_DIMS)
        if "w_mean" not in post:
            post["w_mean"] = post[name].astype(np.float64).mean("example")
        post.attrs = {WEIGHTS_ATTR: name}
        return post
    post = ds[others].drop_dims("example", errors="ignore")
    post.attrs = {}
    return post


def _group_attrs() -> dict[str, Any]:
    """What every group says about where it came from (as ArviZ's converters do)."""
    import pyro

    return {"inference_library": "pyro", "inference_library_version": pyro.__version__,
            "created_by": f"pyro-dps {__version__}", FORMAT_ATTR: FORMAT}


def _checked_stats(sample_stats: Mapping[str, Any], posterior: xr.Dataset) -> dict[str, np.ndarray]:
    """Per-draw statistics given by a caller, each checked to have shape (chain, draw)."""
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])
    out = {}
    for name, values in sample_stats.items():
        values = np.asarray(values)
        if values.shape != shape:
            raise DataError(f"sample_stats[{name!r}] must have shape (chain, draw) = {shape}, got {values.shape}")
        out[name] = values
    return out


def step_sizes(sampler: Mapping[str, Any] | None, chains: int, draws: int, key: str = "step_size") -> np.ndarray:
    """eps(t) at the step that produced each draw, from the resolved sampler settings; NaN when unknown."""
    out = np.full((chains, draws), np.nan)
    if not sampler or sampler.get(key) is None:
        return out
    spec = sampler[key]
    if isinstance(spec, str):  # a callable schedule recorded by repr(): the value is not recoverable
        return out
    from .kernels.schedules import make_schedule

    warmup, thin = int(sampler.get("warmup", 0)), int(sampler.get("thin", 1))
    schedule = make_schedule(spec)
    per_draw = np.array([schedule(warmup + (d + 1) * thin - 1) for d in range(draws)], dtype=np.float64)
    out[:] = per_draw[None, :]
    return out


def _per_draw_counts(running_total: np.ndarray) -> np.ndarray:
    """Counts per draw (steps since the previous kept draw; draw 0 includes warm-up) from running totals."""
    total = np.nan_to_num(np.asarray(running_total, dtype=np.float64), nan=0.0)
    return np.diff(total, axis=1, prepend=0.0).round().astype(np.int64)


def _sample_stats(in_ds: dict, sampler: Mapping[str, Any] | None, chains: int, draws: int) -> dict[str, np.ndarray]:
    """lp, step_size (x the guard's step_scale when recorded), step_size_local, per-draw rejected/non-finite counts."""
    stats = {"lp": np.asarray(in_ds[k], dtype=np.float64) for k in LOG_JOINT if k in in_ds}
    scale = np.asarray(in_ds["step_scale"], dtype=np.float64) if "step_scale" in in_ds else 1.0
    stats["step_size"] = in_ds.get("step_size", step_sizes(sampler, chains, draws) * scale)
    local = sampler.get("local_step_size") if sampler else None
    if "step_size_local" in in_ds or (local is not None and local != sampler.get("step_size")):
        stats["step_size_local"] = in_ds.get("step_size_local",
                                             step_sizes(sampler, chains, draws, "local_step_size") * scale)
    if "step_scale" in in_ds:
        stats["step_scale"] = np.asarray(in_ds["step_scale"], dtype=np.float64)
    for name, aliases in COUNT_STATS.items():
        found = next((in_ds[a] for a in aliases if a in in_ds), None)
        # running totals, as the driver records them (monotone per chain), become per-draw counts
        stats[name] = np.zeros((chains, draws), dtype=np.int64) if found is None else _per_draw_counts(found)
    return stats


# --------------------------------------------------------------------------------------------- accessors
def is_arviz_data(data: Any) -> bool:
    """True for the installed line's container (InferenceData on 0.x, DataTree on 1.x)."""
    if ARVIZ_1:
        return isinstance(data, xr.DataTree)
    import arviz as az

    return isinstance(data, az.InferenceData)


def group_names(data) -> list[str]:
    """Names of the groups present (e.g. ['posterior', 'sample_stats'])."""
    if ARVIZ_1:
        return list(data.children)
    return list(data.groups())


def get_group(data, name: str) -> xr.Dataset:
    """One group as a plain xarray Dataset, for either line (KeyError when absent)."""
    if isinstance(data, xr.Dataset):
        return data
    if name not in group_names(data):
        raise KeyError(f"no group {name!r} (groups: {group_names(data)})")
    if ARVIZ_1:
        return data[name].to_dataset()
    return getattr(data, name)


def posterior_group(data) -> xr.Dataset:
    """The posterior group as a Dataset (a plain Dataset is taken to be the posterior itself)."""
    return get_group(data, "posterior")


def sample_stats_group(data) -> xr.Dataset:
    """The sample_stats group as a Dataset."""
    return get_group(data, "sample_stats")


def weight_draws(data) -> xr.DataArray:
    """Weight draws (chain, draw, example) of ArviZ data or a draws Dataset (under the site name or `weights`)."""
    post = posterior_group(data)
    name = weights_name(post)
    if name is None:
        raise DataError("the posterior has no per-example weights (a run of a model without them keeps none)")
    return post[name].transpose(*WEIGHT_DIMS)


def scalar_names(data) -> list[str]:
    """Posterior variables with dims exactly (chain, draw): meta_loss, ..., beta (and a flat Dataset's log_joint)."""
    post = posterior_group(data)
    return [name for name, v in post.data_vars.items() if set(v.dims) == set(SAMPLE_DIMS) and name not in _STAT_NAMES]


def example_groups(data) -> dict[str, np.ndarray]:
    """Per-example grouping coordinates (label, clean, source, ...) recorded on the `example` dim."""
    post = posterior_group(data)
    return {name: np.asarray(c.values) for name, c in post.coords.items()
            if name != "example" and c.dims == ("example",)}


def nonfinite_steps(data) -> int:
    """Total non-finite steps the sampler reported (0 when it reported none)."""
    try:
        stats = sample_stats_group(data)
    except KeyError:
        return 0
    return int(np.nansum(stats["nonfinite_steps"].values)) if "nonfinite_steps" in stats else 0


def rejected_steps(data) -> int:
    """Total rejected steps the sampler reported (0 when it reported none)."""
    try:
        stats = sample_stats_group(data)
    except KeyError:
        return 0
    return int(np.nansum(stats["rejected_steps"].values)) if "rejected_steps" in stats else 0


def save_draws(ds: xr.Dataset, path: str | os.PathLike, sampler: dict | None = None) -> Path:
    """Write a flat draws Dataset (`DrawStore.dataset()`) as draws.nc, atomically; `sampler`: the resolved
    sampler settings, for the step size per draw."""
    return write_groups(path, draws_groups(ds.load(), sampler))
