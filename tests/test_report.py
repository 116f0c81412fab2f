"""report.html: written by a (small) run, by `pyro-dps report`, self-contained, read in a real browser.

The browser test drives headless Chromium through selenium (tests/browser.py; scripts/install_browser.sh installs
both); it skips only when no browser is installed, and keeps its screenshot as RUN_DIR/report_screenshot.png.
"""
import json
import re
import shutil

import numpy as np
import pytest
from browser import browser_errors, chromium, save_screenshot

from pyro_dps.cli import main
from pyro_dps.errors import DPSError
from pyro_dps.report import SECTIONS, ReportError, build_report, write_report, write_run_report
from pyro_dps.report.html import png_bytes


def test_run_scenario_writes_the_report(run_dir):
    report = run_dir / "report.html"
    assert report.is_file()
    text = report.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in text
    assert "small-run" in text and str(run_dir) in text  # the final directory, not the staging one
    assert not list(run_dir.parent.glob(".*staging*"))


def test_run_records_the_model_as_it_ran(run_dir):
    """metrics.json and the report say which potential path ran and every hyper-parameter the model used: the
    configured ones, models/bads.py's own defaults, beta = "auto" resolved, and what the defaults derived."""
    import inspect

    from pyro_dps.models import bads

    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["potential"] == "fused" and "potential_reason" not in doc
    defaults = {k: p.default for k, p in inspect.signature(bads.model).parameters.items() if k != "ctx"}
    assert set(doc["hyper"]) == set(defaults)
    assert {k: v for k, v in doc["hyper"].items() if k != "beta"} == {k: v for k, v in defaults.items() if k != "beta"}
    assert defaults["beta"] == "auto" and 0 < doc["hyper"]["beta"] <= 1  # the estimate the run used
    derived, prior = doc["hyper_derived"], bads.sparsity_prior(197, doc["hyper"]["beta"], None)  # sigma = None
    assert derived["rho_t"] == 1.0 and derived["w_sum_scale"] == pytest.approx(float(prior.scale), rel=1e-6)
    assert derived["w_sum_loc"] == float(prior.loc) == np.floor(197 * doc["hyper"]["beta"])
    config = re.search(r'<section id="config">.*?</section>', (run_dir / "report.html").read_text(), re.S).group(0)
    assert "model as run" in config and "<td>potential path</td><td>fused</td>" in config
    assert "derived w_sum_scale" in config


def test_report_is_self_contained(run_dir):
    text = (run_dir / "report.html").read_text()
    # nothing is fetched: no external src/href/url(), no scripts or stylesheets from elsewhere
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', text)
    assert "url(" not in text and "@import" not in text and "<link" not in text
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) >= 4 + 2 * 12  # 4 figures + the trusted/untrusted galleries
    assert all(src.startswith("data:image/png;base64,") for src in images)
    # digit thumbnails come from the run's own examples.npz, with the true label of corrupted ones
    assert re.search(r"label \d \(true \d\)", text)
    # the full per-example table is a CSV beside the page, not base64 inside it
    assert '<code class="csv">report.selection.csv</code>' in text and "text/csv" not in text
    header = (run_dir / "report.selection.csv").read_text().splitlines()[0]
    assert header.startswith("example,label,clean,mean,sd,lower90,upper90")


