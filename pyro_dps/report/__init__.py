"""report.html: one self-contained page a person reads in a browser (figures as base64 PNG, inline CSS,
nothing fetched), built from a run directory's own files: metrics.json, draws.nc, weights.csv (the suggested
labels) and examples.npz; or from a posterior in memory (`Posterior.report`).

    pyro-dps report runs/demo                  # writes runs/demo/report.html and report.selection.csv
    write_report("runs/demo", "/tmp/r.html")   # and /tmp/r.selection.csv
    posterior.report("/tmp/r.html")            # a notebook's posterior, the same page

Sections (HTML ids), in order: summary (what to read in ten seconds: counts, the estimated corruption rate
overall and per class/group, the probes' detection quality, one sentence on convergence: `summary`), flagged
(the examples the selection drops, lowest weight first, with their suggested label: `flagged`, `suggestions`),
confusion (given x suggested label, each example weighted by its posterior expected drop: `confusion`),
diagnostics (trace/rank/ESS plots drawn by ArviZ's own functions: `convergence`, `plots`), weights
(`weights`), trusted and uncertain (`galleries`), selection (`selection_section`), probes (the self-check with
probe examples, when the run had them: `probe_section`), metrics and config (folded; `run_tables`).
Ground-truth columns appear only when the run's data had them. The flagged and checks tables sort on a
header click and filter by a text box (a small inline script, `style`). Probe examples are left out of
every other section: those report on the user's own training examples only.
The page is bounded whatever N_t: galleries show N_SHOW examples, tables at most MAX_LEVELS groups,
plots at most 5,000 examples; the full per-example table is the CSV beside the page. The report
never reads data from outside the run directory: the run stores the shown examples' thumbnails (or
texts), true labels and model inputs in examples.npz (`examples`), read without pickle and checked. A
missing or corrupt file raises `ReportError` (a `DPSError`) naming the file (`load`); both files are written
to temporary files and renamed into place (`write`), so a failure leaves no half-written report.

One idea per module: `build` assembles the page from `ReportInputs`, `run_page` gives it a run directory's
(`posterior_io` a posterior's in memory); `page` the frame, `html` the building blocks, `plan` the selection
the page shows, `files` and `write` the files. Only `stored_suggestions` (an older run directory's
suggested labels, recomputed by `pyro_dps.scoring`) reaches past the run's files.
"""
from __future__ import annotations

from .build import ReportInputs, build_page
from .examples import EXAMPLES_FILE, gallery_arrays, save_gallery_examples, store_gallery_examples
from .files import selection_csv_path, write_csv, write_page
from .load import ReportError, split_probes
from .page import PROBE_SECTION, SECTIONS
from .run_page import build_report, build_run
from .write import write_report, write_run_report

__all__ = ["EXAMPLES_FILE", "PROBE_SECTION", "SECTIONS", "ReportError", "ReportInputs", "build_page", "build_report",
           "build_run", "gallery_arrays", "save_gallery_examples", "selection_csv_path", "split_probes",
           "store_gallery_examples", "write_csv", "write_page", "write_report", "write_run_report"]
