"""Relevant Component Analysis (RCA): whitening of the within-chunklet covariance.

A *chunklet* is a small group of points known to belong to the same (unknown) class. RCA estimates the
within-chunklet covariance

.. math::

    C = \\frac{1}{|S|} \\sum_{j} \\sum_{i \\in S_j} (x_i - \\bar x_j)(x_i - \\bar x_j)^\\top,

(``S_j`` the points of chunklet ``j``, ``\\bar x_j`` its mean, ``S`` all chunked points; the same
``1/|S|`` normalisation as metric-learn) and whitens it: ``L = C^{-1/2}``, ``M = L^T L = C^{-1}``.
Directions in which points of one chunklet vary are irrelevant and get shrunk; the others get stretched.

With ``n_components = k < d`` the data are first projected on the ``k`` directions with the smallest
ratio of within-chunklet to total variance (Fisher-style: the smallest generalised eigenvalues of
``C v = mu T v``, ``T`` the covariance of the chunked points), then whitened in that subspace, so the
rows of ``L`` are ``v_i / sqrt(v_i^T C v_i)``.

Regularisation (where metric-learn fails with too few chunklets or returns NaN): with fewer chunked
degrees of freedom than features, or constant features, ``C`` is singular and ``C^{-1/2}`` does not
exist. ``C`` is then shrunk towards a scaled identity,

.. math::

    C_\\alpha = (1 - \\alpha) C + \\alpha \\, \\mu I, \\qquad \\mu = \\operatorname{tr}(C) / d,

with ``alpha = max(alpha_LW, (d - r) / d, 1e-3)``: ``alpha_LW`` the Ledoit-Wolf shrinkage computed
from the chunk-centred points and ``r`` the numerical rank of ``C`` (so the directions no chunklet
informs about get the average within-chunklet variance rather than an arbitrary tiny one), and a
``UserWarning`` says so. "Singular" is judged on ``C`` with every feature divided by its total
standard deviation (so units do not matter), as an eigenvalue ratio below ``100 d`` float32 epsilons
(so the verdict does not depend on the dtype: the fit runs in float64 either way). If ``C`` is zero up to rounding (``tr C <= 100 d eps tr T``: every
chunklet a single point or a set of identical points) ``mu`` falls back to the mean variance of the chunked points (or 1 when
all of them coincide) and ``alpha = 1``: the metric is a scaled identity. Whatever happens, the result
is finite. A fixed ``regularization=alpha`` in ``[0, 1]`` uses that shrinkage instead; with
``alpha = 0`` singular eigenvalues are floored at ``100 * d * eps * max eig`` (finite but huge scales).

Reference: A. Bar-Hillel, T. Hertz, N. Shental, D. Weinshall, "Learning a Mahalanobis Metric from
Equivalence Constraints", JMLR 6, 2005.
"""

from __future__ import annotations

import numbers
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_array, is_traced
from metriclearn.convex._common import (
    bucket_size,
    centred,
    check_n_components,
    generalized_eigh,
    in_float64,
    pad_rows,
)

__all__ = ["RCAResult", "fit_rca"]

_MIN_AUTO_SHRINKAGE = 1e-3


class RCAResult(NamedTuple):
    """Outcome of :func:`fit_rca`.

    Attributes:
      components: ``[k, d]`` linear map ``L`` (``x -> L x``).
      M: ``[d, d]`` Mahalanobis matrix ``L^T L``.
      n_iter: 1 (closed form).
      converged: True (closed form).
    """

    components: jax.Array
    M: jax.Array
    n_iter: int
    converged: bool


def _ledoit_wolf(Xc: jax.Array, n: jax.Array) -> jax.Array:
    """Ledoit-Wolf shrinkage towards ``tr(S)/d I`` of ``S = Xc^T Xc / n`` (rows already centred).

    Zero rows (masked-out samples) contribute nothing; ``n`` is the number of real rows.
    """
    d = Xc.shape[1]
    X2 = Xc * Xc
    diag = X2.sum(0) / n
    mu = diag.sum() / d
    beta_ = jnp.sum(X2.T @ X2)
    delta_ = jnp.sum((Xc.T @ Xc) ** 2) / n**2
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * diag.sum() + d * mu**2) / d
    beta = jnp.minimum(beta, delta)
    safe = jnp.where(delta > 0, delta, 1.0)
    return jnp.where(delta > 0, jnp.clip(beta / safe, 0.0, 1.0), 0.0)


def _inv_sqrt_psd(C: jax.Array, floor: jax.Array) -> jax.Array:
    """Symmetric ``C^{-1/2}`` with eigenvalues floored at ``floor`` (> 0)."""
    lam, U = jnp.linalg.eigh(0.5 * (C + C.T))
    lam = jnp.maximum(lam, floor)
    return (U * jax.lax.rsqrt(lam)[None, :]) @ U.T


