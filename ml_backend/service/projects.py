"""The project registry: which projects this backend serves, their label configs, served model,
round and versions. The only writer of :class:`ProjectState`'s identity fields; what scoring keeps
per project (:class:`PoolState`) belongs to the scorer."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.errors import BadRequest, UnknownProject
from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.ls_client import TaskIndex
from ml_backend.service.store import Store

log = logging.getLogger(__name__)

_PROJECT_KEY = re.compile(r"^([0-9]{1,18})(?:\.[0-9A-Za-z_.:+-]{0,64})?$")


def project_key(project: Any) -> str:
    """Label Studio sends ``"<id>.<created_at>"`` in /setup and /predict, ``{"id": ...}`` in
    webhooks; tasks carry the bare id. The key is the integer id: anything else (a path, a name) is
    refused, because the key names a folder under MODEL_DIR."""
    if isinstance(project, dict):
        project = project.get("id")
    if isinstance(project, bool):
        project = None
    if isinstance(project, int):
        project = str(project)
    if project is None or (isinstance(project, str) and not project.strip()):
        raise BadRequest("missing 'project'")
    match = _PROJECT_KEY.match(project.strip()) if isinstance(project, str) else None
    if match is None:
        shown = project if isinstance(project, str) else type(project).__name__
        raise BadRequest(
            f"invalid 'project' {str(shown)[:80]!r}: expected a Label Studio project id "
            "(an integer, optionally followed by '.<created_at>')"
        )
    return str(int(match.group(1)))


@dataclass
class PoolState:
    """What scoring keeps per project; written only by the scorer (``scorer.py``)."""

    acquisitions: dict[str, float] = field(default_factory=dict)  # task id -> value, served version
    labeled_trunk: list = field(default_factory=list)  # trunk activations of the last round's labels
    strategy_state: dict = field(default_factory=dict)  # what a strategy computes once (ADMA's landmarks)
    strategy_info: dict = field(default_factory=dict)  # what the strategy reported at the last publish
    strategy_saved: bool = False  # strategy_state's persistent part is on disk
    scored_version: str | None = None  # the version whose whole pool was scored last (what strategies kept)
    stats: dict[str, float] = field(
        default_factory=lambda: {
            "predict_requests": 0,
            "tasks_predicted": 0,
            "image_failures": 0,
            "predict_seconds": 0.0,
        }
    )


@dataclass
class ProjectState:
    key: str
    config: ClassificationConfig
    round: int = 0  # completed fine-tuning rounds t (ADMA's trade-off needs it; persisted)
    hostname: str = ""  # from /setup, used when LABEL_STUDIO_URL is not set
    access_token: str = ""  # from /setup (the creator's legacy token); only ever sent to `hostname`
    model: AdaptedModel | None = None
    labels_used: dict[str, str] = field(default_factory=dict)  # task id -> label of the last round
    version: str = ""
    published_version: str | None = None  # the served version, once Label Studio has it (None: not yet)
    queue_version: str | None = None  # the last version published: what Label Studio's queue follows now
    checkpoint: str | None = None  # id of the served version's checkpoint
    strategy: str | None = None  # the strategy spec this project chose (None: the backend's STRATEGY)
    seq: int = 0  # the served checkpoint's number in the project's sequence (0: none yet)
    refreshed: float = 0.0  # when MODEL_DIR was last checked for a newer version (time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)
    pool: PoolState = field(default_factory=PoolState)
    listing: TaskIndex = field(default_factory=TaskIndex)  # the tasks as last listed (ProjectAPI.tasks)


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


QUEUE_FILE = "queue.json"  # the version Label Studio's queue follows (written at each switch)


def _seq_of(meta: dict) -> int:
    seq = meta.get("seq")
    return seq if isinstance(seq, int) else 0


def other_backbone(key: str, meta: dict, identity: "Identity", root) -> str | None:
    """The warning for a checkpoint trained with another backbone or weights than this backend's."""
    trained = (meta.get("backbone"), meta.get("weights"))
    if trained == (identity.backbone, identity.weights):
        return None
    return (
        f"project {key}: its checkpoint {meta.get('path')} was trained with BACKBONE={trained[0]} WEIGHTS={trained[1]}, "
        f"this backend runs BACKBONE={identity.backbone} WEIGHTS={identity.weights}; set those to continue it. "
        f"The project starts again from t=0 with a new model (the old checkpoints stay in {root})"
    )


