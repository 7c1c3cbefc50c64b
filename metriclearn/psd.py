"""Positive semi-definite (PSD) matrices: projection, checks, and the factorisation ``M = LᵀL``.

A Mahalanobis metric ``d_M(x, y) = sqrt((x - y)ᵀ M (x - y))`` needs ``M`` symmetric PSD; equivalently
``M = LᵀL`` for a linear map ``L`` (``[k, d]``), and then ``d_M(x, y) = ||L x - L y||``. This module
converts between the two forms and projects arbitrary square matrices onto the PSD cone.

Two layers, as everywhere in metriclearn:

* ``_project_psd``, ``_factor_eigh``, ``_symmetrize``: jittable, non-validating inner forms (used by the
  projected-gradient solver inside ``jit``);
* ``project_psd``, ``is_psd``, ``factor``, ``components_to_metric``, ``symmetrize``: validating public
  forms that raise ``ValueError`` naming the argument on bad input.

Reference: N. J. Higham, "Computing a nearest symmetric positive semidefinite matrix", Linear Algebra
and its Applications 103 (1988) 103-118 (the Frobenius-nearest PSD matrix clips the eigenvalues of the
symmetric part).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_array, check_positive_int, is_traced

__all__ = [
    "components_to_metric",
    "default_tol",
    "factor",
    "is_psd",
    "project_psd",
    "symmetrize",
]


# ----------------------------------------------------------------------------------------------------
# Inner (jittable, non-validating) forms
# ----------------------------------------------------------------------------------------------------


def _symmetrize(M: jax.Array) -> jax.Array:
    # halve first: M + Mᵀ overflows for entries above half the largest float
    return 0.5 * M + 0.5 * jnp.swapaxes(M, -1, -2)


@jax.custom_jvp
def _project_psd(M: jax.Array, eps: float = 0.0) -> jax.Array:
    """Frobenius-nearest matrix with eigenvalues ``>= eps`` to ``M`` (no checks; jittable).

    Differentiable everywhere, also at repeated eigenvalues (``M = I``), where the derivative of
    ``eigh``'s eigenvectors is NaN: the JVP is the Daleckii-Krein formula
    ``dP = V (F ∘ (Vᵀ dS V)) Vᵀ`` with ``F_ij`` the divided difference of ``max(·, eps)`` at
    ``(w_i, w_j)`` (its derivative where the eigenvalues coincide), ``dS`` the symmetric part of ``dM``.
    """
    return _project_psd_impl(M, eps)[0]


def _at_least_float32(M: jax.Array) -> jax.Array:
    """``M`` in float32 when its dtype is narrower (bfloat16, float16): XLA's ``eigh`` and
    ``cholesky`` have no half-precision kernels ("Unsupported dtype")."""
    if jnp.finfo(M.dtype).bits < 32:
        return M.astype(jnp.float32)
    return M


def _eigh_scaled(M: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``eigh`` of the symmetric part of ``M / c``, ``c = max|M|``: ``(w, V, c)``; ``M``'s are ``c w``.

    XLA's ``eigh`` returns NaN, and ``(M + Mᵀ) / 2`` overflows, for entries near the largest float
    (float32 ``~1e38``); scaling to unit size first costs one reduction and keeps finite inputs finite.
    Half precision (bfloat16, float16) is computed, and returned, in float32.
    """
    M = _at_least_float32(M)
    c = jnp.max(jnp.abs(M))
    c = jnp.where((c > 0) & jnp.isfinite(c), c, 1.0).astype(M.dtype)
    # two factors 1/sqrt(c): 1/c itself is subnormal (flushed to zero on CPU) for c near the max
    r = 1.0 / jnp.sqrt(c)
    w, V = jnp.linalg.eigh(_symmetrize((M * r) * r))
    return w, V, c


def _project_psd_impl(M, eps):
    w, V, c = _eigh_scaled(M)
    floor = eps / c
    fw = jnp.maximum(w, floor)
    P = c * _symmetrize((V * fw) @ V.T)
    return P, w, fw, V, floor


