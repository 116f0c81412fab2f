"""Simulation-based calibration (SBC; Talts, Betancourt, Simpson, Vehtari & Gelman 2018) of the weights' posterior.

At T = 1 the sampler's target is the exact posterior of a proper generative model. For a classifier the
tempered factor exp(-w_i l_i(theta)) with l_i the cross-entropy, normalised over the label, is
y_i | theta, w_i ~ Categorical(softmax(w_i f_theta(x_i))) (softmax(f)_y^w / sum_y' softmax(f)_y'^w =
softmax(w f)_y), with normaliser Z_i(theta, w_i) = sum_y exp(-w_i l_i(y)). So

    p(theta) p(w) prod_i exp(-w_i l_i(y_i)) prod_j exp(-l_j(y_j))
        = [p(theta) p(w) prod_i Z_i(theta, w_i)] * prod_i softmax(w_i f)_{y_i} * prod_j softmax(f)_{y_j}:

the posterior of theta and w given labels drawn from that model, under the prior p(theta) p(w) tilted by
prod_i Z_i (the meta factor, rho_m = 1, is an ordinary categorical likelihood). SBC: draw (theta*, w*) from
the tilted prior, draw the labels of D_t and D_m from the model, run the sampler on them, and take the rank
of each true w*_i among its posterior draws. If the sampler draws from the posterior, every rank is uniform.

The model (`models/bads.py`, uniform base prior): logistic regression on 2 features (logits (0, x . a + b),
3 parameters), N_t = 8 training rows, N_m = 4 meta rows (inputs N(0, 1), fixed across replications),
beta = 0.5 (sum_i w_i ~ N(4, 1)); sigma = 1 and rho_m = 1 are also the model's own defaults at this size,
rho_t = 1. theta's prior is N(0, 5^2) rather than the model's N(0, 1): with logits of several units a label
that contradicts the fit says that its weight is small (posterior mean 0.35 against 0.49 for the other
rows), whereas with N(0, 1) a single label hardly moves its weight (the posterior means varied by ~0.035)
and a sampler that ignored the labels passed every rank check, the stratified ones included. The tilted
prior is sampled exactly by rejection: propose theta from its prior and w uniform, accept with probability
exp(-(sum w - 4)^2 / 2) prod_i Z_i / 2^N_t (Z_i <= 2; a few percent accepted).

The sampler is the library's default: `pyro_dps.fit` with pSGLD on theta and exact conditional draws of the
weights, minibatches of 4 of the 8 training rows and all 4 meta rows, one chain, at a constant step size
0.1 for this tiny model (pSGLD's preconditioner is ~1 / sqrt(posterior precision), so the effective
Langevin step times the precision is ~0.1-0.2: a discretisation error of a few percent in theta's
variance). Checked once against the exact posterior of all 200 replications by importance sampling (10^6
prior proposals each, ESS >= 13,000): the per-weight posterior means averaged over replications agree
within 0.014 (2.3 Monte-Carlo standard errors), the posterior sds within 3.5%. Per replication: 300
warm-up steps, then 38 draws 5 steps apart; the ranks use every other one (L = 19 draws, 10 steps apart),
and the autocorrelation of the 5-step series, pooled over all replications and weights, checks that they
are practically independent (correlated draws make ranks non-uniform on their own): measured lag-1
autocorrelation ~0.01, IACT ~1 draw. R = 200 replications at T = 1.

Checks (fixed seeds), B = 10 rank bins (two of the L + 1 = 20 rank values each), significance level
alpha = 0.001 per family:
- all weights pooled, and separately the weights whose label the data contradict (the label disagrees
  with a MAP logistic regression fitted to the replication's 12 labels: a function of the data, so the
  ranks are uniform within each stratum as well) and the others. One replication's ranks are dependent
  (the weights share theta and the sum prior), so the per-replication bin counts are compared with their
  expectation by Hotelling's T^2 (an F test, the counts' covariance estimated across replications), not a
  chi-square that assumes independent ranks (printed alongside). Its false-alarm rate at alpha = 0.001,
  measured on independent uniform ranks of these shapes (3,000-4,000 simulations), is ~0.2% (the counts
  are not Gaussian);
- per weight: a chi-square test of its R independent ranks, Bonferroni alpha / 8 each.
So a calibrated sampler fails these checks with probability under ~1%. Measured (2026-12-03): pooled
Hotelling p 0.62 (chi-square 7.9), contradicted labels p 0.04, others 0.50, smallest per-weight p 0.0007
(threshold 0.000125). The contradicted stratum's low p is mostly the simulated data, not the sampler: the
probability integral transform of the true weights under the exact posterior (importance sampling, above)
has mean 0.461 there, the ranks 0.446. The checks can fail: the same T = 1 draws shifted by +0.1 (a
posterior biased by a third of its sd) fail the pooled check (p ~ 1e-42); each replication scored against
the previous replication's draws (a sampler that ignores the labels, right on average) fails the
contradicted-label stratum (p ~ 1e-9; the pooled check alone passes it, p 0.05); and the sampler at
T = 0.01 (the library's default temperature), the second test, fails by many orders of magnitude.

Both tests are `slow` (about 2-4 minutes of one CPU thread together, most of it the 200 T = 1 runs).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_dps.context import Problem
from pyro_dps import SamplerConfig, fit
from pyro_dps.models import bads

pytestmark = pytest.mark.slow

N_T, N_M, D = 8, 4, 2
HYPER = dict(beta=0.5, sigma=1.0, rho_t=1.0, rho_m=1.0, prior_scale=5.0)
K = math.floor(N_T * HYPER["beta"])  # the sum prior's centre: 4
REPS, COLD_REPS = 200, 25  # replications at T = 1 and at T = 0.01 (the control's failure is gross)
STEP, BATCH = 0.1, 4  # pSGLD's constant step size; train minibatch (all meta rows every step)
WARMUP, THIN, DRAWS = 300, 5, 38  # 38 draws 5 steps apart; ranks from every other one
L = DRAWS // 2  # 19 draws per rank, 10 steps apart: ranks 0..19
BINS = 10
ALPHA = 1e-3


class LogisticRegression(torch.nn.Module):
    """Two-class logits (0, x . a + b): logistic regression with 3 identifiable parameters."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = torch.nn.Linear(d, 1)

    def forward(self, x):
        z = self.lin(x)
        return torch.cat([torch.zeros_like(z), z], -1)


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _tilted_prior(n: int, x_train: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n exact draws of (theta, w) from p(theta) p(w) prod_i Z_i(theta, w_i), by rejection.

    p(w) is uniform on [0, 1]^N_t times the sum prior exp(-(sum w - K)^2 / (2 sigma^2)) (at most 1), and
    Z_i = sigmoid(z_i)^w_i + sigmoid(-z_i)^w_i lies in [1, 2], so
    exp(-(sum w - K)^2 / (2 sigma^2)) prod_i Z_i / 2^N_t is a valid acceptance probability for proposals from
    N(0, prior_scale^2) x uniform."""
    thetas, weights, have = [], [], 0
    while have < n:
        m = 20_000
        theta = HYPER["prior_scale"] * rng.standard_normal((m, D + 1))
        w = rng.random((m, N_T))
        z = theta[:, :D] @ x_train.T + theta[:, D:]  # (m, N_t) logit of class 1
        log_z = np.logaddexp(w * _log_sigmoid(z), w * _log_sigmoid(-z))
        log_accept = -(w.sum(1) - K) ** 2 / (2 * HYPER["sigma"] ** 2) + (log_z - math.log(2.0)).sum(1)
        keep = np.log(rng.random(m)) < log_accept
        thetas.append(theta[keep])
        weights.append(w[keep])
        have += int(keep.sum())
    return np.concatenate(thetas)[:n], np.concatenate(weights)[:n]


@pytest.fixture(scope="module")
def replications():
    """Fixed inputs, REPS draws of (theta*, w*) from the tilted prior and their simulated labels:
    y_i ~ Bernoulli(sigmoid(w*_i z_i)) on D_t, y_j ~ Bernoulli(sigmoid(z_j)) on D_m."""
    rng = np.random.default_rng(2018)
    x_train, x_meta = rng.standard_normal((N_T, D)), rng.standard_normal((N_M, D))
    theta, w = _tilted_prior(REPS, x_train, rng)
    z_train = theta[:, :D] @ x_train.T + theta[:, D:]
    z_meta = theta[:, :D] @ x_meta.T + theta[:, D:]
    y_train = (rng.random((REPS, N_T)) < 1 / (1 + np.exp(-w * z_train))).astype(np.int64)
    y_meta = (rng.random((REPS, N_M)) < 1 / (1 + np.exp(-z_meta))).astype(np.int64)
    return x_train, x_meta, w, y_train, y_meta


def _run(replications, reps: int, temperature: float) -> tuple[np.ndarray, float]:
    """Weight draws (reps, DRAWS, N_t) of the default sampler on the first `reps` simulated data sets."""
    x_train, x_meta, _, y_train, y_meta = replications
    out = np.empty((reps, DRAWS, N_T))
    start = time.perf_counter()
    for r in range(reps):
        torch.manual_seed(r)
        problem = Problem(LogisticRegression(D), torch.tensor(x_train, dtype=torch.float32),
                          torch.tensor(y_train[r]), torch.tensor(x_meta, dtype=torch.float32),
                          torch.tensor(y_meta[r]))
        config = SamplerConfig(kernel="psgld", temperature=temperature, step_size=STEP, chains=1, warmup=WARMUP,
                               samples=DRAWS, thin=THIN, batch_size=BATCH, meta_batch_size=N_M, snapshots=0,
                               seed=r, progress=False)
        posterior = fit(bads.model, problem, HYPER, config)
        assert posterior.weight_update == "exact"
        out[r] = posterior.draws.weights().values[0]
    return out, time.perf_counter() - start


def _ranks(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank of each true weight among its L rank draws (every other draw): (reps, N_t) in 0..L."""
    return (draws[:, 1::2] < truth[:, None, :]).sum(1)


def _pooled_acf_tau(draws: np.ndarray) -> tuple[float, np.ndarray]:
    """Integrated autocorrelation time (in draws) of the weight series, the autocorrelation pooled over all
    replications and weights (each series centred on its own mean), Geyer's initial monotone sequence."""
    x = draws.transpose(0, 2, 1).reshape(-1, draws.shape[1])
    x = x - x.mean(1, keepdims=True)
    n = x.shape[1]
    f = np.fft.rfft(x, 2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n].sum(0)
    rho = acov / acov[0]
    m = (n - 1) // 2
    pairs = rho[0:2 * m:2] + rho[1:2 * m:2]
    stop = int(np.argmax(pairs <= 0)) if (pairs <= 0).any() else m
    return float(-1.0 + 2.0 * np.minimum.accumulate(pairs[:stop]).sum()), rho


def _uniformity(ranks: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Rank-uniformity statistics of (reps, N_t) ranks in 0..L (only those in `mask`, a function of the data),
    BINS bins of (L + 1) / BINS rank values."""
    mask = np.ones(ranks.shape, dtype=bool) if mask is None else mask
    reps = ranks.shape[0]
    bins = ranks * BINS // (L + 1)
    counts = np.stack([np.bincount(b[m], minlength=BINS) for b, m in zip(bins, mask)])  # (reps, BINS)
    pooled = counts.sum(0)
    # Hotelling's T^2 on the per-replication counts, whose covariance across replications allows for the
    # dependence of one replication's ranks; the last bin is implied by the others
    p = BINS - 1
    dev = counts[:, :p] - mask.sum(1, keepdims=True) / BINS
    mean = dev.mean(0)
    t2 = reps * float(mean @ np.linalg.lstsq(np.cov(dev, rowvar=False), mean, rcond=None)[0])
    f_stat = (reps - p) / (p * (reps - 1)) * t2
    chi2 = stats.chisquare(pooled)
    per_weight = np.array([stats.chisquare(np.bincount(bins[mask[:, i], i], minlength=BINS)).pvalue
                           for i in range(ranks.shape[1])])
    inside = (ranks >= 1) & (ranks <= L - 1)  # w* between the smallest and largest of L draws: 90% if calibrated
    return {"pooled": pooled, "chi2": float(chi2.statistic), "chi2_p": float(chi2.pvalue),
            "hotelling_p": float(stats.f.sf(f_stat, p, reps - p)), "per_weight_p": per_weight,
            "coverage": float(inside[mask].mean()), "mean_rank": float(ranks[mask].mean() / L)}


def _line(name: str, u: dict) -> str:
    return (f"{name}: bins {u['pooled'].tolist()}, chi2 {u['chi2']:.1f} (p {u['chi2_p']:.2g}), "
            f"Hotelling p {u['hotelling_p']:.2g}, min per-weight chi2 p {u['per_weight_p'].min():.2g}, "
            f"mean rank / L {u['mean_rank']:.3f}, [min, max] of {L} draws covers w* {u['coverage']:.3f} "
            "(0.9 if calibrated)")


def _contradicted(replications) -> np.ndarray:
    """(reps, N_t): whether training label y_i contradicts the MAP logistic regression (prior N(0, prior_scale^2))
    fitted to all 12 labels of its replication: a function of the data alone, so the ranks are uniform within
    each stratum too, and the weights of contradicted labels have a posterior well below the prior's."""
    x_train, x_meta, _, y_train, y_meta = replications
    x = np.c_[np.r_[x_train, x_meta], np.ones(N_T + N_M)]
    out = np.empty(y_train.shape, dtype=bool)
    for r in range(len(y_train)):
        y, coef = np.r_[y_train[r], y_meta[r]], np.zeros(D + 1)
        for _ in range(50):  # Newton's method on a strictly concave objective
            p = 1 / (1 + np.exp(-x @ coef))
            hess = x.T @ (x * (p * (1 - p))[:, None]) + np.eye(D + 1) / HYPER["prior_scale"] ** 2
            coef += np.linalg.solve(hess, x.T @ (y - p) - coef / HYPER["prior_scale"] ** 2)
        out[r] = (y_train[r] == 1) != (x[:N_T] @ coef > 0)
    return out


def test_weight_ranks_uniform_at_temperature_one(replications):
    """T = 1: the ranks of the true weights among the posterior draws are uniform (pooled, per weight, and
    within the strata of labels the data contradict or not), the rank draws practically independent; and
    the same checks reject the same draws shifted by +0.1 and draws from another replication's posterior."""
    truth = replications[2]
    draws, seconds = _run(replications, REPS, 1.0)
    tau, rho = _pooled_acf_tau(draws)
    ranks = _ranks(draws, truth)
    bad = _contradicted(replications)
    u, u_bad, u_good = _uniformity(ranks), _uniformity(ranks, bad), _uniformity(ranks, ~bad)
    shifted = _uniformity(_ranks(np.clip(draws + 0.1, 0.0, 1.0), truth))
    other = _ranks(np.roll(draws, 1, axis=0), truth)  # a sampler that ignores the labels
    other_all, other_bad = _uniformity(other), _uniformity(other, bad)
    posterior_sd = draws.std(1)
    report = [f"T = 1: {REPS} replications in {seconds:.0f}s; weights' autocorrelation at 5 / 10 steps "
              f"{rho[1]:.3f} / {rho[2]:.3f}, IACT of the 5-step series {tau:.2f} draws; posterior sd of w "
              f"{posterior_sd.mean():.3f} (contradicted labels {posterior_sd[bad].mean():.3f}, "
              f"{bad.mean():.0%} of the rows), tilted prior's {truth.std():.3f}",
              _line("T = 1, all weights", u), _line("T = 1, contradicted labels", u_bad),
              _line("T = 1, other labels", u_good),
              _line("control: draws + 0.1", shifted),
              _line("control: another replication's draws, all", other_all),
              _line("control: another replication's draws, contradicted labels", other_bad)]
    print("\n  " + "\n  ".join(report))
    # 10 steps apart the draws are practically independent: lag-2 autocorrelation of the 5-step series small
    # and its IACT (whose estimate on 38-draw series is biased low by ~0.1) at most 1.5 draws of 5 steps
    assert abs(rho[2]) <= 0.1 and tau <= 1.5, report
    for stat in (u, u_bad, u_good):
        assert stat["hotelling_p"] >= ALPHA, report
    assert u["per_weight_p"].min() >= ALPHA / N_T, report
    # the controls: a posterior shifted by a third of its sd, and one that ignores the data
    assert shifted["hotelling_p"] < ALPHA, report
    assert other_bad["hotelling_p"] < ALPHA, report


def test_weight_ranks_not_uniform_at_temperature_001(replications):
    """Control: the same sampler at T = 0.01 (the library's default) targets the tempered posterior, whose
    weight draws are much narrower than the posterior: the ranks pile up at 0 and L and the test rejects."""
    truth = replications[2][:COLD_REPS]
    draws, seconds = _run(replications, COLD_REPS, 0.01)
    u = _uniformity(_ranks(draws, truth))
    report = [f"T = 0.01: {COLD_REPS} replications in {seconds:.0f}s; posterior sd of w {draws.std(1).mean():.3f}",
              _line("T = 0.01 (control)", u)]
    print("\n  " + "\n  ".join(report))
    assert u["hotelling_p"] < ALPHA and u["chi2_p"] < ALPHA, report
    assert u["coverage"] < 0.7, report
