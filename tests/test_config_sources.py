"""[data] sources for the files users have (image folders, .npy, CSV tables, saved Hugging Face data sets), the
binary-imbalance protocol's classes by name or index, and a meta set that lacks classes: built from tiny files
written here, checked against the files' contents, and run end to end through the CLI."""
import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_dps.cli import main
from pyro_dps.config import validate_config
from pyro_dps.data import disk_splits
from pyro_dps.errors import ConfigError, DataError, MetaCoverageWarning
from pyro_dps.spec import build_data

CLASSES = ("cat", "dog", "fox")


def write_images(root: Path, per_class: dict[str, int], seed: int, size=(5, 4)) -> dict[str, list[np.ndarray]]:
    """root/<class>/<i>.png of random RGB pixels; returns each class's images (files sorted by name)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        out[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
            out[name].append(pixels)
    return out


def as_chw(pixels: np.ndarray) -> torch.Tensor:
    """uint8 H x W x C pixels as the float (C, H, W) in [0, 1] that an image folder row holds."""
    return torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """train (6 of each class), meta (2 cats, 2 dogs: no fox), test (3 of each class)."""
    root = tmp_path_factory.mktemp("images")
    images = {"train": write_images(root / "train", {c: 6 for c in CLASSES}, 0),
              "meta": write_images(root / "meta", {"cat": 2, "dog": 2}, 1),
              "test": write_images(root / "test", {c: 3 for c in CLASSES}, 2)}
    spec = {"source": "image_folder", **{s: str(root / s) for s in ("train", "meta", "test")}}
    return {"root": root, "images": images, "spec": spec}


def expected(images: dict[str, list[np.ndarray]], classes=CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows and labels an image folder gives: classes in name order, files in name order."""
    x = [as_chw(p) for c in classes for p in images.get(c, [])]
    y = [classes.index(c) for c in classes for _ in images.get(c, [])]
    return torch.stack(x), torch.tensor(y)


def test_image_folder_rows_are_the_files_and_a_missing_meta_class_is_warned_and_marked(folders):
    with pytest.warns(MetaCoverageWarning, match=r"no example of classes \['fox'\]: 6 of the 18 training"):
        data = build_data(folders["spec"])
    for split in ("train", "meta", "test"):
        x, y = expected(folders["images"][split])
        assert torch.equal(getattr(data, f"x_{split}"), x) and torch.equal(getattr(data, f"y_{split}"), y)
    assert data.num_classes == 3 and data.clean is None and data.y_train_true is None  # the files' own labels
    assert data.groups["class_without_meta"].tolist() == [0] * 12 + [1] * 6  # the foxes: kept, and marked
    with pytest.warns(MetaCoverageWarning):
        gray = build_data({**folders["spec"], "image_mode": "L", "n_train": 5, "n_test": 4})
    assert gray.feature_shape == (1, 5, 4) and (gray.n_train, gray.n_test) == (5, 4)


def test_synthetic_noise_on_own_folder_sets_the_ground_truth(folders):
    with pytest.warns(MetaCoverageWarning):
        data = build_data({**folders["spec"], "noise": "symmetric", "noise_rate": 0.5, "seed": 3})
    _, y = expected(folders["images"]["train"])
    assert torch.equal(data.y_train_true, y) and torch.equal(data.clean, data.y_train == y)
    assert 0 < int((~data.clean).sum()) < data.n_train
    with pytest.raises(ConfigError, match="data.noise = 'symmetric' needs data.noise_rate"):
        build_data({**folders["spec"], "noise": "symmetric"})


def test_balancing_by_name_and_by_index_give_the_same_splits(folders):
    spec = {**folders["spec"], "protocol": "binary_imbalance", "n_minor": 2, "n_major": 5, "seed": 4}
    with pytest.warns(MetaCoverageWarning, match=r"no example of classes \['fox'\]: 2 of the 7 training examples"):
        by_name = build_data({**spec, "minority": "fox", "majority": "cat"})
        by_index = build_data({**spec, "minority": 2, "majority": 0})
    for field in ("x_train", "y_train", "x_meta", "y_meta", "x_test", "y_test"):
        assert torch.equal(getattr(by_name, field), getattr(by_index, field)), field
    assert by_name.name == "image_folder-foxvcat" and by_name.num_classes == 2
    assert by_name.y_train.tolist().count(0) == 2 and by_name.y_train.tolist().count(1) == 5
    assert by_name.y_meta.tolist() == [1, 1]  # the meta set has no fox: warned, not refused
    assert by_name.groups["class_without_meta"].sum() == 2
    with pytest.raises(ConfigError, match=r"data.minority = 'kat' is not a class name; the classes are "
                                          r"\['cat', 'dog', 'fox'\]"):
        build_data({**spec, "minority": "kat", "majority": "cat"})
    with pytest.raises(ConfigError, match="data.majority = 3 is not a class index"):
        build_data({**spec, "minority": "fox", "majority": 3})
    with pytest.raises(DataError, match="data.n_major = 9 exceeds the 6 training examples of class 'cat'"):
        build_data({**spec, "minority": "fox", "majority": "cat", "n_major": 9})


