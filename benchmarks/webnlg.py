"""WebNLG 2020 efficient learning: BADS against mixing, duplicate-meta and meta-only on a small causal LM.

Data-to-text: the prompt is the linearised triple set (`subject | predicate | object ; ... =>`,
underscores and quotes removed), the response a reference text. A decoder-only model (GPT-2 layout,
built from a config and trained from scratch, byte-level BPE tokenizer trained on the WebNLG training
texts) is trained by every method for the same number of network updates from the same initial weights.

Variant A (paper): D_t = all 16 training categories; targets Film, MusicalWork, Scientist with 30 meta
  examples each. Those categories occur only in the test split (no dev entries), so the meta examples
  are a seeded held-out part of their test entries, and the evaluation uses the remaining test entries.
Variant B (paper's controlled setting): D_t = Artist + City; targets Athlete, Politician, Astronaut with
  50 meta examples each from the dev split; evaluation on their test entries. BADS's mean weight per
  training category says which category it finds useful for the targets.

Metrics on the targets' test entries: NLL per response token (every reference) and corpus BLEU
(sacrebleu, greedy decoding, all references of an entry, decoding length capped). Results go to
results/webnlg.json and a markdown table on stdout.

    python benchmarks/webnlg.py --quick                     # CPU, 1 thread, about 15 minutes
    python benchmarks/webnlg.py --full --device cuda        # paper-scale budget (GPU)
    python benchmarks/webnlg.py --quick --variants B --steps 50 --bleu-entries 10   # smoke

Data: --data PATH, else $PYRO_DPS_DATA/webnlg2020_en.jsonl.gz, else ../shared/data/ beside the repository.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FILE_NAME = "webnlg2020_en.jsonl.gz"

VARIANTS = {
    "A": {"train": None, "targets": ("Film", "MusicalWork", "Scientist"), "meta_per_target": 30},
    "B": {"train": ("Artist", "City"), "targets": ("Athlete", "Politician", "Astronaut"), "meta_per_target": 50},
}

# Budgets. quick: CPU, one thread, ~15 minutes for both variants; full: paper-like scale on a GPU.
PRESETS = {
    "quick": {"steps": 600, "batch_size": 16, "meta_batch_size": 8, "n_embd": 64, "n_layer": 2, "n_head": 4,
              "vocab_size": 2000, "max_length": 160, "train_per_category": {"A": 250, "B": None},
              "all_references": False,
              "bleu_entries": 90, "max_new_tokens": 48},
    "full": {"steps": 40000, "batch_size": 20, "meta_batch_size": 20, "n_embd": 512, "n_layer": 6, "n_head": 8,
             "vocab_size": 8000, "max_length": 320, "train_per_category": {"A": None, "B": None},
             "all_references": True,
             "bleu_entries": None, "max_new_tokens": 128},
}
METHODS = ("bads", "mixing", "duplicate_meta", "meta_only")


# ---------------------------------------------------------------------------------------------- data
def data_path(arg: str | None) -> Path:
    """--data, else $PYRO_DPS_DATA/<file>, else ../shared/data/<file> beside the repository."""
    if arg:
        return Path(arg)
    env = os.environ.get("PYRO_DPS_DATA")
    if env:
        return Path(env) / FILE_NAME if Path(env).is_dir() else Path(env)
    return REPO.parent / "shared" / "data" / FILE_NAME


def read_entries(path: Path) -> list[dict]:
    """All WebNLG entries (split, eid, category, size, triples, texts); entries without a text are dropped."""
    from pyro_dps.errors import DataError

    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"WebNLG file {str(path)!r} cannot be read: {exc}") from exc
    for i, r in enumerate(rows):
        missing = {"split", "category", "triples", "texts"} - set(r)
        if missing:
            raise DataError(f"{path} line {i + 1}: missing field(s) {sorted(missing)}")
    return [r for r in rows if r["texts"]]


def linearise(triples: list[str]) -> str:
    """`Aarhus_Airport | cityServed | "Aarhus, Denmark"` -> `Aarhus Airport | cityServed | Aarhus, Denmark`, joined by ` ; `."""
    parts = []
    for t in triples:
        s, p, o = (x.strip().replace("_", " ").strip('"').strip() for x in t.split("|", 2))
        parts.append(f"{s} | {p} | {o}")
    return " ; ".join(parts) + " =>"


def to_examples(entries: list[dict], rng: random.Random, all_references: bool):
    """InstructionExamples (source = category): every reference, or one seeded choice per entry."""
    from pyro_dps.text import InstructionExample

    out = []
    for e in entries:
        texts = e["texts"] if all_references else [rng.choice(e["texts"])]
        out += [InstructionExample(linearise(e["triples"]), t, e["category"], f"{e['split']}:{e['eid']}") for t in texts]
    return out


@dataclass
class VariantData:
    train: list  # InstructionExample
    meta: list
    test_entries: list[dict]
    notes: list[str]


def build_variant(entries: list[dict], name: str, preset: dict, seed: int) -> VariantData:
    """Train, meta and test sets of one variant (see the module docstring)."""
    spec = VARIANTS[name]
    rng = random.Random(seed)
    notes = []
    by = lambda split, cats: [e for e in entries if e["split"] == split and e["category"] in cats]  # noqa: E731
    train_cats = spec["train"] or sorted({e["category"] for e in entries if e["split"] == "train"})
    train_entries = []
    for cat in train_cats:
        pool = by("train", {cat})
        k = preset["train_per_category"][name]
        train_entries += pool if k is None or len(pool) <= k else rng.sample(pool, k)
    if preset["train_per_category"][name] is not None:
        notes.append(f"D_t subsampled to at most {preset['train_per_category'][name]} training entries per category")
    if not preset["all_references"]:
        notes.append("one seeded reference per training entry")
    meta_entries, test_entries = [], []
    for cat in spec["targets"]:
        dev = by("dev", {cat})
        test = by("test", {cat})
        k = spec["meta_per_target"]
        if len(dev) >= k:
            meta_entries += rng.sample(dev, k)
            test_entries += test
        else:
            held = set(rng.sample(range(len(test)), k))
            meta_entries += [t for i, t in enumerate(test) if i in held]
            test_entries += [t for i, t in enumerate(test) if i not in held]
            notes.append(f"{cat}: {len(dev)} dev entries, so the {k} meta examples are held out from its "
                         f"{len(test)} test entries (evaluated on the other {len(test) - k})")
    train = to_examples(train_entries, rng, preset["all_references"])
    meta = to_examples(meta_entries, rng, all_references=False)
    return VariantData(train, meta, test_entries, notes)


# ---------------------------------------------------------------------------------------------- model
def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers (pad and end tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def save_initial_model(directory: Path, tokenizer, preset: dict, seed: int) -> None:
    """A GPT-2-layout model from a config (random weights, tied embeddings) and the tokenizer, saved by path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=preset["max_length"] + preset["max_new_tokens"],
                        n_embd=preset["n_embd"], n_layer=preset["n_layer"], n_head=preset["n_head"],
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# ---------------------------------------------------------------------------------------------- methods
def run_method(method: str, model_dir: Path, train, meta, preset: dict, args, beta: float):
    """Train one method from the saved initial weights; returns (network, info)."""
    from pyro_dps.baselines import BASELINES
    from pyro_dps.context import Problem
    from pyro_dps.data import DataSplits
    from pyro_dps import SamplerConfig, fit
    from pyro_dps.losses import sequence_nll
    from pyro_dps.models import bads
    from pyro_dps.text.causal_lm import load_causal_lm

    net, _ = load_causal_lm(model_dir)
    net = net.to(args.device)
    dev = lambda t: t.to(args.device)  # noqa: E731
    t0 = time.perf_counter()
    info = {}
    if method == "bads":
        thin = max(1, min(10, preset["steps"] // 20))  # 10 weight draws over the last steps of the budget
        problem = Problem(net, dev(train.input_ids), dev(train.targets), dev(meta.input_ids), dev(meta.targets),
                          loss=sequence_nll)
        posterior = fit(bads.model, problem, {"beta": beta},
                        SamplerConfig(kernel="psgld", step_size=args.step_size, local_step_size=args.local_step_size,
                                      temperature=args.temperature, chains=1, warmup=preset["steps"] - 10 * thin,
                                      samples=10, thin=thin, batch_size=preset["batch_size"],
                                      meta_batch_size=preset["meta_batch_size"], snapshots=0, seed=args.seed,
                                      device=args.device, progress=args.progress))
        net.load_params(posterior.potential.network_params(posterior.final_theta[0]))
        summary = posterior.weight_summary()
        info.update(potential=posterior.potential.kind, mean_weights=summary["mean"])
    else:
        data = DataSplits(x_train=dev(train.input_ids), y_train=dev(train.targets), x_meta=dev(meta.input_ids),
                          y_meta=dev(meta.targets), x_test=dev(meta.input_ids[:0]), y_test=dev(meta.targets[:0]),
                          num_classes=net.body.get_input_embeddings().weight.shape[0], name="webnlg")
        net = BASELINES[method](net, data, preset["steps"], batch_size=preset["batch_size"], lr=args.lr,
                                optimizer="adam", seed=args.seed, loss=sequence_nll)
    net.eval()
    info["seconds"] = time.perf_counter() - t0
    return net, info


def evaluate(net, tokenizer, test_entries: list[dict], preset: dict, args, rng_seed: int) -> dict:
    """NLL per response token over every (entry, reference) pair; corpus BLEU of greedy outputs on
    `bleu_entries` entries (seeded subset; all when None), with every reference of an entry."""
    import sacrebleu

    from pyro_dps.text import encode
    from pyro_dps.text.causal_lm import greedy_decode, nll_per_token

    pairs = to_examples(test_entries, random.Random(0), all_references=True)
    enc = encode(pairs, tokenizer, max_length=preset["max_length"])
    nll = nll_per_token(net, enc.input_ids.to(args.device), enc.targets.to(args.device), batch_size=64)
    chosen = list(range(len(test_entries)))
    if preset["bleu_entries"] is not None and preset["bleu_entries"] < len(chosen):
        chosen = sorted(random.Random(rng_seed).sample(chosen, preset["bleu_entries"]))
    prompts = []
    for i in chosen:
        ids = tokenizer(linearise(test_entries[i]["triples"]), add_special_tokens=False)["input_ids"]
        prompts.append(ids[-preset["max_length"]:])
    outputs = greedy_decode(lambda x: net(x.to(args.device)).cpu(), prompts, tokenizer.eos_token_id,
                            tokenizer.pad_token_id, preset["max_new_tokens"], batch_size=64)
    hyps = [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]
    refs = [test_entries[i]["texts"] for i in chosen]
    width = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else r[0] for r in refs] for k in range(width)]  # repeat: same BLEU as fewer refs
    bleu = sacrebleu.corpus_bleu(hyps, streams)
    return {"nll_per_token": nll, "bleu": bleu.score, "bleu_entries": len(chosen), "nll_pairs": len(pairs),
            "example_output": {"input": linearise(test_entries[chosen[0]]["triples"]), "output": hyps[0],
                               "reference": refs[0][0]}}


