"""The estimated label confusion: given label x suggested label, each example weighted by its posterior
expected drop (1 - its posterior mean weight), over every example when the run suggested a label for each,
else over the listed flagged examples whose suggestion was recomputed."""
from __future__ import annotations

import numpy as np

from .html import MAX_FLAGGED, _esc, _table
from .plan import _Plan, flagged_order
from .suggestions import Suggestions

MAX_CONFUSION = 20  # classes the confusion table shows (those with the most weight); the others are "other"


def confusion_counts(given: np.ndarray, suggested: np.ndarray, weights: np.ndarray,
                     max_classes: int = MAX_CONFUSION) -> tuple[list[str], np.ndarray]:
    """(class names, (M, K, K) sums of each of the M rows of `weights` (M, N) per (given, suggested) pair): the
    `max_classes` classes with the most of the first row's weight as given or suggested label, the rest folded
    into a last class "other"."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    classes = np.unique(np.concatenate([given, suggested]))
    k = len(classes)
    cell = np.searchsorted(classes, given) * k + np.searchsorted(classes, suggested)
    mass = np.stack([np.bincount(cell, weights=w, minlength=k * k).reshape(k, k) for w in weights])
    if k <= max_classes:
        return [str(c) for c in classes], mass
    keep = np.sort(np.argsort(-(mass[0].sum(0) + mass[0].sum(1)), kind="stable")[:max_classes])
    index = np.full(k, max_classes)
    index[keep] = np.arange(max_classes)
    folded = np.zeros((len(weights), max_classes + 1, max_classes + 1))
    np.add.at(folded, (slice(None), index[:, None], index[None, :]), mass)
    return [str(c) for c in classes[keep]] + ["other"], folded


def confusion_section(plan: _Plan, groups: dict, sug: Suggestions) -> str:
    """Given label x suggested label, each example weighted by its posterior probability of being dropped."""
    title = '<section id="confusion"><h2>Estimated label confusion</h2>'
    labels = groups.get("label")
    known = np.flatnonzero(sug.label >= 0)
    if not sug.every_example:  # an older run directory: the listed flagged examples' recomputed suggestions
        known = np.intersect1d(known, flagged_order(plan)[:MAX_FLAGGED])
    if labels is None or not known.size:
        return (title + '<p class="note">No suggested labels (see the flagged examples above), so no confusion '
                "table.</p></section>")
    given, suggested, drop = np.asarray(labels)[known], sug.label[known], 1.0 - plan.mean[known]
    names, (mass, flagged) = confusion_counts(given, suggested, np.stack([drop, ~plan.keep_top[known]]))
    rows = []
    for i, name in enumerate(names):
        if mass[i].sum() >= 0.05 or flagged[i].sum():
            rows.append([f"<b>{_esc(name)}</b>"] + [(f"{v:.1f}" if v >= 0.05 else "&middot;", v) for v in mass[i]]
                        + [(f"{mass[i].sum():.1f}", mass[i].sum()), (str(int(flagged[i].sum())), flagged[i].sum())])
    off = float(mass.sum() - np.trace(mass))  # ("other" x "other" counts as diagonal)
    scope = (f"all {len(known)} examples (the {int((~plan.keep_top).sum())} flagged ones included)"
             if sug.every_example else f"the {len(known)} listed flagged examples only (see the note above)")
    return (title + f"<p>Estimated number of corrupted examples per given label (rows) and suggested label "
            f"(columns), over {scope}: each example contributes 1 &minus; its posterior mean weight (its posterior "
            "expected drop, as in the summary's corruption rate) to the cell of its given and suggested label. "
            f"Total {mass.sum():.1f}, of which {off:.1f} off the diagonal: examples the network would relabel. The "
            "diagonal holds examples whose given label the network agrees with, suspect for another reason "
            "(ambiguous, atypical, or a weight the chains disagree on). Last column: the flagged examples "
            "(counted, not weighted) per given label.</p>"
            + _table(["given \\ suggested"] + [_esc(n) for n in names] + ["total", "flagged"], rows,
                     "confusion sortable", "confusion-table")
            + "</section>")
