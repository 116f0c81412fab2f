"""A run made in a notebook gets what a CLI run gets: `Posterior.save(run_dir)` writes a run directory the readers
read (`to_arviz`, `diagnose`, `pyro-dps report`), `Posterior.report(path)` the same page from memory; neither
writes into a directory or over a file that is not pyro-dps's own."""
import hashlib
import re

import numpy as np
import pytest
import torch
from torch import nn

import pyro_dps as dps
from pyro_dps.report import SECTIONS

N = 120
FLIPPED = np.arange(0, N, 5)  # every fifth training label flipped
CONFIG = dict(kernel="psgld", step_size=1e-3, chains=2, warmup=20, samples=10, thin=2, batch_size=32, progress=False,
              snapshots=2, seed=3)


def _problem() -> dps.Problem:
    """Two classes of 16 features (4 x 4 thumbnails), a linear classifier; the meta set is clean."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 16, generator=g)
    y = (x[:, 0] > 0).long()
    y[FLIPPED] = 1 - y[FLIPPED]
    torch.manual_seed(0)
    return dps.Problem(nn.Linear(16, 2), x, y, x[:20], (x[:20, 0] > 0).long())


def _clean() -> np.ndarray:
    clean = np.ones(N, bool)
    clean[FLIPPED] = False
    return clean


@pytest.fixture(scope="module")
def post():
    return dps.fit(dps.load_model("bads"), _problem(), {"beta": 0.7}, dps.SamplerConfig(**CONFIG))


@pytest.fixture(scope="module")
def saved(post, tmp_path_factory):
    return post.save(tmp_path_factory.mktemp("nb") / "run", coords={"clean": _clean()}, echo=lambda *a: None)


def _tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def test_save_writes_a_run_directory_the_readers_read(post, saved):
    assert {p.name for p in saved.iterdir()} == {"metrics.json", "weights.csv", "draws.nc", "weights_by_group.png",
                                                 "examples.npz", "report.html", "report.selection.csv",
                                                 ".pyro-dps-manifest.json"}
    assert not [p for p in saved.parent.iterdir() if "staging" in p.name or p.name.endswith(".lock")]
    mean = post.weight_summary()["mean"]
    data = dps.to_arviz(saved)
    np.testing.assert_allclose(dps.weight_draws(data).mean(("chain", "draw")).values, mean, rtol=1e-5)
    assert data.posterior["clean"].values.tolist() == _clean().tolist()
    diag = dps.diagnose(saved)
    np.testing.assert_allclose(diag.weights["mean"].to_numpy(), mean, rtol=1e-5)
    assert [(c.name, c.status) for c in dps.check_convergence(data)] == [(c.name, c.status) for c in post.diagnose()]
    import pandas as pd

    weights = pd.read_csv(saved / "weights.csv")
    np.testing.assert_allclose(weights["mean"], mean, atol=1e-6)
    assert weights["label"].tolist() == post.problem.y_train.tolist() and weights["suggested_label"].between(0, 1).all()


def test_the_saved_run_has_the_cli_report(saved):
    text = (saved / "report.html").read_text()
    assert all(f'id="{s}"' in text for s in SECTIONS) and f"run {saved}" in text
    assert "<th>clean (ground truth)</th>" in text  # the coordinates the caller gave
    assert re.search(r'<img class="thumb" src="data:image/png;base64,', text)  # 4 x 4 inputs: thumbnails
    from pyro_dps.cli import main

    # the page a save builds from memory is the one `pyro-dps report` builds from the saved files
    again = saved.parent / "again.html"
    assert main(["report", str(saved), "--out", str(again)]) == 0

    def undated(page: str) -> str:
        return re.sub(r"generated [0-9: -]+UTC", "", page).replace("again.selection.csv", "report.selection.csv")

    assert undated(again.read_text()) == undated(text)


def test_report_from_memory_is_the_saved_runs_page(post, saved, tmp_path):
    out = post.report(tmp_path / "r.html", coords={"clean": _clean()}, echo=lambda *a: None)
    assert out == tmp_path / "r.html"
    text = out.read_text()
    for section in ("weights", "diagnostics", "flagged", "selection"):
        assert f'<section id="{section}">' in text
    checks = re.search(r'<table class="checks sortable" id="checks-table">.*?</table>', text, re.S).group(0)
    assert all(c.name in checks for c in post.diagnose())
    assert "computed by the run for every example (from the posterior in memory)" in text
    # one builder for both routes: the same per-example table as the saved run's report
    assert (tmp_path / "r.selection.csv").read_text() == (saved / "report.selection.csv").read_text()


def test_report_without_what_the_posterior_lacks(post, tmp_path):
    """No clean flags, no true labels, no test accuracy: those columns and numbers are left out."""
    text = post.report(tmp_path / "plain.html", echo=lambda *a: None).read_text()
    assert "clean (ground truth)" not in text and "Ground truth" not in text and "true label" not in text
    assert "BADS report: plain" in text and "run a Posterior in memory" in text
    with pytest.raises(dps.ConfigError, match="already exists; pass overwrite=True"):
        post.report(tmp_path / "plain.html")
    post.report(tmp_path / "plain.html", overwrite=True, echo=lambda *a: None)


def test_save_refuses_a_directory_it_did_not_write(post, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("the user's")
    (user / "metrics.json").write_text("{}")
    before = _tree(user)
    for overwrite in (False, True):
        with pytest.raises(dps.ConfigError, match="not empty|not a directory pyro-dps wrote"):
            post.save(user, overwrite=overwrite)
        assert _tree(user) == before
    assert not [p for p in tmp_path.iterdir() if p.name != "mine"]  # no staging folder, no lock left


def test_save_over_its_own_directory_only_with_overwrite(post, tmp_path):
    run = post.save(tmp_path / "run", echo=lambda *a: None)
    (run / "notes.txt").write_text("the user's")
    with pytest.raises(dps.ConfigError, match="not empty"):
        post.save(run)
    assert post.save(run, overwrite=True, echo=lambda *a: None) == run
    assert (run / "notes.txt").read_text() == "the user's" and (run / "draws.nc").is_file()


def test_streamed_draws_stay_readable_after_save(tmp_path):
    config = dps.SamplerConfig(**{**CONFIG, "memory_budget_mb": 0.001})
    post = dps.fit(dps.load_model("bads"), _problem(), {"beta": 0.7}, config, spill_path=str(tmp_path / "spill.nc"))
    assert post.draws.streamed
    before = post.draws.weights().values.copy()
    post.save(tmp_path / "a", echo=lambda *a: None)
    post.save(tmp_path / "b", echo=lambda *a: None)
    assert (tmp_path / "spill.nc").is_file()
    np.testing.assert_array_equal(post.draws.weights().values, before)
    for run in ("a", "b"):
        np.testing.assert_array_equal(dps.weight_draws(dps.to_arviz(tmp_path / run)).values, before)


def test_save_with_probe_rows_writes_p_clean_and_leaves_probes_out(post, tmp_path, monkeypatch):
    """A notebook run whose last 8 rows are marked as probes (4 good copies, 4 corrupted) gets what a CLI run with
    probes gets: P(clean) calibrated on them, no clean flag on them, and a histogram of the user's rows only."""
    import pandas as pd

    from pyro_dps.clean_probability import clean_probability, fit_calibration
    from pyro_dps.probes import BAD, GOOD, PROBE_GROUP

    import pyro_dps.outputs as outputs

    drawn = []
    monkeypatch.setattr(outputs, "save_weight_histograms", lambda path, mean, *a, **k: drawn.append(len(mean)))
    status = np.zeros(N, np.int64)
    status[-8:-4], status[-4:] = GOOD, BAD
    out = post.save(tmp_path / "run", coords={"clean": _clean(), PROBE_GROUP: status}, echo=lambda *a: None)
    weights = pd.read_csv(out / "weights.csv")
    mean = post.weight_summary()["mean"]
    expected = clean_probability(mean, fit_calibration(mean[-8:-4], mean[-4:]), 0.7)  # the prior: beta = 0.7
    np.testing.assert_allclose(weights["p_clean"], expected, atol=2e-6)
    assert weights["clean"].isna().tolist() == [False] * (N - 8) + [True] * 8
    assert drawn == [N - 8]  # the histogram shows the user's own rows
