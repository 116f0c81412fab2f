"""Statistical test: on a tiny BADS instance, the exact weight update's per-example posterior mean, sd and
quantiles agree with Pyro NUTS within Monte-Carlo error (split from test_posterior.py so that the two long
files run on different test workers).

Monte-Carlo standard errors come from ArviZ's ESS-based estimates; all seeds are fixed.
"""
from __future__ import annotations

import time

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS

from pyro_dps.context import ModelContext, Problem
from pyro_dps.models import bads
from pyro_dps.kernels import PSGLD

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread_no_validation")]


# ---------------------------------------------------------------------------------------------
# 4. BADS: the exact weight update against NUTS on a tiny instance
# ---------------------------------------------------------------------------------------------
BADS_N, BADS_M = 30, 10
BADS_HYPER = dict(beta=0.6, sigma=2.0)  # sum_i w_i ~ N(floor(0.6 * 30) = 18, 2^2); rho_t = rho_m = 1
FLIPPED = torch.arange(0, BADS_N, 7)  # 5 of the 30 training labels flipped


def _bads_problem() -> Problem:
    """Two Gaussian blobs in 2-D (one per class), logistic regression as a 2-way linear layer."""
    g = torch.Generator().manual_seed(0)

    def blobs(n):
        y = torch.arange(n) % 2
        x = torch.randn(n, 2, generator=g) * 0.8 + (2.0 * y - 1.0).unsqueeze(1) * torch.tensor([1.0, 0.7])
        return x, y

    x_train, y_train = blobs(BADS_N)
    x_meta, y_meta = blobs(BADS_M)
    y_train[FLIPPED] = 1 - y_train[FLIPPED]
    torch.manual_seed(0)
    return Problem(torch.nn.Linear(2, 2), x_train, y_train, x_meta, y_meta)


def _summaries(w: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-weight posterior mean, sd, 5% and 95% quantiles of draws w (chain, draw, example), each with its
    Monte-Carlo standard error from ArviZ (ESS-based; the quantiles' via the indicator's ESS and the density)."""
    import arviz as az

    ds = az.convert_to_dataset({"w": w})
    # the sd's MCSE by the delta method on the squared deviations, with their ESS: ArviZ's own mcse_sd formula
    # (arviz 0.23's az.mcse(method="sd") fails on arrays when numba is installed)
    sq = (w - w.mean((0, 1))) ** 2
    ess_sq = az.ess(az.convert_to_dataset({"sq": sq}), method="mean")["sq"].values
    sd = w.std((0, 1), ddof=1)
    sd_se = np.sqrt(sq.reshape(-1, w.shape[-1]).var(0) / ess_sq) / (2 * sd)
    out = {"mean": (w.mean((0, 1)), az.mcse(ds, method="mean")["w"].values), "sd": (sd, sd_se)}
    for p in (0.05, 0.95):
        out[f"q{int(p * 100):02d}"] = (np.quantile(w.reshape(-1, w.shape[-1]), p, axis=0),
                                       az.mcse(ds, method="quantile", prob=p)["w"].values)
    return out


@pytest.mark.usefixtures("progress_bars_on")
def test_exact_weights_match_nuts_on_tiny_bads():
    """The default weight update (exact conditional draws, no local step size) with pSGLD on theta
    (minibatches of 15 of the 30 examples, all 10 meta examples, T = 1) against Pyro NUTS on the same
    full-batch model: every weight's posterior mean, sd, 5% and 95% quantile agree within Monte-Carlo error.

    Tolerance: |difference| <= 4 sqrt(MCSE_ours^2 + MCSE_NUTS^2) for each of the 30 x 4 summaries, the MCSEs
    from ArviZ (`_summaries`); with 120 comparisons, 4 standard errors keep the chance of a false alarm near
    1%. Both samplers must be precise enough for this to mean something: every MCSE of the mean <= 0.012
    (the weights' posterior sd is ~0.27, so a 10% error in an sd is ~3 MCSEs). The Langevin update on the
    logits this replaced (local step 2.0) had sds ~16% too wide: 0.04, above the tolerance of ~0.03.
    """
    problem = _bads_problem()
    # NUTS on the full-batch model. w_sum_rest is a float32 zero: with a float64 one the w_sum site's
    # log-density is float64, Pyro's HMC then builds its mass matrix and momenta in float64, the
    # theta sites turn float64 and the float32 forward pass fails.
    ctx = ModelContext(problem, torch.arange(BADS_N), torch.arange(BADS_M), torch.zeros(()))

    def full():
        bads.model(ctx, **BADS_HYPER)

    pyro.set_rng_seed(0)
    start = time.perf_counter()
    nuts = MCMC(NUTS(full), num_samples=1500, warmup_steps=300, num_chains=1, disable_progbar=True)
    nuts.run()
    t_nuts = time.perf_counter() - start
    w_nuts = nuts.get_samples()["w"].double().numpy()[None]  # (1, 1500, 30)

    start = time.perf_counter()
    kernel = PSGLD(bads.model, problem, BADS_HYPER, batch_size=15, meta_batch_size=BADS_M, steps_per_sample=4,
                   seed=0, step_size=0.02, alpha=0.999)
    sg = MCMC(kernel, num_samples=10_000, warmup_steps=500)
    sg.run()
    t_sg = time.perf_counter() - start
    assert kernel.core.weight_update == "exact"
    w_sg = sg.get_samples()["w"].double().numpy()[None]  # (1, 10000, 30)

    ours, ref = _summaries(w_sg), _summaries(w_nuts)
    report, failures = [f"NUTS {t_nuts:.0f}s, ours {t_sg:.0f}s"], []
    for name in ours:
        (a, se_a), (b, se_b) = ours[name], ref[name]
        z = np.abs(a - b) / np.sqrt(se_a ** 2 + se_b ** 2)
        report.append(f"{name}: max |diff| {np.abs(a - b).max():.4f}, max z {z.max():.2f}, "
                      f"MCSE ours {se_a.max():.4f} NUTS {se_b.max():.4f}")
        failures += [f"{name}[{i}]: {a[i]:.4f} vs {b[i]:.4f} (z {z[i]:.1f})" for i in np.flatnonzero(z > 4)]
    print("\n  " + "\n  ".join(report))
    assert max(ours["mean"][1].max(), ref["mean"][1].max()) <= 0.012, report
    assert not failures, failures
    # The weights mean something: flipped labels get lower posterior weight than clean ones.
    clean = np.setdiff1d(np.arange(BADS_N), FLIPPED.numpy())
    assert ours["mean"][0][FLIPPED.numpy()].mean() < ours["mean"][0][clean].mean() - 0.1
