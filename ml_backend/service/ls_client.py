"""Talking to Label Studio with label-studio-sdk (the maintained client, PAT-aware); what its public
API does not offer goes through ``sdk.py``."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ml_backend.service import pools, sdk

log = logging.getLogger(__name__)


class LabelStudioConnection:
    """Lazily creates one SDK client; hands out a currently valid token for image downloads.

    A Personal Access Token (a JWT refresh token) is exchanged for a short-lived access token by
    the SDK, which refreshes it when it expires; a raw PAT is 401 everywhere. A legacy token is
    used as it is.
    """

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._client = None
        self._lock = threading.Lock()
        self._refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-refresh")
        self._refresh: Future | None = None
        if self.configured:  # its thread from the start, not at the first expiry (docs/benchmarks.md, the soak)
            pools.prestart(self._refresher, 1)

    @property
    def configured(self) -> bool:
        return bool(self.url and self._api_key)

    @property
    def client(self):
        if not self.configured:
            raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must both be set")
        with self._lock:
            if self._client is None:
                from label_studio_sdk import LabelStudio

                # max_retries=0: the learning loop's own back-off (PUBLISH_RETRIES) is the only retry policy
                self._client = LabelStudio(base_url=self.url, api_key=self._api_key, timeout=30, max_retries=0)
            return self._client

    def token(self, wait: float | None = 60.0) -> str | None:
        """The token to put in an Authorization header now. A legacy token is returned as it is;
        a PAT's access token comes from the SDK's cache while it is valid. A refresh (a call to
        Label Studio that can hang for the SDK's 30 s when Label Studio does) runs in a background
        thread, single-flight, and the caller waits at most ``wait`` seconds for it (request paths
        pass a few seconds), then gets a RuntimeError that says so."""
        if not self.configured:
            return None
        tokens = sdk.tokens(self.client)
        if tokens.legacy:
            return self._api_key
        cached, expires = tokens.access_token, tokens.expires
        if cached and expires is not None and expires > datetime.now(timezone.utc) + timedelta(seconds=5):
            return cached
        with self._lock:
            if self._refresh is None or self._refresh.done():
                self._refresh = self._refresher.submit(tokens.refresh)
            refresh = self._refresh
        try:
            return refresh.result(timeout=wait)
        except FutureTimeout:
            raise RuntimeError(f"Label Studio did not answer the access-token refresh within {wait:g}s") from None


UNCERTAINTY_SAMPLING = "Uncertainty sampling"


ANNOTATED = {
    "conjunction": "and",
    "items": [  # Data Manager filter: tasks with an annotation (skipped ones too: they are dropped later)
        # on the annotations themselves (a join), not on the task's counter `total_annotations`, which
        # a recount beside concurrent writes can leave at 0 (_annotated_checked)
        {"filter": "filter:tasks:annotations_ids", "operator": "greater", "type": "Number", "value": 0}
    ],
}

# The annotated tasks in full: their annotations need ``fields=all``; ``include`` (sparse fields) then
# serializes only what the backend reads, not each task's predictions (one per model version) nor the
# Data Manager's computed columns: 2.35x faster (benchmarks/bench_listing.py). Label Studio 1.23 applies
# ``include`` to the nested annotations too, hence their fields in the list (ProjectAPI._annotated
# refuses annotations that come without their result rather than read them as no label).
FULL = {"fields": "all", "include": "id,data,annotations,result,was_cancelled,updated_at"}

UNLABELED = {
    "conjunction": "and",
    "items": [{"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}],
}


# The light listing: each task's id and data alone (``include``, Label Studio's sparse fields), pages of
# 1000. Without ``include``, ``fields=task_only`` still computes some twenty per-task columns of the
# Data Manager (annotators, comment counts, prediction results, ...): 4x slower on LS 1.23 (3000
# tasks: 12 s against 3 s), which a first round after a restart pays in full.
LIGHT = {"fields": "task_only", "include": "id,data", "page_size": 1000}


def newer_than(task_id: int) -> dict:
    """Data Manager filter: the tasks whose id is greater than ``task_id`` (Label Studio's ids only grow)."""
    return {
        "conjunction": "and",
        "items": [{"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": int(task_id)}],
    }


@dataclass
class TaskIndex:
    """One project's tasks (id -> data) as last listed, kept between rounds so that a round lists
    only the tasks created since (``ProjectAPI.tasks``). A task's data edited in place through the
    API is seen at the next full listing: after a restart, or when tasks were deleted."""

    data: dict[int, dict] = field(default_factory=dict)
    full: int = 0  # listings of every task
    incremental: int = 0  # listings of only the new tasks
    parts: dict[str, float] = field(default_factory=dict)  # seconds of each part of the last read


@contextmanager
def _timed(parts: dict[str, float], name: str):
    """Adds the seconds the block took to ``parts[name]`` (what a slow read spent its time on)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        parts[name] = round(parts.get(name, 0.0) + time.perf_counter() - started, 3)


def _check_annotations(tasks: list[dict]) -> None:
    """Every annotation carries its result (a listing's ``include`` that left it out would make
    a labeled task look unlabeled): a RuntimeError that says so, not labels silently lost."""
    for t in tasks:
        for a in t.get("annotations") or []:
            if isinstance(a, dict) and "result" not in a:
                raise RuntimeError(
                    f"Label Studio listed task {t.get('id')}'s annotation {a.get('id')} without its result "
                    f"(fields {sorted(a)}): the backend cannot read labels from this Label Studio version"
                )


def _as_dict(obj) -> dict:
    return obj if isinstance(obj, dict) else obj.model_dump()


class ProjectAPI:  # long: one method per Label Studio call the learning loop makes, and their paging
    """The Label Studio calls the learning loop makes for one project (label-studio-sdk)."""

    annotated_page_size = 100  # larger pages with fields=all: "Expression tree is too large" (LS 1.23, SQLite)

    def __init__(self, connection: LabelStudioConnection, project_id: int) -> None:
        self.connection, self.project_id = connection, int(project_id)

    @property
    def _client(self):
        return self.connection.client

    def tasks(self, index: "TaskIndex | None" = None) -> list[dict]:
        """Every task with its data, and its annotations when it has any (the source of truth for
        labels). The reads follow what changed, not the project's size: the project's task count
        (one request); the tasks newer than the ``index`` of the last listing (``id`` greater than
        its newest, the light listing :data:`LIGHT`) when the count then adds up, else every
        task (a light listing of the same kind: the first time, or after tasks were deleted); then
        only the annotated tasks in full (:data:`ANNOTATED`, by their annotations; :data:`FULL`: their
        id, data and annotations; pages of 100: larger pages with ``fields=all`` make LS 1.23 on
        SQLite fail with "Expression tree is too large"). A task
        annotated between the reads comes with its annotations. Without ``index``, every task."""
        index = index if index is not None else TaskIndex()
        index.parts = parts = {}
        with _timed(parts, "count"):
            project = self.project()
        count, annotations = int(project.get("task_number") or 0), project.get("total_annotations_number")
        if index.data:
            query = json.dumps({"filters": newer_than(max(index.data))})
            with _timed(parts, "new"):
                new = {t["id"]: t.get("data") or {} for t in self._pages({**LIGHT, "query": query})}
            if len(index.data) + len(new) == count:
                index.data.update(new)
                index.incremental += 1
            else:
                log.info(
                    "project %s: %d tasks known + %d new != %d in Label Studio (tasks were deleted): "
                    "listing every task again",
                    self.project_id,
                    len(index.data),
                    len(new),
                    count,
                )
                index.data = {}
        if not index.data:
            with _timed(parts, "every"):
                index.data = {t["id"]: t.get("data") or {} for t in self._pages(LIGHT)}
            index.full += 1
        out = {i: {"id": i, "data": data, "annotations": []} for i, data in index.data.items()}
        for t in self._annotated_checked(annotations, parts):
            out[t["id"]] = {
                "id": t["id"],
                "data": t.get("data") or {},
                "annotations": [_as_dict(a) for a in (t.get("annotations") or [])],
            }
        return list(out.values())

    def sample_unlabeled(self, n: int, page_size: int = 100) -> tuple[list[dict], int]:
        """``n`` unlabeled tasks spread evenly over the project (about ten pages of the unlabeled
        listing at evenly spaced page numbers: a few requests, whatever the project's size; tasks
        imported class by class still give a mixed sample), and how many unlabeled tasks there are.
        The same project gives the same sample."""
        size = max(1, min(page_size, -(-n // 10)))
        params = {**LIGHT, "page_size": size, "query": json.dumps({"filters": UNLABELED})}
        tasks, total = self._page(params, 1)
        total = len(tasks) if total is None else total  # (a plain list: everything on one page)
        pages = max(1, -(-total // size))
        wanted = min(pages, -(-n // size))
        for number in sorted({1 + (i * pages) // wanted for i in range(1, wanted)}):  # pages 2 and up
            tasks += self._page(params, number)[0]
        unique = list(
            {t["id"]: {"id": t["id"], "data": t.get("data") or {}, "annotations": []} for t in tasks}.values()
        )
        return unique[:: max(1, len(unique) // n)][:n], total

    def _page(self, params: dict, number: int) -> tuple[list[dict], int | None]:
        """One page of the task listing and the listing's total (None: not given); past the last, none."""
        params = {"project": self.project_id, "page": number, **params}
        response = sdk.request(self._client, "api/tasks/", "GET", params=params)
        if response.status_code == 404:
            return [], 0
        response.raise_for_status()
        data = response.json()
        if isinstance(data, dict):
            return list(data.get("tasks", [])), int(data.get("total", 0) or 0)
        return list(data), None

    def _annotated_checked(self, before, parts: dict[str, float]) -> list[dict]:
        """The annotated tasks in full (:meth:`_annotated`), checked against Label Studio's own count
        of the project's (non-skipped) annotations read before and after them. Finding fewer than
        both means a task whose annotation counter is stale, which the filter cannot find (Label
        Studio 1.23 recomputes the counter from a read made beside concurrent writes: a task
        annotated while predictions are imported for it can keep ``total_annotations = 0``); then
        every task is read in full, slower but complete. ``parts``: the seconds of each read."""
        with _timed(parts, "annotated"):
            tasks = list(self._annotated())
        if before is None:
            return tasks
        found = sum(1 for t in tasks for a in t.get("annotations") or [] if not _as_dict(a).get("was_cancelled"))
        with _timed(parts, "count"):
            after = self.project().get("total_annotations_number")
        expected = min(int(before), int(before if after is None else after))
        if found >= expected:
            return tasks
        log.warning(
            "project %s: Label Studio counts %d annotations but lists %d on tasks it counts as annotated "
            "(a stale task counter): reading every task in full",
            self.project_id,
            expected,
            found,
        )
        with _timed(parts, "in full"):
            tasks = [t for t in self._pages({**FULL, "page_size": self.annotated_page_size}) if t.get("annotations")]
        _check_annotations(tasks)
        return tasks

    def _annotated(self, selection: dict = ANNOTATED, fields: dict = FULL):
        """Every annotated task in full, read in id order by id ranges (``id`` greater than the last
        one read) rather than by page numbers: a task annotated while the pages are read cannot shift
        another one out of them. ``selection``: the Data Manager filter that picks them; ``fields``:
        what of each (other ones only to compare, ``benchmarks/bench_listing.py``)."""
        last = 0
        while True:
            filters = {"conjunction": "and", "items": selection["items"] + newer_than(last)["items"]}
            query, size = json.dumps({"filters": filters, "ordering": ["tasks:id"]}), self.annotated_page_size
            batch, _ = self._page({**fields, "page_size": size, "query": query}, 1)
            _check_annotations(batch)
            yield from {int(t["id"]): t for t in batch}.values()  # once each, however many annotations it has
            if len(batch) < size:
                return
            last = max(int(t["id"]) for t in batch)

    def _pages(self, params: dict):
        page = 1
        while True:
            batch, total = self._page(params, page)
            if not batch:
                return
            yield from batch
            if total is not None and page * int(params["page_size"]) >= total:
                return
            page += 1

    def import_predictions(self, predictions: list[dict]) -> int:
        response = self._client.projects.import_predictions(id=self.project_id, request=predictions)
        return int(getattr(response, "created", None) or len(predictions))

    def set_model_version(self, version: str, uncertainty_sampling: bool = False, prelabel: bool | None = None) -> None:
        """Point the project at ``version`` (its queue follows only that version's scores) and, if
        asked, switch its queue to uncertainty sampling (lowest score first) and turn the pre-labeling
        (the model's guess selected when a task opens) on or off, all in one request: Label Studio
        clears ``model_version`` when pre-labeling is turned off without it."""
        fields: dict = {"model_version": version}
        if uncertainty_sampling:
            fields["sampling"] = UNCERTAINTY_SAMPLING
        if prelabel is not None:
            fields["show_collab_predictions"] = prelabel
        self._client.projects.update(id=self.project_id, **fields)

    def model_version(self) -> str:
        return self._client.projects.get(id=self.project_id).model_version or ""

    def delete_version(self, version: str) -> int:
        response = sdk.request(
            self._client, f"api/projects/{self.project_id}/model-versions/", "DELETE", json={"model_version": version}
        )
        response.raise_for_status()
        return int(response.json().get("deleted_predictions", 0))

    def model_versions(self) -> dict[str, int]:
        """The project's prediction versions with their number of predictions."""
        response = sdk.request(self._client, f"api/projects/{self.project_id}/model-versions/", "GET")
        response.raise_for_status()
        data = response.json()
        if isinstance(data, dict):
            return {str(k): int(v or 0) for k, v in data.items()}
        return {str(k): 0 for k in data} if isinstance(data, list) else {}

    def delete_task_predictions(self, task_ids: list[int]) -> int:
        """Delete every prediction of these tasks (the Data Manager's "Delete predictions" action):
        a deletion of a size the caller chooses, where deleting a version is one request whose
        cost grows with the version (Label Studio runs a signal per deleted prediction)."""
        response = sdk.request(
            self._client,
            "api/dm/actions",
            "POST",
            params={"id": "delete_tasks_predictions", "project": self.project_id},
            json={"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}},
        )
        response.raise_for_status()
        return int((response.json() or {}).get("processed_items", 0))

    # ----------------------------------------------------------------- what the backend re-reads
    def project(self, timeout: float | None = None) -> dict:
        """The project as Label Studio has it now (id, label_config, model_version); raises the
        SDK's ApiError (status 404) when it does not exist."""
        options = {"timeout_in_seconds": timeout} if timeout else None
        return _as_dict(self._client.projects.get(id=self.project_id, request_options=options))

    def task(self, task_id: int) -> dict | None:
        """One task with its data and annotations, or None when it is not a task of this project."""
        t = _as_dict(self._client.tasks.get(id=int(task_id)))
        if int(t.get("project") or -1) != self.project_id:
            return None
        return {
            "id": t["id"],
            "data": t.get("data") or {},
            "annotations": [_as_dict(a) for a in (t.get("annotations") or [])],
        }

    def ml_backend_urls(self) -> list[str]:
        return [str(_as_dict(m).get("url") or "") for m in self._client.ml.list(project=self.project_id)]

    def webhooks(self) -> list[dict]:
        return [_as_dict(w) for w in self._client.webhooks.list(project=str(self.project_id))]

    def set_webhook_headers(self, webhook_id: int, headers: dict) -> None:
        self._client.webhooks.update(id=int(webhook_id), headers=headers)

    # ----------------------------------------------------------------- Data Manager tabs (views)
    def _http(self, method: str, path: str, **kwargs):
        response = sdk.request(self._client, path, method, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def views(self) -> list[dict]:
        data = self._http("GET", "api/dm/views/", params={"project": self.project_id})
        return [v for v in data or [] if int(v.get("project") or -1) == self.project_id]

    def create_view(self, data: dict) -> dict:
        return self._http("POST", "api/dm/views/", json={"project": self.project_id, "data": data})

    def update_view(self, view_id: int, data: dict) -> dict:
        return self._http("PATCH", f"api/dm/views/{int(view_id)}/", json={"project": self.project_id, "data": data})

    def delete_view(self, view_id: int) -> None:
        self._http("DELETE", f"api/dm/views/{int(view_id)}/")


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a Label Studio API error (SDK or httpx), else None."""
    status = getattr(exc, "status_code", None)
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status_code", None)
    return int(status) if isinstance(status, int) else None
