"""Incremental fine-tuning of the unfrozen layers (the ADMA paper's frozen-layer adaptation).

Each round continues from the current weights. Mini-batches mix labels that earlier rounds have
already seen ("old") with labels new in this round, 0.9 old / 0.1 new by default, as in the EMOC
paper's incremental update. Training runs on trunk activations (the frozen-feature cache), or on
augmented images passed through the frozen trunk when augmentation is on. Deterministic under a
seed; mixed precision (bfloat16 autocast) on CUDA.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ml_backend.core.adapted import AdaptedModel

AUGMENTATIONS = ("none", "flip", "crop", "flip+crop")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 32
    new_fraction: float = 0.1  # share of each mini-batch drawn from labels new in this round
    augment: str = "none"
    amp: bool = True  # used only on CUDA
    seed: int = 0
    optimizer: str = "adam"  # or "sgd" (momentum 0.9, the EMOC paper's update)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Example:
    key: str  # task id
    label: int  # index into model.labels (-1 for a structured layout: see ``target``)
    is_new: bool
    trunk: torch.Tensor | None = None  # cached trunk activations (augment == "none")
    image: torch.Tensor | None = None  # preprocessed image (augmentation on)
    # A structured layout's target over the active outputs (layout.Layout.target: NaN = no answer)
    target: torch.Tensor | None = None
    answer: str | None = None  # the canonical answer (layout.py); the label for a simple layout
    embedding: torch.Tensor | None = None  # the head's input under the served version (fit_head)


def _augment(batch: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if "flip" in kind:
        flip = torch.rand(batch.shape[0], generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if "crop" in kind:  # random shift by up to 1/8 of the side, reflect-padded
        pad = max(1, batch.shape[-1] // 8)
        padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="reflect")
        out = torch.empty_like(batch)
        offsets = torch.randint(0, 2 * pad + 1, (batch.shape[0], 2), generator=generator)
        for i, (dy, dx) in enumerate(offsets.tolist()):
            out[i] = padded[i, :, dy : dy + batch.shape[-2], dx : dx + batch.shape[-1]]
        batch = out
    return batch


def _sample(n_old: int, n_new: int, config: TrainConfig, generator: torch.Generator) -> tuple[int, int]:
    """How many old and new examples go into one mini-batch."""
    size = min(config.batch_size, n_old + n_new)
    if n_old == 0:
        return 0, size
    if n_new == 0:
        return size, 0
    take_new = min(n_new, max(1, round(config.new_fraction * size)))
    return size - take_new, take_new


def _batch_loss(
    model: AdaptedModel,
    batch: list[Example],
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    use_amp: bool,
    active: list[int],
) -> torch.Tensor:
    """One mini-batch's loss: cross-entropy over the head's rows, or a structured layout's loss
    over the active outputs (layout.py; ``active``: their head rows)."""
    if config.augment == "none":
        z = torch.stack([e.trunk for e in batch]).to(device)
    else:
        images = _augment(torch.stack([e.image for e in batch]), config.augment, generator)
        with torch.no_grad():
            z = model.spec.trunk(model.target, images.to(device))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        return _loss(model, model.logits_for_training(z), batch, device, active)


def _loss(model: AdaptedModel, logits: torch.Tensor, batch: list[Example], device, active: list[int]) -> torch.Tensor:
    """Cross-entropy over the head's rows, or a structured layout's loss over the active outputs."""
    if model.layout is None:
        return nn.functional.cross_entropy(logits.float(), torch.tensor([e.label for e in batch], device=device))
    targets = torch.stack([e.target for e in batch]).to(device)
    return model.layout.loss(logits.float()[:, active], targets)


def _optimizer(params: list, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer={config.optimizer!r}; allowed: adam, sgd")


def _draw(examples: Sequence[Example], n: int, generator: torch.Generator) -> list[Example]:
    """``n`` examples drawn with replacement (none when ``n`` is 0)."""
    return [examples[i] for i in torch.randint(len(examples), (n,), generator=generator).tolist()] if n else []


def _steps(
    examples: Sequence[Example],
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[list[Example], torch.Generator], torch.Tensor],
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """``config.steps`` optimizer steps, each on a mini-batch that mixes labels seen in earlier rounds
    with new ones (:func:`_sample`), drawn under ``config.seed``; returns the losses."""
    old = [e for e in examples if not e.is_new]
    new = [e for e in examples if e.is_new]
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    for step in range(config.steps):
        n_old, n_new = _sample(len(old), len(new), config, generator)
        batch = _draw(old, n_old, generator) + _draw(new, n_new, generator)
        loss = loss_of(batch, generator)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, losses[-1])
    return losses


def _metrics(losses: list[float], config: TrainConfig, started: float) -> dict:
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": config.steps,
        "loss_first": losses[0],
        "loss_last": sum(tail) / len(tail),
        "seconds": time.perf_counter() - started,
    }


def fine_tune(
    model: AdaptedModel,
    examples: Sequence[Example],
    config: TrainConfig,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Train the unfrozen layers of ``model`` in place; pass a :meth:`AdaptedModel.clone` so that
    the served model is untouched until the round succeeds. Returns metrics."""
    if not examples:
        raise ValueError("no labeled examples to train on")
    if config.augment not in AUGMENTATIONS:
        raise ValueError(f"augment={config.augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
    device, started = model.device, time.perf_counter()
    optimizer = _optimizer([p for p in model.target.parameters() if p.requires_grad], config)
    active = model.active_index()
    if model.layout is not None and any(e.target is None for e in examples):
        raise ValueError("a structured layout trains on targets; an example has none")
    use_amp = config.amp and device.type == "cuda"

    def loss_of(batch: list[Example], generator: torch.Generator) -> torch.Tensor:
        return _batch_loss(model, batch, config, generator, device, use_amp, active)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # dropout masks
        model.train_mode()
        try:
            losses = _steps(examples, config, optimizer, loss_of, progress)
        finally:
            model.target.eval()
    n_new = sum(1 for e in examples if e.is_new)
    return {
        **_metrics(losses, config, started),
        "labels_old": len(examples) - n_new,
        "labels_new": n_new,
        "device": str(device),
        "amp": use_amp,
        "config": config.to_dict(),
    }


def fit_head(model: AdaptedModel, examples: Sequence[Example], config: TrainConfig) -> dict:
    """Train only the head (the last Linear) of ``model`` in place, on each example's ``embedding``
    (its input under the served version, which the rest of the network keeps): the same loss,
    optimizer, steps and old/new mini-batches as :func:`fine_tune`, without dropout. Milliseconds
    where a fine-tuning round takes a minute on a CPU: a round's head-first queue (docs/methods.md
    §0, "A round's head-first queue"). Returns metrics."""
    if not examples:
        raise ValueError("no labeled examples to train on")
    if any(e.embedding is None for e in examples):
        raise ValueError("fit_head trains on embeddings; an example has none")
    started, device, head = time.perf_counter(), model.device, model.head
    optimizer = _optimizer(list(head.parameters()), config)
    active = model.active_index()

    def loss_of(batch: list[Example], _generator: torch.Generator) -> torch.Tensor:
        h = torch.stack([e.embedding for e in batch]).to(device, head.weight.dtype)
        return _loss(model, head(h), batch, device, active)

    with torch.enable_grad():
        return _metrics(_steps(examples, config, optimizer, loss_of), config, started)
