"""Reductions of per-item losses (per pair, per triplet, per anchor) to a scalar.

Each reducer takes the per-item losses and optional non-negative ``weights`` of the same shape (a 0/1
mask from a miner, or multiplicities / importance weights) and returns a scalar. Items with weight 0
do not count at all (even an infinite or NaN loss in a masked slot); a NaN loss with non-zero weight
gives NaN in every reducer. Integer losses are reduced in the default float dtype. Every reducer is
jittable and NaN-safe: an empty selection gives exactly 0 with finite (zero) gradients.

    mean(l, w)        = sum_i w_i l_i / sum_i w_i                        (0 if sum_i w_i = 0)
    sum(l, w)         = sum_i w_i l_i
    avg_nonzero(l, w) = sum_i w_i l_i / sum_i w_i [l_i > 0]              (0 if no l_i > 0)

``avg_nonzero`` is pytorch-metric-learning's ``AvgNonZeroReducer`` (a ``ThresholdReducer`` with
``low=0``); with integer weights it equals that reducer applied to the list in which item ``i`` is
repeated ``w_i`` times, which is how duplicated pairs from a triplet miner are counted there.

Example::

    >>> import jax.numpy as jnp
    >>> from metriclearn import reducers
    >>> float(reducers.avg_nonzero(jnp.array([0.0, 1.0, 3.0])))
    2.0
    >>> float(reducers.reduce(jnp.array([1.0, 3.0]), "mean", weights=jnp.array([1.0, 0.0])))
    1.0
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from metriclearn._validation import check_choice, is_traced

__all__ = ["REDUCERS", "avg_nonzero", "get", "mean", "reduce", "safe_divide", "sum"]


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den > 0``, else 0, with finite gradients on both branches."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _prepare(losses: jax.Array, weights: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Floating losses (integer/bool ones go to the default float, so fractional weights are not
    truncated) and weights of the same dtype and shape; ``ValueError`` for weights that are negative
    or not broadcastable to the shape of ``losses``."""
    losses = jnp.asarray(losses)
    if not jnp.issubdtype(losses.dtype, jnp.inexact):
        losses = losses.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if weights is None:
        return losses, jnp.ones_like(losses)
    w = jnp.asarray(weights, dtype=losses.dtype)
    try:  # shapes are static: checked under jit too
        fits = jnp.broadcast_shapes(w.shape, losses.shape) == losses.shape
    except ValueError:
        fits = False
    if not fits:  # JAX said only "Incompatible types for broadcasting"
        raise ValueError(
            f"weights must be broadcastable to the shape of losses {tuple(losses.shape)}, got "
            f"shape {tuple(w.shape)}"
        )
    if not is_traced(w) and not bool(jnp.all(w >= 0)):  # NaN fails too
        # mean([1, 2], [1, -1]) was silently 0 (the weights sum to 0)
        raise ValueError(f"weights must be non-negative (NaN-free), got min {float(jnp.min(w))}")
    return losses, jnp.broadcast_to(w, losses.shape)


def _weighted(losses: jax.Array, w: jax.Array) -> jax.Array:
    """``w * l`` with weight-0 items exactly 0 (a masked inf / NaN loss does not count); finite
    losses keep ``w * l`` as is, so the gradient w.r.t. the weights is ``l`` even at ``w = 0``."""
    return w * jnp.where(jnp.isfinite(losses) | (w != 0), losses, 0.0)


def mean(losses: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted mean ``sum(w * l) / sum(w)`` over all items; 0 when the weights sum to 0.

    Args:
      losses: per-item losses, any shape.
      weights: optional non-negative weights (or 0/1 mask), broadcastable to ``losses``.

    Returns:
      Scalar.

    Raises:
      ValueError: ``weights`` negative (or NaN) or not broadcastable to the shape of ``losses``.
    """
    losses, w = _prepare(losses, weights)
    return safe_divide(jnp.sum(_weighted(losses, w)), jnp.sum(w))


def sum(losses: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted sum ``sum(w * l)``.

    Args:
      losses: per-item losses, any shape.
      weights: optional non-negative weights (or 0/1 mask), broadcastable to ``losses``.

    Returns:
      Scalar.

    Raises:
      ValueError: ``weights`` negative (or NaN) or not broadcastable to the shape of ``losses``.
    """
    losses, w = _prepare(losses, weights)
    return jnp.sum(_weighted(losses, w))


def avg_nonzero(losses: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean over the strictly positive losses: ``sum(w * l) / sum(w * [l > 0])``; 0 if none.

    As pytorch-metric-learning's ``AvgNonZeroReducer``. Losses are assumed non-negative (hinge-type);
    weights act as multiplicities.

    Args:
      losses: per-item losses, any shape.
      weights: optional non-negative weights (or 0/1 mask), broadcastable to ``losses``.

    Returns:
      Scalar.

    Raises:
      ValueError: ``weights`` negative (or NaN) or not broadcastable to the shape of ``losses``.
    """
    losses, w = _prepare(losses, weights)
    # NaN counts as "nonzero", so a NaN loss that carries weight surfaces (as in mean and sum)
    counted = ~(losses <= 0) & (w > 0)
    # masked before the product: w * inf in a masked slot gave a NaN weight gradient (0 * inf)
    num = jnp.sum(w * jnp.where(counted, losses, 0.0))
    den = jnp.sum(jnp.where(counted, w, 0.0))
    return safe_divide(num, den)


REDUCERS: dict[str, Callable[..., jax.Array]] = {
    "mean": mean,
    "sum": sum,
    "avg_nonzero": avg_nonzero,
}


def get(name: str) -> Callable[..., jax.Array]:
    """The reducer called ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    check_choice(name, "reduction", REDUCERS)
    return REDUCERS[name]


def reduce(losses: jax.Array, reduction: str, weights: jax.Array | None = None) -> jax.Array:
    """Apply the reducer named ``reduction`` (a key of :data:`REDUCERS`) to ``losses``.

    Args:
      losses: per-item losses, any shape.
      reduction: ``"mean"``, ``"sum"`` or ``"avg_nonzero"``.
      weights: optional weights/mask broadcastable to ``losses``.

    Returns:
      Scalar.
    """
    return get(reduction)(losses, weights)
