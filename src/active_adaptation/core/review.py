"""Annotation review and influence-based data dropout on the trained head (docs/methods.md §6):
which labeled examples look mislabeled, and which would raise the validation loss if kept."""
from __future__ import annotations

import logging

import torch

from active_adaptation.core.model import AdaptedModel
from active_adaptation.core.scoring import forward_batches
from active_adaptation.core.trainer import Example
from active_adaptation.strategies import Need, review_annotations
from active_adaptation.strategies.influence import label_loss

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


def drop_harmful(model: AdaptedModel, examples: list[Example], weight_decay: float, seed: int,
                 batch_size: int = 64) -> tuple[list[Example], list[dict]]:
    """Influence-based data dropout (docs/methods.md §6): leave out the examples whose up-weighting
    would raise the K-fold validation loss of the current head (psi > 0). Never more than half."""
    if len(examples) < 10:
        return examples, []
    h, y = head_inputs(model, examples, batch_size)
    stats = review_annotations(h, y, model.head.weight, model.head.bias, weight_decay, seed=seed)
    harmful = (stats["psi"] > 0).tolist()
    kept = [e for e, bad in zip(examples, harmful) if not bad]
    if len(kept) < max(2, len(examples) // 2):
        log.warning("influence would drop %d of %d labels; keeping all of them", len(examples) - len(kept), len(examples))
        return examples, []
    dropped = [{"task": e.key, "label": model.labels[e.label], "psi": round(float(p), 6)}
               for e, bad, p in zip(examples, harmful, stats["psi"].tolist()) if bad]
    return kept, dropped


def review(model: AdaptedModel, examples: list[Example], method: str, top: int, weight_decay: float, seed: int,
           batch_size: int = 64) -> list[dict]:
    """The ``top`` labeled examples whose annotations look most suspicious to the trained head:
    ``loss`` ranks by the head's loss on the given label, ``influence`` by self-influence."""
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
