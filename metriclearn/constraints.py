"""Constraints from class labels: pairs, triplets, quadruplets, chunklets, target neighbours, impostors.

Weakly supervised metric learners see tuples, not labels; the ``*_Supervised`` estimators and LMNN build
those tuples here. Every sampler takes a PRNG ``key`` first (a ``jax.random`` key, or an ``int`` seed),
is vectorised (no Python loop over samples or pairs; at most a loop over classes) and returns NumPy
``int32`` index arrays of a fixed, documented shape.

Shortfalls are handled the same way everywhere: when fewer *distinct* constraints exist than were asked
for, the sampler returns all that exist, in random order, with a ``UserWarning`` (the output shape
shrinks to what exists); when none can exist (one class, no class with two members, ...) it raises
``ValueError``. Sampling is without replacement: the constraints returned are distinct.

:func:`target_neighbors` and :func:`impostors` serve LMNN (Weinberger & Saul, JMLR 2009); the latter is
pure JAX and jits, computing distances in row blocks so memory stays ``O(block * n)``.

Example::

    import jax, numpy as np
    from metriclearn import constraints
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    idx, pair_y = constraints.pairs(jax.random.key(0), y, n_similar=4, n_dissimilar=4)
    trip = constraints.triplets(jax.random.key(1), y, n_triplets=10)   # [10, 3]
    X = np.random.default_rng(0).normal(size=(8, 2))
    knn = constraints.knn_triplets(X, y, k_genuine=1, k_impostor=2)   # [8 * 1 * 2, 3], deterministic
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import (
    as_real,
    as_single_key,
    check_array,
    check_labels,
    check_positive_int,
    float_dtype,
    is_traced,
    require_concrete,
)
from metriclearn.distances import _ranking_exponent, pairwise_sqeuclidean

__all__ = [
    "pairs",
    "triplets",
    "knn_triplets",
    "quadruplets",
    "chunklets",
    "target_neighbors",
    "impostors",
    "impostor_mask",
    "Impostors",
    "check_pairs",
]


# ----------------------------------------------------------------------------------------------------
# helpers


def _rng(key) -> np.random.Generator:
    """A NumPy generator seeded deterministically from a JAX PRNG key (or an int seed)."""
    seed = np.asarray(jax.random.bits(as_single_key(key), (4,), dtype=jnp.uint32))
    return np.random.default_rng(seed.astype(np.uint64))


def _check_count(value, name: str) -> int:
    return check_positive_int(value, name, minimum=0)


def _class_layout(codes: np.ndarray):
    """Sample indices sorted by class, per-class counts and start offsets into that order."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return order, counts, starts


def _shortfall(name: str, asked: int, available: int, stacklevel: int = 4) -> None:
    warnings.warn(
        f"asked for {asked} {name} but only {available} distinct ones exist; returning {available}",
        UserWarning,
        stacklevel=stacklevel,
    )


def _unrank_triu(t: np.ndarray, m: np.ndarray):
    """Map linear indices ``t`` in ``[0, m(m-1)/2)`` to upper-triangle pairs ``(i, j)``, ``i < j``.

    Exact in ``int64`` (``m`` up to ~3e9): a float64 square root only seeds the row, which integer
    tests then correct (``t`` beyond 2**53, from classes of more than ~1.34e8 members, made the
    float formula take the square root of a negative number).
    """
    t = np.asarray(t, np.int64)
    m = np.asarray(m, np.int64)
    # rank counted from the end, r = T - 1 - t: the q-th row from the bottom (q = m - 2 - i) holds
    # q + 1 pairs, so r lies in row q iff q (q + 1) / 2 <= r < (q + 1) (q + 2) / 2
    r = m * (m - 1) // 2 - 1 - t
    q = np.floor((np.sqrt(8.0 * r.astype(np.float64) + 1.0) - 1.0) / 2.0).astype(np.int64)
    q = np.clip(q, 0, np.maximum(m - 2, 0))
    while True:  # the float estimate is off by at most a few rows
        low = q * (q + 1) // 2 > r
        high = (q + 1) * (q + 2) // 2 <= r
        if not (np.any(low) or np.any(high)):
            break
        q = q - low + high
    i = m - 2 - q
    j = t - i * (2 * m - i - 1) // 2 + i + 1
    return i, j


def _centred64(X) -> np.ndarray:
    """A float64 copy of ``X [n, d]`` (finite) minus a per-column centre, for distances used only
    for their order (translation-invariant).

    The centre is the column's midrange rounded to a multiple of the largest power of two not above
    its spread, so the subtraction is exact for integer data or data on a coarser grid (exact ties
    stay ties) and removes any large offset (``X + 1e7`` would leave squared norms ~1e14 and
    ``|x|^2 + |y|^2 - 2 x.y`` no significant digit). Columns of one value become 0.
    """
    X = np.asarray(X, np.float64)
    if X.shape[0] == 0:
        return X
    lo, hi = X.min(axis=0), X.max(axis=0)
    half = 0.5 * hi - 0.5 * lo  # no overflow
    mid = 0.5 * hi + 0.5 * lo
    ex = np.frexp(half)[1]  # half in [2**(ex-1), 2**ex): the spread is at least 2**ex
    centre = np.where(half > 0, np.ldexp(np.round(np.ldexp(mid, -ex)), ex), lo)
    with np.errstate(over="ignore", invalid="ignore"):
        out = X - centre
    return out if np.all(np.isfinite(out)) else X


