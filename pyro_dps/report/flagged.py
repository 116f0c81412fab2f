"""The flagged examples: the ones the report's selection drops, lowest posterior mean weight first (at most
MAX_FLAGGED), each with its thumbnail or text, given and suggested label, weight and 90% interval, and the
true label and clean flag when the data had them; a sortable, filterable table."""
from __future__ import annotations

import numpy as np

from .examples import _Examples
from .html import MAX_FLAGGED, MAX_TEXT, _esc, _table, filter_box
from .plan import _Plan, flagged_order
from .suggestions import Suggestions


def _media(pos: int, info: _Examples, ex) -> str:
    if pos in info.texts:
        return f'<div class="text">{_esc(info.texts[pos][:MAX_TEXT])}</div>'
    uri = info.image_uri(pos)
    return f'<img class="thumb" src="{uri}" alt="example {_esc(ex)}">' if uri else ""


def flagged_section(plan: _Plan, ids: np.ndarray, groups: dict, info: _Examples, sug: Suggestions) -> str:
    """The flagged examples with the lowest weights: thumbnail or text, given and suggested label, weight."""
    order = flagged_order(plan)
    shown = order[:MAX_FLAGGED]
    labels, clean = groups.get("label"), groups.get("clean")
    truth = bool(info.true_labels)
    headers = ["example", "id", "given label", "suggested label", "P(suggested)", "weight mean", "90% interval"]
    headers += (["true label"] if truth else []) + (["clean (ground truth)"] if clean is not None else [])
    rows = []
    for pos in shown.tolist():
        given = labels[pos] if labels is not None else None
        guess, prob = sug.get(pos)
        differs = guess is not None and given is not None and guess != given
        row = [_media(pos, info, ids[pos]), (_esc(ids[pos]), ids[pos] if ids.dtype.kind in "iuf" else None),
               _esc(given) if given is not None else "&ndash;",
               (f'<b class="sug">{guess}</b>' if differs else _esc(guess)) if guess is not None else "&ndash;",
               (f"{prob:.3f}" if prob is not None else "&ndash;", prob), (f"{plan.mean[pos]:.3f}", plan.mean[pos]),
               f"[{plan.lo[pos]:.2f}, {plan.hi[pos]:.2f}]"]
        true = info.true_labels.get(pos)
        row += [_esc(true) if true is not None else "&ndash;"] if truth else []
        row += [("yes" if clean[pos] else "no")] if clean is not None else []
        rows.append(row)
    head = (f"<p>{len(order)} examples are flagged; the {len(shown)} with the lowest posterior mean weight are "
            "listed (all of them in the CSV, column <code>selected</code> = False). Click a header to sort, type "
            "to filter.</p>")
    notes = "".join(f'<p class="note">{_esc(t)}</p>' for t in (sug.note, info.note) if t)
    return ('<section id="flagged"><h2>Flagged examples</h2>' + head + notes
            + (filter_box("flagged-table", "filter: id, label, text, ...")
               + _table(headers, rows, "sortable flagged", "flagged-table") if rows else '<p class="note">none</p>')
            + "</section>")
