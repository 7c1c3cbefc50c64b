"""Input checks shared by the public entry points (validate at the boundary, never in the hot path).

Every check raises ``ValueError`` naming the argument and what was expected, so bad input never turns
into a silent NaN further down. These helpers run on concrete (non-traced) arrays only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype() -> np.dtype:
    """The default float dtype: float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return np.dtype(np.float64) if jax.config.jax_enable_x64 else np.dtype(np.float32)


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value inside ``jit``/``vmap``/``grad`` (skip value checks)."""
    return isinstance(x, jax.core.Tracer)


def check_array(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    min_rows: int = 0,
    allow_nonfinite: bool = False,
    dtype=None,
) -> jax.Array:
    """Convert ``x`` to a floating JAX array and check its rank and finiteness.

    Args:
      x: array-like.
      name: argument name used in error messages.
      ndim: required rank (or tuple of allowed ranks); ``None`` accepts any.
      min_rows: minimum size of the first axis.
      allow_nonfinite: skip the NaN/inf check.
      dtype: target dtype; default keeps a floating input's dtype, else ``float_dtype()``.

    Returns:
      ``jax.Array`` of a floating dtype.
    """
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if is_traced(x):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"{name} could not be converted to an array: {err}") from err
        # ml_dtypes' bfloat16 / float8 have NumPy kind "V" but are floating types
        if arr.dtype == object or (
            arr.dtype.kind in "USV" and not jnp.issubdtype(arr.dtype, jnp.floating)
        ):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind == "c":
            raise ValueError(f"{name} must be real, got complex dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else float_dtype()
        if dtype == np.float64 and not jax.config.jax_enable_x64:
            dtype = np.float32
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got shape {tuple(arr.shape)}")
    if arr.ndim and arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got shape {tuple(arr.shape)}")
    if not allow_nonfinite and not is_traced(arr):
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return jnp.asarray(arr, dtype=dtype)


def check_same_shape(a, b, name_a: str, name_b: str) -> None:
    """Raise unless ``a`` and ``b`` have identical shapes."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_dim(a, b, name_a: str, name_b: str) -> None:
    """Raise unless the last axes of ``a`` and ``b`` agree (feature dimension)."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of features (last axis), got "
            f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_labels(
    y,
    n: int | None = None,
    *,
    name: str = "y",
    min_classes: int = 2,
) -> np.ndarray:
    """Check a 1-D label vector; return it as a NumPy array of class indices 0..C-1.

    Args:
      y: labels of any hashable dtype, shape ``[n]``.
      n: required length (number of samples), or ``None``.
      name: argument name for messages.
      min_classes: minimum number of distinct classes (2 for anything that needs negatives).

    Returns:
      ``np.ndarray`` of ``int32`` codes, shape ``[n]``.
    """
    if y is None:
        raise ValueError(f"{name} is required, got None")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n} samples")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or infinite labels")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < min_classes:
        raise ValueError(
            f"{name} must contain at least {min_classes} classes, got {len(classes)} "
            f"({classes.tolist()[:5]})"
        )
    return codes.astype(np.int32)


def check_choice(value: str, name: str, choices) -> str:
    """Raise ``ValueError`` listing the valid choices unless ``value`` is one of them."""
    if value not in choices:
        valid = ", ".join(sorted(str(c) for c in choices))
        raise ValueError(f"unknown {name} {value!r}; valid: {valid}")
    return value


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Raise unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
