"""Sane ranges for every numeric setting, checked before any work starts.

A setting outside its range would run for days, allocate terabytes or overflow a 64-bit seed; each
check raises ConfigError naming the field, its value and the range. The limits are generous: far beyond
any run this library is meant for, yet small enough that nothing they allow can hang a machine.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .errors import ConfigError

SEED_MAX = 2 ** 40  # chains seed their generators with seed * 1000 + chain; that must stay below 2^63
MAX_STEPS = 10 ** 9  # warmup + samples * thin per chain
MAX_CHAINS = 1024
MAX_DRAWS = 10 ** 7  # kept draws per chain (per-draw scalars live in memory)
MAX_SNAPSHOTS = 10 ** 4  # each is a copy of theta in memory
MAX_STEP_SIZE = 1e3  # step sizes (theta's and the weights'); useful values are <= 10
MAX_TEMPERATURE = 1e4  # T = 1 is the posterior; larger T only flattens it
MAX_WIDTH = 10 ** 5  # network layer widths and hidden units
MAX_DEPTH = 1000
MAX_CLASSES = 10 ** 5
MAX_MEMORY_MB = 2 ** 20  # memory_budget_mb: 1 TiB


def check_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field} must be an integer in [{low}, {high}], got {value!r}")
    if value < low:
        raise ConfigError(f"{field} must be an integer >= {low}, got {value}")
    if value > high:
        raise ConfigError(f"{field} must be an integer <= {high}, got {value}")
    return value


def check_real(value: Any, field: str, low: float, high: float, low_open: bool = False) -> float:
    """A finite real number (not a bool) in [low, high], or (low, high] when `low_open`."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field} must be a number in {interval}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not (low < number if low_open else low <= number) or number > high:
        raise ConfigError(f"{field} must be a finite number in {interval}, got {value!r}")
    return number


def check_flag(value: Any, field: str) -> bool:
    """True or false (not 0 or 1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be true or false, got {value!r}")
    return value


def check_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    """One of the named choices."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{field} must be {', '.join(repr(c) for c in choices[:-1])} or {choices[-1]!r}, "
                          f"got {value!r}")
    return value


def check_device(name: Any, field: str = "device") -> str:
    """A torch device string that exists on this machine (`cuda` without CUDA is refused here, not mid-run)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{field} must be a torch device such as 'cpu', got {name!r}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{field} = {name!r} but CUDA is not available on this machine; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{field} = {name!r} but this machine has {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"{field} = {name!r} but MPS is not available on this machine; use 'cpu'")
    elif device.type != "cpu":
        raise ConfigError(f"{field} must be 'cpu', 'cuda[:i]' or 'mps', got {name!r}")
    return str(name)


def check_schedule(spec: Any, field: str, total_steps: int) -> None:
    """A step size (number or schedule table) that is finite, > 0 and <= MAX_STEP_SIZE at the first and last step."""
    if callable(spec) and not isinstance(spec, dict):
        return  # an API user's own schedule: it is theirs to bound
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        check_real(spec, field, 0.0, MAX_STEP_SIZE, low_open=True)
        return
    from .kernels.schedules import make_schedule

    for t in (0, max(total_steps - 1, 0)):
        try:
            value = float(make_schedule(spec)(t))
        except ConfigError as exc:
            raise ConfigError(f"{field}: {exc}") from exc
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ConfigError(f"{field} schedule {spec!r} cannot be evaluated at step {t}: {exc}") from exc
        if not math.isfinite(value) or not 0 < value <= MAX_STEP_SIZE:
            raise ConfigError(f"{field} schedule gives {value!r} at step {t}; it must be in (0, {MAX_STEP_SIZE:g}]")
