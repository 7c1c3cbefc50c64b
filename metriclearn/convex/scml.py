"""Sparse Compositional Metric Learning (SCML): a sparse non-negative mix of rank-one metrics.

Given ``K`` basis directions ``b_k`` (rows of ``B``, ``[K, d]``), SCML learns

.. math::

    M = \\sum_k w_k \\, b_k b_k^\\top = B^\\top \\operatorname{diag}(w) B, \\qquad w \\ge 0,

from triplets ``(a, p, n)`` stating ``d(a, p) < d(a, n)``, by minimising the hinge loss with an
L1 penalty (Shi, Bellet & Sha, AAAI 2014):

.. math::

    \\min_{w \\ge 0} \\; \\frac{1}{m} \\sum_{t=1}^m \\big[1 + d_w^2(a_t, p_t) - d_w^2(a_t, n_t)\\big]_+
    + \\beta \\lVert w \\rVert_1,
    \\qquad d_w^2(x, y) = \\sum_k w_k \\big(b_k^\\top (x - y)\\big)^2 .

The loss is linear in ``w``: triplet ``t`` contributes the row
``delta_t = (B(a-p))^2 - (B(a-n))^2`` (``[K]``), and the hinge is ``[1 + delta_t . w]_+``.

Optimiser (as metric-learn 0.7): stochastic regularised dual averaging with AdaGrad scaling. At step
``t`` a minibatch of ``batch_size`` triplets (drawn with replacement) gives the subgradient
``g_t = mean_batch(delta_i * [1 + delta_i . w > 0])``; with the running average ``gbar_t`` and the
AdaGrad norm ``H_t = sqrt(sum_s g_s^2)`` the closed-form non-negative L1 step is

.. math::

    w_{t+1} = \\frac{t}{\\gamma (10^{-3} + H_t)} \\max(-(\\bar g_t + \\beta), 0).

The whole loop is a ``lax.scan`` over minibatches (the per-triplet rows ``delta_t`` vmapped); every
``output_iter`` steps the full objective is evaluated and the best ``w`` so far is kept and returned.
The rows are materialised once (``[m, K]``, as metric-learn) when ``m K <= 2^25``. Otherwise the
objective is evaluated through ``M = B^T diag(w) B`` in row blocks (``dp^T M dp - dn^T M dn``,
``O(m d^2)`` work, memory ``O(4096 d)``) and the minibatch rows are recomputed per step; when the
triplets are given as indices into ``X`` (as ``SCML_Supervised`` does) and ``n K <= 2^25``, the rows
are instead gathered from the projected points ``X B^T`` (``O(K)`` per triplet) and the objective
uses per-point ``x^T M x`` (``O(n d^2 + m d)``). Minibatch indices are drawn on the host from ``key``
(NumPy generator seeded by the key), so results are reproducible.

Bases:

* ``"triplet_diffs"`` (unsupervised, default): rounds of ``min(d, m)`` random triplets; for each
  round the symmetric matrix ``S = D_p^T D_p - D_n^T D_n`` of the positive differences ``a - p`` and
  negative differences ``a - n`` is eigendecomposed and its eigenvectors with non-zero eigenvalue
  (largest ``|eigenvalue|`` first) become unit basis vectors, until ``n_basis`` are collected (the
  construction of metric-learn 0.7, taking the eigenvectors as columns). Default ``n_basis = 80 d``.
* ``"lda"`` (needs ``X`` and ``y``): k-means on ``X`` gives ``ceil(n_basis / (2 E))`` local regions
  (``E = min(C - 1, d)``); around each centre the ``k`` nearest points of every class feed a local
  LDA whose ``E`` discriminant directions (unit norm) are basis vectors, at two scales
  (``k = 10`` or ``50`` if ``d > 50``, then ``k = 20``). Default ``n_basis = min(20 d, 2 n E)``.
* an array ``[K, d]`` used as given.

Degenerate input (all triplet points equal): no basis can be built from ``triplet_diffs``
(``ValueError``); with a given basis every ``delta_t`` is zero, the weights stay zero and ``M = 0``
with a warning. Never NaN.

Reference: Y. Shi, A. Bellet, F. Sha, "Sparse Compositional Metric Learning", AAAI 2014.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_array, check_labels, check_positive_int, require_concrete
from metriclearn.convex._common import (
    bucket_size,
    centred,
    generalized_eigh,
    pad_rows,
    tuple_differences,
)

__all__ = ["SCMLResult", "fit_scml", "triplet_diff_basis", "lda_basis"]

BASES = ("triplet_diffs", "lda")
_DELTA = 1e-3  # AdaGrad denominator slack (metric-learn's value)
_PRECOMPUTE_MAX = 2**25  # materialise the [m, K] rows delta_t up to ~33M entries (134 MB in f32)


class SCMLResult(NamedTuple):
    """Outcome of :func:`fit_scml`.

    Attributes:
      M: ``[d, d]`` learned Mahalanobis matrix ``B^T diag(w) B``.
      weights: ``[K]`` non-negative basis weights (the best iterate by the full objective).
      basis: ``[K, d]`` basis directions ``b_k`` (rows).
      n_iter: optimiser steps run.
      converged: whether the last objective evaluation improved on the previous best by less than
        ``1e-3`` (relative): the optimiser has stalled.
    """

    M: jax.Array
    weights: jax.Array
    basis: jax.Array
    n_iter: int
    converged: bool


def _host_rng(key) -> np.random.Generator:
    """NumPy generator seeded from a JAX key (or int seed; ``None`` means 0).

    Index arrays are drawn on the host and passed to the jitted cores as data: XLA would otherwise
    constant-fold large ``jax.random`` draws at compile time (seconds of compilation).
    """
    if key is None:
        key = 0
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return np.random.default_rng(int(key))
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    data = np.asarray(key).astype(np.uint64).reshape(-1)
    return np.random.default_rng(data.tolist())


def _check_triplets(triplets) -> jax.Array:
    T = check_array(triplets, "triplets", ndim=3)
    if T.shape[1] != 3:
        raise ValueError(
            f"triplets must have shape [m, 3, d] (anchor, positive, negative), got {tuple(T.shape)}"
        )
    if T.shape[0] == 0:
        raise ValueError("triplets is empty: the constraint set needs at least one triplet")
    if T.shape[2] == 0:
        raise ValueError(f"triplets must have at least one feature, got shape {tuple(T.shape)}")
    return T


def _index_triplets(triplets, X) -> np.ndarray | None:
    """``triplets`` as int32 ``[m, 3]`` indices into ``X`` when given so (``None`` for point triplets)."""
    t = np.asarray(triplets)
    if t.dtype.kind not in "iu" or t.ndim != 2:  # integer *points* [m, 3, d] stay points
        return None
    if X is None:
        raise ValueError(
            f"triplets given as integer indices (shape {tuple(t.shape)}) need the data X [n, d]"
        )
    n = np.shape(X)[0]
    if t.shape[1] != 3 or t.shape[0] == 0:
        raise ValueError(f"index triplets must have shape [m, 3] with m >= 1, got {tuple(t.shape)}")
    if t.min() < 0 or t.max() >= n:
        raise ValueError(
            f"index triplets must lie in [0, {n}) (the rows of X), got [{t.min()}, {t.max()}]"
        )
    return t.astype(np.int32)


# ----------------------------------------------------------------------------------------------------
# bases


@jax.jit
def _diff_rounds(idx, Dp, Dn):
    """Eigenvectors of ``Dp_S^T Dp_S - Dn_S^T Dn_S`` for each row ``S`` of ``idx`` (``[R, s]``)."""

    def one(sel):
        P, N = Dp[sel], Dn[sel]
        S = P.T @ P - N.T @ N
        lam, V = jnp.linalg.eigh(0.5 * (S + S.T))
        order = jnp.argsort(-jnp.abs(lam))
        return jnp.abs(lam[order]), V[:, order].T  # rows are eigenvectors

    return jax.vmap(one)(idx)  # [R, d], [R, d, d]


def triplet_diff_basis(key, triplets, *, n_basis: int | None = None) -> jax.Array:
    """Unit basis directions from the eigenvectors of differences of positive and negative pairs.

    See the module docstring (``"triplet_diffs"``). Rounds are vmapped; a round whose sampled
    triplets are all degenerate contributes nothing.

    Args:
      key: PRNG key (or int seed).
      triplets: ``[m, 3, d]`` (anchor, positive, negative).
      n_basis: number of directions ``K`` (default ``80 d``).

    Returns:
      ``[K, d]`` unit rows (fewer than ``n_basis``, with a warning, if the triplets span too little).

    Raises:
      ValueError: bad shapes, NaN/inf, or every triplet difference is zero.
    """
    T = _check_triplets(triplets)
    m, _, d = T.shape
    K = 80 * d if n_basis is None else check_positive_int(n_basis, "n_basis")
    Dp, Dn = tuple_differences(triplets, T, ((0, 1), (0, 2)))  # float64 on the host, then cast
    if not bool(jnp.any(Dp != 0) | jnp.any(Dn != 0)):
        raise ValueError(
            "triplets are degenerate: every anchor equals its positive and negative, so no "
            "'triplet_diffs' basis can be built"
        )
    size = min(d, m)
    n_rounds = 2 * math.ceil(K / size) + 2
    rng = _host_rng(key)
    idx = np.argsort(rng.random((n_rounds, m)), axis=1)[:, :size].astype(np.int32)
    lam, vecs = _diff_rounds(jnp.asarray(idx), Dp, Dn)
    lam, vecs = np.asarray(lam), np.asarray(vecs)
    tol = 100.0 * d * np.finfo(lam.dtype).eps * max(float(lam.max()), np.finfo(lam.dtype).tiny)
    keep = lam.reshape(-1) > tol
    B = vecs.reshape(-1, d)[keep][:K]
    if B.shape[0] < K:
        warnings.warn(
            f"SCML: only {B.shape[0]} basis directions could be built from the triplets "
            f"(n_basis={K} asked)",
            UserWarning,
            stacklevel=2,
        )
    return jnp.asarray(B, dtype=T.dtype)


@partial(jax.jit, static_argnames=("n_iter",))
def _kmeans(centres, X, valid, *, n_iter: int = 30):
    """Lloyd's k-means from the given initial centres (empty clusters keep their centre).

    Only rows with ``valid`` ``[n]`` count (padding rows of a bucketed ``n`` are ignored).
    """
    n_clusters = centres.shape[0]

    def step(_, c):
        d2 = jnp.sum(X * X, 1)[:, None] + jnp.sum(c * c, 1)[None, :] - 2.0 * X @ c.T
        assign = jnp.argmin(d2, axis=1)
        onehot = jax.nn.one_hot(assign, n_clusters, dtype=X.dtype) * valid[:, None]
        counts = onehot.sum(0)
        sums = onehot.T @ X
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)

    return jax.lax.fori_loop(0, n_iter, step, centres)


@partial(jax.jit, static_argnames=("n_classes", "k_max", "n_eig"))
def _local_lda(centres, X, codes, ks, *, n_classes: int, k_max: int, n_eig: int):
    """``n_eig`` unit LDA directions per scale and centre from its ``k`` nearest points of every class.

    One ``top_k`` of size ``k_max`` serves every scale ``k`` in ``ks`` (``[S]`` ints ``<= k_max``,
    traced): scale ``s`` keeps the first ``ks[s]`` neighbours, so all scales share one compilation.
    Returns ``[S, nc, n_eig, d]``.
    """
    dtype = X.dtype
    d2 = (
        jnp.sum(centres * centres, 1)[:, None] + jnp.sum(X * X, 1)[None, :] - 2.0 * centres @ X.T
    )  # [nc, n]
    same = codes[None, :] == jnp.arange(n_classes)[:, None]  # [C, n]
    masked = jnp.where(same[None, :, :], d2[:, None, :], jnp.inf)  # [nc, C, n]
    neg, idx = jax.lax.top_k(-masked, k_max)  # [nc, C, k_max], nearest first
    found = jnp.isfinite(neg)

    def one(idx_c, valid_c):
        pts = X[idx_c]  # [C, k, d]
        wt = valid_c.astype(dtype)  # [C, k]
        cnt = wt.sum(1)  # [C]
        means = (pts * wt[..., None]).sum(1) / jnp.maximum(cnt, 1.0)[:, None]
        total = jnp.maximum(cnt.sum(), 1.0)
        overall = (means * cnt[:, None]).sum(0) / total
        dev = (pts - means[:, None, :]) * wt[..., None]
        dev = dev.reshape(-1, dev.shape[-1])
        n_present = jnp.sum(cnt > 0)
        Sw = dev.T @ dev / jnp.maximum(total - n_present, 1.0)
        cen = (means - overall) * jnp.sqrt(cnt / total)[:, None]
        Sb = cen.T @ cen
        _, V = generalized_eigh(Sb, Sw)
        V = V[:, :n_eig].T
        norm = jnp.linalg.norm(V, axis=1, keepdims=True)
        return V / jnp.maximum(norm, jnp.finfo(dtype).tiny)

    def scale(k):
        valid = found & (jnp.arange(k_max) < k)  # the k nearest of each class
        return jax.vmap(one)(idx, valid)  # [nc, n_eig, d]

    return jax.vmap(scale)(ks)  # [S, nc, n_eig, d]


def lda_basis(key, X, y, *, n_basis: int | None = None) -> jax.Array:
    """Locally discriminative unit directions from LDA around k-means centres (two scales).

    See the module docstring (``"lda"``). Default ``n_basis = min(20 d, 2 n E)``,
    ``E = min(n_classes - 1, d)``.

    Args:
      key: PRNG key (or int seed) for the k-means initialisation.
      X: ``[n, d]`` features.
      y: ``[n]`` labels (at least two classes).
      n_basis: number of directions ``K``.

    Returns:
      ``[K, d]`` unit rows (at most ``2 n E``, with a warning when fewer than ``n_basis``).
    """
    X = check_array(X, "X", ndim=2, min_rows=2)
    n, d = X.shape
    codes = check_labels(y, n, name="y", min_classes=2)
    n_classes = int(codes.max()) + 1
    n_eig = min(n_classes - 1, d)
    K = min(20 * d, 2 * n * n_eig) if n_basis is None else check_positive_int(n_basis, "n_basis")
    n_clusters = min(math.ceil(K / (2 * n_eig)), n)
    if K > 2 * n_clusters * n_eig:
        warnings.warn(
            f"SCML: only {2 * n_clusters * n_eig} 'lda' basis directions can be built from {n} "
            f"points (2 scales x {n_clusters} centres x {n_eig} directions; n_basis={K} asked)",
            UserWarning,
            stacklevel=2,
        )
        K = 2 * n_clusters * n_eig
    start = _host_rng(key).choice(n, size=n_clusters, replace=False)
    # rows padded to a bucketed count (masked in k-means, label -1 so never a neighbour in the local
    # LDA): cross-validation folds of slightly different sizes share the compiled programs
    size = bucket_size(n)
    Xp, valid = pad_rows(X, size)
    codes_p, _ = pad_rows(jnp.asarray(codes), size, fill=-1)
    centres = _kmeans(X[jnp.asarray(start)], Xp, valid.astype(X.dtype))
    counts = np.bincount(codes)
    k_first = 50 if d > 50 else 10
    ks = np.minimum([k_first, 20], counts.max())  # two neighbourhood scales, one compilation
    parts = _local_lda(
        centres,
        Xp,
        codes_p,
        jnp.asarray(ks, jnp.int32),
        n_classes=n_classes,
        k_max=int(ks.max()),
        n_eig=n_eig,
    )
    return parts.reshape(-1, d)[:K]


# ----------------------------------------------------------------------------------------------------
# optimiser


def _delta_one(dp: jax.Array, dn: jax.Array, B: jax.Array) -> jax.Array:
    """Row ``delta_t = (B (a - p))^2 - (B (a - n))^2`` (``[K]``) of one triplet: its loss is linear in w."""
    return (B @ dp) ** 2 - (B @ dn) ** 2


_deltas = jax.vmap(_delta_one, in_axes=(0, 0, None))  # [m, d], [m, d], [K, d] -> [m, K]


def _objective(w, Dp, Dn, B, beta, m_valid, block: int):
    """``beta * sum(w) + mean_t [1 + delta_t . w]_+`` over the first ``m_valid`` triplets, in blocks.

    Uses ``delta_t . w = dp^T M dp - dn^T M dn`` with ``M = B^T diag(w) B`` (``[d, d]``): ``O(m d^2)``
    work instead of the ``O(m K d)`` of the rows themselves (``K`` is typically ``20 d`` or more).
    """
    M = (B.T * w[None, :]) @ B
    m = Dp.shape[0]
    n_blocks = -(-m // block)
    pad = n_blocks * block - m
    mask = jnp.arange(n_blocks * block) < m_valid
    P = jnp.pad(Dp, ((0, pad), (0, 0))).reshape(n_blocks, block, -1)
    N = jnp.pad(Dn, ((0, pad), (0, 0))).reshape(n_blocks, block, -1)
    mask = mask.reshape(n_blocks, block)

    def blk(args):
        p, q, mk = args
        slack = 1.0 + jnp.sum((p @ M) * p, axis=1) - jnp.sum((q @ M) * q, axis=1)
        return jnp.sum(jnp.where(mk & (slack > 0), slack, 0.0))

    total = jax.lax.map(blk, (P, N, mask)).sum()
    return beta * jnp.sum(w) + total / m_valid


def _objective_indexed(w, Xc, tidx, B, beta, m_valid, block: int):
    """:func:`_objective` for index triplets ``tidx`` ``[m, 3]`` into the (centred) points ``Xc``.

    With ``q_i = x_i^T M x_i`` and ``XM = Xc M`` computed once per point,
    ``delta_t . w = q_p - q_n - 2 (XM_a) . (x_p - x_n)``: ``O(n d^2 + m d)`` work instead of
    ``O(m d^2)``.
    """
    M = (B.T * w[None, :]) @ B
    XM = Xc @ M
    q = jnp.sum(XM * Xc, axis=1)
    m = tidx.shape[0]
    n_blocks = -(-m // block)
    pad = n_blocks * block - m
    mask = (jnp.arange(n_blocks * block) < m_valid).reshape(n_blocks, block)
    T = jnp.pad(tidx, ((0, pad), (0, 0))).reshape(n_blocks, block, 3)

    def blk(args):
        t, mk = args
        a, p, n = t[:, 0], t[:, 1], t[:, 2]
        slack = 1.0 + q[p] - q[n] - 2.0 * jnp.sum(XM[a] * (Xc[p] - Xc[n]), axis=1)
        return jnp.sum(jnp.where(mk & (slack > 0), slack, 0.0))

    total = jax.lax.map(blk, (T, mask)).sum()
    return beta * jnp.sum(w) + total / m_valid


@partial(jax.jit, static_argnames=("block", "precompute"))
def _scml_core(
    idx, Dp, Dn, B, beta, gamma, m_valid, XB=None, tidx=None, Xc=None, *, block, precompute
):
    """Dual averaging over the minibatch index array ``idx`` ``[n_outer, output_iter, batch]``.

    The triplet arrays may be padded (bucketed ``m``): only the first ``m_valid`` (a traced count)
    enter the objective, and ``idx`` never points past them.

    ``precompute``: materialise all rows ``delta_t`` (``[m, K]``) once, as metric-learn does;
    otherwise the objective runs in row blocks through ``M = B^T diag(w) B`` (memory
    ``O(block * d)`` instead of ``O(m * K)``) and the minibatch rows are either gathered from the
    projected points ``XB = Xc B^T`` (``[n, K]``, with index triplets ``tidx`` ``[m, 3]`` into the
    centred points ``Xc``; ``Dp``, ``Dn`` unused): ``delta_t = (XB_a - XB_p)^2 - (XB_a - XB_n)^2``,
    or, without ``XB``, recomputed from ``Dp, Dn``.
    """
    n_outer, output_iter, batch_size = idx.shape
    K = B.shape[0]
    dtype = B.dtype
    if precompute:
        D_all = _deltas(Dp, Dn, B)

        def rows(ib):
            return D_all[ib]

        real = jnp.arange(D_all.shape[0]) < m_valid

        def objective(w):
            slack = jnp.where(real, 1.0 + D_all @ w, 0.0)
            return beta * jnp.sum(w) + jnp.sum(jnp.maximum(slack, 0.0)) / m_valid

    else:
        if XB is not None:

            def rows(ib):
                t = tidx[ib]  # [bs, 3]
                a = XB[t[:, 0]]
                return (a - XB[t[:, 1]]) ** 2 - (a - XB[t[:, 2]]) ** 2

            def objective(w):
                return _objective_indexed(w, Xc, tidx, B, beta, m_valid, block)

        else:

            def rows(ib):
                return _deltas(Dp[ib], Dn[ib], B)

            def objective(w):
                return _objective(w, Dp, Dn, B, beta, m_valid, block)

    def step(carry, args):
        w, avg, ada = carry
        t, ib = args
        delta = rows(ib)  # [bs, K]
        active = (1.0 + delta @ w) > 0
        g = jnp.sum(jnp.where(active[:, None], delta, 0.0), axis=0) / batch_size
        avg = (t * avg + g) / (t + 1.0)
        ada = jnp.sqrt(ada * ada + g * g)
        scale = (t + 1.0) / (gamma * (_DELTA + ada))
        w = scale * jnp.maximum(-(avg + beta), 0.0)
        return (w, avg, ada), None

    def outer(carry, args):
        state, best_w, best_obj, prev_best = carry
        o, ib = args
        ts = (o * output_iter + jnp.arange(output_iter)).astype(dtype)
        state, _ = jax.lax.scan(step, state, (ts, ib))
        obj = objective(state[0])
        better = obj < best_obj
        prev_best = best_obj
        best_w = jnp.where(better, state[0], best_w)
        best_obj = jnp.where(better, obj, best_obj)
        return (state, best_w, best_obj, prev_best), obj

    zeros = jnp.zeros((K,), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    init = ((zeros, zeros, zeros), zeros, inf, inf)
    (_, best_w, best_obj, prev_best), history = jax.lax.scan(
        outer, init, (jnp.arange(n_outer), idx)
    )
    rel = (prev_best - best_obj) / jnp.maximum(jnp.abs(best_obj), jnp.finfo(dtype).tiny)
    converged = jnp.isfinite(prev_best) & (rel < 1e-3)
    M = (B.T * best_w[None, :]) @ B
    return 0.5 * (M + M.T), best_w, converged, history


def fit_scml(
    triplets,
    *,
    basis="triplet_diffs",
    n_basis: int | None = None,
    beta: float = 1e-5,
    gamma: float = 5e-3,
    max_iter: int = 10000,
    output_iter: int = 500,
    batch_size: int = 10,
    key=None,
    X=None,
    y=None,
) -> SCMLResult:
    """Sparse Compositional Metric Learning on triplets (jitted stochastic dual averaging).

    ``M = B^T diag(w) B`` with ``w >= 0`` minimising the mean triplet hinge
    ``[1 + d_w^2(a, p) - d_w^2(a, n)]_+`` plus ``beta ||w||_1`` (see the module docstring for the
    update and the bases). ``max_iter // output_iter`` blocks of ``output_iter`` minibatch steps run
    in one ``lax.scan``; the best iterate by the full objective (checked after each block) is kept.

    Args:
      triplets: ``[m, 3, d]`` triplets ``(anchor, positive, negative)`` meaning
        ``d(anchor, positive) < d(anchor, negative)``, or integer ``[m, 3]`` row indices into ``X``
        (e.g. from :func:`metriclearn.constraints.knn_triplets`): then only the differences are
        materialised, and the minibatch rows are gathered from the projected points ``X B^T``.
      basis: ``"triplet_diffs"``, ``"lda"`` (needs ``X``, ``y``) or an array ``[K, d]``.
      n_basis: ``K`` for the generated bases (defaults in the module docstring); ignored for an array.
      beta: L1 weight (``>= 0``); larger gives sparser ``w``.
      gamma: dual-averaging step parameter (``> 0``); larger gives smaller steps.
      max_iter: total minibatch steps; ``max_iter // output_iter`` blocks run (a remainder is
        dropped, as no objective evaluation would follow it).
      output_iter: steps between full-objective evaluations (capped at ``max_iter``).
      batch_size: triplets per minibatch (drawn with replacement).
      key: PRNG key or int seed (basis construction and minibatches); ``None`` means ``key(0)``.
      X: ``[n, d]`` data for ``basis="lda"`` and for index triplets.
      y: ``[n]`` labels for ``basis="lda"``.

    Returns:
      :class:`SCMLResult` ``(M [d, d], weights [K], basis [K, d], n_iter, converged)``.

    Raises:
      ValueError: wrong shapes (``triplets`` not ``[m, 3, d]``, basis not ``[K, d]``), NaN/inf, an
        empty triplet set, unknown basis name, ``"lda"`` without ``X``/``y``, bad hyperparameters,
        degenerate triplets with ``"triplet_diffs"``, index triplets without ``X`` or outside its
        rows.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> from metriclearn import constraints
      >>> X, y = load_iris(return_X_y=True)
      >>> trip = constraints.triplets(0, y, n_triplets=200)   # [m, 3] indices
      >>> res = fit_scml(X[trip], key=jax.random.key(0), max_iter=2000)
      >>> x, z = X[trip[0, 0]], X[trip[0, 2]]
      >>> d2 = jnp.sum(((x - z) @ res.M) * (x - z))   # squared distance in the learned metric
      >>> res.M.shape, bool(d2 > 0)
      ((4, 4), True)

    Reference: Shi, Bellet & Sha, "Sparse Compositional Metric Learning", AAAI 2014.
    """
    require_concrete("fit_scml", triplets, X)
    tidx = _index_triplets(triplets, X)
    if tidx is None:
        T = _check_triplets(triplets)
    else:  # index triplets into X: only the differences Dp, Dn are materialised
        Xi = check_array(X, "X", ndim=2, min_rows=1)
        T = jax.ShapeDtypeStruct((len(tidx), 3, Xi.shape[1]), Xi.dtype)
        X64 = np.asarray(X, np.float64)  # differences and centring in float64 (digits far from 0)
        Xc = centred(X64, Xi)
    m, _, d = T.shape
    max_iter = check_positive_int(max_iter, "max_iter")
    output_iter = check_positive_int(output_iter, "output_iter")
    batch_size = check_positive_int(batch_size, "batch_size")
    output_iter = min(output_iter, max_iter)
    for name, val, lo_open in (("beta", beta, False), ("gamma", gamma, True)):
        try:
            if isinstance(val, bool | np.bool_ | str):  # float(True) = 1: a flag is not a weight
                raise TypeError
            v = float(val)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a number, got {val!r}") from err
        if not np.isfinite(v) or v < 0 or (lo_open and v == 0):
            bound = "> 0" if lo_open else ">= 0"
            raise ValueError(f"{name} must be finite and {bound}, got {val!r}")
    rng = _host_rng(key)
    k_basis, k_opt = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))

    if isinstance(basis, str):
        if basis not in BASES:
            raise ValueError(
                f"unknown basis {basis!r}; valid: {', '.join(BASES)} or an array [K, d]"
            )
        if basis == "triplet_diffs":
            Tp = triplets if tidx is None else X64[tidx]
            B = triplet_diff_basis(k_basis, Tp, n_basis=n_basis)
        else:
            if X is None or y is None:
                raise ValueError('basis="lda" needs the data X [n, d] and labels y [n]')
            Xa = check_array(X, "X", ndim=2, min_rows=2, dtype=T.dtype)
            if Xa.shape[1] != d:
                raise ValueError(
                    f"X has {Xa.shape[1]} features but triplets have d={d} "
                    f"(X shape {tuple(Xa.shape)}, triplets shape {tuple(T.shape)})"
                )
            B = lda_basis(k_basis, Xa, y, n_basis=n_basis)
    else:
        B = check_array(basis, "basis", ndim=2, dtype=T.dtype)
        if B.shape[1] != d or B.shape[0] == 0:
            raise ValueError(
                f"basis must have shape [K, d] with K >= 1 and d={d} (the triplets' feature "
                f"dimension), got {tuple(B.shape)}"
            )
    B = jnp.asarray(B, T.dtype)

    K = B.shape[0]
    # triplets (and, for index triplets, points) padded to bucketed counts: cross-validation folds
    # of slightly different sizes share one compiled program; padding is masked out of the objective
    # and never sampled
    m_pad = bucket_size(m)
    precompute = m_pad * K <= _PRECOMPUTE_MAX
    XB = tj = Dp = Dn = None
    if tidx is not None:
        tj, _ = pad_rows(jnp.asarray(tidx), m_pad)
        n_pts = bucket_size(Xi.shape[0])
        if not precompute and n_pts * K <= _PRECOMPUTE_MAX:
            # rows gathered from the projected points: O(K) per triplet and step instead of O(K d)
            Xc, _ = pad_rows(Xc, n_pts)
            XB = Xc @ B.T
        else:
            Dp = jnp.asarray(X64[tidx[:, 0]] - X64[tidx[:, 1]], Xi.dtype)
            Dn = jnp.asarray(X64[tidx[:, 0]] - X64[tidx[:, 2]], Xi.dtype)
            Dp, _ = pad_rows(Dp, m_pad)
            Dn, _ = pad_rows(Dn, m_pad)
    else:
        Dp, Dn = tuple_differences(triplets, T, ((0, 1), (0, 2)))  # float64 on the host, then cast
        Dp, _ = pad_rows(Dp, m_pad)
        Dn, _ = pad_rows(Dn, m_pad)
        Xc = None
    n_outer = max_iter // output_iter
    block = int(min(m_pad, 4096))
    idx = _host_rng(k_opt).integers(0, m, size=(n_outer, output_iter, batch_size), dtype=np.int32)
    M, w, converged, _ = _scml_core(
        jnp.asarray(idx),
        Dp,
        Dn,
        B,
        jnp.asarray(beta, T.dtype),
        jnp.asarray(gamma, T.dtype),
        jnp.asarray(m, T.dtype),
        XB,
        tj if XB is not None else None,
        Xc if XB is not None else None,
        block=block,
        precompute=precompute,
    )
    if not bool(jnp.any(w > 0)):
        warnings.warn(
            "SCML: every basis weight is zero, so the learned metric is zero (all distances 0); "
            "decrease beta, or check that the triplets are not degenerate",
            UserWarning,
            stacklevel=2,
        )
    return SCMLResult(
        M=M, weights=w, basis=B, n_iter=n_outer * output_iter, converged=bool(converged)
    )
