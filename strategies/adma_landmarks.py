"""ADMA's source landmarks and each item's weights α over them (Huang, Zhao & Liu, "Active Deep
Model Adaptation", KDD'18; docs/methods.md §1.3, §1.5 and §1.9).

Landmarks c_k at layers A and B of the original model M0: from the source data (Eqs. 1-2, the medoid
of each source class or of k-means sub-centers within it), from a landmark file, or without source
data from the pool (F3 ``pool-exemplars``, F4 ``kmeans``). α (N, K) weights them per item: M0's
source-head probability of each landmark's class (Eq. 8) or the reciprocal distance at layer A
(ADMA-distance). The distinctiveness that uses them is in adma.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .base import Need, ScoringInputs
from .errors import StrategyError


def sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances between the rows of x (n, D) and y (m, D): ||x||² + ||y||² - 2 x·y,
    clamped at 0 (use float32 or better: the Gram of long vectors cancels badly in half precision).
    The squared L2 distance of ADMA's Eqs. 2-5 (Huang, Zhao & Liu, KDD'18); docs/methods.md §1.4."""
    d = x.pow(2).sum(dim=1, keepdim=True) + y.pow(2).sum(dim=1)[None, :] - 2.0 * (x @ y.T)
    return d.clamp_min(0)


@dataclass
class Landmarks:
    """Source centers c_k at layers A (one entry per A layer) and B, flattened, from M0.
    ADMA's landmarks (Huang, Zhao & Liu, KDD'18, Eqs. 1-2): docs/methods.md §1.3, their modes §1.9."""

    a: dict[str, torch.Tensor]  # role -> (K, D_A)
    b: torch.Tensor  # (K, D_B)
    classes: torch.Tensor | None  # (K,) source-head class of each landmark; None if not class-aligned
    mode: str
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.b.shape[0])

    def to_dict(self) -> dict:
        """Tensors, strings and numbers only (readable with ``torch.load(weights_only=True)``)."""
        return {"a": self.a, "b": self.b, "classes": self.classes, "mode": self.mode, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict) -> "Landmarks":
        """The inverse of :meth:`to_dict`; ValueError when the landmark counts disagree."""
        lm = cls(
            dict(data["a"]), data["b"], data.get("classes"), str(data.get("mode", "file")), dict(data.get("meta") or {})
        )
        if lm.b.dim() != 2 or any(v.shape[0] != lm.k for v in lm.a.values()):
            raise ValueError("inconsistent landmark counts")
        return lm

    @classmethod
    def load(cls, path: str | Path) -> "Landmarks":
        try:
            data = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise StrategyError(f"ADMA landmark file {path} does not exist") from None
        except Exception as exc:
            raise StrategyError(f"ADMA landmark file {path} is not readable: {exc}") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise StrategyError(f"ADMA landmark file {path}: {exc}") from None
        except Exception as exc:
            raise StrategyError(f"ADMA landmark file {path} is not readable: {exc}") from None


def flat_rows(x: torch.Tensor) -> torch.Tensor:
    """Project helper, not from a paper: each item's activations as one row, (N, ...) -> (N, D) (ADMA compares flattened
    activations, docs/methods.md §1.4)."""
    return x.reshape(x.shape[0], -1)


def medoid_landmarks(
    a: dict[str, torch.Tensor],
    b: torch.Tensor,
    labels: torch.Tensor,
    per_class: int = 1,
    seed: int = 0,
    mode: str = "source-data",
) -> Landmarks:
    """Eqs. 1-2 per class on the layer-B representation: the instance closest to the class mean.
    With ``per_class`` > 1, k-means sub-centers within each class, and the medoid of each cluster.
    ADMA (Huang, Zhao & Liu, 'Active Deep Model Adaptation', KDD'18); docs/methods.md §1.3."""
    from sklearn.cluster import KMeans

    b = flat_rows(b).to(torch.float64)
    picks, classes = [], []
    for cls in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == cls).flatten()
        zb = b[members]
        groups = [torch.arange(len(members))]
        if per_class > 1 and len(members) > per_class:
            km = KMeans(per_class, n_init=3, random_state=seed).fit(zb.numpy())
            assign = torch.from_numpy(km.labels_)
            groups = [torch.nonzero(assign == g).flatten() for g in range(per_class)]
        for g in groups:
            if len(g) == 0:
                continue
            centre = zb[g].mean(dim=0, keepdim=True)  # Eq. 1, over the class (cluster) only
            best = g[int(torch.argmin(sqdist(zb[g], centre).flatten()))]  # Eq. 2
            picks.append(int(members[best]))
            classes.append(int(cls))
    index = torch.tensor(picks, dtype=torch.long)
    return Landmarks(
        {r: flat_rows(v)[index].float() for r, v in a.items()},
        flat_rows(b)[index].float(),
        torch.tensor(classes, dtype=torch.long),
        mode,
        {"items": list(picks)},
    )


