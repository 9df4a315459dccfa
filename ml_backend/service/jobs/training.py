"""A training round: labels from Label Studio -> fine-tuning -> checkpoint -> serve -> publish
(``publishing.py``), and the annotations it flags for review.

Label Studio is the source of truth: every round re-reads the project's tasks and annotations, so
updates, deletions, skips and restarts are all handled the same way.
"""

from __future__ import annotations

import logging
import time

import torch

from ml_backend.core import review
from ml_backend.core.scoring import forward_batches
from ml_backend.core.trainer import Example, fine_tune
from ml_backend.errors import ImageError
from ml_backend.service import tabs
from ml_backend.service.jobs import head_round
from ml_backend.service.jobs.context import ROUNDS_TRAINED, JobContext
from ml_backend.service.jobs.publishing import publish, unlabeled
from ml_backend.service.labels import prediction_result, task_answer, unknown_labels
from strategies import Need

log = logging.getLogger(__name__)


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
        items = ctx.features.images(state, model, tasks)
    else:
        items = ctx.features.trunk_activations(state, model, tasks)
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


def train(ctx: JobContext, labeled: dict[str, str], by_id: dict[str, dict], round_: int, pool: list | None = None):
    """Fine-tune a copy of the served model on ``labeled``; returns (model, examples, metrics, dropped).
    ``pool``: the unlabeled tasks, for a head-first queue before the fine-tuning (``head_round.py``)."""
    state, s = ctx.state, ctx.settings
    with state.lock:
        served = ctx.projects.model(state).clone()
    served.set_labels(state.config.labels, state.config.layout)
    started = time.perf_counter()
    examples = examples_for(ctx, served, [by_id[k] for k in sorted(labeled, key=int)], labeled, state.labels_used)
    log.info("project %s: %d labeled images ready in %.1fs", state.key, len(examples), time.perf_counter() - started)
    if not examples:
        raise RuntimeError("none of the labeled tasks has a usable image")
    agreement = prequential(served, examples)  # before training: the version that served these tasks
    head = _head_first(ctx, served, examples, pool, round_) if pool is not None else None
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
    metrics["head_queue"] = head
    return model, examples, metrics, dropped


def _head_first(ctx: JobContext, served, examples: list[Example], pool: list, round_: int) -> dict | None:
    """The round's head-first queue (``head_round.py``); a shortcut to the queue that never fails the round."""
    try:
        head = head_round.serve(ctx, served, examples, pool, round_)
    except Exception as exc:
        log.warning("project %s: no head-first queue this round (%s: %s)", ctx.state.key, type(exc).__name__, exc)
        return None
    if head is not None:
        ctx.status.set("running", f"fine-tuning on {len(examples)} labels; {head['version']} serves the queue")
    return head


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
    items = [r for r in ctx.status.review or [] if r["task"] not in touched]
    store.write_json(
        key, "review.json", {"flagged": {t: f for t, f in flagged.items() if t not in touched}, "confirmed": confirmed}
    )
    log.info("project %s: %d reviewed annotation(s) confirmed or changed", key, len(touched))
    _sync_review_tab(ctx, items)
    ctx.status.review = items  # after the tab: /status never runs ahead of Label Studio


def _sync_review_tab(ctx: JobContext, items: list[dict]) -> None:
    if not ctx.settings.label_studio_tabs:
        return
    try:
        api = ctx.api()
        done = tabs.sync_review_tab(api, [r["task"] for r in items])
        version = ctx.projects.identity.backbone + tabs.REVIEW_VERSION_SUFFIX
        reasons = tabs.sync_review_predictions(api, version, items, lambda g: prediction_result(ctx.state.config, g))
        log.info(
            "project %s: review tab %s (%d task(s), %d with the model's guess)",
            ctx.state.key,
            done,
            len(items),
            reasons,
        )
    except Exception as exc:  # advice: never fails the round
        log.warning("project %s: cannot update the review tab in Label Studio: %s", ctx.state.key, exc)


