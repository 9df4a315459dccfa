"""The backend's composition root: builds the backbone, the strategy, the store, the project
registry, the scorer and the learner once per process, and offers what the HTTP layer calls. No
Flask here, and no logic of its own beyond wiring and reporting."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Sequence

import strategies
from ml_backend.core.backbones import default_batch, load_backbone, resolve_device
from ml_backend.errors import BadRequest, Unavailable, UnknownProject
from ml_backend.service.choice import StrategyBook, requested_strategy
from ml_backend.service.features import FeatureExtractor
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.learner import UNAUTHENTICATED_TRAINING, Learner
from ml_backend.service.ls_client import LabelStudioConnection, ProjectAPI, api_status
from ml_backend.service.pools import ComputeThreads
from ml_backend.service.projects import Identity, Projects, ProjectState, project_key
from ml_backend.service.reporting import StatusReport
from ml_backend.service.scorer import Scorer
from ml_backend.service.security import WebhookSecrets
from ml_backend.service.settings import Settings
from ml_backend.service.store import Store
from ml_backend.service.strategy_states import StrategyStates

log = logging.getLogger(__name__)


class Backend:
    def __init__(self, settings: Settings, secrets=None) -> None:
        self.device = resolve_device(settings.device)
        settings = dataclasses.replace(settings, batch_size=settings.batch_size or default_batch(self.device))
        self.settings, self.secrets = settings, secrets  # secrets: the log's SecretRegistry (masking)
        self.store = Store(settings.model_dir)
        self.base = load_backbone(
            settings.backbone, settings.weights, settings.seed, settings.freeze, settings.image_size
        )
        self.book = StrategyBook(settings, self.base, self.device, self.store)  # STRATEGY and projects' choices
        self.strategy = self.book.default
        self.connection = LabelStudioConnection(settings.label_studio_url, settings.label_studio_api_key)
        self.webhook_secrets = WebhookSecrets(
            self.store, settings.webhook_secret, mask=secrets.add if secrets is not None else None
        )
        # tells this backend's own /health apart from another backend's (webhook securing)
        self.instance_id = self.webhook_secrets.for_project("instance")[:16]
        identity = Identity(
            self.base.spec.name,
            self.base.weights,
            settings.seed,
            self.strategy.name,
            self.strategy.params(),
            settings.freeze,
            settings.image_size,
            settings.multilabel_threshold,
        )
        self.strategy_states = StrategyStates(self.store, self.book, self.base)
        self.projects = Projects(
            self.store,
            self.base,
            identity,
            self.device,
            self.strategy_states,
            settings.keep_versions,
            persist=self.connection.configured,
            strategy_of=self.book.describe,
        )
        self.compute = ComputeThreads(settings.compute_threads)  # the model's work for requests (pools.py)
        self.features = FeatureExtractor.from_settings(settings, self.base, self.store, self.connection, self.compute)
        self.scorer = Scorer(settings, self.features, self.strategy_states, self.compute)
        self.learner = Learner(
            settings,
            self.projects,
            self.scorer,
            self.features,
            self.connection,
            self.webhook_secrets.header_for,
            self.instance_id,
        )
        self.report = StatusReport(settings, self.base, self.strategy, self.device, self)
        self.events: dict[str, int] = {}
        self._lock = threading.Lock()
        for state in self.projects.restore_all():
            self.scorer.restore(state)
        self._log_ready()

    def _log_ready(self) -> None:
        log.info("backbone %s", self.base.freeze_summary())
        log.info(
            "backend ready: backbone=%s weights=%s strategy=%r device=%s projects restored=%d",
            self.settings.backbone,
            self.base.weights,
            self.strategy,
            self.device,
            len(self.projects),
        )

    # ------------------------------------------------------------------ what the routes call
    def confirm_project(self, key: str, timeout: float = 2.5) -> dict:
        """Ask Label Studio (with this backend's own API key) whether project ``key`` exists.
        UnknownProject when it has no such project; Unavailable when it cannot be asked."""
        try:
            self.connection.token(wait=timeout)  # a PAT refresh that hangs must not hold /setup
            return ProjectAPI(self.connection, int(key)).project(timeout=timeout)
        except Exception as exc:
            status = api_status(exc)
            url = self.connection.url
            if status == 404:
                raise UnknownProject(f"Label Studio at LABEL_STUDIO_URL={url} has no project {key}") from None
            raise Unavailable(
                f"cannot confirm project {key} with Label Studio at LABEL_STUDIO_URL={url} "
                f"({'HTTP ' + str(status) if status else type(exc).__name__}); "
                "check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
            ) from None

    def setup(
        self, project: Any, label_config: str, hostname: str = "", access_token: str = "", extra_params: Any = None
    ) -> str:
        """Register or update a project. Fast: parses the config, never builds a model here.
        ``extra_params`` (the connection's, from Label Studio): ``{"strategy": ...}`` chooses the
        project's strategy; absent, the project keeps what it had."""
        key = project_key(project)
        config = parse_label_config(label_config)
        chosen = requested_strategy(extra_params)
        if chosen is not None:
            self.book.get(chosen)  # a bad choice is refused before anything is registered
        existing = self.projects.lookup(key)
        self.check_structured(config, chosen if chosen is not None else existing and existing.strategy)
        if access_token and self.secrets is not None:
            self.secrets.add(access_token)
        if key not in self.projects and self.connection.configured:
            self.confirm_project(key)  # a project Label Studio does not confirm creates nothing
        state, created = self.projects.register(key, config)
        if chosen is not None and self.projects.set_strategy(state, chosen):
            created = True  # its saved strategy state, if any, is put back below
        if created:  # a project with no checkpoint yet may still have the strategy's state saved
            self.scorer.restore(state)
        self.projects.set_origin(state, hostname, access_token)
        self.learner.connected(state, publish=self.settings.publish_on_connect)
        return state.version

    def check_structured(self, config, spec: str | None) -> None:
        """Several <Choices> or a multi-label one need a strategy that values such outputs
        (docs/methods.md §9.3): refused before anything is registered."""
        if config.layout.simple:
            return
        strategy = self.book.get(spec)
        if not strategy.structured:
            who = f"strategy {spec!r}" if spec is not None else f"STRATEGY={self.settings.strategy}"
            raise BadRequest(
                f"this label config asks {config.layout.describe()}; {who} values single-choice projects "
                f"only. Choose one of {', '.join(strategies.structured_names())} (STRATEGY, or the "
                'connection\'s extra params {"strategy": "margin"})'
            )

    def choose_strategy(self, project: Any, spec: str | None) -> dict:
        """A project's own strategy (None: back to STRATEGY); the pool is re-scored and published."""
        state = self.projects.get_state(project_key(project))
        if spec is not None:
            self.book.get(spec)
        self.check_structured(state.config, spec)
        if self.projects.set_strategy(state, spec):
            self.scorer.restore(state)
            self.learner.connected(state, publish=True)
        name, params = self.projects.strategy_name(state)
        return {
            "project": state.key,
            "strategy": name,
            "strategy_params": params,
            "chosen": state.strategy,
            "model_version": state.version,
        }

    def project(self, project: Any, label_config: str | None = None) -> ProjectState:
        key = project_key(project)
        if label_config:
            self.setup(key, label_config)
        return self.projects.get_state(key)

    def predict(self, project: Any, tasks: Sequence[dict], label_config: str | None = None) -> list[dict]:
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects")
        state = self.project(project, label_config)
        model, version = self.compute.run(self._served, state)  # a checkpoint loads on the compute threads
        results = self.scorer.predict(state, tasks, model, version)
        if any(r["result"] and r.get("acquisition") is None for r in results):
            self.learner.needs_pool(state)
        return results

    def _served(self, state: ProjectState) -> tuple:
        """(model, version) a request scores with; never called holding ``state.lock`` (it takes it)."""
        self.projects.refresh(state)  # another process sharing MODEL_DIR may have trained a newer version
        with state.lock:
            return self.projects.model(state), state.version

    def resume(self) -> None:
        """Republish what a crash or an outage left unpublished (called once at start)."""
        self.learner.resume()

    def webhook_authentic(self, project: Any, presented: str | None) -> bool:
        """Whether a webhook's secret header is the one this backend set on the project's webhook."""
        return self.webhook_secrets.check(project_key(project), presented)

    def handle_event(self, action: str, project: Any, task_ids: list[int] | None = None) -> str:
        """Hand an event to the project's worker (it only sets flags) and count it."""
        self.record_event("START_TRAINING" if action == UNAUTHENTICATED_TRAINING else action)
        return self.learner.handle(action, project_key(project), task_ids)

    def record_event(self, action: str) -> None:
        with self._lock:
            self.events[action] = self.events.get(action, 0) + 1

    def versions(self, project: Any | None = None) -> list[str]:
        return self.projects.versions(None if project is None else project_key(project))

    def metrics(self) -> dict:
        """What /status answers (reporting.py)."""
        with self._lock:
            events = dict(self.events)
        return self.report.metrics(events)

    def histories(self) -> dict[str, list[dict]]:
        """Every project's round history (the dashboard's charts)."""
        return self.report.histories()

    def close(self) -> None:
        self.learner.stop()
        self.features.close()
        self.compute.close()
