"""The trusted and uncertain sections: galleries of the most and least trusted examples (highest and lowest
posterior mean weight) and of the examples whose 90% interval straddles the selection's cut, widest first;
each card shows the thumbnail or text, the given (and true) label, the clean flag when known, and the weight."""
from __future__ import annotations

import numpy as np

from .examples import _Examples
from .html import MAX_TEXT, N_SHOW, _esc
from .plan import _Plan


def _gallery_sections(plan: _Plan, ids: np.ndarray, groups: dict, info: _Examples, n: int) -> str:
    labels = groups.get("label")
    clean = groups["clean"].astype(bool) if "clean" in groups else None

    def card(pos: int) -> str:
        ex = ids[pos]
        cls = "" if clean is None else (" clean" if clean[pos] else " noisy")
        lines = [f"<b>#{_esc(ex)}</b>"]
        if labels is not None:
            given = f"label {_esc(labels[pos])}"
            true = info.true_labels.get(pos)
            if true is not None and true != labels[pos]:
                given += f" (true {_esc(true)})"
            lines.append(given)
        if clean is not None:
            lines.append("clean" if clean[pos] else "noisy")
        lines += [f"w = {plan.mean[pos]:.3f}", f"90%: [{plan.lo[pos]:.2f}, {plan.hi[pos]:.2f}]"]
        uri = info.image_uri(pos)
        media = f'<img src="{uri}" alt="example {_esc(ex)}">' if uri else ""
        if pos in info.texts:
            media = f'<div class="text">{_esc(info.texts[pos][:MAX_TEXT])}</div>'
        return f'<div class="card{cls}">{media}' + "<br>".join(lines) + "</div>"

    def gallery(positions) -> str:
        return '<div class="gallery">' + "".join(card(int(p)) for p in positions) + "</div>"

    note = f'<p class="note">{_esc(info.note)}</p>' if info.note else ""
    unsure = plan.unsure_order
    return ('<section id="trusted"><h2>Most and least trusted examples</h2>' + note
            + f"<h3>Most trusted (highest posterior mean weight)</h3>{gallery(plan.order[:N_SHOW])}"
            + f"<h3>Least trusted (lowest posterior mean weight)</h3>{gallery(plan.order[::-1][:N_SHOW])}"
            + "</section>"
            + '<section id="uncertain"><h2>Uncertain examples</h2>'
            f"<p>{len(unsure)} of {n} examples ({100 * len(unsure) / n:.1f}%) have a 90% interval that "
            f"straddles the selection boundary w = {plan.cut:.3f} (the cut of the top-beta selection below): "
            f"their keep/drop decision is not settled by the posterior. Widest intervals first (the {N_SHOW} "
            "widest shown).</p>"
            + (gallery(unsure[:N_SHOW]) if len(unsure) else '<p class="note">none</p>') + "</section>")
