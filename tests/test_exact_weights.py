"""The exact weight update (`kernels/conditional.py`, `kernels/isir.py`) leaves the weights' conditional invariant.

Ground truth: for a block of a few rows the joint conditional given theta,
    p(w_B) ~ prod_i b(w_i)^(1/T) exp(-rho_t w_i l_i / T) * exp(-(R + sum_i w_i - k)^2 / (2 sigma^2 T)) on [0, 1]^B,
is sampled exactly by rejection from uniform proposals on the box (the bound from a grid plus a margin,
checked). Invariance: starting from exact samples, one update must give exact samples again; each update
gets its own independent start, so the outputs are i.i.d. and the checks are plain two-sample checks at a
fixed seed: |difference of means| <= 4 standard errors and the two-sample Kolmogorov-Smirnov statistic
below its 0.1% critical value (1.95 sqrt((n1 + n2) / (n1 n2))), per row and for the block's sum (the
coupled direction). A wrong update (e.g. ignoring the coupling within the batch) fails them: the last test
shows it on the same problem.
"""
import math

import numpy as np
import pytest
import torch

from pyro_dps.kernels.conditional import ConditionalWeights
from pyro_dps.kernels import truncnorm
from pyro_dps.models.spike_slab import SpikeSlabBeta

N_OUT = 3000  # updates checked per case; the reference sample is independent of the starts
BASES = {"uniform": None,
         "beta(2,3)": torch.distributions.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)),
         "spike-slab": SpikeSlabBeta(0.5, 1.0, 3.0, 3.0, 1.0)}
# (losses, R, k, sigma, T): a weakly coupled block at T = 1, a strongly coupled one (sigma^2 T = 0.05 against
# three free rows), and a cold one with one clearly bad example
CASES = {"T=1": ([0.3, 1.5, 0.1], 0.5, 2.0, 0.5, 1.0),
         "strong coupling": ([0.2, 0.9, 0.4], 0.3, 1.8, 0.5, 0.2),
         "cold": ([0.05, 3.0, 0.2], 0.0, 2.0, 1.5, 0.25)}


def _log_base(base, w):
    if base is None:
        return np.zeros_like(w)
    return base.log_prob(torch.tensor(w).clamp(1e-12, 1 - 1e-12)).numpy()


def _log_density(w, losses, r, k, sigma, t, base):
    return (_log_base(base, w) / t).sum(1) - (w * losses / t).sum(1) - (r + w.sum(1) - k) ** 2 / (2 * sigma ** 2 * t)


def _reference(losses, r, k, sigma, t, base, n, rng):
    """Exact samples by rejection from the uniform box."""
    grid = np.linspace(0, 1, 21)
    mesh = np.stack(np.meshgrid(*[grid] * len(losses), indexing="ij"), -1).reshape(-1, len(losses))
    bound = _log_density(mesh, losses, r, k, sigma, t, base).max() + 1.0
    out, total = [], 0
    while total < n:
        w = rng.random((200_000, len(losses)))
        logp = _log_density(w, losses, r, k, sigma, t, base)
        assert logp.max() < bound, "rejection bound too low"
        keep = w[np.log(rng.random(len(w))) < logp - bound]
        out.append(keep)
        total += len(keep)
    return np.concatenate(out)[:n]


def _update(cw, starts, losses, r, t, gen, coupled=True):
    """One update of each of many independent blocks at once: block j's rows form group j (the scan keeps one
    sum per group), so the blocks do not interact. `coupled=False` makes every row its own group with the
    old values of its block's other rows in its rest: rows drawn in parallel, no scan."""
    n, b = starts.shape
    w = torch.tensor(starts).reshape(-1)
    if coupled:
        groups, rest = torch.arange(n).repeat_interleave(b), torch.full((n,), float(r), dtype=torch.float64)
    else:
        groups = torch.arange(n * b)
        rest = (float(r) + torch.tensor(starts).sum(1, keepdim=True) - torch.tensor(starts)).reshape(-1)
    loc = torch.full((groups.max() + 1,), float(cw.loc[0]), dtype=torch.float64)
    cw = ConditionalWeights(cw.rho_t, loc, cw.scale, cw.base, cw.candidates)
    u = torch.rand(cw.uniforms_shape(n * b), generator=gen, dtype=torch.float64)
    out = cw.draw(torch.tensor(losses).repeat(n), w, rest, groups, t, u)
    return out.reshape(n, b).numpy()


