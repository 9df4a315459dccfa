"""Per-project models and scoring. No Flask here: the HTTP layer only translates."""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

import strategies
from strategies import Need, ScoringInputs

from .errors import BadRequest, ImageError, UnknownProject
from .images import ImageLoader, Source
from .label_config import ClassificationConfig, parse_label_config
from .ls_client import LabelStudioConnection
from .models import AdaptedModel, LoadedBackbone, load_backbone, resolve_device
from .queue_score import LEAST_URGENT_SCORE, acquisition_to_score
from .settings import Settings

log = logging.getLogger(__name__)


def project_key(project: Any) -> str:
    """Label Studio sends ``"<id>.<created_at>"`` in /setup and /predict; tasks carry the bare id."""
    text = str(project if project is not None else "").strip()
    key = text.split(".", 1)[0]
    if not key:
        raise BadRequest("missing 'project'")
    return key


@dataclass
class ProjectState:
    key: str
    config: ClassificationConfig
    round: int = 0  # completed fine-tuning rounds t
    hostname: str = ""  # from /setup, used when LABEL_STUDIO_URL is not set
    access_token: str = ""  # from /setup (the creator's legacy token)
    model: AdaptedModel | None = None
    acquisitions: dict[str, float] = field(default_factory=dict)  # task id -> value, this version
    version: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    stats: dict[str, float] = field(default_factory=lambda: {
        "predict_requests": 0, "tasks_predicted": 0, "image_failures": 0, "predict_seconds": 0.0,
    })


