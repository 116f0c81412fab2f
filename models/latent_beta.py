"""BADS with the selection fraction beta as a latent variable (the paper's future work), in Pyro.

    beta            ~ Beta(a0, b0)                               default Beta(1.1, 1), nearly uniform
    w_i             ~ Uniform(0, 1)                              (or Beta(base_a, base_b))
    sum_i w_i       ~ Normal(N_t beta, sigma)                    sigma default: sqrt(N_t beta (1 - beta))
    train factor    -rho_t sum_i [w_i l(z_i; theta) + (1 - w_i) l_0]
    meta factor     -rho_m sum_j l(z_j; theta),   theta ~ N(0, prior_scale^2)

beta is inferred jointly with theta and the weights; the driver records it per draw
(`posterior.dataset()["beta"]`). The extra global site puts this model on the Pyro trace path, so its
weights take Langevin steps on their logits: set `local_step_size` (the demo's 0.05; the default,
`step_size`, barely moves them).

What beta estimates: the fraction of D_t that the sampled network explains better than chance (loss
below `l_0`, label probability above 1/K), under the tempered posterior. It is NOT an estimate of the
clean fraction, and its interval is not a confidence interval for it:

* At T = 0.01 each weight's conditional is exp(-rho_t w (l_i - l_0) / T) on [0, 1] times the sum prior, so
  w_i sits near 1 iff l_i < l_0, and beta given the weights is centred on their mean with sd
  sqrt(T beta (1 - beta) / N_t) (0.0013 on the digits demo). beta counts the clean examples the network
  fits plus the noisy labels it has memorised, minus the clean ones it gets wrong: above the clean
  fraction when the network memorises (a 64-128-10 MLP at 50% noise), and it can be just below it when
  the network memorises little.
* Its 90% interval is the tempered posterior's, about +-0.003: how precisely the chain pins that count,
  not how far the clean fraction may be. It missed the truth at all three noise rates measured.
* At T = 1 the weights are not near 0 or 1 (a truncated exponential of rate a = l_0 - l_i has mean
  1 - 1/a + 1/(e^a - 1), 0.68 for a confidently fitted example at K = 10), so beta is the mean of these
  soft weights, pulled towards 1/2, and says even less about the clean fraction.

Measured (benchmarks/latent_beta.md: digits demo, symmetric noise, 2 chains x 4,000 steps, T = 0.01, local
step 0.05): 50% noise, truth 0.504: beta 0.560 [0.558, 0.563], mean weight 0.978 on clean examples and
0.136 on noisy ones; 20% noise, truth 0.800: beta 0.795 [0.793, 0.798] (0.980 and 0.056); 35% noise, truth
0.660: 0.678 [0.676, 0.681]. At T = 1: 0.569 [0.548, 0.586] for 0.800. For an estimate of the clean
fraction made before sampling see `pyro_dps/useful_fraction.py` (0.449, 0.740, 0.553 here).

Why the weights count anything here, when with the paper's train factor a free beta slides down:

* With beta latent, the sparsity prior no longer holds sum_i w_i at a fixed target: integrating beta
  out leaves a prior on the mean weight, Beta(mean(w); a0, b0), whose pull on any one weight is O(1 / N_t).
  In the paper's train factor, -rho_t w_i l_i, every positive loss pushes w_i down and nothing pushes
  back, so beta slides towards 0 (measured on digits: about 0.35 for both 20% and 50% noise).
* `l_0` (hyper-parameter `reject_loss`, default log K for K classes) is the loss a chance-level
  prediction pays. A weight of 0 now means "this label is explained by chance" instead of "this
  example is free": w_i = 1 wins iff l_i < l_0, i.e. iff the network gives the label more than 1/K.
  With w_i in {0, 1} and theta held fixed, the factor is the likelihood of the symmetric-noise mixture
  p(y_i | x_i) = p_theta(y_i | x_i)^{w_i} (1/K)^{1 - w_i}; but theta is fitted to the labels it judges,
  so a network that can memorise explains noisy labels too, and the mixing weight is not identified as
  the clean fraction. `reject_loss=0` gives the paper's factor back. Written as a prior, the term is a
  base density proportional to exp(rho_t l_0 w_i) on [0, 1].
* sigma defaults to sqrt(N_t beta (1 - beta)), the spread of a sum of N_t Bernoulli(beta) selections,
  so the Normal approximates w_i ~ Bernoulli(beta) i.i.d.; given the weights, beta then has posterior
  sd sqrt(beta (1 - beta) / N_t) (times sqrt(T) at temperature T) around their mean. A much smaller
  sigma ties beta so tightly to the weights that the whole table moves at beta's pace (pSGLD moves one
  coordinate by at most about step_size / 2 per step).

Sampling (pSGLD, the demo's settings): beta starts at its prior mean and the weights at 1/2.
* Beta(1.1, 1) rather than Beta(1, 1): with a symmetric prior the start is an exact balance point
  (mean weight = beta = 1/2, every term of beta's gradient 0), and pSGLD's first step then divides by
  sqrt(0) + eps_precond = 1e-5: a jump of about one unit of logit(beta) in a random direction, after
  which the chains need thousands of steps to come back, and a chain thrown up first pulls the weights
  up, lets the network memorise noisy labels and settles higher (0.61 instead of 0.55 at 50% noise).
  The tilt beta^0.1 is a tenth of a nat of prior information, against N_t examples.
* pSGLD moves beta's logit by at most about step_size / 2 per step: from 0.5 to 0.8 takes about
  2,800 steps at step_size 1e-3, so give the warm-up that many.
* prior_scale = 1 and rho_t = 1 were checked on the meta set alone (two-fold split, held-out meta NLL
  of the snapshot ensemble): prior_scale 0.3 and 0.1 and rho_t = 0.3 were no better.
"""
from __future__ import annotations

