"""A measured experiment: BADS with the normaliser Z(w) that the paper drops (docs/method.md, "Three facts", 2).

With p(theta | w, D_t) = p(theta) prod_i p(z_i | theta)^(rho_t w_i) / Z(w), the derivative
d/dw_i [-log Z(w)] = rho_t E_{theta' ~ p(theta' | w, D_t)}[l(z_i; theta')], so the weights' conditional
given theta keeps the structure of the default exact update (`kernels/conditional.py`) with the per-row
loss l_i(theta) replaced by the effective loss l_i(theta) - lbar_i, lbar_i an estimate of that expectation.
At temperature T the model is read as the tempered joint whose theta-conditional is tempered too, so
Z is Z_T(w) and theta' runs at the same T as theta (the rho_t / T tilt then multiplies both terms alike).

The version measured here (settings chosen a priori, none on test data):
- theta: the BADS chain (weighted D_t + D_m, pSGLD) exactly as `fit` runs it; theta': a second network of
  the same architecture, its own pSGLD chain at the same step size, temperature and warm-up (its
  preconditioner frozen with theta's) on the weighted D_t only, with its own Gaussian prior (the same
  prior_scale). Both move every step on the same train batch; the batch's weights are drawn first
  (exact conditional draws with the effective losses), then both networks step with the new weights.
- lbar_i (primary: "running"): the mean of l_i(theta') over the example's visits, a running average
  over the last `window` = 10 visits (exponential after the first 10). Each visit's value is the loss
  under the current theta' before theta' steps on that batch. Ablation "sample": the current theta'
  draw alone (unbiased for one draw, more variance).
- theta' start (primary: "shared", a copy of theta's initial value: the two chains stay in one basin,
  so the contrast l(theta) - l(theta') measures what D_m adds, not the two inits' idiosyncrasies).
  Ablation "independent": its own initialisation from another generator.
- Sum prior (primary: kept, the defaults' sigma = sqrt(N_t) / 10). Ablation: sigma = 10 N_t, which
  is flat over [0, N_t] (at most 0.5 nat across the whole range at T = 0.01): the model without it.
Control: the default BADS (`fit(bads.model, problem, {}, SamplerConfig(chains=1, ...))`), the same
step budget and draws; also the default model without the sum prior (sigma = 10 N_t). beta = "auto" is
estimated once per scenario and seed (`pyro_dps.useful_fraction`, as `fit` would) and the same value is
passed to every method. Result and verdict: benchmarks/normaliser_experiment.md (it does not win).

    python benchmarks/normaliser_experiment.py --steps 3000 --seeds 0 1     # ~13 min on one CPU thread
    python benchmarks/normaliser_experiment.py --scenarios reviews-offdomain --beta-truth \
        --methods "bads (default)" "Z: running, shared, sum prior" "Z: sample lbar" "Z: no sum prior" \
        --out results/normaliser_experiment_reviews_oracle_beta.json      # diagnostic (oracle beta), ~2 min
    python benchmarks/normaliser_experiment.py --self-check   # lbar = 0 reproduces the default step exactly
    python benchmarks/normaliser_experiment.py --scenarios digits-sym0.5 --steps 300 --seeds 0   # smoke
Data: PYRO_DPS_DATA or ../shared/data (fashion_mnist.npz, amazon_multidomain_sentiment.jsonl.gz);
the reviews embeddings are cached under /tmp/pyro_dps_cache (configs/reviews_offdomain.toml).
Writes results/normaliser_experiment.json (per run: metrics, seconds and the diagnostics).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from pyro_dps import SamplerConfig, fit
from pyro_dps.config import load_config
from pyro_dps.context import Problem
from pyro_dps.data import DATA_ENV_VAR, digits_splits, mnist_like_noisy_splits
from pyro_dps.data.text import mean_weight_by_domain
from pyro_dps.kernels import ALGORITHMS
from pyro_dps.kernels.compiled import count_rejection
from pyro_dps.kernels.conditional import conditional_weights
from pyro_dps.kernels.noise import noise_source
from pyro_dps.kernels.psgld import PSGLDRule
from pyro_dps.kernels.schedules import make_schedule
from pyro_dps.kernels.state import SamplingAlgorithm, initial_state
from pyro_dps.kernels.theta_move import move_theta, reduce_gradient
from pyro_dps.metrics import accuracy, noise_auroc
from pyro_dps.model_loader import load_model
from pyro_dps.networks import mlp
from pyro_dps.potential import weight_sum
from pyro_dps.scenario import build_data
from pyro_dps.useful_fraction import estimate_useful_fraction

REPO = Path(__file__).resolve().parents[1]
KERNEL = "psgld_normalised"


class AuxChain:
    """theta' ~ p(theta' | w, D_t) at temperature T by pSGLD, and the per-example estimates lbar_i."""

    def __init__(self, potential, theta0: torch.Tensor, lbar: str, window: int, seed: int):
        self.potential, self.lbar_kind, self.window = potential, lbar, window
        self.theta = theta0.detach().clone()
        self.rule = PSGLDRule()
        self.aux = self.rule.init_global(self.theta)
        gen = torch.Generator(device=self.theta.device).manual_seed(seed)
        self.noise = noise_source(gen)
        n = potential.problem.n_train
        self.lbar = torch.zeros(n, dtype=torch.float64, device=self.theta.device)
        self.visits = torch.zeros(n, dtype=torch.long, device=self.theta.device)
        self.delta_sum = torch.zeros(n, dtype=torch.float64, device=self.theta.device)  # after warm-up
        self.delta_n = torch.zeros(n, dtype=torch.long, device=self.theta.device)
        self.sampling = False

    def losses(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(theta' leaf with grad, the batch's train losses under theta') before theta' moves."""
        leaf = self.theta.detach().requires_grad_()
        p = self.potential.problem
        return leaf, self.potential._functional_losses(leaf, p.x_train[idx], p.y_train[idx])

    def estimate(self, idx: torch.Tensor, l_aux: torch.Tensor) -> torch.Tensor:
        """lbar of the batch's rows after this visit: the current draw ("sample") or the running mean."""
        l_aux = l_aux.detach().double()
        if self.lbar_kind == "zero":  # the self-check: the default model's update, theta' running beside it
            return torch.zeros_like(l_aux)
        if self.lbar_kind == "sample":
            self.lbar[idx] = l_aux
            return l_aux
        self.visits[idx] += 1
        rate = 1.0 / self.visits[idx].clamp(max=self.window).double()
        self.lbar[idx] += rate * (l_aux - self.lbar[idx])
        return self.lbar[idx]

    def record(self, idx: torch.Tensor, delta: torch.Tensor) -> None:
        """Keep the effective losses of the sampling phase (the diagnostics' distribution)."""
        if self.sampling:
            self.delta_sum[idx] += delta.double()
            self.delta_n[idx] += 1

    def move(self, leaf, l_aux, w, eps: float, temperature: float, n_total: int) -> None:
        """One pSGLD step of theta' on log p(theta') - rho_t (N_t / B) sum_B w_i l_i(theta')."""
        rho_t = self.potential.rho_t
        lik = (-rho_t * n_total / w.shape[0]) * torch.dot(w.detach().float(), l_aux)
        (g,) = torch.autograd.grad(lik + self.potential.log_prior_theta(leaf), leaf)
        ok = torch.isfinite(g.sum())
        self.rule.apply_guarded(self.theta, g.detach(), self.aux, eps, temperature, self.noise, ok)


