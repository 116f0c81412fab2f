"""Command line: `pyro-dps demo`, `run CONFIG.toml`, `validate CONFIG.toml`, `report RUN_DIR`, `score RUN_DIR DATA`,
`upgrade RUN_DIR`; `pyro-dps --version`.

Bad input: one line on stderr (`pyro-dps: error: ...`), exit code 2, nothing of the user's changed.
SIGINT and SIGTERM stop a run cleanly (staging removed, the last checkpoint kept for `--resume`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from .errors import DPSError


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"pyro-dps: error: {message} (see pyro-dps {self.prog.split(' ', 1)[-1]} --help)\n"
                  if " " in self.prog else f"pyro-dps: error: {message} (see pyro-dps --help)\n")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="pyro-dps", description="Bayesian data point selection (BADS)")
    parser.add_argument("--version", action="version", version=f"pyro-dps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="digits with 50%% label noise: BADS (pSGLD, 4 chains) vs mixing; no downloads")
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    run = sub.add_parser("run", help="run a scenario from a TOML configuration")
    run.add_argument("config", help="scenario TOML file")
    run.add_argument("--out", required=True, help="output directory (new, or empty; see --overwrite)")
    validate = sub.add_parser("validate", help="check a scenario TOML file (and --set overrides) and print the "
                              "resolved configuration, defaults filled in; runs nothing, writes nothing")
    validate.add_argument("config", help="scenario TOML file")
    report = sub.add_parser("report", help="write a self-contained HTML report of a finished run directory")
    report.add_argument("run_dir", help="run directory (metrics.json, draws.nc)")
    report.add_argument("--out", default=None, help="output HTML file (default RUN_DIR/report.html); the full "
                        "per-example table goes beside it as NAME.selection.csv")
    score = sub.add_parser("score", help="score unseen examples with a finished run's weight network")
    score.add_argument("run_dir", help="run directory of a weight-network run (posterior.safetensors)")
    score.add_argument("data", help=".npz file with x (and y when the weight network reads labels)")
    score.add_argument("--out", required=True, help="output CSV: index, label, mean, sd, q05, q95")
    score.add_argument("--device", default="cpu", help="torch device (default cpu)")
    score.add_argument("--model", default=None, help="the run's own model file (path.py[:function]), needed when "
                       "the run did not use a built-in model; it must be the file the run used")
    upgrade = sub.add_parser("upgrade", help="convert a pyro-dps 0.1 run directory's posterior.pt to "
                             "posterior.safetensors (torch's weights-only reader: runs no code)")
    upgrade.add_argument("run_dir", help="run directory holding posterior.pt")
    for p in (demo, run, report, score):
        p.add_argument("--overwrite", action="store_true",
                       help="replace outputs an earlier run wrote (a run directory: only the files pyro-dps "
                            "wrote there, listed in its manifest; anything else is kept)")
    for p in (demo, run, validate):
        p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                       help="override one configuration setting before validation, e.g. --set sampler.chains=2, "
                            "--set model.hyper.beta=0.4 (the value is read as TOML; repeatable)")
    for p in (demo, run):
        p.add_argument("--model", default=None,
                       help="model: a built-in name (bads, weight_net, ...) or path/to/file.py[:function]")
        p.add_argument("--seed", type=int, default=None, help="seed for data, chains and baselines")
        p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
        p.add_argument("--chains", type=int, default=None, help="number of chains")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--compile", action="store_true",
                       help="run each step as one torch.compile'd function (same as [sampler] compile = true)")
        p.add_argument("--resume", action="store_true",
                       help="continue from OUT.checkpoint.safetensors if it exists and was written by the same run")
        p.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                       help="save an atomic checkpoint every N steps (0: never; default 1000)")
    return parser


def _report(args) -> None:
    from .report.write import write_report
    from .rundir import check_out_file
    from .scoring import predictive_probs  # an older run directory's suggested labels, from posterior.safetensors

    if args.out is not None:
        check_out_file(args.out, args.overwrite, "report file")
    print(f"wrote {write_report(args.run_dir, args.out, overwrite=args.overwrite, recompute=predictive_probs)}")


def _score(args) -> None:
    from .bounds import check_device
    from .rundir import check_out_file
    from .scoring import read_examples, score, write_scores

    check_out_file(args.out, args.overwrite, "scores file")
    check_device(args.device, "--device")
    x, y = read_examples(args.data)
    print(f"wrote {write_scores(args.out, score(args.run_dir, x, y, args.device, model=args.model), y)}")


def _config(args) -> dict:
    """The validated configuration of `demo` (the embedded default) or of CONFIG, with --set merged in first."""
    from .config import DEMO, apply_overrides, load_config, validate_config

    if args.command == "demo":
        return validate_config(apply_overrides(DEMO, args.overrides))
    return load_config(args.config, args.overrides)


def _validate(args) -> None:
    """`pyro-dps validate`: the resolved configuration as JSON on stdout (nothing run, nothing written)."""
    import json

    from .config import resolved_config

    print(json.dumps(resolved_config(_config(args)), indent=2, default=str))


def _run(args) -> None:
    import torch

    from .bounds import check_device
    from .driver.distributed import init_from_env, local_device
    from .scenario import run_scenario

    config = _config(args)
    if args.model:
        config["model"]["file"] = args.model
    if args.compile:
        config["sampler"]["compile"] = True
    device = local_device(check_device(args.device, "--device") if args.device else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    comm = init_from_env(device)  # under torchrun: join the process group (gloo on CPU, NCCL on CUDA)
    run_scenario(config, args.out, seed=args.seed, device=device, chains=args.chains, progress=False if args.quiet else None,
                 resume=args.resume, checkpoint_every=args.checkpoint_every, comm=comm, overwrite=args.overwrite)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _on_signal(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:  # SIGTERM as an interrupt, so finally-blocks run and no staging folder is left behind
        previous = signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        if args.command == "report":
            _report(args)
        elif args.command == "score":
            _score(args)
        elif args.command == "validate":
            _validate(args)
        elif args.command == "upgrade":
            from .scoring import upgrade_posterior

            print(f"wrote {upgrade_posterior(args.run_dir)}")
        else:
            _run(args)
    except DPSError as exc:  # one line: the first of the message (Pyro appends trace shapes to some)
        print(f"pyro-dps: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        name = str(exc) or "SIGINT"
        print(f"pyro-dps: interrupted ({name}); nothing was published; continue a run with --resume",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: one line unless asked for the traceback
        if os.environ.get("PYRO_DPS_TRACEBACK"):
            raise
        print(f"pyro-dps: internal error (please report it; PYRO_DPS_TRACEBACK=1 shows where): "
              f"{type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
