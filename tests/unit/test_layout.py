"""Structured outputs (several <Choices>, multi-label): the layout, its loss, decoding, answers from
annotations, the model's probabilities, training, and the strategies that accept it."""

import math

import pytest
import torch

import strategies
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import load_backbone
from ml_backend.core.scoring import score_pool
from ml_backend.core.trainer import Example, TrainConfig, fine_tune
from strategies import Need, ScoringInputs, StructuredLayoutError
from strategies.diversity import residual
from strategies.layout import Group, Layout, answer_from_results, resolve_answer
from strategies.uncertainty import structured

CPU = torch.device("cpu")
TAGS = Group("tags", ("red", "round", "big"), multiple=True)
QUALITY = Group("quality", ("good", "bad"))
LAYOUT = Layout((TAGS, QUALITY))


def result(name, *choices):
    return {"from_name": name, "to_name": "img", "type": "choices", "value": {"choices": list(choices)}}


def test_flat_names_slices_and_probabilities():
    assert LAYOUT.flat == ("tags/red", "tags/round", "tags/big", "quality/good", "quality/bad")
    assert [(g.name, a, b) for g, a, b in LAYOUT.slices()] == [("tags", 0, 3), ("quality", 3, 5)]
    logits = torch.tensor([[0.0, 2.0, -2.0, 1.0, 1.0]])
    p = LAYOUT.probs(logits)
    assert torch.allclose(p[0, :3], torch.sigmoid(logits[0, :3]))
    assert torch.allclose(p[0, 3:], torch.tensor([0.5, 0.5]))
    assert LAYOUT.decode(p, 0.5) == [{"tags": ["red", "round"], "quality": "good"}]
    assert LAYOUT.decode(p, 0.9) == [{"tags": [], "quality": "good"}]


def test_answers_canonical_strings_and_targets():
    answer = {"tags": ["round", "red"], "quality": "bad"}
    text = LAYOUT.canonical(answer)
    assert LAYOUT.parse(text) == {"tags": ["red", "round"], "quality": "bad"}
    assert LAYOUT.canonical(LAYOUT.parse(text)) == text
    t = LAYOUT.target({"tags": ["red"]})  # quality not answered: no loss there
    assert t[:3].tolist() == [1.0, 0.0, 0.0] and torch.isnan(t[3:]).all()
    assert LAYOUT.unknown({"tags": ["blue"], "quality": "good"}) == ["tags=blue"]
    assert LAYOUT.agrees({"tags": ["red"], "quality": "bad"}, {"tags": ["red"]})
    assert not LAYOUT.agrees({"tags": ["red", "big"], "quality": "bad"}, {"tags": ["red"]})
    assert LAYOUT.per_class([answer, {"quality": "good"}]) == {
        "tags/red": 1,
        "tags/round": 1,
        "quality/bad": 1,
        "quality/good": 1,
    }
    simple = Layout.single("c", ("a", "b"))
    assert simple.simple and simple.canonical({"c": "a"}) == "a" and simple.parse("b") == {"c": "b"}


def test_the_loss_is_cross_entropy_plus_binary_cross_entropy_on_answered_groups():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.3, -0.2], [1.0, 1.0, 1.0, 0.0, 2.0]])
    targets = torch.stack([LAYOUT.target({"tags": ["red"], "quality": "good"}), LAYOUT.target({"tags": []})])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :3], targets[:, :3])
    ce = torch.nn.functional.cross_entropy(logits[:1, 3:], torch.tensor([0]))
    assert torch.allclose(LAYOUT.loss(logits, targets), bce + ce)


def test_annotations_become_one_answer_explicitly():
    # a submitted annotation without a result for a multi-label group says "none of these labels"
    assert answer_from_results([result("quality", "good")], LAYOUT) == {"quality": "good", "tags": []}
    assert answer_from_results([], LAYOUT) is None  # nothing chosen where a single choice is due
    assert answer_from_results([], Layout((TAGS,))) == {"tags": []}  # multi-label only: "none of these"
    assert answer_from_results([result("other", "x")], LAYOUT) is None
    skipped = {"id": 1, "was_cancelled": True, "result": [result("quality", "bad")]}
    assert resolve_answer([skipped], LAYOUT) is None
    votes = [
        {"id": 1, "updated_at": "2026-01-01", "result": [result("tags", "red", "big"), result("quality", "good")]},
        {"id": 2, "updated_at": "2026-01-02", "result": [result("tags", "red"), result("quality", "bad")]},
        {"id": 3, "updated_at": "2026-01-03", "result": [result("tags", "red", "round"), result("quality", "good")]},
    ]
    # red: 3 of 3; big, round: 1 of 3 (no majority); quality: good 2 to 1
    assert resolve_answer(votes, LAYOUT) == {"tags": ["red"], "quality": "good"}
    # a tie (1 to 1) goes to the latest annotation, group by group
    assert resolve_answer(votes[:2], LAYOUT) == {"tags": ["red"], "quality": "bad"}


