"""The tables and the figure of benchmarks/quality.py: per-method summaries over seeds, quality.md, Figure 3."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METHODS = ["bads", "bads_preset", "mixing", "mixing_es", "meta_only", "random_select", "duplicate_meta", "blo", "mwn",
           "cds", "cleanlab"]
SCORING = {"bads", "bads_preset", "blo", "mwn", "cds", "cleanlab"}
LABELS = {"bads": "bads (defaults)", "bads_preset": "bads (paper preset, hand-set)"}


def summarise(runs: list[dict]) -> dict:
    def stat(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            return None, None
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    out = {}
    for key in ("test_accuracy", "test_accuracy_ensemble", "noise_auroc", "seconds", "cpu_seconds"):
        mean, sd = stat(key)
        out[key] = {"mean": mean, "sd": sd, "n": sum(r.get(key) is not None for r in runs)}
    return out


def _cell(stat: dict | None) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def markdown(doc: dict) -> str:
    scenarios = [s for s in doc["scenarios"] if doc["scenarios"][s].get("summary")]
    methods = [m for m in METHODS if any(m in doc["scenarios"][s]["summary"] for s in scenarios)]
    lines = [f"# Quality benchmark ({doc['settings']['preset']}; seeds {doc['settings']['seeds']})", "",
             "Test accuracy, mean ± sd over seeds (equal numbers of network updates per method; "
             "`bads (posterior avg)` averages the predictions of the theta snapshots).", "",
             "| method | " + " | ".join(scenarios) + " |", "|---|" + "---|" * len(scenarios)]
    rows = [(m, "test_accuracy") for m in methods]
    if "bads" in methods:
        rows.insert(1, ("bads", "test_accuracy_ensemble"))
    for m, key in rows:
        label = "bads (defaults, posterior avg)" if key == "test_accuracy_ensemble" else LABELS.get(m, m)
        cells = [_cell(doc["scenarios"][s]["summary"].get(m, {}).get(key)) for s in scenarios]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    noisy = [s for s in scenarios if any((doc["scenarios"][s]["summary"].get(m, {}).get("noise_auroc") or {}).get("mean")
                                         is not None for m in SCORING)]
    if noisy:
        lines += ["", "Noise AUROC of per-example scores (clean vs corrupted training labels; BADS: posterior mean "
                  "weight, BLO/MWN: mean weight received, CDS: contrastive score, cleanlab: label quality).", "",
                  "| method | " + " | ".join(noisy) + " |", "|---|" + "---|" * len(noisy)]
        for m in [m for m in methods if m in SCORING]:
            lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(_cell(doc["scenarios"][s]["summary"].get(m, {}).get("noise_auroc"))
                                                for s in noisy) + " |")
    for key, title in (("seconds", "Seconds per run (mean):"),
                       ("cpu_seconds", "CPU seconds per run (mean; all threads of the process):")):
        lines += ["", title, "", "| method | " + " | ".join(scenarios) + " |", "|---|" + "---|" * len(scenarios)]
        for m in methods:
            cells = []
            for s in scenarios:
                st = doc["scenarios"][s]["summary"].get(m, {}).get(key)
                cells.append("-" if not st or st["mean"] is None else f"{st['mean']:.1f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    steps = {s: doc["scenarios"][s]["steps"] for s in scenarios}
    lines += ["", "Steps per method: " + ", ".join(f"{s} {n}" for s, n in steps.items()) + "."]
    lines += ["", "Estimated useful fraction of D_t (the default beta; BADS's defaults and random-select/CDS use it) "
              "against the true clean fraction where corruption is known:", "",
              "| scenario | estimate (mean ± sd) | truth |", "|---|---|---|"]
    for s in scenarios:
        rows_f = doc["scenarios"][s].get("useful_fraction", [])
        if rows_f:
            est = np.array([r["value"] for r in rows_f])
            truth = [r["truth"] for r in rows_f if r["truth"] is not None]
            lines.append(f"| {s} | {est.mean():.3f} ± {est.std(ddof=1) if len(est) > 1 else 0:.3f} | "
                         f"{np.mean(truth):.3f} |" if truth else f"| {s} | {est.mean():.3f} | - |")
    failed = [(s, m, r) for s in scenarios for m, runs in doc["scenarios"][s]["runs"].items() for r in runs if "error" in r]
    if failed:
        lines += ["", "Runs that failed (counted in no mean above):", ""]
        lines += [f"- {s}, {LABELS.get(m, m)}, seed {r['seed']}: {r['error']}" for s, m, r in failed]
    return "\n".join(lines) + "\n"


def figure3(doc: dict, path: Path) -> bool:
    """Accuracy vs meta examples per class on MNIST 4 vs 9 (the paper's figure 3)."""
    points = {}
    for name, entry in doc["scenarios"].items():
        if entry.get("family") == "mnist4v9" and entry.get("summary"):
            points[entry["meta_per_class"]] = entry["summary"]
    if not points:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(points)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m in METHODS:
        xs = [n for n in sizes if m in points[n]]
        if not xs:
            continue
        mean = [points[n][m]["test_accuracy"]["mean"] for n in xs]
        sd = [points[n][m]["test_accuracy"]["sd"] or 0.0 for n in xs]
        ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=m, lw=2.2 if m == "bads" else 1.2)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("meta examples per class")
    ax.set_ylabel("test accuracy (4 vs 9)")
    ax.set_title(f"MNIST 4 vs 9, imbalanced D_t ({doc['settings']['preset']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    (out / "quality.md").write_text(markdown(doc))
    figure3(doc, out / "quality_fig3_mnist4v9.png")
