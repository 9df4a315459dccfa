"""The offline active-learning loop: the backend's strategies, scoring and trainer with a
ground-truth oracle. :func:`run_al` takes the top ``batch`` of each round's queue (per-instance
strategies); :func:`run_novel` is the EMOC paper's set protocol (digits-novel)."""

from __future__ import annotations

import time

import numpy as np
import torch

import strategies
from ml_backend.core import review
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import resolve_device
from ml_backend.core.scoring import forward_batches, score_pool
from ml_backend.core.stopping import cohen_kappa, stop_set
from ml_backend.core.trainer import Example, TrainConfig, fine_tune
from ml_backend.simulation.config import NOVEL_CRITERIA, SimConfig
from ml_backend.simulation.pretrain import base_model, dataset_of, resize_for
from strategies import Need

BATCH = 256  # items per forward pass


def split_pool(n: int, seed: int, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) indices: the same split for every strategy of a seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def initial_labels(pool: np.ndarray, seed: int, size: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed + 7).permutation(pool)[:size]]


def evaluate(model: AdaptedModel, z_test: torch.Tensor, y_test: torch.Tensor) -> tuple[float, float | None]:
    """(accuracy, macro one-vs-rest AUROC or None when a class is missing from the test set). A
    multi-label track: (micro-F1 at the model's threshold, macro AUROC over the labels)."""
    from sklearn.metrics import f1_score, roc_auc_score

    probs = forward_batches(model, z_test, {Need.PROBS}, (), BATCH)["probs"].double()
    if model.layout is not None:
        y = y_test.numpy().astype(int)
        f1 = float(f1_score(y, (probs >= model.threshold).numpy().astype(int), average="micro", zero_division=0))
        if (y.sum(0) == 0).any() or (y.sum(0) == len(y)).any():
            return f1, None
        return f1, float(roc_auc_score(y, probs.numpy(), average="macro"))
    acc = float((probs.argmax(1) == y_test).double().mean())
    c = probs.shape[1]
    if len(set(y_test.tolist())) != c or c < 2:
        return acc, None
    p = (probs / probs.sum(1, keepdim=True)).numpy()
    return acc, float(roc_auc_score(y_test.numpy(), p if c > 2 else p[:, 1], multi_class="ovr", labels=list(range(c))))


def noisy_labels(y: torch.Tensor, classes: int, rate: float, seed: int) -> torch.Tensor:
    """What a noisy oracle answers: each item's label flipped, with probability ``rate``, to another
    class drawn uniformly (fixed per seed and item, the same for every strategy)."""
    if rate <= 0:
        return y
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    flip = torch.rand(len(y), generator=g) < rate
    shift = torch.randint(1, classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % classes, y)


def _fit(model, z, y_train, labeled, new, cfg: SimConfig, seed: int, round_: int) -> tuple[float, dict]:
    """Train on the labels so far; with data dropout, compute ψ on the trained head, leave out the
    harmful labels and train again from the same start (what the backend's round does)."""
    new = set(new)
    if model.layout is not None:  # multi-label: the oracle's 0/1 row is the target
        examples = [Example(f"{i:06d}", -1, i in new, trunk=z[i], target=y_train[i].float()) for i in labeled]
    else:
        examples = [Example(f"{i:06d}", int(y_train[i]), i in new, trunk=z[i]) for i in labeled]
    config = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        weight_decay=5e-4,
        batch_size=cfg.train_batch,
        new_fraction=cfg.new_fraction,
        seed=seed * 1000 + round_,
        optimizer=cfg.optimizer,
    )
    started = time.perf_counter()
    start = model.clone() if cfg.dropout else None
    fine_tune(model, examples, config)
    dropped: list[dict] = []
    if cfg.dropout:
        kept, dropped = review.drop_harmful(model, examples, config.weight_decay, seed, BATCH)
        if dropped:
            model.load_target_state(start.target.state_dict(), start.labels, start.active)
            fine_tune(model, kept, config)
    return time.perf_counter() - started, {"dropped": [int(d["task"]) for d in dropped], "examples": examples}


def _noise_report(model, fitted: dict, noisy: set[int]) -> dict:
    """How well data dropout and the review list find the labels the oracle got wrong."""
    dropped = set(fitted["dropped"])
    out = {"noisy_labels": len(noisy), "dropped": len(dropped), "dropped_noisy": len(dropped & noisy)}
    if noisy:
        k = len(noisy)
        ranked = review.review(model, fitted["examples"], "loss", k, 5e-4, 0, BATCH)
        out["review_precision_at_noisy"] = sum(int(r["task"]) in noisy for r in ranked) / k
    return out


STOP_SET = 1000  # items of the pool in the stopping signal's stop set


