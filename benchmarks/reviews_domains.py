"""Reviews off-domain scenario with the ONE default configuration: mean weight per source domain (issue 12).

The scenario is `configs/reviews_offdomain.toml`'s [data] and [network] exactly (kitchen is the target
domain: 20 meta and 400 test kitchen reviews per class; D_t = the other kitchen reviews plus every books,
dvd and electronics review, clean = in-domain; features = frozen all-MiniLM-L6-v2 title and title+text
embeddings, cached in the config's `cache` file or `--cache`; MLP [64]). Its [model] and [sampler]
sections (a hand-set paper preset, beta = 0.5) are NOT used: BADS runs as

    fit(load_model("bads"), problem, {}, SamplerConfig(chains=C, progress=False, seed=s))

i.e. beta = "auto", rho_m, sigma, step size, temperature and run length all at their defaults.
Baselines (pyro_dps.baselines) get the same network (the same initial weights for a seed) and the same
number of network updates as one BADS chain (warm-up + samples x thin, read off the resolved run); their
settings are the config's [baselines] mixing entry (Adam, lr 1e-3) with batch 128, as benchmarks/quality.py
gives them (BLO/MWN meta batch = the sampler's meta batch; CDS's beta = the beta BADS estimated for that
seed; cleanlab 3 folds of as many steps). Nothing is tuned and nothing is chosen on the test set.

For each method and seed it prints: test accuracy on the in-domain (kitchen) test set (BADS: the mean
over chains of the last iterate, and the posterior average over theta snapshots), the mean weight
(BADS: posterior mean; baselines: their per-example score) per source domain of D_t, the in-domain
AUROC of that weight / score (in-domain = positive), CPU seconds, and for BADS the estimated beta
against the true in-domain fraction of D_t, with a diagnosis of the estimate (the share of each domain
above the estimator's score cut, the scorer's own in-domain AUROC) and the per-domain training loss
under BADS's final theta (what the weights' conditional reads).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reviews_domains.py                 # seeds 0 1, 2 chains
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reviews_domains.py --seeds 0 --methods bads   # BADS only

About 480 CPU s for both seeds and every method at one thread (BADS ~57 s a seed with 2 chains), plus
~530 CPU s once to embed the 8,000 reviews when the cache is cold (MiniLM, 256 tokens, one thread).
The defaults measured are those of the pyro_dps that is imported; the JSON records its path and its
SamplerConfig defaults. To measure a commit while the working tree is being edited, extract it and put it
first on the path (benchmarks/reviews_domains.md does this):

    git archive COMMIT pyro_dps models | tar -x -C /tmp/pyro_head && cp -r /tmp/pyro_head/models /tmp/pyro_head/pyro_dps/
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/pyro_head .venv/bin/python benchmarks/reviews_domains.py

Data: --data-dir, else $PYRO_DPS_DATA, else the config's path (../shared/data relative to the repository).
Writes <out>/reviews_domains.json (every run) and <out>/reviews_domains.md (the tables); files are
rewritten after every run. Result and verdict: benchmarks/reviews_domains.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from pyro_dps import SamplerConfig, fit
from pyro_dps.baselines import cleanlab_available, run_baseline
from pyro_dps.config import load_config
from pyro_dps.context import Problem
from pyro_dps.data import DATA_ENV_VAR
from pyro_dps.data.text import REVIEW_DOMAINS, mean_weight_by_domain
from pyro_dps.driver.run_length import resolve_length
from pyro_dps.metrics import accuracy, noise_auroc
from pyro_dps.model_loader import load_model
from pyro_dps.scenario import baseline_settings, build_data, build_network
from pyro_dps.training import predict_proba
from pyro_dps.useful_fraction import best_bin_estimate, cross_fitted_scores, min_curated_above

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "reviews_offdomain.toml"
METHODS = ["bads", "blo", "mwn", "cds", "cleanlab", "mixing"]
SCORE_NAME = {"bads": "posterior mean weight", "blo": "mean weight received", "mwn": "mean weight received",
              "cds": "contrastive log-likelihood", "cleanlab": "label quality", "mixing": "-"}


def scenario_data(config: dict, seed: int, data_dir: str | None, cache: str | None):
    """The [data] table of the config, its file found under data_dir / $PYRO_DPS_DATA / the repo-relative path."""
    spec = dict(config["data"])
    root = data_dir or os.environ.get(DATA_ENV_VAR)
    path = Path(spec["path"])
    spec["path"] = str(Path(root) / path.name if root else (path if path.is_absolute() else REPO / path))
    if cache:
        spec["cache"] = cache
    return build_data({**spec, "seed": seed}), spec


def by_domain(values: np.ndarray, data) -> dict[str, float]:
    return mean_weight_by_domain(np.asarray(values, dtype=np.float64), data)


def rank_by_domain(values: np.ndarray, data) -> dict[str, float]:
    """Mean percentile rank (0 = lowest score in D_t, 1 = highest) per domain: comparable across methods."""
    from scipy.stats import rankdata

    ranks = (rankdata(np.asarray(values, dtype=np.float64)) - 1) / max(1, len(values) - 1)
    return by_domain(ranks, data)


def scored(values: np.ndarray, data, clean: np.ndarray) -> dict:
    means = by_domain(values, data)
    return {"by_domain": means, "rank_by_domain": rank_by_domain(values, data),
            "top_domain": max(means, key=means.get), "in_domain_auroc": noise_auroc(values, clean)}


def run_bads(config: dict, data, init_net, seed: int, chains: int) -> tuple[dict, int]:
    """The default BADS; returns (result, steps per chain)."""
    clean = data.clean.numpy()
    start, cpu = time.perf_counter(), time.process_time()
    problem = Problem(copy.deepcopy(init_net), data.x_train, data.y_train, data.x_meta, data.y_meta)
    model = load_model(config["model"]["file"])
    posterior = fit(model, problem, {}, SamplerConfig(chains=chains, progress=False, seed=seed))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    cfg = posterior.config
    steps = int(cfg.warmup + cfg.samples * cfg.thin)
    accs = [accuracy(posterior.predict_proba(data.x_test, ensemble=False, chain=k), data.y_test)
            for k in range(chains)]
    summary = posterior.weight_summary()
    mean_w = summary["mean"]
    est = posterior.useful_fraction
    beta = float(posterior.hyper["beta"])
    truth = float(clean.mean())
    result = {"method": "bads", "seed": seed, "test_accuracy": float(np.mean(accs)), "test_accuracy_chains": accs,
              "test_accuracy_ensemble": accuracy(posterior.predict_proba(data.x_test), data.y_test),
              **scored(mean_w, data, clean), "seconds": seconds, "cpu_seconds": cpu_seconds, "steps": steps,
              "chains": chains,
              "beta_estimate": beta, "in_domain_fraction": truth,
              "useful_fraction": None if est is None else {
                  "value": est.value, "threshold": est.threshold, "train_above": est.train_above,
                  "meta_above": est.meta_above, "steps": est.steps, "seconds": est.seconds},
              "mean_weight": float(mean_w.mean()), "weight_sd_mean": float(summary["sd"].mean()),
              "frac_w_above_half_by_domain": by_domain((mean_w > 0.5).astype(float), data),
              "hyper": {k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
                        for k, v in posterior.hyper.items()},
              "weight_update": posterior.weight_update,
              "sampler": {"warmup": cfg.warmup, "samples": cfg.samples, "thin": cfg.thin,
                          "batch_size": cfg.batch_size, "step_size": cfg.step_size,
                          "temperature": cfg.temperature, "kernel": cfg.kernel}}
    # What the weights' conditional reads: each example's loss under the final theta (averaged over chains).
    losses = []
    for theta in posterior.final_theta:
        params = posterior.potential.network_params(theta)
        with torch.no_grad():
            logits = torch.cat([posterior.problem.forward(params, data.x_train[i:i + 1024])
                                for i in range(0, data.n_train, 1024)])
            losses.append(torch.nn.functional.cross_entropy(logits, data.y_train, reduction="none").numpy())
    loss = np.mean(losses, axis=0)
    result["final_loss_by_domain"] = by_domain(loss, data)
    result["neg_final_loss_in_domain_auroc"] = noise_auroc(-loss, clean)
    result["final_train_accuracy_by_domain"] = by_domain((loss < np.log(2)).astype(float), data)
    return result, steps


def beta_diagnosis(data, init_net, seed: int, est: dict) -> dict:
    """Recompute the estimator's out-of-fold scores (same seed, same steps: the same numbers as in `fit`) and
    report, per domain, the share of D_t at or above the chosen cut c and the mean score; plus the scorer's own
    in-domain AUROC (how well the scores it bounds the fraction with tell domains apart)."""
    problem = Problem(copy.deepcopy(init_net), data.x_train, data.y_train, data.x_meta, data.y_meta)
    start = time.process_time()
    s_t, s_m = cross_fitted_scores(problem, est["steps"], 128, seed=seed)
    value, cut, q_t, q_m = best_bin_estimate(s_t.numpy(), s_m.numpy())
    s, m = s_t.numpy(), np.sort(s_m.numpy())
    # the ratio q_t(c) / q_m(c) over the cuts the estimator may use (`min_curated_above` curated examples above):
    # its smallest value without the margin says whether any region isolates in-domain reviews
    allowed = [c for i, c in enumerate(m) if len(m) - i >= min_curated_above(len(m))]
    ratios = [float((s >= c).mean() / (m >= c).mean()) for c in allowed]
    return {"min_raw_ratio": min(ratios), "raw_ratio_at_median_meta": float((s >= np.median(m)).mean() / 0.5),
            "reproduced_value": float(value), "cut": float(cut), "train_above": float(q_t), "meta_above": float(q_m),
            "share_above_cut_by_domain": by_domain((s >= cut).astype(float), data),
            "mean_score_by_domain": by_domain(s, data), "meta_mean_score": float(s_m.numpy().mean()),
            "scorer_in_domain_auroc": noise_auroc(s, data.clean.numpy()),
            "cpu_seconds": time.process_time() - start}


def method_settings(config: dict, method: str, steps: int, beta: float) -> dict:
    """A baseline's settings: its table (else mixing's) with the batch sizes BADS used (SamplerConfig's)."""
    table = config["baselines"]
    settings = dict(table.get(method, table.get("mixing", {"lr": 1e-3, "optimizer": "adam"})))
    for key in ("steps", "batch_size", "meta_batch_size"):
        settings.pop(key, None)
    settings = baseline_settings(method, settings, SamplerConfig.batch_size, SamplerConfig.meta_batch_size)
    if method == "cds":
        settings.update(beta=float(beta), score_steps=steps)
    if method == "cleanlab":
        settings.update(folds=3, fold_steps=steps)
    return settings


def run_other(method: str, config: dict, data, init_net, seed: int, steps: int, beta: float) -> dict:
    clean = data.clean.numpy()
    settings = method_settings(config, method, steps, beta)
    start, cpu = time.perf_counter(), time.process_time()
    net, scores = run_baseline(method, copy.deepcopy(init_net), data, steps, seed=seed, **settings)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    out = {"method": method, "seed": seed, "test_accuracy": accuracy(predict_proba(net, data.x_test), data.y_test),
           "seconds": seconds, "cpu_seconds": cpu_seconds, "steps": steps, "settings": settings}
    if scores is not None:
        out.update(scored(scores.numpy(), data, clean))
    return out


def library_provenance() -> dict:
    """Which pyro_dps ran (its path; the repository's commit and whether its library files differ from it) and the
    SamplerConfig defaults it has: the defaults are what this benchmark measures."""
    import dataclasses
    import subprocess

    import pyro_dps.models.bads as bads_module

    import pyro_dps
    info = {"pyro_dps": str(Path(pyro_dps.__file__).parent), "models": str(Path(bads_module.__file__).parent),
            "sampler_defaults": {k: v for k, v in dataclasses.asdict(SamplerConfig()).items()
                                 if k in ("kernel", "step_size", "temperature", "warmup", "samples", "thin",
                                          "batch_size", "weight_update", "candidates")}}
    try:
        info["repo_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                             text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "pyro_dps", "models"],
                                 capture_output=True, text=True, check=True).stdout.split("\n")
        info["repo_library_changes"] = [line.strip() for line in changed if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(doc: dict) -> str:
    runs = doc["runs"]
    lines = ["# Reviews off-domain (kitchen target), default configuration", "",
             f"Scenario: configs/reviews_offdomain.toml [data] + [network]; N_t = {doc['data']['n_train']}, "
             f"N_m = {doc['data']['n_meta']}, N_test = {doc['data']['n_test']}; in-domain (kitchen) fraction of D_t "
             f"= {fmt(doc['data']['in_domain_fraction'])}. BADS: `fit(bads, problem, {{}}, SamplerConfig(chains="
             f"{doc['settings']['chains']}, seed=s))`. Baselines: same net, same updates as one BADS chain.", "",
             f"Library: `{doc['settings']['library'].get('pyro_dps')}`; SamplerConfig defaults "
             f"`{doc['settings']['library'].get('sampler_defaults')}`.", "",
             "Mean weight / score per source domain of D_t (BADS: posterior mean weight; BLO/MWN: mean weight "
             "received; CDS: contrastive score; cleanlab: label quality). Highest domain in bold.", "",
             "| method | seed | test acc | acc (post. avg) | books | dvd | electronics | kitchen (in-domain) | "
             "in-domain AUROC | top domain | CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['seed']} | FAILED: {r['error']} |")
            continue
        bd = r.get("by_domain") or {}
        top = r.get("top_domain")
        cells = [(f"**{fmt(bd[d])}**" if d == top else fmt(bd[d])) if d in bd else "-" for d in REVIEW_DOMAINS]
        lines.append(f"| {r['method']} | {r['seed']} | {fmt(r['test_accuracy'])} | "
                     f"{fmt(r.get('test_accuracy_ensemble'))} | " + " | ".join(cells) +
                     f" | {fmt(r.get('in_domain_auroc'))} | {top or '-'} | {r['cpu_seconds']:.0f} |")
    lines += ["", "Mean percentile rank of the weight / score per domain (0 = lowest in D_t, 1 = highest; 0.5 = "
              "chance):", "", "| method | seed | books | dvd | electronics | kitchen |", "|---|---|---|---|---|---|"]
    for r in runs:
        if r.get("rank_by_domain"):
            lines.append(f"| {r['method']} | {r['seed']} | " +
                         " | ".join(fmt(r["rank_by_domain"].get(d)) for d in REVIEW_DOMAINS) + " |")
    bads = [r for r in runs if r["method"] == "bads" and "error" not in r]
    if bads:
        lines += ["", "BADS: estimated beta against the true in-domain fraction, and why:", "",
                  "| seed | beta (est.) | in-domain fraction | mean w | estimator cut: share of D_t above / of D_m "
                  "above | share above cut: books / dvd / electronics / kitchen | scorer in-domain AUROC | "
                  "final loss: books / dvd / electronics / kitchen | -loss in-domain AUROC | steps/chain |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in bads:
            d = r.get("beta_diagnosis") or {}
            share = d.get("share_above_cut_by_domain", {})
            loss = r["final_loss_by_domain"]
            lines.append(
                f"| {r['seed']} | {fmt(r['beta_estimate'])} | {fmt(r['in_domain_fraction'])} | {fmt(r['mean_weight'])} | "
                f"{fmt(d.get('train_above'))} / {fmt(d.get('meta_above'))} | "
                + " / ".join(fmt(share.get(x)) for x in REVIEW_DOMAINS)
                + f" | {fmt(d.get('scorer_in_domain_auroc'))} | " + " / ".join(fmt(loss.get(x)) for x in REVIEW_DOMAINS)
                + f" | {fmt(r['neg_final_loss_in_domain_auroc'])} | {r['steps']} |")
    emb = doc.get("embedding")
    if emb:
        lines += ["", f"Data build (embeddings): {emb}"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache", default=None, help="embedding cache .npz (default: the config's data.cache)")
    ap.add_argument("--out", default=str(REPO / "results"))
    return ap.parse_args(argv)


def seed_data(doc: dict, config: dict, seed: int, args, echo):
    """The seed's reviews split, its build time (cold or cached embeddings) and sizes recorded in `doc`."""
    t0, c0 = time.perf_counter(), time.process_time()
    cache = args.cache or config["data"].get("cache")
    had_cache = bool(cache) and Path(cache).exists()
    data, spec = scenario_data(config, seed, args.data_dir, args.cache)
    build = {"seed": seed, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
             "cache": spec.get("cache"), "cache_existed": had_cache}
    doc.setdefault("builds", []).append(build)
    doc["embedding"] = "; ".join(f"seed {b['seed']}: {b['cpu_seconds']:.0f} CPU s "
                                 f"({'cache hit' if b['cache_existed'] else 'cold cache, embedding'})"
                                 for b in doc["builds"])
    doc["data"] = {"n_train": data.n_train, "n_meta": data.n_meta, "n_test": data.n_test,
                   "dim": int(data.x_train.shape[1]), "in_domain_fraction": float(data.clean.float().mean()),
                   "domain_counts": {REVIEW_DOMAINS[i]: int((data.groups["domain"] == i).sum())
                                     for i in range(len(REVIEW_DOMAINS))}}
    echo(f"[seed {seed}] N_t={data.n_train} N_m={data.n_meta} N_test={data.n_test} dim={data.x_train.shape[1]} "
         f"in-domain fraction {doc['data']['in_domain_fraction']:.3f}; data built in {build['cpu_seconds']:.1f} "
         f"CPU s ({'cache hit' if had_cache else 'cold cache'})")
    return data


def run_seed_methods(doc: dict, config: dict, data, seed: int, methods: list[str], chains: int, echo, write) -> None:
    """Every method on one seed's data, BADS first (it fixes the step budget and CDS's beta); a method that
    fails is reported with its traceback on stderr, not hidden."""
    torch.manual_seed(seed)
    init_net = build_network(config["network"], data)
    steps, beta = None, None
    for method in methods:
        try:
            if method == "bads":
                result, steps = run_bads(config, data, init_net, seed, chains)
                beta = result["beta_estimate"]
                if result["useful_fraction"] is not None:
                    result["beta_diagnosis"] = beta_diagnosis(data, init_net, seed, result["useful_fraction"])
            else:
                if steps is None:  # BADS not run: the default run length of one chain
                    c = resolve_length(SamplerConfig(), data.n_train)
                    steps = c.warmup + c.samples * c.thin
                if beta is None:
                    beta = float(data.clean.float().mean())  # only reached without BADS; noted in settings
                    doc["settings"]["cds_beta_from_truth"] = True
                result = run_other(method, config, data, init_net, seed, steps, beta)
        except Exception as exc:
            traceback.print_exc()
            result = {"method": method, "seed": seed, "error": f"{type(exc).__name__}: {exc}", "cpu_seconds": 0.0}
            echo(f"    {method:<9} FAILED: {result['error']}")
            doc["runs"].append(result)
            write()
            continue
        doc["runs"].append(result)
        echo(result_line(method, result))
        write()


def result_line(method: str, result: dict) -> str:
    """One method's printed line: accuracy, mean weight by domain, in-domain AUROC; for BADS its beta estimate."""
    bd = result.get("by_domain")
    dom = "" if not bd else " | " + " ".join(f"{d} {v:.3f}" for d, v in bd.items())
    extra = ""
    if method == "bads":
        diag = result.get("beta_diagnosis", {})
        extra = (f" | beta est {result['beta_estimate']:.3f} vs in-domain {result['in_domain_fraction']:.3f}"
                 f" (mean w {result['mean_weight']:.3f}; cut keeps "
                 + ", ".join(f"{d} {v:.2f}" for d, v in diag.get("share_above_cut_by_domain", {}).items())
                 + f"; scorer AUROC {fmt(diag.get('scorer_in_domain_auroc'))}) avg acc "
                   f"{result['test_accuracy_ensemble']:.3f}")
    return (f"    {method:<9} acc {result['test_accuracy']:.3f}{dom} | in-domain AUROC "
            f"{fmt(result.get('in_domain_auroc'))} | {result['steps']} steps | cpu {result['cpu_seconds']:.1f}s" + extra)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = list(args.methods)
    if "cleanlab" in methods and not cleanlab_available():
        print("cleanlab is not installed: skipping it", file=sys.stderr)
        methods.remove("cleanlab")
    if "bads" in methods:  # BADS first: it fixes the step budget and CDS's beta
        methods = ["bads"] + [m for m in methods if m != "bads"]
    config = load_config(CONFIG)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"settings": {"seeds": args.seeds, "chains": args.chains, "methods": methods, "threads": args.threads,
                        "torch": torch.__version__, "config": str(CONFIG.relative_to(REPO)),
                        "library": library_provenance()},
           "data": {}, "embedding": None, "runs": []}
    echo = lambda *a: print(*a, flush=True)  # noqa: E731

    def write():
        (out / "reviews_domains.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
        (out / "reviews_domains.md").write_text(markdown(doc))

    t_all, cpu_all = time.perf_counter(), time.process_time()
    for seed in args.seeds:
        data = seed_data(doc, config, seed, args, echo)
        run_seed_methods(doc, config, data, seed, methods, args.chains, echo, write)
    doc["settings"]["seconds"] = time.perf_counter() - t_all
    doc["settings"]["cpu_seconds"] = time.process_time() - cpu_all
    write()
    echo(markdown(doc))
    echo(f"wrote {out}/reviews_domains.json, reviews_domains.md; {doc['settings']['cpu_seconds']:.0f} CPU s in all")
    return doc


if __name__ == "__main__":
    main()
