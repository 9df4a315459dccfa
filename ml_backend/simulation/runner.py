"""Active-learning simulation with a ground-truth oracle: the backend's strategies, scoring and
trainer in a scripted loop, over many seeds, with learning curves, plots and tables.

    python -m ml_backend.simulation --dataset cluttered-digits --strategies random,margin,emoc,badge,adma \\
        --seeds 10 --out runs/clutter

Datasets: digits, cluttered-digits, digits-novel (the EMOC set protocol) and imagefolder:PATH (your
own data, one subfolder per class; --source PATH gives the source task). Strategy options use the
STRATEGY syntax, e.g. ``adma:landmarks=pool-exemplars`` (see ``python -m ml_backend --list``).
Outputs in --out: results.json, summary.md and curves.png (``python -m ml_backend.simulation.plot``
re-draws them).
"""

from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from ml_backend.simulation.config import ROOT, SimConfig, parse_args
from ml_backend.simulation.loop import run_name, runner_for, split_pool
from ml_backend.simulation.pretrain import dataset_of, pretrain_source


def check_budget(cfg: SimConfig) -> None:
    """Refuse a budget larger than the pool before any run starts (digits-novel has its own pool)."""
    if cfg.dataset != "digits-novel":
        error = cfg.budget_error(len(split_pool(len(dataset_of(cfg).target.y), 0)[0]))
        if error:
            raise ValueError(error)


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "numba"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _job(job: tuple[SimConfig, str, int]) -> dict:
    cfg, spec, seed = job
    return runner_for(cfg)(cfg, spec, seed)


def _run_live(jobs, bar) -> list[dict]:
    import tempfile

    from ml_backend.demo.servers import LabelStudio
    from ml_backend.simulation.live import run_live

    runs = []
    with tempfile.TemporaryDirectory(prefix="sim-live-") as tmp, LabelStudio(Path(tmp) / "ls") as ls:
        for c, spec, seed in jobs:
            bar.set_postfix_str(f"live {spec} seed {seed}")
            runs.append(run_live(c, spec, seed, ls, Path(tmp), progress=bar.update))
    return runs


def _run_parallel(jobs, workers: int, bar, done=None) -> list[dict]:
    import multiprocessing as mp

    runs = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_job, job): job for job in jobs}
        for f in as_completed(futures):
            run = f.result()
            runs.append(run)
            if done is not None:
                done(run)
            bar.update(len(run["rounds"]) - 1)
            bar.set_postfix_str(f"done {run['strategy']} seed {run['seed']}")
    return runs


