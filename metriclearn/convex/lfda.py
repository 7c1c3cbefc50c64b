"""Local Fisher Discriminant Analysis (LFDA): Fisher's criterion with locality-preserving weights.

Same-class pairs are weighted by a local-scaling affinity
``A_ij = exp(-||x_i - x_j||^2 / (sigma_i sigma_j))`` (``sigma_i`` = distance from ``x_i`` to its
``k``-th nearest neighbour within its class), so multimodal classes are not forced into one cluster.
When that distance is 0 (``x_i`` has ``k`` or more exact copies in its class, as binary or
categorical features give) ``sigma_i`` is the distance to the nearest distinct point of the class
instead: Sugiyama's affinity would be 0 for every pair of such a point (metric-learn sets it so),
and with every point duplicated ``S^{(lw)} = 0`` and the embedding blew up to ``1e19``.
With ``n_c`` the size of ``x_i``'s class,

.. math::
    S^{(lw)} = \\tfrac12 \\sum_{ij} W^{(lw)}_{ij} (x_i - x_j)(x_i - x_j)^T, \\quad
    W^{(lw)}_{ij} = A_{ij} / n_c \\ (\\text{same class}),\\ 0 \\ (\\text{otherwise})

    S^{(lb)} = \\tfrac12 \\sum_{ij} W^{(lb)}_{ij} (x_i - x_j)(x_i - x_j)^T, \\quad
    W^{(lb)}_{ij} = A_{ij} (1/n - 1/n_c) \\ (\\text{same class}),\\ 1/n \\ (\\text{otherwise})

and the embedding rows are the top generalized eigenvectors of ``S^{(lb)} v = lambda S^{(lw)} v``.
Only the same-class affinity part needs pairwise terms; it is accumulated in row blocks
(``X^T (D_A - A) X`` through matmuls, ``O(block * n)`` memory); the rest uses class sums. The
eigenproblem is solved with a regularised ``S^{(lw)}`` (:func:`generalized_eigh`), so zero-variance
features (digits' blank pixels) give a real, finite result where ``scipy.linalg.eig`` returns
complex/NaN output.

Reference: M. Sugiyama, "Dimensionality Reduction of Multimodal Labeled Data by Local Fisher
Discriminant Analysis", JMLR 8 (2007) 1027-1061.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_choice, check_positive_int, require_concrete
from metriclearn.convex._common import (
    FitResult,
    bucket_size,
    centred,
    check_n_components,
    check_Xy,
    generalized_eigh,
    in_float64,
    map_row_blocks,
    pad_rows,
    row_block,
)

__all__ = ["fit_lfda", "EMBEDDINGS"]

EMBEDDINGS = ("weighted", "orthonormalized", "plain")


@functools.partial(jax.jit, static_argnames=("k", "n_classes", "block"))
def _lfda_scatter(X, codes, valid, points=None, *, k: int, n_classes: int, block: int):
    """Local between/within scatter ``(S_lb, S_lw)`` of padded ``X [N, d]`` (invalid rows masked).

    ``points [N]``: equal for exact copies of a point (default: all rows distinct); their distance
    is taken as exactly 0, and a point whose ``k``-th neighbour is a copy gets the local scale of its
    nearest distinct same-class point."""
    N = X.shape[0]
    if points is None:
        points = jnp.arange(N)
    vf = valid.astype(X.dtype)
    n = jnp.sum(vf)
    onehot = jax.nn.one_hot(codes, n_classes, dtype=X.dtype) * vf[:, None]
    counts = onehot.sum(0)
    inv_nc = (onehot @ (1.0 / jnp.maximum(counts, 1.0))) * vf  # 1 / n_c per row
    sq = jnp.sum(X * X, axis=1)

    def same_class_d2(Xb, sqb, cb, vb, pb):
        copy = pb[:, None] == points[None, :]
        d2 = jnp.where(copy, 0.0, jnp.maximum(sqb[:, None] + sq[None, :] - 2.0 * (Xb @ X.T), 0.0))
        same = vb[:, None] & valid[None, :] & (cb[:, None] == codes[None, :])
        return d2, same, copy

    # per-row neighbour index min(k, n_c - 1): Sugiyama's cap for classes smaller than k + 1.
    k_row = jnp.clip(jnp.minimum(k, onehot @ counts - 1.0), 0, k).astype(jnp.int32)

    def kth(Xb, sqb, cb, vb, kb, pb):
        d2, same, copy = same_class_d2(Xb, sqb, cb, vb, pb)
        # k + 1 smallest same-class distances including self (0): column j is the j-th neighbour.
        neg = jax.lax.top_k(jnp.where(same, -d2, -jnp.inf), k + 1)[0]
        sig2 = -jnp.take_along_axis(neg, kb[:, None], axis=1)[:, 0]
        # a copy as k-th neighbour (sig2 = 0): the nearest distinct same-class point instead
        nearest = jnp.min(jnp.where(same & ~copy, d2, jnp.inf), axis=1)
        sig2 = jnp.where(sig2 > 0, sig2, nearest)
        return jnp.sqrt(jnp.where(jnp.isfinite(sig2), sig2, 0.0))

    sigma = map_row_blocks(kth, block, X, sq, codes, valid, k_row, points)

    def grams(Xb, sqb, cb, vb, sb, rb, pb):
        d2, same, _ = same_class_d2(Xb, sqb, cb, vb, pb)
        scale = sb[:, None] * sigma[None, :]
        ok = same & (scale > 0)
        A = jnp.where(ok, jnp.exp(-d2 / jnp.where(ok, scale, 1.0)), 0.0)
        Aw = A * rb[:, None]
        # X_b^T diag(row sums) X_b - X_b^T (A_b X), for A and for A / n_c.
        g1 = (Xb * A.sum(1)[:, None]).T @ Xb - Xb.T @ (A @ X)
        gw = (Xb * Aw.sum(1)[:, None]).T @ Xb - Xb.T @ (Aw @ X)
        return g1[None], gw[None]

    if N <= block:
        g1, gw = grams(X, sq, codes, valid, sigma, inv_nc, points)
    else:
        nb = N // block
        rows = (X, sq, codes, valid, sigma, inv_nc, points)
        parts = [a.reshape((nb, block) + a.shape[1:]) for a in rows]
        g1, gw = jax.lax.map(lambda a: grams(*a), tuple(parts))
        g1, gw = g1.reshape((nb,) + g1.shape[2:]), gw.reshape((nb,) + gw.shape[2:])
    G1, Gw = g1.sum(0), gw.sum(0)
    Xv = X * vf[:, None]
    s = Xv.sum(0)
    sums = onehot.T @ Xv  # [C, d] class sums
    total = Xv.T @ Xv - jnp.outer(s, s) / n
    # sum_c (n_c X_c^T X_c - s_c s_c^T) / n: the same-class part of the all-ones weight.
    within = (Xv * (onehot @ counts)[:, None]).T @ Xv - sums.T @ sums
    S_lw = Gw
    S_lb = total - within / n + G1 / n - Gw
    return 0.5 * (S_lb + S_lb.T), 0.5 * (S_lw + S_lw.T)


#: relative floor of the within-class local scatter's eigenvalues (``generalized_eigh``'s float32
#: default, 10 sqrt(eps32)), whatever dtype the fit runs in
_FLOOR_RTOL = 10.0 * float(np.sqrt(np.finfo(np.float32).eps))


@in_float64
def fit_lfda(
    X,
    y,
    *,
    n_components: int | None = None,
    k: int = 7,
    embedding_type: str = "weighted",
) -> FitResult:
    """Fit LFDA: the top generalized eigenvectors of the local (between, within) scatter pair.

    Args:
      X: ``[n, d]`` finite features.
      y: ``[n]`` class labels (at least two classes; a singleton class gets no local affinity).
      n_components: ``k`` output dimensions (default ``d``); ``> d`` raises ``ValueError``.
      k: neighbour used for local scaling (``sigma_i`` = distance to the ``k``-th same-class
        neighbour, or to the nearest distinct one when the ``k``-th is a copy of ``x_i``), capped
        at ``class size - 1`` per class as in Sugiyama's code. metric-learn 0.7.0 caps ``k`` at
        ``d - 1`` and differs from the paper elsewhere too (its local scale is not each point's
        ``k``-th neighbour distance, and its between-class scatter adds ``2 S_lw``), so its
        metric differs from ours for any ``k``; we follow Sugiyama's formulas.
      embedding_type: ``"weighted"`` (eigenvectors times ``sqrt(max(lambda, 0))``, the paper's
        choice), ``"orthonormalized"`` (QR of the eigenvectors) or ``"plain"``.

    Returns:
      :class:`FitResult` with ``components [k, d]`` (rows: embedding directions), ``n_iter=0``,
      ``converged=True`` and ``objective`` = sum of the kept generalized eigenvalues.

    Raises:
      ValueError: bad ``X``, ``y``, ``n_components``, ``k`` or ``embedding_type``; no class with
        two distinct points (the local within-class scatter would be 0).

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> fit_lfda(X, y, n_components=2).components.shape
      (2, 4)

    Reference: Sugiyama, "Dimensionality Reduction of Multimodal Labeled Data by Local Fisher
    Discriminant Analysis", JMLR 2007.
    """
    require_concrete("fit_lfda", X, y)
    X_raw = X
    X, codes, n_classes = check_Xy(X, y, min_per_class=1)
    # centred (in float64): |x_i|^2 + |x_j|^2 - 2 x_i.x_j cancels catastrophically far from the
    # origin (iris moved by 1e7 gave another embedding, by 1e8 NaN)
    X = centred(X_raw, X)
    dim = check_n_components(n_components, X.shape[1])
    k = check_positive_int(k, "k")
    check_choice(embedding_type, "embedding_type", EMBEDDINGS)
    largest = int(np.bincount(codes).max())
    if largest < 2:
        raise ValueError("every class in y has a single sample: LFDA needs a class with two")
    # exact copies of a point share an id: their distance is 0 however the matmuls round
    _, points = np.unique(np.asarray(X), axis=0, return_inverse=True)
    points = points.reshape(-1).astype(np.int32)
    if len(np.unique(np.stack([codes, points]), axis=1)[0]) == n_classes:
        raise ValueError(
            "every class in y is a single point (all its samples are copies of one): the local "
            "within-class scatter is 0; LFDA needs a class with two distinct points"
        )
    k_eff = min(k, largest - 1)
    size = bucket_size(X.shape[0])
    Xp, valid = pad_rows(X, size)
    cp, _ = pad_rows(jnp.asarray(codes), size, fill=-1)
    pp, _ = pad_rows(jnp.asarray(points), size, fill=-1)
    S_lb, S_lw = _lfda_scatter(
        Xp, cp, valid, pp, k=k_eff, n_classes=n_classes, block=row_block(size)
    )
    # The eigenproblem in unit-free coordinates (each feature over its standard deviation; v = w / sd
    # maps back exactly) with the within-scatter floor of a float32 session: what is floored then
    # depends neither on the features' units nor on the dtype (in_float64 runs this in float64).
    sd = np.std(np.asarray(X, np.float64), axis=0)
    sd = jnp.asarray(np.where(sd > 0, sd, 1.0), X.dtype)
    outer = sd[:, None] * sd[None, :]
    vals, vecs = generalized_eigh(S_lb / outer, S_lw / outer, rtol=_FLOOR_RTOL)
    vecs = vecs / sd[:, None]
    vals, vecs = vals[:dim], vecs[:, :dim]
    if embedding_type == "weighted":
        vecs = vecs * jnp.sqrt(jnp.maximum(vals, 0.0))[None, :]
    elif embedding_type == "orthonormalized":
        vecs, _ = jnp.linalg.qr(vecs)
    return FitResult(vecs.T, 0, True, float(jnp.sum(vals)))
