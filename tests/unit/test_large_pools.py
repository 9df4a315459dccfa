"""The approximations that keep every strategy within its time budget on large pools
(docs/methods.md §10): each is off below its threshold (the exact method, bit for bit), and above
it does what the docs say."""

import dataclasses

import pytest
import torch

import strategies
from strategies import ScoringInputs
from strategies.base import subset_inputs
from strategies.coldstart import nearest_other_cluster, purity


def pool(n: int, seed: int = 0, labeled: int = 8) -> ScoringInputs:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=g) * 3
    cls = torch.randint(4, (n + labeled,), generator=g)
    h = (centres[cls] + torch.randn(n + labeled, 16, generator=g)).relu()
    probs = torch.softmax(h @ torch.randn(16, 4, generator=g) / 4, dim=1)
    source = torch.softmax(torch.randn(n, 12, generator=g), dim=1)
    a = (h[:n] @ torch.randn(16, 24, generator=g)).tanh()  # an earlier layer: another view of the items
    return ScoringInputs(
        n=n,
        keys=[f"t{i}" for i in range(n)],
        probs=probs[:n],
        embeddings=h[:n],
        labeled_embeddings=h[n:],
        labeled_probs=probs[n:],
        source_probs=source,
        source_features={"A": a, "B": h[:n]},
        features={"A": a, "B": h[:n]},
        state={},
        model_version="v1",
        round=2,
        planned_rounds=10,
    )


SAMPLED = ["coreset:budget=10", "badge:budget=10", "typiclust:budget=10", "probcover:budget=10", "mmd:budget=10"]


@pytest.mark.parametrize("spec", SAMPLED)
def test_candidate_sample_is_off_up_to_its_size(spec):
    inputs = pool(300)
    exact = strategies.from_spec(spec + ":candidates=0")(dataclasses.replace(inputs, state={}))
    sampled = strategies.from_spec(spec + ":candidates=300")
    assert torch.equal(sampled(dataclasses.replace(inputs, state={})), exact)
    assert "candidates" not in sampled.info()


@pytest.mark.parametrize("spec", SAMPLED)
def test_candidate_sample_above_its_size(spec):
    inputs = pool(400)
    strategy = strategies.from_spec(spec + ":candidates=100")
    values = strategy(dataclasses.replace(inputs, state={}))
    size = strategy.info()["candidates"]
    assert size == (100 if not spec.startswith("typiclust") else 20 * (8 + 10)) and strategy.info()["pool"] == 400
    sample = strategy.candidate_sample(inputs.keys, size)
    assert sample.shape == (size,)
    inside = torch.zeros(400, dtype=torch.bool)
    inside[sample] = True
    picks = values >= 2.0  # greedy picks are worth at least 2, the rest at most 1.5
    assert 0 < int(picks.sum()) <= 10 and bool(inside[picks].all()), "picks come from the sample only"
    assert int((~inside).sum()) == 400 - size
    assert float(values[~inside].max()) <= 1.5
    # the sample is fixed by the keys: the same pool in another order gives every task the same value
    order = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    shuffled = subset_inputs(dataclasses.replace(inputs, state={}), order)
    again = strategies.from_spec(spec + ":candidates=100")(shuffled)
    torch.testing.assert_close(again, values[order], rtol=0, atol=1e-9)


def test_candidate_sample_equals_the_method_on_the_sample():
    """Inside the sample, the picks are exactly the exact method's picks on those items alone."""
    inputs = pool(400)
    strategy = strategies.from_spec("coreset:budget=10:candidates=100")
    values = strategy(dataclasses.replace(inputs, state={}))
    sample = strategy.candidate_sample(inputs.keys, 100)
    alone = strategies.from_spec("coreset:budget=10:candidates=0")(
        subset_inputs(dataclasses.replace(inputs, state={}), sample)
    )
    assert torch.equal(values[sample] >= 2.0, alone >= 2.0)
    torch.testing.assert_close(values[sample][alone >= 2.0], alone[alone >= 2.0], rtol=0, atol=0)


def test_candidates_must_exceed_the_budget():
    with pytest.raises(strategies.UnknownStrategyError, match="candidates"):
        strategies.from_spec("badge:budget=50:candidates=40")


def test_emoc_caps_its_references_by_pairs():
    inputs = pool(300)
    full = strategies.from_spec("emoc:references=200")
    full(dataclasses.replace(inputs, state={}))
    assert full.info()["references"] == 200 and "references_capped" not in full.info()
    capped = strategies.from_spec("emoc:references=200:pairs=30000")  # 300 x 200 > 30000: 100 references
    values = capped(dataclasses.replace(inputs, state={}))
    assert capped.info()["references"] == 100 and "200 -> 100" in capped.info()["references_capped"]
    assert capped.reference_count(10**9) == 100, "never fewer than 100"
    exact = strategies.from_spec("emoc:references=200:pairs=0")(dataclasses.replace(inputs, state={}))
    # an estimate of the same mean from fewer references: the rankings agree closely
    assert strategies.kendall_tau_b(values[None], exact[None]).item() > 0.8


def test_adma_float32_above_its_exact_limit_keeps_the_ranking():
    inputs = pool(300)
    exact = strategies.from_spec("adma:landmarks=kmeans:kmeans=6")(dataclasses.replace(inputs, state={}))
    fast = strategies.from_spec("adma:landmarks=kmeans:kmeans=6:exact_limit=100")
    approx = fast(dataclasses.replace(inputs, state={}))
    assert fast.info()["float32"] is True
    torch.testing.assert_close(approx, exact, rtol=0, atol=1e-3)


def test_one_pass_purity_equals_the_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    clusters = torch.randint(3, (300,), generator=g)
    other = nearest_other_cluster(x, clusters)
    for delta in (0.3, 0.8, 1.5, 3.0):
        assert float((other >= delta).double().mean()) == pytest.approx(purity(x, clusters, delta), abs=0)


def test_typiclust_keeps_twenty_candidates_per_cluster():
    inputs = pool(2000)
    strategy = strategies.from_spec("typiclust:budget=10:candidates=50")  # 8 labeled + 10 picks: 18 clusters
    strategy(dataclasses.replace(inputs, state={}))
    assert strategy.info()["candidates"] == 360
    assert strategies.from_spec("typiclust:candidates=0").sample_size(inputs) == 0
