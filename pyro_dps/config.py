"""Scenario configuration (TOML): parsing, defaults and strict validation with the field path in every error."""
from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from .bounds import MAX_DEPTH, MAX_STEPS, MAX_STEP_SIZE, MAX_WIDTH, SEED_MAX, check_int, check_real
from .driver import SamplerConfig
from .errors import ConfigError
from .model_hyper import check_model_hyper

MAX_CONFIG_BYTES = 1 << 20  # a scenario file is a few hundred bytes; anything near this is not one
DATA_BOUNDS = {"seed": (0, SEED_MAX), "meta_per_class": (1, 10 ** 6), "test_per_class": (0, 10 ** 6),
               "n_train": (1, 10 ** 9), "n_test": (1, 10 ** 9), "in_domain_train": (0, 10 ** 9),
               "max_length": (1, 10 ** 6), "probes_per_class": (0, 10 ** 6), "n_major": (0, 10 ** 9),
               "n_minor": (0, 10 ** 9)}

DATA_KEYS = {"source": str, "path": str, "seed": int, "noise": (str, type(None)), "noise_rate": float,
             "meta_per_class": int, "test_per_class": int, "imbalance_factor": (float, type(None)),
             "n_train": int, "n_test": int,
             # data.source = "reviews" (pyro_dps.data.text.reviews_splits)
             "target_domain": str, "in_domain_train": int, "cache": str, "max_length": int,
             "features": str,
             # the binary-imbalance protocol: two classes by index or name (docs/data_sources.md)
             "protocol": str, "minority": (int, str), "majority": (int, str), "n_major": int, "n_minor": int,
             # files a user has (pyro_dps.data.disk_splits): image folders, .npy, CSV/Parquet, saved HF data sets
             "train": str, "meta": str, "test": str, "train_labels": str, "meta_labels": str, "test_labels": str,
             "image_mode": str, "label_column": str, "feature_columns": list,
             # probe examples (pyro_dps.probes): meta examples per class appended to D_t as a self-check
             "probes_per_class": int}
NETWORK_KEYS = {"kind": str, "hidden": list, "depth": int, "width": int}
BASELINE_KEYS = {"steps": (int, type(None)), "lr": float, "optimizer": str, "batch_size": int, "weight_decay": float}
SAMPLER_KEYS = {f.name for f in fields(SamplerConfig)}

DEMO = {
    "name": "digits-denoising",
    "data": {"source": "digits", "seed": 0, "noise": "symmetric", "noise_rate": 0.5, "meta_per_class": 10,
             "test_per_class": 30, "probes_per_class": 2},
    "network": {"kind": "mlp", "hidden": [128]},
    "model": {"file": "bads", "hyper": {}},  # the model's own defaults: beta = "auto", rho_m from the sizes
    "sampler": {"chains": 4},  # the rest: SamplerConfig's defaults (docs/defaults.md)
    "baselines": {"mixing": {"lr": 1e-3, "optimizer": "adam"}},
}


