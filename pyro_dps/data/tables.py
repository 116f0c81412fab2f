"""Feature tables on disk read a minibatch's rows at a time (CSV, Parquet, a Hugging Face dataset).

    dataset, labels = table_rows("train.csv", label_column="label")   # or .parquet; features: numeric columns
    problem = Problem(net, DatasetRows(dataset), labels, x_meta, y_meta)
    dataset, labels = hf_rows("saved/", "embedding", "label")           # a datasets.Dataset or save_to_disk folder

Only labels are kept in memory. A CSV is scanned once (each data line's byte offset, an int64 a row; labels read,
field counts and feature values checked and dropped); a gather seeks to its rows' lines and parses just those
(`rows_read` counts them). A Parquet gather reads the row groups holding its rows (feature columns only) and keeps
the last one (`groups_read` counts reads): a random minibatch reads about a group a row, so write small row groups
(e.g. `row_group_size=1024`). String labels are class names, sorted, labelled 0..K-1 (`dataset.classes`, as
`ImageFolder`); integer labels are kept as they are.
"""
from __future__ import annotations

import csv
import importlib
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pyro_dps.errors import DataError

CHUNK = 4096  # rows whose feature values the CSV scan checks at once
PARQUET_SUFFIXES, CSV_SUFFIXES = (".parquet", ".pq"), (".csv", ".tsv", ".txt")


def _optional(module: str, extra: str) -> Any:
    """An optional dependency, imported; missing, a DataError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DataError(f"reading this needs {module.split('.')[0]}, which is not installed: "
                        f"pip install pyro-dps[{extra}]") from exc


def _index(names: Sequence[str], column: str, where: str) -> int:
    """The position of `column` among `names`, or a DataError listing what there is."""
    if column not in names:
        shown = ", ".join(repr(n) for n in list(names)[:20]) + (", ..." if len(names) > 20 else "")
        raise DataError(f"{where} has no column {column!r} (its columns: {shown})")
    return list(names).index(column)


def _features(names: Sequence[str], label: str, given: Sequence[str] | None, not_numeric: dict[str, str],
              where: str) -> list[str]:
    """The feature columns: `given` (each present and numeric), or every numeric column but the label;
    `not_numeric` says what each column that does not hold numbers holds."""
    _index(names, label, where)
    columns = [n for n in names if n not in not_numeric and n != label] if given is None else list(given)
    if label in columns:
        raise DataError(f"{where}: the label column {label!r} is also a feature column")
    for c in columns:
        _index(names, c, where)
        if c in not_numeric:
            raise DataError(f"{where} column {c!r} holds {not_numeric[c]}, not numbers: features must be numbers")
    if not columns:
        raise DataError(f"{where} has no numeric column besides the label {label!r}")
    return columns


def _named(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(labels, class names): string values as class names, sorted by name, labelled 0..K-1."""
    classes, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(c) for c in classes]


def _floats(fields: list[list[str]], lines: Sequence[int], columns: list[str], path: Path) -> np.ndarray:
    """CSV feature fields (rows x columns) as float64, or a DataError naming the line and column of a bad one."""
    try:
        flat = np.fromiter(map(float, chain.from_iterable(fields)), np.float64, len(fields) * len(columns))
        return flat.reshape(len(fields), len(columns))
    except ValueError:
        for row, line in zip(fields, lines):
            for value, column in zip(row, columns):
                if _number(value) is None:
                    raise DataError(f"{str(path)!r} line {line}, column {column!r}: {value!r} is not a number "
                                    "(every feature value must be one; missing values must be filled)") from None
        raise


def _number(value: str) -> float | None:
    """`value` read as a number as `_floats` reads it (Python's float: correctly rounded), or None."""
    try:
        return float(value)
    except ValueError:
        return None


def _data_lines(f: Any, start: int, offsets: array, lines: array) -> Iterator[str]:
    """The non-blank lines after the header, decoded; records each one's byte offset and line number."""
    pos = start
    for number, raw in enumerate(f, start=2):
        if raw.strip():
            offsets.append(pos)
            lines.append(number)
            yield raw.decode("utf-8")  # a UnicodeDecodeError is reported by the scan, with this line's number
        pos += len(raw)


