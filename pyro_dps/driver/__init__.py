"""The run driver: `run_chains` runs the chains of a kernel on a problem (`SamplerConfig` says how) and keeps
their draws (a `RunResult`; `pyro_dps.fit` returns it as a `Posterior`): one chain at a time (`chain_runner`),
each draw recorded (`recorder`), checkpoints one payload (`resume`); `loop.LoopSampler` is one chain stepped
from the caller's own training loop."""
from .fit import run_chains
from .recorder import SCALARS, weights_site
from .result import RunResult
from .sampler_config import SamplerConfig

__all__ = ["SCALARS", "RunResult", "SamplerConfig", "run_chains", "weights_site"]
