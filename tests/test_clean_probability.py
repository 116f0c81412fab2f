"""P(clean) calibrated on the probes (`pyro_dps.clean_probability`): the isotonic fit, its smoothing, Bayes'
rule at the prior, the cross-fitting that keeps the probes' own reliability out of sample, and calibration
against a known posterior."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyro_dps.clean_probability import clean_probability, cross_fitted_probability, fit_calibration
from pyro_dps.errors import DataError
from pyro_dps.probes import GOOD, BAD, NOT_PROBE, probe_calibrated_clean, reliability


def test_separated_probes_give_two_blocks_at_the_jeffreys_rates():
    cal = fit_calibration([0.9, 0.95, 0.99, 0.97], [0.0, 0.01, 0.02, 0.005])
    assert cal.lower.tolist() == [0.0, 0.9] and cal.upper.tolist() == [0.02, 0.99] and cal.base_rate == 0.5
    assert cal.rate.tolist() == pytest.approx([0.5 / 5, 4.5 / 5])
    # constant over a block's probes and beyond the range, linear between the blocks (0.02 .. 0.9)
    assert cal.rate_at([-1.0, 0.01, 0.46, 0.95, 2.0]).tolist() == pytest.approx([0.1, 0.1, 0.5, 0.9, 0.9])


def test_smoothing_that_breaks_the_order_is_pooled_again():
    # isotonic blocks: one corrupted probe alone (smoothed 0.5 / 2 = 0.25), then 1 good among 10 (1.5 / 11 = 0.136):
    # the smoothed rates fall, so the two blocks are pooled, weighted by n + 1: (0.25 * 2 + 1.5) / 13
    good, bad = [0.5], [0.0] + [0.6] * 9
    cal = fit_calibration(good, bad)
    assert np.all(np.diff(cal.rate) >= 0)
    assert cal.rate_at([0.0, 0.55]).tolist() == pytest.approx([2.0 / 13, 2.0 / 13])


def test_bayes_rule_at_the_prior():
    rng = np.random.default_rng(0)
    cal = fit_calibration(rng.uniform(0.3, 1, 30), rng.uniform(0, 0.7, 50))
    s = np.linspace(0, 1, 101)
    # at the probes' own base rate P(clean) is the fitted rate
    assert clean_probability(s, cal, cal.base_rate) == pytest.approx(cal.rate_at(s))
    # at another prior the odds scale by the prior odds over the base rate's
    p = clean_probability(s, cal, 0.2)
    r = cal.rate_at(s)
    assert p / (1 - p) == pytest.approx(r / (1 - r) * (0.2 / 0.8) / (cal.base_rate / (1 - cal.base_rate)))


def test_calibrated_against_a_known_posterior():
    """Probe scores from Beta(4, 1.5) (good) and Beta(1.5, 4) (corrupted), 200 of each; D_t 20,000 examples with a
    clean fraction 0.3, whose exact P(clean | score) is Bayes' rule with the two densities. Over 30 seeds
    (2026-12-03) the ECE of P(clean) against the simulated truth was 0.021 +- 0.006 (max 0.031) and its mean
    absolute gap to the exact posterior 0.031 +- 0.006 (max 0.042), so the bounds are the mean + 4 sd (0.045,
    0.055); the raw score taken as a probability has ECE 0.15, far above them."""
    g, b = stats.beta(4, 1.5), stats.beta(1.5, 4)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        cal = fit_calibration(g.rvs(200, random_state=rng), b.rvs(200, random_state=rng))
        y = rng.uniform(size=20_000) < 0.3
        s = np.where(y, g.rvs(20_000, random_state=rng), b.rvs(20_000, random_state=rng))
        p = clean_probability(s, cal, 0.3)
        exact = 0.3 * g.pdf(s) / (0.3 * g.pdf(s) + 0.7 * b.pdf(s))
        assert reliability(p, y)[1] < 0.045
        assert np.mean(np.abs(p - exact)) < 0.055
        assert reliability(s, y)[1] > 0.1


def test_cross_fitting_leaves_each_pair_out():
    # pair 5 is a good probe at 0.05 beside its corrupted copy at 0.0; in-sample it joins the good block, but
    # calibrated without its pair its score lies between the corrupted block (0.0, 0.5 / 6) and the good one
    # (0.9, 5.5 / 6): 1/18 of the way up
    good, bad = [0.9] * 5 + [0.05], [0.0] * 6
    assert fit_calibration(good, bad).rate_at([0.05])[0] == pytest.approx(6.5 / 7)
    p = cross_fitted_probability(good, bad)
    assert p.tolist() == pytest.approx([5.5 / 6] * 5 + [0.5 / 6 + (5 / 6) / 18] + [0.5 / 6] * 6)
    # unequal counts: each probe is left out alone. Without 0.7 the good block is [0.8, 0.9] (2.5 / 3) and the
    # corrupted one [0.1, 0.2] (0.5 / 3): 0.7 lies 5/6 of the way up; without 0.1 the corrupted block is 0.2 alone
    # (0.5 / 2) and the good one [0.7, 0.9] (3.5 / 4): 0.1 lies below it, 0.2 (without itself) 1/6 of the way up
    p = cross_fitted_probability([0.9, 0.8, 0.7], [0.1, 0.2])
    assert p.tolist() == pytest.approx([2.5 / 3, 2.5 / 3, 0.5 / 3 + 5 / 6 * 2 / 3, 0.25, 0.25 + (0.875 - 0.25) / 6])


def test_probe_calibrated_clean_uses_beta_as_the_prior():
    mean = np.array([0.9, 0.1, 0.8, 0.95, 0.92, 0.02, 0.01])
    status = np.array([NOT_PROBE, NOT_PROBE, NOT_PROBE, GOOD, GOOD, BAD, BAD])
    cal = fit_calibration(mean[3:5], mean[5:])
    assert probe_calibrated_clean(mean, status, {"beta": 0.25}) == pytest.approx(clean_probability(mean, cal, 0.25))
    # without a numeric beta: the mean weight of the user's own rows (0.6)
    assert probe_calibrated_clean(mean, status, {"beta": "auto"}) == pytest.approx(clean_probability(mean, cal, 0.6))
    assert probe_calibrated_clean(mean, None, {"beta": 0.5}) is None


@pytest.mark.parametrize("call, message", [
    (lambda: fit_calibration([], [0.1]), "needs good and corrupted probes"),
    (lambda: fit_calibration([0.5, np.nan], [0.1]), "must be finite"),
    (lambda: clean_probability([0.5], fit_calibration([0.9], [0.1]), 1.0), "prior fraction"),
    (lambda: clean_probability([0.5], fit_calibration([0.9], [0.1]), True), "prior fraction"),
    (lambda: clean_probability([np.inf], fit_calibration([0.9], [0.1]), 0.5), "must be finite"),
    (lambda: cross_fitted_probability([0.9], [0.1, 0.2]), "at least 2 good and 2 corrupted"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(DataError, match=message):
        call()


def test_chance_ece_is_what_calibrated_probabilities_show_on_a_finite_sample():
    from pyro_dps.probes import chance_ece

    # certain probabilities are never wrong by chance
    assert chance_ece(np.array([0.0] * 10 + [1.0] * 10)) == 0.0
    # 40 outcomes at p = 1/2 (one bin): the ECE is |X / 40 - 1/2| with X ~ Binomial(40, 1/2), whose mean is exact;
    # the 200 simulations' mean has a standard error of sd / sqrt(200) (sd about 0.047): 4 standard errors allowed
    k = np.arange(41)
    exact = float(np.sum(stats.binom.pmf(k, 40, 0.5) * np.abs(k / 40 - 0.5)))
    sd = float(np.sqrt(np.sum(stats.binom.pmf(k, 40, 0.5) * (np.abs(k / 40 - 0.5) - exact) ** 2)))
    assert chance_ece(np.full(40, 0.5)) == pytest.approx(exact, abs=4 * sd / np.sqrt(200))
    assert chance_ece(np.zeros(0)) is None
