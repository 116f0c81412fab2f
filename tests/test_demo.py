"""The embedded default end to end: the CLI's files, the metrics contract, and the quality it promises."""
import csv
import json
import math

import numpy as np
import pytest

from pyro_dps.arviz_data import load_draws_file
from pyro_dps.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    assert main(["demo", "--out", str(out), "--seed", "0", "--quiet"]) == 0
    return out


def test_demo_writes_the_contract(demo_run):
    doc = json.loads((demo_run / "metrics.json").read_text())
    assert isinstance(doc["scenario"], str)
    for name in ("bads", "mixing"):
        m = doc["methods"][name]
        assert 0 <= m["test_accuracy"] <= 1 and m["seconds"] > 0
        assert m["test_accuracy_ensemble"] is None or 0 <= m["test_accuracy_ensemble"] <= 1
    assert doc["methods"]["bads"]["test_accuracy_ensemble"] is not None
    w = doc["weights"]
    assert set(w) == {"noise_auroc", "mean_weight_clean", "mean_weight_noisy"}
    rows = list(csv.DictReader((demo_run / "weights.csv").open()))
    assert list(rows[0]) == ["index", "label", "clean", "mean", "sd", "q05", "q95"]
    draws = load_draws_file(demo_run / "draws.nc")
    assert draws["weights"].dims == ("chain", "draw", "example")
    assert draws.sizes["chain"] == 4 and draws.sizes["example"] == len(rows)
    # weights.csv is the summary of draws.nc
    mean = draws["weights"].mean(("chain", "draw")).values
    np.testing.assert_allclose([float(r["mean"]) for r in rows], mean, atol=2e-6)
    q05 = np.array([float(r["q05"]) for r in rows])
    q95 = np.array([float(r["q95"]) for r in rows])
    assert (q05 <= mean + 1e-6).all() and (mean <= q95 + 1e-6).all()
    assert (demo_run / "weights_by_group.png").stat().st_size > 10_000


def test_demo_quality_seed0(demo_run):
    """Issue targets for one seed: BADS >= mixing + 3 points and noise AUROC >= 0.97."""
    doc = json.loads((demo_run / "metrics.json").read_text())
    bads, mixing = doc["methods"]["bads"]["test_accuracy"], doc["methods"]["mixing"]["test_accuracy"]
    assert bads >= mixing + 0.03, (bads, mixing)
    assert doc["weights"]["noise_auroc"] >= 0.97
    assert doc["weights"]["mean_weight_clean"] > doc["weights"]["mean_weight_noisy"]
    assert math.isfinite(doc["methods"]["bads"]["seconds"])
