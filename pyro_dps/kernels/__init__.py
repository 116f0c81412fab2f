"""Minibatch SG-MCMC kernels: each an `(init, step)` core and a `pyro.infer.mcmc.MCMCKernel`."""
from ..data.batches import MinibatchSampler
from .blocked import blocked_langevin
from .paper import PaperSampler, paper
from .psgld import PSGLD, psgld
from .pyro_adapter import SGMCMCKernel
from .rule import UpdateRule
from .sghmc import SGHMC, sghmc
from .sgld import SGLD, sgld
from .state import SamplingAlgorithm, SGMCMCState

ALGORITHMS = {"sgld": sgld, "psgld": psgld, "sghmc": sghmc, "paper": paper}

__all__ = ["ALGORITHMS", "MinibatchSampler", "PSGLD", "PaperSampler", "SGHMC", "SGLD",
           "SGMCMCKernel", "SGMCMCState", "SamplingAlgorithm", "UpdateRule", "blocked_langevin", "paper",
           "psgld", "sghmc", "sgld"]
