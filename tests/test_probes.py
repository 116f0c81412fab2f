"""Probe examples (pyro_dps.probes): the split, the self-check's numbers on draws whose answer is known, the
training metrics that leave the probes out, the setting, and one small run end to end."""
import csv
import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pyro_dps.clean_probability import clean_probability, cross_fitted_probability, fit_calibration
from pyro_dps.config import DEMO, validate_config
from pyro_dps.data import from_arrays
from pyro_dps.errors import ConfigError, DataError
from pyro_dps.outputs import write_weights_csv
from pyro_dps.probes import (BAD, GOOD, NOT_PROBE, PROBE_GROUP, ProbeSet, add_probes, calibrated_threshold, chance_ece,
                             non_probe_mask, probe_report, probes_from_group, reliability)
from pyro_dps.scenario import build_data, mean_weight_by_group, weight_metrics


def _data(meta_per_class=4, k=3, n_train=30, seed=0):
    """Small labelled splits with ground truth and a group: meta rows carry distinct features (row id)."""
    rng = np.random.default_rng(seed)
    y_meta = np.repeat(np.arange(k), meta_per_class)
    x_meta = np.stack([np.arange(len(y_meta)), -np.arange(len(y_meta))], 1).astype(np.float32) + 1000
    y_true = rng.integers(0, k, n_train)
    clean = rng.random(n_train) < 0.6
    y_train = np.where(clean, y_true, (y_true + 1) % k)
    return from_arrays(rng.normal(size=(n_train, 2)), y_train, x_meta, y_meta, rng.normal(size=(6, 2)),
                       np.arange(6) % k, num_classes=k, clean=clean, y_train_true=y_true,
                       groups={"source": rng.integers(0, 2, n_train)})


# ------------------------------------------------------------------------------------------- the split
def test_split_moves_meta_examples_into_train_twice():
    data = _data()
    out, probes = add_probes(data, per_class=2, seed=3)
    k, p = 3, 2 * 3
    assert out.n_meta == data.n_meta - 2 * k and out.n_train == data.n_train + 2 * p
    assert list(probes.good) == list(range(30, 30 + p)) and list(probes.bad) == list(range(30 + p, 30 + 2 * p))
    # the appended rows are exactly the held-out meta examples (features and true labels), twice
    meta_rows = {tuple(x): int(y) for x, y in zip(data.x_meta.tolist(), data.y_meta.tolist())}
    kept = {tuple(x) for x in out.x_meta.tolist()}
    held = [tuple(x) for x in out.x_train[probes.good].tolist()]
    assert set(held).isdisjoint(kept) and len(set(held)) == p and set(held) | kept == set(meta_rows)
    assert torch.equal(out.x_train[probes.good], out.x_train[probes.bad])
    assert out.y_train[probes.good].tolist() == [meta_rows[x] for x in held]
    assert np.bincount(out.y_train[probes.good].numpy(), minlength=k).tolist() == [2] * k  # stratified
    assert np.bincount(out.y_meta.numpy(), minlength=k).tolist() == [2] * k
    # corrupted copies: every label wrong, in range
    bad, good = out.y_train[probes.bad], out.y_train[probes.good]
    assert bool((bad != good).all()) and bool(((bad >= 0) & (bad < k)).all())
    # ground truth and groups extended; the original rows untouched
    assert torch.equal(out.x_train[:30], data.x_train) and torch.equal(out.y_train[:30], data.y_train)
    assert out.clean[probes.good].all() and not out.clean[probes.bad].any() and torch.equal(out.clean[:30], data.clean)
    assert torch.equal(out.y_train_true[probes.good], good) and torch.equal(out.y_train_true[probes.bad], good)
    assert out.groups[PROBE_GROUP].tolist() == [NOT_PROBE] * 30 + [GOOD] * p + [BAD] * p
    assert out.groups["source"][30:].tolist() == [-1] * 2 * p
    assert torch.equal(out.groups["source"][:30], data.groups["source"])
    back = probes_from_group(out.groups[PROBE_GROUP].numpy())
    assert np.array_equal(back.good, probes.good) and np.array_equal(back.bad, probes.bad)
    assert non_probe_mask(out).tolist() == [True] * 30 + [False] * 2 * p


