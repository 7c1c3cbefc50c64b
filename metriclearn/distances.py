"""Paired and pairwise distances, divergences between probability vectors, and metric-axiom checks.

Three layers:

* **paired forms** ``f(x, y, **kw)``: ``[..., d] × [..., d] → [...]`` (leading axes broadcast):
  :func:`euclidean`, :func:`sqeuclidean`, :func:`manhattan`, :func:`chebyshev`, :func:`minkowski`,
  :func:`cosine_distance`, :func:`cosine_similarity`, :func:`mahalanobis`, and for probability vectors
  :func:`kl_divergence`, :func:`jensen_shannon`, :func:`bhattacharyya`, :func:`matusita`,
  :func:`chi_square`. Registry: :data:`DISTANCES`.
* :func:`pairwise` ``(name_or_fn, X, Y=None, **kw) → [n, m]``: the Euclidean family through the
  matmul identity ``|x|² + |y|² − 2 x·y`` (clamped at zero, exact zeros on the diagonal of ``X`` vs
  ``X``), everything else by ``vmap`` of the paired form; rows are processed in blocks so memory stays
  bounded.
* :func:`check_metric_axioms` ``(fn, X) → dict``: which metric axioms hold on a sample, and by how much
  the others fail.

All public functions validate concrete inputs (``ValueError`` naming the argument) and skip the value
checks under ``jit``/``vmap``/``grad`` (tracers). Values are float32 by default and float64 when
``jax_enable_x64`` is on. Gradients are finite everywhere (safe sqrt/log/divide), including at
coincident points and zero probabilities; see each docstring for the convention used at the
boundary.

Reference for the catalogue: M. M. Deza and E. Deza, *Encyclopedia of Distances*, Springer (4th ed.
2016); S.-H. Cha, "Comprehensive survey on distance/similarity measures between probability density
functions", Int. J. Math. Models Methods Appl. Sci. 1(4) (2007).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._cache import reuse
from metriclearn._validation import check_array, check_choice, check_same_dim, is_traced
from metriclearn.psd import _check_square, _require_psd, _symmetrize

__all__ = [
    "DISTANCES",
    "bhattacharyya",
    "chebyshev",
    "check_metric_axioms",
    "chi_square",
    "cosine_distance",
    "cosine_similarity",
    "euclidean",
    "jensen_shannon",
    "kl_divergence",
    "mahalanobis",
    "manhattan",
    "matusita",
    "minkowski",
    "pairwise",
    "pairwise_euclidean",
    "pairwise_sqeuclidean",
    "safe_sqrt",
    "sqeuclidean",
]

#: Number of intermediate elements a single row block of :func:`pairwise` may hold (2**21 floats,
#: 8 MB in float32). The matmul kernels hold ``rows·m`` values per block, the vmap path ``rows·m·d``.
BLOCK_ELEMENTS = 2**21


# ----------------------------------------------------------------------------------------------------
# Core kernels shared by evaluation, losses and miners (signatures are fixed: others import them)
# ----------------------------------------------------------------------------------------------------


def safe_sqrt(x: jax.Array, eps: float = 0.0) -> jax.Array:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= eps``; NaN stays NaN.

    The double ``jnp.where`` keeps the untaken branch from producing an infinite cotangent. A NaN
    (e.g. ``inf - inf`` from squared norms that overflowed) is passed on, not read as a zero distance.
    """
    positive = ~(x <= eps)
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

    Raises:
      ValueError: not 2-D, NaN / inf entries, or ``X`` and ``Y`` of different widths; squares
        beyond the dtype (concrete arrays, :func:`_in_range`; under ``jit`` they give ``inf`` and
        ``NaN``). This is the raw kernel of the losses and miners: :func:`pairwise` scales the
        data first.
    """
    X = check_array(X, "X", ndim=2)
    if Y is not None:
        Y = check_array(Y, "Y", ndim=2)
        check_same_dim(X, Y, "X", "Y")
    return _in_range(_clamp_sqeuclidean(_sqeuclidean_raw(X, Y), Y is None), _RAW_NAME, X, Y)


def _sqeuclidean_raw(X: jax.Array, Y: jax.Array | None = None) -> jax.Array:
    """The unclamped ``|x|^2 + |y|^2 - 2 x.y`` of :func:`pairwise_sqeuclidean`.

    With :func:`_clamp_sqeuclidean`, also used by hand-written gradients (``losses``) that need
    ``raw``: they trace the very same operations, so XLA merges their distance matrix with other
    callers' in one program.
    """
    xx = jnp.sum(X * X, axis=-1)
    if Y is None:
        return xx[:, None] + xx[None, :] - 2.0 * (X @ X.T)
    yy = jnp.sum(Y * Y, axis=-1)
    return xx[:, None] + yy[None, :] - 2.0 * (X @ Y.T)


def _clamp_sqeuclidean(raw: jax.Array, same: bool) -> jax.Array:
    """:func:`pairwise_sqeuclidean` from :func:`_sqeuclidean_raw` (exact zero diagonal if ``same``)."""
    d2 = jnp.maximum(raw, 0.0)
    if same:  # a product, not a select: 2-4 % faster in the contrastive training step
        d2 = d2 * (1.0 - jnp.eye(raw.shape[0], dtype=d2.dtype))
    return d2


def pairwise_euclidean(X: jax.Array, Y: jax.Array | None = None) -> jax.Array:
    """Euclidean distances between rows (safe sqrt of :func:`pairwise_sqeuclidean`)."""
    return safe_sqrt(pairwise_sqeuclidean(X, Y))


# ----------------------------------------------------------------------------------------------------
# Safe elementwise helpers
# ----------------------------------------------------------------------------------------------------


def _safe_log(x: jax.Array) -> jax.Array:
    """``log(x)`` for ``x > 0``, 0 elsewhere, with a finite gradient everywhere (caller masks)."""
    pos = x > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, x, 1.0)), 0.0)


@jax.custom_jvp
def _div(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b``, differentiated as ``(da - (a / b) db) / b``. Autodiff's ``a / b**2`` underflows
    ``b**2`` (``b`` < 1e-19 in float32) into an infinite derivative, a NaN once masked by ``where``."""
    return a / b


@_div.defjvp
def _div_jvp(primals, tangents):
    a, b = primals
    da, db = tangents
    out = a / b
    return out, (da - out * db) / b


def _safe_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b`` where ``b > 0``, 0 elsewhere (finite gradient)."""
    pos = b > 0
    return jnp.where(pos, _div(a, jnp.where(pos, b, 1.0)), 0.0)


def _safe_pow(x: jax.Array, p) -> jax.Array:
    """``x ** p`` for ``x > 0``, 0 for ``x <= 0`` (finite gradient at 0 for any ``p > 0``)."""
    pos = x > 0
    return jnp.where(pos, jnp.where(pos, x, 1.0) ** p, 0.0)


def _rel_entr(p: jax.Array, q: jax.Array) -> jax.Array:
    """Elementwise ``p log(p/q)`` with ``0 log(0/q) = 0`` and ``p log(p/0) = +inf`` for ``p > 0``.

    ``log p - log q`` would cancel for ``p ~ q`` (KL of near-equal histograms off by 1e-4 relative in
    float64), and so would ``log(p / q)``, whose absolute error XLA's ``log`` keeps near 1: for
    ``q/2 <= p <= 2q`` the log is ``log1p((p - q) / q)``, with ``p - q`` exact; ``log(p / q)``
    elsewhere, and the difference of logs only where the ratio over- or underflows.
    """
    both = (p > 0) & (q > 0)
    ps, qs = jnp.where(both, p, 1.0), jnp.where(both, q, 1.0)
    val = jnp.where(both, p * _log_ratio(ps, qs), 0.0)
    return jnp.where((p > 0) & (q <= 0), jnp.inf, val)


@jax.custom_jvp
def _log_ratio(p: jax.Array, q: jax.Array) -> jax.Array:
    """``log(p / q)`` for ``p, q > 0`` (see :func:`_rel_entr`), differentiated as ``dp/p - dq/q``:
    through ``p / q`` autodiff formed ``p / q**2``, which underflows (q < 1e-19 in float32) into a
    NaN gradient of KL for a softmax output."""
    ratio = p / q
    near = (ratio >= 0.5) & (ratio <= 2.0)
    ok = (ratio > 0) & jnp.isfinite(ratio)
    far_log = jnp.where(ok, jnp.log(jnp.where(ok & ~near, ratio, 1.0)), jnp.log(p) - jnp.log(q))
    return jnp.where(near, jnp.log1p(jnp.where(near, (p - q) / q, 0.0)), far_log)


@_log_ratio.defjvp
def _log_ratio_jvp(primals, tangents):
    p, q = primals
    dp, dq = tangents
    return _log_ratio(p, q), dp / p - dq / q


# ----------------------------------------------------------------------------------------------------
# Inner paired forms (no validation; jittable; [..., d] x [..., d] -> [...])
# ----------------------------------------------------------------------------------------------------


def _sqeuclidean(x, y):
    diff = x - y
    return jnp.sum(diff * diff, axis=-1)


def _euclidean(x, y):
    # as minkowski(p=2): rescaled by the largest coordinate difference, so |x - y|^2 cannot
    # overflow (3e200 and 4e200 apart give 5e200, as SciPy, not inf); zero gradient where x = y
    return _minkowski(x, y, 2.0)


def _manhattan(x, y):
    return jnp.sum(jnp.abs(x - y), axis=-1)


def _chebyshev(x, y):
    return jnp.max(jnp.abs(x - y), axis=-1)


def _minkowski(x, y, p=2.0):
    if not is_traced(p) and np.ndim(p) == 0 and math.isinf(float(p)):  # also np.float32(inf)
        return _chebyshev(x, y)
    a = jnp.abs(x - y)
    # Rescale by the largest coordinate: no overflow for large p, and s >= 1 below, so s**(1/p)
    # and its gradient are finite. The scale is a constant for the gradient (the norm is
    # homogeneous: exact), so no a / m**2 can underflow (1e-20 apart gave a NaN gradient), and
    # ldexp, not a division by m, keeps 9e37 from being flushed to 0.
    # m = mant * 2**e with mant in [1/2, 1): a / m as ldexp(a, -e) / mant makes the largest ratio
    # exactly 1 (s >= 1, whatever p: with [1/2, 1) p >= 127 underflowed to 0) and divides by no
    # more than 2
    m = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
    m_pos = ~(m <= 0)  # a NaN maximum too: NaN in, NaN out (m > 0 made it a distance of 0)
    mant, e = jnp.frexp(jnp.where(m_pos, m, 1.0))
    s = jnp.sum(_safe_pow(jnp.ldexp(a, -e) / mant, p), axis=-1)
    m_pos, mant, e = m_pos[..., 0], mant[..., 0], e[..., 0]
    return jnp.where(m_pos, jnp.ldexp(mant * jnp.where(m_pos, s, 1.0) ** (1.0 / p), e), 0.0)


def _last_axis_exponent(a: jax.Array) -> jax.Array:
    """``[..., 1]`` integer exponents ``e`` with ``max |a| / 2**e`` in ``[1/2, 1)`` along the last
    axis (0 for an all-zero row), held constant for gradients."""
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(a), axis=-1, keepdims=True))
    _, e = jnp.frexp(jnp.where(m > 0, m, 1.0))
    return jnp.where(m > 0, e, 0)


_OVERFLOW = {"euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski", "mahalanobis"}


#: the unscaled kernel :func:`pairwise_sqeuclidean` (its overflow gives inf - inf = NaN as well)
_RAW_NAME = "pairwise_sqeuclidean"


def _in_range(out: jax.Array, name: str, *arrays) -> jax.Array:
    """``out`` of a distance of :data:`_OVERFLOW` (or the raw kernel) on finite (checked) inputs;
    ``ValueError`` when it is concrete and holds an inf or NaN, a distance beyond the dtype's range.
    Traced values pass."""
    if is_traced(out) or bool(jnp.all(jnp.isfinite(out))):
        return out
    scale = max(float(jnp.max(jnp.abs(a))) for a in arrays if a is not None)
    hint = (
        "; or use metriclearn.distances.pairwise('sqeuclidean', ...), which scales the data first"
        if name == _RAW_NAME
        else ""
    )
    raise ValueError(
        f"{name}: distances overflow {out.dtype} (largest |entry| of the inputs: {scale:.3g}); "
        f"rescale the data (e.g. sklearn.preprocessing.StandardScaler) or enable float64 "
        f"(jax.enable_x64){hint}"
    )


def _ranking_exponent(*arrays) -> int:
    """For distances used only for their order: the ``e`` that brings the largest ``|entry|`` into
    ``[1/2, 1)`` when it lies beyond ``2**+-20`` (scaling by ``2**-e``, with ``ldexp``, is exact and
    keeps the squares in range), else 0. Concrete arrays (host or device)."""
    top = max(float(np.max(np.abs(a))) for a in arrays)
    if top > 2.0**20 or 0.0 < top < 2.0**-20:
        return int(np.frexp(top)[1])
    return 0


def _unit_scale(x):
    """``x`` scaled by the power of two of its largest absolute coordinate (zero vectors stay zero):
    the squared norm of the result neither overflows (|x| ~ 1e20 in float32) nor underflows
    (|x| ~ 1e-25). The scale is held constant for gradients: exact for the scale-invariant cosine,
    and 1/m² would underflow."""
    return jnp.ldexp(x, -_last_axis_exponent(x))  # exact, and 1 / 2**127 is not flushed to 0


def _normalize_rows(x):
    x = _unit_scale(x)
    return x * _safe_div(1.0, safe_sqrt(jnp.sum(x * x, axis=-1, keepdims=True)))


def _cosine_similarity(x, y):
    x, y = _unit_scale(x), _unit_scale(y)  # cosine is scale-invariant
    nx = safe_sqrt(jnp.sum(x * x, axis=-1))
    ny = safe_sqrt(jnp.sum(y * y, axis=-1))
    return jnp.clip(_safe_div(jnp.sum(x * y, axis=-1), nx * ny), -1.0, 1.0)


def _cosine_distance(x, y):
    return 1.0 - _cosine_similarity(x, y)


def _mahalanobis(x, y, M=None, L=None, squared=False):
    diff = x - y
    if squared:  # plain arithmetic, as squared Euclidean: the scaling below cost 3-6x here
        if L is not None:
            z = diff @ L.T
            return jnp.sum(z * z, axis=-1)
        return jnp.maximum(jnp.sum((diff @ M) * diff, axis=-1), 0.0)
    # As euclidean: the difference scaled by the power of two of its largest coordinate, and L (or
    # M, by an even power) by that of its largest entry (exact; constants for the gradient), so the
    # quadratic form neither overflows nor underflows when the distance is in range (1e20 apart in
    # float32; an L of 1e-19 on data of 1e19; an M of 2e-38 or 2e38) and gives no NaN gradient
    # (1e-20 apart). Both in [1/2, 1), L(x - y) has entries below d: its square cannot overflow.
    e = _last_axis_exponent(diff)
    diff = jnp.ldexp(diff, -e)
    A = L if L is not None else M
    e_A = jax.lax.stop_gradient(_pow2_exponent(A, even=L is None))
    A = _times_pow2(A, -e_A, bound=_full_bound(A.dtype))
    if L is not None:
        z = diff @ A.T
        return jnp.ldexp(safe_sqrt(jnp.sum(z * z, axis=-1)), e[..., 0] + e_A)  # 2**(e + e_A) |z|
    d2 = jnp.maximum(jnp.sum((diff @ A) * diff, axis=-1), 0.0)
    return jnp.ldexp(safe_sqrt(d2), e[..., 0] + e_A // 2)  # 2**(e + e_A / 2) sqrt(d2), e_A even


def _kl_divergence(p, q):
    # clamped at 0, as jensen_shannon and bhattacharyya: near-duplicate float32 histograms whose
    # sums differ by rounding gave -6e-8 (and a "not a distance" verdict of check_metric_axioms)
    return jnp.maximum(jnp.sum(_rel_entr(p, q), axis=-1), 0.0)


def _jensen_shannon(p, q, distance=False):
    # Per bin, with s = p + q and r = (p - q) / s: p log(2p/s) + q log(2q/s) = s/2 f(r), where
    # f(r) = 2 r atanh(r) + log1p(-r**2) = r**2 + r**4/6 + ... The plain form cancels its first-order
    # terms (near-equal histograms gave 0 in float32, and a failed triangle inequality); this one
    # loses at most a bit. f(+-1) = 2 log 2 (one of p, q is 0). Entries the probability check lets
    # through slightly below 0 count as 0.
    p, q = jnp.maximum(p, 0.0), jnp.maximum(q, 0.0)
    s = p + q
    s_pos = s > 0
    r = jnp.where(s_pos, _div(p - q, jnp.where(s_pos, s, 1.0)), 0.0)
    inner = jnp.abs(r) < 1.0
    rs = jnp.where(inner, r, 0.0)
    f = jnp.where(inner, 2.0 * rs * jnp.arctanh(rs) + jnp.log1p(-rs * rs), 2.0 * math.log(2.0))
    js = jnp.maximum(0.25 * jnp.sum(s * f, axis=-1), 0.0)
    return safe_sqrt(js) if distance else js


def _bhattacharyya_coefficient(p, q):
    return jnp.sum(safe_sqrt(p) * safe_sqrt(q), axis=-1)  # sqrt(p q) would underflow first


def _bhattacharyya(p, q):
    bc = _bhattacharyya_coefficient(p, q)
    pos = bc > 0
    val = jnp.maximum(-jnp.log(jnp.where(pos, jnp.minimum(bc, 1.0), 1.0)), 0.0)
    return jnp.where(pos, val, jnp.inf)


def _matusita(p, q):
    # sqrt(p) - sqrt(q) as (p - q) / (sqrt(p) + sqrt(q)): the difference of the roots cancels for
    # near-equal histograms (relative error 8e-3 in float32 at a relative difference of 1e-5);
    # p - q is exact there. 0 where p = q = 0 (finite gradient). Entries the probability check lets
    # through slightly below 0 count as 0.
    p, q = jnp.maximum(p, 0.0), jnp.maximum(q, 0.0)
    diff = _safe_div(p - q, safe_sqrt(p) + safe_sqrt(q))
    return _euclidean(diff, jnp.zeros_like(diff))


def _chi_square(p, q):
    diff = p - q
    return 0.5 * jnp.sum(_safe_div(diff * diff, p + q), axis=-1)


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


def _check_pair(x, y, name_x: str = "x", name_y: str = "y"):
    x = check_array(x, name_x)
    y = check_array(y, name_y)
    for a, name in ((x, name_x), (y, name_y)):
        if a.ndim == 0:
            raise ValueError(f"{name} must have a feature axis ([..., d]), got a scalar")
        if a.shape[-1] == 0:
            raise ValueError(f"{name} must have at least one feature, got shape {tuple(a.shape)}")
    check_same_dim(x, y, name_x, name_y)
    try:
        np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    except ValueError:
        raise ValueError(
            f"{name_x} and {name_y} leading axes must broadcast, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        ) from None
    dtype = jnp.result_type(x.dtype, y.dtype)
    return x.astype(dtype), y.astype(dtype)


def _prob_tol(dtype) -> float:
    """Tolerance of the probability checks: ``sqrt(eps)`` (3.5e-4 in float32, 1.5e-8 in float64)."""
    return float(np.sqrt(jnp.finfo(np.dtype(dtype)).eps))


def _prob_sum_tol(dtype, d: int) -> float:
    """Tolerance of the sums of ``d`` probabilities: ``sqrt(eps) + d · eps + sqrt(d) · eps32``.

    The rounding of a normalised vector's ``d`` entries and of its float sum moves the sum by at
    most ``~d · eps`` (much less with pairwise summation); ``sqrt(d) · eps32`` (``eps32 = 2**-23``)
    admits float32 histograms cast to float64, which keep float32's rounding. A tolerance growing
    like ``sqrt(d · eps)`` accepted vectors 3 % off at ``d = 10000`` in float32.
    """
    d = max(int(d), 1)
    return _prob_tol(dtype) + d * float(jnp.finfo(np.dtype(dtype)).eps) + math.sqrt(d) * 2.0**-23


def _check_prob(p: jax.Array, name: str) -> None:
    """Raise unless every ``p[..., :]`` is a probability vector: entries ``>= −sqrt(eps)`` and sums
    within :func:`_prob_sum_tol` (``sqrt(eps) + d · eps + sqrt(d) · 2**-23``) of 1, ``eps`` of
    ``p``'s dtype."""
    if is_traced(p):
        return
    tol = _prob_tol(p.dtype)
    a = np.asarray(p, dtype=np.float64)
    if a.size and a.min() < -tol:
        raise ValueError(
            f"{name} must be a probability vector (non-negative entries), got minimum {a.min():.3g} "
            f"(shape {tuple(p.shape)})"
        )
    sums = a.sum(axis=-1)
    worst = float(np.max(np.abs(sums - 1.0))) if sums.size else 0.0
    sum_tol = _prob_sum_tol(p.dtype, a.shape[-1])
    if worst > sum_tol:
        raise ValueError(
            f"{name} must be a probability vector summing to 1 along the last axis, got a sum "
            f"off by {worst:.3g} > {sum_tol:.3g} (shape {tuple(p.shape)}); "
            "normalise it with p / p.sum(-1, keepdims=True)"
        )


