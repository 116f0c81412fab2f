"""A model's own hyper-parameter checks, run before any data is read (`pyro-dps validate`, a run's start): the
rules live in the model file (e.g. `models/bads.py`'s `check_hyper`), not again in the configuration code."""
from __future__ import annotations

import inspect

import torch
from pyro import poutine

from .errors import ConfigError, UnresolvedAuto
from .model_loader import load_model


class _DataNeeded(Exception):
    """A model reached for its data: the hyper-parameter checks it makes first are behind it."""


class _NoData:
    """A stand-in for the model's context that stops the model at the first use of its data."""

    def __getattr__(self, name: str):
        raise _DataNeeded(name)


def check_model_hyper(model_spec, hyper: dict) -> None:
    """Call the model with `hyper` on a context without data: a ConfigError it raises is reported as
    `model.hyper.<message>`. "auto" (resolved by fit), a name the model does not take and whatever needs
    the data are left to the run's own model check, which sees the data (`scenario.check_model`)."""
    model = load_model(model_spec)
    try:
        inspect.signature(model).bind(None, **hyper)
    except TypeError:
        return
    with torch.random.fork_rng(devices=[]), poutine.block():
        try:
            model(_NoData(), **hyper)
        except (_DataNeeded, UnresolvedAuto):
            return
        except ConfigError as exc:
            raise ConfigError(f"model.hyper.{exc}") from exc
        except Exception:  # noqa: BLE001 - a failure that needs the data is the run's check to report
            return
