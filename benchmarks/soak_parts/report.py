"""The end of a soak run (``python -m benchmarks.soak``): the last check of every label against the version
Label Studio ends on, resource growth, ``soak.json`` and the one-screen summary."""

from __future__ import annotations

import time

from ml_backend.demo.servers import classification_config, wait_for
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.labels import task_answer


def label_of(task: dict, labels: list[str]) -> str | None:
    """A task's label in Label Studio by the backend's documented rule (skips are no labels; two
    annotators on one task, which Label Studio allows when a lock expires, vote)."""
    return task_answer(task.get("annotations") or [], parse_label_config(classification_config(labels)))


def final_check(world, mon, ledger, timeout: float) -> dict:
    """Once the annotators stop: wait until the project follows a version trained on every label
    Label Studio holds (``timeout``), then compare the two task by task."""
    wait_for(lambda: world.healthy() and world.project_version(), 300, "the backend and Label Studio", 2)
    truth = {t["id"]: label_of(t, world.labels) for t in world.ls.tasks(world.project)}
    truth = {k: v for k, v in truth.items() if v is not None}
    for task in list(ledger.unsure):
        ledger.settle(task, truth.get(task))
    started = time.time()

    def matches():
        version = world.project_version()
        v = mon.versions.get(version or "")
        return v is not None and v["labels"] == {str(k): val for k, val in truth.items()} and version

    try:
        version = wait_for(matches, timeout, "a version trained on every label", 2)
    except TimeoutError:
        version = world.project_version()
    used = (mon.versions.get(version or "") or {}).get("labels", {})
    missing = {str(k): v for k, v in truth.items() if used.get(str(k)) != v}
    stale = sorted(k for k in used if int(k) not in truth)
    current, _ = ledger.snapshot()
    ledger_vs_ls = {k: [c.label, truth.get(k)] for k, c in current.items() if truth.get(k) != c.label}
    return {
        "final_version": version,
        "labels_in_label_studio": len(truth),
        "labels_in_final_version": len(used),
        "missing_or_wrong": dict(list(missing.items())[:20]),
        "deleted_but_still_used": stale[:20],
        "lost": len(missing) + len(stale),
        "settle_s": round(time.time() - started, 1),
        "ledger_disagrees_with_label_studio": len(ledger_vs_ls),
        "ledger_vs_label_studio": dict(list(ledger_vs_ls.items())[:20]),  # task: [ledger's, Label Studio's]
    }


WARM_SHARE = 0.95  # a worker's cache is warm once it holds this share of the pool (or of its bound)


def warm_minute(points: list[tuple[float, dict]], pools: dict[float, int]) -> float | None:
    """The first sample at which a worker was past its two warm-ups: its feature cache had taken in
    the pool (its first scoring of the whole pool fills the cache, bounded by FEATURE_CACHE_MB), and,
    if it ever trained, it had trained a round (``rounds_trained`` in /status: a worker's first round
    allocates the optimizer's state and the labeled set's activations; a worker takes the trainer
    lease over when the one holding it dies, so this can come late in its life). Both are steps in
    its memory that are warm-up, not growth. None: never seen warm (or never seen through /status)."""
    trains = any((u.get("rounds_trained") or 0) > 0 for _, u in points)
    for m, u in points:
        items, mb, limit = u.get("cache_items"), u.get("cache_mb"), u.get("cache_limit_mb")
        if items is None or (trains and not u.get("rounds_trained")):
            continue
        if items >= WARM_SHARE * pools.get(m, float("inf")) or (limit and mb >= WARM_SHARE * limit):
            return m
    return None


def fd_bounds(sample: dict) -> dict[str, int]:
    """Kinds of descriptors a process holds a bounded number of, by design, and their bound: the
    trainer lease (``.lease``) while a job of the soak's one project runs, and the feature cache's
    segments (``.seg``), one for reading each segment on disk plus the one it appends to (old
    segments are deleted whole once the disk bound is reached, and their descriptors closed)."""
    return {".lease": 1, ".seg": int(sample.get("segments_on_disk") or 0) + 1}


def _difference(a: dict | None, b: dict | None) -> dict:
    a, b = a or {}, b or {}
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted({*a, *b}) if b.get(k, 0) != a.get(k, 0)}


