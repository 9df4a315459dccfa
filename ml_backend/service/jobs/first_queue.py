"""A big project's queue in seconds (docs/methods.md §0, "A big project's first queue" and "A
round's queue"): before a never-published project's whole pool is scored, a sample spread over it is
scored as the pool of a preliminary version ``<version>-first``, imported, and the project switched
to it; after a round, the same is done with the previous version's most valuable tasks and a keyed
sample. The full publish that follows replaces it."""

from __future__ import annotations

import heapq
import logging
import time

from ml_backend.service.jobs.context import JobContext
from ml_backend.service.jobs.importing import import_predictions, switch
from ml_backend.service.ls_client import ProjectAPI
from ml_backend.service.project_state import keyed_sample

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
    n = ctx.settings.first_queue_sample
    sample, total = ctx.call(lambda: api.sample_unlabeled(n), "reading a sample of unlabeled tasks")
    if total <= 2 * n or not sample:
        return None
    return serve(ctx, api, model, version, sample, total, f"first queue: scoring a sample of {len(sample)}")


def round_candidates(ctx: JobContext, pool: list[dict], version: str, values: dict | None = None) -> list[dict] | None:
    """After a round, on a big pool: the tasks a preliminary version of the new model is scored on
    before the whole pool is: the previous version's ``ROUND_QUEUE_CANDIDATES`` most valuable unlabeled
    tasks (its values, ``PoolState.previous_acquisitions``; none after a restart) and a keyed sample of
    ``FIRST_QUEUE_SAMPLE`` of the others (the same tasks from round to round). None: the setting is
    off, the project was never published (its first queue is ``publish_sample``'s), the queue already
    follows ``version`` (a re-publish), the pool is under twice the candidates, or its last whole
    scoring here took at most ``ROUND_QUEUE_AFTER_S`` (or is not measured yet): then it is scored whole.
    ``values``: the values that pick the top (default: the previous version's)."""
    settings, pool_state, queue = ctx.settings, ctx.state.pool, ctx.state.queue_version
    n_top, n_sample = settings.round_queue_candidates, settings.first_queue_sample
    if not n_top or not queue or queue == version or len(pool) <= 2 * (n_top + n_sample):
        return None
    if pool_state.scoring_seconds is None or pool_state.scoring_seconds <= settings.round_queue_after_s:
        return None
    with ctx.state.lock:
        previous = dict(pool_state.previous_acquisitions if values is None else values)
    by_id = {str(t["id"]): t for t in pool if "id" in t}
    valued = heapq.nlargest(n_top, (k for k in by_id if k in previous), key=previous.__getitem__)
    top = set(valued)
    keyed = keyed_sample((k for k in by_id if k not in top), n_sample)
    return [by_id[k] for k in valued + keyed]


def serve_round(ctx: JobContext, api: ProjectAPI, model, version: str, pool: list[dict]) -> dict | None:
    """After a round: serve ``<version>-first`` from :func:`round_candidates`; None when not wanted."""
    candidates = round_candidates(ctx, pool, version)
    if not candidates:
        return None
    return serve(ctx, api, model, version, candidates, len(pool), f"round queue: scoring {len(candidates)} candidates")


def serve(
    ctx: JobContext,
    api: ProjectAPI,
    model,
    version: str,
    tasks: list[dict],
    total: int,
    what: str,
    name: str | None = None,
    scoring: dict | None = None,
) -> dict:
    """Score ``tasks`` as the whole pool of ``name`` (default ``<version>-first``), import it, switch
    the project to it. ``scoring``: more arguments of :meth:`Scorer.score` (``head_round.py``)."""
    state, status = ctx.state, ctx.status
    started = time.perf_counter()
    name = name or preliminary(version)
    status.set("publishing", f"{what} of {total} unlabeled tasks")
    results = ctx.scorer.score(state, tasks, model, name, sample=True, **(scoring or {}))
    if name in ctx.call(api.model_versions, "listing prediction versions"):  # a retry: no task gets two
        ctx.call(lambda: api.delete_version(name), f"clearing {name}")
    import_predictions(ctx, api, tasks, results, name)
    switch(ctx, api, name)
    done = {"version": name, "sample": len(tasks), "unlabeled": total}
    done["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "project %s: queue served by %s (%d of %d unlabeled tasks) after %.1fs",
        state.key,
        name,
        len(tasks),
        total,
        done["seconds"],
    )
    return done
