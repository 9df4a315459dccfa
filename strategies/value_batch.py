"""Value-weighted diverse batches for a per-item acquisition function (docs/methods.md §4.8).

Label Studio serves the queue one task at a time, and an annotator labels its top ten or so before the
model is trained again. A per-item value (ADMA, EMOC) puts near-duplicates next to each other at the
top. ``batch=kmeanspp`` turns the method's values into a *diverse* queue the way BADGE turns gradient
norms into one: every item becomes the point v(x) · h(x)/||h(x)|| (its penultimate-feature direction,
scaled by its value, so the point's norm *is* the value), and the queue follows k-means++ seeding on
these points: the first pick is the item of largest value; each next one is drawn with probability
proportional to its squared distance to the nearest pick. An item of high value far from everything
picked is likely; a near-duplicate of a pick is not; an item of value 0 sits at the origin.

The result is pool-relative (docs/methods.md §0): the selection order is turned into acquisition values
as core-set and BADGE turn theirs (§4.3), kept per model version, and an item that was not in the
scored pool is ranked behind every pick by its scaled-embedding distance to the kept picks.
"""

from __future__ import annotations

import torch

from .base import Need, ScoringInputs, recall_pool, remember_pool, values_from_pool
from .diversity import canonical_order, order_to_values_and_scale, rest_values
from .errors import StrategyError
from .uncertainty import uniform_from_keys

BATCH_MODES = ("none", "kmeanspp")


def unit_rows(h: torch.Tensor) -> torch.Tensor:
    """Rows of ``h`` (flattened, float64) scaled to unit L2 norm; a zero row stays zero.
    Project helper, not from a paper (docs/methods.md §4.8)."""
    h = h.to(torch.float64).flatten(1)
    norm = h.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, h / norm.clamp_min(1e-300), torch.zeros_like(h))


def value_distances(v: torch.Tensor, u: torch.Tensor, v_c: torch.Tensor, u_c: torch.Tensor) -> torch.Tensor:
    """Squared distances between the value-scaled points v_i u_i and v_c u_c, (n, m), without forming
    them: v_i² + v_c² − 2 v_i v_c (u_i·u_c) (unit directions u), clamped at 0 against rounding.
    Project helper, not from a paper (docs/methods.md §4.8)."""
    d = v[:, None].pow(2) + v_c[None, :].pow(2) - 2 * (v[:, None] * v_c[None, :]) * (u @ u_c.T)
    return d.clamp_min(0)


