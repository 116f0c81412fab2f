"""Where a run's thinned draws go: memory while they fit the budget, else a netCDF file written as they come;
and draws.nc, the run's draws in ArviZ's own file layout.

In memory the draws are one flat Dataset (`DrawStore.dataset()`, the driver's view): `weights` with dims
(chain, draw, example), per-draw scalars with dims (chain, draw), and every latent global site outside the
network with dims (chain, draw, NAME_dim_0, ...).

draws.nc is a multi-group netCDF4 file as `InferenceData.to_netcdf` writes it, so `arviz.from_netcdf`
reads it on ArviZ 0.x and 1.x: /posterior, /sample_stats, /observed_data, /constant_data (which variable
goes where: `pyro_dps.arviz_data.draws_groups`). A streamed store writes the weights straight into
/posterior of its spill file while sampling; `DrawStore.save` then adds the other groups and moves the file
into place, so a large file is never rewritten.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:  # xarray (and pandas) load when draws are read or saved, not while a fit records them
    import xarray as xr

WEIGHT_DIMS = ("chain", "draw", "example")
WEIGHTS_ATTR = "pyro_dps_weights"  # /posterior's attribute naming the weights' variable (the Pyro site, `w`)
FORMAT_ATTR = "pyro_dps_draws_format"  # the root group's attribute: draws.nc of this layout
FORMAT = 2  # 1: the flat file of pyro-dps 0.1 (`weights` in the root group); read by a compatibility path


class DrawStore:
    """Thinned draws of all N_t weights and of per-draw variables (scalars, latent globals) for every chain."""

    def __init__(self, chains: int, draws: int, example_ids: np.ndarray,
                 variables: Mapping[str, tuple] | list[str], memory_budget_mb: float = 512.0,
                 spill_path: str | os.PathLike | None = None, append: bool = False, weights_name: str = "w"):
        """`variables`: name -> shape of one draw (a list of names: scalars). `weights_name`: the weights'
        variable in draws.nc, the model's Pyro site. Past `memory_budget_mb` the weights go to `spill_path`."""
        self.chains, self.draws = chains, draws
        self.example_ids = np.asarray(example_ids)
        self.weights_name = weights_name
        shapes = dict.fromkeys(variables, ()) if isinstance(variables, list) else dict(variables)
        self.values = {k: np.full((chains, draws, *shape), np.nan, dtype=np.float64) for k, shape in shapes.items()}
        self._readers: list[xr.Dataset] = []
        n = len(self.example_ids)
        self.streamed = chains * draws * n * 4 > memory_budget_mb * 2 ** 20
        if self.streamed:
            if spill_path is None:
                raise ConfigError(f"the draws ({chains} chains x {draws} draws x {n} examples) exceed "
                                  f"memory_budget_mb = {memory_budget_mb}; give spill_path for the netCDF file")
            self.path = Path(spill_path)
            self._open_spill(append)
        else:
            self.path = None
            self._weights = np.full((chains, draws, n), np.nan, dtype=np.float32)

    def _open_spill(self, append: bool) -> None:
        """The spill file: the one a resumed run left (its weights so far kept), else a new one."""
        import netCDF4

        if append and self.path.exists():
            self._nc = netCDF4.Dataset(self.path, "a")
            group = self._nc.groups.get("posterior")
            if group is None or self.weights_name not in group.variables:
                self._nc.close()
                raise ConfigError(f"the spill file {str(self.path)!r} is not in the layout this pyro-dps writes "
                                  "(an older version's?); run again without --resume")
            self._weights = group.variables[self.weights_name]
            return
        need = self.chains * self.draws * len(self.example_ids) * 4
        free = shutil.disk_usage(self.path.parent if self.path.parent.exists() else ".").free
        if need > free:
            raise ConfigError(f"the draws need {need / 2 ** 30:.1f} GiB in {str(self.path)!r} but only "
                              f"{free / 2 ** 30:.1f} GiB are free there; keep fewer draws or chains")
        self._nc = _new_file(self.path)
        self._weights = _weights_variable(self._nc, self.weights_name, self.chains, self.draws, self.example_ids)

    def record(self, chain: int, draw: int, weights: np.ndarray, values: dict[str, float | np.ndarray]) -> None:
        self._weights[chain, draw, :] = weights
        for k, v in values.items():
            self.values[k][chain, draw] = v

    def state_dict(self) -> dict:
        """What a checkpoint needs: the per-draw variables, and the weights unless they live in the spill file."""
        if self.streamed:
            self._nc.sync()
        return {"scalars": {k: v.copy() for k, v in self.values.items()},
                "weights": None if self.streamed else self._weights.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Draws so far from a checkpoint; ConfigError when their names or shapes are not this store's."""
        values = state.get("scalars") if isinstance(state, dict) else None
        weights = state.get("weights") if isinstance(state, dict) else None
        fits = (isinstance(values, dict) and set(values) == set(self.values)
                and all(isinstance(v, np.ndarray) and v.shape == self.values[k].shape for k, v in values.items())
                and (weights is None if self.streamed else
                     isinstance(weights, np.ndarray) and weights.shape == self._weights.shape))
        if not fits:
            raise ConfigError(f"the checkpoint's draws do not fit this run ({self.chains} chains x {self.draws} draws "
                              f"x {len(self.example_ids)} examples, variables {sorted(self.values)}); remove it")
        for k, v in values.items():
            self.values[k][...] = v
        if not self.streamed:
            self._weights[...] = weights

    def close(self) -> None:
        """Close the spill file and every view of it `weights` opened."""
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        if self.streamed and self._nc.isopen():
            self._nc.close()

    def weights(self) -> xr.DataArray:
        """All weight draws as a DataArray named `weights` (lazy, backed by the file, when streamed)."""
        import xarray as xr
        if self.streamed:
            self.close()
            reader = xr.open_dataset(self.path, group="posterior")
            self._readers.append(reader)
            return reader[self.weights_name].rename("weights")
        return xr.DataArray(self._weights, dims=WEIGHT_DIMS,
                            coords={"chain": np.arange(self.chains), "draw": np.arange(self.draws),
                                    "example": self.example_ids}, name="weights")

    def dataset(self) -> xr.Dataset:
        """The flat view: weights and every per-draw variable in one Dataset with ArviZ's dims."""
        import xarray as xr
        ds = xr.Dataset({"weights": self.weights()})
        for k, v in self.values.items():
            ds[k] = (("chain", "draw", *(f"{k}_dim_{i}" for i in range(v.ndim - 2))), v)
        ds.attrs[WEIGHTS_ATTR] = self.weights_name
        return ds.assign_coords(chain=np.arange(self.chains), draw=np.arange(self.draws))

    def save(self, path: str | os.PathLike, groups: dict[str, xr.Dataset], keep: bool = False) -> Path:
        """Write draws.nc from the ArviZ `groups` of these draws (`arviz_data.draws_groups`): in memory, a new
        file (atomically); streamed, the spill file completed with the other groups and moved to `path`.
        `keep`: a streamed store's spill file stays as it is (a copy of it is completed and moved), so that
        these draws can still be read and saved again."""
        if not self.streamed:
            return write_groups(path, groups)
        path = Path(path)
        self.close()
        source = self.path
        if keep:
            source = path.with_name(f".{path.name}.spill")
            shutil.copyfile(self.path, source)
        with _netcdf_errors(path):
            _append_groups(source, groups, skip=self.weights_name)
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        shutil.move(source, path)
        if not keep:
            self.path = path
        return path


def _new_file(path: Path):
    """An open, empty netCDF4 file of this layout (the root group says its format)."""
    import netCDF4

    nc = netCDF4.Dataset(path, "w")
    nc.setncattr(FORMAT_ATTR, FORMAT)
    return nc


def _weights_variable(nc, name: str, chains: int, draws: int, example_ids: np.ndarray):
    """/posterior's weights variable, as both the memory and the streamed path write it: one contiguous
    chunk per draw, unwritten values NaN."""
    n = len(example_ids)
    group = nc.createGroup("posterior")
    for dim, size in zip(WEIGHT_DIMS, (chains, draws, n)):
        group.createDimension(dim, size)
    group.createVariable("example", "i8", ("example",))[:] = example_ids
    return group.createVariable(name, "f4", WEIGHT_DIMS, chunksizes=(1, 1, max(n, 1)), zlib=False,
                                fill_value=np.float32(np.nan))


def _append_groups(path: Path, groups: dict[str, xr.Dataset], skip: str) -> None:
    """Every group into the file (posterior without its weights variable `skip`, already written)."""
    for name, ds in groups.items():
        ds = ds.drop_vars(skip) if name == "posterior" and skip in ds else ds
        ds.to_netcdf(path, group=name, mode="a", engine="netcdf4")


@contextlib.contextmanager
def _netcdf_errors(path: Path):
    """netCDF/HDF5's own errors (RuntimeError, ValueError) as an OSError naming the draws file."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise OSError(f"draws file {str(path)!r} cannot be written ({type(exc).__name__}: {exc})") from exc


def write_groups(path: str | os.PathLike, groups: dict[str, xr.Dataset]) -> Path:
    """draws.nc from ArviZ groups held in memory, written atomically (a temporary file, then a rename)."""
    from .outputs import atomic_path

    path, post = Path(path), groups["posterior"]
    name = weights_name(post) or "w"
    with atomic_path(path, OSError) as tmp, _netcdf_errors(path):
        nc = _new_file(tmp)
        try:
            if name in post:  # none when the run kept no per-example weights
                weights = _weights_variable(nc, name, post.sizes["chain"], post.sizes["draw"], post["example"].values)
                weights[...] = np.asarray(post[name].transpose(*WEIGHT_DIMS).values)
        finally:
            nc.close()
        _append_groups(tmp, groups, skip=name)
    return path


def weights_name(post: xr.Dataset) -> str | None:
    """The variable of a posterior (or flat draws) Dataset that holds the per-example weights: the one its
    attributes name, else `weights` or `w`, with dims (chain, draw, example); None when there is none."""
    for name in (post.attrs.get(WEIGHTS_ATTR), "weights", "w"):
        if isinstance(name, str) and name in post.data_vars and post[name].dims == WEIGHT_DIMS:
            return name
    return None


def read_groups(path: str | os.PathLike) -> dict[str, xr.Dataset]:
    """Every group of a netCDF file, loaded into memory (the file is closed again); a file without groups (the
    flat layout of pyro-dps 0.1) as {"": its root}. netCDF/HDF5 errors propagate."""
    import xarray as xr
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        names = list(nc.groups)
    out = {}
    for name in names or [None]:
        with xr.open_dataset(path, group=name) as ds:
            out[name or ""] = ds.load()
    return out


def weight_summary(draws: np.ndarray, quantiles: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
    """Per-example posterior mean, sd and central interval of weight draws (samples, N): the summary
    weights.csv and `pyro-dps score` report (sd 0 from a single draw)."""
    draws = np.asarray(draws)
    lo, hi = np.quantile(draws, quantiles, axis=0)
    sd = draws.std(0, ddof=1) if draws.shape[0] > 1 else np.zeros(draws.shape[1:])
    return {"mean": draws.mean(0), "sd": sd, f"q{int(quantiles[0] * 100):02d}": lo,
            f"q{int(quantiles[1] * 100):02d}": hi}
