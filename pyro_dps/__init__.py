"""pyro-dps: Bayesian data point selection (Xu et al., NeurIPS 2024) with Pyro models and SG-MCMC.

The front door: everything a user needs to run BADS on their own data and read the result,

    from pyro_dps import Problem, SamplerConfig, fit, load_model, to_arviz, check_convergence

Names load on first use (PEP 562), so `import pyro_dps` and `pyro-dps --version` do not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute); the module's own name where no attribute is given
_EXPORTS = {
    "Problem": ("context", "Problem"),
    "SamplerConfig": ("driver", "SamplerConfig"),
    "Posterior": ("posterior", "Posterior"),
    "fit": ("posterior", "fit"),
    "LoopSampler": ("driver.loop", "LoopSampler"),
    "load_model": ("model_loader", "load_model"),
    "digits_splits": ("data", "digits_splits"),
    "mlp": ("networks", "mlp"),
    "models": ("models", None),
    "run_scenario": ("scenario", "run_scenario"),
    "to_arviz": ("arviz_data", "to_arviz"),
    "weight_draws": ("arviz_data", "weight_draws"),
    "diagnose": ("diagnostics", "diagnose"),
    "check_convergence": ("diagnostics", "summary"),
    "WeightSelection": ("selection", "WeightSelection"),
    "select": ("selection", "select_by_probability"),
    "estimate_useful_fraction": ("useful_fraction", "estimate_useful_fraction"),
    "write_report": ("report.write", "write_report"),
    "run_baseline": ("baselines", "run_baseline"),
    "BASELINES": ("baselines", "BASELINES"),
    "DPSError": ("errors", "DPSError"),
    "ConfigError": ("errors", "ConfigError"),
    "DataError": ("errors", "DataError"),
    "ModelError": ("errors", "ModelError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import the module behind a front-door name on first use and cache the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyro_dps' has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
