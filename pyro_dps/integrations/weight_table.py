"""The per-example weight table a training loop keeps for BADS when theta is a point estimate.

Each step the batch's rows get new weights drawn exactly from their conditional given their losses under the
current theta, the sum of the other weights and the Normal prior on the sum (`kernels.conditional`, the
default weight update of `fit`); the sum of all weights is kept incrementally (a step costs O(batch), never
O(N_t)). Every `record_every` steps after `burn_in` the whole table is kept as one draw. `state()` and
`load_state` carry the whole table (weights, running sum, generator, draws) through a training checkpoint.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch

from ..bounds import check_int
from ..data.batches import row_indices
from ..errors import ConfigError, DataError
from ..kernels.conditional import ConditionalWeights
from pyro_dps.models.bads import check_hyper, default_sigma, meta_weight


class WeightTable:
    """Weights w (N_t,) in [0, 1] under the BADS prior (uniform base, sum_i w_i ~ Normal(floor(N_t beta), sigma))
    and likelihood factor exp(-rho_t w_i l_i / T); `rho_m` as `models/bads.py`'s `meta_weight` (None: the
    curated set weighs as much as the selected part of D_t)."""

    def __init__(self, n_train: int, n_meta: int, beta: float, rho_t: float = 1.0, rho_m: float | None = None,
                 sigma: float | None = None, temperature: float = 0.01, record_every: int = 10,
                 burn_in: int | None = None, candidates: int = 8, seed: int = 0):
        if isinstance(beta, str) and beta == "auto":
            raise ConfigError("beta = 'auto' is not available here: estimating the useful fraction trains two "
                              "cross-fitted copies of the model, as costly as the fine-tuning itself; pass a "
                              "number in (0, 1] (the fraction of the training set you expect to be useful)")
        check_hyper(beta, sigma, rho_t=rho_t, rho_m=rho_m)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
            raise ConfigError(f"temperature must be > 0 (the weights' conditional has no spread at 0), "
                              f"got {temperature!r}")
        check_int(record_every, "record_every", 1, sys.maxsize)
        if burn_in is not None:
            check_int(burn_in, "burn_in", 0, sys.maxsize)
        check_int(seed, "seed", 0, sys.maxsize)
        if n_train < 1:
            raise DataError("the training set is empty: there are no weights to draw")
        if n_meta < 1:
            raise DataError("the meta set is empty: BADS needs at least one curated example")
        self.n_train, self.n_meta, self.beta = int(n_train), int(n_meta), float(beta)
        self.rho_t, self.rho_m = float(rho_t), float(meta_weight(n_train, n_meta, beta, rho_t, rho_m))
        self.temperature, self.record_every, self.burn_in = float(temperature), record_every, burn_in
        target = float(math.floor(n_train * beta))
        scale = default_sigma(n_train, beta) if sigma is None else float(sigma)
        self.kernel = ConditionalWeights(self.rho_t, torch.tensor([target], dtype=torch.float64), scale,
                                         None, candidates)
        self.w = torch.full((n_train,), target / n_train, dtype=torch.float64)  # the prior sum's mode, spread
        self.total = self.w.sum()
        self.generator = torch.Generator().manual_seed(seed)
        self.draws: list[np.ndarray] = []
        self.draw_steps: list[int] = []

    def rows(self, index) -> torch.Tensor:
        """`index` as distinct row numbers in [0, N_t) (CPU long), else DataError (`data.batches.row_indices`)."""
        idx = row_indices(torch.as_tensor(index).detach().cpu(), self.n_train, "the batch's 'index'", distinct=True,
                          what="rows")
        if idx.numel() == 0:
            raise DataError("the batch's 'index' is empty: a batch needs at least one row")
        return idx

    def update(self, index, losses: torch.Tensor) -> torch.Tensor:
        """Draw the rows' new weights given their per-example losses (detached); returns them (float64, CPU).
        A row whose loss is not finite keeps its old weight."""
        idx = self.rows(index)
        losses = losses.detach().double().cpu().reshape(-1)
        if losses.numel() != idx.numel():
            raise DataError(f"{losses.numel()} losses for {idx.numel()} indexed rows")
        old = self.w[idx]
        uniforms = torch.rand(self.kernel.uniforms_shape(idx.numel()), generator=self.generator,
                              dtype=torch.float64)
        new = self.kernel.draw(losses, old, (self.total - old.sum()).reshape(1), None, self.temperature, uniforms)
        new = torch.where(torch.isfinite(new), new, old)
        self.w[idx] = new
        self.total = self.total + (new - old).sum()
        return new

    def objective(self, w: torch.Tensor, losses: torch.Tensor, meta_losses: torch.Tensor) -> torch.Tensor:
        """The negative log joint of theta given w, over N_t (a mean; the prior on theta left to the optimiser):
        rho_t mean_B(w_i l_i) + rho_m (N_m / N_t) mean_Bm(l_j), unbiased for the full sums / N_t."""
        w = w.to(device=losses.device, dtype=losses.dtype)
        return self.rho_t * (w * losses).mean() + self.rho_m * self.n_meta / self.n_train * meta_losses.mean()

    def start(self, total_steps: int) -> None:
        """Fix the burn-in (None: half of `total_steps`) before the first step."""
        if self.burn_in is None:
            self.burn_in = max(int(total_steps), 0) // 2

    def record_if_due(self, step: int) -> bool:
        """After optimiser step `step` (1-based): keep the table as a draw every `record_every` steps past burn-in."""
        burn_in = self.burn_in or 0
        if step <= burn_in or (step - burn_in) % self.record_every or step in self.draw_steps[-1:]:
            return False
        self.total = self.w.sum()  # re-sum exactly once per draw: no drift of the incremental sum
        self.draws.append(self.w.numpy().astype(np.float32))
        self.draw_steps.append(int(step))
        return True

    def draws_array(self) -> np.ndarray:
        """The recorded draws, (draws, N_t) float32; DataError when none was recorded yet."""
        if not self.draws:
            raise DataError(f"no weight draws were recorded: a draw is kept every {self.record_every} steps after "
                            f"burn_in = {self.burn_in} steps; train longer or lower burn_in / record_every")
        return np.stack(self.draws)

    # ------------------------------------------------------------------ checkpoints
    def settings(self) -> dict:
        """The hyperparameters the table's draws follow: a run resumed from a saved table must use the same."""
        return {"n_meta": self.n_meta, "beta": self.beta, "rho_t": self.rho_t, "rho_m": self.rho_m,
                "sigma": float(self.kernel.scale), "temperature": self.temperature,
                "record_every": self.record_every, "candidates": self.kernel.candidates}

    def state(self) -> dict:
        """Everything a resumed run needs to continue the same draws, as plain data (`safefile.save_tree`)."""
        draws = np.stack(self.draws) if self.draws else np.zeros((0, self.n_train), dtype=np.float32)
        return {"n_train": self.n_train, "settings": self.settings(), "burn_in": self.burn_in, "w": self.w,
                "total": self.total, "generator": self.generator.get_state(), "draws": draws,
                "draw_steps": list(self.draw_steps)}

    def load_state(self, state, source: str) -> None:
        """Continue from `state()` read from `source` (named in errors): DataError for another N_t or a
        malformed state, ConfigError for other hyperparameters; nothing changes unless all checks pass."""
        state = _checked_state(state, source)
        if state["n_train"] != self.n_train:
            raise DataError(f"the weight table in {source} has N_t = {state['n_train']} rows but the training set "
                            f"has {self.n_train} examples: resume with the training set the checkpoint was made on")
        saved = dict(state["settings"], burn_in=state["burn_in"])
        now = dict(self.settings(), **({} if self.burn_in is None else {"burn_in": self.burn_in}))  # None: any
        differ = [f"{k} = {saved.get(k)!r} there, {v!r} here" for k, v in now.items() if saved.get(k) != v]
        if differ:
            raise ConfigError(f"the weight table in {source} was drawn under other settings than this run's: "
                              + ", ".join(differ))
        self.generator.set_state(state["generator"])
        self.w, self.total, self.burn_in = state["w"].clone(), state["total"].clone(), state["burn_in"]
        self.draws = [row.copy() for row in state["draws"]]
        self.draw_steps = [int(s) for s in state["draw_steps"]]


