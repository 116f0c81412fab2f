"""The package's front door: `from pyro_dps import ...` gives the objects a user needs, loaded lazily."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import pyro_dps
from pyro_dps.metrics import noise_auroc


def test_every_front_door_name_is_the_object_of_its_module():
    import importlib

    for name, (module, attribute) in pyro_dps._EXPORTS.items():
        target = importlib.import_module(f"pyro_dps.{module}")
        assert getattr(pyro_dps, name) is (target if attribute is None else getattr(target, attribute)), name
    assert set(pyro_dps.__all__) == {"__version__", *pyro_dps._EXPORTS}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Fit'"):
        pyro_dps.Fit  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    """`pyro-dps --version` and `import pyro_dps` stay light: torch loads with the first name that needs it."""
    code = "import sys, pyro_dps; print('torch' in sys.modules); pyro_dps.Problem; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_a_run_through_the_front_door_finds_the_corrupted_labels():
    """The README's Python example, shortened: the weights rank clean above corrupted (AUROC well above
    chance on 50% symmetric noise; the full demo gives 0.99) and the checks return a status."""
    from pyro_dps import (Problem, SamplerConfig, WeightSelection, check_convergence, digits_splits, fit, load_model,
                          mlp, to_arviz)

    data = digits_splits(seed=0, noise="symmetric", noise_rate=0.5)
    torch.manual_seed(0)
    problem = Problem(mlp(64, 10, (32,)), data.x_train, data.y_train, data.x_meta, data.y_meta)
    config = SamplerConfig(chains=2, warmup=300, samples=20, thin=10, progress=False, snapshots=2)
    posterior = fit(load_model("bads"), problem, {"beta": 0.5}, config)
    mean = posterior.weight_summary()["mean"]
    assert noise_auroc(mean, data.clean.numpy()) > 0.9
    data_az = to_arviz(posterior.dataset())
    checks = check_convergence(data_az)
    assert {c.status for c in checks} <= {"pass", "warn", "fail"} and any(c.name == "R-hat of weights" for c in checks)
    keep = WeightSelection.from_data(data_az).by_probability(0.5, 0.9)
    assert np.array_equal(keep, pyro_dps.select(posterior.draws.weights().values, 0.5, 0.9))
    # the same through the Posterior's own methods
    assert np.array_equal(keep, posterior.select(0.5, 0.9))
    assert [(c.name, c.status) for c in posterior.diagnose()] == [(c.name, c.status) for c in checks]
    assert np.allclose(posterior.to_arviz().posterior["w"].values, data_az.posterior["w"].values)
    assert 0 < keep.sum() < len(mean) and np.mean(data.clean.numpy()[keep]) > 0.8
