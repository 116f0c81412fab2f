"""BADS on a Hugging Face causal LM, offline: a tiny GPT-2 saved and loaded by path, a synthetic instruction
mix with clean sources (copy, reverse) and corrupted ones (shuffled or random responses)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from sklearn.metrics import roc_auc_score  # noqa: E402

from pyro_dps.context import Problem  # noqa: E402
from pyro_dps import SamplerConfig, fit  # noqa: E402
from pyro_dps.errors import ConfigError, DataError  # noqa: E402
from pyro_dps.losses import sequence_nll  # noqa: E402
from pyro_dps.models import bads  # noqa: E402
from pyro_dps.selection import select_top_beta  # noqa: E402
from pyro_dps.text import (IGNORE_INDEX, encode, encode_together, markdown_table, read_jsonl,  # noqa: E402
                           read_meta_sets, source_weight_table, write_selected_jsonl)
from pyro_dps.text.causal_lm import greedy_decode, load_causal_lm, nll_per_token  # noqa: E402

LETTERS = list("abcdefgh")
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
CLEAN, CORRUPTED = ("copy", "reverse"), ("copy_shuffled", "reverse_random")


def _save_tiny_lm(directory, n_embd: int = 32, dropout: float = 0.1) -> None:
    """A word-level tokenizer and a 2-layer GPT-2 (tied embeddings) built offline and saved to `directory`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS + ["copy", "reverse", ":", "="] + LETTERS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                         bos_token="[BOS]", unk_token="[UNK]").save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=n_embd, n_layer=2, n_head=2,
                                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                                     bos_token_id=2, eos_token_id=3, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)


def _task(rng: random.Random, task: str, n: int, corrupt: str | None = None) -> list[dict]:
    """`copy : a b c =` -> `a b c`, `reverse : a b c =` -> `c b a`; corrupted: responses shuffled across
    the source's examples, or replaced by random letters of the same length."""
    out = []
    for _ in range(n):
        s = [rng.choice(LETTERS) for _ in range(rng.randint(3, 6))]
        out.append({"prompt": f"{task} : {' '.join(s)} =", "response": " ".join(s if task == "copy" else s[::-1])})
    if corrupt == "shuffle":
        responses = [o["response"] for o in out]
        rng.shuffle(responses)
        for o, r in zip(out, responses):
            o["response"] = r
    elif corrupt == "random":
        for o in out:
            o["response"] = " ".join(rng.choice(LETTERS) for _ in o["response"].split())
    return out