#: Up to this many candidates (``total``), :func:`_choose_distinct` is NumPy's ``Generator.choice``
#: without replacement, whose draws the published results were made with; beyond it, a request of
#: more than ``total // 50`` (where ``choice`` permutes a whole ``arange(total)``: 200 MB for 2.5e7
#: pairs, GBs beyond) is drawn in memory ~ the request instead (other numbers, same distribution).
_CHOICE_LIMIT = 1 << 22


def _distinct_draws(rng, total: int, k: int) -> np.ndarray:
    """``k`` distinct values of ``[0, total)``, uniform and in random order (``2 k <= total``): the
    distinct values of uniform draws with replacement, topped up until there are ``k`` (each
    draw is new with probability at least 1/2), then ``k`` of them at random. The process
    commutes with any relabelling of ``[0, total)``, so the result is a uniform ``k``-subset."""

    def distinct(v):  # np.unique, without its hash table (38 s against 2 s for 9e6 values)
        v = np.sort(v)
        return v[np.concatenate([[True], v[1:] != v[:-1]])]

    vals = distinct(rng.integers(0, total, size=k, dtype=np.int64))
    while len(vals) < k:
        more = rng.integers(0, total, size=2 * (k - len(vals)) + 8, dtype=np.int64)
        vals = distinct(np.concatenate([vals, more]))
    return vals[rng.permutation(len(vals))[:k]]


def _choose_distinct(rng, total: int, k: int) -> np.ndarray:
    """``k`` distinct int64 values in ``[0, total)``, uniform and in random order, in memory
    ``O(k)`` (``O(total)`` only when ``k > total / 2``, i.e. ``O(k)`` too).

    ``rng.choice(total, k, replace=False)`` (same numbers as before) for ``total <= _CHOICE_LIMIT``
    or ``k <= total // 50`` (its Floyd sampling, memory ``O(k)``); beyond, rejection with
    de-duplication when ``2 k <= total``, else the complement of a sparse draw of ``total - k``.
    """
    if k == 0:
        return np.zeros(0, np.int64)
    if total <= _CHOICE_LIMIT or k <= total // 50:
        return rng.choice(total, size=k, replace=False)
    if 2 * k <= total:
        return _distinct_draws(rng, total, k)
    keep = np.ones(total, bool)  # 1 byte per candidate, under 2 bytes per value returned
    keep[_choose_distinct(rng, total, total - k)] = False
    out = np.flatnonzero(keep)
    return out[rng.permutation(k)]