def generator_state(value, source: str, name: str = "generator") -> torch.Tensor:
    """A saved CPU torch.Generator state (a 1-D uint8 tensor), else DataError naming `source` and `name`."""
    if not (torch.is_tensor(value) and value.dtype == torch.uint8 and value.dim() == 1):
        raise DataError(f"{source} is not a weight table file: its {name!r} is not a generator state")
    try:
        torch.Generator().set_state(value)
    except RuntimeError as exc:
        raise DataError(f"{source} is not a weight table file: its {name!r} is not a generator state "
                        f"({str(exc).splitlines()[0]})") from None
    return value


def _checked_state(state, source: str) -> dict:
    """`state` when it has `WeightTable.state()`'s fields, types and shapes, else DataError naming `source`."""
    fields = ("n_train", "settings", "burn_in", "w", "total", "generator", "draws", "draw_steps")
    if not isinstance(state, dict) or any(k not in state for k in fields):
        raise DataError(f"{source} is not a weight table file: it lacks fields of {list(fields)}")
    n, w, draws, steps = state["n_train"], state["w"], state["draws"], state["draw_steps"]
    ok = (isinstance(n, int) and isinstance(state["settings"], dict)
          and (state["burn_in"] is None or isinstance(state["burn_in"], int))
          and torch.is_tensor(w) and w.dtype == torch.float64 and tuple(w.shape) == (n,)
          and torch.is_tensor(state["total"]) and state["total"].dtype == torch.float64 and state["total"].dim() == 0
          and isinstance(draws, np.ndarray) and draws.dtype == np.float32 and draws.ndim == 2
          and draws.shape[1] == n and isinstance(steps, list) and len(steps) == len(draws)
          and all(isinstance(s, int) for s in steps))
    if not ok:
        raise DataError(f"{source} is not a weight table file: its fields have the wrong types or shapes")
    generator_state(state["generator"], source)
    return state
