"""Hugging Face causal language models as BADS networks: load from a local path, wrap, evaluate.

    net, tokenizer = load_causal_lm("path/to/model")          # never downloads
    train, meta = encode_together([train_examples, meta_examples], tokenizer, max_length=256)
    problem = Problem(net, train.input_ids, train.targets, meta.input_ids, meta.targets, loss=sequence_nll)

`CausalLMLogits.forward(input_ids)` builds the attention mask from the pad id and returns logits
(B, L, V) aligned with `encode`'s next-token targets. It holds the model's body and, when the output
embedding is tied to the input embedding (GPT-2 and most small LMs), computes the logits from the input
embedding itself instead of holding `lm_head`: the wrapper then has no aliased parameters, so
`torch.func.functional_call` (trace path) and the fused path's flat-buffer rebinding see one tensor
per weight and the tie cannot break during sampling.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..losses import sequence_nll
from .instructions import IGNORE_INDEX, special_ids


def _require_transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("language models need the optional extra: pip install 'pyro-dps[text]'") from exc
    return transformers


class CausalLMLogits(nn.Module):
    """A causal LM as `input_ids (B, L) -> logits (B, L, V)`, padding masked by `pad_id`.

    `init_from_module = True` makes every BADS chain start at the loaded weights (a pretrained model
    is the point of fine-tuning) instead of a fresh random draw. `trim_padding` runs CPU batches only up
    to their longest row (the output keeps the input's width, zero logits on the trimmed columns).
    The sequence embedding a weight network reads (`Problem.forward_features`) is the input of
    `features_module`: the mean of the last hidden states over the non-padding tokens (`pooling="mean"`)
    or the last non-padding token's state (`pooling="last"`, the end-of-sequence token).
    """

    init_from_module = True

    def __init__(self, lm: nn.Module, pad_id: int, trim_padding: bool = True, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ConfigError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        self.features_module = nn.Identity()  # sees the pooled sequence embedding (a hook point, no parameters)
        body = getattr(lm, "base_model", None)
        if body is None or body is lm:
            raise ConfigError(f"{type(lm).__name__} has no separate base model to take hidden states from")
        inp, out = lm.get_input_embeddings(), lm.get_output_embeddings()
        if out is None:
            raise ConfigError(f"{type(lm).__name__} has no output embedding (is it a causal LM?)")
        self.body = body
        self.tied = out.weight is inp.weight
        self.head = None if self.tied else out
        if self.tied and getattr(out, "bias", None) is not None:
            self.head_bias = out.bias
        else:
            self.head_bias = None
        self.pad_id = int(pad_id)
        self.trim_padding = trim_padding  # CPU only: finding the used width reads the device
        config = lm.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.logit_scale = getattr(config, "logit_scale", None)
        object.__setattr__(self, "_lm", lm)  # not a submodule: its parameters are this module's

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        width = input_ids.shape[1]
        if self.trim_padding and input_ids.device.type == "cpu" and width > 1:
            # Right padding: columns after the batch's longest row change no real position's output (causal
            # attention) and are scored by no target; skip them and return zero logits there.
            used = int(mask.cumsum(1).argmax(1).max()) + 1
            if used < width:
                logits = self.forward(input_ids[:, :used])
                return F.pad(logits, (0, 0, 0, width - used))
        hidden = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "mean":
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        else:
            last = (mask.cumsum(1).argmax(1)).clamp_min(0)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        self.features_module(pooled)
        if self.tied:
            logits = F.linear(hidden, self.body.get_input_embeddings().weight, self.head_bias)
        else:
            logits = self.head(hidden)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @torch.no_grad()
    def load_params(self, params: Mapping[str, torch.Tensor]) -> "CausalLMLogits":
        """Copy parameter values (e.g. `posterior.potential.network_params(theta)`) into the module."""
        own = dict(self.named_parameters())
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise ConfigError(f"load_params: unknown parameter(s) {unknown[:5]}")
        for name, value in params.items():
            own[name].copy_(value)
        return self

    def to_hf(self) -> nn.Module:
        """The Hugging Face model with this module's current weights (tie restored), for `save_pretrained`."""
        lm = self._lm
        if self.tied:
            lm.get_output_embeddings().weight = lm.get_input_embeddings().weight
        return lm


def _dropout_overrides(config, dropout: float) -> dict:
    """Config fields that set a dropout probability (`*dropout`, `*pdrop`), all set to `dropout`."""
    return {k: dropout for k, v in config.to_dict().items()
            if (k.endswith("dropout") or k.endswith("pdrop")) and isinstance(v, float)}


def load_causal_lm(path: str | os.PathLike, dropout: float | None = 0.0,
                   dtype: torch.dtype = torch.float32) -> tuple[CausalLMLogits, object]:
    """(wrapped model, tokenizer) from a local directory; nothing is downloaded, and only safetensors
    weights are read (a `pytorch_model.bin` is a pickle and is refused).

    `dropout` overrides every dropout probability of the config (0 by default: Langevin dynamics samples
    a fixed density, and the fused path checks the gradient against a second forward pass); None keeps them.
    """
    transformers = _require_transformers()
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"model path {str(path)!r} is not a directory")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        overrides = {} if dropout is None else _dropout_overrides(config, float(dropout))
        for key, value in overrides.items():
            setattr(config, key, value)
        # safetensors weights only: a pytorch_model.bin is a pickle, never loaded from a user's path
        lm = transformers.AutoModelForCausalLM.from_pretrained(str(path), config=config, local_files_only=True,
                                                               use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"model path {str(path)!r} cannot be loaded as a causal LM: {exc}") from exc
    lm = lm.to(dtype)
    lm.eval()
    _, _, pad = special_ids(tokenizer)
    if pad >= lm.get_input_embeddings().weight.shape[0]:
        raise DataError(f"tokenizer pad id {pad} is outside the model's vocabulary "
                        f"({lm.get_input_embeddings().weight.shape[0]} tokens)")
    return CausalLMLogits(lm, pad), tokenizer


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def response_nll(logits_fn: LogitsFn, input_ids: torch.Tensor, targets: torch.Tensor,
                 batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example token-averaged NLL, per-example count of scored tokens) over the response tokens."""
    losses, counts = [], []
    for i in range(0, input_ids.shape[0], batch_size):
        x, y = input_ids[i:i + batch_size], targets[i:i + batch_size]
        losses.append(sequence_nll(logits_fn(x), y))
        counts.append((y != IGNORE_INDEX).sum(1))
    return torch.cat(losses), torch.cat(counts)


def nll_per_token(logits_fn: LogitsFn, input_ids: torch.Tensor, targets: torch.Tensor, batch_size: int = 64) -> float:
    """Corpus-level NLL per response token (total NLL / total tokens)."""
    per_example, counts = response_nll(logits_fn, input_ids, targets, batch_size)
    return float((per_example * counts).sum() / counts.sum().clamp_min(1))


@torch.no_grad()
def greedy_decode(logits_fn: LogitsFn, prompts: Sequence[Sequence[int]], eos_id: int, pad_id: int,
                  max_new_tokens: int = 64, batch_size: int = 64) -> list[list[int]]:
    """Greedy continuations (without the end token) of token-id prompts; right-padded batches, no cache.

    Causal attention means the padding after a prompt never influences its own next token, so prompts of
    different lengths share a batch; suited to the small models this library trains on a CPU.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    results: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start:start + batch_size]]
        if any(not p for p in chunk):
            raise DataError("greedy_decode: an empty prompt has nothing to continue")
        n = len(chunk)
        lens = torch.tensor([len(p) for p in chunk])
        buf = torch.full((n, int(lens.max()) + max_new_tokens), pad_id, dtype=torch.long)
        for i, p in enumerate(chunk):
            buf[i, :len(p)] = torch.tensor(p, dtype=torch.long)
        cur, done = lens.clone(), torch.zeros(n, dtype=torch.bool)
        rows = torch.arange(n)
        for _ in range(max_new_tokens):
            logits = logits_fn(buf[:, :int(cur.max())])
            nxt = logits[rows, cur - 1].argmax(-1)
            active = ~done
            buf[rows[active], cur[active]] = nxt[active]
            cur = cur + active.long()
            done = done | (nxt == eos_id)
            if bool(done.all()):
                break
        for i in range(n):
            out = buf[i, lens[i]:cur[i]].tolist()
            results.append(out[:-1] if out and out[-1] == eos_id and done[i] else out)
    return results
