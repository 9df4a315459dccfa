"""MODEL_DIR, and everything durable in it. The one module that decides where files go and writes
them (through :mod:`ml_backend.atomic`); the image and feature caches get their folders from
here and hold only entries that can be recomputed.

    MODEL_DIR/
      projects/<id>/project.json          registration: label config, version published before round 1
      projects/<id>/<version>/            a checkpoint: model.pt (the target's state_dict) + meta.json
      projects/<id>/strategy_state.pt     what a strategy computed once from the pool (ADMA's landmarks)
      projects/<id>/.lock                 per-project lock across threads and processes (short sections)
      projects/<id>/trainer.lease         the trainer lease: who runs this project's jobs now
      projects/<id>/status.json           the worker status of the last job, for every process's /status
      projects/<id>/history.jsonl         one line per round: labels, prequential agreement, κ (the dashboard)
      projects/<id>/stability.json        the served version's predictions on the stopping signal's sample
      secrets/webhook.key                 master secret of the webhook header (mode 0600)
      cache/{images,features,landmarks}/  recomputable caches

Several processes (``WORKERS>1``, or replicas sharing MODEL_DIR) serve one project together: any
of them answers /predict from the newest complete version on disk, and exactly one at a time runs
the project's jobs (rounds, publishes), the one holding the **trainer lease**. The lease, status,
history and small JSON files are :class:`~ml_backend.service.shared_files.SharedFiles`' (``store.shared``).

A checkpoint folder is written complete under a temporary name and renamed into place, so a crash,
even ``kill -9`` mid-write, leaves the previous versions or a complete new one. Every version gets
the next number of a per-project sequence (``seq``, allocated under the project lock, so that
processes sharing MODEL_DIR agree): "newest" is the highest ``seq``, never the highest round, which
repeats when a project is re-trained from scratch. Loading takes the newest version that loads and
removes what interrupted writes left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from ml_backend import atomic
from ml_backend.errors import DiskFull
from ml_backend.service.shared_files import LeaseBusy, SharedFiles

__all__ = ["LeaseBusy", "Store"]  # LeaseBusy: where the worker and the tests have always imported it from

log = logging.getLogger(__name__)


def _seq(meta: dict) -> tuple:
    # versions written before the sequence existed sort before all others, by their save time
    return (1, meta["seq"], 0.0) if isinstance(meta.get("seq"), int) else (0, 0, float(meta.get("saved_at") or 0))


LOW_SPACE_MB = 64  # below this, a new version (weights and optimiser state) may not fit


def space(root: Path) -> dict:
    """MODEL_DIR's free space, read live by whichever process answers (when the disk is full, no
    process can write its status for the others to read); with a message when it is low."""
    try:
        usage = shutil.disk_usage(root)
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    free = usage.free / 2**20
    out = {"free_mb": round(free, 1), "total_mb": round(usage.total / 2**20, 1), "low": free < LOW_SPACE_MB}
    if out["low"]:
        out["message"] = (
            f"MODEL_DIR has {free:.0f} MB free: a new version may not be written; the last complete version "
            "keeps serving, and training resumes by itself once space returns"
        )
    return out


class Store:
    def __init__(self, model_dir: Path) -> None:
        self.root = Path(model_dir)
        self.shared = SharedFiles(self.root / "projects")  # lease, status, history, small JSON records

    # ------------------------------------------------------------------ what processes tell each other
    def trainer_lease(self, key: str, job: str):
        """Hold project ``key``'s trainer lease for one job, or raise :class:`LeaseBusy` at once."""
        return self.shared.trainer_lease(key, job)

    def lease_holder(self, key: str) -> dict | None:
        return self.shared.lease_holder(key)

    def write_status(self, key: str, info: dict) -> None:
        self.shared.write_status(key, info)

    def read_status(self, key: str) -> dict | None:
        return self.shared.read_status(key)

    def append_history(self, key: str, entry: dict) -> None:
        self.shared.append_history(key, entry)

    def read_history(self, key: str) -> list[dict]:
        return self.shared.read_history(key)

    def read_json(self, key: str, name: str) -> dict | None:
        return self.shared.read_json(key, name)

    def write_json(self, key: str, name: str, data: dict, durable: bool = True) -> None:
        self.shared.write_json(key, name, data, durable)

    # ------------------------------------------------------------------ layout
    def project_dir(self, key: str) -> Path:
        return self.root / "projects" / key

    def project_keys(self) -> list[str]:
        """Every project folder whose name is a canonical project id."""
        folder = self.root / "projects"
        if not folder.is_dir():
            return []
        return [
            p.name for p in sorted(folder.iterdir()) if p.is_dir() and p.name.isdigit() and str(int(p.name)) == p.name
        ]

    def cache_dir(self, name: str) -> Path:
        return self.root / "cache" / name

    @contextlib.contextmanager
    def project_lock(self, key: str):
        """An exclusive lock on a project's folder, across threads and processes (fcntl)."""
        folder = self.project_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ secrets
    def webhook_master_secret(self, fresh: bytes) -> bytes:
        """The shared master secret: ``fresh`` unless another process created it first."""
        folder = self.root / "secrets"
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
        return atomic.create_once(folder / "webhook.key", fresh)

    # ------------------------------------------------------------------ registration
    def read_registration(self, key: str) -> dict | None:
        """``project.json`` (``config``, ``published_version``, ``strategy``), or None when absent or damaged."""
        path = self.project_dir(key) / "project.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("project %s: ignoring a damaged %s (%s)", key, path, exc)
            return None
        return data if isinstance(data, dict) else None

    def has_registration(self, key: str) -> bool:
        return (self.project_dir(key) / "project.json").is_file()

    def write_registration(
        self, key: str, config: dict, published_version: str | None, strategy: str | None = None
    ) -> None:
        """What a restarted process needs to know about a confirmed project (never a token)."""
        try:
            atomic.write_json(
                self.project_dir(key) / "project.json",
                {"project": int(key), "published_version": published_version, "config": config, "strategy": strategy},
            )
        except OSError as exc:
            log.warning("project %s: cannot save its registration: %s", key, exc)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, key: str, version: str, state_dict: dict, meta: dict) -> int:
        """Write a version (complete or not at all); returns its sequence number."""
        folder = self.project_dir(key)
        with self.project_lock(key):
            previous = [m.get("seq") for m in self.list_versions(key)]
            seq = max([s for s in previous if isinstance(s, int)], default=0) + 1
            weights = {k: v.detach().cpu() for k, v in state_dict.items()}
            info = {**meta, "seq": seq, "version": version, "saved_at": time.time()}

            def fill(tmp: Path) -> None:
                buffer = io.BytesIO()  # serialised first: a full disk is then an OSError, not torch's
                torch.save(weights, buffer)  # "unexpected pos" from deep inside its zip writer
                (tmp / "model.pt").write_bytes(buffer.getbuffer())
                (tmp / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True))

            try:
                atomic.write_dir(folder / version, fill)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                free = shutil.disk_usage(folder).free / 2**20
                raise DiskFull(
                    exc.errno,
                    f"MODEL_DIR is full ({free:.1f} MB free): version {version} was not written; the last "
                    "complete version keeps serving until space returns",
                ) from exc
            return seq

    def list_versions(self, key: str) -> list[dict]:
        """Metadata of every complete version, oldest first (by ``seq``)."""
        folder, out = self.project_dir(key), []
        if not folder.is_dir():
            return out
        for path in folder.iterdir():
            if path.name.startswith(atomic.TMP_PREFIX) or not path.is_dir():
                continue
            try:
                meta = json.loads((path / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if (path / "model.pt").is_file() and isinstance(meta.get("round"), int):
                out.append({**meta, "path": str(path)})
        return sorted(out, key=_seq)

    @staticmethod
    def load_weights(meta: dict) -> dict:
        """The state_dict of the version ``meta`` (from :meth:`list_versions`) describes."""
        return torch.load(Path(meta["path"]) / "model.pt", map_location="cpu", weights_only=True)

    def load_latest(self, key: str) -> tuple[dict, dict] | None:
        """(meta, state_dict) of the newest version that loads, or None. Cleans up interrupted writes."""
        for leftover in atomic.remove_leftovers(self.project_dir(key)):
            log.warning("removed an interrupted write: %s", leftover)
        for meta in reversed(self.list_versions(key)):
            try:
                state = self.load_weights(meta)
            except Exception as exc:
                log.error("checkpoint %s does not load (%s); trying an older one", meta["path"], exc)
                continue
            return meta, state
        return None

    def prune(self, key: str, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions. Returns the removed version names."""
        versions = self.list_versions(key)
        removed = []
        for meta in versions[: max(0, len(versions) - keep)]:
            shutil.rmtree(meta["path"], ignore_errors=True)
            removed.append(meta["version"])
        return removed

    def mark_published(self, key: str, version: str, checkpoint_id: str | None) -> None:
        """Record in the checkpoint's meta that Label Studio has ``version``."""
        for meta in self.list_versions(key):
            if meta.get("version") == version or (checkpoint_id and meta.get("checkpoint_id") == checkpoint_id):
                path = Path(meta.pop("path")) / "meta.json"
                atomic.write_json(path, {**meta, "published_version": version})

    # ------------------------------------------------------------------ strategy state
    def save_strategy_state(self, key: str, ident: str, saved: dict) -> bool:
        path = self.project_dir(key) / "strategy_state.pt"
        try:
            atomic.save_torch(path, {"ident": ident, "state": saved})
            return True
        except OSError as exc:  # the state stays in memory; only a restart would recompute it
            log.warning("project %s: cannot save the strategy's state to %s: %s", key, path, exc)
            return False

    def load_strategy_state(self, key: str, ident: str) -> dict | None:
        """The saved state when it was saved for ``ident``; None when absent, damaged or another's."""
        path = self.project_dir(key) / "strategy_state.pt"
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged: recomputed at the next full-pool scoring
            log.warning("project %s: ignoring %s (%s); the strategy recomputes it", key, path, exc)
            return None
        if not isinstance(data, dict) or data.get("ident") != ident:
            log.info("project %s: %s was saved for another backbone or strategy; not used", key, path)
            return None
        return data.get("state")