def fd_floor(points: list[dict]) -> dict:
    """Each kind of descriptor's lowest count over a few samples: a socket or an epoll of a request in
    flight at one sample comes and goes; a leak raises the floor."""
    kinds = {k for u in points for k in u.get("fd_kinds") or {}}
    return {k: min((u.get("fd_kinds") or {}).get(k, 0) for u in points) for k in sorted(kinds)}


def resource_growth(samples: list[dict], from_minute: float = 5.0, warmup_min: float = 2.0) -> dict:
    """Growth of each backend process between its first judged sample and its last one. A process is
        judged from ``from_minute`` of the run and ``warmup_min`` after it appeared, and a worker only
        once it is warm (:func:`warm_minute`); processes judged over under 3 minutes are listed but not
        judged. Each row says what grew: descriptors by kind (their floors, :func:`fd_floor`), Python
    threads by name."""
    series: dict[int, list[tuple[float, dict]]] = {}
    pools = {s["minute"]: s.get("pool") for s in samples if s.get("pool")}
    samples_at = {s["minute"]: s for s in samples}
    for s in samples:
        for pid, u in s["procs"].items():
            series.setdefault(int(pid), []).append((s["minute"], u))
    rows = []
    for pid, points in series.items():
        born, worker = points[0][0], points[-1][1]["role"].endswith("worker")
        warm = warm_minute(points, pools) if worker else born
        start = max(from_minute, born + warmup_min, warm if warm is not None else float("inf"))
        judged = [(m, u) for m, u in points if m >= start]
        row = {"pid": pid, "role": points[-1][1]["role"], "born_minute": born, "warm_minute": warm}
        if len(judged) < 2:
            rows.append({**row, "judged": False, "why_not": "never seen warm" if warm is None else "too short"})
            continue
        (m0, a), (m1, b) = judged[0], judged[-1]
        fd0, fd1 = fd_floor([u for _, u in judged[:2]]), fd_floor([u for _, u in judged[-2:]])
        bounds, grew = fd_bounds(samples_at[m1]), _difference(fd0, fd1)
        within = {k: n for k, n in grew.items() if n > 0 and k in bounds and fd1.get(k, 0) <= bounds[k]}
        rows.append(
            {
                **row,
                "from_minute": m0,
                "to_minute": m1,
                "rss_mb": [a["rss_mb"], b["rss_mb"]],
                "rss_growth_pct": round(100 * (b["rss_mb"] - a["rss_mb"]) / max(a["rss_mb"], 1e-9), 1),
                "threads": [a["threads"], b["threads"]],
                "fds": [sum(fd0.values()), sum(fd1.values())],  # floors of the first and last two samples
                # each kind's growth, a kind that fell not making up for one that grew, and the bounded
                # kinds within their bound not counted
                "fd_growth": sum(n for k, n in grew.items() if n > 0 and k not in within),
                "fd_growth_by_kind": grew,
                "fd_growth_within_bound": {k: [n, bounds[k]] for k, n in within.items()},  # growth, bound
                # None: /status did not answer for this process at one end (no names to compare)
                "python_thread_growth": _difference(a["python_threads"], b["python_threads"])
                if a.get("python_threads") and b.get("python_threads")
                else None,
                "rounds_trained": [a.get("rounds_trained"), b.get("rounds_trained")],
                "judged": m1 - m0 >= 3,
            }
        )
    judged = [r for r in rows if r["judged"]]
    return {
        "processes": rows,
        "judged_minutes": round(sum(r["to_minute"] - r["from_minute"] for r in judged), 1),
        "max_rss_growth_pct": max((r["rss_growth_pct"] for r in judged), default=None),
        "max_thread_growth": max((r["threads"][1] - r["threads"][0] for r in judged), default=None),
        "max_fd_growth": max((r["fd_growth"] for r in judged), default=None),
        "samples": samples,
    }


