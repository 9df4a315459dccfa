"""When do more labels stop changing the model? (docs/methods.md §7)

* **Stabilizing predictions** (Bloodgood & Vijay-Shanker, CoNLL 2009): a fixed *stop set* of items
  is predicted by every new model version; Cohen's κ between consecutive versions' predictions on
  it measures how much a round changed the model. The signal fires when the mean κ over the last
  ``window`` comparisons reaches ``threshold`` (the paper's rule: 3 windows, 0.99). It needs no
  labels and no held-out set.
* **Prequential agreement**: whether the version that was serving when a task was labeled predicted
  the annotator's label (test, then train). Per round it is a binomial proportion; its Wilson
  interval is what the dashboard plots.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

STOP_KAPPA = 0.99
STOP_WINDOW = 3


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's κ between two labelings of the same items (sklearn's); 1.0 when both are constant
    and equal (κ is 0/0 there), NaN for no items."""
    from sklearn.metrics import cohen_kappa_score

    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"κ needs two labelings of the same items, got {len(a)} and {len(b)}")
    if not a:
        return float("nan")
    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(cohen_kappa_score(a, b))


def stop_set(keys: Iterable, size: int, seed: int = 0) -> list:
    """A fixed sample of ``size`` keys: the ones whose seeded hash is smallest, so the choice does
    not depend on the order of ``keys`` and an item keeps its place when others come or go."""
    ranked = sorted(keys, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())
    return ranked[:size]


@dataclass(frozen=True)
class StabilityRule:
    threshold: float = STOP_KAPPA
    window: int = STOP_WINDOW

    def __post_init__(self):
        if not 0 < self.threshold <= 1 or self.window < 1:
            raise ValueError("the stopping rule needs 0 < threshold <= 1 and window >= 1")

    def fires(self, kappas: Sequence[float]) -> bool:
        """Mean of the last ``window`` κ (NaN ones skipped) >= threshold."""
        recent = [k for k in kappas if not math.isnan(k)][-self.window :]
        return len(recent) == self.window and sum(recent) / self.window >= self.threshold

    def first(self, kappas: Sequence[float]) -> int | None:
        """The index of the first comparison at which the rule fires, or None."""
        for i in range(len(kappas)):
            if self.fires(kappas[: i + 1]):
                return i
        return None

    def describe(self) -> str:
        return f"mean Cohen's κ of the last {self.window} consecutive versions ≥ {self.threshold:g}"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


__all__ = ["cohen_kappa", "stop_set", "StabilityRule", "wilson", "STOP_KAPPA", "STOP_WINDOW"]
