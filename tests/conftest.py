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
