"""Per-instance baselines: pure functions on tensors, and thin registered strategies.

All functions return acquisition values, larger = label first (docs/methods.md §4.2).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from .base import Need, ScoringInputs, Strategy
from .registry import register

_EPS = 1e-12


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -Σ p log p per row (natural log); p is clamped so that 0·log 0 = 0."""
    p = probs.to(torch.float64)
    return -(p * p.clamp_min(_EPS).log()).sum(dim=1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """1 - max_k p_k."""
    return 1.0 - probs.to(torch.float64).max(dim=1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """1 - (p_(1) - p_(2)): large when the two most likely labels are close. With C = 1: 0."""
    p = probs.to(torch.float64)
    if p.shape[1] < 2:
        return torch.zeros(p.shape[0], dtype=torch.float64)
    top2 = p.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def gini(probs: torch.Tensor) -> torch.Tensor:
    """Gini impurity 1 - Σ p² (ADMA's uncertainty, docs/methods.md §1.7)."""
    p = probs.to(torch.float64)
    return 1.0 - (p * p).sum(dim=1)


def max_confidence(probs: torch.Tensor) -> torch.Tensor:
    """max p: the most confident first (the EMOC paper's 'max' baseline, expected to lose)."""
    return probs.to(torch.float64).max(dim=1).values


def uniform_from_keys(keys: Sequence[str], seed: int) -> torch.Tensor:
    """A uniform value in [0, 1) per key, fixed by (seed, key) alone.

    Keyed hashing rather than a generator makes random order reproducible and independent of the
    order and size of the pool: the same task keeps its value across requests.
    """
    out = torch.empty(len(keys), dtype=torch.float64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


@register
class RandomStrategy(Strategy):
    name = "random"
    needs = frozenset({Need.KEYS})
    description = "Uniform random order, fixed per task by the seed (the baseline to beat)."

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        return uniform_from_keys([str(k) for k in inputs.require(Need.KEYS)], self.seed)


class _ProbsStrategy(Strategy):
    needs = frozenset({Need.PROBS})
    function = staticmethod(entropy)

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        return type(self).function(inputs.require(Need.PROBS))


@register
class LeastConfidenceStrategy(_ProbsStrategy):
    name = "least_confidence"
    description = "1 - max probability of the current model."
    function = staticmethod(least_confidence)


@register
class MarginStrategy(_ProbsStrategy):
    name = "margin"
    description = "1 - (p1 - p2): the two most likely labels are close."
    function = staticmethod(margin)


@register
class EntropyStrategy(_ProbsStrategy):
    name = "entropy"
    description = "Shannon entropy of the current model's predicted distribution."
    function = staticmethod(entropy)


@register
class GiniStrategy(_ProbsStrategy):
    name = "gini"
    description = "Gini impurity 1 - sum p^2 of the current model."
    function = staticmethod(gini)


@register
class MaxConfidenceStrategy(_ProbsStrategy):
    name = "max_confidence"
    description = "The most confident first: a sanity baseline expected to lose to random."
    function = staticmethod(max_confidence)
