"""A model's hyper-parameter rules live in the model file and are checked before any data is read, through the
model itself (`pyro_dps.model_hyper`): the configuration code does not repeat them."""
import pytest
import torch

from pyro_dps.config import validate_config
from pyro_dps.errors import ConfigError
from pyro_dps.model_hyper import check_model_hyper

USER_MODEL = '''
import pyro
import pyro.distributions as dist
from pyro_dps.errors import ConfigError


def model(ctx, spread: float = 1.0):
    if not spread > 0:
        raise ConfigError(f"spread must be > 0, got {spread!r}")
    pyro.sample("x", dist.Normal(0.0, spread))  # a draw before the data: it must not move the random stream
    ctx.n_train  # the data: the check stops here
    raise AssertionError("never reached without data")
'''


@pytest.mark.parametrize("hyper, message", [({"beta": 2}, r"model\.hyper\.beta must be in \(0, 1\]"),
                                            ({"sigma": 0.0}, r"model\.hyper\.sigma must be > 0"),
                                            ({"sigma": True}, r"model\.hyper\.sigma must be > 0"),
                                            ({"rho_m": -1}, r"model\.hyper\.rho_m must be > 0"),
                                            ({"beta": "auto", "prior_scale": 0}, r"model\.hyper\.prior_scale")])
def test_the_built_in_models_rules_reject_before_any_data(hyper, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"model": {"hyper": hyper}})


def test_a_users_model_file_brings_its_own_rules_and_the_random_stream_is_untouched(tmp_path):
    path = tmp_path / "spread_model.py"
    path.write_text(USER_MODEL)
    with pytest.raises(ConfigError, match=r"model\.hyper\.spread must be > 0, got -1"):
        check_model_hyper(f"{path}:model", {"spread": -1})
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    check_model_hyper(f"{path}:model", {"spread": 2.0})  # passes: stopped at the data
    assert torch.equal(torch.random.get_rng_state(), before)
    check_model_hyper(f"{path}:model", {"unknown": 1})  # a name the model does not take: left to the run's check
