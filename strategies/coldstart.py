"""Cold-start strategies: representative picks for the first labels (docs/methods.md §4.5-4.6).

* TypiClust (Hacohen, Dekel & Weinshall, ICML'22): cluster labeled ∪ unlabeled embeddings into
  |L| + b clusters; repeatedly take the cluster with the fewest labeled items (ties: the largest) and
  pick its most *typical* unlabeled item, typicality(x) = 1 / mean distance to its k nearest
  neighbours in the cluster.
* ProbCover (Yehuda et al., NeurIPS'22): δ-balls around the embeddings; greedily pick the item whose
  ball covers the most not-yet-covered items (labeled items cover their balls from the start). δ is
  the largest candidate whose balls are at least ``purity`` pure with respect to a k-means
  clustering into as many clusters as there are classes (the paper's rule); the choice is reported.

Both are pure functions of the embeddings, exact against brute force on small inputs, and chunked:
no N×N matrix is formed (ProbCover keeps the δ-graph's edges, O(N · mean ball size)). As strategies
they are batch methods turned into a queue order like core-set (picks first, then the rest), and
pool-relative (docs/methods.md §0).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import Need, ScoringInputs
from .diversity import BudgetStrategy, order_to_values_and_scale
from .errors import StrategyError
from .registry import register

CHUNK = 2048
PER_CLUSTER = 20  # TypiClust's candidate sample holds at least this many items per cluster
SAMPLE = 2000  # the kept sample that ranks items outside the scored pool (docs/methods.md §10)


def _kmeans(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    k = max(1, min(k, x.shape[0]))
    return torch.from_numpy(KMeans(k, n_init=3, random_state=seed).fit(x.numpy()).labels_).long()


def knn_mean_distance(x: torch.Tensor, k: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of x: the mean L2 distance to its ``k`` nearest rows of ``among`` (default: x itself,
    excluding the row), computed in chunks.
    Project helper for TypiClust's typicality (docs/methods.md §4.5), not from a paper."""
    ref = x if among is None else among
    k = max(1, min(k, ref.shape[0] - (1 if among is None else 0)))
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], CHUNK):
        d = torch.cdist(x[s : s + CHUNK], ref)
        if among is None:  # a row is not its own neighbour
            d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = torch.inf
        out[s : s + CHUNK] = d.topk(k, dim=1, largest=False).values.mean(dim=1)
    return out


def typicality(x: torch.Tensor, k: int = 20) -> torch.Tensor:
    """1 / (mean distance to the k nearest neighbours); a lone item gets typicality 0.
    TypiClust's typicality (Hacohen, Dekel & Weinshall, ICML'22); docs/methods.md §4.5."""
    if x.shape[0] < 2:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    return 1.0 / (knn_mean_distance(x, k) + 1e-12)