class _Csv:
    """A CSV file's data lines, found by one scan: byte offsets and line numbers (O(N) ints) and labels."""

    def __init__(self, path: Path, label_column: str, feature_columns: Sequence[str] | None, delimiter: str):
        self.path, self.delimiter, self.rows_read, self.groups_read = path, delimiter, 0, 0
        self.offsets, self.lines = array("q"), array("q")
        with open(path, "rb") as f:
            first = f.readline()
            header = next(csv.reader([first.decode("utf-8-sig")], delimiter=delimiter), []) if first.strip() else []
            if not header:
                raise DataError(f"{str(path)!r} is empty or its first line is blank: a CSV table needs a header "
                                "line of column names")
            if len(set(header)) < len(header):
                raise DataError(f"{str(path)!r} names a column twice in its header: {header}")
            self.header, self.label_index = header, _index(header, label_column, repr(str(path)))
            self._given, self._label = feature_columns, label_column
            codes, seen = self._scan(csv.reader(_data_lines(f, len(first), self.offsets, self.lines),
                                                delimiter=delimiter))
        names, self.classes = list(seen), None  # the distinct labels, first seen first: integers or class names
        if all(re.fullmatch(r"\s*[+-]?\d+\s*", n) for n in names):
            lut = np.array([int(n) for n in names], dtype=np.int64)
        else:
            lut, self.classes = _named(np.array(names, dtype=object))
        self.labels = torch.from_numpy(lut[np.frombuffer(codes, dtype=np.int64)])

    def _scan(self, reader: Iterator[list[str]]) -> tuple[array, dict]:
        """Every data row once: its field count checked, its label coded (first seen first), its features
        checked in chunks of CHUNK rows. Returns (codes, the distinct labels in the order first seen)."""
        codes, seen, chunk, where = array("q"), {}, [], repr(str(self.path))
        try:
            for k, row in enumerate(reader):
                if len(self.offsets) > k + 1:
                    raise DataError(f"{where} line {self.lines[k]}: a quoted field holds a line break, which is "
                                    "not supported (remove line breaks from fields, or save the table as Parquet)")
                if len(row) != len(self.header):
                    raise DataError(f"{where} line {self.lines[k]} has {len(row)} fields, but the header has "
                                    f"{len(self.header)} columns")
                if k == 0:  # the feature columns: given, or those whose first value is a number
                    bad = {h: f"{v!r} on line {self.lines[0]}" for h, v in zip(self.header, row) if _number(v) is None}
                    self.columns = _features(self.header, self._label, self._given, bad, where)
                    self.feature_index = [self.header.index(c) for c in self.columns]
                if not row[self.label_index].strip():
                    raise DataError(f"{where} line {self.lines[k]}, column {self.header[self.label_index]!r}: the "
                                    "label is empty")
                codes.append(seen.setdefault(row[self.label_index], len(seen)))
                chunk.append([row[j] for j in self.feature_index])
                if len(chunk) == CHUNK:
                    _floats(chunk, self.lines[k + 1 - CHUNK:k + 1], self.columns, self.path)
                    chunk = []
        except (csv.Error, UnicodeDecodeError) as exc:
            line = self.lines[-1] if self.lines else 2
            raise DataError(f"{where} line {line} cannot be read as CSV (UTF-8 text): {exc}") from None
        if not self.offsets:
            raise DataError(f"{where} has a header but no data rows")
        if chunk:
            _floats(chunk, self.lines[len(self.lines) - len(chunk):], self.columns, self.path)
        return codes, seen

    def read(self, rows: list[int]) -> np.ndarray:
        """The features of data rows `rows` as float64 (len(rows), n_features): a seek and a parse per row."""
        with open(self.path, "rb") as f:
            text = []
            for r in rows:
                f.seek(self.offsets[r])
                text.append(f.readline().decode("utf-8"))
        self.rows_read += len(rows)
        fields = [[row[j] if j < len(row) else "" for j in self.feature_index]
                  for row in csv.reader(text, delimiter=self.delimiter)]
        return _floats(fields, [self.lines[r] for r in rows], self.columns, self.path)


