"""What processes sharing MODEL_DIR tell each other about a project, in its folder
(``MODEL_DIR/projects/<id>/``, laid out by :class:`~ml_backend.service.store.Store`): the trainer
lease (``trainer.lease``), the last job's status (``status.json``), the rounds' history
(``history.jsonl``) and small JSON records (``stability.json``, ``review.json``, ``queue.json``).

The trainer lease is an exclusive ``flock`` on ``trainer.lease``, taken without waiting: exactly
one process at a time runs a project's jobs. The kernel releases it when its holder dies, even by
``kill -9``, so another process takes over at its next attempt; on NFSv4 the server's lease
(90 s by default) does the same for a host that disappears.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path

from ml_backend import atomic

log = logging.getLogger(__name__)


class LeaseBusy(RuntimeError):
    """Another process holds a project's trainer lease; ``holder`` says who (host, pid, job, since)."""

    def __init__(self, key: str, holder: dict | None) -> None:
        self.holder = holder or {}
        who = (
            f"{self.holder.get('host', '?')} pid {self.holder.get('pid', '?')} "
            f"({self.holder.get('job', '?')} since {time.strftime('%H:%M:%S', time.localtime(self.holder['since']))})"
            if self.holder.get("since")
            else "another process"
        )
        super().__init__(f"project {key}: {who} holds the trainer lease")


class SharedFiles:
    """The per-project files every process sharing MODEL_DIR reads and writes; ``projects_dir``:
    the folder that holds one folder per project (``MODEL_DIR/projects``)."""

    def __init__(self, projects_dir: Path) -> None:
        self.root = Path(projects_dir)

    def _folder(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def trainer_lease(self, key: str, job: str):
        """Hold project ``key``'s trainer lease for one job, or raise :class:`LeaseBusy` at once.
        The holder's host, pid, job and start time are written into the lease file for /status."""
        import socket

        folder = self._folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "trainer.lease", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LeaseBusy(key, self.lease_holder(key)) from None
            try:
                f.seek(0)
                f.truncate()
                f.write(
                    json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": time.time()})
                )
                f.flush()
                yield
            finally:
                f.seek(0)
                f.truncate()
                f.flush()
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def lease_holder(self, key: str) -> dict | None:
        """Who holds project ``key``'s trainer lease now (None: nobody)."""
        path = self._folder(key) / "trainer.lease"
        try:
            with open(path) as f:
                try:  # a shared lock is refused exactly while somebody holds the exclusive one
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        holder = json.loads(f.read() or "{}")
                    except ValueError:  # written just now
                        holder = {}
                    return holder if isinstance(holder, dict) else {}
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None

    def write_status(self, key: str, info: dict) -> None:
        """The worker status of this project's last job, for /status in every process (not
        fsynced: it is rewritten at every change of state)."""
        self.write_json(key, "status.json", info, durable=False)

    def read_status(self, key: str) -> dict | None:
        return self.read_json(key, "status.json")

    def append_history(self, key: str, entry: dict) -> None:
        """One round's record (one JSON line, appended; a torn last line is skipped on reading)."""
        try:
            line = (json.dumps(entry, default=str) + "\n").encode()
            fd = os.open(self._folder(key) / "history.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("project %s: cannot record the round in its history: %s", key, exc)

    def read_history(self, key: str) -> list[dict]:
        try:
            lines = (self._folder(key) / "history.jsonl").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def read_json(self, key: str, name: str) -> dict | None:
        """A small per-project JSON file (``stability.json``); None when absent or damaged."""
        try:
            data = json.loads((self._folder(key) / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_json(self, key: str, name: str, data: dict, durable: bool = True) -> None:
        try:
            payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
            atomic.write_with(self._folder(key) / name, lambda f: f.write(payload), durable=durable)
        except OSError as exc:
            log.warning("project %s: cannot save %s: %s", key, name, exc)