def test_a_class_the_train_folder_lacks_is_an_error_naming_it(tmp_path, folders):
    write_images(tmp_path / "meta", {"cat": 1, "owl": 1}, 5)
    with pytest.raises(DataError, match=r"data.meta has classes \['owl'\] that data.train lacks"):
        build_data({**folders["spec"], "meta": str(tmp_path / "meta")})
    write_images(tmp_path / "big", {"cat": 1, "dog": 1}, 6, size=(6, 4))
    with pytest.raises(DataError, match=r"data.meta has rows of shape \(3, 6, 4\) but data.train has \(3, 5, 4\)"):
        build_data({**folders["spec"], "meta": str(tmp_path / "big")})


def test_missing_paths_and_keys_are_named_before_anything_is_read(folders, monkeypatch):
    monkeypatch.setattr(disk_splits, "_open", lambda *a: pytest.fail("opened a file"))
    with pytest.raises(ConfigError, match="data.test = '/no/such/folder' does not exist"):
        build_data({**folders["spec"], "test": "/no/such/folder"})
    with pytest.raises(ConfigError, match="data.meta = .* is not a directory"):
        build_data({**folders["spec"], "meta": __file__})
    for table, needle in [({"source": "npy", "train": "a.npy"}, "data.train_labels is required"),
                          ({**folders["spec"], "test_per_class": 3}, "data.test_per_class is not used by"),
                          ({**folders["spec"], "minority": "cat"}, "data.minority is not used by .* 'noisy'"),
                          ({**folders["spec"], "protocol": "binary_imbalance"}, "data.minority is required"),
                          ({**folders["spec"], "image_mode": "CMYK"}, "data.image_mode must be"),
                          ({"source": "npz", "path": "m.npz", "protocol": "binary_imbalance"},
                           "data.minority is required"),
                          ({"source": "digits", "protocol": "noisy"}, "not a protocol of data.source = 'digits'"),
                          ({"source": "mnist_4v9", "path": "m.npz", "protocol": "noisy"}, "not a protocol"),
                          ({"source": "folder"}, "data.source must be one of"),
                          ({"source": "hf_dataset", "train": "t", "meta": "m", "test": "t", "label_column": "y"},
                           "data.feature_columns is required")]:
        with pytest.raises(ConfigError, match=needle):
            validate_config({"data": table})


def write_npy(root: Path, rows: dict[str, int], seed: int = 0) -> dict[str, str]:
    """train/meta/test features (rows x 2 x 3 float32) and labels (3 classes) as .npy files."""
    rng = np.random.default_rng(seed)
    spec = {"source": "npy"}
    for split, n in rows.items():
        np.save(root / f"{split}.npy", rng.normal(size=(n, 2, 3)).astype(np.float32))
        np.save(root / f"{split}_y.npy", np.arange(n) % 3)
        spec.update({split: str(root / f"{split}.npy"), f"{split}_labels": str(root / f"{split}_y.npy")})
    return spec


def test_npy_rows_are_the_arrays_read_in_chunks(tmp_path, monkeypatch):
    spec = write_npy(tmp_path, {"train": 11, "meta": 6, "test": 5})
    monkeypatch.setattr(disk_splits, "CHUNK_ROWS", 4)  # three chunks for D_t
    data = build_data(spec)
    for split in ("train", "meta", "test"):
        assert torch.equal(getattr(data, f"x_{split}"), torch.from_numpy(np.load(spec[split])))
        assert torch.equal(getattr(data, f"y_{split}"), torch.from_numpy(np.load(spec[f"{split}_labels"])))
    balanced = build_data({**spec, "protocol": "binary_imbalance", "minority": "2", "majority": 0, "n_minor": 1})
    assert balanced.y_train.tolist().count(0) == 1 and balanced.name == "npy-2v0"
    monkeypatch.setattr(disk_splits, "MAX_IN_MEMORY_BYTES", 200)
    with pytest.raises(ConfigError, match=r"more than a config run reads into memory .* \(pyro_dps.data.DatasetRows\)"):
        build_data(spec)