def _predictions(model: AdaptedModel, z: torch.Tensor) -> list:
    """What the model predicts for each item (a multi-label one: its canonical answer string)."""
    probs = forward_batches(model, z, {Need.PROBS}, (), BATCH)["probs"]
    if model.layout is None:
        return probs.argmax(1).tolist()
    return [model.canonical(p) for p in model.decode(probs)]


def step(
    model,
    z,
    y,
    labeled: list[int],
    new,
    test,
    cfg: SimConfig,
    seed: int,
    round_: int,
    score_s: float,
    y_train: torch.Tensor | None = None,
) -> dict:
    """Train on the labels so far (``new`` = this round's; ``y_train``: what the oracle answered),
    evaluate on the true test labels, and report the round."""
    y_train = y if y_train is None else y_train
    train_s, fitted = _fit(model, z, y_train, labeled, new, cfg, seed, round_)
    acc, auc = evaluate(model, z[test], y[test])
    discovered = int((y[labeled].sum(0) > 0).sum()) if y.dim() == 2 else len(set(y[labeled].tolist()))
    row = {
        "labels": len(labeled),
        "accuracy": acc,
        "auc": auc,
        "classes_discovered": discovered,
        "score_seconds": score_s,
        "train_seconds": train_s,
    }
    if cfg.label_noise > 0 or cfg.dropout:
        row.update(_noise_report(model, fitted, {i for i in labeled if not torch.equal(y_train[i], y[i])}))
    return row


def prepare_strategy(strategy, cfg: SimConfig, model: AdaptedModel, ds) -> None:
    """Hand the source task (2000 seeded images) to the strategy, when the track has one; ADMA takes
    landmarks from it (mode source-data), MMD a source sample, the others nothing."""
    from ml_backend.core.landmarks import ImageSource

    if ds.source is None:
        return
    idx = torch.randperm(len(ds.source.y), generator=torch.Generator().manual_seed(0))[:2000]
    strategy.set_source_data(ImageSource(model, lambda: resize_for(cfg, ds.source.x[idx]), ds.source.y[idx]))


def run_name(spec: str, cfg: SimConfig) -> str:
    """A run's name in the results: the strategy spec, plus the queue order and data dropout when on."""
    name = spec if cfg.queue == "off" else f"{spec} +queue={cfg.queue}@{cfg.queue_diversity_top}"
    return name + " +dropout" if cfg.dropout else name


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _setup(cfg: SimConfig, seed: int):
    """(dataset, model, images, trunk activations of every item), the model's head seeded per seed
    and shared by all strategies."""
    torch.set_num_threads(cfg.threads)
    ds = dataset_of(cfg)
    model = AdaptedModel(
        base_model(cfg.backbone, cfg.m0, cfg.freeze, cfg.image_size),
        ds.target.classes,
        resolve_device(cfg.device),
        seed,
        layout=ds.target.layout,
    )
    return (ds, model, *_target_inputs(cfg, model))


_TARGETS: dict = {}


