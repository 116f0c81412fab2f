"""The metrics and configuration sections: tables of what the run recorded in metrics.json (test accuracy of
BADS and the baselines, the weights against the ground truth), the model as it ran (potential path, every
hyper-parameter and the derived constants) and the resolved configuration (folded); at most MAX_ROWS rows each."""
from __future__ import annotations

from .html import _cell, _esc, _fmt, _table

MAX_ROWS = 100  # rows of any other table (configuration keys, methods, metrics)


def _metrics_section(metrics: dict) -> str:
    rows = []
    for name, m in list(metrics.get("methods", {}).items())[:MAX_ROWS]:
        m = m if isinstance(m, dict) else {}
        rows.append([_esc(_cell(name)), _fmt(m.get("test_accuracy")), _fmt(m.get("test_accuracy_ensemble")),
                     _fmt(m.get("seconds"), 3)])
    wm = metrics.get("weights") or {}
    wrows = [[_esc(_cell(k)), _cell(_fmt(v))] for k, v in list(wm.items())[:MAX_ROWS]] if isinstance(wm, dict) else []
    return ('<section id="metrics"><h2>Metrics against baselines</h2>'
            + _table(["method", "test accuracy (last iterate)", "test accuracy (ensemble)", "seconds"], rows)
            + (f"<h3>Weights against the ground truth</h3>{_table(['metric', 'value'], wrows)}" if wrows else "")
            + "</section>")


def _model_as_run(metrics: dict) -> str:
    """The table of the model as it ran (metrics.json): the potential path, every hyper-parameter it used and
    the constants the fused path derived; empty for a run that did not record them."""
    if "potential" not in metrics:
        return ""
    why = metrics.get("potential_reason")
    rows = [["potential path", _esc(_cell(f"{metrics['potential']}" + (f" ({why})" if why else "")))]]
    for prefix, table in (("", metrics.get("hyper")), ("derived ", metrics.get("hyper_derived"))):
        if isinstance(table, dict):
            rows += [[_esc(_cell(prefix + str(k))), _cell(_fmt(v))] for k, v in list(table.items())[:MAX_ROWS]]
    return f"<div><h3>model as run</h3>{_table(['key', 'value'], rows)}</div>"


def _config_section(config: dict, metrics: dict | None = None) -> str:
    cfg_tables = [_model_as_run(metrics or {})]
    for section in ("data", "network", "model", "sampler", "baselines"):
        value = config.get(section)
        if not isinstance(value, dict):
            continue
        flat = value
        if section == "model" and isinstance(value.get("hyper"), dict):
            flat = {**value["hyper"], "file": value.get("file")}
        rows = [[_esc(_cell(key)), _cell(_fmt(v))] for key, v in list(flat.items())[:MAX_ROWS]]
        cfg_tables.append(f"<div><h3>{section}</h3>{_table(['key', 'value'], rows)}</div>")
    cfg_tables = [t for t in cfg_tables if t]
    return ('<section id="config"><h2>Run configuration</h2><details><summary>the resolved configuration and '
            'the model as it ran</summary>'
            + (f'<div class="cfg">{"".join(cfg_tables)}</div>' if cfg_tables
               else '<p class="note">metrics.json has no resolved configuration.</p>') + "</details></section>")
