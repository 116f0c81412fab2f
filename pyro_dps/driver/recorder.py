"""What the driver records per kept draw: all N_t weights, the function-space scalars and latent globals."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError
from ..kernels.state import resync_w_sum
from ..potential import SiteLayout, log_joint_estimate, summarize_stats

SCALARS = ["log_joint", "meta_loss", "train_loss", "w_mean", "theta_norm", "rejected_steps", "step_scale"]


def latent_globals(potential: SiteLayout) -> dict[str, tuple[int, ...]]:
    """Global latent sites other than the network's `theta.*`, of any shape (a latent `beta`, a per-class
    location, a weight network's `phi.*`): name -> shape, recorded per draw."""
    sites = {s.name: tuple(s.shape) for s in potential.globals if not s.name.startswith("theta.")}
    clash = sorted(set(sites) & {*SCALARS, "weights"})
    if clash:
        raise ModelError(f"the model's latent site(s) {clash} have a name pyro-dps records draws under; rename them")
    return sites


def weights_site(potential: SiteLayout) -> str:
    """The Pyro site of the per-example weights (`w` in models/bads.py): their name in draws.nc."""
    return potential.local_site or potential.weight_site or "w"


def draw_scalars(potential: SiteLayout, state, weights: torch.Tensor | None,
             n_total: int) -> dict[str, float | np.ndarray]:
    """Per-draw scalars and latent globals; `weights` are all N_t table weights (gathered), or the weight network's."""
    stats = summarize_stats(state.stats)
    values = potential.unpack(state.theta)
    table_w = weights if potential.local_site is not None else None
    return {**{name: values[name].detach().double().cpu().numpy() for name in latent_globals(potential)},
        "log_joint": log_joint_estimate(potential, state.theta, table_w, state.stats),
        "meta_loss": float(stats.get("meta_loss", float("nan"))),
        "train_loss": float(stats.get("train_loss", float("nan"))),
        "w_mean": float(weights.double().sum()) / n_total if weights is not None else float("nan"),
        "theta_norm": float(state.theta.norm()),
    }


def record_draw(run, algorithm, state, chain: int, draw: int, scale: float) -> None:
    """Draw `draw` of `chain`: sum_i w_i made exact again, all N_t weights gathered from the ranks (every rank
    takes part), recorded with the scalars on rank 0; theta snapshotted when the draw is one of `run.keep`."""
    potential, comm = run.potential, run.comm
    resync_w_sum(potential, state, algorithm.weights)
    if potential.local_site is not None:
        w_all = algorithm.weights(comm.gather_rows(state.table, run.layout))
    elif potential.weight_site:
        w_all = comm.gather_rows(potential.network_weights(state.theta), run.layout)
    else:
        w_all = None
    if run.store is not None:
        weights = w_all.float().cpu().numpy() if w_all is not None else np.zeros(0)
        run.store.record(chain, draw, weights, {**draw_scalars(potential, state, w_all, run.problem.n_train_total),
                                                "rejected_steps": float(state.rejected), "step_scale": scale})
    if draw in run.keep:
        run.snapshots.append(state.theta.detach().clone())
