"""What a project's worker runs, as plain functions of a :class:`JobContext` (``context.py``): a
training round (``training.py``), publishing, new tasks and re-scoring (``publishing.py``), the
label config check and webhook securing (``housekeeping.py``). :func:`run_job` dispatches one."""

from __future__ import annotations

from ml_backend.service.jobs.context import JobContext, PublishError, Unattended
from ml_backend.service.jobs.housekeeping import check_config, secure_webhook
from ml_backend.service.jobs.publishing import publish, publish_tasks, rescore
from ml_backend.service.jobs.training import run_round
from ml_backend.service.worker import Job

__all__ = [
    "JobContext",
    "PublishError",
    "Unattended",
    "check_config",
    "publish",
    "publish_tasks",
    "rescore",
    "run_job",
    "run_round",
    "secure_webhook",
]


def run_job(ctx: JobContext, job: Job) -> None:
    kind, argument = job
    if ctx.state.unwritten_mark:  # a publish MODEL_DIR could not record (full): record it first
        ctx.projects.write_pending_mark(ctx.state)
    if kind == "round":
        run_round(ctx, bool(argument))
    elif kind == "publish":
        publish(ctx)
    elif kind == "tasks":
        publish_tasks(ctx, argument)
    elif kind == "config":
        check_config(ctx)
    elif kind == "secure":
        secure_webhook(ctx)
    elif kind == "rescore":
        rescore(ctx)
    else:
        raise ValueError(f"unknown job {kind!r}")
