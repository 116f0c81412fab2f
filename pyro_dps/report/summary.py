"""The page's first section, what a person reads in ten seconds: how many examples the selection flags, the
estimated corruption rate overall and per class and group (with what its interval means at T < 1), how many
flagged examples the posterior predictive would relabel, the probes' detection quality, and one sentence on
convergence with what to do when it fails."""
from __future__ import annotations

import numpy as np

from ..selection import corruption_rate, corruption_rate_by_group
from .html import MAX_LEVELS, _badge, _cell, _esc, _fmt, _table
from .plan import _Plan
from .suggestions import Suggestions


def _rate(est: float, lo: float, hi: float) -> str:
    return f"<b>{100 * est:.1f}%</b> <span class=\"muted\">(90%: {100 * lo:.1f}&ndash;{100 * hi:.1f}%)</span>"


def _convergence_sentence(status: str, checks) -> str:
    bad = [c.name for c in checks if c.status != "pass"]
    if status == "pass":
        return f"{_badge(status)} Convergence: every check passes; the numbers below can be trusted as estimates."
    return (f"{_badge(status)} Convergence: {len(bad)} check(s) do not pass ({_esc(', '.join(bad[:6]))}). Run more "
            "chains and more draws (<code>sampler.chains</code>, <code>sampler.samples</code>, a longer "
            "<code>warmup</code>) before acting on borderline examples. The examples with a high R-hat are "
            "ones some chains keep and others drop: ambiguous examples to look at by hand, not a broken sampler "
            "(see <a href=\"#diagnostics\">diagnostics</a> and <a href=\"#uncertain\">uncertain examples</a>).")


def _cold_note(metrics: dict) -> str:
    """What the rate's interval means when the run sampled a cold posterior (T < 1), else nothing."""
    t = (metrics.get("config") or {}).get("sampler", {}).get("temperature")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t >= 1:
        return ""
    return (f" The interval is that of a cold posterior (T = {t:g}): it says how firmly the chains agree, not "
            "how far the estimate may be from the truth.")


def _probe_sentence(probes) -> str:
    if not isinstance(probes, dict) or "auroc" not in probes:
        return ""
    return (f"<li>Self-check with {_fmt(probes.get('n_good'))} known-good and {_fmt(probes.get('n_bad'))} "
            f"known-corrupted probe examples: AUROC {_fmt(probes.get('auroc'), 3)}, precision "
            f"{_fmt(probes.get('precision'), 3)} and recall {_fmt(probes.get('recall'), 3)} of the rule "
            f"P(w &gt; {_fmt(probes.get('tau'))}) &ge; {_fmt(probes.get('q'))} "
            "(<a href=\"#probes\">details</a>).</li>")


def _rate_rows(draws: np.ndarray, groups: dict, flagged: np.ndarray) -> list[list]:
    """Per class, then per other group level: examples, flagged, estimated corruption rate and interval."""
    rows = []
    for key in ["label"] + [k for k in groups if k != "label"]:
        if key not in groups:
            continue
        r = corruption_rate_by_group(draws, groups[key])
        shown = np.sort(np.argsort(-r["count"], kind="stable")[:MAX_LEVELS])
        codes = np.searchsorted(r["level"], groups[key])
        nflag = np.bincount(codes[flagged], minlength=len(r["level"]))
        for i in shown.tolist():
            level = r["level"][i]
            name = (("clean" if level else "corrupted") + " (ground truth)") if key == "clean" else str(level)
            rows.append([_esc("class" if key == "label" else key), _esc(_cell(name)),
                         (str(r["count"][i]), r["count"][i]), (str(nflag[i]), nflag[i]),
                         (f"{100 * r['estimate'][i]:.1f}%", r["estimate"][i]),
                         f"{100 * r['lower'][i]:.1f}&ndash;{100 * r['upper'][i]:.1f}%"])
    return rows


def _relabel_sentence(plan: _Plan, groups: dict, sug: Suggestions | None) -> str:
    """How many flagged examples the posterior predictive would give another label (every example's known)."""
    labels = groups.get("label")
    if sug is None or not sug.every_example or labels is None:
        return ""
    flagged = ~plan.keep_top
    other = int((flagged & (sug.label != np.asarray(labels))).sum())
    return (f"<li><b>{other}</b> of the {int(flagged.sum())} flagged examples have a suggested label other than "
            'their given one (<a href="#confusion">estimated label confusion</a>).</li>')


def summary_section(draws: np.ndarray, plan: _Plan, groups: dict, metrics: dict, status: str, checks,
                    sug: Suggestions | None = None) -> str:
    """The page's first section: what a person reads in ten seconds."""
    n = draws.shape[-1]
    flagged = ~plan.keep_top
    clean = groups.get("clean")
    truth = (f"<li>Ground truth (benchmark data): {100 * (1 - np.asarray(clean, bool).mean()):.1f}% of the "
             "examples are corrupted.</li>") if clean is not None else ""
    table = _rate_rows(draws, groups, flagged)
    return ('<section id="summary"><h2>Summary</h2><ul class="key">'
            f"<li><b>{n}</b> training examples; <b>{int(flagged.sum())}</b> flagged "
            f"({100 * flagged.mean():.1f}%): dropped by the report's selection rule, the top floor(N beta) = "
            f"{plan.k} by posterior mean weight ({_esc(plan.beta_note)}).</li>"
            + _relabel_sentence(plan, groups, sug)
            + f"<li>Estimated corruption rate: {_rate(*corruption_rate(draws))}.{_cold_note(metrics)}</li>{truth}"
            + _probe_sentence(metrics.get("probes"))
            + f"<li>{_convergence_sentence(status, checks)}</li></ul>"
            + "<details><summary>estimated corruption rate per class and group</summary>"
            + _table(["grouping", "level", "examples", "flagged", "est. corruption rate", "90% interval"], table,
                     "sortable", "rates-table")
            + '<p class="muted">Estimated corruption rate: 1 &minus; the posterior mean weight, averaged over the '
              "examples; 90% interval: the 5% and 95% quantiles over the draws of each draw's average "
              "1 &minus; w.</p></details></section>")
