"""The paper's baselines over the shared loop: each runs a few steps on tiny data and does what it claims."""
from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from pyro_dps.baselines import (BASELINES, BETA_BASELINES, SCORED_BASELINES, blo_weights, blo_with_scores,
                                cds_with_scores, contrastive_scores, duplicate_rows, mwn_with_scores, random_subset,
                                run_baseline)
from pyro_dps.baselines.cds import top_fraction_hook
from pyro_dps.baselines.mixing_early_stop import mixing_es_with_history
from pyro_dps.data import from_arrays
from pyro_dps.errors import ConfigError, DataError
from pyro_dps.losses import cross_entropy
from pyro_dps.metrics import accuracy, noise_auroc
from pyro_dps.networks import mlp
from pyro_dps.training import Trainer, per_example_loss, predict_proba, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny networks: one thread is several times faster than two on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n_train=300, flip=0.3, n_meta=20, n_test=200, seed=0, sep=2.0):
    """Two well-separated Gaussian classes in 2-D; a `flip` fraction of the training labels is flipped."""
    g = torch.Generator().manual_seed(seed)

    def draw(m):
        y = torch.randint(0, 2, (m,), generator=g)
        x = torch.randn(m, 2, generator=g)
        x[:, 0] += sep * (2 * y - 1)
        return x, y

    (xt, yt), (xm, ym), (xs, ys) = draw(n_train), draw(n_meta), draw(n_test)
    flipped = torch.randperm(n_train, generator=g)[:int(flip * n_train)]
    y_obs = yt.clone()
    y_obs[flipped] = 1 - y_obs[flipped]
    return from_arrays(xt, y_obs, xm, ym, xs, ys, num_classes=2, clean=(y_obs == yt), y_train_true=yt)


# The package re-exports each function under its module's name, so fetch the modules themselves.
duplicate_meta_module = importlib.import_module("pyro_dps.baselines.duplicate_meta")
meta_only_module = importlib.import_module("pyro_dps.baselines.meta_only")
mixing_es_module = importlib.import_module("pyro_dps.baselines.mixing_early_stop")
random_select_module = importlib.import_module("pyro_dps.baselines.random_select")


def fresh_net(seed=0):
    torch.manual_seed(seed)
    return mlp(2, 2, (32,))


# --- the shared loop -------------------------------------------------------------------------------------

def test_train_is_deterministic_and_unit_weights_equal_the_mean():
    data = blobs()
    a = train(fresh_net(), data.x_train, data.y_train, 30, batch_size=32, seed=3)
    b = train(fresh_net(), data.x_train, data.y_train, 30, batch_size=32, seed=3)
    c = train(fresh_net(), data.x_train, data.y_train, 30, batch_size=32, seed=3,
              weights=torch.full((data.n_train,), 2.5))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(pa, pc, rtol=1e-5, atol=1e-6)


def test_trainer_hook_sees_each_row_once_per_epoch_and_zero_weights_freeze_the_net():
    data = blobs(n_train=64)
    seen = []

    def hook(step, net, xb, yb, rows):
        seen.append(rows.clone())
        return torch.zeros(rows.numel())

    net = fresh_net()
    before = copy.deepcopy(net.state_dict())
    trainer = Trainer(net, data.x_train, data.y_train, batch_size=16, optimizer="sgd", lr=0.5, hook=hook)
    trainer.run(4)
    assert sorted(torch.cat(seen).tolist()) == list(range(64))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


# --- data-level baselines ---------------------------------------------------------------------------------

def _capture_train(monkeypatch, module):
    captured = {}

    def fake_train(net, x, y, steps, **kwargs):
        captured.update(x=x, y=y, steps=steps, kwargs=kwargs)
        return net

    monkeypatch.setattr(module, "train", fake_train)
    return captured


def test_random_select_trains_on_meta_plus_a_beta_fraction(monkeypatch):
    data = blobs(n_train=200)
    idx = random_subset(200, 0.3, seed=1)
    assert idx.numel() == 60 and idx.unique().numel() == 60
    assert not torch.equal(idx, random_subset(200, 0.3, seed=2))
    captured = _capture_train(monkeypatch, random_select_module)
    random_select_module.random_select(fresh_net(), data, 5, beta=0.3, seed=1)
    x = captured["x"]
    assert x.shape[0] == data.n_meta + 60
    assert torch.equal(x[:data.n_meta], data.x_meta)
    assert torch.equal(x[data.n_meta:], data.x_train[idx])


