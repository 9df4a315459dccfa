"""MMD-based selection (docs/methods.md §5): query the set Q whose removal from the target pool T most
reduces MMD²(S, T \\ Q), with a Gaussian kernel on fixed features of M0 (layer B). Greedy, one item
at a time, with the exact kernel (n <= ``exact_limit``) or random Fourier features. Larger = label
first: items are valued by the order in which the greedy removes them.

It is a transfer/distinctiveness criterion that picks the most target-specific items, outliers
included. The pilots found it the worst method on its own; it is offered, never a default.
"""

from __future__ import annotations

import torch

from .base import Need, ScoringInputs
from .diversity import BudgetStrategy, order_to_values_and_scale
from .registry import register


def median_bandwidth(x: torch.Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """The median heuristic for the Gaussian kernel's bandwidth: the median pairwise distance of a seeded sample of
    ``max_points`` rows (1.0 when it is 0). MMD and the median heuristic: Gretton et al., JMLR 2012;
    docs/methods.md §5."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:max_points]
    d = torch.cdist(x[idx], x[idx])
    off = d[~torch.eye(len(idx), dtype=torch.bool)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 else 1.0


def _gauss(x: torch.Tensor, y: torch.Tensor, bw: float) -> torch.Tensor:
    return torch.exp(-torch.cdist(x, y).pow(2) / (2 * bw * bw))


def mmd2(s: torch.Tensor, t: torch.Tensor, bw: float) -> float:
    """Biased MMD² between two samples (for tests and diagnostics).
    MMD: Gretton et al., 'A Kernel Two-Sample Test', JMLR 2012; docs/methods.md §5."""
    return float(_gauss(s, s, bw).mean() - 2 * _gauss(s, t, bw).mean() + _gauss(t, t, bw).mean())


def mmd_greedy_exact(source: torch.Tensor, pool: torch.Tensor, b: int, bandwidth: float | None = None) -> torch.Tensor:
    """Greedy removal order of ``b`` pool items with the exact kernel; returns pool indices.
    The project's selection rule (docs/methods.md §5), with the MMD of Gretton et al., JMLR 2012."""
    s, t = source.to(torch.float64).flatten(1), pool.to(torch.float64).flatten(1)
    n = t.shape[0]
    b = min(b, max(n - 1, 0))
    bw = bandwidth or median_bandwidth(torch.cat([s, t]))
    a = _gauss(s, t, bw).sum(dim=0)  # a_t = Σ_s k(s, t)
    k_tt = _gauss(t, t, bw)
    r = k_tt.sum(dim=1)  # r_t = Σ_t' k(t, t')
    total_a, total_w = float(a.sum()), float(r.sum())
    alive = torch.ones(n, dtype=torch.bool)
    order: list[int] = []
    ns = s.shape[0]
    for step in range(b):
        m = n - step - 1
        obj = -2 * (total_a - a) / (ns * m) + (total_w - 2 * r + k_tt.diagonal()) / (m * m)
        obj[~alive] = torch.inf
        q = int(torch.argmin(obj))
        order.append(q)
        alive[q] = False
        total_a -= float(a[q])
        total_w -= float(2 * r[q] - k_tt[q, q])
        r = r - k_tt[:, q]
    return torch.tensor(order, dtype=torch.long)


def mmd_greedy_rff(
    source: torch.Tensor,
    pool: torch.Tensor,
    b: int,
    features: int = 2048,
    bandwidth: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """The same greedy with random Fourier features ψ: v = (n-b) μ_S - Σ_T ψ; q = argmin ||v + ψ_q||².
    Random Fourier features: Rahimi & Recht, 'Random Features for Large-Scale Kernel Machines', NIPS'07; the greedy
    rule is the project's (docs/methods.md §5)."""
    s, t = source.to(torch.float64).flatten(1), pool.to(torch.float64).flatten(1)
    n = t.shape[0]
    b = min(b, max(n - 1, 0))
    bw = bandwidth or median_bandwidth(torch.cat([s, t]), seed=seed)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(s.shape[1], features, generator=g, dtype=torch.float64) / bw
    phase = torch.rand(features, generator=g, dtype=torch.float64) * 2 * torch.pi
    scale = (2.0 / features) ** 0.5

    def psi(x):
        return scale * torch.cos(x @ w + phase)

    pt = psi(t)
    v = (n - b) * psi(s).mean(dim=0) - pt.sum(dim=0)
    alive = torch.ones(n, dtype=torch.bool)
    order: list[int] = []
    for _ in range(b):
        obj = (v[None, :] + pt).pow(2).sum(dim=1)
        obj[~alive] = torch.inf
        q = int(torch.argmin(obj))
        order.append(q)
        alive[q] = False
        v = v + pt[q]
    return torch.tensor(order, dtype=torch.long)


@register
class MMDStrategy(BudgetStrategy):
    """MMD-based selection at M0's layer B (docs/methods.md §5): the project's transfer criterion with the MMD of
    Gretton et al., JMLR 2012; offered, never a default."""

    name = "mmd"
    needs = frozenset({Need.SOURCE_FEATURES, Need.SOURCE_PROBS, Need.KEYS})
    description = (
        "MMD removal: greedily query the items whose removal most reduces MMD(source, pool) at M0's "
        "layer B (source sample: source data when given, else source-head exemplars of the pool)."
    )

    def __init__(
        self,
        seed: int = 0,
        budget: int = 256,
        exact_limit: int = 20000,
        rff: int = 2048,
        exemplars: int = 5,
        candidates: int = 10_000,
    ) -> None:
        super().__init__(seed, budget, candidates)
        self.exact_limit, self.rff, self.exemplars = int(exact_limit), int(rff), int(exemplars)
        self.source: torch.Tensor | None = None  # set by the caller when source data exists
        self._info: dict = {}

    def params(self) -> dict:
        return {**super().params(), "exact_limit": self.exact_limit, "rff": self.rff, "exemplars": self.exemplars}

    def layers(self) -> tuple[str, ...]:
        return ("B",)

    def info(self) -> dict:
        return {**self._info, **self._sampled}

    def set_source(self, features: torch.Tensor) -> None:
        self.source = features.flatten(1)

    def set_source_data(self, source) -> None:
        """With source data, the source sample is M0's layer B for up to 1000 source images."""
        if self.source is None:
            self.set_source(source.activations(("B",), limit=1000)["B"])

    def ordered_values(self, inputs: ScoringInputs, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
        from .adma_landmarks import exemplar_landmarks

        keys = inputs.require(Need.KEYS)
        pool = inputs.require(Need.SOURCE_FEATURES, ("B",))["B"].flatten(1).to(torch.float64)[perm]
        if self.source is not None:
            source, mode = self.source, "source-data"
        else:
            lm = exemplar_landmarks(
                {}, pool, inputs.require(Need.SOURCE_PROBS)[perm], [str(keys[int(i)]) for i in perm], self.exemplars
            )
            source, mode = lm.b, "pool-exemplars"
        n = pool.shape[0]
        b = min(self.budget, max(n - 1, 0))
        bw = median_bandwidth(torch.cat([source.to(torch.float64), pool]))
        if n <= self.exact_limit:
            picks = mmd_greedy_exact(source, pool, b, bandwidth=bw)
        else:
            picks = mmd_greedy_rff(source, pool, b, self.rff, seed=self.seed)
        self._info = {"source": mode, "source_size": int(source.shape[0]), "exact": n <= self.exact_limit}
        # the rest: by how target-specific they are (low mean kernel to the source sample)
        rest = -_gauss(pool, source.to(torch.float64), bw).mean(dim=1)
        values, scale = order_to_values_and_scale(picks, rest)
        return values, {**scale, "source": source.to(torch.float64), "bandwidth": bw}

    def new_item_rest(self, inputs: ScoringInputs, idx: list[int], reference: dict) -> torch.Tensor:
        pool = inputs.require(Need.SOURCE_FEATURES, ("B",))["B"].flatten(1).to(torch.float64)[idx]
        return -_gauss(pool, reference["source"], reference["bandwidth"]).mean(dim=1)
