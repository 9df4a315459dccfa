"""The simulation's statistics: paired intervals over seeds, Wilcoxon p-values, Holm's adjustment,
a seed's area under the learning curve, and labels-to-reach with bootstrap intervals (docs/results.md
says how each is used)."""

from __future__ import annotations

import math

import numpy as np


def t_interval(diffs: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    n = len(diffs)
    mean = float(diffs.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def wilcoxon(diffs: np.ndarray) -> float:
    from scipy import stats

    if len(diffs) < 2:
        return math.nan
    if np.all(diffs == 0):
        return 1.0
    return float(stats.wilcoxon(diffs).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for the number of comparisons (NaN stays NaN)."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, out, running = len(finite), [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def seed_alc(m: np.ndarray) -> np.ndarray:
    """ALC of each seed from a (seeds, rounds) accuracy matrix: the mean over rounds 1..T (round 0 is
    the seed set, the same for every strategy); a single round is its own ALC."""
    return m[:, 1:].mean(axis=1) if m.shape[1] > 1 else m[:, 0]


def paired(entry: dict, base: dict) -> tuple[np.ndarray, np.ndarray]:
    """(strategy, baseline) accuracy matrices over the seeds both ran, in the same order."""
    common = [s for s in entry["seeds"] if s in base["acc"]]
    return (
        np.array([entry["acc"][s] for s in common], dtype=np.float64),
        np.array([base["acc"][s] for s in common], dtype=np.float64),
    )


def reach_interval(entry: dict, base: dict, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Labels a strategy needs for its mean curve to reach the baseline's mean final accuracy:
    the estimate and a 95% percentile bootstrap interval over seeds (resampled in pairs). inf = not
    reached within the budget."""
    m, b = paired(entry, base)
    labels = np.array(entry["labels"], dtype=np.float64)

    def first(mm, bb):
        hit = np.nonzero(mm.mean(axis=0) >= bb[:, -1].mean() - 1e-12)[0]
        return labels[hit[0]] if len(hit) else math.inf

    if len(m) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [first(m[idx], b[idx]) for idx in rng.integers(0, len(m), size=(resamples, len(m)))]
    lo, hi = np.percentile(draws, 2.5, method="lower"), np.percentile(draws, 97.5, method="higher")
    return first(m, b), float(lo), float(hi)
