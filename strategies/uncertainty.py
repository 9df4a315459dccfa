"""Per-instance baselines: pure functions on tensors, and thin registered strategies.

All functions return acquisition values, larger = label first (docs/methods.md §4.2).
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch

from .base import Need, ScoringInputs, Strategy
from .registry import register

_EPS = 1e-12


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -Σ p log p per row (natural log); p is clamped so that 0·log 0 = 0.
    Standard uncertainty sampling (Settles, 'Active Learning Literature Survey', 2009); docs/methods.md §4.2."""
    p = probs.to(torch.float64)
    return -(p * p.clamp_min(_EPS).log()).sum(dim=1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """1 - max_k p_k.
    Standard uncertainty sampling (Settles 2009); docs/methods.md §4.2."""
    return 1.0 - probs.to(torch.float64).max(dim=1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """1 - (p_(1) - p_(2)): large when the two most likely labels are close. With C = 1: 0.
    Standard uncertainty sampling (Settles 2009); docs/methods.md §4.2."""
    p = probs.to(torch.float64)
    if p.shape[1] < 2:
        return torch.zeros(p.shape[0], dtype=torch.float64)
    top2 = p.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def gini(probs: torch.Tensor) -> torch.Tensor:
    """Gini impurity 1 - Σ p² (ADMA's uncertainty, docs/methods.md §1.7).
    Eq. 10 of Huang, Zhao & Liu, KDD'18, with its sign fixed."""
    p = probs.to(torch.float64)
    return 1.0 - (p * p).sum(dim=1)


def max_confidence(probs: torch.Tensor) -> torch.Tensor:
    """max p: the most confident first (the EMOC paper's 'max' baseline, expected to lose).
    Käding et al. (2016); docs/methods.md §4.1-4.2."""
    return probs.to(torch.float64).max(dim=1).values


def uniform_from_keys(keys: Sequence[str], seed: int) -> torch.Tensor:
    """A uniform value in [0, 1) per key, fixed by (seed, key) alone.

    Keyed hashing rather than a generator makes random order reproducible and independent of the
    order and size of the pool: the same task keeps its value across requests.
    Project helper, not from a paper: the random baseline's values (docs/methods.md §4.1, §0).
    """
    out = torch.empty(len(keys), dtype=torch.float64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def structured(probs: torch.Tensor, layout, threshold: float, kind: str) -> torch.Tensor:
    """An uncertainty of a structured layout (docs/methods.md §9.3): each group's value on a 0..1
    scale, averaged over the groups (every group counts the same: an annotation answers them all).

    * single-choice group of K labels: entropy / log K, margin, or (1 - max p) / (1 - 1/K);
    * multi-label group: the mean binary entropy / log 2 (``entropy``), 1 - (the smallest distance
      of a label's p to the threshold) / max(t, 1 - t) (``margin``), or the mean of 2 min(p, 1 - p)
      (``least_confidence``).
    The project's extension to several questions, not from a paper.
    """
    p = probs.to(torch.float64)
    parts = []
    for g, a, b in layout.slices():
        q = p[:, a:b]
        k = b - a
        if g.multiple:
            if kind == "entropy":
                qc = q.clamp(_EPS, 1 - _EPS)
                parts.append((-(qc * qc.log() + (1 - qc) * (1 - qc).log())).mean(dim=1) / math.log(2.0))
            elif kind == "margin":
                t = float(threshold)
                parts.append(1.0 - (q - t).abs().min(dim=1).values / max(t, 1.0 - t))
            else:
                parts.append((2.0 * torch.minimum(q, 1.0 - q)).mean(dim=1))
        elif k < 2:
            parts.append(torch.zeros(p.shape[0], dtype=torch.float64))
        elif kind == "entropy":
            parts.append(entropy(q) / math.log(k))
        elif kind == "margin":
            parts.append(margin(q))
        else:
            parts.append(least_confidence(q) / (1.0 - 1.0 / k))
    return torch.stack(parts, dim=1).mean(dim=1)


@register
class RandomStrategy(Strategy):
    """The random baseline (docs/methods.md §4.1): a uniform value per task, fixed by the seed and the task's key
    (:func:`uniform_from_keys`)."""

    name = "random"
    structured = True
    needs = frozenset({Need.KEYS})
    description = "Uniform random order, fixed per task by the seed (the baseline to beat)."

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        return uniform_from_keys([str(k) for k in inputs.require(Need.KEYS)], self.seed)


class _ProbsStrategy(Strategy):
    needs = frozenset({Need.PROBS})
    function = staticmethod(entropy)
    kind: str | None = None  # the structured-layout counterpart (``structured``), when there is one

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        if inputs.layout is not None:
            return structured(inputs.require(Need.PROBS), inputs.layout, inputs.threshold, self.kind)
        return type(self).function(inputs.require(Need.PROBS))


@register
class LeastConfidenceStrategy(_ProbsStrategy):
    """Least confidence 1 - max p (Settles 2009); docs/methods.md §4.2, §9.3."""

    name = "least_confidence"
    structured, kind = True, "least_confidence"
    description = "1 - max probability of the current model."
    function = staticmethod(least_confidence)


@register
class MarginStrategy(_ProbsStrategy):
    """Margin 1 - (p1 - p2) (Settles 2009); docs/methods.md §4.2, §9.3."""

    name = "margin"
    structured, kind = True, "margin"
    description = "1 - (p1 - p2): the two most likely labels are close."
    function = staticmethod(margin)


@register
class EntropyStrategy(_ProbsStrategy):
    """Entropy -Σ p log p (Settles 2009); docs/methods.md §4.2, §9.3."""

    name = "entropy"
    structured, kind = True, "entropy"
    description = "Shannon entropy of the current model's predicted distribution."
    function = staticmethod(entropy)


@register
class GiniStrategy(_ProbsStrategy):
    """Gini impurity 1 - Σ p², ADMA's uncertainty term alone (Huang, Zhao & Liu, KDD'18); docs/methods.md §1.7, §4.2."""

    name = "gini"
    description = "Gini impurity 1 - sum p^2 of the current model."
    function = staticmethod(gini)


@register
class MaxConfidenceStrategy(_ProbsStrategy):
    """The EMOC paper's 'max' baseline (Käding et al. 2016; docs/methods.md §4.1-4.2): the most confident first."""

    name = "max_confidence"
    description = "The most confident first: a sanity baseline expected to lose to random."
    function = staticmethod(max_confidence)