@_project_psd.defjvp
def _project_psd_jvp(primals, tangents):
    M, eps = primals
    dM, _ = tangents  # the floor eps is a hyperparameter: no derivative through it
    # w, fw, floor in units of c = max|M|: the divided differences below are scale-free
    P, w, fw, V, floor = _project_psd_impl(M, eps)
    dw = w[:, None] - w[None, :]
    scale = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(w.dtype).tiny)
    close = jnp.abs(dw) <= 100.0 * jnp.finfo(w.dtype).eps * scale
    # the derivative of max(., floor) where eigenvalues coincide (1/2 exactly at the floor, as
    # jnp.maximum's)
    mid = 0.5 * (w[:, None] + w[None, :])
    deriv = jnp.where(mid > floor, 1.0, jnp.where(mid < floor, 0.0, 0.5)).astype(w.dtype)
    divided = (fw[:, None] - fw[None, :]) / jnp.where(close, 1.0, dw)
    # max(., floor) is monotone and 1-Lipschitz: its divided differences lie in [0, 1]
    F = jnp.where(close, deriv, jnp.clip(divided, 0.0, 1.0))
    dS = _symmetrize(dM)
    dP = V @ (F * (V.T @ dS @ V)) @ V.T
    return P, _symmetrize(dP)


def _factor_eigh(M: jax.Array, n_components: int | None = None) -> jax.Array:
    """``L`` (``[k, d]``, rows by decreasing eigenvalue) with ``LᵀL ≈ M`` via ``eigh`` (jittable).

    Negative eigenvalues (rounding) are clipped at zero, so ``LᵀL`` is the PSD projection of ``M``.
    """
    w, V, c = _eigh_scaled(M)  # eigenvalues c w: finite also for entries near the largest float
    w, V = w[::-1], V[:, ::-1]
    if n_components is not None:
        w, V = w[:n_components], V[:, :n_components]
    pos = w > 0
    root = jnp.where(pos, jnp.sqrt(jnp.where(pos, w, 1.0)), 0.0) * jnp.sqrt(c)
    return root[:, None] * V.T


# ----------------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------------


def default_tol(dtype, dim: int) -> float:
    """Default relative tolerance of the PSD and symmetry checks: ``10 · dim · eps(dtype)``.

    About ``1.2e-6 · dim`` in float32 and ``2.2e-15 · dim`` in float64 (``0.078 · dim`` in bfloat16):
    rounding of a matrix that is PSD in exact arithmetic stays inside it, a clearly indefinite matrix
    does not.

    Args:
      dtype: a floating dtype (NumPy, JAX or ml_dtypes: float64, float32, bfloat16, float16).
      dim: matrix dimension ``>= 0`` (an integer; 0 counts as 1).

    Returns:
      ``float`` tolerance.

    Raises:
      ValueError: ``dtype`` not a floating dtype, or ``dim`` not a non-negative integer.
    """
    if dtype is None:  # np.dtype(None) is float64
        raise ValueError("dtype must be a floating dtype, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dt.name}")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 0:
        raise ValueError(f"dim must be a non-negative integer, got {dim!r}")
    return 10.0 * max(int(dim), 1) * float(jnp.finfo(dt).eps)


def _check_square(M, name: str) -> jax.Array:
    M = check_array(M, name, ndim=2)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(M.shape)}")
    if M.shape[0] == 0:
        raise ValueError(f"{name} must be at least 1x1, got shape {tuple(M.shape)}")
    return M


def _psd_report(M: jax.Array) -> tuple[float, float, float, float]:
    """``(max|M − Mᵀ|, λ_min, max|M|, max(max|M|, max|λ|))`` of a concrete square matrix, computed in
    float64 NumPy (``λ`` the eigenvalues of the symmetric part)."""
    A = np.asarray(M, dtype=np.float64)
    entries = float(np.max(np.abs(A))) if A.size else 0.0
    asym = float(np.max(np.abs(A - A.T))) if A.size else 0.0
    w = np.linalg.eigvalsh(0.5 * (A + A.T))
    return asym, float(w[0]), entries, max(entries, float(np.max(np.abs(w))))


