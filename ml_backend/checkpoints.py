"""Versioned checkpoints: ``MODEL_DIR/<project>/<version>/{model.pt, meta.json}``.

A version directory is written complete under a temporary name and renamed into place (atomic on
one file system), so a crash, even ``kill -9`` mid-write, leaves either the previous versions or a
complete new one, never a half-written checkpoint. Every version gets the next number of a
per-project sequence (``seq``, allocated under a file lock, so that processes sharing MODEL_DIR
agree): "newest" means the highest ``seq``, never the highest round number, which can repeat when a
project is re-trained from scratch. Loading takes the newest complete version whose files load;
leftovers of interrupted writes are removed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)
TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON beside ``path``, fsync it, rename it over ``path``: readers see old or new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def project_lock(project_dir: Path):
    """An exclusive lock on a project's folder, across threads and processes (fcntl)."""
    project_dir.mkdir(parents=True, exist_ok=True)
    with open(project_dir / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _seq(meta: dict) -> tuple:
    # versions written before the sequence existed sort before all others, by their save time
    return (1, meta["seq"], 0.0) if isinstance(meta.get("seq"), int) else (0, 0, float(meta.get("saved_at") or 0))


def save(project_dir: Path, version: str, state_dict: dict, meta: dict) -> Path:
    project_dir.mkdir(parents=True, exist_ok=True)
    with project_lock(project_dir):
        previous = [m.get("seq") for m in list_versions(project_dir)]
        seq = max([s for s in previous if isinstance(s, int)], default=0) + 1
        return _save(project_dir, version, state_dict, {**meta, "seq": seq})


def _save(project_dir: Path, version: str, state_dict: dict, meta: dict) -> Path:
    final = project_dir / version
    tmp = project_dir / f"{TMP_PREFIX}{version}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        with open(tmp / "model.pt", "wb") as f:
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / "meta.json", "w") as f:
            json.dump({**meta, "version": version, "saved_at": time.time()}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same version written again (e.g. a retried round): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(project_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_versions(project_dir: Path) -> list[dict]:
    """Metadata of every complete version, oldest first (by ``seq``)."""
    out = []
    if not project_dir.is_dir():
        return out
    for path in project_dir.iterdir():
        if path.name.startswith(TMP_PREFIX) or not path.is_dir():
            continue
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if (path / "model.pt").is_file() and isinstance(meta.get("round"), int):
            out.append({**meta, "path": str(path)})
    return sorted(out, key=_seq)


def load_latest(project_dir: Path) -> tuple[dict, dict] | None:
    """(meta, state_dict) of the newest version that loads, or None. Cleans up interrupted writes."""
    if project_dir.is_dir():
        for leftover in project_dir.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
            log.warning("removed an interrupted checkpoint write: %s", leftover)
    for meta in reversed(list_versions(project_dir)):
        try:
            state = torch.load(Path(meta["path"]) / "model.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            log.error("checkpoint %s does not load (%s); trying an older one", meta["path"], exc)
            continue
        return meta, state
    return None


def prune(project_dir: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions. Returns the removed version names."""
    versions = list_versions(project_dir)
    removed = []
    for meta in versions[: max(0, len(versions) - keep)]:
        shutil.rmtree(meta["path"], ignore_errors=True)
        removed.append(meta["version"])
    return removed