def _check_minkowski_p(p) -> None:
    if is_traced(p):
        return
    if isinstance(p, bool | np.bool_ | str | bytes):
        raise ValueError(f"p must be a positive number or inf, got {p!r}")
    try:
        val = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a positive number or inf, got {p!r}") from None
    if not (val > 0):
        raise ValueError(f"p must be > 0 (a metric needs p >= 1), got {p!r}")


def _check_metric_args(M, L, d: int, squared=False):
    """Validate the Mahalanobis keyword arguments for feature dimension ``d``; return (M, L)."""
    if not isinstance(squared, bool | np.bool_):
        raise ValueError(f"squared must be a Python bool (static under jit), got {squared!r}")
    if (M is None) == (L is None):
        raise ValueError("mahalanobis needs exactly one of M= ([d, d] PSD) or L= ([k, d], M = LᵀL)")
    if M is not None:
        M = _check_square(M, "M")
        if M.shape[0] != d:
            raise ValueError(
                f"M must be [d, d] with d = {d} features of the data, got shape {tuple(M.shape)}"
            )
        _require_psd(M, "M", None)
        return M, None
    L = check_array(L, "L", ndim=2, min_rows=1)
    if L.shape[1] != d:
        raise ValueError(
            f"L must be [k, d] with d = {d} features of the data, got shape {tuple(L.shape)}"
        )
    return None, L


# ----------------------------------------------------------------------------------------------------
# Public paired forms
# ----------------------------------------------------------------------------------------------------


def euclidean(x, y) -> jax.Array:
    """Euclidean distance ``||x − y||₂ = sqrt(Σᵢ (xᵢ − yᵢ)²)`` (gradient 0, not NaN, at ``x = y``).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]`` (leading axes broadcast with ``x``).

    Returns:
      ``[...]`` distances.

    Example:
      >>> round(float(euclidean(jnp.array([0.0, 0.0]), jnp.array([3.0, 4.0]))), 4)
      5.0

    Reference: Deza & Deza, *Encyclopedia of Distances* (2016), §5.1 (L2 metric).
    """
    x, y = _check_pair(x, y)
    return _in_range(_euclidean(x, y), "euclidean", x, y)


def sqeuclidean(x, y) -> jax.Array:
    """Squared Euclidean distance ``Σᵢ (xᵢ − yᵢ)²`` (a semimetric: the triangle inequality fails).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(sqeuclidean(jnp.array([0.0, 0.0]), jnp.array([3.0, 4.0]))), 4)
      25.0

    Reference: Deza & Deza (2016), §5.1.
    """
    x, y = _check_pair(x, y)
    return _in_range(_sqeuclidean(x, y), "sqeuclidean", x, y)


def manhattan(x, y) -> jax.Array:
    """Manhattan (city-block, L1) distance ``Σᵢ |xᵢ − yᵢ|`` (= ``scipy.spatial.distance.cityblock``).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(manhattan(jnp.array([0.0, 0.0]), jnp.array([3.0, -4.0]))), 4)
      7.0

    Reference: Deza & Deza (2016), §5.1 (L1 metric).
    """
    x, y = _check_pair(x, y)
    return _in_range(_manhattan(x, y), "manhattan", x, y)


def chebyshev(x, y) -> jax.Array:
    """Chebyshev (L∞) distance ``maxᵢ |xᵢ − yᵢ|``.

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(chebyshev(jnp.array([0.0, 0.0]), jnp.array([3.0, -4.0]))), 4)
      4.0

    Reference: Deza & Deza (2016), §5.1 (L∞ metric).
    """
    x, y = _check_pair(x, y)
    return _in_range(_chebyshev(x, y), "chebyshev", x, y)


def minkowski(x, y, *, p: float = 2.0) -> jax.Array:
    """Minkowski distance ``(Σᵢ |xᵢ − yᵢ|ᵖ)^(1/p)``; ``p = inf`` gives :func:`chebyshev`.

    Computed as ``m · (Σᵢ (|xᵢ − yᵢ|/m)ᵖ)^(1/p)`` with ``m = maxᵢ |xᵢ − yᵢ|``, so large ``p`` does not
    overflow and the gradient is finite (0) at ``x = y``. A metric for ``p >= 1``; for ``0 < p < 1``
    the triangle inequality fails (allowed, it is a semimetric).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.
      p: order, ``> 0`` or ``inf``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(minkowski(jnp.array([0.0, 0.0]), jnp.array([3.0, 4.0]), p=1)), 4)
      7.0

    Reference: H. Minkowski, *Geometrie der Zahlen* (1910); Deza & Deza (2016), §5.1 (lp metric).
    """
    _check_minkowski_p(p)
    x, y = _check_pair(x, y)
    return _in_range(_minkowski(x, y, p=p), "minkowski", x, y)


def cosine_similarity(x, y) -> jax.Array:
    """Cosine similarity ``x·y / (||x|| ||y||)`` in ``[-1, 1]`` (a similarity: larger is closer).

    Convention: a zero vector has similarity 0 with everything (as scikit-learn's
    ``cosine_similarity``), with a finite gradient.

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(cosine_similarity(jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0]))), 4)
      0.7071

    Reference: G. Salton and M. J. McGill, *Introduction to Modern Information Retrieval* (1983).
    """
    return _cosine_similarity(*_check_pair(x, y))


def cosine_distance(x, y) -> jax.Array:
    """Cosine distance ``1 − x·y / (||x|| ||y||)`` in ``[0, 2]`` (= ``scipy.spatial.distance.cosine``).

    Not a metric (the triangle inequality fails, and ``x`` and ``2x`` are at distance 0). A zero vector
    is at distance 1 from everything (similarity 0), except on the diagonal of ``pairwise(…, X)``,
    which is exactly 0 (as scikit-learn's ``cosine_distances``).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(cosine_distance(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 4)
      1.0

    Reference: Salton & McGill (1983).
    """
    return _cosine_distance(*_check_pair(x, y))


def mahalanobis(x, y, *, M=None, L=None, squared: bool = False) -> jax.Array:
    """Mahalanobis distance ``sqrt((x − y)ᵀ M (x − y))``, given ``M`` or ``L`` with ``M = LᵀL``.

    With ``L`` (``[k, d]``) it is computed as ``||L(x − y)||₂``, the Euclidean distance after
    ``x ↦ x @ L.T`` (cheaper when ``k < d``). ``M`` must be symmetric PSD (checked within
    :func:`metriclearn.psd.default_tol`); a singular ``M`` gives a *pseudometric* (distinct points
    can be at distance 0).

    Args:
      x: ``[..., d]``.
      y: ``[..., d]``.
      M: ``[d, d]`` symmetric PSD matrix, or None.
      L: ``[k, d]`` linear map, or None (exactly one of ``M``, ``L``).
      squared: return ``(x − y)ᵀ M (x − y)`` instead.

    Returns:
      ``[...]``.

    Example:
      >>> round(float(mahalanobis(jnp.zeros(2), jnp.ones(2), M=jnp.diag(jnp.array([1.0, 3.0])))), 4)
      2.0

    Reference: P. C. Mahalanobis, "On the generalised distance in statistics", Proc. Natl. Inst.
    Sci. India 2 (1936); E. P. Xing et al., "Distance metric learning with application to clustering
    with side-information", NIPS 2002.
    """
    x, y = _check_pair(x, y)
    M, L = _check_metric_args(M, L, x.shape[-1], squared)
    out = _mahalanobis(x, y, M=M, L=L, squared=bool(squared))
    return _in_range(out, "mahalanobis", x, y, M, L)


