"""Training batches read ahead by a DataLoader with worker processes (`DatasetRows(dataset, workers=k)`): the
loader's batches are the ones the chain asks for, in order, so the draws are the same for any number of workers
and the weights stay aligned with their rows; a run that resumes from a checkpoint continues the same order."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import pyro_dps as dps
from pyro_dps.data import DatasetRows
from pyro_dps.data.prefetch import LoaderFeed, read_ahead
from pyro_dps.data.batches import MinibatchSampler
from pyro_dps.errors import DataError


class Counted(Dataset):
    """Rows of a tensor, read one item at a time; `reads` counts the items this process read (workers read in
    their own copies, so the parent's count stays at what it read itself)."""

    def __init__(self, x, stop_after=None):
        self.x, self.reads, self.stop_after = x, 0, stop_after

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.stop_after is not None and self.reads >= self.stop_after:
            raise Stop  # the run is interrupted here
        self.reads += 1
        return self.x[i], 0


class Stop(Exception):
    pass


def _data(seed=0, n=160):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] > 0).long()
    y[:16] = 1 - y[:16]  # the first 16 rows carry the wrong label
    x_meta = torch.randn(30, 5, generator=g)
    return x, y, x_meta, (x_meta[:, 0] > 0).long()


def _fit(features, y, x_meta, y_meta, checkpoint_every=0, **options):
    torch.manual_seed(0)
    problem = dps.Problem(dps.mlp(5, 2, (8,)), features, y, x_meta, y_meta)
    config = dps.SamplerConfig(chains=2, warmup=100, samples=20, thin=2, batch_size=16, seed=4, progress=False,
                               checkpoint_every=checkpoint_every)
    return dps.fit(dps.load_model("bads"), problem, {"beta": 0.5}, config, **options)


def test_the_loader_yields_the_batches_the_sampler_will_draw_in_order():
    x = torch.arange(50.0).reshape(25, 2)
    rows = DatasetRows(Counted(x), workers=2)
    sampler = MinibatchSampler(25, 4, torch.Generator().manual_seed(1), torch.device("cpu"))
    with read_ahead(rows, sampler) as feed:
        assert isinstance(feed, LoaderFeed)
        for _ in range(20):  # 3 epochs: new permutations are drawn by both copies alike
            idx = sampler()
            assert torch.equal(rows.gather(idx), x[idx])
        assert feed.taken == 20
        other = torch.tensor([0, 1])  # not the sampler's next batch: read directly, the feed kept for the next
        assert torch.equal(rows.gather(other), x[other]) and feed.taken == 20
        idx = sampler()
        assert torch.equal(rows.gather(idx), x[idx]) and feed.taken == 21
    assert rows._counter.feed is None and feed.iterator is None  # workers stopped at exit


def test_any_number_of_workers_gives_the_same_draws_and_the_weights_follow_the_rows():
    """workers = 0 (the loader in this process), 1 and 2 give bit-identical draws; the parent process reads
    almost nothing itself when workers run, and the mislabelled rows get lower weights."""
    x, y, x_meta, y_meta = _data()
    runs, parent_reads = {}, {}
    for workers in (0, 1, 2):
        dataset = Counted(x)
        runs[workers] = _fit(DatasetRows(dataset, workers=workers), y, x_meta, y_meta)
        parent_reads[workers] = dataset.reads
    w0 = runs[0].draws.weights().values
    for workers in (1, 2):
        assert np.array_equal(w0, runs[workers].draws.weights().values)
        assert all(torch.equal(a, b) for a, b in zip(runs[0].final_theta, runs[workers].final_theta, strict=True))
    steps = 2 * (100 + 40)
    assert parent_reads[0] >= steps * 16  # in-process loader: this process read every batch
    assert parent_reads[2] < 100  # set-up probes only: the steps' batches were read by the workers
    mean = runs[2].weight_summary()["mean"]
    assert mean[:16].mean() < mean[16:].mean() - 0.1


