"""Benchmark: pool scoring throughput of every registered strategy divided by the plain forward
pass (same model, same device, same pre-processed pool, one run), and the batched Kendall tau-b
against scipy per row at K = 1000. Ratios are printed last.

Scoring is timed as in every round after a project's first full-pool scoring (what a strategy keeps
per project, such as ADMA's landmarks and per-task α, is kept). A strategy that keeps something is
also timed on a first scoring (a fresh project state each time), reported on its own line.

    .venv/bin/python -m benchmarks.bench_strategies [--backbone resnet18] [--pool 512] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

import strategies
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import load_backbone, resolve_device
from ml_backend.core.scoring import score_pool, scoring_needs
from strategies import Need


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--pool", type=int, default=512)
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tau-rows", type=int, default=2000)
    parser.add_argument("--tau-repeats", type=int, default=5)
    parser.add_argument("--strategies", default="", help="comma list of strategy specs (default: all)")
    args = parser.parse_args()

    specs = args.strategies.split(",") if args.strategies else strategies.available()
    device = resolve_device(args.device)
    model = AdaptedModel(load_backbone(args.backbone, "none"), [str(i) for i in range(args.classes)], device)
    x = torch.randn(args.pool, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    keys = [f"{i:06d}" for i in range(args.pool)]
    labeled_trunk = model.trunk(x[:16])

    def plain():
        # the plain forward pass from images: what scoring with the cheapest strategy costs at least
        for s in range(0, args.pool, args.batch_size):
            model.forward(x[s : s + args.batch_size], {Need.PROBS})

    rows = []
    plain()
    for spec in specs:
        strategy = strategies.from_spec(spec)
        state: dict = {}

        def run(state=state):
            batches = (
                (keys[s : s + args.batch_size], None, model.trunk(x[s : s + args.batch_size]))
                for s in range(0, args.pool, args.batch_size)
            )
            score_pool(
                strategy,
                model,
                batches,
                candidates=keys,
                labeled_trunk=labeled_trunk,
                images=lambda: x,
                round_=1,
                state=state,
                batch_size=args.batch_size,
            )

        run()  # warm-up; this is the project's first full-pool scoring (ADMA computes its landmarks here)
        pairs = [(timed(plain, 1), timed(run, 1)) for _ in range(args.repeats)]  # interleaved, paired
        rows.append(
            (spec, statistics.median(p for p, _ in pairs), statistics.median(r for _, r in pairs), strategy.info())
        )
        if scoring_needs(strategy, fingerprints=keys, state=state) != scoring_needs(strategy):
            cold = [(timed(plain, 1), timed(lambda: run({}), 1)) for _ in range(args.repeats)]
            rows.append(
                (
                    f"{spec} (first scoring)",
                    statistics.median(p for p, _ in cold),
                    statistics.median(r for _, r in cold),
                    strategy.info(),
                )
            )

    from scipy.stats import kendalltau

    g = torch.Generator().manual_seed(1)
    a = torch.randn(args.tau_rows, 1000, generator=g, dtype=torch.float64)
    b = torch.randn(args.tau_rows, 1000, generator=g, dtype=torch.float64)
    strategies.kendall_tau_b(a[:64].to(device), b[:64].to(device))  # JIT warm-up
    sample = min(200, args.tau_rows)
    compiled = device.type != "cuda"
    if compiled:
        from strategies._tau_numba import tau_rows
    tau_runs = []  # interleaved repetitions (this shared VM's speed drifts): batched, one thread, scipy
    for _ in range(args.tau_repeats):
        t_batched = timed(lambda: strategies.kendall_tau_b(a.to(device), b.to(device)), 1) / args.tau_rows
        t_one = timed(lambda: tau_rows(a.numpy(), b.numpy(), threads=1), 1) / args.tau_rows if compiled else 0.0
        t_scipy = timed(lambda: [kendalltau(u, v) for u, v in zip(a[:sample].numpy(), b[:sample].numpy())], 1) / sample
        tau_runs.append((t_batched, t_one, t_scipy))
    t_batched, t_one, t_scipy = (statistics.median(r[i] for r in tau_runs) for i in range(3))
    ratios = [r[2] / r[0] for r in tau_runs]

    print(
        f"backbone={args.backbone} pool={args.pool} input={args.size}px classes={args.classes} device={device} "
        f"batch={args.batch_size} torch_threads={torch.get_num_threads()}"
    )
    width = max((len(name) for name, *_ in rows), default=16)
    for name, t_plain, t, info in rows:
        extra = f"  [{info.get('landmark_mode')} K={info.get('landmarks')}]" if "landmarks" in info else ""
        print(
            f"  {name:<{width}} {args.pool / t:8.1f} images/s  (plain forward {args.pool / t_plain:8.1f})  "
            f"ratio to forward = {t_plain / t:.2f}{extra}"
        )
    method = "pairwise" if device.type == "cuda" else "compiled"
    print(
        f"Kendall tau-b at K=1000 (medians of {args.tau_repeats} interleaved runs): batched ({method}) "
        f"{t_batched * 1e6:.0f} us/row, scipy {t_scipy * 1e6:.0f} us/row, speed-up = {t_scipy / t_batched:.2f}x "
        f"(per run {min(ratios):.1f}x to {max(ratios):.1f}x; torch threads {torch.get_num_threads()})"
    )
    if t_one:
        print(f"Kendall tau-b, compiled on one thread: {t_one * 1e6:.0f} us/row, speed-up = {t_scipy / t_one:.2f}x")


if __name__ == "__main__":
    main()