def test_cli_report(run_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert all(f'id="{section}"' in text for section in SECTIONS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.html", "r.selection.csv"]  # temporaries renamed


def test_default_output_path(run_dir, tmp_path, monkeypatch):
    import pandas as pd

    import pyro_dps.report.write as report_write

    monkeypatch.setattr(report_write, "build_run", lambda run_dir, *a: ("<html></html>", pd.DataFrame({"x": [1]})))
    copy = tmp_path / "copy"
    copy.mkdir()
    assert write_report(copy) == copy / "report.html"
    assert (copy / "report.html").read_text() == "<html></html>"
    assert (copy / "report.selection.csv").read_text() == "x\n1\n"


@pytest.mark.parametrize("damage, name", [
    (lambda d: shutil.rmtree(d), "does not exist"),
    (lambda d: (d / "metrics.json").unlink(), "metrics.json"),
    (lambda d: (d / "metrics.json").write_text("{broken"), "metrics.json"),
    (lambda d: (d / "metrics.json").write_text(json.dumps([1, 2])), "metrics.json"),
    (lambda d: (d / "draws.nc").unlink(), "draws.nc"),
    (lambda d: (d / "draws.nc").write_bytes(b"\x89HDF\r\n garbage"), "draws.nc"),
])
def test_bad_run_directory_exit_code_2_and_no_file(run_dir, tmp_path, capsys, damage, name):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "report.html").unlink()
    damage(bad)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    assert main(["report", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-dps: error:") and name in err and err.count("\n") == 1
    assert not out.exists() and not list(out.parent.iterdir())  # no half-written or temporary file
    with pytest.raises(ReportError):
        build_report(bad)
    assert issubclass(ReportError, DPSError)


def test_failed_write_keeps_the_old_report(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    out.write_text("old")
    import pyro_dps.report.write as report_write

    def boom(*args, **kwargs):
        raise ReportError("simulated failure")

    monkeypatch.setattr(report_write, "build_run", boom)
    with pytest.raises(ReportError):
        write_report(run_dir, out, overwrite=True)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    messages = []
    assert write_run_report(run_dir, echo=messages.append) is None  # the scenario hook only warns
    assert messages and "report.html not written" in messages[0]


def test_png_encoder_round_trip():
    pytest.importorskip("matplotlib")
    import io

    import matplotlib.image as mpimg

    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = np.stack([gray, 255 - gray, gray // 2], -1)
    for image in (gray, rgb):
        decoded = mpimg.imread(io.BytesIO(png_bytes(image)), format="png")
        np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8).squeeze(), image)


# ------------------------------------------------------------------------------------------- acting on it
def _section(text: str, name: str) -> str:
    return re.search(rf'<section id="{name}">.*?</section>', text, re.S).group(0)


def _rows(table: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_summary_comes_first_with_the_counts(run_dir):
    import pandas as pd

    text = (run_dir / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', text)[:4] == ["summary", "flagged", "confusion", "diagnostics"]
    assert re.findall(r'<section id="([^"]+)"', text)[-1] == "config"
    assert re.search(r'<section id="config"><h2>[^<]*</h2><details>', text)  # the configuration is folded
    csv = pd.read_csv(run_dir / "report.selection.csv")
    summary = _section(text, "summary")
    assert f"<b>{len(csv)}</b> training examples; <b>{int((~csv['selected']).sum())}</b> flagged" in summary
    assert "Estimated corruption rate" in summary and "Convergence:" in summary
    assert "cold posterior (T = 0.01)" in summary  # the run's temperature: the interval is not an error bar
    est = 100 * (1 - csv["mean"].mean())
    assert f"<b>{est:.1f}%</b>" in summary  # 1 - mean weight, averaged
    assert "per class" in summary and "probe" not in summary  # this run had no probes


def test_flagged_rows_have_suggested_labels(run_dir):
    import pandas as pd

    text = (run_dir / "report.html").read_text()
    flagged = _section(text, "flagged")
    headers = re.findall(r"<th>(.*?)</th>", flagged)
    assert headers[:7] == ["example", "id", "given label", "suggested label", "P(suggested)", "weight mean",
                           "90% interval"]
    rows = _rows(flagged)
    csv = pd.read_csv(run_dir / "report.selection.csv").set_index("example")
    weights = pd.read_csv(run_dir / "weights.csv").set_index("index")  # what the run wrote
    assert 0 < len(rows) <= 60 and len(rows) == min(60, int((~csv["selected"]).sum()))
    for row in rows:
        assert row[0].startswith('<img class="thumb" src="data:image/png;base64,')
        example = int(row[1])
        assert not csv.loc[example, "selected"] and int(row[2]) == csv.loc[example, "label"]
        suggested = int(re.sub(r"<[^>]+>", "", row[3]))
        assert suggested == weights.loc[example, "suggested_label"]  # every number from the run's files
        assert float(row[4]) == pytest.approx(weights.loc[example, "p_suggested"], abs=5e-4)
        assert ("<b class=\"sug\">" in row[3]) == (suggested != int(row[2]))  # a changed label stands out
        assert float(row[5]) == pytest.approx(csv.loc[example, "mean"], abs=1e-3)
    means = [float(r[5]) for r in rows]
    assert means == sorted(means)  # lowest weight first
    assert "computed by the run for every example" in flagged
    # the CSV beside the page carries every example's suggestion too
    assert (csv["suggested_label"] == weights.loc[csv.index, "suggested_label"]).all()


def test_ground_truth_columns_only_with_ground_truth(run_dir, tmp_path, monkeypatch):
    import pyro_dps.report.build as report_build

    text = (run_dir / "report.html").read_text()
    assert "<th>true label</th>" in text and "<th>clean (ground truth)</th>" in text  # benchmark data
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with np.load(copy / "examples.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "true_label"}
    np.savez_compressed(copy / "examples.npz", **arrays)
    groups = report_build.example_groups
    monkeypatch.setattr(report_build, "example_groups", lambda data: {k: v for k, v in groups(data).items() if k != "clean"})
    text = build_report(copy)
    assert "true label" not in text and "clean (ground truth)" not in text and "Ground truth" not in text
    rows = _rows(_section(text, "flagged"))
    assert rows and all(len(r) == 7 and re.sub(r"<[^>]+>", "", r[3]).isdigit() for r in rows)


def test_tables_sort_and_filter_inline(run_dir):
    text = (run_dir / "report.html").read_text()
    script = re.search(r"<script>(.*?)</script>", text, re.S).group(1)
    assert "table.sortable" in script and "input.filter" in script and "data-v" in script
    assert "<script src" not in text and not re.search(r"https?://", script)
    for table in ("flagged-table", "checks-table"):
        assert re.search(rf'<table class="[^"]*\bsortable\b[^"]*" id="{table}">', text)
        assert f'<input class="filter" type="search" data-table="{table}"' in text
    assert re.search(r'<td class="num" data-v="[-0-9.e]+">', _section(text, "flagged"))
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', text)  # still self-contained


def test_corruption_rate_from_draws():
    from pyro_dps.selection import corruption_rate, corruption_rate_by_group

    rng = np.random.default_rng(0)
    draws = rng.uniform(size=(2, 50, 30))
    est, lo, hi = corruption_rate(draws)
    per_draw = 1 - draws.reshape(100, 30).mean(1)
    assert est == pytest.approx(1 - draws.mean()) and lo <= est <= hi
    assert (lo, hi) == pytest.approx(tuple(np.quantile(per_draw, [0.05, 0.95])))
    groups = np.repeat(["a", "b", "c"], 10)
    r = corruption_rate_by_group(draws, groups)
    assert list(r["level"]) == ["a", "b", "c"] and list(r["count"]) == [10, 10, 10]
    for i, level in enumerate("abc"):
        assert r["estimate"][i] == pytest.approx(1 - draws[..., groups == level].mean())


def test_weights_csv_has_every_examples_suggested_label(run_dir):
    """The run writes the posterior predictive's class and probability for every D_t example; on the examples
    whose inputs examples.npz stores, they equal what the report recomputes from posterior.safetensors."""
    import pandas as pd

    from pyro_dps.arviz_data import load_run
    from pyro_dps.report.examples import _stored_examples
    from pyro_dps.report.stored_suggestions import _predictive
    from pyro_dps.scoring import predictive_probs

    weights = pd.read_csv(run_dir / "weights.csv")
    assert list(weights.columns[-2:]) == ["suggested_label", "p_suggested"] and len(weights) == 197
    assert weights["suggested_label"].between(0, 9).all() and weights["suggested_label"].nunique() > 2
    assert weights["p_suggested"].between(0.1, 1).all()  # the largest of 10 probabilities is at least 0.1
    ids = np.asarray(load_run(run_dir)[0]["example"].values)
    info = _stored_examples(run_dir, ids)
    probs, snapshots = _predictive(run_dir, info, None, predictive_probs)
    assert snapshots == 8 and probs.shape == (len(info.inputs), 10)
    stored = weights.set_index("index").loc[ids[sorted(info.inputs)]]
    np.testing.assert_array_equal(probs.argmax(1), stored["suggested_label"].to_numpy())
    np.testing.assert_allclose(probs.max(1), stored["p_suggested"].to_numpy(), atol=2e-6)


def _confusion_cells(text: str) -> dict[tuple[str, str], float | str]:
    """{(given, column): the cell's sort value} of the confusion table, plus (given, "shown"): the total's text."""
    table = re.search(r'<table class="confusion[^"]*" id="confusion-table">.*?</table>', text, re.S).group(0)
    heads = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", table)]
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    cells = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        tds = re.findall(r"<td([^>]*)>(.*?)</td>", row, re.S)
        given = re.sub(r"<[^>]+>", "", tds[0][1])
        cells.update({(given, h): float(re.search(r'data-v="([^"]*)"', attrs).group(1))
                      for h, (attrs, _) in zip(heads[1:], tds[1:])})
        cells[(given, "shown")] = tds[heads.index("total")][1]
    return cells


def test_confusion_table_weights_every_example_by_its_posterior_drop(run_dir):
    """Cell (g, s) = sum over every example with given label g and suggested label s of 1 - its posterior mean
    weight; the total column is the row sum; the flagged column counts the flagged examples."""
    import pandas as pd

    text = (run_dir / "report.html").read_text()
    confusion = _section(text, "confusion")
    assert "over all 197 examples" in confusion and "1 &minus; its posterior mean weight" in confusion
    csv = pd.read_csv(run_dir / "report.selection.csv")
    drop = 1 - csv["mean"]
    expected = drop.groupby([csv["label"], csv["suggested_label"]]).sum()
    cells = _confusion_cells(confusion)
    for (given, suggested), value in expected.items():
        assert cells[(str(given), str(suggested))] == pytest.approx(value, abs=1e-4)
    for given, group in csv.groupby("label"):
        assert cells[(str(given), "total")] == pytest.approx(float((1 - group["mean"]).sum()), abs=1e-4)
        assert cells[(str(given), "shown")] == f"{float((1 - group['mean']).sum()):.1f}"  # one decimal
        assert cells[(str(given), "flagged")] == int((~group["selected"]).sum())
    assert sum(v for (g, h), v in cells.items() if h == "total") == pytest.approx(float(drop.sum()), abs=1e-3)
    summary = _section(text, "summary")
    flagged = ~csv["selected"]
    other = int((flagged & (csv["suggested_label"] != csv["label"])).sum())
    assert f"<b>{other}</b> of the {int(flagged.sum())} flagged examples have a suggested label other" in summary


def test_confusion_counts_fold_rare_classes():
    from pyro_dps.report.confusion import confusion_counts

    given, suggested = np.array([0, 0, 1, 2, 3, 3]), np.array([0, 1, 1, 3, 3, 2])
    weight = np.array([0.1, 0.1, 0.1, 1, 1, 1])
    names, (mass, count) = confusion_counts(given, suggested, np.stack([weight, np.ones(6)]), 2)
    assert names == ["2", "3", "other"]  # the two classes with the most weight, the rest folded
    assert mass.sum() == pytest.approx(3.3) and mass[2, 2] == pytest.approx(0.3) and count.sum() == 6
    assert count[2, 2] == 3 and count[0, 1] == 1 and count[1, 0] == 1 and count[1, 1] == 1


def _older_run(run_dir, tmp_path, weights_csv=None):
    """A copy of the run as an older pyro-dps wrote it: weights.csv without the suggested-label columns."""
    import pandas as pd

    copy = tmp_path / "older"
    shutil.copytree(run_dir, copy)
    table = pd.read_csv(copy / "weights.csv")
    table = table.drop(columns=["suggested_label", "p_suggested"]) if weights_csv is None else weights_csv(table)
    table.to_csv(copy / "weights.csv", index=False)
    return copy


def test_older_run_directory_falls_back_to_the_stored_inputs(run_dir, tmp_path):
    """Without weights.csv's columns the listed flagged examples still get a suggested label, recomputed from
    posterior.safetensors on examples.npz's inputs (by `pyro-dps report`, or a caller giving the recompute:
    the report alone never loads a network), and the confusion table says it covers those only."""
    import pandas as pd

    from pyro_dps.scoring import predictive_probs

    older = _older_run(run_dir, tmp_path)
    assert "`pyro-dps report` recomputes them" in _section(build_report(older), "flagged")
    assert main(["report", str(older), "--out", str(tmp_path / "cli.html")]) == 0
    assert "recomputed for the listed examples only" in _section((tmp_path / "cli.html").read_text(), "flagged")
    text = build_report(older, recompute=predictive_probs)
    flagged = _section(text, "flagged")
    assert "recomputed for the listed examples only" in flagged
    rows = _rows(flagged)
    weights = pd.read_csv(run_dir / "weights.csv").set_index("index")
    for row in rows:  # the same posterior predictive, so the same classes as the run wrote
        assert int(re.sub(r"<[^>]+>", "", row[3])) == weights.loc[int(row[1]), "suggested_label"]
    confusion = _section(text, "confusion")
    assert f"over the {len(rows)} listed flagged examples only" in confusion
    assert "have a suggested label other" not in _section(text, "summary")  # not known for every example


def test_unusable_suggested_labels_are_named_and_ignored(run_dir, tmp_path):
    def corrupt(table):
        table["p_suggested"] = 1.5
        return table

    from pyro_dps.scoring import predictive_probs

    text = build_report(_older_run(run_dir, tmp_path, corrupt), recompute=predictive_probs)
    flagged = _section(text, "flagged")
    assert "The suggested labels in weights.csv cannot be used" in flagged and "p_suggested" in flagged
    assert "recomputed for the listed examples only" in flagged  # and the page is still built


# ------------------------------------------------------------------------------------------- browser
def test_report_in_headless_chromium(run_dir):
    pytest.importorskip("selenium", reason="selenium is not installed (scripts/install_browser.sh)")
    from selenium.webdriver.common.by import By

    driver = chromium()
    try:
        driver.get((run_dir / "report.html").resolve().as_uri())
        assert "BADS report" in driver.title
        for section in SECTIONS:
            element = driver.find_element(By.ID, section)
            assert element.is_displayed()
            assert element.find_element(By.TAG_NAME, "h2").text.strip()
        # every image decoded (base64 PNGs are valid) and nothing was fetched over the network
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
        assert fetched == []
        badges = driver.find_elements(By.CSS_SELECTOR, "#diagnostics .badge")
        assert badges and {b.text for b in badges} <= {"PASS", "WARN", "FAIL"}
        rows = driver.find_elements(By.CSS_SELECTOR, "#diagnostics table.checks tbody tr")
        assert len(rows) >= 5
        assert len(driver.find_elements(By.CSS_SELECTOR, "#trusted .card img")) == 24
        # the summary is the first section; the flagged table sorts on a header click and filters on typing
        assert driver.find_element(By.CSS_SELECTOR, "main section").get_attribute("id") == "summary"
        header = driver.find_elements(By.CSS_SELECTOR, "#flagged-table thead th")[5]  # weight mean
        header.click()
        header.click()  # descending
        cells = driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr td:nth-child(6)")
        values = [float(c.text) for c in cells]
        assert values == sorted(values, reverse=True)
        # every listed flagged example shows a suggested label (the run's weights.csv)
        suggested = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr td:nth-child(4)")]
        assert len(suggested) == len(values) and all(s.isdigit() for s in suggested)
        first_id = driver.find_element(By.CSS_SELECTOR, "#flagged-table tbody tr td:nth-child(2)").text
        driver.find_element(By.CSS_SELECTOR, 'input[data-table="flagged-table"]').send_keys(first_id)
        shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr") if r.is_displayed()]
        assert shown and all(first_id in r.text for r in shown)
        assert driver.find_elements(By.CSS_SELECTOR, "#diagnostics figcaption code")  # ArviZ's own plots
        errors = browser_errors(driver)
        assert errors == [], errors
        shot = save_screenshot(driver, run_dir / "report_screenshot.png")
        assert shot.stat().st_size > 50_000
        print(f"screenshot: {shot}")
    finally:
        driver.quit()


def test_run_directory_with_auto_run_length_reads_back(run_dir):
    # README: to_arviz("runs/demo"). The run used thin = "auto"; the step sizes per draw come from the run
    # length as run (metrics.json records it resolved), so they are finite and the run's step size.
    from pyro_dps.arviz_data import sample_stats_group, to_arviz

    data = to_arviz(run_dir)
    eps = sample_stats_group(data)["step_size"].to_numpy()
    assert eps.shape == (4, 12) and np.isfinite(eps).all() and np.all(eps > 0) and np.all(eps <= 1e-3)