import math
import weakref

import pyro
import pyro.distributions as dist
import torch

from pyro_dps.models.bads import base_prior, theta_prior

_NUM_CLASSES: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, int]] = {}


def chance_loss(ctx) -> float:
    """log K: the cross-entropy of a uniform prediction over the K classes of the labels (train and meta).

    K is read from the labels once per pair of label tensors (a host read), not at every step."""
    y_t, y_m = ctx.problem.y_train, ctx.problem.y_meta
    ref_t, ref_m, k = _NUM_CLASSES.get((id(y_t), id(y_m)), (None, None, 0))
    if ref_t is None or ref_t() is not y_t or ref_m() is not y_m:
        k = max(int(y.max()) for y in (y_t, y_m) if y.numel()) + 1
        _NUM_CLASSES[(id(y_t), id(y_m))] = (weakref.ref(y_t), weakref.ref(y_m), k)
    return math.log(max(k, 2))


def model(ctx, a0: float = 1.1, b0: float = 1.0, sigma: float | None = None, reject_loss: float | None = None,
          rho_t: float = 1.0, rho_m: float = 1.0, prior_scale: float = 1.0, base_a: float = 1.0,
          base_b: float = 1.0) -> None:
    """Joint density of theta, the weights w and the selected fraction beta (one minibatch's view)."""
    theta = theta_prior(ctx, prior_scale)
    beta = pyro.sample("beta", dist.Beta(torch.tensor(float(a0)), torch.tensor(float(b0))))
    l_0 = chance_loss(ctx) if reject_loss is None else float(reject_loss)
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        w = pyro.sample("w", base_prior(base_a, base_b))
        pyro.factor("train_lik", -rho_t * (w * ctx.train_losses(theta) + (1 - w) * l_0))
    n = ctx.n_train
    scale = (n * beta * (1 - beta)).sqrt() if sigma is None else sigma
    pyro.sample("w_sum", dist.Normal(n * beta, scale), obs=ctx.w_sum(w))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -rho_m * ctx.meta_losses(theta))
