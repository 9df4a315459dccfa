"""The learning loop: events -> (debounced, single-flight) training round -> checkpoint -> switch
the served model -> score the whole unlabeled pool -> publish it to Label Studio under the new
version -> move the project to that version, so that its uncertainty-sampling queue re-orders.

One worker thread per project; webhooks only set flags and return. Label Studio is the source of
truth: every round re-reads the project's tasks and annotations, so updates, deletions, skips and
restarts are all handled the same way.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Callable

import torch

from strategies import Need, review_annotations
from strategies.influence import label_loss

from .errors import ImageError
from .labels import resolve_label
from .ls_client import ProjectAPI
from .service import ModelService, ProjectState
from .trainer import Example, TrainConfig, fine_tune

log = logging.getLogger(__name__)

LABEL_EVENTS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED",
                          "ANNOTATIONS_DELETED", "ANNOTATION_DELETED"})


class PublishError(RuntimeError):
    pass


def retry(call: Callable, attempts: int, what: str, on_retry: Callable[[int, Exception], None] | None = None,
          base_delay: float = 0.5):
    """Call with exponential back-off; re-raises the last error after ``attempts`` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts:
                raise PublishError(f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}") from exc
            delay = min(30.0, base_delay * 2 ** (attempt - 1))
            log.warning("%s failed (attempt %d/%d: %s: %s); retrying in %.1fs", what, attempt, attempts,
                        type(exc).__name__, exc, delay)
            if on_retry is not None:
                on_retry(attempt, exc)
            time.sleep(delay)


