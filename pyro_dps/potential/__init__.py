"""Model-to-potential plumbing: from a Pyro model to the gradients a minibatch Langevin kernel uses.

Two paths compute the same thing, on one site layout read off a probe trace of the model (`layout.py`):
- `TracePotential` (`trace.py`) runs the model under `poutine.trace` every step. It works for any model
  whose latent sites are global (theta and friends) or per-example inside the subsampled `train` plate.
- `FusedPotential` (`fused.py`, its structure check in `fused_structure.py`) evaluates the BADS
  structure directly in torch: the Gaussian prior on theta analytically, both likelihood factors from one
  forward pass (on its own copy of the network), and the weight priors from the distributions found in
  the probe trace. It costs about a plain SGD step. `make_potential` (`factory.py`) checks it against
  the trace path before using it.

Gradients (docs/method.md, random-scan blocked Langevin): theta gets the minibatch estimate of the full log
joint (plate terms scaled by N/|B|); the batch's weights get the gradient of their exact conditional
(terms unscaled). `stats.py` holds what a step reports besides them.

The names other modules use are re-exported here; modules inside this package import from each other,
never from this file.
"""
from __future__ import annotations

from .factory import POTENTIAL_KINDS, check_agreement, make_potential
from .fused import FusedPotential
from .fused_structure import EXPECTED_SITES, FusedPriors
from .layout import LOCAL_PLATE, PROBE_ROWS, GlobalSite, Gradients, SiteLayout
from .stats import log_joint_estimate, summarize_stats, weight_sum
from .trace import TracePotential

__all__ = ["EXPECTED_SITES", "LOCAL_PLATE", "POTENTIAL_KINDS", "PROBE_ROWS", "FusedPotential", "FusedPriors", "GlobalSite", "Gradients",
           "SiteLayout", "TracePotential", "check_agreement", "log_joint_estimate", "make_potential",
           "summarize_stats", "weight_sum"]