def test_the_model_predicts_per_group_and_training_learns_both_kinds_of_group():
    base = load_backbone("smallcnn", "none", seed=0)
    model = AdaptedModel(base, LAYOUT.flat, CPU, layout=LAYOUT)
    assert model.structured
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(40):
        bright, striped = i % 2, (i // 2) % 2
        x = torch.rand(1, 3, 32, 32, generator=g) * 0.3 + 0.6 * bright
        if striped:
            x[..., ::4, :] = 1.0
        answer = {
            "tags": (["red"] if bright else []) + (["round"] if striped else []),
            "quality": "good" if striped else "bad",
        }
        examples.append(
            Example(
                str(i), -1, True, trunk=model.trunk(x)[0], target=LAYOUT.target(answer), answer=LAYOUT.canonical(answer)
            )
        )
    metrics = fine_tune(model, examples, TrainConfig(steps=150, lr=3e-3, seed=0))
    assert metrics["loss_last"] < 0.5 * metrics["loss_first"]
    out = model.forward_from_trunk(torch.stack([e.trunk for e in examples]), {Need.PROBS})
    probs = out["probs"]
    assert torch.allclose(probs[:, 3:].sum(dim=1), torch.ones(len(examples)), atol=1e-5)  # softmax group
    assert not torch.allclose(probs[:, :3].sum(dim=1), torch.ones(len(examples)))  # sigmoids
    predicted = model.decode(probs)
    right = sum(LAYOUT.agrees(p, LAYOUT.parse(e.answer)) for p, e in zip(predicted, examples))
    assert right >= 36, right


def test_structured_uncertainties_follow_their_definitions():
    p = torch.tensor([[0.5, 0.9, 0.1, 0.5, 0.5], [0.99, 0.01, 0.99, 1.0, 0.0]], dtype=torch.float64)
    ent = structured(p, LAYOUT, 0.5, "entropy")
    hb = lambda x: -(x * math.log(x) + (1 - x) * math.log(1 - x)) / math.log(2)  # noqa: E731
    expected0 = ((hb(0.5) + hb(0.9) + hb(0.1)) / 3 + 1.0) / 2
    assert ent[0].item() == pytest.approx(expected0)
    assert ent[1].item() < 0.1
    mar = structured(p, LAYOUT, 0.5, "margin")
    assert mar[0].item() == pytest.approx((1.0 + 1.0) / 2)  # a label exactly at the threshold; a 50/50 group
    assert mar[1].item() == pytest.approx(((1 - 0.49 / 0.5) + 0.0) / 2)
    # the smallest distance to a threshold other than 0.5, scaled by max(t, 1 - t)
    assert structured(p[1:], Layout((TAGS,)), 0.9, "margin")[0].item() == pytest.approx(1 - 0.09 / 0.9)
    lc = structured(p, LAYOUT, 0.5, "least_confidence")
    assert lc[0].item() == pytest.approx(((1.0 + 0.2 + 0.2) / 3 + 1.0) / 2)


def test_badge_residual_is_the_gradient_at_the_predicted_answer():
    p = torch.tensor([[0.7, 0.2, 0.6, 0.3, 0.7]], dtype=torch.float64)
    a = residual(p, LAYOUT, 0.5)
    assert torch.allclose(a, torch.tensor([[0.7 - 1, 0.2, 0.6 - 1, 0.3, 0.7 - 1]], dtype=torch.float64))
    # the same as autograd's gradient of the layout's loss with respect to the logits
    logits = torch.logit(p.float()[:, :3]).requires_grad_(True)
    target = torch.tensor([[1.0, 0.0, 1.0]])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum").backward()
    assert torch.allclose(logits.grad.double(), a[:, :3], atol=1e-6)


def inputs_for(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 5, generator=g)
    return ScoringInputs(
        n=n,
        keys=[str(i) for i in range(n)],
        probs=LAYOUT.probs(logits),
        embeddings=torch.randn(n, 8, generator=g),
        labeled_embeddings=torch.randn(4, 8, generator=g),
        layout=LAYOUT,
        state={},
        model_version="v1",
    )


@pytest.mark.parametrize("name", strategies.structured_names())
def test_every_structured_strategy_values_a_structured_pool(name):
    values = strategies.get(name)(inputs_for())
    assert values.shape == (30,) and torch.isfinite(values).all()


def test_the_other_strategies_refuse_clearly():
    refused = sorted(set(strategies.available()) - set(strategies.structured_names()))
    assert {"adma", "emoc", "gini"} <= set(refused)
    for name in refused:
        with pytest.raises(
            StructuredLayoutError,
            match=f"strategy '{name}' values single-choice projects only; "
            "for several <Choices> or multi-label use one of: .*entropy",
        ):
            strategies.get(name)(inputs_for())
    assert not strategies.get("auto", warm="adma").structured


def test_score_pool_hands_the_layout_to_the_strategy():
    base = load_backbone("smallcnn", "none", seed=0)
    model = AdaptedModel(base, LAYOUT.flat, CPU, layout=LAYOUT, threshold=0.3)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scored = score_pool(strategies.get("margin"), model, [([str(i) for i in range(6)], None, model.trunk(x))])
    expected = structured(scored.probs, LAYOUT, 0.3, "margin")
    assert torch.allclose(scored.values, expected)
