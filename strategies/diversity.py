"""Batch-diverse selection as pure functions (docs/methods.md §4.3-4.4): core-set (k-center greedy) and
BADGE (k-means++ seeding on gradient embeddings, without materialising them). Both return pool
indices in selection order (first = label first). Their registered strategies and the
diversity-aware queue ordering build on these.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import Need, ScoringInputs, Strategy, recall_pool, remember_pool, subset_inputs, values_from_pool
from .errors import PoolRelativeError, StrategyError
from .registry import register
from .uncertainty import uniform_from_keys


def k_center_greedy(pool: torch.Tensor, labeled: torch.Tensor | None, b: int, seed: int = 0) -> torch.Tensor:
    """Greedily pick ``b`` pool items, each the farthest (squared L2) from everything chosen or
    labeled so far. With nothing labeled, the first pick is a seeded random pool item. Ties go to
    the lowest index. Each pick costs one matrix-vector product over the pool
    (||x - c||² = ||x||² + ||c||² - 2 x·c), not an N x D temporary.
    Core-set: Sener & Savarese, 'Active Learning for Convolutional Neural Networks: A Core-Set Approach', ICLR'18;
    docs/methods.md §4.3."""
    pool = pool.to(torch.float64).flatten(1)
    n = pool.shape[0]
    b = min(b, n)
    if b <= 0:
        return torch.zeros(0, dtype=torch.long)
    chosen: list[int] = []
    norms = pool.pow(2).sum(dim=1)
    if labeled is not None and labeled.shape[0] > 0:
        nearest = _nearest_sq(pool, labeled.to(torch.float64).flatten(1))  # chunked: bounded memory
    else:
        first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
        chosen.append(first)
        nearest = _sq_to(pool, norms, first)
    taken = torch.zeros(n, dtype=torch.bool)
    taken[chosen] = True
    while len(chosen) < b:
        pick = int(torch.argmax(nearest.masked_fill(taken, -1.0)))
        chosen.append(pick)
        taken[pick] = True
        torch.minimum(nearest, _sq_to(pool, norms, pick), out=nearest)
    return torch.tensor(chosen, dtype=torch.long)


def _sq_to(x: torch.Tensor, norms: torch.Tensor, c: int) -> torch.Tensor:
    """||x_i - x_c||² for every row, from the rows' squared norms (clamped at 0 against rounding)."""
    return (norms + norms[c] - 2 * (x @ x[c])).clamp_min_(0)


def badge_distances(a: torch.Tensor, h: torch.Tensor, center: int, norms: torch.Tensor | None = None) -> torch.Tensor:
    """||g_i - g_c||² for gradient embeddings g = a ⊗ h (a = p - e_ŷ), without forming g:
    ||a_i||²||h_i||² + ||a_c||²||h_c||² - 2 (a_i·a_c)(h_i·h_c). ``norms``: the ||g_i||², when known.
    The gradient embeddings of BADGE (Ash et al., ICLR'20); the factorised distance is the project's
    (docs/methods.md §4.4)."""
    na = a.pow(2).sum(dim=1) * h.pow(2).sum(dim=1) if norms is None else norms
    return (na + na[center] - 2 * (a @ a[center]) * (h @ h[center])).clamp_min(0)


def residual(p: torch.Tensor, layout=None, threshold: float = 0.5) -> torch.Tensor:
    """a = p - ŷ, the gradient of the loss at the model's own prediction ŷ with respect to the
    logits: ŷ = e_argmax for a single-choice group (cross-entropy), ŷ_k = [p_k >= threshold] for a
    multi-label group (binary cross-entropy), group by group for a structured layout (docs/methods.md §9.3).
    The hallucinated-label gradient of BADGE (Ash et al., ICLR'20); the multi-label form is the project's."""
    p = p.to(torch.float64)
    if layout is None:
        return p - torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).to(torch.float64)
    a = torch.empty_like(p)
    for g, lo, hi in layout.slices():
        q = p[:, lo:hi]
        if g.multiple:
            a[:, lo:hi] = q - (q >= threshold).to(torch.float64)
        else:
            a[:, lo:hi] = q - torch.nn.functional.one_hot(q.argmax(dim=1), hi - lo).to(torch.float64)
    return a