def test_duplicate_meta_adds_n_train_rows_of_meta_copies(monkeypatch):
    rows = duplicate_rows(7, 30)
    assert rows.numel() == 30 and set(torch.bincount(rows, minlength=7).tolist()) <= {4, 5}
    assert duplicate_rows(50, 10).numel() == 50  # never fewer than one copy of D_m
    data = blobs(n_train=100, n_meta=8)
    captured = _capture_train(monkeypatch, duplicate_meta_module)
    duplicate_meta_module.duplicate_meta(fresh_net(), data, 5)
    x, y = captured["x"], captured["y"]
    assert x.shape[0] == 200 and torch.equal(x[:100], data.x_train)
    counts = torch.bincount(duplicate_rows(8, 100), minlength=8)
    assert counts.min() == 12 and counts.max() == 13
    for j in range(8):  # every meta example appears exactly its count of times among the copies
        assert int((x[100:] == data.x_meta[j]).all(1).sum()) == int(counts[j])
    assert torch.equal(y[100:], data.y_meta[duplicate_rows(8, 100)])


def test_meta_only_ignores_the_training_set(monkeypatch):
    data = blobs()
    captured = _capture_train(monkeypatch, meta_only_module)
    meta_only_module.meta_only(fresh_net(), data, 5, lr=1e-2)
    assert torch.equal(captured["x"], data.x_meta) and captured["kwargs"] == {"lr": 1e-2}


# --- mixing with early stopping on held-out meta examples ---------------------------------------------------