def _close(a, b) -> list[str]:
    """The failed checks (empty when a and b agree): means within 4 SE, KS statistic below its 0.1% value."""
    problems = []
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    if abs(a.mean() - b.mean()) > 4 * se:
        problems.append(f"means {a.mean():.4f} vs {b.mean():.4f} (4 SE = {4 * se:.4f})")
    grid = np.sort(np.concatenate([a, b]))
    ks = np.abs(np.searchsorted(np.sort(a), grid, side="right") / len(a)
                - np.searchsorted(np.sort(b), grid, side="right") / len(b)).max()
    critical = 1.95 * math.sqrt((len(a) + len(b)) / (len(a) * len(b)))
    if ks > critical:
        problems.append(f"KS {ks:.4f} > {critical:.4f}")
    return problems


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("base", list(BASES))
def test_one_update_leaves_the_block_conditional_invariant(base, case):
    losses, r, k, sigma, t = CASES[case]
    losses = np.array(losses)
    rng = np.random.default_rng(0)
    ref = _reference(losses, r, k, sigma, t, BASES[base], 2 * N_OUT, rng)
    cw = ConditionalWeights(rho_t=1.0, loc=torch.tensor([k], dtype=torch.float64), scale=sigma, base=BASES[base],
                            candidates=4)
    out = _update(cw, ref[:N_OUT], losses, r, t, torch.Generator().manual_seed(1))
    fresh = ref[N_OUT:]
    problems = [f"row {i}: {p}" for i in range(len(losses)) for p in _close(out[:, i], fresh[:, i])]
    problems += [f"sum: {p}" for p in _close(out.sum(1), fresh.sum(1))]
    assert not problems, problems
    assert (out != ref[:N_OUT]).mean() > 0.5  # the update moves (an update that returns its input passes the rest)


def test_ignoring_the_coupling_within_the_batch_is_caught():
    """The same checks reject rows drawn in parallel from their conditionals given the old values of the
    others (the Jacobi update the scan replaces): the block's sum overshoots under strong coupling."""
    losses, r, k, sigma, t = CASES["strong coupling"]
    losses = np.array(losses)
    ref = _reference(losses, r, k, sigma, t, None, 2 * N_OUT, np.random.default_rng(0))
    cw = ConditionalWeights(rho_t=1.0, loc=torch.tensor([k], dtype=torch.float64), scale=sigma, candidates=4)
    out = _update(cw, ref[:N_OUT], losses, r, t, torch.Generator().manual_seed(1), coupled=False)
    assert _close(out.sum(1), ref[N_OUT:].sum(1))


