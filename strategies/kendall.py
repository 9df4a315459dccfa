"""Batched Kendall tau-b between the rows of two matrices (docs/methods.md §1.6).

``kendall_tau_b(x, y)`` compares ``x[i]`` with ``y[i]`` for every row ``i`` and returns tau-b, exactly
as ``scipy.stats.kendalltau`` (variant 'b'), ties included. A row where either side is constant has
an undefined tau: NaN (ADMA maps it to a neutral distinctiveness of 0.5).

Three implementations, the same numbers:

* ``method="compiled"`` (CPU default): Knight's algorithm, O(K log K) per row, compiled by numba:
  one packed SIMD sort per side gives order and permutation together (rows whose values the packing
  cannot separate take an exact argsort path), and the discordant pairs are counted with a bitset
  and popcounts; rows are split over ``torch.get_num_threads()`` threads (``strategies/_tau_numba.py``).
* ``method="sort"``: O(K log^2 K) per row, vectorised over rows. Rows are sorted by
  (x, y); the number of strictly discordant pairs is counted by a bottom-up merge in which, at each
  level, every element of a right block counts the elements of its left block that are larger
  (``searchsorted``) before the two blocks are merged.
* ``method="pairwise"`` (GPU default): sign matrices, O(K^2) per row, in chunks of rows.
"""

from __future__ import annotations

import math

import torch


def _tied_pairs(sorted_rows: torch.Tensor) -> torch.Tensor:
    """Number of tied pairs per row of an ascending-sorted matrix."""
    first = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    index = torch.arange(sorted_rows.shape[1], device=sorted_rows.device).expand_as(first)
    return (index - first).sum(dim=1)


def _joint_tied_pairs(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Pairs tied in both x and y, for rows sorted by (x, y)."""
    k = xs.shape[1]
    boundary = torch.ones_like(xs, dtype=torch.bool)
    boundary[:, 1:] = (xs[:, 1:] != xs[:, :-1]) | (ys[:, 1:] != ys[:, :-1])
    index = torch.arange(k, device=xs.device).expand_as(xs)
    start = torch.where(boundary, index, torch.zeros_like(index)).cummax(dim=1).values
    return (index - start).sum(dim=1)


def _discordant_pairs(r: torch.Tensor) -> torch.Tensor:
    """Pairs i < j with r[i] > r[j] (strictly), per row, by a vectorised bottom-up merge."""
    n, k = r.shape
    size = 1 << max(0, math.ceil(math.log2(max(k, 1))))
    if size > k:  # pad with +inf at the end: larger than everything, so no new inversions
        r = torch.cat([r, torch.full((n, size - k), math.inf, dtype=r.dtype, device=r.device)], dim=1)
    count = torch.zeros(n, dtype=torch.int64, device=r.device)
    block = 1
    while block < size:
        pairs = r.reshape(n, size // (2 * block), 2, block)
        left, right = pairs[:, :, 0, :], pairs[:, :, 1, :]
        not_greater = torch.searchsorted(left.contiguous(), right.contiguous(), right=True)
        count += (block - not_greater).sum(dim=(1, 2))
        r = pairs.reshape(n, size // (2 * block), 2 * block).sort(dim=2).values.reshape(n, size)
        block *= 2
    return count


def _tau_sort(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k = x.shape[1]
    n0 = k * (k - 1) // 2
    # lexicographic sort by (x, y): stable sort by y, then stable sort by x
    oy = torch.sort(y, dim=1, stable=True).indices
    xo, yo = x.gather(1, oy), y.gather(1, oy)
    ox = torch.sort(xo, dim=1, stable=True).indices
    xs, ys = xo.gather(1, ox), yo.gather(1, ox)
    n1 = _tied_pairs(xs)
    n2 = _tied_pairs(torch.sort(y, dim=1).values)
    n3 = _joint_tied_pairs(xs, ys)
    discordant = _discordant_pairs(ys)
    # concordant - discordant = n0 - n1 - n2 + n3 - 2 * discordant (Knight's algorithm)
    numerator = (n0 - n1 - n2 + n3 - 2 * discordant).to(torch.float64)
    denominator = ((n0 - n1).to(torch.float64) * (n0 - n2).to(torch.float64)).sqrt()
    return numerator / denominator


def _tau_pairwise(x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    out = []
    for start in range(0, x.shape[0], chunk):
        xa, ya = x[start : start + chunk], y[start : start + chunk]
        sx = torch.sign(xa[:, :, None] - xa[:, None, :]).to(torch.int8)
        sy = torch.sign(ya[:, :, None] - ya[:, None, :]).to(torch.int8)
        num = (sx.to(torch.int32) * sy).sum(dim=(1, 2), dtype=torch.int64)
        tx = sx.abs().sum(dim=(1, 2), dtype=torch.int64)
        ty = sy.abs().sum(dim=(1, 2), dtype=torch.int64)
        out.append(num.to(torch.float64) / (tx.to(torch.float64) * ty.to(torch.float64)).sqrt())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=x.device)


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor, method: str = "auto", chunk: int = 64) -> torch.Tensor:
    """Tau-b of ``x[i]`` vs ``y[i]`` for every row: shape (N,), float64, NaN where undefined.
    Kendall's τ-b (Kendall, Biometrika 1945), as ADMA's Eq. 9 needs it; exact by Knight's algorithm (Knight, JASA
    1966): docs/methods.md §1.6."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"expected two (N, K) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=x.device)
    if x.shape[1] < 2:
        return torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)
    if method == "auto":
        method = "pairwise" if x.is_cuda else "compiled"
    x, y = x.to(torch.float64), y.to(torch.float64)
    if method == "compiled":
        from ._tau_numba import tau_rows

        out = tau_rows(x.detach().cpu().numpy(), y.detach().cpu().numpy(), torch.get_num_threads())
        return torch.from_numpy(out).to(x.device)
    if method == "sort":
        return _tau_sort(x, y)
    if method == "pairwise":
        return _tau_pairwise(x, y, chunk)
    raise ValueError(f"method={method!r}; allowed: auto, compiled, sort, pairwise")
