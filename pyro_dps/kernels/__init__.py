"""Minibatch SG-MCMC kernels: each an `(init, step)` core and a `pyro.infer.mcmc.MCMCKernel`."""
from .base import MinibatchSampler, SamplingAlgorithm, SGMCMCKernel, SGMCMCState, UpdateRule
from .blocked import blocked_langevin
from .paper import PaperSampler, paper
from .psgld import PSGLD, psgld
from .sghmc import SGHMC, sghmc
from .sgld import SGLD, sgld

ALGORITHMS = {"sgld": sgld, "psgld": psgld, "sghmc": sghmc, "paper": paper}
KERNELS = {"sgld": SGLD, "psgld": PSGLD, "sghmc": SGHMC, "paper": PaperSampler}

__all__ = ["ALGORITHMS", "KERNELS", "MinibatchSampler", "PSGLD", "PaperSampler", "SGHMC", "SGLD",
           "SGMCMCKernel", "SGMCMCState", "SamplingAlgorithm", "UpdateRule", "blocked_langevin", "paper",
           "psgld", "sghmc", "sgld"]
