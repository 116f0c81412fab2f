"""A run's draws as ArviZ data, for both ArviZ lines.

    data = to_arviz("runs/demo")              # or a draws Dataset, a draws.nc path, or a Posterior
    posterior_group(data)["weights"]          # (chain, draw, example), works for both return types
    from_mcmc(mcmc)                           # a pyro.infer.MCMC run of a pyro-dps kernel

ArviZ 0.x returns `arviz.InferenceData`; ArviZ >= 1.0 (tested with 1.3: arviz-base/-stats/-plots) returns
`xarray.DataTree`. Which one is decided once, from the installed version (`ARVIZ_1`), never by trying one
call and falling back: the 1.x call form passed to 0.x builds a wrong object without an error.

Groups:
- `posterior`: `weights` (chain, draw, example) with the example ids as the `example` coordinate (and the
  per-example `label`, `clean`, ... coordinates a run recorded), and the per-draw scalars `log_joint`,
  `meta_loss`, `train_loss`, `w_mean` (= sum_i w_i / N_t), `theta_norm`, plus scalar latent globals such
  as `beta` when the model has one.
- `sample_stats`: `step_size` (eps of theta at the step that produced each draw, times the divergence
  guard's `step_scale` when recorded; `step_size_local` for the weights when it differs), `step_scale`, and
  per-draw `rejected_steps` / `nonfinite_steps` (steps since the previous kept draw; the Dataset holds
  running totals per chain, as the driver records them) when the run recorded them, else zeros.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from packaging.version import Version

from .errors import DataError

try:  # arviz is a dependency; importing it here keeps the version decision in one place
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


class RunDirError(DataError):
    """A run directory (or one of its files) that is missing, unreadable or not what a run writes."""


def arviz_line() -> str:
    """'1.x' (DataTree) or '0.x' (InferenceData), from the installed ArviZ version."""
    return "1.x" if ARVIZ_1 else "0.x"


# --------------------------------------------------------------------------------------------- loading
def load_run(run_dir: str | os.PathLike) -> tuple[xr.Dataset, dict]:
    """(draws Dataset, metrics.json document) of a run directory; RunDirError naming the file otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    return load_draws_file(run_dir / "draws.nc"), load_metrics(run_dir / "metrics.json")


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