def recovery_by_kind(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r in rows:
        k = out.setdefault(r["kind"], {"count": 0, "recovery_s": [], "not_recovered": 0, "skipped": 0, "overlapped": 0})
        k["count"] += 1
        k["overlapped"] += "overlapped_by" in r  # the next fault began before it recovered
        if "skipped" in r:
            k["skipped"] += 1
        elif r.get("recovery_s") is None:
            k["not_recovered"] += 1
        else:
            k["recovery_s"].append(r["recovery_s"])
    for k in out.values():
        k["worst_s"] = max(k["recovery_s"], default=None)
    return out


def targets(result: dict) -> dict:
    """The soak's targets, each True when met."""
    growth, health = result["resources"], result["health"]
    rec = result["recovery_by_kind"].values()
    return {
        "no_annotation_lost": result["annotations_lost"] == 0 and not result["lost_during_run"],
        "no_unexpected_5xx": result["unexpected_5xx"] == 0,
        "health_p99_under_1s": health["p99_s"] is not None and health["p99_s"] < 1.0,
        "every_fault_recovered_within_60s": all(
            k["not_recovered"] == 0 and (k["worst_s"] or 0) <= 60 for k in rec if k["count"] > k["skipped"]
        ),
        "no_partial_checkpoint": not result["partial_checkpoints"],
        "model_version_always_has_predictions": not result["model_version_without_predictions"],
        # None: no process was judged (none lived 3 minutes past its warm-up), so not met either
        "rss_growth_under_10pct": None if growth["max_rss_growth_pct"] is None else growth["max_rss_growth_pct"] < 10,
        "no_thread_or_fd_growth": None
        if growth["max_thread_growth"] is None
        else growth["max_thread_growth"] <= 0 and growth["max_fd_growth"] <= 0,
    }


def summary(result: dict) -> str:
    r, h, g = result, result["health"], result["resources"]
    lines = [
        f"soak: {r['minutes_run']} min, {r['annotators']} annotators, {r['tasks']} tasks, backbone {r['backbone']}, "
        f"{r['versions_published']} versions published",
        f"annotations {r['annotations']['annotations']}  skips {r['annotations']['skips']}  updates "
        f"{r['annotations']['updates']}  deletions {r['annotations']['deletions']}  lost {r['annotations_lost']} "
        f"(during the run: {len(r['lost_during_run'])})",
        f"/predict answers {r['predict_answers']}  unexpected 5xx {r['unexpected_5xx']}",
        f"/health p50 {h['p50_s']} s  p99 {h['p99_s']} s  max {h['max_s']} s  "
        f"over 1 s: {h['over_1s']} of {h['probes']}",
        f"partial checkpoints {len(r['partial_checkpoints'])}  model_version without predictions "
        f"{len(r['model_version_without_predictions'])}",
        "faults (kind: count, worst recovery s):",
    ]
    for kind, k in r["recovery_by_kind"].items():
        extra = f", {k['skipped']} skipped" if k["skipped"] else ""
        extra += f", {k['not_recovered']} NOT recovered" if k["not_recovered"] else ""
        extra += f", {k['overlapped']} still recovering when the next fault began" if k.get("overlapped") else ""
        lines.append(f"  {kind:14s} {k['count']}  worst {k['worst_s']}  all {k['recovery_s']}{extra}")
    if g["max_rss_growth_pct"] is None:
        lines.append("resources: no process lived 3 minutes past its warm-up (minute 5, and a full cache) to judge")
    else:
        lines.append(
            f"resources, each process from its warm-up on ({g['judged_minutes']} process-minutes judged): "
            f"RSS growth max {g['max_rss_growth_pct']} %, threads {g['max_thread_growth']:+}, "
            f"fds {g['max_fd_growth']:+}"
        )
        for p in g["processes"]:
            if p["judged"] and (
                p["fd_growth_by_kind"] or p["python_thread_growth"] or p["threads"][1] > p["threads"][0]
            ):
                bounded = p["fd_growth_within_bound"]
                grew = p["python_thread_growth"]
                names = "names not seen at both ends" if grew is None else grew or "none"
                lines.append(
                    f"  {p['role']} {p['pid']}: threads {p['threads'][0]} -> {p['threads'][1]} "
                    f"(Python: {names}), fds by kind {p['fd_growth_by_kind'] or 'none'}"
                    + (f" (within bound, [growth, bound]: {bounded})" if bounded else "")
                )
    verdict = {True: "ok", False: "MISSED", None: "NOT JUDGED"}
    lines.append("targets: " + ", ".join(f"{k}={verdict[v]}" for k, v in r["targets"].items()))
    return "\n".join(lines)
