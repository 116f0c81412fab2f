# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Convergence diagnostics of a BADS run
#
# Loads a finished run directory (`metrics.json`, `draws.nc`) from the environment variable
# `PYRO_DPS_RUN` (default `runs/demo`, what `pyro-dps demo` writes) and asks whether the chains agree:
# rank-normalised split R-hat, bulk/tail ESS and MCSE of every per-example weight and of the per-draw
# scalars, computed by ArviZ (0.x or 1.x, whichever is installed), then trace and rank plots.
#
# Open as a notebook with `jupytext --to notebook analysis/diagnostics.py`, or run it as a script.

# %%
import os
from pathlib import Path

import numpy as np

from pyro_dps.arviz_data import arviz_line, load_metrics, posterior_group, sample_stats_group, to_arviz
from pyro_dps.diagnostic_plots import plot_diagnostic_histograms, plot_rank, plot_trace, plot_weights_by_group
from pyro_dps.diagnostics import Thresholds, arviz_summary, checks_table, diagnose, overall, summary, worst_examples

RUN = Path(os.environ.get("PYRO_DPS_RUN", "runs/demo"))
data = to_arviz(RUN)  # InferenceData on ArviZ 0.x, xarray.DataTree on ArviZ 1.x
metrics = load_metrics(RUN / "metrics.json")
print(f"run {RUN}: scenario {metrics['scenario']!r}, ArviZ line {arviz_line()}")
post = posterior_group(data)
print(f"{post.sizes['chain']} chains x {post.sizes['draw']} draws, {post.sizes.get('example', 0)} weights")
data

# %% [markdown]
# ## ArviZ's summary of the per-draw scalars
# `meta_loss`, `train_loss`, `w_mean` (= sum_i w_i / N_t), `theta_norm` (and `beta` when latent); the log joint is
# `lp` in `sample_stats`.

# %%
scalars = [name for name in post.data_vars if post[name].dims == ("chain", "draw")]
arviz_summary(data, var_names=scalars)

# %% [markdown]
# ## Checks
# Thresholds: R-hat > 1.01 warns and > 1.05 fails; ESS below 100 warns; for the weights a check fails
# when more than 5% of them are past the limit.

# %%
diag = diagnose(data)
checks = summary(diag, Thresholds())
print("overall:", overall(checks))
print(f"weights with R-hat < 1.05: {100 * diag.rhat_fraction(1.05):.1f}% (target >= 95%)")
checks_table(checks)

# %% [markdown]
# ## Per-example diagnostics, worst R-hat first

# %%
table = diag.weights.sort_values("rhat", ascending=False)
table.head(15)

# %%
if "clean" in table:  # do noisy and clean examples converge differently?
    print(table.groupby("clean")[["rhat", "ess_bulk", "ess_tail", "mcse_mean"]].median())

# %%
fig = plot_diagnostic_histograms(diag)

# %% [markdown]
# ## Trace and rank plots: scalars and the least converged weights

# %%
worst = worst_examples(diag, 3)
fig = plot_trace(data, examples=worst)

# %%
fig = plot_rank(data, examples=worst)

# %% [markdown]
# ## Weight posteriors by group (class, clean/noisy when known)

# %%
fig = plot_weights_by_group(data)

# %% [markdown]
# ## Sampler statistics
# The step size at each kept draw (from the run's sampler settings) and non-finite/rejected step counts.

# %%
stats = sample_stats_group(data)
{name: (float(np.nanmin(v.values)), float(np.nanmax(v.values))) for name, v in stats.data_vars.items()}
