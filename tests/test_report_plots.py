"""The report's trace/rank/ESS plots are drawn by the installed ArviZ line's own functions (run under .venv for
ArviZ 0.x and .venv-arviz1 for 1.x), quietly, and fall back to pyro-dps's own plots when ArviZ cannot draw them."""
import re
import warnings

import numpy as np
import pytest
from test_arviz_data import draws_dataset

import pyro_dps.report.plots as report_plots
from pyro_dps.arviz_data import ARVIZ_1, ARVIZ_VERSION, to_arviz
from pyro_dps.report.plots import MAX_PLOTTED_WEIGHTS, diagnostic_figures, diagnostic_panel, plotting_line

EXPECTED = ("arviz_plots", ("plot_trace_dist", "plot_rank", "plot_ess_evolution")) if ARVIZ_1 else \
    ("arviz", ("plot_trace", "plot_rank", "plot_ess"))


def _close(figures) -> None:
    import matplotlib.pyplot as plt

    for f in figures:
        plt.close(f.figure)


def test_panel_holds_the_scalars_lp_and_a_few_weights():
    ds = draws_dataset()
    ds["train_loss"][0, 3] = np.nan  # a variable with a non-finite draw cannot be drawn by ArviZ's densities
    panel = diagnostic_panel(to_arviz(ds), examples=[100, 103, 106, 109, 112, 115])
    assert set(panel.data_vars) == {"meta_loss", "theta_norm", "w_mean", "beta", "lp", "w"}
    assert panel["w"].dims == ("chain", "draw", "example")
    assert panel["w"]["example"].values.tolist() == [100, 103, 106, 109][:MAX_PLOTTED_WEIGHTS]
    assert "label" not in panel.coords and "clean" not in panel.coords  # per-example coordinates are not plotted
    np.testing.assert_array_equal(panel["w"].sel(example=103).values, ds["weights"].sel(example=103).values)


def test_figures_are_drawn_by_the_installed_arviz_line(monkeypatch):
    """Each figure is the one ArviZ's function returned (the function is called, its figure kept), captioned
    with the function's name; no warning escapes (ArviZ 0.x's matplotlib deprecations are silenced)."""
    module = pytest.importorskip(EXPECTED[0])
    calls = []
    for name in EXPECTED[1]:
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            out = _original(*args, **kwargs)
            calls.append((_name, sorted(args[0].data_vars)))
            return out

        monkeypatch.setattr(module, name, spy)
    assert plotting_line() == EXPECTED[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures = diagnostic_figures(to_arviz(draws_dataset()), examples=[100, 106], min_ess=123)
    try:
        assert [c[0] for c in calls] == list(EXPECTED[1])
        assert all(c[1] == ["beta", "lp", "meta_loss", "theta_norm", "train_loss", "w", "w_mean"] for c in calls)
        assert [f.alt for f in figures] == ["trace plots", "rank plots", "ESS evolution"]
        for f, name in zip(figures, EXPECTED[1]):
            assert f"<code>{EXPECTED[0]}.{name}" in f.caption and f"ArviZ {ARVIZ_VERSION}" in f.caption
        trace = figures[0].figure
        assert len([ax for ax in trace.axes if ax.has_data()]) == 2 * (6 + 2)  # 6 scalars + 2 weights, 2 panels each
        labels = " ".join(ax.get_title() + " " + ax.get_xlabel() + " " + ax.get_ylabel() for ax in trace.axes)
        assert "106" in labels and "meta_loss" in labels  # ArviZ's own labels: variable and example id
        ess_lines = [line for ax in figures[2].figure.axes for line in ax.get_lines()]
        assert any(np.allclose(line.get_ydata(), 123) for line in ess_lines)  # the report's ESS floor is marked
        assert [str(w.message)[:120] for w in caught] == []
    finally:
        _close(figures)


def test_hand_drawn_plots_when_arviz_cannot_draw_them(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("simulated ArviZ failure")

    monkeypatch.setattr(report_plots, "_arviz1" if ARVIZ_1 else "_arviz0", broken)
    figures = diagnostic_figures(to_arviz(draws_dataset()), examples=[100])
    try:
        assert [f.alt for f in figures] == ["trace plots", "rank plots"]
        assert all("drawn by pyro-dps (ArviZ could not plot this run: ValueError: simulated" in f.caption
                   for f in figures)
    finally:
        _close(figures)
    monkeypatch.setattr(report_plots, "plotting_line", lambda: "pyro_dps")  # ArviZ 1.x without arviz-plots
    figures = diagnostic_figures(to_arviz(draws_dataset()), examples=[100])
    try:
        assert len(figures) == 2 and "arviz-plots is not installed" in figures[0].caption
    finally:
        _close(figures)


def test_one_chain_runs_get_plots_too():
    ds = draws_dataset().isel(chain=[0])
    figures = diagnostic_figures(to_arviz(ds), examples=[100])
    try:
        assert len(figures) >= 2 and all(f.figure.axes for f in figures)
    finally:
        _close(figures)


def test_report_shows_arviz_own_plots(run_dir):
    text = (run_dir / "report.html").read_text()
    section = re.search(r'<section id="diagnostics">.*?</section>', text, re.S).group(0)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section, re.S)
    for name in EXPECTED[1]:
        assert any(f"<code>{EXPECTED[0]}.{name}" in c for c in captions), captions
    assert section.count('<img src="data:image/png;base64,') == 4  # R-hat/ESS histograms + trace, rank, ESS


def test_the_certainty_scatter_plots_each_examples_probability_against_its_interval_width(monkeypatch):
    """One point per example at (width of its 90% interval, P(w > 0.5)), split clean / corrupted; beyond
    CERTAINTY_POINTS examples an evenly spaced subset in P order (the page stays bounded)."""
    import numpy as np

    from pyro_dps.report import plots as report_plots
    from pyro_dps.selection import credible_interval, prob_above

    rng = np.random.default_rng(0)
    draws = np.concatenate([rng.uniform(0.9, 1.0, (2, 50, 30)), rng.uniform(0.0, 0.1, (2, 50, 20)),
                            rng.uniform(0.0, 1.0, (2, 50, 10))], axis=-1)  # kept, dropped, undecided
    clean = np.r_[np.ones(30, bool), np.zeros(20, bool), np.ones(10, bool)]
    fig = report_plots.plot_certainty(draws, clean)
    green, red = fig.axes[0].collections
    lo, hi = credible_interval(draws, 0.9)
    expected = {(round(float(w), 9), round(float(p), 9)) for w, p in zip(hi - lo, prob_above(draws, 0.5))}
    points = {(round(float(x), 9), round(float(y), 9)) for c in (green, red) for x, y in c.get_offsets()}
    assert points == expected and len(green.get_offsets()) == 40 and len(red.get_offsets()) == 20
    monkeypatch.setattr(report_plots, "CERTAINTY_POINTS", 25)
    (single,) = report_plots.plot_certainty(draws).axes[0].collections
    assert len(single.get_offsets()) == 25


def test_the_report_shows_the_certainty_scatter(run_dir):
    assert "certainty of each weight" in (run_dir / "report.html").read_text()
