"""What every job of one project may use: :class:`JobContext` (built by the learner, never by a
job), and Label Studio calls with retries (:func:`retry`, :class:`PublishError`)."""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable

from ml_backend.service.features import FeatureExtractor
from ml_backend.service.ls_client import ProjectAPI
from ml_backend.service.projects import Projects, ProjectState
from ml_backend.service.scorer import Scorer
from ml_backend.service.settings import Settings
from ml_backend.service.status import WorkerStatus
from ml_backend.service.worker import JobControl

# the training rounds this process has run, under "rounds" (/status's worker block: a process's
# first round is when its memory takes in the optimizer and the labeled set)
ROUNDS_TRAINED: collections.Counter = collections.Counter()

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


def retry(
    call: Callable,
    attempts: int,
    what: str,
    on_retry: Callable[[int, Exception], None] | None = None,
    base_delay: float = 0.5,
):
    """Call with exponential back-off; raises PublishError after ``attempts`` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts:
                raise PublishError(f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}") from exc
            delay = min(30.0, base_delay * 2 ** (attempt - 1))
            log.warning(
                "%s failed (attempt %d/%d: %s: %s); retrying in %.1fs",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            if on_retry is not None:
                on_retry(attempt, exc)
            time.sleep(delay)


class Unattended:
    """The :class:`JobControl` of a job no worker runs (a test, a script): never stopped, no round waits."""

    def stopped(self) -> bool:
        return False

    def round_due(self) -> bool:
        return False


@dataclass
class JobContext:
    """Everything a job of one project may use; built by the learner, never by a job."""

    state: ProjectState
    projects: Projects
    scorer: Scorer
    features: FeatureExtractor  # images -> feature cache -> trunk activations (also what the scorer uses)
    settings: Settings
    api_factory: Callable[[int], ProjectAPI]  # project id -> client; raises PublishError when not configured
    status: WorkerStatus
    webhook_secret: Callable[[], str]  # this project's webhook header value
    instance_id: str  # this backend's /health "instance" (tells it apart from other backends)
    control: JobControl = Unattended()  # the worker running the job

    def api(self) -> ProjectAPI:
        return self.api_factory(int(self.state.key))

    def call(self, fn: Callable, what: str):
        """One Label Studio call with the configured retries; retries show in /status."""
        return retry(fn, self.settings.publish_retries, f"project {self.state.key}: {what}", self.note_retry)

    def note_retry(self, attempt: int, exc: Exception) -> None:
        self.status.retrying(exc, attempt, self.settings.publish_retries)

    def stopped(self) -> bool:
        """The worker stops: a job that waits gives up."""
        return self.control.stopped()

    def round_due(self) -> bool:
        """A round is waiting: background imports give way to it."""
        return self.control.round_due()
