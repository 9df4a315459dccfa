"""Active-learning simulation with a ground-truth oracle: the backend's strategies and trainer in a
scripted loop, over many seeds, with learning curves, plots and tables.

    python -m active_adaptation.simulation --dataset cluttered-digits --strategies random,margin,emoc,badge,adma \\
        --seeds 10 --out runs/clutter

Datasets: digits, cluttered-digits, digits-novel (the EMOC set protocol) and imagefolder:PATH (your
own data, one subfolder per class; --source PATH gives the source task). Strategy options use the
STRATEGY syntax, e.g. ``adma:landmarks=pool-exemplars`` (see ``python -m active_adaptation --list``).
Outputs in --out: results.json, summary.md and curves.png (``python -m active_adaptation.simulation.plot`` re-draws them).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
NOVEL_CRITERIA = {"random": "random", "least_confidence": "min", "margin": "1-vs-2", "max_confidence": "max",
                  "emoc": "emoc"}
TRACK_DEFAULTS = {  # docs/methods.md §8.2
    "digits": dict(initial=10, batch=5, rounds=10, steps=300, lr=1e-3, source_steps=1000),
    "cluttered-digits": dict(initial=10, batch=20, rounds=20, steps=300, lr=1e-3, source_steps=3000),
    "digits-novel": dict(initial=100, batch=5, rounds=10, steps=1000, lr=1e-4, source_steps=0),
    "imagefolder": dict(initial=10, batch=10, rounds=10, steps=100, lr=1e-3, source_steps=1000),
}


# ----------------------------------------------------------------------------- set-up (per process, cached)
@functools.lru_cache(maxsize=4)
def load_dataset(name: str, source: str | None, backbone: str):
    from active_adaptation.simulation import datasets as sim_data

    if name.startswith("imagefolder:"):
        from active_adaptation.core.backbones import get_backbone

        pre = get_backbone(backbone).preprocess  # the backbone's own resize, crop and normalisation
        target = sim_data.image_folder(Path(name.split(":", 1)[1]), pre)
        src = sim_data.image_folder(Path(source), pre) if source else None
        return sim_data.Dataset(name, src, target, f"ImageFolder {name.split(':', 1)[1]}")
    return sim_data.DATASETS[name]()


def _resize_for(backbone: str, x: torch.Tensor) -> torch.Tensor:
    if backbone == "smallcnn":
        return x
    from active_adaptation.core.backbones import get_backbone

    crop = get_backbone(backbone).preprocess.crop
    if x.shape[-2:] == (crop, crop):  # already at the backbone's input size (imagefolder)
        return x
    return torch.nn.functional.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False)


def pretrain_source(cfg: dict) -> str:
    """M0: a backbone trained on the source task (all layers, Adam), cached by configuration."""
    from active_adaptation.core.backbones import get_backbone

    if cfg["weights"] != "auto":
        return cfg["weights"]
    ds = load_dataset(cfg["dataset"], cfg.get("source"), cfg["backbone"])
    if ds.source is None or cfg["source_steps"] == 0:
        return "none"
    key = hashlib.sha1(json.dumps([cfg["dataset"], cfg.get("source"), cfg["backbone"], cfg["source_steps"],
                                   len(ds.source.y), 2]).encode()).hexdigest()[:12]
    path = Path(cfg["cache"]) / f"m0-{cfg['dataset'].replace(':', '_').replace('/', '_')}-{cfg['backbone']}-{key}.pt"
    if path.is_file():
        return str(path)
    spec = get_backbone(cfg["backbone"])
    torch.manual_seed(0)
    model = spec.build(len(ds.source.classes))
    x, y = _resize_for(cfg["backbone"], ds.source.x), ds.source.y
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    print(f"[simulate] pretraining M0 ({cfg['backbone']}) on the source task: {len(y)} images, "
          f"{cfg['source_steps']} steps (cached in {path})", file=sys.stderr)
    from tqdm import tqdm

    for _ in tqdm(range(cfg["source_steps"]), desc="source model", leave=False, disable=not cfg.get("progress")):
        idx = torch.randint(len(y), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return str(path)


@functools.lru_cache(maxsize=2)
def _base(backbone: str, weights: str):
    from active_adaptation.core.backbones import load_backbone

    return load_backbone(backbone, weights)


# ----------------------------------------------------------------------------- the loop
def _evaluate(model, z_test, y_test, batch_size):
    from sklearn.metrics import roc_auc_score

    from active_adaptation.core.scoring import forward_batches
    from active_adaptation.strategies import Need

    probs = forward_batches(model, z_test, {Need.PROBS}, (), batch_size)["probs"].double()
    acc = float((probs.argmax(1) == y_test).double().mean())
    c = probs.shape[1]
    present = sorted(set(y_test.tolist()))
    auc = None
    if len(present) == c and c > 1:
        p = (probs / probs.sum(1, keepdim=True)).numpy()
        auc = float(roc_auc_score(y_test.numpy(), p if c > 2 else p[:, 1], multi_class="ovr", labels=list(range(c))))
    return acc, auc


def _split(n: int, seed: int, test_fraction: float = 0.3):
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]  # pool, test


def _train(model, z, y, labeled, new, cfg, seed, round_):
    from active_adaptation.core.trainer import Example, TrainConfig, fine_tune

    examples = [Example(f"{i:06d}", int(y[i]), i in new, trunk=z[i]) for i in labeled]
    tc = TrainConfig(steps=cfg["steps"], lr=cfg["lr"], weight_decay=5e-4, batch_size=cfg.get("train_batch", 32),
                     new_fraction=cfg.get("new_fraction", 0.1), seed=seed * 1000 + round_,
                     optimizer=cfg.get("optimizer", "adam"))
    started = time.perf_counter()
    fine_tune(model, examples, tc)
    return time.perf_counter() - started


def _step(model, z, y, labeled, new, test, cfg, seed, round_, score_s, bs) -> dict:
    """Train on the labels so far (``new`` = this round's), evaluate, and report the round."""
    train_s = _train(model, z, y, labeled, set(new), cfg, seed, round_)
    acc, auc = _evaluate(model, z[test], y[test], bs)
    return {"labels": len(labeled), "accuracy": acc, "auc": auc, "classes_discovered": len(set(y[labeled].tolist())),
            "score_seconds": score_s, "train_seconds": train_s}


def _prepare_strategy(strategy, cfg, model, ds):
    """Hand the source task (2000 seeded images) to the strategy, when the track has one; ADMA takes
    landmarks from it (mode source-data), MMD a source sample, the others nothing."""
    from active_adaptation.core.landmarks import ImageSource

    if ds.source is None:
        return
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds.source.y), generator=g)[:2000]
    strategy.set_source_data(ImageSource(model, lambda: _resize_for(cfg["backbone"], ds.source.x[idx]), ds.source.y[idx]))


