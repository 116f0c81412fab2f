"""BADS on data read from disk through a DataLoader with workers, against plain training with the same loader.

Two on-disk data sets, written once into `--dir` (a folder this script creates and owns; it is reused when its
`complete` marker is there, and never deleted):
- `npy`: 10^6 rows of 64 float32 features, memory-mapped (`pyro_dps.data.npy_rows`), an MLP;
- `images`: 50,000 PNG files (28x28 RGB) in class folders (`pyro_dps.data.image_folder`), a random crop and
  flip on every read, LeNet-5.
Both have 10 classes, 20% of the training labels flipped at random, and a clean meta set of 20 per class.

Step time: in this one process, rounds that run each method for `--steps` and for 2 x `--steps` steps; a step's
time is the difference over the `--steps` extra steps (set-up and loader start-up cancel); the ratio is the
median over rounds of each round's BADS / plain (after an untimed warm-up of each); plain = SGD through `DataLoader(batch_size, shuffle, num_workers)`, BADS = `pyro_dps.fit` on
`DatasetRows(dataset, workers=...)` (its loader reads the chain's batches ahead). Peak memory: each method in
its own child process (a peak never goes down, so two methods cannot share one): the peak over time of the PSS
of the process and its loader workers together (`PeakMemory`), and the main process's peak RSS (VmHWM);
memory-mapped pages a process touched count in both.

    python benchmarks/scale.py --dir /tmp/pyro_dps_scale [--workers 1] [--steps 300] [--rounds 3]
    python benchmarks/scale.py --dir /tmp/s --rows 20000 --images 2000 --steps 60 --rounds 1   # smoke
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import pyro_dps as dps
from pyro_dps.data import DatasetRows, NpyRows, image_folder, image_to_tensor
from pyro_dps.networks import lenet5

CLASSES, DIM, SIDE, FLIP, META_PER_CLASS, BATCH = 10, 64, 28, 0.2, 20, 128


# ---- the data on disk -------------------------------------------------------------------------------------
def _centres() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, (CLASSES, DIM)).astype(np.float32)


def write_npy(folder: Path, rows: int) -> None:
    """features.npy (rows x DIM float32, class centre + noise, written in chunks) and labels.npy (20% flipped)."""
    rng, centres = np.random.default_rng(1), _centres()
    truth = rng.integers(0, CLASSES, rows)
    x = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=(rows, DIM))
    for lo in range(0, rows, 100_000):
        hi = min(rows, lo + 100_000)
        x[lo:hi] = centres[truth[lo:hi]] + rng.normal(0, 1.5, (hi - lo, DIM)).astype(np.float32)
    x.flush()
    del x
    np.save(folder / "labels.npy", _flip(truth, rng))
    np.save(folder / "truth.npy", truth)


def _flip(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = truth.copy()
    flip = rng.random(len(truth)) < FLIP
    noisy[flip] = (truth[flip] + rng.integers(1, CLASSES, int(flip.sum()))) % CLASSES
    return noisy


def _image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 RGB image of class `cls`: a class-specific colour and bar position, plus noise."""
    img = rng.uniform(0, 80, (SIDE, SIDE, 3))
    img[..., cls % 3] += 100
    img[2 * cls + 2:2 * cls + 6, :, :] += 70
    return img.clip(0, 255).astype(np.uint8)


def write_images(folder: Path, n: int) -> None:
    """n PNG files in images/<class>/, of which 20% lie in the wrong class folder."""
    from PIL import Image

    rng = np.random.default_rng(2)
    truth = rng.integers(0, CLASSES, n)
    noisy = _flip(truth, rng)
    for c in range(CLASSES):
        (folder / "images" / f"class{c}").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_image(int(truth[i]), rng)).save(folder / "images" / f"class{noisy[i]}" / f"{i:06d}.png")
    order = sorted(range(n), key=lambda i: (int(noisy[i]), i))  # image_folder's order: class, then file name
    np.save(folder / "images_clean.npy", (truth == noisy)[order])


