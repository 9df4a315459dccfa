"""TypiClust and ProbCover against brute-force implementations on tiny inputs, and chunking."""

import itertools

import pytest
import torch

import strategies
from strategies import coldstart


def blobs(n=30, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=g, dtype=torch.float64) * 4
    return centres[torch.arange(n) % 3] + torch.randn(n, d, generator=g, dtype=torch.float64)


def brute_typicality(x, k):
    if len(x) < 2:
        return torch.zeros(len(x), dtype=torch.float64)
    d = torch.tensor([[float((a - b).norm()) for b in x] for a in x], dtype=torch.float64)
    out = []
    for i in range(len(x)):
        others = sorted(float(d[i, j]) for j in range(len(x)) if j != i)[: min(k, len(x) - 1)]
        out.append(1.0 / (sum(others) / len(others) + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def test_typicality_is_the_inverse_mean_knn_distance():
    x = blobs(12)
    assert torch.allclose(coldstart.typicality(x, 4), brute_typicality(x, 4), rtol=1e-12)


def test_typiclust_picks_the_most_typical_item_of_the_emptiest_largest_cluster():
    pool, labeled = blobs(30, seed=1), blobs(4, seed=2)
    picks, typ = coldstart.typiclust(pool, labeled, 5, k=3, seed=0)
    x = torch.cat([pool, labeled])
    assign = coldstart._kmeans(x, 4 + 5, 0)
    counts = {c: int((assign[30:] == c).sum()) for c in range(int(assign.max()) + 1)}
    size = {c: int((assign == c).sum()) for c in counts}
    taken = []
    for _ in range(5):  # brute force: the rule, one pick at a time
        open_ = [c for c in counts if any(int(assign[i]) == c and i not in taken for i in range(30))]
        c = min(open_, key=lambda c: (counts[c], -size[c], c))
        members = [i for i in range(30) if int(assign[i]) == c and i not in taken]
        t = brute_typicality(pool[[i for i in range(30) if int(assign[i]) == c]], 3)
        local = {i: float(t[j]) for j, i in enumerate(i for i in range(30) if int(assign[i]) == c)}
        best = max(members, key=lambda i: (local[i], -i))
        taken.append(best)
        counts[c] += 1
    assert picks.tolist() == taken


def brute_probcover(pool, labeled, b, delta):
    n = len(pool)
    inside = [[j for j in range(n) if float((pool[i] - pool[j]).norm()) < delta] for i in range(n)]
    covered = {i for i in range(n) if labeled is not None and any(float((pool[i] - l).norm()) < delta for l in labeled)}
    picks = []
    for _ in range(b):
        gains = [(len([j for j in inside[i] if j not in covered]) if i not in picks else -1, -i) for i in range(n)]
        best_gain, neg_i = max(gains)
        if best_gain <= 0:
            break
        picks.append(-neg_i)
        covered |= set(inside[-neg_i])
    return picks


@pytest.mark.parametrize("with_labels", [False, True])
def test_probcover_is_greedy_max_coverage(with_labels, monkeypatch):
    pool, labeled = blobs(25, seed=3), blobs(3, seed=4) if with_labels else None
    for chunk in (2048, 4):  # chunked the same as at once
        monkeypatch.setattr(coldstart, "CHUNK", chunk)
        picks, degree = coldstart.probcover(pool, labeled, 6, delta=2.5)
        assert picks.tolist() == brute_probcover(pool, labeled, 6, 2.5)
        assert degree.tolist() == [float(sum(float((p - q).norm()) < 2.5 for q in pool)) for p in pool]


def test_purity_and_the_delta_rule():
    x = blobs(30, seed=5)
    clusters = coldstart._kmeans(x, 3, 0)
    for delta in (0.5, 3.0, 30.0):
        pure = (
            sum(
                all(int(clusters[j]) == int(clusters[i]) for j in range(30) if float((x[i] - x[j]).norm()) < delta)
                for i in range(30)
            )
            / 30
        )
        assert coldstart.purity(x, clusters, delta) == pytest.approx(pure)
    delta, p = coldstart.choose_delta(x, 3, alpha=0.95, candidates=[0.5, 1.0, 2.0, 4.0, 30.0])
    assert p >= 0.95 and coldstart.purity(x, clusters, 30.0) < 0.95 and delta < 30.0


def test_the_graph_refuses_to_grow_past_its_bound():
    with pytest.raises(strategies.StrategyError, match="exceeds"):
        coldstart.ball_lists(blobs(20), delta=1e9, max_edges=100)


@pytest.mark.parametrize("name", ["typiclust", "probcover"])
def test_the_picks_come_first_in_the_queue_and_subsets_keep_their_values(name):
    from tests.helpers import pool_inputs, with_state

    base = pool_inputs(40, seed=7)
    strategy, state = strategies.get(name, budget=6, seed=1), {}
    values = strategy(with_state(base, list(range(40)), state, "v1", True))
    top = torch.argsort(values, descending=True)[:6]
    assert (values[top] >= 2.0).all() and (values[values < 2.0] <= 1.0).all()
    for idx in ([3], [0, 39], list(itertools.islice(range(40), 5, 15))):
        assert torch.allclose(strategy(with_state(base, idx, state, "v1", False)), values[idx])
    if name == "probcover":
        assert strategy.info()["delta"] > 0
