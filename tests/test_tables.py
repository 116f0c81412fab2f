"""Feature tables on disk (CSV, Parquet, a Hugging Face dataset) read a gather's rows and nothing more, give
exactly the values pandas reads, label by class name, refuse bad input by name; a small iterable meta set is
stacked once; and a fit on a CSV's rows gives the draws of the same features held in memory."""
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

import pyro_dps as dps
from pyro_dps.data.rows import DatasetRows
from pyro_dps.data.rows import read_iterable
from pyro_dps.data.tables import HFRows, TableRows, hf_rows, table_rows
from pyro_dps.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ANIMALS = np.array(["dog", "cat", "ant", "bee"])


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    """n rows: float32 features a..d (varied magnitudes), an integer feature, a string id, two label columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * np.array([1e-3, 1.0, 1e3, 1e6])
    df = pd.DataFrame(x.astype(np.float32), columns=list("abcd"))
    df["count"] = rng.integers(-50, 50, n)
    df["id"] = [f"r{i}" for i in range(n)]
    df["animal"] = ANIMALS[rng.integers(0, 4, n)]
    df["klass"] = rng.integers(0, 7, n)
    return df


def _gather(dataset, rows) -> np.ndarray:
    return DatasetRows(dataset).gather(torch.tensor(rows)).numpy()


def test_csv_rows_equal_what_pandas_reads_and_a_gather_parses_only_its_lines(tmp_path):
    df = _frame(10_000)
    df.to_csv(tmp_path / "t.csv", index=False)
    dataset, labels = table_rows(tmp_path / "t.csv", "animal")
    assert dataset.columns == ["a", "b", "c", "d", "count", "klass"]  # numeric columns but the label; not "id"
    assert dataset._table.offsets.itemsize == 8 and len(dataset._table.offsets) == 10_000  # O(N) int64 offsets
    assert dataset.rows_read == 0  # the scan checks values but no gather has read a row
    rows = DatasetRows(dataset)
    assert rows.shape == (10_000, 6) and rows.dtype == torch.float32 and dataset.rows_read == 1  # item 0
    want = pd.read_csv(tmp_path / "t.csv")[dataset.columns].to_numpy(np.float32)
    idx = [9_999, 0, 4_321, 17, 4_321, 5_000, 2, 8_888]
    before = dataset.rows_read
    got = rows.gather(torch.tensor(idx))
    assert dataset.rows_read - before == 8
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want[idx])
    assert dataset.classes == ["ant", "bee", "cat", "dog"]  # sorted by name, labels 0..3
    assert labels.dtype == torch.long and labels.tolist() == [dataset.classes.index(a) for a in df["animal"]]
    ints, klass = table_rows(tmp_path / "t.csv", "klass", feature_columns=["d", "a"], dtype=torch.float64)
    assert ints.classes is None and klass.tolist() == df["klass"].tolist()  # integer labels as they are
    assert np.array_equal(_gather(ints, [3, 1]), pd.read_csv(tmp_path / "t.csv")[["d", "a"]].to_numpy()[[3, 1]])
    again = pickle.loads(pickle.dumps(dataset))  # for DataLoader worker processes
    assert torch.equal(torch.stack(again.__getitems__(idx)), got)


def test_csv_quoting_blank_lines_crlf_and_tabs_are_read_as_pandas_reads_them(tmp_path):
    text = 'name,x,y,label\r\n"Smith, J",1.5,-2,b\r\n\r\n"say ""hi""",3e-2,4,a\r\nplain,  5 ,6,b\r\n'
    (tmp_path / "q.csv").write_bytes(text.encode())
    dataset, labels = table_rows(tmp_path / "q.csv", "label")
    assert dataset.columns == ["x", "y"] and dataset.classes == ["a", "b"] and labels.tolist() == [1, 0, 1]
    assert np.array_equal(_gather(dataset, [2, 0, 1]),
                          pd.read_csv(tmp_path / "q.csv")[["x", "y"]].to_numpy(np.float32)[[2, 0, 1]])
    (tmp_path / "t.tsv").write_text("x\tlabel\n1.25\t3\n2.5\t4\n")
    tsv, y = table_rows(tmp_path / "t.tsv", "label")
    assert _gather(tsv, [1, 0]).tolist() == [[2.5], [1.25]] and y.tolist() == [3, 4]


