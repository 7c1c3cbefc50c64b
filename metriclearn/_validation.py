"""Input checks shared by the public entry points (validate at the boundary, never in the hot path).

Every check raises ``ValueError`` naming the argument and what was expected, so bad input never turns
into a silent NaN further down. These helpers run on concrete (non-traced) arrays only.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype() -> np.dtype:
    """The default float dtype: float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return np.dtype(np.float64) if jax.config.jax_enable_x64 else np.dtype(np.float32)


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value inside ``jit``/``vmap``/``grad`` (skip value checks)."""
    return isinstance(x, jax.core.Tracer)


def require_concrete(name: str, *values) -> None:
    """``ValueError`` when any array among ``values`` (pytrees too) is a ``jit`` / ``vmap`` tracer:
    ``name`` runs on the host (NumPy: sampling, sorting, neighbour selection, closed forms checked
    on the host), so under ``jit`` it would fail with a raw tracer error."""
    if any(is_traced(leaf) for leaf in jax.tree.leaves(values)):
        raise ValueError(
            f"{name} runs on the host (NumPy) and needs concrete arrays, not jax.jit / vmap "
            "tracers; call it outside jit"
        )


def as_key(key, name: str = "key") -> jax.Array:
    """A typed ``jax.random`` key from a key (typed, or raw ``uint32`` key data) or an int seed.

    Int seeds (Python, NumPy, or 0-d integer arrays) must lie in ``[0, 2**32)``: ``jax.random.key``
    keeps only 32 bits of a seed unless x64 is on, so ``1`` and ``2**32 + 1`` would give the same
    draws. Traced keys (inside ``jit`` / ``vmap``) pass unchecked.
    """
    bad = f"{name} must be a jax.random key or an int seed in [0, 2**32), got {key!r}"
    if key is None or isinstance(key, bool | float | complex | str | bytes):
        raise ValueError(bad)
    if isinstance(key, int | np.integer):
        if not 0 <= int(key) < 2**32:
            raise ValueError(bad)
        return jax.random.key(int(key))
    if is_traced(key):
        return (
            key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
        )
    try:
        arr = key if isinstance(key, jax.Array) else jnp.asarray(key)
    except (TypeError, ValueError) as err:
        raise ValueError(bad) from err
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return arr
    if arr.ndim == 0 and jnp.issubdtype(arr.dtype, jnp.integer) and arr.dtype != bool:
        return as_key(int(arr), name)
    if arr.dtype == jnp.uint32 and arr.ndim >= 1:
        try:
            return jax.random.wrap_key_data(arr)
        except (TypeError, ValueError) as err:
            raise ValueError(bad) from err
    raise ValueError(bad)


def check_array(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    min_rows: int = 0,
    min_features: int = 0,
    allow_nonfinite: bool = False,
    dtype=None,
    allow_overflow: bool = False,
) -> jax.Array:
    """Convert ``x`` to a floating JAX array and check its rank and finiteness.

    Finiteness is checked after the cast to the target dtype: finite values beyond its range (a
    float64 ``1e39`` cast to float32 becomes ``inf``) raise ``ValueError`` too.

    Args:
      x: array-like.
      name: argument name used in error messages.
      ndim: required rank (or tuple of allowed ranks); ``None`` accepts any.
      min_rows: minimum size of the first axis.
      min_features: minimum size of the last axis of a 2-D or higher array (1: no ``[n, 0]`` data,
        where every distance is 0).
      allow_nonfinite: skip the NaN/inf check.
      dtype: target dtype; default keeps a floating input's dtype, else ``float_dtype()``.
      allow_overflow: skip the range check of the cast (for callers that only validate here and
        then compute in float64 from the original input); NaN/inf in the input still raise.

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
    if arr.ndim >= 2 and arr.shape[-1] < min_features:
        what = "one feature" if min_features == 1 else f"{min_features} features"
        raise ValueError(f"{name} must have at least {what}, got shape {tuple(arr.shape)}")
    if not allow_nonfinite and not is_traced(arr):
        finite = np.isfinite(arr)
        if not np.all(finite):
            bad = int(np.size(arr) - np.count_nonzero(finite))
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
        if not allow_overflow and np.dtype(dtype) != arr.dtype:
            with np.errstate(over="ignore"):
                cast = arr.astype(dtype)
            if not np.all(np.isfinite(cast)):  # finite input: the cast overflowed
                big = float(np.max(np.abs(arr[~np.isfinite(cast)])))
                hint = "" if jax.config.jax_enable_x64 else ", or enable jax_enable_x64 for float64"
                raise ValueError(
                    f"{name} has values beyond the range of {np.dtype(dtype).name} (largest |value| "
                    f"{big:.3g}, maximum {float(jnp.finfo(dtype).max):.3g}); rescale the data{hint}"
                )
            arr = cast
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


