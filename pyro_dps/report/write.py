"""Writing a run directory's report: the page and its full per-example table (NAME.selection.csv beside it),
both written to temporary files and renamed into place (`files`), so a failure leaves no half-written report.

    write_report("runs/demo", "/tmp/r.html")   # /tmp/r.html and /tmp/r.selection.csv
    write_run_report(stage)                     # the run's hook: RUN_DIR/report.html; a failure only warns
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .files import report_or_warn, selection_csv_path, write_page
from .run_page import build_run
from .stored_suggestions import Recompute


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 run_label: str | None = None, overwrite: bool = False, recompute: Recompute | None = None) -> Path:
    """Write the report (default RUN_DIR/report.html) and its CSV atomically; return the page's path.
    An existing file is replaced only with `overwrite`, or when it is pyro-dps's own in its run directory.
    `recompute`: an older run directory's suggested labels (`stored_suggestions`; `pyro-dps report` gives
    `pyro_dps.scoring.predictive_probs`)."""
    from ..rundir import RUN_FILES, check_out_file, record

    run_dir = Path(run_dir)
    out = run_dir / "report.html" if out is None else Path(out)
    csv = selection_csv_path(out)
    for path in (out, csv):
        check_out_file(path, overwrite, "report file")
    text, table = build_run(run_dir, run_label, None, csv.name, recompute)
    write_page(out, text, table)
    if out.parent.resolve() == run_dir.resolve() and {out.name, csv.name} <= RUN_FILES \
            and (run_dir / ".pyro-dps-manifest.json").is_file():
        record(run_dir, [out.name, csv.name])
    return out


def write_run_report(run_dir: str | os.PathLike, run_label: str | None = None,
                     echo: Callable[[str], Any] = print) -> Path | None:
    """The hook `run_scenario` calls: write RUN_DIR/report.html; a failure is reported, not raised, so that
    a finished run's draws and metrics are never lost to a report problem."""
    return report_or_warn(lambda: write_report(run_dir, None, run_label), echo)
