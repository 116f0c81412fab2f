"""Suggested labels: the posterior predictive's most likely class for every training example, and its probability.

The run computes them once, in batches, while its posterior is in memory, and writes them into weights.csv
(columns `suggested_label`, `p_suggested`), so that the report's numbers come from the run's files:

    labels, probs = predictive_suggestions(posterior, data.x_train, data.num_classes)   # (N,), (N,)
    read_suggestions(run_dir / "weights.csv", ids)   # {"label", "prob"} at those example ids, None if absent

The posterior predictive is the softmax averaged over the run's theta snapshots (every chain's last theta when
it kept none), as `pyro-dps score` and the test accuracy of the ensemble compute it. A network whose output is
not one score per class (a language model) has no suggested label: the columns are left out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

COLUMNS = ("suggested_label", "p_suggested")
CHUNK = 4096  # rows per forward pass: memory stays O(CHUNK x classes) whatever N_t


def predictive_suggestions(posterior, x, num_classes: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(most likely class (N,) int64, its probability (N,) float64) under the posterior predictive for the
    rows of `x`, or None when the network does not output `num_classes` class scores per row (None: one score
    per class, however many)."""
    labels, probs = [], []
    for start in range(0, int(x.shape[0]), CHUNK):
        p = posterior.predict_proba(x[start:start + CHUNK], thetas=posterior.predictive_thetas(), batch_size=CHUNK)
        if p.ndim != 2 or (num_classes is not None and p.shape[1] != num_classes):
            return None
        best = p.max(dim=-1)
        labels.append(best.indices.cpu().numpy().astype(np.int64))
        probs.append(best.values.double().cpu().numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(labels), np.concatenate(probs)


def has_columns(path: Path) -> bool:
    """Whether weights.csv at `path` exists and its header has the suggested-label columns."""
    if not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip().split(",")
    return all(c in header for c in COLUMNS)


def read_suggestions(path: Path, ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """{"label": (N,) int64, "prob": (N,) float64} of weights.csv at the example ids `ids` (its `index`
    column), or None when the file lacks the columns (a run of an older pyro-dps); DataError naming the file
    when the columns are there but unusable (an id missing, a label not an integer >= 0, a probability
    outside [0, 1])."""
    import pandas as pd

    if not has_columns(path):
        return None
    try:
        table = pd.read_csv(path, usecols=["index", *COLUMNS])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{str(path)!r} cannot be read: {exc}") from exc
    if table["index"].duplicated().any():
        raise DataError(f"{str(path)!r} has duplicate example indices")
    rows = table.set_index("index").reindex(np.asarray(ids))
    label, prob = rows["suggested_label"].to_numpy(), rows["p_suggested"].to_numpy(dtype=np.float64)
    if rows.isna().any().any():
        raise DataError(f"{str(path)!r} has no suggested label for {int(rows.isna().any(axis=1).sum())} of the "
                        "run's examples")
    if label.dtype.kind not in "iu" or (label < 0).any():
        raise DataError(f"{str(path)!r}: suggested_label must be integers >= 0")
    if not ((prob >= 0) & (prob <= 1)).all():
        raise DataError(f"{str(path)!r}: p_suggested must be probabilities in [0, 1]")
    return {"label": label.astype(np.int64), "prob": prob}


def run_suggestions(posterior, data, echo=print) -> tuple[np.ndarray, np.ndarray] | None:
    """`predictive_suggestions` for every row of D_t (probe rows included: weights.csv has one row per row of
    D_t), or None; a failure only warns, so that a finished run's draws are never lost to it."""
    try:
        return predictive_suggestions(posterior, data.x_train, data.num_classes)
    except Exception as exc:  # noqa: BLE001 - see docstring
        echo(f"warning: suggested labels not written to weights.csv: {type(exc).__name__}: {exc}")
        return None