class ProjectWorker:
    def __init__(self, learner: "Learner", state: ProjectState) -> None:
        self.learner = learner
        self.service = learner.service
        self.settings = learner.service.settings
        self.state = state
        self.cond = threading.Condition()
        self.labels_dirty = False
        self.force = False
        self.publish_requested = False
        self.new_tasks: dict[int, dict] = {}
        self.last_event = 0.0
        self.stopped = False
        self.info: dict = {"state": "idle", "reason": "", "training_runs": 0, "failed_runs": 0,
                           "publishes": 0, "last_round": None, "publish_progress": None, "last_error": None}
        self.thread = threading.Thread(target=self._run, name=f"learner-{state.key}", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ signals (never block)
    def labels_changed(self, force: bool = False) -> None:
        with self.cond:
            self.labels_dirty = True
            self.force = self.force or force
            self.last_event = time.monotonic()
            if self.info["state"] in ("idle", "failed"):
                self._set("waiting", f"debouncing annotation events ({self.settings.train_debounce_s:g}s)")
            self.cond.notify()

    def tasks_created(self, tasks: list[dict]) -> None:
        with self.cond:
            for t in tasks:
                if isinstance(t, dict) and "id" in t:
                    self.new_tasks[t["id"]] = t
            self.cond.notify()

    def request_publish(self) -> None:
        with self.cond:
            self.publish_requested = True
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def _set(self, state: str, reason: str = "") -> None:
        self.info["state"], self.info["reason"] = state, reason

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.labels_dirty or self.publish_requested or self.new_tasks or self.stopped):
                    self.cond.wait()
                if self.stopped:
                    return
                if self.labels_dirty:  # debounce: wait for a quiet period
                    while not self.stopped:
                        remaining = self.last_event + self.settings.train_debounce_s - time.monotonic()
                        if remaining <= 0:
                            break
                        self.cond.wait(remaining)
                    if self.stopped:
                        return
                    force, self.force, self.labels_dirty = self.force, False, False
                    job = ("round", force)
                elif self.publish_requested:
                    self.publish_requested = False
                    job = ("publish", None)
                else:
                    tasks, self.new_tasks = list(self.new_tasks.values()), {}
                    job = ("tasks", tasks)
            try:
                if job[0] == "round":
                    self._round(job[1])
                elif job[0] == "publish":
                    self._publish()
                else:
                    self._publish_tasks(job[1])
                # The served version can move on during a job (a grown label config): publish it too.
                if self.state.published_version != self.state.version and self.service.connection.configured:
                    self.request_publish()
            except Exception as exc:
                self.info["failed_runs"] += job[0] == "round"
                self.info["last_error"] = f"{type(exc).__name__}: {exc}"
                self._set("failed", f"{job[0]} failed: {type(exc).__name__}: {exc}; the previous model keeps serving")
                log.error("project %s: %s failed: %s\n%s", self.state.key, job[0], exc, traceback.format_exc())

    # ------------------------------------------------------------------ jobs
    def _api(self) -> ProjectAPI:
        if not self.service.connection.configured:
            raise PublishError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are needed to read labels and publish")
        return ProjectAPI(self.service.connection, int(self.state.key))

    def _tasks(self) -> list[dict]:
        return retry(self._api().tasks, self.settings.publish_retries, f"project {self.state.key}: listing tasks")

    def _round(self, force: bool) -> None:
        state, service = self.state, self.service
        self._set("running", "reading labels from Label Studio")
        tasks = self._tasks()
        labeled: dict[str, str] = {}
        by_id = {}
        unknown = 0
        for task in tasks:
            label = resolve_label(task["annotations"], state.config.from_name)
            if label is None:
                continue
            if label not in state.config.labels:
                unknown += 1
                log.warning("project %s, task %s: label %r is not in the label config %s; not used for training",
                            state.key, task["id"], label, list(state.config.labels))
                continue
            labeled[str(task["id"])] = label
            by_id[str(task["id"])] = task
        previous = state.labels_used
        changed = sum(1 for k, v in labeled.items() if previous.get(k) != v) + sum(1 for k in previous if k not in labeled)
        if not labeled:
            self._set("idle", "no labeled tasks yet")
            return
        if changed < self.settings.train_min_new_labels and not force:
            self._set("idle", f"{changed} changed label(s), TRAIN_MIN_NEW_LABELS={self.settings.train_min_new_labels}")
            return

        started = time.perf_counter()
        self._set("running", f"training on {len(labeled)} labels ({changed} changed)")
        with state.lock:
            served = service.model(state)
            model = served.clone()
        model.set_labels(state.config.labels)
        ordered = sorted(labeled, key=int)
        examples = self._examples(model, [by_id[k] for k in ordered], labeled, previous)
        if not examples:
            raise RuntimeError("none of the labeled tasks has a usable image")
        round_ = state.round + 1
        config = TrainConfig(
            steps=self.settings.train_steps, lr=self.settings.train_lr, weight_decay=self.settings.train_weight_decay,
            batch_size=self.settings.train_batch_size, new_fraction=self.settings.train_new_fraction,
            augment=self.settings.train_augment, amp=self.settings.train_amp, seed=self.settings.seed + round_,
        )
        dropped: list[dict] = []
        if self.settings.train_drop_harmful:
            examples, dropped = self._drop_harmful(model, examples)
        metrics = fine_tune(model, examples, config)
        metrics.update(labels_used=len(examples), labels_changed=changed, unknown_labels=unknown,
                       dropped_by_influence=len(dropped))
        used = {e.key: model.labels[e.label] for e in examples}
        version, checkpoint = service.save_version(state, model, round_, used, metrics)
        version = service.serve(state, model, round_, used, checkpoint)
        with state.lock:
            state.labeled_trunk = [self._trunk(model, e) for e in examples]
            state.dropped = dropped
        if self.settings.review_top > 0:
            try:
                state.review = self._review(model, examples)
            except Exception as exc:  # a review is advice: it must never fail a round
                log.warning("project %s: annotation review failed: %s", state.key, exc)
        self.info["training_runs"] += 1
        self.info["last_round"] = {"round": round_, "version": version, "loss_first": metrics["loss_first"],
                                   "loss_last": metrics["loss_last"], "train_seconds": round(metrics["seconds"], 3),
                                   "labels_used": len(examples), "labels_changed": changed,
                                   "round_seconds": None}
        log.info("project %s: round t=%d trained on %d labels in %.1fs (loss %.3f -> %.3f): %s",
                 state.key, round_, len(examples), metrics["seconds"], metrics["loss_first"], metrics["loss_last"], version)
        self._publish(tasks)
        self.info["last_round"]["round_seconds"] = round(time.perf_counter() - started, 3)

    @staticmethod
    def _trunk(model, example: Example):
        if example.trunk is not None:
            return example.trunk
        return model.trunk(example.image[None])[0]

    def _head_inputs(self, model, examples: list[Example]):
        from .scoring import forward_batches

        z = torch.stack([self._trunk(model, e) for e in examples])
        h = forward_batches(model, z, {Need.EMBEDDINGS}, (), self.settings.batch_size)["embeddings"]
        y = torch.tensor([e.label for e in examples])
        return h, y

    def _drop_harmful(self, model, examples: list[Example]) -> tuple[list[Example], list[dict]]:
        """Influence-based data dropout (METHODS.md §6): drop the examples whose up-weighting would
        raise the K-fold validation loss of the current head (psi > 0)."""
        if len(examples) < 10:
            return examples, []
        h, y = self._head_inputs(model, examples)
        stats = review_annotations(h, y, model.head.weight, model.head.bias, self.settings.train_weight_decay,
                                   seed=self.settings.seed)
        harmful = (stats["psi"] > 0).tolist()
        kept = [e for e, bad in zip(examples, harmful) if not bad]
        if len(kept) < max(2, len(examples) // 2):
            log.warning("project %s: influence would drop %d of %d labels; keeping all of them",
                        self.state.key, len(examples) - len(kept), len(examples))
            return examples, []
        dropped = [{"task": e.key, "label": model.labels[e.label], "psi": round(float(p), 6)}
                   for e, bad, p in zip(examples, harmful, stats["psi"].tolist()) if bad]
        log.info("project %s: influence-based dropout leaves out %d of %d labels", self.state.key, len(dropped),
                 len(examples))
        return kept, dropped

    def _review(self, model, examples: list[Example]) -> list[dict]:
        """The labeled tasks whose annotations look most suspicious to the trained head."""
        h, y = self._head_inputs(model, examples)
        method = self.settings.review_method
        if method == "influence":
            stats = review_annotations(h, y, model.head.weight, model.head.bias, self.settings.train_weight_decay,
                                       seed=self.settings.seed)
            rank = stats["self_influence"]
        else:
            stats = label_loss(h, y, model.head.weight, model.head.bias)
            rank = stats["loss"]
        order = torch.argsort(rank, descending=True, stable=True)[: self.settings.review_top].tolist()
        out = []
        for i in order:
            item = {"task": examples[i].key, "label": model.labels[examples[i].label], "method": method}
            item.update({k: round(float(v[i]), 6) for k, v in stats.items()})
            if method == "influence":
                item["flag"] = bool(stats["psi"][i] > 0 and stats["p_label"][i] < 0.5)
            out.append(item)
        return out

    def _examples(self, model, tasks: list[dict], labeled: dict[str, str], previous: dict[str, str]) -> list[Example]:
        augment = self.settings.train_augment != "none"
        state = self.state
        out = []
        if augment:
            source = self.service.source(state)
            refs = [(t["id"], t["data"].get(state.config.value_key)) for t in tasks]
            items = self.service.loader.load_many(refs, source, transform=model.preprocess)
        else:
            items = self.service.trunk_activations(state, model, tasks)
        for task, item in zip(tasks, items):
            key = str(task["id"])
            if isinstance(item, ImageError):
                log.warning("project %s, task %s: labeled but its image is unusable (%s); not used for training",
                            state.key, key, item)
                continue
            label = labeled[key]
            example = Example(key, model.labels.index(label), is_new=previous.get(key) != label)
            if augment:
                example.image = item
            else:
                example.trunk = item
            out.append(example)
        return out

    def _publish(self, tasks: list[dict] | None = None) -> None:
        state, service = self.state, self.service
        api = self._api()
        with state.lock:
            model, version = service.model(state), state.version
        self._set("publishing", f"scoring the unlabeled pool for {version}")
        tasks = tasks if tasks is not None else self._tasks()
        pool = [t for t in tasks if resolve_label(t["annotations"], state.config.from_name) is None]
        progress = {"version": version, "scored": 0, "imported": 0, "total": len(pool)}
        self.info["publish_progress"] = progress
        started = time.perf_counter()
        results = service.score(state, pool, model, version, reset_pool=True,
                                progress=lambda n: progress.__setitem__("scored", n))
        score_seconds = time.perf_counter() - started
        self._import(api, pool, results, version, progress)
        retry(lambda: api.set_model_version(version, self.settings.set_uncertainty_sampling), self.settings.publish_retries,
              f"project {state.key}: setting model_version", self._note_retry)
        if self.settings.delete_old_predictions:
            self._delete_old(api, version)
        service.mark_published(state, version)
        self.info["publishes"] += 1
        progress.update(score_seconds=round(score_seconds, 3), seconds=round(time.perf_counter() - started, 3))
        self._set("idle", f"published {version} for {len(pool)} unlabeled tasks")
        log.info("project %s: published %s for %d tasks in %.1fs (scoring %.1fs)", state.key, version, len(pool),
                 progress["seconds"], score_seconds)

    def _import(self, api: ProjectAPI, tasks: list[dict], results: list[dict], version: str,
                progress: dict | None = None, replace: bool = True) -> None:
        """Bulk-import predictions in chunks. With ``replace``, the version's existing predictions
        are cleared first, so that re-publishing never leaves a task two predictions of one version."""
        if replace:
            retry(lambda: api.delete_version(version), self.settings.publish_retries,
                  f"project {self.state.key}: clearing {version}", self._note_retry)
        predictions = [{"task": t["id"], "result": r["result"], "score": r["score"], "model_version": version}
                       for t, r in zip(tasks, results)]
        chunk = self.settings.publish_chunk
        for start in range(0, len(predictions), chunk):
            part = predictions[start:start + chunk]
            retry(lambda: api.import_predictions(part), self.settings.publish_retries,
                  f"project {self.state.key}: importing predictions", self._note_retry)
            if progress is not None:
                progress["imported"] = start + len(part)

    def _note_retry(self, attempt: int, exc: Exception) -> None:
        self.info["last_error"] = f"{type(exc).__name__}: {exc} (retry {attempt}/{self.settings.publish_retries})"
        self.info["reason"] = f"Label Studio API error, retrying ({attempt}/{self.settings.publish_retries})"

    def _delete_old(self, api: ProjectAPI, keep: str) -> None:
        for name in api.model_versions():
            if name != keep and str(name).startswith(f"{self.service.base.spec.name}-"):
                retry(lambda n=name: api.delete_version(n), self.settings.publish_retries,
                      f"project {self.state.key}: deleting {name}", self._note_retry)

    def _publish_tasks(self, tasks: list[dict]) -> None:
        """New tasks (TASKS_CREATED): score them with the served model, import their predictions."""
        state, service = self.state, self.service
        if state.published_version is None or state.published_version != state.version:
            return self._publish()
        with state.lock:
            model, version = service.model(state), state.version
        api = self._api()
        self._set("publishing", f"scoring {len(tasks)} new task(s)")
        results = service.score(state, tasks, model, version)
        self._import(api, tasks, results, version, replace=False)
        self._set("idle", f"published {version} for {len(tasks)} new task(s)")


class Learner:
    """Routes events to per-project workers; started by the app factory."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.workers: dict[str, ProjectWorker] = {}
        self._lock = threading.Lock()
        service.learner = self

    def worker(self, state: ProjectState) -> ProjectWorker:
        with self._lock:
            worker = self.workers.get(state.key)
            if worker is None:
                worker = self.workers[state.key] = ProjectWorker(self, state)
            return worker

    def ensure_published(self, state: ProjectState) -> None:
        """Called on /setup: publish the served version once if Label Studio lacks it."""
        if not self.service.connection.configured or not state.key.isdigit():
            return
        worker = self.worker(state)
        with worker.cond:
            idle = worker.info["state"] in ("idle", "failed") and not (worker.publish_requested or worker.labels_dirty)
        if state.published_version != state.version and idle:
            worker.request_publish()

    def handle(self, action: str, payload: dict) -> str:
        """Route one webhook event. Returns what was done (for the response and the log)."""
        project = payload.get("project")
        if project is None:
            return "ignored (no project)"
        try:
            state = self.service.state(project, project.get("label_config") if isinstance(project, dict) else None)
        except Exception as exc:
            return f"ignored ({exc})"
        worker = self.worker(state)
        if action in LABEL_EVENTS:
            worker.labels_changed()
            return "training scheduled"
        if action == "START_TRAINING":
            worker.labels_changed(force=True)
            return "training scheduled"
        if action == "TASKS_CREATED":
            worker.tasks_created(payload.get("tasks") or [])
            return "scoring scheduled"
        if action == "PROJECT_UPDATED":  # service.state() above re-read the label config
            return "config checked"
        return "ignored"

    def status(self, key: str) -> dict:
        worker = self.workers.get(key)
        if worker is None:
            return {"state": "idle", "reason": "", "training_runs": 0}
        return dict(worker.info)

    def stop(self) -> None:
        for worker in list(self.workers.values()):
            worker.stop()