def exemplar_landmarks(
    a: dict[str, torch.Tensor],
    b: torch.Tensor,
    source_probs: torch.Tensor,
    keys: Sequence[str],
    per_class: int = 5,
    max_landmarks: int = 1000,
) -> Landmarks:
    """F3: per source class k, the ``per_class`` pool items whose M0 argmax is k with the highest
    confidence (ties by key). Classes are kept in order of their best confidence, up to
    ``max_landmarks`` landmarks.
    A project fallback without source data, not in the ADMA paper (KDD'18): docs/methods.md §1.9."""
    conf, top = source_probs.to(torch.float64).max(dim=1)
    by_class: dict[int, list[tuple[float, str, int]]] = {}
    for i, (c, k, key) in enumerate(zip(conf.tolist(), top.tolist(), keys)):
        by_class.setdefault(k, []).append((-c, str(key), i))
    ranked = sorted(by_class.items(), key=lambda kv: min(kv[1]))
    picks, classes = [], []
    for cls, items in ranked:
        take = sorted(items)[:per_class]
        if len(picks) + len(take) > max_landmarks:
            break
        picks += [i for _, _, i in take]
        classes += [cls] * len(take)
    index = torch.tensor(picks, dtype=torch.long)
    return Landmarks(
        {r: flat_rows(v)[index].float() for r, v in a.items()},
        flat_rows(b)[index].float(),
        torch.tensor(classes, dtype=torch.long),
        "pool-exemplars",
        {"items": [str(keys[i]) for i in picks]},
    )


def kmeans_landmarks(
    a: dict[str, torch.Tensor], b: torch.Tensor, keys: Sequence[str], k: int = 25, seed: int = 0
) -> Landmarks:
    """F4: medoids of k-means clusters of the pool at M0's layer B (not class-aligned).
    A project fallback without source data, not in the ADMA paper (KDD'18): ADMA then measures novelty within the
    pool (docs/methods.md §1.9)."""
    from sklearn.cluster import KMeans

    order = sorted(range(len(keys)), key=lambda i: str(keys[i]))  # independent of the pool's order
    zb = flat_rows(b).to(torch.float64)[order]
    k = max(1, min(k, zb.shape[0]))
    assign = torch.from_numpy(KMeans(k, n_init=3, random_state=seed).fit(zb.numpy()).labels_)
    picks = []
    for g in range(k):
        members = torch.nonzero(assign == g).flatten()
        if len(members):
            centre = zb[members].mean(dim=0, keepdim=True)
            picks.append(order[int(members[int(torch.argmin(sqdist(zb[members], centre).flatten()))])])
    index = torch.tensor(sorted(picks), dtype=torch.long)
    return Landmarks(
        {r: flat_rows(v)[index].float() for r, v in a.items()},
        flat_rows(b)[index].float(),
        None,
        "kmeans",
        {"items": [str(keys[i]) for i in index.tolist()]},
    )


def check_landmarks(lm: Landmarks, feats: dict, a_layers: Sequence[str], n: int) -> None:
    """StrategyError unless the landmarks have every layer the items have, of the same width.
    Project check, not from a paper: the landmarks of docs/methods.md §1.3 and §1.9 must come from the same backbone
    and input size as the items."""
    for role in a_layers:
        if role not in lm.a:
            raise StrategyError(
                f"ADMA landmarks ({lm.mode}) have no layer {role}; rebuild them with layers {','.join(a_layers)}"
            )
    for role in (*a_layers, "B"):
        want = (lm.a[role] if role != "B" else lm.b).shape[1]
        got = flat_rows(feats[role][:1]).shape[1] if n else want
        if got != want:
            raise StrategyError(
                f"ADMA landmarks ({lm.mode}) have {want} values at layer {role}, the model "
                f"gives {got}: were they computed with another backbone or input size?"
            )