class Journal:
    """Completed runs, one JSON line each, appended as they finish (``OUT/runs.jsonl``), so that a
    long simulation that is stopped can continue with ``--resume`` instead of starting over. Without
    a journal, ``--resume`` starts from the runs of a finished ``OUT/results.json``, so a finished
    simulation can be extended with more strategies or seeds. Runs are reused only when everything
    but the strategy list and the seed set is the same configuration (a run depends on its own
    strategy and seed alone); a torn last line is ignored."""

    IGNORED = ("strategies", "seeds", "workers", "m0")  # may differ between reusable runs (m0: derived)

    def __init__(self, path: Path, cfg: SimConfig, resume: bool) -> None:
        import json

        self.path, self._json = path, json
        header = {"config": cfg.replace(workers=1, progress=False).public()}
        self.done: dict[tuple[str, int], dict] = {}
        lines = path.read_text().splitlines() if resume and path.is_file() else []
        finished = path.with_name("results.json")
        if resume and not lines and finished.is_file():
            results = self._load(finished.read_text()) or {}
            lines = [json.dumps({"config": results.get("config", {})}), *map(json.dumps, results.get("runs", []))]
        if lines and self._same(self._load(lines[0]), header):
            for line in lines[1:]:
                run = self._load(line)
                if isinstance(run, dict) and "strategy" in run:
                    self.done[(run["strategy"], run["seed"])] = run
        elif lines:
            kept = (self._load(lines[0]) or {}).get("config") or {}
            differ = sorted(
                k
                for k in set(kept) | set(header["config"])
                if k not in self.IGNORED and kept.get(k) != header["config"].get(k)
            )
            print(
                f"[simulate] {path.parent} holds runs of another configuration (differs in: {', '.join(differ)}): "
                "starting over",
                file=sys.stderr,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:  # rewrite: the header and the runs kept
            f.write(json.dumps(header) + "\n" + "".join(json.dumps(r) + "\n" for r in self.done.values()))

    @classmethod
    def _same(cls, a, b) -> bool:
        def strip(h):
            return (
                {k: v for k, v in h["config"].items() if k not in cls.IGNORED}
                if isinstance(h, dict) and isinstance(h.get("config"), dict)
                else None
            )

        return strip(a) is not None and strip(a) == strip(b)

    def _load(self, line: str):
        try:
            return self._json.loads(line)
        except ValueError:
            return None

    def add(self, run: dict) -> None:
        with open(self.path, "a") as f:
            f.write(self._json.dumps(run) + "\n")
            f.flush()


def simulate(cfg: SimConfig, journal: Journal | None = None) -> dict:
    """Every strategy × seed (× queue order with ``compare``); results as results.json holds them.
    Runs already in ``journal`` (``--resume``) are not run again; new ones are added to it."""
    from tqdm import tqdm

    check_budget(cfg)
    cfg = cfg.replace(
        m0=pretrain_source(cfg), threads=1 if cfg.workers > 1 else max(1, torch.get_num_threads())
    )  # per run
    queues = ("off", "coreset") if cfg.queue_diversity == "compare" else (cfg.queue_diversity,)
    dropouts = (False, True) if cfg.drop_harmful == "compare" else (cfg.drop_harmful == "on",)
    jobs = [
        (cfg.replace(queue=q, dropout=d), spec, seed)
        for seed in cfg.seeds
        for spec in cfg.strategies
        for q in queues
        for d in dropouts
    ]
    started = time.perf_counter()
    order = {(run_name(spec, c), seed): i for i, (c, spec, seed) in enumerate(jobs)}
    kept = [r for key, r in (journal.done.items() if journal else ()) if key in order]
    todo = [j for j in jobs if (run_name(j[1], j[0]), j[2]) not in {(r["strategy"], r["seed"]) for r in kept}]
    if kept:
        print(f"[simulate] resuming: {len(kept)} of {len(jobs)} runs already done", file=sys.stderr)
    with tqdm(
        total=len(todo) * cfg.rounds, desc=f"{cfg.dataset}: rounds", unit="round", disable=not cfg.progress
    ) as bar:
        if cfg.live:
            runs = _run_live(todo, bar)
        elif cfg.workers == 1:
            runs = []
            for c, spec, seed in todo:
                bar.set_postfix_str(f"{spec} seed {seed}")
                runs.append(runner_for(c)(c, spec, seed, progress=bar.update))
                if journal is not None:
                    journal.add(runs[-1])
        else:
            runs = _run_parallel(todo, cfg.workers, bar, journal.add if journal is not None else None)
    runs += kept
    runs.sort(key=lambda r: order[(r["strategy"], r["seed"])])
    return {
        "config": cfg.public(),
        "versions": versions(),
        "seeds": list(cfg.seeds),
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def main(argv=None) -> int:
    from ml_backend.simulation.report import summary_markdown, write_outputs

    cfg, args = parse_args(argv, __doc__)
    name = f"{cfg.dataset.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(args.out or ROOT / "runs" / name)
    if args.resume and not args.out:
        print("error: --resume needs the --out folder of the run to continue", file=sys.stderr)
        return 2
    try:
        results = simulate(cfg, Journal(out / "runs.jsonl", cfg, args.resume))
    except (ValueError, FileNotFoundError, TimeoutError, RuntimeError, AssertionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_outputs(results, out)
    (out / "runs.jsonl").unlink(missing_ok=True)  # everything is in results.json now
    print(summary_markdown(results))
    print(f"results in {out} (results.json, summary.md, curves.png); wall time {results['wall_seconds']:.0f}s")
    return 0
