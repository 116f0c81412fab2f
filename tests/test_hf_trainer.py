"""BADS inside a Hugging Face `Trainer` (pyro_dps.integrations.hf_trainer), offline on CPU: a tiny GPT-2 built from
a config, a synthetic instruction mix with clean and corrupted sources, a per-task meta set."""
from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("accelerate")  # the Trainer needs it

from sklearn.metrics import roc_auc_score  # noqa: E402

import pyro_dps  # noqa: E402
from pyro_dps.errors import ConfigError, DataError  # noqa: E402
from pyro_dps.integrations.hf_trainer import BADSTrainer  # noqa: E402
from pyro_dps.integrations.indexed import IndexedInstructions, labels_from_targets  # noqa: E402
from pyro_dps.integrations.weight_table import WeightTable  # noqa: E402
from pyro_dps.text import IGNORE_INDEX, InstructionExample, encode, read_jsonl, source_weight_table  # noqa: E402
from pyro_dps.text.causal_lm import load_causal_lm  # noqa: E402
from pyro_dps.text.selection_report import write_weighted_jsonl  # noqa: E402
from test_causal_lm import CLEAN, CORRUPTED, _save_tiny_lm, _task  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_trainer")
    _save_tiny_lm(root / "model")
    return root


def _args(out, steps: int, batch: int, seed: int = 0, save_steps: int | None = None):
    saving = {"save_strategy": "no"} if save_steps is None else {"save_strategy": "steps", "save_steps": save_steps}
    return transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=3e-3,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_strategy="no", report_to=[],
        use_cpu=True, seed=seed, disable_tqdm=True, **saving)


def _mix(per_source: int, seed: int = 0):
    """Clean (copy, reverse) and corrupted (shuffled / random responses) sources, shuffled; a meta set per task."""
    rng = random.Random(seed)
    train = []
    for source, task, corrupt in [("copy", "copy", None), ("reverse", "reverse", None),
                                  ("copy_shuffled", "copy", "shuffle"), ("reverse_random", "reverse", "random")]:
        train += [InstructionExample(r["prompt"], r["response"], source) for r in _task(rng, task, per_source, corrupt)]
    rng.shuffle(train)
    meta = [InstructionExample(r["prompt"], r["response"], task) for task in CLEAN for r in _task(rng, task, 20)]
    return train, meta


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """400 examples (100 per source), 40 meta examples, 600 steps of batch 16 (24 epochs; about 10 s on a CPU)."""
    examples, meta = _mix(100)
    net, tok = load_causal_lm(tiny / "model")
    train = IndexedInstructions(encode(examples, tok, max_length=32))
    trainer = BADSTrainer(model=net.to_hf(), args=_args(tmp_path_factory.mktemp("out"), 600, 16),
                          train_dataset=train, meta_dataset=IndexedInstructions(encode(meta, tok, max_length=32)),
                          beta=0.5, record_every=5)
    trainer.train()
    return trainer, examples, train


def test_trainer_ranks_clean_sources_above_corrupted(trained):
    """Measured (600 steps, beta 0.5, T 0.01), mean weight copy / reverse / reverse_random / copy_shuffled and
    AUROC clean-vs-corrupted: seed 0: 0.90 / 0.82 / 0.15 / 0.05, 0.953; seed 1: 0.95 / 0.87 / 0.06 / 0.05, 0.976;
    seed 2: 0.95 / 0.75 / 0.16 / 0.06, 0.944 (clean minus corrupted: 0.67, 0.81, 0.59). The test runs seed 0."""
    trainer, examples, train = trained
    draws = trainer.weight_draws()
    assert draws.shape == (60, 400)  # a draw every 5 steps after a burn-in of 300
    assert trainer.weight_table.draw_steps[0] == 305 and trainer.weight_table.draw_steps[-1] == 600
    mean_w = trainer.weight_summary()["mean"]
    by_source = {r["source"]: r["mean_weight"] for r in trainer.source_weight_table()}
    assert min(by_source[s] for s in CLEAN) - max(by_source[s] for s in CORRUPTED) > 0.4
    assert roc_auc_score(np.isin(train.sources, CLEAN), mean_w) > 0.9
    # the running sum kept incrementally is the table's sum, near the prior's target floor(N beta) = 200: below it
    # by about sigma^2 rho_t l* (sigma = 2; l*, the loss at the selection boundary, about 1.5): 193 measured
    table = trainer.weight_table
    assert float(table.total) == pytest.approx(float(table.w.sum()), abs=1e-9)
    assert 185 < float(table.w.sum()) < 202
    # the draws read as ArviZ data and by the front door's selection rule
    data = pyro_dps.to_arviz(trainer.posterior_dataset())
    assert pyro_dps.weight_draws(data).shape == (1, 60, 400)
    assert pyro_dps.select(draws).shape == (400,)


