"""Property-based tests of the scenario parser: any table either validates to a complete, runnable
configuration or raises ConfigError naming a key; it never fails with another exception."""
import tomllib

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_dps.config import DEMO, validate_config
from pyro_dps import SamplerConfig
from pyro_dps.errors import ConfigError

values = st.one_of(st.integers(-5, 10_000), st.floats(-10, 10, allow_nan=False), st.text(max_size=8),
                   st.booleans(), st.lists(st.integers(1, 64), max_size=3))
known_sections = {
    "data": ["source", "seed", "noise", "noise_rate", "meta_per_class", "test_per_class", "bogus"],
    "network": ["kind", "hidden", "depth", "width", "bogus"],
    "sampler": ["kernel", "step_size", "temperature", "chains", "warmup", "samples", "thin", "batch_size", "bogus"],
}
sections = st.fixed_dictionaries({}, optional={
    name: st.dictionaries(st.sampled_from(keys), values, max_size=4) for name, keys in known_sections.items()})


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(sections)
def test_parser_accepts_or_names_the_problem(table):
    try:
        config = validate_config(table)
    except ConfigError as exc:
        message = str(exc)
        assert any(key in message for keys in known_sections.values() for key in keys) or "table" in message
        return
    for section, entries in table.items():
        for key, value in entries.items():
            assert config[section][key] == value  # what the user set is what runs
    assert set(config) == set(DEMO)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(0, 5000), st.integers(1, 500), st.integers(1, 100),
       st.floats(0, 5, allow_nan=False))
def test_valid_sampler_tables_round_trip_through_toml(chains, warmup, samples, thin, temperature):
    table = {"sampler": {"chains": chains, "warmup": warmup, "samples": samples, "thin": thin,
                         "temperature": temperature}}
    config = validate_config(tomllib.loads(tomli_w.dumps(table)))
    sampler = SamplerConfig(**config["sampler"])
    assert (sampler.chains, sampler.warmup, sampler.samples, sampler.thin) == (chains, warmup, samples, thin)