class _SharedModelDir:
    """What a process sees of the others sharing MODEL_DIR (a part of :class:`Projects`): projects
    they set up, versions they trained or published, registrations they changed."""

    def _model_of(self, meta: dict, state_dict: dict) -> AdaptedModel:
        """The trained model a checkpoint holds (its meta and weights)."""
        model = AdaptedModel(
            self.base, meta["labels"], self.device, self.identity.seed, threshold=self.identity.threshold
        )
        model.load_target_state(state_dict, meta["labels"], meta["active"])
        config = ClassificationConfig.from_dict(meta["config"])
        model.set_labels(config.labels, config.layout)
        return model

    def lookup(self, key: str) -> ProjectState | None:
        """The project's state; one that another process set up (its registration or checkpoints
        are in MODEL_DIR) is restored from there on first use. None: not set up anywhere."""
        state = self._states.get(key)
        if state is not None or key not in self.store.project_keys():
            return state
        with self._lock:
            if key in self._states:
                return self._states[key]
            state = self._restore(key)
        if state is not None:
            log.info("project %s: set up by another process; restored from %s", key, self.store.root)
            if self.on_restore is not None:
                self.on_restore(state)
        return state

    def refresh(self, state: ProjectState, every_s: float = 2.0) -> bool:
        """Serve what another process sharing MODEL_DIR made since (at most every ``every_s``
        seconds; 0: now): a newer version (higher sequence number), its publication, and the
        project's registration (label config, chosen strategy). True when the served version changed."""
        now = time.monotonic()
        if every_s and now - state.refreshed < every_s:
            return False
        state.refreshed = now
        registered, published, chosen = read_registration(self.store, state.key, self.strategy_of)
        if registered is not None and chosen != state.strategy:
            self.set_strategy(state, chosen, save=False)
        before = state.version
        versions = self.store.list_versions(state.key)
        newest = versions[-1] if versions else None
        if (
            newest is not None
            and _seq_of(newest) > state.seq
            and not other_backbone(state.key, newest, self.identity, self.store.root)
        ):
            try:
                model = self._model_of(newest, self.store.load_weights(newest))
            except Exception as exc:  # removed by a prune meanwhile, or unreadable: the next check retries
                log.warning("project %s: cannot load %s saved by another process (%s)", state.key, newest["path"], exc)
                state.refreshed = 0.0
            else:
                with state.lock:
                    state.model, state.round = model, newest["round"]
                    state.labels_used = dict(newest.get("labels_used") or {})
                    state.checkpoint, state.seq = newest.get("checkpoint_id"), _seq_of(newest)
                    state.version = self.version_of(state)
                    state.published_version = None
                    state.pool = PoolState(
                        strategy_state=state.pool.strategy_state,
                        stats=state.pool.stats,
                        strategy_saved=state.pool.strategy_saved,
                    )
                log.info(
                    "project %s: serving %s (round t=%d), saved by another process",
                    state.key,
                    state.version,
                    state.round,
                )
        if registered is not None and registered != state.config:
            self.update_config(state, registered)
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

    def mark_switched(self, state: ProjectState, version: str) -> None:
        """Label Studio's project follows ``version`` now (its queue serves from it), although the
        rest of its predictions may still be on their way."""
        with state.lock:
            if state.version != version:
                return
            state.queue_version = version
        self._save_queue(state.key, version)

    def _save_queue(self, key: str, version: str) -> None:
        """The version Label Studio's queue follows, for every process's /status (``refresh``)."""
        if self.persist:
            self.store.write_json(key, QUEUE_FILE, {"version": version}, durable=False)

    def mark_published(self, state: ProjectState, version: str) -> None:
        with state.lock:
            if state.version != version:
                return
            state.published_version = state.queue_version = version
        self._save_queue(state.key, version)
        self.save_registration(state)
        self.store.mark_published(state.key, version, state.checkpoint)