def test_groups_are_coupled_only_within_themselves():
    """Per-class sums: two groups with their own targets and rests, rows interleaved in the batch; the rows
    of each group follow their own group's conditional (each group's reference sampled separately)."""
    rng = np.random.default_rng(3)
    losses = np.array([0.3, 0.8, 0.2, 1.1])
    rest, locs, sigma, t = np.array([0.4, 1.2]), np.array([1.5, 1.6]), 0.6, 0.5
    refs = [_reference(losses[[g, g + 2]], rest[g], locs[g], sigma, t, None, 2 * N_OUT, rng) for g in (0, 1)]
    starts = np.stack([refs[0][:N_OUT, 0], refs[1][:N_OUT, 0], refs[0][:N_OUT, 1], refs[1][:N_OUT, 1]], 1)
    # block j's group g is group 2 j + g: every block has its own two sums
    groups = (2 * torch.arange(N_OUT)[:, None] + torch.tensor([0, 1, 0, 1])).reshape(-1)
    cw = ConditionalWeights(rho_t=1.0, loc=torch.tensor(locs).repeat(N_OUT), scale=sigma, candidates=4)
    u = torch.rand(cw.uniforms_shape(4 * N_OUT), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = cw.draw(torch.tensor(losses).repeat(N_OUT), torch.tensor(starts).reshape(-1),
                  torch.tensor(rest).repeat(N_OUT), groups, t, u).reshape(N_OUT, 4).numpy()
    problems = []
    for g in (0, 1):
        mine, fresh = out[:, [g, g + 2]], refs[g][N_OUT:]
        problems += [f"group {g} row {j}: {p}" for j in range(2) for p in _close(mine[:, j], fresh[:, j])]
        problems += [f"group {g} sum: {p}" for p in _close(mine.sum(1), fresh.sum(1))]
    assert not problems, problems


@pytest.mark.parametrize("mu, s", [(0.3, 0.2), (5.2, 0.37), (-36.0, 0.37), (-500.0, 0.37), (0.5, 10.0),
                                   (2.0, 0.01), (1e4, 1.0), (0.99, 0.001)])
def test_truncated_normal_proposal_with_its_weights_is_exact(mu, s):
    """`truncnorm.propose` in every regime (interior, near an end, hundreds of s outside, a spike): i-SIR with
    its importance weights, applied to exact draws of N(mu, s^2) on [0, 1], gives exact draws again
    (reference: scipy's truncnorm; same checks as above)."""
    from scipy.stats import truncnorm as scipy_truncnorm

    ref = scipy_truncnorm((0 - mu) / s, (1 - mu) / s, loc=mu, scale=s)
    rng = np.random.default_rng(4)
    starts, fresh = ref.rvs(N_OUT, random_state=rng), ref.rvs(N_OUT, random_state=rng)
    gen = torch.Generator().manual_seed(5)
    mu_t = torch.full((N_OUT, 1), mu, dtype=torch.float64)
    u = torch.rand(N_OUT, 4, generator=gen, dtype=torch.float64)
    values, lw = truncnorm.propose(mu_t, s, u, torch.tensor(starts)[:, None])
    assert torch.isfinite(values).all() and torch.isfinite(lw).all()
    gumbel = -torch.log(-torch.log(torch.rand(N_OUT, 5, generator=gen, dtype=torch.float64)))
    picked = values.gather(1, (lw + gumbel).argmax(1, keepdim=True))[:, 0].numpy()
    assert not _close(picked, fresh), _close(picked, fresh)


def test_probe_reads_factor_constants_where_a_prior_draw_gives_zero_losses():
    # A loss that is exactly 0 wherever the network is confident: at a draw from the N(0, 1) prior the
    # logits are ~1e3 and every probe loss is 0, which says nothing of rho_t / rho_m (the probe once read them
    # there and sent such models to the trace path and Langevin weights). At the module's own (zero)
    # parameters every loss is 1, so the fused path and exact draws must be chosen.
    from pyro_dps.context import Problem
    from pyro_dps.kernels.blocked import resolve_weight_update
    from pyro_dps.kernels.sgld import SGLDRule
    from pyro_dps.model_loader import load_model
    from pyro_dps.potential import make_potential

    class Confident(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            torch.nn.init.zeros_(self.lin.weight), torch.nn.init.zeros_(self.lin.bias)

        def forward(self, x):
            return 1e3 * self.lin(x)

    def margin_loss(outputs, targets):
        return torch.relu(1.0 - (outputs[:, 0] - outputs[:, 1]).abs())

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 2, (40,), generator=g)
    problem = Problem(Confident(), x[:30], y[:30], x[30:], y[30:], loss=margin_loss)
    potential = make_potential(load_model("bads"), problem, {"beta": 0.5}, "auto", torch.Generator().manual_seed(0))
    assert potential.kind == "fused", getattr(potential, "fused_reason", "")
    assert resolve_weight_update("auto", potential, 0.01, SGLDRule())


def _mean_sum_of_easy_table(sigma: float, n: int = 2000, beta: float = 0.01, t: float = 0.01) -> float:
    """Average of sum_i w_i over exact batch updates of a table whose every loss is 0 (the many easy
    examples of an imbalanced D_t), started at the target."""
    from pyro_dps.models.bads import sparsity_prior

    k = float(sparsity_prior(n, beta, sigma).loc)
    cw = ConditionalWeights(rho_t=1.0, loc=torch.tensor([k], dtype=torch.float64), scale=sigma, candidates=8)
    gen = torch.Generator().manual_seed(0)
    w, sums = torch.full((n,), k / n, dtype=torch.float64), []
    for step in range(1500):
        idx = torch.randperm(n, generator=gen)[:128]
        rest = (w.sum() - w[idx].sum()).reshape(1)
        u = torch.rand(cw.uniforms_shape(128), generator=gen, dtype=torch.float64)
        w[idx] = cw.draw(torch.zeros(128, dtype=torch.float64), w[idx], rest, None, t, u)
        if step >= 500:
            sums.append(float(w.sum()))
    return float(np.mean(sums))


def test_default_sigma_keeps_a_small_target():
    """With beta = 1% the N_t examples near w = 0 push sum w above floor(N_t beta) = 20 by about
    sigma sqrt(T N_t) (the mode of S^(N-1) N(S; k, sigma^2 T)): 12 at the old sqrt(N_t)/10, 1 at the
    default (`default_sigma`), whose stated bound is sqrt(T) k = 2. The sum's sd is ~sigma sqrt(T) <= 0.45,
    so the two cases are far apart against the Monte-Carlo error of a 1,000-step average."""
    from pyro_dps.models.bads import default_sigma

    n, beta = 2000, 0.01
    assert default_sigma(n, beta) == 1.0 and default_sigma(n, 0.5) == pytest.approx(math.sqrt(n) / 10)
    assert 20.0 <= _mean_sum_of_easy_table(default_sigma(n, beta), n, beta) <= 22.0
    assert _mean_sum_of_easy_table(math.sqrt(n) / 10, n, beta) > 28.0
