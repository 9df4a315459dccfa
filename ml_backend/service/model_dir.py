"""What one process sees of the others sharing MODEL_DIR (``WORKERS>1``, or replicas): the projects
they set up, the versions they trained or published, the registrations they changed.
:class:`SharedModelDir` loads a project as the files left it, brings a served project up to date
with them (``refresh``), and writes the marks the others read (registration, switched and
published versions)."""

from __future__ import annotations

import logging
import time

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.project_state import PoolState, ProjectState
from ml_backend.service.store import Store
from ml_backend.service.versioning import Identity, Versioning

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.json"  # the version Label Studio's queue follows (written at each switch)


def read_registration(
    store: Store, key: str, strategy_of=None
) -> tuple[ClassificationConfig | None, str | None, str | None]:
    """(config, published version, chosen strategy) of a project's registration; Nones when absent
    or damaged. A chosen strategy that ``strategy_of`` refuses now is dropped (with a warning)."""
    data = store.read_registration(key)
    try:
        if not data:
            return None, None, None
        strategy = data.get("strategy")
        if strategy is not None and strategy_of is not None:
            try:
                strategy_of(strategy)
            except Exception as exc:  # e.g. a strategy this backbone cannot serve any more
                log.warning(
                    "project %s: its chosen strategy %r cannot be used (%s); using STRATEGY", key, strategy, exc
                )
                strategy = None
        return ClassificationConfig.from_dict(data["config"]), data.get("published_version"), strategy
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("project %s: ignoring a damaged registration (%s)", key, exc)
        return None, None, None


def _seq_of(meta: dict) -> int:
    seq = meta.get("seq")
    return seq if isinstance(seq, int) else 0


def other_backbone(key: str, meta: dict, identity: Identity, root) -> str | None:
    """The warning for a checkpoint trained with another backbone or weights than this backend's."""
    trained = (meta.get("backbone"), meta.get("weights"))
    if trained == (identity.backbone, identity.weights):
        return None
    return (
        f"project {key}: its checkpoint {meta.get('path')} was trained with "
        f"BACKBONE={trained[0]} WEIGHTS={trained[1]}, "
        f"this backend runs BACKBONE={identity.backbone} WEIGHTS={identity.weights}; set those to continue it. "
        f"The project starts again from t=0 with a new model (the old checkpoints stay in {root})"
    )


def log_strategy(state: ProjectState, spec: str | None) -> None:
    log.info("project %s: strategy %s; version %s", state.key, spec or "STRATEGY (the default)", state.version)


class Models:
    """A project's model: a new one on the backbone, or the one a checkpoint holds."""

    def __init__(self, base: LoadedBackbone, device: torch.device, seed: int, threshold: float) -> None:
        self.base, self.device, self.seed, self.threshold = base, device, seed, threshold

    def new(self, config: ClassificationConfig) -> AdaptedModel:
        return AdaptedModel(
            self.base, config.labels, self.device, self.seed, layout=config.layout, threshold=self.threshold
        )

    def trained(self, meta: dict, state_dict: dict) -> AdaptedModel:
        """The trained model a checkpoint holds (its meta and weights)."""
        model = AdaptedModel(self.base, meta["labels"], self.device, self.seed, threshold=self.threshold)
        model.load_target_state(state_dict, meta["labels"], meta["active"])
        config = ClassificationConfig.from_dict(meta["config"])
        model.set_labels(config.labels, config.layout)
        return model


