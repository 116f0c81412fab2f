"""The suggested labels a run directory holds: weights.csv's columns `suggested_label` and `p_suggested`, which
the run writes for every example (`pyro_dps.suggested`). For a run directory of an older pyro-dps without
those columns they can be recomputed on the model inputs examples.npz stores for the listed examples by a
`recompute(run_dir, x, y)` the caller gives: `pyro-dps report` gives `pyro_dps.scoring.predictive_probs`
(posterior.safetensors read as `pyro-dps score` reads it, no pickle; built-in models only: a run directory
never makes pyro-dps import a file it names). The report itself never loads a network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..suggested import read_suggestions
from .examples import _Examples
from .suggestions import Suggestions, every_example, no_suggestions

#: (run directory, inputs (rows, ...), labels (rows,)) -> (class probabilities (rows, classes), snapshots used)
Recompute = Callable[[Path, object, object], tuple[np.ndarray, int]]

def suggest_labels(run_dir: Path, info: _Examples, labels: np.ndarray | None, ids: np.ndarray,
                   recompute: Recompute | None = None) -> Suggestions:
    """The run's suggested labels for every example (weights.csv); for a run directory without them (an older
    pyro-dps), the posterior predictive `recompute`d on the listed examples whose inputs examples.npz stored."""
    n = len(ids)
    try:
        read = read_suggestions(run_dir / "weights.csv", ids)
        problem = ""
    except DataError as exc:
        read, problem = None, f"The suggested labels in weights.csv cannot be used ({str(exc)[:160]}). "
    if read is not None:
        return every_example(read["label"], read["prob"], "weights.csv, columns suggested_label and p_suggested")
    found, note = _stored_suggestions(run_dir, info, labels, recompute)
    out = no_suggestions(n, problem + note)
    for pos, (c, q) in found.items():
        out.label[pos], out.prob[pos] = c, q
    return out


def _stored_suggestions(run_dir: Path, info: _Examples, labels: np.ndarray | None,
                        recompute: Recompute | None) -> tuple[dict, str]:
    """({position: (suggested class, its probability)}, note) for the examples whose inputs the run stored."""
    if not info.inputs:
        return {}, ("Suggested labels need weights.csv's suggested_label column or the examples' model inputs in "
                    "examples.npz; this run has neither (a run of an older pyro-dps, or inputs larger than the "
                    "report keeps).")
    if recompute is None:
        return {}, ("This run's weights.csv has no suggested_label column (a run of an older pyro-dps, or one that "
                    "could not compute them); `pyro-dps report` recomputes them for the listed examples from "
                    "posterior.safetensors.")
    try:
        probs, k = _predictive(run_dir, info, labels, recompute)
    except Exception as exc:  # noqa: BLE001 - a page without suggestions is still a page
        return {}, f"Suggested labels unavailable: {type(exc).__name__}: {str(exc)[:160]}"
    pos = sorted(info.inputs)
    best = probs.argmax(1)
    out = {p: (int(c), float(probs[i, c])) for i, (p, c) in enumerate(zip(pos, best))}
    return out, (f"Suggested label: the most likely class under the posterior predictive (softmax averaged over "
                 f"the run's {k} theta snapshots), recomputed for the listed examples only: this run's weights.csv "
                 "has no suggested_label column (a run of an older pyro-dps, or one that could not compute them).")


def _predictive(run_dir: Path, info: _Examples, labels: np.ndarray | None,
                recompute: Recompute) -> tuple[np.ndarray, int]:
    """(class probabilities (examples, classes) of the stored inputs, averaged over the snapshots, snapshots
    used), in the order of the stored positions."""
    import torch

    pos = sorted(info.inputs)
    x = torch.as_tensor(np.stack([info.inputs[p] for p in pos]))
    y = torch.as_tensor(np.asarray(labels)[pos] if labels is not None else np.zeros(len(pos)), dtype=torch.long)
    return recompute(run_dir, x, y)
