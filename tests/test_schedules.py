import math

import pytest

from pyro_dps.errors import ConfigError
from pyro_dps.kernels.schedules import Constant, Cyclical, Polynomial, make_schedule


def test_schedules_follow_their_formulas():
    assert Constant(0.1)(1000) == 0.1
    p = Polynomial(a=0.5, b=10.0, gamma=0.55)
    assert p(0) == pytest.approx(0.5 * 10 ** -0.55) and p(90) == pytest.approx(0.5 * 100 ** -0.55)
    c = Cyclical(eps0=1.0, cycle_length=100)
    assert c(0) == 1.0 and c(50) == pytest.approx(0.5) and c(100) == 1.0 and c(99) < 0.01


def test_make_schedule_from_config():
    assert make_schedule(1e-3)(5) == 1e-3
    assert make_schedule({"kind": "polynomial", "a": 1.0, "gamma": 1.0})(3) == pytest.approx(0.25)
    for bad in (0.0, -1.0, {"kind": "warp"}, {"kind": "polynomial"}, "fast"):
        with pytest.raises(ConfigError):
            make_schedule(bad)
    assert math.isclose(make_schedule(lambda t: 2.0 / (t + 1))(1), 1.0)