_KIND_PLURAL = {"number": "numbers", "string": "strings", "bytes": "bytes"}


def _label_kinds(y: np.ndarray) -> set[str] | None:
    """The kinds of values in a 1-D label array (``"number"``, ``"string"`` for str, ``"bytes"``), or
    ``None`` for ``None``, complex or other objects. ``b"a"`` never equals ``"a"``: bytes are a kind
    of their own."""
    if y.dtype.kind in "biuf":
        return {"number"}
    if y.dtype.kind == "U":
        return {"string"}
    if y.dtype.kind == "S":
        return {"bytes"}
    if y.dtype.kind != "O":
        return None
    kinds = set()
    for v in y.tolist():
        if isinstance(v, str):
            kinds.add("string")
        elif isinstance(v, bytes):
            kinds.add("bytes")
        elif isinstance(v, numbers.Real):
            kinds.add("number")
        else:
            return None
    return kinds or {"number"}


def _label_kind(y: np.ndarray) -> str:
    """The kind of values in a 1-D label array: ``"number"``, ``"string"``, ``"bytes"``, ``"mixed"``
    (more than one) or ``"other"`` (``None``, complex or other objects)."""
    kinds = _label_kinds(y)
    if kinds is None:
        return "other"
    return "mixed" if len(kinds) > 1 else next(iter(kinds))


def label_array(y, name: str = "y") -> np.ndarray:
    """A 1-D NumPy label array, refusing what would make two classes one or compare as unequal.

    NumPy turns ``[0, "0", 1]`` into the strings ``["0", "0", "1"]``, which silently merges the
    classes ``0`` and ``"0"``; labels that mix numbers and strings, NaN / infinite labels, complex or
    non-1-D labels raise ``ValueError`` here.
    """
    if y is None:
        raise ValueError(f"{name} is required, got None")
    seq = y
    try:
        y = np.asarray(y)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name} could not be converted to a 1-D array: {err}") from err
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {tuple(y.shape)}")
    if y.dtype.kind == "c":
        # (scikit-learn's estimator checks look for "Complex data not supported")
        raise ValueError(f"{name} must be real: Complex data not supported (dtype {y.dtype})")
    if y.dtype.kind in "US" and not isinstance(seq, np.ndarray):
        values = np.asarray(list(seq), dtype=object)
    else:
        values = y if y.dtype.kind == "O" else None
    kinds = None if values is None else _label_kinds(values)  # one pass over object labels
    if values is not None and kinds is None:
        raise ValueError(f"{name} must hold numbers or strings (no None or other objects)")
    if kinds is not None and len(kinds) > 1:
        mixed = " and ".join(_KIND_PLURAL[k] for k in sorted(kinds))
        raise ValueError(
            f"{name} mixes {mixed} (e.g. 0 and '0' would be one class, and b'a' never equals 'a'); "
            "give labels of one kind"
        )
    merged = False
    if y.dtype.kind == "O" and kinds == {"number"}:
        numeric = np.asarray(y.tolist())  # a numeric dtype, so the NaN check below applies
        # ints and floats together become float64, where 2**53 + 1 is 2**53
        merged = numeric.dtype.kind == "f" and len(set(y.tolist())) != len(np.unique(numeric))
        y = numeric
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or infinite labels")
    if merged:
        raise ValueError(
            f"{name} mixes integers and floats, and some integers are beyond float64's exact range "
            "(2**53), so two classes would become one; give labels of one type"
        )
    return y


def check_int32_ids(lab: np.ndarray, name: str) -> None:
    """``ValueError`` unless the integer class ids ``lab`` (a NumPy array) fit in int32.

    The losses compare labels as int32: larger ids would wrap and merge classes.
    """
    if lab.size and lab.dtype.kind != "b":
        lo, hi = int(lab.min()), int(lab.max())
        info = np.iinfo(np.int32)
        if lo < info.min or hi > info.max:
            raise ValueError(
                f"{name} must fit in int32, got range [{lo}, {hi}]; map the class ids to 0..C-1 "
                f"first, e.g. np.unique({name}, return_inverse=True)[1]"
            )


