"""Third-party messages that tell a pyro-dps user nothing, silenced where pyro-dps calls the library.

Never a global filter: only the calls wrapped here lose these messages; the same library used directly by
the user's own code says what it always says.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

#: ArviZ 0.x's import-time (once a day) FutureWarning about its coming 1.x refactor: pyro-dps supports both lines.
ARVIZ_REFACTOR = r"\s*ArviZ is undergoing a major refactor"


@contextlib.contextmanager
def arviz_import() -> Iterator[None]:
    """Around `import arviz`: without the refactor notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARVIZ_REFACTOR, category=FutureWarning)
        yield


class _NoShapeWarning(logging.Filter):
    """Drops ArviZ's "Shape validation failed" (R-hat/ESS of a one-chain or short run): pyro-dps's diagnostics
    report what a run of that shape can and cannot say themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Shape validation failed")


def _arviz_loggers() -> list[logging.Logger]:
    # ArviZ 0.x logs through `arviz._log`, a Logger it made itself (not logging.getLogger("arviz"))
    found = [getattr(sys.modules.get("arviz"), "_log", None), logging.getLogger("arviz"),
             logging.getLogger("arviz_stats")]
    unique = {id(lg): lg for lg in found if isinstance(lg, logging.Logger)}
    return list(unique.values())


@contextlib.contextmanager
def arviz_stats() -> Iterator[None]:
    """Around ArviZ's diagnostics calls (rhat, ess, mcse, summary): without the shape warning."""
    loggers, quiet = _arviz_loggers(), _NoShapeWarning()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


@contextlib.contextmanager
def arviz_plotting() -> Iterator[None]:
    """Around ArviZ's plotting calls for the report: without the shape warning, and without the warnings raised
    from ArviZ's own modules (ArviZ 0.x's matplotlib backend calls matplotlib APIs that matplotlib 3.11
    deprecates: nothing a pyro-dps user can change)."""
    with arviz_stats(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"arviz(_plots|_stats|_base)?(\.|$)")
        yield