def test_exported_jsonl_and_column_round_trip(trained, tmp_path):
    trainer, examples, _ = trained
    summary = trainer.weight_summary()
    path = trainer.write_weighted_jsonl(tmp_path / "weighted.jsonl", examples)
    back = read_jsonl(path)  # still valid instruction JSONL: the weights ride along as extra fields
    assert [(e.prompt, e.response, e.source) for e in back] == [(e.prompt, e.response, e.source) for e in examples]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["weight"] for r in records] == [float(m) for m in summary["mean"]]
    assert [r["weight_sd"] for r in records] == [float(s) for s in summary["sd"]]
    assert [r["p_keep"] for r in records] == [float(p) for p in trainer.p_keep(0.5)]
    column = trainer.weight_column()
    assert list(column) == ["weight"] and len(column["weight"]) == len(examples)
    assert column["weight"] == [r["weight"] for r in records]
    rows = source_weight_table([e.source for e in back], [r["weight"] for r in records])
    assert rows == trainer.source_weight_table()


def test_weight_rows_stay_with_their_examples_under_shuffling(tiny, tmp_path):
    """48 clean copy examples; row 29's response is made of begin-of-sequence tokens (an absurd loss). The
    Trainer shuffles the rows, and row 29's own weight is the one that drops. beta = 0.98 (the prior's sum is 47 of
    48). Measured mean weights, seeds 0 / 1 / 2: row 29 0.0015 / 0.0037 / 0.0031, the next lowest row 0.11 / 0.50 /
    0.08, the median of the others 0.99 / 0.99 / 0.99. The test runs seed 0."""
    rng = random.Random(1)
    examples = [InstructionExample(r["prompt"], r["response"], "copy") for r in _task(rng, "copy", 48)]
    net, tok = load_causal_lm(tiny / "model")
    enc = encode(examples, tok, max_length=32)
    bad, bos = 29, tok.bos_token_id
    start, end = int(enc.prompt_lengths[bad]), int(enc.lengths[bad]) - 1  # the response, before the end token
    enc.input_ids[bad, start:end] = bos
    enc.targets[bad, start - 1:end - 1] = bos
    meta = encode([InstructionExample(r["prompt"], r["response"], "copy") for r in _task(rng, "copy", 16)], tok, 32)
    trainer = BADSTrainer(model=net.to_hf(), args=_args(tmp_path, 120, 8), train_dataset=IndexedInstructions(enc),
                          meta_dataset=IndexedInstructions(meta), beta=0.98, record_every=2)
    order = [int(i) for i in next(iter(trainer.get_train_dataloader()))["index"]]
    assert order != list(range(8))  # the Trainer does shuffle
    trainer.train()
    mean_w = trainer.weight_summary()["mean"]
    assert int(np.argmin(mean_w)) == bad and mean_w[bad] < 0.02
    assert np.sort(mean_w)[1] > 0.05 and np.median(np.delete(mean_w, bad)) > 0.9


def test_labels_from_targets_is_the_hf_convention(tiny):
    _, tok = load_causal_lm(tiny / "model")
    enc = encode([InstructionExample("copy : a b =", "a b", "copy")], tok, max_length=12)
    labels = labels_from_targets(enc.targets)
    scored = labels[0] != IGNORE_INDEX
    assert torch.equal(labels[0, scored], enc.input_ids[0, scored])  # HF shifts inside the model
    assert int(scored.sum()) == 3 and labels[0, 0] == IGNORE_INDEX


