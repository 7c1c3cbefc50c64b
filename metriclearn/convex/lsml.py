"""Least Squared-residual Metric Learning (LSML) from relative comparisons (quadruplets).

A quadruplet ``(a, b, c, d)`` states that ``a`` and ``b`` are more similar than ``c`` and ``d``:
``d_M(a, b) < d_M(c, d)``. LSML (Liu, Wang, Hua, Zhang, Hua, ICDM 2012) penalises the squared residual of
each violated comparison and stays close to a prior metric ``M0`` in LogDet divergence:

.. math::

    \\min_{M \\succ 0} \\; \\sum_t w_t \\big[d_M(a_t, b_t) - d_M(c_t, d_t)\\big]_+^2
    + D_{ld}(M, M_0), \\qquad d_M(x, y) = \\sqrt{(x - y)^\\top M (x - y)},

``D_ld(M, M0) = tr(M M0^-1) - logdet(M M0^-1) - d``, the weights normalised to ``sum_t w_t = 1`` (as
metric-learn; distances are *not* squared inside the residual). The objective is minimised with the
projected-gradient solver of :mod:`metriclearn.solver` (backtracking line search, projection onto
``{M >= floor I}`` so the LogDet term stays finite). The per-quadruplet residual is written for one
quadruplet and vmapped; the whole loop is one jitted ``while_loop``, compiled once per shape.

Degenerate quadruplets (``a = b`` or all four points equal) contribute no loss (the safe square root
gives zero gradient); if every quadruplet is degenerate the result is the prior itself.

Reference: E. Y. Liu, Z. Guo, X. Zhang, V. Jojic, W. Wang, "Metric Learning from Relative Comparisons
by Minimizing Squared Residual", ICDM 2012.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_array, is_traced, require_concrete
from metriclearn.convex._common import tuple_differences
from metriclearn.distances import safe_sqrt
from metriclearn.regularizers import logdet_divergence_whitened, prior_matrix
from metriclearn.solver import projected_gradient, squared_mahalanobis

__all__ = ["LSMLResult", "fit_lsml", "lsml_loss"]

_FLOOR = 1e-8  # eigenvalue floor relative to the prior's mean eigenvalue (metric-learn: 1e-8)


class LSMLResult(NamedTuple):
    """Outcome of :func:`fit_lsml`.

    Attributes:
      M: ``[d, d]`` learned positive-definite Mahalanobis matrix.
      n_iter: solver iterations run.
      converged: whether the solver's stopping test was met before ``max_iter``.
    """

    M: jax.Array
    n_iter: int
    converged: bool


def _residual_one(M, v_ab, v_cd):
    """Squared residual ``[d_M(a, b) - d_M(c, d)]_+^2`` of one quadruplet (differences given)."""
    d_ab = safe_sqrt(squared_mahalanobis(M, v_ab))
    d_cd = safe_sqrt(squared_mahalanobis(M, v_cd))
    return jnp.maximum(d_ab - d_cd, 0.0) ** 2


def lsml_loss(M: jax.Array, v_ab: jax.Array, v_cd: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted sum of squared residuals of violated comparisons (the LSML data term).

    Args:
      M: ``[d, d]`` PSD matrix.
      v_ab: ``[m, d]`` differences ``a - b`` (should be the closer pairs).
      v_cd: ``[m, d]`` differences ``c - d``.
      weights: ``[m]`` non-negative weights.

    Returns:
      scalar ``sum_t w_t [d_M(a_t, b_t) - d_M(c_t, d_t)]_+^2``.
    """
    per = jax.vmap(_residual_one, in_axes=(None, 0, 0))(M, v_ab, v_cd)
    return jnp.sum(weights * per)


