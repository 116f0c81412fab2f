"""The weight-network model (paper appendix B), its running sum estimate (eq. 9) and `pyro-dps score`."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from pyro_dps.cli import main
from pyro_dps.context import ModelContext, Problem
from pyro_dps.data import digits_splits
from pyro_dps.errors import ConfigError
from pyro_dps.models import weight_net
from pyro_dps.potential import TracePotential, make_potential

ROOT = Path(__file__).resolve().parents[1]


def _problem(seed=0, n=50, m=12):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    return Problem(net, torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g),
                   torch.randn(m, 5, generator=g), torch.randint(0, 3, (m,), generator=g))


def test_running_mean_keeps_the_last_window_and_only_the_current_value_has_a_gradient():
    ctx = ModelContext(_problem(), torch.arange(3), torch.arange(2), memory={})
    outs = [ctx.running_mean("m", torch.tensor(float(v)), window=3) for v in (1, 2, 3, 4, 5)]
    assert [float(o) for o in outs] == [1.0, 1.5, 2.0, 3.0, 4.0]
    x = torch.tensor(6.0, requires_grad=True)
    out = ctx.running_mean("m", x, window=3)
    out.backward()
    assert float(out.detach()) == pytest.approx(5.0) and float(x.grad) == pytest.approx(1 / 3)
    probe = ModelContext(_problem(), torch.arange(3), torch.arange(2))  # no memory: the value itself
    assert float(probe.running_mean("m", torch.tensor(9.0), window=3)) == 9.0


def test_weight_network_gradient_equals_hand_written_formula():
    """theta and phi get the gradient of: log p(theta) + log p(phi) - rho_t N/B sum w l - rho_m M/Bm sum l
    + log N(N_t * (running mean of batch-mean w) | floor(N_t beta), sigma), with w = sigmoid(v_y . h + c_y)
    and h the detached penultimate features."""
    problem = _problem()
    hyper = {"beta": 0.4, "sigma": 2.0, "rho_t": 1.3, "rho_m": 0.7, "prior_scale": 0.9, "phi_scale": 1.5, "s_avg": 3}
    potential = TracePotential(weight_net.model, problem, hyper)
    assert potential.weight_site == "w" and potential.local_site is None
    gen = torch.Generator().manual_seed(1)
    theta = potential.init_theta(gen) + 0.3 * torch.randn(potential.theta_size, generator=gen)
    idx, jdx = torch.arange(10, 22), torch.arange(0, 5)
    potential.memory["w_mean"] = [torch.tensor(0.31), torch.tensor(0.62)]  # two earlier batches
    got = potential.grads(theta, None, idx, jdx, torch.zeros((), dtype=torch.float64)).theta

    values = {k: v.detach().clone().requires_grad_() for k, v in potential.unpack(theta).items()}
    w1, b1, w2, b2 = (values[f"theta.{k}"] for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    v, c = values["phi.v"], values["phi.c"]

    def features(x):
        return torch.tanh(x @ w1.T + b1)

    h_t = features(problem.x_train[idx])
    l_t = F.cross_entropy(h_t @ w2.T + b2, problem.y_train[idx], reduction="none")
    l_m = F.cross_entropy(features(problem.x_meta[jdx]) @ w2.T + b2, problem.y_meta[jdx], reduction="none")
    y = problem.y_train[idx]
    w = torch.sigmoid((h_t.detach() * v[y]).sum(-1) + c[y])
    n, m = problem.n_train, problem.n_meta
    estimate = n * (w.mean() + 0.31 + 0.62) / 3
    obj = sum(-(values[k] ** 2).sum() / (2 * 0.9 ** 2) for k in values if k.startswith("theta.")) \
        + sum(-(values[k] ** 2).sum() / (2 * 1.5 ** 2) for k in ("phi.v", "phi.c")) \
        - 1.3 * n / len(idx) * (w * l_t).sum() - 0.7 * m / len(jdx) * l_m.sum() \
        - (estimate - math.floor(n * 0.4)) ** 2 / (2 * 2.0 ** 2)
    grads = torch.autograd.grad(obj, list(values.values()))
    want = torch.cat([g.reshape(-1) for g in grads])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(potential.memory["w_mean"]) == 2  # the window (s_avg - 1 = 2 past values) slid by one


def test_weight_network_falls_back_to_the_trace_path_and_validates_its_settings():
    assert make_potential(weight_net.model, _problem(), {"beta": 0.5}).kind == "trace"
    with pytest.raises(ConfigError, match="label_mode must be one of"):
        TracePotential(weight_net.model, _problem(), {"beta": 0.5, "label_mode": "both"})
    with pytest.raises(ConfigError, match="s_avg must be an integer >= 1, got 0"):
        TracePotential(weight_net.model, _problem(), {"beta": 0.5, "s_avg": 0})


@pytest.fixture(scope="module")
def weight_net_run(tmp_path_factory):
    """The demo task (digits, 50% label noise) with the weight network: one chain of 3,000 pSGLD steps."""
    out = tmp_path_factory.mktemp("wnet") / "run"
    config = (ROOT / "configs" / "digits_weight_net.toml").read_text()
    config = config.replace("chains = 4", "chains = 1").replace("warmup = 4000", "warmup = 2000") \
        .replace("samples = 100", "samples = 20").replace("thin = 40", "thin = 50")
    cfg = out.parent / "wnet.toml"
    cfg.write_text(config)
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--seed", "0"]) == 0
    return out


def test_weight_network_finds_the_noise_in_training_and_on_unseen_data(weight_net_run, tmp_path):
    """Measured (seed 0): AUROC 0.866 on D_t and 0.864 on the unseen test split with half its labels flipped;
    the bound 0.8 leaves room for platform float differences."""
    weights = pd.read_csv(weight_net_run / "weights.csv")
    assert roc_auc_score(weights["clean"], weights["mean"]) > 0.8
    data = digits_splits(seed=0)
    rng = np.random.default_rng(1)
    y = data.y_test.numpy().copy()
    flip = rng.random(len(y)) < 0.5
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    np.savez(tmp_path / "unseen.npz", x=data.x_test.numpy(), y=y)
    assert main(["score", str(weight_net_run), str(tmp_path / "unseen.npz"), "--out", str(tmp_path / "s.csv")]) == 0
    scores = pd.read_csv(tmp_path / "s.csv")
    assert list(scores.columns) == ["index", "label", "mean", "sd", "q05", "q95"] and len(scores) == len(y)
    assert (scores["label"].to_numpy() == y).all() and (scores["sd"] > 0).mean() > 0.9  # 6 decimals
    assert roc_auc_score(~flip, scores["mean"]) > 0.8


def test_score_refuses_bad_input_with_exit_code_2(weight_net_run, run_dir, tmp_path, capsys):
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 10), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 64), np.float32))
    (tmp_path / "junk.npz").write_text("not a zip")
    cases = [
        ([str(tmp_path / "nowhere"), str(tmp_path / "ok.npz")], "does not exist"),
        ([str(run_dir), str(tmp_path / "ok.npz")], "per-example table weights"),
        ([str(weight_net_run), str(tmp_path / "shape.npz")], "x rows have shape (10,)"),
        ([str(weight_net_run), str(tmp_path / "nolabels.npz")], "needs an array 'y'"),
        ([str(weight_net_run), str(tmp_path / "junk.npz")], "not a readable .npz"),
    ]
    for args, message in cases:
        out = tmp_path / "scores.csv"
        assert main(["score", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists() and not list(tmp_path.glob(".scores.csv.*"))

