"""Conversion of user arrays to the tensors the library uses, with errors that name the field."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from pyro_dps.errors import DataError

ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[Any]
Seed: TypeAlias = int | torch.Generator


def to_tensor(value: Any, field: str) -> torch.Tensor:
    """Turn a tensor, numpy array or nested sequence into a tensor without changing its dtype."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged sequences and the like
        raise DataError(f"{field} cannot be converted to an array: {exc}") from exc
    if array.dtype == object or array.dtype.kind in "USV":
        raise DataError(f"{field} must be numeric, got an array of dtype {array.dtype}")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for the integer tensor dtypes (bool excluded): labels must have one of these."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def as_features(value: Any, field: str) -> torch.Tensor:
    """Features as a float32 tensor of shape [N, ...] (no scaling), checking dtype and rank."""
    tensor = to_tensor(value, field)
    if tensor.dtype.is_complex:
        raise DataError(f"{field} must be real-valued, got dtype {tensor.dtype}")
    if tensor.ndim < 2:
        raise DataError(
            f"{field} must have shape [N, ...features] (at least 2 dimensions), got shape {tuple(tensor.shape)}"
        )
    return tensor.to(torch.float32)


def as_labels(value: Any, field: str) -> torch.Tensor:
    """Labels as an int64 tensor of shape [N]; float labels are refused even when integer-valued."""
    tensor = to_tensor(value, field)
    if not is_integer_dtype(tensor.dtype):
        raise DataError(f"{field} must have an integer dtype, got {tensor.dtype}")
    if tensor.ndim != 1:
        raise DataError(f"{field} must be 1-dimensional [N], got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint64 and tensor.numel() and int(tensor.max()) > torch.iinfo(torch.int64).max:
        raise DataError(f"{field} has a label too large for int64: {int(tensor.max())}")
    return tensor.to(torch.int64)


def as_mask(value: Any, field: str) -> torch.Tensor:
    """A boolean mask of shape [N]; integer 0/1 arrays are refused to avoid silent misuse."""
    tensor = to_tensor(value, field)
    if tensor.dtype != torch.bool:
        raise DataError(f"{field} must be a boolean mask, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise DataError(f"{field} must be 1-dimensional [N], got shape {tuple(tensor.shape)}")
    return tensor


def check_int(value: Any, field: str, minimum: int | None = None) -> int:
    """A Python/numpy integer (not bool) at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(f"{field} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DataError(f"{field} must be >= {minimum}, got {value}")
    return int(value)


def check_fraction(value: Any, field: str) -> float:
    """A real number in [0, 1] (a probability or a fraction of the data)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{field} must be a number in [0, 1], got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise DataError(f"{field} must be in [0, 1], got {value}")
    return number


def check_at_least(value: Any, field: str, minimum: float) -> float:
    """A finite real number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{field} must be a number >= {minimum}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise DataError(f"{field} must be a finite number >= {minimum}, got {value}")
    return number


def make_generator(seed: Seed, field: str = "seed") -> torch.Generator:
    """A CPU generator from an int seed; a given generator is used (and advanced) as is."""
    if isinstance(seed, torch.Generator):
        return seed
    number = check_int(seed, field)
    try:
        return torch.Generator().manual_seed(number)
    except RuntimeError as exc:  # out of the 64-bit range
        raise DataError(f"{field} is out of range for a random seed: {seed}") from exc


def derive_seeds(seed: int, count: int) -> list[int]:
    """Independent sub-seeds from one seed, so each random step of a builder has its own stream."""
    generator = make_generator(seed)
    return [int(s) for s in torch.randint(0, 2**62, (count,), generator=generator)]


def preview(values: torch.Tensor, limit: int = 5) -> str:
    """A short list of distinct offending values for an error message."""
    distinct = torch.unique(values.detach().cpu().flatten())
    shown = ", ".join(str(v) for v in distinct[:limit].tolist())
    return f"[{shown}{', ...' if distinct.numel() > limit else ''}]"
