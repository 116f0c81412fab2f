"""One checkpoint payload for the run driver, and what a resumed run reads back from it (each part checked)."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .checkpoint import check_sampler_state, state_to_payload


def checkpoint_payload(identity: dict, chain: int, t: int, draw: int, scale: float, seen_rejected: int, store,
                        finals: list, snapshots: list, live: tuple | None) -> dict[str, Any]:
    """What a checkpoint holds: the run's fingerprint, its position, the draws so far and, inside a chain
    (`live` = (state, train batches, meta batches, generator, batch generator, model memory)), its streams."""
    payload = {"fingerprint": identity, "chain": chain, "t": t, "draw": draw, "scale": float(scale),
               "seen_rejected": seen_rejected, "state": None, "store": store.state_dict() if store else None,
               "finals": [f.cpu() for f in finals], "snapshots": [x.cpu() for x in snapshots]}
    if live is not None:
        state, train_batches, meta_batches, gen, batch_gen, memory = live
        payload.update({"state": state_to_payload(state), "train_batches": train_batches.state_dict(),
                        "meta_batches": meta_batches.state_dict(), "generator": gen.get_state(),
                        "batch_generator": batch_gen.get_state(), "memory": memory})
    return payload


def saved_thetas(resumed: dict, key: str, size: int, device: torch.device) -> list[torch.Tensor]:
    """The checkpoint's list of theta vectors (finished chains or snapshots), each checked to be `size` long."""
    saved = resumed.get(key)
    if not isinstance(saved, list) or not all(torch.is_tensor(t) and t.shape == (size,) for t in saved):
        raise ConfigError(f"checkpoint {key} must be theta vectors of {size} values; the checkpoint does not fit "
                          "this run, remove it")
    return [t.to(device) for t in saved]


def restore_streams(resumed: dict, train_batches, meta_batches, gen, batch_gen, potential, sizes) -> None:
    """Batch samplers, generators and the model's running memory from a checkpoint, each checked first."""
    check_sampler_state(resumed.get("train_batches"), sizes[0], "train_batches")
    check_sampler_state(resumed.get("meta_batches"), sizes[1], "meta_batches")
    train_batches.load_state_dict(resumed["train_batches"])
    meta_batches.load_state_dict(resumed["meta_batches"])
    for generator, key in ((gen, "generator"), (batch_gen, "batch_generator")):
        if generator is None:
            continue
        try:
            generator.set_state(resumed[key])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ConfigError(f"checkpoint {key} state does not fit this run ({exc}); remove the checkpoint") from exc
    memory = resumed.get("memory", {})
    if not isinstance(memory, dict) or not all(isinstance(v, list) and all(map(torch.is_tensor, v))
                                               for v in memory.values()):
        raise ConfigError("checkpoint memory must map names to lists of tensors; remove the checkpoint")
    potential.memory.update(memory)
