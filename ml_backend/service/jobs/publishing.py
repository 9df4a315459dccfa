"""Publishing: score the unlabeled pool with the served version, import the predictions and move
the project to the new version so that its queue re-orders; new tasks (TASKS_CREATED); a re-scoring
of the pool that imports nothing."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ml_backend.core.stopping import cohen_kappa, stop_set
from ml_backend.errors import ImageError
from ml_backend.service import tabs
from ml_backend.service.jobs import first_queue
from ml_backend.service.jobs.context import JobContext, PublishError
from ml_backend.service.jobs.importing import import_predictions, switch
from ml_backend.service.labels import result_answer, task_answer
from ml_backend.service.ls_client import ProjectAPI, api_status
from ml_backend.service.projects import ProjectState
from ml_backend.service.scorer import ScoringGaveWay
from strategies import Need

log = logging.getLogger(__name__)


def unlabeled(state: ProjectState, tasks: list[dict]) -> list[dict]:
    """The tasks without a usable label for this project's choices (what a publish scores)."""
    return [t for t in tasks if task_answer(t["annotations"], state.config) is None]


def ensure_labeled(ctx: JobContext, model, tasks: list[dict]) -> None:
    """The trunk activations of the served version's labeled tasks, for strategies that compare
    the pool with the labeled set, when this process has none: after a restart, or when the version
    was trained by another process sharing MODEL_DIR."""
    state = ctx.state
    wanted = {Need.LABELED_EMBEDDINGS, Need.LABELED_PROBS, Need.LABELED_FEATURES}
    if state.pool.labeled_trunk or not state.labels_used or not ctx.scorer.strategy_of(state).needs & wanted:
        return
    labeled = [t for t in tasks if str(t.get("id")) in state.labels_used]
    trunks = [z for z in ctx.features.trunk_activations(state, model, labeled) if not isinstance(z, ImageError)]
    ctx.scorer.set_labeled(state, trunks)
    log.info("project %s: trunk activations of %d labeled tasks recomputed for the strategy", state.key, len(trunks))


def stability_kappa(ctx: JobContext, pool: list[dict], results: list[dict], version: str) -> float | None:
    """Cohen's κ between the previous trained version's and this one's predictions on the fixed
    sample of unlabeled tasks (the stopping signal, core/stopping.py); None for the first."""
    state, store = ctx.state, ctx.projects.store
    predicted = {str(t["id"]): result_answer(r["result"], state.config) for t, r in zip(pool, results) if r["result"]}
    sample = stop_set(list(predicted), ctx.settings.stop_sample, ctx.settings.seed)
    before = store.read_json(state.key, "stability.json") or {}
    previous = before.get("predictions") or {}
    store.write_json(
        state.key, "stability.json", {"version": version, "predictions": {k: predicted[k] for k in sample}}
    )
    common = [k for k in sample if k in previous]
    if not common or before.get("version") == version:
        return None
    return cohen_kappa([previous[k] for k in common], [predicted[k] for k in common])


