"""Compiled Kendall tau-b per row (Knight's algorithm with a Fenwick-tree inversion count).

Per row: both vectors are argsorted by numpy (outside the kernel, vectorised over rows), turned into
dense ranks with their tie counts, and the strictly discordant pairs are counted with a Fenwick tree
over the y ranks in x order, in O(K log K). Rows with ties in x are re-ordered by (x, y) first, as
Knight's algorithm requires. The kernel releases the GIL, so rows are split over threads.
Kept in its own module so that importing ``strategies`` does not pay for the JIT.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


@numba.njit(nogil=True, cache=False)
def _dense_ranks(values, order, ranks):
    """ranks[order[i]] = dense rank of values[order[i]]; returns the number of tied pairs."""
    k = order.shape[0]
    tied = 0
    run = 1
    r = 0
    ranks[order[0]] = 0
    for i in range(1, k):
        if values[order[i]] == values[order[i - 1]]:
            run += 1
        else:
            tied += run * (run - 1) // 2
            run = 1
            r += 1
        ranks[order[i]] = r
    tied += run * (run - 1) // 2
    return tied


@numba.njit(nogil=True, cache=False)
def _tau_kernel(x, y, ox, oy, out):
    n, k = x.shape
    n0 = k * (k - 1) // 2
    rx = np.empty(k, np.int64)
    ry = np.empty(k, np.int64)
    tree = np.empty(k + 1, np.int64)
    seq = np.empty(k, np.int64)
    for row in range(n):
        n1 = _dense_ranks(x[row], ox[row], rx)
        n2 = _dense_ranks(y[row], oy[row], ry)
        n3 = 0
        if n1 == 0:
            for i in range(k):
                seq[i] = ry[ox[row, i]]
        else:  # ties in x: order by (x, y)
            key = rx * k + ry
            order = np.argsort(key)
            run = 1
            for i in range(k):
                seq[i] = ry[order[i]]
                if i > 0:
                    if key[order[i]] == key[order[i - 1]]:
                        run += 1
                    else:
                        n3 += run * (run - 1) // 2
                        run = 1
            n3 += run * (run - 1) // 2
        # strictly discordant pairs: i < j with seq[i] > seq[j]
        tree[:] = 0
        discordant = 0
        for j in range(k):
            v = seq[j] + 1
            le = 0
            i = v
            while i > 0:
                le += tree[i]
                i -= i & (-i)
            discordant += j - le
            i = v
            while i <= k:
                tree[i] += 1
                i += i & (-i)
        denominator = math.sqrt(float(n0 - n1) * float(n0 - n2))
        if denominator == 0.0:
            out[row] = np.nan
        else:
            out[row] = (n0 - n1 - n2 + n3 - 2 * discordant) / denominator


def _chunk(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    ox = np.argsort(x, axis=1)
    oy = np.argsort(y, axis=1)
    _tau_kernel(x, y, ox, oy, out)


def tau_rows(x: np.ndarray, y: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Tau-b of x[i] vs y[i] for every row of two float64 (N, K) arrays (K >= 2)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    threads = max(1, min(threads or os.cpu_count() or 1, n // 16 or 1))
    bounds = np.linspace(0, n, threads + 1).astype(int)
    parts = [(x[a:b], y[a:b], out[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(parts) == 1:
        _chunk(*parts[0])
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(lambda p: _chunk(*p), parts))
    return out
