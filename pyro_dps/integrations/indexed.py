"""Encoded instructions as a map-style dataset whose items carry their row `index`.

The BADS Trainer keeps one weight per training example; the batch tells it which rows it holds through the
`index` field, so the weights stay with their examples under any sampler's shuffling. Items follow Hugging
Face's causal-LM convention: `labels` are the input ids with -100 off the response (the model shifts them).
"""
from __future__ import annotations

import torch

from ..errors import DataError
from ..text.instructions import IGNORE_INDEX, EncodedInstructions


def labels_from_targets(targets: torch.Tensor) -> torch.Tensor:
    """Hugging Face `labels` (unshifted) from `encode`'s targets (`targets[:, t]` is the token at t + 1)."""
    pad = torch.full_like(targets[:, :1], IGNORE_INDEX)
    return torch.cat([pad, targets[:, :-1]], dim=1)


class IndexedInstructions(torch.utils.data.Dataset):
    """Items {input_ids, attention_mask, labels, index} of `encode(...)`'s output, row i with index i.

    A `datasets.Dataset` works as well when it has an integer `index` column (`ds.add_column("index",
    list(range(len(ds))))`) and equal-length rows or a collator that pads them."""

    def __init__(self, encoded: EncodedInstructions):
        if len(encoded) == 0:
            raise DataError("IndexedInstructions: the encoded set holds no examples")
        self.input_ids = encoded.input_ids
        width = encoded.input_ids.shape[1]
        self.attention_mask = (torch.arange(width)[None, :] < encoded.lengths[:, None]).long()
        self.labels = labels_from_targets(encoded.targets)
        self.sources = encoded.sources

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i],
                "index": torch.tensor(i, dtype=torch.long)}
