"""Benchmark: the frozen-feature cache on a pool larger than its memory bound.

    .venv/bin/python -m benchmarks.bench_feature_cache [--tasks 100000] [--backbone efficientnet_lite0]
                                                       [--memory-mb 1024] [--disk-mb 8192] [--out FILE.json]

The cache the backend uses (``service/feature_cache.py``) at its default bounds, fed as a pool's
scoring feeds it: for each task a lookup (a miss), then the activations at the backbone's default
freeze boundary and input size (their real shape and dtype; the values are random, which costs the
cache nothing more or less), then a **second full-pool scoring** in the same order, which is what a
round's re-scoring does. It reports the second scan's hit rate (from memory and from the disk
segments), lookups per second against the trainable part's forward pass on the same machine (the
speed the cache has to keep up with), the bytes in memory and on disk, and the process's peak RSS.
It checks that every entry read back equals what was written (as stored: float16). The end-to-end
figure with photos is ``bench_photos`` (a second scoring of every task after a round); this one
isolates the cache, so that 100k tasks take minutes rather than the hours of their forward pass.

Prints a table and writes JSON (``--out``). Figures go to docs/benchmarks.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import load_backbone
from ml_backend.service.feature_cache import FeatureCache


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def trunk_shape_and_head_speed(backbone: str, batch: int = 32) -> tuple[tuple[int, ...], float]:
    """The activations' shape at the default boundary and input size, and the trainable part's
    forward speed on them (tasks/s): what re-scoring from the cache runs per task."""
    base = load_backbone(backbone, "none")
    model = AdaptedModel(base, ["a", "b"], torch.device("cpu"), 0)
    size = base.preprocess.crop
    with torch.inference_mode():
        z = model.trunk(torch.zeros(1, 3, size, size))
        zs = torch.randn(batch, *z.shape[1:])
        model.forward_from_trunk(zs, set())  # warm-up
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 5 or n < 3 * batch:
            model.forward_from_trunk(zs, set())
            n += batch
    return tuple(z.shape[1:]), n / (time.perf_counter() - started)


def entry(i: int, shape) -> torch.Tensor:
    """Task ``i``'s activations (random, the same each time they are drawn)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(i))


def scan(cache: FeatureCache, keys: list[str], shape, put: bool, desc: str) -> dict:
    hits0, disk0 = cache.hits, cache.disk_hits
    wrong = 0
    started = time.perf_counter()
    for i, key in enumerate(tqdm(keys, desc=desc, unit="task", mininterval=2)):
        z = cache.get(key)
        if put:
            if z is None:
                cache.put(key, entry(i, shape))
        elif i % 997 == 0:  # spot check: the same values as written (the generator replayed)
            expected = cache.round(entry(i, shape))
            wrong += z is None or not torch.equal(z, expected)
    seconds = time.perf_counter() - started
    hits = cache.hits - hits0
    return {
        "lookups": len(keys),
        "hits": hits,
        "from_disk": cache.disk_hits - disk0,
        "hit_rate": round(hits / len(keys), 4),
        "lookups_per_s": round(len(keys) / seconds, 1),
        "seconds": round(seconds, 1),
        "wrong_values": wrong,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--memory-mb", type=int, default=1024, help="FEATURE_CACHE_MB (its default)")
    p.add_argument("--disk-mb", type=int, default=8192, help="FEATURE_CACHE_DISK_MB (its default)")
    p.add_argument("--dtype", default="float16", help="FEATURE_CACHE_DTYPE (its default)")
    p.add_argument("--root", type=Path, default=None, help="where the disk segments go (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as on a request or scoring thread beside the model's own
    shape, head_speed = trunk_shape_and_head_speed(args.backbone)
    print(f"[bench_feature_cache] activations {shape}; trainable part {head_speed:.1f} tasks/s", file=sys.stderr)
    keys = [FeatureCache.key(i, f"http://photos.example/{i}.jpg") for i in range(args.tasks)]
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=args.root) as tmp:
        cache = FeatureCache(Path(tmp), "bench", args.memory_mb * 2**20, args.disk_mb * 2**20, args.dtype)
        try:
            first = scan(cache, keys, shape, put=True, desc="first scoring (misses, then put)")
            second = scan(cache, keys, shape, put=False, desc="second scoring (lookups)")
            stats = cache.stats()
        finally:
            cache.close()
    entry_kb = torch.zeros(shape, dtype=cache.dtype).numel() * cache.dtype.itemsize / 1024
    result = {
        "host": socket.gethostname(),
        "argv": sys.argv[1:],
        "tasks": args.tasks,
        "backbone": args.backbone,
        "activation_shape": list(shape),
        "entry_kb": round(entry_kb, 1),
        "memory_limit_mb": args.memory_mb,
        "disk_limit_mb": args.disk_mb,
        "first_scoring": first,
        "second_scoring": second,
        "cache": stats,
        "trainable_part_tasks_per_s": round(head_speed, 1),
        "lookups_vs_trainable_part": round(second["lookups_per_s"] / head_speed, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result, indent=1))
    print(
        f"\n| tasks | entry KB | memory / disk bound MB | second scoring: hits (from disk) | lookups/s | "
        f"× the trainable part's forward | peak RSS MB |\n|---|---|---|---|---|---|---|\n"
        f"| {args.tasks:,} | {result['entry_kb']} | {args.memory_mb} / {args.disk_mb} | "
        f"{100 * second['hit_rate']:.1f} % ({second['from_disk']:,}) | {second['lookups_per_s']} | "
        f"{result['lookups_vs_trainable_part']} | {result['peak_rss_mb']} |"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if second["wrong_values"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
