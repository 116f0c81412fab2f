"""Find a model function: a built-in name from `models/` or a user's file, `path/to/file.py[:function]`."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from .errors import ModelError


def load_model(spec: str | Callable = "bads") -> Callable:
    """`"bads"` -> `pyro_dps.models.bads.model`; `"my_prior.py:model"` -> that function of that file."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"model must be a name or 'file.py[:function]', got {spec!r}")
    path, _, function = spec.partition(":") if ".py" in spec else (spec, "", "")
    function = function or "model"
    if not path.endswith(".py"):
        try:
            module = importlib.import_module(f"pyro_dps.models.{path}")
        except ModuleNotFoundError as exc:
            raise ModelError(f"model {spec!r}: no built-in model of that name and not a .py file") from exc
    else:
        file = Path(path)
        if not file.is_file():
            raise ModelError(f"model file {str(file)!r} does not exist")
        name = f"pyro_dps_user_model_{abs(hash(str(file.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelError(f"model file {str(file)!r} failed to import: {type(exc).__name__}: {exc}") from exc
        sys.modules[name] = module
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ModelError(f"model {spec!r}: no function {function!r} in {getattr(module, '__file__', module)}")
    return fn
