"""Routes Label Studio's events to one worker per project (``worker.py``), each running the jobs of
``jobs/`` in its own thread; webhooks only set flags and return."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import threading
from typing import Callable

from ml_backend.errors import UnknownProject
from ml_backend.service.features import FeatureExtractor
from ml_backend.service.jobs import JobContext, PublishError, run_job
from ml_backend.service.ls_client import LabelStudioConnection, ProjectAPI
from ml_backend.service.projects import Projects, ProjectState
from ml_backend.service.scorer import Scorer
from ml_backend.service.settings import Settings
from ml_backend.service.status import WorkerStatus
from ml_backend.service.worker import Job, JobControl, ProjectWorker, SystemClock

log = logging.getLogger(__name__)


def process_name() -> str:
    """This process, as /status names it (computed each time: gunicorn forks its workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# "Start Training" that came without credentials (Label Studio sends none when the connection has no
# basic auth): a hint that forces nothing
UNAUTHENTICATED_TRAINING = "START_TRAINING_UNAUTHENTICATED"

BUSY = frozenset({"running", "publishing", "scoring", "securing"})

LABEL_EVENTS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}
)


class Learner:
    def __init__(
        self,
        settings: Settings,
        projects: Projects,
        scorer: Scorer,
        features: FeatureExtractor,
        connection: LabelStudioConnection,
        webhook_secret: Callable[[str], str],
        instance_id: str,
        clock=SystemClock(),
        api_factory: Callable[[int], ProjectAPI] | None = None,
    ) -> None:
        """``api_factory``: project id -> Label Studio client (default: a ProjectAPI on ``connection``)."""
        self.settings, self.projects, self.scorer, self.connection = settings, projects, scorer, connection
        self.features = features
        self.webhook_secret, self.instance_id, self.clock = webhook_secret, instance_id, clock
        self.api_factory = api_factory or self._api
        self.workers: dict[str, ProjectWorker] = {}
        self._lock = threading.Lock()

    def _api(self, project: int) -> ProjectAPI:
        if not self.connection.configured:
            raise PublishError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are needed to read labels and publish")
        return ProjectAPI(self.connection, project)

    def worker(self, state: ProjectState) -> ProjectWorker:
        """The project's worker, started on first use: it runs its jobs through :meth:`run_leased`
        on a :class:`JobContext` that shares its status, and hands itself to each job as its control."""
        with self._lock:
            worker = self.workers.get(state.key)
            if worker is None:
                status = WorkerStatus()
                ctx = JobContext(
                    state,
                    self.projects,
                    self.scorer,
                    self.features,
                    self.settings,
                    self.api_factory,
                    status,
                    functools.partial(self.webhook_secret, state.key),
                    self.instance_id,
                )
                worker = ProjectWorker(
                    state.key,
                    functools.partial(self.run_leased, ctx),
                    debounce_s=self.settings.train_debounce_s,
                    debounce_max_s=self.settings.train_debounce_max_s,
                    recovery_max_s=self.settings.recovery_max_s,
                    wants_publish=functools.partial(self.wants_publish, state),
                    clock=self.clock,
                    status=status,
                    lease_retry_s=self.settings.lease_retry_s,
                )
                self.workers[state.key] = worker.start()
            return worker

    def run_leased(self, ctx: JobContext, job: Job, control: JobControl) -> None:
        """Run one job holding the project's trainer lease (store.LeaseBusy when another process
        holds it): first serve the newest version on disk and continue the status another process
        left, then share this job's status with every process until the lease is released."""
        store, status, state = self.projects.store, ctx.status, ctx.state
        with store.trainer_lease(state.key, job[0]):
            status.adopt(store.read_status(state.key))
            status.process = process_name()
            status.sink = functools.partial(store.write_status, state.key)
            try:
                self.projects.refresh(state, every_s=0)
                if job[0] == "publish" and not self.wants_publish(state):
                    return status.set("idle", f"{state.version} is published (by another process)")
                run_job(dataclasses.replace(ctx, control=control), job)
            except Exception as exc:
                status.record_error(exc)
                status.set("failed", f"{job[0]} failed: {type(exc).__name__}: {exc}; the previous model keeps serving")
                raise
            finally:
                status.share()
                status.sink = None

    def connected(self, state: ProjectState, publish: bool = True) -> None:
        """On /setup (from Label Studio, for a confirmed project): make sure the project's webhook is
        secured and, with ``publish``, that Label Studio has the served version."""
        if not self.connection.configured:
            return
        worker = self.worker(state)
        worker.request_secure()
        if publish and state.published_version != state.version and worker.idle():
            worker.request_publish()

    def needs_pool(self, state: ProjectState) -> None:
        """A request's tasks could not be valued without the pool (a pool-relative strategy with
        nothing kept for the served version): score the pool in the background."""
        if self.connection.configured:
            self.worker(state).request_rescore()

    def resume(self) -> None:
        """At process start: re-publish every restored project whose served version Label Studio
        may lack (a crash mid-publish, or Label Studio down at the time), and check every trained
        project for labels that changed while no process was running its rounds (a round starts
        only if some did: an event that reached only a process killed before its round is not lost)."""
        for key in self.projects:
            state = self.projects[key]
            if self.wants_publish(state):
                log.info("project %s: %s is not known to be published; publishing it", key, state.version)
                self.worker(state).request_publish()
            if self.connection.configured:
                self.worker(state).labels_changed()

    def wants_publish(self, state: ProjectState) -> bool:
        """Label Studio lacks the served version and should get it: a trained version always;
        version 0 only with PUBLISH_ON_CONNECT, or when an earlier version was published."""
        return (
            self.connection.configured
            and state.published_version != state.version
            and (state.round > 0 or self.settings.publish_on_connect or bool(state.published_version))
        )

    def handle(self, action: str, key: str, task_ids: list[int] | None = None) -> str:
        """Route one authenticated webhook event (a hint: project id + action). Returns what was
        done. Events for a project this backend was never set up for create nothing."""
        state = self.projects.lookup(key)
        if state is None:
            raise UnknownProject(f"project {key} is not connected to this backend; event ignored")
        if not self.connection.configured:
            return "ignored (LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are needed to learn)"
        worker = self.worker(state)
        if action in LABEL_EVENTS or action == "START_TRAINING":
            worker.labels_changed(force=action == "START_TRAINING")
            return "training scheduled"
        if action == UNAUTHENTICATED_TRAINING:
            worker.labels_changed(force=False)
            return "label check scheduled (unauthenticated Start Training cannot force a round; see docs/security.md)"
        if action == "TASKS_CREATED":
            worker.tasks_created(list(task_ids or []))
            return "scoring scheduled"
        if action == "PROJECT_UPDATED":
            worker.request_config_check()
            return "config check scheduled"
        return "ignored"

    def status(self, key: str) -> dict:
        """The project's worker status, the same whichever process answers: the newer of this
        process's and the one the last job (in any process) shared, plus who holds the lease."""
        worker = self.workers.get(key)
        local = (
            worker.status.as_dict()
            if worker is not None
            else {"state": "idle", "reason": "", "training_runs": 0, "review": [], "dropped_by_influence": []}
        )
        store = self.projects.store
        shared = store.read_status(key)
        out = shared if shared and shared.get("updated_at", 0) > local.get("updated_at", 0) else local
        holder = store.lease_holder(key)
        if (
            out is shared and holder is None and out.get("state") in BUSY and out.get("process") != process_name()
        ):  # its process stopped mid-job
            out = {
                **out,
                "state": "interrupted",
                "reason": f"{out.get('process')} stopped during '{out.get('reason')}'; the next event, retry or "
                "restart runs it again",
            }
        out["trainer"] = holder
        return out

    def stop(self) -> None:
        for worker in list(self.workers.values()):
            worker.stop()