def badge(
    probs: torch.Tensor, h: torch.Tensor, b: int, seed: int = 0, layout=None, threshold: float = 0.5
) -> torch.Tensor:
    """BADGE selection: k-means++ seeding on g = (p - ŷ) ⊗ h (:func:`residual`); the first pick is
    the largest ||g||.
    BADGE: Ash et al., 'Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds', ICLR'20;
    docs/methods.md §4.4."""
    return badge_seeding(probs, h, b, seed, layout, threshold)[0]


def badge_seeding(
    probs: torch.Tensor, h: torch.Tensor, b: int, seed: int = 0, layout=None, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`badge`'s picks, every item's squared gradient-space distance to the nearest pick,
    and the residuals a (what the rest of the queue is ranked by).
    BADGE (Ash et al., ICLR'20); docs/methods.md §4.4."""
    p, h = probs.to(torch.float64), h.to(torch.float64).flatten(1)
    n = p.shape[0]
    b = min(b, n)
    a = residual(p, layout, threshold)
    if b <= 0:
        return torch.zeros(0, dtype=torch.long), torch.full((n,), torch.inf, dtype=torch.float64), a
    generator = torch.Generator().manual_seed(seed)
    norms = a.pow(2).sum(dim=1) * h.pow(2).sum(dim=1)
    chosen = [int(torch.argmax(norms))]
    nearest = badge_distances(a, h, chosen[0], norms)
    taken = torch.zeros(n, dtype=torch.bool)
    taken[chosen[0]] = True
    while len(chosen) < b:
        weights = nearest.masked_fill(taken, 0.0)
        total = weights.sum()
        if total <= 0:  # every remaining item coincides with a chosen one: take them in index order
            rest = torch.nonzero(~taken).flatten()[: b - len(chosen)].tolist()
            chosen.extend(rest)
            for c in rest:
                torch.minimum(nearest, badge_distances(a, h, c, norms), out=nearest)
            break
        pick = int(torch.multinomial(weights / total, 1, generator=generator))
        chosen.append(pick)
        taken[pick] = True
        torch.minimum(nearest, badge_distances(a, h, pick, norms), out=nearest)
    return torch.tensor(chosen, dtype=torch.long), nearest, a


# ------------------------------------------------------------------------------------------------
# Registered batch strategies and the diversity-aware queue order. Label Studio serves one task at a
# time by score, so a batch method's selection order becomes acquisition values: the ``budget``
# greedy picks come first, in pick order; every other item follows, ranked by the quantity the
# greedy would look at next (its distance to everything picked). All of them run on the pool sorted
# by task key, so the result does not depend on the order in which the pool arrives.


def canonical_order(keys: Sequence[str]) -> torch.Tensor:
    """Project helper, not from a paper: the pool's indices sorted by task key, so that a greedy selection does not
    depend on the pool's order (docs/methods.md §0)."""
    return torch.tensor(sorted(range(len(keys)), key=lambda i: str(keys[i])), dtype=torch.long)


def order_to_values(picks: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Acquisition values from a pick order plus a ranking key (larger = earlier) for the rest.
    Project helper, not from a paper (docs/methods.md §4.3)."""
    return order_to_values_and_scale(picks, rest)[0]


def order_to_values_and_scale(picks: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """:func:`order_to_values` and the scale that put the rest in [0, 1] (kept to value new items).
    Project helper, not from a paper (docs/methods.md §0, §4.3)."""
    n = rest.shape[0]
    values = torch.zeros(n, dtype=torch.float64)
    r = rest.to(torch.float64)
    low = float(r.min()) if n else 0.0
    span = float(r.max() - r.min()) if n else 0.0
    values[:] = (r - low) / span if span > 0 else 0.0  # in [0, 1]
    b = picks.shape[0]
    values[picks] = 2.0 + torch.arange(b - 1, -1, -1, dtype=torch.float64)
    return values, {"low": low, "span": span}


def rest_values(raw: torch.Tensor, scale: dict) -> torch.Tensor:
    """Items that were not in the kept pool, on the scale of its rest, behind every greedy pick:
    clipped to [0, 1.5] (a pick is worth at least 2).
    Project helper, not from a paper (docs/methods.md §0)."""
    r = raw.to(torch.float64)
    if scale["span"] <= 0:
        return torch.zeros_like(r)
    return ((r - scale["low"]) / scale["span"]).clamp(0.0, 1.5)


def _nearest_sq(x: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        out[s : s + chunk] = torch.cdist(x[s : s + chunk], centres).pow(2).min(dim=1).values
    return out


class BudgetStrategy(Strategy):
    """A batch method turned into a queue order: ``budget`` greedy picks first (see above). Its
    values are relative to the whole pool: a subset is valued from the last full-pool scoring of the
    same model (kept items keep their value; new items are ranked against the kept picks).

    Pools larger than ``candidates`` (0: never) run the method on a candidate sample of that many
    items, drawn by a hash of each task's key (docs/methods.md §10): the picks come from the sample,
    and every other item is ranked with the picks' reference exactly as a task that was not in the
    pool (:meth:`new_item_rest`), behind every pick.
    Project base class, not from a paper (docs/methods.md §0, §4.3, §10)."""

    pool_relative = True

    def __init__(self, seed: int = 0, budget: int = 256, candidates: int = 20_000) -> None:
        super().__init__(seed)
        if int(budget) < 1:
            raise TypeError("budget must be >= 1")
        candidates = int(candidates)
        if candidates < 0 or 0 < candidates < int(budget):
            raise TypeError(f"candidates must be 0 (no sample) or at least the budget ({int(budget)})")
        self.budget, self.candidates = int(budget), candidates
        self._sampled: dict = {}

    def params(self) -> dict:
        return {"seed": self.seed, "budget": self.budget, "candidates": self.candidates}

    def info(self) -> dict:
        return dict(self._sampled)

    def sample_size(self, inputs: ScoringInputs) -> int:
        """How many candidates the sample holds for these inputs (0: no sample)."""
        return self.candidates

    def candidate_sample(self, keys, size: int | None = None) -> torch.Tensor | None:
        """Indices of the candidate sample (the ``size`` smallest key hashes; default ``candidates``),
        or None when the pool is not larger than that."""
        size = self.candidates if size is None else size
        if not size or len(keys) <= size:
            return None
        draw = uniform_from_keys([str(k) for k in keys], self.seed + 104_729)
        return torch.sort(torch.topk(draw, size, largest=False).indices).values

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        key = (self.name, tuple(sorted(self.params().items())))
        if not inputs.full_pool:
            entry = recall_pool(inputs, key, self.name)
            return values_from_pool(inputs, entry, lambda idx: self._behind_picks(inputs, idx, entry["reference"]))
        keys = inputs.require(Need.KEYS)
        sample = self.candidate_sample(keys, self.sample_size(inputs))
        self._sampled = {} if sample is None else {"candidates": int(sample.numel()), "pool": inputs.n}
        pool = inputs if sample is None else subset_inputs(inputs, sample)
        perm = canonical_order(pool.require(Need.KEYS))
        values, reference = self.ordered_values(pool, perm)
        out = torch.empty(inputs.n, dtype=torch.float64)
        if sample is None:
            out[perm] = values
        else:
            out[sample[perm]] = values
            others = torch.ones(inputs.n, dtype=torch.bool)
            others[sample] = False
            rest = torch.nonzero(others).flatten().tolist()
            out[rest] = self._behind_picks(inputs, rest, reference)
        remember_pool(inputs, key, out, **reference)
        return out

    def _behind_picks(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        """Values of items that the scored pool (or its candidate sample) did not hold: ranked by
        :meth:`new_item_rest` against the kept reference, behind every pick."""
        return rest_values(self.new_item_rest(inputs, idx, reference), reference)

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(acquisition values for the pool taken in the order ``perm`` (sorted by task key), what
        :meth:`new_item_rest` needs: the rest's scale and the picks' reference)."""
        raise NotImplementedError

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        """The rest's ranking key for items ``idx`` that were not in the kept pool."""
        raise NotImplementedError


@register
class CoreSetStrategy(BudgetStrategy):
    """Core-set (Sener & Savarese, ICLR'18) as a queue order: ``budget`` k-center greedy picks first, then the rest by
    distance to everything picked (docs/methods.md §4.3)."""

    structured = True  # embeddings only
    name = "coreset"
    needs = frozenset({Need.EMBEDDINGS, Need.LABELED_EMBEDDINGS, Need.KEYS})
    description = (
        "Core-set (Sener & Savarese): k-center greedy on penultimate features, away from the labeled "
        "set; `budget` greedy picks, then the rest by distance to everything picked."
    )

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        keys = inputs.require(Need.KEYS)
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[perm]
        labeled = inputs.labeled_embeddings
        labeled = None if labeled is None or labeled.shape[0] == 0 else labeled.to(torch.float64).flatten(1)
        if labeled is None:  # no labels yet: start from a seeded, key-determined item
            first = int(torch.argmax(uniform_from_keys([str(keys[int(i)]) for i in perm], self.seed)))
            labeled_start = h[first : first + 1]
        else:
            labeled_start = labeled
        picks = k_center_greedy(h, labeled_start, self.budget, self.seed)
        if labeled is None:
            picks = torch.cat([torch.tensor([first]), picks[picks != first]])[: min(self.budget, h.shape[0])]
        centres = torch.cat([labeled_start, h[picks]]) if picks.numel() else labeled_start
        values, scale = order_to_values_and_scale(picks, _nearest_sq(h, centres))
        return values, {**scale, "centres": centres}

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[idx]
        return _nearest_sq(h, reference["centres"])


@register
class BadgeStrategy(BudgetStrategy):
    """BADGE (Ash et al., ICLR'20) as a queue order: ``budget`` k-means++ picks on gradient embeddings first, then the
    rest by gradient-space distance to the picks (docs/methods.md §4.4)."""

    name = "badge"
    structured = True
    needs = frozenset({Need.PROBS, Need.EMBEDDINGS, Need.KEYS})
    description = (
        "BADGE (Ash et al.): k-means++ seeding on last-layer gradient embeddings (p - e_y) x h, "
        "factorised; `budget` picks, then the rest by gradient-space distance to the picks."
    )

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        p = inputs.require(Need.PROBS).to(torch.float64)[perm]
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[perm]
        picks, nearest, a = badge_seeding(p, h, self.budget, self.seed, inputs.layout, inputs.threshold)
        values, scale = order_to_values_and_scale(picks, nearest)
        return values, {**scale, "a": a[picks], "h": h[picks]}

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        p = inputs.require(Need.PROBS).to(torch.float64)[idx]
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[idx]
        a = residual(p, inputs.layout, inputs.threshold)
        ac, hc = reference["a"], reference["h"]
        na = a.pow(2).sum(dim=1) * h.pow(2).sum(dim=1)
        nc = ac.pow(2).sum(dim=1) * hc.pow(2).sum(dim=1)
        d = (na[:, None] + nc[None, :] - 2 * (a @ ac.T) * (h @ hc.T)).clamp_min(0)  # ||g_i - g_c||², factorised
        return d.min(dim=1).values


def diverse_queue(values: torch.Tensor, embeddings: torch.Tensor, top: int) -> torch.Tensor:
    """Diversity-aware queue order: the ``top`` items by acquisition keep their place ahead of the
    rest, but are re-ordered by k-center greedy on ``embeddings`` starting from the best one, so
    that consecutive tasks in the queue are not near-duplicates. Returns new values (larger = first).
    A project rule, not from a paper: core-set's k-center greedy (Sener & Savarese, ICLR'18) on the top of the queue
    (docs/methods.md §4.3)."""
    n = values.shape[0]
    top = min(top, n)
    if top < 2:
        return values.clone()
    best = torch.argsort(values, descending=True, stable=True)[:top]
    h = embeddings.to(torch.float64).flatten(1)[best]
    order = k_center_greedy(h[1:], h[:1], top - 1)
    ranked = torch.cat([torch.tensor([0]), order + 1])
    out = values.to(torch.float64).clone()
    hi = float(out.max())
    out[best[ranked]] = hi + 1.0 + torch.arange(top - 1, -1, -1, dtype=torch.float64)
    return out


class DiverseQueue(Strategy):
    """Queue diversity as a strategy: wraps another one and, on a full-pool scoring, re-orders its
    ``top`` highest values with :func:`diverse_queue` on the embeddings. A subset of the pool (a
    request's tasks) keeps the wrapped strategy's values. Everything else is the wrapped strategy's:
    its name, layers, state and diagnostics; its parameters plus ``queue_diversity``.
    Project wrapper, not from a paper (QUEUE_DIVERSITY, docs/methods.md §4.3)."""

    description = "diversity-aware queue order around another strategy"

    def __init__(self, inner: Strategy, top: int) -> None:
        if top < 2:
            raise StrategyError(f"queue diversity needs top >= 2, got {top}")
        self.inner, self.top = inner, int(top)
        self.seed = inner.seed
        self.name = inner.name
        self.needs = frozenset(inner.needs | {Need.EMBEDDINGS})
        self.structured = inner.structured

    def params(self) -> dict:
        return {**self.inner.params(), "queue_diversity": f"coreset@{self.top}"}

    def layers(self) -> tuple[str, ...]:
        return self.inner.layers()

    def views(self) -> int:
        return self.inner.views()

    def needs_for(self, fingerprints, state) -> frozenset[Need]:
        return frozenset(self.inner.needs_for(fingerprints, state) | {Need.EMBEDDINGS})

    def info(self) -> dict:
        return self.inner.info()

    def set_source_data(self, source) -> None:
        self.inner.set_source_data(source)

    def saved_state(self, state: dict) -> dict | None:
        return self.inner.saved_state(state)

    def restore_state(self, state: dict, saved: dict) -> bool:
        return self.inner.restore_state(state, saved)

    @property
    def pool_relative(self) -> bool:
        return True  # the re-ordered top depends on the whole pool

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        values = self.inner(inputs)
        key = ("queue_diversity", self.top, self.name, tuple(sorted(self.inner.params().items())))
        if not inputs.full_pool:  # kept items keep their place; new ones get the wrapped strategy's value
            try:
                entry = recall_pool(inputs, key, self.name)
            except PoolRelativeError:
                return values
            return values_from_pool(inputs, entry, lambda idx: values[idx])
        out = diverse_queue(values, inputs.require(Need.EMBEDDINGS), self.top)
        remember_pool(inputs, key, out)
        return out

    def __getattr__(self, name: str):  # what only the wrapped strategy has (ADMA's landmarks, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"DiverseQueue({self.inner!r}, top={self.top})"


def with_queue_diversity(strategy: Strategy, mode: str, top: int) -> Strategy:
    """``strategy`` as the queue orders it: ``mode`` ``off`` or ``coreset`` (QUEUE_DIVERSITY).
    Project helper, not from a paper (docs/methods.md §4.3)."""
    if mode == "off":
        return strategy
    if mode != "coreset":
        raise StrategyError(f"unknown queue diversity {mode!r}; allowed: off, coreset")
    return DiverseQueue(strategy, top)
