import pytest
import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import load_backbone
from ml_backend.core.scoring import forward_batches, head_outputs
from ml_backend.core.trainer import Example, TrainConfig, _sample, fine_tune, fit_head
from strategies import Need

CPU = torch.device("cpu")


def toy_examples(model, n=40, seed=0, new_from=30):
    """Two classes that differ in brightness: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        label = i % 2
        x = torch.rand(1, 3, 32, 32, generator=g) * 0.3 + (0.6 if label else 0.0)
        examples.append(Example(str(i), label, is_new=i >= new_from, trunk=model.trunk(x)[0]))
    return examples


@pytest.fixture
def model():
    return AdaptedModel(load_backbone("smallcnn", "none", seed=0), ["dark", "bright"], CPU)


def test_training_is_deterministic_under_a_seed(model):
    examples = toy_examples(model)
    a, b = model.clone(), model.clone()
    ma = fine_tune(a, examples, TrainConfig(steps=30, seed=4))
    mb = fine_tune(b, examples, TrainConfig(steps=30, seed=4))
    assert ma["loss_last"] == mb["loss_last"]
    for (k, p), (_, q) in zip(a.target.state_dict().items(), b.target.state_dict().items()):
        assert torch.equal(p, q), k
    c = model.clone()
    fine_tune(c, examples, TrainConfig(steps=30, seed=5))
    assert not torch.equal(c.head.weight, a.head.weight)


def test_only_unfrozen_layers_change_and_the_served_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.target.state_dict().items()}
    twin = model.clone()
    metrics = fine_tune(twin, toy_examples(model), TrainConfig(steps=60, lr=3e-3))
    assert metrics["loss_last"] < metrics["loss_first"] * 0.5
    after = twin.target.state_dict()
    frozen = {n for n, p in twin.target.named_parameters() if not p.requires_grad}
    for name, value in after.items():
        if name in frozen:
            assert torch.equal(value, before[name]), name
    assert not torch.equal(after["classifier.5.weight"], before["classifier.5.weight"])
    for name, value in model.target.state_dict().items():  # the served model did not move
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize(
    "n_old, n_new, expected",
    [
        (100, 20, (29, 3)),  # 0.9 / 0.1 of 32, at least one new
        (100, 0, (32, 0)),
        (0, 10, (0, 10)),  # first round: everything is new
        (5, 1, (5, 1)),
        (200, 2, (30, 2)),  # 3 new wanted, only 2 exist
    ],
)
def test_old_new_mix_per_batch(n_old, n_new, expected):
    assert _sample(n_old, n_new, TrainConfig(batch_size=32, new_fraction=0.1), torch.Generator()) == expected


@pytest.mark.parametrize("augment", ["flip", "crop", "flip+crop"])
def test_augmented_training_runs_through_the_frozen_trunk(model, augment):
    g = torch.Generator().manual_seed(1)
    examples = [Example(str(i), i % 2, True, image=torch.rand(3, 32, 32, generator=g) + (i % 2)) for i in range(8)]
    twin = model.clone()
    frozen = {n: p.clone() for n, p in twin.target.named_parameters() if not p.requires_grad}
    metrics = fine_tune(twin, examples, TrainConfig(steps=40, batch_size=4, lr=3e-3, augment=augment))
    assert metrics["steps"] == 40 and metrics["loss_last"] < metrics["loss_first"]
    assert frozen and all(torch.equal(p, frozen[n]) for n, p in twin.target.named_parameters() if n in frozen)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="no labeled examples"):
        fine_tune(model.clone(), [], TrainConfig())
    with pytest.raises(ValueError, match="allowed: none, flip"):
        fine_tune(model.clone(), toy_examples(model, n=4), TrainConfig(augment="rotate"))


def with_embeddings(model, examples):
    h = forward_batches(model, torch.stack([e.trunk for e in examples]), {Need.EMBEDDINGS}, (), 16)["embeddings"]
    for e, row in zip(examples, h):
        e.embedding = row
    return examples


def test_fit_head_trains_only_the_head_deterministically_and_matches_its_outputs(model):
    """A round's head-first queue (jobs/head_round.py): the head learns the labels from the served
    version's embeddings, everything before it stays, the same seed gives the same head, and the
    model's own forward pass gives what the refit head gives on those embeddings."""
    examples = with_embeddings(model, toy_examples(model))
    before = {k: v.clone() for k, v in model.target.state_dict().items()}
    a, b = model.clone(), model.clone()
    metrics = fit_head(a, examples, TrainConfig(steps=300, lr=5e-2, seed=3))
    fit_head(b, examples, TrainConfig(steps=300, lr=5e-2, seed=3))
    assert metrics["loss_last"] < metrics["loss_first"] * 0.5 and metrics["steps"] == 300
    assert torch.equal(a.head.weight, b.head.weight)
    head = {f"{a.spec.head}.weight", f"{a.spec.head}.bias"}
    for name, value in a.target.state_dict().items():
        assert torch.equal(value, before[name]) != (name in head), name
    assert all(torch.equal(v, before[k]) for k, v in model.target.state_dict().items())  # the served one
    z = torch.stack([e.trunk for e in examples])
    out = a.forward_from_trunk(z, {Need.EMBEDDINGS})
    torch.testing.assert_close(out["embeddings"], torch.stack([e.embedding for e in examples]))
    torch.testing.assert_close(out["logits"], a.head(out["embeddings"]).detach())
    assert (out["probs"].argmax(1) == torch.tensor([e.label for e in examples])).float().mean() > 0.9


def test_fit_head_needs_embeddings_and_examples(model):
    with pytest.raises(ValueError, match="embeddings"):
        fit_head(model.clone(), toy_examples(model, n=4), TrainConfig(steps=2))
    with pytest.raises(ValueError, match="no labeled examples"):
        fit_head(model.clone(), [], TrainConfig(steps=2))
    with pytest.raises(ValueError, match="optimizer"):
        fit_head(model.clone(), with_embeddings(model, toy_examples(model, n=4)), TrainConfig(optimizer="lbfgs"))


def test_head_outputs_from_embeddings_are_the_trainable_parts_outputs(model):
    """What a head-first queue computes from kept embeddings equals the whole trainable part's
    forward pass of the same model; anything but the head's outputs is refused."""
    examples = with_embeddings(model, toy_examples(model, n=12))
    refit = model.clone()
    fit_head(refit, examples, TrainConfig(steps=20, lr=1e-2))
    z = torch.stack([e.trunk for e in examples])
    full = refit.forward_from_trunk(z, {Need.PROBS, Need.EMBEDDINGS})
    fast = head_outputs(refit, torch.stack([e.embedding for e in examples]), {Need.PROBS, Need.EMBEDDINGS})
    for key in ("logits", "probs", "embeddings"):
        torch.testing.assert_close(fast[key], full[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="the head alone"):
        head_outputs(refit, full["embeddings"], {Need.FEATURES})