class _Parquet:
    """A Parquet file's row groups: the labels read once (one column); a read takes the row groups holding the
    asked rows (feature columns only) and keeps the last one, so rows near each other cost one read."""

    def __init__(self, path: Path, label_column: str, feature_columns: Sequence[str] | None):
        pa, pq = _optional("pyarrow", "tables"), _optional("pyarrow.parquet", "tables")
        self.path, self.rows_read, self.groups_read, self._cached, where = path, 0, 0, (-1, None), repr(str(path))
        try:
            self._file = file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{where} cannot be read as a Parquet file: {exc}") from exc
        schema = file.schema_arrow
        bad = {f.name: str(f.type) for f in schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))}
        self.columns = _features(schema.names, label_column, feature_columns, bad, where)
        sizes = [file.metadata.row_group(g).num_rows for g in range(file.metadata.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        if self.starts[-1] == 0:
            raise DataError(f"{where} has no rows")
        self.labels, self.classes = self._labels(file.read(columns=[label_column]).column(0), pa,
                                                 f"{where} column {label_column!r}")

    @staticmethod
    def _labels(column: Any, pa: Any, where: str) -> tuple[torch.Tensor, list[str] | None]:
        if column.null_count:
            raise DataError(f"{where} has {column.null_count} missing labels")
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_integer(kind):
            return torch.from_numpy(column.to_numpy().astype(np.int64)), None
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"{where} holds {column.type}: labels must be integers or class names (strings)")
        codes, names = _named(column.to_numpy(zero_copy_only=False))
        return torch.from_numpy(codes), names

    def _group(self, g: int) -> np.ndarray:
        """Row group `g`'s feature columns as float64 (rows, n_features): the kept one, or read now."""
        if self._cached[0] == g:
            return self._cached[1]
        table = self._handle().read_row_group(g, columns=self.columns)
        self.groups_read += 1
        for c in self.columns:
            nulls = table.column(c).is_null().to_numpy(zero_copy_only=False)
            if nulls.any():
                raise DataError(f"{str(self.path)!r} row {int(self.starts[g]) + int(nulls.argmax())}, column "
                                f"{c!r}: the value is missing (every feature value must be given)")
        block = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in self.columns])
        self._cached = (g, block)
        return block

    def _handle(self) -> Any:
        """The open `ParquetFile` (its metadata parsed once per process, not at every row group read)."""
        if self._file is None:
            self._file = _optional("pyarrow.parquet", "tables").ParquetFile(self.path)
        return self._file

    def __getstate__(self) -> dict:
        """Pickled for a DataLoader worker without the open file, which the worker opens for itself."""
        return {**self.__dict__, "_file": None}

    def read(self, rows: list[int]) -> np.ndarray:
        """The features of rows `rows` as float64 (len(rows), n_features), by row group (the kept one first)."""
        rows_np = np.asarray(rows, dtype=np.int64)
        groups, out = np.searchsorted(self.starts, rows_np, side="right") - 1, np.empty((len(rows), len(self.columns)))
        for g in sorted({int(g) for g in groups}, key=lambda g: g != self._cached[0]):
            mask = groups == g
            out[mask] = self._group(g)[rows_np[mask] - self.starts[g]]
        self.rows_read += len(rows)
        return out


class TableRows(Dataset):
    """The rows of a CSV or Parquet table of features, read when asked for; item i is row i's features, a
    (n_features,) tensor of `dtype`. `labels` (N,) int64, `classes` (names, or None for integer labels),
    `columns` (the feature columns), `rows_read` / `groups_read` (what gathers have read)."""

    def __init__(self, path: str | os.PathLike, label_column: str, feature_columns: Sequence[str] | None = None,
                 dtype: torch.dtype = torch.float32, delimiter: str | None = None):
        self.path, self.dtype = Path(path), dtype
        if not self.path.is_file():
            raise DataError(f"{str(self.path)!r} is not a file")
        suffix = self.path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            self._table: _Csv | _Parquet = _Parquet(self.path, label_column, feature_columns)
        elif suffix in CSV_SUFFIXES:
            sep = delimiter or ("\t" if suffix == ".tsv" else ",")
            self._table = _Csv(self.path, label_column, feature_columns, sep)
        else:
            raise DataError(f"{str(self.path)!r} is neither a CSV ({', '.join(CSV_SUFFIXES)}) nor a Parquet "
                            f"({', '.join(PARQUET_SUFFIXES)}) file")
        self.labels, self.classes, self.columns = self._table.labels, self._table.classes, self._table.columns

    @property
    def rows_read(self) -> int:
        """Rows read by gathers (CSV: lines parsed; Parquet: rows taken from row groups)."""
        return self._table.rows_read

    @property
    def groups_read(self) -> int:
        """Parquet row groups read from the file (the kept one is not read again); 0 for a CSV."""
        return self._table.groups_read

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, rows: list[int]) -> list[torch.Tensor]:
        """Several rows with one pass over the file (torch's batched-fetch protocol)."""
        n = len(self)
        if any(not -n <= r < n for r in rows):
            raise IndexError(f"a row of {list(rows)[:8]} is out of range for {n} rows")
        x = torch.from_numpy(self._table.read([r % n for r in rows])).to(self.dtype)
        return list(x.unbind(0))


