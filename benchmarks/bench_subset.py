"""Benchmark: does a task scored alone keep its place in the queue? For each pool-relative strategy
on a synthetic pool (post-ReLU features), every task is scored on its own, as Label Studio asks for
a new import or a selection, and compared with its value in the full-pool scoring of the same model:

* "request as reference": the request's own tasks are the reference set (what the backend did
  before docs/methods.md §0's rule: a subset was scored like a pool of its own);
* "kept pool": the subset is valued against what the last full-pool scoring kept.

Printed per strategy: the median ratio value-alone / full-pool value, the share of tasks whose
queue score (rank among the full pool's values) puts them in the top 5 %, and the median queue score.

    .venv/bin/python -m benchmarks.bench_subset [--n 500] [--d 64] [--c 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import strategies
from ml_backend.core.queue_score import acquisition_to_score
from strategies import ScoringInputs


def pool(n: int, d: int, c: int, seed: int = 0) -> ScoringInputs:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64).relu()
    w = torch.randn(d, c, generator=g, dtype=torch.float64) / d**0.5
    logits = h @ w * 3
    lab = torch.randn(20, d, generator=g, dtype=torch.float64).relu()
    return ScoringInputs(
        n=n,
        keys=[f"t{i}" for i in range(n)],
        probs=logits.softmax(1),
        logits=logits,
        embeddings=h,
        labeled_embeddings=lab,
        labeled_probs=(lab @ w * 3).softmax(1),
        round=1,
    )


def subset(inputs: ScoringInputs, i: int, state, version, full_pool) -> ScoringInputs:
    return ScoringInputs(
        n=1,
        keys=[inputs.keys[i]],
        probs=inputs.probs[i : i + 1],
        logits=inputs.logits[i : i + 1],
        embeddings=inputs.embeddings[i : i + 1],
        labeled_embeddings=inputs.labeled_embeddings,
        labeled_probs=inputs.labeled_probs,
        round=inputs.round,
        state=state,
        model_version=version,
        full_pool=full_pool,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--c", type=int, default=5)
    args = parser.parse_args()
    inputs = pool(args.n, args.d, args.c)
    print(f"synthetic pool: N={args.n}, D={args.d} (post-ReLU), C={args.c}; each task scored alone")
    print("| strategy | mode | median value alone / full | in top 5 % | median queue score |")
    print("|---|---|---|---|---|")
    for spec in ("emoc", "emoc:reference_set=unlabeled", "coreset:budget=50", "badge:budget=50"):
        strategy, state = strategies.from_spec(spec), {}
        full = strategy(ScoringInputs(**{**inputs.__dict__, "state": state, "model_version": "v1"})).numpy()
        for mode in ("request as reference", "kept pool"):
            alone = np.array(
                [
                    float(
                        strategy(subset(inputs, i, None if mode != "kept pool" else state, "v1", mode != "kept pool"))[
                            0
                        ]
                    )
                    for i in range(args.n)
                ]
            )
            ratio = np.median(alone / np.where(full == 0, np.nan, full))
            scores = acquisition_to_score(alone, full)
            print(f"| {spec} | {mode} | {ratio:.2f} | {np.mean(scores < 0.05):.0%} | {np.median(scores):.2f} |")


if __name__ == "__main__":
    main()
