"""P(clean): an example's posterior mean weight turned into a calibrated probability that it is like the
curated data, with the probe examples as labelled calibration data (isotonic regression: Zadrozny & Elkan,
KDD 2002).

At the default temperature P(w > 1/2) is a keep/drop decision per theta, not a probability that can be
trusted as one: on the demo's seed 2 seven of twenty good probes had P(w > 1/2) = 0 (ECE 0.151). The probes
are examples whose status is known (good and corrupted copies of held-out curated examples), so they say how
often a given posterior mean weight belongs to a good example:

1. isotonic regression of good (1) / corrupted (0) on the probes' posterior mean weights (monotone: a higher
   weight never makes an example less likely good); each block's rate is smoothed with Jeffreys' prior,
   (good + 1/2) / (n + 1), so that twenty probes never give a probability of exactly 0 or 1;
2. at the probes' own base rate (half good) that rate is a likelihood ratio, and P(clean) of an example of
   D_t is Bayes' rule at the prior fraction `prior` (the run's beta: the fraction of D_t estimated to be like
   D_m).

    cal = fit_calibration(mean_w[good_probe_rows], mean_w[bad_probe_rows])
    p = clean_probability(mean_w, cal, prior=beta)                 # one probability per example of D_t
    p_probes = cross_fitted_probability(good_scores, bad_scores)  # each probe pair calibrated without itself

Limits: the probes' corruption is a uniformly wrong label; corruption unlike it (a plausible wrong class, an
off-domain example) is calibrated only as far as its weights look like the probes'. With n probes of each
kind the smoothed rates stay within [1 / (2n + 2), 1 - 1 / (2n + 2)] (0.024 and 0.976 for 20).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError


@dataclass(frozen=True)
class ProbeCalibration:
    """A monotone function of the score: constant over each block's probe scores [lower[k], upper[k]], linear
    between blocks (as scikit-learn's isotonic prediction), constant beyond the probes' range."""

    lower: np.ndarray  # each block's lowest probe score, increasing
    upper: np.ndarray  # each block's highest probe score (below the next block's lowest)
    rate: np.ndarray  # the smoothed fraction of good probes in each block, nondecreasing, in (0, 1)
    base_rate: float  # the fraction of good probes among those fitted

    def rate_at(self, scores) -> np.ndarray:
        """The smoothed fraction of good probes at each score (the probes' own base rate as the prior)."""
        knots = np.stack([self.lower, self.upper], 1).reshape(-1)
        return np.interp(_finite_scores(scores, "scores"), knots, np.repeat(self.rate, 2))

    def likelihood_ratio(self, scores) -> np.ndarray:
        """p(score | good) / p(score | corrupted) at each score."""
        rate = self.rate_at(scores)
        return rate / (1.0 - rate) * ((1.0 - self.base_rate) / self.base_rate)


def _finite_scores(values, name: str) -> np.ndarray:
    """A 1-d float array of finite values; DataError naming `name` otherwise."""
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(out)):
        raise DataError(f"{name} must be finite numbers (posterior mean weights); got {int((~np.isfinite(out)).sum())} "
                        "that are not")
    return out


def fit_calibration(good_scores, bad_scores) -> ProbeCalibration:
    """Isotonic regression of good / corrupted on the probes' scores, each block's rate Jeffreys-smoothed."""
    from sklearn.isotonic import IsotonicRegression

    good, bad = _finite_scores(good_scores, "good probe scores"), _finite_scores(bad_scores, "bad probe scores")
    if len(good) == 0 or len(bad) == 0:
        raise DataError(f"calibrating P(clean) needs good and corrupted probes; got {len(good)} good and {len(bad)} "
                        "corrupted")
    s = np.concatenate([good, bad])
    y = np.concatenate([np.ones(len(good)), np.zeros(len(bad))])
    fitted = IsotonicRegression(increasing=True).fit(s, y).predict(s)
    levels = np.unique(fitted)  # one level per block of equal fitted value, a contiguous range of scores
    lower = np.array([s[fitted == v].min() for v in levels])
    upper = np.array([s[fitted == v].max() for v in levels])
    count = np.array([np.sum(fitted == v) for v in levels], dtype=np.float64)
    n_good = np.array([y[fitted == v].sum() for v in levels])
    order = np.argsort(lower)
    smoothed = (n_good[order] + 0.5) / (count[order] + 1.0)
    # smoothing blocks of different sizes can break the order: pool them again, weighted by their sizes
    rate = IsotonicRegression(increasing=True).fit(np.arange(len(order)), smoothed, sample_weight=count[order] + 1.0)
    return ProbeCalibration(lower[order], upper[order], rate.predict(np.arange(len(order))), len(good) / len(s))


def clean_probability(scores, calibration: ProbeCalibration, prior: float) -> np.ndarray:
    """P(clean) of each score by Bayes' rule: prior odds `prior / (1 - prior)` times the probes' likelihood ratio."""
    if isinstance(prior, bool) or not isinstance(prior, (int, float, np.floating)) or not 0 < prior < 1:
        raise DataError(f"the prior fraction of clean examples must be a number in (0, 1), got {prior!r}")
    odds = prior / (1.0 - prior) * calibration.likelihood_ratio(scores)
    return odds / (1.0 + odds)


def cross_fitted_probability(good_scores, bad_scores) -> np.ndarray:
    """P(clean) of every probe (the good ones, then the corrupted ones) from a calibration fitted without it: the
    two copies of a probe pair (good[k], bad[k], one curated example) are left out together when the counts match,
    each probe alone otherwise. At the probes' own base rate, so that the reliability on the probes is not
    in-sample."""
    good, bad = _finite_scores(good_scores, "good probe scores"), _finite_scores(bad_scores, "bad probe scores")
    if len(good) < 2 or len(bad) < 2:
        raise DataError(f"cross-fitting P(clean) needs at least 2 good and 2 corrupted probes; got {len(good)} and "
                        f"{len(bad)}")
    paired = len(good) == len(bad)
    out = np.empty(len(good) + len(bad))
    for k in range(len(good)):
        keep_g = np.arange(len(good)) != k
        keep_b = np.arange(len(bad)) != k if paired else np.ones(len(bad), bool)
        calibration = fit_calibration(good[keep_g], bad[keep_b])
        out[k] = calibration.rate_at(good[k:k + 1])[0]
        if paired:
            out[len(good) + k] = calibration.rate_at(bad[k:k + 1])[0]
    if not paired:
        for k in range(len(bad)):
            keep_b = np.arange(len(bad)) != k
            out[len(good) + k] = fit_calibration(good, bad[keep_b]).rate_at(bad[k:k + 1])[0]
    return out
