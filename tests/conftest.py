import logging
from pathlib import Path

import pyro
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


def _raise_handled(self, record):
    raise  # the exception the handler's emit is handling


@pytest.fixture(autouse=True, scope="session")
def _logging_errors_fail():
    """A log handler that cannot emit a record raises, instead of printing "--- Logging error ---" and going
    on: Pyro's MCMC progress bar hid a kernel whose `logging()` it could not show that way."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.Handler, "handleError", _raise_handled)
        yield


@pytest.fixture(scope="module")
def progress_bars_on():
    """Pyro's MCMC progress bars drawn even under CI: Pyro disables them when $CI or $PYTEST_XDIST_WORKER is
    set, and a disabled bar drops the kernel's `logging()` unread, so a result it cannot show goes unnoticed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CI", raising=False)
        patch.delenv("PYTEST_XDIST_WORKER", raising=False)
        yield


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


@pytest.fixture(scope="module")
def one_thread_no_validation():
    """The steps are tiny tensor ops dominated by Python overhead: one intra-op thread avoids
    oversubscribing the 2 cores (under load, 2 threads made a step 10x slower), and skipping Pyro's
    argument validation saves about 20% of a trace. Both are restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pyro.validation_enabled(False):
        yield
    torch.set_num_threads(threads)
