"""The weights section: the weight draws and posterior means per group level (violins and boxes, at most
MAX_LEVELS levels per grouping), each example's P(w > tau) against the width of its 90% interval, and a table
of the groups' mean weights and selected fractions."""
from __future__ import annotations

import numpy as np

from ..diagnostic_plots import plot_weights_by_group
from .html import MAX_LEVELS, _cell, _esc, _figure, _figure_uri, _fmt, _table
from .plan import _Plan
from .plots import plot_certainty


def _weights_section(data, draws: np.ndarray, groups: dict, plan: _Plan) -> str:
    rows, cut = [], []
    for key, values in groups.items():
        levels, counts = np.unique(values, return_counts=True)
        shown = levels[np.sort(np.argsort(-counts, kind="stable")[:MAX_LEVELS])]
        if len(levels) > len(shown):
            cut.append(f"{key}: the {len(shown)} largest of {len(levels)} levels")
        for level in shown.tolist():
            cols = values == level
            name = ("clean" if level else "noisy") if key == "clean" else str(level)
            rows.append([_esc(key), _esc(_cell(name)), str(int(cols.sum())), _fmt(float(plan.mean[cols].mean())),
                         _fmt(float(np.median(plan.mean[cols]))), _fmt(float(plan.keep_top[cols].mean()))])
    note = f'<p class="note">Shown: {_esc("; ".join(cut))} (all of them in the CSV).</p>' if cut else ""
    return ('<section id="weights"><h2>Weight distributions by group</h2>'
            + _figure(_figure_uri(plot_weights_by_group(data)), "weights by group",
                      "Pooled weight draws (violins) and posterior means (boxes) per group; right: every "
                      "example's posterior mean and 90% interval, sorted.")
            + _figure(_figure_uri(plot_certainty(draws, groups.get("clean"), plan.tau)), "certainty of each weight",
                      f"Each example's P(w &gt; {plan.tau:g}) against the width of its 90% interval: decided examples "
                      "sit at 0 or 1 with narrow intervals; those in between, with wide intervals, are the ones to "
                      "look at by hand.")
            + _table(["group", "level", "examples", "mean weight", "median of means",
                      f"selected at beta={plan.beta:g}"], rows)
            + note + "</section>")
