"""The Langevin noise: drawn from the chain's generator, on the block's device."""
from __future__ import annotations

import torch


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise drawn on x's device from the chain's generator."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def noise_source(generator: torch.Generator | None, rows: tuple[int, int] | None = None):
    """`noise(x)` for a rule. With `rows=(total, start)` the noise of a whole global batch of `total` rows is
    drawn and rows [start, start + len(x)) are returned: a rank holding part of the batch gets exactly the
    values one process holding all of it would."""
    if rows is None:
        return lambda x: noise_like(x, generator)
    total, start = rows
    return lambda x: torch.randn(total, generator=generator, device=x.device, dtype=x.dtype)[start:start + x.shape[0]]
