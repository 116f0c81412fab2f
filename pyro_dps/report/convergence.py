"""The convergence section: the checks (rank-normalised split R-hat, bulk/tail ESS, MCSE, non-finite and
rejected steps) with pass/warn/fail badges in a sortable table, the R-hat and ESS histograms, and ArviZ's own
trace, rank and ESS-evolution plots of the per-draw scalars and the weights with the highest R-hat. Beyond
MAX_DIAG_EXAMPLES weights the per-weight statistics are those of a fixed random sample, as the page says."""
from __future__ import annotations

import numpy as np

from ..arviz_data import to_arviz
from ..diagnostic_plots import plot_diagnostic_histograms
from ..diagnostics import Thresholds, overall, worst_examples
from .html import _badge, _esc, _figure, _figure_uri, _table, filter_box
from .plots import diagnostic_figures

MAX_DIAG_EXAMPLES = 1000  # weights whose R-hat/ESS/MCSE the report computes (a fixed random sample beyond)

HINT = ("<p><b>Why the chains may disagree, and what helps.</b> At a cold temperature each chain settles "
        "in its own mode of the network; an example that one mode explains and another does not is kept by "
        "one chain and dropped by another, and such examples are the ones with a high R-hat (an ambiguous "
        "example, not a broken sampler). More chains, a longer <code>warmup</code> and more draws "
        "(<code>samples</code>) raise the ESS. theta_norm is not checked: the network's permutation "
        "symmetries give each chain an equivalent mode with its own |theta|.</p>")


def _diagnosed_sample(ds, data):
    """(ArviZ data the convergence checks run on, sample note): all weights up to MAX_DIAG_EXAMPLES, else a
    fixed random sample of them (ArviZ's per-variable statistics cost milliseconds per weight)."""
    n = ds.sizes["example"]
    if n <= MAX_DIAG_EXAMPLES:
        return data, ""
    pick = np.sort(np.random.default_rng(0).choice(n, MAX_DIAG_EXAMPLES, replace=False))
    note = (f" The per-weight statistics below are of a fixed random sample of {MAX_DIAG_EXAMPLES} of the {n} "
            "weights (their fractions estimate those of all weights to about &plusmn;2 points).")
    return to_arviz(ds.isel(example=pick)), note


def _diagnostics_section(diag, checks, th: Thresholds, data, n: int, sampled: str = "") -> str:
    frac = diag.rhat_fraction(th.rhat_fail)
    rows = [[_badge(c.status), _esc(c.name), _esc(c.value), _esc(c.threshold), _esc(c.message)] for c in checks]
    worst = worst_examples(diag, 3)
    return (
        '<section id="diagnostics"><h2>Convergence diagnostics</h2>'
        f'<p class="summary-line">Overall: {_badge(overall(checks))} &nbsp; {100 * frac:.1f}% of the weights have '
        f'R-hat &lt; {th.rhat_fail} (target: at least 95%).</p>'
        f'<p class="muted">Rank-normalised split R-hat, bulk/tail ESS and MCSE from ArviZ. Thresholds: R-hat '
        f'&gt; {th.rhat_warn} warns, &gt; {th.rhat_fail} fails; ESS below {th.ess_floor:.0f} per chain '
        f'warns; theta_norm is reported, not checked (permutation symmetries); for the {n} weights a check '
        f'fails when more than {100 * th.max_bad_fraction:.0f}% of them are past the limit. Non-finite draws or steps fail; steps the divergence guard rejected '
        f'warn.{sampled}</p>'
        + filter_box("checks-table", "filter the checks")
        + _table(["status", "check", "value", "threshold", "detail"], rows, "checks sortable", "checks-table")
        + (HINT if frac < 0.95 else "")
        + _figure(_figure_uri(plot_diagnostic_histograms(diag, th)), "R-hat and ESS histograms",
                  "Per-example R-hat and bulk ESS of the weights, thresholds dashed.")
        + "".join(_figure(_figure_uri(f.figure), f.alt, f.caption)
                  for f in diagnostic_figures(data, worst, th.ess_needed(diag.chains)))
        + "</section>")
