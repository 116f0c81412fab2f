"""Does a weight's posterior spread measure evidence? Rank correlation between each training example's
posterior sd of w (from a run directory's weights.csv) and independent measures of how ambiguous the
example is, from a classifier that never saw the run: 5-fold cross-validated logistic regression on D_t.

    python benchmarks/uncertainty_vs_ambiguity.py runs/demo        # a `pyro-dps demo` run (digits)

Ambiguity measures (per example, out of fold): the entropy of the predictive over classes (how unsure a
classifier is about the image), and 1 - |2 p(y_given) - 1| (how close the given label's probability is to
a coin flip). Only for runs on the embedded digits data (the demo), whose splits are rebuilt from the
run's metrics.json.
"""
from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from pyro_dps.data import digits_splits


def ambiguity(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-fold predictive entropy and given-label coin-flip closeness of every example."""
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=folds, method="predict_proba")
    p_given = proba[np.arange(len(y)), y]
    entropy = -(proba * np.log(np.clip(proba, 1e-12, 1))).sum(1)
    return {"predictive entropy": entropy, "given-label closeness to 1/2": 1 - np.abs(2 * p_given - 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    takes = inspect.signature(digits_splits).parameters
    spec = {k: v for k, v in metrics["config"]["data"].items() if k in takes}
    data = digits_splits(**spec)
    weights = pd.read_csv(args.run_dir / "weights.csv")
    n = data.n_train
    weights = weights.iloc[:n]  # rows past N_t (probe examples) are not part of D_t's digits
    x, y = data.x_train.flatten(1).numpy(), data.y_train.numpy()
    out = {}
    for name, values in ambiguity(x, y).items():
        rho, p = spearmanr(weights["sd"].to_numpy(), values)
        out[name] = {"spearman": float(rho), "p_value": float(p)}
        print(f"posterior sd of w vs {name}: Spearman {rho:+.3f} (p = {p:.1e}, n = {n})")
    return out


if __name__ == "__main__":
    main()
