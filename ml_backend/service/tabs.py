"""Data Manager tabs the backend keeps in each project (``LABEL_STUDIO_TABS``), so that what it
knows reaches the people who label:

* **"Queue"**, made once: the tasks ordered by prediction score (lower = served first, the order of
  the labeling queue) with the score and model version columns visible, which Label Studio's
  default tab hides.
* **"Review (N)"**: the labeled tasks whose annotations look wrong after the last round
  (``REVIEW_TOP``, only those given p(label) below ``REVIEW_MAX_P``), as a filter on their task ids.
  A task leaves it when its annotation is changed or saved again (confirmed); with nothing left to
  review the tab stays, as "Review (0)", showing no task, so that it does not come and go between
  rounds. Why each task is there shows beside its annotation: the model's held-out guess, imported
  as a prediction of the version ``<backbone>-review`` whose score is the probability the model
  gives the annotated label (the tab shows the annotation and prediction columns).

Short titles: Label Studio cuts a tab's title after about 15 characters. Tabs are found by title
(the earlier "Queue: most useful first" and "Review: suspicious labels (N)" are renamed), so a user
who renames one gets a new one; a user's own tabs are never touched.
"""

from __future__ import annotations

import logging
import re

from ml_backend.service.ls_client import ProjectAPI

log = logging.getLogger(__name__)

QUEUE_TAB = "Queue"
REVIEW_TAB = "Review"
OLD_QUEUE_TAB = "Queue: most useful first"  # the titles before 0.1.1, renamed when found
_REVIEW_TITLE = re.compile(r"(Review|Review: suspicious labels) \(\d+\)")
# what the queue tab hides; visible: id, image, score, model version, annotation and prediction counts
QUEUE_HIDDEN = [
    "tasks:annotations_results",
    "tasks:annotations_ids",
    "tasks:predictions_results",
    "tasks:file_upload",
    "tasks:storage_filename",
    "tasks:created_at",
    "tasks:updated_at",
    "tasks:updated_by",
    "tasks:avg_lead_time",
    "tasks:draft_exists",
    "tasks:cancelled_annotations",
    "tasks:annotators",
    "tasks:inner_id",
]

# what the review tab hides: the annotation beside the model's guess (the review prediction) stay visible
REVIEW_HIDDEN = [c for c in QUEUE_HIDDEN if c not in ("tasks:annotations_results", "tasks:predictions_results")] + [
    "tasks:predictions_score"
]
REVIEW_VERSION_SUFFIX = "-review"


def _title(view: dict) -> str:
    return str((view.get("data") or {}).get("title") or "")


def ensure_queue_tab(api: ProjectAPI) -> bool:
    """Create the queue tab unless the project has it (renaming the earlier title); True when created."""
    views = api.views()
    if any(_title(v) == QUEUE_TAB for v in views):
        return False
    data = {
        "title": QUEUE_TAB,
        "ordering": ["tasks:predictions_score"],
        "hiddenColumns": {"explore": QUEUE_HIDDEN, "labeling": QUEUE_HIDDEN},
    }
    old = [v for v in views if _title(v) == OLD_QUEUE_TAB]
    if old:
        api.update_view(old[0]["id"], {**(old[0].get("data") or {}), "title": QUEUE_TAB})
        return False
    api.create_view(data)
    return True


def review_filters(task_ids: list[str]) -> dict:
    """A filter on exactly these task ids (none: on id 0, which no task has: an empty tab, not every task)."""
    return {
        "conjunction": "or",
        "items": [
            {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)}
            for t in (task_ids or [0])
        ],
    }


def is_review_tab(view: dict) -> bool:
    return bool(_REVIEW_TITLE.fullmatch(_title(view)))


def sync_review_tab(api: ProjectAPI, task_ids: list[str]) -> str:
    """Make the review tab show exactly ``task_ids`` (in the review's order; none: an empty tab, made
    only once there is something to review). Returns what was done."""
    mine = [v for v in api.views() if is_review_tab(v)]
    if not task_ids and not mine:
        return "none"
    data = {
        "title": f"{REVIEW_TAB} ({len(task_ids)})",
        "filters": review_filters(task_ids),
        "ordering": ["tasks:id"],
        "hiddenColumns": {"explore": REVIEW_HIDDEN, "labeling": REVIEW_HIDDEN},
    }
    if mine:
        api.update_view(mine[0]["id"], data)
        for extra in mine[1:]:
            api.delete_view(extra["id"])
        return "updated"
    api.create_view(data)
    return "created"


def sync_review_predictions(api: ProjectAPI, version: str, items: list[dict], result_of) -> int:
    """Each reviewed task's reason, where the review tab shows it: the model's held-out guess as a
    prediction of ``version`` (``<backbone>-review``, replaced as a whole each time), its score the
    probability given to the annotated label. ``result_of(guess)``: Label Studio's result of a
    guess. Items without a guess (``REVIEW_METHOD`` other than ``heldout``) get none. Returns how
    many were imported."""
    if version in api.model_versions():
        api.delete_version(version)
    predictions = [
        {
            "task": int(r["task"]),
            "result": result_of(r["guess"]),
            "score": float(r["p_label"]),
            "model_version": version,
        }
        for r in items
        if "guess" in r and "p_label" in r
    ]
    if predictions:
        api.import_predictions(predictions)
    return len(predictions)
