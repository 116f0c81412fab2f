"""Suggested labels: the run writes the posterior predictive's class and probability of every training example
into weights.csv (`pyro_dps.suggested`), probe rows included as weights.csv includes them; the report reads
them for the user's own examples only."""
import tomllib

import numpy as np
import pytest
import torch

from pyro_dps.errors import DataError
from pyro_dps.suggested import predictive_suggestions, read_suggestions, run_suggestions

from tiny_configs import TINY


class _Posterior:
    """A stand-in Posterior: class probabilities softmax(x @ theta) per theta (snapshots, or chains' last)."""

    def __init__(self, snapshots, final_theta, out_shape=None):
        self.snapshots, self.final_theta, self.out_shape, self.calls = snapshots, final_theta, out_shape, []

    def predictive_thetas(self):
        return self.snapshots or self.final_theta

    def predict_proba(self, x, ensemble=True, chain=0, batch_size=1024, thetas=None):
        self.calls.append((len(x), ensemble, chain))
        if thetas is None:
            thetas = self.snapshots if ensemble else [self.final_theta[chain]]
        probs = sum((x @ t).softmax(-1) for t in thetas) / len(thetas)
        return probs if self.out_shape is None else probs.reshape(len(x), *self.out_shape)


def test_predictive_suggestions_in_chunks_from_snapshots_or_last_iterates(monkeypatch):
    import pyro_dps.suggested as suggested

    torch.manual_seed(0)
    x, thetas = torch.randn(10, 4), [torch.randn(4, 3) for _ in range(3)]
    expected = (sum((x @ t).softmax(-1) for t in thetas) / 3).max(-1)
    monkeypatch.setattr(suggested, "CHUNK", 4)
    posterior = _Posterior(thetas, [])
    labels, probs = predictive_suggestions(posterior, x, 3)
    assert [c[0] for c in posterior.calls] == [4, 4, 2]  # batches: memory bounded whatever N_t
    np.testing.assert_array_equal(labels, expected.indices.numpy())
    np.testing.assert_allclose(probs, expected.values.numpy(), rtol=1e-6)
    assert labels.dtype == np.int64 and probs.dtype == np.float64
    labels, probs = predictive_suggestions(_Posterior([], thetas), x, 3)  # no snapshots: every chain's last theta
    np.testing.assert_array_equal(labels, expected.indices.numpy())
    np.testing.assert_allclose(probs, expected.values.numpy(), rtol=1e-6)


def test_no_suggestions_without_one_score_per_class():
    x, thetas = torch.randn(6, 4), [torch.randn(4, 6)]
    assert predictive_suggestions(_Posterior(thetas, []), x, 3) is None  # 6 outputs, 3 classes
    assert predictive_suggestions(_Posterior(thetas, [], out_shape=(2, 3)), x, 3) is None  # a sequence model
    messages = []
    broken = _Posterior(None, [])  # predict_proba raises
    assert run_suggestions(broken, type("D", (), {"x_train": x, "num_classes": 3})(), messages.append) is None
    assert messages and messages[0].startswith("warning: suggested labels not written to weights.csv")


def test_probe_rows_get_suggestions_and_the_report_leaves_them_out(tmp_path):
    import pandas as pd

    from pyro_dps.config import validate_config
    from pyro_dps.probes import NOT_PROBE, PROBE_GROUP
    from pyro_dps.arviz_data import load_run
    from pyro_dps.scenario import run_scenario

    config = tomllib.loads(TINY)
    config["data"]["probes_per_class"] = 1
    out = tmp_path / "run"
    run_scenario(validate_config(config), out, progress=False, echo=lambda *a: None)
    weights = pd.read_csv(out / "weights.csv")
    status = load_run(out)[0][PROBE_GROUP].values
    n_own = int((status == NOT_PROBE).sum())
    assert len(weights) == n_own + 20 and weights["suggested_label"].notna().all()
    good, bad = weights.iloc[n_own:n_own + 10], weights.iloc[n_own + 10:]  # the same inputs, two labels
    np.testing.assert_array_equal(good["suggested_label"].to_numpy(), bad["suggested_label"].to_numpy())
    np.testing.assert_allclose(good["p_suggested"].to_numpy(), bad["p_suggested"].to_numpy())
    table = pd.read_csv(out / "report.selection.csv")
    assert len(table) == n_own  # the report's table: the user's own examples
    own = weights.set_index("index").loc[table["example"]]
    np.testing.assert_array_equal(table["suggested_label"].to_numpy(), own["suggested_label"].to_numpy())
    text = (out / "report.html").read_text()
    assert f"over all {n_own} examples" in text


def test_read_suggestions_checks_the_file(tmp_path):
    path = tmp_path / "weights.csv"
    path.write_text("index,label,mean\n0,1,0.5\n")
    assert read_suggestions(path, np.array([0])) is None  # an older run: no columns, no error
    assert read_suggestions(tmp_path / "absent.csv", np.array([0])) is None
    path.write_text("index,label,suggested_label,p_suggested\n0,1,2,0.75\n5,0,0,0.5\n")
    read = read_suggestions(path, np.array([5, 0]))
    assert read["label"].tolist() == [0, 2] and read["prob"].tolist() == [0.5, 0.75]  # by example id
    with pytest.raises(DataError, match="no suggested label for 1"):
        read_suggestions(path, np.array([0, 7]))
    path.write_text("index,label,suggested_label,p_suggested\n0,1,2,0.75\n0,0,0,0.5\n")
    with pytest.raises(DataError, match="duplicate"):
        read_suggestions(path, np.array([0]))
    path.write_text("index,label,suggested_label,p_suggested\n0,1,-1,0.75\n")
    with pytest.raises(DataError, match="weights.csv.*integers >= 0"):
        read_suggestions(path, np.array([0]))
