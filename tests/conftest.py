from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # One thread: the suite's networks are small, and on a shared 2-core machine two threads per
    # process make them much slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# A small digits run (N_t = 197, 4 chains x 12 draws, a 30-step mixing baseline), written by run_scenario
# (report.html included); the report and notebook tests share it, built once per session. thin = "auto"
# (one epoch: 4 steps) so that the readers of a run directory meet a resolved "auto" run length.
SMALL_RUN = {"name": "small-run", "data": {"test_per_class": 150, "meta_per_class": 10},
             "network": {"hidden": [32]},
             "sampler": {"chains": 4, "warmup": 100, "samples": 12, "thin": "auto", "snapshots": 2, "batch_size": 64},
             "baselines": {"mixing": {"lr": 1e-3, "optimizer": "adam", "steps": 30}}}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    from pyro_dps.config import validate_config
    from pyro_dps.scenario import run_scenario

    out = tmp_path_factory.getbasetemp() / "pyro-dps-small-run"
    run_scenario(validate_config(SMALL_RUN), out, progress=False, echo=lambda *a: None)
    return out