def run_al(cfg: dict, spec: str, seed: int, progress=None) -> dict:
    """One active-learning run: per-instance strategies, top-b per round."""
    from active_adaptation import strategies
    from active_adaptation.core.backbones import resolve_device
    from active_adaptation.core.model import AdaptedModel
    from active_adaptation.core.scoring import score_pool

    torch.set_num_threads(cfg.get("threads", 1))
    ds = load_dataset(cfg["dataset"], cfg.get("source"), cfg["backbone"])
    device = resolve_device(cfg["device"])
    base = _base(cfg["backbone"], cfg["m0"])
    model = AdaptedModel(base, ds.target.classes, device, seed)  # the head's init is shared by all strategies
    strategy = strategies.from_spec(spec, seed=seed)
    _prepare_strategy(strategy, cfg, model, ds)
    # the backend's QUEUE_DIVERSITY: the annotator takes the round's b tasks in this order
    strategy = strategies.with_queue_diversity(strategy, cfg.get("queue", "off"), cfg.get("queue_diversity_top", 100))
    x = _resize_for(cfg["backbone"], ds.target.x)
    y = ds.target.y
    pool, test = _split(len(y), seed)
    _check_budget(cfg, len(pool))
    bs = 256
    z = torch.cat([model.trunk(x[s:s + bs]) for s in range(0, len(y), bs)])
    labeled = [int(i) for i in np.random.default_rng(seed + 7).permutation(pool)[:cfg["initial"]]]
    rounds = [_step(model, z, y, labeled, labeled, test, cfg, seed, 0, 0.0, bs)]
    state: dict = {}
    for r in range(1, cfg["rounds"] + 1):
        started = time.perf_counter()
        taken = set(labeled)
        unlabeled = [int(i) for i in pool if int(i) not in taken]
        keys = [f"{i:06d}" for i in unlabeled]
        values = score_pool(strategy, model, [(keys, None, z[unlabeled])], candidates=keys, labeled_trunk=z[labeled],
                            images=lambda: x[unlabeled], round_=r - 1, planned_rounds=cfg["rounds"], state=state,
                            batch_size=bs).values
        order = torch.argsort(values, descending=True, stable=True)[: cfg["batch"]]
        new = [unlabeled[int(i)] for i in order]
        labeled += new
        rounds.append(_step(model, z, y, labeled, new, test, cfg, seed, r, time.perf_counter() - started, bs))
        rounds[-1]["selected"] = new  # dataset indices, in the order they were taken
        if progress is not None:
            progress(1)
    info = strategy.info()
    return {"strategy": run_name(spec, cfg), "seed": seed, "rounds": rounds,
            **({"strategy_info": _jsonable(info)} if info else {})}


