"""``auto``: TypiClust while the project is in its cold start, BADGE after; the regime is the
version's, whichever request a task comes in."""

import dataclasses

import pytest
import torch

import strategies
from tests.helpers import pool_inputs, with_state


def labeled(inputs, n):
    g = torch.Generator().manual_seed(n)
    return dataclasses.replace(
        inputs, labeled_embeddings=torch.randn(n, inputs.embeddings.shape[1], generator=g, dtype=torch.float64)
    )


@pytest.mark.parametrize("n_labels, serving", [(0, "typiclust"), (7, "typiclust"), (8, "badge"), (30, "badge")])
def test_the_regime_follows_labels_per_class_and_the_values_are_the_served_strategys(n_labels, serving):
    base = (
        labeled(pool_inputs(40, seed=2), n_labels)
        if n_labels
        else dataclasses.replace(pool_inputs(40, seed=2), labeled_embeddings=None)
    )  # 4 classes × 2 per class: the switch is at 8 labels
    auto = strategies.from_spec("auto:per_class=2:cold=typiclust/budget=6:warm=badge/budget=6", seed=3)
    got = auto(with_state(base, list(range(40)), {}, "v1", True))
    inner = strategies.from_spec(f"{serving}:budget=6", seed=3)
    assert torch.equal(got, inner(with_state(base, list(range(40)), {}, "v1", True)))
    info = auto.info()
    assert info["serving"] == serving and info["switch_at"] == 8 and info["labels"] == n_labels
    assert info["regime"] == ("cold-start" if serving == "typiclust" else "warm")


def test_a_later_request_keeps_the_versions_regime():
    """Labels that arrive between a round's full-pool scoring and a request do not switch the
    request's tasks to the other strategy: a task's value does not depend on its request."""
    auto, state = strategies.from_spec("auto:per_class=2", seed=1), {}
    cold = labeled(pool_inputs(40, seed=4), 3)
    full = auto(with_state(cold, list(range(40)), state, "v1", True))
    assert auto.info()["regime"] == "cold-start"
    later = labeled(cold, 20)  # past the switch, same model version
    sub = auto(with_state(later, [5, 17, 30], state, "v1", False))
    assert torch.allclose(sub, full[[5, 17, 30]]) and auto.info()["regime"] == "cold-start"
    auto(with_state(later, list(range(40)), state, "v2", True))  # the next version switches
    assert auto.info()["regime"] == "warm"


def test_options_and_refusals():
    auto = strategies.from_spec("auto:warm=margin:per_class=1.5")
    assert auto.params() == {"seed": 0, "cold": "typiclust", "warm": "margin", "per_class": 1.5}
    assert auto.switch_at(10) == 15 and not auto.warm.pool_relative
    with pytest.raises(strategies.UnknownStrategyError, match="hand over to itself"):
        strategies.from_spec("auto:warm=auto")
    with pytest.raises(strategies.UnknownStrategyError, match="unknown strategy"):
        strategies.from_spec("auto:cold=nonesuch")
