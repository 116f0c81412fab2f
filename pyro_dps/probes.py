"""Probe examples: a self-check of the weights that a user can run on their own data (no ground truth needed).

A few curated (meta) examples per class are taken out of D_m and appended to D_t twice: once as they are
(known good) and once with a wrong label (known bad). After the run, how well the weights tell the two
copies apart (AUROC, precision/recall of the selection rule, calibration of P(w > tau)) is a measured
check of the weights on this data set; the probes also calibrate the selection threshold q.

    data, probes = add_probes(data, per_class=2, seed=0)        # D_m shrinks, D_t grows by 2 * 2 * K rows
    ...run...
    probe_report(w_draws, probes)                                 # {"auroc", "precision", "recall", "ece", ...}
    p_clean = probe_calibrated_clean(mean_w, data.groups["probe"], hyper)  # P(clean) per row (prior: beta)
    keep = non_probe_mask(data)                                   # the rows that count in the training result

A functional core: arrays in, arrays out. The probe rows are recorded in `data.groups["probe"]`
(0 = not a probe, 1 = good copy, 2 = corrupted copy), so a run directory keeps them (draws.nc).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from .clean_probability import clean_probability, cross_fitted_probability, fit_calibration
from .data import DataSplits
from .errors import ConfigError, DataError
from .selection import pooled_draws, posterior_mean, prob_above, select_by_probability
from .useful_fraction import selection_fraction

PROBE_GROUP = "probe"
NOT_PROBE, GOOD, BAD = 0, 1, 2
MAX_PER_CLASS = 10 ** 6
PROBE_TEXT = "(probe example: a copy of a meta example)"  # the text of a probe row of text data (never shown)


@dataclass(frozen=True)
class ProbeSet:
    """Row indices in D_t of the probes' good copies and of their corrupted copies (same order)."""

    good: np.ndarray
    bad: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """All probe rows: the good copies, then the corrupted ones."""
        return np.concatenate([self.good, self.bad]).astype(np.int64)

    @property
    def is_good(self) -> np.ndarray:
        """Per entry of `rows`: True for a good copy (the positive class of every probe metric)."""
        return np.concatenate([np.ones(len(self.good), bool), np.zeros(len(self.bad), bool)])

    def __len__(self) -> int:
        return len(self.good) + len(self.bad)


# ------------------------------------------------------------------------------------------- the split
def _check_per_class(per_class) -> int:
    """probes_per_class as an integer in [0, MAX_PER_CLASS]; ConfigError naming it otherwise."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 0 \
            or per_class > MAX_PER_CLASS:
        raise ConfigError(f"probes_per_class must be an integer in [0, {MAX_PER_CLASS}], got {per_class!r}")
    return int(per_class)


def _meta_labels(data: DataSplits) -> np.ndarray:
    """The meta set's labels as integers; ConfigError when the data is not a classifier's (one label per row)."""
    y = data.y_meta
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool \
            or y.dtype.is_complex:
        kind = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError("probes_per_class needs a classifier's data (one integer label per meta example); "
                          f"y_meta is {kind}")
    return y.cpu().numpy().astype(np.int64)


def held_out_meta(y_meta: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Positions in D_m of `per_class` examples of every class present (seeded), class by class; ConfigError
    when a class would keep fewer than one meta example."""
    rng = np.random.default_rng([int(seed), 0x70726F6265])  # its own stream: independent of the data's noise
    picks = []
    for c in np.unique(y_meta):
        members = np.flatnonzero(y_meta == c)
        if len(members) - per_class < 1:
            raise ConfigError(f"probes_per_class = {per_class} would leave class {int(c)} with "
                              f"{len(members) - per_class} meta examples (it has {len(members)}); "
                              f"at most {len(members) - 1}")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)