def run_novel(cfg: dict, spec: str, seed: int, progress=None) -> dict:
    """The EMOC paper's protocol (docs/methods.md §2.3, §8.2 T2): 5 known classes with 20 labels each; the
    pool holds 20 per known and 20 per novel class; each step one of M random class-pure sets of K is
    chosen by a set criterion and labeled."""
    from active_adaptation import strategies
    from active_adaptation.core.backbones import resolve_device
    from active_adaptation.core.model import AdaptedModel
    from active_adaptation.core.scoring import forward_batches
    from active_adaptation.strategies import Need

    torch.set_num_threads(cfg.get("threads", 1))
    name = strategies.parse_spec(spec)[0]
    criterion = NOVEL_CRITERIA[name]
    ds = load_dataset(cfg["dataset"], None, cfg["backbone"])
    device = resolve_device(cfg["device"])
    model = AdaptedModel(_base(cfg["backbone"], cfg["m0"]), ds.target.classes, device, seed)
    x, y = _resize_for(cfg["backbone"], ds.target.x), ds.target.y
    rng = np.random.default_rng(seed)
    classes = ds.target.classes
    known = rng.permutation(len(classes))[:5]
    initial, pool = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.nonzero(y.numpy() == c)[0])
        if c in known:
            initial += members[:20].tolist()
            pool += members[20:40].tolist()
        else:
            pool += members[:20].tolist()
    used = set(initial) | set(pool)
    test = [i for i in range(len(y)) if i not in used]
    bs = 256
    z = torch.cat([model.trunk(x[s:s + bs]) for s in range(0, len(y), bs)])
    labeled = list(initial)
    rounds = [_step(model, z, y, labeled, labeled, test, cfg, seed, 0, 0.0, bs)]
    k, m = cfg["batch"], cfg.get("sets", 200)
    for r in range(1, cfg["rounds"] + 1):
        started = time.perf_counter()
        taken = set(labeled)
        remaining = [i for i in pool if i not in taken]
        by_class: dict[int, list[int]] = {}
        for i in remaining:
            by_class.setdefault(int(y[i]), []).append(i)
        eligible = [c for c, items in sorted(by_class.items()) if len(items) >= k]
        if not eligible:
            break
        set_rng = np.random.default_rng([seed, r])  # the same candidate sets for every criterion
        sets_global = []
        for _ in range(m):
            c = eligible[set_rng.integers(len(eligible))]
            sets_global.append(set_rng.choice(by_class[c], size=k, replace=False).tolist())
        index = {g: j for j, g in enumerate(remaining)}
        sets = torch.tensor([[index[g] for g in s] for s in sets_global])
        out = forward_batches(model, z[remaining], {Need.PROBS, Need.EMBEDDINGS}, (), bs)
        ref = forward_batches(model, z[remaining + labeled], {Need.PROBS, Need.EMBEDDINGS}, (), bs)
        values = strategies.set_criterion(criterion, sets, out["probs"], out["embeddings"], ref["embeddings"],
                                          ref["probs"], seed=seed * 1000 + r)
        chosen = sets_global[int(torch.argmax(values))]
        labeled += chosen
        rounds.append(_step(model, z, y, labeled, chosen, test, cfg, seed, r, time.perf_counter() - started, bs))
        if progress is not None:
            progress(1)
    return {"strategy": spec, "seed": seed, "set_criterion": criterion, "rounds": rounds}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def run_name(spec: str, cfg: dict) -> str:
    """A run's name in the results: the strategy spec, plus the queue order when it is not plain."""
    queue = cfg.get("queue", "off")
    return spec if queue == "off" else f"{spec} +queue={queue}@{cfg['queue_diversity_top']}"


def _runner(cfg: dict):
    return run_novel if cfg["dataset"] == "digits-novel" else run_al


def _job(args):
    cfg, spec, seed = args
    return _runner(cfg)(cfg, spec, seed)