def typiclust(
    pool: torch.Tensor, labeled: torch.Tensor | None, b: int, k: int = 20, seed: int = 0, max_clusters: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """TypiClust's ``b`` picks (pool indices, in pick order) and every pool item's typicality within
    its cluster.
    TypiClust: Hacohen, Dekel & Weinshall, 'Active Learning on a Budget: Opposite Strategies Suit High and Low
    Budgets', ICML'22; docs/methods.md §4.5."""
    pool = pool.to(torch.float64).flatten(1)
    n_l = 0 if labeled is None else labeled.shape[0]
    x = pool if not n_l else torch.cat([pool, labeled.to(torch.float64).flatten(1)])
    assign = _kmeans(x, min(n_l + b, max_clusters), seed)
    n = pool.shape[0]
    typ = torch.zeros(n, dtype=torch.float64)
    clusters = int(assign.max()) + 1
    members = [torch.nonzero(assign[:n] == c).flatten() for c in range(clusters)]
    for m in members:
        if len(m):
            typ[m] = typicality(pool[m], k)
    labeled_count = torch.bincount(assign[n:], minlength=clusters) if n_l else torch.zeros(clusters, dtype=torch.long)
    size = torch.bincount(assign, minlength=clusters)
    picks: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    used = torch.zeros(clusters, dtype=torch.long)  # picks so far per cluster (they count as labeled)
    for _ in range(min(b, n)):
        open_ = [c for c in range(clusters) if bool((~taken[members[c]]).any())]
        if not open_:
            break
        c = min(open_, key=lambda c: (int(labeled_count[c] + used[c]), -int(size[c]), c))
        candidates = members[c][~taken[members[c]]]
        best = int(candidates[torch.argmax(typ[candidates])])
        picks.append(best)
        taken[best] = True
        used[c] += 1
    return torch.tensor(picks, dtype=torch.long), typ


def ball_lists(x: torch.Tensor, delta: float, max_edges: int = 50_000_000) -> list[torch.Tensor]:
    """For every row, the rows within distance < δ (itself included), chunked; StrategyError when
    the graph would exceed ``max_edges`` edges (δ too large for the pool).
    ProbCover's δ-graph (Yehuda et al., NeurIPS'22); docs/methods.md §4.6."""
    out: list[torch.Tensor] = []
    edges = 0
    for s in range(0, x.shape[0], CHUNK):
        close = torch.cdist(x[s : s + CHUNK], x) < delta
        for row in close:
            out.append(torch.nonzero(row).flatten())
        edges += int(close.sum())
        if edges > max_edges:
            raise StrategyError(
                f"ProbCover's δ-graph exceeds {max_edges} edges at δ={delta:.4g}; lower delta or purity"
            )
    return out


def purity(x: torch.Tensor, clusters: torch.Tensor, delta: float) -> float:
    """The share of items whose δ-ball holds only items of their own cluster.
    ProbCover's purity (Yehuda et al., NeurIPS'22); docs/methods.md §4.6."""
    pure = 0
    for s in range(0, x.shape[0], CHUNK):
        close = torch.cdist(x[s : s + CHUNK], x) < delta
        other = clusters[None, :] != clusters[s : s + CHUNK, None]
        pure += int((~(close & other).any(dim=1)).sum())
    return pure / max(1, x.shape[0])


def choose_delta(
    x: torch.Tensor, classes: int, alpha: float = 0.95, seed: int = 0, candidates: Sequence[float] | None = None
) -> tuple[float, float]:
    """(δ, its purity): the largest candidate δ whose balls are at least ``alpha`` pure with respect
    to k-means into ``classes`` clusters. Candidates: quantiles of the distance to the nearest
    neighbour up to the median pairwise distance of a sample.
    ProbCover's purity rule for δ (Yehuda et al., NeurIPS'22); the candidate grid is the project's
    (docs/methods.md §4.6)."""
    x = x.to(torch.float64).flatten(1)
    clusters = _kmeans(x, classes, seed)
    if candidates is None:
        g = torch.Generator().manual_seed(seed)
        sample = x[torch.randperm(x.shape[0], generator=g)[:1000]]
        d = torch.cdist(sample, sample)
        upper = float(d[d > 0].median()) if (d > 0).any() else 1.0
        lower = float(knn_mean_distance(sample, 1).median()) if sample.shape[0] > 1 else upper / 10
        candidates = torch.linspace(max(lower, 1e-9), upper, 20).tolist()
    other = nearest_other_cluster(x, clusters)  # a ball is pure iff it reaches no other cluster

    def pure(delta: float) -> float:
        return float((other >= delta).to(torch.float64).mean())

    best = (float(min(candidates)), pure(float(min(candidates))))
    for delta in sorted(candidates):
        p = pure(delta)
        if p >= alpha:
            best = (float(delta), p)
        else:
            break
    return best


def nearest_other_cluster(x: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """Per row, the distance to the nearest row of another cluster (inf when there is none): the
    δ-ball of a row is pure (:func:`purity`) exactly when this distance is at least δ, so one pass
    answers every candidate δ.
    A project speed-up of ProbCover's purity rule (docs/methods.md §10), not from a paper."""
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], CHUNK):
        d = torch.cdist(x[s : s + CHUNK], x)
        d.masked_fill_(clusters[None, :] == clusters[s : s + CHUNK, None], torch.inf)
        out[s : s + CHUNK] = d.min(dim=1).values
    return out


