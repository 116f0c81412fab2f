"""Run one scenario end to end: data, BADS posterior, baselines, and the run's files."""
from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data as datasets
from .baselines import BASELINES, BETA_BASELINES
from .config import DEMO, sampler_config
from .context import Problem
from .data import DataSplits
from .distributed import Communicator
from .driver import Posterior, config_dict, fit
from .draws import save_draws
from .scoring import save_posterior_state
from .errors import ConfigError
from .metrics import accuracy, noise_auroc
from .model_loader import load_model
from .networks import NETWORKS
from .run_length import resolve_length
from .outputs import check_writable, metrics_document, plot_weights_by_group, staged_directory, write_json, write_weights_csv
from .training import predict_proba


def _call_builder(builder, spec: dict, source: str) -> DataSplits:
    """A data builder called with the [data] keys it takes; a key it does not take is a ConfigError."""
    takes = set(inspect.signature(builder).parameters)
    unused = sorted(set(spec) - takes)
    if unused:
        raise ConfigError(f"data.{unused[0]} is not used by data.source = {source!r} (it takes {sorted(takes)})")
    return builder(**spec)


def build_data(spec: dict) -> DataSplits:
    """The scenario's train/meta/test splits from its [data] table."""
    spec = dict(spec)
    if spec.get("noise") == "none":  # TOML has no null
        spec["noise"] = None
    source = spec.pop("source", "digits")
    if source == "digits":
        return _call_builder(datasets.digits_splits, spec, source)
    if source == "mnist_4v9":
        return _call_builder(datasets.mnist_4v9_splits, spec, source)
    if source == "cifar10":
        spec.pop("test_per_class", None)
        return _call_builder(datasets.cifar10_noisy_splits, spec, source)
    if source == "npz":
        spec.pop("test_per_class", None)
        return _call_builder(datasets.mnist_like_noisy_splits, spec, source)
    if source == "reviews":  # sentence embeddings of multi-domain reviews (needs the `text` extra)
        return _call_builder(datasets.reviews_splits, spec, source)
    raise ConfigError(f"data.source must be one of ['cifar10', 'digits', 'mnist_4v9', 'npz', 'reviews'], got {source!r}")


def build_network(spec: dict, data: DataSplits) -> torch.nn.Module:
    """A freshly initialised network for the data's input shape and classes."""
    spec = dict(spec)
    kind = spec.pop("kind", "mlp")
    if kind not in NETWORKS:
        raise ConfigError(f"network.kind must be one of {sorted(NETWORKS)}, got {kind!r}")
    if kind == "mlp":
        return NETWORKS[kind](int(np.prod(data.x_train.shape[1:])), data.num_classes, tuple(spec.get("hidden", (128,))))
    if kind == "lenet5":
        return NETWORKS[kind](data.num_classes, data.x_train.shape[1])
    return NETWORKS[kind](data.num_classes, spec.get("depth", 8), spec.get("width", 16), data.x_train.shape[1])


def model_hyper(model, hyper: dict) -> dict:
    """The configured hyper-parameters minus demo defaults the model does not take (a user's own model
    need not accept the paper model's names; anything the user set explicitly is still passed on)."""
    params = inspect.signature(model).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(hyper)
    defaults = DEMO["model"]["hyper"]
    return {k: v for k, v in hyper.items() if k in params or defaults.get(k, object()) != v}