def test_parquet_rows_equal_what_pandas_reads_and_a_gather_reads_only_its_row_groups(tmp_path):
    df = _frame(10_000, seed=1)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "t.parquet", row_group_size=1_000)
    dataset, labels = table_rows(tmp_path / "t.parquet", "animal")
    assert dataset.columns == ["a", "b", "c", "d", "count", "klass"] and dataset.groups_read == 0
    assert dataset.classes == ["ant", "bee", "cat", "dog"]
    assert labels.tolist() == [dataset.classes.index(a) for a in df["animal"]]
    want = pd.read_parquet(tmp_path / "t.parquet")[dataset.columns].to_numpy(np.float32)
    idx = [3_004, 2_995, 3_000, 2_999, 3_001, 2_996, 3_003, 2_997]  # rows of groups 2 and 3
    got = torch.stack(dataset.__getitems__(idx))
    assert dataset.groups_read == 2 and dataset.rows_read == 8
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want[idx])
    assert np.array_equal(torch.stack(dataset.__getitems__([3_500, 3_100])).numpy(), want[[3_500, 3_100]])
    assert dataset.groups_read == 2  # group 3 was kept
    spread = [9_999, 5, 4_444, 9_000]  # groups 9, 0, 4, 9
    assert np.array_equal(_gather(dataset, spread), want[spread])
    assert dataset.groups_read == 2 + 1 + 2  # DatasetRows read item 0 (group 0, kept), then groups 4 and 9
    ints, klass = table_rows(tmp_path / "t.parquet", "klass", feature_columns=["c"])
    assert ints.classes is None and klass.tolist() == df["klass"].tolist()
    assert np.array_equal(_gather(ints, [7, 7_777]), df[["c"]].to_numpy(np.float32)[[7, 7_777]])


def _bad(tmp_path, name: str, text: str, **kw):
    (tmp_path / name).write_text(text)
    return table_rows(tmp_path / name, kw.pop("label", "label"), **kw)


def test_bad_csv_files_raise_data_errors_naming_the_file_line_and_column(tmp_path):
    good = "x,y,label\n1,2,a\n3,4,b\n"
    with pytest.raises(DataError, match=r"m.csv' has no column 'kind' \(its columns: 'x', 'y', 'label'\)"):
        _bad(tmp_path, "m.csv", good, label="kind")
    with pytest.raises(DataError, match=r"f.csv' has no column 'z'"):
        _bad(tmp_path, "f.csv", good, feature_columns=["x", "z"])
    with pytest.raises(DataError, match=r"line 4, column 'y': 'n/a' is not a number"):
        _bad(tmp_path, "v.csv", good + "5,n/a,a\n")
    with pytest.raises(DataError, match=r"line 3, column 'x': '' is not a number"):
        _bad(tmp_path, "e.csv", "x,y,label\n1,2,a\n,4,b\n")
    with pytest.raises(DataError, match=r"column 'y' holds 'oops' on line 2, not numbers"):
        _bad(tmp_path, "w.csv", "x,y,label\n1,oops,a\n", feature_columns=["x", "y"])
    with pytest.raises(DataError, match=r"r.csv' line 3 has 2 fields, but the header has 3 columns"):
        _bad(tmp_path, "r.csv", "x,y,label\n1,2,a\n3,b\n")
    with pytest.raises(DataError, match=r"z.csv' is empty or its first line is blank"):
        _bad(tmp_path, "z.csv", "")
    with pytest.raises(DataError, match=r"h.csv' has a header but no data rows"):
        _bad(tmp_path, "h.csv", "x,y,label\n")
    with pytest.raises(DataError, match=r"n.csv' line 3: a quoted field holds a line break"):
        _bad(tmp_path, "n.csv", 'note,x,label\nok,1,a\n"two\nlines",2,b\n3,4,a\n')
    with pytest.raises(DataError, match=r"line 3, column 'label': the label is empty"):
        _bad(tmp_path, "l.csv", "x,label\n1,a\n2,\n")
    with pytest.raises(DataError, match=r"the label column 'label' is also a feature column"):
        _bad(tmp_path, "s.csv", good, feature_columns=["x", "label"])
    with pytest.raises(DataError, match=r"no numeric column besides the label"):
        _bad(tmp_path, "o.csv", "name,label\nann,a\n")
    with pytest.raises(DataError, match=r"names a column twice"):
        _bad(tmp_path, "d.csv", "x,x,label\n1,2,a\n")
    (tmp_path / "u.csv").write_bytes(b"x,label\n1,a\n\xff2,b\n")
    with pytest.raises(DataError, match=r"u.csv' line 3 cannot be read as CSV \(UTF-8 text\)"):
        table_rows(tmp_path / "u.csv", "label")
    with pytest.raises(DataError, match=r"is neither a CSV"):
        _bad(tmp_path, "t.json", good)
    with pytest.raises(DataError, match=r"missing.csv' is not a file"):
        table_rows(tmp_path / "missing.csv", "label")


