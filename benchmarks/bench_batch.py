"""Benchmark: how fast the model runs at each batch size, on this machine.

    .venv/bin/python -m benchmarks.bench_batch [--device cpu|cuda] [--seconds 3] [--repeats 2] [--out FILE.json]

Side by side in one run, each figure the better of ``--repeats`` interleaved passes of about
``--seconds``: the default backbone's whole forward pass on in-memory images (images/s) at batches
of 1 to 64 (16 to 256 on a GPU), and the trainable part (``AdaptedModel.forward_from_trunk``, as
scoring from the frozen-feature cache runs it) at 4 to 1,024 rows of trunk activations (up to 16 MB of them), for the
default backbone and for ``smallcnn`` (whose rows are 30 times smaller). On a CPU it also runs the
whole forward pass as several passes at once, one per core on one intra-op thread each. It marks the batch the
backend uses by default (``BATCH_SIZE=0``: ``core/backbones.default_batch``) and the rows it gives the
trainable part (``core/scoring.rest_rows``). Figures go to docs/benchmarks.md ("Batch size on a
CPU"); nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.parts.forward import rate
from benchmarks.parts.provenance import git_state

IMAGE_BATCHES = {"cpu": (1, 2, 4, 8, 16, 32, 64), "cuda": (16, 32, 64, 128, 256)}
ROWS = (4, 8, 16, 32, 64, 128, 256, 1024)


def sweep(name: str, make, sizes, args) -> dict[str, float]:
    """The better of ``args.repeats`` interleaved passes over ``sizes`` of ``make(size)``'s call."""
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for size in sizes:
            r, _ = rate(make(size), size, args.seconds, args.device)
            best[str(size)] = round(max(best.get(str(size), 0.0), r), 1)
    print(f"[bench_batch] {name}: {best}", file=sys.stderr, flush=True)
    return best


def passes_at_once(net, side: int, args) -> dict:
    """The whole forward pass at a few batch sizes as the backend runs it (one pass at a time, torch's
    intra-op threads over every core) against one pass per core at once, each on one intra-op thread
    (``pools.one_torch_thread``); images/s, the better of ``args.repeats`` interleaved passes."""
    from ml_backend.service.pools import one_torch_thread

    threads = os.cpu_count() or 1
    pool = ThreadPoolExecutor(threads, initializer=one_torch_thread)

    def infer(x):
        with torch.inference_mode():
            return net(x)

    best: dict[str, dict[str, float]] = {"one_at_a_time": {}, f"{threads}_at_once": {}}
    for _ in range(args.repeats):
        for size in (4, 8, 16):
            xs = [torch.randn(size, 3, side, side) for _ in range(threads)]
            for name, fn, n in (("one_at_a_time", lambda: infer(xs[0]), size),
                                (f"{threads}_at_once", lambda: list(pool.map(infer, xs)), size * threads)):  # fmt: skip
                r, _ = rate(fn, n, args.seconds, "cpu")
                best[name][str(size)] = round(max(best[name].get(str(size), 0.0), r), 1)
    pool.shutdown()
    print(f"[bench_batch] whole forward pass, one at a time vs {threads} at once: {best}", file=sys.stderr, flush=True)
    return best


def main(argv=None) -> int:
    from ml_backend.core.adapted import AdaptedModel
    from ml_backend.core.backbones import default_batch, load_backbone
    from ml_backend.core.scoring import rest_rows
    from ml_backend.service.settings import Settings
    from strategies import Need

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device, defaults = torch.device(args.device), Settings()
    out = {"code": git_state(), "device": args.device, "threads": torch.get_num_threads()}
    out["backend_batch"] = default_batch(device)
    base = load_backbone(defaults.backbone, defaults.weights, 0, defaults.freeze, defaults.image_size)
    net, side = base.model.eval().to(device), base.preprocess.crop

    def whole(size):
        x = torch.randn(size, 3, side, side, device=device)
        return lambda: net(x)

    out["whole_images_per_s"] = sweep(f"{defaults.backbone} whole", whole, IMAGE_BATCHES[args.device], args)
    if args.device == "cpu":
        out["whole_images_per_s_passes_at_once"] = passes_at_once(net, side, args)
    for name, weights, freeze, px in ((defaults.backbone, defaults.weights, defaults.freeze, defaults.image_size),
                                      ("smallcnn", "none", "features.6", 28)):  # fmt: skip
        model = AdaptedModel(load_backbone(name, weights, 0, freeze, px), ["a", "b", "c"], device, 0)
        z = model.trunk(torch.randn(16, 3, model.preprocess.crop, model.preprocess.crop, device=device))
        z = z.repeat(max(ROWS) // 16, *[1] * (z.dim() - 1))  # the values do not change the speed
        rows = sweep(
            f"{name} trainable part",
            lambda size, z=z, model=model: lambda: model.forward_from_trunk(z[:size], {Need.EMBEDDINGS}),
            [r for r in ROWS if r * z[0].numel() * 4 <= 16 << 20],  # up to 16 MB of activations a call
            args,
        )
        out[f"{name}_trainable_rows_per_s"] = rows
        out[f"{name}_row_kb"] = round(z[0].numel() * 4 / 1024, 1)
        out[f"{name}_rest_rows"] = rest_rows(z.cpu(), out["backend_batch"])
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
