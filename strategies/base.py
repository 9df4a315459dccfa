"""The strategy contract.

Direction, stated once for the whole package: every strategy returns **acquisition values where
larger means "label first"**. Nothing in this package knows about Label Studio's ``score`` (where
lower is served first); the backend converts acquisition values into scores in exactly one place,
``ml_backend.core.queue_score.acquisition_to_score``.

A strategy declares what it needs (:class:`Need`); the scorer computes each declared input once per
forward pass and hands all of them over in a :class:`ScoringInputs`. Strategies never run the model
themselves and never mutate what they are given.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import torch

from .errors import MissingInputError, PoolRelativeError, StrategyError, StructuredLayoutError


class Need(str, enum.Enum):
    """Inputs a strategy can ask the scorer for.
    Project contract, not from a paper."""

    KEYS = "keys"  # stable item identifiers (task ids), for seeded per-item randomness
    PROBS = "probs"  # softmax of the current target head, (N, C); per group for a structured layout
    LOGITS = "logits"  # raw target-head outputs, (N, C)
    EMBEDDINGS = "embeddings"  # penultimate features h(x): the input of the target head, (N, D)
    FEATURES = "features"  # activations at the layers named by Strategy.layers(), {name: (N, ...)}
    SOURCE_PROBS = "source_probs"  # softmax of the original model's source head, (N, C_source)
    SOURCE_FEATURES = "source_features"  # M0's activations at the layers of Strategy.layers(), {name: (N, ...)}
    LABELED_EMBEDDINGS = "labeled_embeddings"  # h(x) of the labeled items, (n_L, D)
    LABELED_PROBS = "labeled_probs"  # softmax of the current head for the labeled items, (n_L, C)
    LABELED_FEATURES = "labeled_features"  # the labeled items' activations at Strategy.layers()
    VIEW_PROBS = "view_probs"  # softmax of m test-time-augmented views, (m, N, C); view 0 = identity
    HEAD_WEIGHT = "head_weight"  # weight of the target head's Linear, rows of the active labels, (C, D)


@dataclass(frozen=True)
class ScoringInputs:
    """Everything a strategy may look at for one pool (N items).
    Project contract, not from a paper."""

    n: int
    keys: Sequence[str] | None = None
    probs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    source_probs: torch.Tensor | None = None
    source_features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    labeled_embeddings: torch.Tensor | None = None
    labeled_probs: torch.Tensor | None = None
    labeled_features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    view_probs: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    round: int = 0  # completed fine-tuning rounds t (ADMA's trade-off needs it)
    planned_rounds: int | None = None  # T, when known (ADMA's default lambda = 1/T)
    # A per-project dict that lives as long as the project's model: strategies may cache what the
    # method computes once (ADMA's landmarks, docs/methods.md §1.3). ``full_pool`` says whether these N
    # items are the whole unlabeled pool (a publish) or only a request's tasks.
    state: dict | None = None
    full_pool: bool = True
    # What each item *is* (the backend: a hash of task id and image reference), for per-item caches
    # that must not outlive a changed image; None: the keys serve; a None entry: do not cache the item.
    fingerprints: Sequence[str | None] | None = None
    # Which model produced these inputs (the backend: the served version). A pool-relative strategy
    # keeps what its last full-pool scoring computed under this name and scores later subsets of the
    # same model against it (docs/methods.md §0); None: nothing is kept or reused.
    model_version: str | None = None
    # The outputs' groups (strategies/layout.py) when the project is not one single-choice
    # question (several <Choices>, or multi-label): ``probs`` then holds each group's softmax or
    # sigmoids side by side. None: one single-choice group. Only strategies with ``structured``
    # accept such inputs.
    layout: Any = None
    threshold: float = 0.5  # a multi-label output is predicted "on" at p >= threshold

    def item_ids(self) -> list[str | None]:
        """Per-item cache keys: the fingerprints, else the keys."""
        ids = self.fingerprints if self.fingerprints is not None else self.require(Need.KEYS)
        return [None if i is None else str(i) for i in ids]

    def require(self, need: Need, layers: Sequence[str] = ()) -> Any:
        """The input for ``need``; for FEATURES / SOURCE_FEATURES, check that ``layers`` are there."""
        value = getattr(self, need.value)
        if need in (Need.FEATURES, Need.SOURCE_FEATURES, Need.LABELED_FEATURES):
            missing = [name for name in layers if name not in value]
            if missing:
                raise MissingInputError(f"the scorer did not provide '{need.value}' for layers {missing}")
            return value
        if value is None:
            raise MissingInputError(f"the scorer did not provide '{need.value}'")
        return value


def subset_inputs(inputs: ScoringInputs, idx: torch.Tensor) -> ScoringInputs:
    """``inputs`` restricted to the pool items ``idx`` (the labeled set and the rest stay).
    Project helper, not from a paper."""
    import dataclasses

    rows = idx.tolist()

    def pick(value, dim=0):
        return None if value is None else value.index_select(dim, idx)

    def pick_list(value):
        return None if value is None else [value[i] for i in rows]

    return dataclasses.replace(
        inputs,
        n=len(rows),
        keys=pick_list(inputs.keys),
        probs=pick(inputs.probs),
        logits=pick(inputs.logits),
        embeddings=pick(inputs.embeddings),
        features={k: pick(v) for k, v in inputs.features.items()},
        source_probs=pick(inputs.source_probs),
        source_features={k: pick(v) for k, v in inputs.source_features.items()},
        view_probs=pick(inputs.view_probs, 1),
        fingerprints=pick_list(inputs.fingerprints),
    )


def remember_pool(inputs: ScoringInputs, key: Any, values: torch.Tensor | None, **reference: Any) -> None:
    """After a full-pool scoring: keep each item's value (None: only the reference) and the
    strategy's ``reference`` (what it needs to value items that were not in the pool) under ``key``
    for ``inputs.model_version``.
    Project helper, not from a paper: the pool-relative rule of docs/methods.md §0."""
    if inputs.state is None or not inputs.full_pool or inputs.model_version is None:
        return
    kept = {} if values is None else {i: float(v) for i, v in zip(inputs.item_ids(), values.tolist()) if i is not None}
    inputs.state[key] = {"model": inputs.model_version, "reference": reference, "values": kept}


def recall_pool(inputs: ScoringInputs, key: Any, name: str) -> dict:
    """What :func:`remember_pool` kept for this model version; PoolRelativeError when nothing was.
    Project helper, not from a paper (docs/methods.md §0)."""
    entry = inputs.state.get(key) if inputs.state is not None and inputs.model_version is not None else None
    if entry is None or entry["model"] != inputs.model_version:
        raise PoolRelativeError(
            f"strategy '{name}' values a task relative to the whole pool; no full-pool "
            f"scoring of model {inputs.model_version!r} is kept"
        )
    return entry


def values_from_pool(inputs: ScoringInputs, entry: dict, new_items) -> torch.Tensor:
    """A subset's values: each known item's value from the kept full-pool scoring; items that were
    not in that pool get ``new_items(indices)`` (computed against the kept reference only).
    Project helper, not from a paper (docs/methods.md §0)."""
    ids = inputs.item_ids()
    known = entry["values"]
    out = torch.empty(inputs.n, dtype=torch.float64)
    new = [i for i, f in enumerate(ids) if f is None or f not in known]
    for i, f in enumerate(ids):
        if f is not None and f in known:
            out[i] = known[f]
    if new:
        out[new] = new_items(new).to(torch.float64)
    return out


class SourceData(Protocol):
    """Labeled source-task images seen through the original model M0, computed on demand.
    Project contract, not from a paper."""

    def activations(self, roles: Sequence[str], limit: int | None = None) -> dict[str, torch.Tensor]:
        """M0's flattened activations at ``roles`` for (the first ``limit``) source images."""

    def current_activations(self, roles: Sequence[str], items: Sequence[int]) -> dict[str, torch.Tensor]:
        """The current (adapted) model's flattened activations at ``roles`` for source images ``items``."""

    def landmarks(self, roles: Sequence[str], per_class: int) -> Any:
        """Landmarks (``strategies.adma_landmarks.Landmarks``) at ``roles`` and B: ``per_class`` k-means
        sub-centers per source class (docs/methods.md §1.3, Eqs. 1-2)."""


