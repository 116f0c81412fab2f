"""A finished Posterior written from memory as a CLI run writes it, so that a run made in a notebook gets the
same files and the same report:

    posterior.save("runs/nb")        # metrics.json, weights.csv, draws.nc, weights_by_group.png, examples.npz,
                                     # report.html, report.selection.csv; to_arviz("runs/nb") reads it
    posterior.report("nb.html")      # the page (and nb.selection.csv), built from memory

Both go through the writers `pyro-dps run` uses (`outputs`, `suggested`, `Posterior.save_draws`, the
report's `examples` and `files`) and the page builder `pyro-dps report` uses (`report.build_page`, given
the draws, metrics and examples the run's files hold, from memory); `save` stages the files beside the
directory and publishes them when all are written (`rundir.staged_directory`), into a new or empty directory
only (or, with `overwrite`, one an earlier save or run wrote: only its own files are replaced). As in a run,
a report that cannot be built only warns.

What a notebook's posterior lacks beside a CLI run is left out, not made up: no test accuracy (metrics.json
names the BADS run with none), no baselines, no ground truth unless `coords` gives `clean` flags, no true
labels or texts in the galleries (thumbnails when the inputs are images), and no posterior.safetensors
(its network is the user's nn.Module, not a configured network `pyro-dps score` can rebuild). Without one
integer label per training example (a language model's targets) weights.csv and weights_by_group.png are
left out too, and the page has no labels.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .arviz_data import flat_draws
from .errors import ConfigError, DataError
from .outputs import check_writable, config_dict, metrics_document, plain, write_json, write_weight_files
from .probes import PROBE_GROUP, non_probe_mask, probe_calibrated_clean
from .report.build import ReportInputs, build_page
from .report.examples import _Examples, as_numpy, examples_from_arrays, gallery_arrays, store_gallery_examples
from .report.files import report_or_warn, selection_csv_path, write_page
from .report.load import check_draws, split_probes
from .report.suggestions import every_example, no_suggestions
from .rundir import MANIFEST, check_out_dir, check_out_file, remove_stale_staging, run_lock, staged_directory
from .suggested import run_suggestions

IN_MEMORY = "a Posterior in memory"  # the run the header line of a page built from memory names


def example_coords(posterior, coords: dict | None = None) -> dict[str, np.ndarray]:
    """The per-example coordinates of the draws: `label` (the problem's y_train, when it is one integer label
    per training example) and the caller's `coords` (e.g. `clean`), each N_t values (DataError otherwise)."""
    n = len(posterior.draws.example_ids)
    labels = as_numpy(posterior.problem.y_train)
    out = {"label": labels} if labels.shape == (n,) and labels.dtype.kind in "iu" else {}
    for key, values in (coords or {}).items():
        out[str(key)] = as_numpy(values)
        if out[str(key)].shape != (n,):
            raise DataError(f"coords[{key!r}] has shape {out[str(key)].shape}; it needs one value per training "
                            f"example ({n})")
    if "clean" in out:
        out["clean"] = out["clean"].astype(bool)
    return out


def run_metrics(posterior, name: str) -> dict:
    """metrics.json of a posterior in memory, as JSON data: the BADS run (no test accuracy: no test set),
    the sampler settings as run, and the model as it ran (`Posterior.model_record`)."""
    methods = {"bads": {"test_accuracy": None, "test_accuracy_ensemble": None, "seconds": float(posterior.seconds)}}
    document = metrics_document(name, methods, None)
    document["config"] = {"name": name, "sampler": plain(config_dict(posterior.config))}
    document.update(posterior.model_record())
    return json.loads(json.dumps(document))  # what a reader of metrics.json gets


def _suggestions(posterior, echo: Callable[[str], Any]):
    """`suggested.run_suggestions` on every training row (one class score per class, however many)."""
    return run_suggestions(posterior, SimpleNamespace(x_train=posterior.problem.x_train, num_classes=None), echo)