def publish(ctx: JobContext, tasks: list[dict] | None = None, stability: bool = False) -> float | None:
    """Score the whole unlabeled pool with the served version, import it, switch the project to it.
    With ``stability`` (after a round) returns the stopping signal's κ to the previous version. A
    big project never published yet first gets a preliminary queue from a sample, and a big pool after
    a round one from the previous version's best tasks and a sample (``first_queue.py``)."""
    state, status = ctx.state, ctx.status
    api = ctx.api()
    with state.lock:
        model, version = ctx.projects.model(state), state.version
    started = clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:  # where a publish spends its time (/status, benchmarks/bench_scale.py)
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    first = None
    if first_queue.wanted(ctx):
        first = first_queue.publish_sample(ctx, api, model, version)
        lap("first_queue_seconds")
    if tasks is None:
        tasks = ctx.call(lambda: api.tasks(state.listing), "listing tasks")
        lap("read_seconds")
    ensure_labeled(ctx, model, tasks)
    pool = unlabeled(state, tasks)
    if first is None and (first := first_queue.serve_round(ctx, api, model, version, pool)) is not None:
        lap("round_queue_seconds")
    progress = {"version": version, "scored": 0, "imported": 0, "total": len(pool), "timings": timings}
    if first is not None:
        progress["first_queue"] = first
    status.publish_progress = progress
    status.set("publishing", f"scoring the unlabeled pool for {version}")
    try:
        results = ctx.scorer.score(
            state,
            pool,
            model,
            version,
            reset_pool=True,
            progress=lambda n: progress.__setitem__("scored", n),
            give_way=ctx.round_due if first is not None else None,
        )
    except ScoringGaveWay as exc:  # the preliminary version serves; the round's publish goes on from the cache
        log.info("project %s: scoring the pool for %s %s: a round is due", state.key, version, exc)
        status.set("idle", f"{first['version']} serves the queue; the full scoring gave way to a round")
        return None
    lap("score_seconds")
    kappa = stability_kappa(ctx, pool, results, version) if stability else None
    complete = write_queue(ctx, api, pool, results, version, progress, lap)
    _ensure_queue_tab(ctx, api)
    _after_publish(ctx, api, version, complete, len(pool), progress, lap)
    progress.update(score_seconds=timings["score_seconds"], seconds=round(time.perf_counter() - started, 3))
    pending = "; MODEL_DIR is full: the record that it is published is written before the next job"
    status.set("idle", f"published {version} for {len(pool)} unlabeled tasks{pending if state.unwritten_mark else ''}")
    seconds = (progress["seconds"], timings["score_seconds"])
    log.info("project %s: published %s for %d tasks in %.1fs (scoring %.1fs)", state.key, version, len(pool), *seconds)
    return kappa


def _after_publish(ctx: JobContext, api: ProjectAPI, version: str, complete: bool, n: int, progress: dict, lap):
    """Prune older versions when the publish completed and no round waits; mark it published."""
    if complete and not ctx.round_due():  # a deletion cannot be interrupted: it waits for a quiet moment
        prune_old_versions(ctx, api, version)
        lap("prune_seconds")
    else:  # the next round's version replaces these predictions: it goes first (docs/benchmarks.md)
        progress["interrupted"] = not complete
        log.info(
            "project %s: %s serves the queue (%d of its %d predictions imported); a round is due, so older "
            "versions are pruned after the next publish that completes",
            ctx.state.key,
            version,
            progress["imported"],
            n,
        )
    ctx.projects.mark_published(ctx.state, version)  # MODEL_DIR full: the record follows (unwritten_mark)
    ctx.status.publishes += 1


def _ensure_queue_tab(ctx: JobContext, api: ProjectAPI) -> None:
    """With LABEL_STUDIO_TABS: the Data Manager tab that shows the queue."""
    if ctx.settings.label_studio_tabs:
        try:
            if tabs.ensure_queue_tab(api):
                log.info("project %s: created the Data Manager tab %r", ctx.state.key, tabs.QUEUE_TAB)
        except Exception as exc:  # a convenience: never fails the publish
            log.warning("project %s: cannot create the queue tab in Label Studio: %s", ctx.state.key, exc)


