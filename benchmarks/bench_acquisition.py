"""Benchmark: every registered strategy's acquisition function alone (no forward pass) on a pool of
N items, as a round's full-pool re-scoring calls it: 512-d embeddings drawn from a 10-class Gaussian
mixture, the probabilities of a linear head on them, 100 labeled items, ADMA's and MMD's layer
activations (512-d) and 1000 source classes, 16 views for AIFT.

Each (strategy, N) runs in its own process (so that its peak memory is its own, and a run past
``--timeout`` is stopped and reported as such) and is timed twice: the first scoring of a project
(what a strategy computes once, such as ADMA's landmarks, included) and the next round's.

    .venv/bin/python -m benchmarks.bench_acquisition [--pool 10000,100000] [--strategies badge,coreset]
        [--timeout 600] [--threads 2]

Strategy specs take options, so an exact run can be compared with the default side by side, e.g.
``--strategies badge,badge:candidates=0`` (``candidates=0``: no candidate sample, the exact method).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def synthetic_inputs(
    n: int,
    seed: int = 0,
    dim: int = 512,
    classes: int = 10,
    labeled: int = 100,
    source_classes: int = 1000,
    views: int = 16,
):
    import torch

    from strategies import ScoringInputs

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2.0
    total = n + labeled
    cls = torch.randint(classes, (total,), generator=g)
    h = (centres[cls] + torch.randn(total, dim, generator=g)).relu()
    head = torch.randn(dim, classes, generator=g) / dim**0.5
    probs = torch.softmax(h @ head, dim=1)
    act = (h @ torch.randn(dim, dim, generator=g) / dim**0.5).tanh()  # an earlier layer: another view
    source_head = torch.randn(dim, source_classes, generator=g) / dim**0.5
    source_probs = torch.softmax(h[:n] @ source_head, dim=1)
    noise = torch.randn(views, n, classes, generator=g) * 0.3
    view_probs = torch.softmax(torch.log(probs[:n])[None] + noise, dim=2)
    view_probs[0] = probs[:n]
    return ScoringInputs(
        n=n,
        keys=[str(i) for i in range(n)],
        probs=probs[:n],
        logits=torch.log(probs[:n]),
        embeddings=h[:n],
        features={"A": act[:n], "B": h[:n]},
        source_probs=source_probs,
        source_features={"A": act[:n], "B": h[:n]},
        labeled_embeddings=h[n:],
        labeled_probs=probs[n:],
        view_probs=view_probs,
        round=3,
        planned_rounds=10,
        state={},
        full_pool=True,
        model_version="v1",
    )


def _run(spec: str, n: int, threads: int, queue) -> None:
    import dataclasses

    import torch

    import strategies

    torch.set_num_threads(threads)
    inputs = synthetic_inputs(n)
    strategy = strategies.from_spec(spec)
    started = time.perf_counter()
    strategy(inputs)
    first = time.perf_counter() - started
    queue.put(("first", first, strategy.info()))
    nxt = dataclasses.replace(inputs, model_version="v2", round=4)  # the next round: what was kept stays
    started = time.perf_counter()
    strategy(nxt)
    again = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(("done", again, {"peak_mb": peak / 1024, **strategy.info()}))


def measure(spec: str, n: int, threads: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(spec, n, threads, queue))
    proc.start()
    out: dict = {"spec": spec, "n": n}
    deadline = time.monotonic() + timeout
    try:
        while "again" not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                out["timeout"] = True
                break
            try:
                kind, seconds, info = queue.get(timeout=min(left, 5))
            except Exception:
                if not proc.is_alive() and queue.empty():
                    out["error"] = f"exit code {proc.exitcode}"
                    break
                continue
            out["first" if kind == "first" else "again"] = seconds
            out["info"] = info
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    return out


def _fmt(seconds) -> str:
    return "—" if seconds is None else f"{seconds:8.2f} s"


def main(argv=None) -> int:
    import strategies

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="10000,100000", help="comma list of pool sizes")
    p.add_argument("--strategies", default="", help="comma list of strategy specs (default: every registered one)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per (strategy, N) before it is stopped")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)
    specs = [s for s in args.strategies.split(",") if s] or strategies.available()
    sizes = [int(s) for s in args.pool.split(",")]
    print(f"acquisition alone, 512-d embeddings, 10 classes, 100 labeled, torch threads {args.threads}")
    print("| strategy | N | first scoring | next round | peak RSS | notes |\n|---|---|---|---|---|---|", flush=True)
    for n in sizes:
        for spec in specs:
            r = measure(spec, n, args.threads, args.timeout)
            info = r.get("info", {})
            if r.get("timeout"):
                note = f"stopped after {args.timeout:.0f} s"
            elif r.get("error"):
                note = r["error"]
            else:
                note = ", ".join(
                    f"{k}={v}"
                    for k, v in info.items()
                    if k in ("candidates", "references", "exact", "landmarks", "delta", "regime")
                )
            peak = f"{info['peak_mb']:.0f} MB" if "peak_mb" in info else "—"
            print(
                f"| `{spec}` | {n:,} | {_fmt(r.get('first'))} | {_fmt(r.get('again'))} | {peak} | {note} |", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