def probcover(
    pool: torch.Tensor, labeled: torch.Tensor | None, b: int, delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ProbCover's ``b`` picks (pool indices, in pick order) and every pool item's ball size (its
    number of pool neighbours within δ). Ties go to the lowest index.
    ProbCover: Yehuda, Dekel, Hacohen & Weinshall, 'Active Learning Through a Covering Lens', NeurIPS'22;
    docs/methods.md §4.6."""
    pool = pool.to(torch.float64).flatten(1)
    n = pool.shape[0]
    balls = ball_lists(pool, delta)
    degree = torch.tensor([len(b_) for b_ in balls], dtype=torch.float64)
    covered = torch.zeros(n, dtype=torch.bool)
    if labeled is not None and labeled.shape[0]:
        lab = labeled.to(torch.float64).flatten(1)
        for s in range(0, n, CHUNK):
            covered[s : s + CHUNK] = (torch.cdist(pool[s : s + CHUNK], lab) < delta).any(dim=1)
    gain = torch.tensor([float((~covered[b_]).sum()) for b_ in balls], dtype=torch.float64)
    picks: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    for _ in range(min(b, n)):
        masked = gain.masked_fill(taken, -1.0)
        best = int(torch.argmax(masked))
        if masked[best] <= 0:  # everything is covered: the rest of the budget follows the ball sizes
            break
        picks.append(best)
        taken[best] = True
        newly = balls[best][~covered[balls[best]]]
        covered[newly] = True
        for j in newly.tolist():  # every ball that held a newly covered item gains one less
            gain[balls[j]] -= 1.0
    return torch.tensor(picks, dtype=torch.long), degree


@register
class TypiClustStrategy(BudgetStrategy):
    """TypiClust (Hacohen, Dekel & Weinshall, ICML'22) as a queue order: its picks first, then the rest by typicality
    (docs/methods.md §4.5)."""

    structured = True  # embeddings only
    name = "typiclust"
    needs = frozenset({Need.EMBEDDINGS, Need.LABELED_EMBEDDINGS, Need.KEYS})
    description = (
        "TypiClust (Hacohen et al.): the most typical item of each of the largest clusters that hold no "
        "label yet; for the first labels of a project (cold start)."
    )

    def __init__(
        self, seed: int = 0, budget: int = 50, k: int = 20, max_clusters: int = 500, candidates: int = 10_000
    ) -> None:
        super().__init__(seed, budget, candidates)
        if int(k) < 1 or int(max_clusters) < 1:
            raise TypeError("k and max_clusters must be >= 1")
        self.k, self.max_clusters = int(k), int(max_clusters)

    def params(self) -> dict:
        return {**super().params(), "k": self.k, "max_clusters": self.max_clusters}

    def sample_size(self, inputs: ScoringInputs) -> int:
        """At least ``PER_CLUSTER`` candidates per cluster: a sample of about one item per cluster
        leaves nothing to be typical of (measured: docs/results.md, large-pool approximations)."""
        if not self.candidates:
            return 0
        n_l = 0 if inputs.labeled_embeddings is None else int(inputs.labeled_embeddings.shape[0])
        return max(self.candidates, PER_CLUSTER * min(n_l + self.budget, self.max_clusters))

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[perm]
        picks, typ = typiclust(h, inputs.labeled_embeddings, self.budget, self.k, self.seed, self.max_clusters)
        values, scale = order_to_values_and_scale(picks, typ)
        sample = h[torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(self.seed))[:SAMPLE]]
        return values, {**scale, "sample": sample}

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        h = inputs.require(Need.EMBEDDINGS).flatten(1)[idx].to(torch.float32)  # float32: an estimate already
        return 1.0 / (
            knn_mean_distance(h, self.k, among=reference["sample"].to(torch.float32)).to(torch.float64) + 1e-12
        )


@register
class ProbCoverStrategy(BudgetStrategy):
    """ProbCover (Yehuda et al., NeurIPS'22) as a queue order: its picks first, then the rest by ball size
    (docs/methods.md §4.6)."""

    name = "probcover"
    structured = True  # embeddings; the purity rule's k-means has one cluster per output
    needs = frozenset({Need.PROBS, Need.EMBEDDINGS, Need.LABELED_EMBEDDINGS, Need.KEYS})
    description = (
        "ProbCover (Yehuda et al.): greedy coverage of the pool by δ-balls, δ from the purity rule; "
        "for the first labels of a project (cold start)."
    )

    def __init__(
        self,
        seed: int = 0,
        budget: int = 50,
        purity: float = 0.95,
        delta: float | None = None,
        candidates: int = 10_000,
    ) -> None:
        super().__init__(seed, budget, candidates)
        if not 0 < float(purity) <= 1 or (delta is not None and float(delta) <= 0):
            raise TypeError("purity must be in (0, 1] and delta > 0")
        self.purity, self.delta = float(purity), None if delta is None else float(delta)
        self._info: dict = {}

    def params(self) -> dict:
        return {**super().params(), "purity": self.purity, "delta": self.delta}

    def info(self) -> dict:
        return {**self._info, **self._sampled}

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = inputs.require(Need.EMBEDDINGS).to(torch.float64).flatten(1)[perm]
        classes = inputs.require(Need.PROBS).shape[1]
        if self.delta is None:
            delta, pure = choose_delta(h, classes, self.purity, self.seed)
        else:
            delta, pure = self.delta, float("nan")
        picks, degree = probcover(h, inputs.labeled_embeddings, self.budget, delta)
        self._info = {"delta": delta, "delta_purity": pure, "picks": int(picks.numel())}
        values, scale = order_to_values_and_scale(picks, degree)
        sample = h[torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(self.seed))[:SAMPLE]]
        return values, {**scale, "delta": delta, "sample": sample, "pool_size": h.shape[0]}

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        """A new item's ball size in the kept pool, estimated from a sample of it (exact up to 2000)."""
        h = inputs.require(Need.EMBEDDINGS).flatten(1)[idx].to(torch.float32)  # float32: an estimate already
        sample = reference["sample"].to(torch.float32)
        inside = torch.empty(h.shape[0], dtype=torch.float64)
        for s in range(0, h.shape[0], CHUNK):
            inside[s : s + CHUNK] = (
                (torch.cdist(h[s : s + CHUNK], sample) < reference["delta"]).sum(dim=1).to(torch.float64)
            )
        return inside * reference["pool_size"] / sample.shape[0] + 1.0


__all__ = [
    "typiclust",
    "typicality",
    "probcover",
    "choose_delta",
    "purity",
    "ball_lists",
    "knn_mean_distance",
    "TypiClustStrategy",
    "ProbCoverStrategy",
]
