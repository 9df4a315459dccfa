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
    ledger_vs_ls = sum(1 for k, c in current.items() if truth.get(k) != c.label)
    return {
        "final_version": version,
        "labels_in_label_studio": len(truth),
        "labels_in_final_version": len(used),
        "missing_or_wrong": dict(list(missing.items())[:20]),
        "deleted_but_still_used": stale[:20],
        "lost": len(missing) + len(stale),
        "settle_s": round(time.time() - started, 1),
        "ledger_disagrees_with_label_studio": ledger_vs_ls,
    }


def resource_growth(samples: list[dict], from_minute: float = 5.0, warmup_min: float = 2.0) -> dict:
    """Growth of each backend process between its first sample at or after ``from_minute`` (and
    ``warmup_min`` after it appeared) and its last one; processes followed for under 3 minutes are
    listed but not judged."""
    series: dict[int, list[tuple[float, dict]]] = {}
    for s in samples:
        for pid, u in s["procs"].items():
            series.setdefault(int(pid), []).append((s["minute"], u))
    rows = []
    for pid, points in series.items():
        born = points[0][0]
        judged = [(m, u) for m, u in points if m >= from_minute and m >= born + warmup_min]
        if len(judged) < 2:
            continue
        (m0, a), (m1, b) = judged[0], judged[-1]
        rows.append(
            {
                "pid": pid,
                "role": b["role"],
                "from_minute": m0,
                "to_minute": m1,
                "rss_mb": [a["rss_mb"], b["rss_mb"]],
                "rss_growth_pct": round(100 * (b["rss_mb"] - a["rss_mb"]) / max(a["rss_mb"], 1e-9), 1),
                "threads": [a["threads"], b["threads"]],
                "fds": [a["fds"], b["fds"]],
                "judged": m1 - m0 >= 3,
            }
        )
    judged = [r for r in rows if r["judged"]]
    return {
        "processes": rows,
        "max_rss_growth_pct": max((r["rss_growth_pct"] for r in judged), default=None),
        "max_thread_growth": max((r["threads"][1] - r["threads"][0] for r in judged), default=None),
        "max_fd_growth": max((r["fds"][1] - r["fds"][0] for r in judged), default=None),
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
        "rss_growth_under_10pct": (growth["max_rss_growth_pct"] or 0) < 10,
        "no_thread_or_fd_growth": (growth["max_thread_growth"] or 0) <= 0 and (growth["max_fd_growth"] or 0) <= 0,
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
    lines.append(
        f"resources from minute 5: RSS growth max {g['max_rss_growth_pct']} %, threads {g['max_thread_growth']:+}, "
        f"fds {g['max_fd_growth']:+}"
        if g["max_rss_growth_pct"] is not None
        else "resources: no process lived long enough past minute 5 to judge"
    )
    lines.append("targets: " + ", ".join(f"{k}={'ok' if v else 'MISSED'}" for k, v in r["targets"].items()))
    return "\n".join(lines)
