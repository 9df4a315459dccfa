"""The ``batch=kmeanspp`` option of ADMA and EMOC (a value-weighted diverse queue, docs/methods.md §4.8)
and EMOC's ``temperature`` (docs/methods.md §2.5)."""

import pytest
import torch

import strategies
from strategies import PoolRelativeError, StrategyError, UnknownStrategyError
from strategies.value_batch import ValueBatch, value_distances, value_kmeanspp
from tests.helpers import permute_inputs, pool_inputs, with_state

BATCHED = [
    "emoc:references=12:batch=kmeanspp:budget=6",
    "adma:batch=kmeanspp:budget=6",
    "emoc:references=12:batch=kmeanspp:budget=6:candidates=20",  # the keyed candidate sample (§10)
    "adma:batch=kmeanspp:budget=6:candidates=20",
    "auto:warm=emoc/batch=kmeanspp/budget=6:per_class=0",
]


def subsets(n):
    g = torch.Generator().manual_seed(5)
    return [[7], [0], [n - 1], [3, 31], torch.randperm(n, generator=g)[:9].tolist()]


@pytest.mark.parametrize("spec", BATCHED)
def test_deterministic_and_pool_relative(spec):
    base = pool_inputs(40, seed=1)
    a = strategies.from_spec(spec, seed=3)(base)
    b = strategies.from_spec(spec, seed=3)(base)
    assert torch.equal(a, b)
    assert strategies.from_spec(spec, seed=3).pool_relative


@pytest.mark.parametrize("spec", BATCHED)
def test_a_task_scored_alone_or_with_others_has_its_full_pool_value(spec):
    base, n = pool_inputs(40, seed=1), 40
    strategy, state = strategies.from_spec(spec, seed=3), {}
    full = strategy(with_state(base, list(range(n)), state, "v1", True))
    for idx in subsets(n):
        alone = strategy(with_state(base, idx, state, "v1", False))
        assert torch.allclose(alone, full[idx], atol=1e-6, rtol=0), (spec, idx)


@pytest.mark.parametrize("spec", BATCHED)
def test_without_a_kept_pool_a_subset_is_refused(spec):
    base = pool_inputs(40, seed=2)
    strategy = strategies.from_spec(spec, seed=3)
    with pytest.raises(PoolRelativeError):
        strategy(with_state(base, [3, 4], {}, "v1", False))


@pytest.mark.parametrize("spec", BATCHED)
def test_a_new_task_is_valued_against_the_kept_picks_only_and_behind_them(spec):
    base, state = pool_inputs(41, seed=4), {}
    strategy = strategies.from_spec(spec, seed=3)
    full = strategy(with_state(base, list(range(40)), state, "v1", True))
    alone = strategy(with_state(base, [40], state, "v1", False))
    together = strategy(with_state(base, [40, 3, 17], state, "v1", False))
    assert torch.allclose(alone, together[:1], atol=1e-9) and torch.allclose(together[1:], full[[3, 17]])
    assert 0.0 <= float(alone) <= 1.5 < 2.0 <= float(full.max())
    assert int((full >= 2.0).sum()) == 6  # the budget's picks lead the queue


@pytest.mark.parametrize("spec", BATCHED[:2])
def test_invariant_to_pool_order(spec):
    base = pool_inputs(30, seed=7)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    a = strategies.from_spec(spec, seed=3)(base)
    b = strategies.from_spec(spec, seed=3)(permute_inputs(base, perm))
    assert torch.allclose(a[perm], b, atol=1e-9)


def test_the_first_pick_is_the_largest_value_and_the_batch_spreads():
    """Twenty near-duplicates hold the largest values; plain top-k would take ten of them, the
    value-weighted k-means++ seeding takes one or two and spreads the rest over the pool."""
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(60, 16, generator=g, dtype=torch.float64)
    dup = torch.randn(1, 16, generator=g, dtype=torch.float64) + 1e-3 * torch.randn(
        20, 16, generator=g, dtype=torch.float64
    )
    h = torch.cat([dup, spread])
    values = torch.cat([torch.full((20,), 1.0), torch.full((60,), 0.8)]).to(torch.float64)
    values[:20] += 1e-4 * torch.arange(20)
    for seed in range(10):
        picks, nearest, _ = value_kmeanspp(values, h, 10, seed)
        assert int(picks[0]) == 19  # the largest value
        assert int((picks < 20).sum()) <= 2, picks
        assert float(nearest[picks].max()) < 1e-12  # a pick is its own nearest pick
    assert int((torch.topk(values, 10).indices < 20).sum()) == 10


def test_value_zero_items_sit_at_the_origin_and_the_distance_is_factorised():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(12, 5, generator=g, dtype=torch.float64)
    v = torch.rand(12, generator=g, dtype=torch.float64)
    v[3] = 0.0
    points = v[:, None] * h / h.norm(dim=1, keepdim=True)
    u = h / h.norm(dim=1, keepdim=True)
    assert torch.allclose(value_distances(v, u, v, u), torch.cdist(points, points).pow(2), atol=1e-12)
    assert float(points[3].norm()) == 0.0


def test_negative_values_are_refused_not_shifted():
    with pytest.raises(StrategyError, match=">= 0"):
        value_kmeanspp(torch.tensor([0.5, -0.1]), torch.eye(2), 2)
    with pytest.raises(UnknownStrategyError, match="consistent"):
        strategies.from_spec("adma:batch=kmeanspp:consistent=true")
    with pytest.raises(UnknownStrategyError):
        strategies.from_spec("emoc:batch=greedy")
    with pytest.raises(TypeError):
        ValueBatch(budget=0)


def test_batch_none_keeps_the_methods_values():
    base = pool_inputs(30, seed=8)
    for name in ("emoc", "adma"):
        assert torch.equal(strategies.get(name, seed=2)(base), strategies.get(name, seed=2, batch="none")(base))


def test_emoc_temperature_is_the_softmax_of_the_logits_over_t():
    base = pool_inputs(20, seed=9)
    emoc = strategies.get("emoc", temperature=2.5)
    assert torch.allclose(emoc._tempered(base.probs), (base.logits / 2.5).softmax(1), atol=1e-12)
    assert emoc._tempered(base.probs) is not base.probs
    assert strategies.get("emoc")._tempered(base.probs) is base.probs  # T = 1: exactly the model's posterior
    assert torch.equal(strategies.get("emoc", seed=1)(base), strategies.get("emoc", seed=1, temperature=1)(base))
    assert not torch.equal(strategies.get("emoc", seed=1)(base), strategies.get("emoc", seed=1, temperature=2)(base))
    with pytest.raises(UnknownStrategyError):
        strategies.from_spec("emoc:temperature=0")