@partial(jax.jit, static_argnames=("n_components", "auto"))
def _rca_core(X, chunks, alpha, *, n_components: int, auto: bool):
    """Jitted RCA. ``chunks`` in ``[-1, n)``; returns ``(L, M, alpha_used, rank_deficient, dof)``."""
    n, d = X.shape
    dtype = X.dtype
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    assigned = chunks >= 0
    seg = jnp.where(assigned, chunks, 0)
    w = assigned.astype(dtype)
    counts = jax.ops.segment_sum(w, seg, num_segments=n)
    sums = jax.ops.segment_sum(X * w[:, None], seg, num_segments=n)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    Xc = (X - means[seg]) * w[:, None]
    n_chunked = jnp.maximum(w.sum(), 1.0)
    n_chunks = jnp.sum(counts > 0)
    dof = n_chunked - n_chunks
    C = Xc.T @ Xc / n_chunked
    C = 0.5 * (C + C.T)

    # scale of the chunked data, used when C vanishes
    mean_all = (X * w[:, None]).sum(0) / n_chunked
    Xt = (X - mean_all) * w[:, None]
    T = Xt.T @ Xt / jnp.maximum(n_chunked - 1.0, 1.0)
    trC = jnp.trace(C)
    trT = jnp.trace(T)
    rtol = 100.0 * d * eps
    # "zero" up to rounding, relative to the spread (and the magnitude) of the chunked points
    x2 = jnp.sum(w * jnp.sum(X * X, axis=1)) / n_chunked
    t_zero = trT <= rtol * x2
    c_zero = (trC <= rtol * trT) | t_zero
    mu = jnp.where(c_zero, jnp.where(t_zero, 1.0, trT / d), trC / d)

    # Singular (to be shrunk) = ill-conditioned at float32 precision once every feature is put on
    # the scale of its total spread: a test independent of the units (raw wine's variances span 1e8,
    # which a plain eigenvalue ratio would call singular) and of the dtype the fit runs in
    # (in_float64 runs it in float64; breast cancer's C, full rank but ill-conditioned, is shrunk as
    # in a float32 session).
    spread = jnp.sqrt(jnp.maximum(jnp.diag(T), tiny))
    lam = jnp.linalg.eigvalsh(C / (spread[:, None] * spread[None, :]))
    lam_max = jnp.maximum(lam[-1], 0.0)
    cond_rtol = 100.0 * d * float(np.finfo(np.float32).eps)
    singular = (lam[0] <= cond_rtol * lam_max) | c_zero
    if auto:
        rank = jnp.sum(lam > cond_rtol * lam_max)
        # in X's dtype: (d - rank) / d is float64 under x64 and made a float32 fit float64
        lw = jnp.maximum(_ledoit_wolf(Xc, n_chunked), ((d - rank) / d).astype(dtype))
        lw = jnp.maximum(lw, _MIN_AUTO_SHRINKAGE)
        a = jnp.where(c_zero, 1.0, jnp.where(singular, lw, 0.0))
    else:
        a = jnp.where(c_zero, 1.0, alpha)
    C_reg = (1.0 - a) * C + a * mu * jnp.eye(d, dtype=dtype)
    floor = jnp.maximum(rtol * jnp.maximum(jnp.linalg.eigvalsh(C_reg)[-1], 0.0), tiny)

    if n_components >= d:
        L = _inv_sqrt_psd(C_reg, floor)
    else:
        # smallest generalised eigenvalues of C v = mu T v (generalized_eigh sorts descending)
        lam_c, U = jnp.linalg.eigh(C_reg)
        C_reg = (U * jnp.maximum(lam_c, floor)[None, :]) @ U.T
        gmu, V = generalized_eigh(C_reg, T)
        V = V[:, ::-1][:, :n_components]
        quad = jnp.sum(V * (C_reg @ V), axis=0)
        L = (V * jax.lax.rsqrt(jnp.maximum(quad, tiny))[None, :]).T
    M = L.T @ L
    M = 0.5 * (M + M.T)
    return L, M, a, singular, dof