def test_bad_parquet_files_and_a_missing_pyarrow_raise_data_errors(tmp_path, monkeypatch):
    table = pa.table({"x": [1.0, 2.0], "note": ["a", "b"], "score": [0.5, 0.25], "label": [0, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet' column 'note' holds string, not numbers"):
        table_rows(tmp_path / "t.parquet", "label", feature_columns=["x", "note"])
    with pytest.raises(DataError, match=r"t.parquet' has no column 'y'"):
        table_rows(tmp_path / "t.parquet", "y")
    with pytest.raises(DataError, match=r"column 'score' holds double: labels must be integers or class names"):
        table_rows(tmp_path / "t.parquet", "score", feature_columns=["x"])
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet' cannot be read as a Parquet file"):
        table_rows(tmp_path / "bad.parquet", "label")
    pq.write_table(pa.table({"x": [1.0, None, 3.0], "label": [0, 1, 0]}), tmp_path / "null.parquet")
    dataset, _ = table_rows(tmp_path / "null.parquet", "label")
    with pytest.raises(DataError, match=r"null.parquet' row 1, column 'x': the value is missing"):
        dataset.__getitems__([2])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"needs pyarrow, which is not installed: pip install pyro-dps\[tables\]"):
        table_rows(tmp_path / "t.parquet", "label")


def _hf():
    return pytest.importorskip("datasets")


def test_a_hugging_face_dataset_in_memory_and_saved_to_disk_gives_the_same_rows(tmp_path):
    hf = _hf()
    rng = np.random.default_rng(2)
    emb, a, b = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=50), rng.integers(0, 9, 50)
    label, name = rng.integers(0, 3, 50), ANIMALS[rng.integers(0, 4, 50)]
    ds = hf.Dataset.from_dict({"emb": emb.tolist(), "a": a, "b": b, "label": label, "name": name.tolist()})
    ds = ds.cast_column("label", hf.ClassLabel(names=["ant", "bee", "cat"]))
    rows, labels = hf_rows(ds, "emb", "label")
    assert isinstance(rows, HFRows) and rows.classes == ["ant", "bee", "cat"] and labels.tolist() == label.tolist()
    idx = [49, 0, 7, 7, 31]
    got = DatasetRows(rows).gather(torch.tensor(idx))
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), emb[idx]) and rows.rows_read == 1 + 5
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded, labels2 = hf_rows(tmp_path / "saved", "emb", "label")
    assert torch.equal(DatasetRows(loaded).gather(torch.tensor(idx)), got) and torch.equal(labels2, labels)
    assert loaded.classes == rows.classes
    stacked, by_name = hf_rows(ds, ["a", "b"], "name")  # scalar columns stacked; string labels as class names
    want = np.stack([a, b], axis=1).astype(np.float32)
    assert np.array_equal(DatasetRows(stacked).gather(torch.tensor(idx)).numpy(), want[idx])
    assert stacked.classes == ["ant", "bee", "cat", "dog"]
    assert by_name.tolist() == [stacked.classes.index(n) for n in name]
    ints, y = hf_rows(hf.Dataset.from_dict({"x": [[1, 2], [3, 4]], "y": [5, 6]}), "x", "y", dtype=torch.float64)
    assert ints.classes is None and y.tolist() == [5, 6]
    assert torch.stack(ints.__getitems__([1])).tolist() == [[3.0, 4.0]]


def test_bad_hugging_face_datasets_raise_data_errors(tmp_path, monkeypatch):
    hf = _hf()
    ds = hf.Dataset.from_dict({"v": [[1.0], [2.0, 3.0]], "s": ["a", "b"], "x": [1.0, 2.0], "y": [0, 1]})
    rows, _ = hf_rows(ds, "v", "y")
    with pytest.raises(DataError, match=r"feature column 'v' .* cannot be read as numbers of one shape"):
        rows.__getitems__([0, 1])
    with pytest.raises(DataError, match=r"column 's' holds .*string.*, not numbers"):
        hf_rows(ds, ["x", "s"], "y")
    with pytest.raises(DataError, match=r"column 'v' holds .*, not numbers"):
        hf_rows(ds, ["x", "v"], "y")  # a list column cannot be stacked with others
    with pytest.raises(DataError, match=r"the Hugging Face dataset has no column 'label'"):
        hf_rows(ds, "x", "label")
    with pytest.raises(DataError, match=r"label column 'x' .* labels must be a ClassLabel, integers or class names"):
        hf_rows(ds, "v", "x")
    with pytest.raises(DataError, match=r"is not a folder written by datasets' save_to_disk"):
        hf_rows(tmp_path / "nothing", "x", "y")
    hf.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataError, match=r"holds several splits \(train, test\): give one"):
        hf_rows(tmp_path / "dict", "x", "y")
    with pytest.raises(DataError, match=r"HFRows needs a datasets.Dataset, got dict"):
        HFRows({"x": [1.0]}, "x", "y")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"pip install pyro-dps\[hf-datasets\]"):
        hf_rows(ds, "x", "y")


