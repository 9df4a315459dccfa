"""One way to write a file so that a reader (or a restart after ``kill -9``) sees the old content or
the new one, whole, never a part: write a uniquely named temporary file beside the target, fsync it,
rename it over the target, fsync the folder. Every durable write in the project goes through here."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Callable

TMP_PREFIX = ".tmp-"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{time.monotonic_ns()}.{secrets.token_hex(3)}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_with(path: Path, write: Callable[[BinaryIO], None], mode: int | None = None, durable: bool = True) -> None:
    """Write ``path`` through ``write(file)`` atomically; ``mode`` sets its permissions. Without
    ``durable`` (caches: entries that can be recomputed) nothing is fsynced: still whole or absent
    for a reader, but possibly lost in a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    write_with(path, lambda f: f.write(data), mode)


def write_json(path: Path, data) -> None:
    write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())


def save_torch(path: Path, obj, durable: bool = True) -> None:
    import torch

    write_with(path, lambda f: torch.save(obj, f), durable=durable)


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bytes:
    """Create ``path`` with ``data`` unless it exists; returns what the file holds. Processes racing
    to create it agree on one content (a hard link, unlike a rename, fails if the target exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = path.read_bytes()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    tmp = _tmp_name(path)
    write_with(tmp, lambda f: f.write(data), mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def write_dir(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create the folder ``final`` complete: ``fill(tmp)`` writes its files into a temporary folder
    beside it (each file fsynced), which is then renamed into place (replacing an older one)."""
    final = Path(final)
    tmp = _tmp_name(final)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # the same name written again (e.g. a retried round): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete what interrupted writes left in ``folder``; returns the paths removed."""
    removed = []
    if Path(folder).is_dir():
        for leftover in Path(folder).glob(f"{TMP_PREFIX}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed
