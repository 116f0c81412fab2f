"""Bad input: each kind raises a library exception naming the field and value (API), or exits 2 (CLI)."""
import numpy as np
import pytest
import torch
from torch import nn

from pyro_dps.cli import main
from pyro_dps.context import Problem
from pyro_dps.data import from_arrays
from pyro_dps import SamplerConfig, fit
from pyro_dps.errors import ConfigError, DataError, DPSError, ModelError
from pyro_dps.models import bads


def _xy(n=50, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _fit(problem=None, hyper=None, model=bads.model, **cfg):
    x, y = _xy()
    problem = problem or Problem(nn.Linear(4, 3), x, y, x[:10], y[:10])
    config = SamplerConfig(**{"chains": 1, "warmup": 2, "samples": 2, "thin": 1, "batch_size": 8,
                              "progress": False, **cfg})
    return fit(model, problem, hyper or {"beta": 0.5}, config)


def _problem(**override):
    x, y = _xy()
    parts = {"x_train": x, "y_train": y, "x_meta": x[:10], "y_meta": y[:10], **override}
    return lambda: Problem(nn.Linear(4, 3), parts["x_train"], parts["y_train"], parts["x_meta"], parts["y_meta"])


def _nan_x():
    x, _ = _xy()
    x = x.clone()
    x[3, 1] = float("nan")
    return x


CASES = {
    "mismatched lengths": (lambda: _problem(y_train=_xy()[1][:40])(), DataError, "40"),
    "wrong dimensions": (lambda: _problem(x_meta=torch.randn(10, 5))(), DataError, "x_meta"),
    "nan features": (lambda: _problem(x_train=_nan_x())(), DataError, "row 3"),
    "inf features": (lambda: _problem(x_meta=torch.full((10, 4), float("inf")))(), DataError, "x_meta"),
    "labels out of range": (lambda: _problem(y_train=torch.full((50,), 7))(), DataError, "[0, 3)"),
    "labels of wrong dtype": (lambda: _problem(y_train=torch.zeros(50))(), DataError, "y_train"),
    "empty meta set": (lambda: _fit(Problem(nn.Linear(4, 3), *_xy(), _xy()[0][:0], _xy()[1][:0])), DataError,
                       "meta set"),
    "beta above 1": (lambda: _fit(hyper={"beta": 1.5}), ConfigError, "beta"),
    "beta zero": (lambda: _fit(hyper={"beta": 0.0}), ConfigError, "beta"),
    "sigma not positive": (lambda: _fit(hyper={"beta": 0.5, "sigma": 0.0}), ConfigError, "sigma"),
    "negative temperature": (lambda: _fit(temperature=-0.5), ConfigError, "temperature"),
    "batch larger than N_t": (lambda: _fit(batch_size=500), ConfigError, "batch_size"),
    "unknown hyper-parameter": (lambda: _fit(hyper={"beta": 0.5, "sparsity": 2}), ModelError, "sparsity"),
    "unknown kernel": (lambda: _fit(kernel="nuts"), ConfigError, "nuts"),
    "model file without function": (lambda: __import__("pyro_dps.model_loader", fromlist=["x"]).load_model(
        __file__ + ":no_such_model"), ModelError, "no_such_model"),
    "unreadable data file": (lambda: __import__("pyro_dps.data", fromlist=["x"]).load_npz("/nonexistent/x.npz"),
                             DataError, "/nonexistent/x.npz"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_api_bad_input(kind):
    make, error, needle = CASES[kind]
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, DPSError)
    assert needle in str(info.value), str(info.value)


def test_corrupt_npz_via_cli(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'name = "x"\n[data]\nsource = "npz"\npath = "{bad}"\n')
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.npz" in err and err.count("\n") == 1
    assert not out.exists()


def test_meta_classes_missing_warn_and_name_the_classes():
    """A meta set without some classes is what some users have: a warning naming the class and counting the
    training examples that carry it, not an error (tests/test_data.py checks the message's counts too)."""
    from pyro_dps.errors import MetaCoverageWarning

    with pytest.warns(MetaCoverageWarning, match=r"classes \[2\]: 2 of the 6 training examples"):
        from_arrays(np.zeros((6, 2)), np.array([0, 1, 2, 0, 1, 2]), np.zeros((2, 2)), np.array([0, 1]),
                    np.zeros((3, 2)), np.array([0, 1, 2]), num_classes=3)
