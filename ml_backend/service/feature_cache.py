"""Frozen-feature cache: each task's activations at the freeze boundary.

The early layers never change between rounds, so a task's trunk activations are computed once;
re-scoring after a round runs only the trainable part. Entries are keyed by the task id and its image
reference (a changed image is a new entry) and kept in two places:

* **memory**, up to ``memory_bytes``, as a segmented LRU (scan-resistant): a new entry, or one read
  back from disk, enters the *probation* segment; one used again while there moves to the
  *protected* segment (at most 80 % of the bound), whose least recent entry goes back to probation
  when it is full. Only probation's least recent entries leave memory, so a pass over a pool larger
  than the bound cycles through probation and never pushes out the entries used again and again
  (the labeled tasks' activations, read by every round).
* **disk**, every entry as it is computed (``feature_store.py``: append-only segment files under
  ``MODEL_DIR/cache/features/<fingerprint>/``, up to ``disk_bytes``, oldest segments out first):
  a second scoring of a pool larger than memory reads it from there, and so does a restarted process.

The fingerprint covers backbone, weights, preprocessing, freeze boundary and decoding: when any of
them changes, the old directory is removed and nothing stale can be served.
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
from ml_backend.service.feature_store import SegmentStore

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
PROTECTED_SHARE = 0.8  # of the memory bound, for entries used more than once


def _nbytes(z: torch.Tensor) -> int:
    return z.numel() * z.element_size()


class FeatureCache:
    def __init__(self, root: Path, fingerprint: str, memory_bytes: int, disk_bytes: int, dtype: str = "float16"):
        self.dtype = DTYPES[dtype]
        self.memory_bytes = memory_bytes
        self.protected_bytes = int(memory_bytes * PROTECTED_SHARE)
        self.disk_bytes = disk_bytes
        self.root = Path(root)
        self.dir = self.root / fingerprint
        self._probation: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recent first
        self._protected: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._probation_used = self._protected_used = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.disk_hits = 0
        if self.root.exists():
            for stale in self.root.iterdir():
                if stale.name != fingerprint:
                    shutil.rmtree(stale, ignore_errors=True)
                    log.info("feature cache: removed %s (backbone, weights or preprocessing changed)", stale)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.pt"):  # one file per entry, the earlier layout
            old.unlink(missing_ok=True)
        atomic.remove_leftovers(self.dir)
        self.disk = SegmentStore(self.dir, disk_bytes)

    @staticmethod
    def key(task_id, reference) -> str:
        return hashlib.sha1(f"{task_id}\x1f{reference}".encode()).hexdigest()

    def round(self, z: torch.Tensor) -> torch.Tensor:
        """The value the cache will hand back later: scoring always uses it, cached or not, so a
        task scores the same whether its activations came from the cache or not."""
        return z.to(self.dtype).float()

    def in_memory(self, key: str) -> bool:
        with self._lock:
            return key in self._protected or key in self._probation

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            z = self._protected.get(key)
            if z is not None:
                self._protected.move_to_end(key)
            else:
                z = self._probation.pop(key, None)
                if z is not None:  # used again: protected from scans
                    self._probation_used -= _nbytes(z)
                    self._protected[key] = z
                    self._protected_used += _nbytes(z)
                    self._rebalance()
            if z is not None:
                self.hits += 1
                return z.float()
        z = self.disk.get(key)  # a damaged record is a miss
        with self._lock:
            if z is None:
                self.misses += 1
                return None
            self.hits += 1
            self.disk_hits += 1
            self._admit(key, z)
        return z.float()

    def put(self, key: str, z: torch.Tensor) -> None:
        z = z.detach().to("cpu", self.dtype).contiguous()
        with self._lock:
            if key in self._protected or key in self._probation:
                return
            self._admit(key, z)
        self.disk.put(key, z)  # write-through: every entry on disk while the disk bound allows

    def _admit(self, key: str, z: torch.Tensor) -> None:
        """A new entry in memory (probation, most recent); the least recent of probation leave."""
        if key in self._protected or key in self._probation:
            return
        self._probation[key] = z
        self._probation_used += _nbytes(z)
        self._rebalance()

    def _rebalance(self) -> None:
        while self._protected_used > self.protected_bytes and len(self._protected) > 1:
            old_key, old = self._protected.popitem(last=False)  # back to probation, most recent
            self._protected_used -= _nbytes(old)
            self._probation[old_key] = old
            self._probation_used += _nbytes(old)
        while self._probation_used + self._protected_used > self.memory_bytes and len(self._probation) > 1:
            _, old = self._probation.popitem(last=False)
            self._probation_used -= _nbytes(old)

    def stats(self) -> dict:
        with self._lock:
            looked = self.hits + self.misses
            return {
                "memory_items": len(self._probation) + len(self._protected),
                "memory_protected_items": len(self._protected),
                "memory_mb": round((self._probation_used + self._protected_used) / 2**20, 1),
                "memory_limit_mb": round(self.memory_bytes / 2**20, 1),
                "disk_items": len(self.disk),
                "disk_mb": round(self.disk.used_bytes / 2**20, 1),
                "disk_limit_mb": round(self.disk_bytes / 2**20, 1),
                "hits": self.hits,
                "disk_hits": self.disk_hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / looked, 4) if looked else None,
                "dtype": str(self.dtype).replace("torch.", ""),
            }

    def close(self) -> None:
        self.disk.close()
