"""Batch-diverse selection as pure functions (METHODS.md §4.3-4.4): core-set (k-center greedy) and
BADGE (k-means++ seeding on gradient embeddings, without materialising them). Both return pool
indices in selection order (first = label first). Their registered strategies and the
diversity-aware queue ordering build on these.
"""
from __future__ import annotations

import torch


def k_center_greedy(pool: torch.Tensor, labeled: torch.Tensor | None, b: int, seed: int = 0) -> torch.Tensor:
    """Greedily pick ``b`` pool items, each the farthest (squared L2) from everything chosen or
    labeled so far. With nothing labeled, the first pick is a seeded random pool item. Ties go to
    the lowest index."""
    pool = pool.to(torch.float64).flatten(1)
    n = pool.shape[0]
    b = min(b, n)
    if b <= 0:
        return torch.zeros(0, dtype=torch.long)
    chosen: list[int] = []
    if labeled is not None and labeled.shape[0] > 0:
        nearest = torch.cdist(pool, labeled.to(torch.float64).flatten(1)).pow(2).min(dim=1).values
    else:
        first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
        chosen.append(first)
        nearest = (pool - pool[first]).pow(2).sum(dim=1)
    while len(chosen) < b:
        masked = nearest.clone()
        if chosen:
            masked[chosen] = -1.0
        pick = int(torch.argmax(masked))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (pool - pool[pick]).pow(2).sum(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


def badge_distances(a: torch.Tensor, h: torch.Tensor, center: int) -> torch.Tensor:
    """||g_i - g_c||² for gradient embeddings g = a ⊗ h (a = p - e_ŷ), without forming g:
    ||a_i||²||h_i||² + ||a_c||²||h_c||² - 2 (a_i·a_c)(h_i·h_c)."""
    na = a.pow(2).sum(dim=1) * h.pow(2).sum(dim=1)
    return (na + na[center] - 2 * (a @ a[center]) * (h @ h[center])).clamp_min(0)


def badge(probs: torch.Tensor, h: torch.Tensor, b: int, seed: int = 0) -> torch.Tensor:
    """BADGE selection: k-means++ seeding on g = (p - e_ŷ) ⊗ h; the first pick is the largest ||g||."""
    p, h = probs.to(torch.float64), h.to(torch.float64).flatten(1)
    n = p.shape[0]
    b = min(b, n)
    if b <= 0:
        return torch.zeros(0, dtype=torch.long)
    a = p - torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    norms = a.pow(2).sum(dim=1) * h.pow(2).sum(dim=1)
    chosen = [int(torch.argmax(norms))]
    nearest = badge_distances(a, h, chosen[0])
    while len(chosen) < b:
        weights = nearest.clone()
        weights[chosen] = 0.0
        total = weights.sum()
        if total <= 0:  # every remaining item coincides with a chosen one: take them in index order
            rest = [i for i in range(n) if i not in set(chosen)]
            chosen.extend(rest[: b - len(chosen)])
            break
        pick = int(torch.multinomial(weights / total, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, badge_distances(a, h, pick))
    return torch.tensor(chosen, dtype=torch.long)