class Strategy(ABC):
    """Base class: a thin object around a pure acquisition function.

    Subclasses set ``name``, ``needs`` and ``description`` and implement :meth:`acquisition`.
    Constructor parameters are stored and reported by :meth:`params` so that a model version can
    name the exact configuration that produced its scores.
    Project contract, not from a paper; the direction (larger = label first) is docs/methods.md §0.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]]
    description: ClassVar[str]
    # True: a task's value is defined relative to the whole pool (a reference sample, a greedy
    # selection). Such a strategy scores a subset of the pool against what its last full-pool scoring
    # of the same model kept (ScoringInputs.model_version) and raises PoolRelativeError without it;
    # False: every value depends on the item alone (and on kept per-project state).
    pool_relative: ClassVar[bool] = False
    # True: the strategy also values items of a structured layout (ScoringInputs.layout: several
    # choice groups, multi-label; docs/methods.md §9), for which it documents its rule.
    structured: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def layers(self) -> tuple[str, ...]:
        """Layers whose activations this strategy needs (with Need.FEATURES / SOURCE_FEATURES):
        module names, or the roles a backbone maps to modules ("A", "B", "A2": docs/methods.md §1.2)."""
        return ()

    def views(self) -> int:
        """Number of test-time-augmented views (with Need.VIEW_PROBS)."""
        return 0

    def needs_for(self, fingerprints: Sequence[str] | None, state: dict | None) -> frozenset[Need]:
        """What the forward pass must compute for these items, given what this strategy keeps in
        ``state`` (see :attr:`ScoringInputs.state`): a subset of :attr:`needs`. ADMA drops M0's
        outputs for items whose source-side weights it already holds."""
        return self.needs

    def info(self) -> dict[str, Any]:
        """What the last call decided that a user should see (e.g. ADMA's landmark mode)."""
        return {}

    def set_source_data(self, source: "SourceData") -> None:  # noqa: B027  (an optional hook, not abstract)
        """Optional hook with a no-op default: called when labeled source-task data exists (the
        simulation's tracks); a strategy that can use it overrides it and takes what it needs (ADMA:
        landmarks, MMD: a source sample); the rest inherit this default and ignore it."""

    def saved_state(self, state: dict) -> dict | None:
        """What of a project's ``state`` must survive a restart, as tensors, strings and numbers (for
        ``torch.load(weights_only=True)``); None: nothing. ADMA saves the landmarks it computed from
        the pool, which a restart could not recompute from the same pool."""
        return None

    def restore_state(self, state: dict, saved: dict) -> bool:
        """Put back what :meth:`saved_state` returned; False when it does not fit this strategy."""
        return False

    @abstractmethod
    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        """Acquisition values, shape (N,), larger = label first."""

    def __call__(self, inputs: ScoringInputs) -> torch.Tensor:
        """Run :meth:`acquisition` and enforce the contract on its result."""
        if inputs.layout is not None and not self.structured:
            raise StructuredLayoutError(
                f"strategy '{self.name}' values single-choice projects only; for several "
                f"<Choices> or multi-label use one of: {', '.join(structured_names())}"
            )
        if inputs.n == 0:
            return torch.zeros(0, dtype=torch.float64)
        values = self.acquisition(inputs)
        if not isinstance(values, torch.Tensor) or values.shape != (inputs.n,):
            shape = getattr(values, "shape", type(values).__name__)
            raise StrategyError(f"strategy '{self.name}' returned {shape}, expected ({inputs.n},)")
        values = values.detach().to("cpu", torch.float64)
        if not torch.isfinite(values).all():
            raise StrategyError(f"strategy '{self.name}' returned non-finite acquisition values")
        return values

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


_STRUCTURED: set[str] = set()  # filled by registry.register


def structured_names() -> list[str]:
    """The registered strategies that accept a structured layout.
    Project helper, not from a paper (docs/methods.md §9.3)."""
    return sorted(_STRUCTURED)