def test_read_ahead_draws_differ_from_direct_reads_only_in_batch_order():
    """Without `workers` the chain's own generator orders the batches (the in-memory path's draws); with it an
    independent one does, so the draws differ but the run is as good (the same wrong rows found)."""
    x, y, x_meta, y_meta = _data(1)
    direct = _fit(DatasetRows(Counted(x)), y, x_meta, y_meta)
    memory = _fit(x, y, x_meta, y_meta)
    ahead = _fit(DatasetRows(Counted(x), workers=1), y, x_meta, y_meta)
    assert np.array_equal(direct.draws.weights().values, memory.draws.weights().values)
    assert not np.array_equal(direct.draws.weights().values, ahead.draws.weights().values)
    for run in (direct, ahead):
        mean = run.weight_summary()["mean"]
        assert mean[:16].mean() < mean[16:].mean() - 0.1


def test_a_resumed_run_reads_ahead_in_the_order_it_left(tmp_path):
    """Interrupted after a checkpoint and resumed, a read-ahead run gives the uninterrupted run's draws."""
    x, y, x_meta, y_meta = _data(2)
    full = _fit(DatasetRows(Counted(x), workers=1), y, x_meta, y_meta)
    ckpt = tmp_path / "run.safetensors"
    with pytest.raises(Stop):  # in chain 2 (each chain reads 140 batches of 16)
        _fit(DatasetRows(Counted(x, stop_after=3000), workers=0), y, x_meta, y_meta, checkpoint=ckpt,
             checkpoint_every=40)
    assert ckpt.exists()
    again = Counted(x)
    resumed = _fit(DatasetRows(again, workers=0), y, x_meta, y_meta, checkpoint=ckpt, checkpoint_every=40,
                   resume=True)
    assert again.reads < 2 * 140 * 16 - 140 * 16 // 2  # it did not start over: chain 1 was not read again
    assert np.array_equal(full.draws.weights().values, resumed.draws.weights().values)


def test_bad_loader_settings_say_what_is_wrong():
    x = torch.zeros(4, 2)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(DataError, match="workers must be an integer >= 0"):
            DatasetRows(Counted(x), workers=bad)
    with pytest.raises(DataError, match="prefetch_factor must be an integer >= 1"):
        DatasetRows(Counted(x), workers=1, prefetch_factor=0)


def test_an_iterable_meta_set_is_read_once_into_the_problem():
    """A meta set given as an IterableDataset of (x, y) is stacked once; a fit on it equals a fit on the tensors."""
    from torch.utils.data import IterableDataset

    x, y, x_meta, y_meta = _data(3)

    class Stream(IterableDataset):
        passes = 0

        def __iter__(self):
            Stream.passes += 1
            return iter(zip(x_meta, y_meta))

    problem = dps.Problem(dps.mlp(5, 2, (8,)), x, y, Stream())
    assert Stream.passes == 1 and torch.equal(problem.x_meta, x_meta) and torch.equal(problem.y_meta, y_meta)
    a, b = _fit(x, y, Stream(), None), _fit(x, y, x_meta, y_meta)
    assert np.array_equal(a.draws.weights().values, b.draws.weights().values)
    with pytest.raises(DataError, match="y_meta must be None"):
        dps.Problem(dps.mlp(5, 2, (8,)), x, y, Stream(), y_meta)


def test_read_ahead_follows_a_sharded_batch_order():
    """With D_t in 2 shards (one process owning both), the loader copies the sharded sampler: workers 0 and 1
    give the same draws, and the mislabelled rows (in both shards) still get lower weights."""
    x, y, x_meta, y_meta = _data(4)
    y[80:96] = 1 - y[80:96]  # wrong labels in the second shard too
    wrong = np.zeros(len(y), bool)
    wrong[:16] = wrong[80:96] = True

    def run(workers):
        torch.manual_seed(0)
        problem = dps.Problem(dps.mlp(5, 2, (8,)), DatasetRows(Counted(x), workers=workers), y, x_meta, y_meta)
        config = dps.SamplerConfig(chains=1, warmup=100, samples=20, thin=2, batch_size=16, shards=2, seed=4,
                                   progress=False)
        return dps.fit(dps.load_model("bads"), problem, {"beta": 0.8}, config)

    a, b = run(0), run(1)
    assert np.array_equal(a.draws.weights().values, b.draws.weights().values)
    mean = b.weight_summary()["mean"]
    assert mean[wrong].mean() < mean[~wrong].mean() - 0.1
