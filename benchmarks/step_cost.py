"""Per-step wall time of a BADS step against a plain SGD step on the same train+meta batches.

Interleaved in one process: each round times a block of steps of every method, so machine noise
hits all methods alike. Prints medians and BADS/SGD ratios as JSON.

    python benchmarks/step_cost.py [--steps 300] [--device cpu] [--out results/step_cost.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyro_dps.context import Problem
from pyro_dps.kernels import ALGORITHMS, MinibatchSampler
from pyro_dps.models.bads import model
from pyro_dps.networks import lenet5, mlp
from pyro_dps.potential import make_potential


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def setups(device):
    """(name, network, x_train, y_train, x_meta, y_meta, batch, meta_batch)."""
    gen = torch.Generator().manual_seed(0)
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    yield "mlp-digits", mlp(64, 10, (128,)), x[:1600], y[:1600], x[1600:], y[1600:], 128, 100
    xi = torch.rand(5000, 1, 28, 28, generator=gen)
    yi = torch.randint(0, 10, (5000,), generator=gen)
    yield "lenet5-28x28", lenet5(10), xi[:4900], yi[:4900], xi[4900:], yi[4900:], 100, 50


def sgd_stepper(net, problem, optimizer):
    params = list(net.parameters())
    opt = {"sgd": lambda: torch.optim.SGD(params, lr=1e-3),
           "rmsprop": lambda: torch.optim.RMSprop(params, lr=1e-4)}[optimizer]()

    def step(rows_t, rows_m):
        rows = torch.cat([rows_t, rows_m + problem.n_train])
        loss = F.cross_entropy(net(problem.x_all[rows]), problem.y_all[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bads_stepper(problem, kernel, device):
    potential = make_potential(model, problem, {"beta": 0.5}, "auto", torch.Generator().manual_seed(0))
    gen = torch.Generator(device=device).manual_seed(0)
    alg = ALGORITHMS[kernel](potential, 1e-4, temperature=0.01, local_step_size=0.05, generator=gen)
    state = alg.init(potential.init_theta(gen), torch.zeros(problem.n_train, device=device))

    def step(rows_t, rows_m):
        nonlocal state
        state = alg.step(state, (rows_t, rows_m))
    return step, potential.kind


def measure(steppers: dict, batches, steps: int, rounds: int, device) -> dict[str, float]:
    """Median seconds per step of each stepper, measured in interleaved blocks."""
    times = {k: [] for k in steppers}
    block = max(1, steps // rounds)
    for r in range(rounds + 1):
        for name, step in steppers.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(block):
                step(*batches())
            _sync(device)
            if r:  # round 0 is warm-up
                times[name].append((time.perf_counter() - t0) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "setups": {}}
    for name, net, xt, yt, xm, ym, b, bm in setups(device):
        problem = Problem(net.to(device), xt.to(device), yt.to(device), xm.to(device), ym.to(device))
        gen = torch.Generator(device=device).manual_seed(1)
        tb, mb = MinibatchSampler(problem.n_train, b, gen, device), MinibatchSampler(problem.n_meta, bm, gen, device)
        steppers, kinds = {}, {}
        for kernel in ("sgld", "psgld", "sghmc"):
            steppers[f"bads-{kernel}"], kinds[kernel] = bads_stepper(problem, kernel, device)
        sgd_net = mlp(64, 10, (128,)) if name.startswith("mlp") else lenet5(10)
        sgd_problem = Problem(sgd_net.to(device), problem.x_train, problem.y_train, problem.x_meta, problem.y_meta)
        steppers["sgd"] = sgd_stepper(sgd_net, sgd_problem, "sgd")
        steppers["rmsprop"] = sgd_stepper(sgd_net, sgd_problem, "rmsprop")
        med = measure(steppers, lambda: (tb(), mb()), args.steps, args.rounds, device)
        ratios = {f"{k}/sgd": med[k] / med["sgd"] for k in med if k.startswith("bads")}
        ratios["bads-psgld/rmsprop"] = med["bads-psgld"] / med["rmsprop"]
        report["setups"][name] = {"batch": b, "meta_batch": bm, "potential": kinds["psgld"],
                                  "median_ms": {k: v * 1e3 for k, v in med.items()}, "ratios": ratios}
        print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items()))
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