def prepare(folder: Path, rows: int, images: int) -> None:
    """The data sets in `folder` (created here; reused when a previous run of the same sizes completed it)."""
    marker = folder / "complete"
    if marker.exists() and json.loads(marker.read_text()) == {"rows": rows, "images": images}:
        return
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"--dir {folder} exists and was not written by this script for these sizes; give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_npy(folder, rows)
    write_images(folder, images)
    marker.write_text(json.dumps({"rows": rows, "images": images}))
    print(f"data written in {time.perf_counter() - start:.0f} s", flush=True)


# ---- the two tasks -----------------------------------------------------------------------------------------
def augment(image) -> torch.Tensor:
    """A random 2-pixel-padded crop and a random horizontal flip, on every read."""
    x = image_to_tensor(image)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    i, j = (int(v) for v in torch.randint(0, 5, (2,)))
    x = padded[:, i:i + SIDE, j:j + SIDE]
    return x.flip(-1) if float(torch.rand(())) < 0.5 else x


def task(folder: Path, kind: str):
    """(dataset, labels, x_meta, y_meta, network factory) of data set `kind`."""
    rng = np.random.default_rng(3)
    if kind == "npy":
        dataset = NpyRows(folder / "features.npy")
        labels = torch.from_numpy(np.load(folder / "labels.npy")).long()
        y_meta = np.repeat(np.arange(CLASSES), META_PER_CLASS)
        x_meta = _centres()[y_meta] + rng.normal(0, 1.5, (len(y_meta), DIM)).astype(np.float32)
        return dataset, labels, torch.from_numpy(x_meta), torch.from_numpy(y_meta), lambda: dps.mlp(DIM, CLASSES, (128,))
    dataset, labels = image_folder(folder / "images", transform=augment)
    y_meta = np.repeat(np.arange(CLASSES), META_PER_CLASS)
    meta = np.stack([_image(int(c), rng) for c in y_meta]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return dataset, labels, torch.from_numpy(meta), torch.from_numpy(y_meta), lambda: lenet5(CLASSES, 3)


def plain(data, steps: int, workers: int) -> float:
    """Seconds of `steps` SGD steps through a shuffling DataLoader with `workers` workers."""
    dataset, labels, _, _, make_net = data
    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loader = DataLoader(_Labelled(dataset, labels), batch_size=BATCH, shuffle=True, num_workers=workers,
                        prefetch_factor=2 if workers else None, drop_last=True)
    start, done = time.perf_counter(), 0
    while done < steps:
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


class _Labelled(Dataset):
    """(features, observed label) items for the plain loop (the dataset's own label is the folder's)."""

    def __init__(self, dataset, labels):
        self.dataset, self.labels = dataset, labels

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (item[0] if isinstance(item, tuple) else item), self.labels[i]


def bads(data, steps: int, workers: int, samples: int = 10, thin: int = 5):
    """(seconds, posterior) of one BADS chain of `steps` steps on rows read ahead by `workers` loader workers."""
    dataset, labels, x_meta, y_meta, make_net = data
    torch.manual_seed(0)
    problem = dps.Problem(make_net(), DatasetRows(dataset, workers=workers), labels, x_meta, y_meta)
    config = dps.SamplerConfig(chains=1, warmup=steps - samples * thin, samples=samples, thin=thin,
                               batch_size=BATCH, meta_batch_size=BATCH, progress=False, seed=0)
    start = time.perf_counter()
    post = dps.fit(dps.load_model("bads"), problem, {"beta": 0.8}, config)
    return time.perf_counter() - start, post


def clean_mask(folder: Path, kind: str) -> np.ndarray:
    """Whether each training row's label is its true class (the benchmark's ground truth)."""
    if kind == "npy":
        return np.load(folder / "truth.npy") == np.load(folder / "labels.npy")
    return np.load(folder / "images_clean.npy")


# ---- measurements --------------------------------------------------------------------------------------------
def step_times(data, steps: int, rounds: int, workers: int) -> dict:
    """Per-step seconds of plain and BADS: (time of 2 x steps - time of steps) / steps, median over rounds."""
    per = {"plain": [], "bads": []}
    plain(data, 20, workers), bads(data, 60, workers)  # one-time costs (imports, the weight update's JIT)
    for r in range(rounds):
        short, long = plain(data, steps, workers), plain(data, 2 * steps, workers)
        per["plain"].append((long - short) / steps)
        short, long = bads(data, steps, workers)[0], bads(data, 2 * steps, workers)[0]
        per["bads"].append((long - short) / steps)
        print(f"  round {r}: plain {per['plain'][-1] * 1e3:.2f} ms/step, BADS {per['bads'][-1] * 1e3:.2f} ms/step",
              flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    ratio = statistics.median(b / p for b, p in zip(per["bads"], per["plain"]))  # each round's own ratio
    return {"plain_ms": med["plain"] * 1e3, "bads_ms": med["bads"] * 1e3, "ratio": ratio,
            "rounds_ms": {k: [round(x * 1e3, 3) for x in v] for k, v in per.items()}}


class PeakMemory(threading.Thread):
    """Samples, every `every` seconds, the proportional set size (PSS: shared pages split between the processes
    that map them) of this process plus all its descendants (the loader's workers); keeps the peak. PSS of the
    whole tree counts the physical memory the run holds; a forked worker's RSS would count its parent's pages
    again, and `ru_maxrss` survives fork and exec, so a child would report its parent's peak."""

    def __init__(self, every: float = 0.1):
        super().__init__(daemon=True)
        self.every, self.peak, self.stopped = every, 0, threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stopped.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self.stopped.wait(self.every)


def child(args) -> None:
    """(In a child process) one method's run on one data set; prints its peak memory as JSON."""
    folder = Path(args.dir)
    data = task(folder, args.kind)
    monitor = PeakMemory()
    monitor.start()
    post = plain(data, args.steps, args.workers) if args.child == "plain" else bads(data, args.steps, args.workers)[1]
    monitor.stopped.set()
    monitor.join()
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    out = {"peak_pss_mb": monitor.peak / 2 ** 20, "main_hwm_mb": hwm / 1024}  # before the scoring below
    if args.child == "bads":
        from sklearn.metrics import roc_auc_score

        mean = post.weight_summary()["mean"]
        out.update({"noise_auroc": float(roc_auc_score(clean_mask(folder, args.kind), mean)),
                    "table_mb": len(mean) * 4 / 2 ** 20, "draws_mb": post.draws.weights().values.nbytes / 2 ** 20})
    print(json.dumps(out))


def peak_rss(args, kind: str) -> dict:
    """Each method's peak RSS from its own child process, and the ratios BADS / plain."""
    got = {}
    for method in ("plain", "bads"):
        cmd = [sys.executable, __file__, "--dir", args.dir, "--child", method, "--kind", kind,
               "--workers", str(args.workers), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        got[method] = json.loads(done.stdout.strip().splitlines()[-1])
    ratios = {f"{k}_ratio": got["bads"][k] / got["plain"][k] for k in ("peak_pss_mb", "main_hwm_mb")}
    return {"plain": got["plain"], "bads": got["bads"], **ratios}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="a new folder for the data (or one this script filled)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="npy,images")
    parser.add_argument("--out", default=None, help="also write the results here as JSON")
    parser.add_argument("--child", choices=("plain", "bads"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    prepare(Path(args.dir), args.rows, args.images)
    results = {"workers": args.workers, "steps": args.steps, "threads": torch.get_num_threads()}
    for kind in args.kinds.split(","):
        print(f"{kind}: step time", flush=True)
        results[kind] = {"time": step_times(task(Path(args.dir), kind), args.steps, args.rounds, args.workers)}
        results[kind]["memory"] = peak_rss(args, kind)
        t, m = results[kind]["time"], results[kind]["memory"]
        print(f"{kind}: step time BADS / plain = {t['ratio']:.3f} ({t['bads_ms']:.2f} vs {t['plain_ms']:.2f} ms); "
              f"peak memory BADS / plain: PSS of main + workers {m['peak_pss_mb_ratio']:.3f} ({m['bads']['peak_pss_mb']:.0f} vs "
              f"{m['plain']['peak_pss_mb']:.0f} MB), main RSS {m['main_hwm_mb_ratio']:.3f}; "
              f"table {m['bads']['table_mb']:.1f} MB, draws {m['bads']['draws_mb']:.1f} MB; "
              f"noise AUROC {m['bads']['noise_auroc']:.3f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
