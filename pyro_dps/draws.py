"""Where a run's thinned draws go: memory while they fit the budget, else a netCDF file written as they come.

Layout (ArviZ's): `weights` with dims (chain, draw, example); scalars with dims (chain, draw).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import ConfigError


class DrawStore:
    """Thinned draws of all N_t weights and per-draw scalars for every chain."""

    def __init__(self, chains: int, draws: int, example_ids: np.ndarray, scalar_names: list[str],
                 memory_budget_mb: float = 512.0, spill_path: str | os.PathLike | None = None,
                 append: bool = False):
        self.chains, self.draws = chains, draws
        self.example_ids = np.asarray(example_ids)
        self.scalar_names = list(scalar_names)
        self.scalars = {k: np.full((chains, draws), np.nan, dtype=np.float64) for k in scalar_names}
        n = len(self.example_ids)
        self.streamed = chains * draws * n * 4 > memory_budget_mb * 2 ** 20
        if self.streamed:
            import netCDF4
            if spill_path is None:
                raise ConfigError(f"the draws ({chains} chains x {draws} draws x {n} examples) exceed "
                                  f"memory_budget_mb = {memory_budget_mb}; give spill_path for the netCDF file")
            self.path = Path(spill_path)
            need = chains * draws * n * 4
            free = shutil.disk_usage(self.path.parent if self.path.parent.exists() else ".").free
            if not (append and self.path.exists()) and need > free:
                raise ConfigError(f"the draws need {need / 2 ** 30:.1f} GiB in {str(self.path)!r} but only "
                                  f"{free / 2 ** 30:.1f} GiB are free there; keep fewer draws or chains")
            if append and self.path.exists():  # resuming: keep the draws already written
                self._nc = netCDF4.Dataset(self.path, "a")
                self._weights = self._nc.variables["weights"]
                return
            self._nc = netCDF4.Dataset(self.path, "w")
            for dim, size in (("chain", chains), ("draw", draws), ("example", n)):
                self._nc.createDimension(dim, size)
            self._nc.createVariable("example", "i8", ("example",))[:] = self.example_ids
            self._weights = self._nc.createVariable("weights", "f4", ("chain", "draw", "example"),
                                                    chunksizes=(1, 1, n), zlib=False)
        else:
            self.path = None
            self._weights = np.full((chains, draws, n), np.nan, dtype=np.float32)

    def record(self, chain: int, draw: int, weights: np.ndarray, scalars: dict[str, float]) -> None:
        self._weights[chain, draw, :] = weights
        for k, v in scalars.items():
            self.scalars[k][chain, draw] = v

    def state_dict(self) -> dict:
        """What a checkpoint needs: the scalars, and the weights unless they live in the netCDF file."""
        if self.streamed:
            self._nc.sync()
            return {"scalars": {k: v.copy() for k, v in self.scalars.items()}, "weights": None}
        return {"scalars": {k: v.copy() for k, v in self.scalars.items()}, "weights": self._weights.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Draws so far from a checkpoint; ConfigError when their names or shapes are not this store's."""
        scalars = state.get("scalars") if isinstance(state, dict) else None
        weights = state.get("weights") if isinstance(state, dict) else None
        shape = (self.chains, self.draws)
        fits = (isinstance(scalars, dict) and set(scalars) == set(self.scalars)
                and all(isinstance(v, np.ndarray) and v.shape == shape for v in scalars.values())
                and (weights is None if self.streamed else
                     isinstance(weights, np.ndarray) and weights.shape == self._weights.shape))
        if not fits:
            raise ConfigError(f"the checkpoint's draws do not fit this run ({shape[0]} chains x {shape[1]} draws "
                              f"x {len(self.example_ids)} examples, scalars {sorted(self.scalars)}); remove it")
        for k, v in scalars.items():
            self.scalars[k][...] = v
        if not self.streamed:
            self._weights[...] = weights

    def close(self) -> None:
        if self.streamed and self._nc.isopen():
            self._nc.close()

    def weights(self) -> xr.DataArray:
        """All weight draws as a DataArray (lazy, backed by the file, when streamed)."""
        if self.streamed:
            self.close()
            return xr.open_dataset(self.path)["weights"]
        return xr.DataArray(self._weights, dims=("chain", "draw", "example"),
                            coords={"chain": np.arange(self.chains), "draw": np.arange(self.draws),
                                    "example": self.example_ids}, name="weights")

    def dataset(self) -> xr.Dataset:
        """Weights and scalars in one Dataset with ArviZ's dims."""
        ds = xr.Dataset({"weights": self.weights()})
        for k, v in self.scalars.items():
            ds[k] = (("chain", "draw"), v)
        return ds.assign_coords(chain=np.arange(self.chains), draw=np.arange(self.draws))


def save_draws(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write draws to netCDF atomically (a temporary file, then a rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.load().to_netcdf(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (RuntimeError, ValueError)) and not isinstance(exc, ConfigError):  # netCDF/HDF5's
            raise OSError(f"draws file {str(path)!r} cannot be written ({type(exc).__name__}: {exc})") from exc
        raise


def load_draws(path: str | os.PathLike) -> xr.Dataset:
    """Draws written by `save_draws` (or streamed by a run)."""
    return xr.open_dataset(path)