def table_rows(path: str | os.PathLike, label_column: str, feature_columns: Sequence[str] | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[TableRows, torch.Tensor]:
    """(the `TableRows` of a .csv or .parquet file, its labels (N,) int64). Features: `feature_columns`, or
    every numeric column but the label. Only the labels are read here (a CSV is also checked, see above)."""
    dataset = TableRows(path, label_column, feature_columns, dtype)
    return dataset, dataset.labels


class HFRows(Dataset):
    """Rows of a Hugging Face `datasets.Dataset`: one column of fixed-length lists/arrays, or numeric scalar
    columns stacked; a gather is one `dataset[rows]` call in numpy format (Arrow reads just those rows).
    `labels` (N,) int64 and `classes` (a ClassLabel's names, sorted string labels, or None for integers)."""

    def __init__(self, dataset: Any, feature_columns: str | Sequence[str], label_column: str,
                 dtype: torch.dtype = torch.float32):
        hf = _optional("datasets", "hf-datasets")
        if not isinstance(dataset, hf.Dataset):
            raise DataError(f"HFRows needs a datasets.Dataset, got {type(dataset).__name__}")
        given = [feature_columns] if isinstance(feature_columns, str) else list(feature_columns)
        numbers = {c for c, f in dataset.features.items()
                   if isinstance(f, hf.Value) and f.dtype.startswith(("int", "uint", "float"))}
        one_array = len(given) == 1 and not isinstance(dataset.features.get(given[0]), (hf.Value, type(None)))
        bad = {c: str(f) for c, f in dataset.features.items() if c not in numbers and not (one_array and c == given[0])}
        self.columns = _features(dataset.column_names, label_column, given, bad, "the Hugging Face dataset")
        self.stacked, self.dtype, self.rows_read = not one_array, dtype, 0
        self.data = dataset.with_format("numpy", columns=self.columns, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        self.labels, self.classes = _hf_labels(dataset, label_column, hf)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, rows: list[int]) -> list[torch.Tensor]:
        """Several rows with one `dataset[rows]` call (torch's batched-fetch protocol)."""
        try:
            batch = self.data[[int(r) for r in rows]]
            x = np.stack([batch[c] for c in self.columns], axis=1) if self.stacked else batch[self.columns[0]]
            if x.dtype == object:
                raise ValueError("rows of different shapes")
            out = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
        except (ValueError, TypeError) as exc:
            raise DataError(f"feature column {self.columns[0]!r} of the Hugging Face dataset cannot be read as "
                            f"numbers of one shape in rows {list(rows)[:8]}: {exc}") from exc
        self.rows_read += len(rows)
        return list(out.unbind(0))


def _hf_labels(dataset: Any, column: str, hf: Any) -> tuple[torch.Tensor, list[str] | None]:
    """A label column: a ClassLabel's indices (with its names), integers as they are, or strings as class names."""
    feature = dataset.features[column]
    values = np.asarray(dataset.with_format("numpy", columns=[column])[column])
    where = f"label column {column!r} of the Hugging Face dataset"
    if isinstance(feature, hf.ClassLabel):
        if values.size and values.min() < 0:
            raise DataError(f"{where} has missing labels (-1)")
        return torch.from_numpy(values.astype(np.int64)), list(feature.names)
    if isinstance(feature, hf.Value) and feature.dtype.startswith(("int", "uint")):
        return torch.from_numpy(values.astype(np.int64)), None
    if isinstance(feature, hf.Value) and feature.dtype in ("string", "large_string"):
        if any(v is None for v in values.tolist()):
            raise DataError(f"{where} has missing labels")
        codes, names = _named(values)
        return torch.from_numpy(codes), names
    raise DataError(f"{where} holds {feature}: labels must be a ClassLabel, integers or class names")


def hf_rows(dataset_or_path: Any, feature_columns: str | Sequence[str], label_column: str,
            dtype: torch.dtype = torch.float32) -> tuple[HFRows, torch.Tensor]:
    """(the `HFRows` of a `datasets.Dataset` or of a folder written by its `save_to_disk`, its labels (N,) int64).
    A folder is opened with `datasets.load_from_disk` (memory-mapped Arrow files; nothing is downloaded)."""
    hf = _optional("datasets", "hf-datasets")
    dataset = dataset_or_path
    if isinstance(dataset_or_path, (str, os.PathLike)):
        path = Path(dataset_or_path)
        try:
            dataset = hf.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(f"{str(path)!r} is not a folder written by datasets' save_to_disk: {exc}") from exc
        if isinstance(dataset, hf.DatasetDict):
            raise DataError(f"{str(path)!r} holds several splits ({', '.join(dataset)}): give one, e.g. "
                            f"hf_rows(datasets.load_from_disk(path)[{next(iter(dataset))!r}], ...)")
    rows = HFRows(dataset, feature_columns, label_column, dtype)
    return rows, rows.labels