def _psd_verdict(M: jax.Array, tol: float) -> tuple[bool, bool, float, float, float, float]:
    """``(symmetric, psd, asym, λ_min, max|M|, eigenvalue scale)``: symmetric when
    ``max|M − Mᵀ| <= tol · max|M|``, PSD when ``λ_min >= −tol · max(max|M|, max|λ|)``."""
    asym, wmin, entries, scale = _psd_report(M)
    symmetric = asym <= tol * max(entries, np.finfo(np.float64).tiny)
    return symmetric, wmin >= -tol * scale, asym, wmin, entries, scale


def _resolve_tol(tol, M: jax.Array, name: str = "tol") -> float:
    if tol is None:
        return default_tol(M.dtype, M.shape[0])
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a non-negative number, got {tol!r}")
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {tol!r}")
    return float(tol)


def _require_psd(M: jax.Array, name: str, tol: float | None) -> None:
    """Raise ``ValueError`` unless the concrete square ``M`` is symmetric PSD within ``tol``."""
    if is_traced(M):
        return
    tol = _resolve_tol(tol, M)
    symmetric, psd, asym, wmin, entries, scale = _psd_verdict(M, tol)
    if not symmetric:
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}ᵀ| = {asym:.3g} exceeds "
            f"tol·max|{name}| = {tol * entries:.3g} (shape {tuple(M.shape)}); "
            "use metriclearn.psd.symmetrize or project_psd"
        )
    if not psd:
        raise ValueError(
            f"{name} must be positive semi-definite: smallest eigenvalue {wmin:.3g} < "
            f"-tol·max|eig| = {-tol * scale:.3g} (shape {tuple(M.shape)}); "
            "use metriclearn.psd.project_psd"
        )


# ----------------------------------------------------------------------------------------------------
# Public forms
# ----------------------------------------------------------------------------------------------------


def symmetrize(M) -> jax.Array:
    """Symmetric part of a square matrix, ``(M + Mᵀ) / 2``.

    Args:
      M: ``[d, d]`` square matrix.

    Returns:
      ``[d, d]`` symmetric matrix.

    Example:
      >>> symmetrize(jnp.array([[1.0, 2.0], [0.0, 1.0]])).round(4).tolist()
      [[1.0, 1.0], [1.0, 1.0]]
    """
    return _symmetrize(_check_square(M, "M"))


def project_psd(M, *, eps: float = 0.0) -> jax.Array:
    """Frobenius-nearest symmetric matrix to ``M`` whose eigenvalues are all ``>= eps``.

    ``P = V diag(max(w, eps)) Vᵀ`` where ``(M + Mᵀ)/2 = V diag(w) Vᵀ`` (Higham 1988). With ``eps = 0``
    this is the projection onto the PSD cone used by projected-gradient metric learners (MMC, Xing et
    al. 2002); ``eps > 0`` projects onto ``{M : M ⪰ eps·I}`` (positive definite).

    Args:
      M: ``[d, d]`` square matrix (need not be symmetric).
      eps: eigenvalue floor, ``>= 0``.

    Returns:
      ``[d, d]`` symmetric PSD matrix, of ``M``'s dtype, but float32 for half precision (bfloat16,
      float16: XLA has no half-precision ``eigh``). jit users call ``metriclearn.psd._project_psd``
      (no checks).

    Example:
      >>> project_psd(jnp.array([[1.0, 0.0], [0.0, -2.0]])).round(4).tolist()
      [[1.0, 0.0], [0.0, 0.0]]
    """
    M = _check_square(M, "M")
    if isinstance(eps, bool) or not isinstance(eps, int | float | np.floating | np.integer):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a non-negative finite number, got {eps!r}")
    return _project_psd(M, float(eps))


