"""BADS with a weight network (paper appendix B): w_i = sigmoid(g_phi(h(z_i))).

h(z_i) is the main network's penultimate embedding of example i (detached: the weights read the
features, they do not train them), optionally tied to the label; phi is a global site with a Gaussian
prior, sampled by the same kernels as theta. The sparsity prior acts on the paper's running estimate
of sum_i w_i: N_t times the mean weight over the last `s_avg` batches (eq. 9). Memory is independent
of N_t and the trained network scores unseen examples (`pyro-dps score`).

Label modes for the input of g_phi:
- "per_class" (default): a separate linear scorer per class, w_i = sigmoid(v_{y_i} . h_i + c_{y_i});
  it can say "this embedding does not look like its label", which label noise needs;
- "concat": [h_i, onehot(y_i)] into one scorer (the paper's CIFAR input);
- "none": h_i only (domain or quality selection, where labels carry no signal).
`phi_hidden > 0` puts a ReLU hidden layer of that width in g_phi (on the "concat"/"none" input).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_dps.errors import ConfigError, DataError
from pyro_dps.models.bads import check_hyper, meta_weight, sparsity_prior, theta_prior

LABEL_MODES = ("per_class", "concat", "none")


def weight_network(ctx, theta: dict, label_mode: str, phi_hidden: int, phi_scale: float) -> torch.Tensor:
    """Weights of the batch's training examples from their detached embeddings and labels."""
    h = ctx.train_features(theta).detach()
    d, k = h.shape[-1], ctx.problem.n_outputs  # classes: the network's output width
    normal = lambda *shape: dist.Normal(0.0, phi_scale).expand(shape).to_event(len(shape))  # noqa: E731
    if label_mode == "per_class":
        v = pyro.sample("phi.v", normal(k, d))
        c = pyro.sample("phi.c", normal(k))
        y = ctx.train_labels()
        return torch.sigmoid((h * v[y]).sum(-1) + c[y])
    if label_mode == "concat":
        h = torch.cat([h, F.one_hot(ctx.train_labels(), k).to(h.dtype)], -1)
        d = h.shape[-1]
    if phi_hidden:
        w1 = pyro.sample("phi.w1", normal(d, phi_hidden))
        b1 = pyro.sample("phi.b1", normal(phi_hidden))
        h = torch.relu(h @ w1 + b1)
        d = phi_hidden
    w2 = pyro.sample("phi.w2", normal(d))
    b2 = pyro.sample("phi.b2", normal(1))
    return torch.sigmoid(h @ w2 + b2)


def model(ctx, beta: float | str = "auto", sigma: float | None = None, rho_t: float = 1.0, rho_m: float | None = None,
          prior_scale: float = 1.0, phi_scale: float = 1.0, label_mode: str = "per_class", phi_hidden: int = 0,
          s_avg: int = 10) -> None:
    """Joint density of theta and phi; the weights are a deterministic site `w` in the `train` plate."""
    check_hyper(beta, sigma, rho_t=rho_t, rho_m=rho_m, prior_scale=prior_scale, phi_scale=phi_scale)
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode must be one of {list(LABEL_MODES)}, got {label_mode!r}")
    if not isinstance(phi_hidden, int) or phi_hidden < 0:
        raise ConfigError(f"phi_hidden must be an integer >= 0, got {phi_hidden!r}")
    if not isinstance(s_avg, int) or s_avg < 1:
        raise ConfigError(f"s_avg must be an integer >= 1, got {s_avg!r}")
    if ctx.n_meta == 0:
        raise DataError("the meta set D_m is empty: BADS needs at least one curated example")
    theta = theta_prior(ctx, prior_scale)
    w = weight_network(ctx, theta, label_mode, phi_hidden, phi_scale)
    with pyro.plate("train", ctx.n_train, subsample=ctx.train_idx):
        pyro.deterministic("w", w)
        pyro.factor("train_lik", -rho_t * w * ctx.train_losses(theta))
    estimate = ctx.n_train * ctx.running_mean("w_mean", w.mean(), s_avg)  # eq. 9
    pyro.factor("sparsity", sparsity_prior(ctx.n_train, beta, sigma).log_prob(estimate))
    with pyro.plate("meta", ctx.n_meta, subsample=ctx.meta_idx):
        pyro.factor("meta_lik", -meta_weight(ctx.n_train, ctx.n_meta, beta, rho_t, rho_m) * ctx.meta_losses(theta))
