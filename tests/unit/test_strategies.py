"""Strategies: hand-computed tables, and contract tests every registered strategy inherits."""

import math

import pytest
import torch

import strategies
from strategies import Need, ScoringInputs
from tests.helpers import map_inputs, permute_inputs, pool_inputs


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ----------------------------------------------------------------------------- hand-computed tables
P = _probs([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
TABLE = {
    "entropy": [0.0, math.log(2), math.log(3), -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))],
    "least_confidence": [0.0, 0.5, 2 / 3, 0.3],
    "margin": [0.0, 1.0, 1.0, 0.5],
    "gini": [0.0, 0.5, 2 / 3, 0.46],
    "max_confidence": [1.0, 0.5, 1 / 3, 0.7],
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_hand_computed_table(name):
    values = strategies.get(name)(ScoringInputs(n=4, probs=P))
    assert values.dtype == torch.float64
    torch.testing.assert_close(values, torch.tensor(TABLE[name], dtype=torch.float64), rtol=0, atol=1e-12)


def test_random_is_keyed_uniform_and_seeded():
    keys = [str(i) for i in range(2000)]
    a = strategies.get("random", seed=1)(ScoringInputs(n=2000, keys=keys))
    b = strategies.get("random", seed=1)(ScoringInputs(n=2000, keys=keys))
    c = strategies.get("random", seed=2)(ScoringInputs(n=2000, keys=keys))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.03
    # a task keeps its value whatever else is in the request
    sub = strategies.get("random", seed=1)(ScoringInputs(n=3, keys=["7", "1999", "0"]))
    assert torch.equal(sub, a[[7, 1999, 0]])


def test_margin_with_one_class_is_zero():
    assert torch.equal(strategies.margin(_probs([[1.0], [1.0]])), torch.zeros(2, dtype=torch.float64))


# ----------------------------------------------------------------------------- registry
def test_registry_lists_and_refuses():
    assert {"random", "least_confidence", "margin", "entropy", "gini", "max_confidence", "emoc"} <= set(
        strategies.available()
    )
    with pytest.raises(strategies.UnknownStrategyError, match="available: .*entropy"):
        strategies.get("nope")
    with pytest.raises(strategies.UnknownStrategyError, match="bad parameters"):
        strategies.get("entropy", not_a_param=1)

    class Dup(strategies.Strategy):
        name = "entropy"
        needs = frozenset()
        description = ""

        def acquisition(self, inputs):
            return torch.zeros(inputs.n)

    with pytest.raises(ValueError, match="already registered"):
        strategies.register(Dup)


def test_strategies_import_without_flask():
    import subprocess
    import sys

    code = "import sys, strategies; assert not [m for m in sys.modules if m.startswith(('flask', 'ml_backend'))]"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- contract, for every strategy
def _tensors(inputs):
    flat = {
        k: getattr(inputs, k)
        for k in ("probs", "logits", "embeddings", "source_probs", "labeled_embeddings", "view_probs")
    }
    flat.update({f"features.{k}": v for k, v in inputs.features.items()})
    flat.update({f"source_features.{k}": v for k, v in inputs.source_features.items()})
    return flat


@pytest.fixture(params=strategies.available())
def strategy(request):
    return strategies.get(request.param, seed=3)


def test_contract_shape_finite_float64(strategy):
    values = strategy(pool_inputs(50))
    assert values.shape == (50,) and values.dtype == torch.float64 and torch.isfinite(values).all()


def test_contract_deterministic(strategy):
    assert torch.equal(strategy(pool_inputs(40)), strategies.get(strategy.name, seed=3)(pool_inputs(40)))


def test_contract_invariant_to_pool_order(strategy):
    inputs = pool_inputs(40)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(strategy(permute_inputs(inputs, perm)), strategy(inputs)[perm], rtol=0, atol=1e-12)


def test_contract_does_not_mutate_inputs(strategy):
    inputs = pool_inputs(30)
    before = {k: v.clone() for k, v in _tensors(inputs).items()}
    strategy(inputs)
    after = _tensors(inputs)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("n", [0, 1])
def test_contract_tiny_pools(strategy, n):
    assert strategy(pool_inputs(n)).shape == (n,)


def test_contract_identical_items_get_identical_values(strategy):
    inputs = pool_inputs(1)
    same = map_inputs(inputs, lambda t: t.repeat(5, *[1] * (t.dim() - 1)), lambda v: v.repeat(1, 5, 1))
    same = ScoringInputs(**{**same.__dict__, "n": 5, "keys": [f"k{i}" for i in range(5)]})
    values = strategy(same)
    assert values.shape == (5,) and torch.isfinite(values).all()
    if Need.KEYS not in strategy.needs:  # keyed strategies differ by key on purpose
        assert torch.all(values == values[0])


def test_contract_declares_needs_and_reports_missing_input(strategy):
    assert strategy.needs and all(isinstance(n, Need) for n in strategy.needs)
    with pytest.raises(strategies.MissingInputError):
        strategy(ScoringInputs(n=3))


def test_contract_rejects_bad_output():
    class Broken(strategies.Strategy):
        name = "broken-test-only"
        needs = frozenset()
        description = ""

        def acquisition(self, inputs):
            return torch.full((inputs.n,), float("nan"))

    with pytest.raises(strategies.StrategyError, match="non-finite"):
        Broken()(ScoringInputs(n=2))


def test_emoc_strategy_uses_a_seeded_reference_sample():
    inputs = pool_inputs(30)
    full = strategies.get("emoc", references=30)(inputs)
    some = strategies.get("emoc", references=10, seed=1)(inputs)
    again = strategies.get("emoc", references=10, seed=1)(inputs)
    assert torch.equal(some, again) and not torch.allclose(some, full)
    with pytest.raises(strategies.UnknownStrategyError):
        strategies.get("emoc", output="softmax")


def test_readme_documents_every_strategy():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("\n## Strategies\n")
    section = readme[start : readme.find("\n## ", start + 1)]
    missing = [name for name in strategies.available() if f"| `{name}`" not in section]
    assert not missing, f"strategies missing from the README table: {missing}"