# ----------------------------------------------------------------------------- CLI
def _parse_seeds(text: str) -> list[int]:
    text = text.strip()
    if "," in text or text.startswith("["):
        seeds = [int(s) for s in text.strip("[]").split(",") if s.strip()]
    elif "-" in text[1:]:
        lo, hi = text.split("-", 1)
        seeds = list(range(int(lo), int(hi) + 1))
    else:
        count = int(text)
        if count < 1:
            raise ValueError("--seeds must be at least 1")
        seeds = list(range(count))
    if len(set(seeds)) != len(seeds):
        raise ValueError("--seeds lists a seed twice")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    from active_adaptation import strategies

    p = argparse.ArgumentParser(
        prog="python -m active_adaptation.simulation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="strategies: " + ", ".join(strategies.available()))
    p.add_argument("--dataset", default="cluttered-digits",
                   help="digits | cluttered-digits | digits-novel | imagefolder:PATH (default: cluttered-digits)")
    p.add_argument("--source", default=None, help="ImageFolder of the source task (with imagefolder:PATH)")
    p.add_argument("--strategies", default="random,margin,emoc,badge,adma",
                   help="comma list of strategy specs, e.g. random,emoc,adma:landmarks=pool-exemplars")
    p.add_argument("--backbone", default="smallcnn", help="smallcnn (default), resnet18, vgg16, alexnet")
    p.add_argument("--weights", default="auto",
                   help="auto (pretrain M0 on the track's source task, cached), none, a torchvision weights name "
                        "or a state_dict path")
    p.add_argument("--initial", type=int, default=None, help="seed-set size (track default)")
    p.add_argument("--batch", type=int, default=None, help="labels per round; set size K in digits-novel")
    p.add_argument("--rounds", type=int, default=None, help="active-learning rounds")
    p.add_argument("--steps", type=int, default=None, help="training steps per round")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--source-steps", type=int, default=None, help="steps to pretrain M0 on the source task")
    p.add_argument("--seeds", default="10", help="a count (10), a list (0,3,5) or a range (0-9)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one run each; 1 thread per process)")
    p.add_argument("--cache", default=str(ROOT / ".cache" / "simulate"), help="where pretrained source models are kept")
    p.add_argument("--out", default=None, help="output folder (results.json, summary.md, curves.png)")
    p.add_argument("--live", action="store_true",
                   help="run the loop through a real Label Studio and the real backend (its queue decides the order)")
    p.add_argument("--queue-diversity", choices=("off", "coreset", "compare"), default="off",
                   help="the backend's QUEUE_DIVERSITY: re-order the top --queue-diversity-top candidates by "
                        "k-center greedy before a round's labels are taken; 'compare' runs every strategy both ways")
    p.add_argument("--queue-diversity-top", type=int, default=100, help="candidates re-ordered (QUEUE_DIVERSITY_TOP)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args, parser) -> dict:
    from active_adaptation import strategies

    dataset = args.dataset
    track = "imagefolder" if dataset.startswith("imagefolder:") else dataset
    if track not in TRACK_DEFAULTS:
        parser.error(f"unknown dataset {dataset!r}; allowed: digits, cluttered-digits, digits-novel, imagefolder:PATH")
    if track == "imagefolder":
        folder = Path(dataset.split(":", 1)[1])
        if not folder.is_dir():
            parser.error(f"--dataset {dataset}: {folder} is not a folder")
    if args.source and track != "imagefolder":
        parser.error("--source only goes with --dataset imagefolder:PATH")
    specs = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not specs:
        parser.error("--strategies is empty")
    for spec in specs:
        try:
            name = strategies.parse_spec(spec)[0]
            strategies.from_spec(spec)
        except strategies.StrategyError as exc:
            parser.error(f"--strategies: {exc}")
        if track == "digits-novel" and name not in NOVEL_CRITERIA:
            parser.error(f"--strategies: {name!r} has no set version for digits-novel; allowed: "
                         f"{', '.join(NOVEL_CRITERIA)} (as the EMOC paper's random, min, 1-vs-2, max, emoc)")
    if len(set(specs)) != len(specs):
        parser.error("--strategies lists a strategy twice")
    try:
        seeds = _parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(f"--seeds: {exc}")
    defaults = TRACK_DEFAULTS[track]
    cfg = {
        "dataset": dataset, "source": args.source, "strategies": specs, "backbone": args.backbone,
        "weights": args.weights, "device": args.device, "seeds": seeds, "cache": args.cache,
        "workers": max(1, args.workers), "progress": not args.no_progress, "live": args.live,
        "queue_diversity": args.queue_diversity, "queue_diversity_top": args.queue_diversity_top,
    }
    if args.queue_diversity != "off" and track == "digits-novel":
        parser.error("--queue-diversity re-orders a per-instance queue; digits-novel selects whole sets")
    if args.queue_diversity_top < 2:
        parser.error("--queue-diversity-top must be at least 2")
    if args.live:
        from active_adaptation.demo.servers import LS_BIN

        if track == "digits-novel":
            parser.error("--live runs per-instance strategies; digits-novel's set protocol has no queue")
        if not LS_BIN.exists():
            parser.error(f"--live needs Label Studio at {LS_BIN}: run bash scripts/setup_env.sh first")
    for key in ("initial", "batch", "rounds", "steps", "lr", "source_steps"):
        value = getattr(args, key)
        cfg[key] = defaults[key] if value is None else value
    for key in ("initial", "batch", "rounds", "steps"):
        if cfg[key] < 1:
            parser.error(f"--{key} must be at least 1")
    if track == "digits-novel":
        cfg.update(optimizer="sgd", train_batch=64, new_fraction=6 / 64, sets=200)
    from active_adaptation.core.backbones import available_backbones

    if args.backbone not in available_backbones():
        parser.error(f"--backbone {args.backbone!r}; allowed: {', '.join(available_backbones())}")
    return cfg


def _check_budget(cfg: dict, pool_size: int) -> None:
    need = cfg["initial"] + cfg["batch"] * cfg["rounds"]
    if need > pool_size:
        raise ValueError(f"the budget {cfg['initial']} + {cfg['rounds']} rounds × {cfg['batch']} = {need} labels "
                         f"exceeds the pool of {pool_size} items (the other 30% are the test set)")


def check_budget(cfg: dict) -> None:
    """Refuse a budget larger than the pool before any run starts (digits-novel has its own pool)."""
    if cfg["dataset"] != "digits-novel":
        n = len(load_dataset(cfg["dataset"], cfg.get("source"), cfg["backbone"]).target.y)
        _check_budget(cfg, len(_split(n, 0)[0]))


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "numba"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def simulate(cfg: dict) -> dict:
    from tqdm import tqdm

    check_budget(cfg)
    cfg["m0"] = pretrain_source(cfg)
    cfg["threads"] = 1 if cfg["workers"] > 1 else max(1, torch.get_num_threads())  # per run
    mode = cfg.get("queue_diversity", "off")
    variants = [{**cfg, "queue": q} for q in (("off", "coreset") if mode == "compare" else (mode,))]
    jobs = [(c, spec, seed) for seed in cfg["seeds"] for spec in cfg["strategies"] for c in variants]
    total = len(jobs) * cfg["rounds"]
    runs = []
    started = time.perf_counter()
    with tqdm(total=total, desc=f"{cfg['dataset']}: rounds", unit="round", disable=not cfg["progress"]) as bar:
        if cfg.get("live"):
            import tempfile

            from active_adaptation.demo.servers import LabelStudio
            from active_adaptation.simulation.live import run_live

            with tempfile.TemporaryDirectory(prefix="sim-live-") as tmp, LabelStudio(Path(tmp) / "ls") as ls:
                for c, spec, seed in jobs:
                    bar.set_postfix_str(f"live {spec} seed {seed}")
                    runs.append(run_live(c, spec, seed, ls, Path(tmp), progress=bar.update))
        elif cfg["workers"] == 1:
            for c, spec, seed in jobs:
                bar.set_postfix_str(f"{spec} seed {seed}")
                runs.append(_runner(c)(c, spec, seed, progress=bar.update))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(cfg["workers"], mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_job, job): job for job in jobs}
                for f in as_completed(futures):
                    run = f.result()
                    runs.append(run)
                    bar.update(len(run["rounds"]) - 1)
                    bar.set_postfix_str(f"done {run['strategy']} seed {run['seed']}")
    order = {(run_name(spec, c), seed): i for i, (c, spec, seed) in enumerate(jobs)}
    runs.sort(key=lambda r: order[(r["strategy"], r["seed"])])
    public = {k: v for k, v in cfg.items() if k not in ("progress", "threads")}
    return {"config": public, "versions": versions(), "seeds": cfg["seeds"], "runs": runs,
            "wall_seconds": round(time.perf_counter() - started, 2)}


def main(argv=None) -> int:
    from active_adaptation.simulation.report import summary_markdown, write_outputs

    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args, parser)
    try:
        results = simulate(cfg)
    except (ValueError, FileNotFoundError, TimeoutError, RuntimeError, AssertionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "runs" / f"{cfg['dataset'].replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}")
    write_outputs(results, out)
    print(summary_markdown(results))
    print(f"results in {out} (results.json, summary.md, curves.png); wall time {results['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
