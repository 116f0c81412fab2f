"""Scenario configuration (TOML): parsing, defaults and strict validation with the field path in every error."""
from __future__ import annotations

import copy
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from .driver import SamplerConfig
from .errors import ConfigError

DATA_KEYS = {"source": str, "path": str, "seed": int, "noise": (str, type(None)), "noise_rate": float,
             "meta_per_class": int, "test_per_class": int, "imbalance_factor": (float, type(None)),
             "n_train": int, "n_test": int,
             # data.source = "reviews" (pyro_dps.data.text.reviews_splits)
             "target_domain": str, "in_domain_train": int, "cache": str, "max_length": int,
             "features": str}
NETWORK_KEYS = {"kind": str, "hidden": list, "depth": int, "width": int}
BASELINE_KEYS = {"steps": (int, type(None)), "lr": float, "optimizer": str, "batch_size": int, "weight_decay": float}
SAMPLER_KEYS = {f.name for f in fields(SamplerConfig)}

DEMO = {
    "name": "digits-denoising",
    "data": {"source": "digits", "seed": 0, "noise": "symmetric", "noise_rate": 0.5, "meta_per_class": 10,
             "test_per_class": 30},
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
    if data.get("source", "digits") != "digits" and "path" not in data:
        raise ConfigError(f"data.path is required for data.source = {data['source']!r}")
    out["data"] = {**(out["data"] if data.get("source", "digits") == "digits" else {}), **data}
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
    return out


def _check_values(config: dict) -> None:
    hyper = config["model"]["hyper"]
    beta = hyper.get("beta")
    if beta is not None and beta != "auto" and (not isinstance(beta, (int, float)) or isinstance(beta, bool)
                                                 or not 0 < beta <= 1):
        raise ConfigError(f"model.hyper.beta must be a number in (0, 1] or 'auto', got {beta!r}")
    sigma = hyper.get("sigma")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ConfigError(f"model.hyper.sigma must be > 0, got {sigma!r}")
    for key in ("rho_t", "rho_m", "prior_scale"):
        value = hyper.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise ConfigError(f"model.hyper.{key} must be a number > 0, got {value!r}")
    temperature = config["sampler"].get("temperature", 0.0)  # absent: SamplerConfig's default
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise ConfigError(f"sampler.temperature must be a number >= 0, got {temperature!r}")


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML scenario file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"configuration file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from exc
    return validate_config(raw)


def sampler_config(config: dict, **overrides: Any) -> SamplerConfig:
    """The [sampler] table as a SamplerConfig, with command-line overrides applied."""
    settings = {**config["sampler"], **{k: v for k, v in overrides.items() if v is not None}}
    return SamplerConfig(**settings)