class Projects(_SharedModelDir, Mapping):
    """key -> :class:`ProjectState`, restored from the store at start."""

    def __init__(
        self,
        store: Store,
        base: LoadedBackbone,
        identity: Identity,
        device: torch.device,
        keep_versions: int = 3,
        persist: bool = True,
        strategy_of: Callable[[str | None], tuple[str, dict]] | None = None,
    ) -> None:
        self.store, self.base, self.identity, self.device = store, base, identity, device
        # a project's chosen strategy spec -> (name, params); None: everyone uses the identity's
        self.strategy_of = strategy_of
        self.keep_versions, self.persist = keep_versions, persist
        self.on_restore: Callable[[ProjectState], None] | None = None  # a project restored on first use
        self._states: dict[str, ProjectState] = {}
        self._lock = threading.Lock()

    # Mapping
    def __getitem__(self, key: str) -> ProjectState:
        return self._states[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def __len__(self) -> int:
        return len(self._states)

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

    # ------------------------------------------------------------------ restore
    def restore_all(self) -> list[ProjectState]:
        restored = []
        for key in self.store.project_keys():
            try:
                state = self._restore(key)
            except Exception as exc:  # one broken project must not stop the others
                log.error("project %s: cannot restore it: %s", key, exc)
                continue
            if state is not None:
                restored.append(state)
        return restored

    def _restore(self, key: str) -> ProjectState | None:
        """A project as this backend left it: its newest checkpoint (by sequence), or, before its
        first round, its registration, so that a restarted worker process never forgets a project
        and never starts its rounds again from t=0."""
        registered, published, chosen = read_registration(self.store, key, self.strategy_of)
        found = self.store.load_latest(key)
        meta, state_dict = found if found is not None else (None, None)
        if meta is not None and (warning := other_backbone(key, meta, self.identity, self.store.root)):
            log.warning(warning)  # e.g. an upgrade changed the default BACKBONE: keep the files, start afresh
            registered, published, meta = registered or ClassificationConfig.from_dict(meta["config"]), None, None
        if meta is None:
            if registered is None:
                return None
            state = ProjectState(key, registered, strategy=chosen)
            state.version = self.version_of(state)
            state.published_version = state.version if published == state.version else None
            state.queue_version = published
            self._states[key] = state
            log.info("project %s: restored its registration (no round yet): %s", key, state.version)
            return state
        model = self._model_of(meta, state_dict)
        state = ProjectState(
            key,
            ClassificationConfig.from_dict(meta["config"]),
            round=meta["round"],
            model=model,
            labels_used=dict(meta.get("labels_used") or {}),
            checkpoint=meta.get("checkpoint_id"),
            strategy=chosen,
            seq=_seq_of(meta),
            refreshed=time.monotonic(),
        )
        state.version = self.version_of(state)
        if meta.get("published_version") == state.version:
            state.published_version = state.version
        state.queue_version = published or meta.get("published_version")
        if registered is not None:  # the label config may have changed after that round
            self.update_config(state, registered)
        self._states[key] = state
        log.info(
            "project %s: restored %s (round t=%d, %d labels) from %s",
            key,
            state.version,
            state.round,
            len(state.labels_used),
            meta["path"],
        )
        return state

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
        if self.persist:
            self.store.write_registration(state.key, state.config.to_dict(), state.published_version, state.strategy)

    def update_config(self, state: ProjectState, config: ClassificationConfig) -> bool:
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
                state.pool.acquisitions = {}  # values of another version
        return changed

    def set_strategy(self, state: ProjectState, spec: str | None, save: bool = True) -> bool:
        """Adopt a project's strategy choice (None: STRATEGY); True if it changed. The model is kept;
        the version changes, so the pool is re-scored and published with the new strategy."""
        with state.lock:
            if spec == state.strategy:
                return False
            state.strategy, state.pool = spec, PoolState(labeled_trunk=state.pool.labeled_trunk, stats=state.pool.stats)
            state.version = self.version_of(state)
        if save:
            self.save_registration(state)
        log.info("project %s: strategy %s; version %s", state.key, spec or "STRATEGY (the default)", state.version)
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
                state.model = AdaptedModel(
                    self.base,
                    state.config.labels,
                    self.device,
                    self.identity.seed,
                    layout=state.config.layout,
                    threshold=self.identity.threshold,
                )
            return state.model

    # ------------------------------------------------------------------ versions
    def save_version(
        self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict, metrics: dict
    ) -> tuple[str, str]:
        """Checkpoint a trained model as the next version; returns (version, checkpoint id). Not
        served yet: :meth:`serve` switches to it."""
        probe = ProjectState(
            state.key,
            state.config,
            round=round_,
            checkpoint=f"{state.key}/{round_}/{time.time_ns()}",
            strategy=state.strategy,
        )
        version = self.version_of(probe)
        i = self.identity
        strategy, params = self.strategy_name(state)
        meta = {
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
            state.pool.acquisitions = {}
            state.published_version = None
            return state.version

    def versions(self, key: str | None = None) -> list[str]:
        if key is None:
            return sorted({s.version for s in self._states.values()})
        state = self._states.get(key)
        saved = [m["version"] for m in self.store.list_versions(key)]
        return list(dict.fromkeys(saved + ([state.version] if state else [])))
