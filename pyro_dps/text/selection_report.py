"""Per-source weight tables and the selected subset as JSONL (the paper's table 4 for instruction data).

Functional core: arrays in, rows out. `source_weight_table(sources, mean_w, selected)` gives one row
per source (n, mean weight, sd across the source's examples, fraction selected), highest mean first;
`markdown_table` prints it; `write_selected_jsonl` writes the kept examples atomically, `write_weighted_jsonl`
all of them with a `weight` field (weighted SFT), and `weight_column` gives the weights as a dataset column.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..outputs import write_atomic
from ..errors import DataError
from .instructions import InstructionExample


def _vector(name: str, values, n: int | None = None, dtype=np.float64) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.ndim != 1:
        raise DataError(f"{name} must be one value per example, got shape {a.shape}")
    if n is not None and len(a) != n:
        raise DataError(f"{name} has {len(a)} entries but there are {n} examples")
    return a


def source_weight_table(sources: Sequence[str], mean_weights, selected=None) -> list[dict]:
    """One row per source: {source, n, mean_weight, sd_weight, fraction_selected}, sorted by mean weight
    (descending, ties by name). `sd_weight` is the sd of the posterior-mean weights across the source's
    examples (ddof=1; NaN for a single example); `fraction_selected` is None without a selection."""
    src = np.asarray(sources, dtype=object)
    if src.ndim != 1 or len(src) == 0:
        raise DataError(f"sources must be a non-empty list of names, got shape {src.shape}")
    w = _vector("mean_weights", mean_weights, len(src))
    if not np.isfinite(w).all():
        raise DataError(f"mean_weights has {int((~np.isfinite(w)).sum())} non-finite values")
    keep = None if selected is None else _vector("selected", selected, len(src), dtype=bool)
    rows = []
    for name in sorted(set(src.tolist())):
        mask = src == name
        ws = w[mask]
        rows.append({"source": str(name), "n": int(mask.sum()), "mean_weight": float(ws.mean()),
                     "sd_weight": float(ws.std(ddof=1)) if len(ws) > 1 else float("nan"),
                     "fraction_selected": None if keep is None else float(keep[mask].mean())})
    rows.sort(key=lambda r: (-r["mean_weight"], r["source"]))
    return rows


def markdown_table(rows: Sequence[dict], digits: int = 3) -> str:
    """The per-source table as GitHub markdown."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    header = "| source | n | mean weight | sd | fraction selected |\n|---|---:|---:|---:|---:|"
    body = [f"| {r['source']} | {r['n']} | {fmt(r['mean_weight'])} | {fmt(r['sd_weight'])} | "
            f"{fmt(r['fraction_selected'])} |" for r in rows]
    return "\n".join([header, *body])


def write_jsonl_atomic(path: str | os.PathLike, records: Sequence[dict]) -> Path:
    """Write records as JSONL to a temporary file beside `path`, then rename it into place."""
    def write(handle):
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return write_atomic(path, write)


def weight_records(examples: Sequence[InstructionExample], mean_weights, weight_sd=None, p_keep=None,
                   digits: int | None = None) -> list[dict]:
    """Every example as a JSON-ready dict (its original fields) plus `weight` (the posterior mean weight) and,
    when given, `weight_sd` and `p_keep`; `digits` rounds them (None: exact, a float64 round-trips JSON)."""
    columns = {"weight": _vector("mean_weights", mean_weights, len(examples))}
    for name, values in (("weight_sd", weight_sd), ("p_keep", p_keep)):
        if values is not None:
            columns[name] = _vector(name, values, len(examples))
    for name, values in columns.items():
        if not np.isfinite(values).all():
            raise DataError(f"{name} has {int((~np.isfinite(values)).sum())} non-finite values")
    fmt = float if digits is None else (lambda v: round(float(v), digits))
    return [{**ex.record(), **{name: fmt(values[i]) for name, values in columns.items()}}
            for i, ex in enumerate(examples)]


def write_weighted_jsonl(path: str | os.PathLike, examples: Sequence[InstructionExample], mean_weights,
                         weight_sd=None, p_keep=None) -> Path:
    """All examples as JSONL with a `weight` field (and `weight_sd`, `p_keep` when given), in order, written
    atomically: the input of a weighted SFT (e.g. TRL's per-example `weight` column) or any other consumer."""
    return write_jsonl_atomic(path, weight_records(examples, mean_weights, weight_sd, p_keep))


def weight_column(mean_weights, n: int | None = None) -> dict[str, list[float]]:
    """{"weight": [...]}: the posterior mean weights as a column, in example order, for a Hugging Face dataset
    of the same examples: `ds = ds.add_column("weight", weight_column(mean_w)["weight"])`."""
    w = _vector("mean_weights", mean_weights, n)
    if not np.isfinite(w).all():
        raise DataError(f"mean_weights has {int((~np.isfinite(w)).sum())} non-finite values")
    return {"weight": [float(v) for v in w]}


def write_selected_jsonl(path: str | os.PathLike, examples: Sequence[InstructionExample], selected,
                         mean_weights=None) -> Path:
    """The selected examples as JSONL (their original fields, plus `weight` when mean weights are given)."""
    keep = np.flatnonzero(_vector("selected", selected, len(examples), dtype=bool))
    kept = [examples[i] for i in keep]
    if mean_weights is None:
        return write_jsonl_atomic(path, [ex.record() for ex in kept])
    w = _vector("mean_weights", mean_weights, len(examples))
    return write_jsonl_atomic(path, weight_records(kept, w[keep], digits=6))
