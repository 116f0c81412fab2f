"""The "auto" run settings (pyro_dps/driver/run_length.py): warm-up and thinning in epochs, and the cyclical step size
whose every cycle ends at the step that produces a kept draw."""
import numpy as np
import pytest

from pyro_dps import SamplerConfig
from pyro_dps.driver.run_length import CYCLE_PEAK, MIN_CYCLE_STEPS, MIN_WARMUP_STEPS, resolve_length
from pyro_dps.errors import ConfigError
from pyro_dps.kernels.schedules import Cyclical, make_schedule


def _draw_steps(config, n):
    """0-based schedule index of the step after which each of the first n draws is kept."""
    return [config.warmup + (k + 1) * config.thin - 1 for k in range(n)]


@pytest.mark.parametrize("n_train", [100, 1397, 9000, 50_000])
def test_auto_schedule_ends_a_cycle_at_every_draw(n_train):
    config = resolve_length(SamplerConfig(), n_train)
    epoch = -(-n_train // 128)
    assert config.thin == max(epoch, MIN_CYCLE_STEPS)
    assert config.warmup >= max(MIN_WARMUP_STEPS, 10 * epoch) and config.warmup % config.thin == 0
    schedule = make_schedule(config.step_size)
    one_cycle = np.array([schedule(t) for t in range(config.warmup, config.warmup + config.thin)])
    assert one_cycle[0] == pytest.approx(CYCLE_PEAK)          # a cycle starts right after a draw
    assert one_cycle.argmin() == config.thin - 1               # and is smallest at the draw's step
    assert np.all(np.diff(one_cycle) < 0)
    for t in _draw_steps(config, 5):
        assert schedule(t) == pytest.approx(one_cycle[-1]) and schedule(t) < CYCLE_PEAK / 100


def test_given_warmup_shifts_the_cycles_instead():
    # quality.py's short runs: warm-up 80 and draws every 7 steps; the draws still end cycles
    config = resolve_length(SamplerConfig(warmup=80, thin=7, samples=10), 9000)
    assert config.warmup == 80 and config.step_size["offset"] == 80 % 7
    schedule = make_schedule(config.step_size)
    values = [schedule(t) for t in range(80, 87)]
    assert int(np.argmin(values)) == 6
    assert all(schedule(t) == pytest.approx(min(values)) for t in _draw_steps(config, 10))


def test_explicit_step_size_is_kept():
    for spec in (3e-4, {"kind": "polynomial", "a": 1e-3}):
        config = resolve_length(SamplerConfig(step_size=spec), 1397)
        assert config.step_size == spec


def test_cyclical_offset_and_bad_step_size():
    assert Cyclical(1.0, 4, offset=1)(1) == pytest.approx(1.0) and Cyclical(1.0, 4)(0) == pytest.approx(1.0)
    assert Cyclical(1.0, 4, offset=1)(0) == pytest.approx(Cyclical(1.0, 4)(3))
    with pytest.raises(ConfigError, match="step_size"):
        SamplerConfig(step_size="fast").validate(None)
