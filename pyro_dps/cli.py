"""Command line: `pyro-dps demo`, `pyro-dps run CONFIG.toml`, `pyro-dps report RUN_DIR`, `pyro-dps score RUN_DIR DATA`.

Bad input: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import DPSError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-dps", description="Bayesian data point selection (BADS)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="digits with 50%% label noise: BADS (pSGLD, 4 chains) vs mixing; no downloads")
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    run = sub.add_parser("run", help="run a scenario from a TOML configuration")
    run.add_argument("config", help="scenario TOML file")
    run.add_argument("--out", required=True, help="output directory")
    report = sub.add_parser("report", help="write a self-contained HTML report of a finished run directory")
    report.add_argument("run_dir", help="run directory (metrics.json, draws.nc)")
    report.add_argument("--out", default=None, help="output HTML file (default RUN_DIR/report.html)")
    score = sub.add_parser("score", help="score unseen examples with a finished run's weight network")
    score.add_argument("run_dir", help="run directory of a weight-network run (posterior.pt)")
    score.add_argument("data", help=".npz file with x (and y when the weight network reads labels)")
    score.add_argument("--out", required=True, help="output CSV: index, label, mean, sd, q05, q95")
    score.add_argument("--device", default="cpu", help="torch device (default cpu)")
    for p in (demo, run):
        p.add_argument("--model", default=None,
                       help="model: a built-in name (bads, weight_net, ...) or path/to/file.py[:function]")
        p.add_argument("--seed", type=int, default=None, help="seed for data, chains and baselines")
        p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
        p.add_argument("--chains", type=int, default=None, help="number of chains")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--compile", action="store_true",
                       help="run each step as one torch.compile'd function (same as [sampler] compile = true)")
        p.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint.pt if it exists")
        p.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                       help="save an atomic checkpoint every N steps (0: never; default 1000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            from .report import write_report

            print(f"wrote {write_report(args.run_dir, args.out)}")
            return 0
        if args.command == "score":
            from .scoring import read_examples, score, write_scores

            x, y = read_examples(args.data)
            print(f"wrote {write_scores(args.out, score(args.run_dir, x, y, args.device), y)}")
            return 0
        import copy

        import torch

        from .config import DEMO, load_config, validate_config
        from .scenario import run_scenario

        config = validate_config(copy.deepcopy(DEMO)) if args.command == "demo" else load_config(args.config)
        if args.model:
            config["model"]["file"] = args.model
        if args.compile:
            config["sampler"]["compile"] = True
        from .distributed import init_from_env, local_device

        device = local_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        comm = init_from_env(device)  # under torchrun: join the process group (gloo on CPU, NCCL on CUDA)
        run_scenario(config, args.out, seed=args.seed, device=device, chains=args.chains, progress=not args.quiet,
                     resume=args.resume, checkpoint_every=args.checkpoint_every, comm=comm)
    except DPSError as exc:
        print(f"pyro-dps: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