def noisy_classes(n_train=300, meta_per_class=20, n_test=400, k=4, dim=10, noise=0.6, seed=0):
    """k Gaussian classes in `dim` dimensions; a `noise` fraction of the training labels moved to another class.

    At 60% noise the true class is still the most frequent label (40% vs 20% each), so a 256-unit MLP
    first learns the classes and then memorises the wrong labels: the held-out loss falls, then rises.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g)

    def draw(y):
        return means[y] + torch.randn(y.numel(), dim, generator=g), y

    (xt, yt), (xs, ys) = draw(torch.randint(0, k, (n_train,), generator=g)), draw(torch.randint(0, k, (n_test,),
                                                                                                 generator=g))
    xm, ym = draw(torch.arange(k).repeat_interleave(meta_per_class))
    flip = torch.rand(n_train, generator=g) < noise
    y_obs = yt.clone()
    y_obs[flip] = (yt[flip] + torch.randint(1, k, (int(flip.sum()),), generator=g)) % k
    return from_arrays(xt, y_obs, xm, ym, xs, ys, num_classes=k, clean=(y_obs == yt), y_train_true=yt)


def overfitting_run(seed=0, steps=300, **settings):
    data = noisy_classes(seed=seed)
    torch.manual_seed(seed)
    init = mlp(10, 4, (256,))
    net, history = mixing_es_with_history(copy.deepcopy(init), data, steps, seed=seed, lr=1e-2, batch_size=64,
                                          **settings)
    return data, init, net, history


def test_mixing_es_returns_the_checkpoint_with_the_lowest_held_out_loss():
    data, init, net, history = overfitting_run()
    assert len(history.steps) == 20 and history.steps[-1] == 300  # default: about 20 evaluations, the last one
    best = min(history.val_loss)
    assert history.best_step == history.steps[history.val_loss.index(best)]
    held_out = per_example_loss(net, data.x_meta[history.val_rows], data.y_meta[history.val_rows]).mean()
    assert float(held_out) == pytest.approx(best, rel=1e-6)
    # 60% noise: the held-out loss bottoms out early and the last iterate has overfitted
    assert history.best_step <= 150 and history.val_loss[-1] > 1.3 * best
    full = train(copy.deepcopy(init), torch.cat([data.x_train, data.x_meta]), torch.cat([data.y_train, data.y_meta]),
                 300, seed=0, lr=1e-2, batch_size=64)  # plain mixing for the whole budget
    es_test, full_test = (float(per_example_loss(m, data.x_test, data.y_test).mean()) for m in (net, full))
    assert es_test < 0.8 * full_test


def test_mixing_es_never_trains_on_held_out_rows_and_makes_exactly_the_budget(monkeypatch):
    seen = {}

    class SpyTrainer(Trainer):
        def __init__(self, net, x, y, **kwargs):
            seen.update(x=x, y=y, kwargs=kwargs, steps=0)
            super().__init__(net, x, y, **kwargs)

        def step(self):
            seen["steps"] += 1
            return super().step()

    monkeypatch.setattr(mixing_es_module, "Trainer", SpyTrainer)
    data = blobs(n_meta=21)
    _, history = mixing_es_with_history(fresh_net(), data, 47, seed=2, eval_every=10, lr=1e-2, batch_size=32)
    assert seen["steps"] == 47 and history.steps == [10, 20, 30, 40, 47]
    assert seen["kwargs"] == {"seed": 2, "loss": cross_entropy, "lr": 1e-2, "batch_size": 32}
    fit, val = history.fit_rows, history.val_rows
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(21)) and val.numel() >= 9
    assert torch.equal(seen["x"], torch.cat([data.x_train, data.x_meta[fit]]))
    assert torch.equal(seen["y"], torch.cat([data.y_train, data.y_meta[fit]]))
    trained_on = {tuple(r) for r in seen["x"].tolist()}
    assert not any(tuple(r) in trained_on for r in data.x_meta[val].tolist())


def test_mixing_es_is_deterministic_given_the_seed():
    a, b, c = (overfitting_run(seed=0, steps=60, eval_every=10, val_fraction=v)[2] for v in (0.5, 0.5, 0.3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("settings, field", [({"val_fraction": 0.0}, "val_fraction"),
                                             ({"val_fraction": 1.0}, "val_fraction"),
                                             ({"val_fraction": True}, "val_fraction"),
                                             ({"val_fraction": "0.5"}, "val_fraction"),
                                             ({"eval_every": 0}, "eval_every"),
                                             ({"eval_every": 2.5}, "eval_every"),
                                             ({"eval_every": True}, "eval_every")])
def test_mixing_es_rejects_bad_settings(settings, field):
    with pytest.raises(ConfigError, match=field):
        BASELINES["mixing_es"](fresh_net(), blobs(), 5, **settings)


def test_mixing_es_needs_a_class_with_two_meta_examples():
    data = blobs()
    data = from_arrays(data.x_train, data.y_train, data.x_meta[:2], torch.tensor([0, 1]), data.x_test, data.y_test,
                       num_classes=2)  # one meta example per class: nothing left to hold out
    with pytest.raises(DataError, match="held-out"):
        BASELINES["mixing_es"](fresh_net(), data, 5)


# --- BLO and Meta-Weight-Net -----------------------------------------------------------------------------

def test_blo_weights_equal_the_clamped_gradient_alignment():
    """At eps = 0 the look-ahead weights are max(0, <grad l_i, grad L_meta>), normalised."""
    data = blobs(seed=4)
    net = fresh_net(4)
    xb, yb, xm, ym = data.x_train[:16], data.y_train[:16], data.x_meta, data.y_meta
    w = blo_weights(net, xb, yb, xm, ym, virtual_lr=0.1)
    params = list(net.parameters())
    g_meta = torch.autograd.grad(cross_entropy(net(xm), ym).mean(), params)
    align = torch.stack([sum((gi * gm).sum() for gi, gm in zip(
        torch.autograd.grad(cross_entropy(net(xb[i:i + 1]), yb[i:i + 1]).sum(), params), g_meta))
        for i in range(16)])
    expected = align.clamp_min(0) / align.clamp_min(0).sum()
    torch.testing.assert_close(w, expected, rtol=1e-4, atol=1e-6)
    assert abs(float(w.sum()) - 1) < 1e-5 and (w >= 0).all()


def test_blo_weights_clean_examples_above_flipped_ones():
    data = blobs(seed=1)
    net, scores = blo_with_scores(fresh_net(1), data, 60, seed=0, lr=1e-2, batch_size=32)
    clean = data.clean.numpy()
    s = scores.numpy()
    assert s[clean].mean() > 3 * s[~clean].mean()
    assert noise_auroc(s, clean) > 0.9
    assert accuracy(predict_proba(net, data.x_test), data.y_test) > 0.9


def test_mwn_meta_gradient_equals_the_autograd_look_ahead():
    """torch.func's nested grad gives the same d L_meta(theta'(phi)) / d phi as autograd with create_graph."""
    from torch.func import functional_call

    from pyro_dps.baselines import MetaWeightHook

    data = blobs(seed=5)
    net = fresh_net(5)
    hook = MetaWeightHook(data, 20, virtual_lr=0.3, hidden=8, seed=0)
    xb, yb, xm, ym = data.x_train[:16], data.y_train[:16], data.x_meta, data.y_meta
    grads, losses = hook.meta_gradient(net, xb, yb, xm, ym)
    names, params = zip(*net.named_parameters())
    loss = cross_entropy(net(xb), yb)
    v = hook.vnet(loss.detach())
    v = v / v.sum()
    g = torch.autograd.grad((v * loss).sum(), params, create_graph=True)
    stepped = {n: p - 0.3 * gp for n, p, gp in zip(names, params, g)}
    meta = cross_entropy(functional_call(net, stepped, (xm,)), ym).mean()
    expected = torch.autograd.grad(meta, list(hook.vnet.parameters()))
    for (name, _), e in zip(hook.vnet.named_parameters(), expected):
        assert float(e.abs().max()) > 0
        torch.testing.assert_close(grads[name], e, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(losses, loss.detach())


def test_mwn_gives_clean_examples_more_weight_on_average():
    data = blobs(seed=2)
    net, scores = mwn_with_scores(fresh_net(2), data, 150, seed=0, lr=1e-2, batch_size=32, meta_lr=1e-2,
                                  hidden=16)
    clean = data.clean.numpy()
    s = scores.numpy()
    # an untrained weight net (meta_lr ~ 0) gives both groups about the same mean weight (ratio ~1.05)
    assert s[clean].mean() > 2 * s[~clean].mean()
    assert noise_auroc(s, clean) > 0.9
    assert accuracy(predict_proba(net, data.x_test), data.y_test) > 0.85


# --- CDS ---------------------------------------------------------------------------------------------------

def domains(seed=0, n_in=240, n_off=160, n_meta=40):
    """In-domain: y = [x0 > 0]; off-domain: y = [x1 > 0] on the same inputs. D_m is in-domain only."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_in + n_off + n_meta + 200, 2, generator=g)
    y = (x[:, 0] > 0).long()
    off = torch.zeros(x.shape[0], dtype=torch.bool)
    off[n_in:n_in + n_off] = True
    y[off] = (x[off, 1] > 0).long()
    t, m = n_in + n_off, n_in + n_off + n_meta
    return from_arrays(x[:t], y[:t], x[t:m], y[t:m], x[m:], y[m:], num_classes=2, clean=~off[:t])