# ---------------------------------------------------------------------------------------------- driver
def run_variant(name: str, entries: list[dict], preset: dict, args, model_dir: Path, tokenizer) -> dict:
    from pyro_dps.selection import select_top_beta
    from pyro_dps.text import encode_together, markdown_table, source_weight_table

    data = build_variant(entries, name, preset, args.seed)
    beta = args.beta[name]
    train, meta = encode_together([data.train, data.meta], tokenizer, max_length=preset["max_length"])
    out = {"train_categories": sorted(Counter(e.source for e in data.train).items()),
           "targets": list(VARIANTS[name]["targets"]), "n_train": len(data.train), "n_meta": len(data.meta),
           "n_test_entries": len(data.test_entries), "truncated_train": train.truncated, "beta": beta,
           "notes": data.notes, "methods": {}}
    for note in data.notes:
        print(f"[{name}] note: {note}", flush=True)
    for method in args.methods:
        net, info = run_method(method, model_dir, train, meta, preset, args, beta)
        metrics = evaluate(net, tokenizer, data.test_entries, preset, args, args.seed)
        row = {**metrics, "seconds": round(info["seconds"], 1), "steps": preset["steps"]}
        if method == "bads":
            mean_w = info["mean_weights"]
            rows = source_weight_table(train.sources, mean_w, select_top_beta(mean_w, beta))
            row["potential"] = info["potential"]
            out["bads_category_weights"] = rows
            out["bads_upweighted"] = rows[0]["source"]
            print(f"[{name}] BADS mean weight per training category:\n{markdown_table(rows)}", flush=True)
        out["methods"][method] = row
        print(f"[{name}] {method}: NLL/token {row['nll_per_token']:.3f}, BLEU {row['bleu']:.2f} "
              f"({row['seconds']}s train)", flush=True)
    return out


