"""Atomic checkpoints of a run: kernel state, RNG states, weight table, chain position and draws so far.

Written to a temporary file and renamed, so a kill at any moment leaves either the previous or the new
checkpoint, never a torn one. Resuming restores everything a step depends on, so on CPU a resumed
run gives the same draws, bit for bit, as an uninterrupted one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError

VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """torch.save to `path.tmp`, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save({"version": VERSION, **payload}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, config: dict) -> dict[str, Any]:
    """A checkpoint written for the same sampler configuration (anything else is refused)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"checkpoint {str(path)!r} cannot be read: {exc}") from exc
    if payload.get("version") != VERSION:
        raise ConfigError(f"checkpoint {str(path)!r} has version {payload.get('version')!r}, expected {VERSION}")
    # settings that do not change the chain (compile: same draws to float rounding) may differ on resume
    free = ("progress", "log_every", "device", "compile")
    saved = {k: v for k, v in payload["config"].items() if k not in free}
    now = {k: v for k, v in config.items() if k not in free}
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ConfigError(f"checkpoint {str(path)!r} was written with different sampler settings {diff}; "
                          "remove it or run with the same configuration")
    return payload


def state_to_payload(state) -> dict[str, Any]:
    """A kernel state as plain tensors and optimizer state dicts."""
    def aux(d):
        return {k: (("optimizer", v.state_dict()) if isinstance(v, torch.optim.Optimizer) else v.detach().cpu())
                for k, v in d.items()}
    return {"theta": state.theta.cpu(), "table": None if state.table is None else state.table.cpu(),
            "theta_aux": aux(state.theta_aux), "table_aux": aux(state.table_aux), "w_sum": state.w_sum.cpu(),
            "step": state.step, "rejected": state.rejected.cpu(), "run": state.run.cpu(),
            "max_run": state.max_run.cpu()}


def restore_state(state, payload: dict[str, Any], device: torch.device) -> None:
    """Copy a saved kernel state into a freshly initialised one (same kernel, same shapes)."""
    state.theta.copy_(payload["theta"].to(device))
    if state.table is not None:
        state.table.copy_(payload["table"].to(device))
    for target, saved in ((state.theta_aux, payload["theta_aux"]), (state.table_aux, payload["table_aux"])):
        for k, v in saved.items():
            if isinstance(v, tuple) and v[0] == "optimizer":
                target[k].load_state_dict(v[1])
            else:
                target[k].copy_(v.to(device))
    state.w_sum = payload["w_sum"].to(device)
    state.step = payload["step"]
    for k in ("rejected", "run", "max_run"):
        getattr(state, k).copy_(payload[k].to(device))
