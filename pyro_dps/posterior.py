"""A finished run in memory: weight draws, per-draw scalars, the chains' final theta and theta snapshots,
with what a user asks of it (ArviZ data, the convergence checks, a selection, the posterior predictive)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arviz_data import draws_groups, to_arviz
from .context import Problem
from .diagnostics import Check, Thresholds, summary
from .draws import DrawStore
from .errors import ConfigError
from .outputs import config_dict
from .selection import select_by_probability
from .useful_fraction import FractionEstimate


@dataclass
class Posterior:
    """A finished run: weight draws, per-draw scalars, final theta per chain and theta snapshots."""

    draws: DrawStore
    final_theta: list[torch.Tensor]
    snapshots: list[torch.Tensor]
    potential: Any  # the run's TracePotential (its network_params maps a theta to the network's parameters)
    problem: Problem
    config: Any  # the run's driver.SamplerConfig, "auto" run lengths resolved
    hyper: dict
    seconds: float
    useful_fraction: FractionEstimate | None = None  # the estimate behind beta = "auto" (useful_fraction.py)
    weight_update: str = "none"  # how the table weights moved: "exact", "langevin" or "none"

    def dataset(self):
        """Draws as an xarray Dataset with dims (chain, draw[, example])."""
        return self.draws.dataset()

    def save_draws(self, path: str | Path, coords: dict[str, np.ndarray] | None = None) -> Path:
        """Write draws.nc in ArviZ's layout (`arviz.from_netcdf` reads it; `arviz_data.draws_groups`).
        `coords`: per-example coordinates (label, clean, groups such as a review's domain), N_t values each."""
        ds = self.dataset().assign_coords({k: ("example", np.asarray(v)) for k, v in (coords or {}).items()})
        return self.draws.save(path, draws_groups(ds, config_dict(self.config)))

    def to_arviz(self):
        """The draws as ArviZ data (InferenceData on ArviZ 0.x, DataTree on 1.x), groups as in draws.nc."""
        return to_arviz(self)

    def diagnose(self, thresholds: Thresholds | None = None) -> list[Check]:
        """The convergence checks (`diagnostics.summary`): R-hat and ESS of the weights and per-draw scalars."""
        return summary(self.to_arviz(), thresholds)

    def select(self, tau: float = 0.5, q: float = 0.9) -> np.ndarray:
        """The examples to keep, bool (N_t,): P(w_i > tau) >= q over every chain's draws."""
        return select_by_probability(self.draws.weights().values, tau, q)

    def weight_summary(self, quantiles: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        """Per-example posterior mean, sd and central interval of w over all chains and draws."""
        w = self.draws.weights()
        flat = w.stack(sample=("chain", "draw"))
        return {"mean": flat.mean("sample").values, "sd": flat.std("sample", ddof=1).values,
                f"q{int(quantiles[0] * 100):02d}": flat.quantile(quantiles[0], "sample").values,
                f"q{int(quantiles[1] * 100):02d}": flat.quantile(quantiles[1], "sample").values}

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, ensemble: bool = True, chain: int = 0,
                      batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities: averaged over all snapshots of all chains, or from one chain's last iterate."""
        thetas = self.snapshots if ensemble else [self.final_theta[chain]]
        if not thetas:
            raise ConfigError("no theta snapshots were kept (snapshots=0); use ensemble=False")
        x = x.to(self.problem.device)
        total = 0.0
        for theta in thetas:
            params = self.potential.network_params(theta)
            probs = torch.cat([self.problem.forward(params, x[i:i + batch_size]).softmax(-1)
                               for i in range(0, x.shape[0], batch_size)])
            total = total + probs
        return (total / len(thetas)).cpu()
