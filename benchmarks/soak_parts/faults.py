"""The faults of a soak run (``python -m benchmarks.soak``), injected one at a time on a schedule, and the
recovery after each: the time from the fault's end until a label made after it is in a version
Label Studio's project has moved to."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from ml_backend.demo.servers import wait_for

KINDS = (
    "worker_kill",
    "webhook_burst",
    "ls_outage",
    "image_500",
    "disk_full",
    "backend_kill",
    "replica",
    "image_hang",
)


def worker_kill(world, mon, hold: float) -> dict:
    """``kill -9`` of one gunicorn worker (what the OOM killer does); the master starts another."""
    before = world.worker_pids()
    victim = random.choice(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (p := world.worker_pids()) and victim not in p and len(p) >= len(before), 120, "a new worker", 0.5)
    return {"killed_pid": victim}


def backend_kill(world, mon, hold: float) -> dict:
    """``kill -9`` of the backend's whole process group, then a start on the same port."""
    mon.down.set()
    try:
        world.kill_backend()
        started = time.time()
        world.backend = world.new_backend("backend", port=world.backend.port).start(timeout=300)
        return {"restart_s": round(time.time() - started, 1)}
    finally:
        mon.down.clear()


def ls_outage(world, mon, hold: float) -> dict:
    """Label Studio stopped for ``hold`` seconds, then started again on the same data and port."""
    world.ls.stop()
    time.sleep(hold)
    started = time.time()
    world.ls.start(timeout=300)
    return {"restart_s": round(time.time() - started, 1)}


def _images(mode: str):
    def fault(world, mon, hold: float) -> dict:
        """The image host answers 500, or hangs, for ``hold`` seconds; new tasks arrive meanwhile."""
        world.images.mode = mode
        try:
            world.add_tasks(5)
            time.sleep(hold)
        finally:
            world.images.mode = "ok"
        return {"refused_requests": world.images.failed} if mode == "500" else {}

    return fault


def disk_full(world, mon, hold: float) -> dict:
    """MODEL_DIR's filesystem filled for ``hold`` seconds, then freed."""
    if world.disk.skipped:
        return {"skipped": world.disk.skipped}
    started = time.time()
    try:
        world.disk.fill()
        free = world.disk.free_mb()
        time.sleep(hold)
    finally:
        world.disk.free()
    said = sorted({r for t, s, r in mon.reasons if t >= started and ("space" in r.lower() or "full" in r.lower())})
    return {"free_mb_when_full": round(free, 2), "status_said": said[:3]}


def webhook_burst(world, mon, hold: float, n: int = 300) -> dict:
    """``n`` authenticated annotation events at once, as a bulk action in Label Studio sends them."""
    headers = world.webhook_headers()
    tasks = list(world.index_of)

    def send(i: int) -> str:
        event = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": world.project},
            "task": {"id": tasks[i % len(tasks)]},
        }
        try:
            return str(
                requests.post(f"{world.backend.url}/webhook", json=event, headers=headers, timeout=10).status_code
            )
        except requests.RequestException:
            return "no answer"

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(n)))
    out = {code: codes.count(code) for code in set(codes)}
    for code, k in out.items():
        if code.startswith("5"):
            mon.unexpected_5xx.append({"t": mon.elapsed(), "code": code, "route": "/webhook", "count": k})
    return {"events": n, "answers": out}


def replica(world, mon, hold: float) -> dict:
    """A second backend on the same MODEL_DIR for ``hold`` seconds (it gets a share of the events and
    of the /predict probes, as behind a load balancer), then stopped."""
    world.replica = world.new_backend("replica").start(timeout=300)
    headers = world.webhook_headers()
    end = time.time() + hold
    codes = []
    try:
        while time.time() < end:
            event = {"action": "ANNOTATION_CREATED", "project": {"id": world.project}}
            try:
                codes.append(
                    requests.post(f"{world.replica.url}/webhook", json=event, headers=headers, timeout=10).status_code
                )
            except requests.RequestException:
                codes.append(0)
            time.sleep(3)
    finally:
        replica, world.replica = world.replica, None
        replica.stop()
    return {"events_to_replica": len(codes), "refused": sum(1 for c in codes if c != 200)}


FAULTS = {
    "worker_kill": worker_kill,
    "backend_kill": backend_kill,
    "ls_outage": ls_outage,
    "image_500": _images("500"),
    "image_hang": _images("hang"),
    "disk_full": disk_full,
    "webhook_burst": webhook_burst,
    "replica": replica,
}


def recovered_at(mon, ledger, end: float) -> float | None:
    """When Label Studio's project first followed a version holding a label made after ``end``."""
    fresh = ledger.labels_since(end)
    for t, version in list(mon.switches):
        v = mon.versions.get(version) or mon.versions.get(version.removesuffix("-first"))  # a first queue
        if t > end and v is not None and any(v["labels"].get(str(c.task)) == c.label for c in fresh):
            return t
    return None


def wait_recovery(mon, ledger, end: float, cap: float) -> float | None:
    deadline = time.time() + cap
    while time.time() < deadline and not mon.stop.is_set():
        if (t := recovered_at(mon, ledger, end)) is not None:
            return round(t - end, 1)
        time.sleep(1.0)
    return None


def _measure_on(row: dict, mon, ledger, end: float, cap: float) -> None:
    row["recovery_s"] = wait_recovery(mon, ledger, end, cap)


def run_schedule(world, mon, ledger, args, deadline: float, progress) -> tuple[list[dict], list[threading.Thread]]:
    """Inject the faults of ``args.faults`` in turn until the run's end: the next one once the last
    has recovered, or ``args.gate_s`` after its end (its recovery is then still measured, up to
    ``args.recovery_cap_s``, by a thread of the list returned with the rows, one per fault)."""
    rows, kinds, pending = [], list(args.faults), []
    i = 0
    time.sleep(max(0.0, min(args.warmup_s, deadline - time.time())))
    while kinds and time.time() + args.fault_s + 30 < deadline:
        kind = kinds[i % len(kinds)]
        i += 1
        if rows and rows[-1].get("recovery_s") is None and "skipped" not in rows[-1]:
            # not recovered within --gate-s: its recovery time, still measured, includes this fault
            rows[-1]["overlapped_by"] = kind
        started = time.time()
        progress(f"fault {i}: {kind} ({args.fault_s:g}s)")
        try:
            info = FAULTS[kind](world, mon, args.fault_s)
            error = None
        except Exception as exc:
            info, error = {}, repr(exc)[:300]
        end = time.time()
        row = {"kind": kind, "at_s": round(started - mon.t0, 1), "lasted_s": round(end - started, 1), **info}
        if error:
            row["error"] = error
        if "skipped" not in info:
            row["recovery_s"] = wait_recovery(mon, ledger, end, args.gate_s)
            if row["recovery_s"] is None:
                late = threading.Thread(
                    target=_measure_on, args=(row, mon, ledger, end, args.recovery_cap_s - args.gate_s), daemon=True
                )
                late.start()
                pending.append(late)
        said = row.get("recovery_s") if "skipped" not in info else "skipped"
        progress(f"fault {i}: {kind} done, recovery {said if said is not None else f'over {args.gate_s:g}'} s")
        rows.append(row)
        time.sleep(min(5.0, max(0.0, deadline - time.time())))
    return rows, pending