def kl_divergence(p, q) -> jax.Array:
    """Kullback–Leibler divergence ``KL(p‖q) = Σᵢ pᵢ log(pᵢ/qᵢ)`` in nats (not symmetric).

    Conventions: ``0 · log(0/q) = 0``; where ``pᵢ > 0 = qᵢ`` the value is ``+inf`` (never NaN).
    Gradients are finite wherever the value is finite (the terms with ``pᵢ = 0`` get gradient 0 with
    respect to ``pᵢ``: the one-sided derivative ``log pᵢ + 1`` is replaced by 0). Equals
    ``scipy.special.rel_entr(p, q).sum(-1)`` and ``scipy.stats.entropy(p, q)``, except that a sum
    below 0 (rounding: vectors whose sums differ in the last bits) is clamped to 0 (gradient 0).

    Args:
      p: ``[..., d]`` probability vectors (non-negative, summing to 1 within
        ``sqrt(eps) + d · eps + sqrt(d) · 2**-23``, ``eps`` of their dtype).
      q: ``[..., d]`` probability vectors.

    Returns:
      ``[...]`` values in ``[0, inf]``.

    Example:
      >>> round(float(kl_divergence(jnp.array([0.5, 0.5]), jnp.array([0.9, 0.1]))), 4)
      0.5108

    Reference: S. Kullback and R. A. Leibler, "On information and sufficiency", Ann. Math. Statist.
    22 (1951).
    """
    p, q = _check_pair(p, q, "p", "q")
    _check_prob(p, "p")
    _check_prob(q, "q")
    return _kl_divergence(p, q)


def jensen_shannon(p, q, *, distance: bool = False) -> jax.Array:
    """Jensen–Shannon divergence ``JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p + q)/2``, in nats.

    Symmetric, always finite (``<= log 2``). ``distance=True`` returns ``sqrt(JS)``, the
    Jensen–Shannon *distance*, which is a metric (Endres & Schindelin 2003) and equals
    ``scipy.spatial.distance.jensenshannon(p, q)``. The divergence itself violates the triangle
    inequality. Zero probabilities follow the conventions of :func:`kl_divergence`.

    Args:
      p: ``[..., d]`` probability vectors.
      q: ``[..., d]`` probability vectors.
      distance: return the square root (the metric) instead of the divergence.

    Returns:
      ``[...]`` values in ``[0, log 2]`` (divergence) or ``[0, sqrt(log 2)]`` (distance).

    Example:
      >>> round(float(jensen_shannon(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 4)
      0.6931

    Reference: J. Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory
    37(1) (1991); D. M. Endres and J. E. Schindelin, "A new metric for probability distributions",
    IEEE Trans. Inf. Theory 49(7) (2003).
    """
    p, q = _check_pair(p, q, "p", "q")
    _check_prob(p, "p")
    _check_prob(q, "q")
    if not isinstance(distance, bool | np.bool_):
        raise ValueError(f"distance must be a Python bool (static under jit), got {distance!r}")
    return _jensen_shannon(p, q, distance=bool(distance))


def bhattacharyya(p, q) -> jax.Array:
    """Bhattacharyya distance ``−ln Σᵢ sqrt(pᵢ qᵢ)`` (``−ln`` of the Bhattacharyya coefficient).

    Symmetric, ``0`` iff ``p = q``, ``+inf`` for disjoint supports (never NaN); not a metric (the
    triangle inequality fails). Rounding is clamped so the value is ``>= 0``. Gradients are finite
    where the value is finite (``sqrt(pᵢqᵢ)`` has gradient 0 where ``pᵢqᵢ = 0``).

    Args:
      p: ``[..., d]`` probability vectors.
      q: ``[..., d]`` probability vectors.

    Returns:
      ``[...]`` values in ``[0, inf]``.

    Example:
      >>> round(float(bhattacharyya(jnp.array([0.5, 0.5]), jnp.array([0.9, 0.1]))), 4)
      0.1116

    Reference: A. Bhattacharyya, "On a measure of divergence between two statistical populations
    defined by their probability distributions", Bull. Calcutta Math. Soc. 35 (1943).
    """
    p, q = _check_pair(p, q, "p", "q")
    _check_prob(p, "p")
    _check_prob(q, "q")
    return _bhattacharyya(p, q)


def matusita(p, q) -> jax.Array:
    """Matusita distance ``||√p − √q||₂ = sqrt(Σᵢ (√pᵢ − √qᵢ)²) = sqrt(2 − 2 Σᵢ √(pᵢqᵢ))``.

    A metric on probability vectors (``√2`` times the Hellinger distance). Each ``√pᵢ − √qᵢ`` is
    computed as ``(pᵢ − qᵢ) / (√pᵢ + √qᵢ)``, so near-equal histograms keep their relative accuracy.
    Safe square roots and divisions keep the gradient finite at zero probabilities and at ``p = q``.

    Args:
      p: ``[..., d]`` probability vectors.
      q: ``[..., d]`` probability vectors.

    Returns:
      ``[...]`` values in ``[0, √2]``.

    Example:
      >>> round(float(matusita(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 4)
      1.4142

    Reference: K. Matusita, "Decision rules, based on the distance, for problems of fit, two samples,
    and estimation", Ann. Math. Statist. 26(4) (1955).
    """
    p, q = _check_pair(p, q, "p", "q")
    _check_prob(p, "p")
    _check_prob(q, "q")
    return _matusita(p, q)


def chi_square(p, q) -> jax.Array:
    """Symmetric chi-square distance ``½ Σᵢ (pᵢ − qᵢ)² / (pᵢ + qᵢ)``, with ``0/0 = 0``.

    Convention: the factor ½ (as in Pele & Werman 2010) puts the value in ``[0, 1]`` for probability
    vectors; it equals ``−½ · sklearn.metrics.pairwise.additive_chi2_kernel``. Symmetric, not a metric
    (its square root is). Gradient finite everywhere (0 where ``pᵢ + qᵢ = 0``).

    Args:
      p: ``[..., d]`` probability vectors.
      q: ``[..., d]`` probability vectors.

    Returns:
      ``[...]`` values in ``[0, 1]``.

    Example:
      >>> round(float(chi_square(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 4)
      1.0

    Reference: O. Pele and M. Werman, "The quadratic-chi histogram distance family", ECCV 2010;
    Cha (2007), "Squared χ²".
    """
    p, q = _check_pair(p, q, "p", "q")
    _check_prob(p, "p")
    _check_prob(q, "q")
    return _chi_square(p, q)


#: Registry of the paired forms by name (``"cosine"`` is an alias of ``"cosine_distance"``).
DISTANCES: dict[str, Callable[..., jax.Array]] = {
    "euclidean": euclidean,
    "sqeuclidean": sqeuclidean,
    "manhattan": manhattan,
    "chebyshev": chebyshev,
    "minkowski": minkowski,
    "cosine": cosine_distance,
    "cosine_distance": cosine_distance,
    "cosine_similarity": cosine_similarity,
    "mahalanobis": mahalanobis,
    "kl_divergence": kl_divergence,
    "jensen_shannon": jensen_shannon,
    "bhattacharyya": bhattacharyya,
    "matusita": matusita,
    "chi_square": chi_square,
}

# public function -> (inner paired form, canonical name)
_INNER: dict[Callable, tuple[Callable, str]] = {
    euclidean: (_euclidean, "euclidean"),
    sqeuclidean: (_sqeuclidean, "sqeuclidean"),
    manhattan: (_manhattan, "manhattan"),
    chebyshev: (_chebyshev, "chebyshev"),
    minkowski: (_minkowski, "minkowski"),
    cosine_distance: (_cosine_distance, "cosine_distance"),
    cosine_similarity: (_cosine_similarity, "cosine_similarity"),
    mahalanobis: (_mahalanobis, "mahalanobis"),
    kl_divergence: (_kl_divergence, "kl_divergence"),
    jensen_shannon: (_jensen_shannon, "jensen_shannon"),
    bhattacharyya: (_bhattacharyya, "bhattacharyya"),
    matusita: (_matusita, "matusita"),
    chi_square: (_chi_square, "chi_square"),
}
_PROBABILITY = {"kl_divergence", "jensen_shannon", "bhattacharyya", "matusita", "chi_square"}
_MATMUL = {"euclidean", "sqeuclidean", "mahalanobis", "cosine_distance", "cosine_similarity"}


# ----------------------------------------------------------------------------------------------------
# Pairwise
# ----------------------------------------------------------------------------------------------------


