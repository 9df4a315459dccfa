"""Annotation review and influence-based data dropout on the trained head (docs/methods.md §6):
which labeled examples look mislabeled, and which would raise the validation loss if kept."""

from __future__ import annotations

import logging

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.scoring import forward_batches
from ml_backend.core.trainer import Example
from strategies import Need, review_annotations
from strategies.influence import label_loss

log = logging.getLogger(__name__)


def trunk_of(model: AdaptedModel, example: Example) -> torch.Tensor:
    """The example's trunk activations (cached, or computed from its image)."""
    if example.trunk is not None:
        return example.trunk
    return model.trunk(example.image[None])[0]


def head_inputs(model: AdaptedModel, examples: list[Example], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, y): the head's inputs (embeddings) and the labels of ``examples``."""
    z = torch.stack([trunk_of(model, e) for e in examples])
    h = forward_batches(model, z, {Need.EMBEDDINGS}, (), batch_size)["embeddings"]
    return h, torch.tensor([e.label for e in examples])


def drop_harmful(
    model: AdaptedModel, examples: list[Example], weight_decay: float, seed: int, batch_size: int = 64
) -> tuple[list[Example], list[dict]]:
    """Influence-based data dropout (docs/methods.md §6): leave out the examples whose up-weighting
    would raise the K-fold validation loss of the current head (psi > 0). Never more than half."""
    if len(examples) < 10 or model.layout is not None:  # influence: one single-choice group only
        return examples, []
    h, y = head_inputs(model, examples, batch_size)
    stats = review_annotations(h, y, model.head.weight, model.head.bias, weight_decay, seed=seed)
    harmful = (stats["psi"] > 0).tolist()
    kept = [e for e, bad in zip(examples, harmful) if not bad]
    if len(kept) < max(2, len(examples) // 2):
        log.warning(
            "influence would drop %d of %d labels; keeping all of them", len(examples) - len(kept), len(examples)
        )
        return examples, []
    dropped = [
        {"task": e.key, "label": model.labels[e.label], "psi": round(float(p), 6)}
        for e, bad, p in zip(examples, harmful, stats["psi"].tolist())
        if bad
    ]
    return kept, dropped


def review(
    model: AdaptedModel,
    examples: list[Example],
    method: str,
    top: int,
    weight_decay: float,
    seed: int,
    batch_size: int = 64,
) -> list[dict]:
    """The ``top`` labeled examples whose annotations look most suspicious to the trained head:
    ``loss`` ranks by the head's loss on the given label, ``influence`` by self-influence."""
    if model.layout is not None:
        if method != "loss":
            raise ValueError(
                f"REVIEW_METHOD={method} needs one single-choice <Choices>; this project has "
                f"{model.layout.describe()}: use REVIEW_METHOD=loss"
            )
        return structured_review(model, examples, top, batch_size)
    h, y = head_inputs(model, examples, batch_size)
    if method == "influence":
        stats = review_annotations(h, y, model.head.weight, model.head.bias, weight_decay, seed=seed)
        rank = stats["self_influence"]
    else:
        stats = label_loss(h, y, model.head.weight, model.head.bias)
        rank = stats["loss"]
    order = torch.argsort(rank, descending=True, stable=True)[:top].tolist()
    out = []
    for i in order:
        item = {"task": examples[i].key, "label": model.labels[examples[i].label], "method": method}
        item.update({k: round(float(v[i]), 6) for k, v in stats.items()})
        if method == "influence":
            item["flag"] = bool(stats["psi"][i] > 0 and stats["p_label"][i] < 0.5)
        out.append(item)
    return out


def structured_review(model: AdaptedModel, examples: list[Example], top: int, batch_size: int = 64) -> list[dict]:
    """Review for several groups / multi-label (docs/methods.md §9.4): the loss of the whole answer,
    -log p(answer) with p the product of the single-choice groups' p(label) and, per multi-label
    label, p or 1 - p (the sigmoids are independent); ``p_label`` = p(answer)."""
    z = torch.stack([trunk_of(model, e) for e in examples])
    probs = forward_batches(model, z, {Need.PROBS}, (), batch_size)["probs"].to(torch.float64)
    targets = torch.stack([e.target for e in examples]).to(torch.float64)
    nll = torch.zeros(len(examples), dtype=torch.float64)
    for g, a, b in model.layout.slices():
        p, t = probs[:, a:b].clamp(1e-12, 1 - 1e-12), targets[:, a:b]
        answered = ~torch.isnan(t).any(dim=1)
        t = torch.nan_to_num(t)
        if g.multiple:
            part = -(t * p.log() + (1 - t) * (1 - p).log()).sum(dim=1)
        else:
            part = -(t * p.log()).sum(dim=1)
        nll += torch.where(answered, part, torch.zeros_like(part))
    order = torch.argsort(nll, descending=True, stable=True)[:top].tolist()
    return [
        {
            "task": examples[i].key,
            "label": examples[i].answer,
            "method": "loss",
            "loss": round(float(nll[i]), 6),
            "p_label": round(float(torch.exp(-nll[i])), 6),
        }
        for i in order
    ]
