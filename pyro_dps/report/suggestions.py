"""Suggested labels on the page: the class the run's posterior predictive finds most likely for each example,
the softmax averaged over the run's theta snapshots, with its probability and a note on where it came from.

The run computes it for every example (`pyro_dps.suggested`) and writes it into weights.csv, which
`stored_suggestions` reads back; a posterior in memory gives it for every example directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Suggestions:
    """Suggested label and its probability per example position (-1 and NaN where unknown), with a note on
    where they came from; `every_example`: computed by the run for every example, so every one has one."""

    label: np.ndarray
    prob: np.ndarray
    note: str
    every_example: bool = False

    def get(self, pos: int) -> tuple[int | None, float | None]:
        """(suggested class, its probability) of example position `pos`, or (None, None)."""
        return (int(self.label[pos]), float(self.prob[pos])) if self.label[pos] >= 0 else (None, None)


def every_example(label: np.ndarray, prob: np.ndarray, source: str) -> Suggestions:
    """The suggested labels of every example, computed by the run (`source` says where they were read)."""
    return Suggestions(np.asarray(label, np.int64), np.asarray(prob, np.float64),
                       "Suggested label: the most likely class under the posterior predictive (softmax averaged "
                       f"over the run's theta snapshots), computed by the run for every example ({source}).", True)


def no_suggestions(n: int, note: str) -> Suggestions:
    """No example has a suggested label; `note` says why."""
    return Suggestions(np.full(n, -1, np.int64), np.full(n, np.nan), note)
