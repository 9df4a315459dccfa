"""The one place where acquisition values become Label Studio scores.

Strategies return acquisition values where **larger = label first**. Label Studio's uncertainty
sampling serves the **lowest** ``score`` first (``order_by('predictions__score')``), so:

    score(x) = fraction of the reference pool whose acquisition value is strictly higher than x's

The most useful task gets a score near 0, the least useful one near 1. The reference pool is the
project's most recently scored pool (or the tasks of the current request when no pool has been
scored yet). A task whose image could not be used gets LEAST_URGENT_SCORE, which is above every
rank-based score, so it is served last. Scores are always numbers: on SQLite a null score would
be served first.
"""

from __future__ import annotations

import numpy as np

LEAST_URGENT_SCORE = 1.0
# A task a pool-relative strategy cannot value without the whole pool (docs/methods.md §0): the middle
# of the queue, never its top, until the next full-pool scoring ranks it.
NEUTRAL_SCORE = 0.5


def acquisition_to_score(values, reference) -> np.ndarray:
    """Rank-based score in [0, 1): the fraction of ``reference`` whose value is higher."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    ref = np.sort(np.asarray(reference, dtype=np.float64).reshape(-1))
    if ref.size == 0:
        return np.zeros_like(values)
    higher = ref.size - np.searchsorted(ref, values, side="right")
    return higher / ref.size
