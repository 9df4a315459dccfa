"""What a project's worker runs, as plain functions of a :class:`JobContext`: a training round
(labels from Label Studio -> fine-tuning -> checkpoint -> serve), publishing (score the unlabeled
pool, import the predictions, move the project to the new version so that its queue re-orders),
scoring new tasks, re-reading the label config, and securing the project's webhook.

Label Studio is the source of truth: every round re-reads the project's tasks and annotations, so
updates, deletions, skips and restarts are all handled the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests
import torch

from ml_backend.core import review
from ml_backend.core.scoring import forward_batches
from ml_backend.core.stopping import cohen_kappa, stop_set
from ml_backend.core.trainer import Example, fine_tune
from ml_backend.errors import ImageError, LabelConfigError
from ml_backend.service import tabs
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.labels import result_answer, task_answer, unknown_labels
from ml_backend.service.ls_client import ProjectAPI, api_status
from ml_backend.service.projects import Projects, ProjectState
from ml_backend.service.scorer import Scorer
from ml_backend.service.security import HEADER
from ml_backend.service.settings import Settings
from ml_backend.service.worker import Job, WorkerStatus
from strategies import Need

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


def retry(
    call: Callable,
    attempts: int,
    what: str,
    on_retry: Callable[[int, Exception], None] | None = None,
    base_delay: float = 0.5,
):
    """Call with exponential back-off; raises PublishError after ``attempts`` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts:
                raise PublishError(f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}") from exc
            delay = min(30.0, base_delay * 2 ** (attempt - 1))
            log.warning(
                "%s failed (attempt %d/%d: %s: %s); retrying in %.1fs",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            if on_retry is not None:
                on_retry(attempt, exc)
            time.sleep(delay)


@dataclass
class JobContext:
    """Everything a job of one project may use; built by the learner, never by a job."""

    state: ProjectState
    projects: Projects
    scorer: Scorer
    settings: Settings
    api_factory: Callable[[int], ProjectAPI]  # project id -> client; raises PublishError when not configured
    status: WorkerStatus
    webhook_secret: Callable[[], str]  # this project's webhook header value
    instance_id: str  # this backend's /health "instance" (tells it apart from other backends)
    stopped: Callable[[], bool] = lambda: False
    round_due: Callable[[], bool] = lambda: False  # a round is waiting: background imports give way to it

    def api(self) -> ProjectAPI:
        return self.api_factory(int(self.state.key))

    def call(self, fn: Callable, what: str):
        """One Label Studio call with the configured retries; retries show in /status."""
        return retry(fn, self.settings.publish_retries, f"project {self.state.key}: {what}", self.note_retry)

    def note_retry(self, attempt: int, exc: Exception) -> None:
        n = self.settings.publish_retries
        self.status.info["last_error"] = f"{type(exc).__name__}: {exc} (retry {attempt}/{n})"
        self.status.info["reason"] = f"Label Studio API error, retrying ({attempt}/{n})"


def run_job(ctx: JobContext, job: Job) -> None:
    kind, argument = job
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


# ---------------------------------------------------------------------------- a training round
def read_labels(ctx: JobContext, tasks: list[dict]) -> tuple[dict[str, str], dict[str, dict], int]:
    """(task id -> label, task id -> task, number of labels not in the config) from Label Studio's
    tasks; a label is the canonical answer string of ``layout.py`` for several groups / multi-label."""
    state = ctx.state
    labeled, by_id, unknown = {}, {}, 0
    for task in tasks:
        label = task_answer(task["annotations"], state.config)
        if label is None:
            continue
        if bad := unknown_labels(label, state.config):
            unknown += 1
            log.warning(
                "project %s, task %s: label(s) %s not in the label config %s; not used for training",
                state.key,
                task["id"],
                bad,
                list(state.config.labels),
            )
            continue
        labeled[str(task["id"])] = label
        by_id[str(task["id"])] = task
    return labeled, by_id, unknown


def examples_for(
    ctx: JobContext, model, tasks: list[dict], labeled: dict[str, str], previous: dict[str, str]
) -> list[Example]:
    """Training examples: cached trunk activations, or images when training augments them."""
    state, augment = ctx.state, ctx.settings.train_augment != "none"
    if augment:
        items = ctx.scorer.images(state, model, tasks)
    else:
        items = ctx.scorer.trunk_activations(state, model, tasks)
    out = []
    for task, item in zip(tasks, items):
        key = str(task["id"])
        if isinstance(item, ImageError):
            log.warning(
                "project %s, task %s: labeled but its image is unusable (%s); not used for training",
                state.key,
                key,
                item,
            )
            continue
        label = labeled[key]
        if model.layout is None:
            example = Example(key, model.labels.index(label), is_new=previous.get(key) != label, answer=label)
        else:
            example = Example(
                key,
                -1,
                is_new=previous.get(key) != label,
                answer=label,
                target=model.layout.target(model.layout.parse(label)),
            )
        if augment:
            example.image = item
        else:
            example.trunk = item
        out.append(example)
    return out


def prequential(served, examples: list[Example]) -> dict:
    """How many of this round's new labels the serving version predicted (test, then train:
    core/stopping.py); the dashboard's learning curve, which needs no held-out set."""
    new = [e for e in examples if e.is_new]
    if not new:
        return {"n": 0, "agree": 0}
    z = torch.stack([review.trunk_of(served, e) for e in new])
    probs = forward_batches(served, z, {Need.PROBS}, (), 64)["probs"]
    predicted = served.decode(probs)
    if served.layout is None:
        return {"n": len(new), "agree": sum(p == e.answer for p, e in zip(predicted, new))}
    layout = served.layout  # every group the annotation answers, each multi-label set exactly
    return {"n": len(new), "agree": sum(layout.agrees(p, layout.parse(e.answer)) for p, e in zip(predicted, new))}


def train(ctx: JobContext, labeled: dict[str, str], by_id: dict[str, dict], round_: int):
    """Fine-tune a copy of the served model on ``labeled``; returns (model, examples, metrics, dropped)."""
    state, s = ctx.state, ctx.settings
    with state.lock:
        served = ctx.projects.model(state).clone()
    served.set_labels(state.config.labels, state.config.layout)
    examples = examples_for(ctx, served, [by_id[k] for k in sorted(labeled, key=int)], labeled, state.labels_used)
    if not examples:
        raise RuntimeError("none of the labeled tasks has a usable image")
    agreement = prequential(served, examples)  # before training: the version that served these tasks
    model = served.clone() if s.train_drop_harmful else served  # dropout retrains from ``served``
    metrics = fine_tune(model, examples, s.train_config(seed=s.seed + round_))
    dropped: list[dict] = []
    if s.train_drop_harmful and model.structured:
        log.warning(
            "project %s: TRAIN_DROP_HARMFUL needs one single-choice <Choices>; not applied to %s",
            state.key,
            state.config.layout.describe(),
        )
    elif s.train_drop_harmful:  # data dropout on the head trained on the new labels, then train without them
        kept, dropped = review.drop_harmful(model, examples, s.train_weight_decay, s.seed, s.batch_size)
        if dropped:
            log.info("project %s: influence-based dropout leaves out %d labels", state.key, len(dropped))
            examples, model = kept, served
            metrics = fine_tune(model, examples, s.train_config(seed=s.seed + round_))
    metrics["prequential"] = agreement
    return model, examples, metrics, dropped


def _annotation_stamp(task: dict) -> str:
    """When the task's annotations were last saved (Label Studio's updated_at of the newest)."""
    return max(
        (
            str(a.get("updated_at") or a.get("id") or "")
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ),
        default="",
    )


def _touched(flagged: dict[str, dict], by_id: dict[str, dict]) -> set[str]:
    """Flagged tasks whose annotations were saved since they were flagged, or that lost them."""
    return {t for t, f in flagged.items() if t not in by_id or _annotation_stamp(by_id[t]) != f.get("stamp")}


def review_labels(ctx: JobContext, model, examples: list[Example], by_id: dict[str, dict]) -> list[dict]:
    """The annotations to review after a round: the ``REVIEW_TOP`` the trained head finds least
    plausible among those it gives p(label) < ``REVIEW_MAX_P`` (a few correct labels are not all
    suspicious), minus those a person saved again since they were flagged (confirmed, while the
    label stays). Kept in ``review.json``; mirrored to the project's review tab (``tabs.py``)."""
    s, state, store = ctx.settings, ctx.state, ctx.projects.store
    ranked = review.review(model, examples, s.review_method, len(examples), s.train_weight_decay, s.seed, s.batch_size)
    saved = store.read_json(state.key, "review.json") or {}
    flagged, confirmed = saved.get("flagged") or {}, saved.get("confirmed") or {}
    label_of = {e.key: e.answer for e in examples}
    for task in _touched(flagged, by_id) & set(by_id):
        confirmed[task] = label_of.get(task)  # saved again (same or new label) after it was flagged
    confirmed = {t: label for t, label in confirmed.items() if label is not None and label_of.get(t) == label}
    items = [r for r in ranked if r.get("p_label", 0.0) < s.review_max_p and confirmed.get(r["task"]) != r["label"]]
    items = items[: s.review_top]
    store.write_json(
        state.key,
        "review.json",
        {
            "flagged": {r["task"]: {"label": r["label"], "stamp": _annotation_stamp(by_id[r["task"]])} for r in items},
            "confirmed": confirmed,
        },
    )
    _sync_review_tab(ctx, items)
    return items


def refresh_review(ctx: JobContext, labeled: dict[str, str], by_id: dict[str, dict]) -> None:
    """Between rounds (labels saved again without a change, which trains nothing): flagged tasks
    that were saved again, or lost their label, leave the review list and its tab."""
    store, key = ctx.projects.store, ctx.state.key
    saved = store.read_json(key, "review.json") or {}
    flagged, confirmed = saved.get("flagged") or {}, saved.get("confirmed") or {}
    touched = _touched(flagged, by_id)
    if not touched:
        return
    for task in touched:
        if task in labeled:
            confirmed[task] = labeled[task]
    items = [r for r in ctx.status.info.get("review") or [] if r["task"] not in touched]
    store.write_json(
        key, "review.json", {"flagged": {t: f for t, f in flagged.items() if t not in touched}, "confirmed": confirmed}
    )
    log.info("project %s: %d reviewed annotation(s) confirmed or changed", key, len(touched))
    _sync_review_tab(ctx, items)
    ctx.status.info["review"] = items  # after the tab: /status never runs ahead of Label Studio


def _sync_review_tab(ctx: JobContext, items: list[dict]) -> None:
    if not ctx.settings.label_studio_tabs:
        return
    try:
        done = tabs.sync_review_tab(ctx.api(), [r["task"] for r in items])
        log.info("project %s: review tab %s (%d task(s))", ctx.state.key, done, len(items))
    except Exception as exc:  # advice: never fails the round
        log.warning("project %s: cannot update the review tab in Label Studio: %s", ctx.state.key, exc)


def run_round(ctx: JobContext, force: bool) -> None:
    state, status = ctx.state, ctx.status
    status.set("running", "reading labels from Label Studio")
    read_started = time.perf_counter()
    api = ctx.api()
    tasks = ctx.call(lambda: api.tasks(state.listing), "listing tasks")
    read_seconds = round(time.perf_counter() - read_started, 3)
    labeled, by_id, unknown = read_labels(ctx, tasks)
    previous = state.labels_used
    changed = sum(1 for k, v in labeled.items() if previous.get(k) != v) + sum(1 for k in previous if k not in labeled)
    if not labeled:
        return status.set("idle", "no labeled tasks yet")
    if changed < ctx.settings.train_min_new_labels and not force:
        if ctx.settings.review_top > 0:
            refresh_review(ctx, labeled, by_id)
        return status.set(
            "idle", f"{changed} changed label(s), TRAIN_MIN_NEW_LABELS={ctx.settings.train_min_new_labels}"
        )
    started = time.perf_counter()
    status.set("running", f"training on {len(labeled)} labels ({changed} changed)")
    round_ = state.round + 1
    model, examples, metrics, dropped = train(ctx, labeled, by_id, round_)
    metrics.update(
        labels_used=len(examples), labels_changed=changed, unknown_labels=unknown, dropped_by_influence=len(dropped)
    )
    used = {e.key: e.answer for e in examples}
    version, checkpoint, seq = ctx.projects.save_version(state, model, round_, used, metrics)
    version = ctx.projects.serve(state, model, round_, used, checkpoint, seq)
    ctx.scorer.set_labeled(state, [review.trunk_of(model, e) for e in examples])
    status.info["dropped_by_influence"] = dropped
    if ctx.settings.review_top > 0:
        try:
            status.info["review"] = review_labels(ctx, model, examples, by_id)
        except Exception as exc:  # a review is advice: it must never fail a round
            log.warning("project %s: annotation review failed: %s", state.key, exc)
    status.info["training_runs"] += 1
    status.info["last_round"] = {
        "round": round_,
        "version": version,
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "train_seconds": round(metrics["seconds"], 3),
        "labels_used": len(examples),
        "labels_changed": changed,
        "round_seconds": None,
        "read_seconds": read_seconds,
    }
    log.info(
        "project %s: round t=%d trained on %d labels in %.1fs (loss %.3f -> %.3f): %s",
        state.key,
        round_,
        len(examples),
        metrics["seconds"],
        metrics["loss_first"],
        metrics["loss_last"],
        version,
    )
    kappa = publish(ctx, tasks, stability=True)
    status.info["last_round"]["round_seconds"] = round(time.perf_counter() - started, 3)
    status.info["last_round"]["publish"] = dict(status.info["publish_progress"].get("timings") or {})
    ctx.projects.store.append_history(
        state.key,
        {
            "round": round_,
            "version": version,
            "time": time.time(),
            "labels": len(examples),
            "labels_changed": changed,
            "per_class": per_class(state.config, used.values()),
            "prequential": metrics["prequential"],
            "kappa": kappa,
            "loss_first": metrics["loss_first"],
            "loss_last": metrics["loss_last"],
            "train_seconds": round(metrics["seconds"], 3),
            "round_seconds": status.info["last_round"]["round_seconds"],
            "strategy": ctx.scorer.strategy_of(state).name,
            "regime": state.pool.strategy_info.get("regime"),
        },
    )


# ---------------------------------------------------------------------------- publishing
def per_class(config, answers) -> dict[str, int]:
    """Labels per output (``group/label`` for several groups): the dashboard's bar chart."""
    return dict(config.layout.per_class(config.layout.parse(a) for a in answers))


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
    trunks = [z for z in ctx.scorer.trunk_activations(state, model, labeled) if not isinstance(z, ImageError)]
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
    With ``stability`` (after a round) returns the stopping signal's κ to the previous version."""
    state, status = ctx.state, ctx.status
    api = ctx.api()
    with state.lock:
        model, version = ctx.projects.model(state), state.version
    status.set("publishing", f"scoring the unlabeled pool for {version}")
    started = clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:  # where a publish spends its time (/status, benchmarks/bench_scale.py)
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    if tasks is None:
        tasks = ctx.call(lambda: api.tasks(state.listing), "listing tasks")
        lap("read_seconds")
    ensure_labeled(ctx, model, tasks)
    pool = unlabeled(state, tasks)
    progress = {"version": version, "scored": 0, "imported": 0, "total": len(pool), "timings": timings}
    status.info["publish_progress"] = progress
    results = ctx.scorer.score(
        state, pool, model, version, reset_pool=True, progress=lambda n: progress.__setitem__("scored", n)
    )
    lap("score_seconds")
    kappa = stability_kappa(ctx, pool, results, version) if stability else None
    complete = write_queue(ctx, api, pool, results, version, progress, lap)
    if ctx.settings.label_studio_tabs:
        try:
            if tabs.ensure_queue_tab(api):
                log.info("project %s: created the Data Manager tab %r", state.key, tabs.QUEUE_TAB)
        except Exception as exc:  # a convenience: never fails the publish
            log.warning("project %s: cannot create the queue tab in Label Studio: %s", state.key, exc)
    if complete and not ctx.round_due():  # a deletion cannot be interrupted: it waits for a quiet moment
        prune_old_versions(ctx, api, version)
        lap("prune_seconds")
    else:  # the next round's version replaces these predictions: it goes first (docs/benchmarks.md)
        progress["interrupted"] = not complete
        log.info(
            "project %s: %s serves the queue (%d of its %d predictions imported); a round is due, so older "
            "versions are pruned after the next publish that completes",
            state.key,
            version,
            progress["imported"],
            len(pool),
        )
    ctx.projects.mark_published(state, version)
    status.info["publishes"] += 1
    progress.update(score_seconds=timings["score_seconds"], seconds=round(time.perf_counter() - started, 3))
    status.set("idle", f"published {version} for {len(pool)} unlabeled tasks")
    log.info(
        "project %s: published %s for %d tasks in %.1fs (scoring %.1fs)",
        state.key,
        version,
        len(pool),
        progress["seconds"],
        timings["score_seconds"],
    )
    return kappa


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
    ctx.call(lambda: api.set_model_version(version, ctx.settings.set_uncertainty_sampling), "setting model_version")
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
            if name != version and _ours(ctx, name):
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


# ---------------------------------------------------------------------------- config and webhook
def check_config(ctx: JobContext) -> None:
    """PROJECT_UPDATED: re-read the label config from Label Studio (never from the event)."""
    state = ctx.state
    project = ctx.call(lambda: ctx.api().project(), "reading the project")
    try:
        config = parse_label_config(project.get("label_config") or "")
    except LabelConfigError as exc:
        ctx.status.info["last_error"] = f"label config not supported: {exc}"
        log.error(
            "project %s: the label config in Label Studio is not supported (%s); the previous model keeps serving",
            state.key,
            exc,
        )
        return
    if ctx.projects.update_config(state, config):
        ctx.projects.save_registration(state)
        log.info("project %s: label config changed (labels %s): %s", state.key, list(config.labels), state.version)


def secure_webhook(ctx: JobContext) -> None:
    """Put this project's secret header on the webhooks Label Studio created for this backend
    (the ones at <url>/webhook of an ML backend connection whose /health is this backend's)."""
    api = ctx.api()
    ctx.status.set("securing", "setting the webhook's authentication header in Label Studio")
    try:
        _set_webhook_header(ctx, api, ctx.webhook_secret())
    finally:
        ctx.status.set("idle", "")


def _set_webhook_header(ctx: JobContext, api: ProjectAPI, secret: str) -> None:
    key = ctx.state.key
    # On a first connection Label Studio calls /setup before it saves the connection and creates
    # its webhook: poll for them for a few seconds before giving up (and retrying later).
    deadline = time.monotonic() + 10.0
    while True:
        urls = [u.rstrip("/") for u in api.ml_backend_urls() if u]
        mine = {u + "/webhook" for u in urls if _is_this_backend(u, ctx.instance_id)}
        hooks = [
            h for h in api.webhooks() if str(h.get("url") or "").rstrip("/") in mine and str(h.get("project")) == key
        ]
        if hooks or time.monotonic() > deadline or ctx.stopped():
            break
        time.sleep(0.5)
    if not mine:
        raise RuntimeError(
            f"none of the project's ML backend connections ({len(urls)}) reaches this backend's "
            "/health; set the webhook header by hand (README, Security)"
        )
    if not hooks:
        undotted = [
            u for u in sorted(mine) if "." not in (urlsplit(u).hostname or "") and urlsplit(u).hostname != "localhost"
        ]
        if undotted:  # Django's URL validator refuses such a host: Label Studio created no webhook, silently
            raise RuntimeError(
                f"Label Studio created no webhook for {undotted[0]}: it refuses webhook URLs whose "
                "host has no dot; connect the backend by a name with a dot (e.g. "
                "http://backend.internal:9090 in docker compose) or an IP address"
            )
        raise RuntimeError("Label Studio has no webhook for this backend's connection yet")
    changed = 0
    for hook in hooks:
        headers = dict(hook.get("headers") or {})
        if headers.get(HEADER) != secret:
            headers[HEADER] = secret
            api.set_webhook_headers(hook["id"], headers)
            changed += 1
    ctx.status.info["webhook"] = f"secured ({len(hooks)} webhook(s))"
    log.info("project %s: webhook authentication set on %d of %d webhook(s)", key, changed, len(hooks))


def _is_this_backend(url: str, instance_id: str) -> bool:
    try:
        answer = requests.get(f"{url}/health", timeout=3).json()
    except (requests.RequestException, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("instance") == instance_id
