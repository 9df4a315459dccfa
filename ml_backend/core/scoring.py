"""The one pool-scoring pipeline: trunk activations -> the forward outputs a strategy declares ->
:class:`ScoringInputs` -> acquisition values. :func:`score_pool` is used by the backend's scorer, the
simulation and the benchmarks, so that every declared input is computed once per forward pass and
the same way everywhere."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from ml_backend.core.adapted import AdaptedModel
from strategies import Need, PoolRelativeError, ScoringInputs, Strategy

_MERGE = ("logits", "probs", "embeddings", "source_probs")


def forward_batches(
    model: AdaptedModel, z: torch.Tensor | Sequence[torch.Tensor], needs, layers, batch_size: int
) -> dict:
    """Run the trainable part over trunk activations in batches and concatenate the outputs."""
    parts = []
    total = z.shape[0] if isinstance(z, torch.Tensor) else len(z)
    for s in range(0, total, batch_size):
        chunk = z[s : s + batch_size]
        chunk = chunk if isinstance(chunk, torch.Tensor) else torch.stack(list(chunk))
        parts.append(model.forward_from_trunk(chunk, needs, layers))
    return merge_parts(parts)


# About this many bytes of trunk activations per call of the trainable part. Larger batches spill the
# CPU's caches: EfficientNet-Lite0's part (61 KB a row at 224 px) ran 87-124 rows/s at 4-32 rows and
# 41-42 at 128-256 on a 2-core VM, while smallcnn's (2 KB a row) kept gaining up to 1,024 rows
# (docs/benchmarks.md, "Batch size on a CPU").
REST_BATCH_BYTES = 1 << 20


def rest_rows(z: torch.Tensor, at_least: int = 1) -> int:
    """Rows of ``z`` (trunk activations) per call of the trainable part: about
    :data:`REST_BATCH_BYTES` of them, never fewer than ``at_least`` (BATCH_SIZE) nor more than 4,096."""
    row = max(1, z[0].numel() * 4) if len(z) else 1
    return max(1, at_least, min(4096, REST_BATCH_BYTES // row))


HEAD_NEEDS = frozenset({Need.PROBS, Need.LOGITS, Need.EMBEDDINGS})


@torch.no_grad()
def head_outputs(model: AdaptedModel, h: torch.Tensor, needs, layers: Sequence[str] = ()) -> dict:
    """:meth:`AdaptedModel.forward_from_trunk`'s outputs from the head's inputs ``h`` (embeddings kept
    from a version whose layers below the head are ``model``'s): only the head runs. For the needs of
    :data:`HEAD_NEEDS` and no hooked layers (a round's head-first queue, ``jobs/head_round.py``)."""
    if set(needs) - HEAD_NEEDS or layers:
        raise ValueError(f"the head alone gives {sorted(HEAD_NEEDS)}, not {sorted(set(needs) - HEAD_NEEDS)} {layers}")
    with model.lock:
        head = model.head
        logits = head(h.to(model.device, head.weight.dtype))[:, model.active_index()].float()
    probs = logits.softmax(dim=1) if model.layout is None else model.layout.probs(logits)
    out = {"logits": logits.cpu(), "probs": probs.cpu()}
    if Need.EMBEDDINGS in needs:
        out["embeddings"] = h.float().cpu()
    return out


def merge_parts(parts: list[dict]) -> dict:
    if not parts:
        return {}
    merged = {k: torch.cat([p[k] for p in parts]) for k in _MERGE if k in parts[0]}
    for k in ("features", "source_features"):
        if k in parts[0]:
            merged[k] = {name: torch.cat([p[k][name] for p in parts]) for name in parts[0][k]}
    return merged


@torch.no_grad()
def view_probs(
    model: AdaptedModel, images: torch.Tensor, keys: Sequence[str], m: int, seed: int, round_: int, batch_size: int
) -> torch.Tensor:
    """(m, N, C) probabilities of the m test-time-augmented views of preprocessed ``images``."""
    from strategies.aift import tta_views

    out = []
    for s in range(0, images.shape[0], batch_size):
        views = tta_views(images[s : s + batch_size], m, keys[s : s + batch_size], seed, round_)
        flat = views.reshape(-1, *views.shape[2:])
        probs = model.forward(flat, {Need.PROBS})["probs"]
        out.append(probs.reshape(m, -1, probs.shape[1]))
    return torch.cat(out, dim=1)


def _labeled_outputs(strategy: Strategy, model: AdaptedModel, labeled_trunk, batch_size: int) -> dict:
    """The forward outputs of the labeled items that the strategy asks for (LABELED_*), or {}."""
    wanted = {
        Need.LABELED_EMBEDDINGS: Need.EMBEDDINGS,
        Need.LABELED_PROBS: Need.PROBS,
        Need.LABELED_FEATURES: Need.FEATURES,
    }
    labeled_needs = {wanted[n] for n in strategy.needs if n in wanted}
    if not labeled_needs or labeled_trunk is None or not len(labeled_trunk):
        return {}
    layers = strategy.layers() if Need.FEATURES in labeled_needs else ()
    return forward_batches(model, labeled_trunk, labeled_needs, layers, batch_size)


def build_inputs(
    strategy: Strategy,
    model: AdaptedModel,
    merged: dict,
    keys: Sequence[str],
    *,
    labeled_trunk: torch.Tensor | Sequence[torch.Tensor] | None = None,
    images: Callable[[], torch.Tensor] | None = None,
    round_: int = 0,
    planned_rounds: int | None = None,
    state: dict | None = None,
    full_pool: bool = True,
    fingerprints: Sequence[str] | None = None,
    batch_size: int = 64,
    model_version: str | None = None,
) -> ScoringInputs:
    """ScoringInputs for ``strategy`` from the merged forward outputs of the pool (``merged``).

    ``labeled_trunk``: trunk activations of the labeled items (for LABELED_EMBEDDINGS);
    ``images``: returns the pool's preprocessed images (for VIEW_PROBS, which needs full passes)."""
    needs = strategy.needs
    labeled = _labeled_outputs(strategy, model, labeled_trunk, batch_size)
    views = None
    if Need.VIEW_PROBS in needs:
        if images is None:
            raise ValueError(f"strategy '{strategy.name}' needs test-time-augmented views of the images")
        views = view_probs(model, images(), list(keys), strategy.views(), strategy.seed, round_, batch_size)
    head_weight = None
    if Need.HEAD_WEIGHT in needs:
        idx = model.active_index()
        head_weight = model.head.weight.detach()[idx].float().cpu()
    return ScoringInputs(
        n=len(keys),
        keys=list(keys),
        probs=merged.get("probs"),
        logits=merged.get("logits"),
        embeddings=merged.get("embeddings"),
        features=merged.get("features", {}),
        source_probs=merged.get("source_probs"),
        source_features=merged.get("source_features", {}),
        labeled_embeddings=labeled.get("embeddings"),
        labeled_probs=labeled.get("probs"),
        labeled_features=labeled.get("features", {}),
        view_probs=views,
        head_weight=head_weight,
        round=round_,
        planned_rounds=planned_rounds,
        state=state,
        full_pool=full_pool,
        fingerprints=None if fingerprints is None else list(fingerprints),
        model_version=model_version,
        layout=model.layout,
        threshold=model.threshold,
    )


def scoring_needs(
    strategy: Strategy, fingerprints: Sequence[str | None] | None = None, state: dict | None = None
) -> set:
    """What the forward pass must produce for these items (``fingerprints``; None: unknown): the
    strategy's needs given what it keeps in ``state``, plus the probabilities (every caller wants
    the predicted label). Inputs that are not per-item outputs are built by :func:`build_inputs`."""
    needs = set(strategy.needs_for(fingerprints, state)) - {
        Need.LABELED_EMBEDDINGS,
        Need.LABELED_PROBS,
        Need.LABELED_FEATURES,
        Need.VIEW_PROBS,
        Need.KEYS,
        Need.HEAD_WEIGHT,
    }
    return needs | {Need.PROBS}


@dataclass
class PoolScores:
    keys: list[str]
    values: torch.Tensor | None  # (N,) float64 acquisition values, larger = label first (None: see pool_relative)
    probs: torch.Tensor | None = None  # (N, C) over the model's active labels
    embeddings: torch.Tensor | None = None
    info: dict = field(default_factory=dict)  # what the strategy reported (strategy.info())
    pool_relative: bool = False  # a subset the strategy cannot value without a kept full-pool scoring


def _pool_outputs(model: AdaptedModel, batches, needs, layers, batch_size: int, forward: Callable | None):
    """(keys, fingerprints or None, merged forward outputs) of the trunk-activation batches."""
    keys: list[str] = []
    fingerprints: list[str | None] | None = []
    parts, gathered = [], []
    for batch_keys, batch_fps, z in batches:
        if forward is not None:
            gathered.append(z)
        else:
            step = rest_rows(z, batch_size)
            for s in range(0, len(batch_keys), step):
                parts.append(model.forward_from_trunk(z[s : s + step], needs, layers))
        keys.extend(batch_keys)
        if batch_fps is None:
            fingerprints = None
        elif fingerprints is not None:
            fingerprints.extend(batch_fps)
    if not keys:
        return keys, fingerprints, {}
    if forward is not None:
        parts = [forward(model, torch.cat(gathered), needs, layers)]
    return keys, fingerprints, merge_parts(parts)


def score_pool(
    strategy: Strategy,
    model: AdaptedModel,
    batches: Iterable[tuple[Sequence[str], Sequence[str | None] | None, torch.Tensor]],
    *,
    candidates: Sequence[str | None] | None = None,
    labeled_trunk: torch.Tensor | Sequence[torch.Tensor] | None = None,
    images: Callable[[], torch.Tensor] | None = None,
    round_: int = 0,
    planned_rounds: int | None = None,
    state: dict | None = None,
    full_pool: bool = True,
    batch_size: int = 64,
    lock: contextlib.AbstractContextManager | None = None,
    model_version: str | None = None,
    forward: Callable | None = None,
) -> PoolScores:
    """Acquisition values of a pool.

    ``batches`` yields ``(keys, fingerprints or None, trunk activations)`` chunks, so that a caller
    can download and cache the next chunk's images while this one runs (memory stays bounded by the
    forward outputs). ``candidates``: the fingerprints of every item that may come (what the
    strategy keeps in ``state`` decides what to compute; None: everything). ``full_pool``: these
    items are the whole unlabeled pool (see :attr:`ScoringInputs.full_pool`). ``lock`` serialises
    the strategy call, for strategies that keep per-call diagnostics. ``model_version`` names the
    model (see :attr:`ScoringInputs.model_version`). A subset that a pool-relative strategy cannot
    value on its own gives ``values=None`` and ``pool_relative=True`` (never values that depend on
    which tasks share the request). ``forward(model, z, needs, layers)``: runs the trainable part
    elsewhere (``ml_backend/service/engine.py``: Ray) on all the pool's activations at once."""
    needs = scoring_needs(strategy, candidates, state)
    keys, fingerprints, merged = _pool_outputs(model, batches, needs, strategy.layers(), batch_size, forward)
    if not keys:
        return PoolScores([], torch.zeros(0, dtype=torch.float64))
    inputs = build_inputs(
        strategy,
        model,
        merged,
        keys,
        labeled_trunk=labeled_trunk,
        images=images,
        round_=round_,
        planned_rounds=planned_rounds,
        state=state,
        full_pool=full_pool,
        fingerprints=fingerprints,
        batch_size=batch_size,
        model_version=model_version,
    )
    with lock or contextlib.nullcontext():
        try:
            values = strategy(inputs)
        except PoolRelativeError:
            return PoolScores(keys, None, merged.get("probs"), merged.get("embeddings"), {}, pool_relative=True)
        info = strategy.info()
    return PoolScores(keys, values, merged.get("probs"), merged.get("embeddings"), info)