def _list_tasks(ctx: JobContext, api) -> tuple[list[dict], float, float]:
    """Every task, with the annotated ones' annotations; when the reading started (wall clock) and
    how long it took."""
    state, started, read_at, full = ctx.state, time.perf_counter(), time.time(), ctx.state.listing.full
    tasks = ctx.call(lambda: api.tasks(state.listing), "listing tasks")
    seconds = round(time.perf_counter() - started, 3)
    how = "every task listed" if state.listing.full > full else "only new tasks listed"
    parts = ", ".join(f"{name} {s:.1f}s" for name, s in state.listing.parts.items())
    log.info("project %s: read %d tasks in %.1fs (%s: %s)", state.key, len(tasks), seconds, how, parts)
    return tasks, read_at, seconds


def run_round(ctx: JobContext, force: bool) -> None:
    state, status = ctx.state, ctx.status
    status.set("running", "reading labels from Label Studio")
    api = ctx.api()
    tasks, read_at, read_seconds = _list_tasks(ctx, api)
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
    model, examples, metrics, dropped = train(ctx, labeled, by_id, round_, unlabeled(state, tasks))
    metrics.update(labels_used=len(examples), labels_changed=changed, unknown_labels=unknown)
    # labels_read_at (wall clock): every label saved in Label Studio before it is in this version
    # labels_read_until: a label changed between the two may be in it either way (read before or after)
    metrics.update(dropped_by_influence=len(dropped), labels_read_at=round(read_at, 3))
    metrics.update(labels_read_until=round(read_at + read_seconds, 3))
    used = {e.key: e.answer for e in examples}
    version, checkpoint, seq = ctx.projects.save_version(state, model, round_, used, metrics)
    version = ctx.projects.serve(state, model, round_, used, checkpoint, seq)
    ctx.scorer.set_labeled(state, [review.trunk_of(model, e) for e in examples])
    status.dropped_by_influence = dropped
    if ctx.settings.review_top > 0:
        try:
            status.review = review_labels(ctx, model, examples, by_id)
        except Exception as exc:  # a review is advice: it must never fail a round
            log.warning("project %s: annotation review failed: %s", state.key, exc)
    last_round = _record_round(ctx, round_, version, metrics, changed, read_seconds)
    kappa = publish(ctx, tasks, stability=True)
    last_round["round_seconds"] = round(time.perf_counter() - started, 3)
    last_round["publish"] = dict(status.publish_progress.get("timings") or {})
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
            "round_seconds": last_round["round_seconds"],
            "strategy": ctx.scorer.strategy_of(state).name,
            "regime": state.pool.strategy_info.get("regime"),
        },
    )


def _record_round(ctx: JobContext, round_: int, version: str, metrics: dict, changed: int, read_seconds: float) -> dict:
    """The trained round in /status (``last_round``, completed once its publish is done) and the log."""
    ctx.status.training_runs += 1
    ROUNDS_TRAINED["rounds"] += 1  # this process's rounds (/status's worker block)
    ctx.status.last_round = last_round = {
        "round": round_,
        "version": version,
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "train_seconds": round(metrics["seconds"], 3),
        "labels_used": metrics["labels_used"],
        "labels_changed": changed,
        "round_seconds": None,
        "read_seconds": read_seconds,
        "read_parts": dict(ctx.state.listing.parts),  # seconds of each Label Studio read (ProjectAPI.tasks)
        "head_queue": metrics.get("head_queue"),  # the head-first queue served before the fine-tuning, or None
    }
    log.info(
        "project %s: round t=%d trained on %d labels in %.1fs (loss %.3f -> %.3f): %s",
        ctx.state.key,
        round_,
        metrics["labels_used"],
        metrics["seconds"],
        metrics["loss_first"],
        metrics["loss_last"],
        version,
    )
    return last_round


def per_class(config, answers) -> dict[str, int]:
    """Labels per output (``group/label`` for several groups): the dashboard's bar chart."""
    return dict(config.layout.per_class(config.layout.parse(a) for a in answers))
