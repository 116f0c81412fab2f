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
# # Selecting data points with the weight posterior
#
# Loads a finished run directory (environment variable `PYRO_DPS_RUN`, default `runs/demo`), applies the
# selection rules of `pyro_dps.selection` to the weight draws, and compares the selections: with each
# other, across chains, and (when the run knows which labels were corrupted) against the ground truth.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pyro_dps.arviz_data import load_metrics, to_arviz
from pyro_dps.selection import (WeightSelection, beta_budget, jaccard, mean_offdiagonal, prob_above,
                                probability_rule, top_beta_rule)

RUN = Path(os.environ.get("PYRO_DPS_RUN", "runs/demo"))
metrics = load_metrics(RUN / "metrics.json")
sel = WeightSelection.from_data(to_arviz(RUN))
n = len(sel.example_ids)
beta = metrics.get("config", {}).get("model", {}).get("hyper", {}).get("beta", 0.5)
beta = beta if isinstance(beta, (int, float)) else 0.5
clean = sel.groups.get("clean")
clean = None if clean is None else clean.astype(bool)
print(f"{n} examples, {sel.draws.shape[0]} chains x {sel.draws.shape[1]} draws; beta = {beta} -> budget "
      f"floor(N beta) = {beta_budget(n, beta)}")

# %% [markdown]
# ## The rules
# - top-beta: the floor(N beta) examples with the highest posterior mean (the paper's selection);
# - P(w > tau) >= q: keep an example only when the posterior is at least q sure its weight exceeds tau;
# - budget: a fixed number of examples by posterior mean.

# %%
rules = {
    f"top-beta ({beta})": (sel.top_beta(beta), top_beta_rule(beta)),
    "P(w>0.5) >= 0.5": (sel.by_probability(0.5, 0.5), probability_rule(0.5, 0.5)),
    "P(w>0.5) >= 0.9": (sel.by_probability(0.5, 0.9), probability_rule(0.5, 0.9)),
    "P(w>0.5) >= 0.99": (sel.by_probability(0.5, 0.99), probability_rule(0.5, 0.99)),
}
rows = []
for name, (mask, rule) in rules.items():
    row = {"rule": name, "selected": int(mask.sum()), "fraction": mask.mean(),
           "chain agreement (Jaccard)": mean_offdiagonal(sel.chain_jaccard(rule))}
    if clean is not None:
        row["precision (clean)"] = clean[mask].mean() if mask.any() else np.nan
        row["recall (clean)"] = mask[clean].mean()
    rows.append(row)
pd.DataFrame(rows).set_index("rule").round(3)

# %% [markdown]
# ## How much do the rules agree? (pairwise Jaccard)

# %%
names = list(rules)
pd.DataFrame([[jaccard(rules[a][0], rules[b][0]) for b in names] for a in names], index=names, columns=names).round(3)

# %% [markdown]
# ## Uncertain examples
# An example is uncertain when its 90% central interval straddles the selection boundary of the
# top-beta rule: the posterior does not settle which side of the cut it falls on.

# %%
top = rules[f"top-beta ({beta})"][0]
mean = sel.mean
order = np.argsort(-mean, kind="stable")
k = int(top.sum())
cut = (mean[order[k - 1]] + mean[order[k]]) / 2 if 0 < k < n else 0.5
unsure = sel.uncertain(cut, 0.9)
print(f"boundary w = {cut:.3f}: {int(unsure.sum())} uncertain examples ({100 * unsure.mean():.1f}%), "
      f"{int((unsure & top).sum())} of them selected")
table = sel.table(top, tau=0.5, threshold=cut)
table[table["uncertain"]].sort_values("mean").head(10)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
p = prob_above(sel.draws, 0.5)
axes[0].hist(p, bins=40, color="tab:gray")
axes[0].set_xlabel("P(w > 0.5)")
axes[0].set_ylabel("examples")
lo, hi = table["lower90"].to_numpy(), table["upper90"].to_numpy()
colors = np.where(unsure, "tab:orange", np.where(top, "tab:blue", "tab:red"))
axes[1].scatter(mean, hi - lo, c=colors, s=4)
axes[1].axvline(cut, color="k", ls="--", lw=0.8)
axes[1].set_xlabel("posterior mean weight")
axes[1].set_ylabel("width of the 90% interval")
axes[1].set_title("blue: selected, red: dropped, orange: uncertain", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## The selection table
# One row per example; set `PYRO_DPS_SELECTION_CSV` to write it as CSV.

# %%
out = os.environ.get("PYRO_DPS_SELECTION_CSV")
if out:
    table.to_csv(out, index=False)
    print(f"wrote {out}")
table.head()