def test_cds_ranks_in_domain_above_off_domain():
    data = domains()
    scores = contrastive_scores(fresh_net(5), data, score_steps=150, finetune_steps=60, batch_size=64, lr=1e-2)
    in_domain = data.clean.numpy()
    assert noise_auroc(scores.numpy(), in_domain) > 0.75
    # where the two rules disagree the ranking is near perfect
    x = data.x_train
    disagree = ((x[:, 0] > 0) != (x[:, 1] > 0)).numpy()
    assert noise_auroc(scores.numpy()[disagree], in_domain[disagree]) > 0.95


def test_cds_keeps_the_top_beta_fraction_of_each_batch():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.1, 5.0, -0.2, 0.0, 1.0])
    hook = top_fraction_hook(scores, 0.25)
    rows = torch.tensor([0, 1, 2, 3, 5, 6])
    w = hook(0, None, None, None, rows)
    assert w.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # ceil(0.25 * 6) = 2 best: scores 2.0 and 0.3
    assert int(w.sum()) == math.ceil(0.25 * 6) and hook(0, None, None, None, torch.tensor([1])).tolist() == [1.0]
    data = domains()
    net, s = cds_with_scores(fresh_net(6), data, 100, beta=0.5, seed=0, score_steps=100, finetune_steps=40,
                             batch_size=64, lr=1e-2)
    assert accuracy(predict_proba(net, data.x_test), data.y_test) > 0.85 and s.shape == (data.n_train,)


# --- cleanlab (optional extra) -----------------------------------------------------------------------------

def test_cleanlab_flags_flipped_labels():
    pytest.importorskip("cleanlab")
    from pyro_dps.baselines.cleanlab_filter import label_issues, out_of_fold_proba

    data = blobs(flip=0.2, seed=3)
    probs = out_of_fold_proba(fresh_net(3), data.x_train, data.y_train, folds=3, steps=80, seed=0,
                              batch_size=32, lr=1e-2)
    issues, quality = label_issues(data.y_train.numpy(), probs)
    flipped = ~data.clean.numpy()
    recall = (issues & flipped).sum() / flipped.sum()
    precision = (issues & flipped).sum() / max(1, issues.sum())
    assert recall > 0.8 and precision > 0.8, (recall, precision)
    assert noise_auroc(quality, data.clean.numpy()) > 0.9
    net, scores = run_baseline("cleanlab", fresh_net(3), data, 60, seed=0, folds=3, batch_size=32, lr=1e-2)
    assert accuracy(predict_proba(net, data.x_test), data.y_test) > 0.9 and scores.shape == (data.n_train,)


# --- the registry --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_registered_baseline_learns_the_easy_task(name):
    if name == "cleanlab":
        pytest.importorskip("cleanlab")
    data = blobs(flip=0.1, seed=7)
    settings = {"lr": 1e-2, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0}
    if name in BETA_BASELINES:
        settings["beta"] = 0.5
    net = BASELINES[name](fresh_net(7), data, steps=60, seed=0, **settings)
    assert isinstance(net, nn.Module)
    assert accuracy(predict_proba(net, data.x_test), data.y_test) > 0.9
    if name in SCORED_BASELINES:
        _, scores = run_baseline(name, fresh_net(7), data, 20, seed=0, **settings)
        assert scores.shape == (data.n_train,) and np.isfinite(scores.numpy()).all()