def normalised_psgld(potential, step_size, temperature: float = 1.0, local_step_size=None, generator=None,
                     compile: bool = False, weight_update: str = "auto", candidates: int = 8,
                     lbar: str = "running", start: str = "shared", window: int = 10, record=None):
    """pSGLD on theta, exact weight draws with effective losses l_i(theta) - lbar_i, and the aux chain theta'.

    `record` (a dict) receives the live state and aux chain, for the diagnostics after `fit` returns."""
    if lbar not in ("running", "sample", "zero") or start not in ("shared", "independent"):
        raise ValueError(f"lbar must be running/sample/zero and start shared/independent, got {lbar!r}, {start!r}")
    cw = conditional_weights(potential, temperature, candidates)
    rule, eps_theta, theta_noise = PSGLDRule(), make_schedule(step_size), noise_source(generator)
    seed = int(generator.initial_seed()) + 10_007 if generator is not None else 10_007
    record = {} if record is None else record

    def init(theta: torch.Tensor, weights: torch.Tensor):
        theta = theta.detach().clone()
        table = weights.detach().float().clamp(0.0, 1.0).clone()
        state = initial_state(theta, table, {}, weight_sum(potential, table).to(theta.device), rule)
        theta0 = theta if start == "shared" else potential.init_theta(torch.Generator().manual_seed(seed + 1))
        record["chain"], record["state"] = AuxChain(potential, theta0, lbar, window, seed), state
        return state

    def step(state, batch, scale: float = 1.0):
        return _normalised_step(state, batch, scale * eps_theta(state.step), record["chain"], cw, rule,
                                potential, temperature, theta_noise, generator)

    def end_warmup(state):
        rule.end_warmup(state.theta_aux)
        record["chain"].rule.end_warmup(record["chain"].aux)
        record["chain"].sampling = True

    return SamplingAlgorithm(init, step, lambda table: table, "exact", end_warmup)


