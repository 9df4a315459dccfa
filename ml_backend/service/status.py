"""What /status shows about a project's worker: :class:`WorkerStatus`, written by the worker
(``worker.py``) and the jobs it runs (``jobs/``), and shared with every process through the
project's status file (``Store.write_status``/``read_status``) while a job holds the trainer lease.

Its JSON form (:meth:`WorkerStatus.as_dict`) is what /status and the status file hold: the keys
below, plus ``updated_at`` once it was shared and ``process`` once a job of this process ran; keys
another (newer) version shared are kept and passed on unchanged.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# JSON keys, in their order in /status and the status file
FIELDS = (
    "state",
    "reason",
    "training_runs",
    "failed_runs",
    "publishes",
    "last_round",
    "publish_progress",
    "last_error",
    "webhook",
    "retry_in_s",
    "review",
    "dropped_by_influence",
)
OPTIONAL = ("updated_at", "process")  # absent from the JSON until set
LOCAL = frozenset({"state", "reason", "retry_in_s", "updated_at", "process"})  # never adopted from another process


@dataclass
class WorkerStatus:
    """One project's worker status. ``state``: idle, waiting, running, publishing, scoring, securing,
    failed (worker.py's docstring); ``reason`` says why."""

    state: str = "idle"
    reason: str = ""
    training_runs: int = 0
    failed_runs: int = 0  # failed rounds (a lease held by another process is no failure)
    publishes: int = 0
    last_round: dict | None = None  # round, version, losses, seconds...; ``publish``: that publish's timings
    publish_progress: dict | None = None  # version, scored, imported, total, timings: updated while it runs
    last_error: str | None = None
    webhook: str = "not secured yet"
    retry_in_s: float | None = None  # when the failed (or deferred) job runs again
    review: list[dict] = field(default_factory=list)  # annotations to review (the last round's)
    dropped_by_influence: list[dict] = field(default_factory=list)  # labels TRAIN_DROP_HARMFUL left out
    updated_at: float | None = None  # time.time() of the last share
    process: str | None = None  # host:pid of the process whose job last ran here
    extra: dict[str, Any] = field(default_factory=dict)  # keys adopted from a version with more of them
    sink: Callable[[dict], None] | None = field(default=None, repr=False, compare=False)
    # ``sink``: while this process holds the project's lease, where the status is shared

    def as_dict(self) -> dict:
        """The JSON object (a new dict; ``last_round``, ``publish_progress`` and the lists are the live ones)."""
        out = {name: getattr(self, name) for name in FIELDS}
        out.update(self.extra)
        out.update({name: getattr(self, name) for name in OPTIONAL if getattr(self, name) is not None})
        return out

    @property
    def info(self) -> Mapping[str, Any]:
        """A read-only view of :meth:`as_dict` (write through the fields and methods)."""
        return types.MappingProxyType(self.as_dict())

    def set(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self.share()

    def share(self) -> None:
        """Stamp the status and, while this process holds the project's lease, hand it to the sink
        (the status file every process's /status reads)."""
        self.updated_at = time.time()
        if self.sink is not None:
            self.sink(self.as_dict())

    def adopt(self, shared: dict | None) -> None:
        """Continue from what another process's jobs left (counters, last round, review) when it is newer."""
        if not shared or shared.get("updated_at", 0) <= (self.updated_at or 0):
            return
        for key, value in shared.items():
            if key in LOCAL:
                continue
            if key in FIELDS:
                setattr(self, key, value)
            else:
                self.extra[key] = value

    def record_error(self, exc: BaseException, note: str = "") -> None:
        """``last_error``: the exception, as ``Type: message`` (and ``note``)."""
        self.last_error = f"{type(exc).__name__}: {exc}{note}"

    def retrying(self, exc: BaseException, attempt: int, attempts: int) -> None:
        """A Label Studio call failed and is tried again (shown with the next share)."""
        self.record_error(exc, f" (retry {attempt}/{attempts})")
        self.reason = f"Label Studio API error, retrying ({attempt}/{attempts})"
