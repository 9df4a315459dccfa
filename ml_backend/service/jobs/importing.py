"""Writing a version into Label Studio: its predictions, imported in chunks, and the switch of the
project's queue to it (used by publishing and by a big project's first queue)."""

from __future__ import annotations

from typing import Callable

from ml_backend.service.jobs.context import JobContext
from ml_backend.service.ls_client import ProjectAPI


def import_predictions(
    ctx: JobContext,
    api: ProjectAPI,
    tasks: list[dict],
    results: list[dict],
    version: str,
    progress: dict | None = None,
    done: int = 0,
    give_way: Callable[[], bool] = lambda: False,
    clear_tasks: bool = False,
) -> bool:
    """Bulk-import predictions in chunks, in the given order. ``done``: predictions of this publish
    already imported (for the progress). With ``clear_tasks`` each chunk's tasks first lose their
    existing predictions (older versions). Stops between chunks when ``give_way()`` says so;
    returns whether all were imported."""
    predictions = [
        {"task": t["id"], "result": r["result"], "score": r["score"], "model_version": version}
        for t, r in zip(tasks, results)
    ]
    chunk = ctx.settings.publish_chunk
    for start in range(0, len(predictions), chunk):
        if give_way():
            return False
        part = predictions[start : start + chunk]
        if clear_tasks:
            ctx.call(lambda: api.delete_task_predictions([p["task"] for p in part]), "deleting older predictions")
        ctx.call(lambda: api.import_predictions(part), "importing predictions")
        if progress is not None:
            progress["imported"] = done + start + len(part)
    return True


def switch(ctx: JobContext, api: ProjectAPI, version: str) -> None:
    """Point the project's queue at ``version`` (with the sampling and pre-labeling settings)."""
    prelabel = {"on": True, "off": False}.get(ctx.settings.prelabel)  # keep: None, the project's own choice
    ctx.call(
        lambda: api.set_model_version(version, ctx.settings.set_uncertainty_sampling, prelabel), "setting model_version"
    )
