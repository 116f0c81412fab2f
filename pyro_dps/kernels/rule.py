"""The one abstract piece a kernel supplies: how a block moves given its gradient."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import torch


class UpdateRule(ABC):
    """How a block x moves given d log p / dx: in place, on x's device, no host reads."""

    # plain tensor arithmetic that calls noise(x) once per move iff temperature > 0: `torch.compile` can take it
    compilable = True

    @abstractmethod
    def init(self, x: torch.Tensor) -> dict[str, Any]:
        """Per-coordinate state for a block shaped like x (the per-example table: one entry per row)."""

    def init_global(self, x: torch.Tensor) -> dict[str, Any]:
        """State for the global block theta, which always moves as a whole (a rule may keep scalars)."""
        return self.init(x)

    def end_warmup(self, aux: dict[str, Any]) -> None:
        """Fix whatever the rule adapts from the chain's gradients (called once, at the end of warm-up)."""

    @abstractmethod
    def apply(self, x: torch.Tensor, g: torch.Tensor, aux: dict[str, Any], eps: float,
              temperature: float, noise: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """One move of x (and aux) with step size eps at the given temperature; `noise(x)` is N(0, 1) like x."""

    def apply_guarded(self, x: torch.Tensor, g: torch.Tensor, aux: dict[str, Any], eps: float, temperature: float,
                      noise: Callable[[torch.Tensor], torch.Tensor], ok: torch.Tensor) -> None:
        """`apply` where the 0-dim bool `ok` holds, else leave x and aux as they are (g may be non-finite then).

        This default keeps copies and restores them with `torch.where`; rules override it with a masked
        update that needs no copies. The noise is drawn either way, so the random stream does not depend
        on which steps were rejected.
        """
        kept = {"x": x.clone(), **{k: v.clone() for k, v in _tensor_aux(aux).items()}}
        self.apply(x, torch.where(ok, g, 0.0), aux, eps, temperature, noise)
        x.copy_(torch.where(ok, x, kept["x"]))
        for k, v in _tensor_aux(aux).items():
            v.copy_(torch.where(ok, v, kept[k]))


def _tensor_aux(aux: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in aux.items() if torch.is_tensor(v)}
