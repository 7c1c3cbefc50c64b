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
import numpy as np

from metriclearn._validation import check_array, check_flags, require_concrete
from metriclearn.convex._common import in_float64

__all__ = ["fit_covariance"]


@jax.jit
def _inverse_covariance(X):
    n, d = X.shape
    Xc = X - X.mean(0)
    cov = Xc.T @ Xc / (n - 1)
    cov = 0.5 * (cov + cov.T)
    # The rank is judged on the correlation matrix at float32 resolution (as RCA and LFDA judge
    # theirs): the verdict depends neither on the units nor on the dtype (the fit runs in float64).
    # Judged on the covariance at float64 precision, [a, b, a + b] cast to float32 kept the
    # rounding of a + b as a direction of relative variance 1e-9, stretched 4e4 times.
    sd = jnp.sqrt(jnp.diag(cov))
    sd = jnp.where(sd > 0, sd, 1.0)
    w, V = jnp.linalg.eigh(cov / (sd[:, None] * sd[None, :]))
    rtol = float(np.finfo(np.float32).eps)
    keep = w > rtol * jnp.maximum(w[-1], jnp.finfo(X.dtype).tiny)
    # the covariance without the dropped directions, B B^T, pseudo-inverted: U S^-2 U^T
    B = (sd[:, None] * V) * jnp.sqrt(jnp.where(keep, w, 0.0))[None, :]
    U, S, _ = jnp.linalg.svd(B)
    ok = jnp.arange(d) < jnp.sum(keep)
    inv_sqrt = jnp.where(ok, 1.0 / jnp.where(ok, S, 1.0), 0.0)
    L = (U * inv_sqrt).T
    M = L.T @ L
    return 0.5 * (M + M.T), L, jnp.max(jnp.ptp(X, axis=0)) > 0


@in_float64
def fit_covariance(X, *, return_factor: bool = False):
    """Inverse (pseudo-inverse if singular) sample covariance of ``X``, a PSD metric ``M [d, d]``.

    .. math::  \\Sigma = \\frac{1}{n-1} \\sum_i (x_i - \\bar x)(x_i - \\bar x)^T, \\qquad
               M = \\Sigma^{+}

    Args:
      X: ``[n, d]`` finite features, ``n >= 2``.

      return_factor: also return ``L [d, d]`` with ``L^T L = M`` (``Lambda^{-1/2} V^T``, ``Lambda``
        and ``V`` the eigenpairs of the covariance kept); a bool.

    Returns:
      ``M [d, d]``, symmetric PSD and finite; ``(M, L)`` with ``return_factor``. Directions whose
      eigenvalue of the correlation matrix (each feature over its standard deviation) is below
      float32 epsilon times the largest are treated as having no variance, whatever the units
      and the dtype of ``X`` (float32 rounding of exactly collinear features is no signal).

    Raises:
      ValueError: ``X`` not ``[n, d]`` with ``n >= 2``, not finite, or constant in every feature;
        ``return_factor`` not a bool.

    Example:
      >>> import numpy as np
      >>> M = fit_covariance(np.random.default_rng(0).normal(size=(50, 3)))
      >>> M.shape
      (3, 3)
    """
    check_flags(return_factor=return_factor)  # a string "False" is truthy
    require_concrete("fit_covariance", X)
    X = check_array(X, "X", ndim=2, min_rows=2, min_features=1)
    M, L, varies = _inverse_covariance(X)
    if not bool(varies):  # checked on the device: no second pass over X on the host
        raise ValueError("X has zero variance in every feature: its covariance is 0")
    return (M, L) if return_factor else M