def load_draws_file(path: str | os.PathLike) -> xr.Dataset:
    """draws.nc loaded into memory (the file is closed again); RunDirError naming the file when bad."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{str(path)!r} is missing: not a pyro-dps run directory?")
    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
    except Exception as exc:  # netCDF/HDF5 raise many types (OSError, ValueError, RuntimeError, KeyError)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RunDirError(f"{str(path)!r} is not a readable netCDF draws file ({type(exc).__name__}: {first})") \
            from exc
    if "weights" not in ds or tuple(ds["weights"].dims) != ("chain", "draw", "example"):
        raise RunDirError(f"{str(path)!r} has no 'weights' variable with dims (chain, draw, example)")
    return ds


def _as_draws(source: Any) -> tuple[xr.Dataset, dict | None]:
    """A draws Dataset and, when known, the resolved sampler settings (for the step size)."""
    if isinstance(source, xr.Dataset):
        return source, None
    if hasattr(source, "dataset") and hasattr(source, "config"):  # a driver.Posterior
        from .driver import config_dict

        return source.dataset(), config_dict(source.config)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise RunDirError(f"{str(path)!r} does not exist (expected a run directory or a draws.nc file)")
        if path.is_dir():
            ds, metrics = load_run(path)
            return ds, metrics.get("config", {}).get("sampler")
        if path.suffix == ".nc" or path.is_file():
            ds = load_draws_file(path)
            sibling = path.with_name("metrics.json")
            sampler = load_metrics(sibling).get("config", {}).get("sampler") if sibling.is_file() else None
            return ds, sampler
        raise RunDirError(f"{str(path)!r} is neither a run directory nor a draws.nc file")
    raise TypeError(f"to_arviz needs a draws Dataset, a run directory, a draws.nc path or a Posterior, "
                    f"got {type(source).__name__}")


# --------------------------------------------------------------------------------------------- adapter
def to_arviz(draws_dataset_or_run_dir: Any, sample_stats: Mapping[str, Any] | None = None):
    """ArviZ data (InferenceData on 0.x, DataTree on 1.x) with `posterior` and `sample_stats` groups.

    `draws_dataset_or_run_dir`: `Posterior.dataset()` (or any Dataset with `weights` (chain, draw,
    example) and per-draw scalars (chain, draw)), a run directory, a draws.nc path, or a `Posterior`.
    `sample_stats`: extra or overriding per-draw statistics, arrays of shape (chain, draw), used as given
    (counts here are per draw, not running totals).
    The weight values are passed through unchanged (same dtype), so they round-trip exactly.
    """
    ds, sampler = _as_draws(draws_dataset_or_run_dir)
    if "chain" not in ds.dims or "draw" not in ds.dims:
        raise DataError(f"draws need dims (chain, draw), got {dict(ds.sizes)}")
    chains, draws = ds.sizes["chain"], ds.sizes["draw"]
    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, np.ndarray] = {"chain": np.asarray(ds["chain"].values), "draw": np.asarray(ds["draw"].values)}
    example_coords: dict[str, np.ndarray] = {}
    if "weights" in ds and ds.sizes.get("example", 0) > 0:
        weights = ds["weights"].transpose("chain", "draw", "example")
        posterior["weights"] = np.asarray(weights.values)
        dims["weights"] = ["example"]
        ids = ds["example"].values if "example" in ds.coords else np.arange(ds.sizes["example"])
        coords["example"] = np.asarray(ids)
        example_coords = {name: np.asarray(c.values) for name, c in ds.coords.items()
                          if name != "example" and c.dims == ("example",)}
    stats_in_ds: dict[str, np.ndarray] = {}
    for name, var in ds.data_vars.items():
        if name == "weights" or set(var.dims) != set(SAMPLE_DIMS):
            continue
        values = np.asarray(var.transpose(*SAMPLE_DIMS).values)
        if name in _STAT_NAMES:
            stats_in_ds[name] = values
        else:
            posterior[name] = values
    if "w_mean" not in posterior and "weights" in posterior:
        posterior["w_mean"] = posterior["weights"].astype(np.float64).mean(axis=-1)
    stats = _sample_stats(stats_in_ds, sampler, chains, draws)
    for name, values in (sample_stats or {}).items():
        values = np.asarray(values)
        if values.shape != (chains, draws):
            raise DataError(f"sample_stats[{name!r}] must have shape (chain, draw) = {(chains, draws)}, "
                            f"got {values.shape}")
        stats[name] = values
    data = _from_dict(posterior, stats, coords, dims)
    if example_coords:
        data = _assign_group_coords(data, "posterior", {k: ("example", v) for k, v in example_coords.items()})
    return data


def _from_dict(posterior: dict, stats: dict, coords: dict, dims: dict):
    """The one place that calls ArviZ's from_dict, in the form of the installed line."""
    if ARVIZ_1:
        from arviz_base import from_dict

        return from_dict({"posterior": posterior, "sample_stats": stats}, coords=coords, dims=dims)
    import arviz as az

    return az.from_dict(posterior=posterior, sample_stats=stats, coords=coords, dims=dims)


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
    dims = {local: ["example"]} if local in samples else {}
    return _from_dict(samples, {"diverging": diverging}, {}, dims)


def _assign_group_coords(data, group: str, new_coords: dict):
    if ARVIZ_1:
        node = data[group]
        node.dataset = node.to_dataset().assign_coords(new_coords)
        return data
    setattr(data, group, getattr(data, group).assign_coords(new_coords))
    return data


def step_sizes(sampler: Mapping[str, Any] | None, chains: int, draws: int, key: str = "step_size") -> np.ndarray:
    """eps(t) at the step that produced each draw, from the resolved sampler settings; NaN when unknown."""
    out = np.full((chains, draws), np.nan)
    if not sampler or sampler.get(key) is None:
        return out
    spec = sampler[key]
    if isinstance(spec, str):  # a callable schedule recorded by repr(): the value is not recoverable
        return out
    from .schedules import make_schedule

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
    """step_size (x the guard's step_scale when recorded), step_size_local, per-draw rejected/non-finite counts."""
    scale = np.asarray(in_ds["step_scale"], dtype=np.float64) if "step_scale" in in_ds else 1.0
    stats = {"step_size": in_ds.get("step_size", step_sizes(sampler, chains, draws) * scale)}
    local = sampler.get("local_step_size") if sampler else None
    if local is not None and local != sampler.get("step_size"):
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
    """Weight draws (chain, draw, example) of ArviZ data or a draws Dataset."""
    post = posterior_group(data)
    if "weights" not in post:
        raise DataError("the posterior has no per-example 'weights' (a weight-network run keeps none)")
    return post["weights"].transpose("chain", "draw", "example")


def scalar_names(data) -> list[str]:
    """Posterior variables with dims exactly (chain, draw): log_joint, meta_loss, ..., beta."""
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
