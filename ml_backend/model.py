"""The backend's hooks, named as label-studio-ml 2.x names them: ``setup``, ``predict`` and ``fit``.

A reader who knows ``label_studio_ml.model.LabelStudioMLBase`` finds the three methods here with
that class's signatures, and the routes (``app.py``) call nothing else to serve Label Studio's
protocol. As in label-studio-ml, one instance is made per request, bound to a project and its
label config; the heavy parts (backbone, store, projects, workers) live in the process-wide
:class:`~ml_backend.service.backend.Backend` it is given, so making an instance costs nothing.

What differs from ``LabelStudioMLBase`` on purpose:

- ``fit`` never trains in the request: it hands the event to the project's background worker
  (debounced rounds, one at a time) and returns at once; the new model version reaches Label
  Studio when the round is complete (docs/architecture.md, "The learning loop").
- ``predict`` returns one prediction per task, each with ``score`` = the queue score of the task's
  acquisition value (lower is served first; docs/methods.md §0), and never depends on which other
  tasks share the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ml_backend.service.backend import Backend
from ml_backend.service.learner import UNAUTHENTICATED_TRAINING


@dataclass
class ActiveAdaptationModel:
    """One project's view of the backend, with label-studio-ml's hook names and signatures."""

    backend: Backend
    project_id: Any = None
    label_config: str | None = None
    # what /setup brings besides the project: Label Studio's host, the user's token, the
    # connection's extra params ({"strategy": ...})
    connection: dict = field(default_factory=dict)
    model_version: str | None = None

    def setup(self) -> str:
        """Register the project (or take a new label config) and return the served model version.

        Fast: parses the config and records the project; the pool is scored and published in the
        background by the project's worker."""
        self.model_version = self.backend.setup(
            self.project_id,
            self.label_config,
            str(self.connection.get("hostname") or ""),
            str(self.connection.get("access_token") or ""),
            self.connection.get("extra_params"),
        )
        return self.model_version

    def predict(self, tasks: list[dict], context: dict | None = None, **kwargs) -> list[dict]:
        """One prediction per task: the predicted label, the model version and the queue ``score``.

        ``context`` (interactive pre-annotation) is not used: the acquisition value of a task is a
        property of the task and the served model, nothing else."""
        return self.backend.predict(self.project_id, tasks, self.label_config)

    def fit(self, event: str, data: dict | None = None, **kwargs) -> str:
        """Hand a Label Studio event to the project's worker; never trains here.

        ``data`` is the webhook payload; only the task ids of ``TASKS_CREATED`` are read from it
        (everything else is re-read from Label Studio). ``authenticated=False`` (a keyword) marks a
        "Start Training" that came without credentials. Returns what the worker made of the event."""
        if event == "START_TRAINING" and kwargs.get("authenticated") is False:
            event = UNAUTHENTICATED_TRAINING
        return self.backend.handle_event(event, self.project_id, task_ids((data or {}).get("tasks")))


def task_ids(tasks: Any) -> list[int]:
    """The task ids a TASKS_CREATED event names (hints only: the tasks are re-read from LS)."""
    if not isinstance(tasks, list):
        return []
    ids = []
    for task in tasks[:10_000]:
        value = task.get("id") if isinstance(task, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            ids.append(value)
    return ids
