"""Per-project models, scoring, checkpoints and publishing. No Flask here: the HTTP layer only
translates requests; the learning loop (``learning.py``) drives rounds in the background."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import strategies

from . import checkpoints
from .errors import BadRequest, ImageError, Unavailable, UnknownProject
from .feature_cache import FeatureCache
from .images import ImageLoader, Source
from .label_config import ClassificationConfig, parse_label_config
from .ls_client import LabelStudioConnection, ProjectAPI, api_status
from .models import AdaptedModel, LoadedBackbone, load_backbone, resolve_device
from .scoring import build_inputs, merge_parts, scoring_needs
from .queue_score import LEAST_URGENT_SCORE, acquisition_to_score
from .security import WebhookSecrets
from .settings import Settings

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
        raise BadRequest(f"invalid 'project' {str(shown)[:80]!r}: expected a Label Studio project id "
                         "(an integer, optionally followed by '.<created_at>')")
    return str(int(match.group(1)))


@dataclass
class ProjectState:
    key: str
    config: ClassificationConfig
    round: int = 0  # completed fine-tuning rounds t (ADMA's trade-off needs it; persisted)
    hostname: str = ""  # from /setup, used when LABEL_STUDIO_URL is not set
    access_token: str = ""  # from /setup (the creator's legacy token); only ever sent to `hostname`
    model: AdaptedModel | None = None
    labels_used: dict[str, str] = field(default_factory=dict)  # task id -> label of the last round
    acquisitions: dict[str, float] = field(default_factory=dict)  # task id -> value, this version
    labeled_trunk: list = field(default_factory=list)  # trunk activations of the last round's labels
    strategy_state: dict = field(default_factory=dict)  # what a strategy computes once (ADMA's landmarks)
    strategy_info: dict = field(default_factory=dict)  # what the strategy reported at the last publish
    strategy_saved: bool = False  # strategy_state's persistent part is on disk (strategy_state.pt)
    review: list = field(default_factory=list)  # suspicious annotations of the last round
    dropped: list = field(default_factory=list)  # tasks left out by TRAIN_DROP_HARMFUL in the last round
    version: str = ""
    published_version: str | None = None
    checkpoint: str | None = None  # path of the served version's checkpoint
    lock: threading.RLock = field(default_factory=threading.RLock)
    stats: dict[str, float] = field(default_factory=lambda: {
        "predict_requests": 0, "tasks_predicted": 0, "image_failures": 0, "predict_seconds": 0.0,
    })


class ModelService:
    """Owns the pretrained backbone (loaded once), the strategy and every project's model."""

    def __init__(self, settings: Settings, secrets=None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.strategy = strategies.from_spec(settings.strategy, seed=settings.seed)
        self.base: LoadedBackbone = load_backbone(settings.backbone, settings.weights, settings.seed)
        self._prepare_strategy()
        self.connection = LabelStudioConnection(settings.label_studio_url, settings.label_studio_api_key)
        self.loader = ImageLoader(
            settings.model_dir / "cache" / "images", settings.fetch_workers,
            settings.image_max_bytes, settings.image_max_pixels, settings.image_timeout_s,
        )
        fingerprint = hashlib.sha1(json.dumps([
            self.base.spec.name, self.base.weights, self.base.preprocess.to_dict(), self.base.spec.frozen,
            settings.feature_cache_dtype,
        ], sort_keys=True).encode()).hexdigest()[:12]
        self.features = FeatureCache(
            settings.model_dir / "cache" / "features", fingerprint,
            settings.feature_cache_mb * 2**20, settings.feature_cache_disk_mb * 2**20, settings.feature_cache_dtype,
        )
        self.secrets = secrets
        self.webhook_secrets = WebhookSecrets(settings.model_dir, settings.webhook_secret)
        # public: tells this backend's own /health apart from another backend's (webhook securing)
        self.instance_id = self.webhook_secrets.for_project("instance")[:16]
        self._strategy_lock = threading.Lock()
        self.projects: dict[str, ProjectState] = {}
        self._lock = threading.Lock()
        self.events: dict[str, int] = {}
        self.learner = None  # set by learning.Learner
        self._restore_all()
        log.info(
            "backend ready: backbone=%s weights=%s strategy=%r device=%s projects restored=%d",
            settings.backbone, self.base.weights, self.strategy, self.device, len(self.projects),
        )

    def _prepare_strategy(self) -> None:
        """ADMA with a reference folder (landmark mode F2): compute its landmarks once with M0 and
        cache them under MODEL_DIR; a landmark file is checked against this backbone and weights."""
        from .landmarks import check_landmark_file, landmarks_for_folder

        landmarks = getattr(self.strategy, "landmarks", None)
        if self.strategy.name != "adma" or not isinstance(landmarks, str):
            return
        path = Path(landmarks)
        if path.is_dir():
            lm = landmarks_for_folder(self.base, path, self.device, self.settings.model_dir / "cache" / "landmarks",
                                      roles=self.strategy.layers(), seed=self.settings.seed)
            self.strategy.set_landmarks(lm)
        elif path.suffix == ".pt":
            self.strategy.set_landmarks(check_landmark_file(path, self.base))

    # ----------------------------------------------------------------------------- projects
    def project_dir(self, key: str) -> Path:
        return self.settings.model_dir / "projects" / key

    def version_of(self, state: ProjectState) -> str:
        ident = json.dumps([
            self.base.spec.name, self.base.weights, self.settings.seed, self.strategy.name,
            self.strategy.params(), state.config.fingerprint, state.checkpoint or "",
        ], sort_keys=True)
        digest = hashlib.sha1(ident.encode()).hexdigest()[:6]
        return f"{self.base.spec.name}-{self.strategy.name}-t{state.round}-{digest}"

    def _restore_all(self) -> None:
        root = self.settings.model_dir / "projects"
        if not root.is_dir():
            return
        for path in sorted(root.iterdir()):
            if path.is_dir() and path.name.isdigit() and str(int(path.name)) == path.name:
                try:
                    self._restore(path.name)
                except Exception as exc:  # one broken project must not stop the others
                    log.error("project %s: cannot restore it: %s", path.name, exc)

    def _restore(self, key: str) -> ProjectState | None:
        """A project as this backend left it: its newest checkpoint (by sequence), or, before its
        first round, its registration (``project.json``), so that a restarted worker process
        never forgets a project and never starts its rounds again from t=0."""
        registered, published = self._read_registration(key)
        found = checkpoints.load_latest(self.project_dir(key))
        if found is None:
            if registered is None:
                return None
            state = ProjectState(key, registered)
            state.version = self.version_of(state)
            state.published_version = state.version if published == state.version else None
            self._load_strategy_state(state)
            self.projects[key] = state
            log.info("project %s: restored its registration (no round yet): %s", key, state.version)
            return state
        meta, state_dict = found
        config = ClassificationConfig.from_dict(meta["config"])
        model = AdaptedModel(self.base, meta["labels"], self.device, self.settings.seed)
        model.load_target_state(state_dict, meta["labels"], meta["active"])
        state = ProjectState(key, config, round=meta["round"], model=model,
                             labels_used=dict(meta.get("labels_used") or {}), checkpoint=meta.get("checkpoint_id"))
        state.version = self.version_of(state)
        if meta.get("published_version") == state.version:
            state.published_version = state.version
        if registered is not None:  # the label config may have changed after that round
            self.update_config(state, registered)
        self._load_strategy_state(state)
        self.projects[key] = state
        log.info("project %s: restored %s (round t=%d, %d labels) from %s",
                 key, state.version, state.round, len(state.labels_used), meta["path"])
        return state

    def _registration_file(self, key: str) -> Path:
        return self.project_dir(key) / "project.json"

    def _read_registration(self, key: str) -> tuple[ClassificationConfig | None, str | None]:
        """(label config, the version published before any round) from ``project.json``."""
        try:
            data = json.loads(self._registration_file(key).read_text())
            return ClassificationConfig.from_dict(data["config"]), data.get("published_version")
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("project %s: ignoring a damaged %s (%s)", key, self._registration_file(key), exc)
            return None, None

    def _register(self, state: ProjectState) -> None:
        """Persist what a restarted process needs to know about a confirmed project (never a token)."""
        try:
            checkpoints.write_json_atomic(self._registration_file(state.key), {
                "project": int(state.key), "published_version": state.published_version, "config": state.config.to_dict()})
        except OSError as exc:
            log.warning("project %s: cannot save its registration: %s", state.key, exc)

    def confirm_project(self, key: str, timeout: float = 2.5) -> dict:
        """Ask Label Studio (with this backend's own API key) whether project ``key`` exists.
        Returns the project; UnknownProject when Label Studio has no such project; a 503 error when
        Label Studio cannot be asked."""
        try:
            self.connection.token(wait=timeout)  # a PAT refresh that hangs must not hold /setup
            return ProjectAPI(self.connection, int(key)).project(timeout=timeout)
        except Exception as exc:
            status = api_status(exc)
            if status == 404:
                raise UnknownProject(f"Label Studio at LABEL_STUDIO_URL={self.connection.url} has no project {key}") from None
            raise Unavailable(
                f"cannot confirm project {key} with Label Studio at LABEL_STUDIO_URL={self.connection.url} "
                f"({'HTTP ' + str(status) if status else type(exc).__name__}); check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
            ) from None

    def setup(self, project: Any, label_config: str, hostname: str = "", access_token: str = "") -> str:
        """Register or update a project. Fast: parses the config, never builds a model here."""
        key = project_key(project)
        config = parse_label_config(label_config)
        if access_token and self.secrets is not None:
            self.secrets.add(access_token)
        if key not in self.projects and self.connection.configured:
            self.confirm_project(key)  # a project Label Studio does not confirm creates nothing
        with self._lock:
            state = self.projects.get(key)
            if state is None:  # (a project with no checkpoint yet may still have the strategy's state saved)
                state = self.projects[key] = ProjectState(key, config)
                self._load_strategy_state(state)
        changed = self.update_config(state, config)
        with state.lock:
            if hostname != state.hostname:  # a token received with one host never goes to another
                state.hostname, state.access_token = hostname, access_token
            elif access_token:
                state.access_token = access_token
        if self.connection.configured and (changed or not self._registration_file(key).is_file()):
            self._register(state)
        if self.learner is not None:
            self.learner.connected(state, publish=self.settings.publish_on_connect)
        return state.version

    def update_config(self, state: ProjectState, config: ClassificationConfig) -> bool:
        """Adopt a (re-read) label config; True if it changed. A grown label set grows the head."""
        with state.lock:
            changed = state.config != config
            if changed:
                if state.model is not None:
                    state.model.set_labels(config.labels)
                state.config = config
            version = self.version_of(state)
            if version != state.version:
                state.version, state.acquisitions = version, {}
        return changed

    def state(self, project: Any, label_config: str | None = None) -> ProjectState:
        key = project_key(project)
        if label_config:
            self.setup(key, label_config)
        state = self.projects.get(key)
        if state is None:
            raise UnknownProject(
                f"project {key} is not set up: send its 'label_config' with the request or call /setup first"
            )
        return state

    def model(self, state: ProjectState) -> AdaptedModel:
        with state.lock:
            if state.model is None:
                state.model = AdaptedModel(self.base, state.config.labels, self.device, self.settings.seed)
            return state.model

    def source(self, state: ProjectState, deadline: float | None = None) -> Source:
        """Where the project's images come from. A request (one with a ``deadline``) waits at most
        3 s for a PAT refresh, background work 60 s (see LabelStudioConnection.token)."""
        if self.connection.configured:
            connection, token_wait = self.connection, 60.0 if deadline is None else 3.0
            return Source(connection.url, lambda: connection.token(wait=token_wait))
        token = state.access_token
        return Source(state.hostname.rstrip("/"), lambda: token or None)

    # ----------------------------------------------------------------------------- scoring
    def predict(self, project: Any, tasks: Sequence[dict], label_config: str | None = None) -> list[dict]:
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects")
        state = self.state(project, label_config)
        if not tasks:
            return []
        started = time.perf_counter()
        with state.lock:
            model, version = self.model(state), state.version
        deadline = time.monotonic() + self.settings.predict_deadline_s
        results = self.score(state, tasks, model, version, deadline=deadline)
        with state.lock:
            state.stats["predict_requests"] += 1
            state.stats["tasks_predicted"] += len(tasks)
            state.stats["image_failures"] += sum(1 for r in results if not r["result"])
            state.stats["predict_seconds"] += time.perf_counter() - started
        return results

    @staticmethod
    def _reference(state: ProjectState, task: dict) -> tuple:
        data = task.get("data")
        return task.get("id"), data.get(state.config.value_key) if isinstance(data, dict) else None

    def _fingerprint(self, reference: tuple) -> str | None:
        """What a task *is* for every per-task cache (trunk activations, a strategy's per-item
        state), from its (task id, image reference); None when either is missing (nothing is cached)."""
        task_id, ref = reference
        return self.features.key(task_id, ref) if task_id is not None and isinstance(ref, str) else None

    def trunk_activations(self, state: ProjectState, model: AdaptedModel, tasks: Sequence[dict],
                          keys: Sequence[str | None] | None = None, deadline: float | None = None) -> list:
        """Per task: trunk activations (from the frozen-feature cache when present) or the
        ImageError that explains why there are none. Downloads overlap the trunk forward pass.
        ``keys``: the tasks' fingerprints when the caller has them already."""
        refs = [self._reference(state, t) for t in tasks]
        keys = list(keys) if keys is not None else [self._fingerprint(r) for r in refs]
        out: list = [None] * len(tasks)
        missing = []
        for i, key in enumerate(keys):
            z = self.features.get(key) if key else None
            if z is not None:
                out[i] = z
            else:
                missing.append(i)
        source = self.source(state, deadline)
        futures = self.loader.submit_many([refs[i] for i in missing], source, transform=model.preprocess,
                                          deadline=deadline)
        pending: list[tuple[int, torch.Tensor]] = []

        def flush():
            z = self.features.round(model.trunk(torch.stack([t for _, t in pending])))
            for (i, _), zi in zip(pending, z):
                out[i] = zi
                if keys[i]:
                    self.features.put(keys[i], zi)
            pending.clear()

        for i, future in zip(missing, futures):
            item = future.result()
            if isinstance(item, ImageError):
                out[i] = item
                continue
            pending.append((i, item))
            if len(pending) == self.settings.batch_size:
                flush()
        if pending:
            flush()
        return out

    def score(self, state: ProjectState, tasks: Sequence[dict], model: AdaptedModel, version: str,
              reset_pool: bool = False, progress: Callable[[int], None] | None = None,
              deadline: float | None = None) -> list[dict]:
        """Predictions for ``tasks`` (label + score + version), updating the project's scored pool.
        With ``reset_pool`` these tasks become the whole reference pool (a full re-scoring).
        ``deadline`` (time.monotonic()) bounds the image downloads of a request."""
        config = state.config
        results: list[dict | None] = [None] * len(tasks)
        good: list[int] = []
        parts: list[dict] = []
        diversity = reset_pool and self.settings.queue_diversity != "off"
        fingerprints = [self._fingerprint(self._reference(state, t)) for t in tasks]
        needs = scoring_needs(self.strategy, diversity, fingerprints, state.strategy_state)
        layers, bs = self.strategy.layers(), self.settings.batch_size
        chunk = max(bs, 256)
        for start in range(0, len(tasks), chunk):  # bounded memory for large pools
            part_tasks = tasks[start:start + chunk]
            activations = self.trunk_activations(state, model, part_tasks, fingerprints[start:start + chunk],
                                                 deadline=deadline)
            ok = [j for j, a in enumerate(activations) if not isinstance(a, ImageError)]
            for j, a in enumerate(activations):
                if isinstance(a, ImageError):
                    results[start + j] = {"result": [], "score": LEAST_URGENT_SCORE, "model_version": version,
                                          "error": str(a)}
            for s in range(0, len(ok), bs):
                idx = ok[s:s + bs]
                parts.append(model.forward_from_trunk(torch.stack([activations[j] for j in idx]), needs, layers))
            good.extend(start + j for j in ok)
            if progress is not None:
                progress(min(start + chunk, len(tasks)))

        keys = [str(tasks[i].get("id", f"#{i}")) for i in good]
        values = np.zeros(0)
        if good:
            merged = merge_parts(parts)

            def images() -> torch.Tensor:  # only for strategies that need test-time-augmented views
                loaded = self.loader.load_many(
                    [(tasks[i].get("id"), (tasks[i].get("data") or {}).get(config.value_key)) for i in good],
                    self.source(state, deadline), transform=model.preprocess,
                    deadline=deadline)
                bad = [str(x) for x in loaded if isinstance(x, ImageError)]
                if bad:
                    raise ImageError(f"{len(bad)} image(s) became unreadable while scoring: {bad[0]}")
                return torch.stack(loaded)

            inputs = build_inputs(self.strategy, model, merged, keys, labeled_trunk=state.labeled_trunk,
                                  images=images, round_=state.round, state=state.strategy_state,
                                  full_pool=reset_pool, fingerprints=[fingerprints[i] for i in good], batch_size=bs)
            with self._strategy_lock:  # strategies may keep per-call diagnostics
                acquisition = self.strategy(inputs)
                info = self.strategy.info()
            if diversity:
                acquisition = strategies.diverse_queue(acquisition, merged["embeddings"], self.settings.queue_diversity_top)
            values = acquisition.numpy()
            if reset_pool and info:
                state.strategy_info = info
            if reset_pool:
                self._save_strategy_state(state)
            labels = [model.active[j] for j in merged["probs"].argmax(dim=1).tolist()]

        with state.lock:
            if state.version == version:
                if reset_pool:
                    state.acquisitions = {}
                for j, (i, key) in enumerate(zip(good, keys)):
                    if "id" in tasks[i]:
                        state.acquisitions[key] = float(values[j])
                reference = np.fromiter(state.acquisitions.values(), dtype=np.float64)
            else:  # the served version moved on during this request: rank within the request
                reference = values
            if reference.size == 0:
                reference = values
        scores = acquisition_to_score(values, reference)
        for j, i in enumerate(good):
            results[i] = {
                "result": [{
                    "from_name": config.from_name, "to_name": config.to_name, "type": "choices",
                    "value": {"choices": [labels[j]]},
                }],
                "score": float(scores[j]),
                "model_version": version,
                "acquisition": float(values[j]),
                "strategy": self.strategy.name,
            }
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- versions
    def _strategy_state_file(self, state: ProjectState) -> tuple[Path, str]:
        ident = json.dumps([self.base.spec.name, self.base.weights, self.strategy.name, self.strategy.params()],
                           sort_keys=True, default=str)
        return self.project_dir(state.key) / "strategy_state.pt", hashlib.sha1(ident.encode()).hexdigest()[:12]

    def _save_strategy_state(self, state: ProjectState) -> None:
        """Write what the strategy computed once from the pool (ADMA's landmarks) beside the
        checkpoints, once, atomically: after a restart the project scores as before."""
        if state.strategy_saved:
            return
        saved = self.strategy.saved_state(state.strategy_state)
        if saved is None:
            return
        path, ident = self._strategy_state_file(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save({"ident": ident, "state": saved}, tmp)
            tmp.replace(path)
            state.strategy_saved = True
        except OSError as exc:  # the landmarks stay in memory; only a restart would recompute them
            log.warning("project %s: cannot save the strategy's state to %s: %s", state.key, path, exc)
            tmp.unlink(missing_ok=True)

    def _load_strategy_state(self, state: ProjectState) -> None:
        path, ident = self._strategy_state_file(state)
        if not path.is_file():
            return
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            ok = data.get("ident") == ident and self.strategy.restore_state(state.strategy_state, data["state"])
        except Exception as exc:  # damaged: recomputed at the next full-pool scoring
            log.warning("project %s: ignoring %s (%s); the strategy recomputes it", state.key, path, exc)
            return
        if ok:
            state.strategy_saved = True
            log.info("project %s: restored the strategy's state from %s", state.key, path)
        else:
            log.info("project %s: %s was saved for another backbone or strategy; not used", state.key, path)

    def save_version(self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict,
                     metrics: dict) -> tuple[str, str]:
        """Checkpoint a trained model as the next version; returns (version, checkpoint id).
        Not served yet: :meth:`serve` switches to it."""
        probe = ProjectState(state.key, state.config, round=round_)
        probe.checkpoint = f"{state.key}/{round_}/{time.time_ns()}"
        version = self.version_of(probe)
        meta = {
            "round": round_, "labels": model.labels, "active": model.active, "labels_used": labels_used,
            "config": state.config.to_dict(),
            "backbone": self.base.spec.name, "weights": self.base.weights, "preprocess": model.preprocess.to_dict(),
            "strategy": self.strategy.name, "strategy_params": self.strategy.params(), "metrics": metrics,
            "checkpoint_id": probe.checkpoint,
        }
        checkpoints.save(self.project_dir(state.key), version, model.target.state_dict(), meta)
        removed = checkpoints.prune(self.project_dir(state.key), self.settings.keep_versions)
        if removed:
            log.info("project %s: pruned old versions %s", state.key, removed)
        return version, probe.checkpoint

    def serve(self, state: ProjectState, model: AdaptedModel, round_: int, labels_used: dict, checkpoint: str) -> str:
        """Switch the served model atomically (under the project lock)."""
        with state.lock:
            model.set_labels(state.config.labels)  # the config may have changed during training
            state.model, state.round, state.labels_used = model, round_, labels_used
            state.checkpoint = checkpoint
            state.version = self.version_of(state)
            state.acquisitions = {}
            state.published_version = None
            return state.version

    def mark_published(self, state: ProjectState, version: str) -> None:
        with state.lock:
            if state.version != version:
                return
            state.published_version = version
        if self.connection.configured:
            self._register(state)
        for meta in checkpoints.list_versions(self.project_dir(state.key)):
            if meta.get("version") == version or meta.get("checkpoint_id") == state.checkpoint:
                path = Path(meta["path"]) / "meta.json"
                data = json.loads(path.read_text())
                data["published_version"] = version
                checkpoints.write_json_atomic(path, data)

    # ----------------------------------------------------------------------------- reporting
    def record_event(self, action: str) -> None:
        with self._lock:
            self.events[action] = self.events.get(action, 0) + 1

    def versions(self, project: Any | None = None) -> list[str]:
        if project is not None:
            key = project_key(project)
            state = self.projects.get(key)
            saved = [m["version"] for m in checkpoints.list_versions(self.project_dir(key))]
            current = [state.version] if state else []
            return list(dict.fromkeys(saved + current))
        return sorted({s.version for s in self.projects.values()})

    def metrics(self) -> dict:
        learner = self.learner
        return {
            "backbone": self.base.spec.name,
            "weights": self.base.weights,
            "strategy": self.strategy.name,
            "strategy_params": self.strategy.params(),
            "device": str(self.device),
            "events": dict(self.events),
            "feature_cache": self.features.stats(),
            "projects": {
                key: {
                    "model_version": s.version,
                    "published_version": s.published_version,
                    "round": s.round,
                    "labels": list(s.config.labels),
                    "labels_used": len(s.labels_used),
                    "model_loaded": s.model is not None,
                    "scored_pool_size": len(s.acquisitions),
                    "strategy_info": s.strategy_info,
                    "review": s.review,
                    "dropped_by_influence": s.dropped,
                    **s.stats,
                    **(learner.status(key) if learner is not None else {}),
                }
                for key, s in sorted(self.projects.items())
            },
        }

    def close(self) -> None:
        if self.learner is not None:
            self.learner.stop()
        self.loader.close()