def _check_types(section: dict, schema: dict, where: str) -> None:
    for key, value in section.items():
        if key not in schema:
            raise ConfigError(f"unknown configuration key {where}.{key} (known: {sorted(schema)})")
        expected = schema[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(expected, tuple) and float in expected and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{where}.{key} must be {_name(expected)}, got {value!r}")
        if not isinstance(value, expected):
            raise ConfigError(f"{where}.{key} must be {_name(expected)}, got {value!r}")


def _name(expected) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def validate_config(config: dict) -> dict:
    """A complete, checked scenario: defaults from the demo where a section leaves a field out."""
    if not isinstance(config, dict):
        raise ConfigError(f"configuration must be a table, got {type(config).__name__}")
    known = {"name", "data", "network", "model", "sampler", "baselines"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {unknown} (known: {sorted(known)})")
    out = copy.deepcopy(DEMO)
    if "name" in config:
        if not isinstance(config["name"], str):
            raise ConfigError(f"name must be a string, got {config['name']!r}")
        out["name"] = config["name"]
    for section in ("data", "network", "model", "sampler", "baselines"):
        if section in config and not isinstance(config[section], dict):
            raise ConfigError(f"[{section}] must be a table, got {config[section]!r}")
    data = config.get("data", {})
    _check_types(data, DATA_KEYS, "data")
    _check_source(data)
    inherited = {k: v for k, v in out["data"].items() if k != "probes_per_class"}  # probes: off unless asked for
    out["data"] = {**(inherited if data.get("source", "digits") == "digits" else {}), **data}
    network = config.get("network", {})
    _check_types(network, NETWORK_KEYS, "network")
    out["network"] = {**out["network"], **network} if network.get("kind", "mlp") == "mlp" else dict(network)
    model = config.get("model", {})
    _check_types(model, {"file": str, "hyper": dict}, "model")
    out["model"] = {"file": model.get("file", out["model"]["file"]),
                    "hyper": {**out["model"]["hyper"], **model.get("hyper", {})}}
    sampler = config.get("sampler", {})
    for key in sampler:
        if key not in SAMPLER_KEYS:
            raise ConfigError(f"unknown configuration key sampler.{key} (known: {sorted(SAMPLER_KEYS)})")
    out["sampler"] = {**out["sampler"], **sampler}
    baselines = config.get("baselines", out["baselines"])
    for name, settings in baselines.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"baselines.{name} must be a table, got {settings!r}")
        from .baselines import BASELINES, EXTRA_SETTINGS
        if name not in BASELINES:
            raise ConfigError(f"baselines.{name}: unknown baseline (known: {sorted(BASELINES)})")
        _check_types(settings, {**BASELINE_KEYS, **EXTRA_SETTINGS.get(name, {})}, f"baselines.{name}")
    out["baselines"] = baselines
    _check_values(out)
    _check_data(out["data"])
    check_network(out["network"])
    _check_sampler(out["sampler"])
    for name, settings in baselines.items():
        check_baseline(name, settings)
    return out


# data.source -> its protocols, the default first (None: the source has one protocol of its own, no key)
PROTOCOLS = {"digits": (None,), "reviews": (None,), "mnist_4v9": ("binary_imbalance",),
             **{source: ("noisy", "binary_imbalance")
                for source in ("npz", "cifar10", "image_folder", "npy", "table", "hf_dataset")}}
PATH_SOURCES = ("mnist_4v9", "npz", "cifar10", "reviews")  # the sources read from data.path


def source_protocol(source: str, protocol: str | None) -> str | None:
    """The protocol a [data] table runs: data.protocol, or its source's default; ConfigError when the source
    is unknown or does not have that protocol."""
    if source not in PROTOCOLS:
        raise ConfigError(f"data.source must be one of {sorted(PROTOCOLS)}, got {source!r}")
    protocols = PROTOCOLS[source]
    if protocol is None:
        return protocols[0]
    if protocol not in protocols:
        has = "it has no data.protocol" if protocols == (None,) else f"it has {list(protocols)}"
        raise ConfigError(f"data.protocol = {protocol!r} is not a protocol of data.source = {source!r} ({has})")
    return protocol


def _check_source(data: dict) -> None:
    """[data]'s source, protocol and the keys they need: data.path, or a file source's own keys (checked by
    `disk_splits.check_file_keys`); the classes of the binary-imbalance protocol where it has no default."""
    from .data.disk_splits import SOURCE_KEYS, check_file_keys

    source = data.get("source", "digits")
    protocol = source_protocol(source, data.get("protocol"))
    if source in SOURCE_KEYS:
        rest = {k: v for k, v in data.items() if k not in ("source", "protocol", "probes_per_class")}
        check_file_keys(source, protocol, rest)
        return
    if source in PATH_SOURCES and "path" not in data:
        raise ConfigError(f"data.path is required for data.source = {source!r}")
    if protocol == "binary_imbalance" and source != "mnist_4v9":
        missing = [key for key in ("minority", "majority") if key not in data]
        if missing:
            raise ConfigError(f"data.{missing[0]} is required for data.protocol = 'binary_imbalance' (a class index "
                              f"or name of data.source = {source!r})")


def _check_data(data: dict) -> None:
    """[data] counts and seeds in range (fractions and files are checked by the builders, before reading)."""
    for key, (low, high) in DATA_BOUNDS.items():
        if data.get(key) is not None:
            check_int(data[key], f"data.{key}", low, high)
    from .data.disk_splits import PATH_KEYS

    for key in ("path", "cache", *PATH_KEYS):
        if key in data and not data[key].strip():
            raise ConfigError(f"data.{key} must be a non-empty path, got {data[key]!r}")
    probes, meta = data.get("probes_per_class"), data.get("meta_per_class")
    if probes and isinstance(meta, int) and probes >= meta:
        raise ConfigError(f"data.probes_per_class = {probes} must be below data.meta_per_class = {meta}: every "
                          "class keeps at least one meta example")
    if "noise_rate" in data:  # every source's builder takes a fraction; checked here so that `validate` says so too
        check_real(data["noise_rate"], "data.noise_rate", 0.0, 1.0)
    factor = data.get("imbalance_factor")
    if factor is not None:
        check_real(factor, "data.imbalance_factor", 1.0, 1e6)


def check_network(network: dict, where: str = "network") -> None:
    """A network table that `scenario.build_network` can build in bounded memory; ConfigError otherwise."""
    from .networks import NETWORKS

    kind = network.get("kind", "mlp")
    if kind not in NETWORKS:
        raise ConfigError(f"{where}.kind must be one of {sorted(NETWORKS)}, got {kind!r}")
    takes = {"mlp": {"kind", "hidden"}, "lenet5": {"kind"}, "resnet": {"kind", "depth", "width"}}[kind]
    unused = sorted(set(network) - takes)
    if unused:
        raise ConfigError(f"{where}.{unused[0]} is not used by {where}.kind = {kind!r}")
    if kind == "mlp":
        hidden = network.get("hidden", [128])
        if not isinstance(hidden, list) or len(hidden) > MAX_DEPTH:
            raise ConfigError(f"{where}.hidden must be a list of at most {MAX_DEPTH} layer widths, got {hidden!r}")
        for i, width in enumerate(hidden):
            check_int(width, f"{where}.hidden[{i}]", 1, MAX_WIDTH)
    if kind == "resnet":
        depth = check_int(network.get("depth", 8), f"{where}.depth", 8, 6 * 100 + 2)
        if (depth - 2) % 6:
            raise ConfigError(f"{where}.depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")
        width = check_int(network.get("width", 16), f"{where}.width", 4, 4096)
        if width % 4:
            raise ConfigError(f"{where}.width must be a multiple of 4 (GroupNorm of 4 groups), got {width}")


def _check_sampler(sampler: dict) -> None:
    """The [sampler] table through SamplerConfig's own checks, except those that need the data."""
    try:
        SamplerConfig(**sampler).validate(None)
    except ConfigError as exc:
        raise ConfigError(f"sampler.{exc}") from None


BASELINE_BOUNDS = {"steps": (1, MAX_STEPS), "batch_size": (1, 10 ** 7), "meta_batch_size": (1, 10 ** 7),
                   "hidden": (1, MAX_WIDTH), "score_steps": (0, MAX_STEPS), "finetune_steps": (0, MAX_STEPS),
                   "folds": (2, 100), "fold_steps": (1, MAX_STEPS)}
BASELINE_RATES = {"lr": (0.0, MAX_STEP_SIZE), "virtual_lr": (0.0, MAX_STEP_SIZE), "meta_lr": (0.0, MAX_STEP_SIZE),
                  "finetune_lr": (0.0, MAX_STEP_SIZE)}


def check_baseline(name: str, settings: dict) -> None:
    """A baseline's settings in range, so a bad one fails before the BADS run, not after it."""
    from .baselines import cleanlab_available
    from .training import OPTIMIZERS

    where = f"baselines.{name}"
    for key, value in settings.items():
        if key in BASELINE_BOUNDS and value is not None:
            check_int(value, f"{where}.{key}", *BASELINE_BOUNDS[key])
        elif key in BASELINE_RATES:
            check_real(value, f"{where}.{key}", *BASELINE_RATES[key], low_open=True)
    if "weight_decay" in settings:
        check_real(settings["weight_decay"], f"{where}.weight_decay", 0.0, 1e3)
    if "beta" in settings:
        check_real(settings["beta"], f"{where}.beta", 0.0, 1.0, low_open=True)
    if settings.get("optimizer", "adam") not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer must be one of {sorted(OPTIMIZERS)}, got {settings['optimizer']!r}")
    if name == "cleanlab":
        filters = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
        if settings.get("filter_by", filters[0]) not in filters:
            raise ConfigError(f"{where}.filter_by must be one of {list(filters)}, got {settings['filter_by']!r}")
        if not cleanlab_available():
            raise ConfigError(f"{where}: the cleanlab baseline needs the optional extra: "
                              "pip install 'pyro-dps[cleanlab]'")


def _check_values(config: dict) -> None:
    """model.hyper: finite numbers (a rule of the file format), then the model's own rules (`model_hyper`)."""
    hyper = config["model"]["hyper"]
    for key, value in hyper.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model.hyper.{key} must be finite, got {value!r}")
    check_model_hyper(config["model"]["file"], hyper)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`SECTION.KEY=VALUE` (the command line's `--set`) as (the key's path, the value): the value is read as a
    TOML value (`2`, `0.3`, `"auto"`, `[64, 32]`, `{kind = "cyclical"}`, `true`), and as the plain string
    when it is not one (`--set sampler.kernel=psgld`)."""
    key, sep, text = item.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path) or (len(path) == 1 and path[0] != "name"):
        raise ConfigError(f"--set expects SECTION.KEY=VALUE (e.g. sampler.chains=2), got {item!r}")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return path, value


def apply_overrides(config: dict, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A copy of the raw (unvalidated) configuration with each `--set SECTION.KEY=VALUE` merged in, later ones
    winning; `validate_config` then checks the result exactly as it checks a file."""
    config = copy.deepcopy(config)
    for item in overrides:
        path, value = parse_override(item)
        table = config
        for depth, part in enumerate(path[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                where = ".".join(path[:depth + 1])
                raise ConfigError(f"--set {'.'.join(path)}: {where} is not a table, got {table!r}")
        table[path[-1]] = value
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read and validate a TOML scenario file, with `--set SECTION.KEY=VALUE` overrides merged in first.

    The file must have a [data] table (or an override must give one): a scenario names its data; the
    demo's settings fill in only what a given table leaves out."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"configuration file {str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes: "
                              "not a scenario file")
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"configuration file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text (byte {exc.start}); "
                          "TOML files must be UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from exc
    raw = apply_overrides(raw, overrides)
    if "data" not in raw:
        raise ConfigError(f"configuration file {str(path)!r} has no [data] table: a scenario needs at least "
                          "[data] with source = \"digits\", \"mnist_4v9\", \"npz\", \"cifar10\", \"reviews\" (and "
                          "its path) or one of the files you have: \"image_folder\", \"npy\", \"table\", "
                          "\"hf_dataset\" (docs/data_sources.md); `pyro-dps demo` runs the built-in example")
    return validate_config(raw)


def resolved_config(config: dict) -> dict:
    """A validated configuration with every sampler setting filled in (SamplerConfig's defaults): what
    `pyro-dps validate` prints. The run length stays as configured ("auto" is resolved from the data)."""
    from .outputs import config_dict

    return {**config, "sampler": config_dict(SamplerConfig(**config["sampler"]))}


def sampler_config(config: dict, **overrides: Any) -> SamplerConfig:
    """The [sampler] table as a SamplerConfig, with command-line overrides applied."""
    settings = {**config["sampler"], **{k: v for k, v in overrides.items() if v is not None}}
    return SamplerConfig(**settings)
