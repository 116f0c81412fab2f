"""Per-step wall time and peak memory of BADS, BLO and Meta-Weight-Net against plain SGD on the same batches.

Interleaved in one process: each round times a block of steps of every method, so machine noise
hits all methods alike; the median is over every timed step (round 0 is warm-up). Every method
trains its own copy of the same network with the same train batch size (SGD-mixing: the train and
meta rows of a step together; BADS, BLO, MWN: a train batch plus a meta batch).

Peak memory per method (measured separately, from the method's construction through a few steps,
excluding the data): CUDA - torch.cuda.max_memory_allocated; CPU - the peak of live tensor bytes
from the allocation/free events the torch profiler records (profile_memory=True), which sees every
CPU tensor torch allocates (tracemalloc does not). Ratios are to SGD-mixing.

On CUDA each BADS stepper also runs a few steps under `torch.cuda.set_sync_debug_mode("error")`:
"host syncs per step: none" proves that a step never waits on the device.

A sweep times BADS steps over N_t in {1e3, 1e4, 1e5, 1e6} (synthetic data): a step is O(batch), so
the time per step should not grow with N_t.

    python benchmarks/step_cost.py [--steps 400] [--device cpu] [--threads 1] [--out results/step_cost.json]
    python benchmarks/step_cost.py --steps 200 --rounds 10 --setups mlp-digits --sweep-steps 200   # smoke
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pyro_dps.models.bads import model

from pyro_dps.baselines.blo import blo_hook
from pyro_dps.baselines.mwn import MetaWeightHook
from pyro_dps.context import Problem
from pyro_dps.data import DataSplits
from pyro_dps.kernels import ALGORITHMS, MinibatchSampler
from pyro_dps.kernels.chain import initial_weights
from pyro_dps.networks import lenet5, mlp
from pyro_dps.potential import make_potential
from pyro_dps.training import Trainer

SWEEP_SIZES = (1_000, 10_000, 100_000, 1_000_000)


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
        x, y = problem.batch(rows_t, rows_m)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def compiled_sgd_stepper(net, problem, lr: float = 1e-3):
    """Plain SGD written as BADS's compiled step is (functional gradient, one torch.compile'd function):
    the like-for-like baseline for `[sampler] compile = true`."""
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat, x, y):
        params = dict(zip(names, (t.view(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    @torch.compile
    def update(flat, rows_t, rows_m):
        flat.sub_(torch.func.grad(loss)(flat, *problem.batch(rows_t, rows_m)), alpha=lr)

    def step(rows_t, rows_m):
        update(theta, rows_t, rows_m)
    return step


def bads_stepper(problem, kernel, device, own_batches: tuple[int, int] | None = None, compile: bool = False,
                 weight_update: str = "auto"):
    """A BADS step on the benchmark's batches, or (own_batches = (b, b_m)) on batches it draws itself;
    `compile`: the whole step as one torch.compile'd function (`[sampler] compile = true`); `weight_update`:
    the default exact weight draws, or "langevin" (the logit step the exact update replaced)."""
    potential = make_potential(model, problem, {"beta": 0.5}, "auto", torch.Generator().manual_seed(0))
    gen = torch.Generator(device=device).manual_seed(0)
    alg = ALGORITHMS[kernel](potential, 1e-4, temperature=0.01, local_step_size=0.05, generator=gen,
                             compile=compile, weight_update=weight_update)
    state = alg.init(potential.init_theta(gen), initial_weights(potential).to(device))
    if own_batches is not None:
        tb = MinibatchSampler(problem.n_train, own_batches[0], gen, device)
        mb = MinibatchSampler(problem.n_meta, own_batches[1], gen, device)

    def step(rows_t, rows_m):
        nonlocal state
        if own_batches is not None:
            rows_t, rows_m = tb(), mb()
        state = alg.step(state, (rows_t, rows_m))
    return step, potential.kind


def reweight_stepper(method: str, net, problem, batch: int, meta_batch: int):
    """BLO or Meta-Weight-Net: the shared training loop (SGD, lr 1e-3) with the method's per-batch hook."""
    data = DataSplits(problem.x_train, problem.y_train, problem.x_meta, problem.y_meta, problem.x_meta[:0],
                      problem.y_meta[:0], num_classes=max(int(problem.y_train.max()), int(problem.y_meta.max())) + 1)
    hook = (blo_hook(data, meta_batch, 1e-3, seed=0) if method == "blo"
            else MetaWeightHook(data, meta_batch, 1e-3, seed=0))
    trainer = Trainer(net, problem.x_train, problem.y_train, batch_size=batch, lr=1e-3, optimizer="sgd", hook=hook)

    def step(rows_t, rows_m):  # the trainer draws its own batches of the same sizes
        trainer.step()
    return step


