"""What a report reads of a run: its draws and metrics.json (`load_run`), checked to hold per-example weight
draws of a size a report can read, and split into the user's own examples and the probe examples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arviz_data import RunDirError, load_run
from ..probes import NOT_PROBE, PROBE_GROUP, ProbeSet, probes_from_group

MAX_REPORT_VALUES = 2 ** 31  # chain x draw x example values of draws.nc that a report reads (8 GB as float32)


class ReportError(RunDirError):
    """The run directory cannot be turned into a report (missing or corrupt files, no weight draws)."""


def _load(run_dir: Path):
    """(draws Dataset, metrics) of a run directory, with the draws bounded in size; ReportError otherwise."""
    try:
        ds, metrics = load_run(run_dir)
    except ReportError:
        raise
    except RunDirError as exc:
        raise ReportError(str(exc)) from exc
    check_draws(ds, repr(str(run_dir / "draws.nc")))
    return ds, metrics


def check_draws(ds, where: str) -> None:
    """ReportError unless the flat draws Dataset `ds` (read from `where`) holds per-example weight draws of at
    most MAX_REPORT_VALUES values."""
    if ds.sizes.get("example", 0) == 0:
        raise ReportError(f"{where} holds no per-example weight draws (a weight-network run); nothing to report "
                          "per example")
    size = int(np.prod([ds.sizes[d] for d in ("chain", "draw", "example")], dtype=np.int64))
    if size > MAX_REPORT_VALUES:
        raise ReportError(f"{where} holds {size} weight values, more than a report reads ({MAX_REPORT_VALUES}); "
                          "thin the draws first")


def split_probes(ds):
    """(the draws Dataset of the user's own examples, (probe rows' draws (chain, draw, P), ProbeSet over
    them) or None): a run with probe examples keeps them in the `probe` coordinate (1 good, 2 corrupted)."""
    if PROBE_GROUP not in ds.coords or ds[PROBE_GROUP].dims != ("example",):
        return ds, None
    status = np.asarray(ds[PROBE_GROUP].values)
    probes = probes_from_group(status)
    own = ds.isel(example=np.flatnonzero(status == NOT_PROBE)).drop_vars(PROBE_GROUP)
    if len(probes) == 0:
        return own, None
    w = ds["weights"].isel(example=probes.rows).transpose("chain", "draw", "example").values
    k = len(probes.good)
    return own, (np.asarray(w, dtype=np.float64), ProbeSet(np.arange(k), np.arange(k, len(probes))))
