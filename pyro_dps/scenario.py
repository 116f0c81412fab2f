"""Run one scenario end to end: data, BADS posterior, baselines, and the run's files."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .baselines import BASELINES, BETA_BASELINES
from .config import sampler_config
from .context import Problem
from .data import DataSplits
from .data.disk_splits import PATH_KEYS
from .driver.distributed import Communicator
from .driver.run_length import resolve_length
from .errors import ConfigError
from .fingerprint import file_digest
from .metrics import accuracy, noise_auroc
from .model_loader import load_model
from .outputs import check_writable, config_dict, metrics_document, plain, write_json, write_weight_files
from .posterior import Posterior, fit
from .probes import (PROBE_GROUP, non_probe_mask, probe_calibrated_clean, probe_report, probes_from_group,
                     reliability)
from .report.examples import save_gallery_examples
from .report.write import write_run_report
from .rundir import check_out_dir, remove_stale_staging, run_lock, staged_directory
from .scoring import STATE_FILE, save_posterior_state
from .spec import build_data, build_network  # re-exported: the benchmarks build scenarios through here
from .suggested import run_suggestions
from .training import predict_proba
from .useful_fraction import PLACEHOLDER_FRACTION, selection_fraction, with_placeholder_fraction


def run_scenario(config: dict, out: str | Path | None = None, *, seed: int | None = None, device: str | None = None,
                 chains: int | None = None, progress: bool | None = None, echo=print, resume: bool = False,
                 checkpoint_every: int | None = None, comm: Communicator | None = None,
                 overwrite: bool = False) -> dict[str, Any] | None:
    """Run BADS and the configured baselines; write the run's files to `out` (staged); return metrics.json.

    `out` is refused when it is ".", "..", "~", "/", a parent of the current directory, or a non-empty
    directory (unless `overwrite`: then only files an earlier run wrote there are replaced); a lock beside
    it makes a second run into the same `out` fail at once. With `out`, the sampler checkpoints to
    `<out>.checkpoint.safetensors` (every `checkpoint_every` steps) and `resume=True` continues an
    interrupted run from there if it was written by the same run; both side files go when the run completes.
    Under torchrun every rank samples its shard; rank 0 alone runs the baselines, writes the files and
    returns the metrics (the other ranks return None). `seed` (the CLI's --seed) seeds the data, the chains and
    the baselines; without it the data's seed does, and the chains take `[sampler] seed` when the configuration
    sets one. `chains`, `device` and `progress` given here override the [sampler] table; None keeps it.
    """
    comm = comm or Communicator()
    if out is None or not comm.main:
        return _run(config, out, seed, device, chains, progress, echo, resume, checkpoint_every, comm, overwrite)
    check_out_dir(out, overwrite)
    check_writable(out)
    with run_lock(out):
        remove_stale_staging(out)
        return _run(config, out, seed, device, chains, progress, echo, resume, checkpoint_every, comm, overwrite)


def _run(config, out, seed, device, chains, progress, echo, resume, checkpoint_every, comm, overwrite):
    """`run_scenario` once its output directory is checked and locked."""
    if not comm.main:
        echo = lambda *a, **k: None  # noqa: E731 - rank 0 speaks for the run
    sampler_seed = seed if seed is not None else config["sampler"].get("seed", config["data"].get("seed", 0))
    seed = config["data"].get("seed", 0) if seed is None else seed
    data_spec = {**config["data"], "seed": seed}
    sampler = sampler_config(config, seed=sampler_seed, device=device, chains=chains, progress=progress,
                             checkpoint_every=checkpoint_every).validate(None)  # all settings before any work
    side = {} if out is None else {"checkpoint": Path(f"{out}.checkpoint.safetensors"),
                                   "spill_path": Path(f"{out}.spill.nc")}
    _refuse_legacy_checkpoint(out, resume and comm.main, side)
    model = load_model(config["model"]["file"])
    data = build_data(data_spec)
    rank_file = [Path(f"{out}.checkpoint.safetensors.rank{comm.rank}")] if out is not None else []
    own_files = list(side.values()) if comm.main else rank_file
    if not resume:
        for path in own_files:
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    problem = Problem(build_network(config["network"], data), data.x_train, data.y_train, data.x_meta, data.y_meta)
    sampler.validate(problem)  # the checks that need the data (batch sizes, memory), before the header
    length = resolve_length(sampler, data.n_train)
    total_steps = length.warmup + length.samples * length.thin
    hyper = dict(config["model"]["hyper"])
    check_model(model, problem, hyper)  # a model or hyper-parameter error before the header, not after it
    keep = non_probe_mask(data)
    probe_note = f" (of which {int((~keep).sum())} probe examples)" if not keep.all() else ""
    echo(f"[{config['name']}] N_t={data.n_train}{probe_note} N_m={data.n_meta} N_test={data.n_test} "
         f"kernel={sampler.kernel} chains={sampler.chains} steps/chain={total_steps}")
    posterior = fit(model, problem, hyper, sampler, resume=resume,
                    comm=comm, fingerprint=run_identity(config, data_spec) if out is not None else None, **side)
    if posterior is None:  # a rank other than 0: its shard is done
        for path in own_files:
            path.unlink(missing_ok=True)
        return None
    methods = {"bads": _bads_metrics(posterior, data)}
    for name, settings in config["baselines"].items():
        methods[name] = _run_baseline(name, settings, config, data, sampler, seed, total_steps, posterior.hyper)
    p_clean = probe_calibrated_clean(posterior.weight_summary()["mean"], data.groups.get(PROBE_GROUP), posterior.hyper)
    document = _metrics(config, data, data_spec, length, posterior, methods, p_clean)
    echo(result_table(document))
    if out is not None:
        _write_run_dir(out, overwrite, posterior, config, data, document, p_clean, echo)
        for path in side.values():
            path.unlink(missing_ok=True)
    return document


def _refuse_legacy_checkpoint(out, resuming: bool, side: dict) -> None:
    """A --resume beside a pyro-dps 0.1 pickle checkpoint (and no new one) is refused: a pickle is never loaded."""
    legacy = Path(f"{out}.checkpoint.pt")
    if resuming and out is not None and legacy.exists() and not side["checkpoint"].exists():
        raise ConfigError(f"{str(legacy)!r} is a checkpoint in the pickle format of pyro-dps 0.1, which is never "
                          "loaded (a pickle can run code) and cannot be continued; delete it and run without --resume")


def _metrics(config: dict, data, data_spec: dict, length, posterior, methods: dict, p_clean) -> dict:
    """metrics.json of a run: every method's test accuracy, the weights' quality against the ground truth (with
    `p_clean`, the probes' P(clean) per row, or None), the mean weight by group, the probes, the configuration as
    run ("auto" lengths resolved) and the model record."""
    summary = posterior.weight_summary()
    document = metrics_document(data.name if config["name"] == "custom" else config["name"], methods,
                                weight_metrics(summary["mean"], data, p_clean))
    document["mean_weight_by_group"] = mean_weight_by_group(summary["mean"], data)
    probes = probe_metrics(posterior, data)
    if probes is not None:
        document["probes"] = probes
    # the run length as run, so that readers (to_arviz's step sizes, the report) need not redo the rule
    document["config"] = {**config, "sampler": config_dict(length), "data": data_spec}
    document.update(posterior.model_record())
    return document


def _write_run_dir(out, overwrite: bool, posterior, config: dict, data, document: dict, p_clean, echo) -> None:
    """The run directory, staged and published when every file is written (`p_clean`: weights.csv's column)."""
    summary = posterior.weight_summary()
    clean = None if data.clean is None else data.clean.numpy()
    keep = non_probe_mask(data)
    suggested = run_suggestions(posterior, data, echo)  # the posterior predictive's class, every example
    with staged_directory(out, overwrite) as stage:
        write_json(stage / "metrics.json", document)
        write_weight_files(stage, summary, data.y_train.numpy(), clean, keep,
                           f"{document['scenario']}: posterior mean weights", suggested=suggested, p_clean=p_clean)
        posterior.save_draws(stage / "draws.nc", example_coords(data))
        save_posterior_state(stage / STATE_FILE, posterior, config, tuple(data.x_train.shape[1:]), data.num_classes)
        save_gallery_examples(stage, data, echo=echo)
        write_run_report(stage, run_label=str(out), echo=echo)  # a report that cannot be built only warns
    posterior.draws.close()
    echo(f"wrote {out}/metrics.json, weights.csv, draws.nc, {STATE_FILE}, weights_by_group.png, report.html")


def check_model(model, problem: Problem, hyper: dict) -> None:
    """The model traced once on a probe batch with its hyper-parameters (a ModelError or ConfigError when it
    breaks the model contract or refuses a hyper-parameter), leaving the random streams as they were. With
    beta = "auto", which `fit` estimates from the data, the probe uses a placeholder fraction."""
    from .errors import UnresolvedAuto
    from .potential import TracePotential

    with torch.random.fork_rng(devices=[]):
        try:
            TracePotential(model, problem, hyper)
        except UnresolvedAuto:
            TracePotential(model, problem, with_placeholder_fraction(hyper))


def baseline_settings(name: str, settings: dict, batch_size: int, meta_batch_size: int | None = None) -> dict:
    """A baseline's keyword settings as `pyro-dps run` and benchmarks/quality.py pass them: its own table, with
    the sampler's batch size (and meta batch size, for the baselines that take one) unless it sets its own."""
    from .baselines import EXTRA_SETTINGS

    settings = dict(settings)
    settings.setdefault("batch_size", batch_size)
    if "meta_batch_size" in EXTRA_SETTINGS.get(name, {}):
        settings.setdefault("meta_batch_size", meta_batch_size or settings["batch_size"])
    return settings


DATA_FILE_KEYS = ("path", *PATH_KEYS)  # data.path, and the files and folders of the on-disk sources


def run_identity(config: dict, data_spec: dict) -> dict:
    """What a checkpoint of this scenario must match beyond the sampler's own fingerprint: the resolved
    [data], [network] and [model] tables and a SHA-256 of every data file they read."""
    files = {}
    if data_spec.get("probes_per_class") == 0:  # 0 is no probes: the same run as one without the key
        data_spec = {k: v for k, v in data_spec.items() if k != "probes_per_class"}
    for key in DATA_FILE_KEYS:
        path = data_spec.get(key)
        if isinstance(path, str) and Path(path).exists():
            files[f"data.{key}"] = file_digest(path)
    return {"config": {"data": data_spec, "network": config["network"], "model": config["model"]}, "files": files}


def _run_baseline(name: str, settings: dict, config: dict, data: DataSplits, sampler, seed: int,
                  total_steps: int, bads_hyper: dict) -> dict:
    """One baseline's metrics; a setting it refuses at run time is a ConfigError naming the baseline. The
    baselines that take a selected fraction get BADS's (its estimate when beta = "auto")."""
    if name not in BASELINES:
        raise ConfigError(f"baselines.{name}: unknown baseline (known: {sorted(BASELINES)})")
    settings = baseline_settings(name, settings, sampler.batch_size, sampler.meta_batch_size)
    steps = settings.pop("steps", None) or total_steps
    if name in BETA_BASELINES:
        fraction = selection_fraction(bads_hyper)
        settings.setdefault("beta", PLACEHOLDER_FRACTION if fraction is None else fraction)
    torch.manual_seed(seed)
    start = time.perf_counter()
    try:
        net = BASELINES[name](build_network(config["network"], data).to(sampler.device), data.to(sampler.device),
                              steps=steps, seed=seed, **settings)
    except (ValueError, TypeError, ImportError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"baselines.{name}: {exc}") from exc
    return {"test_accuracy": accuracy(predict_proba(net, data.x_test.to(sampler.device)), data.y_test),
            "test_accuracy_ensemble": None, "seconds": time.perf_counter() - start}


def weight_metrics(mean: np.ndarray, data: DataSplits, p_clean: np.ndarray | None = None) -> dict[str, float | None]:
    """metrics.json's "weights": noise AUROC and mean weight of clean and corrupted examples, and (with the probes'
    P(clean) and known corruption) the ECE of P(clean) against the truth, on the user's own rows of D_t only
    (probe examples never count in the training result)."""
    keep = non_probe_mask(data)
    mean = np.asarray(mean)[keep]
    clean = None if data.clean is None else data.clean.cpu().numpy()[keep]
    out = {"noise_auroc": noise_auroc(mean, clean),
           "mean_weight_clean": float(mean[clean].mean()) if clean is not None else float(mean.mean()),
           "mean_weight_noisy": float(mean[~clean].mean()) if clean is not None and (~clean).any()
           else float("nan")}
    if p_clean is not None and clean is not None:
        out["p_clean_ece"] = reliability(np.asarray(p_clean)[keep], clean)[1]
    return out


def mean_weight_by_group(mean: np.ndarray, data: DataSplits) -> dict[str, dict[str, float]]:
    """Posterior mean weight averaged within each label and each group of `data.groups` (e.g. review domains),
    over the user's own rows of D_t (probe examples, and their `probe` group, left out)."""
    keep = non_probe_mask(data)
    mean = np.asarray(mean)[keep]
    out = {}
    for key, ids in {"label": data.y_train, **data.groups}.items():
        if key == PROBE_GROUP:
            continue
        ids = ids.cpu().numpy()[keep]
        out[key] = {str(g): float(mean[ids == g].mean()) for g in np.unique(ids)}
    return out


def probe_metrics(posterior: Posterior, data: DataSplits, tau: float = 0.5, q: float = 0.9) -> dict | None:
    """metrics.json's "probes": `probes.probe_report` of the run's weight draws on the probe rows, at the
    report's selection rule P(w > tau) >= q; None without probes or per-example weight draws."""
    if PROBE_GROUP not in data.groups:
        return None
    w = posterior.draws.weights()
    if w.sizes.get("example", 0) != data.n_train:  # a weight-network run keeps no per-example draws
        return None
    draws = np.asarray(w.transpose("chain", "draw", "example").values)
    return plain(probe_report(draws, probes_from_group(data.groups[PROBE_GROUP].cpu().numpy()), tau, q))


def _bads_metrics(posterior: Posterior, data: DataSplits) -> dict:
    last = float(np.mean([accuracy(posterior.predict_proba(data.x_test, ensemble=False, chain=c), data.y_test)
                          for c in range(posterior.config.chains)]))
    ensemble = accuracy(posterior.predict_proba(data.x_test), data.y_test) if posterior.snapshots else None
    return {"test_accuracy": last, "test_accuracy_ensemble": ensemble, "seconds": posterior.seconds}


def example_coords(data: DataSplits) -> dict[str, np.ndarray]:
    """The per-example coordinates of the draws: label, clean flag (when known) and groups (e.g. a review's domain)."""
    coords = {"label": data.y_train, **({} if data.clean is None else {"clean": data.clean}), **data.groups}
    return {k: v.cpu().numpy() for k, v in coords.items()}


def result_table(document: dict) -> str:
    """The printed result table."""
    lines = [f"scenario: {document['scenario']}", f"{'method':<16}{'test acc':>10}{'ensemble':>10}{'seconds':>10}"]
    for name, m in document["methods"].items():
        ens = "-" if m["test_accuracy_ensemble"] is None else f"{m['test_accuracy_ensemble']:.4f}"
        lines.append(f"{name:<16}{m['test_accuracy']:>10.4f}{ens:>10}{m['seconds']:>10.1f}")
    w = document["weights"]
    if w:
        auroc = "-" if w["noise_auroc"] is None else f"{w['noise_auroc']:.4f}"
        lines.append(f"noise AUROC of posterior mean weights: {auroc}; mean weight clean "
                     f"{w['mean_weight_clean']:.3f}, corrupted {w['mean_weight_noisy']:.3f}")
    p = document.get("probes")
    if p:
        def num(v):
            return "-" if v is None else f"{v:.3f}"
        lines.append(f"probe self-check ({p['n_good']} good, {p['n_bad']} corrupted): AUROC {num(p['auroc'])}, "
                     f"P(w > {p['tau']:g}) >= {p['q']:g} precision {num(p['precision'])} recall {num(p['recall'])}, "
                     f"ECE {num(p['ece'])}; P(clean) calibrated on the probes: ECE {num(p['p_clean']['ece'])} "
                     f"(each probe pair calibrated without itself; {num(p['p_clean']['ece_chance'])} by chance alone)"
                     + (f", {num(w['p_clean_ece'])} against the true labels" if w and "p_clean_ece" in w else ""))
    return "\n".join(lines)