class _NoIndex(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return {k: v for k, v in self.inner[i].items() if k != "index"}


def test_bad_input_raises_clear_errors(tiny, tmp_path):
    net, tok = load_causal_lm(tiny / "model")
    train = IndexedInstructions(encode(_mix(4)[0], tok, max_length=32))
    meta = IndexedInstructions(encode(_mix(4)[1], tok, max_length=32))

    def make(**kw):
        base = dict(model=net.to_hf(), args=_args(tmp_path, 2, 4), train_dataset=train, meta_dataset=meta, beta=0.5)
        return BADSTrainer(**{**base, **kw})

    with pytest.raises(DataError, match="no 'index' field"):
        make(train_dataset=_NoIndex(train)).train()
    with pytest.raises(DataError, match="meta set is empty"):
        make(meta_dataset=[])
    with pytest.raises(DataError, match="needs meta_dataset"):
        make(meta_dataset=None)
    with pytest.raises(ConfigError, match=r"beta must be in \(0, 1\], got 1.5"):
        make(beta=1.5)
    with pytest.raises(ConfigError, match="beta = 'auto' is not available here"):
        make(beta="auto")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        make(temperature=0.0)
    with pytest.raises(ConfigError, match="record_every must be an integer >= 1"):
        make(record_every=0)
    with pytest.raises(DataError, match="no weight draws were recorded"):
        make().weight_draws()
    table = WeightTable(10, 2, 0.5)
    with pytest.raises(DataError, match=r"rows in \[0, 10\).*\[3, 10\]"):
        table.update(torch.tensor([3, 10]), torch.ones(2))
    with pytest.raises(DataError, match="repeats a row"):
        table.update(torch.tensor([3, 3]), torch.ones(2))
    with pytest.raises(DataError, match="mean_weights has 3 entries but there are 16 examples"):
        write_weighted_jsonl(tmp_path / "w.jsonl", _mix(4)[0], [0.1, 0.2, 0.3])


def _resumable(tiny, out, steps: int, examples, meta, beta: float = 0.5):
    """A BADSTrainer saving a checkpoint every 6 steps (burn-in fixed, so runs of any length share it)."""
    net, tok = load_causal_lm(tiny / "model")
    return BADSTrainer(model=net.to_hf(), args=_args(out, steps, 4, save_steps=6),
                       train_dataset=IndexedInstructions(encode(examples, tok, 32)),
                       meta_dataset=IndexedInstructions(encode(meta, tok, 32)), beta=beta, record_every=2,
                       burn_in=2, meta_batch_size=3)


def test_a_resumed_run_continues_the_table_and_the_model_exactly(tiny, tmp_path):
    """12 steps straight (a checkpoint at 6) against 6 steps, then a fresh trainer resumed from that checkpoint
    to 12. The Trainer's own resume is exact on CPU (model, AdamW state and torch RNG from the checkpoint, the
    epoch's order from its seeded sampler, the batches already seen skipped: step 6 is mid-epoch, 16 examples
    in batches of 4), and the table file restores the weights, running sum, draws and both generators, so the
    resumed run's weights, draws and parameters are bit-identical to the straight run's."""
    examples, meta = _mix(4)
    straight = _resumable(tiny, tmp_path / "straight", 12, examples, meta)
    straight.train()
    first = _resumable(tiny, tmp_path / "resumed", 6, examples, meta)
    first.train()
    saved = tmp_path / "resumed" / "checkpoint-6" / "bads_weight_table.safetensors"
    assert saved.is_file() and (tmp_path / "straight" / "checkpoint-6" / saved.name).is_file()
    assert not saved.read_bytes().startswith((b"PK", b"\x80"))  # safetensors, not a pickle
    resumed = _resumable(tiny, tmp_path / "resumed", 12, examples, meta)
    resumed.train(resume_from_checkpoint=True)  # the last checkpoint in output_dir: checkpoint-6
    a, b = straight.weight_table, resumed.weight_table
    assert resumed.state.global_step == 12 and b.draw_steps == a.draw_steps == [4, 6, 8, 10, 12]
    assert torch.equal(a.w, b.w) and torch.equal(a.total, b.total) and not torch.equal(a.w, first.weight_table.w)
    assert np.array_equal(straight.weight_draws(), resumed.weight_draws())
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert torch.equal(straight._meta_generator.get_state(), resumed._meta_generator.get_state())
    theirs = resumed.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in straight.model.state_dict().items())


def test_resuming_from_a_folder_without_a_matching_table_raises(tiny, tmp_path):
    """No table file (a plain Trainer's checkpoint), another training set size, other settings: each fails
    when `train` starts, before the Trainer loads anything, and leaves the trainer as it was."""
    examples, meta = _mix(4)
    _resumable(tiny, tmp_path / "run", 6, examples, meta).train()
    folder = tmp_path / "run" / "checkpoint-6"
    plain = tmp_path / "plain" / "checkpoint-6"  # as a plain Trainer writes it: no table file
    shutil.copytree(folder, plain)
    (plain / "bads_weight_table.safetensors").unlink()
    trainer = _resumable(tiny, tmp_path / "again", 12, examples, meta)
    before = trainer.weight_table.w.clone()
    with pytest.raises(DataError, match=re.escape(f"checkpoint folder '{plain}' has no bads_weight_table.safetensors")):
        trainer.train(resume_from_checkpoint=str(plain))
    with pytest.raises(DataError, match="has N_t = 16 rows but the training set has 12 examples"):
        _resumable(tiny, tmp_path / "again", 12, examples[:12], meta).train(resume_from_checkpoint=str(folder))
    with pytest.raises(ConfigError, match="beta = 0.5 there, 0.25 here"):
        _resumable(tiny, tmp_path / "again", 12, examples, meta, 0.25).train(resume_from_checkpoint=str(folder))
    assert torch.equal(trainer.weight_table.w, before) and trainer.state.global_step == 0