def value_kmeanspp(
    values: torch.Tensor, h: torch.Tensor, b: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means++ seeding on the value-scaled embeddings v(x) · h(x)/||h(x)||: the first pick is the
    largest value (ties: the lowest index), each next pick is drawn with probability proportional to
    its squared distance to the nearest pick (seeded). Returns (picks in order, every item's squared
    distance to the nearest pick, the unit directions). ``values`` must be >= 0 (a negative value has
    no length); a pool whose remaining items all coincide with picks is taken in index order.
    The seeding of BADGE (Ash et al., ICLR'20) with the method's value in place of the gradient norm;
    docs/methods.md §4.8."""
    v = values.to(torch.float64).flatten()
    if v.numel() and float(v.min()) < 0:
        raise StrategyError(
            f"batch=kmeanspp scales embeddings by the acquisition value, which must be >= 0 (got {float(v.min()):.3g})"
        )
    u = unit_rows(h)
    n = v.shape[0]
    b = min(int(b), n)
    if b <= 0:
        return torch.zeros(0, dtype=torch.long), torch.full((n,), torch.inf, dtype=torch.float64), u
    generator = torch.Generator().manual_seed(int(seed))
    v2 = v.pow(2)

    def to(c: int) -> torch.Tensor:  # one matrix-vector product per pick
        return (v2 + v2[c] - 2 * v * v[c] * (u @ u[c])).clamp_min(0)

    chosen = [int(torch.argmax(v))]
    nearest = to(chosen[0])
    taken = torch.zeros(n, dtype=torch.bool)
    taken[chosen[0]] = True
    while len(chosen) < b:
        weights = nearest.masked_fill(taken, 0.0)
        total = weights.sum()
        if total <= 0:
            rest = torch.nonzero(~taken).flatten()[: b - len(chosen)].tolist()
            chosen.extend(rest)
            for c in rest:
                torch.minimum(nearest, to(c), out=nearest)
            break
        pick = int(torch.multinomial(weights / total, 1, generator=generator))
        chosen.append(pick)
        taken[pick] = True
        torch.minimum(nearest, to(pick), out=nearest)
    return torch.tensor(chosen, dtype=torch.long), nearest, u


class ValueBatch:
    """The ``batch=kmeanspp`` option of a per-item strategy (ADMA, EMOC): its values become a
    value-weighted diverse queue order (:func:`value_kmeanspp`), ``budget`` picks first, the rest by
    scaled-embedding distance to the picks. Pools larger than ``candidates`` (0: never) run the
    seeding on a keyed candidate sample, as core-set and BADGE do (docs/methods.md §10).
    Project option, not from a paper (docs/methods.md §4.8)."""

    def __init__(self, seed: int = 0, budget: int = 256, candidates: int = 20_000) -> None:
        if int(budget) < 1:
            raise TypeError("budget must be >= 1")
        candidates = int(candidates)
        if candidates < 0 or 0 < candidates < int(budget):
            raise TypeError(f"candidates must be 0 (no sample) or at least the budget ({int(budget)})")
        self.seed, self.budget, self.candidates = int(seed), int(budget), candidates
        self.info: dict = {}

    def _sample(self, keys) -> torch.Tensor | None:
        if not self.candidates or len(keys) <= self.candidates:
            return None
        draw = uniform_from_keys([str(k) for k in keys], self.seed + 104_729)
        return torch.sort(torch.topk(draw, self.candidates, largest=False).indices).values

    def __call__(self, inputs: ScoringInputs, values: torch.Tensor, key, name: str) -> torch.Tensor:
        """The queue's acquisition values from the method's ``values`` of the same items. A request's
        subset gets the values kept by the last full-pool scoring of its model version (§0)."""
        h = inputs.require(Need.EMBEDDINGS)
        values = values.to(torch.float64)
        if not inputs.full_pool:
            entry = recall_pool(inputs, key, name)
            ref = entry["reference"]
            return values_from_pool(inputs, entry, lambda idx: self._behind(values[idx], h[idx], ref))
        keys = inputs.require(Need.KEYS)
        sample = self._sample(keys)
        rows = torch.arange(inputs.n) if sample is None else sample
        idx = rows[canonical_order([keys[int(i)] for i in rows])]
        picks, nearest, u = value_kmeanspp(values[idx], h[idx], self.budget, self.seed)
        ranked, scale = order_to_values_and_scale(picks, nearest)
        reference = {**scale, "v": values[idx][picks], "u": u[picks]}
        out = torch.empty(inputs.n, dtype=torch.float64)
        out[idx] = ranked
        if sample is not None:
            others = torch.ones(inputs.n, dtype=torch.bool)
            others[sample] = False
            rest = torch.nonzero(others).flatten()
            out[rest] = self._behind(values[rest], h[rest], reference)
        self.info = {
            "batch": "kmeanspp",
            "batch_picks": int(picks.numel()),
            **({"candidates": int(sample.numel()), "pool": inputs.n} if sample is not None else {}),
        }
        remember_pool(inputs, key, out, **reference)
        return out

    @staticmethod
    def _behind(v: torch.Tensor, h: torch.Tensor, reference: dict) -> torch.Tensor:
        """Items the scored pool (or its sample) did not hold: their scaled-embedding distance to the
        nearest kept pick, on the kept rest's scale, behind every pick."""
        v = v.to(torch.float64).flatten()
        if v.numel() and float(v.min()) < 0:
            raise StrategyError("batch=kmeanspp needs acquisition values >= 0")
        d = value_distances(v, unit_rows(h), reference["v"], reference["u"])
        return rest_values(d.min(dim=1).values, reference)


__all__ = ["BATCH_MODES", "ValueBatch", "unit_rows", "value_distances", "value_kmeanspp"]
