"""``auto``: a budget-aware strategy that starts representative and hands over to BADGE
(docs/methods.md §4.7).

A new project has a handful of labels; there, picking items that *represent* the pool beats asking
the model what it is unsure of, because the model knows nothing yet (TypiClust, ProbCover). Once
every class could hold a few labels, uncertainty and diversity win (BADGE, margin). ``auto`` decides
from what any Label Studio project knows at every round, the number of labeled items n_L and the
number of classes C of the label config:

    cold start  while n_L <  per_class · C   →  the ``cold`` strategy (TypiClust)
    warm        once  n_L >= per_class · C   →  the ``warm`` strategy (BADGE)

The regime is decided on a full-pool scoring and kept with the model version, so that every task of
a version is valued by the same strategy whichever request it comes in (a later request that sees
more labels does not switch half of the queue). Both strategies are pool-relative; ``auto`` is too.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Need, ScoringInputs, Strategy
from .registry import register


@register
class AutoStrategy(Strategy):
    """``auto``: ``cold`` (TypiClust) until the project has ``per_class`` labels per class, then ``warm`` (BADGE). The
    project's rule (docs/methods.md §4.7), after the phase transition between low and high budgets of Hacohen, Dekel
    & Weinshall, 'Active Learning on a Budget: Opposite Strategies Suit High and Low Budgets', ICML'22."""

    name = "auto"
    structured = True  # with its default arms; an instance: when both of its arms are
    needs = frozenset({Need.PROBS, Need.EMBEDDINGS, Need.LABELED_EMBEDDINGS, Need.KEYS})  # the defaults'; see __init__
    description = (
        "Budget-aware: `cold` (TypiClust) while the project has fewer than `per_class` labels "
        "per class, then `warm` (BADGE); the regime is in /status and each prediction's strategy."
    )

    def __init__(self, seed: int = 0, cold: str = "typiclust", warm: str = "badge", per_class: float = 5) -> None:
        from .registry import from_spec

        super().__init__(seed)
        if float(per_class) < 0:
            raise TypeError("per_class must be >= 0")
        if "auto" in (str(cold).split("/")[0], str(warm).split("/")[0]):
            raise TypeError("auto cannot hand over to itself")
        self.cold_spec, self.warm_spec, self.per_class = str(cold), str(warm), float(per_class)
        # a handed-over strategy's own options use "/" (``auto:warm=adma/lam=0.2``): ":" separates auto's
        self.cold = from_spec(self.cold_spec.replace("/", ":"), seed=seed)
        self.warm = from_spec(self.warm_spec.replace("/", ":"), seed=seed)
        self.needs = frozenset(self.cold.needs | self.warm.needs | {Need.PROBS, Need.LABELED_EMBEDDINGS})
        self.structured = self.cold.structured and self.warm.structured  # the defaults' are (docs/methods.md §9.3)
        self._info: dict[str, Any] = {}

    def params(self) -> dict:
        per_class = int(self.per_class) if self.per_class.is_integer() else self.per_class
        return {"seed": self.seed, "cold": self.cold_spec, "warm": self.warm_spec, "per_class": per_class}

    @property
    def pool_relative(self) -> bool:
        return self.cold.pool_relative or self.warm.pool_relative

    # what either strategy needs ----------------------------------------------------------------
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.cold.layers() + self.warm.layers()))

    def views(self) -> int:
        return max(self.cold.views(), self.warm.views())

    def needs_for(self, fingerprints, state) -> frozenset[Need]:
        return frozenset(
            self.cold.needs_for(fingerprints, state)
            | self.warm.needs_for(fingerprints, state)
            | {Need.PROBS, Need.LABELED_EMBEDDINGS}
        )

    def set_source_data(self, source) -> None:
        self.cold.set_source_data(source)
        self.warm.set_source_data(source)

    def saved_state(self, state: dict) -> dict | None:
        saved = {
            k: v
            for k, v in (("cold", self.cold.saved_state(state)), ("warm", self.warm.saved_state(state)))
            if v is not None
        }
        return saved or None

    def restore_state(self, state: dict, saved: dict) -> bool:
        done = [getattr(self, k).restore_state(state, v) for k, v in saved.items() if k in ("cold", "warm")]
        return bool(done) and all(done)

    def info(self) -> dict:
        return dict(self._info)

    # the switch ----------------------------------------------------------------------------------
    def switch_at(self, classes: int) -> int:
        """The number of labels at which the warm strategy takes over."""
        import math

        return int(math.ceil(self.per_class * classes))

    def regime(self, labels: int, classes: int) -> str:
        return "cold-start" if labels < self.switch_at(classes) else "warm"

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        labeled = inputs.labeled_embeddings
        n_labels = 0 if labeled is None else int(labeled.shape[0])
        classes = int(inputs.require(Need.PROBS).shape[1])
        key = ("auto-regime", tuple(sorted(self.params().items())))
        regime = self.regime(n_labels, classes)
        kept = inputs.state.get(key) if inputs.state is not None else None
        if inputs.full_pool:
            if inputs.state is not None and inputs.model_version is not None:
                inputs.state[key] = {"model": inputs.model_version, "regime": regime}
        elif kept is not None and kept["model"] == inputs.model_version:
            regime = kept["regime"]  # the version's regime, whatever this request sees
        inner = self.cold if regime == "cold-start" else self.warm
        values = inner(inputs)
        self._info = {
            "regime": regime,
            "serving": inner.name,
            "labels": n_labels,
            "switch_at": self.switch_at(classes),
            **inner.info(),
        }
        return values

    def __repr__(self) -> str:
        return (
            f"AutoStrategy(cold={self.cold_spec!r}, warm={self.warm_spec!r}, per_class={self.per_class}, "
            f"seed={self.seed})"
        )


__all__ = ["AutoStrategy"]
