"""Evaluation: k-NN classification, retrieval metrics (P@1, R-precision, MAP@R, Recall@K, NMI) and
pair-verification metrics (ROC AUC, EER, accuracy at a calibrated threshold).

Nearest neighbours are exact and chunked: query rows are processed in blocks, so memory stays bounded
by a few ``chunk_size x m`` distance blocks whatever the number of embeddings (never an ``n x n``
matrix). Two selections give the same neighbours. On CPU (``selection="host"``, the default there)
each block's distances are one jitted matmul and the nearest are picked on the host by a threshold
per query (from a sorted sample of its distances), one comparison per distance and a sort of the few
entries below the threshold, overlapped with the next block's matmul; on GPU/TPU
(``selection="device"``) the best ``k`` are merged across reference blocks with ``jax.lax.top_k``.
Ties in distance go to the reference with the lower index, so results are deterministic and
independent of the chunk sizes. Distances are computed in float32 at least (float16 / bfloat16
embeddings are upcast), in float64 when either set is float64. With ``mesh=`` (a 1-D
``jax.sharding.Mesh``) each query block is sharded over the devices (:mod:`metriclearn.parallel`
wraps this).

Example::

    from metriclearn import datasets, evaluation
    ds = datasets.load("digits")
    evaluation.knn_accuracy(ds.X[:1000], ds.y[:1000], ds.X[1000:], ds.y[1000:], k=3)   # ~0.97
    evaluation.retrieval_metrics(ds.X, ds.y)   # {'precision_at_1': ..., 'map_at_r': ..., 'nmi': ...}

References:
  Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020 (P@1, R-precision, MAP@R).
  Jegou, Douze, Schmid, "Product quantization for nearest neighbor search", TPAMI 2011 (Recall@K).
  Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 2006 (ROC, AUC).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from metriclearn import distances
from metriclearn._cache import reuse
from metriclearn._validation import (
    as_real,
    check_array,
    check_choice,
    check_comparable_labels,
    check_flags,
    check_labels,
    check_positive_int,
    check_same_dim,
    label_array,
    require_concrete,
)
from metriclearn.datasets import _seed_from

#: Recall@K reported by default (the K of "A Metric Learning Reality Check" on CUB / Cars).
RECALL_K_VALUES: tuple[int, ...] = (1, 2, 4, 8)

__all__ = [
    "accuracy_at_threshold",
    "knn_accuracy",
    "knn_predict",
    "retrieval_metrics",
    "roc_curve",
    "verification_metrics",
]

# metric names ranked by the squared-Euclidean matmul kernel (same order as Euclidean, finer ties)
_EUCLIDEAN_NAMES = ("euclidean", "sqeuclidean")
# names whose checks need no concrete data values (the rest are validated eagerly once)
_PLAIN_NAMES = ("euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski", "cosine")
_DEFAULT_BLOCK_ELEMENTS = 2**24  # distances held per block (64 MB in float32)


# --------------------------------------------------------------------------------------------------
# Chunked exact nearest neighbours
# --------------------------------------------------------------------------------------------------

SELECTIONS = ("auto", "host", "device")
_HOST_BLOCK_ELEMENTS = 2**25  # distances of one query block with host selection (128 MB float32)
_SAMPLE_STRIDE = 16  # every 16th reference goes into the threshold sample
_SAMPLE_Z = 3.0  # threshold margin in binomial standard deviations (misses are redone exactly)
_HOST_THREADS = max(1, min(8, os.cpu_count() or 1))  # threads of the host selection


# public distance function -> its name (the first name of each function in DISTANCES)
_DISTANCE_NAMES: dict[Callable, str] = {
    fn: name for name, fn in reversed(list(distances.DISTANCES.items()))
}


def _resolve_metric(metric, metric_kwargs) -> tuple[Any, tuple, dict]:
    """Return (dist, static_kw, array_kw) for the block kernel.

    ``dist`` is ``None`` for the matmul squared-Euclidean kernel, else a name or callable passed to
    :func:`metriclearn.distances.pairwise`; scalar keyword arguments are static, arrays are traced.
    """
    if metric_kwargs is not None and not isinstance(metric_kwargs, dict):
        raise ValueError(
            f"metric_kwargs must be a dict or None, got {type(metric_kwargs).__name__}"
        )
    kw = dict(metric_kwargs or {})
    if callable(metric) and not isinstance(metric, str):
        # a public distance function is its name: same kernel (matmul, centred data) either way
        try:
            metric = _DISTANCE_NAMES.get(metric, metric)
        except TypeError:  # an unhashable callable object: not one of ours
            pass
    if isinstance(metric, str) and metric == "cosine_similarity":  # would rank the farthest first
        raise ValueError(
            "metric 'cosine_similarity' is a similarity (larger is nearer); use 'cosine' "
            "(cosine distance) for nearest neighbours"
        )
    if isinstance(metric, str):
        if metric in _EUCLIDEAN_NAMES and not kw:
            return None, (), {}
    elif callable(metric):
        pass
    else:
        M = np.asarray(metric) if metric is not None else None
        if M is None or M.ndim != 2:
            raise ValueError(
                "metric must be a distance name, a paired distance function or a Mahalanobis matrix "
                f"M [d, d], got {type(metric).__name__}"
                + (f" of shape {M.shape}" if M is not None else "")
            )
        check_array(M, "metric", ndim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"metric (Mahalanobis M) must be square, got shape {M.shape}")
        if "M" in kw or "L" in kw:  # an M there was silently replaced by this one
            raise ValueError(
                "metric is a Mahalanobis matrix and metric_kwargs holds "
                f"{sorted(set(kw) & {'M', 'L'})} as well: give the matrix once"
            )
        kw["M"] = M
        metric = "mahalanobis"
    static_kw, array_kw = [], {}
    for name, value in kw.items():
        if isinstance(value, np.ndarray | jax.Array):
            array_kw[name] = jnp.asarray(value)
        else:
            static_kw.append((name, value))
    return metric, tuple(sorted(static_kw)), array_kw


def _check_traceable(fn, static_kw, array_kw, d: int) -> None:
    """A metric callable must be traceable by JAX: the search runs jitted. One that converts its
    arguments to NumPy (``scipy.spatial.distance``'s, an estimator's ``get_metric()``) failed there
    with ``pairwise``'s advice to call it outside ``jit``, which the user already did."""
    x = jax.ShapeDtypeStruct((d,), jnp.float32)
    try:
        jax.eval_shape(lambda a, b: fn(a, b, **dict(static_kw), **array_kw), x, x)
    except distances._HOST_ONLY_ERRORS as err:
        raise ValueError(
            f"metric {getattr(fn, '__name__', type(fn).__name__)!r} cannot be traced by JAX (it "
            "converts its arguments to NumPy or branches on their values), and the neighbour search "
            "runs jitted: pass a distance name, a jax.numpy function f(x [..., d], y [..., d]), or a "
            "Mahalanobis matrix M (for a fitted estimator, metric=est.get_mahalanobis_matrix())"
        ) from err
    except Exception:  # noqa: BLE001 - any other problem surfaces, with its own message, in the search
        return


