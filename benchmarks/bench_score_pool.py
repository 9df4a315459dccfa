"""Benchmark: the backend's re-scoring of a large pool from a warm feature cache, as a round does it
(``Scorer.score`` with ``reset_pool``: cached trunk activations -> trainable part -> strategy ->
Label Studio's prediction JSON), without images, Label Studio or a network.

    .venv/bin/python -m benchmarks.bench_score_pool [--tasks 100000] [--strategy margin] [--profile]

smallcnn frozen up to ``features.6`` (1 KB per task in the cache), random weights, 10 labels.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import torch

from ml_backend.demo.servers import classification_config
from ml_backend.service.backend import Backend
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.settings import Settings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--strategy", default="margin")
    p.add_argument("--freeze", default="features.6")
    p.add_argument("--profile", action="store_true", help="print the 25 most expensive calls")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(
            {
                "BACKBONE": "smallcnn",
                "WEIGHTS": "none",
                "MODEL_DIR": tmp,
                "DEVICE": "cpu",
                "FREEZE": args.freeze,
                "STRATEGY": args.strategy,
            }
        )
        backend = Backend(settings)
        try:
            state, _ = backend.projects.register(
                "1", parse_label_config(classification_config([str(i) for i in range(10)]))
            )
            scorer, features, model = backend.scorer, backend.features, backend.projects.model(state)
            tasks = [
                {"id": i, "data": {"image": f"http://127.0.0.1:9/{i}.png"}, "annotations": []}
                for i in range(1, args.tasks + 1)
            ]
            g = torch.Generator().manual_seed(0)
            shape = model.trunk(torch.zeros(1, 3, 64, 64)).shape[1:]  # smallcnn's 64 px input
            for t in tasks:
                features.cache.put(
                    features.fingerprint(features.reference(state, t)), torch.randn(*shape, generator=g).relu()
                )
            profile = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profile:
                profile.enable()
            out = scorer.score(state, tasks, model, state.version, reset_pool=True)
            if profile:
                profile.disable()
            seconds = time.perf_counter() - started
            print(
                f"{args.tasks} tasks, {args.strategy}, FREEZE={args.freeze}: scored in {seconds:.2f} s "
                f"({seconds / args.tasks * 1e6:.0f} µs per task), {len(out)} predictions; "
                f"cache {features.stats()}"
            )
            if profile:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        finally:
            backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
