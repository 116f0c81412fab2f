"""The probe section, shown when the run had probe examples: how well the weights tell the known-good probes
from their corrupted copies (AUROC, the selection rule's precision and recall, the calibration of P(w > tau)
in a reliability diagram, the calibrated q); `pyro_dps.probes` computes the numbers."""
from __future__ import annotations

import numpy as np

from ..probes import ProbeSet, probe_report
from .html import _figure, _figure_uri, _fmt, _table
from .page import PROBE_SECTION


def plot_reliability(table: list[dict], ece: float | None, tau: float, what: str | None = None):
    """The probes' reliability diagram: fraction of good probes against the mean probability `what` (default
    P(w > tau)) per bin (left), and the probes per bin (right)."""
    what = what or f"P(w > {tau:g})"
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    full = [b for b in table if b["count"]]
    left.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="calibrated")
    left.plot([b["mean_p"] for b in full], [b["fraction_good"] for b in full], "o-", color="tab:blue",
              label=f"probes (ECE {ece:.3f})" if ece is not None else "probes")
    for b in full:
        left.annotate(str(b["count"]), (b["mean_p"], b["fraction_good"]), textcoords="offset points",
                      xytext=(4, -10), fontsize=8)
    left.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel=f"mean {what} in the bin",
             ylabel="fraction of good probes")
    left.legend(fontsize=8, loc="upper left")
    centers = [(b["lower"] + b["upper"]) / 2 for b in table]
    width = table[0]["upper"] - table[0]["lower"] if table else 0.1
    good = np.array([round(b["count"] * b["fraction_good"]) if b["count"] else 0 for b in table])
    bad = np.array([b["count"] for b in table]) - good
    right.bar(centers, good, width=0.9 * width, color="tab:blue", label="good")
    right.bar(centers, bad, width=0.9 * width, bottom=good, color="tab:red", label="corrupted")
    right.set(xlim=(0, 1), xlabel=what, ylabel="probes")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _probe_section(w: np.ndarray, probes: ProbeSet, tau: float, q: float, config: dict) -> str:
    """Self-check with probe examples: how well the weights tell the known-good probes from their corrupted
    copies (AUROC, the selection rule's precision/recall, calibration of P(w > tau), the calibrated q)."""
    r = probe_report(w, probes, tau, q)
    per_class = (config.get("data") or {}).get("probes_per_class")
    how = f"{per_class} per class, " if isinstance(per_class, int) else ""
    rows = [["AUROC of the posterior mean (good vs corrupted)", _fmt(r["auroc"], 3),
             "1: every good copy weighs more than every corrupted one; 0.5: chance"],
            [f"selected by P(w &gt; {tau:g}) &ge; {q:g}", f"{r['selected']} of {len(probes)}",
             "the rule of the selection section"],
            ["precision", _fmt(r["precision"], 3), "good probes among the selected ones"],
            ["recall", _fmt(r["recall"], 3), "selected probes among the good ones"],
            ["mean weight, good / corrupted",
             f"{_fmt(r['mean_weight_good'], 3)} / {_fmt(r['mean_weight_bad'], 3)}", ""],
            ["ECE", _fmt(r["ece"], 3), f"mean gap between P(w &gt; {tau:g}) and the fraction of good probes "
                                      "at that probability (0: calibrated)"],
            [f"calibrated q (precision &ge; {r['target_precision']:g})",
             "none in 0, 0.01, ..., 1" if r["calibrated_q"] is None else f"{r['calibrated_q']:g} "
             f"(recall {_fmt(r['calibrated_recall'], 3)})",
             "the smallest q whose rule reaches that precision on the probes"]]
    bins = [[f"[{b['lower']:.1f}, {b['upper']:.1f}{']' if b['upper'] >= 1 else ')'}", str(b["count"]),
             _fmt(b["mean_p"], 3), _fmt(b["fraction_good"], 3)] for b in r["reliability"]]
    return (f'<section id="{PROBE_SECTION}"><h2>Self-check with probe examples</h2>'
            f"<p>Before the run, {r['n_good']} curated examples ({how}taken out of the meta set) were added to "
            "the training set twice: once as they are (known good) and once with a wrong label (known corrupted). "
            "The sampler is not told which copy is which, so how well the weights tell them apart is a check of "
            "the weights on this data set. The probes are left out of every other number on this page.</p>"
            + _table(["check", "value", "meaning"], rows)
            + _figure(_figure_uri(plot_reliability(r["reliability"], r["ece"], tau)), "reliability diagram",
                      f"Reliability of P(w &gt; {tau:g}) on the probes: per bin of the probability, the fraction "
                      "of good probes (numbers: probes in the bin); on the dashed line the probability is "
                      "calibrated.")
            + _table(["P(w &gt; tau) bin", "probes", "mean P", "fraction good"], bins)
            + _p_clean_part(r["p_clean"], tau)
            + f'<p class="note">With {len(probes)} probes, one probe more or less moves the precision or a '
              "bin's fraction by a large step: these are rough numbers; more probes per class make them finer.</p>"
              "</section>")


def _p_clean_part(p_clean: dict, tau: float) -> str:
    """The probes' reliability of P(clean) (the weights.csv column), each probe pair calibrated without itself."""
    if p_clean["reliability"] is None:
        return "<p>P(clean) needs at least 2 good and 2 corrupted probes.</p>"
    return ("<h3>P(clean): the posterior mean weight calibrated on the probes</h3>"
            f"<p>At a cold temperature P(w &gt; {tau:g}) is a keep/drop decision, not a probability to bet on. "
            "weights.csv's column <code>p_clean</code> is the probability that an example is clean: an isotonic "
            "regression of good / corrupted on the probes' posterior mean weights, turned by Bayes' rule into a "
            "probability at the run's beta (the estimated fraction of the training set that is like the curated "
            "set). Below, each probe's P(clean) comes from a calibration fitted without its pair, so the diagram "
            "is not in-sample. It is calibrated for corruption like the probes' (a wrong label).</p>"
            + _figure(_figure_uri(plot_reliability(p_clean["reliability"], p_clean["ece"], tau, "P(clean)")),
                      "reliability diagram of P(clean)",
                      "Reliability of P(clean) on the probes (at their own base rate, half good), cross-fitted.")
            + f'<p class="note">A perfectly calibrated P(clean) would show an ECE of about '
              f'{_fmt(p_clean["ece_chance"], 3)} on these probes by chance alone (outcomes simulated from it): an '
              "ECE near that is all this many probes can resolve.</p>")
