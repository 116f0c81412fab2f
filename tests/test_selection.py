"""Selection rules: arrays in, arrays out, with answers worked out by hand."""
import numpy as np
import pytest

from pyro_dps.errors import DataError
from pyro_dps.selection import (WeightSelection, beta_budget, budget_rule, chain_jaccard, credible_interval, jaccard,
                                mean_offdiagonal, posterior_mean, prob_above, probability_rule, select_budget,
                                select_by_probability, select_top_beta, selection_table, top_beta_rule, uncertain)


def test_top_beta_and_budget():
    mean = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    np.testing.assert_array_equal(select_budget(mean, 2), [False, True, False, True, False])
    np.testing.assert_array_equal(select_top_beta(mean, 0.4), select_budget(mean, 2))  # floor(5 * 0.4) = 2
    assert beta_budget(5, 0.5) == 2 and beta_budget(10, 0.3) == 3 and beta_budget(1397, 0.5) == 698
    assert select_top_beta(mean, 1.0).all()
    assert not select_budget(mean, 0).any()
    # ties: earlier positions win, deterministically
    np.testing.assert_array_equal(select_budget(np.array([0.5, 0.5, 0.5]), 2), [True, True, False])
    for bad in (-1, 6, 2.5, True):
        with pytest.raises(DataError, match="budget"):
            select_budget(mean, bad)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(DataError, match="beta"):
            select_top_beta(mean, bad)
    with pytest.raises(DataError, match="non-finite"):
        select_budget(np.array([0.1, np.nan]), 1)


def test_probability_rule():
    # 10 draws of 3 examples: P(w > 0.5) = 1.0, 0.6, 0.0
    draws = np.zeros((10, 3))
    draws[:, 0] = 0.9
    draws[:6, 1] = 0.8
    draws[6:, 1] = 0.2
    draws[:, 2] = 0.1
    np.testing.assert_allclose(prob_above(draws, 0.5), [1.0, 0.6, 0.0])
    np.testing.assert_array_equal(select_by_probability(draws, 0.5, 0.9), [True, False, False])
    np.testing.assert_array_equal(select_by_probability(draws, 0.5, 0.6), [True, True, False])
    # (chain, draw, N) draws are pooled over chains
    np.testing.assert_allclose(prob_above(draws.reshape(2, 5, 3), 0.5), [1.0, 0.6, 0.0])
    with pytest.raises(DataError, match="q"):
        select_by_probability(draws, 0.5, 1.2)


def test_uncertain_and_interval():
    draws = np.stack([np.linspace(0.0, 1.0, 101), np.linspace(0.6, 0.9, 101), np.linspace(0.1, 0.4, 101)], axis=1)
    lo, hi = credible_interval(draws, 0.9)
    np.testing.assert_allclose(lo, [0.05, 0.615, 0.115])
    np.testing.assert_allclose(hi, [0.95, 0.885, 0.385])
    np.testing.assert_array_equal(uncertain(draws, 0.5), [True, False, False])
    np.testing.assert_array_equal(uncertain(draws, 0.7), [True, True, False])
    # a narrower interval straddles less: example 0's 5% interval is [0.475, 0.525]
    np.testing.assert_array_equal(uncertain(draws, 0.5, interval=0.05), [True, False, False])
    np.testing.assert_array_equal(uncertain(draws, 0.6, interval=0.05), [False, False, False])
    np.testing.assert_allclose(posterior_mean(draws), [0.5, 0.75, 0.25])


def test_chain_jaccard():
    # chain 0 and 1 prefer examples {0, 1}; chain 2 prefers {1, 2}
    draws = np.zeros((3, 4, 3))
    draws[0, :, :] = [0.9, 0.8, 0.1]
    draws[1, :, :] = [0.8, 0.9, 0.2]
    draws[2, :, :] = [0.1, 0.9, 0.8]
    m = chain_jaccard(draws, top_beta_rule(2 / 3))
    np.testing.assert_allclose(m, [[1, 1, 1 / 3], [1, 1, 1 / 3], [1 / 3, 1 / 3, 1]])
    assert mean_offdiagonal(m) == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    np.testing.assert_allclose(chain_jaccard(draws, budget_rule(2)), m)
    p = chain_jaccard(draws, probability_rule(0.5, 0.9))
    np.testing.assert_allclose(p, m)
    assert jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(DataError, match="chain"):
        chain_jaccard(draws[0], top_beta_rule(0.5))


def test_selection_table_and_class():
    rng = np.random.default_rng(0)
    draws = np.clip(rng.normal([0.9, 0.1, 0.5, 0.95], 0.05, size=(2, 50, 4)), 0, 1)
    ids = np.array([10, 11, 12, 13])
    labels = np.array([1, 2, 1, 2])
    keep = select_top_beta(posterior_mean(draws), 0.5)
    table = selection_table(draws, ids, {"label": labels}, keep, tau=0.5, threshold=0.7)
    assert list(table.columns) == ["example", "label", "mean", "sd", "lower90", "upper90", "p_above_0.5",
                                   "selected", "uncertain"]
    assert list(table["example"]) == [10, 11, 12, 13]
    assert list(table["selected"]) == [True, False, False, True]
    assert table["uncertain"].sum() == 0
    assert (table["lower90"] <= table["mean"]).all() and (table["mean"] <= table["upper90"]).all()
    csv = table.to_csv(index=False)
    assert csv.splitlines()[0].startswith("example,label,mean")
    sel = WeightSelection(draws, ids, {"label": labels})
    np.testing.assert_array_equal(sel.top_beta(0.5), keep)
    np.testing.assert_array_equal(sel.budget(1), [False, False, False, True])
    np.testing.assert_array_equal(sel.by_probability(0.5, 0.9), [True, False, False, True])
    assert sel.chain_jaccard(top_beta_rule(0.5)).shape == (2, 2)
    assert len(sel.table(keep)) == 4
    with pytest.raises(DataError, match="example_ids"):
        selection_table(draws, ids[:2])
    with pytest.raises(DataError, match="draws"):
        selection_table(np.zeros(3))


def test_weight_selection_from_arviz_data():
    import xarray as xr

    from pyro_dps.arviz_data import to_arviz

    rng = np.random.default_rng(1)
    w = rng.random((2, 5, 3)).astype(np.float32)
    ds = xr.Dataset({"weights": (("chain", "draw", "example"), w)}, coords={"example": [7, 8, 9]})
    ds = ds.assign_coords(clean=("example", np.array([True, False, True])))
    sel = WeightSelection.from_data(to_arviz(ds))
    np.testing.assert_array_equal(sel.example_ids, [7, 8, 9])
    np.testing.assert_array_equal(sel.draws, w)
    assert set(sel.groups) == {"clean"}
