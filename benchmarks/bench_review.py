"""Benchmark: how well the review list finds wrong labels. A simulation track's labeled set arrives
in rounds as in the backend (``batch`` labels a round, ``steps`` fine-tuning steps each, from the
previous round's model), with ``--noise`` of the oracle's answers flipped to another class (the
simulation's ``--label-noise`` rule); after the last round each review ranking flags its top k.
Printed per ranking: precision and recall of the top 10 and of the top k = number of wrong labels,
averaged over seeds (chance precision = the noise rate).

    .venv/bin/python -m benchmarks.bench_review [--dataset fashion-mnist] [--labels 60] [--noise 0.1] [--seeds 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ml_backend.core import review
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import resolve_device
from ml_backend.core.trainer import Example, TrainConfig, fine_tune
from ml_backend.simulation.config import build_parser, config_from_args
from ml_backend.simulation.loop import noisy_labels, split_pool
from ml_backend.simulation.pretrain import base_model, dataset_of, pretrain_source, resize_for

RANKINGS = {  # name -> (REVIEW_METHOD, features of the held-out heads, their L2)
    "loss: the trained head's loss on the label": ("loss", None, None),
    "held-out heads on the fine-tuned embeddings, λ = 0.1": ("heldout", "trained", 0.1),
    "held-out heads on M0's embeddings, λ = 0.01": ("heldout", "m0", 0.01),
    "held-out heads on M0's embeddings, λ = 0.1 (REVIEW_METHOD=heldout)": ("heldout", "m0", 0.1),
    "held-out heads on M0's embeddings, λ = 1": ("heldout", "m0", 1.0),
}


def labeled_model(cfg, seed: int, n: int):
    """(model trained over rounds on n noisy labels, its examples, the indices whose label is wrong)."""
    ds = dataset_of(cfg)
    model = AdaptedModel(
        base_model(cfg.backbone, cfg.m0, cfg.freeze, cfg.image_size), ds.target.classes, resolve_device("cpu"), seed
    )
    y = ds.target.y
    y_oracle = noisy_labels(y, len(ds.target.classes), cfg.label_noise, seed)
    pool, _ = split_pool(len(y), seed)
    chosen = [int(i) for i in np.random.default_rng(seed + 7).permutation(pool)[:n]]
    z = model.trunk(resize_for(cfg, ds.target.x[chosen]))
    examples: list[Example] = []
    for r, start in enumerate(range(0, n, cfg.batch)):
        for e in examples:
            e.is_new = False
        examples += [
            Example(f"{i:06d}", int(y_oracle[i]), True, trunk=z[j])
            for j, i in enumerate(chosen)
            if start <= j < start + cfg.batch
        ]
        config = TrainConfig(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.train_batch, seed=seed * 1000 + r)
        fine_tune(model, examples, config)
    wrong = {f"{i:06d}" for i in chosen if int(y_oracle[i]) != int(y[i])}
    return model, examples, wrong


def ranked(model, examples, method: str, features: str | None, decay: float | None, seed: int) -> list[str]:
    if method == "loss":
        return [r["task"] for r in review.review(model, examples, "loss", len(examples), 5e-4, seed)]
    h, y = review.head_inputs(model, examples, 64)
    if features == "m0":
        h = review.label_free_inputs(model, examples, 64)
    stats = review.heldout_stats(h, y, len(model.labels), seed, decay=decay)
    order = torch.argsort(stats["loss"], descending=True, stable=True).tolist()
    return [examples[i].key for i in order if stats["judged"][i]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    sim = build_parser()
    cfg = config_from_args(sim.parse_args(["--dataset", args.dataset, "--label-noise", str(args.noise)]), sim)
    cfg = cfg.replace(m0=pretrain_source(cfg))
    rows = {name: [] for name in RANKINGS}
    started = time.perf_counter()
    wrong_total = 0
    for seed in range(args.seeds):
        model, examples, wrong = labeled_model(cfg, seed, args.labels)
        wrong_total += len(wrong)
        for name, (method, features, decay) in RANKINGS.items():
            order = ranked(model, examples, method, features, decay, seed)
            k = max(1, len(wrong))
            hits10, hitsk = len(set(order[:10]) & wrong), len(set(order[:k]) & wrong)
            rows[name].append([hits10 / 10, hits10 / max(1, len(wrong)), hitsk / k])
    print(
        f"{args.dataset}: {args.labels} labels in rounds of {cfg.batch} ({cfg.steps} steps each), "
        f"{args.noise:.0%} flipped ({wrong_total} wrong labels over {args.seeds} seeds), "
        f"{time.perf_counter() - started:.0f} s"
    )
    print("| ranking | precision, top 10 | recall, top 10 | precision = recall, top k = number wrong |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        m = np.mean(values, axis=0)
        print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} |")


if __name__ == "__main__":
    main()