def method_factories(net, problem, b, bm, device) -> dict:
    """name -> () -> step function; every method gets its own copy of the same initial network."""
    # BADS keeps theta as its own flat vector (the module's parameters are only a template), so its
    # Problem (which also concatenates the data) is built outside the measured region.
    bads_problem = Problem(copy.deepcopy(net), problem.x_train, problem.y_train, problem.x_meta, problem.y_meta)
    return {"sgd-mixing": lambda: sgd_stepper(copy.deepcopy(net), problem, "sgd"),
            "bads-psgld": lambda: bads_stepper(bads_problem, "psgld", device)[0],
            "blo": lambda: reweight_stepper("blo", copy.deepcopy(net), problem, b, bm),
            "mwn": lambda: reweight_stepper("mwn", copy.deepcopy(net), problem, b, bm)}


def host_syncs(steppers: dict, batches, device, steps: int = 5) -> dict[str, str]:
    """CUDA only: run a few steps of each BADS stepper with torch's sync debug mode set to raise, so any
    device-to-host synchronisation inside a step fails ("none" means the step never waits on the GPU)."""
    out = {}
    for name, step in steppers.items():
        if not name.startswith("bads"):
            continue
        args = [batches() for _ in range(steps)]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for a in args:
                step(*a)
            out[name] = "none"
        except RuntimeError as exc:
            out[name] = f"synchronises: {str(exc).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out


