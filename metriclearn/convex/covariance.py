"""Covariance metric: ``M`` is the (pseudo-)inverse of the data covariance (unsupervised).

The Mahalanobis distance in its original sense: ``d(x, y)^2 = (x - y)^T Sigma^+ (x - y)``. A singular
covariance (constant or collinear features, e.g. the blank border pixels of digits) is
pseudo-inverted on its range, so ``M`` is always finite and PSD; directions with no variance get
zero weight.

Reference: P. C. Mahalanobis, "On the generalised distance in statistics", 1936.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metriclearn._validation import check_array
from metriclearn.convex._common import in_float64

__all__ = ["fit_covariance"]


@jax.jit
def _inverse_covariance(X):
    n = X.shape[0]
    Xc = X - X.mean(0)
    cov = Xc.T @ Xc / (n - 1)
    w, V = jnp.linalg.eigh(0.5 * (cov + cov.T))
    rtol = X.shape[1] * 10.0 * jnp.finfo(X.dtype).eps
    keep = w > rtol * jnp.maximum(w[-1], jnp.finfo(X.dtype).tiny)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    M = (V * inv) @ V.T
    return 0.5 * (M + M.T), (V * jnp.sqrt(inv)).T, jnp.max(jnp.ptp(X, axis=0)) > 0


@in_float64
def fit_covariance(X, *, return_factor: bool = False):
    """Inverse (pseudo-inverse if singular) sample covariance of ``X``, a PSD metric ``M [d, d]``.

    .. math::  \\Sigma = \\frac{1}{n-1} \\sum_i (x_i - \\bar x)(x_i - \\bar x)^T, \\qquad
               M = \\Sigma^{+}

    Args:
      X: ``[n, d]`` finite features, ``n >= 2``.

      return_factor: also return ``L [d, d]`` with ``L^T L = M`` (``Lambda^{-1/2} V^T`` from the same
        eigendecomposition, so no second one is needed).

    Returns:
      ``M [d, d]``, symmetric PSD and finite (eigenvalues of ``Sigma`` below
      ``10 d eps * max eig`` are treated as zero); ``(M, L)`` with ``return_factor``.

    Example:
      >>> import numpy as np
      >>> M = fit_covariance(np.random.default_rng(0).normal(size=(50, 3)))
      >>> M.shape
      (3, 3)
    """
    X = check_array(X, "X", ndim=2, min_rows=2, min_features=1)
    M, L, varies = _inverse_covariance(X)
    if not bool(varies):  # checked on the device: no second pass over X on the host
        raise ValueError("X has zero variance in every feature: its covariance is 0")
    return (M, L) if return_factor else M
