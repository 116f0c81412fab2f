"""How the default configuration was checked: variants of it on development scenarios that are NOT in
`benchmarks/quality.py` (Fashion-MNIST label noise and digits with another corruption), never on a
benchmark's test data.

Each variant changes one setting of the defaults (temperature, the meta weight rule, the theta step size,
beta, the model); every run is one chain of BADS with the same step budget, and the table reports test
accuracy (last iterate), noise AUROC of the posterior mean weights and the beta that was used.

    python benchmarks/defaults_dev.py --steps 3000 --seeds 0 1      # about 20 CPU-minutes
Data: PYRO_DPS_DATA or ../shared/data (fashion_mnist.npz); the digits scenarios need nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from pyro_dps.context import Problem
from pyro_dps.data import DATA_ENV_VAR, digits_splits, mnist_like_noisy_splits
from pyro_dps import SamplerConfig, fit
from pyro_dps.metrics import accuracy, noise_auroc
from pyro_dps.model_loader import load_model
from pyro_dps.networks import mlp

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "defaults": ({}, {}),
    "constant step 1e-3 (the default before 2026-12-03)": ({}, {"step_size": 1e-3}),
    "rho_m=1 (paper)": ({"rho_m": 1.0}, {}),
    "T=0.1": ({}, {"temperature": 0.1}),
    "T=0.001": ({}, {"temperature": 0.001}),
    "step 3e-4": ({}, {"step_size": 3e-4}),
    "step 3e-3": ({}, {"step_size": 3e-3}),
    "langevin weights (local 2.0)": ({}, {"weight_update": "langevin", "local_step_size": 2.0}),
    "beta = truth (oracle)": ({"beta": "truth"}, {}),
    "class_balanced model": ({"model": "class_balanced"}, {}),
}


def scenarios(data_dir: Path):
    fmnist = data_dir / "fashion_mnist.npz"
    if fmnist.exists():
        yield "fmnist-sym0.4", lambda seed: mnist_like_noisy_splits(fmnist, seed=seed, meta_per_class=10,
                                                                     noise="symmetric", noise_rate=0.4,
                                                                     n_train=6000, n_test=2000)
        yield "fmnist-asym0.3", lambda seed: mnist_like_noisy_splits(fmnist, seed=seed, meta_per_class=10,
                                                                      noise="asymmetric", noise_rate=0.3,
                                                                      n_train=6000, n_test=2000)
    yield "digits-asym0.4", lambda seed: digits_splits(seed=seed, noise="asymmetric", noise_rate=0.4)
    yield "digits-sym0.3-lt5", lambda seed: digits_splits(seed=seed, noise="symmetric", noise_rate=0.3,
                                                          imbalance_factor=5.0)


def run(data, hyper_change: dict, sampler_change: dict, steps: int, seed: int) -> dict:
    hyper = dict(hyper_change)
    model = load_model(hyper.pop("model", "bads"))
    if hyper.get("beta") == "truth":
        hyper["beta"] = float(data.clean.float().mean())
    thin = max(1, steps // 40)
    config = SamplerConfig(chains=1, warmup=steps - 20 * thin, samples=20, thin=thin, snapshots=5, seed=seed,
                           progress=False)
    config = dataclasses.replace(config, **sampler_change)
    torch.manual_seed(seed)
    net = mlp(int(np.prod(data.x_train.shape[1:])), data.num_classes, (256,))
    problem = Problem(net, data.x_train.flatten(1), data.y_train, data.x_meta.flatten(1), data.y_meta)
    start = time.perf_counter()
    post = fit(model, problem, hyper, config)
    mean = post.weight_summary()["mean"]
    return {"accuracy": accuracy(post.predict_proba(data.x_test.flatten(1), ensemble=False), data.y_test),
            "auroc": noise_auroc(mean, data.clean.numpy()), "beta": float(post.hyper.get("beta", float("nan"))),
            "beta_truth": float(data.clean.float().mean()), "seconds": time.perf_counter() - start}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(REPO / "results" / "defaults_dev.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import os
    data_dir = Path(args.data_dir or os.environ.get(DATA_ENV_VAR) or REPO.parent / "shared" / "data")
    results = {}
    for name, build in scenarios(data_dir):
        for seed in args.seeds:
            data = build(seed)
            for variant in args.variants:
                r = run(data, *VARIANTS[variant], args.steps, seed)
                results.setdefault(name, {}).setdefault(variant, []).append(r)
                print(f"{name} seed {seed} {variant:<30} acc {r['accuracy']:.3f} auroc {r['auroc']:.3f} "
                      f"beta {r['beta']:.3f} (truth {r['beta_truth']:.3f}) {r['seconds']:.0f}s", flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
