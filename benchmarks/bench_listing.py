"""Benchmark: how long the backend takes to read a project from Label Studio, the way it reads it at
the first round after a start (every task) and at every round (the annotated tasks in full).

    .venv/bin/python -m benchmarks.bench_listing [--tasks 3000,10000] [--db sqlite|postgres]
                                                 [--labeled 300] [--versions 3] [--repeat 3] [--out FILE.json]

A real Label Studio 1.23.2 (on SQLite, or on a PostgreSQL server started as the ``postgres`` user and
stopped afterwards). Per N: N tasks, ``--labeled`` of them annotated, and ``--versions`` model
versions of predictions on every task (what a project holds after a few rounds). Then, side by side
in one run and alternating in order, ``--repeat`` times each:

* every task, the light listing as the backend reads it (``ls_client.LIGHT``: each task's id and data
  alone, Label Studio's sparse ``include``), against the same pages without ``include``
  (``fields=task_only``, which still computes some twenty Data Manager columns per task);
* the annotated tasks in full (``ls_client.FULL``: ``fields=all``, each task's id, data and
  annotations alone), selected by their annotations (the ``annotations_ids`` filter, a join: what
  the backend reads) against selection by the per-task counter (``total_annotations``, which a
  recount beside concurrent writes can leave stale), and against the same pages without
  ``include`` (every prediction and computed column of each task).

Prints the medians and their ratios; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.bench_scale import Postgres
from ml_backend.demo.servers import ADMIN_TOKEN, LabelStudio
from ml_backend.service.ls_client import ANNOTATED, LIGHT, LabelStudioConnection, ProjectAPI

LABELS = [str(i) for i in range(10)]
BY_COUNTER = {  # the selection by Label Studio's per-task counter, for comparison only
    "conjunction": "and",
    "items": [{"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}],
}


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def fill(ls: LabelStudio, project: int, n: int, labeled: int, versions: int) -> list[int]:
    """N tasks, ``versions`` versions of predictions on each, ``labeled`` annotated; the task ids."""
    for start in range(0, n, 2000):
        batch = [{"image": f"http://127.0.0.1:9/img/{i}.png", "index": i} for i in range(start, min(n, start + 2000))]
        ls.api("POST", f"/api/projects/{project}/import", json=batch, timeout=900)
    api = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project)
    ids = sorted(t["id"] for t in api._pages(LIGHT))
    for v in tqdm(range(versions), desc="predictions", unit="version", file=sys.stderr):
        for start in range(0, len(ids), 2000):
            chunk = [
                {"task": t, "model_version": f"v{v}", "score": 0.5, "result": choice(LABELS[t % 10])}
                for t in ids[start : start + 2000]
            ]
            api.import_predictions(chunk)
    step = max(1, len(ids) // max(1, labeled))
    for t in tqdm(ids[::step][:labeled], desc="annotations", unit="task", file=sys.stderr):
        ls.api("POST", f"/api/tasks/{t}/annotations", json={"result": choice(LABELS[t % 10])})
    return ids


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    n = sum(1 for _ in fn())
    return time.perf_counter() - started, n


def readers(api: ProjectAPI) -> dict:
    without_include = {k: v for k, v in LIGHT.items() if k != "include"}
    return {
        "every_task_light": lambda: api._pages(LIGHT),
        "every_task_without_include": lambda: api._pages(without_include),
        "annotated_by_annotations": lambda: api._annotated(ANNOTATED),  # as the backend reads them
        "annotated_by_counter": lambda: api._annotated(BY_COUNTER),
        "annotated_without_include": lambda: api._annotated(ANNOTATED, {"fields": "all"}),
    }


def one_size(n: int, args, root: Path) -> dict:
    pg = Postgres(root / f"pg-{n}").start() if args.db == "postgres" else None
    ls = LabelStudio(root / f"ls-{n}", extra_env=pg.env() if pg else None)
    try:
        ls.start()
        project = ls.create_project(f"listing {n}", LABELS)
        started = time.perf_counter()
        fill(ls, project, n, args.labeled, args.versions)
        filled_s = time.perf_counter() - started
        api = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project)
        ways, seconds, counts = readers(api), {}, {}
        for r in range(args.repeat):
            for name in list(ways) if r % 2 == 0 else list(reversed(ways)):  # alternate the order
                s, k = timed(ways[name])
                seconds.setdefault(name, []).append(s)
                counts[name] = k
        med = {k: statistics.median(v) for k, v in seconds.items()}
        return {
            "tasks": n,
            "db": args.db,
            "labeled": args.labeled,
            "prediction_versions": args.versions,
            "fill_s": round(filled_s, 1),
            "listed": counts,
            "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "tasks_per_s_light": round(n / med["every_task_light"], 1),
            "light_speedup": round(med["every_task_without_include"] / med["every_task_light"], 2),
            "join_over_counter": round(med["annotated_by_annotations"] / med["annotated_by_counter"], 2),
            "annotated_include_speedup": round(med["annotated_without_include"] / med["annotated_by_annotations"], 2),
        }
    finally:
        ls.stop()
        if pg:
            pg.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="3000,10000", help="comma-separated project sizes")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--labeled", type=int, default=300, help="annotated tasks")
    p.add_argument("--versions", type=int, default=3, help="model versions of predictions on every task")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    root.chmod(0o755)
    rows = []
    try:
        for n in (int(x) for x in args.tasks.split(",")):
            rows.append(one_size(n, args, root))
            r = rows[-1]
            m = r["median_s"]
            print(
                f"{n} tasks ({args.db}, {args.labeled} labeled, {args.versions} versions of predictions): "
                f"every task {m['every_task_light']:.2f} s light vs {m['every_task_without_include']:.2f} s "
                f"without include ({r['light_speedup']}x); annotated in full {m['annotated_by_annotations']:.2f} s "
                f"by annotations vs {m['annotated_by_counter']:.2f} s by counter ({r['join_over_counter']}x), "
                f"vs {m['annotated_without_include']:.2f} s without include ({r['annotated_include_speedup']}x)",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
