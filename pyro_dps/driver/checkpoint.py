"""Atomic checkpoints of a run: kernel state, RNG states, weight table, chain position and draws so far.

Stored as safetensors plus a JSON skeleton (`pyro_dps.safefile`): loading one runs no code. Written to a
unique temporary file and renamed, so a kill at any moment leaves either the previous or the new
checkpoint, never a torn one. A checkpoint carries the fingerprint of the run that wrote it (settings,
data, model, package version; `pyro_dps.fingerprint`): resuming a different run is refused with the
differing field named, and a checkpoint whose position or shapes do not fit the run is refused too.
Resuming restores everything a step depends on, so on CPU a resumed run gives the same draws, bit for
bit, as an uninterrupted one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..fingerprint import first_differences
from ..safefile import load_tree, save_tree

VERSION = 2
LEGACY_HINT = "delete it and start the run again without --resume (an old checkpoint cannot be continued)"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """The payload as a safe file at `path` (unique temporary file, fsync, rename); a failed write (a full
    disk) keeps the previous checkpoint and raises ConfigError naming the file."""
    try:
        save_tree(path, {"version": VERSION, **payload})
    except OSError as exc:
        raise ConfigError(f"checkpoint {str(path)!r} cannot be written: {exc.strerror or exc}; the previous "
                          "checkpoint (if any) is kept") from exc


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> dict[str, Any]:
    """A checkpoint written by the same run (same fingerprint); anything else is refused naming the field."""
    path = Path(path)
    payload = load_tree(path, "checkpoint", ConfigError, LEGACY_HINT)
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        version = payload.get("version") if isinstance(payload, dict) else None
        raise ConfigError(f"checkpoint {str(path)!r} has format version {version!r}, expected {VERSION}; "
                          f"{LEGACY_HINT}")
    check_fingerprint(payload, fingerprint, f"checkpoint {str(path)!r}")
    return payload


def check_fingerprint(payload: dict[str, Any], fingerprint: dict, where: str) -> None:
    """Refuse a payload written by another run (`where` names it in the message), naming the first difference."""
    saved = payload.get("fingerprint")
    if not isinstance(saved, dict):
        raise ConfigError(f"{where} has no run fingerprint; {LEGACY_HINT}")
    diff = first_differences(saved, fingerprint)
    if diff:
        field, old, new = diff[0]
        more = f" (and {len(diff) - 1} more: {', '.join(d[0] for d in diff[1:4])})" if len(diff) > 1 else ""
        raise ConfigError(f"{where} was written by a different run: {field} was {old} there, "
                          f"is {new} now{more}; remove the checkpoint or resume with the same settings and files")


def check_position(payload: dict[str, Any], path, chains: int, warmup: int, samples: int, thin: int,
                   finished: bool = False) -> None:
    """Refuse a checkpoint whose chain, step or draw count cannot belong to this run (an edited file);
    `finished`: a chain at its last step is a position too (a `LoopSampler`'s)."""
    total = warmup + samples * thin

    def bad(message: str) -> ConfigError:
        return ConfigError(f"checkpoint {str(path)!r} does not fit this run: {message}; remove it")

    chain, t, draw = payload.get("chain"), payload.get("t"), payload.get("draw")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (chain, t, draw)):
        raise bad(f"chain, t and draw must be integers, got {chain!r}, {t!r}, {draw!r}")
    if not 0 <= chain <= chains:
        raise bad(f"chain {chain} is outside 0..{chains}")
    last = total if finished else total - 1
    if not 0 <= t <= last or (chain == chains and t):
        raise bad(f"step {t} is outside 0..{last} (warmup + samples * thin = {total})")
    if draw != max(0, (t - warmup) // thin):
        raise bad(f"draw {draw} is not the number of draws kept by step {t} ({max(0, (t - warmup) // thin)})")
    state = payload.get("state")
    if (state is None) != (t == 0) or (state is not None and (not isinstance(state, dict) or state.get("step") != t)):
        raise bad(f"a kernel state at step {t} must be present exactly when the step is > 0, and be at that step")
    finals = payload.get("finals")
    if not isinstance(finals, list) or len(finals) != chain:
        raise bad(f"it holds {len(finals) if isinstance(finals, list) else finals!r} finished chains, expected {chain}")
    scale, seen = payload.get("scale"), payload.get("seen_rejected")
    if not isinstance(scale, float) or not 0 < scale <= 1 or not isinstance(seen, int) or seen < 0:
        raise bad(f"step scale {scale!r} / rejection count {seen!r} out of range")


def check_sampler_state(saved: Any, n: int, name: str) -> None:
    """Refuse a batch sampler's saved state with permutations that are not of row indices in [0, n)."""
    if isinstance(saved, dict) and "samplers" in saved:  # a ShardedSampler: one state per owned shard
        parts = saved["samplers"]
        if not isinstance(parts, list) or not isinstance(saved.get("generators"), list):
            raise ConfigError(f"checkpoint {name} is not a sharded sampler state; remove the checkpoint")
        for part in parts:
            check_sampler_state(part, n, name)
        return
    perm, pos = (saved.get("perm"), saved.get("pos")) if isinstance(saved, dict) else (None, None)
    ok = (torch.is_tensor(perm) and perm.dtype == torch.long and perm.dim() == 1 and isinstance(pos, int)
          and 0 <= pos <= perm.numel() and (perm.numel() == 0 or (int(perm.min()) >= 0 and int(perm.max()) < n)))
    if not ok:
        raise ConfigError(f"checkpoint {name} is not a batch order over {n} rows; the checkpoint does not fit "
                          "this run, remove it")


def state_to_payload(state) -> dict[str, Any]:
    """A kernel state as plain tensors and optimizer state dicts."""
    def aux(d):
        return {k: (("optimizer", v.state_dict()) if isinstance(v, torch.optim.Optimizer) else v.detach().cpu())
                for k, v in d.items()}
    return {"theta": state.theta.cpu(), "table": None if state.table is None else state.table.cpu(),
            "theta_aux": aux(state.theta_aux), "table_aux": aux(state.table_aux), "w_sum": state.w_sum.cpu(),
            "step": state.step, "rejected": state.rejected.cpu(), "run": state.run.cpu(),
            "max_run": state.max_run.cpu()}


def _fits(name: str, target: torch.Tensor, saved: Any) -> torch.Tensor:
    """`saved` when it is a tensor of `target`'s shape and dtype; ConfigError naming the field otherwise."""
    if not torch.is_tensor(saved) or saved.shape != target.shape or saved.dtype != target.dtype:
        got = f"{tuple(saved.shape)} {saved.dtype}" if torch.is_tensor(saved) else type(saved).__name__
        raise ConfigError(f"checkpoint state {name} is {got}, this run needs {tuple(target.shape)} {target.dtype}; "
                          "the checkpoint does not fit this run, remove it")
    return saved


def restore_state(state, payload: dict[str, Any], device: torch.device) -> None:
    """Copy a saved kernel state into a freshly initialised one (same kernel, same shapes, else ConfigError)."""
    if not isinstance(payload, dict):
        raise ConfigError("checkpoint state is not a table; remove the checkpoint")
    state.theta.copy_(_fits("theta", state.theta, payload.get("theta")).to(device))
    if state.table is not None:
        state.table.copy_(_fits("table", state.table, payload.get("table")).to(device))
    for where, target, saved in (("theta_aux", state.theta_aux, payload.get("theta_aux")),
                                 ("table_aux", state.table_aux, payload.get("table_aux"))):
        if not isinstance(saved, dict) or set(saved) != set(target):
            have = sorted(saved) if isinstance(saved, dict) else saved
            raise ConfigError(f"checkpoint state {where} has entries {have!r}, this kernel keeps {sorted(target)}; "
                              "remove the checkpoint")
        for k, v in saved.items():
            if isinstance(v, tuple) and len(v) == 2 and v[0] == "optimizer":
                try:
                    target[k].load_state_dict(v[1])
                except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                    raise ConfigError(f"checkpoint state {where}.{k} does not fit this kernel: {exc}") from exc
            else:
                target[k].copy_(_fits(f"{where}.{k}", target[k], v).to(device))
    state.w_sum = _fits("w_sum", state.w_sum, payload.get("w_sum")).to(device)
    if not isinstance(payload.get("step"), int) or payload["step"] < 0:
        raise ConfigError(f"checkpoint state step must be an integer >= 0, got {payload.get('step')!r}")
    state.step = payload["step"]
    for k in ("rejected", "run", "max_run"):
        getattr(state, k).copy_(_fits(k, getattr(state, k), payload.get(k)).to(device))
