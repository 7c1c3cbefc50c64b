"""Paired and pairwise distances, divergences and metric-axiom checks.

(Core kernels below are shared by evaluation, losses and miners; the rest of the module builds on them.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_sqrt(x: jax.Array, eps: float = 0.0) -> jax.Array:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= eps``.

    The double ``jnp.where`` keeps the untaken branch from producing an infinite cotangent.
    """
    positive = x > eps
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.sqrt(safe), 0.0)


def pairwise_sqeuclidean(X: jax.Array, Y: jax.Array | None = None) -> jax.Array:
    """Squared Euclidean distances between rows, through ``|x|^2 + |y|^2 - 2 x.y``.

    Clamped at zero; when ``Y`` is None the diagonal is exactly zero.

    Args:
      X: ``[n, d]``.
      Y: ``[m, d]`` or None (then ``Y = X``).

    Returns:
      ``[n, m]`` (or ``[n, n]``).
    """
    same = Y is None
    Y = X if same else Y
    xx = jnp.sum(X * X, axis=-1)
    yy = xx if same else jnp.sum(Y * Y, axis=-1)
    d2 = xx[:, None] + yy[None, :] - 2.0 * (X @ Y.T)
    d2 = jnp.maximum(d2, 0.0)
    if same:
        d2 = d2 * (1.0 - jnp.eye(X.shape[0], dtype=d2.dtype))
    return d2


def pairwise_euclidean(X: jax.Array, Y: jax.Array | None = None) -> jax.Array:
    """Euclidean distances between rows (safe sqrt of :func:`pairwise_sqeuclidean`)."""
    return safe_sqrt(pairwise_sqeuclidean(X, Y))