def _target_inputs(cfg: SimConfig, model: AdaptedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(images at the backbone's input, the frozen trunk's activations) of every target item: the
    same for every seed and strategy of a configuration (M0's frozen layers never change), so
    computed once per process."""
    key = (cfg.dataset, cfg.source, cfg.backbone, cfg.m0, cfg.freeze, cfg.image_size, cfg.device)
    if key not in _TARGETS:
        x = resize_for(cfg, dataset_of(cfg).target.x)
        _TARGETS.clear()  # one configuration per process at a time
        _TARGETS[key] = x, torch.cat([model.trunk(x[s : s + BATCH]) for s in range(0, len(x), BATCH)])
    return _TARGETS[key]


def run_al(cfg: SimConfig, spec: str, seed: int, progress=None) -> dict:
    """One active-learning run: per-instance strategies, top-b per round, through the backend's
    one scoring function (``core/scoring.py``) and its queue order (``cfg.queue``)."""
    ds, model, x, z = _setup(cfg, seed)
    strategy = strategies.from_spec(spec, seed=seed)
    prepare_strategy(strategy, cfg, model, ds)
    strategy = strategies.with_queue_diversity(strategy, cfg.queue, cfg.queue_diversity_top)
    y = ds.target.y
    if ds.target.layout is not None and cfg.label_noise > 0:
        raise ValueError("--label-noise flips single labels; the multi-label track has none to flip")
    y_oracle = noisy_labels(y, len(ds.target.classes), cfg.label_noise, seed)
    pool, test = split_pool(len(y), seed)
    if (error := cfg.budget_error(len(pool))) is not None:
        raise ValueError(error)
    labeled = initial_labels(pool, seed, cfg.initial)
    rounds = [step(model, z, y, labeled, labeled, test, cfg, seed, 0, 0.0, y_oracle)]
    stop = stop_set([int(i) for i in pool], STOP_SET, seed)  # the stopping signal's fixed sample
    predicted = _predictions(model, z[stop])
    state: dict = {}
    for r in range(1, cfg.rounds + 1):
        started = time.perf_counter()
        taken = set(labeled)
        unlabeled = [int(i) for i in pool if int(i) not in taken]
        keys = [f"{i:06d}" for i in unlabeled]
        values = score_pool(
            strategy,
            model,
            [(keys, None, z[unlabeled])],
            candidates=keys,
            labeled_trunk=z[labeled],
            images=lambda: x[unlabeled],
            round_=r - 1,
            planned_rounds=cfg.rounds,
            state=state,
            batch_size=BATCH,
        ).values
        new = [unlabeled[int(i)] for i in torch.argsort(values, descending=True, stable=True)[: cfg.batch]]
        labeled += new
        rounds.append(step(model, z, y, labeled, new, test, cfg, seed, r, time.perf_counter() - started, y_oracle))
        rounds[-1]["selected"] = new  # dataset indices, in the order they were taken
        previous, predicted = predicted, _predictions(model, z[stop])
        rounds[-1]["kappa"] = cohen_kappa(previous, predicted)  # stabilizing predictions (core/stopping.py)
        if info := strategy.info():  # what the strategy decided this round (ADMA: D's mean and spread)
            rounds[-1]["strategy_info"] = jsonable(info)
        if progress is not None:
            progress(1)
    info = strategy.info()
    return {
        "strategy": run_name(spec, cfg),
        "seed": seed,
        "rounds": rounds,
        **({"strategy_info": jsonable(info)} if info else {}),
    }


def novel_split(y: torch.Tensor, classes: list[str], seed: int) -> tuple[list[int], list[int], list[int]]:
    """(initial, pool, test) of docs/methods.md §8.2 T2: 5 known classes with 20 labels each; the pool
    holds 20 per known and 20 per novel class; the rest is the test set."""
    rng = np.random.default_rng(seed)
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
    return initial, pool, [i for i in range(len(y)) if i not in used]


def candidate_sets(remaining: list[int], y: torch.Tensor, k: int, m: int, seed: int, round_: int) -> list[list[int]]:
    """``m`` random class-pure sets of ``k`` unlabeled items, the same for every criterion."""
    by_class: dict[int, list[int]] = {}
    for i in remaining:
        by_class.setdefault(int(y[i]), []).append(i)
    eligible = [c for c, items in sorted(by_class.items()) if len(items) >= k]
    if not eligible:
        return []
    rng = np.random.default_rng([seed, round_])
    return [
        rng.choice(by_class[eligible[rng.integers(len(eligible))]], size=k, replace=False).tolist() for _ in range(m)
    ]


def run_novel(cfg: SimConfig, spec: str, seed: int, progress=None) -> dict:
    """The EMOC paper's protocol (docs/methods.md §2.3, §8.2 T2): each step, one of M random
    class-pure sets of K is chosen by a set criterion and labeled."""
    criterion = NOVEL_CRITERIA[strategies.parse_spec(spec)[0]]
    ds, model, _, z = _setup(cfg, seed)
    y = ds.target.y
    initial, pool, test = novel_split(y, ds.target.classes, seed)
    labeled = list(initial)
    rounds = [step(model, z, y, labeled, labeled, test, cfg, seed, 0, 0.0)]
    for r in range(1, cfg.rounds + 1):
        started = time.perf_counter()
        taken = set(labeled)
        remaining = [i for i in pool if i not in taken]
        sets_global = candidate_sets(remaining, y, cfg.batch, cfg.sets, seed, r)
        if not sets_global:
            break
        index = {g: j for j, g in enumerate(remaining)}
        sets = torch.tensor([[index[g] for g in s] for s in sets_global])
        out = forward_batches(model, z[remaining], {Need.PROBS, Need.EMBEDDINGS}, (), BATCH)
        ref = forward_batches(model, z[remaining + labeled], {Need.PROBS, Need.EMBEDDINGS}, (), BATCH)
        values = strategies.set_criterion(
            criterion, sets, out["probs"], out["embeddings"], ref["embeddings"], ref["probs"], seed=seed * 1000 + r
        )
        chosen = sets_global[int(torch.argmax(values))]
        labeled += chosen
        rounds.append(step(model, z, y, labeled, chosen, test, cfg, seed, r, time.perf_counter() - started))
        if progress is not None:
            progress(1)
    return {"strategy": spec, "seed": seed, "set_criterion": criterion, "rounds": rounds}


def runner_for(cfg: SimConfig):
    return run_novel if cfg.dataset == "digits-novel" else run_al