def _normalised_step(state, batch, eps: float, chain: AuxChain, cw, rule, potential, temperature, noise, gen):
    """Forward theta' (lbar), draw the batch's weights with l(theta) - lbar, step theta, then theta'."""
    train_idx, meta_idx = batch
    w_old = state.table[train_idx]
    rest = state.w_sum - weight_sum(potential, w_old, train_idx)
    u = torch.rand(cw.uniforms_shape(train_idx.shape[0]), generator=gen, dtype=torch.float64)
    leaf, l_aux = chain.losses(train_idx)
    lbar = chain.estimate(train_idx, l_aux).float()

    def draw(losses):
        chain.record(train_idx, losses - lbar)
        return cw.draw(losses - lbar, w_old, rest, None, temperature, u)

    grads = potential.grads_given(state.theta, train_idx, meta_idx, draw)
    g_theta, ok = reduce_gradient(grads.theta, grads.local, None, True)
    move_theta(rule, state, g_theta, ok, eps, temperature, noise)
    w_new = torch.where(ok, grads.local, w_old)
    count_rejection(ok, state.rejected, state.run, state.max_run)
    chain.move(leaf, l_aux, w_new, eps, temperature, potential.problem.n_train_total)
    state.stats = {**grads.stats, "aux_losses": l_aux.detach()}
    state.table[train_idx] = w_new
    state.w_sum = rest + weight_sum(potential, w_new, train_idx)
    state.step += 1
    return state


ALGORITHMS[KERNEL] = normalised_psgld  # the driver reads its kernels from this table

# name -> (kernel_kwargs or None for the default kernel, hyper change)
METHODS = {
    "bads (default)": (None, {}),
    "Z: running, shared, sum prior": ({"lbar": "running", "start": "shared"}, {}),
    "Z: sample lbar": ({"lbar": "sample", "start": "shared"}, {}),
    "Z: independent theta' start": ({"lbar": "running", "start": "independent"}, {}),
    "Z: no sum prior": ({"lbar": "running", "start": "shared"}, {"sigma": "flat"}),
    "bads, no sum prior (control)": (None, {"sigma": "flat"}),
}
SELF_CHECK = "Z kernel with lbar = 0 (self-check)"


