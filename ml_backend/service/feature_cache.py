"""Frozen-feature cache: each task's activations at the freeze boundary.

The early layers never change between rounds, so a task's trunk activations are computed once;
re-scoring after a round runs only the trainable part. Entries live in memory up to a byte bound
(least recently used first out), spill to disk under ``MODEL_DIR/cache/features/<fingerprint>/``
up to a second bound, and are keyed by the task id and its image reference (a changed image is a
new entry). The fingerprint covers backbone, weights, preprocessing and freeze boundary: when any
of them changes, the old directory is removed and nothing stale can be served.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ml_backend import atomic

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class FeatureCache:
    def __init__(self, root: Path, fingerprint: str, memory_bytes: int, disk_bytes: int, dtype: str = "float16"):
        self.dtype = DTYPES[dtype]
        self.memory_bytes = memory_bytes
        self.disk_bytes = disk_bytes
        self.root = Path(root)
        self.dir = self.root / fingerprint
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memory_used = 0
        self._disk: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._disk_used = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        if self.root.exists():
            for stale in self.root.iterdir():
                if stale.name != fingerprint:
                    shutil.rmtree(stale, ignore_errors=True)
                    log.info("feature cache: removed %s (backbone, weights or preprocessing changed)", stale)
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.dir.glob("*.pt"), key=lambda p: p.stat().st_mtime):
            self._disk[path.stem] = path.stat().st_size
            self._disk_used += path.stat().st_size
        atomic.remove_leftovers(self.dir)

    @staticmethod
    def key(task_id, reference) -> str:
        return hashlib.sha1(f"{task_id}\x1f{reference}".encode()).hexdigest()

    def round(self, z: torch.Tensor) -> torch.Tensor:
        """The value the cache will hand back later: scoring always uses it, cached or not, so a
        task scores the same whether its activations came from the cache or not."""
        return z.to(self.dtype).float()

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            z = self._memory.get(key)
            if z is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return z.float()
            on_disk = key in self._disk
        if on_disk:
            try:
                z = torch.load(self.dir / f"{key}.pt", map_location="cpu", weights_only=True)
            except Exception:  # a damaged file is only a miss
                z = None
            if z is not None:
                with self._lock:
                    self.hits += 1
                self._remember(key, z)
                return z.float()
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, z: torch.Tensor) -> None:
        self._remember(key, z.detach().to("cpu", self.dtype).contiguous())

    def _remember(self, key: str, z: torch.Tensor) -> None:
        size = z.numel() * z.element_size()
        evicted: list[tuple[str, torch.Tensor]] = []
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = z
            self._memory_used += size
            while self._memory_used > self.memory_bytes and len(self._memory) > 1:
                old_key, old = self._memory.popitem(last=False)
                self._memory_used -= old.numel() * old.element_size()
                evicted.append((old_key, old))
            need_disk = [(k, t) for k, t in evicted if k not in self._disk]
        for old_key, old in need_disk:  # spill what memory cannot hold
            self._write(old_key, old)

    def _write(self, key: str, z: torch.Tensor) -> None:
        path = self.dir / f"{key}.pt"
        try:
            atomic.save_torch(path, z, durable=False)  # a cache: recomputed if lost
        except OSError as exc:
            log.warning("feature cache: cannot spill to %s: %s", self.dir, exc)
            return
        size = path.stat().st_size
        drop = []
        with self._lock:
            self._disk[key] = size
            self._disk_used += size
            while self._disk_used > self.disk_bytes and len(self._disk) > 1:
                old_key, old_size = self._disk.popitem(last=False)
                self._disk_used -= old_size
                drop.append(old_key)
        for old_key in drop:
            (self.dir / f"{old_key}.pt").unlink(missing_ok=True)

    def stats(self) -> dict:
        with self._lock:
            return {
                "memory_items": len(self._memory),
                "memory_mb": round(self._memory_used / 2**20, 1),
                "disk_items": len(self._disk),
                "disk_mb": round(self._disk_used / 2**20, 1),
                "hits": self.hits,
                "misses": self.misses,
                "dtype": str(self.dtype).replace("torch.", ""),
            }