def _block_distances(q, r, array_kw, dist, static_kw):
    if dist is None:
        return distances.pairwise_sqeuclidean(q, r)
    return distances.pairwise(dist, q, r, **dict(static_kw), **array_kw)


def _block_dist(q, q_idx, refs, array_kw, *, dist, static_kw, exclude_self):
    """Distances ``[bq, m]`` of one query block to every reference; a query's own row is ``+inf``."""
    d = _block_distances(q, refs, array_kw, dist, static_kw).astype(q.dtype)
    if exclude_self:
        own = q_idx[:, None] == jnp.arange(refs.shape[0], dtype=q_idx.dtype)[None, :]
        d = jnp.where(own, jnp.inf, d)
    return d


def _block_topk(q, q_idx, refs, ref_idx, ref_valid, array_kw, *, dist, static_kw, k, exclude_self):
    """Exact top-k (smallest distances, lower index first on ties) of one query block, on device.

    ``refs`` is ``[n_blocks, br, d]`` (zero-padded), ``ref_idx``/``ref_valid`` ``[n_blocks, br]``;
    the running best ``k`` are merged with each reference block by ``lax.top_k`` (stable).
    Returns ``(neg_dist [bq, k], idx [bq, k])``.
    """
    bq = q.shape[0]
    init = (jnp.full((bq, k), -jnp.inf, q.dtype), jnp.full((bq, k), -1, jnp.int32))

    def body(carry, xs):
        best_v, best_i = carry
        r, rid, rvalid = xs
        neg = 0.0 - _block_distances(q, r, array_kw, dist, static_kw)  # 0 - d: no -0.0
        bad = ~rvalid[None, :]
        if exclude_self:
            bad = bad | (q_idx[:, None] == rid[None, :])
        neg = jnp.where(bad, -jnp.inf, neg.astype(q.dtype))
        # running best first: it holds lower indices, so top_k's stable ties keep index order
        cand_v = jnp.concatenate([best_v, neg], axis=1)
        cand_i = jnp.concatenate([best_i, jnp.broadcast_to(rid[None, :], neg.shape)], axis=1)
        v, pos = jax.lax.top_k(cand_v, k)
        return (v, jnp.take_along_axis(cand_i, pos, axis=1)), None

    (v, i), _ = jax.lax.scan(body, init, (refs, ref_idx, ref_valid))
    return v, i


def _build_program(kind: str, mesh, dist, static_kw, k: int, exclude_self: bool):
    """The jitted block kernel: ``"dist"`` (:func:`_block_dist`) or ``"topk"`` (:func:`_block_topk`).

    With a mesh, the query block is sharded over its (single) axis and the references replicated:
    ``"dist"`` is jitted with these shardings (XLA partitions the matmul by rows), ``"topk"`` runs by
    ``shard_map`` so that each device merges its own rows (under plain ``jit`` XLA would all-gather the
    candidates and run ``top_k`` replicated).
    """
    if kind == "dist":
        fn = functools.partial(
            _block_dist, dist=dist, static_kw=static_kw, exclude_self=exclude_self
        )
    else:
        fn = functools.partial(
            _block_topk, dist=dist, static_kw=static_kw, k=k, exclude_self=exclude_self
        )
    if mesh is None:
        return jax.jit(fn)
    (axis,) = mesh.axis_names
    if kind == "dist":
        data, rep = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
        return jax.jit(fn, in_shardings=(data, data, rep, rep), out_shardings=data)
    return jax.jit(
        jax.shard_map(
            fn,
            mesh=mesh,
            in_specs=(P(axis), P(axis), P(), P(), P(), P()),
            out_specs=(P(axis), P(axis)),
            check_vma=False,  # the scan carry starts device-invariant
        )
    )


def _build_typed_program(kind: str, mesh, dist, typed_kw, k: int, exclude_self: bool):
    static_kw = tuple((name, value) for name, _, value in typed_kw)
    return _build_program(kind, mesh, dist, static_kw, k, exclude_self)


# one compiled program per (kind, mesh, metric, k) across calls; unhashable metric options build (and
# compile) for their call only
_cached_program = reuse(64)(_build_typed_program)


def _program(kind: str, mesh, dist, static_kw, k: int, exclude_self: bool):
    """The cached block kernel of :func:`_build_program`. The options' types are part of the key:
    ``p=True`` and ``p=1`` compare equal, and since ``p`` is checked while tracing, a cached ``True``
    program refused every later ``p=1`` call (and a cached ``1`` accepted ``True``)."""
    typed_kw = tuple((name, type(value), value) for name, value in static_kw)
    return _cached_program(kind, mesh, dist, typed_kw, k, exclude_self)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _check_mesh(mesh) -> int:
    """Number of devices of a 1-D mesh (``1`` for ``None``); ``ValueError`` otherwise."""
    if mesh is None:
        return 1
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh must be a jax.sharding.Mesh (see parallel.make_mesh) or None, got "
            f"{type(mesh).__name__}"
        )
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D (one data axis), got axes {mesh.axis_names}")
    others = sorted({d.process_index for d in mesh.devices.flat} - {jax.process_index()})
    if others:
        raise ValueError(
            f"mesh holds devices of other processes ({others}): evaluation runs on the arrays this "
            "process holds and reads its results back here, so give it a mesh of this process's "
            "devices, e.g. Mesh(np.array(jax.local_devices()), ('data',)) (the parallel.sharded_* "
            "helpers build one when mesh is None)"
        )
    return int(mesh.devices.size)


def _resolve_selection(selection: str, mesh) -> str:
    check_choice(selection, "selection", SELECTIONS)
    if selection != "auto":
        return selection
    devices = jax.devices() if mesh is None else list(mesh.devices.flat)
    return "host" if all(dv.platform == "cpu" for dv in devices) else "device"


