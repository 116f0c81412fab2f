"""The page of a run directory, from its own files only: draws.nc and metrics.json (`load`), the examples it
stored (examples.npz: `examples`) and the suggested labels it wrote (weights.csv: `stored_suggestions`;
for an older run directory, recomputed by the caller's `recompute`).

    text = build_report("runs/demo")
"""
from __future__ import annotations

import os
from pathlib import Path

from ..diagnostics import Thresholds
from .build import CSV_NAME, ReportInputs, build_page
from .examples import _stored_examples
from .load import _load
from .stored_suggestions import Recompute, suggest_labels


def build_report(run_dir: str | os.PathLike, run_label: str | None = None, thresholds: Thresholds | None = None,
                 recompute: Recompute | None = None) -> str:
    """The report's HTML text for a run directory; `recompute`: see `stored_suggestions` (an older run's
    suggested labels; `pyro-dps report` gives `pyro_dps.scoring.predictive_probs`)."""
    return build_run(Path(run_dir), run_label, thresholds, CSV_NAME, recompute)[0]


def build_run(run_dir: Path, run_label: str | None, thresholds: Thresholds | None, csv_name: str,
              recompute: Recompute | None = None):
    """(HTML text, full per-example selection table) of a run directory; `csv_name`: the CSV the page names."""
    ds, metrics = _load(run_dir)
    inputs = ReportInputs(ds, metrics, lambda ids: _stored_examples(run_dir, ids),
                          lambda info, labels, ids: suggest_labels(run_dir, info, labels, ids, recompute),
                          run_dir.name, run_label if run_label is not None else str(run_dir))
    return build_page(inputs, thresholds, csv_name)
