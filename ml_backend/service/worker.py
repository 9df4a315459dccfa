"""One project's event state machine: signals (never blocking) set flags; :meth:`ProjectWorker.next_job`
decides what runs next (config check, webhook securing, a debounced training round, a publish, new
tasks) or how long to wait; a failed job is retried in the background with back-off. The jobs
themselves (``jobs/``) run through the injected ``run_job(job, control)``, ``control`` being the
worker as the :class:`JobControl` a job may ask; the status (``status.py``) may be injected too;
time comes from an injected clock, so that tests drive the machine without threads or sleeps.

States shown in /status: ``idle``, ``waiting`` (debouncing annotation events), ``running`` (a
round), ``publishing``, ``scoring`` (a re-scoring without import), ``securing``, ``failed`` (with
the reason and when it is retried). A job that finds the project's trainer lease held by another
process waits (``waiting``) and tries again every ``lease_retry_s``: never counted as a failure.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable, Mapping, Protocol

from ml_backend.service.ls_client import api_status
from ml_backend.service.status import WorkerStatus
from ml_backend.service.store import LeaseBusy

log = logging.getLogger(__name__)

Job = tuple[
    str, Any
]  # ("round", force), ("publish", None), ("tasks", ids), ("config", None), ("secure", None), ("rescore", None)


class JobControl(Protocol):
    """What a running job may ask the worker that runs it (:class:`ProjectWorker` is one)."""

    def stopped(self) -> bool:
        """The worker stops: a job that waits (e.g. for Label Studio's webhook) gives up."""
        ...

    def round_due(self) -> bool:
        """A round is waiting: a background import gives way to it between chunks."""
        ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)


