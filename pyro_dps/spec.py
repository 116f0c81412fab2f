"""A scenario's specification turned into objects: its [data] table into splits (with probe examples) and its
[network] table into a fresh network sized for the data. The run (`scenario`), `pyro-dps score` (`scoring`)
and the report's suggested labels build from the same tables here."""
from __future__ import annotations

import inspect

import numpy as np
import torch

from . import data as datasets
from .data import DataSplits
from .errors import ConfigError
from .networks import NETWORKS
from .probes import add_probes


def _call_builder(builder, spec: dict, source: str) -> DataSplits:
    """A data builder called with the [data] keys it takes; a key it does not take is a ConfigError."""
    takes = set(inspect.signature(builder).parameters)
    unused = sorted(set(spec) - takes)
    if unused:
        raise ConfigError(f"data.{unused[0]} is not used by data.source = {source!r} (it takes {sorted(takes)})")
    return builder(**spec)


def build_data(spec: dict) -> DataSplits:
    """The scenario's train/meta/test splits from its [data] table; with `probes_per_class`, probe examples
    moved from D_m to D_t (`pyro_dps.probes.add_probes`; the rows are in `groups["probe"]`)."""
    spec = dict(spec)
    per_class = spec.pop("probes_per_class", 0)
    data = _source_data(spec)
    if not per_class:
        return data
    try:
        return add_probes(data, per_class, spec.get("seed", 0))[0]
    except ConfigError as exc:
        raise ConfigError(f"data.{exc}" if str(exc).startswith("probes_per_class") else
                          f"data.probes_per_class: {exc}") from None


def _source_data(spec: dict) -> DataSplits:
    """The splits of the [data] table's source, built by its builder."""
    if spec.get("noise") == "none":  # TOML has no null
        spec["noise"] = None
    source = spec.pop("source", "digits")
    if source == "digits":
        return _call_builder(datasets.digits_splits, spec, source)
    if source == "mnist_4v9":
        return _call_builder(datasets.mnist_4v9_splits, spec, source)
    if source == "cifar10":
        spec.pop("test_per_class", None)
        return _call_builder(datasets.cifar10_noisy_splits, spec, source)
    if source == "npz":
        spec.pop("test_per_class", None)
        return _call_builder(datasets.mnist_like_noisy_splits, spec, source)
    if source == "reviews":  # sentence embeddings of multi-domain reviews (needs the `text` extra)
        return _call_builder(datasets.reviews_splits, spec, source)
    raise ConfigError(f"data.source must be one of ['cifar10', 'digits', 'mnist_4v9', 'npz', 'reviews'], got {source!r}")


MAX_PARAMETERS = 2 * 10 ** 8  # 800 MB of float32 per copy of theta; the chains keep several


def build_network(spec: dict, data: DataSplits) -> torch.nn.Module:
    """A freshly initialised network for the data's input shape and classes; ConfigError when the [network]
    table is out of range, the network would exceed MAX_PARAMETERS, or it does not take the data's rows."""
    from .config import check_network

    check_network(spec)
    with torch.device("meta"):  # sized without allocating
        size = sum(p.numel() for p in _network(spec, data).parameters())
    if size > MAX_PARAMETERS:
        raise ConfigError(f"the network has {size} parameters, more than {MAX_PARAMETERS}; make network.hidden "
                          "(or depth/width) smaller")
    net = _network(spec, data)
    probe = data.x_train[:1] if data.x_train.shape[0] else torch.zeros((1, *data.x_train.shape[1:]))
    try:
        with torch.no_grad():
            net(probe)
    except RuntimeError as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ConfigError(f"network.kind = {spec.get('kind', 'mlp')!r} does not take rows of shape "
                          f"{tuple(data.x_train.shape[1:])} ({first})") from None
    return net


def _network(spec: dict, data: DataSplits) -> torch.nn.Module:
    spec = dict(spec)
    kind = spec.pop("kind", "mlp")
    if kind == "mlp":
        return NETWORKS[kind](int(np.prod(data.x_train.shape[1:])), data.num_classes, tuple(spec.get("hidden", (128,))))
    if kind == "lenet5":
        return NETWORKS[kind](data.num_classes, data.x_train.shape[1])
    return NETWORKS[kind](data.num_classes, spec.get("depth", 8), spec.get("width", 16), data.x_train.shape[1])
