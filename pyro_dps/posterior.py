"""The front door's result: `fit` runs the chains (`pyro_dps.driver`) and returns a `Posterior`, the run in
memory with what a user asks of it: ArviZ data, the convergence checks, a selection, the posterior predictive,
and the run directory and HTML report a CLI run writes (`save` and `report`, `pyro_dps.posterior_io`).

    post = dps.fit(model, problem, hyper, dps.SamplerConfig(chains=4))
    post.diagnose(), post.select(), post.report("run.html")
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .context import Problem
from .driver import SamplerConfig, run_chains
from .driver.result import RunResult
from .outputs import config_dict
from .selection import select_by_probability

if TYPE_CHECKING:  # ArviZ (and matplotlib, scipy.stats) load when a posterior is diagnosed, not when it is fitted
    from .diagnostics import Check, Thresholds


def fit(model: Callable, problem: Problem, hyper: dict | None = None, config: SamplerConfig | None = None,
        **options) -> "Posterior | None":
    """BADS inference on `problem`: `config.chains` chains of the configured kernel (`driver.run_chains`, which
    says what `options` it takes: checkpoint and resume, a spill path, example ids, a torchrun communicator).
    Under torchrun, rank 0 returns the Posterior and the other ranks None."""
    result = run_chains(model, problem, hyper, config, **options)
    return None if result is None else Posterior.from_result(result)


@dataclass
class Posterior(RunResult):
    """A finished run (`RunResult`: weight draws, per-draw scalars, final theta per chain, theta snapshots) and
    what a user asks of it."""

    @classmethod
    def from_result(cls, result: RunResult) -> "Posterior":
        """The driver's result (`run_chains`, `LoopSampler.result()`) as a Posterior (its parts shared)."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(RunResult)})

    def arviz_groups(self, coords: dict[str, np.ndarray] | None = None) -> dict:
        """The ArviZ groups draws.nc holds (`arviz_data.draws_groups`), {name: xarray Dataset}.
        `coords`: per-example coordinates (label, clean, groups such as a review's domain), N_t values each."""
        ds = self.dataset().assign_coords({k: ("example", np.asarray(v)) for k, v in (coords or {}).items()})
        from .arviz_data import draws_groups

        return draws_groups(ds, config_dict(self.config))

    def save_draws(self, path: str | Path, coords: dict[str, np.ndarray] | None = None, keep: bool = False) -> Path:
        """Write draws.nc in ArviZ's layout (`arviz.from_netcdf` reads it; `arviz_groups`). `coords`: as in
        `arviz_groups`. Draws streamed to a spill file move it to `path` unless `keep` (then a copy moves)."""
        return self.draws.save(path, self.arviz_groups(coords), keep)

    def save(self, run_dir: str | Path, coords: dict | None = None, name: str | None = None,
             overwrite: bool = False, echo=print) -> Path:
        """Write a run directory as `pyro-dps run` does (metrics.json, weights.csv, draws.nc, weights_by_group.png,
        examples.npz, report.html, report.selection.csv), staged and published atomically; return it.
        `coords`: per-example coordinates for draws.nc (`clean` flags, groups), N_t values each (`label`
        is the problem's y_train); `name`: the run's name (default: the directory's). A directory that
        exists and is not empty is refused (ConfigError); with `overwrite`, one an earlier save or run wrote
        has the files pyro-dps wrote there replaced, nothing else touched. `pyro_dps.posterior_io` says
        what a notebook's run directory lacks beside a CLI run's (posterior.safetensors, test accuracy)."""
        from .posterior_io import save_run

        return save_run(self, run_dir, coords, name, overwrite, echo)

    def report(self, path: str | Path, coords: dict | None = None, name: str | None = None,
               overwrite: bool = False, thresholds: Thresholds | None = None, echo=print) -> Path:
        """Write the HTML report of this posterior to `path` (and its full per-example table beside it,
        NAME.selection.csv), built from memory by the builder `pyro-dps report` uses; return `path`.
        `coords`, `name`: as in `save` (default name: the file's stem). An existing file is replaced only
        with `overwrite` (ConfigError otherwise)."""
        from .posterior_io import write_posterior_report

        return write_posterior_report(self, path, coords, name, overwrite, thresholds, echo)

    def to_arviz(self):
        """The draws as ArviZ data (InferenceData on ArviZ 0.x, DataTree on 1.x), groups as in draws.nc."""
        from .arviz_data import to_arviz

        return to_arviz(self)

    def diagnose(self, thresholds: Thresholds | None = None) -> list[Check]:
        """The convergence checks (`diagnostics.summary`): R-hat and ESS of the weights and per-draw scalars."""
        from .diagnostics import summary

        return summary(self.to_arviz(), thresholds)

    def select(self, tau: float = 0.5, q: float = 0.9) -> np.ndarray:
        """The examples to keep, bool (N_t,): P(w_i > tau) >= q over every chain's draws."""
        return select_by_probability(self.draws.weights().values, tau, q)


