"""A task's acquisition value must not depend on which other tasks share its request: scored alone,
or with any other subset, it has its value from the full-pool scoring of the same model version;
a strategy that cannot value a subset without the pool says so (PoolRelativeError), never guesses."""

import pytest
import torch

import strategies
from strategies import PoolRelativeError, ScoringInputs
from tests.helpers import pool_inputs, with_state

SPECS = [
    *(s for s in strategies.available() if s not in ("coreset", "badge", "mmd", "emoc")),
    "coreset:budget=6",
    "badge:budget=6",
    "mmd:budget=6",
    "emoc:references=12",
    "emoc:references=12:reference_set=unlabeled",
    "emoc:label=marginal:output=logit",
    "adma:consistent=true",
]


def subsets(n):
    g = torch.Generator().manual_seed(5)
    return [[7], [0], [n - 1], [3, 31], torch.randperm(n, generator=g)[:9].tolist()]


def build(spec):
    if spec == "queue":
        return strategies.with_queue_diversity(strategies.get("margin", seed=3), "coreset", 5)
    return strategies.from_spec(spec, seed=3)


@pytest.mark.parametrize("spec", [*SPECS, "queue"])
def test_a_task_scored_alone_or_with_others_has_its_full_pool_value(spec):
    base, n = pool_inputs(40, seed=1), 40
    strategy, state = build(spec), {}
    full = strategy(with_state(base, list(range(n)), state, "v1", True))
    for idx in subsets(n):
        alone = strategy(with_state(base, idx, state, "v1", False))
        assert torch.allclose(alone, full[idx], atol=1e-6, rtol=0), (spec, idx)


@pytest.mark.parametrize("spec", [*SPECS, "queue"])
def test_without_a_kept_pool_a_subset_is_refused_or_exact(spec):
    base, n = pool_inputs(40, seed=2), 40
    reference = build(spec)(with_state(base, list(range(n)), {}, None, True))
    strategy = build(spec)
    for idx in subsets(n):
        if strategy.pool_relative and spec != "queue":
            with pytest.raises(PoolRelativeError):
                strategy(with_state(base, idx, {}, "v1", False))
        else:  # per-item strategies: the same value with nothing kept
            assert torch.allclose(
                strategy(with_state(base, idx, {}, "v1", False)),
                reference[idx]
                if spec != "queue"
                else strategies.get("margin", seed=3)(with_state(base, idx, {}, None, False)),
            )


@pytest.mark.parametrize("spec", ["coreset:budget=6", "badge:budget=6", "mmd:budget=6", "emoc:references=12"])
def test_what_another_model_version_kept_is_never_used(spec):
    base, state = pool_inputs(40, seed=3), {}
    strategy = build(spec)
    strategy(with_state(base, list(range(40)), state, "v1", True))
    with pytest.raises(PoolRelativeError, match="'v2'"):
        strategy(with_state(base, [4, 5], state, "v2", False))


@pytest.mark.parametrize("spec", ["coreset:budget=6", "badge:budget=6", "mmd:budget=6", "emoc:references=12"])
def test_a_new_task_is_valued_against_the_kept_reference_only(spec):
    """A task that was not in the kept pool (imported after the publish) gets a value that does not
    depend on its companions, and never outranks the greedy picks of a batch method."""
    base, state = pool_inputs(41, seed=4), {}
    strategy = build(spec)
    full = strategy(with_state(base, list(range(40)), state, "v1", True))
    alone = strategy(with_state(base, [40], state, "v1", False))
    together = strategy(with_state(base, [40, 3, 17], state, "v1", False))
    assert torch.allclose(alone, together[:1], atol=1e-9) and torch.allclose(together[1:], full[[3, 17]])
    if not spec.startswith("emoc"):
        assert 0.0 <= float(alone) <= 1.5 < 2.0 <= float(full.max())


def test_emoc_draws_its_references_from_labeled_and_unlabeled_items_anew_each_round():
    base = pool_inputs(40, seed=6)
    strategy = strategies.get("emoc", references=20, seed=1)
    strategy(base)
    info = strategy.info()
    assert info["references"] == 20 and 0 < info["labeled_references"] <= 3
    later = ScoringInputs(**{**base.__dict__, "round": 2})
    assert not torch.equal(strategy(base), strategy(later))  # another sample in another round
    only_pool = strategies.get("emoc", references=20, seed=1, reference_set="unlabeled")
    only_pool(base)
    assert only_pool.info()["labeled_references"] == 0
