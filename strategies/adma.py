"""ADMA, active deep model adaptation (Huang, Zhao, Liu, KDD'18), as specified in docs/methods.md §1.
Larger = label first.

For an item x and K source landmarks c_k (one real instance per source class, Eqs. 1-2):

    S_x^{A->B}[k] = ||x^A - c_k^A||² / s_A  -  ||x^B - c_k^B||² / s_B          (Eqs. 4-5, squared L2)
    Ŝ_x^{A->B}    = α(x) @ S_C^{A->B},  S_C^{A->B}[i, j] = the same between landmarks   (Eqs. 3, 6, 7)
    D(x)          = (1 - τ_b(S_x, Ŝ_x)) / 2          (Eq. 9; τ undefined -> D = 0.5)
    U(x)          = 1 - Σ p²                          (Eq. 10 with its sign fixed, §1.7)
    score(x)      = (1 - w_t) D(x) + w_t U(x),  w_t = clip(λ t, 0, 1)     (Eq. 11, clipped)

x^A, x^B come from the current model M_t; landmarks and α come from the original model M0.
s_A, s_B are the medians of the landmarks' off-diagonal distances (the layer-scale normalisation,
on by default; ``normalize=False`` is the paper-literal form). α is M0's source-head softmax
restricted to the landmarks' classes, split over sub-centers (Eq. 8), or the reciprocal L2 distance
at layer A of M0 (ADMA-distance). ADMA-2 adds a second A layer and combines the per-pattern
distinctiveness by their mean (default) or variance.

Landmark modes (docs/methods.md §1.9), reported in :meth:`ADMAStrategy.info`:
``source-data`` (computed from the source task's data, Eqs. 1-2), ``file`` (a landmark file made by
``python -m ml_backend.service.make_landmarks`` or the backend from a reference folder), ``pool-exemplars`` (F3: the
pool items M0's source head is most confident about, per source class; the source-free default) and
``kmeans`` (F4: medoids of k-means clusters of the pool at M0's layer B; ADMA then measures
novelty within the pool only, and says so in a warning). The landmarks and α are in adma_landmarks.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from .adma_landmarks import (
    Landmarks,
    check_landmarks,
    exemplar_landmarks,
    flat_rows,
    item_alpha,
    kmeans_landmarks,
    sqdist,
)
from .base import Need, ScoringInputs, Strategy, recall_pool, remember_pool
from .errors import PoolRelativeError, StrategyError
from .kendall import kendall_tau_b
from .registry import register
from .uncertainty import gini
from .value_batch import BATCH_MODES, ValueBatch

log = logging.getLogger(__name__)

LANDMARK_MODES = ("auto", "pool-exemplars", "kmeans")  # or a path to a landmark file


def _scale(s_c: torch.Tensor) -> float:
    k = s_c.shape[0]
    if k < 2:
        return 1.0
    off = s_c[~torch.eye(k, dtype=torch.bool)]
    med = float(off.to(torch.float64).quantile(0.5))  # the usual median (mean of the middle two)
    return med if med > 0 else 1.0


def adma_distinctiveness(
    x_a: Sequence[torch.Tensor],
    x_b: torch.Tensor,
    c_a: Sequence[torch.Tensor],
    c_b: torch.Tensor,
    alpha: torch.Tensor,
    normalize: bool = True,
    combine: str = "mean",
    chunk: int = 2048,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, dict]:
    """Eq. 9 for every item, (N,) in [0, 1], plus diagnostics (scales s_A, s_B per pattern).

    x_a / c_a: one tensor per A layer (ADMA-2 passes two); x_b / c_b at layer B; alpha (N, K).
    ADMA (Huang, Zhao & Liu, 'Active Deep Model Adaptation', KDD'18), Eqs. 3-9, with the scale normalisation of
    docs/methods.md §1.4 and ADMA-2's combination (§1.8)."""
    n = x_b.shape[0]
    cb = c_b.to(dtype)
    s_cb = sqdist(cb, cb)
    s_b = _scale(s_cb) if normalize else 1.0
    patterns, info = [], {"s_B": s_b, "s_A": []}
    for xa, ca in zip(x_a, c_a):
        ca = ca.to(dtype)
        s_ca = sqdist(ca, ca)
        s_a = _scale(s_ca) if normalize else 1.0
        info["s_A"].append(s_a)
        s_c = s_ca / s_a - s_cb / s_b  # (K, K), symmetric: column k = S_{c_k}^{A->B}
        d = torch.empty(n, dtype=torch.float64)
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            s_x = sqdist(flat_rows(xa[sl]).to(dtype), ca) / s_a - sqdist(flat_rows(x_b[sl]).to(dtype), cb) / s_b
            s_hat = alpha[sl].to(dtype) @ s_c
            tau = kendall_tau_b(s_x.to(torch.float64), s_hat.to(torch.float64))
            d[sl] = torch.nan_to_num((1.0 - tau) / 2.0, nan=0.5)
        patterns.append(d)
    stacked = torch.stack(patterns)
    if combine == "mean":
        return stacked.mean(dim=0), info
    if combine == "variance":
        return stacked.var(dim=0, unbiased=False), info
    raise ValueError(f"combine={combine!r}; allowed: mean, variance")


def adma_tradeoff(distinctiveness: torch.Tensor, uncertainty: torch.Tensor, t: int, lam: float) -> torch.Tensor:
    """Eq. 11 with the weight clipped to [0, 1]: (1 - w) D + w U, w = clip(λ t, 0, 1).
    ADMA (Huang, Zhao & Liu, KDD'18); docs/methods.md §1.7."""
    w = min(max(lam * t, 0.0), 1.0)
    return (1.0 - w) * distinctiveness + w * uncertainty


def diagnostics(lm: Landmarks, alpha_mode: str, lam: float, w: float, inputs, float32: bool, scales, d) -> dict:
    """What /status shows of one ADMA scoring (docs/methods.md §1; a project helper, not from a paper)."""
    return {
        "landmark_mode": lm.mode,
        "landmarks": lm.k,
        "alpha": alpha_mode,
        "lambda": lam,
        "weight_uncertainty": w,
        "t": inputs.round,
        "float32": float32,
        "s_A": scales["s_A"],
        "s_B": scales["s_B"],
        "D_mean": float(d.mean()) if d.numel() else None,
        "D_sd": float(d.std(unbiased=False)) if d.numel() else None,
    }


@register
class ADMAStrategy(Strategy):
    """ADMA, active deep model adaptation (Huang, Zhao & Liu, 'Active Deep Model Adaptation', KDD'18;
    docs/methods.md §1): the distinctiveness of the layer A->B transformation pattern against source landmarks,
    traded off against Gini uncertainty as rounds pass."""

    name = "adma"
    needs = frozenset({Need.PROBS, Need.FEATURES, Need.SOURCE_FEATURES, Need.SOURCE_PROBS, Need.KEYS})
    description = (
        "ADMA (KDD'18): distinctiveness of the layer A->B transformation pattern against source "
        "landmarks, traded off against Gini uncertainty as rounds pass (lambda*t clipped to 1)."
    )

    def __init__(
        self,
        seed: int = 0,
        lam: float | None = None,
        landmarks: str = "auto",
        alpha: str = "auto",
        normalize: bool = True,
        layers: str = "A",
        combine: str = "mean",
        exemplars: int = 5,
        kmeans: int = 25,
        max_landmarks: int = 1000,
        consistent: bool = False,
        exact_limit: int = 20_000,
        batch: str = "none",
        budget: int = 256,
        candidates: int = 20_000,
    ) -> None:
        super().__init__(seed)
        a_layers = _check_options(layers, alpha, combine, lam, landmarks)
        if batch not in BATCH_MODES:
            raise TypeError(f"batch must be one of {', '.join(BATCH_MODES)}")
        if batch != "none" and consistent:
            raise TypeError("batch=kmeanspp scales embeddings by values >= 0; consistent=true gives z-scores")
        self.batch = batch
        self.batcher = ValueBatch(seed, budget, candidates)  # docs/methods.md §4.8; checks budget, candidates
        self.needs = frozenset(type(self).needs | ({Need.EMBEDDINGS} if batch != "none" else set()))
        self.lam = None if lam is None else float(lam)
        self.landmarks, self.alpha, self.normalize = landmarks, alpha, bool(normalize)
        self.a_layers, self.combine = a_layers, combine
        self.exemplars, self.kmeans, self.max_landmarks = int(exemplars), int(kmeans), int(max_landmarks)
        self.consistent = bool(consistent)  # docs/methods.md §1.10
        self.exact_limit = int(exact_limit)  # above: float32 distances (docs/methods.md §10)
        self.given: Landmarks | None = None  # set by the caller: source-data or reference-folder landmarks
        self.source_data = None  # the source data, when given (the consistent variant re-reads its landmarks)
        self._info: dict = {}

    def params(self) -> dict:
        return {
            "seed": self.seed,
            "lam": self.lam,
            "landmarks": self.landmarks,
            "alpha": self.alpha,
            "normalize": self.normalize,
            "layers": ",".join(self.a_layers),
            "combine": self.combine,
            "exemplars": self.exemplars,
            "kmeans": self.kmeans,
            "max_landmarks": self.max_landmarks,
            "consistent": self.consistent,
            "exact_limit": self.exact_limit,
            "batch": self.batch,
            "budget": self.batcher.budget,
            "candidates": self.batcher.candidates,
        }

    def layers(self) -> tuple[str, ...]:
        return (*self.a_layers, "B")

    def info(self) -> dict:
        return dict(self._info)

    def set_source_data(self, source) -> None:
        """With source data, ``landmarks=auto`` takes 5 k-means sub-centers per source class."""
        if self.landmarks == "auto" and self.given is None:
            self.source_data = source
            self.set_landmarks(source.landmarks(self.layers(), per_class=5))

    def set_landmarks(self, landmarks: Landmarks) -> None:
        """Use landmarks computed from source data or a reference folder (modes source-data/file)."""
        self.given = landmarks

    def cache_key(self) -> tuple:
        return ("adma_landmarks", self.landmarks, self.exemplars, self.kmeans, self.max_landmarks, self.a_layers)

    def _alpha_key(self) -> tuple:
        return ("adma_alpha", self.alpha, self.cache_key())

    def _known_landmarks(self, state: dict | None) -> Landmarks | None:
        """The landmarks when they exist without a forward pass (given, read, or kept in ``state``)."""
        if self.given is not None:
            return self.given
        return state.get(self.cache_key()) if state is not None else None

    def needs_for(self, fingerprints, state) -> frozenset[Need]:
        """M0's outputs serve only the landmarks (computed once) and α, which for a given item and
        set of landmarks never changes: once every item's α is kept in ``state``, the pass through
        M0 is skipped (every round after the first full-pool scoring)."""
        lm = self._known_landmarks(state)
        if lm is None or state is None or fingerprints is None:
            return self.needs
        cache = state.get(self._alpha_key())
        if (
            cache is None
            or cache["landmarks"] is not lm
            or not all(f is not None and (str(f) in cache["rows"] or str(f) in cache["old"]) for f in fingerprints)
        ):
            return self.needs
        return self.needs - {Need.SOURCE_FEATURES, Need.SOURCE_PROBS}

    def saved_state(self, state: dict) -> dict | None:
        lm = state.get(self.cache_key()) if self.given is None else None
        if lm is None:
            return None
        return {"key": repr(self.cache_key()), "landmarks": lm.to_dict()}

    def restore_state(self, state: dict, saved: dict) -> bool:
        if self.given is not None or saved.get("key") != repr(self.cache_key()):
            return False
        try:
            state[self.cache_key()] = Landmarks.from_dict(saved["landmarks"])
        except ValueError:
            return False
        return True

    def _alpha(self, inputs: ScoringInputs, lm: Landmarks) -> tuple[str, torch.Tensor]:
        """(mode, α (N, K) float64), kept per item in ``inputs.state`` for kept landmarks (:func:`item_alpha`)."""
        cache = None
        if inputs.state is not None and lm is self._known_landmarks(inputs.state):  # kept landmarks only
            cache = inputs.state.get(self._alpha_key())
            if cache is None or cache["landmarks"] is not lm:
                cache = inputs.state[self._alpha_key()] = {"landmarks": lm, "mode": None, "rows": {}, "old": {}}
        return item_alpha(inputs, lm, self.alpha, self.a_layers[0], cache)

    def _landmarks(self, inputs: ScoringInputs) -> Landmarks:
        if self.given is not None:
            return self.given
        if self.landmarks not in LANDMARK_MODES and Path(self.landmarks).is_dir():
            raise StrategyError(
                f"ADMA reference folder {self.landmarks}: its landmarks must be computed with the "
                "model first (the backend does this at start; or run python -m ml_backend.service.make_landmarks)"
            )
        if self.landmarks not in LANDMARK_MODES:  # a landmark file: the same for every project, read once
            self.given = Landmarks.load(self.landmarks)
            return self.given
        cache_key = self.cache_key()
        if inputs.state is not None and cache_key in inputs.state:
            return inputs.state[cache_key]
        if not inputs.full_pool:  # landmarks of the request's own tasks would make values batch-relative
            raise PoolRelativeError(
                f"ADMA's {self.landmarks} landmarks come from a full-pool scoring; none is kept yet"
            )
        lm = pool_landmarks(self, inputs)
        # Landmarks are computed once (Algorithm 1's initialisation) from a whole pool.
        if inputs.state is not None:
            inputs.state[cache_key] = lm
        return lm

    @property
    def pool_relative(self) -> bool:
        """With landmarks from the pool (pool-exemplars, kmeans), until a full-pool scoring kept them;
        the consistent variant and ``batch=kmeanspp`` always (what they keep is kept per version)."""
        return self.consistent or self.batch != "none" or (self.given is None and self.landmarks in LANDMARK_MODES)

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        probs = inputs.require(Need.PROBS)
        feats = inputs.require(Need.FEATURES, self.layers())
        lm = self._landmarks(inputs)
        check_landmarks(lm, feats, self.a_layers, inputs.n)
        alpha_mode, alpha = self._alpha(inputs, lm)
        if self.consistent:
            lm, present = consistent_landmarks(self, inputs, lm)
            alpha = alpha[:, present]
        d, scales = adma_distinctiveness(
            [feats[r] for r in self.a_layers],
            feats["B"],
            [lm.a[r] for r in self.a_layers],
            lm.b,
            alpha,
            self.normalize,
            self.combine,
            dtype=torch.float64 if inputs.n <= self.exact_limit else torch.float32,
        )
        lam = self.lam if self.lam is not None else (1.0 / inputs.planned_rounds if inputs.planned_rounds else 0.1)
        w = min(max(lam * inputs.round, 0.0), 1.0)
        self._info = diagnostics(lm, alpha_mode, lam, w, inputs, inputs.n > self.exact_limit, scales, d)
        if lm.k < 2:
            log.warning("ADMA has %d landmark(s): distinctiveness is undefined and set to 0.5", lm.k)
        u = gini(probs)
        if self.consistent:
            self._info["landmarks_current"] = lm.k
            d, u = standardised(inputs, ("adma_scale", self.cache_key(), self.alpha), self.name, d, u)
        values = adma_tradeoff(d, u, inputs.round, lam)
        if self.batch != "none":  # a value-weighted diverse queue (docs/methods.md §4.8)
            key = ("adma-batch", tuple(sorted(self.params().items())))
            values = self.batcher(inputs, values, key, self.name)
            self._info.update(self.batcher.info)
        return values


def pool_landmarks(strategy: "ADMAStrategy", inputs: ScoringInputs) -> Landmarks:
    """Landmarks from a full pool's M0 outputs, without source data (docs/methods.md §1.9): F3
    pool-exemplars when M0's source head is there (``landmarks=auto``), else F4 k-means medoids,
    with a warning that ADMA then measures novelty within the pool only.
    A project fallback, not in the ADMA paper (KDD'18)."""
    source = inputs.require(Need.SOURCE_FEATURES, strategy.layers())
    keys = [str(k) for k in inputs.require(Need.KEYS)]
    a = {r: source[r] for r in strategy.a_layers}
    mode = strategy.landmarks
    if mode == "auto":
        mode = "pool-exemplars" if inputs.source_probs is not None else "kmeans"
    if mode == "pool-exemplars":
        return exemplar_landmarks(
            a, source["B"], inputs.require(Need.SOURCE_PROBS), keys, strategy.exemplars, strategy.max_landmarks
        )
    log.warning(
        "ADMA with k-means landmarks (F4): no source information, so ADMA measures novelty "
        "within the pool only (docs/methods.md §1.9)"
    )
    return kmeans_landmarks(a, source["B"], keys, strategy.kmeans, strategy.seed)


def consistent_landmarks(strategy: "ADMAStrategy", inputs: ScoringInputs, lm: Landmarks) -> tuple[Landmarks, list[int]]:
    """The consistent variant (docs/methods.md §1.10): the landmarks' activations at A and B through
    the current model M_t, and which of ``lm``'s landmarks they are (pool landmarks that left the
    pool, labeled or deleted, are left out).
    A project variant, not in the ADMA paper (KDD'18)."""
    items = lm.meta.get("items")
    if items is None:
        raise StrategyError(
            f"ADMA consistent=true needs the landmark items; {lm.mode} landmarks keep only "
            "their M0 activations (use landmarks=auto with source data, pool-exemplars or kmeans)"
        )
    if lm.mode == "source-data":
        if strategy.source_data is None:
            raise StrategyError("ADMA consistent=true with source-data landmarks needs the source data")
        feats = strategy.source_data.current_activations(strategy.layers(), [int(i) for i in items])
        return Landmarks({r: feats[r] for r in strategy.a_layers}, feats["B"], lm.classes, lm.mode), list(range(lm.k))
    key = ("adma_current", strategy.cache_key())
    if not inputs.full_pool:
        ref = recall_pool(inputs, key, strategy.name)["reference"]
        return ref["landmarks"], ref["present"]
    row = {str(k): i for i, k in enumerate(inputs.require(Need.KEYS))}
    present = [j for j, item in enumerate(items) if str(item) in row]
    rows = [row[str(items[j])] for j in present]
    feats = inputs.require(Need.FEATURES, strategy.layers())
    classes = lm.classes[present] if lm.classes is not None else None
    now = Landmarks(
        {r: flat_rows(feats[r][rows]).float() for r in strategy.a_layers},
        flat_rows(feats["B"][rows]).float(),
        classes,
        lm.mode,
    )
    remember_pool(inputs, key, None, landmarks=now, present=present)
    return now, present


def standardised(
    inputs: ScoringInputs, key, name: str, d: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """D and the Gini uncertainty on one scale (§1.10): z-scores with the full pool's mean and SD (their
    spreads differ), kept per model version so that a request's tasks use the same ones.
    Part of the project's consistent variant (docs/methods.md §1.10), not in the ADMA paper (KDD'18)."""
    if inputs.full_pool:
        stats = {
            "d": (float(d.mean()), float(d.std(unbiased=False)) or 1.0),
            "u": (float(u.mean()), float(u.std(unbiased=False)) or 1.0),
        }
        remember_pool(inputs, key, None, **stats)
    else:
        stats = recall_pool(inputs, key, name)["reference"]
    return (d - stats["d"][0]) / stats["d"][1], (u - stats["u"][0]) / stats["u"][1]


def _check_options(layers: str, alpha: str, combine: str, lam: float | None, landmarks: str) -> tuple[str, ...]:
    """ADMA's constructor options, checked (TypeError names the bad one); returns the A layers."""
    a_layers = tuple(x.strip() for x in str(layers).replace("+", ",").split(",") if x.strip())
    if not a_layers or any(x not in ("A", "A2") for x in a_layers):
        raise TypeError("layers must be 'A' (ADMA) or 'A,A2' (ADMA-2)")
    if alpha not in ("auto", "source", "distance"):
        raise TypeError("alpha must be auto, source or distance")
    if combine not in ("mean", "variance"):
        raise TypeError("combine must be mean or variance")
    if lam is not None and not (float(lam) >= 0):
        raise TypeError("lam must be >= 0")
    if landmarks not in LANDMARK_MODES and Path(landmarks).suffix != ".pt" and not Path(landmarks).is_dir():
        raise TypeError(
            f"landmarks must be one of {', '.join(LANDMARK_MODES)}, a .pt landmark file or a "
            "reference folder (ImageFolder layout)"
        )
    return a_layers


__all__ = [
    "ADMAStrategy",
    "adma_distinctiveness",
    "adma_tradeoff",
]
