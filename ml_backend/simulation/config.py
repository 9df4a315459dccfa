"""The simulation's configuration, typed: one :class:`SimConfig` per run set, built from the command
line (:func:`parse_args`) or in code; the per-track defaults of docs/methods.md §8.2."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOVEL_CRITERIA = {
    "random": "random",
    "least_confidence": "min",
    "margin": "1-vs-2",
    "max_confidence": "max",
    "emoc": "emoc",
}
TRACK_DEFAULTS = {  # docs/methods.md §8.2
    "digits": dict(initial=10, batch=5, rounds=10, steps=300, lr=1e-3, source_steps=1000),
    "cluttered-digits": dict(initial=10, batch=20, rounds=20, steps=300, lr=1e-3, source_steps=3000),
    "digits-novel": dict(initial=100, batch=5, rounds=10, steps=1000, lr=1e-4, source_steps=0),
    "imagefolder": dict(initial=10, batch=10, rounds=10, steps=100, lr=1e-3, source_steps=1000),
    "fashion-mnist": dict(initial=10, batch=10, rounds=15, steps=60, lr=1e-3, source_steps=0),
    "multi-digits": dict(initial=20, batch=20, rounds=10, steps=150, lr=1e-3, source_steps=2000),
}
# The pretrained track (docs/methods.md §8.2): ImageNet EfficientNet-Lite0 at 64 px with everything up
# to blocks.5 frozen, sized for a 2-core CPU (about 70 s per 15-round run); on a GPU use 224 px.
TRACK_BACKBONE = {
    "fashion-mnist": dict(backbone="efficientnet_lite0", weights="DEFAULT", freeze="blocks.5", image_size=64),
}
NOVEL_TRAINING = dict(optimizer="sgd", train_batch=64, new_fraction=6 / 64, sets=200)  # the EMOC paper's


@dataclass(frozen=True)
class SimConfig:
    dataset: str = "cluttered-digits"  # digits | cluttered-digits | digits-novel | imagefolder:PATH
    strategies: tuple[str, ...] = ("random", "margin", "emoc", "badge", "adma")
    seeds: tuple[int, ...] = tuple(range(10))
    initial: int = 10  # seed-set size
    batch: int = 20  # labels per round (set size K in digits-novel)
    rounds: int = 20
    steps: int = 300  # training steps per round
    lr: float = 1e-3
    source_steps: int = 3000  # steps to pretrain M0 on the source task
    source: str | None = None  # ImageFolder of the source task (with imagefolder:PATH)
    backbone: str = "smallcnn"
    weights: str = "auto"  # auto: pretrain M0 on the track's source task (cached)
    freeze: str = "default"  # FREEZE: where the frozen early layers end
    image_size: int = 0  # IMAGE_SIZE: input side in pixels (0: the backbone's own)
    device: str = "cpu"
    workers: int = 1
    cache: str = str(ROOT / ".cache" / "simulate")
    live: bool = False
    queue_diversity: str = "off"  # off | coreset | compare
    queue_diversity_top: int = 100
    optimizer: str = "adam"
    train_batch: int = 32
    new_fraction: float = 0.1
    sets: int = 200  # candidate sets per step (digits-novel)
    label_noise: float = 0.0  # share of the oracle's answers flipped to another class (fixed per seed and item)
    drop_harmful: str = "off"  # off | on | compare: influence-based data dropout (TRAIN_DROP_HARMFUL)
    progress: bool = True
    # set for each run by the runner
    m0: str | None = None  # the weights every run starts from (pretrain_source's result)
    queue: str = "off"  # this run's queue order (one of queue_diversity's variants)
    dropout: bool = False  # this run's data dropout (one of drop_harmful's variants)
    threads: int = 1  # torch threads per run

    @property
    def track(self) -> str:
        return "imagefolder" if self.dataset.startswith("imagefolder:") else self.dataset

    def replace(self, **changes) -> "SimConfig":
        return dataclasses.replace(self, **changes)

    def public(self) -> dict:
        """What results.json records: everything but the run-time details."""
        out = dataclasses.asdict(self)
        for key in ("progress", "threads", "queue", "dropout"):
            out.pop(key)
        out["strategies"], out["seeds"] = list(self.strategies), list(self.seeds)
        return out

    def budget_error(self, pool_size: int) -> str | None:
        need = self.initial + self.batch * self.rounds
        if need <= pool_size:
            return None
        return (
            f"the budget {self.initial} + {self.rounds} rounds × {self.batch} = {need} labels exceeds the pool "
            f"of {pool_size} items (the other 30% are the test set)"
        )


def parse_seeds(text: str) -> tuple[int, ...]:
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
    return tuple(seeds)


def build_parser(description: str = "") -> argparse.ArgumentParser:  # long: one add_argument per option
    import strategies

    p = argparse.ArgumentParser(
        prog="python -m ml_backend.simulation",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="strategies: " + ", ".join(strategies.available()),
    )
    p.add_argument(
        "--dataset",
        default="cluttered-digits",
        help="digits | cluttered-digits | digits-novel | fashion-mnist | multi-digits | imagefolder:PATH "
        "(default: cluttered-digits)",
    )
    p.add_argument("--source", default=None, help="ImageFolder of the source task (with imagefolder:PATH)")
    p.add_argument(
        "--strategies",
        default="random,margin,emoc,badge,adma",
        help="comma list of strategy specs, e.g. random,emoc,adma:landmarks=pool-exemplars",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="smallcnn (default), smallcnn-unfrozen (default on digits-novel: M0 is random, every layer "
        "trains), efficientnet_lite0 (default on fashion-mnist) or any torchvision architecture",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="auto (default: pretrain M0 on the track's source task, cached; fashion-mnist: DEFAULT), none, "
        "a weights name or a state_dict path",
    )
    p.add_argument(
        "--freeze",
        default=None,
        help="the backend's FREEZE: default, none, all, a fraction or a module name (fashion-mnist: blocks.5)",
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="input side in pixels, 0 = the backbone's own (fashion-mnist: 64)"
    )
    p.add_argument("--initial", type=int, default=None, help="seed-set size (track default)")
    p.add_argument("--batch", type=int, default=None, help="labels per round; set size K in digits-novel")
    p.add_argument("--rounds", type=int, default=None, help="active-learning rounds")
    p.add_argument("--steps", type=int, default=None, help="training steps per round")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--source-steps", type=int, default=None, help="steps to pretrain M0 on the source task")
    p.add_argument("--seeds", default="10", help="a count (10), a list (0,3,5) or a range (0-9)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one run each; 1 thread per process)")
    p.add_argument("--cache", default=SimConfig.cache, help="where pretrained source models are kept")
    p.add_argument("--out", default=None, help="output folder (results.json, summary.md, curves.png)")
    p.add_argument(
        "--live",
        action="store_true",
        help="run the loop through a real Label Studio and the real backend (its queue decides the order)",
    )
    p.add_argument(
        "--queue-diversity",
        choices=("off", "coreset", "compare"),
        default="off",
        help="the backend's QUEUE_DIVERSITY: re-order the top --queue-diversity-top candidates by "
        "k-center greedy before a round's labels are taken; 'compare' runs every strategy both ways",
    )
    p.add_argument("--queue-diversity-top", type=int, default=100, help="candidates re-ordered (QUEUE_DIVERSITY_TOP)")
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="share of the oracle's answers flipped to another class (0-0.9; the test set stays clean)",
    )
    p.add_argument(
        "--drop-harmful",
        choices=("off", "on", "compare"),
        default="off",
        help="the backend's TRAIN_DROP_HARMFUL: influence-based data dropout after each round's training; "
        "'compare' runs every strategy both ways",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run in --out: the runs it finished (OUT/runs.jsonl) are kept if the "
        "configuration is the same",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_dataset(args, parser) -> str:
    track = "imagefolder" if args.dataset.startswith("imagefolder:") else args.dataset
    if track not in TRACK_DEFAULTS:
        parser.error(
            f"unknown dataset {args.dataset!r}; allowed: digits, cluttered-digits, digits-novel, fashion-mnist, "
            "multi-digits, imagefolder:PATH"
        )
    defaults = TRACK_BACKBONE.get(track, {})
    if args.backbone is None:  # digits-novel starts from random weights: train every layer (docs/results.md)
        args.backbone = defaults.get("backbone", "smallcnn-unfrozen" if track == "digits-novel" else "smallcnn")
    own = defaults if args.backbone == defaults.get("backbone") else {}  # the track's settings go with its backbone
    for key, fallback in (("weights", "auto"), ("freeze", "default"), ("image_size", 0)):
        if getattr(args, key) is None:
            setattr(args, key, own.get(key, fallback))
    if args.image_size < 0:
        parser.error("--image-size must be 0 (the backbone's own) or a positive number of pixels")
    if track == "imagefolder" and not Path(args.dataset.split(":", 1)[1]).is_dir():
        parser.error(f"--dataset {args.dataset}: {args.dataset.split(':', 1)[1]} is not a folder")
    if args.source and track != "imagefolder":
        parser.error("--source only goes with --dataset imagefolder:PATH")
    if args.queue_diversity != "off" and track == "digits-novel":
        parser.error("--queue-diversity re-orders a per-instance queue; digits-novel selects whole sets")
    if not 0.0 <= args.label_noise <= 0.9:
        parser.error("--label-noise must be between 0 and 0.9")
    if args.drop_harmful != "off" and track == "digits-novel":
        parser.error("--drop-harmful goes with the per-instance tracks")
    if args.queue_diversity_top < 2:
        parser.error("--queue-diversity-top must be at least 2")
    if args.live:
        from ml_backend.demo.servers import LS_BIN

        if track == "digits-novel":
            parser.error("--live runs per-instance strategies; digits-novel's set protocol has no queue")
        if not LS_BIN.exists():
            parser.error(f"--live needs Label Studio at {LS_BIN}: run bash scripts/setup_env.sh first")
    from ml_backend.core.architectures import available_backbones, get_backbone
    from ml_backend.errors import ConfigError

    if args.backbone not in available_backbones():
        parser.error(f"--backbone {args.backbone!r}; allowed: {', '.join(available_backbones())}")
    try:
        get_backbone(args.backbone, args.freeze)
    except ConfigError as exc:
        parser.error(f"--freeze: {exc}")
    return track


def _check_strategies(
    text: str, track: str, parser, backbone: str = "smallcnn", freeze: str = "default"
) -> tuple[str, ...]:
    import strategies
    from ml_backend.core.architectures import get_backbone
    from ml_backend.errors import ConfigError

    specs = tuple(s.strip() for s in text.split(",") if s.strip())
    if not specs:
        parser.error("--strategies is empty")
    for spec in specs:
        try:
            name = strategies.parse_spec(spec)[0]
            get_backbone(backbone, freeze).require_layers(strategies.from_spec(spec).layers(), spec)
        except strategies.StrategyError as exc:
            parser.error(f"--strategies: {exc}")
        except ConfigError as exc:
            parser.error(f"--strategies with --backbone {backbone}: {exc}")
        if track == "digits-novel" and name not in NOVEL_CRITERIA:
            parser.error(
                f"--strategies: {name!r} has no set version for digits-novel; allowed: "
                f"{', '.join(NOVEL_CRITERIA)} (as the EMOC paper's random, min, 1-vs-2, max, emoc)"
            )
    if len(set(specs)) != len(specs):
        parser.error("--strategies lists a strategy twice")
    return specs


def config_from_args(args, parser) -> SimConfig:
    track = _check_dataset(args, parser)
    specs = _check_strategies(args.strategies, track, parser, args.backbone, args.freeze)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(f"--seeds: {exc}")
    budget = {
        k: TRACK_DEFAULTS[track][k] if getattr(args, k) is None else getattr(args, k) for k in TRACK_DEFAULTS[track]
    }
    for key in ("initial", "batch", "rounds", "steps"):
        if budget[key] < 1:
            parser.error(f"--{key} must be at least 1")
    return SimConfig(
        dataset=args.dataset,
        source=args.source,
        strategies=specs,
        seeds=seeds,
        backbone=args.backbone,
        weights=args.weights,
        freeze=args.freeze,
        image_size=args.image_size,
        device=args.device,
        cache=args.cache,
        workers=max(1, args.workers),
        progress=not args.no_progress,
        live=args.live,
        queue_diversity=args.queue_diversity,
        queue_diversity_top=args.queue_diversity_top,
        label_noise=args.label_noise,
        drop_harmful=args.drop_harmful,
        **budget,
        **(NOVEL_TRAINING if track == "digits-novel" else {}),
    )


def parse_args(argv=None, description: str = "") -> tuple[SimConfig, argparse.Namespace]:
    parser = build_parser(description)
    args = parser.parse_args(argv)
    return config_from_args(args, parser), args
