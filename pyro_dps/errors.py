"""Exceptions of the library: every bad input raises one of these, with the field and value named."""


class DPSError(ValueError):
    """Base class: a problem with the user's input that the library detected and explained."""


class DataError(DPSError):
    """Data that cannot be used: wrong shapes, non-finite values, labels out of range, unreadable files."""


class ConfigError(DPSError):
    """A configuration or hyper-parameter that is unknown, of the wrong type or impossible."""


class UnresolvedAuto(ConfigError):
    """A model was called with beta = "auto", which `pyro_dps.fit` resolves (from the data) before sampling."""


class ModelError(DPSError):
    """A model file or model function that cannot be loaded or does not follow the model contract."""


class DivergenceError(DPSError, RuntimeError):
    """The sampler produced non-finite values too many times in a row."""


def require(condition: bool, error: type[DPSError], message: str) -> None:
    """Raise `error(message)` unless `condition` holds; keeps validation one line per rule."""
    if not condition:
        raise error(message)


class MetaCoverageWarning(UserWarning):
    """The curated set has no example of some classes: their training examples are weighed by D_t alone."""
