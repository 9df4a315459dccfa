"""What names a project's model version: the backend's :class:`Identity` (backbone, weights, seed,
strategy), the project's label config, chosen strategy, round and checkpoint. :class:`Versioning`
computes the name, and makes the two changes of a project's identity fields that rename its
version without a new model: a (re-read) label config and a chosen strategy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable

from ml_backend.core.adapted import AdaptedModel
from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.project_state import PoolState, ProjectState


@dataclass(frozen=True)
class Identity:
    """What, besides a project's own history, makes its model version: backbone, weights, seed and
    the strategy with its parameters."""

    backbone: str
    weights: str
    seed: int
    strategy: str
    strategy_params: dict
    freeze: str = "default"  # FREEZE and the input size change the model: part of the version when set
    image_size: int = 0
    threshold: float = 0.5  # MULTILABEL_THRESHOLD: part of a multi-label project's version when set


class Versioning:
    def __init__(self, identity: Identity, strategy_of: Callable[[str | None], tuple[str, dict]] | None) -> None:
        """``strategy_of``: a project's chosen strategy spec -> (name, params); None: everyone uses
        the identity's."""
        self.identity, self.strategy_of = identity, strategy_of

    def strategy_name(self, state: ProjectState) -> tuple[str, dict]:
        if state.strategy is None or self.strategy_of is None:
            return self.identity.strategy, self.identity.strategy_params
        return self.strategy_of(state.strategy)

    def version_of(self, state: ProjectState) -> str:
        i = self.identity
        strategy, params = self.strategy_name(state)
        parts = [i.backbone, i.weights, i.seed, strategy, params, state.config.fingerprint, state.checkpoint or ""]
        if i.freeze != "default" or i.image_size:  # versions made with the defaults keep their names
            parts += [i.freeze, i.image_size]
        if state.config.groups and i.threshold != 0.5:
            parts += [i.threshold]
        ident = json.dumps(parts, sort_keys=True, default=str)
        return f"{i.backbone}-{strategy}-t{state.round}-{hashlib.sha1(ident.encode()).hexdigest()[:6]}"

    def adopt_config(self, state: ProjectState, config: ClassificationConfig) -> bool:
        """Adopt a (re-read) label config; True if it changed. A grown label set grows the head."""
        with state.lock:
            changed = state.config != config
            if changed:
                if state.model is not None:
                    state.model.set_labels(config.labels, config.layout)
                state.config = config
            version = self.version_of(state)
            if version != state.version:
                state.version = version
                state.pool.forget_values()
        return changed

    def adopt_strategy(self, state: ProjectState, spec: str | None) -> bool:
        """Adopt a project's strategy choice (None: STRATEGY); True if it changed. The model is kept;
        the version changes, so the pool is re-scored and published with the new strategy."""
        with state.lock:
            if spec == state.strategy:
                return False
            state.strategy, state.pool = spec, PoolState(labeled_trunk=state.pool.labeled_trunk, stats=state.pool.stats)
            state.version = self.version_of(state)
        return True

    def checkpoint_meta(self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict) -> dict:
        """What a checkpoint of ``model`` records besides its weights (its metrics and id are added by the caller)."""
        i = self.identity
        strategy, params = self.strategy_name(state)
        return {
            "round": round_,
            "labels": model.labels,
            "active": model.active,
            "labels_used": labels_used,
            "config": state.config.to_dict(),
            "backbone": i.backbone,
            "weights": i.weights,
            "preprocess": model.preprocess.to_dict(),
            "strategy": strategy,
            "strategy_params": params,
            "strategy_spec": state.strategy,
            "freeze": i.freeze,
            "image_size": i.image_size,
        }