def self_check(steps: int = 200) -> None:
    """The normalised kernel with lbar = 0 must reproduce the default exact step draw for draw (digits, seed 0):
    the weights' update, theta's move and the random stream are the same; theta' only runs beside them."""
    from pyro_dps.data import digits_splits

    METHODS[SELF_CHECK] = ({"lbar": "zero", "start": "shared"}, {})
    data = digits_splits(0, noise="symmetric", noise_rate=0.5)
    beta, _ = estimate_beta(data, (128,), 0)
    a, b = (run(m, data, (128,), steps, 0, beta) for m in ("bads (default)", SELF_CHECK))
    same = all(a[k] == b[k] for k in ("accuracy", "auroc", "w_mean", "w_mean_clean"))
    print(f"self-check: default {a['auroc']:.6f} {a['w_mean']:.6f}, Z with lbar = 0 {b['auroc']:.6f} "
          f"{b['w_mean']:.6f}: {'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


def scenarios(data_dir: Path):
    """(name, build(seed) -> DataSplits, MLP hidden widths) of the three scenarios (skipped without data)."""
    yield "digits-sym0.5", lambda seed: digits_splits(seed, noise="symmetric", noise_rate=0.5), (128,)
    fmnist = data_dir / "fashion_mnist.npz"
    if fmnist.exists():
        yield "fmnist-sym0.4", lambda seed: mnist_like_noisy_splits(
            fmnist, seed=seed, noise="symmetric", noise_rate=0.4, meta_per_class=10, n_train=6000,
            n_test=2000), (256,)
    reviews = data_dir / "amazon_multidomain_sentiment.jsonl.gz"
    if reviews.exists():
        config = load_config(REPO / "configs" / "reviews_offdomain.toml")
        spec = {**config["data"], "path": str(reviews)}
        yield "reviews-offdomain", lambda seed: build_data({**spec, "seed": seed}), \
            tuple(config["network"]["hidden"])


@torch.no_grad()
def train_losses(potential, theta: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """l(z_i; theta) for every example of D_t."""
    p = potential.problem
    return torch.cat([potential._functional_losses(theta, p.x_train[i:i + chunk], p.y_train[i:i + chunk])
                      for i in range(0, p.n_train, chunk)]).double().cpu().numpy()


@torch.no_grad()
def test_accuracy(potential, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of the network at theta (for theta', which the posterior does not hold)."""
    return accuracy(potential.problem.forward(potential.network_params(theta), x).softmax(-1), y)


def split_stats(values: np.ndarray, clean: np.ndarray) -> dict:
    """Mean and 10/50/90% quantiles of `values` over clean and corrupted (off-domain) examples, and the
    AUROC of -values for telling them apart (a low value = trusted)."""
    out = {}
    for name, mask in (("clean", clean), ("corrupted", ~clean)):
        v = values[mask]
        out[name] = {"mean": float(v.mean()), "q10": float(np.quantile(v, 0.1)),
                     "q50": float(np.median(v)), "q90": float(np.quantile(v, 0.9))}
    out["auroc_of_minus"] = noise_auroc(-values, clean)
    return out


def diagnostics(post, record: dict | None, data) -> dict:
    """The losses behind the weights: l(theta) on D_t at the last iterate; for the normalised model also
    l(theta'), lbar and the mean effective loss l(theta) - lbar over the sampling phase, clean vs corrupted."""
    clean = data.clean.numpy().astype(bool)
    pot, theta = post.potential, post.final_theta[0]
    draws = post.draws.weights().values[0]  # (draw, example) of the one chain
    flips = np.abs(np.diff((draws > 0.5).astype(int), axis=0)).sum(0)  # crossings of 1/2 between draws
    out = {"loss_theta": split_stats(train_losses(pot, theta), clean),
           "w_sd_over_draws": {"clean": float(draws[:, clean].std(0).mean()),
                               "corrupted": float(draws[:, ~clean].std(0).mean())},
           "w_flips": {"clean": float(flips[clean].mean()), "corrupted": float(flips[~clean].mean())}}
    if record:
        chain = record["chain"]
        delta = (chain.delta_sum / chain.delta_n.clamp(min=1)).cpu().numpy()
        seen = chain.delta_n.cpu().numpy() > 0
        delta = np.where(seen, delta, 0.0)
        out["loss_theta_aux"] = split_stats(train_losses(pot, chain.theta), clean)
        out["lbar"] = split_stats(chain.lbar.cpu().numpy(), clean)
        out["effective_loss"] = split_stats(delta, clean)
        # > 0: the examples that end up selected are those with the larger effective loss, i.e. being selected
        # (theta' then fits them) raises l - lbar more than l - lbar decides the selection
        out["corr_mean_w_effective_loss"] = float(np.corrcoef(draws.mean(0), delta)[0, 1])
        out["aux_test_accuracy"] = test_accuracy(pot, chain.theta, data.x_test.flatten(1), data.y_test)
    return out


def sampler(method: str, steps: int, seed: int, record: dict) -> SamplerConfig:
    """One chain of `steps` steps, 20 draws thinned over the second half (as benchmarks/defaults_dev.py)."""
    thin = max(1, steps // 40)
    config = SamplerConfig(chains=1, warmup=steps - 20 * thin, samples=20, thin=thin, snapshots=5, seed=seed,
                           progress=False)
    kwargs = METHODS[method][0]
    if kwargs is None:
        return config
    return SamplerConfig(**{**config.__dict__, "kernel": KERNEL, "kernel_kwargs": {**kwargs, "record": record}})


def make_problem(data, hidden: tuple, seed: int) -> Problem:
    """The MLP (initialised from `seed`) on the flattened splits."""
    torch.manual_seed(seed)
    net = mlp(int(np.prod(data.x_train.shape[1:])), data.num_classes, hidden)
    return Problem(net, data.x_train.flatten(1), data.y_train, data.x_meta.flatten(1), data.y_meta)


def estimate_beta(data, hidden: tuple, seed: int) -> tuple[float, float]:
    """(beta, seconds): the estimate `fit` makes for beta = "auto" (`pyro_dps.useful_fraction`), made once
    per scenario and seed so that every method gets the very same value."""
    estimate = estimate_useful_fraction(make_problem(data, hidden, seed), seed=seed)
    return float(estimate.value), float(estimate.seconds)


def run(method: str, data, hidden: tuple, steps: int, seed: int, beta: float) -> dict:
    """Fit one method; test accuracy (last iterate), AUROC of the posterior mean weights, weight spread,
    per-domain means (reviews), diagnostics and seconds."""
    hyper = {"beta": beta}
    if METHODS[method][1].get("sigma") == "flat":
        hyper["sigma"] = 10.0 * data.x_train.shape[0]  # flat over [0, N_t]: no sum prior in effect
    record: dict = {}
    problem = make_problem(data, hidden, seed)
    start = time.perf_counter()
    post = fit(load_model("bads"), problem, hyper, sampler(method, steps, seed, record))
    seconds = time.perf_counter() - start
    mean = post.weight_summary()["mean"]
    clean = data.clean.numpy()
    out = {"accuracy": accuracy(post.predict_proba(data.x_test.flatten(1), ensemble=False), data.y_test),
           "auroc": noise_auroc(mean, clean), "w_mean": float(mean.mean()),
           "w_below_0.1": float((mean < 0.1).mean()), "w_above_0.9": float((mean > 0.9).mean()),
           "w_mean_clean": float(mean[clean].mean()), "w_mean_corrupted": float(mean[~clean].mean()),
           "beta": float(post.hyper["beta"]), "rho_m": float(post.potential.rho_m),
           "seconds": seconds, "sampling_seconds": post.seconds,
           "diagnostics": diagnostics(post, record, data)}
    if data.groups and "domain" in data.groups:
        out["domain_means"] = mean_weight_by_domain(mean, data)
    return out


def table(results: dict, seeds: list[int]) -> str:
    """Markdown: scenario x method rows, per seed accuracy / AUROC / mean weight / sampling seconds."""
    head = "| scenario | method | " + " | ".join(f"acc s{s} | AUROC s{s} | mean w s{s} | sec s{s}" for s in seeds)
    lines = [head + " |", "|" + "---|" * (2 + 4 * len(seeds))]
    for name, methods in results.items():
        for method, runs in methods.items():
            cells = []
            for r in runs:
                auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
                cells += [f"{r['accuracy']:.3f}", auroc, f"{r['w_mean']:.3f}", f"{r['sampling_seconds']:.0f}"]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Every scenario x seed x method; prints one line per run and the table, writes the JSON after each run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--scenarios", nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(REPO / "results" / "normaliser_experiment.json"))
    ap.add_argument("--beta-truth", action="store_true",
                    help="diagnostic only (an oracle): beta = the true clean fraction instead of the estimate")
    ap.add_argument("--self-check", action="store_true", help="only check the kernel against the default step")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.self_check:
        self_check()
        return {}
    data_dir = Path(args.data_dir or os.environ.get(DATA_ENV_VAR) or REPO.parent / "shared" / "data")
    results: dict = {}
    for name, build, hidden in scenarios(data_dir):
        if args.scenarios and name not in args.scenarios:
            continue
        for seed in args.seeds:
            data = build(seed)
            beta, beta_seconds = estimate_beta(data, hidden, seed)
            if args.beta_truth:
                beta, beta_seconds = float(data.clean.float().mean()), 0.0
            print(f"{name} seed {seed}: beta = {beta:.3f} (truth {float(data.clean.float().mean()):.3f}), "
                  f"estimated in {beta_seconds:.0f}s", flush=True)
            for method in args.methods:
                r = {**run(method, data, hidden, args.steps, seed, beta), "beta_seconds": beta_seconds}
                results.setdefault(name, {}).setdefault(method, []).append(r)
                auroc = float("nan") if r["auroc"] is None else r["auroc"]
                print(f"{name} seed {seed} {method:<32} acc {r['accuracy']:.3f} auroc {auroc:.3f} "
                      f"w_mean {r['w_mean']:.3f} {r['seconds']:.0f}s", flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results, args.seeds))
    return results


if __name__ == "__main__":
    main()
