"""Annotation review and influence-based data dropout on the trained head (docs/methods.md §6):
which labeled examples look mislabeled, and which would raise the validation loss if kept.

The default review (``heldout``) judges each label by a head that never saw it: the labeled set is
split into folds, a head is fit on the other folds' embeddings and predicts the held-out fold. The
trained head itself has memorised every label it was given, a wrong one too, so its own loss on a
label says little once training has converged; a held-out prediction still disagrees."""

from __future__ import annotations

import logging

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.scoring import forward_batches
from ml_backend.core.trainer import Example
from strategies import Need, review_annotations
from strategies.influence import fit_head, label_loss

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


HELDOUT_FOLDS = 5
HELDOUT_DECAY = 0.1  # L2 of the held-out heads (benchmarks/bench_review.py)


def label_free_inputs(model: AdaptedModel, examples: list[Example], batch_size: int) -> torch.Tensor:
    """The examples' embeddings by the original network M0 (its head's input, layer role B): features
    that no label has trained. The fine-tuned layers' embeddings have learnt the labels, a wrong one
    too, so that even a held-out head on them agrees with it."""
    z = torch.stack([trunk_of(model, e) for e in examples])
    return forward_batches(model, z, {Need.SOURCE_FEATURES}, ("B",), batch_size)["source_features"]["B"]


def heldout_probs(
    h: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    seed: int = 0,
    folds: int = HELDOUT_FOLDS,
    decay: float = HELDOUT_DECAY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, judged): each labeled example's class probabilities from a head (L2-regularised logistic
    regression on the embeddings) fit on the other folds only, and whether its label could be
    judged at all: its class has at least two examples in the other folds (else any held-out head
    calls a correct but rare label impossible)."""
    n = len(y)
    folds = max(2, min(folds, n))
    assign = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
    probs = torch.full((n, classes), 1.0 / classes, dtype=torch.float64)
    judged = torch.zeros(n, dtype=torch.bool)
    start_w, start_b = torch.zeros(classes, h.shape[1]), torch.zeros(classes)
    for f in range(folds):
        held, train = assign == f, assign != f
        if not held.any() or int(train.sum()) < 2:
            continue
        w, b = fit_head(h[train], y[train], start_w, start_b, decay, iterations=100)
        logits = h[held].to(torch.float64).flatten(1) @ w.T + b
        probs[held] = logits.softmax(dim=1)
        counts = torch.bincount(y[train].long(), minlength=classes)
        judged[held] = counts[y[held].long()] >= 2
    return probs, judged


def heldout_stats(
    h: torch.Tensor, y: torch.Tensor, classes: int, seed: int = 0, decay: float = HELDOUT_DECAY
) -> dict[str, torch.Tensor]:
    """Per labeled example: held-out p(label), its loss, the held-out guess and its probability
    (an example that cannot be judged: loss 0, p(label) 1)."""
    probs, judged = heldout_probs(h, y, classes, seed, decay=decay)
    p_label = probs.gather(1, y.long()[:, None]).squeeze(1)
    p_guess, guess = probs.max(dim=1)
    loss = torch.where(judged, -p_label.clamp_min(1e-12).log(), torch.zeros_like(p_label))
    return {
        "loss": loss,
        "p_label": torch.where(judged, p_label, torch.ones_like(p_label)),
        "guess": guess,
        "p_guess": p_guess,
        "judged": judged,
    }


def review(
    model: AdaptedModel,
    examples: list[Example],
    method: str,
    top: int,
    weight_decay: float,
    seed: int,
    batch_size: int = 64,
) -> list[dict]:
    """The ``top`` labeled examples whose annotations look most suspicious: ``heldout`` ranks by the
    loss of a held-out prediction (:func:`heldout_probs`; with the held-out guess and its
    probability), ``loss`` by the trained head's loss on the given label, ``influence`` by self-influence."""
    if model.layout is not None:
        if method == "influence":
            raise ValueError(
                f"REVIEW_METHOD={method} needs one single-choice <Choices>; this project has "
                f"{model.layout.describe()}: use REVIEW_METHOD=loss"
            )
        return structured_review(model, examples, top, batch_size)
    h, y = head_inputs(model, examples, batch_size)
    if method == "heldout":
        stats = heldout_stats(label_free_inputs(model, examples, batch_size), y, len(model.labels), seed)
        rank = stats["loss"]
    elif method == "influence":
        stats = review_annotations(h, y, model.head.weight, model.head.bias, weight_decay, seed=seed)
        rank = stats["self_influence"]
    else:
        stats = label_loss(h, y, model.head.weight, model.head.bias)
        rank = stats["loss"]
    order = torch.argsort(rank, descending=True, stable=True)[:top].tolist()
    out = []
    for i in order:
        item = {"task": examples[i].key, "label": model.labels[examples[i].label], "method": method}
        item.update({k: round(float(v[i]), 6) for k, v in stats.items() if k not in ("guess", "judged")})
        if method == "heldout":
            if not stats["judged"][i]:
                continue  # too few other labels of its class to judge it
            item["guess"] = model.labels[int(stats["guess"][i])]
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
