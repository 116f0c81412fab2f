"""`TracePotential`: a step's gradients from a full Pyro trace of the model (general, slower).

It works for any model whose latent sites are global (theta and friends) or per-example inside the
subsampled `train` plate. Gradients (docs/method.md, random-scan blocked Langevin): theta gets the minibatch
estimate of the full log joint (plate terms scaled by N/|B|); the batch's weights get the gradient of
their exact conditional (terms unscaled).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine

from ..context import ModelContext
from .layout import Gradients, SiteLayout
from .stats import _loss_stats


class TracePotential(SiteLayout):
    """Gradients from a full Pyro trace of the model at every step (general, slower)."""

    kind = "trace"

    def _leaves(self, theta: torch.Tensor) -> list[torch.Tensor]:
        return [theta[s.offset:s.offset + s.numel].view(s.shape).detach().requires_grad_()
                for s in self.globals]

    def grads(self, theta: torch.Tensor, u_batch: torch.Tensor | None, train_idx: torch.Tensor,
              meta_idx: torch.Tensor, w_sum_rest: torch.Tensor, temperature: float = 1.0) -> Gradients:
        """Gradients at one minibatch. The change-of-variables terms are multiplied by `temperature`, so
        a kernel at temperature T targets p(values)^(1/T) in the constrained space (the Jacobian itself
        is not tempered: tempering it would pull every weight towards 1/2)."""
        leaves = self._leaves(theta)
        data, log_jac = {}, 0.0
        for s, u in zip(self.globals, leaves):
            value = s.transform(u)
            data[s.name] = value
            log_jac = log_jac + s.transform.log_abs_det_jacobian(u, value).sum()
        u_leaf = None
        if self.local_site is not None:
            u_leaf = u_batch.detach().requires_grad_()
            w = self.local_transform(u_leaf)
            data[self.local_site] = w
        ctx = ModelContext(self.problem, train_idx, meta_idx, w_sum_rest, self.memory)
        # Validation off for the log probs too: Pyro's NaN/inf warnings read each site's value back to the host
        # (a device sync per site) and hook every gradient; a non-finite step is the divergence guard's to reject.
        with pyro.validation_enabled(False):
            tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(ctx, **self.hyper)
            tr.compute_log_prob()
        scaled = temperature * log_jac
        unscaled = 0.0
        for site in tr.nodes.values():
            if site["type"] == "sample":
                scaled = scaled + site["log_prob_sum"]
                unscaled = unscaled + site["unscaled_log_prob"].sum()
        stats = {"log_joint": torch.as_tensor(scaled).detach()}
        if u_leaf is None:
            g = torch.autograd.grad(scaled, leaves, allow_unused=True)
            if self.weight_site is not None:
                stats.update(_loss_stats(ctx, tr.nodes[self.weight_site]["value"]))
            return Gradients(self._flat(g, leaves), None, stats)
        jac_local = self.local_transform.log_abs_det_jacobian(u_leaf, w)
        scale = tr.nodes[self.local_site]["scale"]
        g = torch.autograd.grad(scaled + temperature * scale * jac_local.sum(), leaves, retain_graph=True,
                                allow_unused=True)
        g_local, = torch.autograd.grad(unscaled + temperature * jac_local.sum(), [u_leaf])
        stats.update(_loss_stats(ctx, w))
        return Gradients(self._flat(g, leaves), g_local, stats)

    @staticmethod
    def _flat(grads, leaves) -> torch.Tensor:
        if not leaves:
            return torch.zeros(0)
        return torch.cat([(torch.zeros_like(l) if g is None else g).reshape(-1) for g, l in zip(grads, leaves)])
