"""A report's two files: the page and its full per-example table (NAME.selection.csv beside it), each written
to a temporary file and renamed into place, so a failure leaves no half-written report; and the rule of a
run's report hook: a failure is reported, not raised."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import DPSError
from ..outputs import write_atomic
from .load import ReportError


def write_csv(fh, table) -> None:
    """A DataFrame as CSV, several times faster than pandas' writer at 10^6 rows (floats with 6 decimals)."""
    columns = []
    for name in table.columns:
        values = table[name].to_numpy()
        if values.dtype.kind == "f":
            columns.append([f"{v:.6f}" for v in values.tolist()])
        else:
            columns.append([str(v) for v in values.tolist()])
    fh.write(",".join(map(str, table.columns)) + "\n")
    for start in range(0, len(table), 100_000):
        fh.write("\n".join(map(",".join, zip(*(c[start:start + 100_000] for c in columns)))) + "\n")


def selection_csv_path(html: Path) -> Path:
    """Where the full per-example table goes beside a report page: NAME.selection.csv."""
    return html.with_name(f"{html.stem}.selection.csv")


def write_page(out: Path, text: str, table) -> Path:
    """The page `text` at `out` and `table` at its `selection_csv_path`, each written atomically (the CSV
    first, so that a page never points to a missing table); return `out`."""
    write_atomic(selection_csv_path(out), lambda fh: write_csv(fh, table), error=ReportError)
    write_atomic(out, lambda fh: fh.write(text), error=ReportError)
    return out


def report_or_warn(write: Callable[[], Path], echo: Callable[[str], Any] = print) -> Path | None:
    """`write()`'s page, or None after a warning on `echo`: a finished run's draws and metrics are never lost
    to a report problem."""
    try:
        return write()
    except Exception as exc:  # noqa: BLE001 - see docstring
        kind = "" if isinstance(exc, DPSError) else f"{type(exc).__name__}: "
        echo(f"warning: report.html not written: {kind}{exc}")
        return None
