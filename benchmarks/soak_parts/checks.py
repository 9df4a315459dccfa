"""The invariants of a soak run, checked throughout by background threads (``python -m benchmarks.soak``):
/health within 1 s, /predict never 5xx but the documented 503, every published version trained on
every label Label Studio held when the round read them (updates and deletions followed), the
project's model_version always one with predictions, every checkpoint on disk whole; and each
backend process's memory, threads and file descriptors, sampled each minute."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import requests
import torch

from benchmarks.soak_parts.world import child_pids, proc_usage

READ_MARGIN_S = 15.0  # from a round's listing of labels to its checkpoint, besides read + train time
UNKNOWN_TIMINGS_S = 90.0  # the same, for a version whose timings /status never showed


class Monitor:
    """Background checks; ``down`` (an Event) is set by a fault while the backend is meant to be down."""

    def __init__(self, world, ledger, stop: threading.Event):
        self.world, self.ledger, self.stop = world, ledger, stop
        self.down = threading.Event()
        self.t0 = time.time()
        self.health: list[tuple[float, float | None]] = []  # (time, seconds; None: no answer)
        self.health_unanswered_unexpected = 0
        self.predict_codes: dict[str, int] = {}
        self.unexpected_5xx: list[dict] = []
        self.versions: dict[str, dict] = {}  # every version seen on disk: labels, saved_at, timings
        self.timings: dict[str, dict] = {}  # version -> read/train seconds from /status
        self.switches: list[tuple[float, str]] = []  # (time, version): Label Studio's project followed it
        self.version_problems: list[dict] = []
        self.partial: list[dict] = []
        self.lost_rolling: dict[str, dict] = {}
        self.reasons: list[tuple[float, str, str]] = []  # (time, state, reason) from /status
        self.resources: list[dict] = []
        self.errors: list[dict] = []  # a check that could not run (reported, not a failure of the backend)
        self._checked: set[str] = set()
        self._threads = [
            threading.Thread(target=self._loop, args=(fn, every), name=fn.__name__, daemon=True)
            for fn, every in (
                (self.probe_health, 1.0),
                (self.probe_predict, 5.0),
                (self.watch, 2.0),
                (self.sample_resources, 60.0),
            )
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self, fn, every: float) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                fn()
            except Exception as exc:  # a check must never end the run; it says what went wrong
                self.errors.append({"t": self.elapsed(), "check": fn.__name__, "error": repr(exc)[:300]})
            self.stop.wait(max(0.0, every - (time.monotonic() - started)))

    def elapsed(self) -> float:
        return round(time.time() - self.t0, 1)

    # ------------------------------------------------------------------ the backend's routes
    def probe_health(self) -> None:
        started = time.perf_counter()
        try:
            ok = requests.get(f"{self.world.backend.url}/health", timeout=5).ok
        except requests.RequestException:
            ok = False
        took = time.perf_counter() - started
        if ok:
            self.health.append((time.time(), took))
        elif not self.down.is_set():
            self.health.append((time.time(), None))
            self.health_unanswered_unexpected += 1

    def probe_predict(self) -> None:
        tasks = [{"id": t, "data": {"image": f"{self.world.images.url}/img/{i}.png"}} for t, i in self.sample_tasks()]
        for url in (self.world.backend.url, getattr(self.world.replica, "url", None)):
            if url is None:
                continue
            try:
                r = requests.post(
                    f"{url}/predict", json={"project": str(self.world.project), "tasks": tasks}, timeout=60
                )
                code = str(r.status_code)
            except requests.RequestException as exc:
                code = "no answer" if not self.down.is_set() else "down"
                r = exc
            self.predict_codes[code] = self.predict_codes.get(code, 0) + 1
            if code.startswith("5") and code != "503":
                self.unexpected_5xx.append({"t": self.elapsed(), "code": code, "body": getattr(r, "text", "")[:300]})

    def sample_tasks(self) -> list[tuple[int, int]]:
        items = list(self.world.index_of.items())
        step = max(1, len(items) // 3)
        offset = int(time.time()) % step
        return items[offset::step][:3]

    # ------------------------------------------------------------------ versions, checkpoints, labels
    def watch(self) -> None:
        self.read_status()
        self.check_project_version()
        self.scan_model_dir()
        self.check_labels()

    def read_status(self) -> None:
        try:
            st = requests.get(f"{self.world.backend.url}/status", timeout=5).json()["projects"]
        except (requests.RequestException, ValueError, KeyError):
            return
        p = st.get(str(self.world.project)) or {}
        last = p.get("last_round") or {}
        if last.get("version") and last.get("read_seconds") is not None:
            self.timings[last["version"]] = {
                "read": last["read_seconds"],
                "read_parts": last.get("read_parts") or {},
                "train": last.get("train_seconds") or 0,
            }
        state, reason = p.get("state", ""), p.get("reason", "")
        if not self.reasons or self.reasons[-1][1:] != (state, reason):
            self.reasons.append((time.time(), state, reason))

    def check_project_version(self) -> None:
        ls, project = self.world.ls, self.world.project
        try:
            version = self.world.project_version()
            counts = ls.session.get(f"{ls.url}/api/projects/{project}/model-versions/", timeout=10).json()
        except (requests.RequestException, ValueError):
            return  # Label Studio is away (a fault): nothing to check
        if version is None:
            return
        if not self.switches or self.switches[-1][1] != version:
            self.switches.append((time.time(), version))
        if not isinstance(counts, dict) or not counts.get(version):
            # re-read once: the switch may have happened between the two requests
            again = self.world.project_version()
            counts = ls.session.get(f"{ls.url}/api/projects/{project}/model-versions/", timeout=10).json()
            if again == version and not (isinstance(counts, dict) and counts.get(version)):
                self.version_problems.append({"t": self.elapsed(), "model_version": version, "predictions": 0})

    def scan_model_dir(self) -> None:
        folder = self.world.model_dir / "projects" / str(self.world.project)
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if not path.is_dir() or path.name.startswith(".tmp-") or path.name in self._checked:
                continue
            problem = self.read_checkpoint(path)
            if problem is not None:
                time.sleep(1.0)  # a version being pruned disappears; a partial one stays
                if path.exists() and self.read_checkpoint(path) is not None:
                    self.partial.append({"t": self.elapsed(), "path": path.name, "problem": problem})
                    self._checked.add(path.name)
                continue
            self._checked.add(path.name)

    def read_checkpoint(self, path: Path) -> str | None:
        """None when the version loads whole (its meta and weights); else what is wrong."""
        try:
            meta = json.loads((path / "meta.json").read_text())
            torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            return f"missing {Path(exc.filename or '').name}"
        except Exception as exc:
            return repr(exc)[:200]
        version = meta.get("version") or path.name
        self.versions[version] = {
            "labels": dict(meta.get("labels_used") or {}),
            "saved_at": float(meta.get("saved_at") or time.time()),
            "seq": meta.get("seq"),
            "train_s": float((meta.get("metrics") or {}).get("seconds") or 0),
            "read_at": (meta.get("metrics") or {}).get("labels_read_at"),
            "read_until": (meta.get("metrics") or {}).get("labels_read_until"),
            "seen": time.time(),
        }
        return None

    def read_started_before(self, version: str) -> float | None:
        """A time before which every change in Label Studio was read by the round of ``version``."""
        v = self.versions[version]
        if v.get("read_at"):  # the backend's own record: when the round started reading the labels
            return v["read_at"]
        t = self.timings.get(version)
        if t is not None:
            return v["saved_at"] - float(t["train"]) - float(t["read"]) - READ_MARGIN_S
        if time.time() - v["seen"] < 30:
            return None  # its timings may still come
        return v["saved_at"] - v["train_s"] - UNKNOWN_TIMINGS_S

    def check_labels(self) -> None:
        """Every version: trained on each label Label Studio held when its round read them."""
        for version in [v for v in self.versions if f"labels:{v}" not in self._checked]:
            before = self.read_started_before(version)
            if before is None:
                continue
            self._checked.add(f"labels:{version}")
            # a label changed while the round read the labels may be in the version either way
            during = self.changed_between(before, self.versions[version].get("read_until") or before)
            for task, label in self.state_at(before).items():
                used = self.versions[version]["labels"].get(str(task))
                if used != label and used not in during.get(task, ()):
                    self.lost_rolling[f"{version}:{task}"] = {
                        "version": version,
                        "task": task,
                        "label": label,
                        "used": used,
                        "changes_s_from_read": self.changes_of(task, before),
                    }

    def changes_of(self, task: int, t: float) -> list[list]:
        """The ledger's changes of one task: [sent, saved] seconds from ``t``, and the label."""
        with self.ledger.lock:
            return [[round(c.sent - t, 1), round(c.at - t, 1), c.label] for c in self.ledger.changes if c.task == task]

    def changed_between(self, t0: float, t1: float) -> dict[int, set]:
        """Each task's labels set (None: deleted) by changes saved, or in flight, between ``t0`` and ``t1``."""
        out: dict[int, set] = {}
        with self.ledger.lock:
            for c in self.ledger.changes:
                if c.at >= t0 and c.sent <= t1:
                    out.setdefault(c.task, set()).add(c.label)
        return out

    def state_at(self, t: float) -> dict[int, str | None]:
        """Each task's label in Label Studio at ``t`` per the ledger (tasks not certain, and tasks
        several annotators labeled, whose label is their vote, left to the final check)."""
        with self.ledger.lock:
            changes = [c for c in self.ledger.changes if c.at < t]
            in_flight = {c.task for c in self.ledger.changes if c.sent < t <= c.at}  # saved before or after t
            unsure = set(self.ledger.unsure) | in_flight | {k for k, w in self.ledger.writers.items() if len(w) > 1}
        state: dict[int, str | None] = {}
        for c in changes:
            state[c.task] = c.label
        return {k: v for k, v in state.items() if k not in unsure}

    # ------------------------------------------------------------------ resources
    def sample_resources(self) -> None:
        world = self.world
        roles, urls = {}, {}
        for name, b in (("backend", world.backend), ("replica", world.replica)):
            if b is not None and b.process is not None and b.process.poll() is None:
                roles[b.process.pid] = f"{name} master"
                for pid in child_pids(b.process.pid):
                    roles[pid], urls[pid] = f"{name} worker", b.url
        procs = {pid: {"role": role, **u} for pid, role in roles.items() if (u := proc_usage(pid)) is not None}
        for url in set(urls.values()):
            for pid, seen in self.workers_seen(url, [p for p, u in urls.items() if u == url]).items():
                if pid in procs:
                    procs[pid].update(seen)
        segments = len(list((world.model_dir / "cache").rglob("*.seg")))
        self.resources.append(
            {
                "minute": round(self.elapsed() / 60, 2),
                "procs": procs,
                "pool": len(world.index_of),
                "segments_on_disk": segments,
            }
        )

    @staticmethod
    def workers_seen(url: str, pids: list[int], tries_each: int = 4) -> dict[int, dict]:
        """Each worker's own view, from /status (gunicorn hands each request to one of its workers, so
        ask until every worker answered or ``tries_each`` × workers requests went): its feature
        cache's size, its Python threads by name and the training rounds it ran."""
        seen: dict[int, dict] = {}
        for _ in range(tries_each * len(pids)):
            try:
                st = requests.get(f"{url}/status", timeout=5, headers={"Connection": "close"}).json()
            except (requests.RequestException, ValueError):
                continue
            cache, worker = st.get("feature_cache") or {}, st.get("worker") or {}
            if worker.get("pid") in pids:
                seen[worker["pid"]] = {
                    "cache_items": cache.get("memory_items"),
                    "cache_mb": cache.get("memory_mb"),
                    "cache_limit_mb": cache.get("memory_limit_mb"),
                    "python_threads": worker.get("threads"),
                    "rounds_trained": worker.get("rounds_trained"),
                }
            if len(seen) == len(pids):
                break
        return seen

    # ------------------------------------------------------------------ figures
    def health_figures(self) -> dict:
        answered = sorted(s for _, s in self.health if s is not None)
        p = lambda q: round(answered[min(len(answered) - 1, int(q * len(answered)))], 3) if answered else None  # noqa: E731
        return {
            "probes": len(self.health),
            "p50_s": p(0.5),
            "p99_s": p(0.99),
            "max_s": round(answered[-1], 3) if answered else None,
            "over_1s": sum(1 for s in answered if s > 1.0),
            "unanswered_outside_backend_restarts": self.health_unanswered_unexpected,
        }
