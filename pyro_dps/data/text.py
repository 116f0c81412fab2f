"""Text classification data: the multi-domain reviews file and its off-domain / noisy-label scenarios.

Texts are turned into features by the frozen sentence encoder (`pyro_dps.text.encoder`, the `text`
extra), so a small MLP head does the classification and BADS weighs the training reviews. Only the
reviews a split actually uses are embedded; `cache` (a .npz path) keeps the embeddings across runs.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_dps.data._convert import check_fraction, check_int, derive_seeds, make_generator
from pyro_dps.data.builders import _balanced_draws, _check_noise, _corrupt, _noise_name, _subsample
from pyro_dps.data.splits import DataSplits
from pyro_dps.errors import ConfigError, DataError

REVIEWS_FILE = "amazon_multidomain_sentiment.jsonl.gz"
REVIEW_DOMAINS = ("books", "dvd", "electronics", "kitchen")  # groups["domain"] ids follow this order
PathLike = str | os.PathLike[str]
FEATURES = ("title+text", "text")


def load_reviews(path: PathLike) -> list[dict[str, Any]]:
    """Rows of a reviews JSON-lines file (.gz or plain): dicts with str `domain`, int `label` in {0,1}, str `text`.

    Each line needs `domain`, `label` (1 positive, 0 negative) and `text`; `title`, when present, is
    kept. DataError names the file and line of the first malformed record.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"reviews file not found: {str(file)!r}")
    opener = gzip.open if file.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    try:
        with opener(file, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                rows.append(_review_row(line, f"{file}:{number}"))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"reviews file {str(file)!r} cannot be read: {exc}") from exc
    if not rows:
        raise DataError(f"reviews file {str(file)!r} has no records")
    return rows