def alpha_source(source_probs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Eq. 8: α_k = M0's source-head probability of landmark k's class, split evenly over landmarks
    that share the class (sub-centers).
    ADMA (Huang, Zhao & Liu, KDD'18); docs/methods.md §1.5."""
    uniq, inverse = torch.unique(classes, return_inverse=True)
    return alpha_source_compact(source_probs[:, uniq], classes, inverse)


def alpha_source_compact(columns: torch.Tensor, classes: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Eq. 8 from only the source-probability columns of the landmarks' distinct classes
    (``torch.unique(classes, return_inverse=True)``): what ADMA keeps per item.
    The project's compact form of ADMA's Eq. 8 (KDD'18), for the per-item cache: docs/methods.md §1.5."""
    counts = torch.bincount(classes, minlength=int(classes.max()) + 1).to(torch.float64)
    return columns.to(torch.float64)[:, inverse] / counts[classes]


def alpha_distance(x0_a: torch.Tensor, c_a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """ADMA-distance: α_k(x) = 1 / (||x^A - c_k^A||₂ + ε), with x^A from M0 (non-squared L2).
    The ADMA paper's ADMA-distance variant (Huang, Zhao & Liu, KDD'18); docs/methods.md §1.5."""
    return 1.0 / (sqdist(flat_rows(x0_a).to(torch.float64), c_a.to(torch.float64)).sqrt() + eps)


def item_alpha(
    inputs: ScoringInputs, lm: Landmarks, option: str, a_layer: str, cache: dict | None
) -> tuple[str, torch.Tensor]:
    """(mode, α (N, K) float64) for ADMA's ``alpha`` option (Eq. 8 or ADMA-distance, docs/methods.md §1.5).
    With a ``cache`` (the strategy's entry in ``inputs.state``, for kept landmarks only) the compact
    form is kept per item: M0's source probabilities of the landmarks' classes (float32, as M0 gives
    them; Eq. 8 is applied to them here) or the ADMA-distance α itself, so a cached α is bit-identical
    to a fresh one. Project caching around the paper's α (M0's outputs are fixed per item)."""
    mode = option
    if mode == "auto":
        mode = (cache or {}).get("mode") or (
            "source" if lm.classes is not None and inputs.source_probs is not None else "distance"
        )
    if mode == "source" and lm.classes is None:
        raise StrategyError(f"ADMA alpha=source needs class-aligned landmarks; {lm.mode} landmarks are not")
    ids = inputs.item_ids() if cache is not None else None
    if cache is not None and cache["mode"] != mode:
        cache.update(mode=mode, rows={}, old={})
    rows, old = (cache["rows"], cache["old"]) if cache is not None else ({}, {})
    for f in ids or ():
        if f is not None and f not in rows and f in old:
            rows[f] = old.pop(f)
    missing = [i for i in range(inputs.n) if ids is None or ids[i] is None or ids[i] not in rows]
    if mode == "source":
        uniq, inverse = torch.unique(lm.classes, return_inverse=True)
    if missing:
        if mode == "source":
            fresh = inputs.require(Need.SOURCE_PROBS)[missing][:, uniq]
        else:
            x0 = inputs.require(Need.SOURCE_FEATURES, (a_layer,))[a_layer]
            fresh = alpha_distance(x0[missing], lm.a[a_layer])
    if ids is None:
        compact = fresh
    else:
        fresh_at = {i: j for j, i in enumerate(missing)}
        compact = torch.stack([fresh[fresh_at[i]] if i in fresh_at else rows[ids[i]] for i in range(inputs.n)])
        for j, i in enumerate(missing):
            if ids[i] is not None:
                rows[ids[i]] = fresh[j].clone()
        if inputs.full_pool:  # items that left the pool (labeled, deleted) are forgotten one full
            keep = set(ids)  # scoring later, so that a request planned just before still finds them
            cache["old"] = {f: v for f, v in rows.items() if f not in keep}
            cache["rows"] = {f: v for f, v in rows.items() if f in keep}
    if mode == "source":
        return mode, alpha_source_compact(compact, lm.classes, inverse)
    return mode, compact


__all__ = [
    "Landmarks",
    "alpha_source",
    "alpha_distance",
    "medoid_landmarks",
    "exemplar_landmarks",
    "kmeans_landmarks",
    "sqdist",
]
