"""What the driver returns: a finished run in memory (weight draws, per-draw scalars, each chain's final theta,
theta snapshots), with its weight summary and posterior predictive. `pyro_dps.Posterior` builds on it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..context import Problem
from ..draws import DrawStore, weight_summary
from ..errors import ConfigError
from ..outputs import plain
from ..useful_fraction import FractionEstimate


@dataclass
class RunResult:
    """A finished run: weight draws, per-draw scalars, final theta per chain and theta snapshots."""

    draws: DrawStore
    final_theta: list[torch.Tensor]
    snapshots: list[torch.Tensor]
    potential: Any  # the run's potential (its network_params maps a theta to the network's parameters)
    problem: Problem
    config: Any  # the run's SamplerConfig, "auto" run lengths resolved
    hyper: dict
    seconds: float
    useful_fraction: FractionEstimate | None = None  # the estimate behind beta = "auto" (useful_fraction.py)
    weight_update: str = "none"  # how the table weights moved: "exact", "langevin" or "none"

    def dataset(self):
        """Draws as an xarray Dataset with dims (chain, draw[, example])."""
        return self.draws.dataset()

    def model_record(self) -> dict[str, Any]:
        """What metrics.json records of the model as it ran: the potential path ("fused" or "trace", and why
        not fused), every hyper-parameter the model used (its own defaults and a resolved beta = "auto"
        included), and the constants the fused path read off the model (what defaults such as sigma = None
        resolved to)."""
        reason = getattr(self.potential, "fused_reason", None)
        return {"potential": self.potential.kind, **({"potential_reason": reason} if reason else {}),
                "hyper": plain(self.hyper), "hyper_derived": plain(self.potential.constants())}

    def weight_summary(self, quantiles: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        """Per-example posterior mean, sd and central interval of w over all chains and draws."""
        w = self.draws.weights().values
        return weight_summary(w.reshape(-1, *w.shape[2:]), quantiles)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, ensemble: bool = True, chain: int = 0,
                      batch_size: int = 1024, thetas: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Class probabilities: averaged over all snapshots of all chains, or from one chain's last iterate, or
        over the given `thetas` (e.g. `predictive_thetas()`)."""
        if thetas is None:
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

    def predictive_thetas(self) -> list[torch.Tensor]:
        """The thetas the posterior predictive averages over: the snapshots, else every chain's last iterate."""
        return self.snapshots or self.final_theta