def is_psd(M, *, tol: float | None = None) -> bool:
    """Whether ``M`` is symmetric positive semi-definite up to a relative tolerance.

    True when ``max|M - Mᵀ| <= tol · max|M|`` and ``λ_min((M + Mᵀ)/2) >= -tol · max(|λ|, max|M|)``
    (eigenvalues computed in float64). ``tol=None`` uses :func:`default_tol` (``10·d·eps`` of ``M``'s
    dtype, any float dtype including bfloat16 / float16). Not jittable (returns a Python bool).

    Args:
      M: ``[d, d]`` square matrix.
      tol: relative tolerance ``>= 0`` or None.

    Returns:
      ``bool``.

    Example:
      >>> is_psd(jnp.eye(3)), is_psd(-jnp.eye(3))
      (True, False)
    """
    M = _check_square(M, "M")
    if is_traced(M):
        raise ValueError(
            "is_psd needs a concrete M (it returns a Python bool); not usable under jit"
        )
    tol = _resolve_tol(tol, M)
    symmetric, psd, *_ = _psd_verdict(M, tol)
    return bool(symmetric and psd)


def factor(M, *, n_components: int | None = None, tol: float | None = None) -> jax.Array:
    """Factor a PSD matrix as ``M = LᵀL``.

    * ``n_components=None`` and ``M`` positive definite: ``L = Cᵀ`` from the Cholesky factor
      ``M = C Cᵀ`` (upper triangular ``L``, ``[d, d]``).
    * otherwise (rank-deficient ``M``, or truncation requested): ``L = diag(√w) Vᵀ`` from
      ``eigh``, rows ordered by decreasing eigenvalue; tiny negative eigenvalues (rounding, within
      ``tol``) are clipped to 0, so zero rows are kept for a rank-deficient ``M`` (``[d, d]``).
      ``n_components=k`` keeps the ``k`` rows of largest eigenvalue (``[k, d]``), the best rank-``k``
      approximation of ``M`` (Eckart–Young).

    Then ``||L x - L y|| = d_M(x, y)``: transform the data once by ``x ↦ L x`` and use Euclidean
    distances. Under ``jit`` (traced ``M``) the value checks are skipped and the ``eigh`` path is
    always used (``_factor_eigh`` is the non-validating inner form).

    Args:
      M: ``[d, d]`` symmetric PSD matrix (within ``tol``).
      n_components: number of rows of ``L`` (``1 <= k <= d``) or None.
      tol: relative tolerance of the symmetry/PSD checks (see :func:`is_psd`).

    Returns:
      ``L``: ``[d, d]`` or ``[n_components, d]``, of ``M``'s dtype, but float32 for half precision
      (bfloat16, float16: XLA has no half-precision ``eigh`` or ``cholesky``).

    Raises:
      ValueError: ``M`` not square, not finite, not symmetric or clearly not PSD; bad
        ``n_components``.

    Example:
      >>> L = factor(jnp.array([[2.0, 1.0], [1.0, 2.0]]))
      >>> (L.T @ L).round(4).tolist()
      [[2.0, 1.0], [1.0, 2.0]]
    """
    M = _check_square(M, "M")
    d = M.shape[0]
    if n_components is not None:
        n_components = check_positive_int(n_components, "n_components")
        if n_components > d:
            raise ValueError(
                f"n_components must be <= dimension {d} of M (shape {tuple(M.shape)}), "
                f"got {n_components}"
            )
    if is_traced(M):
        return _factor_eigh(M, n_components)
    tol = _resolve_tol(tol, M)
    _require_psd(M, "M", tol)
    if n_components is None:
        _, wmin, _, scale = _psd_report(M)
        if wmin > tol * scale:
            L = jnp.linalg.cholesky(_symmetrize(_at_least_float32(M))).T
            if bool(jnp.all(jnp.isfinite(L))):
                return L
    return _factor_eigh(M, n_components)


def components_to_metric(L) -> jax.Array:
    """Mahalanobis matrix ``M = LᵀL`` of a linear map ``L`` (``[k, d]`` → ``[d, d]``, PSD).

    Args:
      L: ``[k, d]`` components (rows are the projection directions, as scikit-learn's
        ``components_``).

    Returns:
      ``[d, d]`` symmetric PSD matrix.

    Example:
      >>> components_to_metric(jnp.array([[1.0, 1.0]])).round(4).tolist()
      [[1.0, 1.0], [1.0, 1.0]]
    """
    L = check_array(L, "L", ndim=2, min_rows=1)
    if L.shape[1] == 0:
        raise ValueError(f"L must have at least one column, got shape {tuple(L.shape)}")
    return _symmetrize(L.T @ L)