# ------------------------------------------------------------------------------------------- save
def save_run(posterior, run_dir: str | os.PathLike, coords: dict | None = None, name: str | None = None,
             overwrite: bool = False, echo: Callable[[str], Any] = print) -> Path:
    """`Posterior.save`: the run directory, refused unless new or empty (see there), written atomically."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{str(run_dir)!r} exists and is not empty: Posterior.save writes only a new or empty "
                              "directory and never replaces files it did not write; choose a new directory")
        if not (run_dir / MANIFEST).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a directory pyro-dps wrote (it has no {MANIFEST}): nothing "
                              "in it is replaced, even with overwrite=True; choose a new directory")
    check_out_dir(run_dir, overwrite)  # ".", "~", a parent of the cwd, a file, a user's file of a run file's name
    coords = example_coords(posterior, coords)  # bad coordinates before any work
    check_writable(run_dir)
    with run_lock(run_dir):
        remove_stale_staging(run_dir)
        with staged_directory(run_dir, overwrite) as stage:
            _write_run_files(posterior, stage, coords, name or run_dir.resolve().name, str(run_dir), echo)
    return run_dir


def _write_run_files(posterior, stage: Path, coords: dict, name: str, label: str, echo) -> None:
    """Every file of the run directory into the staging folder, in the order `pyro-dps run` writes them; the
    page is built from memory, from what the other files hold (as `pyro-dps report` would read them back)."""
    write_json(stage / "metrics.json", run_metrics(posterior, name))
    labels, clean = coords.get("label"), coords.get("clean")
    found = _suggestions(posterior, echo) if labels is not None else None
    own = non_probe_mask(coords.get(PROBE_GROUP), len(posterior.draws.example_ids))
    if labels is not None:
        summary = posterior.weight_summary()
        write_weight_files(stage, summary, labels, clean, own, f"{name}: posterior mean weights",
                           posterior.draws.example_ids, found,
                           probe_calibrated_clean(summary["mean"], coords.get(PROBE_GROUP), posterior.hyper))
    posterior.save_draws(stage / "draws.nc", coords, keep=True)  # the posterior's own draws stay as they are
    store_gallery_examples(stage, posterior.problem.x_train, _own_rows(coords, len(posterior.draws.example_ids)),
                           echo=echo)

    def page() -> Path:
        inputs = memory_inputs(posterior, coords, name, label, (found, "weights.csv, columns suggested_label and "
                                                                       "p_suggested"))
        return write_page(stage / "report.html", *build_page(inputs, None, "report.selection.csv"))

    report_or_warn(page, echo)


def _own_rows(coords: dict, n: int) -> np.ndarray:
    """Rows of D_t that are the user's own examples (all of them unless `coords` marks probe rows)."""
    return np.flatnonzero(non_probe_mask(coords.get(PROBE_GROUP), n))


# ------------------------------------------------------------------------------------------- report
def write_posterior_report(posterior, path: str | os.PathLike, coords: dict | None = None, name: str | None = None,
                           overwrite: bool = False, thresholds=None, echo: Callable[[str], Any] = print) -> Path:
    """`Posterior.report`: the page at `path` and its table beside it, both written atomically."""
    out = Path(path)
    for file in (out, selection_csv_path(out)):
        if (file.exists() or file.is_symlink()) and not overwrite:
            raise ConfigError(f"report file {str(file)!r} already exists; pass overwrite=True to replace it")
        check_out_file(file, overwrite, "report file")
    coords = example_coords(posterior, coords)
    found = _suggestions(posterior, echo) if "label" in coords else None
    inputs = memory_inputs(posterior, coords, name or out.stem, IN_MEMORY, (found, "from the posterior in memory"))
    text, table = build_page(inputs, thresholds, selection_csv_path(out).name)
    return write_page(out, text, table)


def memory_inputs(posterior, coords: dict, name: str, label: str, suggested: tuple) -> ReportInputs:
    """What `report.build_page` reads, from memory: the draws as draws.nc holds them, metrics.json's document,
    the shown examples' thumbnails and model inputs as examples.npz holds them, and `suggested`: (every
    row's (suggested class, probability) or None, where they are said to come from)."""
    metrics = run_metrics(posterior, name)
    ds = flat_draws(posterior.arviz_groups(coords))  # what reading draws.nc back gives
    check_draws(ds, "the posterior's draws")
    own_rows = _own_rows(coords, ds.sizes["example"])
    examples = _examples(posterior, split_probes(ds)[0], metrics, own_rows)
    found, source = suggested

    def suggest(info, labels, ids):
        if found is None:
            return no_suggestions(len(ids), "No suggested labels: the posterior's network gives no class scores "
                                            "per example, or its problem has no integer labels.")
        return every_example(found[0][own_rows], found[1][own_rows], source)

    return ReportInputs(ds, metrics, examples, suggest, name, label)


def _examples(posterior, own, metrics: dict, own_rows: np.ndarray) -> Callable[[np.ndarray], _Examples]:
    """ids -> what the page shows per example position: `gallery_arrays` of the problem's inputs, as the run
    stores them in examples.npz; ids only (and why) when they cannot be shown."""
    try:
        arrays = gallery_arrays(own, metrics, posterior.problem.x_train, own_rows)
    except Exception as exc:  # noqa: BLE001 - a page without thumbnails is still a page, as for a run
        note = f"the examples cannot be shown ({type(exc).__name__}: {str(exc)[:120]}); examples are shown by id only"
        return lambda ids: _Examples(note=note)
    return lambda ids: examples_from_arrays(arrays, ids)
