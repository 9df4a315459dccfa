"""Compiled Kendall tau-b per row (Knight's algorithm, O(K log K) per row, exact).

Per row of (x, y), in float64:

1. **Packed sort.** Each value's bit pattern keeps its top ``64 - b`` bits and carries its column
   index in the low ``b = ceil(log2 K)`` bits; sorting these as float64 (numpy's SIMD sort, rows in
   cache-sized chunks) gives the order *and* the permutation in one pass. Two values that differ only
   in their low ``b`` bits (relative gap below about 2^-42) could come out in the wrong order: the
   kernel detects every such pair (equal top bits, unequal values) and sends the row to the exact
   argsort path below, as it does rows with non-finite values. ``-0.0`` is folded into ``0.0``.
2. **Ranks with ties.** Each y value gets the sorted position where its tie group starts; x's order
   lists those, each x tie group re-sorted by y (Knight's (x, y) order), which also gives the pairs
   tied in x (n1), in y (n2) and in both (n3). Members of one y tie group then get consecutive
   ordinals in x order, so the sequence is a permutation whose inversions are exactly the strictly
   discordant pairs.
3. **Inversions** of that permutation with a bitset of seen ranks: for each element, the number of
   seen ranks above it is a popcount within its 64-bit word plus a running per-word suffix count
   (a Fenwick tree over words when K > 4096).

tau-b = (n0 - n1 - n2 + n3 - 2 * discordant) / sqrt((n0 - n1)(n0 - n2)), NaN where a side is
constant. The kernels release the GIL, so rows are split over threads. Kept in its own module so
that importing ``strategies`` does not pay for the JIT.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_CHUNK = 32  # rows sorted at once: two (32, K) float64 buffers stay in L2 for K up to a few thousand
_SUFFIX_WORDS = 64  # up to K = 4096 the per-word suffix count is a short vector add; beyond, a Fenwick tree


@intrinsic
def _popcount(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(nogil=True)
def _pack(v, bits, buf, bad):
    """buf[r, j] = v[r, j] with its low ``bits`` bits replaced by j; bad[r] where a value is not finite."""
    n, k = v.shape
    keep = ~((np.uint64(1) << np.uint64(bits)) - np.uint64(1))
    ub = buf.view(np.uint64)
    for r in range(n):
        for j in range(k):
            z = v[r, j] + 0.0  # -0.0 -> 0.0
            if not math.isfinite(z):
                bad[r] = True
            ub[r, j] = (np.float64(z).view(np.uint64) & keep) | np.uint64(j)


@numba.njit(nogil=True)
def _inversions(perm, k, words, counts):
    """Pairs i < j with perm[i] > perm[j], for a permutation of 0..k-1."""
    nw = (k + 63) >> 6
    words[:nw] = 0
    counts[: nw + 1] = 0
    d = 0
    one = np.uint64(1)
    if nw <= _SUFFIX_WORDS:  # counts[w] = seen ranks in words >= w
        for j in range(k):
            r = perm[j]
            w = r >> 6
            b = np.uint64(r & 63)
            d += counts[w + 1] + np.int64(_popcount((words[w] >> b) >> one))
            words[w] |= one << b
            for t in range(nw):
                counts[t] += t <= w
    else:  # Fenwick tree over words (counts[1..nw]); seen ranks in words > w = j - prefix(w + 1)
        for j in range(k):
            r = perm[j]
            w = r >> 6
            b = np.uint64(r & 63)
            le = 0
            i = w
            while i > 0:
                le += counts[i]
                i -= i & (-i)
            d += (j - le) - np.int64(_popcount(words[w] & ((one << b) - one)))
            words[w] |= one << b
            i = w + 1
            while i <= nw:
                counts[i] += 1
                i += i & (-i)
    return d


@numba.njit(nogil=True)  # long: one compiled kernel; a call per row pair would cost more than the pair
def _tau_packed(x, y, sx, sy, bits, out, bad):
    """Tau-b per row from the packed sorts; rows already bad, or with a collision, are marked bad."""
    n, k = x.shape
    low = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    shift = np.uint64(bits)
    n0 = k * (k - 1) // 2
    start_y = np.empty(k, np.int64)
    seq = np.empty(k, np.int64)
    nxt = np.empty(k, np.int64)
    words = np.empty((k + 63) >> 6, np.uint64)
    counts = np.empty(((k + 63) >> 6) + 1, np.int64)
    for row in range(n):
        if bad[row]:
            continue
        xr, yr = x[row], y[row]
        ky, kx = sy[row].view(np.uint64), sx[row].view(np.uint64)
        # y: where each value's tie group starts in sorted order; pairs tied in y
        prev = np.int64(ky[0] & low)
        start_y[prev] = 0
        group = 0
        n2 = 0
        for i in range(1, k):
            idx = np.int64(ky[i] & low)
            same_top = (ky[i] >> shift) == (ky[i - 1] >> shift)
            if same_top and yr[idx] == yr[prev]:
                start_y[idx] = group
            else:
                if same_top:
                    bad[row] = True
                n2 += (i - group) * (i - group - 1) // 2
                group = i
                start_y[idx] = i
            prev = idx
        n2 += (k - group) * (k - group - 1) // 2
        # x order; each x tie group re-sorted by y; pairs tied in x, and in both
        prev = np.int64(kx[0] & low)
        seq[0] = start_y[prev]
        n1 = 0
        n3 = 0
        group = 0
        for i in range(1, k + 1):
            same = False
            if i < k:
                idx = np.int64(kx[i] & low)
                seq[i] = start_y[idx]
                if (kx[i] >> shift) == (kx[i - 1] >> shift):
                    if xr[idx] == xr[prev]:
                        same = True
                    else:
                        bad[row] = True
                prev = idx
            if not same:
                m = i - group
                if m > 1:
                    n1 += m * (m - 1) // 2
                    seq[group:i].sort()
                    run = 1
                    for t in range(group + 1, i):
                        if seq[t] == seq[t - 1]:
                            run += 1
                        else:
                            n3 += run * (run - 1) // 2
                            run = 1
                    n3 += run * (run - 1) // 2
                group = i
        if bad[row]:
            continue
        if n2:  # members of a y tie group get consecutive ordinals in x order: never counted discordant
            for i in range(k):
                nxt[i] = i
            for i in range(k):
                g = seq[i]
                seq[i] = nxt[g]
                nxt[g] += 1
        discordant = _inversions(seq, k, words, counts)
        denominator = math.sqrt(float(n0 - n1) * float(n0 - n2))
        out[row] = np.nan if denominator == 0.0 else (n0 - n1 - n2 + n3 - 2 * discordant) / denominator


@numba.njit(nogil=True)
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


@numba.njit(nogil=True)
def _tau_argsort(x, y, out):
    """The exact path for any row (argsort, Fenwick tree over dense ranks); NaN in a row gives NaN."""
    n, k = x.shape
    n0 = k * (k - 1) // 2
    rx = np.empty(k, np.int64)
    ry = np.empty(k, np.int64)
    tree = np.empty(k + 1, np.int64)
    seq = np.empty(k, np.int64)
    for row in range(n):
        if np.isnan(x[row]).any() or np.isnan(y[row]).any():
            out[row] = np.nan
            continue
        ox = np.argsort(x[row])
        n1 = _dense_ranks(x[row], ox, rx)
        n2 = _dense_ranks(y[row], np.argsort(y[row]), ry)
        key = rx * k + ry
        order = np.argsort(key)  # Knight's (x, y) order
        n3 = 0
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
        out[row] = np.nan if denominator == 0.0 else (n0 - n1 - n2 + n3 - 2 * discordant) / denominator


def _rows(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    n, k = x.shape
    bits = max(1, (k - 1).bit_length())
    bad = np.zeros(n, dtype=np.bool_)
    if bits > 20:  # K > 2^20: the packed key would keep too few value bits
        bad[:] = True
    else:
        bx, by = np.empty((min(_CHUNK, n), k)), np.empty((min(_CHUNK, n), k))
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            m = b - a
            _pack(x[a:b], bits, bx[:m], bad[a:b])
            _pack(y[a:b], bits, by[:m], bad[a:b])
            bx[:m].sort(axis=1)
            by[:m].sort(axis=1)
            _tau_packed(x[a:b], y[a:b], bx[:m], by[:m], bits, out[a:b], bad[a:b])
    if bad.any():
        rows = np.flatnonzero(bad)
        exact = np.empty(rows.shape[0])
        _tau_argsort(x[rows], y[rows], exact)
        out[rows] = exact


def tau_rows(x: np.ndarray, y: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Tau-b of x[i] vs y[i] for every row of two float64 (N, K) arrays (K >= 2).
    Knight's algorithm (Knight, 'A Computer Method for Calculating Kendall's Tau with Ungrouped Data', JASA 1966);
    docs/methods.md §1.6."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    threads = max(1, min(threads or os.cpu_count() or 1, n // 16 or 1))
    bounds = np.linspace(0, n, threads + 1).astype(int)
    parts = [(x[a:b], y[a:b], out[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(parts) == 1:
        _rows(*parts[0])
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(lambda p: _rows(*p), parts))
    return out