def run_scenario(config: dict, out: str | Path | None = None, *, seed: int | None = None, device: str | None = None,
                 chains: int | None = None, progress: bool = True, echo=print, resume: bool = False,
                 checkpoint_every: int | None = None, comm: Communicator | None = None) -> dict[str, Any] | None:
    """Run BADS and the configured baselines; write the run's files to `out` (staged); return metrics.json.

    With `out`, the sampler checkpoints to `<out>.checkpoint.pt` (every `checkpoint_every` steps) and
    `resume=True` continues an interrupted run from there; both side files go when the run completes.
    Under torchrun every rank samples its shard; rank 0 alone runs the baselines, writes the files and
    returns the metrics (the other ranks return None).
    """
    comm = comm or Communicator()
    if not comm.main:
        echo = lambda *a, **k: None  # noqa: E731 - rank 0 speaks for the run
    if out is not None and comm.main:
        check_writable(out)
    seed = config["data"].get("seed", 0) if seed is None else seed
    data_spec = {**config["data"], "seed": seed}
    data = build_data(data_spec)
    model = load_model(config["model"]["file"])
    sampler = sampler_config(config, seed=seed, device=device, chains=chains, progress=progress,
                             checkpoint_every=checkpoint_every)
    side = {} if out is None else {"checkpoint": Path(f"{out}.checkpoint.pt"), "spill_path": Path(f"{out}.spill.nc")}
    own_files = list(side.values()) if comm.main else [Path(f"{out}.checkpoint.pt.rank{comm.rank}")] * (out is not None)
    if not resume:
        for path in own_files:
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    problem = Problem(build_network(config["network"], data), data.x_train, data.y_train, data.x_meta, data.y_meta)
    length = resolve_length(sampler, data.n_train)
    total_steps = length.warmup + length.samples * length.thin
    echo(f"[{config['name']}] N_t={data.n_train} N_m={data.n_meta} N_test={data.n_test} "
         f"kernel={sampler.kernel} chains={sampler.chains} steps/chain={total_steps}")
    posterior = fit(model, problem, model_hyper(model, config["model"]["hyper"]), sampler, resume=resume,
                    comm=comm, **side)
    if posterior is None:  # a rank other than 0: its shard is done
        for path in own_files:
            path.unlink(missing_ok=True)
        return None
    methods = {"bads": _bads_metrics(posterior, data)}
    for name, settings in config["baselines"].items():
        if name not in BASELINES:
            raise ConfigError(f"baselines.{name}: unknown baseline (known: {sorted(BASELINES)})")
        settings = dict(settings)
        steps = settings.pop("steps", None) or total_steps
        if name in BETA_BASELINES:  # the fraction BADS used (its estimate when beta = "auto")
            settings.setdefault("beta", float(posterior.hyper.get("beta", 0.5)))
        torch.manual_seed(seed)
        start = time.perf_counter()
        net = BASELINES[name](build_network(config["network"], data).to(sampler.device), data.to(sampler.device),
                              steps=steps, seed=seed, **settings)
        methods[name] = {"test_accuracy": accuracy(predict_proba(net, data.x_test.to(sampler.device)), data.y_test),
                         "test_accuracy_ensemble": None, "seconds": time.perf_counter() - start}
    summary = posterior.weight_summary()
    clean = None if data.clean is None else data.clean.numpy()
    weights = {"noise_auroc": noise_auroc(summary["mean"], clean),
               "mean_weight_clean": float(summary["mean"][clean].mean()) if clean is not None else float(summary["mean"].mean()),
               "mean_weight_noisy": float(summary["mean"][~clean].mean()) if clean is not None and (~clean).any() else float("nan")}
    document = metrics_document(data.name if config["name"] == "custom" else config["name"], methods, weights)
    document["mean_weight_by_group"] = mean_weight_by_group(summary["mean"], data)
    document["config"] = {**config, "sampler": config_dict(sampler), "data": data_spec}
    echo(result_table(document))
    if out is not None:
        with staged_directory(out) as stage:
            write_json(stage / "metrics.json", document)
            write_weights_csv(stage / "weights.csv", summary, data.y_train.numpy(), clean)
            save_draws(_draws_with_labels(posterior, data), stage / "draws.nc")
            save_posterior_state(stage / "posterior.pt", posterior, config, tuple(data.x_train.shape[1:]),
                                 data.num_classes)
            plot_weights_by_group(stage / "weights_by_group.png", summary["mean"], data.y_train.numpy(), clean,
                                  title=f"{document['scenario']}: posterior mean weights")
            from .report import write_run_report  # report.html from the staged files; failures only warn

            write_run_report(stage, run_label=str(out), echo=echo)
        posterior.draws.close()
        for path in side.values():
            path.unlink(missing_ok=True)
        echo(f"wrote {out}/metrics.json, weights.csv, draws.nc, posterior.pt, weights_by_group.png, report.html")
    return document


def mean_weight_by_group(mean: np.ndarray, data: DataSplits) -> dict[str, dict[str, float]]:
    """Posterior mean weight averaged within each label and each group of `data.groups` (e.g. review domains)."""
    out = {}
    for key, ids in {"label": data.y_train, **data.groups}.items():
        ids = ids.cpu().numpy()
        out[key] = {str(g): float(mean[ids == g].mean()) for g in np.unique(ids)}
    return out


def _bads_metrics(posterior: Posterior, data: DataSplits) -> dict:
    last = float(np.mean([accuracy(posterior.predict_proba(data.x_test, ensemble=False, chain=c), data.y_test)
                          for c in range(posterior.config.chains)]))
    ensemble = accuracy(posterior.predict_proba(data.x_test), data.y_test) if posterior.snapshots else None
    return {"test_accuracy": last, "test_accuracy_ensemble": ensemble, "seconds": posterior.seconds}


def _draws_with_labels(posterior: Posterior, data: DataSplits):
    ds = posterior.dataset()
    ds = ds.assign_coords(label=("example", data.y_train.numpy()))
    if data.clean is not None:
        ds = ds.assign_coords(clean=("example", data.clean.numpy()))
    return ds


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
    return "\n".join(lines)