def _similar_pairs(rng, codes, n_req):
    """Distinct unordered same-class pairs (global indices, ``i < j`` in class order)."""
    order, counts, starts = _class_layout(codes)
    per_class = counts * (counts - 1) // 2
    total = sum(c * (c - 1) // 2 for c in counts.tolist())  # exact (Python ints)
    k = min(n_req, total)
    if n_req > total:
        _shortfall("similar pairs", n_req, total)
    lin = np.sort(_choose_distinct(rng, total, k))
    cum = np.cumsum(per_class)
    cls = np.searchsorted(cum, lin, side="right")
    local = lin - (cum[cls] - per_class[cls])
    i, j = _unrank_triu(local, counts[cls])
    a = order[starts[cls] + i]
    b = order[starts[cls] + j]
    out = np.stack([a, b], axis=1)
    return out[rng.permutation(k)]


def _dissimilar_pairs(rng, codes, n_req):
    """Distinct unordered pairs from different classes.

    Pairs are ranked by class pair ``(c, c')``, ``c < c'`` (upper-triangle order), then member of
    ``c``, then member of ``c'``. Unranking goes through the ``C`` blocks of a first class and the
    class-sorted positions, so memory is ``O(n + n_req)``, never ``O(C^2)`` (huge with many classes)
    nor ``O(total)`` (see :func:`_choose_distinct`).
    """
    order, counts, starts = _class_layout(codes)
    n = len(codes)
    end = starts + counts
    per_first = counts * (n - end)  # pairs whose lower class is c
    total = sum(c * (n - e) for c, e in zip(counts.tolist(), end.tolist()))  # exact (Python ints)
    k = min(n_req, total)
    if n_req > total:
        _shortfall("dissimilar pairs", n_req, total)
    lin = _choose_distinct(rng, total, k)
    cum = np.cumsum(per_first)
    ca = np.searchsorted(cum, lin, side="right")
    local = lin - (cum[ca] - per_first[ca])  # sum_{ca < c' < cb} n_ca n_c' + ra n_cb + rb
    cls_of_pos = np.repeat(np.arange(len(counts)), counts)
    cb = cls_of_pos[end[ca] + local // counts[ca]]
    ra, rb = np.divmod(local - counts[ca] * (starts[cb] - end[ca]), counts[cb])
    a = order[starts[ca] + ra]
    b = order[starts[cb] + rb]
    return np.stack([a, b], axis=1)


def _sample_positive(rng, order, counts, starts, cls_of_pos, pos, size):
    """For anchors at class-sorted positions ``pos``: a random other member of the same class."""
    c = cls_of_pos[pos]
    r = pos - starts[c]
    s = (rng.random(size) * (counts[c] - 1)).astype(np.int64)
    s = s + (s >= r)
    return starts[c] + s


def _sample_negative(rng, counts, starts, cls, size, n):
    """A random class-sorted position outside class ``cls``."""
    t = (rng.random(size) * (n - counts[cls])).astype(np.int64)
    return t + counts[cls] * (t >= starts[cls])


def _unique_rows_in_order(rows: np.ndarray) -> np.ndarray:
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def _sample_distinct(rng, draw, n_req, total, enumerate_all, name):
    """Distinct tuples: rejection with de-duplication when sparse, enumeration when dense."""
    if n_req > total:
        _shortfall(name, n_req, total)  # warn -> _sample_distinct -> sampler -> caller
        rows = enumerate_all()
        return rows[rng.permutation(len(rows))]
    if n_req == 0:
        return None
    if 2 * n_req > total:  # dense request: enumerate (size < 2 * n_req) and choose
        rows = enumerate_all()
        return rows[rng.choice(len(rows), size=n_req, replace=False)]
    rows = draw(n_req)
    rows = _unique_rows_in_order(rows)
    while len(rows) < n_req:  # acceptance >= 1/2 per draw, so this ends quickly
        more = draw(2 * (n_req - len(rows)) + 8)
        rows = _unique_rows_in_order(np.concatenate([rows, more]))
    return rows[:n_req]


# ----------------------------------------------------------------------------------------------------
# public samplers


def pairs(key, y, *, n_similar: int, n_dissimilar: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct similar (same-class) and dissimilar (different-class) index pairs.

    Pairs are unordered and distinct (sampled without replacement over all
    ``sum_c n_c (n_c - 1) / 2`` similar and ``sum_{c<c'} n_c n_c'`` dissimilar pairs).

    Args:
      key: PRNG key (``jax.random.key``) or int seed.
      y: labels, shape ``[n]``. Every label value is a class, ``-1`` included (metric-learn's
        ``Constraints`` treats negative labels as unlabeled); drop such points from ``y`` (and
        ``X``) to leave them out.
      n_similar: number of similar pairs wanted (>= 0).
      n_dissimilar: number of dissimilar pairs wanted (>= 0).

    Returns:
      ``(idx, pair_y)``: ``idx`` int32 ``[n_s + n_d, 2]`` (similar rows first, then dissimilar) and
      ``pair_y`` int32 ``[n_s + n_d]`` with ``+1`` for similar and ``-1`` for dissimilar. When fewer
      distinct pairs of a kind exist than asked, all of them are returned with a ``UserWarning``.

    Raises:
      ValueError: a kind of pair is requested and none can exist (no class with two members for
        similar pairs, a single class for dissimilar pairs), or both counts are zero.

    Example::

        idx, pair_y = pairs(jax.random.key(0), y, n_similar=100, n_dissimilar=100)
        X_pairs = X[idx]          # [200, 2, d], ready for ITML/SDML/MMC

    Reference: the constraint generation of metric-learn's ``Constraints.positive_negative_pairs``.
    """
    require_concrete("pairs", y)
    codes = check_labels(y, min_classes=1)
    n_similar = _check_count(n_similar, "n_similar")
    n_dissimilar = _check_count(n_dissimilar, "n_dissimilar")
    if n_similar + n_dissimilar == 0:
        raise ValueError("n_similar + n_dissimilar must be positive, got 0 and 0")
    counts = np.bincount(codes)
    if n_similar and not np.any(counts >= 2):
        raise ValueError("no similar pair can exist: every class in y has a single member")
    if n_dissimilar and len(counts) < 2:
        raise ValueError("no dissimilar pair can exist: y contains a single class")
    rng = _rng(key)
    sim = _similar_pairs(rng, codes, n_similar) if n_similar else np.zeros((0, 2), np.int64)
    dis = (
        _dissimilar_pairs(rng, codes, n_dissimilar) if n_dissimilar else np.zeros((0, 2), np.int64)
    )
    idx = np.concatenate([sim, dis]).astype(np.int32)
    pair_y = np.concatenate([np.ones(len(sim), np.int32), -np.ones(len(dis), np.int32)])
    return idx, pair_y


def triplets(key, y, *, n_triplets: int) -> np.ndarray:
    """Distinct relative constraints ``(a, b, c)``: ``y_a == y_b``, ``a != b``, ``y_c != y_a``.

    Each triplet states ``d(a, b) < d(a, c)``. Triplets are sampled uniformly (anchor class weighted by
    its number of valid triplets) and de-duplicated.

    Args:
      key: PRNG key or int seed.
      y: labels ``[n]``.
      n_triplets: number wanted (>= 1).

    Returns:
      int32 ``[n_triplets, 3]`` (fewer, with a ``UserWarning``, when fewer distinct triplets exist).

    Raises:
      ValueError: one class, or no class with two members.

    Example::

        t = triplets(jax.random.key(0), y, n_triplets=500); X[t]   # [500, 3, d]

    Reference: Schultz & Joachims, "Learning a distance metric from relative comparisons", NIPS 2003.
    """
    require_concrete("triplets", y)
    codes = check_labels(y, min_classes=2)
    n_req = check_positive_int(n_triplets, "n_triplets")
    n = len(codes)
    order, counts, starts = _class_layout(codes)
    weight = (counts - 1) * (n - counts)  # per anchor of class c
    # exact Python ints: sum_c n_c (n_c - 1) (n - n_c) wrapped around int64 for ~3.3e6 samples
    total = sum(c * (c - 1) * (n - c) for c in counts.tolist())
    if total == 0:
        raise ValueError("no triplet can exist: every class in y has a single member")
    rng = _rng(key)
    cls_of_pos = np.repeat(np.arange(len(counts)), counts)
    w_anchor = weight.astype(np.float64)[cls_of_pos]
    p_anchor = w_anchor / w_anchor.sum()

    def draw(size):
        pa = rng.choice(n, size=size, p=p_anchor)
        pb = _sample_positive(rng, order, counts, starts, cls_of_pos, pa, size)
        pc = _sample_negative(rng, counts, starts, cls_of_pos[pa], size, n)
        return np.stack([order[pa], order[pb], order[pc]], axis=1)

    def enumerate_all():
        out = []
        for c in np.flatnonzero(weight > 0):
            members = order[starts[c] : starts[c] + counts[c]]
            others = np.concatenate([order[: starts[c]], order[starts[c] + counts[c] :]])
            a, b = np.meshgrid(members, members, indexing="ij")
            keep = a != b
            ab = np.stack([a[keep], b[keep]], axis=1)
            ab_rep = np.repeat(ab, len(others), axis=0)
            c_rep = np.tile(others, len(ab))
            out.append(np.concatenate([ab_rep, c_rep[:, None]], axis=1))
        return np.concatenate(out)

    rows = _sample_distinct(rng, draw, n_req, total, enumerate_all, "triplets")
    return rows.astype(np.int32)


def quadruplets(key, y, *, n_quadruplets: int) -> np.ndarray:
    """Distinct quadruplets ``(a, b, c, d)``: ``y_a == y_b`` (``a != b``) and ``y_c != y_d``.

    Each states ``d(a, b) < d(c, d)`` (a similar pair should be closer than a dissimilar one). The similar
    pair and the dissimilar pair are drawn independently and uniformly over ordered pairs.

    Args:
      key: PRNG key or int seed.
      y: labels ``[n]``.
      n_quadruplets: number wanted (>= 1).

    Returns:
      int32 ``[n_quadruplets, 4]`` (fewer, with a ``UserWarning``, when fewer distinct ones exist).

    Raises:
      ValueError: one class, or no class with two members.

    Reference: Liu et al., "Metric learning from relative comparisons by minimizing squared residual"
    (LSML), ICDM 2012.
    """
    require_concrete("quadruplets", y)
    codes = check_labels(y, min_classes=2)
    n_req = check_positive_int(n_quadruplets, "n_quadruplets")
    n = len(codes)
    order, counts, starts = _class_layout(codes)
    # exact Python ints (their product, the total, is beyond int64 from ~6e4 samples)
    n_sim = sum(c * (c - 1) for c in counts.tolist())  # ordered similar pairs
    n_dis = n * n - sum(c * c for c in counts.tolist())  # ordered dissimilar pairs
    if n_sim == 0:
        raise ValueError("no quadruplet can exist: every class in y has a single member")
    total = n_sim * n_dis
    rng = _rng(key)
    cls_of_pos = np.repeat(np.arange(len(counts)), counts)
    w_sim = (counts - 1)[cls_of_pos].astype(np.float64)
    w_dis = (n - counts)[cls_of_pos].astype(np.float64)

    def draw(size):
        pa = rng.choice(n, size=size, p=w_sim / w_sim.sum())
        pb = _sample_positive(rng, order, counts, starts, cls_of_pos, pa, size)
        pc = rng.choice(n, size=size, p=w_dis / w_dis.sum())
        pd = _sample_negative(rng, counts, starts, cls_of_pos[pc], size, n)
        return np.stack([order[pa], order[pb], order[pc], order[pd]], axis=1)

    def enumerate_all():
        a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        a, b = a.ravel(), b.ravel()
        same = codes[a] == codes[b]
        sim = np.stack([a[same & (a != b)], b[same & (a != b)]], axis=1)
        dis = np.stack([a[~same], b[~same]], axis=1)
        return np.concatenate(
            [np.repeat(sim, len(dis), axis=0), np.tile(dis, (len(sim), 1))], axis=1
        )

    rows = _sample_distinct(rng, draw, n_req, total, enumerate_all, "quadruplets")
    return rows.astype(np.int32)


def chunklets(key, y, *, n_chunks: int, chunk_size: int = 2) -> np.ndarray:
    """Chunklets (small groups of same-class points) for RCA: a chunk id per sample.

    Each class ``c`` can hold ``floor(n_c / chunk_size)`` disjoint chunklets; ``n_chunks`` of these slots
    are chosen uniformly at random over all classes, and each chosen chunklet gets ``chunk_size``
    distinct random members of its class. Unlike metric-learn's ``RCA_Supervised`` this never fails when
    fewer chunklets can be formed: it returns all that exist, with a ``UserWarning``.

    Args:
      key: PRNG key or int seed.
      y: labels ``[n]`` (a single class is fine). Every label value is a class, ``-1`` included
        (metric-learn's ``Constraints`` treats negative labels as unlabeled); drop such points
        from ``y`` (and ``X``) to leave them out.
      n_chunks: number of chunklets wanted (>= 1).
      chunk_size: members per chunklet (>= 2).

    Returns:
      int32 ``[n]``: chunk id in ``0..n_formed-1`` per sample, ``-1`` for samples in no chunklet.

    Raises:
      ValueError: no class has ``chunk_size`` members.

    Reference: Bar-Hillel et al., "Learning a Mahalanobis metric from equivalence constraints", JMLR 2005.
    """
    require_concrete("chunklets", y)
    codes = check_labels(y, min_classes=1)
    n_chunks = check_positive_int(n_chunks, "n_chunks")
    chunk_size = check_positive_int(chunk_size, "chunk_size", minimum=2)
    order, counts, starts = _class_layout(codes)
    slots = counts // chunk_size
    total = int(slots.sum())
    if total == 0:
        raise ValueError(
            f"no chunklet of chunk_size={chunk_size} can be formed: the largest class has "
            f"{int(counts.max())} member(s)"
        )
    rng = _rng(key)
    if n_chunks > total:
        _shortfall("chunklets", n_chunks, total, stacklevel=3)
        n_chunks = total
    chosen = rng.choice(total, size=n_chunks, replace=False)
    per_class = np.bincount(
        np.searchsorted(np.cumsum(slots), chosen, side="right"), minlength=len(counts)
    )
    chunk_offset = np.concatenate([[0], np.cumsum(per_class)[:-1]])
    # random rank of each sample within its class
    perm = rng.permutation(len(codes))
    by_class = perm[np.argsort(codes[perm], kind="stable")]
    rank = np.empty(len(codes), np.int64)
    rank[by_class] = np.arange(len(codes)) - starts[codes[by_class]]
    c = codes
    in_chunk = rank < per_class[c] * chunk_size
    relabel = rng.permutation(n_chunks)
    ids = np.where(
        in_chunk, relabel[np.minimum(chunk_offset[c] + rank // chunk_size, n_chunks - 1)], -1
    )
    return ids.astype(np.int32)


# ----------------------------------------------------------------------------------------------------
# LMNN: target neighbours and impostors


def target_neighbors(X, y, *, k: int, block_size: int = 2048) -> np.ndarray:
    """The ``k`` nearest same-class neighbours of each point in input space (self excluded).

    Computed per class, in row blocks (memory ``O(block_size * max_class_size)``), in float64 on the
    input's float64 values, centred per class (a translation exact in float64, as of integer or
    dyadic data, leaves the result unchanged); exact ties are broken by the lower index.

    Args:
      X: ``[n, d]`` inputs.
      y: labels ``[n]``.
      k: neighbours per point (>= 1).
      block_size: rows per distance block.

    Returns:
      int32 ``[n, k]`` global indices, nearest first.

    Raises:
      ValueError: a class has ``<= k`` members (the message names the class and ``k``), bad ``X``/``y``.

    Example::

        targets = target_neighbors(X, y, k=3)   # X[targets] is [n, 3, d]

    Reference: Weinberger & Saul, "Distance metric learning for large margin nearest neighbor
    classification", JMLR 2009.
    """
    require_concrete("target_neighbors", X, y)
    # its checks only (the float32 cast lost the neighbours); computed in float64, so no overflow
    # (nor its RuntimeWarning from that discarded cast)
    with np.errstate(over="ignore"):
        check_array(X, "X", ndim=2, min_rows=1, min_features=1, allow_overflow=True)
    X = np.asarray(X, dtype=np.float64)
    y_arr = np.asarray(y)
    codes = check_labels(y_arr, X.shape[0], min_classes=1)
    k = check_positive_int(k, "k")
    block_size = check_positive_int(block_size, "block_size")
    classes = np.unique(y_arr)
    counts = np.bincount(codes)
    small = np.flatnonzero(counts <= k)
    if len(small):
        c = small[0]
        raise ValueError(
            f"class {classes.tolist()[c]!r} has {counts[c]} member(s) but k={k} target neighbours need at "
            f"least k + 1 = {k + 1} per class"
        )
    out = np.empty((X.shape[0], k), np.int64)
    for c in range(len(counts)):
        members = np.flatnonzero(codes == c)
        Xc = _centred64(X[members])
        e = _ranking_exponent(Xc)
        if e:
            Xc = np.ldexp(Xc, -e)  # exact; keeps the squares in range
        sq = np.sum(Xc * Xc, axis=1)
        for s in range(0, len(members), block_size):
            rows = slice(s, s + block_size)
            d2 = sq[rows, None] + sq[None, :] - 2.0 * (Xc[rows] @ Xc.T)
            d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            dk = np.take_along_axis(d2, part, axis=1)
            # argpartition keeps an arbitrary subset of the points tied at the k-th distance; where
            # such ties straddle the cut, take the lowest indices (a stable sort of those rows)
            tied = np.sum(d2 <= dk.max(axis=1, keepdims=True), axis=1) > k
            if np.any(tied):
                part[tied] = np.argsort(d2[tied], axis=1, kind="stable")[:, :k]
                dk = np.take_along_axis(d2, part, axis=1)
            sort = np.lexsort((part, dk), axis=1)
            out[members[rows]] = members[np.take_along_axis(part, sort, axis=1)]
    return out.astype(np.int32)


class Impostors(NamedTuple):
    """Fixed-shape impostor lists for LMNN.

    Attributes:
      idx: int32 ``[n, m]``: for row ``i`` the ``m`` nearest points of another class (in the metric of
        ``XL``), nearest first.
      valid: bool ``[n, m]``: ``idx[i, t]`` is an impostor candidate, i.e.
        ``||L(x_i - x_l)||^2 < max_j ||L(x_i - x_j)||^2 + margin`` over the targets ``j`` of ``i``.
        Invalid slots hold arbitrary indices (mask them).
      n_candidates: int32 ``[n]``: the true number of candidates of row ``i``; more than ``m`` means
        the list was truncated to the ``m`` nearest (the most violating) ones.
    """

    idx: jax.Array
    valid: jax.Array
    n_candidates: jax.Array


def _block_rows(n: int, block_size: int) -> tuple[int, int]:
    b = max(1, min(block_size, n))
    n_blocks = -(-n // b)
    return b, n_blocks


def _impostor_block_stats(XL, y, target_idx, rows, margin):
    """Squared distances ``[B, n]`` of rows to all points and the candidate mask."""
    xi = XL[rows]
    d2 = pairwise_sqeuclidean(xi, XL)
    t = XL[target_idx[rows]]  # [B, k, e]
    d_target = jnp.sum((xi[:, None, :] - t) ** 2, axis=-1)
    thresh = jnp.max(d_target, axis=1) + margin
    other = y[rows][:, None] != y[None, :]
    cand = other & (d2 < thresh[:, None])
    return d2, cand


def _check_impostor_inputs(XL, y, target_idx, margin, block_size):
    block_size = check_positive_int(block_size, "block_size")
    if not is_traced(margin):
        m = as_real(margin, "margin")
        if not np.isfinite(m):
            raise ValueError(f"margin must be finite, got {margin!r}")
    XL = check_array(XL, "XL", ndim=2, min_rows=1, min_features=1)
    if is_traced(y):
        y = jnp.asarray(y)
    else:
        y = jnp.asarray(check_labels(y, min_classes=1))  # its length is checked below, vs XL
    t = target_idx if is_traced(target_idx) else np.asarray(target_idx)
    if t.ndim != 2 or t.shape[0] != XL.shape[0]:
        raise ValueError(
            f"target_idx must have shape [n, k] with n = {XL.shape[0]}, got {tuple(t.shape)}"
        )
    if t.shape[1] == 0:
        raise ValueError(
            f"target_idx must have at least one column (k >= 1 target neighbours), got shape "
            f"{tuple(t.shape)}"
        )
    if not is_traced(target_idx):
        if t.dtype.kind not in "iu" or (t.size and (t.min() < 0 or t.max() >= XL.shape[0])):
            raise ValueError(f"target_idx must hold integer indices in [0, {XL.shape[0]})")
    target_idx = jnp.asarray(target_idx, jnp.int32)
    if y.shape[0] != XL.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels but XL has {XL.shape[0]} rows")
    return XL, y, target_idx, block_size


def impostors(
    XL,
    y,
    target_idx,
    *,
    margin: float = 1.0,
    max_impostors: int | None = None,
    block_size: int = 1024,
) -> Impostors:
    """Impostors of LMNN as a fixed-shape top-``m`` list with a validity mask (jittable).

    A point ``l`` with ``y_l != y_i`` is an impostor candidate of ``i`` when it invades the margin of at
    least one target neighbour ``j`` of ``i``:

        ||L(x_i - x_l)||^2 < max_j ||L(x_i - x_j)||^2 + margin.

    The LMNN hinge ``[margin + d(i, j) - d(i, l)]_+`` over ``(i, j, l)`` with ``l`` in the list and
    ``valid`` as a mask then contains every active triple (hinges of non-candidates are zero). Rows are
    processed in blocks of ``block_size`` with ``lax.map``, so memory is ``O(block_size * n)``, never
    ``n x n x d``.

    Args:
      XL: ``[n, e]`` transformed inputs ``X @ L.T``.
      y: labels ``[n]`` (integer codes when called under ``jit``).
      target_idx: int ``[n, k]`` from :func:`target_neighbors` (its range is checked for concrete
        inputs; under ``jit`` an index out of range is clamped, as JAX's gathers do).
      margin: the LMNN margin (1.0 in the paper); finite (``ValueError`` otherwise).
      max_impostors: list length ``m`` (static). ``None`` means no truncation,
        ``m = n - min_c n_c`` (needs concrete ``y``).
      block_size: rows per block (a static int >= 1; ``ValueError`` otherwise).

    Returns:
      :class:`Impostors` ``(idx [n, m], valid [n, m], n_candidates [n])``.

    Example::

        targets = target_neighbors(X, y, k=3)
        imp = jax.jit(impostors, static_argnames="max_impostors")(X @ L.T, y, targets, max_impostors=32)

    Reference: Weinberger & Saul, JMLR 2009, section 3 (active set of impostors).
    """
    XL, y, target_idx, block_size = _check_impostor_inputs(XL, y, target_idx, margin, block_size)
    n = XL.shape[0]
    if max_impostors is None:
        if is_traced(y):
            raise ValueError(
                "max_impostors must be given (a static int) when y is traced under jit"
            )
        counts = np.bincount(np.asarray(y))
        m = int(n - counts[counts > 0].min())
    else:
        m = check_positive_int(max_impostors, "max_impostors")
    m = max(1, min(m, n))
    b, n_blocks = _block_rows(n, block_size)
    starts = jnp.arange(n_blocks) * b

    def one_block(s):
        rows = jnp.minimum(s + jnp.arange(b), n - 1)
        d2, cand = _impostor_block_stats(XL, y, target_idx, rows, margin)
        score = jnp.where(cand, d2, jnp.inf)
        neg, idx = jax.lax.top_k(-score, m)
        return idx.astype(jnp.int32), jnp.isfinite(neg), jnp.sum(cand, axis=1).astype(jnp.int32)

    idx, valid, count = jax.lax.map(one_block, starts)
    return Impostors(idx.reshape(-1, m)[:n], valid.reshape(-1, m)[:n], count.reshape(-1)[:n])


def impostor_mask(XL, y, target_idx, *, margin: float = 1.0, block_size: int = 1024) -> jax.Array:
    """Dense form of :func:`impostors`: bool ``[n, n]``, ``mask[i, l]`` iff ``l`` is a candidate of ``i``.

    Simpler than the top-``m`` list but ``O(n^2)`` memory; suitable for a few thousand points.

    Args:
      XL: ``[n, e]`` transformed inputs.
      y: labels ``[n]``.
      target_idx: int ``[n, k]`` (range checked for concrete inputs; clamped under ``jit``).
      margin: LMNN margin.
      block_size: rows per block (a static int >= 1; ``ValueError`` otherwise).

    Returns:
      bool ``[n, n]``.
    """
    XL, y, target_idx, block_size = _check_impostor_inputs(XL, y, target_idx, margin, block_size)
    n = XL.shape[0]
    b, n_blocks = _block_rows(n, block_size)
    starts = jnp.arange(n_blocks) * b

    def one_block(s):
        rows = jnp.minimum(s + jnp.arange(b), n - 1)
        return _impostor_block_stats(XL, y, target_idx, rows, margin)[1]

    return jax.lax.map(one_block, starts).reshape(-1, n)[:n]


# ----------------------------------------------------------------------------------------------------
# k-NN triplets (SCML_Supervised)


@partial(jax.jit, static_argnames=("k_genuine", "k_impostor", "block_size"))
def _knn_genuine_impostor(X, codes, valid, *, k_genuine: int, k_impostor: int, block_size: int):
    """Nearest same-class (self excluded) and other-class neighbours of every row, in row blocks.

    ``valid`` ``[n]`` marks real rows: padding rows (bucketed ``n``) are never anyone's neighbour.
    Returns ``(genuine [n, k_genuine], genuine_valid, impostor [n, k_impostor], impostor_valid)``,
    nearest first, ties to the lower index (``lax.top_k`` is stable); a slot is invalid when the row
    has fewer candidates of that kind. Memory ``O(block_size * n)``.
    """
    n = X.shape[0]  # X is centred by the caller (in float64: see _centred64)
    b, n_blocks = _block_rows(n, block_size)
    cols = jnp.arange(n)

    def one_block(s):
        rows = jnp.minimum(s + jnp.arange(b), n - 1)
        d2 = pairwise_sqeuclidean(X[rows], X)
        same = codes[rows][:, None] == codes[None, :]
        genuine = jnp.where(same & valid[None, :] & (rows[:, None] != cols[None, :]), d2, jnp.inf)
        neg_g, idx_g = jax.lax.top_k(-genuine, k_genuine)
        other = ~same & valid[None, :]
        neg_i, idx_i = jax.lax.top_k(-jnp.where(other, d2, jnp.inf), k_impostor)
        return idx_g, jnp.isfinite(neg_g), idx_i, jnp.isfinite(neg_i)

    out = jax.lax.map(one_block, jnp.arange(n_blocks) * b)
    return tuple(a.reshape(n_blocks * b, -1)[:n] for a in out)


def knn_triplets(
    X, y, *, k_genuine: int = 3, k_impostor: int = 10, block_size: int = 1024
) -> np.ndarray:
    """Deterministic k-NN triplets: each point, its nearest same-class points, its nearest others.

    For every anchor ``a``, every one of its ``k_genuine`` nearest same-class neighbours ``b``
    (``a`` itself excluded) is paired with every one of its ``k_impostor`` nearest points ``c`` of
    another class, in input space (squared Euclidean distance):

        T = {(a, b, c) : b in N_genuine(a), c in N_impostor(a)},  |T| = n * k_genuine * k_impostor,

    each triplet stating ``d(a, b) < d(a, c)``. These are the LMNN-style triplets of SCML's supervised
    setting (metric-learn's ``Constraints.generate_knntriplets``): they concentrate on the local
    neighbourhoods that a k-NN classifier sees, unlike uniformly random triplets.

    Distances run jitted, in row blocks of ``block_size`` (memory ``O(block_size * n)``), through
    :func:`metriclearn.distances.pairwise_sqeuclidean` on inputs centred in float64 (a translation
    exact in float64, as of integer or dyadic data, leaves the result unchanged), in the default
    float dtype (float32 unless ``jax_enable_x64``); exact ties (integer data, for one) go to the
    lower index. Rows are ordered by anchor, then genuine rank, then impostor rank (nearest first).

    Shortfalls: an anchor whose class has ``n_c <= k_genuine`` members gets its ``n_c - 1`` genuine
    neighbours, and one with fewer than ``k_impostor`` points outside its class gets all of those; the
    triplets that exist are returned with a ``UserWarning`` naming the classes (the output shrinks).

    Args:
      X: ``[n, d]`` inputs (finite).
      y: labels ``[n]``, at least two classes. Every label value is a class, ``-1`` included
        (metric-learn's ``Constraints`` treats negative labels as unlabeled); drop such points
        from ``X`` and ``y`` to leave them out.
      k_genuine: same-class neighbours per anchor (>= 1); metric-learn's default 3.
      k_impostor: other-class neighbours per anchor (>= 1); metric-learn's default 10.
      block_size: rows per distance block (>= 1).

    Returns:
      int32 ``[n * k_genuine * k_impostor, 3]`` index triplets ``(anchor, positive, negative)``
      (fewer, with a ``UserWarning``, on a shortfall).

    Raises:
      ValueError: ``X`` not 2-D, empty or non-finite; ``y`` of the wrong length; a single class; every
        class a singleton (no triplet can exist); ``k_genuine``, ``k_impostor`` or ``block_size`` < 1.

    Example::

        t = knn_triplets(X, y, k_genuine=3, k_impostor=10)   # [n * 30, 3]
        T = X[t]                                             # [n * 30, 3, d], ready for SCML

    Reference: Shi, Bellet & Sha, "Sparse Compositional Metric Learning", AAAI 2014 (experimental
    setting); Weinberger & Saul, JMLR 2009 (target neighbours and impostors).
    """
    require_concrete("knn_triplets", X, y)
    # its checks only (see below): centred and scaled in float64 before the cast, so its own
    # float32 cast, discarded, may overflow silently
    with np.errstate(over="ignore"):
        check_array(X, "X", ndim=2, min_rows=1, min_features=1, allow_overflow=True)
    # centred in float64 before any float32 cast: X + 1e7 kept no digit of the neighbourhoods
    X = _centred64(X)
    y_arr = np.asarray(y)
    codes = check_labels(y_arr, X.shape[0], min_classes=2)
    k_genuine = check_positive_int(k_genuine, "k_genuine")
    k_impostor = check_positive_int(k_impostor, "k_impostor")
    block_size = check_positive_int(block_size, "block_size")
    n = X.shape[0]
    counts = np.bincount(codes)
    if counts.max() < 2:
        raise ValueError(
            "no k-NN triplet can exist: every class in y has a single member (a positive needs a "
            "second point of the anchor's class)"
        )
    kg = min(k_genuine, int(counts.max()) - 1)  # static list lengths; short rows are masked
    ki = min(k_impostor, n - int(counts.min()))
    # rows padded to a bucketed count (never neighbours; their own lists dropped), so that
    # cross-validation folds of slightly different sizes share one compiled program
    from metriclearn.convex._common import bucket_size, pad_rows

    # only the order of the distances is used: a power-of-two scale is exact and keeps squared
    # distances in range (float32 data x 1e20 gave inf - inf and no triplet at all)
    e = _ranking_exponent(X)
    if e:
        X = np.ldexp(X, -e)  # not a division: x / 2**127 can flush to 0
    X = jnp.asarray(X, float_dtype())
    size = bucket_size(n)
    Xp, valid = pad_rows(X, size)
    cp, _ = pad_rows(jnp.asarray(codes), size, fill=-1)
    gen, gen_ok, imp, imp_ok = (
        np.asarray(a)[:n]
        for a in _knn_genuine_impostor(
            Xp, cp, valid, k_genuine=kg, k_impostor=ki, block_size=block_size
        )
    )
    keep = gen_ok[:, :, None] & imp_ok[:, None, :]  # [n, kg, ki]
    a, j, m = np.nonzero(keep)  # C order: anchor, then genuine rank, then impostor rank
    out = np.stack([a, gen[a, j], imp[a, m]], axis=1).astype(np.int32)
    asked = n * k_genuine * k_impostor
    if len(out) < asked:
        classes = np.unique(y_arr).tolist()
        few_gen = [classes[c] for c in np.flatnonzero(counts <= k_genuine)]
        few_imp = [classes[c] for c in np.flatnonzero(n - counts < k_impostor)]
        why = []
        if few_gen:
            why.append(f"class(es) {few_gen[:5]} have <= k_genuine={k_genuine} members")
        if few_imp:
            why.append(f"class(es) {few_imp[:5]} have < k_impostor={k_impostor} other-class points")
        _shortfall(f"k-NN triplets ({'; '.join(why)})", asked, len(out), stacklevel=3)
    return out


# ----------------------------------------------------------------------------------------------------
# validation of pair constraints (public boundary of the pair learners)


def check_pairs(
    pairs, pair_y, *, require_both: bool = True, name: str = "pairs"
) -> tuple[jax.Array, np.ndarray]:
    """Validate pair constraints ``(pairs [n, 2, d], pair_y [n] in {-1, +1})`` at a public boundary.

    Args:
      pairs: ``[n, 2, d]`` point pairs (``n >= 1``, ``d >= 1``, finite).
      pair_y: ``[n]`` labels, ``+1`` similar and ``-1`` dissimilar (any numeric dtype).
      require_both: raise unless both kinds of pair are present.
      name: argument name for messages.

    Returns:
      ``(pairs, pair_y)`` as a floating ``jax.Array`` and an int32 NumPy array of ``+-1``.

    Raises:
      ValueError: wrong shape, empty, NaN/inf, labels outside ``{-1, +1}``, length mismatch, only one
        kind of pair (with ``require_both``).
    """
    require_concrete("check_pairs", pair_y)
    P = check_array(pairs, name, ndim=3)
    if P.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(P.shape)}); need at least one pair")
    if P.shape[1] != 2 or P.shape[2] == 0:
        raise ValueError(f"{name} must have shape [n, 2, d] with d >= 1, got {tuple(P.shape)}")
    if pair_y is None:
        raise ValueError("pair_y is required, got None")
    yv = np.asarray(pair_y)
    if yv.ndim != 1 or yv.shape[0] != P.shape[0]:
        raise ValueError(
            f"pair_y must have shape [{P.shape[0]}] to match {name} {tuple(P.shape)}, "
            f"got {tuple(yv.shape)}"
        )
    if yv.dtype.kind not in "iuf":  # "1" / "-1" strings, booleans, objects: no value is wrong
        raise ValueError(
            f"pair_y must be numeric with only -1 (dissimilar) and +1 (similar), got dtype "
            f"{yv.dtype} with values {list(dict.fromkeys(yv.tolist()))[:5]}"  # any dtype
        )
    if not np.all(np.isin(yv, (-1, 1))):
        bad = np.unique(yv[~np.isin(yv, (-1, 1))])[:5].tolist()
        raise ValueError(f"pair_y must contain only -1 (dissimilar) and +1 (similar), got {bad}")
    yv = yv.astype(np.int32)
    if require_both and (np.all(yv == 1) or np.all(yv == -1)):
        kind = "similar (+1)" if yv[0] == 1 else "dissimilar (-1)"
        raise ValueError(
            f"pair_y contains only {kind} pairs; both similar and dissimilar pairs are needed"
        )
    return P, yv