def _rows_per_block(n: int, m: int, width: int, block_size: int | None) -> int:
    if block_size is not None:
        return max(1, min(n, block_size))
    return max(1, min(n, BLOCK_ELEMENTS // max(m * width, 1)))


def _blocked(kernel: Callable, X: jax.Array, rows: int) -> jax.Array:
    """Apply ``kernel(Xb, idx) -> [b, m]`` to row blocks of ``X`` (``lax.map``), return ``[n, m]``.

    ``idx`` holds the global row indices of the block (for the exact-zero diagonal). The last block is
    padded by repeating row 0 and the padding is sliced off.
    """
    n = X.shape[0]
    idx = jnp.arange(n)
    if rows >= n:
        return kernel(X, idx)
    nb = -(-n // rows)
    pad = nb * rows - n
    Xp = jnp.concatenate([X, jnp.broadcast_to(X[:1], (pad, X.shape[1]))]) if pad else X
    idxp = jnp.concatenate([idx, jnp.full((pad,), -1, idx.dtype)]) if pad else idx
    out = jax.lax.map(
        lambda args: kernel(*args),
        (Xp.reshape(nb, rows, X.shape[1]), idxp.reshape(nb, rows)),
    )
    return out.reshape(nb * rows, -1)[:n]


def _zero_diagonal(D: jax.Array, idx: jax.Array, same: bool, value: float = 0.0) -> jax.Array:
    if not same:
        return D
    return jnp.where(idx[:, None] == jnp.arange(D.shape[1])[None, :], value, D)


def _pairwise_sq_kernel(
    Y: jax.Array,
    yy: jax.Array,
    same: bool,
    squared: bool,
    M: jax.Array | None = None,
    e: jax.Array | int = 0,
    bound: int = 0,
):
    """Row-block kernel of ``2**e · sqrt(|x|²_M + |y|²_M − 2 xᵀMy)`` (``M = I`` when None; the
    square, scaled by ``2**(2 e)``, when ``squared``), clamped at 0; ``|e| <= bound`` (static).

    The square root is taken inside the block, so the elementwise epilogue runs on cache-resident
    data right after the block's GEMM (one pass over the output instead of two).
    """

    def kernel(Xb, idx):
        XbM = Xb if M is None else Xb @ M
        xx = jnp.sum(Xb * XbM, axis=-1)
        d2 = jnp.maximum(xx[:, None] + yy[None, :] - 2.0 * (XbM @ Y.T), 0.0)
        d2 = _zero_diagonal(d2, idx, same)
        if squared:
            return _times_pow2(d2, 2 * e, bound=2 * bound)
        return _times_pow2(safe_sqrt(d2), e, bound=bound)

    return kernel


def _normal_pow2_limit(dtype) -> int:
    """The largest ``k`` with ``2**k`` and ``2**-k`` both normal floats of ``dtype`` (126 in
    float32 and bfloat16, 1022 in float64, 14 in float16)."""
    fi = jnp.finfo(dtype)
    return min(int(fi.maxexp) - 1, -int(fi.minexp))


def _scale_bound(dtype) -> int:
    """Clip of the exponent by which :func:`pairwise` scales the data: ``2**e`` stays one normal
    factor, and data whose largest entry lies beyond ``2**+-bound`` (scaled into
    ``[2**-bound-1, 2**(maxexp - bound))``) has squares far inside the range. ``maxexp - 28``:
    100 in float32 and bfloat16, 996 in float64 (14 in float16)."""
    lim = _normal_pow2_limit(dtype)
    return lim - 26 if lim > 52 else lim


def _full_bound(dtype, squared: bool = False) -> int:
    """A bound on ``|e|`` beyond which ``x · 2**e`` is 0 or inf for every ``x`` in
    ``[2**-(tiny/2 + 1), 2**16]``, a distance of unit-scale data (``[2**-tiny, 2**16]``, a square, if
    ``squared``; ``2**-tiny`` the smallest subnormal): larger exponents can be clipped to it, they
    change no result. 204 in float32, 1562 in float64 (278 and 2099 for squares)."""
    fi = jnp.finfo(dtype)
    tiny = int(fi.nmant) - int(fi.minexp) + 1
    return max(int(fi.maxexp) + (tiny if squared else tiny // 2 + 1), tiny + 17)


def _times_pow2(x: jax.Array, e, bound: int = 252) -> jax.Array:
    """``x * 2**e`` for a scalar or array ``e`` (broadcast against ``x``), exact, with ``|e|``
    clipped to ``bound`` (static). A product by ``k = ceil(bound / limit)`` powers of two that are
    normal floats of ``x``'s dtype (``limit`` from :func:`_normal_pow2_limit`): one factor in the
    plain pairwise kernels (an elementwise ``ldexp`` is 2x slower there)."""
    one = jnp.ones((), x.dtype)
    k = max(1, -(-bound // _normal_pow2_limit(x.dtype)))
    if k == 1:
        return x * jnp.ldexp(one, e)
    e = jnp.clip(e, -bound, bound)
    for i in range(k):  # sum_i floor((e + i) / k) = e (Hermite), each part within the limit
        x = x * jnp.ldexp(one, (e + i) // k)
    return x


def _pow2_exponent(*arrays: jax.Array, even: bool = False) -> jax.Array:
    """The integer ``e`` with ``max |entry| / 2**e`` in ``[1/2, 1)`` over all ``arrays`` (``[1/4, 1)``
    and ``e`` even if ``even``); 0 when they are all zero. Scaling by ``2**-e`` with
    :func:`_times_pow2` is exact; dividing by ``2**e`` is not: XLA:CPU flushes ``1 / 2**127`` to 0
    (and with it the data)."""
    top = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(a)) for a in arrays])
    _, e = jnp.frexp(jnp.where(top > 0, top, 1.0))
    if even:
        e = e + (e % 2)
    return jnp.where(top > 0, e, 0)


def _grid_centre(x: jax.Array) -> jax.Array:
    """``[1, d]`` centre of the rows of ``x`` near their mean, with few significant bits (constant
    for the gradient): each column's mean rounded to a multiple of ``q``, the power of two just above
    the column's spread ``max |x - mean|``. Subtracting it leaves the rows within ``1.5 q`` of 0 (no
    cancellation in ``|x|^2 + |y|^2 - 2 x.y``), and points on a grid on it (the exact mean, say
    0.1666..., made distances that are equal exactly come out unequal)."""
    mean = jnp.mean(x, axis=0, keepdims=True)
    spread = jnp.max(jnp.abs(x - mean), axis=0, keepdims=True)
    q = jnp.ldexp(jnp.ones_like(spread), jnp.frexp(spread)[1])  # 2^e >= spread > 2^(e - 1)
    ratio = mean / q
    centre = jnp.where((spread > 0) & jnp.isfinite(ratio), jnp.round(ratio) * q, mean)
    return jax.lax.stop_gradient(centre)


def _pairwise_matmul(name: str, X, Y, same: bool, rows_fn, kw) -> jax.Array:
    """Euclidean family through the matmul identity, in row blocks."""
    if name in ("cosine_distance", "cosine_similarity"):
        Xn = _normalize_rows(X)
        Yn = Xn if same else _normalize_rows(Y)
        sim = name == "cosine_similarity"

        def kernel(Xb, idx):
            s = jnp.clip(Xb @ Yn.T, -1.0, 1.0)
            return s if sim else _zero_diagonal(1.0 - s, idx, same)

        return _blocked(kernel, Xn, rows_fn(1))
    squared = name == "sqeuclidean" or (name == "mahalanobis" and kw.get("squared", False))
    M = None
    e = 0  # the distances are 2**e times those of the scaled data
    bound = _scale_bound(X.dtype)  # static bound on |e|
    if name == "mahalanobis":
        L = kw.get("L")
        if L is not None:
            # centred before the product (rounding X @ L.T at an offset of 1e4 cost 4e-3 in
            # float32), and X, Y and L scaled to unit size first (exact), so the product neither
            # overflows nor underflows: L(x - y) in range is computed (an L of 1e30 on data of 1e10)
            X, Y = _centre_pair(X, Y, same)
            e_X = _pow2_exponent(X) if same else _pow2_exponent(X, Y)
            e_L = _pow2_exponent(L)
            full = _full_bound(X.dtype)
            X = _times_pow2(X, -e_X, bound=full)
            Y = X if same else _times_pow2(Y, -e_X, bound=full)
            Ls = _times_pow2(L, -e_L, bound=full)
            X = X @ Ls.T
            Y = X if same else Y @ Ls.T
            e, bound = e_X + e_L, full
        else:
            M = kw["M"]
    # the identity cancels for data far from the origin (1000 + N(0, 1) in float32: self-distances
    # of 1, errors of 0.66 on distances of 3.7): both sets are shifted by one centre on a coarse grid
    # (exact for grid data, so exact ties stay ties), unless the shift would overflow
    X, Y = _centre_pair(X, Y, same)
    # |x|² overflows (1e20 in float32: inf for a distance of 4e20) or underflows long before the
    # distance does: the identity runs on the data divided by a power of two (exact) that brings
    # the largest entry into [1/2, 1), and the result is scaled back
    # clipped to +-b (_scale_bound: 100 in float32, 996 in float64): the largest entry then lies in
    # [2**-b-1, 2**(maxexp - b)), where |x|^2 neither overflows nor underflows, and 2**e is one
    # normal factor
    b = _scale_bound(X.dtype)
    e_s = jnp.clip(_pow2_exponent(X) if same else _pow2_exponent(X, Y), -b, b)
    X = _times_pow2(X, -e_s, bound=b)
    Y = X if same else _times_pow2(Y, -e_s, bound=b)
    e = e + e_s
    if M is not None:
        e_M = _pow2_exponent(M, even=True)
        # symmetrised after the scaling: M + Mᵀ overflows for entries beyond 1.7e38 in float32, and
        # halving first flushes entries below 2.4e-38 to 0
        M = _symmetrize(_times_pow2(M, -e_M, bound=_full_bound(M.dtype)))
        e = e + e_M // 2  # the distance scales with the root of M's scale
        bound = _full_bound(M.dtype)
    if bound > b:  # exponents beyond it leave every distance 0 or inf: clipped
        bound = _full_bound(X.dtype, squared) // (2 if squared else 1)
        e = jnp.clip(e, -bound, bound)
    yy = jnp.sum(Y * (Y if M is None else Y @ M), axis=-1)
    return _blocked(_pairwise_sq_kernel(Y, yy, same, squared, M, e, bound), X, rows_fn(1))


def _centre_pair(X: jax.Array, Y: jax.Array, same: bool) -> tuple[jax.Array, jax.Array]:
    """``X`` and ``Y`` minus one :func:`_grid_centre` of both, unless the shift overflows."""
    c = _grid_centre(X if same else jnp.concatenate([X, Y], axis=0))
    Xc = X - c
    Yc = Xc if same else Y - c
    ok = jnp.all(jnp.isfinite(Xc)) & jnp.all(jnp.isfinite(Yc))
    X = jnp.where(ok, Xc, X)
    return X, (X if same else jnp.where(ok, Yc, Y))


def _pairwise_vmap(f: Callable, X, Y, same: bool, rows: int, zero_diag: bool) -> jax.Array:
    rowfn = jax.vmap(jax.vmap(f, in_axes=(None, 0)), in_axes=(0, None))

    def kernel(Xb, idx):
        D = rowfn(Xb, Y)
        return _zero_diagonal(D, idx, same and zero_diag)

    return _blocked(kernel, X, rows)


def _resolve(name_or_fn, kw: dict) -> tuple[Callable, str | None]:
    """Return (public callable, canonical name or None for a user function)."""
    if isinstance(name_or_fn, str):
        check_choice(name_or_fn, "distance", DISTANCES)
        fn = DISTANCES[name_or_fn]
    elif callable(name_or_fn):
        fn = name_or_fn
    else:
        raise ValueError(
            f"name_or_fn must be a distance name or a callable, got {type(name_or_fn).__name__}; "
            f"valid names: {', '.join(sorted(DISTANCES))}"
        )
    try:
        builtin = fn in _INNER
    except TypeError:  # unhashable callable object
        builtin = False
    if not builtin:
        return fn, None
    name = _INNER[fn][1]
    allowed = [k for k, v in inspect.signature(fn).parameters.items() if v.kind == v.KEYWORD_ONLY]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown keyword(s) {unknown} for distance {name!r}; valid: {allowed or 'none'}"
        )
    return fn, name


def _validate_named(name: str, X: jax.Array, Y: jax.Array | None, kw: dict) -> dict:
    """Run the value checks of the named distance; return the (converted) keyword arguments."""
    kw = dict(kw)
    if name in _PROBABILITY:
        _check_prob(X, "X")
        if Y is not None:
            _check_prob(Y, "Y")
        if name == "jensen_shannon" and not isinstance(kw.get("distance", False), bool | np.bool_):
            raise ValueError(
                f"distance must be a Python bool (static under jit), got {kw['distance']!r}"
            )
    elif name == "minkowski":
        _check_minkowski_p(kw.get("p", 2.0))
    elif name == "mahalanobis":
        kw["M"], kw["L"] = _check_metric_args(
            kw.get("M"), kw.get("L"), X.shape[1], kw.get("squared", False)
        )
    return kw


def _check_data(X, Y):
    X = check_array(X, "X", ndim=2, min_rows=1, min_features=1)
    if Y is not None:
        Y = check_array(Y, "Y", ndim=2, min_rows=1)
        check_same_dim(X, Y, "X", "Y")
        dtype = jnp.result_type(X.dtype, Y.dtype)
        X, Y = X.astype(dtype), Y.astype(dtype)
    return X, Y


def pairwise(
    name_or_fn: str | Callable[..., jax.Array],
    X,
    Y=None,
    *,
    block_size: int | None = None,
    **kw: Any,
) -> jax.Array:
    """Distances between every row of ``X`` and every row of ``Y``: ``D[i, j] = f(X[i], Y[j])``.

    * euclidean, sqeuclidean, mahalanobis, cosine (distance and similarity): through the matmul
      identity ``d²(x, y) = |x|² + |y|² − 2 x·y`` (``x @ L.T`` first for Mahalanobis given ``L``,
      on the shifted data; ``xᵀMx + yᵀMy − 2 xᵀMy`` given ``M``), clamped at zero, after shifting
      ``X`` and ``Y`` by one centre near their mean (on a coarse grid: exact ties stay ties), so data
      far from the origin lose nothing to the offset. The data (and ``L`` or ``M``) are scaled by
      powers of two first (exact), so any distance the dtype can hold is computed (float64 too:
      points 1e-200 or 1e200 apart). Fast (one GEMM), but nearly coincident points lose relative
      precision in float32 (absolute error ~ ``eps · s²``, ``s`` the spread of the data around
      that centre; scikit-learn's ``euclidean_distances`` computes float32 input in float64
      instead); use float64 or the paired form when that matters.
    * any other name, or a user callable ``f(x, y) -> scalar``: ``vmap`` of the paired form. A
      callable that cannot be traced (it converts its arguments to NumPy, as
      ``scipy.spatial.distance.braycurtis`` does, or branches on their values) is called pair by
      pair on the host (``n·m`` calls, result in ``X``'s dtype) when ``X`` and ``Y`` are concrete;
      under ``jit`` that is a ``ValueError``.
    * Built-in distances have an exactly zero diagonal when ``Y`` is None (``X`` against itself).

    Rows of ``X`` are processed in blocks of ``block_size`` rows (``jax.lax.map``) so a block never
    holds more than about :data:`BLOCK_ELEMENTS` intermediate values (``rows·m`` for the matmul
    kernels, ``rows·m·d`` for the vmap path). Only the ``[n, m]`` result is materialised.

    Args:
      name_or_fn: a key of :data:`DISTANCES` or a paired function ``(x [d], y [d]) -> []``.
      X: ``[n, d]``.
      Y: ``[m, d]``, or None for ``Y = X``.
      block_size: rows per block (``>= 1``); None chooses it from :data:`BLOCK_ELEMENTS`.
      **kw: keyword arguments of the distance (``p=`` for minkowski, ``M=``/``L=``/``squared=``
        for mahalanobis, ``distance=`` for jensen_shannon; anything for a user callable).

    Returns:
      ``[n, m]`` (``[n, n]`` when ``Y`` is None).

    Example:
      >>> X = jnp.array([[0.0, 0.0], [3.0, 4.0]])
      >>> pairwise("euclidean", X).tolist()
      [[0.0, 5.0], [5.0, 0.0]]
      >>> pairwise("minkowski", X, X[:1], p=1).tolist()
      [[0.0], [7.0]]
      >>> jax.jit(lambda A: pairwise("cosine", A))(X).tolist()   # a zero row: distance 1
      [[0.0, 1.0], [1.0, 0.0]]

    Reference: the matmul identity as in scikit-learn's ``euclidean_distances`` (Pedregosa et al.,
    JMLR 12, 2011).
    """
    fn, name = _resolve(name_or_fn, kw)
    X, Y = _check_data(X, Y)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
            raise ValueError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
    if name is not None:
        kw = _validate_named(name, X, Y, kw)
    same = Y is None
    Yv = X if same else Y
    n, m, d = X.shape[0], Yv.shape[0], X.shape[1]
    if name in _MATMUL:
        D = _pairwise_matmul(
            name, X, Yv, same, lambda width: _rows_per_block(n, m, width, block_size), kw
        )
    else:
        if name is not None:
            inner = _INNER[fn][0]
            f = (lambda x, y: inner(x, y, **kw)) if kw else inner
        else:
            f = (lambda x, y: fn(x, y, **kw)) if kw else fn
        rows = _rows_per_block(n, m, d, block_size)
        try:
            D = _pairwise_vmap(f, X, Yv, same, rows, zero_diag=name is not None)
        except _HOST_ONLY_ERRORS as err:
            if name is not None:
                raise
            if is_traced(X) or is_traced(Y):
                raise ValueError(
                    "the distance function cannot be traced (it converts its arguments to NumPy "
                    "or branches on their values), so pairwise needs concrete X and Y: call it "
                    "outside jit / vmap / grad, or write the function with jax.numpy"
                ) from err
            Yh = None if same else np.asarray(Y)
            D = jnp.asarray(_pairwise_host(fn, np.asarray(X), kw, Yh), dtype=X.dtype)
        if D.shape != (n, m):  # a user function returning a vector per pair
            raise ValueError(
                f"the distance function must return one number per pair (shape [...] for inputs "
                f"[..., d]), got a [{n}, {m}] matrix of shape {tuple(D.shape)}"
            )
    if name in _OVERFLOW:
        D = _in_range(D, name, X, Y, kw.get("M"), kw.get("L"))
    return D


# ----------------------------------------------------------------------------------------------------
# Metric axioms
# ----------------------------------------------------------------------------------------------------


def _triangle_worst(D: np.ndarray, tol: np.ndarray | float, chunk: int) -> tuple[float, int]:
    """max over (i, j, k) of ``D[i,k] − D[i,j] − D[j,k]`` (inf − inf treated as no violation)."""
    n = D.shape[0]
    worst = -np.inf
    count = 0
    with np.errstate(invalid="ignore"):
        for start in range(0, n, chunk):
            Di = D[start : start + chunk]  # [c, n]
            v = Di[:, None, :] - Di[:, :, None] - D[None, :, :]  # [c, j, k]: D[i,k]-D[i,j]-D[j,k]
            v = np.where(np.isnan(v), -np.inf, v)
            worst = max(worst, float(v.max()))
            count += int(np.count_nonzero(v > tol))
    return worst, count


# What tracing a callable that converts its arguments to NumPy (scipy.spatial.distance's, say) or
# branches on their values raises: such a callable is evaluated pair by pair on the host instead.
_HOST_ONLY_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _pairwise_host(
    fn: Callable[..., Any], X: np.ndarray, kw: dict[str, Any], Y: np.ndarray | None = None
) -> np.ndarray:
    """``D[i, j] = fn(X[i], Y[j], **kw)`` (``Y = X`` when None) by a Python loop, for callables
    that cannot be traced. Float64."""
    Yv = X if Y is None else Y
    D = np.empty((X.shape[0], Yv.shape[0]), dtype=np.float64)
    for i in range(X.shape[0]):
        for j in range(Yv.shape[0]):
            v = np.asarray(fn(X[i], Yv[j], **kw))
            if v.shape != ():
                raise ValueError(
                    "the distance function must return a scalar, one number per pair; "
                    f"fn(X[{i}], {'X' if Y is None else 'Y'}[{j}]) has shape {v.shape}"
                )
            D[i, j] = v
    return D


#: Size of the moves of :func:`_rounding_sensitivity`, in units of ``eps · |x_k|`` per coordinate.
_ROUNDING_STEPS = 10.0


def _rounding_sensitivity(
    paired: Callable[[np.ndarray, np.ndarray], np.ndarray], X: np.ndarray, eps: float
) -> np.ndarray:
    """``[n]``: how far ``fn`` moves ``X[i]`` by a rounding-size step, in ``fn``'s own units.

    Each coordinate ``k`` of ``X[i]`` is moved by ``10 · eps · |X[i, k]|`` (the data's precision,
    with a margin; zero coordinates stay, signs are kept), in four fixed sign patterns (all +, +/-
    alternating, two pseudo-random ones) and both senses; the value is
    ``max over patterns of min over senses of fn(X[i], X[i] ± step) − fn(X[i], X[i])``, at least 0.
    The smaller sense drops first-order changes a divergence shows off its domain (KL of a
    probability vector moved off the simplex), which are not rounding. A pattern counts only where
    ``fn`` is continuous: a step 1024 times smaller must shrink the value at least 4-fold
    (``scipy.spatial.distance.hamming`` of any move is a fixed fraction, not rounding).
    ``paired(A, B)`` evaluates ``fn(A[r], B[r])`` for every row ``r``.
    """
    n, d = X.shape
    signs = np.stack(
        [
            np.ones(d),
            np.where(np.arange(d) % 2 == 0, 1.0, -1.0),
            *np.random.default_rng(0).choice([-1.0, 1.0], size=(2, d)),
        ]
    )  # [4, d]
    big = _ROUNDING_STEPS * eps
    steps = np.array([big, -big, big / 1024, -big / 1024])  # [4]
    moves = steps[:, None, None, None] * signs[None, :, None, :] * np.abs(X)  # [4, 4, n, d]
    B = np.concatenate([X[None], (X[None, None] + moves).reshape(-1, n, d)]).reshape(-1, d)
    A = np.broadcast_to(X, (B.shape[0] // n, n, d)).reshape(-1, d)
    with np.errstate(invalid="ignore"):
        v = np.asarray(paired(A, B), dtype=np.float64).reshape(-1, n)
        v = (v[1:] - v[0]).reshape(4, 4, n)  # [step, pattern, n]
        coarse = np.minimum(v[0], v[1])
        fine = np.minimum(v[2], v[3])
        ok = np.isfinite(coarse) & np.isfinite(fine) & (fine <= 0.25 * coarse)
    return np.maximum(np.where(ok, coarse, 0.0).max(axis=0), 0.0)


def _matrix_rounding_tol(kw: dict[str, Any], sep: np.ndarray, d: int) -> np.ndarray | float:
    """Per-pair tolerance of Mahalanobis for its matrix rounded to its dtype (``sep[i, j]`` is
    ``||X[i] − X[j]||``): a direction ``M`` (or ``L``) maps to 0 in exact arithmetic is only mapped
    to ``~sqrt(c · eps · ||M||₂)`` (``c · eps · ||L||₂``) per unit length, ``c = 4 sqrt(d)``. Squared
    when ``squared=True``."""
    c = 4.0 * math.sqrt(d)
    if kw.get("M") is not None:
        M = kw["M"]
        eps = float(jnp.finfo(M.dtype).eps)
        per_unit = math.sqrt(c * eps * float(np.linalg.norm(np.asarray(M, np.float64), 2)))
    elif kw.get("L") is not None:
        L = kw["L"]
        eps = float(jnp.finfo(L.dtype).eps)
        per_unit = c * eps * float(np.linalg.norm(np.asarray(L, np.float64), 2))
    else:
        return 0.0
    t = per_unit * sep
    return t * t if kw.get("squared", False) else t


@reuse(64)
def _paired_program(fn: Callable, static: tuple) -> Callable:
    """``jit(vmap(fn))`` over pairs of rows, with the array settings as a third argument and the
    static ones (``(name, type, value)`` items) compiled in; cached, so equal settings reuse it."""
    settings = {k: v for k, _, v in static}
    return jax.jit(
        jax.vmap(lambda x, y, arrays: fn(x, y, **arrays, **settings), in_axes=(0, 0, None))
    )


def check_metric_axioms(
    fn: str | Callable[..., jax.Array],
    X,
    *,
    atol: float | None = None,
    identity_atol: float | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Check the metric axioms of a distance on every pair and triple of a sample.

    With ``D[i, j] = fn(X[i], X[j])`` (the paired form, no forced zero diagonal), tolerance ``atol``.
    ``D`` is computed in float64 (x64 enabled for the call, whatever the data's dtype, bfloat16 and
    float16 included), so that float32 rounding near 0 is not mistaken for a failed axiom; the
    default tolerances follow the dtype ``fn`` returns (float64 unless it casts). For the
    probability divergences (named), the rows are renormalised to sum to 1 in float64 first (their
    float32 sums are 1 only within rounding, which made KL of near-duplicates negative):

    * ``non_negativity``: ``D[i, j] >= -atol``; worst violation ``max(0, −min D)``.
    * ``identity`` (identity of indiscernibles): ``|D[i, i]| <= t[i, i]`` *and*
      ``D[i, j] > t[i, j]`` whenever ``X[i] != X[j]``, ``t`` the identity tolerance. Worst
      violation: ``max(max_i |D[i,i]|, s)`` where ``s`` is the largest Euclidean separation
      ``||X[i] − X[j]||`` of a distinct pair that ``fn`` puts at distance ``<= t[i, j]``. By
      default distinct points count as coincident only below the data's own precision, measured
      in ``fn``'s own units (squared distances get squared tolerances):
      ``t[i, j] = max(100 · eps_out · max|D|, r[i], r[j])``, where ``100 · eps_out · max|D|`` is the
      evaluation noise of ``D`` (``eps_out`` of the dtype ``fn`` returns) and ``r[i]`` is how far
      ``fn`` moves ``X[i]`` by a rounding-size step: each coordinate moved by
      ``10 · eps · |X[i, k]|`` (``eps`` of ``X``'s dtype) in four fixed sign patterns, the larger
      pattern, the smaller of the two senses, counted only where ``fn`` is continuous. Points that
      differ only by rounding of a direction the distance ignores (``x`` and ``2x`` for cosine, a
      null direction of a singular ``L``) thus count as coincident. For Mahalanobis the matrix is
      rounded to its dtype too, which leaves an exactly singular ``M`` only approximately singular:
      ``t[i, j]`` is at least ``sqrt(c · eps_M · ||M||₂) · ||X[i] − X[j]||`` given ``M``
      (``c · eps_L · ||L||₂ · ||X[i] − X[j]||`` given ``L``; squared when ``squared=True``),
      ``c = 4 sqrt(d)``. Pass ``identity_atol`` for a callable whose own constants are rounded that
      way. Extra keys: ``reflexive`` (``D[i,i] = 0`` holds), ``self_distance``
      (``max |D[i,i]|``), ``zero_distinct_pairs`` (number of such pairs).
    * ``symmetry``: ``|D[i, j] − D[j, i]| <= atol``; worst violation ``max |D − Dᵀ|``.
    * ``triangle``: ``D[i, k] <= D[i, j] + D[j, k] + atol``; worst violation
      ``max(0, max D[i,k] − D[i,j] − D[j,k])``; extra key ``violating_triples``. Vectorised over
      ``n³`` triples in chunks (fine for ``n`` up to a few hundred).

    Infinite distances are allowed (``inf <= inf + x`` counts as satisfied). ``"kind"`` summarises,
    first match wins (non-negativity and ``D[i,i] = 0`` are required for every named kind):

    =====================  ======================================================================
    ``metric``             all four hold
    ``pseudometric``       all but separation (distinct points may be at distance 0)
    ``quasimetric``        all but symmetry
    ``quasipseudometric``  the triangle inequality holds, symmetry and separation fail
    ``semimetric``         all but the triangle inequality
    ``pseudosemimetric``   symmetric, but neither separation nor the triangle inequality
    ``divergence``         separation holds, symmetry fails (and the triangle inequality too)
    ``premetric``          only non-negativity and ``D[i,i] = 0``
    ``not a distance``     non-negativity or ``D[i,i] = 0`` fails
    =====================  ======================================================================

    A sample can only disprove an axiom: "holds" means "no counter-example among these points".

    Args:
      fn: a key of :data:`DISTANCES` or a paired callable ``(x [d], y [d]) -> []``. A JAX callable
        is vmapped over the pairs; one that cannot be traced (it converts its arguments to NumPy,
        as ``scipy.spatial.distance.euclidean`` does, or branches on their values) is called pair
        by pair on the host, ``n²`` calls.
      X: ``[n, d]`` sample (probability vectors for the divergences).
      atol: absolute tolerance of non-negativity, symmetry and triangle; None uses
        ``100 · eps · max finite |D|``, ``eps`` of the dtype ``fn`` returns (at least
        ``sqrt(eps(X.dtype)) · max |D|`` for Mahalanobis given ``M``, whose rounded matrix moves
        its root by that much).
      identity_atol: absolute tolerance of the identity axiom (the same for every pair); None uses
        the per-pair tolerance ``t[i, j]`` above.
      **kw: keyword arguments of ``fn`` (``M=``, ``p=``, ...).

    Returns:
      ``{"non_negativity": {"holds", "worst_violation"}, "identity": {...}, "symmetry": {...},
      "triangle": {...}, "kind": str, "n_points": n}``.

    Example:
      >>> X = jax.random.normal(jax.random.key(0), (20, 3))
      >>> check_metric_axioms("sqeuclidean", X)["triangle"]["holds"]
      False
      >>> check_metric_axioms("euclidean", X)["kind"]
      'metric'

    Reference: Deza & Deza, *Encyclopedia of Distances* (2016), ch. 1 (metric, pseudo-, quasi-,
    semi-, quasi-pseudo-metric).
    """
    resolved, name = _resolve(fn, kw)
    X, _ = _check_data(X, None)
    if is_traced(X):
        raise ValueError("check_metric_axioms needs a concrete X (it returns Python values)")
    if name is not None:
        kw = _validate_named(name, X, None, kw)  # in the data's own dtype (its tolerances)
    n, d = X.shape
    rows = _rows_per_block(n, n, d, None)
    # Evaluated in float64 (x64 on for this call), so float32 rounding is not taken for a broken
    # axiom; the tolerances below follow the dtype the function returns.
    with jax.enable_x64(True):
        X64 = jnp.asarray(np.asarray(X), dtype=jnp.float64)
        if name in _PROBABILITY:
            # float32 histograms sum to 1 only within rounding: KL of near-duplicates whose sums
            # differ in the last bits came out negative (or 0, a failed separation)
            X64 = X64 / jnp.sum(X64, axis=-1, keepdims=True)
        kw64 = {
            k: jnp.asarray(v, dtype=jnp.float64)
            if isinstance(v, jax.Array | np.ndarray) and jnp.issubdtype(v.dtype, jnp.floating)
            else v
            for k, v in kw.items()
        }
        base = _INNER[resolved][0] if name is not None else resolved
        f = (lambda x, y: base(x, y, **kw64)) if kw64 else base
        try:
            D_dev = _pairwise_vmap(f, X64, X64, False, rows, zero_diag=False)
            if name is not None:
                # array settings (M, L) are arguments of one cached program per distance and static
                # settings: a fresh jit(vmap(f)) per call compiled again every time (0.2-0.3 s).
                # (A user's callable keeps its settings as constants: it may read them concretely.)
                arrays = {k: v for k, v in kw64.items() if isinstance(v, jax.Array)}
                static = tuple(sorted((k, type(v), v) for k, v in kw64.items() if k not in arrays))
                program, args = _paired_program(base, static), (arrays,)
            else:
                program, args = jax.jit(jax.vmap(f)), ()

            def paired(A, B):
                out = program(jnp.asarray(A), jnp.asarray(B), *args)
                return np.asarray(out, dtype=np.float64)

        except _HOST_ONLY_ERRORS:
            if name is not None:
                raise
            D_dev = _pairwise_host(resolved, np.asarray(X64), kw)

            def paired(A, B):
                return np.array([np.asarray(resolved(a, b, **kw)) for a, b in zip(A, B)])

        out_dtype = np.dtype(D_dev.dtype)
        D = np.asarray(D_dev, dtype=np.float64)
        eps_data = float(jnp.finfo(X.dtype).eps)
        if identity_atol is None and D.shape == (n, n) and not np.isnan(D).any():
            rounding = _rounding_sensitivity(paired, np.asarray(X64), eps_data)
    if not np.issubdtype(out_dtype, np.floating):
        out_dtype = np.dtype(np.float64)
    if D.shape != (n, n):
        raise ValueError(
            "the distance function must return a scalar, one number per pair; pairwise result "
            f"has shape {D.shape}"
        )
    if np.isnan(D).any():
        raise ValueError(f"fn returned NaN for {int(np.isnan(D).sum())} pair(s) of the sample")
    finite = D[np.isfinite(D)]
    # tolerances relative to the distances (max(1, .) made them absolute: Euclidean on data of
    # scale 1e-5 came out a "pseudometric", its distinct points closer than 1.2e-5)
    top = float(np.abs(finite).max()) if finite.size else 0.0
    scale = top if top > 0 else 1.0
    eps_out = float(jnp.finfo(out_dtype).eps)
    quadratic = name == "mahalanobis" and kw.get("M") is not None
    if atol is None:
        atol = 100.0 * eps_out * scale
        if quadratic:  # M rounded to the data's dtype: its root is off by ~sqrt(eps) near 0
            atol = max(atol, float(np.sqrt(eps_data)) * scale)
    elif isinstance(atol, bool) or not isinstance(atol, int | float | np.floating | np.integer):
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")
    elif not np.isfinite(atol) or atol < 0:
        raise ValueError(f"atol must be a non-negative finite number, got {atol!r}")
    atol = float(atol)
    Xn = np.asarray(X, dtype=np.float64)
    if identity_atol is None:
        # Per pair, in fn's own units: the evaluation noise of D, how far fn moves either point
        # by a rounding-size step, and for Mahalanobis how far its rounded matrix moves a null
        # direction. (A fraction of the largest distance counted points far above the data's
        # precision as coincident: 0.01 apart among normal data, for sqeuclidean.)
        id_tol = np.maximum(100.0 * eps_out * top, np.maximum(rounding[:, None], rounding[None, :]))
        if name == "mahalanobis":
            # separations from the Gram matrix ([n, n], not an [n, n, d] difference array); its
            # cancellation near 0 does not matter for a tolerance
            sq = np.sum(Xn * Xn, axis=1)
            sep = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * Xn @ Xn.T, 0.0))
            id_tol = np.maximum(id_tol, _matrix_rounding_tol(kw, sep, d))
    elif isinstance(identity_atol, bool) or not isinstance(
        identity_atol, int | float | np.floating | np.integer
    ):
        raise ValueError(f"identity_atol must be a non-negative number, got {identity_atol!r}")
    elif not np.isfinite(identity_atol) or identity_atol < 0:
        raise ValueError(
            f"identity_atol must be a non-negative finite number, got {identity_atol!r}"
        )
    else:
        id_tol = np.full((n, n), float(identity_atol))

    neg = max(0.0, -float(D.min()))
    non_negativity = {"holds": neg <= atol, "worst_violation": neg}

    self_dist = float(np.abs(np.diag(D)).max())
    _, row_id = np.unique(Xn, axis=0, return_inverse=True)
    row_id = row_id.reshape(-1)
    zero_distinct = (row_id[:, None] != row_id[None, :]) & (D <= id_tol)
    ii, jj = np.nonzero(zero_distinct)
    worst_sep = float(np.linalg.norm(Xn[ii] - Xn[jj], axis=-1).max()) if ii.size else 0.0
    reflexive = bool(np.all(np.abs(np.diag(D)) <= np.diag(id_tol)))
    separation = not zero_distinct.any()
    identity = {
        "holds": bool(reflexive and separation),
        "worst_violation": max(self_dist, worst_sep),
        "reflexive": bool(reflexive),
        "self_distance": self_dist,
        "zero_distinct_pairs": int(np.count_nonzero(np.triu(zero_distinct, 1))),
    }

    with np.errstate(invalid="ignore"):
        asym = np.abs(D - D.T)
    asym = np.where(np.isnan(asym), 0.0, asym)  # inf vs inf
    worst_asym = float(asym.max())
    symmetry = {"holds": worst_asym <= atol, "worst_violation": worst_asym}

    chunk = max(1, BLOCK_ELEMENTS // max(n * n, 1))
    tri, count = _triangle_worst(D, atol, chunk)
    tri = max(0.0, tri)
    triangle = {"holds": tri <= atol, "worst_violation": tri, "violating_triples": count}

    nonneg, sym, trg = non_negativity["holds"], symmetry["holds"], triangle["holds"]
    if not (nonneg and reflexive):
        kind = "not a distance"
    elif separation and sym and trg:
        kind = "metric"
    elif sym and trg:
        kind = "pseudometric"
    elif separation and trg:
        kind = "quasimetric"
    elif trg:
        kind = "quasipseudometric"
    elif separation and sym:
        kind = "semimetric"
    elif sym:
        kind = "pseudosemimetric"
    elif separation:
        kind = "divergence"
    else:
        kind = "premetric"
    return {
        "non_negativity": {k: (bool(v) if k == "holds" else v) for k, v in non_negativity.items()},
        "identity": identity,
        "symmetry": {k: (bool(v) if k == "holds" else v) for k, v in symmetry.items()},
        "triangle": {k: (bool(v) if k == "holds" else v) for k, v in triangle.items()},
        "kind": kind,
        "n_points": int(n),
    }