class ProjectWorker:
    def __init__(
        self,
        key: str,
        run_job: Callable[[Job, JobControl], None],
        *,
        debounce_s: float,
        recovery_max_s: float,
        debounce_max_s: float = float("inf"),
        wants_publish: Callable[[], bool] = lambda: False,
        clock=SystemClock(),
        status: WorkerStatus | None = None,
        lease_retry_s: float = 2.0,
    ) -> None:
        self.key, self.run_job, self.wants_publish, self.clock = key, run_job, wants_publish, clock
        self.debounce_s, self.recovery_max_s, self.lease_retry_s = debounce_s, recovery_max_s, lease_retry_s
        self.debounce_max_s = debounce_max_s
        self.status = status or WorkerStatus()
        self.cond = threading.Condition()
        self.labels_dirty = self.force = self.publish_requested = False
        self.config_requested = self.secure_requested = self.rescore_requested = self.stopping = False
        self.task_hints: set[int] = set()
        self.secure_attempts = 0
        self.last_secure = -1e9
        self.last_event = 0.0
        self.first_event = 0.0  # the first annotation event the next round has not read yet
        self.retries: dict[str, Job] = {}  # the failed jobs (one per kind), re-run at retry_at
        self.retry_at = 0.0
        self.lease_wait_until = 0.0  # no job before this: another process held the lease at the last try
        self.backoff = 0.0
        self.thread: threading.Thread | None = None

    @property
    def info(self) -> Mapping[str, Any]:
        """The status as /status shows it (read-only)."""
        return self.status.info

    # ------------------------------------------------------------------ signals (never block)
    def labels_changed(self, force: bool = False) -> None:
        with self.cond:
            if not self.labels_dirty:
                self.first_event = self.clock.monotonic()
            self.labels_dirty = True
            self.force = self.force or force
            self.last_event = self.clock.monotonic()
            if self.status.state in ("idle", "failed"):
                self.status.set("waiting", f"debouncing annotation events ({self.debounce_s:g}s)")
            self.cond.notify()

    def tasks_created(self, task_ids: list[int]) -> None:
        """Hints: the tasks are re-read from Label Studio (and must belong to this project)."""
        with self.cond:
            self.task_hints.update(task_ids[:10_000])
            if not task_ids:  # an event without ids: publish whatever lacks a prediction
                self.publish_requested = True
            self.cond.notify()

    def request_publish(self) -> None:
        with self.cond:
            self.publish_requested = True
            self.cond.notify()

    def request_rescore(self) -> None:
        """Score the pool again (nothing is imported): a pool-relative strategy needs it to value a
        request's tasks after a restart."""
        with self.cond:
            self.rescore_requested = True
            self.cond.notify()

    def request_config_check(self) -> None:
        with self.cond:
            self.config_requested = True
            self.cond.notify()

    def request_secure(self, every_s: float = 60.0) -> None:
        """Check the project's webhook header, at most once per ``every_s`` seconds."""
        with self.cond:
            if self.clock.monotonic() - self.last_secure >= every_s and not self.secure_requested:
                self.secure_requested, self.secure_attempts = True, 0
                self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def stopped(self) -> bool:
        return self.stopping

    def round_due(self) -> bool:
        """Labels changed and their debounce has passed (or the worker stops): what a background
        import checks between chunks to give way to the round."""
        with self.cond:
            return self.stopping or (self.labels_dirty and self._debounce_left(self.clock.monotonic()) <= 0)

    def _debounce_left(self, now: float) -> float:
        """Under ``cond``: seconds until the annotation events have been quiet for ``debounce_s``, or
        ``debounce_max_s`` have passed since the first of them (annotators who never pause still get
        rounds)."""
        return min(self.last_event + self.debounce_s, self.first_event + self.debounce_max_s) - now

    def idle(self) -> bool:
        with self.cond:
            return self.status.state in ("idle", "failed") and not (self.publish_requested or self.labels_dirty)

    # ------------------------------------------------------------------ the machine
    def next_job(self) -> tuple[Job | None, float | None]:
        """The job to run now, or (None, seconds to wait; None: until a signal). Takes the job's flags."""
        with self.cond:
            while True:
                now = self.clock.monotonic()
                if self.stopping:
                    return None, None
                if self.lease_wait_until > now:  # another process holds the project's lease
                    return None, self.lease_wait_until - now
                if self.config_requested:
                    self.config_requested = False
                    return ("config", None), None
                if self.secure_requested:  # before anything else: events are refused until it is done
                    self.secure_requested = False
                    self.last_secure = now
                    return ("secure", None), None
                if self.labels_dirty:  # debounce: wait for a quiet period
                    remaining = self._debounce_left(now)
                    if remaining > 0:
                        return None, remaining
                    force, self.force, self.labels_dirty = self.force, False, False
                    return ("round", force), None
                if self.publish_requested:
                    self.publish_requested = False
                    return ("publish", None), None
                if self.task_hints:
                    ids, self.task_hints = sorted(self.task_hints), set()
                    return ("tasks", ids), None
                if self.rescore_requested:
                    self.rescore_requested = False
                    return ("rescore", None), None
                if not self.retries or self.retry_at == float("inf"):  # (inf: re-armed, running)
                    return None, None
                if self.retry_at > now:
                    self.status.retry_in_s = round(self.retry_at - now, 1)
                    return None, self.retry_at - now
                self._rearm()

    def run_once(self) -> Job | None:
        """Run the next job if one is due (what the thread does; tests call it directly)."""
        job, _ = self.next_job()
        if job is not None:
            self._execute(job)
        return job

    def start(self) -> "ProjectWorker":
        self.thread = threading.Thread(target=self._loop, name=f"learner-{self.key}", daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while True:
            with self.cond:
                job, wait = self.next_job()
                if self.stopping:
                    return
                if job is None:
                    self.cond.wait(wait)
                    continue
            self._execute(job)

    def _execute(self, job: Job) -> None:
        try:
            self.run_job(job, self)
            with self.cond:
                self.retries.pop(job[0], None)
                if not self.retries:
                    self.backoff, self.status.retry_in_s = 0.0, None
            # The served version can move on during a job (a grown label config): publish it too.
            if self.wants_publish():
                self.request_publish()
        except Exception as exc:
            _failed(self, job, exc)

    def _rearm(self) -> None:
        """Under ``cond``: turn the failed jobs back into the flags that run them."""
        for job in self.retries.values():
            _flag(self, job)
        self.retry_at = float("inf")  # until it fails again (or succeeds and clears it)


def _flag(worker: ProjectWorker, job: Job) -> None:
    """Under the worker's ``cond``: set the flag that runs ``job`` (at once: no debounce for a round)."""
    kind, argument = job
    if kind == "round":
        worker.labels_dirty, worker.force = True, worker.force or bool(argument)
        worker.last_event = -1e18  # no debounce for a retry
    elif kind == "publish":
        worker.publish_requested = True
    elif kind == "tasks":
        worker.task_hints.update(argument)
    elif kind == "config":
        worker.config_requested = True
    elif kind == "rescore":
        worker.rescore_requested = True
    else:
        worker.secure_requested = True


def _failed(worker: ProjectWorker, job: Job, exc: Exception) -> None:
    """A job raised: defer it while another process holds the lease, give up on a project gone
    from Label Studio (or a webhook that cannot be secured), else retry it with back-off."""
    kind = job[0]
    if isinstance(exc, LeaseBusy):  # another process runs this project's jobs: take over when it is done
        with worker.cond:
            _flag(worker, job)
            worker.lease_wait_until = worker.clock.monotonic() + worker.lease_retry_s
            worker.status.retry_in_s = worker.lease_retry_s
        first = not worker.status.reason.endswith("when it is free")
        worker.status.set("waiting", f"{exc}; this process runs the {kind} when it is free")
        log.log(logging.INFO if first else logging.DEBUG, "%s; %s deferred", exc, kind)
        return
    worker.status.failed_runs += kind == "round"
    worker.status.record_error(exc)
    status = api_status(exc) or (api_status(exc.__cause__) if exc.__cause__ is not None else None)
    if status == 404 and kind != "tasks":  # the project is gone: nothing to retry
        worker.status.set("failed", f"Label Studio has no project {worker.key} any more; nothing is retried")
        log.error("project %s: %s failed: Label Studio has no such project any more", worker.key, kind)
        return
    if kind == "secure":
        worker.status.webhook = f"not secured: {exc}"
        worker.secure_attempts += 1
        if worker.secure_attempts >= 6:  # the next /setup from Label Studio tries again
            worker.status.set("idle", "")
            log.warning("project %s: webhook not secured: %s", worker.key, exc)
            return
    with worker.cond:
        worker.backoff = min(worker.recovery_max_s, max(5.0, worker.backoff * 2))
        if kind == "tasks" and kind in worker.retries:  # the ids of both failures
            job = ("tasks", sorted(set(worker.retries[kind][1]) | set(job[1])))
        # every failed kind is kept: a config check failing after a publish must not drop the publish
        worker.retries[kind], worker.retry_at = job, worker.clock.monotonic() + worker.backoff
        worker.status.retry_in_s = round(worker.backoff, 1)
    worker.status.set(
        "failed",
        f"{kind} failed: {type(exc).__name__}: {exc}; the previous model keeps serving, "
        f"retrying in {worker.backoff:g}s",
    )
    log.error(
        "project %s: %s failed (retrying in %gs): %s\n%s", worker.key, kind, worker.backoff, exc, traceback.format_exc()
    )
