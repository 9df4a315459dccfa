"""What a strategy computed once from a project's pool (ADMA's landmarks), kept beside the
project's checkpoints (``MODEL_DIR/projects/<id>/strategy_state.pt``) so that a restarted process,
or another one sharing MODEL_DIR, scores the project as before. The scorer saves it after a
full-pool scoring; the project registry puts it back when it loads a project from disk."""

from __future__ import annotations

import hashlib
import json
import logging

from ml_backend.core.backbones import LoadedBackbone
from ml_backend.service.project_state import ProjectState
from ml_backend.service.store import Store
from strategies import Strategy

log = logging.getLogger(__name__)


def state_ident(base: LoadedBackbone, strategy: Strategy) -> str:
    """Which backbone and strategy a saved strategy state belongs to."""
    ident = json.dumps([base.spec.name, base.weights, strategy.name, strategy.params()], sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:12]


class StrategyStates:
    def __init__(self, store: Store, book, base: LoadedBackbone) -> None:
        """``book``: the StrategyBook (``choice.py``): each project's strategy, STRATEGY by default."""
        self.store, self.book, self.base = store, book, base

    def strategy_of(self, state: ProjectState) -> Strategy:
        return self.book.get(state.strategy)

    def save(self, state: ProjectState) -> None:
        """Keep what the strategy computed once from the pool (ADMA's landmarks) beside the
        checkpoints, once: after a restart the project scores as before."""
        if state.pool.strategy_saved:
            return
        strategy = self.strategy_of(state)
        saved = strategy.saved_state(state.pool.strategy_state)
        if saved is not None and self.store.save_strategy_state(state.key, state_ident(self.base, strategy), saved):
            state.pool.strategy_saved = True

    def restore(self, state: ProjectState) -> None:
        """Put back a project's saved strategy state (when it was saved for this backbone and strategy)."""
        strategy = self.strategy_of(state)
        saved = self.store.load_strategy_state(state.key, state_ident(self.base, strategy))
        if saved is not None and strategy.restore_state(state.pool.strategy_state, saved):
            state.pool.strategy_saved = True
            log.info("project %s: restored the strategy's state", state.key)