def _write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tiny model + tokenizer on disk, a 600-example training mix and two 30-example meta sets as JSONL."""
    root = tmp_path_factory.mktemp("causal_lm")
    _save_tiny_lm(root / "model")
    rng = random.Random(0)
    train = []
    for source, task, corrupt in [("copy", "copy", None), ("reverse", "reverse", None),
                                  ("copy_shuffled", "copy", "shuffle"), ("reverse_random", "reverse", "random")]:
        train += [{**r, "source": source} for r in _task(rng, task, 150, corrupt)]
    rng.shuffle(train)
    _write_jsonl(root / "train.jsonl", train)
    for task in CLEAN:
        _write_jsonl(root / f"meta_{task}.jsonl", _task(rng, task, 30))
    return root


def test_wrapper_matches_hf_logits_and_response_loss(workdir):
    net, tok = load_causal_lm(workdir / "model")
    lm = net.to_hf()
    assert net.tied and net.head is None  # tied lm_head: logits from the input embedding, no aliased parameter
    names = [n for n, _ in net.named_parameters()]
    assert len(names) == len(set(names)) == len(list(lm.parameters()))
    assert lm.config.resid_pdrop == 0.0 and lm.config.attn_pdrop == 0.0  # dropout switched off on load
    examples = read_jsonl(workdir / "train.jsonl")[:5]
    enc = encode(examples, tok, max_length=32)
    # targets: next token on the response and the end token only
    for i, ex in enumerate(examples):
        n_resp = len(ex.response.split()) + 1
        scored = (enc.targets[i] != IGNORE_INDEX).nonzero().flatten()
        assert scored.tolist() == list(range(int(enc.prompt_lengths[i]) - 1, int(enc.lengths[i]) - 1))
        assert len(scored) == n_resp
        assert enc.targets[i, scored].tolist() == enc.input_ids[i, scored + 1].tolist()
        assert enc.input_ids[i, int(enc.lengths[i]) - 1] == tok.eos_token_id
    with torch.no_grad():
        ours = net(enc.input_ids)
        for i in range(len(examples)):
            n = int(enc.lengths[i])
            ids = enc.input_ids[i:i + 1, :n]
            ref = lm(ids).logits
            torch.testing.assert_close(ours[i:i + 1, :n], ref, rtol=1e-4, atol=1e-5)
            labels = ids.clone()
            labels[:, :int(enc.prompt_lengths[i])] = IGNORE_INDEX  # HF shifts labels itself
            hf_loss = lm(ids, labels=labels).loss
            torch.testing.assert_close(sequence_nll(ours[i:i + 1], enc.targets[i:i + 1])[0], hf_loss,
                                       rtol=1e-4, atol=1e-5)


def test_bads_ranks_clean_sources_above_corrupted(workdir, tmp_path):
    examples = read_jsonl(workdir / "train.jsonl")
    meta = read_meta_sets({task: workdir / f"meta_{task}.jsonl" for task in CLEAN})
    assert {e.source for e in meta} == set(CLEAN)
    net, tok = load_causal_lm(workdir / "model")
    train, meta_enc = encode_together([examples, meta], tok, max_length=32)
    problem = Problem(net, train.input_ids, train.targets, meta_enc.input_ids, meta_enc.targets, loss=sequence_nll)
    before = nll_per_token(net, meta_enc.input_ids, meta_enc.targets)
    posterior = fit(bads.model, problem, {"beta": 0.5},
                    SamplerConfig(kernel="psgld", step_size=3e-3, local_step_size=0.5, temperature=1e-3, chains=1,
                                  warmup=600, samples=20, thin=10, batch_size=64, meta_batch_size=32,
                                  progress=False, seed=0))
    assert posterior.potential.kind == "fused"  # the fused path agreed with the Pyro trace on GPT-2
    mean_w = posterior.weight_summary()["mean"]
    clean = np.isin(train.sources, CLEAN)
    auroc = roc_auc_score(clean, mean_w)
    keep = select_top_beta(mean_w, 0.5)
    rows = source_weight_table(train.sources, mean_w, keep)
    print(f"\nAUROC {auroc:.3f}\n{markdown_table(rows)}")
    by_source = {r["source"]: r["mean_weight"] for r in rows}
    assert min(by_source[s] for s in CLEAN) > max(by_source[s] for s in CORRUPTED)
    assert auroc >= 0.9
    assert [r["n"] for r in rows] == [150] * 4
    assert sum(r["fraction_selected"] * r["n"] for r in rows) == keep.sum()

    # the network learned the meta tasks and greedy decoding follows the rule
    net.load_params(posterior.potential.network_params(posterior.final_theta[0]))
    after = nll_per_token(net, meta_enc.input_ids, meta_enc.targets)
    assert after < 0.5 * before
    prompts = [meta_enc.input_ids[i, :int(meta_enc.prompt_lengths[i])].tolist() for i in range(len(meta))]
    decoded = greedy_decode(net, prompts, tok.eos_token_id, tok.pad_token_id, max_new_tokens=8)
    correct = np.mean([tok.decode(d, skip_special_tokens=True).split() == ex.response.split()
                       for d, ex in zip(decoded, meta)])
    assert correct > 0.5
    # the Hugging Face model (tie restored) gives the same logits as the wrapper after sampling
    lm = net.to_hf()
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    with torch.no_grad():
        n = int(meta_enc.lengths[0])
        torch.testing.assert_close(lm(meta_enc.input_ids[:1, :n]).logits, net(meta_enc.input_ids[:1, :n]))

    out = write_selected_jsonl(tmp_path / "selected.jsonl", examples, keep, mean_w)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == keep.sum()
    assert {(r["prompt"], r["response"], r["source"]) for r in written} == \
        {(e.prompt, e.response, e.source) for e, k in zip(examples, keep) if k}
    assert not list(tmp_path.glob(".selected.jsonl.*"))  # no temporary file left behind


def test_jsonl_errors_name_line_and_field(tmp_path, workdir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "source": "s"}\n\n{"prompt": "p", "source": "s"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: missing field 'response'"):
        read_jsonl(bad)
    bad.write_text('{"prompt": "p", "response": 3, "source": "s"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'response' must be a string, got int"):
        read_jsonl(bad)
    bad.write_text('{"prompt": "p", "response": "r", "source": "s"}\n{"prompt": "p",\n')
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        read_jsonl(bad)
    bad.write_text('["p", "r", "s"]\n')
    with pytest.raises(DataError, match=r"line 1: expected a JSON object"):
        read_jsonl(bad)
    bad.write_text('{"prompt": "p", "response": "  ", "source": "s"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'response' is empty"):
        read_jsonl(bad)
    bad.write_text("\n")
    with pytest.raises(DataError, match="holds no examples"):
        read_jsonl(bad)
    with pytest.raises(DataError, match=r"missing\.jsonl.*cannot be read"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match=r"cannot be read"):
        read_jsonl(tmp_path)  # a directory
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match=r"binary\.jsonl.*cannot be read"):
        read_jsonl(binary)
    # a meta set without `source` takes its task's name
    meta = tmp_path / "meta.jsonl"
    meta.write_text('{"prompt": "p", "response": "r"}\n')
    assert read_meta_sets({"target": meta})[0].source == "target"
    with pytest.raises(DataError, match="missing field 'source'"):
        read_jsonl(meta)
    with pytest.raises(DataError, match=r"model path .*nowhere.* is not a directory"):
        load_causal_lm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.* cannot be loaded as a causal LM"):
        load_causal_lm(tmp_path / "empty")
    _, tok = load_causal_lm(workdir / "model")
    with pytest.raises(ConfigError, match="max_length must be an integer >= 2, got 1"):
        encode(read_jsonl(workdir / "train.jsonl")[:2], tok, max_length=1)


def test_truncation_keeps_the_response(workdir):
    _, tok = load_causal_lm(workdir / "model")
    ex = read_jsonl(workdir / "train.jsonl")[:1]
    long = [type(ex[0])("copy : " + "a " * 40 + "=", "a b c", "copy")]
    enc = encode(long, tok, max_length=10)
    assert enc.truncated == 1 and enc.width == 10
    assert (enc.targets[0] != IGNORE_INDEX).sum() == 4  # "a b c" + end token, all kept
    assert enc.input_ids[0, 0] != tok.bos_token_id  # the prompt was cut from the left


def test_source_table_rejects_mismatched_lengths():
    with pytest.raises(DataError, match="mean_weights has 2 entries but there are 3 examples"):
        source_weight_table(["a", "b", "c"], [0.1, 0.2])
    rows = source_weight_table(["a", "b", "a"], [0.2, 0.9, 0.4], [False, True, True])
    assert [r["source"] for r in rows] == ["b", "a"]
    assert rows[1]["n"] == 2 and rows[1]["fraction_selected"] == 0.5
    assert rows[1]["mean_weight"] == pytest.approx(0.3) and rows[1]["sd_weight"] == pytest.approx(np.std([0.2, 0.4], ddof=1))


def test_padding_trim_changes_nothing_on_real_positions(workdir):
    from pyro_dps.text import pad_to

    net, tok = load_causal_lm(workdir / "model")
    enc = pad_to(encode(read_jsonl(workdir / "train.jsonl")[:8], tok, max_length=32), 30)
    with torch.no_grad():
        trimmed = net(enc.input_ids)
        net.trim_padding = False
        full = net(enc.input_ids)
    assert trimmed.shape == full.shape == (8, 30, len(tok))
    real = enc.targets != IGNORE_INDEX
    torch.testing.assert_close(trimmed[real], full[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sequence_nll(trimmed, enc.targets), sequence_nll(full, enc.targets))


def test_weight_network_reads_the_pooled_sequence_embedding(workdir):
    """`Problem.forward_features` on a language model gives the masked mean of HF's last hidden states (or
    the end token's state), and the weight-network model runs on it: one weight in (0, 1) per example."""
    from pyro_dps.models import weight_net
    from pyro_dps.potential import TracePotential

    net, tok = load_causal_lm(workdir / "model")
    examples = read_jsonl(workdir / "train.jsonl")[:12]
    enc = encode(examples, tok, max_length=32)
    problem = Problem(net, enc.input_ids[:8], enc.targets[:8], enc.input_ids[8:], enc.targets[8:], loss=sequence_nll)
    params = dict(net.named_parameters())
    with torch.no_grad():
        _, feats = problem.forward_features(params, enc.input_ids[:8])
        lm = net.to_hf()
        for i in range(8):
            n = int(enc.lengths[i])
            hidden = lm(enc.input_ids[i:i + 1, :n], output_hidden_states=True).hidden_states[-1][0]
            torch.testing.assert_close(feats[i], hidden.mean(0), rtol=1e-4, atol=1e-5)
        net.pooling = "last"
        _, last = problem.forward_features(params, enc.input_ids[:1])
        n = int(enc.lengths[0])
        torch.testing.assert_close(last[0], lm(enc.input_ids[:1, :n], output_hidden_states=True).hidden_states[-1][0, -1],
                                   rtol=1e-4, atol=1e-5)
    net.pooling = "mean"
    potential = TracePotential(weight_net.model, problem, {"label_mode": "none", "beta": 0.5})
    theta = potential.init_theta(torch.Generator().manual_seed(0))
    grads = potential.grads(theta, None, torch.arange(4), torch.arange(2), torch.zeros((), dtype=torch.float64))
    assert torch.isfinite(grads.theta).all() and grads.theta.abs().sum() > 0
    w = potential.network_weights(theta)
    assert w.shape == (8,) and bool(((w > 0) & (w < 1)).all())
