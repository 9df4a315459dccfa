"""Simulated annotators of a soak run: each labels through Label Studio's API the way the UI does
(the next task of the queue, an answer after a think time, sometimes a skip, sometimes an update or
a deletion of an earlier annotation), and writes what it did to a shared :class:`Ledger`."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import requests


def choice_result(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


@dataclass
class Change:
    task: int
    label: str | None  # None: the task has no label any more (its annotation deleted)
    at: float  # time.time() once Label Studio answered
    sent: float = 0.0  # time.time() when the request left: Label Studio saved it between the two


class Ledger:
    """What the annotators did, as Label Studio holds it: the current label of every task they touched
    and every change in order. A write whose outcome is unknown (Label Studio went away mid-request)
    puts its task in ``unsure`` until it is read back from Label Studio."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current: dict[int, Change] = {}
        self.changes: list[Change] = []
        self.unsure: set[int] = set()
        self.writers: dict[int, set[int]] = {}  # task -> the annotators who wrote to it (several: a vote)
        self.counts = {"annotations": 0, "skips": 0, "updates": 0, "deletions": 0, "errors": 0, "unsure": 0}

    def record(self, task: int, label: str | None, kind: str, who: int = -1, sent: float = 0.0) -> None:
        with self.lock:
            self.writers.setdefault(task, set()).add(who)
            change = Change(task, label, time.time(), sent)
            self.current[task] = change
            self.changes.append(change)
            self.counts[kind] += 1
            self.unsure.discard(task)

    def count(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1

    def mark_unsure(self, task: int) -> None:
        with self.lock:
            self.unsure.add(task)
            self.counts["unsure"] += 1

    def settle(self, task: int, label: str | None) -> None:
        """The task's label as read back from Label Studio."""
        with self.lock:
            if task in self.unsure:
                before = self.current.get(task)
                if before is None or before.label != label:
                    change = Change(task, label, time.time())
                    self.current[task] = change
                    self.changes.append(change)
                self.unsure.discard(task)

    def snapshot(self) -> tuple[dict[int, Change], set[int]]:
        with self.lock:
            return dict(self.current), set(self.unsure)

    def labels_since(self, t: float) -> list[Change]:
        with self.lock:
            return [c for c in self.changes if c.at > t and c.label is not None]


class Annotator(threading.Thread):
    """One person at Label Studio's labeling screen (their own account and task locks)."""

    def __init__(self, n: int, world, ledger: Ledger, stop: threading.Event, think_s: float, seed: int):
        super().__init__(name=f"annotator-{n}", daemon=True)
        self.world, self.ledger, self.stop_event, self.think_s = world, ledger, stop, think_s
        self.rng = random.Random(seed)
        self.n, self.sent = n, 0.0
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {world.tokens[n]}"
        self.mine: dict[int, tuple[int, str]] = {}  # task -> (annotation id, the label given)
        self.truth: dict[int, str] = {}

    @property
    def url(self) -> str:
        return self.world.ls.url

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                roll = self.rng.random()
                if roll < 0.05 and self.mine:
                    self.update_one()
                elif roll < 0.08 and self.mine:
                    self.delete_one()
                else:
                    self.label_next()
            except requests.RequestException:
                self.ledger.count("errors")  # Label Studio is away: try again in a moment
                self.stop_event.wait(2.0)

    def think(self) -> None:
        self.stop_event.wait(self.rng.uniform(0.5, 1.5) * self.think_s)

    def label_next(self) -> None:
        r = self.session.get(f"{self.url}/api/projects/{self.world.project}/next", timeout=30)
        if r.status_code == 404:  # nothing left to label
            self.stop_event.wait(5.0)
            return
        if r.status_code != 200:
            self.ledger.count("errors")
            self.stop_event.wait(2.0)
            return
        task = r.json()
        self.think()
        if self.stop_event.is_set():
            return
        task_id, truth = task["id"], self.world.truth(task)
        if self.rng.random() < 0.08:  # skip: Label Studio records a cancelled annotation, not a label
            self.write("POST", f"/api/tasks/{task_id}/annotations", task_id, {"result": [], "was_cancelled": True})
            self.ledger.count("skips")
            return
        label = truth if self.rng.random() > 0.1 else self.rng.choice([x for x in self.world.labels if x != truth])
        r = self.write("POST", f"/api/tasks/{task_id}/annotations", task_id, {"result": choice_result(label)})
        if r is not None:
            self.mine[task_id], self.truth[task_id] = (r.json()["id"], label), truth
            self.ledger.record(task_id, label, "annotations", self.n, self.sent)

    def update_one(self) -> None:
        """Re-open an earlier annotation and save it: a wrong one is corrected, a right one saved again."""
        wrong = [t for t, (_, label) in self.mine.items() if label != self.truth[t]]
        task_id = self.rng.choice(wrong or list(self.mine))
        annotation, _ = self.mine[task_id]
        self.think()
        label = self.truth[task_id]
        if self.write("PATCH", f"/api/annotations/{annotation}", task_id, {"result": choice_result(label)}) is not None:
            self.mine[task_id] = (annotation, label)
            self.ledger.record(task_id, label, "updates", self.n, self.sent)

    def delete_one(self) -> None:
        task_id = self.rng.choice(list(self.mine))
        annotation, _ = self.mine.pop(task_id)
        if self.write("DELETE", f"/api/annotations/{annotation}", task_id, None) is not None:
            self.ledger.record(task_id, None, "deletions", self.n, self.sent)

    def write(self, method: str, path: str, task_id: int, body: dict | None):
        """One write to Label Studio; None when it failed (the task is then read back later)."""
        self.sent = time.time()
        try:
            r = self.session.request(method, f"{self.url}{path}", json=body, timeout=30)
        except requests.ConnectionError as exc:
            if "refused" not in str(exc).lower():
                self.ledger.mark_unsure(task_id)
            raise
        except requests.Timeout:
            self.ledger.mark_unsure(task_id)
            raise
        if r.status_code >= 500:
            self.ledger.mark_unsure(task_id)
        if not r.ok:
            self.ledger.count("errors")
            self.stop_event.wait(1.0)
            return None
        return r
