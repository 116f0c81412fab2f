"""`FusedPotential`: the BADS structure evaluated in plain torch, at about the cost of an SGD step.

It reads the model's sites off the probe trace (`SiteLayout`), checks that they are the BADS structure
and reads their constants (`fused_structure.py`), then evaluates a step directly: the Gaussian prior on
theta analytically, both likelihood factors from one forward pass, and the weight priors from the
distributions found in that trace. `make_potential` (`factory.py`) checks it against the trace path
before using it.

The maths is written once, shared by the eager step and the pure objective the compiled step
differentiates (`kernels/compiled.py`): theta's minibatch estimate of the likelihood factors
(`_likelihood`, weights held fixed) and the batch weights' exact log conditional
(`_weights_log_conditional`, losses held fixed). The eager step adds two closed forms that the pure
objective gets from autograd: the Gaussian prior's gradient (`_theta_gradient`) and, for a uniform base
with a Normal sum prior, the weights' gradient (`_closed_form_weight_gradient`).

The step runs on the potential's own copy of the network (`_private_network`); the user's module is
never modified.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..context import Problem
from .fused_structure import EXPECTED_SITES, read_priors, structure_problem
from .layout import Gradients, SiteLayout
from .stats import _batch_stats


class FusedPotential(SiteLayout):
    """The BADS structure evaluated in plain torch: same gradients as the trace path at SGD cost.

    Recognised structure (the sites of `models/bads.py`): global sites `theta.<param>` with Normal
    priors of fixed location and scale; the per-example site `w` on [0, 1]; an observed `w_sum` site
    at `ctx.w_sum(w)`, or at the per-class sums `ctx.w_sum_by_label(w)` (`models/class_balanced.py`);
    factors `train_lik = -rho_t * w * l_t` and `meta_lik = -rho_m * l_m`; any other site makes
    `supported()` false.
    """

    kind = "fused"
    EXPECTED = EXPECTED_SITES

    def __init__(self, model: Callable, problem: Problem, hyper: dict[str, Any] | None = None):
        super().__init__(model, problem, hyper)
        self.reason = structure_problem(self)
        if self.reason:
            return
        priors = read_priors(self)
        self.rho_t, self.rho_m = priors.rho_t, priors.rho_m
        self.reason = priors.reason
        if self.reason:
            return
        self.base, self.sparsity = priors.base, priors.sparsity
        self.normal_sum_prior = priors.normal_sparsity  # (loc, scale) of a Normal sum prior: a closed-form gradient
        self.prior_loc, self.prior_precision = priors.theta_loc, priors.theta_precision
        self._network = self._private_network()

    def supported(self) -> bool:
        return not self.reason

    def constants(self) -> dict[str, Any]:
        """rho_t and rho_m, and the loc and scale of a Normal w_sum prior (one per class for class sums), as
        read off the probe trace: what defaults such as sigma = None or rho_m = None resolved to."""
        out: dict[str, Any] = {"rho_t": self.rho_t, "rho_m": self.rho_m}
        if self.normal_sum_prior is not None:
            loc, scale = self.normal_sum_prior
            out.update(w_sum_loc=loc if isinstance(loc, float) else loc.tolist(), w_sum_scale=scale)
        return out

    def weights(self, table: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(table)

    # ---- the eager step ----------------------------------------------------------------------
    def _private_network(self) -> nn.Module | None:
        """The potential's own copy of the network, its parameters views of one flat buffer (and their .grad
        views of one flat gradient), so a step copies theta in with one op, runs the module itself (no
        functional_call) and reads the whole gradient without concatenating.

        The copy is of the module's structure only: it starts with the user's parameter tensors (replaced
        here, never written) and keeps the user's buffers, the tensors `Problem.forward` runs with too, so
        both paths see one set of buffers. None (and `supported()` false) when the network cannot be copied.
        """
        net = self.problem.net
        shared = {id(t): t for t in itertools.chain(net.parameters(), net.buffers())}
        try:
            own = copy.deepcopy(net, shared)
        except Exception as exc:  # a module holding something deepcopy refuses (a lock, a handle)
            self.reason = f"the network cannot be copied ({type(exc).__name__}: {exc})"
            return None
        self._theta_buffer = torch.zeros(self.theta_size, device=self.problem.device)
        self._grad_buffer = torch.zeros_like(self._theta_buffer)
        for s in self.globals:
            module_name, _, attr = s.name[len("theta."):].rpartition(".")
            module = own.get_submodule(module_name) if module_name else own
            param = nn.Parameter(self._theta_buffer[s.offset:s.offset + s.numel].view(s.shape))
            param.grad = self._grad_buffer[s.offset:s.offset + s.numel].view(s.shape)
            setattr(module, attr, param)
        return own

    def _forward(self, theta: torch.Tensor, train_idx: torch.Tensor, meta_idx: torch.Tensor) -> torch.Tensor:
        """The batch's per-example losses (train rows, then meta rows), on the private network at theta."""
        with torch.no_grad():
            self._theta_buffer.copy_(theta)
            self._grad_buffer.zero_()
        x, y = self.problem.batch(train_idx, meta_idx)
        return self.problem.loss(self._network(x), y)

    def _theta_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """The flat gradient buffer (holding the likelihood's gradient) plus the Gaussian prior's gradient."""
        g = self._grad_buffer
        centred = theta if self.prior_loc is None else theta - self.prior_loc
        if isinstance(self.prior_precision, float):
            g.add_(centred, alpha=-self.prior_precision)
        else:
            g.sub_(centred * self.prior_precision)
        return g

    def _closed_form_weight_gradient(self, w: torch.Tensor, l_t: torch.Tensor, w_sum_rest: torch.Tensor,
                                     labels: torch.Tensor | None, temperature: float) -> torch.Tensor:
        """d/du of `_weights_log_conditional` for a uniform base and a Normal sum prior:
        d/du [-rho_t w l + log N(S) + T log w(1-w)] in closed form."""
        loc, scale = self.normal_sum_prior
        pull = (self._totals(w_sum_rest, w, labels) - loc) * (-1.0 / scale ** 2)
        dw = l_t.mul(-self.rho_t).add_((pull if labels is None else pull[labels]).float())
        return dw.mul_(w * (1 - w)).add_(1 - 2 * w, alpha=temperature)

    def grads_given(self, theta: torch.Tensor, train_idx: torch.Tensor, meta_idx: torch.Tensor,
                    weights_for: Callable[[torch.Tensor], torch.Tensor]) -> Gradients:
        """One forward and one backward pass with the batch's weights chosen from their losses in between:
        `weights_for(losses)` returns the weights (the exact conditional draw given theta), theta's gradient
        uses them, and they come back as `local`."""
        losses = self._forward(theta, train_idx, meta_idx)
        n_t = train_idx.numel()
        w = weights_for(losses[:n_t].detach())
        lik = self._likelihood(w, losses)
        lik.backward()
        return Gradients(self._theta_gradient(theta), w, _batch_stats(losses, w, lik))

    def grads(self, theta, u_batch, train_idx, meta_idx, w_sum_rest, temperature: float = 1.0) -> Gradients:
        """The gradients `batch_log_joint` gives, from the private network's own backward pass: theta's of the
        minibatch estimate (weights held fixed), the batch's unconstrained weights' of their exact
        conditional (unscaled; losses held fixed)."""
        analytic = self.base is None and self.normal_sum_prior is not None
        u = u_batch.detach() if analytic else u_batch.detach().requires_grad_()
        w = torch.sigmoid(u)
        losses = self._forward(theta, train_idx, meta_idx)
        n_t = train_idx.numel()
        w_d, l_t_d = w.detach(), losses[:n_t].detach()
        lik = self._likelihood(w_d, losses)
        labels = None if self.sum_groups is None else self.sum_groups[train_idx]
        if analytic:
            lik.backward()
            g_u = self._closed_form_weight_gradient(w, l_t_d, w_sum_rest, labels, temperature)
        else:
            (lik + self._weights_log_conditional(u, w, l_t_d, w_sum_rest, labels, temperature)).backward()
            g_u = u.grad
        return Gradients(self._theta_gradient(theta), g_u, _batch_stats(losses, w_d, lik))

    # ---- the step's terms, shared by the eager step and the pure objectives -------------------
    def _likelihood(self, w: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """theta's minibatch estimate of the two likelihood factors (plate scales N/|B|), weights held fixed."""
        p, n_t = self.problem, w.shape[0]
        lik = (-self.rho_t * p.n_train_total / n_t) * torch.dot(w.detach(), losses[:n_t])
        if losses.shape[0] > n_t:
            lik = lik + (-self.rho_m * p.n_meta / (losses.shape[0] - n_t)) * losses[n_t:].sum()
        return lik

    def _weights_log_conditional(self, u: torch.Tensor, w: torch.Tensor, l_t: torch.Tensor,
                                 w_sum_rest: torch.Tensor, labels: torch.Tensor | None,
                                 temperature: float) -> torch.Tensor:
        """log p(w_B | theta, rest) in u-space up to a constant, unscaled, the train losses `l_t` held fixed:
        -rho_t w.l, the sum prior at the rest's sum plus the batch's, the base prior and the sigmoid's
        log-Jacobian times the temperature."""
        log_w = (-self.rho_t) * torch.dot(w, l_t) \
            + self._sparsity_log_prob(self._totals(w_sum_rest, w, labels)).float() \
            + temperature * (F.logsigmoid(u).sum() + F.logsigmoid(-u).sum())
        if self.base is not None:
            log_w = log_w + self.base.log_prob(w).sum()
        return log_w

    @staticmethod
    def _totals(w_sum_rest: torch.Tensor, w: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The sum prior's argument: the rest's sum plus the batch's weights (per class when `labels` is given)."""
        if labels is None:
            return w_sum_rest + w.sum()
        return w_sum_rest.index_add(0, labels, w.to(w_sum_rest.dtype))

    def _sparsity_log_prob(self, total: torch.Tensor) -> torch.Tensor:
        if self.normal_sum_prior is not None:
            loc, scale = self.normal_sum_prior
            return -0.5 * ((total - loc) / scale).square().sum()
        return self.sparsity.log_prob(total)

    def log_prior_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """log p(theta) up to a constant (for the per-draw log joint and the pure objectives)."""
        centred = theta if self.prior_loc is None else theta - self.prior_loc
        return -0.5 * (centred.square() * self.prior_precision).sum()

    # ---- pure objectives (torch.func.grad of these is the compiled step's gradient) ------------
    def batch_log_joint(self, theta: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        w_sum_rest: torch.Tensor, temperature: float = 1.0):
        """The step's objective as a pure function of (theta, u): `torch.func.grad` of it is `grads`' gradient.

        x, y are the train batch's rows followed by the meta batch's (`Problem.batch`). theta's terms hold
        the weights constant and u's terms the losses (the two blocked conditionals), so one gradient gives
        both blocks; written without module state or `.backward()` so that `torch.compile` can fuse the step
        (`kernels/compiled.py`). Returns (value, stats).
        """
        n_t = u.shape[0]
        losses = self._functional_losses(theta, x, y)
        w = torch.sigmoid(u)
        w_d, l_t_d = w.detach(), losses[:n_t].detach()
        lik = self._likelihood(w_d, losses)
        labels = None if self.sum_groups is None else y[:n_t]  # the train rows' labels are the sum groups
        log_w = self._weights_log_conditional(u, w, l_t_d, w_sum_rest, labels, temperature)
        value = lik + log_w + self.log_prior_theta(theta)
        return value, _batch_stats(losses, w_d, lik)

    def theta_log_joint(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_t: int,
                        weights_for: Callable[[torch.Tensor], torch.Tensor]):
        """`grads_given`'s objective as a pure function of theta (for `torch.func.grad` in the compiled step):
        the first `n_t` rows of (x, y) are the train batch; returns (value, (weights, stats))."""
        losses = self._functional_losses(theta, x, y)
        w = weights_for(losses[:n_t].detach())
        lik = self._likelihood(w, losses)
        stats = _batch_stats(losses, w, lik)
        return lik + self.log_prior_theta(theta), (w.detach(), stats)

    def _functional_losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {s.name[len("theta."):]: theta[s.offset:s.offset + s.numel].view(s.shape) for s in self.globals}
        return self.problem.loss(self.problem.forward(params, x), y)
