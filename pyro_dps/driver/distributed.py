"""Scale-out: the training set sharded over processes (torchrun; gloo on CPU, NCCL on GPU).

Each rank owns the weights of one contiguous shard of D_t; every global batch takes `batch_size / K`
rows from each shard and `meta_batch_size / K` meta rows per rank. A rank evaluates the potential on its
part with the plate scales of the global N_t, so the mean of the ranks' theta gradients is exactly the
global batch's gradient; `sum_i w_i` is all-reduced before each step and theta's noise comes from the
shared chain seed. One process with `shards=K` draws the same batches and noise, so it reproduces a
K-process run (to float rounding): that is how the equivalence is tested.

    torchrun --nproc_per_node 2 -m pyro_dps run configs/digits_denoising.toml --out runs/ddp
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..data.batches import MinibatchSampler
from ..errors import ConfigError


@dataclass(frozen=True)
class ShardLayout:
    """Contiguous shards of range(n): shard s is [bounds[s], bounds[s + 1])."""

    n: int
    count: int

    def __post_init__(self):
        if not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"shards must be an integer >= 1, got {self.count!r}")
        if self.count > self.n:
            raise ConfigError(f"shards={self.count} is more than the {self.n} training examples")

    def bounds(self, shard: int) -> tuple[int, int]:
        return shard * self.n // self.count, (shard + 1) * self.n // self.count

    def size(self, shard: int) -> int:
        lo, hi = self.bounds(shard)
        return hi - lo


def shard_generator(seed: int, shard: int, device) -> torch.Generator:
    """The batch-order generator of one shard (independent of the chain's noise generator)."""
    return torch.Generator(device=device).manual_seed(seed * 7919 + 104729 * (shard + 1))


class ShardedSampler:
    """Train batches of `per_shard` rows from each owned shard, in the owner's local row numbering.

    One process owning every shard returns global indices (shard 0's rows first); a rank owning one
    shard returns the same rows shifted to its shard's start, so both see the same global batch.
    """

    def __init__(self, layout: ShardLayout, per_shard: int, seed: int, owned: list[int], device):
        self.layout, self.owned = layout, owned
        for s in owned:
            if per_shard > layout.size(s):
                raise ConfigError(f"batch_size / shards = {per_shard} is larger than shard {s} "
                                  f"({layout.size(s)} examples)")
        base = layout.bounds(owned[0])[0]
        self.offsets = [layout.bounds(s)[0] - base for s in owned]
        self.samplers = [MinibatchSampler(layout.size(s), per_shard, shard_generator(seed, s, device), device)
                         for s in owned]

    def __call__(self) -> torch.Tensor:
        parts = [sampler() + off for sampler, off in zip(self.samplers, self.offsets)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"samplers": [s.state_dict() for s in self.samplers],
                "generators": [s.generator.get_state() for s in self.samplers]}

    def load_state_dict(self, state: dict) -> None:
        for sampler, saved, gen in zip(self.samplers, state["samplers"], state["generators"]):
            sampler.load_state_dict(saved)
            sampler.generator.set_state(gen)


class SlicedSampler:
    """This rank's part of a batch every rank draws identically (from the shared chain generator)."""

    def __init__(self, sampler: MinibatchSampler, part: int, parts: int):
        self.sampler, self.part, self.parts = sampler, part, parts

    def __call__(self) -> torch.Tensor:
        batch = self.sampler()
        return batch if self.parts == 1 else batch.tensor_split(self.parts)[self.part]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class Communicator:
    """What the kernel and driver need from torch.distributed; a world of one does nothing."""

    def __init__(self, group=None):
        self.group = group
        self.world = dist.get_world_size(group) if group is not None or _active() else 1
        self.rank = dist.get_rank(group) if self.world > 1 else 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean_(self, x: torch.Tensor) -> torch.Tensor:
        """In-place mean over ranks."""
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM, group=self.group)
            x.div_(self.world)
        return x

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (a new tensor)."""
        if self.world == 1:
            return x
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def all_gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x` (the same shape on every rank) concatenated along dim 0 in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts)

    def gather_rows(self, x: torch.Tensor, layout: ShardLayout) -> torch.Tensor:
        """Every rank's shard rows concatenated in shard order (all ranks receive the whole)."""
        if self.world == 1:
            return x
        longest = max(layout.size(s) for s in range(layout.count))
        padded = torch.zeros(longest, dtype=x.dtype, device=x.device)
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:layout.size(s)] for s, p in enumerate(parts)])

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.group)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env(device: str = "cpu") -> Communicator:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    Outside torchrun (no WORLD_SIZE, or 1) nothing is initialised and a world of one is returned.
    gloo on CPU, NCCL on CUDA (each rank takes GPU LOCAL_RANK).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Communicator()
    if not _active():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return Communicator()


def local_device(device: str) -> str:
    """Under torchrun, `cuda` means this rank's GPU (LOCAL_RANK)."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