def test_npy_labels_that_do_not_fit_are_errors(tmp_path):
    spec = write_npy(tmp_path, {"train": 9, "meta": 6, "test": 3})
    np.save(tmp_path / "short.npy", np.zeros(5, np.int64))
    with pytest.raises(DataError, match="data.meta_labels has 5 labels but its features have 6 rows"):
        build_data({**spec, "meta_labels": str(tmp_path / "short.npy")})
    np.save(tmp_path / "float.npy", np.zeros(6, np.float32))
    with pytest.raises(DataError, match="data.meta_labels = .* must hold a 1-D array of integer labels"):
        build_data({**spec, "meta_labels": str(tmp_path / "float.npy")})
    np.save(tmp_path / "objects.npy", np.array([object()] * 6), allow_pickle=True)
    with pytest.raises(DataError, match="data.meta_labels = .* cannot be read as a .npy array"):
        build_data({**spec, "meta_labels": str(tmp_path / "objects.npy")})  # never unpickled


def write_csv(path: Path, rows: list[tuple[float, float, str]]) -> None:
    """A CSV of two feature columns and a class-name label."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "kind"])
        writer.writerows(rows)


def test_table_rows_are_the_csv_values_and_classes_by_name(tmp_path):
    rng = np.random.default_rng(0)
    tables = {}
    for split, n in (("train", 12), ("meta", 4), ("test", 6)):
        rows = [(round(float(a), 3), round(float(b), 3), ("ham", "spam")[i % 2])
                for i, (a, b) in enumerate(rng.normal(size=(n, 2)))]
        write_csv(tmp_path / f"{split}.csv", rows)
        tables[split] = rows
    spec = {"source": "table", "label_column": "kind", **{s: str(tmp_path / f"{s}.csv") for s in tables}}
    data = build_data(spec)
    for split, rows in tables.items():
        assert torch.equal(getattr(data, f"x_{split}"), torch.tensor([r[:2] for r in rows], dtype=torch.float32))
        assert getattr(data, f"y_{split}").tolist() == [("ham", "spam").index(r[2]) for r in rows]
    only_a = build_data({**spec, "feature_columns": ["a"]})
    assert only_a.feature_shape == (1,)
    spec = {**spec, "protocol": "binary_imbalance", "n_minor": 2}
    by_name = build_data({**spec, "minority": "spam", "majority": "ham"})
    by_index = build_data({**spec, "minority": 1, "majority": 0})
    assert torch.equal(by_name.x_train, by_index.x_train) and torch.equal(by_name.y_train, by_index.y_train)
    with pytest.raises(DataError, match="has no column 'label'"):
        build_data({**spec, "label_column": "label", "minority": 1, "majority": 0})


def test_saved_hf_dataset_rows_are_the_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"x": datasets.Sequence(datasets.Value("float32"), length=3), "y": names})
    rng = np.random.default_rng(1)
    columns = {}
    for split, n in (("train", 8), ("meta", 4), ("test", 4)):
        columns[split] = {"x": rng.normal(size=(n, 3)).astype(np.float32).tolist(), "y": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(columns[split], features=features).save_to_disk(str(tmp_path / split))
    spec = {"source": "hf_dataset", "label_column": "y", "feature_columns": ["x"],
            **{s: str(tmp_path / s) for s in columns}}
    data = build_data({**spec, "protocol": "binary_imbalance", "minority": "pos", "majority": "neg"})
    assert data.name == "hf_dataset-posvneg"
    data = build_data(spec)
    for split, cols in columns.items():
        assert torch.equal(getattr(data, f"x_{split}"), torch.tensor(cols["x"]))
        assert getattr(data, f"y_{split}").tolist() == cols["y"]


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory) -> dict[str, Path]:
    """Tiny MNIST-format and CIFAR-format npz files (10 classes, 30 train images each)."""
    root = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(10), 30).astype(np.uint8)
    np.savez(root / "mnist.npz", x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_test=y[::6])
    np.savez(root / "cifar.npz", x_train=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), y_test=y[::6])
    return {"mnist": root / "mnist.npz", "cifar": root / "cifar.npz"}


def same_splits(a, b) -> bool:
    """Every tensor of two DataSplits equal."""
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x_train", "y_train", "x_meta", "y_meta",
                                                                     "x_test", "y_test"))


def test_mnist_4v9_keeps_its_classes_and_takes_digit_names(image_npz):
    spec = {"source": "mnist_4v9", "path": str(image_npz["mnist"]), "n_major": 20, "n_minor": 3, "meta_per_class": 4}
    default = build_data(spec)
    assert default.name == "mnist-4v9" and (default.n_train, default.n_meta) == (23, 8)
    assert same_splits(default, build_data({**spec, "minority": "4", "majority": "9"}))
    assert same_splits(default, build_data({**spec, "protocol": "binary_imbalance", "minority": 4, "majority": 9}))
    other = build_data({**spec, "minority": "1", "majority": 7})
    assert other.name == "mnist-1v7" and not torch.equal(other.x_train, default.x_train)
    with pytest.raises(ConfigError, match=r"data.minority = 'four' is not a class name; the classes are \['0'"):
        build_data({**spec, "minority": "four"})
    npz = build_data({"source": "npz", "path": str(image_npz["mnist"]), "protocol": "binary_imbalance",
                      "minority": "4", "majority": "9", "n_major": 20, "n_minor": 3, "meta_per_class": 4})
    assert same_splits(default, npz)


def test_cifar10_balancing_by_class_name(image_npz):
    spec = {"source": "cifar10", "path": str(image_npz["cifar"]), "protocol": "binary_imbalance", "n_major": 20,
            "n_minor": 2, "meta_per_class": 3}
    by_name = build_data({**spec, "minority": "cat", "majority": "dog"})
    assert by_name.name == "cifar10-catvdog" and by_name.feature_shape == (3, 32, 32)
    assert same_splits(by_name, build_data({**spec, "minority": 3, "majority": 5}))
    with pytest.raises(ConfigError, match=r"'kitten' is not a class name; the classes are \['airplane', "):
        build_data({**spec, "minority": "kitten", "majority": "dog"})


TINY_RUN = """name = "tiny-folder"
[data]
source = "image_folder"
train = "{root}/train"
meta = "{root}/meta"
test = "{root}/test"
noise = "symmetric"
noise_rate = 0.3
[network]
hidden = [8]
[sampler]
kernel = "sgld"
step_size = 1e-4
local_step_size = 0.05
temperature = 0.01
chains = 1
warmup = 10
samples = 4
thin = 1
snapshots = 1
batch_size = 8
[baselines]
"""


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: its modification time and bytes."""
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_runs_a_scenario_on_an_image_folder_and_leaves_it_as_it_was(folders, tmp_path, capsys):
    before = snapshot(folders["root"])
    cfg = tmp_path / "folder.toml"
    cfg.write_text(TINY_RUN.format(root=folders["root"]))
    out = tmp_path / "out"
    with pytest.warns(MetaCoverageWarning, match=r"\['fox'\]"):
        assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").is_file() and "class_without_meta" in (out / "report.html").read_text()
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["mean_weight_by_group"]["class_without_meta"]) == {"0", "1"}
    assert doc["weights"]["noise_auroc"] is not None  # synthetic noise: the selection is scored
    assert snapshot(folders["root"]) == before  # only read


