"""Time and size of `pyro-dps report` on a synthetic run directory with N_t examples (default 10^6).

    python benchmarks/report_scale.py [--n 1000000] [--chains 2] [--draws 20] [--dir /tmp/report_scale]

Builds draws.nc (weights (chain, draw, example) with label/clean coordinates, per-draw scalars),
metrics.json and a manifest as a run writes them, then times `write_report` and prints the seconds and
the sizes of report.html and report.selection.csv. Target (issue 14): under 30 s and under 10 MB of HTML.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr


def synthetic_run(run_dir: Path, n: int, chains: int, draws: int, seed: int = 0) -> Path:
    """A run directory with the files `report` reads, for n examples (a third of them noisy)."""
    from pyro_dps.arviz_data import save_draws
    from pyro_dps.outputs import write_json
    from pyro_dps.rundir import record

    rng = np.random.default_rng(seed)
    clean = rng.random(n) > 1 / 3
    center = np.where(clean, 0.8, 0.2).astype(np.float32)
    weights = np.clip(center + 0.1 * rng.standard_normal((chains, draws, n), dtype=np.float32), 0, 1)
    ds = xr.Dataset({"weights": (("chain", "draw", "example"), weights)},
                    coords={"chain": np.arange(chains), "draw": np.arange(draws), "example": np.arange(n),
                            "label": ("example", rng.integers(0, 10, n)), "clean": ("example", clean)})
    for name in ("log_joint", "meta_loss", "train_loss", "w_mean", "theta_norm", "rejected_steps", "step_scale"):
        ds[name] = (("chain", "draw"), rng.standard_normal((chains, draws)))
    ds["rejected_steps"][:] = 0
    ds["step_scale"][:] = 1
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    save_draws(ds, run_dir / "draws.nc")
    write_json(run_dir / "metrics.json", {
        "scenario": f"synthetic-{n}", "methods": {"bads": {"test_accuracy": 0.9, "test_accuracy_ensemble": 0.91,
                                                           "seconds": 1.0}},
        "weights": {"noise_auroc": 0.99}, "config": {"model": {"file": "bads", "hyper": {"beta": 0.5}},
                                                     "sampler": {"kernel": "psgld", "step_size": 1e-3, "thin": 10}}})
    record(run_dir, ["draws.nc", "metrics.json"])
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10 ** 6)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--dir", default="/tmp/report_scale")
    args = parser.parse_args()
    from pyro_dps.report.write import write_report

    run_dir = synthetic_run(Path(args.dir), args.n, args.chains, args.draws)
    start = time.perf_counter()
    html = write_report(run_dir)
    seconds = time.perf_counter() - start
    csv = html.with_name(html.stem + ".selection.csv")
    print(json.dumps({"n": args.n, "chains": args.chains, "draws": args.draws, "seconds": round(seconds, 2),
                      "html_mb": round(html.stat().st_size / 2 ** 20, 3),
                      "csv_mb": round(csv.stat().st_size / 2 ** 20, 2) if csv.exists() else None}))


if __name__ == "__main__":
    main()
