"""Benchmark: a round's head refit against its fine-tuning, side by side in one run.

    .venv/bin/python -m benchmarks.bench_head_first [--labels 10,20] [--seeds 3] [--test 500] [--out FILE.json]

What a round's head-first queue (``ROUND_HEAD_FIRST``, docs/methods.md §0) serves before the
fine-tuning is the served model with only its head refit (``core/trainer.fit_head``). This measures,
for the default backbone, weights and image size and the default TRAIN_* settings, on the same labeled
Fashion-MNIST images (upscaled to the backbone's input, ``--labels`` of them drawn at random per seed)
and the same held-out images: the seconds each takes and the held-out accuracy each reaches, starting
from the pretrained model with a new head (round 1). Figures go to docs/benchmarks.md ("A round's
head-first queue"); nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

from benchmarks.parts.provenance import git_state


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95 % t-interval (normal quantile beyond 30 pairs)."""
    from scipy import stats

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def main(argv=None) -> int:
    from ml_backend.core.adapted import AdaptedModel
    from ml_backend.core.backbones import load_backbone
    from ml_backend.core.scoring import forward_batches
    from ml_backend.core.trainer import Example, fine_tune, fit_head
    from ml_backend.service.settings import Settings
    from ml_backend.simulation.datasets import fashion_mnist
    from strategies import Need

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default="10,20", help="labeled examples per round, comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.labels.split(",")]
    s, device = Settings(), torch.device("cpu")
    base = load_backbone(s.backbone, s.weights, 0, s.freeze, s.image_size)
    served = AdaptedModel(base, [str(c) for c in range(10)], device, s.seed)
    task = fashion_mnist().target
    mean, std = torch.tensor(served.preprocess.mean)[:, None, None], torch.tensor(served.preprocess.std)[:, None, None]
    side = served.preprocess.crop

    def trunks(index: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(task.x[index], size=(side, side), mode="bilinear", align_corners=False)
        x = ((x * 0.5 + 0.5) - mean) / std  # [-1, 1] grey -> the backbone's normalisation
        return torch.cat([served.trunk(x[i : i + 8]) for i in range(0, len(x), 8)])

    test = torch.arange(len(task.y) - args.test, len(task.y))
    z_test, y_test = trunks(test), task.y[test]

    def accuracy(model) -> float:
        probs = forward_batches(model, z_test, {Need.PROBS}, (), 16)["probs"]
        return round((probs.argmax(1) == y_test).float().mean().item(), 4)

    rows = []
    for n in sizes:
        for seed in range(args.seeds):
            index = torch.randperm(len(task.y) - args.test, generator=torch.Generator().manual_seed(seed))[:n]
            z = trunks(index)
            h = forward_batches(served, z, {Need.EMBEDDINGS}, (), 16)["embeddings"]
            examples = [Example(str(i), int(task.y[j]), True, trunk=z[i], embedding=h[i]) for i, j in enumerate(index)]
            config = s.train_config(seed=s.seed + seed)
            head, tuned = served.clone(), served.clone()
            fit, tune = fit_head(head, examples, config), fine_tune(tuned, examples, config)
            row = {"labels": n, "seed": seed, "head_s": round(fit["seconds"], 3), "head_acc": accuracy(head)}
            row.update(fine_tune_s=round(tune["seconds"], 2), fine_tune_acc=accuracy(tuned))
            print(f"[bench_head_first] {row}", file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for n in sizes:
        mine = [r for r in rows if r["labels"] == n]
        diff = interval([r["head_acc"] - r["fine_tune_acc"] for r in mine])
        summary[str(n)] = {
            "head_s": statistics.fmean(r["head_s"] for r in mine),
            "fine_tune_s": statistics.fmean(r["fine_tune_s"] for r in mine),
            "head_acc": statistics.fmean(r["head_acc"] for r in mine),
            "fine_tune_acc": statistics.fmean(r["fine_tune_acc"] for r in mine),
            "head_minus_fine_tune_acc": [round(v, 4) for v in diff],
        }
    out = {"code": git_state(), "backbone": s.backbone, "image_size": side, "threads": torch.get_num_threads()}
    out.update(steps=s.train_steps, test=args.test, rows=rows, summary=summary)
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