def _thresholds(D: np.ndarray, k_rows: np.ndarray) -> np.ndarray:
    """Per row of a host distance block, a distance ``hi`` with (almost surely) ``>= k`` entries below.

    ``hi`` is read off a sorted strided sample (every ``_SAMPLE_STRIDE``-th column) at a rank safely
    above ``k * sample / m`` (``_SAMPLE_Z`` binomial standard deviations), so that a little more than
    ``k`` entries are ``<= hi``; :func:`_host_select` redoes the (rare) rows where fewer are.
    """
    b, m = D.shape
    stride = max(1, min(_SAMPLE_STRIDE, m // 256))
    S = D[:, ::stride].copy()
    S.sort(axis=1)
    s = S.shape[1]
    mu = k_rows * (s / m)
    j = np.minimum(np.minimum(k_rows, np.ceil(mu + _SAMPLE_Z * np.sqrt(mu) + 2.0)), s)
    return np.minimum(S[np.arange(b), j.astype(np.intp) - 1], np.finfo(D.dtype).max)


def _monotone_bits(vals: np.ndarray) -> np.ndarray:
    """float32 -> int32 with the same order (map ``-0.0`` to ``0.0`` first: they compare equal)."""
    bits = vals.view(np.int32)
    return np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)


def _select_rows(D, k_rows, hi, rows, offset, metric, on_row, refine=None) -> None:
    """:func:`_host_select` for the block rows ``rows`` (one thread's share)."""
    if refine is not None:  # the picks of a row may be re-ranked (_Refiner)
        on_row = functools.partial(_refined_call, on_row, refine, D, offset)
    big = np.finfo(D.dtype).max
    for r in rows:
        row, k = D[r], int(k_rows[r])
        cols = np.flatnonzero(row <= hi[r])  # one comparison per distance
        if cols.size < k:  # the sample threshold was too low: every finite entry
            cols = np.flatnonzero(row <= big)
            if cols.size < k:
                raise ValueError(f"metric {metric!r} produced infinite distances")
        vals = row[cols] + 0.0  # -0.0 -> 0.0 (on the host: XLA folds x + 0 to x)
        if vals.size and np.min(vals) == -np.inf:  # -inf sits below every threshold: only k checks
            raise ValueError(f"metric {metric!r} produced NaN or infinite distances")
        if D.dtype == np.float32:  # one int64 key: (distance bits, column)
            keys = (_monotone_bits(vals).astype(np.int64) << 32) | cols
            keys.sort()
            on_row(offset + r, keys[:k] & 0xFFFFFFFF)
        else:  # cols ascending + stable sort: ties by column
            on_row(offset + r, cols[np.argsort(vals, kind="stable")[:k]])


def _refined_call(on_row, refine, D, offset, i, cols) -> None:
    on_row(i, refine(i, D[i - offset], cols))


class _Refiner:
    """Re-ranks a row's nearest picks by distances computed from the differences, where the matmul
    identity cannot rank them.

    The block distances come from ``|q|^2 + |r|^2 - 2 q.r`` on the centred (and power-of-two scaled)
    data, with an error up to about ``gamma (|q|^2 + |r|^2)``: ``gamma = (d + 2) u`` (``u`` the unit
    roundoff) and the norms in ``M``'s form for Mahalanobis given ``M``; given ``L`` (``[k, d]``,
    applied in the kernel's precision first) ``gamma = (max(k, d) + 2) u`` and the norms of
    ``L x``. Data with one common centre keep it far below the distances (1000 + N(0, 1) is
    exact in float32); a cluster near 0 of spread 1e-3 next to one near 3000 does not. A pick whose
    squared distance is below ``1000`` times the bound (with ``|r|^2`` the largest among the row's
    picks) is in doubt, whatever the distances of the others: every reference up to twice the bound
    above ``min(k-th distance, 1000 bound)`` is re-ranked by its float64 distance from the original
    (not centred) rows, and the remaining picks follow in their order. The other rows cost one
    comparison (two with a far outlier among the references).
    """

    def __init__(self, Q, R, Qs, Rs, M, squared: bool, dtype, L=None) -> None:
        # once, not per re-ranked row
        self.M = None if M is None else np.asarray(M, np.float64)
        self.L = None if L is None else np.asarray(L, np.float64)
        self.Q, self.R, self.squared = Q, R, squared
        u = np.finfo(dtype).eps / 2
        d = Qs.shape[1]
        self.gamma = (d + 2) * u
        if self.L is not None:
            # the kernel ranks the mapped (centred) data L x by the matmul identity in k dimensions:
            # bounded, as for M = LᵀL, by the mapped norms. (The rounding of L x itself moves a
            # squared distance D² by about 2 D d u |L||x|, linear in D: far below 1e-3 D² on data
            # of one scale. Bounding it by the norms of |L||x| instead, squared, sent every row of
            # digits with a random L through the re-ranking, 3x slower.)
            zq, zr = Qs @ self.L.T, Rs @ self.L.T
            qn = np.einsum("ij,ij->i", zq, zq, dtype=np.float64)
            rn = np.einsum("ij,ij->i", zr, zr, dtype=np.float64)
            self.gamma = (max(self.L.shape[0], d) + 2) * u
        elif self.M is None:
            qn = np.einsum("ij,ij->i", Qs, Qs, dtype=np.float64)
            rn = np.einsum("ij,ij->i", Rs, Rs, dtype=np.float64)
        else:
            qn = np.abs(np.einsum("ij,jk,ik->i", Qs, self.M, Qs, dtype=np.float64))
            rn = np.abs(np.einsum("ij,jk,ik->i", Rs, self.M, Rs, dtype=np.float64))
        self.qn, self.rn = qn, rn
        self.tol = self.gamma * (qn + (rn.max() if rn.size else 0.0))  # a bound over every row

    def __call__(self, i: int, row: np.ndarray, cols: np.ndarray) -> np.ndarray:
        k = len(cols)
        d0, tol = float(row[cols[0]]), self.tol[i]  # the nearest pick: the most in doubt
        if not self.squared:
            d0 *= d0
        if not tol > 1e-3 * d0:  # the common case: one comparison
            return cols
        if k > 1:  # only the nearest pick in doubt (a duplicate neighbour): nothing to re-rank
            d1 = float(row[cols[1]])
            if (d1 if self.squared else d1 * d1) > (1e3 + 2.0) * tol:
                return cols
        # the bound over the row's picks: one far reference (an outlier) would otherwise send every
        # row through the re-ranking
        tol = self.gamma * (self.qn[i] + float(self.rn[cols].max()))
        if not tol > 1e-3 * d0:
            return cols
        dk = float(row[cols[k - 1]])
        if not self.squared:
            dk *= dk
        lim = min(dk, 1e3 * tol) + 2.0 * tol
        if lim < dk:  # only the picks below lim are in doubt (a prefix: cols is in computed order)
            n_doubt = int(
                np.searchsorted(row[cols], lim if self.squared else np.sqrt(lim), "right")
            )
            if n_doubt < 2:
                return cols
            cand, rest = cols[:n_doubt], cols[n_doubt:]
        else:  # every pick, and the references that may come before the k-th
            sq = row.astype(np.float64) if self.squared else np.square(row, dtype=np.float64)
            cand, rest = np.flatnonzero(sq <= lim), cols[:0]
        diff = self.Q[i].astype(np.float64) - self.R[cand].astype(np.float64, copy=False)
        if self.L is not None:
            z = diff @ self.L.T
            exact = np.einsum("ij,ij->i", z, z)
        elif self.M is None:
            exact = np.einsum("ij,ij->i", diff, diff)
        else:
            exact = np.einsum("ij,jk,ik->i", diff, self.M, diff)
        return np.concatenate([cand[np.lexsort((cand, exact))], rest])[:k]


def _host_select(
    D: np.ndarray, k_rows: np.ndarray, offset: int, metric, on_row, refine=None
) -> None:
    """Exact sorted nearest neighbours of each row of a host distance block ``D [b, m]``.

    Calls ``on_row(offset + i, cols)`` for each row ``i``, ``cols`` the column indices of the
    ``k_rows[i]`` smallest entries of ``D[i]`` in increasing (distance, index) order; ``+inf`` entries
    (excluded pairs) are never selected. The work per distance is one comparison with the row's
    threshold (:func:`_thresholds`); only the entries below it, a little more than ``k``, are sorted.
    A row whose threshold keeps fewer than ``k`` entries is redone with every finite entry, so the
    result is exact whatever the sample. Large blocks are split over threads (NumPy's comparisons
    and sorts release the GIL); ``on_row`` is called from them, for distinct rows.
    """
    b, m = D.shape
    if np.isnan(D.max()):  # max propagates NaN
        raise ValueError(f"metric {metric!r} produced NaN distances")
    hi = _thresholds(D, k_rows)
    n_threads = min(_HOST_THREADS, max(1, b * m // 2**20), b)
    if n_threads == 1:
        _select_rows(D, k_rows, hi, range(b), offset, metric, on_row, refine)
        return
    with ThreadPoolExecutor(n_threads) as pool:
        parts = [range(t, b, n_threads) for t in range(n_threads)]
        args = (D, k_rows, hi)
        futures = [
            pool.submit(_select_rows, *args, rows, offset, metric, on_row, refine) for rows in parts
        ]
        for f in futures:
            f.result()


def _nearest(
    Q,
    R,
    *,
    k,
    metric,
    metric_kwargs,
    exclude_self,
    chunk_size,
    ref_chunk_size,
    selection,
    mesh,
    on_row,
    names=("queries", "references"),
):
    """Exact nearest neighbours of every query row in ``R``, in blocks of query rows.

    Calls ``on_row(i, cols)`` for every query row ``i``: ``cols`` (``np.ndarray``, at least ``k[i]``
    entries) lists the references nearest to query ``i`` in increasing (distance, index) order.
    ``k`` is an int or one int per query row. ``on_row`` may be called from several threads (for
    distinct rows). ``names`` name ``Q`` and ``R`` in error messages.

    ``selection="host"``: each query block's distances to all references are one jitted matmul
    (``[chunk_size, m]``, sharded by query rows over ``mesh``), the selection is :func:`_host_select`
    on the host, and the next block's matmul is dispatched before the current block is selected,
    so the two overlap. ``selection="device"``: the running top-``k`` merge of :func:`_block_topk`
    over reference blocks of ``ref_chunk_size`` rows (per-device rows with ``mesh``).
    """
    dist, static_kw, array_kw = _resolve_metric(metric, metric_kwargs)
    n_dev = _check_mesh(mesh)
    selection = _resolve_selection(selection, mesh)
    n, m, d = Q.shape[0], R.shape[0], Q.shape[1]
    if callable(dist):
        _check_traceable(dist, static_kw, array_kw, d)
    Q_np, R_np = np.asarray(Q), np.asarray(R)
    # one dtype for both sets, at least float32: float16 / bfloat16 distances overflow (|x|^2 > 65504
    # is +inf in float16) or round most distances into ties
    dtype = np.float64 if np.float64 in (Q_np.dtype, R_np.dtype) else np.float32
    Q_np, R_np = Q_np.astype(dtype, copy=False), R_np.astype(dtype, copy=False)
    Q_raw, R_raw = Q_np, R_np
    if dist is None or dist in (*_EUCLIDEAN_NAMES, "mahalanobis"):
        # Both rank by |q|^2 + |r|^2 - 2 q.r (a matmul), which cancels catastrophically in float32
        # for data far from the origin (1000 + N(0, 1): a third of the 1-NN wrong). They are
        # translation invariant: shift both sets by the references' mean (taken in float64), rounded
        # to integers so that data with exact ties (integer grids) keep them. (A point far from the
        # mean is then held to the float's spacing at its distance from it: _Refiner re-ranks the
        # rows where that matters.)
        center = np.round(R_np.mean(axis=0, dtype=np.float64))
        Q_np = (Q_np - center).astype(Q_np.dtype)
        R_np = (R_np - center).astype(R_np.dtype)
        # Only the order of the distances is used: scaling both sets by a power of two is exact
        # and keeps |x|^2 in range (points 4e19 apart overflowed float32's squares into inf - inf).
        e = distances._ranking_exponent(Q_np, R_np)
        if e:  # in float64 (exact), since 2**128 is inf in float32
            Q_np = np.ldexp(Q_np.astype(np.float64), -e).astype(Q_np.dtype)
            R_np = np.ldexp(R_np.astype(np.float64), -e).astype(R_np.dtype)
    if dist is not None and (array_kw or dist not in _PLAIN_NAMES):
        if isinstance(dist, str) and dist in distances._PROBABILITY:  # every row, not only two
            distances._check_prob(Q_np, names[0])
            distances._check_prob(R_np, names[1])
        # the other value checks of the distance (PSD M, ...) need concrete arrays: run them once
        # here; names, p and other static options are checked again while tracing.
        distances.pairwise(dist, Q_np[:2], R_np[:2], **dict(static_kw), **array_kw)
    refine = None
    if selection == "host" and (dist is None or dist in (*_EUCLIDEAN_NAMES, "mahalanobis")):
        kw_static = dict(static_kw)
        squared = dist in (None, "sqeuclidean") or bool(kw_static.get("squared", False))
        M = array_kw.get("M") if dist == "mahalanobis" else None
        L = array_kw.get("L") if dist == "mahalanobis" else None
        # the precision the kernel runs at (float32 for float64 data without jax_enable_x64)
        kernel_dtype = jax.dtypes.canonicalize_dtype(Q_np.dtype)
        refine = _Refiner(Q_raw, R_raw, Q_np, R_np, M, squared, kernel_dtype, L)
    k_rows = np.broadcast_to(np.asarray(k, dtype=np.int64), (n,))
    K = int(k_rows.max())
    if ref_chunk_size is not None:
        check_positive_int(ref_chunk_size, "ref_chunk_size")
    if chunk_size is None:
        chunk_size = max(1, _HOST_BLOCK_ELEMENTS // m) if selection == "host" else 1024 * n_dev
    # block sizes are rounded up (rows padded and masked) so nearby sizes share one compiled shape
    bq = _round_up(min(n, check_positive_int(chunk_size, "chunk_size")), 32 * n_dev)
    rep = None if mesh is None else NamedSharding(mesh, P())
    data = None if mesh is None else NamedSharding(mesh, P(mesh.axis_names[0]))
    array_kw = jax.device_put(array_kw, rep)

    def query_block(start):
        q = Q_np[start : start + bq]
        if q.shape[0] < bq:  # pad the last block: one compiled shape
            q = np.pad(q, ((0, bq - q.shape[0]), (0, 0)))
        q_idx = np.arange(start, start + bq, dtype=np.int32)
        return (q, q_idx) if mesh is None else jax.device_put((q, q_idx), data)

    starts = range(0, n, bq)
    if selection == "host":
        refs = jax.device_put(R_np, rep)
        block_dist = _program("dist", mesh, dist, static_kw, 0, bool(exclude_self))
        pending = block_dist(*query_block(0), refs, array_kw)
        for start in starts:
            D, stop = pending, min(start + bq, n)
            if stop < n:  # dispatch the next matmul now: it runs while this block is selected
                pending = block_dist(*query_block(stop), refs, array_kw)
            D = np.asarray(D)[: stop - start]
            if D.dtype not in (np.float32, np.float64):
                D = D.astype(np.float32)
            _host_select(D, k_rows[start:stop], start, metric, on_row, refine)
        return
    if ref_chunk_size is None:
        ref_chunk_size = max(4096, _DEFAULT_BLOCK_ELEMENTS // (bq // n_dev))
    br = _round_up(min(m, check_positive_int(ref_chunk_size, "ref_chunk_size")), 128)
    n_rb = -(-m // br)
    # padding on the host (NumPy): jnp.pad would compile once per distinct shape
    refs = jax.device_put(np.pad(R_np, ((0, n_rb * br - m), (0, 0))).reshape(n_rb, br, d), rep)
    ref_idx = jax.device_put(np.arange(n_rb * br, dtype=np.int32).reshape(n_rb, br), rep)
    ref_valid = jax.device_put((np.arange(n_rb * br) < m).reshape(n_rb, br), rep)
    block_topk = _program("topk", mesh, dist, static_kw, K, bool(exclude_self))
    for start in starts:
        stop = min(start + bq, n)
        v, idx = block_topk(*query_block(start), refs, ref_idx, ref_valid, array_kw)
        if not np.all(np.isfinite(np.asarray(v)[: stop - start])):
            raise ValueError(f"metric {metric!r} produced NaN or infinite distances")
        for r, cols in enumerate(np.asarray(idx)[: stop - start]):
            on_row(start + r, cols)


# --------------------------------------------------------------------------------------------------
# Labels of two arrays compared with each other
# --------------------------------------------------------------------------------------------------


def _exact_in(y: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value of the numeric label array ``y`` is exactly representable in float ``dtype``."""
    if y.dtype.kind not in "iu" or y.size == 0:
        return True
    bound = 2 ** (np.finfo(dtype).nmant + 1)
    return -bound <= int(y.min()) and int(y.max()) <= bound


def _comparable_labels(
    a: np.ndarray, b: np.ndarray, name_a: str, name_b: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` in forms whose ``==`` and joint ``np.unique`` are exact; ``ValueError`` if none is.

    Bytes never equal str (``b"a" != "a"``), so mixing them is refused like numbers and strings.
    Integer labels that NumPy would promote to a float that cannot hold them (``uint64`` with ``int64``,
    or ``int64`` beyond ``2**53`` with ``float64``) would merge distinct classes: they are compared as
    Python numbers (object arrays) instead.
    """
    check_comparable_labels(a, b, name_a, name_b)  # numbers, str and bytes never compare equal
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf" and a.dtype != b.dtype:
        common = np.result_type(a.dtype, b.dtype)
        if common.kind == "f" and not (_exact_in(a, common) and _exact_in(b, common)):
            return a.astype(object), b.astype(object)
    return a, b


# --------------------------------------------------------------------------------------------------
# k-NN classification
# --------------------------------------------------------------------------------------------------


def knn_predict(
    train_X,
    train_y,
    test_X,
    *,
    k: int = 3,
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
    selection: str = "auto",
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Predict labels of ``test_X`` by a uniform majority vote of the ``k`` nearest training rows.

    Uniform majority vote; a tie between classes goes to the smallest class label, as in scikit-learn's
    ``KNeighborsClassifier``. Among training rows at equal (computed) distance the lower index is
    taken first (deterministic, chunk-independent); under a Mahalanobis ``M`` with inexact entries,
    distances equal in exact arithmetic may differ by rounding, which then decides. The prediction therefore equals scikit-learn's whenever the
    ``k``-th nearest distance is strictly below the ``(k+1)``-th (duplicates and vote ties included);
    when several rows tie *at* the ``k``-th distance, scikit-learn's pick depends on its heap or tree
    traversal order (neither by index nor stable), so the two may differ there.

    Args:
      train_X: ``[n, d]`` training features.
      train_y: ``[n]`` training labels (any sortable dtype).
      test_X: ``[m, d]`` features to classify.
      k: number of neighbours, ``1 <= k <= n``.
      metric: a name of :func:`metriclearn.distances.pairwise` (``"euclidean"``, ``"manhattan"``,
        ``"chebyshev"``, ``"minkowski"`` with ``metric_kwargs={"p": 3}``, ``"cosine"``, ...), a paired
        distance function ``f(x [..., d], y [..., d]) -> [...]``, or a Mahalanobis matrix ``M [d, d]``.
      metric_kwargs: keyword arguments of the metric.
      chunk_size: test rows per block (default: ~32M distances per block).
      selection: how the nearest are picked, see :func:`retrieval_metrics`.
      mesh: optional 1-D ``jax.sharding.Mesh``: each block of test rows is sharded over its devices
        (see :func:`metriclearn.parallel.sharded_knn_predict`). Same result.

    Returns:
      ``np.ndarray [m]`` predicted labels, same dtype as ``train_y``.

    Example:
      >>> knn_predict(np.array([[0.], [1.], [10.]]), np.array([0, 0, 1]), np.array([[0.4], [9.]]), k=1)
      array([0, 1])
    """
    require_concrete("knn_predict", train_X, train_y, test_X)
    train_X = check_array(train_X, "train_X", ndim=2, min_rows=1, min_features=1)
    test_X = check_array(test_X, "test_X", ndim=2, min_rows=1)
    check_same_dim(train_X, test_X, "train_X", "test_X")
    codes = check_labels(train_y, train_X.shape[0], name="train_y", min_classes=1)
    classes = np.unique(np.asarray(train_y))
    k = check_positive_int(k, "k")
    if k > train_X.shape[0]:
        raise ValueError(
            f"k={k} is larger than the number of training samples ({train_X.shape[0]})"
        )
    codes = np.asarray(codes, dtype=np.int64)
    pred = np.empty(test_X.shape[0], dtype=np.int64)

    def vote(i, cols):  # majority; ties -> the smallest code (argmax takes the first maximum)
        pred[i] = np.argmax(np.bincount(codes[cols[:k]]))

    _nearest(
        test_X,
        train_X,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        exclude_self=False,
        chunk_size=chunk_size,
        ref_chunk_size=None,  # bounded blocks (the whole training set per block: chunk_size x n)
        selection=selection,
        mesh=mesh,
        on_row=vote,
        names=("test_X", "train_X"),
    )
    return classes[pred]


def knn_accuracy(
    train_X,
    train_y,
    test_X,
    test_y,
    *,
    k: int = 3,
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
    selection: str = "auto",
    mesh: Mesh | None = None,
) -> float:
    """Accuracy of the ``k``-nearest-neighbour classifier (see :func:`knn_predict` for the tie rules).

    :math:`\\text{acc} = \\frac{1}{m}\\sum_i [\\hat y_i = y_i]` with :math:`\\hat y_i` the majority label
    of the ``k`` training rows nearest to test row ``i`` under ``metric``.

    Args:
      train_X: ``[n, d]``; train_y: ``[n]``; test_X: ``[m, d]``; test_y: ``[m]``.
      k, metric, metric_kwargs, chunk_size, selection, mesh: as :func:`knn_predict`.

    Returns:
      Python float in ``[0, 1]``.

    Example:
      >>> from metriclearn import datasets
      >>> ds = datasets.load("iris")
      >>> knn_accuracy(ds.X[::2], ds.y[::2], ds.X[1::2], ds.y[1::2], k=3) > 0.9
      True

    Reference: Cover and Hart, "Nearest neighbor pattern classification", IEEE Trans. IT, 1967.
    """
    require_concrete("knn_accuracy", train_X, train_y, test_X, test_y)
    n_test = np.shape(test_X)[0] if np.ndim(test_X) else 0
    test_y = label_array(test_y, "test_y")
    if test_y.shape[0] != n_test:
        raise ValueError(
            f"test_y must be 1-D with one label per row of test_X ({n_test}), got shape {test_y.shape}"
        )
    _comparable_labels(label_array(train_y, "train_y"), test_y, "train_y", "test_y")
    pred = knn_predict(
        train_X,
        train_y,
        test_X,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        chunk_size=chunk_size,
        selection=selection,
        mesh=mesh,
    )
    pred, test_y = _comparable_labels(pred, test_y, "train_y", "test_y")
    return float(np.mean(pred == test_y))


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


def _retrieval_row(cols, q_code, R, r_codes, k_values, kmax) -> list:
    """P@1, R-precision, AP@R and hit@k of one query from its sorted neighbours ``cols``.

    ``cols`` holds at least ``max(R, kmax)`` references (``kmax = max(k_values)``); ``p_j`` (0-based) are the positions
    of those among the first ``R`` that share the query's code: R-precision ``= #{p_j} / R`` and
    ``AP@R = 1/R sum_j (j + 1) / (p_j + 1)``.
    """
    match = r_codes[cols[: max(R, kmax)]] == q_code
    pos = np.flatnonzero(match[:R])
    safe_R = max(R, 1)
    ap = float(np.sum(np.arange(1, pos.size + 1) / (pos + 1.0))) / safe_R
    first = int(np.argmax(match)) if match.any() else len(match)  # first relevant position
    return [float(match[0]), pos.size / safe_R, ap, *[float(first < kk) for kk in k_values]]


def _kmeans_nmi(X: np.ndarray, labels: np.ndarray, seed: int, n_init: int) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    n_clusters = len(np.unique(labels))
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    clusters = km.fit_predict(np.asarray(X, dtype=np.float64))
    return float(normalized_mutual_info_score(labels, clusters))


def _check_retrieval_inputs(embeddings, labels, ref_embeddings, ref_labels):
    """Validate query / reference embeddings and labels for retrieval.

    Returns:
      ``(Q, q_labels, R, r_labels)``; ``R`` is None when there is no reference set (then
      ``r_labels is q_labels``).
    """
    Q = check_array(embeddings, "embeddings", ndim=2, min_rows=1, min_features=1)
    q_labels = label_array(labels, "labels")
    if q_labels.shape[0] != Q.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per row of embeddings ({Q.shape[0]}), got shape "
            f"{q_labels.shape}"
        )
    check_labels(q_labels, Q.shape[0], name="labels", min_classes=1)
    if ref_embeddings is None:
        if ref_labels is not None:
            raise ValueError("ref_labels given without ref_embeddings")
        R, r_labels = None, q_labels
    else:
        R = check_array(ref_embeddings, "ref_embeddings", ndim=2, min_rows=1)
        check_same_dim(Q, R, "embeddings", "ref_embeddings")
        if ref_labels is None:
            raise ValueError("ref_labels is required with ref_embeddings")
        r_labels = label_array(ref_labels, "ref_labels")
        if r_labels.shape[0] != R.shape[0]:
            raise ValueError(
                f"ref_labels must be 1-D with one label per row of ref_embeddings ({R.shape[0]}), "
                f"got shape {r_labels.shape}"
            )
        check_labels(r_labels, R.shape[0], name="ref_labels", min_classes=1)
        q_labels, r_labels = _comparable_labels(q_labels, r_labels, "labels", "ref_labels")
    return Q, q_labels, R, r_labels


def retrieval_metrics(
    embeddings,
    labels,
    ref_embeddings=None,
    ref_labels=None,
    *,
    k_values: Sequence[int] = RECALL_K_VALUES,
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    nmi: bool = True,
    seed=0,
    kmeans_n_init: int = 3,
    chunk_size: int | None = None,
    ref_chunk_size: int | None = None,
    selection: str = "auto",
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    r"""Retrieval metrics of labelled embeddings, as in "A Metric Learning Reality Check".

    Each query ranks the references by distance (exact, chunked; distance ties by lower index). With
    :math:`R_q` the number of references sharing the query's label (not counting the query itself when
    the queries are the references) and :math:`\mathrm{rel}_q(i)` whether the i-th neighbour shares it:

    - ``precision_at_1`` = mean :math:`\mathrm{rel}_q(1)`;
    - ``r_precision`` = mean :math:`\frac{1}{R_q}\sum_{i\le R_q}\mathrm{rel}_q(i)`;
    - ``map_at_r`` = mean :math:`\frac{1}{R_q}\sum_{i\le R_q} P_q(i)\,\mathrm{rel}_q(i)` with
      :math:`P_q(i)` the precision among the first ``i``;
    - ``recall_at_k`` = ``{k: mean [any of the first k is relevant]}`` (Recall@K of the retrieval
      literature);
    - ``nmi`` = normalized mutual information (scikit-learn, arithmetic mean) between the labels and a
      k-means clustering of the query embeddings into as many clusters as labels (scikit-learn
      ``KMeans(n_init=kmeans_n_init, random_state=seed)``).

    Queries whose label has no reference (:math:`R_q = 0`) are left out of the averages, as
    pytorch-metric-learning's ``AccuracyCalculator`` does; ``n_queries`` says how many were used.
    These match ``AccuracyCalculator(k="max_bin_count")``.

    Args:
      embeddings: ``[n, d]`` query embeddings.
      labels: ``[n]`` query labels.
      ref_embeddings: ``[m, d]`` reference embeddings, or None: the queries are their own references and
        each query is excluded from its own neighbours.
      ref_labels: ``[m]`` reference labels (required with ``ref_embeddings``).
      k_values: the ``k`` of Recall@K.
      metric: ``"euclidean"`` (default), ``"cosine"``, or any name / paired function of
        :func:`metriclearn.distances.pairwise` (with ``metric_kwargs``), or a Mahalanobis matrix ``M``.
      metric_kwargs: keyword arguments of the metric.
      nmi: also cluster and compute ``nmi`` (needs >= 2 query labels).
      seed: int or ``jax.random`` key for k-means.
      kmeans_n_init: k-means restarts.
      chunk_size: query rows per block (default: ~32M distances per block with host selection,
        1024 with device selection). Memory is about three ``chunk_size x m`` distance blocks.
      ref_chunk_size: reference rows per block of the device selection (default
        ``max(4096, 2**24 // chunk_size)``); unused by the host selection.
      selection: how the ``K = max(max R, max k_values)`` nearest of each query are found, exactly
        and with the same (distance, index) order either way. ``"host"``: one matmul per query block
        on the device, then on the host a threshold per query from a sorted sample of the distances,
        one comparison per distance, and a sort of the few entries below the threshold only (on CPU
        about 1-3x the time of the distance matmuls alone). ``"device"``: a running
        ``jax.lax.top_k`` merge over reference blocks (for GPU/TPU, where ``top_k`` is fast; on CPU
        it is several times slower for large classes). ``"auto"`` (default): host on CPU devices,
        device otherwise.
      mesh: optional 1-D ``jax.sharding.Mesh``: each query block is sharded over its devices (the
        references replicated); same results (see :func:`metriclearn.parallel.make_mesh`).

    Returns:
      dict with ``precision_at_1``, ``r_precision``, ``map_at_r`` (floats), ``recall_at_k``
      (``{k: float}``), ``nmi`` (float, if requested), ``n_queries`` (int).

    Example:
      >>> from metriclearn import datasets
      >>> ds = datasets.load("iris")
      >>> m = retrieval_metrics(ds.X, ds.y)
      >>> sorted(m)
      ['map_at_r', 'n_queries', 'nmi', 'precision_at_1', 'r_precision', 'recall_at_k']
    """
    check_flags(nmi=nmi)
    require_concrete("retrieval_metrics", embeddings, labels, ref_embeddings, ref_labels)
    Q, q_labels, R, r_labels = _check_retrieval_inputs(
        embeddings, labels, ref_embeddings, ref_labels
    )
    self_ref = R is None
    if isinstance(k_values, str | bytes) or np.ndim(k_values) != 1:
        raise ValueError(
            f"k_values must be a sequence of integers, e.g. (1, 2, 4, 8), got {k_values!r}"
        )
    k_values = tuple(check_positive_int(kk, "k_values") for kk in k_values)
    try:
        classes, codes = np.unique(np.concatenate([q_labels, r_labels]), return_inverse=True)
    except TypeError as err:
        raise ValueError(f"labels and ref_labels are not comparable: {err}") from err
    q_codes = codes[: len(q_labels)].astype(np.int32)
    r_codes = codes[len(q_labels) :].astype(np.int32)
    counts = np.bincount(r_codes, minlength=len(classes))
    r_counts = counts[q_codes] - (1 if self_ref else 0)
    n_avail = (Q.shape[0] - 1) if self_ref else R.shape[0]
    if n_avail < 1:
        raise ValueError("embeddings needs at least 2 rows when it is its own reference set")
    valid = r_counts > 0
    if not valid.any():
        raise ValueError(
            "no query has a reference with the same label (every class of labels has a single "
            "member or is missing from ref_labels); R-precision and MAP@R need R >= 1"
        )
    K = max([int(r_counts.max()), *k_values])
    if K > n_avail:
        raise ValueError(
            f"k_values asks for {max(k_values)} neighbours but the reference set has only {n_avail} "
            f"({'embeddings minus the query itself' if self_ref else 'ref_embeddings'})"
        )
    if nmi:  # checked before the neighbour search, not after it
        if len(np.unique(q_codes)) < 2:
            raise ValueError("labels must contain at least 2 classes for nmi (or pass nmi=False)")
        kmeans_n_init = check_positive_int(kmeans_n_init, "kmeans_n_init")
        kmeans_seed = _seed_from(seed, "seed")  # in [0, 2**32), as scikit-learn's KMeans needs

    kmax = max(k_values, default=1)
    k_rows = np.maximum(r_counts, kmax)
    per_query = np.zeros((Q.shape[0], 3 + len(k_values)))

    def on_row(i, cols):
        per_query[i] = _retrieval_row(cols, q_codes[i], int(r_counts[i]), r_codes, k_values, kmax)

    _nearest(
        Q,
        Q if self_ref else R,
        k=k_rows,
        metric=metric,
        metric_kwargs=metric_kwargs,
        exclude_self=self_ref,
        chunk_size=chunk_size,
        ref_chunk_size=ref_chunk_size,
        selection=selection,
        mesh=mesh,
        on_row=on_row,
        names=("embeddings", "embeddings" if self_ref else "ref_embeddings"),
    )
    # per-query values summed once at the end: the same numbers for every chunking
    means = per_query[valid].sum(axis=0) / valid.sum()
    n_q = int(valid.sum())
    out: dict[str, Any] = {
        "precision_at_1": float(means[0]),
        "r_precision": float(means[1]),
        "map_at_r": float(means[2]),
        "recall_at_k": {kk: float(means[3 + j]) for j, kk in enumerate(k_values)},
        "n_queries": n_q,
    }
    if nmi:
        out["nmi"] = _kmeans_nmi(np.asarray(Q), q_codes, kmeans_seed, kmeans_n_init)
    return out


# --------------------------------------------------------------------------------------------------
# Verification (pairs)
# --------------------------------------------------------------------------------------------------


def _check_pairs(scores, same) -> tuple[np.ndarray, np.ndarray]:
    check_array(scores, "distances_or_scores", ndim=1, min_rows=1, allow_overflow=True)
    s = np.asarray(scores, dtype=np.float64)  # NumPy float64: no rounding to float32
    same = np.asarray(same)
    if same.ndim != 1 or same.shape[0] != s.shape[0]:
        raise ValueError(
            f"same must be 1-D with one entry per pair ({s.shape[0]}), got shape {same.shape}"
        )
    if same.dtype != bool:
        if not np.all(np.isin(same, (0, 1))):
            raise ValueError(
                "same must be boolean (or 0/1): True where the pair is a same-class pair"
            )
        same = same.astype(bool)
    if same.all() or not same.any():
        raise ValueError("same must contain both same (True) and different (False) pairs")
    return s, same


def roc_curve(
    distances_or_scores, same, *, higher_is_similar: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of pair verification: one point per distinct threshold (no points dropped).

    A pair is declared "same" when ``distance <= threshold`` (or ``score >= threshold`` with
    ``higher_is_similar=True``). Points run from nothing accepted (first threshold ``-inf`` for
    distances, ``+inf`` for scores) to everything accepted, as scikit-learn's
    ``roc_curve(same, score, drop_intermediate=False)``.

    Args:
      distances_or_scores: ``[p]`` distance (or similarity) of each pair.
      same: ``[p]`` bool, True for same-class pairs.
      higher_is_similar: the first argument is a similarity, not a distance.

    Returns:
      ``(fpr, tpr, thresholds)``, each ``[t]`` NumPy float64, fpr and tpr non-decreasing.

    Example:
      >>> fpr, tpr, thr = roc_curve([0.1, 0.5, 0.9], [True, False, False])
      >>> fpr.tolist(), tpr.tolist()
      ([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
    """
    check_flags(higher_is_similar=higher_is_similar)
    require_concrete("roc_curve", distances_or_scores, same)
    s, same = _check_pairs(distances_or_scores, same)
    score = s if higher_is_similar else -s
    order = np.argsort(-score, kind="mergesort")
    score, lab = score[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]  # end of each distinct value
    tps = np.cumsum(lab)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thr = np.r_[np.inf, score[last]]
    if not higher_is_similar:
        thr = -thr
    return fpr, tpr, thr


def verification_metrics(
    distances_or_scores, same, *, higher_is_similar: bool = False
) -> dict[str, float]:
    r"""Pair-verification metrics: ROC AUC, equal error rate, best accuracy and their thresholds.

    - ``roc_auc``: area under the ROC curve (trapezoidal; ties count one half), equal to
      scikit-learn's ``roc_auc_score``.
    - ``eer``: the rate where false accepts equal false rejects (:math:`\mathrm{FPR} = 1-\mathrm{TPR}`),
      linearly interpolated between the two ROC points around the crossing; ``eer_threshold`` is the
      threshold of the ROC point nearest the crossing.
    - ``best_accuracy``: the highest accuracy of "same iff distance <= t" over all thresholds ``t``,
      ``best_threshold`` the ``t`` achieving it (calibrate on one set, then apply with
      :func:`accuracy_at_threshold` on another). When rejecting every pair is the most accurate
      (few same pairs, none separable), it is ``-inf`` (``+inf`` for scores), which
      :func:`accuracy_at_threshold` applies as such; ties go to the strictest threshold.

    Args:
      distances_or_scores: ``[p]`` distance per pair (or similarity with ``higher_is_similar=True``).
      same: ``[p]`` bool, True for same-class pairs (needs both kinds).
      higher_is_similar: see above.

    Returns:
      dict of floats: ``roc_auc``, ``eer``, ``eer_threshold``, ``best_accuracy``, ``best_threshold``.

    Example:
      >>> m = verification_metrics([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
      >>> m["roc_auc"], m["eer"], m["best_accuracy"]
      (1.0, 0.0, 1.0)

    Reference: Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27 (2006).
    """
    check_flags(higher_is_similar=higher_is_similar)
    require_concrete("verification_metrics", distances_or_scores, same)
    s, same = _check_pairs(distances_or_scores, same)
    fpr, tpr, thr = roc_curve(s, same, higher_is_similar=higher_is_similar)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    fnr = 1.0 - tpr
    gap = fnr - fpr  # non-increasing from 1 to -1
    i = int(np.argmax(gap <= 0))  # first point at or past the crossing (i >= 1)
    g0, g1 = gap[i - 1], gap[i]
    t = g0 / (g0 - g1) if g0 != g1 else 0.0
    eer = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    near = i if abs(g1) <= abs(g0) else i - 1
    if not np.isfinite(thr[near]):
        near = 1
    n_pos, n_neg = same.sum(), (~same).sum()
    acc = (tpr * n_pos + (1.0 - fpr) * n_neg) / same.size
    best = int(np.argmax(acc))
    return {
        "roc_auc": auc,
        "eer": eer,
        "eer_threshold": float(thr[near]),
        "best_accuracy": float(acc[best]),
        "best_threshold": float(thr[best]),
    }


def accuracy_at_threshold(
    distances_or_scores, same, threshold: float, *, higher_is_similar: bool = False
) -> float:
    """Accuracy of "same iff distance <= threshold" (or "score >= threshold") on pairs.

    Args:
      distances_or_scores: ``[p]``.
      same: ``[p]`` bool (may contain one kind only).
      threshold: e.g. ``verification_metrics(...)["best_threshold"]`` calibrated on other pairs.
      higher_is_similar: the first argument is a similarity.

    Returns:
      Python float in ``[0, 1]``.

    Example:
      >>> accuracy_at_threshold([0.1, 0.6, 0.9], [True, True, False], 0.5)
      0.6666666666666666
    """
    check_flags(higher_is_similar=higher_is_similar)
    require_concrete("accuracy_at_threshold", distances_or_scores, same, threshold)
    check_array(distances_or_scores, "distances_or_scores", ndim=1, min_rows=1, allow_overflow=True)
    s = np.asarray(distances_or_scores, dtype=np.float64)
    same = np.asarray(same)
    if same.ndim != 1 or same.shape[0] != s.shape[0]:
        raise ValueError(
            f"same must be 1-D with one entry per pair ({s.shape[0]}), got shape {same.shape}"
        )
    if same.dtype != bool and not np.all(np.isin(same, (0, 1))):
        raise ValueError("same must be boolean (or 0/1)")
    threshold = as_real(threshold, "threshold")  # also NumPy / JAX 0-d arrays; not bool or str
    if np.isnan(threshold):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    pred = s >= threshold if higher_is_similar else s <= threshold
    return float(np.mean(pred == same.astype(bool)))
