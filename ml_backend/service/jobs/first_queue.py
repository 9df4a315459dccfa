"""A big project's first ordered queue in seconds (docs/methods.md §0, "A big project's first
queue"): before a never-published project's whole pool is scored, a sample spread over it is scored
as the pool of a preliminary version ``<version>-first``, imported, and the project switched to it.
The full publish that follows replaces it."""

from __future__ import annotations

import logging
import time

from ml_backend.service.jobs.context import JobContext
from ml_backend.service.jobs.importing import import_predictions, switch
from ml_backend.service.ls_client import ProjectAPI

log = logging.getLogger(__name__)

SUFFIX = "-first"


def preliminary(version: str) -> str:
    """The name of ``version``'s preliminary (sample) version."""
    return f"{version}{SUFFIX}"


def wanted(ctx: JobContext) -> bool:
    """On connect: the project's queue never followed a version of this backend (``queue_version``,
    restored after a restart; a round's new version is not published yet but the queue follows the
    previous one, so a round's publish is never a first queue), the setting is on, and the strategy
    does not need the labeled set's activations that this process lacks (after a restart they are
    recomputed by the full publish; a preliminary version never guesses without them)."""
    state = ctx.state
    if not ctx.settings.first_queue_sample or state.queue_version:  # (set whenever published_version is)
        return False
    return not state.labels_used or bool(state.pool.labeled_trunk)


def publish_sample(ctx: JobContext, api: ProjectAPI, model, version: str) -> dict | None:
    """Read a sample of unlabeled tasks spread over the project (``ProjectAPI.sample_unlabeled``: the
    same tasks each time, so that a later round finds their activations in the feature cache), score
    it, import it as ``<version>-first`` and switch the project to it. Returns what was done (for
    ``/status``), or None when the pool is small enough to score whole at once."""
    state, status, n = ctx.state, ctx.status, ctx.settings.first_queue_sample
    started = time.perf_counter()
    sample, total = ctx.call(lambda: api.sample_unlabeled(n), "reading a sample of unlabeled tasks")
    if total <= 2 * n or not sample:
        return None
    name = preliminary(version)
    status.set("publishing", f"first queue: scoring a sample of {len(sample)} of {total} unlabeled tasks")
    results = ctx.scorer.score(state, sample, model, name, sample=True)
    if name in ctx.call(api.model_versions, "listing prediction versions"):  # a retry: no task gets two
        ctx.call(lambda: api.delete_version(name), f"clearing {name}")
    import_predictions(ctx, api, sample, results, name)
    switch(ctx, api, name)
    done = {"version": name, "sample": len(sample), "unlabeled": total}
    done["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "project %s: first queue served by %s (a sample of %d of %d unlabeled tasks) after %.1fs; "
        "scoring the whole pool for %s",
        state.key,
        name,
        len(sample),
        total,
        done["seconds"],
        version,
    )
    return done
