"""A run's files: metrics.json (the contract other parts read), weights.csv, draws.nc, weights_by_group.png.

Everything is written into a staging folder that is published only when complete (`pyro_dps.rundir`), so
a failed run leaves no half-written output directory behind.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, error: type = ConfigError):
    """A temporary path beside `path` for a writer that needs a file name (netCDF); when the block succeeds
    the file is fsync'ed, given a normally created file's permissions and renamed over `path`.

    A failure leaves no partial file behind; a file that cannot be created raises `error` naming it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise error(f"{str(path)!r} cannot be written: {exc.strerror or exc}") from exc
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's are private
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"{str(path)!r} cannot be written: {exc.strerror or exc}") from exc
        raise


def write_atomic(path: str | os.PathLike, write, binary: bool = False, error: type = ConfigError) -> Path:
    """Call `write(handle)` on a temporary file beside `path`, then rename it over `path` (`atomic_path`)."""
    with atomic_path(path, error) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
    return Path(path)


def config_dict(config) -> dict:
    """A settings dataclass (a SamplerConfig) as plain data, callables as their repr: for metrics and reports."""
    from dataclasses import asdict

    return {k: (v if not callable(v) else repr(v)) for k, v in asdict(config).items()}


def check_writable(out: str | os.PathLike) -> Path:
    """Fail early, with the path named, when the output directory's parent cannot be created or written."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.probe-")
        probe.close()
    except OSError as exc:
        raise ConfigError(f"output directory {str(out)!r} cannot be written: {exc.strerror or exc}") from exc
    return out


def metrics_document(scenario: str, methods: dict[str, dict], weights: dict | None) -> dict:
    """metrics.json: {"scenario", "methods": {NAME: {test_accuracy, test_accuracy_ensemble, seconds}}, "weights"}."""
    for name, m in methods.items():
        missing = {"test_accuracy", "test_accuracy_ensemble", "seconds"} - set(m)
        if missing:
            raise ValueError(f"method {name!r} lacks {sorted(missing)}")
    return {"scenario": scenario, "methods": methods, "weights": weights}


def plain(value: Any) -> Any:
    """A value as JSON data: None, bools, numbers, strings, lists and tables as they are (numpy and one-value
    torch scalars as numbers, arrays as lists); anything else (a callable, an object) as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic) or (hasattr(value, "tolist") and hasattr(value, "dtype")):
        return plain(value.tolist())
    return repr(value)


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def write_weights_csv(path: Path, summary: dict[str, np.ndarray], labels: np.ndarray,
                      clean: np.ndarray | None, example_ids: np.ndarray | None = None,
                      flagged: np.ndarray | None = None,
                      suggested: tuple[np.ndarray, np.ndarray] | None = None,
                      p_clean: np.ndarray | None = None) -> None:
    """One row per training example: index, label, clean flag, posterior mean, sd, 5% and 95% quantiles.
    `flagged`: the rows that get a clean flag (default all); the others (probe examples) leave it empty.
    `suggested`: (class, probability) per row (`pyro_dps.suggested`): columns suggested_label, p_suggested.
    `p_clean`: P(clean) per row calibrated on the probes (`pyro_dps.clean_probability`): column p_clean."""
    n = len(summary["mean"])
    if p_clean is not None and len(p_clean) != n:
        raise ValueError(f"p_clean must have {n} entries, one per example")
    ids = np.arange(n) if example_ids is None else example_ids
    flagged = np.ones(n, bool) if flagged is None else np.asarray(flagged, bool)
    if suggested is not None and any(len(a) != n for a in suggested):
        raise ValueError(f"suggested labels and probabilities must have {n} entries, one per example")
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["index", "label", "clean", "mean", "sd", "q05", "q95"]
                     + (["suggested_label", "p_suggested"] if suggested is not None else [])
                     + (["p_clean"] if p_clean is not None else []))
        for i in range(n):
            flag = "" if clean is None or not flagged[i] else int(bool(clean[i]))
            extra = ([] if suggested is None else [int(suggested[0][i]), f"{suggested[1][i]:.6f}"]) \
                + ([] if p_clean is None else [f"{p_clean[i]:.6f}"])
            out.writerow([int(ids[i]), int(labels[i]), flag, f"{summary['mean'][i]:.6f}", f"{summary['sd'][i]:.6f}",
                          f"{summary['q05'][i]:.6f}", f"{summary['q95'][i]:.6f}", *extra])


def write_weight_files(stage: Path, summary: dict[str, np.ndarray], labels: np.ndarray, clean: np.ndarray | None,
                       own: np.ndarray, title: str, example_ids: np.ndarray | None = None,
                       suggested: tuple[np.ndarray, np.ndarray] | None = None,
                       p_clean: np.ndarray | None = None) -> None:
    """A run's per-example files, as `pyro-dps run` and `Posterior.save` both write them: weights.csv (every row;
    clean flags on the user's `own` rows only) and weights_by_group.png (the `own` rows only: probe rows are
    not the user's data)."""
    own = np.asarray(own, bool)
    write_weights_csv(stage / "weights.csv", summary, labels, clean, example_ids, flagged=own, suggested=suggested,
                      p_clean=p_clean)
    save_weight_histograms(stage / "weights_by_group.png", summary["mean"][own], np.asarray(labels)[own],
                           None if clean is None else np.asarray(clean)[own], title=title)


def save_weight_histograms(path: Path, mean: np.ndarray, labels: np.ndarray, clean: np.ndarray | None,
                          title: str = "") -> None:
    """Histograms of posterior mean weights split clean/corrupted (when known) and per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, 1, 41)
    if clean is not None:
        axes[0].hist(mean[clean], bins=bins, alpha=0.7, label=f"clean (n={int(clean.sum())})", color="tab:blue")
        axes[0].hist(mean[~clean], bins=bins, alpha=0.7, label=f"corrupted (n={int((~clean).sum())})", color="tab:red")
    else:
        axes[0].hist(mean, bins=bins, alpha=0.8, label="all", color="tab:blue")
    axes[0].set_xlabel("posterior mean weight")
    axes[0].set_ylabel("examples")
    axes[0].legend()
    classes = np.unique(labels)
    data = [mean[labels == c] for c in classes]
    axes[1].boxplot(data)
    axes[1].set_xticks(range(1, len(classes) + 1), [str(c) for c in classes])
    axes[1].set_xlabel("training label")
    axes[1].set_ylabel("posterior mean weight")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
