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
from urllib.parse import urlsplit

import requests
import torch

from strategies import Need, review_annotations
from strategies.influence import label_loss

from .errors import ImageError, LabelConfigError, UnknownProject
from .label_config import parse_label_config
from .labels import resolve_label
from .ls_client import ProjectAPI, api_status
from .security import HEADER
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
        self.task_hints: set[int] = set()
        self.config_requested = False
        self.secure_requested = False
        self.secure_attempts = 0
        self.last_secure = -1e9
        self.last_event = 0.0
        self.stopped = False
        self.retry: tuple | None = None  # (job, argument) of a failed job, re-run at retry_at
        self.retry_at = 0.0
        self.backoff = 0.0
        self.info: dict = {"state": "idle", "reason": "", "training_runs": 0, "failed_runs": 0,
                           "publishes": 0, "last_round": None, "publish_progress": None, "last_error": None,
                           "webhook": "not secured yet", "retry_in_s": None}
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

    def tasks_created(self, task_ids: list[int]) -> None:
        """Hints: the tasks are re-read from Label Studio (and must belong to this project)."""
        with self.cond:
            self.task_hints.update(task_ids[:10_000])
            if not task_ids:  # an event without ids: publish whatever lacks a prediction
                self.publish_requested = True
            self.cond.notify()

    def request_publish(self) -> None:
        with self.cond:
            self.publish_requested = True
            self.cond.notify()

    def request_config_check(self) -> None:
        with self.cond:
            self.config_requested = True
            self.cond.notify()

    def request_secure(self, every_s: float = 60.0) -> None:
        """Check the project's webhook header, at most once per ``every_s`` seconds."""
        with self.cond:
            if time.monotonic() - self.last_secure >= every_s and not self.secure_requested:
                self.secure_requested, self.secure_attempts = True, 0
                self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def _set(self, state: str, reason: str = "") -> None:
        self.info["state"], self.info["reason"] = state, reason

    # ------------------------------------------------------------------ the loop
    def _pending(self) -> bool:
        return bool(self.labels_dirty or self.publish_requested or self.task_hints or self.config_requested
                    or self.secure_requested or self.stopped)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self._pending():
                    if self.retry is not None:  # a failed job is retried in the background, with back-off
                        wait = self.retry_at - time.monotonic()
                        if wait <= 0:
                            self._rearm()
                            continue
                        self.info["retry_in_s"] = round(wait, 1)
                        self.cond.wait(wait)
                    else:
                        self.cond.wait()
                if self.stopped:
                    return
                if self.config_requested:
                    self.config_requested = False
                    job = ("config", None)
                elif self.secure_requested:  # before anything else: events are refused until it is done
                    self.secure_requested = False
                    job = ("secure", None)
                elif self.labels_dirty:  # debounce: wait for a quiet period
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
                    ids, self.task_hints = sorted(self.task_hints), set()
                    job = ("tasks", ids)
            try:
                if job[0] == "round":
                    self._round(job[1])
                elif job[0] == "publish":
                    self._publish()
                elif job[0] == "tasks":
                    self._publish_tasks(job[1])
                elif job[0] == "config":
                    self._check_config()
                else:
                    self._secure_webhook()
                with self.cond:
                    if self.retry is not None and self.retry[0] == job[0]:
                        self.retry, self.backoff, self.info["retry_in_s"] = None, 0.0, None
                # The served version can move on during a job (a grown label config): publish it too.
                if self.learner.wants_publish(self.state):
                    self.request_publish()
            except Exception as exc:
                self._failed(job, exc)

    def _failed(self, job: tuple, exc: Exception) -> None:
        self.info["failed_runs"] += job[0] == "round"
        self.info["last_error"] = f"{type(exc).__name__}: {exc}"
        status = api_status(exc) or (api_status(exc.__cause__) if exc.__cause__ is not None else None)
        if status == 404 and job[0] != "tasks":  # the project is gone: nothing to retry
            self._set("failed", f"Label Studio has no project {self.state.key} any more; nothing is retried")
            log.error("project %s: %s failed: Label Studio has no such project any more", self.state.key, job[0])
            return
        if job[0] == "secure":
            self.info["webhook"] = f"not secured: {exc}"
            self.secure_attempts += 1
            if self.secure_attempts >= 6:  # the next /setup from Label Studio tries again
                log.warning("project %s: webhook not secured: %s", self.state.key, exc)
                return
        with self.cond:
            self.backoff = min(self.settings.recovery_max_s, max(5.0, self.backoff * 2))
            self.retry, self.retry_at = job, time.monotonic() + self.backoff
            self.info["retry_in_s"] = round(self.backoff, 1)
        self._set("failed", f"{job[0]} failed: {type(exc).__name__}: {exc}; the previous model keeps serving, "
                            f"retrying in {self.backoff:g}s")
        log.error("project %s: %s failed (retrying in %gs): %s\n%s", self.state.key, job[0], self.backoff, exc,
                  traceback.format_exc())

    def _rearm(self) -> None:
        """Under ``cond``: turn the failed job back into the flag that runs it."""
        kind, argument = self.retry
        if kind == "round":
            self.labels_dirty, self.force = True, self.force or bool(argument)
            self.last_event = 0.0  # no debounce for a retry
        elif kind == "publish":
            self.publish_requested = True
        elif kind == "tasks":
            self.task_hints.update(argument)
        elif kind == "config":
            self.config_requested = True
        else:
            self.secure_requested = True
        self.retry_at = time.monotonic() + 1e9  # until it fails again (or succeeds and clears it)

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
        """Influence-based data dropout (docs/methods.md §6): drop the examples whose up-weighting would
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

    def _publish_tasks(self, task_ids: list[int]) -> None:
        """New tasks (TASKS_CREATED): re-read the named tasks from Label Studio (ids that are not
        this project's are dropped), score the unlabeled ones with the served model and import
        their predictions. Many ids, or a version not yet published, re-publish the whole pool."""
        state, service = self.state, self.service
        if state.published_version is None or state.published_version != state.version or len(task_ids) > 200:
            return self._publish()
        with state.lock:
            model, version = service.model(state), state.version
        api = self._api()
        tasks = []
        for task_id in task_ids:
            try:
                task = retry(lambda: api.task(task_id), self.settings.publish_retries,
                             f"project {state.key}: reading task {task_id}", self._note_retry)
            except PublishError as exc:
                if api_status(exc.__cause__) == 404:
                    continue
                raise
            if task is not None and resolve_label(task["annotations"], state.config.from_name) is None:
                tasks.append(task)
        if len(tasks) < len(task_ids):
            log.info("project %s: %d of %d task id(s) of a TASKS_CREATED event are not unlabeled tasks of this "
                     "project; ignored", state.key, len(task_ids) - len(tasks), len(task_ids))
        if not tasks:
            return
        self._set("publishing", f"scoring {len(tasks)} new task(s)")
        results = service.score(state, tasks, model, version)
        self._import(api, tasks, results, version, replace=False)
        self._set("idle", f"published {version} for {len(tasks)} new task(s)")

    def _check_config(self) -> None:
        """PROJECT_UPDATED: re-read the label config from Label Studio (never from the event)."""
        state = self.state
        project = retry(lambda: self._api().project(), self.settings.publish_retries,
                        f"project {state.key}: reading the project", self._note_retry)
        try:
            config = parse_label_config(project.get("label_config") or "")
        except LabelConfigError as exc:
            self.info["last_error"] = f"label config not supported: {exc}"
            log.error("project %s: the label config in Label Studio is not supported (%s); the previous model "
                      "keeps serving", state.key, exc)
            return
        if self.service.update_config(state, config):
            self.service._register(state)
            log.info("project %s: label config changed (labels %s): %s", state.key, list(config.labels), state.version)

    def _secure_webhook(self) -> None:
        """Put this project's secret header on the webhooks Label Studio created for this backend
        (the ones at <url>/webhook of an ML backend connection whose /health is this backend's)."""
        state, service = self.state, self.service
        self.last_secure = time.monotonic()
        api = self._api()
        secret = service.webhook_secrets.for_project(state.key)
        if service.secrets is not None:
            service.secrets.add(secret)  # masked should a library ever log it
        self._set("securing", "setting the webhook's authentication header in Label Studio")
        try:
            self._set_webhook_header(api, secret)
        finally:
            self._set("idle", "")

    def _set_webhook_header(self, api: ProjectAPI, secret: str) -> None:
        state = self.state
        # On a first connection Label Studio calls /setup before it saves the connection and creates
        # its webhook: poll for them for a few seconds before giving up (and retrying later).
        deadline = time.monotonic() + 10.0
        while True:
            urls = [u.rstrip("/") for u in api.ml_backend_urls() if u]
            mine = {u + "/webhook" for u in urls if self._is_this_backend(u)}
            hooks = [h for h in api.webhooks() if str(h.get("url") or "").rstrip("/") in mine
                     and str(h.get("project")) == state.key]
            if hooks or time.monotonic() > deadline or self.stopped:
                break
            time.sleep(0.5)
        if not mine:
            raise RuntimeError(f"none of the project's ML backend connections ({len(urls)}) reaches this backend's "
                               "/health; set the webhook header by hand (README, Security)")
        if not hooks:
            undotted = [u for u in sorted(mine) if "." not in (urlsplit(u).hostname or "") and urlsplit(u).hostname != "localhost"]
            if undotted:  # Django's URL validator refuses such a host: Label Studio created no webhook, silently
                raise RuntimeError(f"Label Studio created no webhook for {undotted[0]}: it refuses webhook URLs whose "
                                   "host has no dot; connect the backend by a name with a dot (e.g. "
                                   "http://backend.internal:9090 in docker compose) or an IP address")
            raise RuntimeError("Label Studio has no webhook for this backend's connection yet")
        changed = 0
        for hook in hooks:
            headers = dict(hook.get("headers") or {})
            if headers.get(HEADER) != secret:
                headers[HEADER] = secret
                api.set_webhook_headers(hook["id"], headers)
                changed += 1
        self.info["webhook"] = f"secured ({len(hooks)} webhook(s))"
        log.info("project %s: webhook authentication set on %d of %d webhook(s)", state.key, changed, len(hooks))

    def _is_this_backend(self, url: str) -> bool:
        try:
            answer = requests.get(f"{url}/health", timeout=3).json()
        except (requests.RequestException, ValueError):
            return False
        return isinstance(answer, dict) and answer.get("instance") == self.service.instance_id


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

    def connected(self, state: ProjectState, publish: bool = True) -> None:
        """Called on /setup (from Label Studio, for a confirmed project): make sure the project's
        webhook is secured and, with ``publish``, that Label Studio has the served version."""
        if not self.service.connection.configured:
            return
        worker = self.worker(state)
        worker.request_secure()
        with worker.cond:
            idle = worker.info["state"] in ("idle", "failed") and not (worker.publish_requested or worker.labels_dirty)
        if publish and state.published_version != state.version and idle:
            worker.request_publish()

    def resume(self) -> None:
        """At process start: re-publish every restored project whose served version Label Studio
        may lack (a crash mid-publish, or Label Studio down at the time)."""
        for state in list(self.service.projects.values()):
            if self.wants_publish(state):
                log.info("project %s: %s is not known to be published; publishing it", state.key, state.version)
                self.worker(state).request_publish()

    def wants_publish(self, state: ProjectState) -> bool:
        """Label Studio lacks the served version and should get it: a trained version always;
        version 0 only with PUBLISH_ON_CONNECT, or when an earlier version was published."""
        return (self.service.connection.configured and state.published_version != state.version
                and (state.round > 0 or self.service.settings.publish_on_connect or bool(state.published_version)))

    def handle(self, action: str, key: str, task_ids: list[int] | None = None) -> str:
        """Route one authenticated webhook event (a hint: project id + action). Returns what was
        done. Events for a project this backend was never set up for create nothing."""
        state = self.service.projects.get(key)
        if state is None:
            raise UnknownProject(f"project {key} is not connected to this backend; event ignored")
        if not self.service.connection.configured:
            return "ignored (LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are needed to learn)"
        worker = self.worker(state)
        if action in LABEL_EVENTS:
            worker.labels_changed()
            return "training scheduled"
        if action == "START_TRAINING":
            worker.labels_changed(force=True)
            return "training scheduled"
        if action == "START_TRAINING_UNAUTHENTICATED":
            worker.labels_changed(force=False)
            return "label check scheduled (unauthenticated Start Training cannot force a round; see README, Security)"
        if action == "TASKS_CREATED":
            worker.tasks_created(list(task_ids or []))
            return "scoring scheduled"
        if action == "PROJECT_UPDATED":
            worker.request_config_check()
            return "config check scheduled"
        return "ignored"

    def status(self, key: str) -> dict:
        worker = self.workers.get(key)
        if worker is None:
            return {"state": "idle", "reason": "", "training_runs": 0}
        return dict(worker.info)

    def stop(self) -> None:
        for worker in list(self.workers.values()):
            worker.stop()