def test_split_is_seeded():
    a, _ = add_probes(_data(), 2, seed=5)
    b, _ = add_probes(_data(), 2, seed=5)
    c, _ = add_probes(_data(), 2, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not (torch.equal(a.x_train, c.x_train) and torch.equal(a.y_train, c.y_train))


def test_corrupted_labels_cover_the_other_classes_uniformly():
    data, probes = add_probes(_data(meta_per_class=400, k=4), 399, seed=0)
    good, bad = data.y_train[probes.good].numpy(), data.y_train[probes.bad].numpy()
    assert (good != bad).all()
    for c in range(4):  # 399 wrong labels per class, about 133 on each of the 3 others
        counts = np.bincount(bad[good == c], minlength=4)
        assert counts[c] == 0 and all(90 < counts[o] < 180 for o in range(4) if o != c), counts


def test_zero_probes_changes_nothing():
    data = _data()
    out, probes = add_probes(data, 0, seed=0)
    assert out is data and len(probes) == 0 and non_probe_mask(out).all()


@pytest.mark.parametrize("per_class, message", [(-1, "probes_per_class must be an integer"),
                                                (True, "probes_per_class must be an integer"),
                                                (1.5, "probes_per_class must be an integer"),
                                                (4, "would leave class 0 with 0 meta examples")])
def test_bad_requests_are_refused(per_class, message):
    with pytest.raises(ConfigError, match=message):
        add_probes(_data(meta_per_class=4), per_class, seed=0)


def test_probes_twice_and_non_classifier_data_are_refused():
    once, _ = add_probes(_data(), 1, seed=0)
    with pytest.raises(ConfigError, match="already has a group named 'probe'"):
        add_probes(once, 1, seed=0)
    from dataclasses import replace

    regression = replace(_data(), y_meta=torch.zeros(12, dtype=torch.float32))  # not a classifier's labels
    with pytest.raises(ConfigError, match="needs a classifier's data"):
        add_probes(regression, 1, seed=0)


# ------------------------------------------------------------------------------------------- the check
def _draws(p_good, p_bad, n_draws=10, chains=2, others=5, rng=None, shuffle=True):
    """(chain, draw, others + P) draws: probe j has a fraction p of its draws above tau = 0.5 (values 0.9 and
    0.1, shuffled over the draws unless not `shuffle`); `others` non-probe rows in front, random."""
    rng = rng or np.random.default_rng(0)
    cols = []
    for p in [*p_good, *p_bad]:
        above = round(p * chains * n_draws)
        col = np.array([0.9] * above + [0.1] * (chains * n_draws - above))
        cols.append(rng.permutation(col) if shuffle else col)
    probe = np.stack(cols, 1).reshape(chains, n_draws, -1)
    front = rng.random((chains, n_draws, others))
    probes = ProbeSet(np.arange(others, others + len(p_good)), np.arange(others + len(p_good), others + len(cols)))
    return np.concatenate([front, probe], -1), probes


def test_perfect_separation():
    w, probes = _draws([1.0] * 5, [0.0] * 5)
    r = probe_report(w, probes)
    assert r["auroc"] == 1.0 and r["ece"] == 0.0 and r["precision"] == 1.0 and r["recall"] == 1.0
    assert (r["n_good"], r["n_bad"], r["selected"]) == (5, 5, 5)
    assert [b["count"] for b in r["reliability"]] == [5] + [0] * 8 + [5]
    assert r["reliability"][9]["fraction_good"] == 1.0 and r["reliability"][0]["fraction_good"] == 0.0
    assert r["reliability"][4]["mean_p"] is None
    assert r["calibrated_q"] == 0.01 and r["calibrated_recall"] == 1.0  # q = 0 keeps the corrupted ones too


def test_calibrated_probabilities_give_ece_zero():
    """P(w > tau) = 0.7 for every probe and 70% of them good: calibrated, however uninformative."""
    w, probes = _draws([0.7] * 7, [0.7] * 3, shuffle=False)  # the same draws: equal means to the last bit
    r = probe_report(w, probes)
    assert r["ece"] == pytest.approx(0.0, abs=1e-12)
    assert [b["count"] for b in r["reliability"]] == [0] * 7 + [10, 0, 0]
    assert r["auroc"] == 0.5  # equal means: no ranking
    assert r["selected"] == 0 and r["precision"] is None and r["recall"] == 0.0
    assert r["calibrated_q"] is None  # every rule keeps all or none: precision 0.7 at best


def test_miscalibrated_case_by_hand():
    """Good probes at P = 0.9 (4), corrupted at 0.9 (2) and 0.6 (4). Bin 9: 6 probes, mean P 0.9, fraction
    good 4/6; bin 6: 4 probes, mean P 0.6, fraction good 0. ECE = (6 |0.9 - 2/3| + 4 |0.6 - 0|) / 10 = 0.38."""
    w, probes = _draws([0.9] * 4, [0.9] * 2 + [0.6] * 4, shuffle=False)  # equal means are equal to the last bit
    r = probe_report(w, probes, tau=0.5, q=0.9)
    assert r["ece"] == pytest.approx((6 * abs(0.9 - 4 / 6) + 4 * 0.6) / 10)
    assert r["precision"] == pytest.approx(4 / 6) and r["recall"] == 1.0 and r["selected"] == 6
    assert r["auroc"] == pytest.approx((4 * 4 + 0.5 * 4 * 2) / 24)  # 16 pairs won, 8 tied, of 4 x 6
    assert r["mean_weight_good"] == pytest.approx(0.9 * 0.9 + 0.1 * 0.1)
    # the calibrated threshold: no q reaches 0.95; 0.6 first at q = 0.61 (the P = 0.6 ones drop out)
    assert calibrated_threshold(w, probes, target=0.95) is None
    assert calibrated_threshold(w, probes, target=0.6) == 0.61
    assert calibrated_threshold(w, probes, target=0.4) == 0.0
    assert calibrated_threshold(w, probes, target=0.6, grid=[0.95, 0.7, 0.3]) == 0.7


def test_report_reads_only_the_probe_rows():
    w, probes = _draws([0.8, 1.0, 0.3], [0.2, 0.5, 0.0], others=7)
    r = probe_report(w, probes)
    w2 = w.copy()
    w2[..., :7] = 1 - w2[..., :7]  # other rows' draws do not matter
    assert probe_report(w2, probes) == r
    flat = w.reshape(-1, w.shape[-1])  # (samples, N) draws give the same report
    assert probe_report(flat, probes) == r
    assert r["auroc"] == pytest.approx(roc_auc_score(probes.is_good, flat.mean(0)[probes.rows]))


def test_reliability_table_and_bad_input():
    rng = np.random.default_rng(1)
    p, good = rng.random(200), rng.random(200) < 0.5
    table, ece = reliability(p, good, bins=5)
    assert sum(b["count"] for b in table) == 200 and len(table) == 5
    by_hand = sum(abs(p[m].mean() - good[m].mean()) * m.sum()
                  for m in (np.minimum((p * 5).astype(int), 4) == b for b in range(5))) / 200
    assert ece == pytest.approx(by_hand)
    edges = reliability(np.array([0.0, 0.1, 0.2, 0.3, 0.7, 1.0]), np.ones(6, bool))[0]
    assert [b["count"] for b in edges] == [1, 1, 1, 1, 0, 0, 0, 1, 0, 1]  # k / 10 in bin k; 1.0 in the last
    with pytest.raises(DataError, match="empty"):
        probe_report(np.zeros((2, 3, 4)), ProbeSet(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    with pytest.raises(DataError, match="probe rows"):
        probe_report(np.zeros((2, 3, 4)), ProbeSet(np.array([3]), np.array([4])))


# ------------------------------------------------------------------------------------------- training results
def test_training_metrics_leave_the_probes_out(tmp_path):
    data = _data()
    with_probes, probes = add_probes(data, 2, seed=0)
    rng = np.random.default_rng(2)
    mean = rng.random(data.n_train)
    full = np.concatenate([mean, rng.random(len(probes))])
    other = full.copy()
    other[probes.good], other[probes.bad] = 0.0, 1.0  # the probes' weights as wrong as they can be
    expected = weight_metrics(mean, data)
    assert weight_metrics(full, with_probes) == expected == weight_metrics(other, with_probes)
    assert expected["noise_auroc"] == pytest.approx(roc_auc_score(data.clean.numpy(), mean))
    groups = mean_weight_by_group(full, with_probes)
    assert groups == mean_weight_by_group(mean, data) == mean_weight_by_group(other, with_probes)
    assert PROBE_GROUP not in groups and "-1" not in groups["source"]
    # weights.csv: every row, the clean flag on the user's own rows only
    summary = {key: full for key in ("mean", "sd", "q05", "q95")}
    write_weights_csv(tmp_path / "w.csv", summary, with_probes.y_train.numpy(), with_probes.clean.numpy(),
                      flagged=non_probe_mask(with_probes))
    rows = list(csv.DictReader((tmp_path / "w.csv").open()))
    assert len(rows) == with_probes.n_train
    assert [r["clean"] for r in rows[:30]] == [str(int(c)) for c in data.clean.tolist()]
    assert all(r["clean"] == "" for r in rows[30:])


# ------------------------------------------------------------------------------------------- the setting
def test_setting_validated_and_off_unless_asked():
    assert DEMO["data"]["probes_per_class"] == 2
    assert validate_config(DEMO)["data"]["probes_per_class"] == 2
    assert "probes_per_class" not in validate_config({})["data"]  # a digits config does not inherit the demo's
    assert validate_config({"data": {"probes_per_class": 3}})["data"]["probes_per_class"] == 3
    for value, message in [(-1, "data.probes_per_class must be an integer >= 0"),
                           (10 ** 7, "data.probes_per_class must be an integer <= 1000000"),
                           ("2", "data.probes_per_class must be int"), (True, "data.probes_per_class must be int"),
                           (10, "data.probes_per_class = 10 must be below data.meta_per_class = 10")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config({"data": {"probes_per_class": value}})


def test_build_data_adds_the_probes():
    spec = {"source": "digits", "seed": 0, "noise": "symmetric", "noise_rate": 0.5, "meta_per_class": 10,
            "test_per_class": 30}
    plain, probed = build_data(spec), build_data({**spec, "probes_per_class": 2})
    assert probed.n_meta == plain.n_meta - 20 and probed.n_train == plain.n_train + 40
    assert torch.equal(probed.x_train[:plain.n_train], plain.x_train)
    assert probed.groups[PROBE_GROUP].bincount().tolist() == [plain.n_train, 20, 20]
    assert torch.equal(build_data({**spec, "probes_per_class": 2}).x_train, probed.x_train)  # seeded
    with pytest.raises(ConfigError, match="data.probes_per_class = 10 would leave class 0"):
        build_data({**spec, "probes_per_class": 10})


# ------------------------------------------------------------------------------------------- end to end
TINY_PROBES = {"name": "tiny-probes", "data": {"test_per_class": 160, "meta_per_class": 5, "probes_per_class": 2},
               "network": {"hidden": [16]}, "model": {"hyper": {"beta": 0.5}},  # a fixed beta: no estimate to run
               "sampler": {"chains": 2, "warmup": 40, "samples": 6, "thin": 2, "snapshots": 1, "batch_size": 32},
               "baselines": {}}


def test_run_reports_the_probes(tmp_path, monkeypatch):
    import pyro_dps.report.convergence as convergence
    from pyro_dps.arviz_data import load_draws_file
    from pyro_dps.scenario import run_scenario

    monkeypatch.setattr(convergence, "MAX_DIAG_EXAMPLES", 50)  # R-hat/ESS of 50 weights keep the run short
    out = tmp_path / "run"
    doc = run_scenario(validate_config(TINY_PROBES), out, progress=False, echo=lambda *a: None)
    saved = json.loads((out / "metrics.json").read_text())
    p = saved["probes"]
    assert p == json.loads(json.dumps(doc["probes"]))
    assert (p["n_good"], p["n_bad"]) == (20, 20) and 0 <= p["auroc"] <= 1 and 0 <= p["ece"] <= 1
    assert p["recall"] is not None and len(p["reliability"]) == 10
    assert sum(b["count"] for b in p["reliability"]) == 40
    draws = load_draws_file(out / "draws.nc")  # the probe rows are recoverable from the run directory
    status = draws[PROBE_GROUP].values
    n_own = int((status == NOT_PROBE).sum())
    assert draws.sizes["example"] == n_own + 40 and status[n_own:].tolist() == [GOOD] * 20 + [BAD] * 20
    w = draws["weights"].transpose("chain", "draw", "example").values
    assert probe_report(w, probes_from_group(status)) == p
    # the training result is the user's own rows only
    clean = draws["clean"].values.astype(bool)[:n_own]
    own_mean = w.reshape(-1, w.shape[-1]).mean(0)[:n_own]
    assert saved["weights"]["noise_auroc"] == pytest.approx(roc_auc_score(clean, own_mean))
    assert PROBE_GROUP not in saved["mean_weight_by_group"]
    rows = list(csv.DictReader((out / "weights.csv").open()))
    assert len(rows) == n_own + 40 and all(r["clean"] == "" for r in rows[n_own:])
    # P(clean): the posterior mean weight calibrated on the 20 + 20 probes at the prior beta = 0.5
    mean = w.reshape(-1, w.shape[-1]).mean(0)
    expected = clean_probability(mean, fit_calibration(mean[n_own:n_own + 20], mean[n_own + 20:]), 0.5)
    assert np.array([float(r["p_clean"]) for r in rows]) == pytest.approx(expected, abs=2e-6)
    assert saved["weights"]["p_clean_ece"] == pytest.approx(reliability(expected[:n_own], clean)[1], abs=1e-5)
    cross = cross_fitted_probability(mean[n_own:n_own + 20], mean[n_own + 20:])
    assert p["p_clean"]["ece"] == pytest.approx(reliability(cross, np.arange(40) < 20)[1])
    assert p["p_clean"]["ece_chance"] == pytest.approx(chance_ece(cross))
    text = (out / "report.html").read_text()
    section = re.search(r'<section id="probes">.*?</section>', text, re.S).group(0)
    assert "Self-check with probe examples" in section and section.count("data:image/png;base64,") == 2
    assert "P(clean)" in section and "<code>p_clean</code>" in section
    assert f"<td>{p['ece']:.3g}</td>" in section and "precision" in section and "AUROC" in section
    assert '<a href="#probes">' in text and f"{n_own} training examples (+ 40 probe examples)" in text
    weights = re.search(r'<section id="weights">.*?</section>', text, re.S).group(0)
    assert f"<td>clean</td><td>clean</td><td>{int(clean.sum())}</td>" in weights and "<td>probe</td>" not in weights
    table = list(csv.DictReader((out / "report.selection.csv").open()))
    assert len(table) == n_own and "probe" not in table[0]
    assert max(int(e) for e in re.findall(r"<b>#(\d+)</b>", text)) < n_own  # galleries: own examples only


def test_resume_identity_names_the_setting():
    from pyro_dps.fingerprint import first_differences
    from pyro_dps.scenario import run_identity

    def identity(data):
        config = validate_config({"data": data})
        return run_identity(config, {**config["data"], "seed": 0})

    assert first_differences(identity({"probes_per_class": 2}), identity({"probes_per_class": 3})) == \
        [("config.data.probes_per_class", "2", "3")]
    assert first_differences(identity({"probes_per_class": 2}), identity({}))[0][0] == "config.data.probes_per_class"
    assert first_differences(identity({"probes_per_class": 0}), identity({})) == []  # 0: no probes