def fit_lsml(
    quadruplets,
    *,
    weights=None,
    prior="identity",
    max_iter: int = 1000,
    tol: float = 1e-3,
    key=None,
) -> LSMLResult:
    """LSML: fit ``M`` to quadruplet comparisons with a LogDet pull towards a prior (jitted solver).

    Minimises ``sum_t w_t [d_M(a_t, b_t) - d_M(c_t, d_t)]_+^2 + D_ld(M, M0)`` (weights normalised to
    sum to one) with :func:`metriclearn.solver.projected_gradient` (``regularizer="logdet"``,
    ``lam=1``; the divergence by :func:`~metriclearn.regularizers.logdet_divergence_whitened`), starting from ``M0``;
    see the module docstring.

    Args:
      quadruplets: ``[m, 4, d]`` points ``(a, b, c, d)`` meaning ``d(a, b) < d(c, d)``.
      weights: ``[m]`` non-negative finite weights (not all zero); ``None`` = uniform.
      prior: ``"identity"``, ``"covariance"`` (inverse covariance of the distinct quadruplet points,
        ridge-regularised so constant features stay finite), ``"random"`` (uses ``key``) or a
        symmetric positive-definite ``[d, d]`` array.
      max_iter: solver iteration cap.
      tol: relative tolerance of the solver's stopping test (objective change or step size).
      key: PRNG key for ``prior="random"``.

    Returns:
      :class:`LSMLResult` ``(M [d, d], n_iter, converged)``.

    Raises:
      ValueError: ``quadruplets`` not ``[m, 4, d]`` or not finite, empty, bad ``weights`` (shape,
        negative, NaN, all zero), a prior that is not symmetric positive definite or of the wrong
        shape, unknown prior name, bad ``max_iter``/``tol``.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> from metriclearn import constraints, psd
      >>> X, y = load_iris(return_X_y=True)
      >>> quads = constraints.quadruplets(0, y, n_quadruplets=200)   # [m, 4] indices
      >>> res = fit_lsml(X[quads])
      >>> Z = X @ psd.factor(res.M).T   # the data in the learned metric's coordinates
      >>> res.M.shape, Z.shape
      ((4, 4), (150, 4))

    Reference: Liu et al., "Metric Learning from Relative Comparisons by Minimizing Squared
    Residual", ICDM 2012.
    """
    require_concrete("fit_lsml", quadruplets)
    Q = check_array(quadruplets, "quadruplets", ndim=3)
    if Q.shape[1] != 4:
        raise ValueError(
            f"quadruplets must have shape [m, 4, d] (a, b, c, d with d(a, b) < d(c, d)), "
            f"got {tuple(Q.shape)}"
        )
    m, _, d = Q.shape
    if m == 0:
        raise ValueError("quadruplets is empty: the constraint set needs at least one quadruplet")
    if d == 0:
        raise ValueError(f"quadruplets must have at least one feature, got shape {tuple(Q.shape)}")
    if weights is None:
        w = jnp.full((m,), 1.0 / m, dtype=Q.dtype)
    else:
        w = check_array(weights, "weights", ndim=1, dtype=Q.dtype)
        if w.shape[0] != m:
            raise ValueError(
                f"weights must have shape ({m},) to match quadruplets {tuple(Q.shape)}, "
                f"got {tuple(w.shape)}"
            )
        if not is_traced(w):
            wn = np.asarray(w)
            if np.any(wn < 0):
                raise ValueError("weights must be non-negative")
            if not wn.sum() > 0:
                raise ValueError("weights must not all be zero")
        w = w / jnp.sum(w)

    if isinstance(prior, str) and prior == "covariance" and not is_traced(Q):
        pts = np.unique(np.asarray(Q).reshape(-1, d), axis=0)
        X_prior = jnp.asarray(pts, Q.dtype)
    else:
        X_prior = Q.reshape(-1, d)
    M0 = prior_matrix(prior, X_prior, key=key, name="prior")
    M0_64 = np.asarray(M0, np.float64)
    floor = _FLOOR * float(np.trace(M0_64)) / d
    # the prior's inverse Cholesky factor, once on the host: no triangular solve per solver step
    W = jnp.asarray(np.linalg.inv(np.linalg.cholesky(0.5 * (M0_64 + M0_64.T))), Q.dtype)

    v_ab, v_cd = tuple_differences(quadruplets, Q, ((0, 1), (2, 3)))  # float64 on the host
    res = projected_gradient(
        lsml_loss,
        M0,
        args=(v_ab, v_cd, w),
        regularizer=logdet_divergence_whitened,
        regularizer_kwargs={"M0": M0, "W": W},
        lam=1.0,
        max_iter=max_iter,
        tol=tol,
        min_eigenvalue=floor,
    )
    return LSMLResult(M=res.M, n_iter=int(res.n_iter), converged=bool(res.converged))
