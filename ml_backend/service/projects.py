"""The project registry: which projects this backend serves, their label configs, served model,
round and versions. With its collaborators (``versioning.py``: what names a version;
``model_dir.py``: what the processes sharing MODEL_DIR see of each other) the only writer of
:class:`ProjectState`'s identity fields; what scoring keeps per project (:class:`PoolState`)
belongs to the scorer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Callable, Iterator

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.errors import UnknownProject
from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.model_dir import Models, SharedModelDir, log_strategy
from ml_backend.service.project_state import PoolState, ProjectState, project_key
from ml_backend.service.store import Store
from ml_backend.service.strategy_states import StrategyStates
from ml_backend.service.versioning import Identity, Versioning

# what the other modules have always imported from here
__all__ = ["Identity", "PoolState", "ProjectState", "Projects", "project_key"]

log = logging.getLogger(__name__)


class Projects(Mapping):
    """key -> :class:`ProjectState`, restored from the store at start."""

    def __init__(
        self,
        store: Store,
        base: LoadedBackbone,
        identity: Identity,
        device: torch.device,
        strategy_states: StrategyStates,
        keep_versions: int = 3,
        persist: bool = True,
        strategy_of: Callable[[str | None], tuple[str, dict]] | None = None,
    ) -> None:
        """``strategy_states``: puts back the strategy's state of a project loaded from MODEL_DIR;
        ``strategy_of``: a project's chosen strategy spec -> (name, params) (None: everyone uses
        the identity's); ``persist``: whether registrations are written (see :class:`SharedModelDir`)."""
        self.store, self.identity, self.keep_versions = store, identity, keep_versions
        self.versioning = Versioning(identity, strategy_of)
        self.models = Models(base, device, identity.seed, identity.threshold)
        self.shared = SharedModelDir(store, self.versioning, self.models, persist)
        self.strategy_states = strategy_states
        self._states: dict[str, ProjectState] = {}
        self._lock = threading.Lock()

    @property
    def persist(self) -> bool:
        return self.shared.persist

    @persist.setter
    def persist(self, value: bool) -> None:
        self.shared.persist = value

    # Mapping
    def __getitem__(self, key: str) -> ProjectState:
        return self._states[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def __len__(self) -> int:
        return len(self._states)

    def strategy_name(self, state: ProjectState) -> tuple[str, dict]:
        return self.versioning.strategy_name(state)

    def version_of(self, state: ProjectState) -> str:
        return self.versioning.version_of(state)

    # ------------------------------------------------------------------ restore
    def restore_all(self) -> list[ProjectState]:
        restored = []
        for key in self.store.project_keys():
            try:
                state = self.shared.load(key)
            except Exception as exc:  # one broken project must not stop the others
                log.error("project %s: cannot restore it: %s", key, exc)
                continue
            if state is not None:
                self._states[key] = state
                restored.append(state)
        return restored

    def lookup(self, key: str) -> ProjectState | None:
        """The project's state; one that another process set up (its registration or checkpoints
        are in MODEL_DIR) is restored from there on first use, its strategy's state with it.
        None: not set up anywhere."""
        state = self._states.get(key)
        if state is not None or key not in self.store.project_keys():
            return state
        with self._lock:
            if key in self._states:
                return self._states[key]
            state = self.shared.load(key)
            if state is not None:
                self._states[key] = state
        if state is not None:
            log.info("project %s: set up by another process; restored from %s", key, self.store.root)
            self.strategy_states.restore(state)
        return state

    # ------------------------------------------------------------------ what the other processes made
    def refresh(self, state: ProjectState, every_s: float = 2.0) -> bool:
        """Serve what another process sharing MODEL_DIR made since (see :meth:`SharedModelDir.refresh`)."""
        return self.shared.refresh(state, every_s)

    def mark_switched(self, state: ProjectState, version: str) -> None:
        """Label Studio's project follows ``version`` now (its queue serves from it)."""
        self.shared.mark_switched(state, version)

    def mark_published(self, state: ProjectState, version: str) -> None:
        self.shared.mark_published(state, version)

    def write_pending_mark(self, state: ProjectState) -> None:
        self.shared.write_pending_mark(state)

    # ------------------------------------------------------------------ registration
    def register(self, key: str, config: ClassificationConfig) -> tuple[ProjectState, bool]:
        """The project's state, created (True) if new; an existing one adopts ``config``."""
        self.lookup(key)  # another process may have set it up already: adopt it from MODEL_DIR
        with self._lock:
            state = self._states.get(key)
            created = state is None
            if created:
                state = self._states[key] = ProjectState(key, config)
        changed = self.update_config(state, config)
        if changed or not self.store.has_registration(key):
            self.save_registration(state)
        return state, created

    def save_registration(self, state: ProjectState) -> None:
        self.shared.save_registration(state)

    def update_config(self, state: ProjectState, config: ClassificationConfig) -> bool:
        """Adopt a (re-read) label config; True if it changed. A grown label set grows the head."""
        return self.versioning.adopt_config(state, config)

    def set_strategy(self, state: ProjectState, spec: str | None, save: bool = True) -> bool:
        """Adopt a project's strategy choice (None: STRATEGY); True if it changed. The model is kept;
        the version changes, so the pool is re-scored and published with the new strategy."""
        if not self.versioning.adopt_strategy(state, spec):
            return False
        if save:
            self.save_registration(state)
        log_strategy(state, spec)
        return True

    def set_origin(self, state: ProjectState, hostname: str, access_token: str) -> None:
        """Where /setup says the project's images are; a token received with one host never goes to another."""
        with state.lock:
            if hostname != state.hostname:
                state.hostname, state.access_token = hostname, access_token
            elif access_token:
                state.access_token = access_token

    def get_state(self, key: str) -> ProjectState:
        state = self.lookup(key)
        if state is None:
            raise UnknownProject(
                f"project {key} is not set up: send its 'label_config' with the request or call /setup first"
            )
        return state

    def model(self, state: ProjectState) -> AdaptedModel:
        with state.lock:
            if state.model is None:
                state.model = self.models.new(state.config)
            return state.model

    # ------------------------------------------------------------------ versions
    def save_version(
        self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict, metrics: dict
    ) -> tuple[str, str, int]:
        """Checkpoint a trained model as the next version; returns (version, checkpoint id, its
        sequence number). Not served yet: :meth:`serve` switches to it."""
        probe = ProjectState(
            state.key,
            state.config,
            round=round_,
            checkpoint=f"{state.key}/{round_}/{time.time_ns()}",
            strategy=state.strategy,
        )
        version = self.version_of(probe)
        meta = {
            **self.versioning.checkpoint_meta(state, model, round_, labels_used),
            "metrics": metrics,
            "checkpoint_id": probe.checkpoint,
        }
        seq = self.store.save_checkpoint(state.key, version, model.target.state_dict(), meta)
        removed = self.store.prune(state.key, self.keep_versions)
        if removed:
            log.info("project %s: pruned old versions %s", state.key, removed)
        return version, probe.checkpoint, seq

    def serve(
        self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict, checkpoint: str, seq: int = 0
    ) -> str:
        """Switch the served model atomically (under the project lock)."""
        with state.lock:
            model.set_labels(state.config.labels, state.config.layout)  # the config may have changed meanwhile
            state.model, state.round, state.labels_used = model, round_, labels_used
            state.checkpoint, state.seq = checkpoint, seq
            state.version = self.version_of(state)
            state.pool.forget_values()
            state.published_version = None
            return state.version

    def versions(self, key: str | None = None) -> list[str]:
        if key is None:
            return sorted({s.version for s in self._states.values()})
        state = self._states.get(key)
        saved = [m["version"] for m in self.store.list_versions(key)]
        return list(dict.fromkeys(saved + ([state.version] if state else [])))
