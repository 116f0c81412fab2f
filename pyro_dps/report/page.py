"""The page's frame: the section ids in order, the head (title, inline style), the header line (run, examples,
chains and draws, ArviZ version, when generated) and the navigation."""
from __future__ import annotations

import datetime as _dt

from ..arviz_data import ARVIZ_VERSION, arviz_line
from .html import _cell, _esc
from .style import CSS

SECTIONS = ["summary", "flagged", "confusion", "diagnostics", "weights", "trusted", "uncertain", "selection",
            "metrics", "config"]
PROBE_SECTION = "probes"  # shown (after "selection") when the run had probe examples


def _head(name: str, label: str, metrics: dict, config: dict, n: int, probes, diag) -> str:
    """The page's head, header line and navigation; `name`: the title when metrics.json names no scenario
    (the run directory's name), `label`: the run the header line names."""
    title = metrics.get("scenario") or config.get("name") or name
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>BADS report: {_esc(_cell(title))}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Bayesian data point selection: {_esc(_cell(title))}</h1>"
            f"<p>run {_esc(_cell(label))} &middot; {n} training examples"
            + (f" (+ {probes[0].shape[-1]} probe examples)" if probes else "")
            + f" &middot; {diag.chains} chains &times; {diag.draws} draws &middot; ArviZ {_esc(ARVIZ_VERSION)} "
            f"({arviz_line()}) &middot; generated {now}</p></header>"
            "<nav>" + "".join(f'<a href="#{s}">{s}</a>' for s in _sections(probes is not None)) + "</nav><main>")


def _sections(with_probes: bool) -> list[str]:
    """The page's section ids in order (the probe section after the selection, when the run had probes)."""
    if not with_probes:
        return list(SECTIONS)
    at = SECTIONS.index("selection") + 1
    return SECTIONS[:at] + [PROBE_SECTION] + SECTIONS[at:]
