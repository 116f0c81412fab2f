"""pSGLD's preconditioner after warm-up: adapting by default (Li et al. 2016), frozen only when asked."""
import torch

from pyro_dps.kernels.psgld import PSGLDRule


def _after_warmup(rule: PSGLDRule) -> tuple[torch.Tensor, torch.Tensor, dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(5)
    aux = rule.init_global(x)
    for _ in range(10):  # warm-up with gradients of scale 1
        rule.apply(x, torch.randn(5, generator=gen), aux, 1e-3, 0.0, None)
    rule.end_warmup(aux)
    v_end = aux["v"].clone()
    rule.apply(x, 1000.0 * torch.ones(5), aux, 1e-3, 0.0, None)  # a gradient 1000x larger than warm-up's
    return v_end, x, aux


def test_preconditioner_keeps_adapting_by_default():
    v_end, x, aux = _after_warmup(PSGLDRule())
    assert torch.all(aux["v"] > 100 * v_end)  # (1 - 0.99) * 1000^2 = 1e4 against ~1
    # the big gradient moved x by about eps / 2 times g / sqrt(V): bounded, as RMSprop's step
    assert float(x.abs().max()) < 0.1


def test_frozen_preconditioner_keeps_its_warmup_value():
    v_end, x, aux = _after_warmup(PSGLDRule(freeze=True))
    assert torch.equal(aux["v"], v_end)
    # the same gradient now moves x by eps / 2 * 1000 / sqrt(V_warm-up): the unbounded step behind the blow-up
    # the docstring describes (benchmarks/quality.py, CIFAR-10 ResNet-8)
    assert float(x.abs().max()) > 0.3
