"""Soak: annotators label for ``--minutes`` while things break, and nothing may be lost.

    .venv/bin/python -m benchmarks.soak [--minutes 20] [--annotators 4] [--backbone smallcnn] [--out soak.json]

A real Label Studio 1.23.2 and the backend under gunicorn (``WORKERS=2``) on a MODEL_DIR of its own
(a small tmpfs when mounting is allowed), a project of ``--tasks`` generated images on a local image
host. ``--annotators`` simulated annotators, each with their own Label Studio account, take the next
task of the queue, answer with the true label after a think time (sometimes a wrong one, corrected
later), sometimes skip, sometimes delete an earlier annotation. Meanwhile faults arrive one at a
time (``--faults``): kill -9 of a gunicorn worker; kill -9 of the whole backend and a restart; Label
Studio stopped and restarted; the image host answering 500 or hanging; MODEL_DIR's filesystem full;
a burst of webhook events; a second replica on the same MODEL_DIR, started and stopped. Checked
throughout (``soak_parts/checks.py``): every version trained on every label Label Studio held when its
round read them, the project's model_version always one with predictions, no checkpoint ever
partial, /predict never 5xx but the documented 503, /health within 1 s, and each backend process's
memory, threads and open files each minute. Writes ``--out`` (JSON) and prints a summary; exits 1
when a target is missed. Every process it starts is stopped, by process group, also on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.parts.provenance import git_state
from benchmarks.soak_parts.annotators import Annotator, Ledger
from benchmarks.soak_parts.checks import Monitor
from benchmarks.soak_parts.faults import KINDS, run_schedule
from benchmarks.soak_parts.report import final_check, recovery_by_kind, resource_growth, summary, targets
from benchmarks.soak_parts.world import World


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=20.0, help="how long the annotators label (faults included)")
    p.add_argument("--annotators", type=int, default=4, help="simulated annotators, each with an account")
    p.add_argument("--out", type=Path, default=Path("soak.json"), help="where the figures go (JSON)")
    p.add_argument(
        "--backbone",
        default="default",
        help="the backend's BACKBONE; 'default' keeps the backend's own default (smallcnn: fast, for short runs)",
    )
    p.add_argument("--tasks", type=int, default=3000, help="image tasks in the project")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (WORKERS)")
    p.add_argument("--think-s", type=float, default=3.0, help="an annotator's mean time per task, seconds")
    p.add_argument(
        "--faults", default=",".join(KINDS), help="the fault kinds, injected in this order, in turn, until the end"
    )
    p.add_argument("--fault-s", type=float, default=20.0, help="how long an outage, a hang or a full disk lasts")
    p.add_argument("--warmup-s", type=float, default=30.0, help="labeling without faults at the start")
    p.add_argument(
        "--gate-s",
        type=float,
        default=60.0,
        help="the next fault comes at the latest this long after the last one ends (a fault not recovered by "
        "then has missed the 60 s target; its recovery, still measured, is marked overlapped_by the next fault)",
    )
    p.add_argument("--recovery-cap-s", type=float, default=180.0, help="the longest wait for a recovery")
    p.add_argument("--settle-s", type=float, default=240.0, help="the longest wait for the final version")
    p.add_argument("--disk-mb", type=int, default=512, help="size of MODEL_DIR's own filesystem (tmpfs)")
    p.add_argument("--env", nargs="*", default=[], help="more backend settings KEY=VALUE")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, databases) afterwards")
    args = p.parse_args(argv)
    args.faults = [k for k in args.faults.split(",") if k]
    unknown = set(args.faults) - set(KINDS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    return args


def progress_printer(t0: float):
    def say(message: str) -> None:
        print(f"[soak {time.time() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def heartbeat(mon, ledger, say, stop: threading.Event, every: float = 60.0) -> None:
    """A progress line each ``every`` seconds."""
    while not stop.wait(every):
        c = ledger.counts
        say(
            f"{c['annotations']} annotations, {c['skips']} skips, {len(mon.switches)} versions followed, "
            f"lost so far {len(mon.lost_rolling)}, unexpected 5xx {len(mon.unexpected_5xx)}"
        )


def run(args) -> dict:
    """One soak run; returns its figures (what ``--out`` holds)."""
    t0 = time.time()
    say = progress_printer(t0)
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    root.chmod(0o755)
    world = World(root, args)
    labeling, checking = threading.Event(), threading.Event()
    try:
        say(f"starting Label Studio, {args.tasks} tasks and the backend in {root}")
        world.start()
        ledger = Ledger()
        mon = Monitor(world, ledger, checking)
        mon.start()
        people = [Annotator(i, world, ledger, labeling, args.think_s, seed=i) for i in range(args.annotators)]
        for a in people:
            a.start()
        threading.Thread(target=heartbeat, args=(mon, ledger, say, labeling), daemon=True).start()
        say(f"{args.annotators} annotators labeling for {args.minutes:g} min; faults {','.join(args.faults)}")
        deadline = mon.t0 + args.minutes * 60
        faults, pending = run_schedule(world, mon, ledger, args, deadline, say)
        time.sleep(max(0.0, deadline - time.time()))
        for late in pending:  # recoveries still measured: the annotators keep labeling meanwhile
            late.join(timeout=args.recovery_cap_s)
        labeling.set()
        for a in people:
            a.join(timeout=60)
        minutes = round((time.time() - mon.t0) / 60, 2)
        say("annotators stopped; waiting for the version trained on every label")
        final = final_check(world, mon, ledger, args.settle_s)
        mon.sample_resources()
        checking.set()
        mon.join()
        return collect(args, world, mon, ledger, faults, final, minutes)
    finally:
        labeling.set()
        checking.set()
        say("stopping every process")
        world.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def collect(args, world, mon, ledger, faults, final, minutes) -> dict:
    result = {
        "host": socket.gethostname(),
        "argv": sys.argv[1:],
        "code": git_state(),
        "minutes_run": minutes,
        "annotators": args.annotators,
        "tasks": args.tasks,
        "backbone": args.backbone,
        "workers": args.workers,
        "model_dir_filesystem": "ordinary folder" if world.disk.skipped else "tmpfs",
        "skipped": {"disk_full": world.disk.skipped} if world.disk.skipped else {},
        "annotations": dict(ledger.counts),
        "annotations_lost": final["lost"],
        "lost_during_run": list(mon.lost_rolling.values())[:50],
        "final_check": final,
        "versions_published": len({v for _, v in mon.switches}),
        "versions_on_disk_seen": len(mon.versions),
        "predict_answers": dict(mon.predict_codes),
        "unexpected_5xx": len(mon.unexpected_5xx),
        "unexpected_5xx_detail": mon.unexpected_5xx[:20],
        "health": mon.health_figures(),
        "model_version_without_predictions": mon.version_problems[:20],
        "partial_checkpoints": mon.partial,
        "check_errors": mon.errors[:20],
        "faults": faults,
        "faults_by_kind": {
            k: sum(1 for f in faults if f["kind"] == k) for k in dict.fromkeys(f["kind"] for f in faults)
        },
        "recovery_by_kind": recovery_by_kind(faults),
        "resources": resource_growth(mon.resources),
        "round_reads": mon.timings,  # version -> seconds its round read labels (and each read), trained
        "status_reasons": [{"t": round(t - mon.t0, 1), "state": s, "reason": r[:300]} for t, s, r in mon.reasons][
            -200:
        ],
    }
    result["targets"] = targets(result)
    return result


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop every process started, whoever ends the run
        signal.signal(sig, _interrupted)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(summary(result))
    print(f"figures: {args.out}")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