@in_float64
def fit_rca(
    X,
    chunks,
    *,
    n_components: int | None = None,
    regularization: float | str = "auto",
) -> RCAResult:
    """Relevant Component Analysis: whiten the within-chunklet covariance (closed form, jitted).

    ``L = C^{-1/2}`` with ``C`` the covariance of the points around their chunklet means
    (``1/|S|`` normalisation); with ``n_components = k < d``, ``L``'s rows are the ``k`` directions of
    smallest within-chunklet / total variance ratio, each scaled to unit within-chunklet variance.
    A singular ``C`` (few chunklets, constant features) is shrunk towards ``tr(C)/d I`` with a
    warning; see the module docstring. The chunklet statistics are segment sums by chunk id (no loop
    over chunklets); rows are padded (id ``-1``) to a power-of-two bucket, so one compilation serves
    every ``n`` in a bucket for a given ``(d, n_components)``.

    Args:
      X: ``[n, d]`` finite features.
      chunks: ``[n]`` integer chunk id per sample, ``-1`` for samples in no chunklet (as produced by
        :func:`metriclearn.constraints.chunklets`). Ids need not be contiguous.
      n_components: output dimension ``k`` (``None`` = ``d``).
      regularization: ``"auto"`` (default: shrinkage ``max(Ledoit-Wolf, (d - rank C)/d, 1e-3)``,
        only when ``C`` is singular) or a float ``alpha`` in ``[0, 1]`` always applied,
        ``C_alpha = (1 - alpha) C + alpha tr(C)/d I``.

    Returns:
      :class:`RCAResult` ``(components [k, d], M [d, d], n_iter=1, converged=True)``.

    Raises:
      ValueError: ``X`` not 2-D or not finite; ``chunks`` not ``[n]`` integers ``>= -1``; no
        chunklet at all (every id ``-1``); bad ``n_components`` or ``regularization``.

    Warns:
      UserWarning: when ``C`` was singular (or zero) and had to be regularised.

    Example:
      >>> X = jax.random.normal(jax.random.key(0), (20, 3))
      >>> chunks = jnp.repeat(jnp.arange(10), 2)          # ten chunklets of two points
      >>> res = fit_rca(X, chunks)
      >>> Z = X @ res.components.T                          # whitened within-chunklet scatter

    Reference: Bar-Hillel et al., "Learning a Mahalanobis Metric from Equivalence Constraints",
    JMLR 2005.
    """
    X_raw = X
    X = check_array(X, "X", ndim=2, min_rows=1, min_features=1)
    # centred (in float64): the test for points coinciding up to rounding is relative to their
    # magnitude, so iris moved by 1e7 was taken for a degenerate set (scaled identity, warning)
    X = centred(X_raw, X)
    n, d = X.shape
    k = check_n_components(n_components, d)
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(
                f"unknown regularization {regularization!r}; valid: 'auto' or a float in [0, 1]"
            )
        auto, alpha = True, 0.0
    else:
        try:
            if isinstance(regularization, bool | np.bool_):  # float(True) = 1: not a weight
                raise TypeError
            alpha = float(regularization)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"regularization must be 'auto' or a float in [0, 1], got {regularization!r}"
            ) from err
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"regularization must be in [0, 1], got {alpha}")
        auto = False

    traced = is_traced(X) or is_traced(chunks)
    if traced:
        ids, X_in = jnp.asarray(chunks, dtype=jnp.int32), X
        if ids.shape != (n,):
            raise ValueError(f"chunks must have shape ({n},) to match X, got {tuple(ids.shape)}")
        # ids to 0..K-1 (segment ids must be below n: an id >= n was dropped from the sums)
        _, inv = jnp.unique(ids, return_inverse=True, size=n)
        ids = jnp.where(ids >= 0, inv.reshape(-1), -1)
    else:
        raw = np.asarray(chunks)
        if raw.ndim != 1 or raw.shape[0] != n:
            raise ValueError(
                f"chunks must have shape ({n},) to match X {tuple(X.shape)}, got {tuple(raw.shape)}"
            )
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
                raise ValueError("chunks must hold integer chunk ids (or -1), got non-integers")
        elif raw.dtype == object and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in raw
        ):
            pass  # integer ids in an object array (as scikit-learn's checks pass them)
        elif raw.dtype.kind not in "iu":
            raise ValueError(f"chunks must hold integer chunk ids, got dtype {raw.dtype}")
        raw = raw.astype(np.int64)
        if raw.size and raw.min() < -1:
            raise ValueError(f"chunks must be >= -1 (-1 = no chunklet), got minimum {raw.min()}")
        if not np.any(raw >= 0):
            raise ValueError("chunks contains no chunklet: every id is -1 (need at least one >= 0)")
        # only chunked rows enter RCA: keep those (a few hundred of, say, 20,000 points), relabel
        # their ids to 0..K-1 (segment ids below the row count: a static number of segments), then
        # pad to a bucketed size with id -1 (ignored exactly) so folds of slightly different sizes
        # share one compiled program
        rows = np.flatnonzero(raw >= 0)
        uniq, inv = np.unique(raw[rows], return_inverse=True)
        n_chunks = uniq.size
        X_in = X[jnp.asarray(rows)] if rows.size < n else X
        size = bucket_size(rows.size)
        X_in, _ = pad_rows(X_in, size)
        ids = np.full(size, -1, np.int32)
        ids[: rows.size] = inv.reshape(-1)
        ids = jnp.asarray(ids)
    L, M, a, singular, dof = _rca_core(
        X_in, ids, jnp.asarray(alpha, X.dtype), n_components=k, auto=auto
    )
    if traced:  # no chunklet cannot be refused here: NaN, not the identity of an empty fit
        none = ~jnp.any(ids >= 0)
        L, M = jnp.where(none, jnp.nan, L), jnp.where(none, jnp.nan, M)
    if not traced and bool(singular):
        warnings.warn(
            f"RCA: the within-chunklet covariance is singular or zero ({n_chunks} chunklet(s), "
            f"{int(dof)} within-chunklet degree(s) of freedom for d={d} features); it was shrunk "
            f"towards a scaled identity with alpha={float(a):.3g}. More or larger chunklets, or "
            f"removing constant features, give a better-determined metric.",
            UserWarning,
            stacklevel=3,  # past the in_float64 wrapper
        )
    return RCAResult(components=L, M=M, n_iter=1, converged=True)