def _review_row(line: str, where: str) -> dict[str, Any]:
    """One validated record from a JSON line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise DataError(f"{where}: a record must be a JSON object, got {type(row).__name__}")
    for key in ("domain", "label", "text"):
        if key not in row:
            raise DataError(f"{where}: record has no {key!r} field")
    if not isinstance(row["domain"], str) or not row["domain"]:
        raise DataError(f"{where}: domain must be a non-empty string, got {row['domain']!r}")
    if isinstance(row["label"], bool) or row["label"] not in (0, 1):
        raise DataError(f"{where}: label must be 0 or 1, got {row['label']!r}")
    title = row.get("title") or ""
    if not isinstance(row["text"], str) or not isinstance(title, str):
        raise DataError(f"{where}: title and text must be strings")
    if not (title.strip() or row["text"].strip()):
        raise DataError(f"{where}: review has neither title nor text")
    return {"domain": row["domain"], "label": int(row["label"]), "title": title, "text": row["text"]}


def review_text(row: dict[str, Any]) -> str:
    """The string that is embedded for one review: title and body on separate lines."""
    title, body = row.get("title", "").strip(), row["text"].strip()
    return f"{title}\n{body}" if title and body else title or body


def review_title(row: dict[str, Any]) -> str:
    """The title of a review, or its text when it has none (a title alone carries much of the sentiment)."""
    return row.get("title", "").strip() or row["text"].strip()


def reviews_splits(
    path: PathLike,
    seed: int = 0,
    target_domain: str = "kitchen",
    meta_per_class: int = 20,
    test_per_class: int = 400,
    in_domain_train: int | None = None,
    noise: str | None = None,
    noise_rate: float = 0.5,
    n_train: int | None = None,
    cache: PathLike | None = None,
    max_length: int = 256,
    domains: Sequence[str] | None = None,
    features: str = "title+text",
) -> DataSplits:
    """Sentiment on `target_domain` with a small in-domain meta set and a D_t of mostly other domains.

    From the target domain: `meta_per_class` meta and `test_per_class` test reviews per class, and
    `in_domain_train` of the rest go to D_t (None: all of them; 0: D_t is purely off-domain); every
    review of the other `domains` joins D_t. `n_train` caps D_t at random; `noise` ("symmetric")
    then flips D_t labels with probability `noise_rate`.

    Reviews whose text repeats an earlier one are dropped first (the standard file has 146 such
    repeats), so no test or meta review also sits in D_t.

    Ground truth: without noise, `clean` marks the in-domain examples of D_t (None when there are
    none); with noise, `clean` marks the unflipped labels. groups["domain"] holds REVIEW_DOMAINS ids
    (other names follow in sorted order) and groups["in_domain"] 0/1.

    Features (float32, unit-norm sentence embeddings): "title+text" [N, 768] concatenates the embedding
    of the title with that of title and body together (the short title carries much of the sentiment
    that mean pooling over a long body dilutes: about +5 points of accuracy for a linear head);
    "text" [N, 384] is the title-and-body embedding alone.
    """
    if features not in FEATURES:
        raise ConfigError(f"features must be one of {list(FEATURES)}, got {features!r}")
    check_int(seed, "seed")
    noise_rate = _check_reviews_noise(noise, noise_rate)
    meta_per_class = check_int(meta_per_class, "meta_per_class", minimum=1)
    test_per_class = check_int(test_per_class, "test_per_class", minimum=1)
    if in_domain_train is not None:
        in_domain_train = check_int(in_domain_train, "in_domain_train", minimum=0)
    rows = _unique(load_reviews(path))
    domains = _check_domains(rows, target_domain, domains)
    split_seed, noise_seed = derive_seeds(seed, 2)
    generator = make_generator(split_seed)
    labels = torch.tensor([r["label"] for r in rows], dtype=torch.int64)
    in_target = torch.tensor([r["domain"] == target_domain for r in rows])
    train_idx, meta_idx, test_idx = _review_indices(rows, labels, in_target, target_domain, domains, meta_per_class,
                                                    test_per_class, in_domain_train, n_train, generator)
    order = torch.cat([train_idx, meta_idx, test_idx]).tolist()
    texts = [review_text(rows[i]) for i in order]
    x = _review_features(rows, order, texts, features, cache, max_length)
    y_noisy, unflipped = _corrupt(labels[train_idx], noise, noise_rate, 2, noise_seed, None)
    name = f"reviews-{target_domain}-{'offdomain' if noise is None else _noise_name(noise, noise_rate)}"
    return _review_splits(rows, x, texts, labels, in_target, (train_idx, meta_idx, test_idx), y_noisy,
                          None if noise is None else unflipped, name)


def _review_splits(rows, x, texts, labels, in_target, indices, y_noisy, unflipped, name: str) -> DataSplits:
    """The DataSplits of embedded reviews `x` (rows D_t, D_m, test as `indices`); `clean` marks the unflipped
    labels with noise (`unflipped`), else the in-domain examples of D_t (None when there are none)."""
    train_idx, meta_idx, test_idx = indices
    n_t, n_m = train_idx.shape[0], meta_idx.shape[0]
    in_domain = in_target[train_idx]
    if unflipped is None:
        clean = in_domain.clone() if bool(in_domain.any()) else None
    else:
        clean = unflipped
    names = [*REVIEW_DOMAINS, *sorted({r["domain"] for r in rows} - set(REVIEW_DOMAINS))]
    domain_ids = {d: i for i, d in enumerate(names)}
    return DataSplits(
        x_train=x[:n_t].contiguous(),
        y_train=y_noisy,
        x_meta=x[n_t:n_t + n_m].contiguous(),
        y_meta=labels[meta_idx],
        x_test=x[n_t + n_m:].contiguous(),
        y_test=labels[test_idx],
        num_classes=2,
        clean=clean,
        y_train_true=labels[train_idx],
        groups={"domain": torch.tensor([domain_ids[rows[i]["domain"]] for i in train_idx.tolist()],
                                       dtype=torch.int64),
                "in_domain": in_domain.to(torch.int64)},
        name=name,
        texts_train=tuple(texts[:n_t]),
    ).validate()


def _check_reviews_noise(noise: str | None, noise_rate: float) -> float:
    """The noise settings of a reviews split: symmetric or none (two classes), a rate in [0, 1]."""
    noise_rate = _check_noise(noise, noise_rate)
    if noise == "asymmetric":
        raise ConfigError("noise must be 'symmetric' or None for two-class reviews (asymmetric is the same "
                          "as symmetric with two classes), got 'asymmetric'")
    check_fraction(noise_rate, "noise_rate")
    return noise_rate


def _check_domains(rows: list[dict[str, Any]], target_domain: str, domains: Sequence[str] | None) -> Sequence[str]:
    """The target domain and the D_t domains, each one the file has (None: all of them)."""
    available = sorted({r["domain"] for r in rows})
    if not isinstance(target_domain, str) or target_domain not in available:
        raise DataError(f"target_domain must be one of {available}, got {target_domain!r}")
    if domains is None:
        return available
    if isinstance(domains, str) or not all(isinstance(d, str) for d in domains):
        raise DataError(f"domains must be a list of domain names, got {domains!r}")
    unknown = sorted(set(domains) - set(available))
    if unknown:
        raise DataError(f"domains {unknown} are not in the file (it has {available})")
    return domains


def _review_indices(rows, labels, in_target, target_domain, domains, meta_per_class, test_per_class,
                    in_domain_train, n_train, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(D_t, D_m, test) row indices: meta and test balanced per class from the target domain, D_t the rest of
    it (capped at `in_domain_train`) plus every review of the other `domains`, capped at `n_train`, sorted."""
    target_idx = in_target.nonzero().flatten()
    draws, rest = _balanced_draws(labels[target_idx], 2,
                                  {"meta_per_class": meta_per_class, "test_per_class": test_per_class}, generator)
    meta_idx, test_idx = target_idx[draws["meta_per_class"]], target_idx[draws["test_per_class"]]
    rest = target_idx[rest]
    if in_domain_train is not None:
        if in_domain_train > rest.shape[0]:
            raise DataError(f"in_domain_train={in_domain_train} but only {rest.shape[0]} {target_domain} reviews "
                            f"are left after meta and test")
        rest = rest[:in_domain_train]
    off = torch.tensor([r["domain"] in domains and r["domain"] != target_domain for r in rows]).nonzero().flatten()
    train_idx = torch.cat([rest, off])
    if train_idx.numel() == 0:
        raise DataError("D_t is empty: give in_domain_train > 0 or other domains")
    train_idx = train_idx[torch.randperm(train_idx.shape[0], generator=generator)]
    train_idx = torch.sort(_subsample(train_idx, n_train, "n_train", generator)).values
    return train_idx, meta_idx, test_idx


