"""The frozen-feature cache's disk store: append-only segment files of checksummed records.

One file per task (a ``torch.save`` each, written through a temporary file and a rename) cost more
in file-system work and pickling than the activations themselves; a pool of 100k tasks also means
100k inodes. Here a process appends records to its own segment file (``<time>-<pid>.seg``; a new
one past ``segment_bytes``) and keeps an index in memory, rebuilt at start-up by reading the
records' headers. A record is its header (magic, key length, dtype, dimensions, data length,
CRC-32), the key, the shape and the raw tensor bytes:

* **never a partial entry**: a record enters the index only once it is written whole; at start-up a
  segment is read up to its first incomplete or foreign record (a crash mid-write), and every read
  checks the key and the CRC, so a damaged record is a miss (and leaves the index);
* **bounded**: past ``max_bytes`` the oldest segments are deleted whole (first in, first out);
* **several processes** (gunicorn workers sharing ``MODEL_DIR``) each append to their own segments
  and read everyone's that existed when they started.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MAGIC = b"AAF1"
HEADER = struct.Struct("<4sBBBxII")  # magic, key length, dtype code, ndim, data length, CRC-32
CODES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3}
DTYPE_OF = {code: dtype for dtype, code in CODES.items()}
SUFFIX = ".seg"


@dataclass
class _Segment:
    path: Path
    size: int = 0
    keys: list[str] = field(default_factory=list)
    fd: int | None = None  # for reading (os.pread), opened on first use

    def reader(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def encode(key: str, z: torch.Tensor) -> bytes:
    """One record: header, key, shape, data (``z`` contiguous, on the CPU, of a dtype in CODES)."""
    raw_key = key.encode()
    shape = struct.pack(f"<{z.dim()}q", *z.shape)
    data = z.reshape(-1).view(torch.uint8).numpy().tobytes()
    crc = zlib.crc32(data, zlib.crc32(shape, zlib.crc32(raw_key)))
    return HEADER.pack(MAGIC, len(raw_key), CODES[z.dtype], z.dim(), len(data), crc) + raw_key + shape + data


def _parse_header(head: bytes) -> tuple[int, int, int, int, int] | None:
    """(key length, dtype code, ndim, data length, CRC) of a record header, None if it is not one."""
    if len(head) < HEADER.size:
        return None
    magic, key_len, code, ndim, length, crc = HEADER.unpack_from(head)
    if magic != MAGIC or code not in DTYPE_OF or ndim > 8:
        return None
    return key_len, code, ndim, length, crc


def record_size(key_len: int, ndim: int, length: int) -> int:
    return HEADER.size + key_len + 8 * ndim + length


def decode(record: bytes, key: str) -> torch.Tensor | None:
    """The tensor of a whole record, None if it is damaged or holds another key."""
    parsed = _parse_header(record)
    if parsed is None:
        return None
    key_len, code, ndim, length, crc = parsed
    if len(record) != record_size(key_len, ndim, length):
        return None
    start = HEADER.size
    raw_key, shape = record[start : start + key_len], record[start + key_len : start + key_len + 8 * ndim]
    data = record[start + key_len + 8 * ndim :]
    if raw_key != key.encode() or zlib.crc32(data, zlib.crc32(shape, zlib.crc32(raw_key))) != crc:
        return None
    dims = struct.unpack(f"<{ndim}q", shape)
    return torch.frombuffer(bytearray(data), dtype=DTYPE_OF[code]).reshape(dims)


class SegmentStore:
    """Tensors by key in append-only segment files under ``directory`` (see the module's docstring)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1, min(256 * 2**20, max_bytes // 16))
        self._segments: dict[str, _Segment] = {}  # by name, oldest first
        self._index: dict[str, tuple[str, int, int]] = {}  # key -> (segment, offset, record size)
        self._used = 0
        self._lock = threading.Lock()
        self._writing: str | None = None  # this process's segment being appended to
        self._write_fd: int | None = None
        self._warned = False
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            self._scan(path)

    def _scan(self, path: Path) -> None:
        """Index a segment's records up to its first incomplete or foreign one."""
        segment = _Segment(path)
        try:
            size = path.stat().st_size
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            offset = 0
            while offset + HEADER.size <= size:
                parsed = _parse_header(os.pread(fd, HEADER.size, offset))
                if parsed is None:
                    break
                key_len, _, ndim, length, _ = parsed
                total = record_size(key_len, ndim, length)
                if offset + total > size:
                    break  # cut short by a crash: never indexed
                key = os.pread(fd, key_len, offset + HEADER.size).decode(errors="replace")
                self._index[key] = (path.name, offset, total)
                segment.keys.append(key)
                offset += total
        finally:
            os.close(fd)
        segment.size = size
        self._segments[path.name] = segment
        self._used += size

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def used_bytes(self) -> int:
        return self._used

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            where = self._index.get(key)
            segment = self._segments.get(where[0]) if where else None
            try:
                fd = segment.reader() if segment is not None else None
            except OSError:
                fd = None
        if where is None or fd is None:
            return None
        try:
            z = decode(os.pread(fd, where[2], where[1]), key)
        except OSError:
            z = None
        if z is None:
            with self._lock:  # damaged (or deleted meanwhile): a miss, and never read again
                if self._index.get(key) == where:
                    del self._index[key]
        return z

    def put(self, key: str, z: torch.Tensor) -> bool:
        """Append ``z`` under ``key`` (not if it is there already); False when it could not be."""
        if self.max_bytes <= 0 or key in self._index:
            return False
        record = encode(key, z)
        if len(record) > self.max_bytes:
            return False
        with self._lock:
            if key in self._index:
                return False
            try:
                name, offset = self._append(record)
            except OSError as exc:
                if not self._warned:
                    log.warning("feature cache: cannot write to %s: %s (memory only)", self.dir, exc)
                    self._warned = True
                return False
            self._index[key] = (name, offset, len(record))
            segment = self._segments[name]
            segment.keys.append(key)
            segment.size += len(record)
            self._used += len(record)
            self._evict()
        return True

    def _append(self, record: bytes) -> tuple[str, int]:
        """Write a whole record at the end of this process's segment (a new one when it is full)."""
        segment = self._segments.get(self._writing) if self._writing else None
        if segment is None or (segment.size and segment.size + len(record) > self.segment_bytes):
            self._roll()
            segment = self._segments[self._writing]
        offset, view = segment.size, memoryview(record)
        while view:
            written = os.write(self._write_fd, view)
            view = view[written:]
        return segment.path.name, offset

    def _roll(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        name = f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        path = self.dir / name
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments[name] = _Segment(path)
        self._writing = name

    def _evict(self) -> None:
        """Delete the oldest segments while over the bound (never the one being written)."""
        while self._used > self.max_bytes and len(self._segments) > 1:
            name = next(iter(self._segments))
            if name == self._writing:
                break
            segment = self._segments.pop(name)
            for key in segment.keys:
                if (where := self._index.get(key)) is not None and where[0] == name:
                    del self._index[key]
            self._used -= segment.size
            segment.close()
            segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            for segment in self._segments.values():
                segment.close()
