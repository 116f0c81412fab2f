"""Instruction data for causal language models: JSONL loading, validation and tokenisation.

One example per line, a JSON object with string fields `prompt`, `response` and `source` (the data
source or task it came from; meta sets may omit it and take the task's name instead):

    {"prompt": "reverse: a b c =", "response": "c b a", "source": "reverse"}

`encode` turns examples into the tensors a `Problem` takes: right-padded `input_ids` (N, L) and
`targets` (N, L) aligned with the network's outputs: `targets[:, t]` is the token at `t + 1` when
that token belongs to the response (or is the closing end-of-sequence token), else `ignore_index`.
So `pyro_dps.losses.sequence_nll(logits, targets)` is the token-averaged NLL of the response only.
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError

IGNORE_INDEX = -100
FIELDS = ("prompt", "response", "source")


@dataclass(frozen=True)
class InstructionExample:
    """One prompt/response pair, the source it came from, and where it was read (for error messages)."""

    prompt: str
    response: str
    source: str
    origin: str = ""  # e.g. "data.jsonl line 12"
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other fields of the record, kept for output

    def record(self) -> dict[str, Any]:
        """The example as a JSON-ready dict (extra fields first, then prompt, response, source)."""
        return {**self.extra, "prompt": self.prompt, "response": self.response, "source": self.source}


def _open_text(path: Path):
    """A text handle on a plain or gzip-compressed file."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def example_from_record(record: Any, origin: str, default_source: str | None = None) -> InstructionExample:
    """Validate one decoded JSON record; DataError names `origin` (file and line) and the field."""
    if not isinstance(record, dict):
        raise DataError(f"{origin}: expected a JSON object with fields {list(FIELDS)}, got {type(record).__name__}")
    values = {}
    for name in FIELDS:
        if name not in record:
            if name == "source" and default_source is not None:
                values[name] = default_source
                continue
            raise DataError(f"{origin}: missing field {name!r} (fields present: {sorted(record)})")
        value = record[name]
        if not isinstance(value, str):
            raise DataError(f"{origin}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}")
        values[name] = value
    if not values["response"].strip():
        raise DataError(f"{origin}: field 'response' is empty: there is nothing to score")
    if not values["source"].strip():
        raise DataError(f"{origin}: field 'source' is empty")
    extra = {k: v for k, v in record.items() if k not in FIELDS}
    return InstructionExample(values["prompt"], values["response"], values["source"], origin, extra)


def read_jsonl(path: str | os.PathLike, default_source: str | None = None) -> list[InstructionExample]:
    """Examples from a JSONL file (optionally .gz). Unreadable files, bad JSON lines, missing or non-string
    fields raise DataError naming the file, the line and the field. Blank lines are skipped."""
    path = Path(path)
    examples = []
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path} line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{origin}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
                examples.append(example_from_record(record, origin, default_source))
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"instruction file {str(path)!r} cannot be read: {reason}") from exc
    if not examples:
        raise DataError(f"instruction file {str(path)!r} holds no examples")
    return examples


def read_meta_sets(paths: Mapping[str, str | os.PathLike]) -> list[InstructionExample]:
    """One meta set per target task ({task: path}); each example's `source` defaults to its task name."""
    if not paths:
        raise ConfigError("meta sets: at least one {task: path} entry is required")
    out = []
    for task, path in paths.items():
        out.extend(read_jsonl(path, default_source=str(task)))
    return out


@dataclass
class EncodedInstructions:
    """Token tensors for a list of examples (right-padded) plus what is needed to report on them."""

    input_ids: torch.Tensor  # long (N, L)
    targets: torch.Tensor  # long (N, L); IGNORE_INDEX on prompt, padding and the last position
    prompt_lengths: torch.Tensor  # long (N,): tokens of the (possibly left-truncated) prompt
    lengths: torch.Tensor  # long (N,): prompt + response + end-of-sequence tokens
    sources: np.ndarray  # str (N,)
    truncated: int  # examples shortened to fit max_length
    pad_id: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_ids(tokenizer) -> tuple[int | None, int, int]:
    """(bos, eos, pad) token ids; pad falls back to eos. A tokenizer without an end token is a ConfigError."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("tokenizer has no eos_token: the response's end cannot be marked")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return tokenizer.bos_token_id, int(eos), int(pad)


def tokenize_pair(tokenizer, prompt: str, response: str, max_length: int,
                  add_bos: bool = True) -> tuple[list[int], int, bool]:
    """[bos] + prompt + response + [eos] as ids, the prompt length, and whether it was truncated.

    The response is tokenised on its own (so its tokens do not depend on the prompt's last characters)
    and kept whole when possible: the prompt is cut from the left first, then the response from the right.
    """
    bos, eos, _ = special_ids(tokenizer)
    head = [bos] if add_bos and bos is not None else []
    prompt_ids = head + _ids(tokenizer, prompt)
    response_ids = _ids(tokenizer, response) + [eos]
    if not prompt_ids:  # the first response token must be predicted from something
        prompt_ids = [eos]
    truncated = False
    if len(prompt_ids) + len(response_ids) > max_length:
        truncated = True
        room = max(1, max_length - len(response_ids))
        prompt_ids = prompt_ids[-room:]
        response_ids = response_ids[:max_length - len(prompt_ids)]
    return prompt_ids + response_ids, len(prompt_ids), truncated


def response_targets(input_ids: torch.Tensor, prompt_lengths: torch.Tensor, lengths: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-token targets scored on the response only: targets[i, t] = input_ids[i, t + 1] for
    prompt_lengths[i] - 1 <= t < lengths[i] - 1, ignore_index elsewhere."""
    n, width = input_ids.shape
    pos = torch.arange(width).expand(n, width)
    shifted = torch.cat([input_ids[:, 1:], input_ids.new_full((n, 1), ignore_index)], dim=1)
    scored = (pos >= prompt_lengths[:, None] - 1) & (pos < lengths[:, None] - 1)
    return torch.where(scored, shifted, torch.full_like(shifted, ignore_index))


def encode(examples: Sequence[InstructionExample], tokenizer, max_length: int = 256, width: int | None = None,
           add_bos: bool = True) -> EncodedInstructions:
    """Tokenise examples into right-padded (input_ids, targets); `width` pads to a fixed length (default: longest)."""
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}")
    if not examples:
        raise DataError("no examples to encode")
    _, _, pad = special_ids(tokenizer)
    rows, prompt_lengths, truncated = [], [], 0
    for ex in examples:
        ids, n_prompt, cut = tokenize_pair(tokenizer, ex.prompt, ex.response, max_length, add_bos)
        rows.append(ids)
        prompt_lengths.append(n_prompt)
        truncated += cut
    longest = max(len(r) for r in rows)
    width = longest if width is None else width
    if width < longest:
        raise ConfigError(f"width={width} is shorter than the longest encoded example ({longest} tokens)")
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    prompt_lengths_t = torch.tensor(prompt_lengths, dtype=torch.long)
    return EncodedInstructions(input_ids, response_targets(input_ids, prompt_lengths_t, lengths), prompt_lengths_t,
                               lengths, np.array([ex.source for ex in examples], dtype=object), truncated, pad)


def pad_to(encoded: EncodedInstructions, width: int) -> EncodedInstructions:
    """The same examples right-padded to `width` tokens (pad id in the inputs, ignore_index in the targets)."""
    extra = width - encoded.width
    if extra < 0:
        raise ConfigError(f"width={width} is shorter than the encoded examples ({encoded.width} tokens)")
    if extra == 0:
        return encoded
    n = len(encoded)
    ids = torch.cat([encoded.input_ids, encoded.input_ids.new_full((n, extra), encoded.pad_id)], dim=1)
    targets = torch.cat([encoded.targets, encoded.targets.new_full((n, extra), IGNORE_INDEX)], dim=1)
    return EncodedInstructions(ids, targets, encoded.prompt_lengths, encoded.lengths, encoded.sources,
                               encoded.truncated, encoded.pad_id)


def encode_together(sets: Iterable[Sequence[InstructionExample]], tokenizer, max_length: int = 256,
                    add_bos: bool = True) -> list[EncodedInstructions]:
    """Encode several example lists (train, meta, test ...) to one common width, as `Problem` requires."""
    encoded = [encode(s, tokenizer, max_length, add_bos=add_bos) for s in sets]
    width = max(e.width for e in encoded)
    return [pad_to(e, width) for e in encoded]
