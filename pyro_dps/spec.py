"""A scenario's specification turned into objects: its [data] table into splits (with probe examples) and its
[network] table into a fresh network sized for the data. The run (`scenario`), `pyro-dps score` (`scoring`)
and the report's suggested labels build from the same tables here."""
from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import replace

import numpy as np
import torch

from . import data as datasets
from .config import source_protocol
from .data import DataSplits, builders
from .data.disk_splits import META_GAP_GROUP, SOURCE_KEYS, file_splits
from .errors import ConfigError, DataError, MetaCoverageWarning
from .networks import NETWORKS
from .probes import add_probes


def _call_builder(builder, spec: dict, source: str, protocol: str | None = None) -> DataSplits:
    """A data builder called with the [data] keys it takes; a key it does not take is a ConfigError, and an
    error the builder raises about one of its arguments names the key (data.<argument>)."""
    takes = set(inspect.signature(builder).parameters)
    unused = sorted(set(spec) - takes)
    if unused:
        used_by = f"data.source = {source!r}" + ("" if protocol is None else f" with data.protocol = {protocol!r}")
        raise ConfigError(f"data.{unused[0]} is not used by {used_by} (it takes {sorted(takes)})")
    try:
        return builder(**spec)
    except (ConfigError, DataError) as exc:  # a builder names its argument; the configuration's key is data.<it>
        first = re.match(r"\w+", str(exc))
        if first is None or first.group() not in takes:
            raise
        raise type(exc)(f"data.{exc}") from exc


def build_data(spec: dict) -> DataSplits:
    """The scenario's train/meta/test splits from its [data] table; with `probes_per_class`, probe examples
    moved from D_m to D_t (`pyro_dps.probes.add_probes`; the rows are in `groups["probe"]`). Training examples
    of a class the meta set lacks are kept and marked in `groups["class_without_meta"]`."""
    spec = dict(spec)
    per_class = spec.pop("probes_per_class", 0)
    data = _source_data(spec)
    if per_class:
        try:
            with warnings.catch_warnings():  # a meta set lacking classes was warned about as the source built it
                warnings.simplefilter("ignore", MetaCoverageWarning)
                data = add_probes(data, per_class, spec.get("seed", 0))[0]
        except ConfigError as exc:
            raise ConfigError(f"data.{exc}" if str(exc).startswith("probes_per_class") else
                              f"data.probes_per_class: {exc}") from None
    return _mark_meta_gaps(data)


def _mark_meta_gaps(data: DataSplits) -> DataSplits:
    """The training examples whose label no meta example has, as group META_GAP_GROUP (1; others 0), so that
    the run's metrics and report count them: a meta set may lack classes (MetaCoverageWarning), nothing is
    dropped, and these examples' weights rest on D_t alone."""
    if META_GAP_GROUP in data.groups:
        return data
    flag = data.without_meta_mask()
    if not bool(flag.any()):
        return data
    return replace(data, groups={**data.groups, META_GAP_GROUP: flag.to(torch.int64)})


# (source, protocol) -> its builder (config.PROTOCOLS: a source's protocols, its default first); the file
# sources (image_folder, npy, table, hf_dataset) are built by `pyro_dps.data.disk_splits.file_splits`
BUILDERS = {
    ("digits", None): builders.digits_splits,
    ("mnist_4v9", "binary_imbalance"): builders.mnist_4v9_splits,
    ("cifar10", "noisy"): builders.cifar10_noisy_splits,
    ("cifar10", "binary_imbalance"): builders.cifar10_binary_splits,
    ("npz", "noisy"): builders.mnist_like_noisy_splits,
    ("npz", "binary_imbalance"): builders.mnist_like_binary_splits,
}


def _source_data(spec: dict) -> DataSplits:
    """The splits of the [data] table's source, built by its builder under its protocol."""
    if spec.get("noise") == "none":  # TOML has no null
        spec["noise"] = None
    source = spec.pop("source", "digits")
    protocol = source_protocol(source, spec.pop("protocol", None))
    if source in SOURCE_KEYS:
        return file_splits(source, protocol, **spec)
    if source in ("cifar10", "npz"):
        spec.pop("test_per_class", None)
    if source == "reviews":  # sentence embeddings of multi-domain reviews (needs the `text` extra)
        return _call_builder(datasets.reviews_splits, spec, source)
    return _call_builder(BUILDERS[source, protocol], spec, source, protocol)


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