def markdown(results: dict) -> str:
    lines = []
    for name, res in results["variants"].items():
        lines.append(f"\n### Variant {name}: targets {', '.join(res['targets'])} "
                     f"(N_t={res['n_train']}, N_m={res['n_meta']}, {res['n_test_entries']} test entries)\n")
        lines.append("| method | NLL / token | BLEU | train seconds |\n|---|---:|---:|---:|")
        for m, r in res["methods"].items():
            lines.append(f"| {m} | {r['nll_per_token']:.3f} | {r['bleu']:.2f} | {r['seconds']} |")
        if "bads_upweighted" in res:
            top = res["bads_category_weights"][:5]
            lines.append("\nBADS mean weight per training category (top 5): "
                         + ", ".join(f"{r['source']} {r['mean_weight']:.3f}" for r in top))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU budget (default)")
    mode.add_argument("--full", action="store_true", help="paper-scale budget: all data, 40k steps, bigger model (GPU)")
    parser.add_argument("--data", help=f"path to {FILE_NAME} (default: $PYRO_DPS_DATA, then ../shared/data)")
    parser.add_argument("--variants", nargs="+", default=["A", "B"], choices=sorted(VARIANTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, help="network updates per method (overrides the preset)")
    parser.add_argument("--bleu-entries", type=int, help="test entries decoded for BLEU (overrides the preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the baselines")
    parser.add_argument("--step-size", type=float, default=4e-3,
                        help="BADS pSGLD step size for theta (moves about step_size / 2 per step, like Adam at lr)")
    parser.add_argument("--local-step-size", type=float, default=2.0, help="BADS pSGLD step size for the weights")
    parser.add_argument("--temperature", type=float, default=1e-3, help="BADS temperature")
    parser.add_argument("--beta-a", type=float, default=0.25, help="BADS beta (useful fraction of D_t), variant A")
    parser.add_argument("--beta-b", type=float, default=0.5, help="BADS beta, variant B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--out", default=str(REPO / "results" / "webnlg.json"))
    parser.add_argument("--progress", action="store_true", help="show the sampler's progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    preset = dict(PRESETS["full" if args.full else "quick"])
    if args.steps is not None:
        preset["steps"] = args.steps
    if args.bleu_entries is not None:
        preset["bleu_entries"] = args.bleu_entries
    args.beta = {"A": args.beta_a, "B": args.beta_b}
    path = data_path(args.data)
    if not path.exists():
        print(f"WebNLG data not found at {path}; pass --data or set PYRO_DPS_DATA", file=sys.stderr)
        return 2
    start = time.perf_counter()
    entries = read_entries(path)
    tokenizer = train_tokenizer([linearise(e["triples"]) for e in entries if e["split"] == "train"]
                                + [t for e in entries if e["split"] == "train" for t in e["texts"]],
                                preset["vocab_size"])
    results = {"mode": "full" if args.full else "quick", "preset": preset, "seed": args.seed,
               "settings": {k: v for k, v in vars(args).items() if k not in ("beta",)} | {"beta": args.beta},
               "threads": args.threads, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="webnlg-model-") as tmp:
        model_dir = Path(tmp)
        save_initial_model(model_dir, tokenizer, preset, args.seed)
        for name in args.variants:
            results["variants"][name] = run_variant(name, entries, preset, args, model_dir, tokenizer)
            results["seconds"] = round(time.perf_counter() - start, 1)
            write_json(Path(args.out), results)
    table = markdown(results)
    print(table)
    print(f"\ntotal {results['seconds']}s; results in {args.out}")
    return 0


def write_json(path: Path, doc: dict) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_plain))
    os.replace(tmp, path)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