def measure(steppers: dict, batches, steps: int, rounds: int, device) -> dict[str, float]:
    """Median seconds per step of each stepper over `steps` timed steps, measured in interleaved blocks."""
    times = {k: [] for k in steppers}
    block = max(1, steps // rounds)
    for r in range(rounds + 1):
        for name, step in steppers.items():
            for _ in range(block):
                args = batches()
                _sync(device)
                t0 = time.perf_counter()
                step(*args)
                _sync(device)
                if r:  # round 0 is warm-up
                    times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory(factory, batches, steps: int, device) -> float:
    """Peak bytes of tensors a method allocates while it is built and takes `steps` steps (data excluded)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step = factory()
        for _ in range(steps):
            step(*batches())
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - base
        del step
        return float(peak)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step = factory()
        for _ in range(steps):
            step(*batches())
        del step
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda e: e.start_ns())
    return float(max(itertools.accumulate((e.nbytes() for e in events), initial=0)))


def nt_sweep(device, steps: int, rounds: int, sizes=SWEEP_SIZES, features: int = 16, batch: int = 128,
             meta_batch: int = 100) -> dict:
    """Median BADS (psgld, per-example table) step time per N_t on synthetic data, interleaved across N_t."""
    gen = torch.Generator().manual_seed(0)
    net = mlp(features, 10, (128,))
    steppers = {}
    for n in sizes:
        x = torch.randn(n + 1000, features, generator=gen)
        y = torch.randint(0, 10, (n + 1000,), generator=gen)
        problem = Problem(copy.deepcopy(net).to(device), x[:n].to(device), y[:n].to(device), x[n:].to(device),
                          y[n:].to(device))
        steppers[f"N_t={n}"] = bads_stepper(problem, "psgld", device, own_batches=(batch, meta_batch))[0]
    med = measure(steppers, lambda: (None, None), steps, rounds, device)
    first, last = f"N_t={sizes[0]}", f"N_t={sizes[-1]}"
    return {"features": features, "batch": batch, "meta_batch": meta_batch,
            "median_ms": {k: v * 1e3 for k, v in med.items()}, f"ratio {last}/{first}": med[last] / med[first]}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="timed steps per method (after a warm-up block)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--setups", nargs="*", default=None, help="only these setups (default: all)")
    ap.add_argument("--memory-steps", type=int, default=5, help="steps per method in the peak-memory run")
    ap.add_argument("--sweep-steps", type=int, default=400, help="timed steps per N_t in the sweep (0: no sweep)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the torch.compile'd BADS steps and compiled SGD")
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def all_steppers(name: str, problem: Problem, device, b: int, bm: int, compile: bool) -> tuple[dict, dict]:
    """Every timed method on one setup, side by side: BADS with each kernel (eager, compiled, Langevin
    weights), plain SGD and RMSprop on the same network shape (and compiled SGD), BLO and MWN."""
    steppers, kinds = {}, {}
    for kernel in ("sgld", "psgld", "sghmc"):
        steppers[f"bads-{kernel}"], kinds[kernel] = bads_stepper(problem, kernel, device)
        if compile:
            steppers[f"bads-{kernel}-compiled"] = bads_stepper(problem, kernel, device, compile=True)[0]
    steppers["bads-psgld-langevin"] = bads_stepper(problem, "psgld", device, weight_update="langevin")[0]
    sgd_net = mlp(64, 10, (128,)) if name.startswith("mlp") else lenet5(10)
    sgd_problem = Problem(sgd_net.to(device), problem.x_train, problem.y_train, problem.x_meta, problem.y_meta)
    steppers["sgd"] = sgd_stepper(sgd_net, sgd_problem, "sgd")
    steppers["rmsprop"] = sgd_stepper(sgd_net, sgd_problem, "rmsprop")
    if compile:  # like for like: plain SGD compiled the same way (functional gradient + update)
        steppers["sgd-compiled"] = compiled_sgd_stepper(copy.deepcopy(sgd_net), sgd_problem)
    init = copy.deepcopy(problem.net)
    for method in ("blo", "mwn"):
        steppers[method] = reweight_stepper(method, copy.deepcopy(init), problem, b, bm)
    return steppers, kinds


def measure_setup(name: str, net, data: tuple, b: int, bm: int, device, args) -> dict:
    """Median step times, their ratios to SGD, peak memory and (CUDA) host syncs of one setup, printed."""
    problem = Problem(net.to(device), *(t.to(device) for t in data))
    gen = torch.Generator(device=device).manual_seed(1)
    tb, mb = MinibatchSampler(problem.n_train, b, gen, device), MinibatchSampler(problem.n_meta, bm, gen, device)
    steppers, kinds = all_steppers(name, problem, device, b, bm, args.compile)
    med = measure(steppers, lambda: (tb(), mb()), args.steps, args.rounds, device)
    ratios = {f"{k}/sgd": med[k] / med["sgd"] for k in med if k.startswith(("bads", "blo", "mwn"))}
    ratios["bads-psgld/rmsprop"] = med["bads-psgld"] / med["rmsprop"]
    if args.compile:
        ratios.update({f"{k}/sgd-compiled": med[k] / med["sgd-compiled"] for k in med if k.endswith("-compiled")
                       and k.startswith("bads")})
    memory = {k: peak_memory(f, lambda: (tb(), mb()), args.memory_steps, device)
              for k, f in method_factories(copy.deepcopy(problem.net), problem, b, bm, device).items()}
    memory_ratios = {f"{k}/sgd-mixing": v / memory["sgd-mixing"] for k, v in memory.items() if k != "sgd-mixing"}
    syncs = "not checked (CPU)"
    if device.type == "cuda":  # the "no host synchronisation inside a step", checked by torch
        syncs = host_syncs(steppers, lambda: (tb(), mb()), device)
        print(f"{name}: host syncs per step: " + ", ".join(f"{k} {v}" for k, v in syncs.items()))
    print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items()))
    print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print(f"{name}: peak MB " + ", ".join(f"{k} {v / 2 ** 20:.2f}" for k, v in memory.items()))
    return {"batch": b, "meta_batch": bm, "potential": kinds["psgld"], "median_ms": {k: v * 1e3 for k, v in med.items()},
            "ratios": ratios, "timed_steps": args.rounds * max(1, args.steps // args.rounds),
            "peak_memory_mb": {k: v / 2 ** 20 for k, v in memory.items()}, "memory_ratios": memory_ratios,
            "host_syncs": syncs, "memory_method": "cuda max_memory_allocated" if device.type == "cuda"
            else "torch.profiler CPU allocation events (peak live tensor bytes)"}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "setups": {}}
    for name, net, xt, yt, xm, ym, b, bm in setups(device):
        if not args.setups or name in args.setups:
            report["setups"][name] = measure_setup(name, net, (xt, yt, xm, ym), b, bm, device, args)
    if args.sweep_steps:
        sweep = nt_sweep(device, args.sweep_steps, args.rounds)
        report["nt_sweep"] = sweep
        ratio = [k for k in sweep if k.startswith("ratio")][0]
        print("N_t sweep (bads-psgld): " + ", ".join(f"{k} {v:.3f} ms" for k, v in sweep["median_ms"].items())
              + f"; {ratio} {sweep[ratio]:.3f}")
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
