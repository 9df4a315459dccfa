"""What the backend knows of one project: its key (:func:`project_key`), its identity fields
(:class:`ProjectState`, written by the project registry, ``projects.py``, and its collaborators
``versioning.py`` and ``model_dir.py``) and what scoring keeps for it (:class:`PoolState`, written
only by the scorer)."""

from __future__ import annotations

import hashlib
import heapq
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from ml_backend.core.adapted import AdaptedModel
from ml_backend.errors import BadRequest
from ml_backend.service.label_config import ClassificationConfig
from ml_backend.service.ls_client import TaskIndex

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
    """What scoring keeps per project; written only by the scorer (``scorer.py``), and reset when the
    served version changes (:meth:`forget_values`)."""

    acquisitions: dict[str, float] = field(default_factory=dict)  # task id -> value, served version
    previous_acquisitions: dict[str, float] = field(default_factory=dict)  # the last ones of an earlier version
    labeled_trunk: list = field(default_factory=list)  # trunk activations of the last round's labels
    # the scored version's embeddings of its next round's likely candidates (scorer.keep_candidate_embeddings)
    embeddings: dict = field(default_factory=dict)
    strategy_state: dict = field(default_factory=dict)  # what a strategy computes once (ADMA's landmarks)
    strategy_info: dict = field(default_factory=dict)  # what the strategy reported at the last publish
    strategy_saved: bool = False  # strategy_state's persistent part is on disk
    scored_version: str | None = None  # the version whose whole pool was scored last (what strategies kept)
    scoring_seconds: float | None = None  # how long this process's last whole-pool scoring took
    stats: dict[str, float] = field(
        default_factory=lambda: {
            "predict_requests": 0,
            "tasks_predicted": 0,
            "image_failures": 0,
            "predict_seconds": 0.0,
        }
    )

    def forget_values(self) -> None:
        """The served version changed: its values start anew; the last ones are kept as
        ``previous_acquisitions`` (the next round's candidates, ``jobs/first_queue.py``)."""
        if self.acquisitions:
            self.previous_acquisitions = self.acquisitions
        self.acquisitions, self.embeddings = {}, {}


def keyed_sample(keys: Iterable[str], n: int) -> list[str]:
    """The ``n`` first of ``keys`` in the order of their SHA-1: a fixed sample that a task leaving the
    pool changes by one (a round's candidates, ``jobs/first_queue.py``)."""
    return heapq.nsmallest(n, keys, key=lambda k: hashlib.sha1(k.encode()).digest())


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
    unwritten_mark: str | None = None  # published, but MODEL_DIR could not record it yet (full)
    queue_version: str | None = None  # the last version published: what Label Studio's queue follows now
    checkpoint: str | None = None  # id of the served version's checkpoint
    strategy: str | None = None  # the strategy spec this project chose (None: the backend's STRATEGY)
    seq: int = 0  # the served checkpoint's number in the project's sequence (0: none yet)
    refreshed: float = 0.0  # when MODEL_DIR was last checked for a newer version (time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)
    pool: PoolState = field(default_factory=PoolState)
    listing: TaskIndex = field(default_factory=TaskIndex)  # the tasks as last listed (ProjectAPI.tasks)
