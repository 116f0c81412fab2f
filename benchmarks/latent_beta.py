"""What `models/latent_beta.py`'s beta estimates: its posterior mean and 90% interval against the true clean
fraction of D_t, on the digits demo with symmetric label noise at several rates.

    python benchmarks/latent_beta.py                              # rates 0.5 and 0.2, T = 0.01, 2 chains
    python benchmarks/latent_beta.py --rates 0.35 --temperature 1
    python benchmarks/latent_beta.py --hyper '{"reject_loss": 0}'   # a variant of the model's settings

Data: `digits_splits(seed, "symmetric", rate)` (the demo's D_t: 10 meta and 30 test examples per class taken
out first); the truth is `data.clean.mean()` (a flipped label always moves to another class, so it is 1 - rate
up to the flips' sampling). Sampler: `SamplerConfig`'s defaults (pSGLD, step 1e-3, T = 0.01, batch 128) except the
chains, the run length and `local_step_size` (the Langevin step of the weights' logits, which this trace-path
model needs: its default, `step_size`, barely moves them). Also printed: the mean weight (beta's
posterior follows it), the useful-fraction estimate (`pyro_dps/useful_fraction.py`, what the paper model's
beta = "auto" would be) and the AUROC of the posterior mean weights for clean vs noisy. A benchmark, not a
test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pyro_dps import SamplerConfig, fit
from pyro_dps.context import Problem
from pyro_dps.data.builders import digits_splits
from pyro_dps.metrics import noise_auroc
from pyro_dps.model_loader import load_model
from pyro_dps.networks import mlp
from pyro_dps.useful_fraction import estimate_useful_fraction


def problem_for(rate: float, seed: int):
    """The demo's digits split at noise `rate` and its Problem (MLP 64-128-10, seeded initial network)."""
    data = digits_splits(seed, noise="symmetric", noise_rate=rate)
    torch.manual_seed(seed)
    return data, Problem(mlp(64, 10, (128,)), data.x_train, data.y_train, data.x_meta, data.y_meta)


@torch.no_grad()
def explained_fraction(posterior) -> float:
    """Mean over chains of the fraction of D_t whose label the chain's final network gives more than chance
    probability (loss below the model's reject loss log K): what the cold weights count."""
    problem = posterior.problem
    k = max(int(problem.y_train.max()), int(problem.y_meta.max())) + 1
    rows = torch.arange(problem.n_train)
    return float(np.mean([float((problem.losses(posterior.potential.network_params(theta), rows) < np.log(k))
                                .float().mean()) for theta in posterior.final_theta]))


def measure(rate: float, args) -> dict:
    """One row of the table: a seeded fit of latent_beta at noise `rate` and what its beta draws say."""
    data, problem = problem_for(rate, args.seed)
    config = SamplerConfig(chains=args.chains, warmup=args.warmup, samples=args.samples, thin=args.thin,
                           temperature=args.temperature, local_step_size=args.local_step_size,
                           seed=args.seed, progress=False, snapshots=2)
    start = time.perf_counter()
    posterior = fit(load_model("latent_beta"), problem, json.loads(args.hyper), config)
    seconds = time.perf_counter() - start
    ds = posterior.dataset()
    beta = ds["beta"].values
    lo, hi = np.quantile(beta.ravel(), [0.05, 0.95])
    truth = float(data.clean.float().mean())
    w_bar, clean = posterior.weight_summary()["mean"], data.clean.numpy().astype(bool)
    row = {"rate": rate, "truth": truth, "beta": float(beta.mean()), "lo": float(lo), "hi": float(hi),
           "covers": bool(lo <= truth <= hi), "chain_means": [round(float(m), 3) for m in beta.mean(1)],
           "w_mean": float(ds["w_mean"].values.mean()),
           "auroc": float(noise_auroc(posterior.weight_summary()["mean"], data.clean.numpy())),
           "w_clean": float(w_bar[clean].mean()), "w_noisy": float(w_bar[~clean].mean()),
           "explained": explained_fraction(posterior),
           "T": args.temperature, "steps": args.warmup + args.samples * args.thin, "chains": args.chains,
           "seconds": seconds}
    if args.useful_fraction:
        row["useful_fraction"] = estimate_useful_fraction(problem, seed=args.seed).value
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.2])
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3200)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--thin", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.01)
    parser.add_argument("--local-step-size", type=lambda v: None if v == "default" else float(v), default=0.05,
                        help="the weights' logit step; 'default': SamplerConfig's (None: step_size)")
    parser.add_argument("--hyper", default="{}", help="JSON of latent_beta's hyper-parameters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--useful-fraction", action="store_true", help="also the useful-fraction estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| rate | truth | beta mean | 90% interval | covers | mean(w) | explained | w clean | w noisy | AUROC "
          "| useful fr. | T | local step | steps | chains | seconds |")
    print("|---" * 16 + "|")
    for rate in args.rates:
        r = measure(rate, args)
        uf = f"{r['useful_fraction']:.3f}" if "useful_fraction" in r else "-"
        print(f"| {rate} | {r['truth']:.3f} | {r['beta']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | "
              f"{'yes' if r['covers'] else 'no'} | {r['w_mean']:.3f} | {r['explained']:.3f} | "
              f"{r['w_clean']:.3f} | {r['w_noisy']:.3f} | {r['auroc']:.3f} | {uf} | {r['T']:g} | "
              f"{args.local_step_size or 'default'} | {r['steps']} | {r['chains']} | {r['seconds']:.0f} |", flush=True)
        print(f"<!-- chain means {r['chain_means']} -->", flush=True)


if __name__ == "__main__":
    main()