class _Stream(IterableDataset):
    """(x, y) items from a generator, as a curated meta set on a remote store would stream."""

    def __init__(self, n: int, bad_at: int | None = None):
        self.n, self.bad_at = n, bad_at

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(self.n):
            yield torch.randn(3 if i != self.bad_at else 4, generator=g), i % 2


def test_an_iterable_meta_set_is_stacked_once_and_refused_beyond_max_rows():
    x, y = read_iterable(_Stream(10))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(x, torch.stack([torch.randn(3, generator=g) for _ in range(10)]))
    assert y.dtype == torch.long and y.tolist() == [0, 1] * 5
    with pytest.raises(DataError, match=r"more than max_rows=5 items: .* give a map-style Dataset"):
        read_iterable(_Stream(10), max_rows=5)
    assert read_iterable(_Stream(5), max_rows=5)[0].shape == (5, 3)
    with pytest.raises(DataError, match=r"item 6 of the iterable dataset has features of shape \(4,\), but item 0 has \(3,\)"):
        read_iterable(_Stream(10, bad_at=6))
    with pytest.raises(DataError, match=r"item 0 of the iterable dataset is not an \(x, y\) pair"):
        read_iterable(iter([torch.zeros(3)]))
    with pytest.raises(DataError, match=r"item 1 .* has y of shape \(\) and dtype torch.float32"):
        read_iterable(iter([(torch.zeros(2), 0), (torch.zeros(2), 0.5)]))
    with pytest.raises(DataError, match="yields no items"):
        read_iterable(_Stream(0))


def test_a_fit_on_a_csv_table_gives_the_draws_of_the_same_tensor_bit_for_bit(tmp_path):
    """Same seed and settings: the CSV's rows read a batch at a time give exactly the in-memory tensor's draws."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g)
    y = (x[:, 0] > 0).long()
    y[:10] = 1 - y[:10]
    x_meta = torch.randn(20, 5, generator=g)
    y_meta = (x_meta[:, 0] > 0).long()
    df = pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(5)])
    df["label"] = np.where(y.numpy() == 1, "yes", "no")
    df.to_csv(tmp_path / "train.csv", index=False)
    dataset, labels = table_rows(tmp_path / "train.csv", "label")
    assert dataset.classes == ["no", "yes"] and torch.equal(labels, y)
    assert torch.equal(DatasetRows(dataset)[:], x)

    def run(features):
        torch.manual_seed(0)
        config = dps.SamplerConfig(chains=1, warmup=40, samples=10, thin=2, batch_size=16, seed=3, progress=False,
                                   snapshots=2)
        problem = dps.Problem(dps.mlp(5, 2, (8,)), features, labels, x_meta, y_meta)
        return dps.fit(dps.load_model("bads"), problem, {"beta": 0.5}, config)

    before = dataset.rows_read
    rows = DatasetRows(dataset)
    a, b = run(DatasetRows(TensorDataset(x))), run(rows)
    assert np.array_equal(a.draws.weights().values, b.draws.weights().values)
    assert all(torch.equal(s, t) for s, t in zip(a.final_theta, b.final_theta, strict=True))
    assert dataset.rows_read - before == rows.loads  # the file parsed the rows asked for, no more
    assert rows.largest_gather < len(y)  # read a batch at a time, never all at once


def test_table_rows_is_a_map_style_dataset_with_batched_fetch(tmp_path):
    (tmp_path / "t.csv").write_text("x,label\n1,0\n2,1\n")
    dataset = TableRows(tmp_path / "t.csv", "label")
    assert len(dataset) == 2 and dataset[1].tolist() == [2.0] and dataset[-2].tolist() == [1.0]
    with pytest.raises(IndexError, match="out of range for 2 rows"):
        dataset.__getitems__([2])
