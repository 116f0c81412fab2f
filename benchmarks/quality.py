"""Quality of every method on the paper's scenarios: BADS and the baselines at equal step budgets.

Methods: BADS (`pyro_dps.fit`, one chain; test accuracy of the last iterate and of the
posterior average over theta snapshots) and every baseline in `pyro_dps.baselines.BASELINES`
(cleanlab only when the optional package is installed). Scenarios (configs/*.toml):

    mnist4v9-meta{5,10,25,50}   MNIST 4 vs 9, D_t = 4,975 nines + 25 fours, LeNet-5 (figure 3 sweep)
    cifar10-sym{0.2,0.5,0.8}, cifar10-asym0.4   CIFAR-10 subset, label noise, ResNet-8 (GroupNorm)
    digits-lt20                 8x8 digits, long-tailed D_t (imbalance 20)
    digits-sym0.5               8x8 digits, 50% symmetric label noise (the demo)

Every method trains the same network architecture (and the baselines the same initial weights for
a seed) for the same number of network updates; a method's extra work (BLO's look-ahead, CDS's two
scoring models, cleanlab's cross-validation folds) is reported as seconds, not as steps. Settings
come from each config ([sampler] for BADS, [baselines] for the others); `--tune` picks each
method's step size from a small grid by accuracy on a held-out half of D_m (never on test), on the
first seed, and keeps it for the other seeds.

Writes <out>/quality.json, <out>/quality.md (accuracy mean +- sd over seeds; BADS also posterior
averaged; noise AUROC of the methods that score examples) and <out>/quality_fig3_mnist4v9.png.

    python benchmarks/quality.py --quick                 # ~20 min on 2 CPU cores: fewer steps, one seed
    python benchmarks/quality.py                         # all scenarios x seeds 0,1,2 (hours on CPU)
    python benchmarks/quality.py --scenarios digits-sym0.5 --methods bads blo --steps 200 --seeds 0   # smoke
Data: PYRO_DPS_DATA=/path/to/data (mnist.npz, cifar10_subset.npz), else the paths in the configs
(relative to the repository root). Scenarios whose data is missing are skipped with a note.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from pyro_dps import SamplerConfig, fit
from pyro_dps.baselines import BASELINES, BETA_BASELINES, cleanlab_available, run_baseline
from pyro_dps.config import DEMO, load_config, sampler_config
from pyro_dps.context import Problem
from pyro_dps.data import DATA_ENV_VAR, DataSplits, stratified_split
from pyro_dps.driver.run_length import CYCLE_PEAK, auto_schedule
from pyro_dps.errors import DPSError
from pyro_dps.metrics import accuracy, noise_auroc
from pyro_dps.model_loader import load_model
from pyro_dps.scenario import baseline_settings, build_data, build_network
from pyro_dps.training import predict_proba
from pyro_dps.useful_fraction import estimate_useful_fraction

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module of its tables and figure
from quality_outputs import METHODS, markdown, summarise, write_outputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# name -> (config file, family, meta examples per class for the figure)
SCENARIOS = {
    "mnist4v9-meta5": ("mnist_4v9_meta5.toml", "mnist4v9", 5),
    "mnist4v9-meta10": ("mnist_4v9_meta10.toml", "mnist4v9", 10),
    "mnist4v9-meta25": ("mnist_4v9.toml", "mnist4v9", 25),
    "mnist4v9-meta50": ("mnist_4v9_meta50.toml", "mnist4v9", 50),
    "cifar10-sym0.2": ("cifar10_sym02.toml", "cifar10", None),
    "cifar10-sym0.5": ("cifar10_sym05.toml", "cifar10", None),
    "cifar10-sym0.8": ("cifar10_sym08.toml", "cifar10", None),
    "cifar10-asym0.4": ("cifar10_asym04.toml", "cifar10", None),
    "digits-lt20": ("digits_balancing.toml", "digits", None),
    "digits-sym0.5": ("digits_denoising.toml", "digits", None),
}

PRESETS = {
    "full": {"seeds": [0, 1, 2], "scenarios": list(SCENARIOS),
             "steps": {"mnist4v9": 3000, "cifar10": 2000, "digits": 3000},
             "network": {}, "data": {}, "cleanlab_folds": 3},
    # About 15 CPU-minutes at one torch thread (under 20 minutes on 2 shared cores): one seed, short runs,
    # one CIFAR scenario with a narrower ResNet-8 and 1,000 test images; cleanlab's folds and CDS's
    # scoring model get half the steps.
    "quick": {"seeds": [0], "scenarios": ["mnist4v9-meta5", "mnist4v9-meta10", "mnist4v9-meta25", "mnist4v9-meta50",
                                          "cifar10-sym0.5", "digits-lt20", "digits-sym0.5"],
              "steps": {"mnist4v9": 1000, "cifar10": 150, "digits": 1500},
              "network": {"cifar10": {"width": 8}}, "data": {"cifar10": {"n_test": 1000}},
              "cleanlab_folds": 2, "aux_fraction": 0.5},
}
TUNE_GRID = (0.3, 1.0, 3.0)  # multipliers of a method's configured step size


def resolve_data(spec: dict, data_dir: str | None) -> dict:
    """The [data] table with its file path made absolute (PYRO_DPS_DATA / --data-dir, else repo-relative)."""
    spec = dict(spec)
    if "path" in spec:
        root = data_dir or os.environ.get(DATA_ENV_VAR)
        path = Path(spec["path"])
        spec["path"] = str(Path(root) / path.name if root else (path if path.is_absolute() else REPO / path))
    return spec


def method_settings(config: dict, method: str, steps: int, preset: dict, beta: float) -> dict:
    """Keyword settings of a baseline: its [baselines] entry (else mixing's), the sampler's batch sizes, and for
    the baselines that take a selected fraction the estimated one (`beta`, as BADS's defaults use it)."""
    table = config["baselines"]
    settings = dict(table.get(method, table.get("mixing", {"lr": 1e-3, "optimizer": "adam"})))
    settings.pop("steps", None)
    settings = baseline_settings(method, settings, config["sampler"].get("batch_size", SamplerConfig.batch_size),
                                 config["sampler"].get("meta_batch_size"))
    if method in BETA_BASELINES:
        settings["beta"] = float(beta)
    aux = max(1, int(steps * preset.get("aux_fraction", 1.0)))
    if method == "cds":
        settings["score_steps"] = aux
    if method == "cleanlab":
        settings.update(folds=preset["cleanlab_folds"], fold_steps=aux)
    return settings


def bads_sampler(config: dict, steps: int, seed: int, device: str):
    """One chain of `steps` steps: warm-up, then 10 draws thinned over the second half (10 theta snapshots)."""
    thin = max(1, steps // 20)
    samples = min(10, steps)
    warmup = max(0, steps - samples * thin)
    sampler = sampler_config(config, seed=seed, device=device, chains=1, progress=False)
    return dataclasses.replace(sampler, warmup=warmup, samples=samples, thin=thin, snapshots=samples)


def defaults_config(config: dict) -> dict:
    """The scenario's [data], [network], [baselines] and model NAME with the model's own default hyper-parameters
    and the default sampler (`pyro-dps run` with only [data], [network] and `model.file` gives the same): the
    imbalance scenarios name the class-balanced prior, as a user who knows D_t is imbalanced would."""
    model = {"file": config["model"]["file"], "hyper": copy.deepcopy(DEMO["model"]["hyper"])}
    return {**config, "model": model, "sampler": copy.deepcopy(DEMO["sampler"])}


def run_method(method: str, config: dict, data: DataSplits, init_net: torch.nn.Module, steps: int, seed: int,
               preset: dict, device: str, overrides: dict | None = None, fraction: dict | None = None) -> dict:
    """Train one method; test accuracy (and posterior-averaged accuracy, noise AUROC where they exist).

    `fraction`: the scenario's estimated useful fraction of D_t ({"value", "seconds"}), which BADS's defaults
    and the baselines that take a fraction use; its seconds are counted as BADS's."""
    overrides, fraction = overrides or {}, fraction or {"value": 0.5, "seconds": 0.0}
    clean = None if data.clean is None else data.clean.numpy()
    start, cpu = time.perf_counter(), time.process_time()
    if method in ("bads", "bads_preset"):
        config = defaults_config(config) if method == "bads" else config
        hyper = {**config["model"]["hyper"], **({"beta": fraction["value"]} if method == "bads" else {})}
        sampler = bads_sampler(config, steps, seed, device)
        if "step_size" in overrides:
            sampler = dataclasses.replace(sampler, step_size=overrides["step_size"])
            if sampler_config(config).step_size == "auto":  # the tuned value is the cyclical schedule's peak
                sampler = dataclasses.replace(sampler, step_size={
                    **auto_schedule(sampler.thin, sampler.warmup), "eps0": overrides["step_size"]})
        problem = Problem(copy.deepcopy(init_net), data.x_train, data.y_train, data.x_meta, data.y_meta)
        posterior = fit(load_model(config["model"]["file"]), problem, hyper, sampler)
        acc = accuracy(posterior.predict_proba(data.x_test, ensemble=False), data.y_test)
        ens = accuracy(posterior.predict_proba(data.x_test), data.y_test)
        scores = posterior.weight_summary()["mean"]
        extra = fraction["seconds"] if method == "bads" else 0.0
        return {"test_accuracy": acc, "test_accuracy_ensemble": ens, "noise_auroc": noise_auroc(scores, clean),
                "seconds": time.perf_counter() - start + extra, "cpu_seconds": time.process_time() - cpu + extra,
                "steps": steps, "settings": {"step_size": sampler.step_size, "beta": float(posterior.hyper["beta"]),
                                             "weight_update": posterior.weight_update}}
    settings = {**method_settings(config, method, steps, preset, fraction["value"]), **overrides}
    net, scores = run_baseline(method, copy.deepcopy(init_net).to(device), data.to(device), steps, seed=seed,
                               **settings)
    acc = accuracy(predict_proba(net, data.x_test.to(device)), data.y_test)
    auroc = None if scores is None else noise_auroc(scores.numpy(), clean)
    return {"test_accuracy": acc, "test_accuracy_ensemble": None, "noise_auroc": auroc,
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "steps": steps,
            "settings": settings}


def meta_split(data: DataSplits, seed: int) -> DataSplits:
    """(data with half of D_m as its meta set, the same with the other half as its 'test' set), per class."""
    f, v = stratified_split(data.y_meta, 0.5, 90_001 + seed)
    v = torch.cat([v, f[torch.bincount(data.y_meta)[data.y_meta[f]] == 1]])  # a lone example is in both halves
    return dataclasses.replace(data, x_meta=data.x_meta[f], y_meta=data.y_meta[f], x_test=data.x_meta[v],
                               y_test=data.y_meta[v])


def tune(method: str, config: dict, data: DataSplits, init_net, steps: int, seed: int, preset: dict,
         device: str, echo, fraction: dict) -> dict:
    """The step size (BADS: sampler step_size; baselines: lr) with the best accuracy on held-out meta examples."""
    split = meta_split(data, seed)
    if method in ("bads", "bads_preset"):
        chosen = defaults_config(config) if method == "bads" else config
        step = sampler_config(chosen).step_size
        base, key = float(CYCLE_PEAK if step == "auto" else step), "step_size"  # "auto": tune the cycle's peak
    else:
        base, key = float(method_settings(config, method, steps, preset, fraction["value"]).get("lr", 1e-3)), "lr"
    results = {}
    for m in TUNE_GRID:
        value = base * m
        results[value] = run_method(method, config, split, init_net, steps, seed, preset, device,
                                    {key: value}, fraction)["test_accuracy"]
    best = max(results, key=lambda v: (results[v], -abs(math.log(v / base))))
    echo(f"    tune {method}: {key} " + ", ".join(f"{v:.2g}->{a:.3f}" for v, a in results.items()) + f" => {best:.2g}")
    return {key: best}


def useful_fraction(data: DataSplits, init_net, steps: int, seed: int, preset: dict) -> dict:
    """The estimated fraction of D_t like D_m (`pyro_dps.useful_fraction`; its two scoring networks get the aux
    budget, like CDS's and cleanlab's extra models), with the true clean fraction when it is known."""
    problem = Problem(copy.deepcopy(init_net), data.x_train, data.y_train, data.x_meta, data.y_meta)
    aux = max(1, int(steps * preset.get("aux_fraction", 1.0)))
    est = estimate_useful_fraction(problem, steps=aux, seed=seed)
    truth = None if data.clean is None or bool(data.clean.all()) else float(data.clean.float().mean())
    return {"value": est.value, "truth": truth, "seconds": est.seconds, "steps": aux}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~20-minute preset (one seed, short runs)")
    ap.add_argument("--scenarios", nargs="*", default=None, choices=list(SCENARIOS))
    ap.add_argument("--methods", nargs="*", default=None, choices=METHODS)
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="the step budget of every scenario (overrides the preset)")
    ap.add_argument("--tune", action="store_true", help="pick step sizes on a held-out half of D_m (first seed)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small nets "
                    "on a shared 2-core machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None, help=f"directory of the data files (default: ${DATA_ENV_VAR})")
    ap.add_argument("--out", default=str(REPO / "results"))
    return ap.parse_args(argv)


def chosen_methods(methods: list[str]) -> list[str]:
    """The methods to run: cleanlab dropped (with a note) when it is not installed; unknown names refused."""
    if "cleanlab" in methods and not cleanlab_available():
        print("cleanlab is not installed (pip install 'pyro-dps[cleanlab]'): skipping it", file=sys.stderr)
        methods = [m for m in methods if m != "cleanlab"]
    unknown = [m for m in methods if m not in ("bads", "bads_preset") and m not in BASELINES]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}")
    return methods


def run_scenario_seeds(name: str, doc: dict, args, preset: dict, seeds: list[int], methods: list[str], echo,
                       out: Path) -> None:
    """Every seed of scenario `name`, each method on the same data and initial network; outputs rewritten as
    results arrive."""
    file, family, meta = SCENARIOS[name]
    config = load_config(CONFIGS / file)
    config["data"] = resolve_data(config["data"], args.data_dir)
    config["network"] = {**config["network"], **preset["network"].get(family, {})}
    config["data"].update(preset.get("data", {}).get(family, {}))
    steps = args.steps or preset["steps"][family]
    entry = {"config": file, "family": family, "meta_per_class": meta, "steps": steps,
             "network": config["network"], "data": config["data"], "runs": {m: [] for m in methods}, "tuned": {}}
    doc["scenarios"][name] = entry
    if "path" in config["data"] and not Path(config["data"]["path"]).exists():
        entry["skipped"] = f"data file {config['data']['path']} not found"
        echo(f"[{name}] skipped: {entry['skipped']}")
        return
    for seed in seeds:
        data = build_data({**config["data"], "seed": seed})
        torch.manual_seed(seed)
        init_net = build_network(config["network"], data)
        echo(f"[{name} seed {seed}] N_t={data.n_train} N_m={data.n_meta} N_test={data.n_test} steps={steps}")
        fraction = useful_fraction(data, init_net, steps, seed, preset)
        entry.setdefault("useful_fraction", []).append({"seed": seed, **fraction})
        echo(f"    useful fraction of D_t: estimated {fraction['value']:.3f}"
             + ("" if fraction["truth"] is None else f", true clean fraction {fraction['truth']:.3f}")
             + f" ({fraction['seconds']:.1f}s)")
        for method in methods:
            if args.tune and seed == seeds[0]:
                entry["tuned"][method] = tune(method, config, data, init_net, steps, seed, preset, args.device,
                                              echo, fraction)
            result = run_reported(method, config, data, init_net, steps, seed, preset, args.device,
                                  entry["tuned"].get(method), fraction, echo)
            entry["runs"][method].append({"seed": seed, **result})
            if "error" not in result:
                entry["summary"] = {m: summarise(r) for m, r in entry["runs"].items() if r}
                write_outputs(doc, out)


def run_reported(method: str, config, data, init_net, steps, seed, preset, device, tuned, fraction, echo) -> dict:
    """`run_method`, its result echoed; a method that fails on a seed is reported, not hidden."""
    try:
        result = run_method(method, config, data, init_net, steps, seed, preset, device, tuned, fraction)
    except DPSError as exc:
        result = {"test_accuracy": None, "test_accuracy_ensemble": None, "noise_auroc": None,
                  "seconds": None, "cpu_seconds": None, "error": f"{type(exc).__name__}: {exc}"}
        echo(f"    {method:<15} FAILED: {result['error']}")
        return result
    ens = "" if result["test_accuracy_ensemble"] is None else f" (avg {result['test_accuracy_ensemble']:.3f})"
    auroc = "" if result["noise_auroc"] is None else f" auroc {result['noise_auroc']:.3f}"
    echo(f"    {method:<15} acc {result['test_accuracy']:.3f}{ens}{auroc}  {result['seconds']:.1f}s "
         f"(cpu {result['cpu_seconds']:.1f}s)")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = copy.deepcopy(PRESETS["quick" if args.quick else "full"])
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    methods = chosen_methods(args.methods or METHODS)
    out = Path(args.out)
    doc = {"settings": {"preset": "quick" if args.quick else "full", "seeds": seeds, "methods": methods,
                        "threads": args.threads, "device": args.device, "tune": args.tune, "torch": torch.__version__},
           "scenarios": {}}
    echo = lambda *a: print(*a, flush=True)  # noqa: E731
    t_all = time.perf_counter()
    for name in args.scenarios or preset["scenarios"]:
        run_scenario_seeds(name, doc, args, preset, seeds, methods, echo, out)
    doc["settings"]["seconds"] = time.perf_counter() - t_all
    write_outputs(doc, out)
    echo(markdown(doc))
    echo(f"wrote {out}/quality.json, quality.md, quality_fig3_mnist4v9.png in {doc['settings']['seconds']:.0f}s")
    return doc


if __name__ == "__main__":
    main()
