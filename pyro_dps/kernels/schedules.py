"""Step-size schedules: plain callables of the step number t (0-based), as in BlackJAX and `posteriors`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Constant:
    """eps(t) = value."""

    value: float

    def __call__(self, t: int) -> float:
        return self.value


@dataclass(frozen=True)
class Polynomial:
    """eps(t) = a * (b + t)^(-gamma), the decay of Welling & Teh (2011); gamma in (0.5, 1] meets Robbins-Monro."""

    a: float
    b: float = 1.0
    gamma: float = 0.55

    def __call__(self, t: int) -> float:
        return self.a * (self.b + t) ** (-self.gamma)


@dataclass(frozen=True)
class Cyclical:
    """eps(t) = eps0 / 2 * (cos(pi * ((t - offset) mod L) / L) + 1), cyclical SG-MCMC (Zhang et al. 2020); a cycle
    starts at every step t = offset + k L, so the smallest step of each cycle is t = offset + (k + 1) L - 1."""

    eps0: float
    cycle_length: int
    offset: int = 0

    def __call__(self, t: int) -> float:
        phase = (t - self.offset) % self.cycle_length
        return self.eps0 / 2 * (math.cos(math.pi * phase / self.cycle_length) + 1)


def make_schedule(spec) -> "Constant | Polynomial | Cyclical":
    """A schedule from a number, a callable, or a dict like {"kind": "polynomial", "a": 1e-3, "gamma": 0.55}."""
    if callable(spec):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not spec > 0:
            raise ConfigError(f"step_size must be > 0, got {spec!r}")
        return Constant(float(spec))
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", "constant")
        kinds = {"constant": Constant, "polynomial": Polynomial, "cyclical": Cyclical}
        if kind not in kinds:
            raise ConfigError(f"step_size kind must be one of {sorted(kinds)}, got {kind!r}")
        try:
            schedule = kinds[kind](**spec)
        except TypeError as exc:
            raise ConfigError(f"step_size {kind}: {exc}") from exc
        if not schedule(0) > 0:
            raise ConfigError(f"step_size {kind} gives eps(0) = {schedule(0)!r}; it must be > 0")
        return schedule
    raise ConfigError(f"step_size must be a number, a callable or a table, got {spec!r}")