def _review_features(rows, order: list[int], texts: list[str], features: str, cache, max_length: int) -> torch.Tensor:
    """The embeddings of the reviews `order` (`texts` are their title-and-body strings): "title+text" is one
    call, so the cache is read and written once."""
    from pyro_dps.text.encoder import embed_texts  # the text extra is needed only from here on

    if features == "title+text":
        both = embed_texts([review_title(rows[i]) for i in order] + texts, cache=cache, max_length=max_length)
        return torch.cat([both[:len(order)], both[len(order):]], dim=1)
    return embed_texts(texts, cache=cache, max_length=max_length)


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without those whose embedded text repeats an earlier row's (first occurrence kept)."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        text = review_text(row)
        if text not in seen:
            seen.add(text)
            kept.append(row)
    return kept


def mean_weight_by_domain(weights: np.ndarray | torch.Tensor, data: DataSplits) -> dict[str, float]:
    """Mean of per-example `weights` [N_t] over each domain of a reviews split's D_t."""
    weights = np.asarray(weights, dtype=np.float64)
    ids = data.groups["domain"].cpu().numpy()
    if weights.shape != ids.shape:
        raise DataError(f"weights must have shape {ids.shape} (one per train example), got {weights.shape}")
    return {REVIEW_DOMAINS[i] if i < len(REVIEW_DOMAINS) else f"domain{i}": float(weights[ids == i].mean())
            for i in sorted(set(ids.tolist()))}