def check_comparable_labels(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise unless the label arrays ``a`` and ``b`` (from :func:`label_array`) are both numbers or
    both strings: ``1`` never equals ``"1"``, so comparing them would count every label as different."""
    ka, kb = _label_kind(a), _label_kind(b)
    if ka != kb:
        raise ValueError(
            f"{name_a} holds {_KIND_PLURAL.get(ka, ka)} ({a.dtype}) but {name_b} holds "
            f"{_KIND_PLURAL.get(kb, kb)} ({b.dtype}); no label of one can equal a label of the other"
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
    y = label_array(y, name)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n} samples")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < min_classes:
        raise ValueError(
            f"{name} must contain at least {min_classes} classes, got {len(classes)} "
            f"({classes.tolist()[:5]})"
        )
    return codes.astype(np.int32)


def as_real(value, name: str) -> float:
    """``float(value)`` for a real number (Python, NumPy or 0-d array); else ``ValueError`` naming it
    (``float("a")`` would say only "could not convert string to float")."""
    if isinstance(value, bool | str | bytes) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None


def check_choice(value: str, name: str, choices) -> str:
    """Raise ``ValueError`` listing the valid choices unless ``value`` is one of them."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value (a list) cannot be a key of a dict of choices
        known = False
    if not known:
        valid = ", ".join(sorted(str(c) for c in choices))
        raise ValueError(f"unknown {name} {value!r}; valid: {valid}")
    return value


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Raise unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_single_key(key, name: str = "key") -> jax.Array:
    """:func:`as_key` for samplers that take one key: a batch of keys (``jax.random.split(k, 2)``)
    raises ``ValueError`` naming ``key`` instead of JAX's "bits accepts a single key"."""
    k = as_key(key, name)
    if k.shape != ():
        raise ValueError(
            f"{name} must be a single jax.random key or an int seed, got a batch of keys of shape "
            f"{tuple(k.shape)}"
        )
    return k


def check_flags(**values) -> None:
    """Raise ``ValueError`` unless every value is a ``bool`` (NumPy's, or a concrete 0-d bool array,
    included): a string flag such as ``normalize="False"`` is truthy and silently meant the
    opposite."""
    for name, value in values.items():
        if isinstance(value, bool | np.bool_):
            continue
        if (
            not is_traced(value)
            and getattr(value, "dtype", None) == np.bool_
            and np.ndim(value) == 0
        ):
            continue  # jnp.array(True)
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_hyper(
    positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (), **values
) -> None:
    """Concrete hyperparameters must be finite numbers, those named in ``positive`` (scales,
    temperatures) > 0 and those in ``nonnegative`` (penalty weights) >= 0; traced ones (a schedule
    under ``jit``) pass unchecked. Raises ``ValueError`` naming the argument instead of returning a
    NaN / inf loss or an empty mining mask. Strings and bools are refused (``float("0.2")`` would
    pass here and fail later with a ``TypeError``)."""
    for name, value in values.items():
        if is_traced(value):
            continue
        if isinstance(value, str | bytes | bool | np.bool_):
            raise ValueError(f"{name} must be a number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a number, got {value!r}") from err
        if not np.isfinite(v) or (name in positive and v <= 0) or (name in nonnegative and v < 0):
            kind = (
                "a positive"
                if name in positive
                else "a non-negative"
                if name in nonnegative
                else "a finite"
            )
            raise ValueError(f"{name} must be {kind} number, got {value!r}")


def _plain_dict(value, name: str, expected: str) -> dict:
    """``value`` as a ``dict``: a mapping, or an ``ml_collections.ConfigDict`` (``to_dict``);
    ``ValueError`` naming ``name`` and ``expected`` for anything else."""
    if callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return dict(value)


def check_kwargs(value, name: str) -> dict:
    """A copy of ``value`` as a ``dict`` of keyword arguments (``{}`` for ``None``; a ConfigDict is
    converted); ``ValueError`` naming ``name`` for anything else (``-1`` gave "'int' object is not
    iterable", ``0`` passed as no arguments, ``[1]`` "cannot convert dictionary update sequence
    element")."""
    if value is None:
        return {}
    kwargs = _plain_dict(value, name, "a dict of keyword arguments or None")
    bad = [k for k in kwargs if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{name} must have string keys (argument names), got {bad[0]!r}")
    return kwargs


def check_config(config, name: str = "config") -> dict[str, Any]:
    """A config as a plain ``dict``: a mapping, or an ``ml_collections.ConfigDict`` (``to_dict``);
    ``ValueError`` naming ``name`` for anything else (``None`` gave "'NoneType' object is not
    iterable")."""
    return _plain_dict(config, name, "a dict or an ml_collections.ConfigDict")
