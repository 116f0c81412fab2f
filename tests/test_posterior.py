"""Statistical tests: the SG-MCMC kernels sample the right posterior.

1. SGLD, pSGLD and SGHMC on a Bayesian linear regression whose posterior is known in closed form
   (minibatches of 50, T = 1): posterior means within 3 Monte-Carlo standard errors, marginal
   variances within 15%.
2. The paper's noisy optimiser is not a sampler: with no noise it converges to the posterior mode,
   with the paper's noise (std 1e-5) it stays there.
3. The four `pyro.infer.MCMC` kernel classes return draws that behave on the same regression.
(The exact weight update against Pyro NUTS on a tiny BADS instance: tests/test_exact_vs_nuts.py.)

Monte-Carlo standard errors (MCSE) come from the effective sample size n / tau, with tau the
integrated autocorrelation time from Geyer's initial monotone sequence estimator (`conjugate.iact`,
the estimator of Stan and ArviZ), computed on the chain itself. All seeds are fixed.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from pyro.infer import MCMC

from pyro_dps.kernels import PSGLD, SGHMC, SGLD, MinibatchSampler, PaperSampler, paper, psgld, sghmc, sgld
from pyro_dps.potential import TracePotential
from pyro_dps.kernels.schedules import Polynomial

from conjugate import make_regression, mcse

NO_META = torch.empty(0, dtype=torch.long)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread_no_validation")


@pytest.fixture(scope="module")
def regression():
    """N = 1000 points, D = 3 features ~ N(0, 1), noise sd 1 (known), prior N(0, 1) per coefficient.

    Posterior sd of each coefficient ~ 1 / sqrt(1 + N) ~ 0.032; precision eigenvalues lambda ~ 900-1100.
    """
    return make_regression(n=1000, d=3, noise_sd=1.0, prior_sd=1.0, seed=0)


# ---------------------------------------------------------------------------------------------
# 1. SGLD, pSGLD, SGHMC against the exact Gaussian posterior
# ---------------------------------------------------------------------------------------------
BATCH = 50
COPIES = 8  # independent coefficient vectors in one model: 8 chains per step (see conjugate.Regression.model)
STEPS = 24_000  # recorded steps after burn-in, every step kept (no thinning)

# Step sizes (lambda ~ 1000 is the posterior precision, N/B = 20):
# - SGLD: eps = 3e-5, h = eps * lambda = 0.03. The Euler discretisation alone inflates the stationary
#   variance by 1 / (1 - h/4) - 1 ~ 0.8%; minibatch gradient noise adds more (white-noise bound
#   eps * V / 4 with V ~ lambda * N/B, i.e. ~15%, but batches drawn without replacement cancel over an
#   epoch of 20 steps, far shorter than the chain's autocorrelation time tau ~ 4 / h ~ 130 steps), so
#   that the total variance inflation measured in a numpy model of the same update (100 chains x
#   6,000 steps, MC error ~1.5%) is ~2-4%: well below the 15% tolerance.
# - pSGLD: the RMSprop preconditioner is G ~ 1 / sqrt(E g^2) ~ 1 / 140 here (minibatch gradient sd),
#   so eps = 4e-3 gives the same effective step eps * G ~ 3e-5 as SGLD (inflation ~2-4% measured as
#   for SGLD). alpha = 0.999 keeps G nearly constant (the dropped Gamma correction term is then
#   negligible); the longer burn-in lets the preconditioner's memory (1 / (1 - alpha) = 1000 steps)
#   forget the large gradients of the start.
# - SGHMC: eta = 2e-6, friction 0.05: sqrt(eta * lambda) ~ 0.045 (an oscillation period of ~140 steps),
#   variance inflation ~1-3% in the numpy model, tau ~ 60 steps.
SAMPLERS = {
    "sgld": (sgld, dict(step_size=3e-5), 3_000),
    "psgld": (psgld, dict(step_size=4e-3, alpha=0.999), 6_000),
    "sghmc": (sghmc, dict(step_size=2e-6, friction=0.05), 3_000),
}


def _run_algorithm(factory, potential, kwargs, burn, steps, seed, site="coef"):
    gen = torch.Generator().manual_seed(seed)
    alg = factory(potential, temperature=1.0, generator=gen, **kwargs)
    state = alg.init(potential.init_theta(gen))
    batches = MinibatchSampler(potential.problem.n_train, BATCH, gen, CPU)
    for _ in range(burn):
        state = alg.step(state, (batches(), NO_META))
    first = potential.unpack(state.theta)[site]
    draws = torch.empty((steps, *first.shape), dtype=torch.float64)
    for t in range(steps):
        state = alg.step(state, (batches(), NO_META))
        draws[t] = potential.unpack(state.theta)[site]
    return draws.numpy()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sgmcmc_matches_conjugate_posterior(name, regression):
    """Each kernel, T = 1, minibatches of 50 of N = 1000, constant step size, after burn-in: for every
    coefficient, |posterior mean - exact| <= 3 MCSE and |variance / exact - 1| <= 0.15.

    The model holds 8 independent copies of the coefficient vector (8 chains per step, since a step's
    cost is Pyro overhead, not arithmetic); 24,000 recorded steps give ~150-250 effective draws of the
    copy-averaged series (tau ~ 60-130 steps) and a variance MC error of ~2-3%.
    """
    factory, kwargs, burn = SAMPLERS[name]
    potential = TracePotential(regression.model(copies=COPIES), regression.problem())
    start = time.perf_counter()
    draws = _run_algorithm(factory, potential, kwargs, burn, STEPS, seed=1)  # (STEPS, COPIES, D)
    elapsed = time.perf_counter() - start
    assert draws.shape == (STEPS, COPIES, regression.d)
    assert np.isfinite(draws).all()

    report = [f"{name}: {burn + STEPS} steps in {elapsed:.1f}s"]
    for d in range(regression.d):
        # Mean: the 8 copies share minibatches, so their draws may be correlated. Averaging over the
        # copies at each step first gives one series whose mean is the estimate and whose own
        # autocorrelation (Geyer) gives an MCSE that includes any cross-copy correlation.
        pooled = draws[:, :, d].mean(axis=1)
        se_mean, ess_mean = mcse(pooled)
        err = pooled.mean() - regression.mean[d]
        # Variance: each copy's variance around its own mean, averaged over the copies; its MC error
        # from the same construction on the squared deviations.
        sq = ((draws[:, :, d] - draws[:, :, d].mean(axis=0)) ** 2).mean(axis=1)
        se_var, _ = mcse(sq)
        exact_var = regression.cov[d, d]
        ratio = sq.mean() / exact_var
        report.append(f"coef[{d}]: |mean err|/MCSE = {abs(err) / se_mean:.2f} (ESS {ess_mean:.0f}), "
                      f"var ratio = {ratio:.3f} +- {se_var / exact_var:.3f}")
        # The MC error must be small enough for the checks to mean something: an ESS of the pooled
        # series >= 50 (tau ~ 60-130 steps here, so ~110-480 seen) keeps a badly mixing chain from
        # passing on a huge MCSE and the MCSE estimate reliable to ~15-20%; a variance MC error of at
        # most 5% (3 of them = 15%) keeps the 15% check from passing by noise alone.
        assert ess_mean >= 50, report
        assert se_var / exact_var <= 0.05, report
        assert abs(err) <= 3 * se_mean, report
        assert abs(ratio - 1) <= 0.15, report
    print("\n  ".join(report))


# ---------------------------------------------------------------------------------------------
# 2. The paper's noisy optimiser: converges to the posterior mode (MAP = posterior mean here)
# ---------------------------------------------------------------------------------------------
def test_paper_kernel_full_batch_converges_to_map(regression):
    """Noise-free full-batch SGD is gradient ascent on a quadratic: it contracts geometrically, by
    |1 - lr * lambda| <= 0.2 per step for lr = 1e-3 and lambda in [900, 1100]. After 300 steps only
    float32 rounding is left (~1e-7 * |coef| ~ 1e-5 posterior sd), so 1e-3 posterior sd is tight."""
    potential = TracePotential(regression.model(), regression.problem())
    gen = torch.Generator().manual_seed(0)
    alg = paper(potential, 1e-3, optimizer="sgd", noise_std=0.0, generator=gen)
    state = alg.init(potential.init_theta(gen))
    everything = torch.arange(regression.n)
    for _ in range(300):
        state = alg.step(state, (everything, NO_META))
    z = (state.theta.double().numpy() - regression.mean) / regression.sd
    print(f"\n  paper, full batch, no noise: max |theta - MAP| / sd = {np.abs(z).max():.2e}")
    assert np.abs(z).max() <= 1e-3, z


@pytest.mark.parametrize("noise_std", [0.0, 1e-5])
def test_paper_kernel_minibatch_stays_at_map(regression, noise_std):
    """SGD on minibatches of 50 with a Robbins-Monro learning rate lr_t = 0.1 / (100 + t) (1e-3 at the
    start, 1e-5 after 10,000 steps). noise_std 1e-5 is the paper's default.

    Within an epoch the iterate jitters with the minibatch gradient noise: for SGD on a quadratic the
    jitter variance is at most lr * V / (2 lambda) with V ~ lambda (N/B)(1 - B/N) the minibatch
    gradient variance, i.e. a sd of at most sqrt(lr * 9.5 * lambda) ~ 0.34 posterior sd at lr ~ 1.2e-5
    (the last 2,000 steps). At the end of an epoch (10,000 is a multiple of N/B = 20) the batches have
    covered every example once, their gradient errors cancel to first order, and the iterate is at
    the MAP up to O(lr^2) terms: measured with six seeds, at most 0.04 posterior sd. The paper's noise
    adds a stationary spread of only noise_std / sqrt(2 lr lambda) ~ 1e-4 ~ 0.003 sd.

    Checks: the final iterate within 0.1 posterior sd of the MAP (~3e-3 absolute); the last 2,000
    iterates' sd at most 0.5 posterior sd (the bound above with margin; a T = 1 sampler gives 1) and
    their mean within 0.25 sd (their jitter decorrelates in 1 / (lr lambda) ~ 100 steps, so that mean
    has an MC error ~ 0.34 / sqrt(20) ~ 0.08 sd).
    """
    potential = TracePotential(regression.model(), regression.problem())
    gen = torch.Generator().manual_seed(2)
    alg = paper(potential, Polynomial(a=0.1, b=100.0, gamma=1.0), optimizer="sgd", noise_std=noise_std,
                generator=gen)
    state = alg.init(potential.init_theta(gen))
    batches = MinibatchSampler(regression.n, BATCH, gen, CPU)
    tail = []
    for t in range(10_000):
        state = alg.step(state, (batches(), NO_META))
        if t >= 8_000:
            tail.append(state.theta.double().numpy().copy())
    z_final = (state.theta.double().numpy() - regression.mean) / regression.sd
    z_tail = (np.array(tail) - regression.mean) / regression.sd
    print(f"\n  paper, noise {noise_std}: final max |theta - MAP| / sd = {np.abs(z_final).max():.3f}; last 2000 "
          f"iterates: sd / posterior sd = {z_tail.std(0).max():.3f}, |mean - MAP| / sd = {np.abs(z_tail.mean(0)).max():.3f}")
    assert np.abs(z_final).max() <= 0.1, z_final
    assert z_tail.std(axis=0).max() <= 0.5, z_tail.std(axis=0)
    assert np.abs(z_tail.mean(axis=0)).max() <= 0.25, z_tail.mean(axis=0)


# ---------------------------------------------------------------------------------------------
# 3. pyro.infer.MCMC runs the four kernel classes
# ---------------------------------------------------------------------------------------------
MCMC_SAMPLERS = {
    "SGLD": (SGLD, dict(step_size=3e-5)),
    "PSGLD": (PSGLD, dict(step_size=4e-3, alpha=0.999)),
    "SGHMC": (SGHMC, dict(step_size=2e-6, friction=0.05)),
}
SPS = 10  # Langevin steps per returned draw


@pytest.mark.usefixtures("progress_bars_on")
@pytest.mark.parametrize("name", sorted(MCMC_SAMPLERS))
def test_mcmc_runs_sampler_kernel(name, regression):
    """A short run (6,000 steps after 3,000 of warm-up) of the plain one-copy regression.

    Checks on the returned constrained draws: the shape; the mean within 4 MCSE of the exact mean
    (MCSE from the draws' own autocorrelation; with tau <= ~150 steps = 15 draws the ESS is >= 40, so
    4 MCSE <= ~0.6 posterior sd, and an ESS guard of 25 keeps a stuck chain from passing on a huge
    MCSE); and the spread: the sample sd within 30% of the exact sd (the variance's MC error at
    ESS >= 40 is <= ~16%, i.e. <= ~8% on the sd, so 30% is over 3 standard errors).
    """
    cls, kwargs = MCMC_SAMPLERS[name]
    kernel = cls(regression.model(), regression.problem(), {}, batch_size=BATCH, steps_per_sample=SPS, seed=3,
                 **kwargs)
    mcmc = MCMC(kernel, num_samples=600, warmup_steps=300)
    mcmc.run()
    coef = mcmc.get_samples()["coef"].double().numpy()
    assert coef.shape == (600, regression.d)
    report = [name]
    for d in range(regression.d):
        se, ess = mcse(coef[:, d])
        err = coef[:, d].mean() - regression.mean[d]
        sd_ratio = coef[:, d].std() / regression.sd[d]
        report.append(f"coef[{d}]: |err|/MCSE = {abs(err) / se:.2f}, |err|/sd = {abs(err) / regression.sd[d]:.2f}, "
                      f"ESS {ess:.0f}, sd ratio {sd_ratio:.2f}")
        assert ess >= 25, report
        assert abs(err) <= 4 * se, report
        assert abs(sd_ratio - 1) <= 0.3, report
    print("\n  ".join(report))


@pytest.mark.usefixtures("progress_bars_on")
def test_mcmc_runs_paper_kernel(regression):
    """The paper's optimiser through MCMC: its draws sit on the MAP (not spread over the posterior).

    Draws are taken every 10 steps from step 3,000 to 6,000 of SGD with lr_t = 0.1 / (100 + t)
    (3.2e-5 down to 1.7e-5) and the paper's noise 1e-5. Their jitter (see the test above) has a sd of
    at most sqrt(lr * 9.5 * lambda) ~ 0.55 posterior sd at the start of that window and it decorrelates
    within ~30 steps (3 draws), so over 300 draws: mean within 0.15 posterior sd of the MAP (its MC
    error is <= 0.55 / sqrt(100) ~ 0.055) and sd at most 0.75 posterior sd (0.55 plus 3 MC errors of
    ~7%); a T = 1 sampler would have sd 1.
    """
    kernel = PaperSampler(regression.model(), regression.problem(), {}, batch_size=BATCH, steps_per_sample=SPS,
                          seed=4, step_size={"kind": "polynomial", "a": 0.1, "b": 100.0, "gamma": 1.0},
                          optimizer="sgd", noise_std=1e-5)
    mcmc = MCMC(kernel, num_samples=300, warmup_steps=300)
    mcmc.run()
    coef = mcmc.get_samples()["coef"].double().numpy()
    assert coef.shape == (300, regression.d)
    z = (coef - regression.mean) / regression.sd
    print(f"\n  PaperSampler: |mean - MAP| / sd = {np.abs(z.mean(0)).max():.3f}, sd / posterior sd = {z.std(0).max():.3f}")
    assert np.abs(z.mean(axis=0)).max() <= 0.15, z.mean(axis=0)
    assert z.std(axis=0).max() <= 0.75, z.std(axis=0)