def write_queue(
    ctx: JobContext,
    api: ProjectAPI,
    pool: list[dict],
    results: list[dict],
    version: str,
    progress: dict,
    lap: Callable[[str], None],
) -> bool:
    """The top of the new queue first (lowest score = served first), then the switch, then the
    rest, so that what an annotator waits for does not grow with the project (docs/benchmarks.md,
    bench_scale). Returns whether the rest was written (False: it gave way to a due round)."""
    if not pool:  # every task is labeled: nothing to queue, and Label Studio refuses a version without predictions
        return True
    order = sorted(range(len(pool)), key=lambda i: results[i]["score"])
    first = order[: ctx.settings.publish_first] if ctx.settings.publish_first else order
    rest = order[len(first) :]
    versions = ctx.call(api.model_versions, "listing prediction versions")
    # While the rest goes in, the older predictions of the same tasks go out chunk by chunk (only
    # when every prediction in the project is this backend's: nobody else's is touched); what is
    # left of older versions is then small enough to delete by version.
    clean = ctx.settings.delete_old_predictions and all(_ours(ctx, v) for v in versions if v != version)
    again = version in versions  # a publish of this version again: no task may get two of its predictions
    if again and not clean:
        ctx.call(lambda: api.delete_version(version), f"clearing {version}")
    import_predictions(
        ctx, api, [pool[i] for i in first], [results[i] for i in first], version, progress, clear_tasks=again and clean
    )
    lap("import_seconds")
    switch(ctx, api, version)
    ctx.projects.mark_switched(ctx.state, version)
    lap("switch_seconds")
    if not rest:
        return True
    ctx.status.set("publishing", f"{version} serves the queue; importing the other {len(rest)} predictions")
    complete = import_predictions(
        ctx,
        api,
        [pool[i] for i in rest],
        [results[i] for i in rest],
        version,
        progress,
        done=len(first),
        give_way=ctx.round_due,
        clear_tasks=clean,
    )
    lap("import_rest_seconds")
    return complete


def _ours(ctx: JobContext, version: str) -> bool:
    return str(version).startswith(f"{ctx.projects.identity.backbone}-")


def prune_old_versions(ctx: JobContext, api: ProjectAPI, version: str) -> None:
    """With DELETE_OLD_PREDICTIONS (the default): this backend's predictions of older versions go,
    once the project follows ``version``."""
    if ctx.settings.delete_old_predictions:
        for name in api.model_versions():
            if name != version and _ours(ctx, name) and not name.endswith(tabs.REVIEW_VERSION_SUFFIX):
                ctx.call(lambda n=name: api.delete_version(n), f"deleting {name}")


def rescore(ctx: JobContext) -> None:
    """Score the unlabeled pool with the served version without importing anything: what a
    pool-relative strategy keeps from it values later requests (e.g. after a restart)."""
    state = ctx.state
    if state.published_version != state.version:
        return publish(ctx)
    if state.pool.scored_version == state.version:  # scored since the request asked
        return
    with state.lock:
        model, version = ctx.projects.model(state), state.version
    ctx.status.set("scoring", f"scoring the unlabeled pool for {version} (nothing is imported)")
    api = ctx.api()
    tasks = ctx.call(lambda: api.tasks(state.listing), "listing tasks")
    ensure_labeled(ctx, model, tasks)
    pool = unlabeled(state, tasks)
    ctx.scorer.score(state, pool, model, version, reset_pool=True)
    ctx.status.set("idle", f"scored {len(pool)} unlabeled tasks for {version}")


def publish_tasks(ctx: JobContext, task_ids: list[int]) -> None:
    """New tasks (TASKS_CREATED): re-read the named tasks from Label Studio (ids that are not this
    project's are dropped), score the unlabeled ones with the served model and import their
    predictions. Many ids, or a version not yet published, re-publish the whole pool."""
    state = ctx.state
    if state.published_version is None or state.published_version != state.version or len(task_ids) > 200:
        return publish(ctx)
    with state.lock:
        model, version = ctx.projects.model(state), state.version
    api = ctx.api()
    tasks = []
    for task_id in task_ids:
        try:
            task = ctx.call(lambda: api.task(task_id), f"reading task {task_id}")
        except PublishError as exc:
            if api_status(exc.__cause__) == 404:
                continue
            raise
        if task is not None and unlabeled(state, [task]):
            tasks.append(task)
    if len(tasks) < len(task_ids):
        log.info(
            "project %s: %d of %d task id(s) of a TASKS_CREATED event are not unlabeled tasks of this project; ignored",
            state.key,
            len(task_ids) - len(tasks),
            len(task_ids),
        )
    if not tasks:
        return
    ctx.status.set("publishing", f"scoring {len(tasks)} new task(s)")
    results = ctx.scorer.score(state, tasks, model, version)
    import_predictions(ctx, api, tasks, results, version)
    ctx.status.set("idle", f"published {version} for {len(tasks)} new task(s)")
