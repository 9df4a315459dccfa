"""Where a benchmark's memory and CPU go: the resident memory of a process tree sampled every second
(its peak, and a series), and the CPU seconds of named process trees and of the whole machine
between two marks (from ``/proc``: Linux only)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None: the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the live processes of ``root``'s tree."""
    total = 0
    for pid in tree(root):
        if (fields := _stat(pid)) is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mb(root: int) -> float:
    """Resident memory of ``root``'s tree, MB."""
    total = 0
    for pid in tree(root):
        if (fields := _stat(pid)) is not None:
            total += int(fields[21])  # rss, pages
    return total * PAGE_MB


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK  # minus idle and iowait


class Meter:
    """Samples ``rss_root``'s resident memory every second in a thread (``peak``, and ``series``:
    one (seconds since start, MB) every ``every`` s); :meth:`mark` records the CPU seconds of each
    named process tree, of this process alone and of the machine; :meth:`cpu_between` compares two
    marks. A tree's processes that ended between the marks are not counted."""

    def __init__(self, rss_root: int, trees: dict[str, int], every: float = 10.0):
        self.rss_root, self.trees, self.every = rss_root, dict(trees), every
        self.peak, self.series, self.marks = 0.0, [], {}
        self._t0, self._stop = time.perf_counter(), threading.Event()
        self.mark("start")
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        last = -self.every
        while not self._stop.wait(1.0):
            mb, now = rss_mb(self.rss_root), time.perf_counter() - self._t0
            self.peak = max(self.peak, mb)
            if now - last >= self.every:
                self.series.append((round(now, 1), round(mb, 1)))
                last = now

    def mark(self, name: str) -> None:
        cpu = {label: cpu_seconds(pid) for label, pid in self.trees.items()}
        cpu["this process"] = time.process_time()  # the benchmark itself (its servers' threads), no children
        self.marks[name] = {"t": time.perf_counter(), "machine": machine_busy_seconds(), **cpu}

    def cpu_between(self, first: str, last: str) -> dict:
        """Cores used on average between two marks, per tree, by the machine, and by what is in no
        tree (``other``); and the wall seconds."""
        a, b = self.marks[first], self.marks[last]
        wall = b["t"] - a["t"]
        if wall <= 0:
            return {}
        out = {label: round((b[label] - a[label]) / wall, 2) for label in [*self.trees, "this process"]}
        machine = (b["machine"] - a["machine"]) / wall
        out.update(machine=round(machine, 2), other=round(machine - sum(out.values()), 2), wall_s=round(wall, 1))
        return out

    def stop(self) -> float:
        """Stops the sampling; the peak resident memory, MB."""
        self._stop.set()
        return round(max(self.peak, rss_mb(self.rss_root)), 1)
