"""The report's HTML text and its full per-example selection table, built from a run's draws and metrics
wherever they come from: a run directory's files (`run_page.build_run`, what `pyro-dps report` reads) or a
posterior in memory (`pyro_dps.posterior_io`); both give `build_page` the same `ReportInputs`.

    text, table = build_page(inputs)          # the page and the CSV's table
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..arviz_data import example_groups, to_arviz, weight_draws
from ..diagnostics import Thresholds, diagnose, overall, summary
from ..selection import selection_table
from .confusion import confusion_section
from .convergence import _diagnosed_sample, _diagnostics_section
from .examples import _Examples
from .flagged import flagged_section
from .galleries import _gallery_sections
from .load import split_probes
from .page import _head
from .plan import _plan
from .probe_section import _probe_section
from .run_tables import _config_section, _metrics_section
from .selection_section import _selection_section
from .style import SORT_SCRIPT
from .suggestions import Suggestions
from .summary import summary_section
from .weights import _weights_section

CSV_NAME = "report.selection.csv"


@dataclass
class ReportInputs:
    """What a page is built from. `ds`: the flat draws (`arviz_data.flat_draws`: weights (chain, draw,
    example) with the per-example coordinates, probe rows included, per-draw variables); `metrics`: the
    metrics.json document; `examples(ids)`: what the page shows per example position of the user's own
    examples (`ids`); `suggest(info, labels, ids)`: their suggested labels; `name`: the title when `metrics`
    names no scenario; `label`: the run the header line names."""

    ds: object
    metrics: dict
    examples: Callable[[np.ndarray], _Examples]
    suggest: Callable[[_Examples, np.ndarray | None, np.ndarray], Suggestions]
    name: str
    label: str


def build_page(inputs: ReportInputs, thresholds: Thresholds | None = None, csv_name: str = CSV_NAME):
    """(HTML text, full per-example selection table) of `inputs`; `csv_name`: the CSV the page points to."""
    ds, probes = split_probes(inputs.ds)
    metrics = inputs.metrics
    config = metrics.get("config", {}) or {}
    th = thresholds or Thresholds()
    data = to_arviz(ds)
    diag_data, sampled = _diagnosed_sample(ds, data)
    diag = diagnose(diag_data)
    checks = summary(diag, th)
    w = weight_draws(data)
    draws = np.asarray(w.values, dtype=np.float64)  # (chain, draw, N)
    ids = np.asarray(w["example"].values)
    groups = example_groups(data)
    plan = _plan(draws, config, ds, metrics.get("hyper"))
    info = inputs.examples(ids)
    sug = inputs.suggest(info, groups.get("label"), ids)
    n = draws.shape[-1]
    parts = [_head(inputs.name, inputs.label, metrics, config, n, probes, diag),
             summary_section(draws, plan, groups, metrics, overall(checks), checks, sug),
             flagged_section(plan, ids, groups, info, sug),
             confusion_section(plan, groups, sug),
             _diagnostics_section(diag, checks, th, diag_data, n, sampled),
             _weights_section(data, draws, groups, plan), _gallery_sections(plan, ids, groups, info, n),
             _selection_section(plan, draws, groups, csv_name),
             _probe_section(*probes, plan.tau, plan.q, config) if probes else "",
             _metrics_section(metrics), _config_section(config, metrics),
             f"</main><script>{SORT_SCRIPT}</script></body></html>"]
    table = selection_table(draws, ids, groups, plan.keep_top, tau=plan.tau, threshold=plan.cut, interval=0.9)
    if sug.every_example:  # the CSV beside the page holds every example's suggested label too
        table = table.assign(suggested_label=sug.label, p_suggested=sug.prob)
    return "\n".join(parts), table
