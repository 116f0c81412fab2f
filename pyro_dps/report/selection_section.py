"""The selection section: the top-beta and probability rules at the configured budget, with their sizes,
precision and recall against the clean flags (when known), the chains' agreement, and where the full
per-example table is (the CSV beside the page)."""
from __future__ import annotations

import numpy as np

from ..selection import chain_jaccard, jaccard, mean_offdiagonal, probability_rule, top_beta_rule
from .html import _esc, _fmt, _table
from .plan import _Plan


def _selection_section(plan: _Plan, draws: np.ndarray, groups: dict, csv_name: str) -> str:
    clean = groups["clean"].astype(bool) if "clean" in groups else None

    def quality(mask: np.ndarray) -> list[str]:
        if clean is None:
            return ["&ndash;", "&ndash;"]
        sel = int(mask.sum())
        prec = float(clean[mask].mean()) if sel else float("nan")
        rec = float(mask[clean].mean()) if clean.any() else float("nan")
        return [_fmt(prec, 3), _fmt(rec, 3)]

    rules = [(f"top-beta by posterior mean ({plan.beta_note}; k = floor(N beta) = {plan.k})", plan.keep_top,
              top_beta_rule(plan.beta)),
             (f"P(w &gt; {plan.tau:g}) &ge; {plan.q:g}", plan.keep_prob, probability_rule(plan.tau, plan.q))]
    rows = []
    for name, mask, rule in rules:
        agreement = mean_offdiagonal(chain_jaccard(draws, rule)) if draws.shape[0] > 1 else float("nan")
        rows.append([name, str(int(mask.sum())), _fmt(float(mask.mean()), 3), *quality(mask),
                     _fmt(agreement, 3), str(int((mask & plan.unsure).sum()))])
    return ('<section id="selection"><h2>Selection at the configured budget</h2>'
            + _table(["rule", "selected", "fraction", "precision (clean among selected)",
                      "recall (of clean)", "chain agreement (mean pairwise Jaccard)", "of them uncertain"], rows)
            + f"<p>Jaccard agreement of the two rules: {jaccard(plan.keep_top, plan.keep_prob):.3f}. Chain "
              "agreement: the rule applied to each chain's draws alone, compared pairwise.</p>"
            + f'<p>The full selection table is the file <code class="csv">{_esc(csv_name)}</code> beside '
              "this page (not embedded, so the page stays small whatever N_t): one row per example with groups, "
              f"mean, 90% interval, P(w &gt; {plan.tau:g}), the top-beta decision and the uncertain flag.</p>"
              "</section>")