class SharedModelDir:
    def __init__(self, store: Store, versioning: Versioning, models: Models, persist: bool = True) -> None:
        """``persist``: whether registrations and queue marks are written (a configured Label Studio
        connection); checkpoints are written either way."""
        self.store, self.versioning, self.models, self.persist = store, versioning, models, persist

    def registration(self, key: str) -> tuple[ClassificationConfig | None, str | None, str | None]:
        return read_registration(self.store, key, self.versioning.strategy_of)

    def load(self, key: str) -> ProjectState | None:
        """A project as the files leave it: its newest checkpoint (by sequence), or, before its
        first round, its registration, so that a restarted worker process never forgets a project
        and never starts its rounds again from t=0. None: nothing of it on disk."""
        identity, version_of = self.versioning.identity, self.versioning.version_of
        registered, published, chosen = self.registration(key)
        found = self.store.load_latest(key)
        meta, state_dict = found if found is not None else (None, None)
        if meta is not None and (warning := other_backbone(key, meta, identity, self.store.root)):
            log.warning(warning)  # e.g. an upgrade changed the default BACKBONE: keep the files, start afresh
            registered, published, meta = registered or ClassificationConfig.from_dict(meta["config"]), None, None
        if meta is None:
            if registered is None:
                return None
            state = ProjectState(key, registered, strategy=chosen)
            state.version = version_of(state)
            state.published_version = state.version if published == state.version else None
            state.queue_version = published
            log.info("project %s: restored its registration (no round yet): %s", key, state.version)
            return state
        state = ProjectState(
            key,
            ClassificationConfig.from_dict(meta["config"]),
            round=meta["round"],
            model=self.models.trained(meta, state_dict),
            labels_used=dict(meta.get("labels_used") or {}),
            checkpoint=meta.get("checkpoint_id"),
            strategy=chosen,
            seq=_seq_of(meta),
            refreshed=time.monotonic(),
        )
        state.version = version_of(state)
        if meta.get("published_version") == state.version:
            state.published_version = state.version
        state.queue_version = published or meta.get("published_version")
        if registered is not None:  # the label config may have changed after that round
            self.versioning.adopt_config(state, registered)
        log.info(
            "project %s: restored %s (round t=%d, %d labels) from %s",
            key,
            state.version,
            state.round,
            len(state.labels_used),
            meta["path"],
        )
        return state

    def refresh(self, state: ProjectState, every_s: float = 2.0) -> bool:
        """Serve what another process sharing MODEL_DIR made since (at most every ``every_s``
        seconds; 0: now): a newer version (higher sequence number), its publication, and the
        project's registration (label config, chosen strategy). True when the served version changed."""
        now = time.monotonic()
        if every_s and now - state.refreshed < every_s:
            return False
        state.refreshed = now
        registered, published, chosen = self.registration(state.key)
        if registered is not None and chosen != state.strategy and self.versioning.adopt_strategy(state, chosen):
            log_strategy(state, chosen)
        before = state.version
        versions = self.store.list_versions(state.key)
        newest = versions[-1] if versions else None
        if newest is not None and _seq_of(newest) > state.seq:
            self._serve_newer(state, newest)
        if registered is not None and registered != state.config:
            self.versioning.adopt_config(state, registered)
        queue = (self.store.read_json(state.key, QUEUE_FILE) or {}).get("version") if self.persist else None
        if queue or published:  # what Label Studio's queue follows, whichever process moved it there
            state.queue_version = queue or published
        if (
            newest is not None
            and state.published_version != state.version
            and newest.get("checkpoint_id") == state.checkpoint
            and newest.get("published_version") == state.version
        ):
            state.published_version = state.queue_version = state.version  # another process published it
        if newest is None and published is not None and published == state.version:
            state.published_version = state.queue_version = published  # version 0, published by another process
        return state.version != before

    def _serve_newer(self, state: ProjectState, newest: dict) -> None:
        """Serve ``newest``, a version another process saved (unless this backend cannot continue it)."""
        if other_backbone(state.key, newest, self.versioning.identity, self.store.root):
            return
        try:
            model = self.models.trained(newest, self.store.load_weights(newest))
        except Exception as exc:  # removed by a prune meanwhile, or unreadable: the next check retries
            log.warning("project %s: cannot load %s saved by another process (%s)", state.key, newest["path"], exc)
            state.refreshed = 0.0
            return
        with state.lock:
            state.model, state.round = model, newest["round"]
            state.labels_used = dict(newest.get("labels_used") or {})
            state.checkpoint, state.seq = newest.get("checkpoint_id"), _seq_of(newest)
            state.version = self.versioning.version_of(state)
            state.published_version = None
            state.pool = PoolState(
                strategy_state=state.pool.strategy_state,
                stats=state.pool.stats,
                strategy_saved=state.pool.strategy_saved,
            )
        log.info("project %s: serving %s (round t=%d), saved by another process", state.key, state.version, state.round)

    # ------------------------------------------------------------------ what the others read
    def save_registration(self, state: ProjectState) -> None:
        if self.persist:
            self.store.write_registration(state.key, state.config.to_dict(), state.published_version, state.strategy)

    def _save_queue(self, key: str, version: str) -> None:
        """The version Label Studio's queue follows, for every process's /status (``refresh``)."""
        if self.persist:
            self.store.write_json(key, QUEUE_FILE, {"version": version}, durable=False)

    def mark_switched(self, state: ProjectState, version: str) -> None:
        """Label Studio's project follows ``version`` now (its queue serves from it), although the
        rest of its predictions may still be on their way."""
        with state.lock:
            if state.version != version:
                return
            state.queue_version = version
        self._save_queue(state.key, version)

    def mark_published(self, state: ProjectState, version: str) -> None:
        """Record that Label Studio has ``version`` (in memory, then on disk). The disk records are
        bookkeeping for other processes and restarts: when they cannot be written (MODEL_DIR full)
        the version still serves, nothing is retrained, and :meth:`write_pending_mark` writes them
        before the next job (``state.unwritten_mark`` names it meanwhile)."""
        with state.lock:
            if state.version != version:
                return
            state.published_version = state.queue_version = version
        self.write_pending_mark(state, version)

    def write_pending_mark(self, state: ProjectState, version: str | None = None) -> None:
        """Write the published mark of ``version`` (default: the one left pending), if it is still the
        served version; when MODEL_DIR cannot take it yet, it stays pending in ``state.unwritten_mark``."""
        version = version or state.unwritten_mark
        if version is None or state.version != version:
            state.unwritten_mark = None
            return
        try:
            self._save_queue(state.key, version)
            self.save_registration(state)
            self.store.mark_published(state.key, version, state.checkpoint)
        except OSError as exc:
            if state.unwritten_mark != version:
                log.warning(
                    "project %s: %s is published, but MODEL_DIR cannot record it yet (%s); the record is "
                    "written before the next job",
                    state.key,
                    version,
                    exc,
                )
            state.unwritten_mark = version
            return
        state.unwritten_mark = None
