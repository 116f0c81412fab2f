"""Baselines of the paper, each a small module over the shared loop in `pyro_dps.training`."""
from .mixing import mixing

BASELINES = {"mixing": mixing}

__all__ = ["BASELINES", "mixing"]