@pytest.mark.parametrize("extra, needle", [("bogus = 1", "unknown configuration key data.bogus"),
                                            ('protocol = "binary_imbalance"\nminority = "kat"\nmajority = "dog"',
                                             "data.minority = 'kat' is not a class name")])
def test_cli_with_a_bad_data_key_exits_2_without_a_traceback(folders, tmp_path, capsys, extra, needle):
    cfg = tmp_path / "bad.toml"
    text = TINY_RUN.format(root=folders["root"]).replace('noise = "symmetric"\nnoise_rate = 0.3', extra)
    cfg.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetaCoverageWarning)
        assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-dps: error:") and needle in err and "Traceback" not in err and "\n" not in err
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == ["bad.toml"]


def test_a_resume_checks_every_file_of_an_on_disk_source(tmp_path):
    """The checkpoint's identity hashes train, meta and test files (not only data.path): a changed meta file
    is named when a run is resumed against it."""
    from pyro_dps.fingerprint import first_differences
    from pyro_dps.scenario import run_identity

    spec = write_npy(tmp_path, {"train": 11, "meta": 6, "test": 5})
    config = {"network": {}, "model": {}}
    before = run_identity(config, spec)
    assert set(before["files"]) == {f"data.{k}" for k in spec if k != "source"}
    np.save(tmp_path / "meta.npy", np.zeros((6, 2, 3), np.float32))
    assert [d[0] for d in first_differences(before, run_identity(config, spec))] == ["files.data.meta"]