def wrong_labels(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """A label drawn uniformly among the other num_classes - 1 classes for each entry of `y` (seeded)."""
    rng = np.random.default_rng([int(seed), 0x626164])
    r = rng.integers(0, num_classes - 1, size=len(y))
    return (r + (r >= y)).astype(np.int64)


def add_probes(data: DataSplits, per_class: int, seed: int) -> tuple[DataSplits, ProbeSet]:
    """Move `per_class` meta examples per class out of D_m and append them to D_t as they are and with a
    wrong label; `clean`, `y_train_true` and every group are extended (group `probe`: 0/1/2)."""
    per_class = _check_per_class(per_class)
    n = data.n_train
    if per_class == 0:
        return data, ProbeSet(np.zeros(0, np.int64), np.zeros(0, np.int64))
    if PROBE_GROUP in data.groups:
        raise ConfigError(f"the data already has a group named {PROBE_GROUP!r}; probes cannot be added twice")
    y_meta = _meta_labels(data)
    held = held_out_meta(y_meta, per_class, seed)
    p = len(held)
    y_good = y_meta[held]
    y_bad = wrong_labels(y_good, data.num_classes, seed)
    keep = np.ones(data.n_meta, bool)
    keep[held] = False
    x_probe = data.x_meta[torch.from_numpy(held)]
    labels = torch.from_numpy(np.concatenate([y_good, y_bad])).to(data.y_train.device)
    status = torch.cat([torch.full((n,), NOT_PROBE), torch.full((p,), GOOD), torch.full((p,), BAD)]).long()
    groups = {k: torch.cat([v, torch.full((2 * p,), -1, dtype=v.dtype, device=v.device)])
              for k, v in data.groups.items()}  # -1: the appended rows have no level of the data's groups
    groups[PROBE_GROUP] = status.to(data.y_train.device)
    out = replace(
        data,
        x_train=torch.cat([data.x_train, x_probe, x_probe]),
        y_train=torch.cat([data.y_train, labels]),
        x_meta=data.x_meta[torch.from_numpy(keep)], y_meta=data.y_meta[torch.from_numpy(keep)],
        clean=None if data.clean is None else torch.cat(
            [data.clean, torch.tensor([True] * p + [False] * p, device=data.clean.device)]),
        y_train_true=None if data.y_train_true is None else torch.cat(
            [data.y_train_true, labels[:p], labels[:p]]),
        groups=groups,
        texts_train=None if data.texts_train is None else (*data.texts_train, *[PROBE_TEXT] * (2 * p)))
    return out.validate(), ProbeSet(np.arange(n, n + p), np.arange(n + p, n + 2 * p))


def probes_from_group(status) -> ProbeSet:
    """The ProbeSet recorded in a `probe` group array (0 = not a probe, 1 = good copy, 2 = corrupted copy)."""
    status = np.asarray(status)
    return ProbeSet(np.flatnonzero(status == GOOD).astype(np.int64), np.flatnonzero(status == BAD).astype(np.int64))


def non_probe_mask(data_or_status, n: int | None = None) -> np.ndarray:
    """True for the rows of D_t that are the user's own (not probes): what training results are computed on.
    Takes a DataSplits, or a `probe` group array (None: no probes, then `n` rows all True)."""
    if isinstance(data_or_status, DataSplits):
        n, data_or_status = data_or_status.n_train, data_or_status.groups.get(PROBE_GROUP)
    if data_or_status is None:
        return np.ones(int(n), bool)
    status = data_or_status.cpu().numpy() if isinstance(data_or_status, torch.Tensor) else np.asarray(data_or_status)
    return status == NOT_PROBE


# ------------------------------------------------------------------------------------------- the check
def _probe_columns(w_draws, probes: ProbeSet) -> tuple[np.ndarray, np.ndarray]:
    """(draws of the probe rows only (samples, P), good flag per probe row)."""
    flat = pooled_draws(w_draws)
    rows = probes.rows
    if len(rows) == 0:
        raise DataError("the probe set is empty: no probe rows to check")
    if rows.min() < 0 or rows.max() >= flat.shape[1]:
        raise DataError(f"probe rows must lie in [0, {flat.shape[1]}), the draws' examples; "
                        f"got {rows.min()}..{rows.max()}")
    return flat[:, rows], probes.is_good


def precision_recall(selected: np.ndarray, good: np.ndarray) -> tuple[float | None, float | None]:
    """Precision (good among selected) and recall (selected among good); None where undefined."""
    selected, good = np.asarray(selected, bool), np.asarray(good, bool)
    precision = float(good[selected].mean()) if selected.any() else None
    recall = float(selected[good].mean()) if good.any() else None
    return precision, recall


def reliability(p: np.ndarray, good: np.ndarray, bins: int = 10) -> tuple[list[dict], float | None]:
    """Reliability diagram of probabilities `p` against outcomes `good`: per equal-width bin of [0, 1] its
    count, mean p and fraction good (None when empty), and the count-weighted mean gap (ECE)."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins!r}")
    p, good = np.asarray(p, np.float64), np.asarray(good, bool)
    index = np.clip(np.floor(p * bins + 1e-9).astype(np.int64), 0, bins - 1)  # p = k / bins lands in bin k
    rows, gap = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        mean_p = float(p[inside].mean()) if count else None
        frac = float(good[inside].mean()) if count else None
        gap += count * abs(mean_p - frac) if count else 0.0
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "mean_p": mean_p,
                     "fraction_good": frac})
    return rows, (gap / len(p) if len(p) else None)


def chance_ece(p: np.ndarray, bins: int = 10, draws: int = 200, seed: int = 0) -> float | None:
    """The ECE that perfectly calibrated probabilities `p` show by chance on this many outcomes: the mean ECE of
    outcomes drawn as Bernoulli(p) (`draws` seeded simulations). A measured ECE near it is all a sample of this
    size can resolve."""
    p = np.asarray(p, np.float64)
    if len(p) == 0:
        return None
    rng = np.random.default_rng([int(seed), 0x656365])
    return float(np.mean([reliability(p, rng.uniform(size=len(p)) < p, bins)[1] for _ in range(draws)]))


def calibrated_threshold(w_draws, probes: ProbeSet, tau: float = 0.5, target: float = 0.95,
                         grid=None) -> float | None:
    """The smallest q of `grid` (default 0, 0.01, ..., 1) whose rule P(w > tau) >= q reaches precision
    `target` on the probes (good among selected); None when no q of the grid does."""
    cols, good = _probe_columns(w_draws, probes)
    grid = np.round(np.linspace(0, 1, 101), 2) if grid is None else np.sort(np.asarray(grid, np.float64))
    for q in grid:
        precision, _ = precision_recall(select_by_probability(cols, tau, float(q)), good)
        if precision is not None and precision >= target:
            return float(q)
    return None


def _p_clean_reliability(mean: np.ndarray, good: np.ndarray, bins: int) -> dict:
    """Reliability (bins, ECE, and the ECE a calibrated P(clean) would show by chance on these probes) of the
    probes' P(clean), each pair calibrated without itself; None values with fewer than 2 probes of a kind."""
    n_good, n_bad = int(good.sum()), int((~good).sum())
    if min(n_good, n_bad) < 2:
        return {"ece": None, "ece_chance": None, "reliability": None}
    p = cross_fitted_probability(mean[good], mean[~good])  # the good probes first, then the corrupted ones
    table, ece = reliability(p, np.concatenate([np.ones(n_good, bool), np.zeros(n_bad, bool)]), bins)
    return {"ece": ece, "ece_chance": chance_ece(p, bins), "reliability": table}


def probe_report(w_draws, probes: ProbeSet, tau: float = 0.5, q: float = 0.9, bins: int = 10,
                 target: float = 0.95) -> dict:
    """How well the weights tell the good probes from the corrupted ones: AUROC of the posterior mean,
    precision/recall of P(w > tau) >= q, reliability of P(w > tau) (bins, ECE), the q reaching `target`."""
    cols, good = _probe_columns(w_draws, probes)
    mean, p = posterior_mean(cols), prob_above(cols, tau)
    auroc = float(roc_auc_score(good, mean)) if good.any() and not good.all() else None
    selected = select_by_probability(cols, tau, q)
    precision, recall = precision_recall(selected, good)
    table, ece = reliability(p, good, bins)
    q_star = calibrated_threshold(cols, ProbeSet(np.flatnonzero(good), np.flatnonzero(~good)), tau, target)
    star_recall = None if q_star is None else precision_recall(select_by_probability(cols, tau, q_star), good)[1]
    return {"n_good": int(good.sum()), "n_bad": int((~good).sum()), "tau": float(tau), "q": float(q),
            "auroc": auroc, "mean_weight_good": float(mean[good].mean()) if good.any() else None,
            "mean_weight_bad": float(mean[~good].mean()) if (~good).any() else None,
            "selected": int(selected.sum()), "precision": precision, "recall": recall,
            "ece": ece, "reliability": table, "target_precision": float(target), "calibrated_q": q_star,
            "calibrated_recall": star_recall, "p_clean": _p_clean_reliability(mean, good, bins)}


def probe_calibrated_clean(mean, status, hyper: dict | None) -> np.ndarray | None:
    """P(clean) of every row from its posterior mean weight `mean` (one per row of D_t), calibrated on the probe
    rows that the `probe` group array `status` marks (`pyro_dps.clean_probability`), at the prior fraction of clean
    rows: the model's beta (the mean weight of the user's rows for a model without a numeric one). None without
    probes (`status` None)."""
    if status is None:
        return None
    mean = np.asarray(mean, dtype=np.float64)
    status = status.cpu().numpy() if isinstance(status, torch.Tensor) else np.asarray(status)
    probes, own = probes_from_group(status), non_probe_mask(status)
    prior = selection_fraction(hyper) or float(np.mean(mean[own]))
    edge = 1.0 / (2 * max(int(own.sum()), 1))  # a prior of 0 or 1 would make every probability 0 or 1
    calibration = fit_calibration(mean[probes.good], mean[probes.bad])
    return clean_probability(mean, calibration, float(np.clip(prior, edge, 1 - edge)))
