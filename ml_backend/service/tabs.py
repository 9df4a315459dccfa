"""Data Manager tabs the backend keeps in each project (``LABEL_STUDIO_TABS``), so that what it
knows reaches the people who label:

* **"Queue: most useful first"**, made once: the tasks ordered by prediction score (lower = served
  first, the order of the labeling queue) with the score and model version columns visible, which
  Label Studio's default tab hides.
* **"Review: suspicious labels (N)"**: the labeled tasks whose annotations the trained head finds
  implausible after the last round (``REVIEW_TOP``, only those it gives p(label) below
  ``REVIEW_MAX_P``), as a filter on their task ids. A task leaves it when its annotation is changed
  or saved again (confirmed); the tab is removed when nothing is left to review.

Tabs are found by title, so a user who renames one gets a new one; a user's own tabs are never touched.
"""

from __future__ import annotations

import logging

from ml_backend.service.ls_client import ProjectAPI

log = logging.getLogger(__name__)

QUEUE_TAB = "Queue: most useful first"
REVIEW_TAB = "Review: suspicious labels"
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


def _title(view: dict) -> str:
    return str((view.get("data") or {}).get("title") or "")


def ensure_queue_tab(api: ProjectAPI) -> bool:
    """Create the queue tab unless the project has it; True when created."""
    if any(_title(v) == QUEUE_TAB for v in api.views()):
        return False
    api.create_view(
        {
            "title": QUEUE_TAB,
            "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": QUEUE_HIDDEN, "labeling": QUEUE_HIDDEN},
        }
    )
    return True


def review_filters(task_ids: list[str]) -> dict:
    return {
        "conjunction": "or",
        "items": [
            {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)} for t in task_ids
        ],
    }


def sync_review_tab(api: ProjectAPI, task_ids: list[str]) -> str:
    """Make the review tab show exactly ``task_ids`` (none: remove it). Returns what was done."""
    mine = [v for v in api.views() if _title(v).startswith(REVIEW_TAB)]
    if not task_ids:
        for view in mine:
            api.delete_view(view["id"])
        return "removed" if mine else "none"
    data = {"title": f"{REVIEW_TAB} ({len(task_ids)})", "filters": review_filters(task_ids), "ordering": ["tasks:id"]}
    if mine:
        api.update_view(mine[0]["id"], data)
        for extra in mine[1:]:
            api.delete_view(extra["id"])
        return "updated"
    api.create_view(data)
    return "created"