class ModelService:
    """Owns the pretrained backbone (loaded once), the strategy and every project's model."""

    def __init__(self, settings: Settings, secrets: "SecretRegistry | None" = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.strategy = strategies.get(settings.strategy, seed=settings.seed)
        self.base: LoadedBackbone = load_backbone(settings.backbone, settings.weights, settings.seed)
        self.connection = LabelStudioConnection(settings.label_studio_url, settings.label_studio_api_key)
        self.loader = ImageLoader(
            settings.model_dir / "cache" / "images", settings.fetch_workers,
            settings.image_max_bytes, settings.image_max_pixels, settings.image_timeout_s,
        )
        self.secrets = secrets
        self.projects: dict[str, ProjectState] = {}
        self._lock = threading.Lock()
        self.events: dict[str, int] = {}
        log.info(
            "backend ready: backbone=%s weights=%s strategy=%r device=%s",
            settings.backbone, self.base.weights, self.strategy, self.device,
        )

    # ----------------------------------------------------------------------------- projects
    def version_of(self, state: ProjectState) -> str:
        ident = json.dumps([
            self.base.spec.name, self.base.weights, self.settings.seed, self.strategy.name,
            self.strategy.params(), state.config.fingerprint,
        ], sort_keys=True)
        digest = hashlib.sha1(ident.encode()).hexdigest()[:6]
        return f"{self.base.spec.name}-{self.strategy.name}-t{state.round}-{digest}"

    def setup(self, project: Any, label_config: str, hostname: str = "", access_token: str = "") -> str:
        """Register or update a project. Fast: parses the config, never builds a model here."""
        key = project_key(project)
        config = parse_label_config(label_config)
        if access_token and self.secrets is not None:
            self.secrets.add(access_token)
        with self._lock:
            state = self.projects.get(key)
            if state is None:
                state = self.projects[key] = ProjectState(key, config)
        with state.lock:
            if state.config != config:
                if state.model is not None:
                    state.model.set_labels(config.labels)
                state.config = config
            state.hostname = hostname or state.hostname
            state.access_token = access_token or state.access_token
            version = self.version_of(state)
            if version != state.version:
                state.version, state.acquisitions = version, {}
        return state.version

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

    def _model(self, state: ProjectState) -> AdaptedModel:
        with state.lock:
            if state.model is None:
                state.model = AdaptedModel(self.base, state.config.labels, self.device, self.settings.seed)
            return state.model

    def _source(self, state: ProjectState) -> Source:
        if self.connection.configured:
            return Source(self.connection.url, self.connection.token)
        token = state.access_token
        return Source(state.hostname.rstrip("/"), lambda: token or None)

    # ----------------------------------------------------------------------------- scoring
    def predict(self, project: Any, tasks: Sequence[dict], label_config: str | None = None) -> list[dict]:
        started = time.perf_counter()
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects")
        state = self.state(project, label_config)
        if not tasks:
            return []
        model = self._model(state)
        config, version = state.config, state.version
        refs = [(t.get("id"), (t.get("data") or {}).get(config.value_key) if isinstance(t.get("data"), dict) else None)
                for t in tasks]
        futures = self.loader.submit_many(refs, self._source(state), transform=model.preprocess)
        loaded, outputs = self._forward_as_loaded(model, futures)
        good = [i for i, item in enumerate(loaded) if not isinstance(item, ImageError)]
        keys = [str(tasks[i].get("id", f"#{i}")) for i in good]

        values = np.zeros(0)
        labels: list[str] = []
        if good:
            inputs = ScoringInputs(
                n=len(good), keys=keys, probs=outputs["probs"], logits=outputs["logits"],
                embeddings=outputs.get("embeddings"), features=outputs.get("features", {}),
                source_probs=outputs.get("source_probs"), round=state.round,
            )
            values = self.strategy(inputs).numpy()
            labels = [model.active[j] for j in outputs["probs"].argmax(dim=1).tolist()]

        with state.lock:
            if state.version == version:
                for j, (i, key) in enumerate(zip(good, keys)):
                    if "id" in tasks[i]:
                        state.acquisitions[key] = float(values[j])
                reference = np.fromiter(state.acquisitions.values(), dtype=np.float64)
            else:  # the version moved on during this request: rank within the request
                reference = values
            if reference.size == 0:
                reference = values
            scores = acquisition_to_score(values, reference)
            state.stats["predict_requests"] += 1
            state.stats["tasks_predicted"] += len(tasks)
            state.stats["image_failures"] += len(tasks) - len(good)
            state.stats["predict_seconds"] += time.perf_counter() - started

        results: list[dict] = []
        position = {i: j for j, i in enumerate(good)}
        for i, item in enumerate(loaded):
            if i not in position:
                results.append({"result": [], "score": LEAST_URGENT_SCORE, "model_version": version,
                                "error": str(item)})
                continue
            j = position[i]
            results.append({
                "result": [{
                    "from_name": config.from_name, "to_name": config.to_name, "type": "choices",
                    "value": {"choices": [labels[j]]},
                }],
                "score": float(scores[j]),
                "model_version": version,
                "acquisition": float(values[j]),
                "strategy": self.strategy.name,
            })
        return results

    def _forward_as_loaded(self, model: AdaptedModel, futures: list) -> tuple[list, dict]:
        """Forward batches of decoded images as soon as they arrive (downloads of later images
        overlap the forward pass of earlier ones). Every declared input is computed once.
        Returns the loaded items (tensor or ImageError, in task order) and the merged outputs."""
        needs, layers, bs = set(self.strategy.needs), self.strategy.layers(), self.settings.batch_size
        loaded: list = []
        pending: list[torch.Tensor] = []
        parts: list[dict] = []
        for future in futures:
            item = future.result()
            loaded.append(item)
            if not isinstance(item, ImageError):
                pending.append(item)
            if len(pending) == bs:
                parts.append(model.forward(torch.stack(pending), needs, layers))
                pending = []
        if pending:
            parts.append(model.forward(torch.stack(pending), needs, layers))
        merged: dict[str, Any] = {}
        if parts:
            for name in ("logits", "probs", "embeddings", "source_probs"):
                if name in parts[0]:
                    merged[name] = torch.cat([p[name] for p in parts])
            if "features" in parts[0]:
                merged["features"] = {k: torch.cat([p["features"][k] for p in parts]) for k in parts[0]["features"]}
        return loaded, merged

    # ----------------------------------------------------------------------------- reporting
    def record_event(self, action: str) -> None:
        with self._lock:
            self.events[action] = self.events.get(action, 0) + 1

    def versions(self, project: Any | None = None) -> list[str]:
        if project is not None:
            state = self.projects.get(project_key(project))
            return [state.version] if state else []
        return sorted({s.version for s in self.projects.values()})

    def metrics(self) -> dict:
        return {
            "backbone": self.base.spec.name,
            "weights": self.base.weights,
            "strategy": self.strategy.name,
            "strategy_params": self.strategy.params(),
            "device": str(self.device),
            "events": dict(self.events),
            "projects": {
                key: {
                    "model_version": s.version,
                    "round": s.round,
                    "labels": list(s.config.labels),
                    "model_loaded": s.model is not None,
                    "scored_pool_size": len(s.acquisitions),
                    **s.stats,
                }
                for key, s in sorted(self.projects.items())
            },
        }

    def close(self) -> None:
        self.loader.close()
