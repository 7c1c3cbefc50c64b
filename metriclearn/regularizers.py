"""Regularizers ``R(M)`` of a Mahalanobis matrix for  ``min_M loss(M) + lam * R(M)``.

Every regularizer is a pure, differentiable JAX function ``reg(M, **kw) -> scalar`` of a ``[d, d]``
matrix (jittable; keyword arguments carry data such as a prior or a graph). They are collected in the
plain dict :data:`REGULARIZERS`; :func:`get_regularizer` resolves a name with a ``ValueError`` listing the
valid ones.

=============== ============================================ ========================================
name            value                                        effect
=============== ============================================ ========================================
``frobenius``   ``||M||_F^2``                                 small entries (ridge)
``trace``       ``tr(M)`` (nuclear norm on the PSD cone)       low rank
``logdet``      ``tr(M M0^-1) - logdet(M M0^-1) - d``          stay close to a prior ``M0`` (ITML)
``l1``          ``sum_ij |M_ij|``                              sparse entries (SDML-style)
``l21``         ``sum_i ||M_i,:||_2``                          whole rows/columns zero (feature selection)
``laplacian``   ``1/2 sum_ij W_ij d_M(x_i, x_j)^2``            neighbours in ``X`` stay close
=============== ============================================ ========================================

The L1 term is non-differentiable at zero (the JAX gradient is ``sign(M)`` away from zero and 1 at
zero, a valid subgradient, not the 0 of ``sign``); for exact
sparsity use the soft-thresholding prox :func:`soft_threshold` (the solver's ``l1_prox`` option).

Example::

    from metriclearn import regularizers as R
    R.logdet_divergence(M, jnp.eye(d))          # 0 at M = I
    R.REGULARIZERS["trace"](M)

References: Davis et al., "Information-theoretic metric learning", ICML 2007 (LogDet);
Ying, Huang & Campbell, "Sparse metric learning via smooth optimization", NIPS 2009 (L2,1);
Hoi, Liu & Chang, "Semi-supervised distance metric learning for collaborative image retrieval", CVPR 2008
(Laplacian regularization).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import (
    as_key,
    as_real,
    check_array,
    check_flags,
    check_hyper,
    check_positive_int,
    is_traced,
)
from metriclearn.distances import _last_axis_exponent, pairwise_sqeuclidean, safe_sqrt
from metriclearn.psd import _check_square

__all__ = [
    "frobenius",
    "trace",
    "logdet_divergence",
    "logdet_divergence_whitened",
    "l1",
    "l21",
    "laplacian",
    "knn_affinity",
    "soft_threshold",
    "REGULARIZERS",
    "get_regularizer",
    "prior_matrix",
    "PRIORS",
]


def frobenius(M: jax.Array) -> jax.Array:
    """Squared Frobenius norm ``||M||_F^2 = sum_ij M_ij^2``.

    Args:
      M: ``[d, d]``.

    Returns:
      scalar.
    """
    return jnp.sum(M * M)


def trace(M: jax.Array) -> jax.Array:
    """Trace ``tr(M)``; equals the nuclear norm ``sum_i |lambda_i|`` when ``M`` is PSD (low-rank prior).

    Args:
      M: ``[d, d]``.

    Returns:
      scalar.
    """
    return jnp.trace(M)


def _check_like_prior(M, M0) -> jax.Array:
    """``M`` square (:func:`metriclearn.psd._check_square`: finite when concrete; an all-NaN ``M``
    gave a divergence of ``inf``, as if outside the PD cone) and of ``M0``'s shape (checked under
    ``jit`` too; a mismatch was blamed on ``M0``)."""
    M = _check_square(M, "M")
    if jnp.shape(M0) != M.shape:
        m, m0 = (f"[{', '.join(map(str, sh))}]" for sh in (M.shape, jnp.shape(M0)))
        raise ValueError(f"M and M0 must have the same shape [d, d]: M is {m}, M0 is {m0}")
    return M


def _check_prior(M0, d: int | None = None, name: str = "M0") -> jax.Array:
    """Validate a positive-definite prior at the boundary (skipped for traced values)."""
    if is_traced(M0):
        return M0
    M0 = check_array(M0, name, ndim=2)
    if M0.shape[0] != M0.shape[1] or (d is not None and M0.shape[0] != d):
        want = f"[{d}, {d}]" if d is not None else "square"
        raise ValueError(f"{name} must be {want}, got shape {tuple(M0.shape)}")
    A = np.asarray(M0, dtype=np.float64)
    scale = max(float(np.max(np.abs(A))), np.finfo(np.float64).tiny)
    if np.max(np.abs(A - A.T)) > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric (a positive-definite prior)")
    w = np.linalg.eigvalsh(0.5 * (A + A.T))
    wmin = float(w[0])
    if wmin <= 1e-12 * scale:
        raise ValueError(
            f"{name} must be positive definite for the LogDet divergence: smallest eigenvalue "
            f"{wmin:.3g} (shape {tuple(M0.shape)})"
        )
    # positive definite in float64 but numerically singular in its own dtype (float32, condition
    # number beyond 1 / (d eps)): the Cholesky whitening is then garbage (the divergence of M = I
    # from a float32 prior of condition 1e9 came out inf) or NaN
    d0 = M0.shape[0]
    eps = float(np.finfo(np.dtype(M0.dtype)).eps)
    if wmin <= d0 * eps * float(w[-1]) or not bool(
        jnp.all(jnp.isfinite(jnp.linalg.cholesky(0.5 * (M0 + M0.T))))
    ):
        raise ValueError(
            f"{name} is numerically singular in {np.dtype(M0.dtype)}: eigenvalues {wmin:.3g} to "
            f"{float(w[-1]):.3g} (condition number above 1 / (d eps) = {1.0 / (d0 * eps):.3g}); "
            "use float64 (jax_enable_x64) or a better-conditioned prior"
        )
    return M0


# Below this eigenvalue of B (I + B with an eigenvalue under 1/2) the divergence is taken from the
# eigenvalues of the whitened M itself: 1 + mu rounds away M's small eigenvalues (float32: M = 1e-8 I
# against the prior I gave mu = -1 exactly, an infinite divergence for a positive-definite M).
_FAR = -0.5


@jax.custom_jvp
def _burg_whitened(B: jax.Array, A: jax.Array) -> jax.Array:
    """``D_ld(A, I) = sum_i mu_i - log1p(mu_i)`` over the eigenvalues ``mu`` of symmetric ``B``, where
    ``A ~ I + B`` is the whitened ``M`` and ``B`` the whitened difference ``M - M0``.

    ``inf`` unless ``A`` is positive definite. Near the prior (every ``mu > -1/2``) it is written in
    ``mu`` rather than as ``tr - logdet - d``: each term is ``~ mu^2 / 2`` with a relative error of a
    few ulps, where the difference of the ``O(d)`` trace and log-determinant loses everything below
    ``d * eps`` (in float32 at ``d = 100``, a few 1e-6: more than the whole objective of a metric
    close to its prior, so a line search would be steered by rounding). Far below the prior (an
    eigenvalue of ``A`` under 1/2) it is ``sum_i lam_i - 1 - log(lam_i)`` over the eigenvalues of
    ``A``: there ``1 + mu`` would lose ``A``'s small eigenvalues, and the divergence is at least 0.19,
    so the cancellation in ``lam - 1 - log(lam)`` near 1 costs nothing relative to it.
    """
    return _burg_parts(B, A, with_grad=False)[0]


def _burg_parts(B: jax.Array, A: jax.Array, *, with_grad: bool = True) -> tuple:
    """``(value, G)``: the divergence and (``with_grad``; else None) its gradient ``I - A^-1`` in
    the whitened coordinates (0 outside the cone, where the value is inf). Neither needs an
    eigenvector derivative, so both are exact at repeated eigenvalues (``B = 0`` at the prior)."""
    mu, V = jnp.linalg.eigh(B)

    def near(_):
        value = _burg_value(mu)
        if not with_grad:  # a line search's trial: no d x d product for a gradient unused
            return value, None
        ratio = jnp.where(jnp.isfinite(value), mu / jnp.where(mu > -1.0, 1.0 + mu, 1.0), 0.0)
        return value, (V * ratio) @ V.T

    def far(_):
        lam, U = jnp.linalg.eigh(A)
        # an eigenvalue within eigh's rounding of 0 (d eps max|lam|) is not known to be positive: a
        # PSD projection's exact zero came out as +-1e-8 in float32, and a finite divergence there
        # let the line search step onto the cone's boundary (a gradient of 1e5; the fit stalled)
        ok = jnp.all(lam > A.shape[-1] * jnp.finfo(A.dtype).eps * jnp.max(jnp.abs(lam)))
        safe = jnp.where(ok, lam, 1.0)
        value = jnp.where(ok, jnp.sum(safe - 1.0 - jnp.log(safe)), jnp.inf)
        if not with_grad:
            return value, None
        return value, (U * jnp.where(ok, 1.0 - 1.0 / safe, 0.0)) @ U.T

    return jax.lax.cond(jnp.all(mu > _FAR), near, far, None)


def _burg_value(mu: jax.Array) -> jax.Array:
    ok = jnp.all(mu > -1.0)
    mu = jnp.where(ok, mu, 0.0)
    return jnp.where(ok, jnp.sum(mu - jnp.log1p(mu)), jnp.inf)


@_burg_whitened.defjvp
def _burg_whitened_jvp(primals, tangents):
    # dB and dA are the same whitened tangent of M (A = I + B in exact arithmetic)
    (B, A), (dB, _) = primals, tangents
    value, G = _burg_parts(B, A)
    return value, jnp.sum(G * dB)


def logdet_divergence(M: jax.Array, M0: jax.Array) -> jax.Array:
    """LogDet (Burg) divergence ``D_ld(M, M0) = tr(M M0^-1) - logdet(M M0^-1) - d``.

    Zero iff ``M = M0``, convex in ``M``, ``+inf`` when ``M`` is not positive definite (the value is
    ``inf``, never NaN, and the gradient there is zero, so a line search simply rejects the point). The
    prior must be positive definite; a concrete non-PD ``M0`` raises ``ValueError``.

    Evaluated as ``sum_i mu_i - log(1 + mu_i)`` over the eigenvalues of the whitened difference
    ``B = C0^-1 (M - M0) C0^-T`` (``M0 = C0 C0^T``), which stays accurate to a few ulps of itself near
    ``M0``; see :func:`logdet_divergence_whitened` to precompute ``C0^-1`` once.

    Args:
      M: ``[d, d]`` symmetric.
      M0: ``[d, d]`` symmetric positive definite prior.

    Returns:
      scalar (``>= 0``, ``inf`` outside the PD cone).

    Example::

        logdet_divergence(2.0 * jnp.eye(3), jnp.eye(3))   # 3 * (2 - log 2 - 1)

    Reference: Davis et al., ICML 2007, eq. (2); Kulis, Sustik & Dhillon, JMLR 2009.
    """
    M = _check_like_prior(M, M0)
    M0 = _check_prior(M0, M.shape[-1])
    M0 = 0.5 * (M0 + M0.T)
    C0 = jnp.linalg.cholesky(M0)
    solve = jax.scipy.linalg.solve_triangular
    Ms = 0.5 * (M + M.T)
    left = solve(C0, Ms - M0, lower=True)  # C0^-1 (M - M0)
    whitened = solve(C0, solve(C0, Ms, lower=True).T, lower=True)  # C0^-1 M C0^-T
    return _burg_whitened_sym(solve(C0, left.T, lower=True), whitened)


def logdet_divergence_whitened(M: jax.Array, M0: jax.Array, W: jax.Array) -> jax.Array:
    """:func:`logdet_divergence` with the prior's inverse Cholesky factor ``W = C0^-1`` given.

    For solvers that evaluate the divergence many times against one prior: two matrix products per call
    instead of two triangular solves (the latter dominate a solver step on CPU at ``d ~ 100``).

    Args:
      M: ``[d, d]`` symmetric.
      M0: ``[d, d]`` the prior.
      W: ``[d, d]`` with ``W M0 W^T = I`` (e.g. ``inv(cholesky(M0))``). Concrete inputs are
        checked (shapes, ``M0`` positive definite, ``W`` finite and whitening ``M0``); traced ones,
        as inside a solver, are not.

    Returns:
      scalar ``D_ld(M, M0)`` (``inf`` outside the PD cone).

    Raises:
      ValueError: ``M0`` not a symmetric positive-definite ``[d, d]`` matrix, ``W`` not ``[d, d]``,
        not finite, or ``W M0 W^T`` not the identity.
    """
    M = _check_like_prior(M, M0)
    d = M.shape[-1]
    M0 = _check_prior(M0, d)
    if not is_traced(W) and not is_traced(M0):
        Wn = np.asarray(check_array(W, "W", ndim=2), np.float64)
        if Wn.shape != (d, d):
            raise ValueError(
                f"W must be [{d}, {d}] (the inverse Cholesky factor of M0), got {Wn.shape}"
            )
        I = Wn @ np.asarray(M0, np.float64) @ Wn.T
        tol = 1e-3 if np.asarray(W).dtype == np.float32 else 1e-8
        if np.max(np.abs(I - np.eye(d))) > tol:
            raise ValueError("W must whiten M0 (W M0 W^T = I): pass inv(cholesky(M0))")
    Ms = 0.5 * (M + M.T)
    return _burg_whitened_sym(W @ (Ms - M0) @ W.T, W @ Ms @ W.T)


def _burg_whitened_sym(B: jax.Array, A: jax.Array) -> jax.Array:
    return _burg_whitened(0.5 * (B + B.T), 0.5 * (A + A.T))


def l1(M: jax.Array, *, offdiagonal: bool = False) -> jax.Array:
    """Entrywise L1 norm ``sum_ij |M_ij|`` (``offdiagonal=True``: ``i != j`` only, as graphical lasso).

    Args:
      M: ``[d, d]``.
      offdiagonal: exclude the diagonal.

    Returns:
      scalar.

    Raises:
      ValueError: ``offdiagonal`` not a bool (the string ``"False"`` is truthy).
    """
    check_flags(offdiagonal=offdiagonal)
    A = jnp.abs(M)
    if offdiagonal:
        A = A * (1.0 - jnp.eye(M.shape[0], dtype=M.dtype))
    return jnp.sum(A)


def l21(M: jax.Array) -> jax.Array:
    """Mixed L2,1 norm ``sum_i ||M_i,:||_2`` (row norms; zero rows drop features).

    Uses a safe square root, so the gradient stays finite at zero rows. Each row is scaled by the
    power of two of its largest entry before squaring (exact), so row norms of 1e-19 or 1e20 in
    float32 neither underflow to 0 nor overflow to inf.

    Args:
      M: ``[d, d]``.

    Returns:
      scalar.

    Reference: Ying, Huang & Campbell, NIPS 2009.
    """
    e = _last_axis_exponent(M)  # [d, 1], held constant for the gradient
    Ms = jnp.ldexp(M, -e)
    return jnp.sum(jnp.ldexp(safe_sqrt(jnp.sum(Ms * Ms, axis=1)), e[:, 0]))


def laplacian(M: jax.Array, X: jax.Array, W: jax.Array) -> jax.Array:
    """Graph-Laplacian smoothness ``1/2 sum_ij W_ij d_M(x_i, x_j)^2 = tr(M X^T Lap X)``.

    ``Lap = D - W_sym`` with ``W_sym = (W + W^T) / 2`` and ``D = diag(W_sym 1)``. Points connected in the
    graph ``W`` (labelled or not, e.g. a k-NN graph from :func:`knn_affinity`) are kept close under
    ``M``: the semi-supervised term of Hoi et al. (CVPR 2008). Cost ``O(n^2 d + n d^2)``, no
    ``n x n x d`` tensor.

    Args:
      M: ``[d, d]``.
      X: ``[n, d]`` points (labelled and unlabelled).
      W: ``[n, n]`` non-negative affinities.

    Returns:
      scalar.
    """
    if not any(is_traced(a) for a in (M, X, W)):
        X = check_array(X, "X", ndim=2, min_rows=1)
        W = check_array(W, "W", ndim=2)
        n, d = X.shape
        if jnp.shape(M) != (d, d) or W.shape != (n, n):
            raise ValueError(
                f"laplacian needs M [d, d], X [n, d] and W [n, n]; got M {tuple(jnp.shape(M))}, "
                f"X {tuple(X.shape)}, W {tuple(W.shape)}"
            )
        if not bool(jnp.all(W >= 0)):
            raise ValueError(
                "W must hold non-negative affinities (a Laplacian of negative weights "
                "is not PSD: the term is unbounded below)"
            )
    Ws = 0.5 * (W + W.T)
    deg = jnp.sum(Ws, axis=1)
    # Lap 1 = 0, so centring changes nothing in exact arithmetic; without it, deg x_i - sum_j W_ij x_j
    # cancels catastrophically for data far from the origin (float32, offset 1e4: 25% error)
    X = X - jnp.mean(X, axis=0)
    LX = deg[:, None] * X - Ws @ X  # Lap @ X
    S = X.T @ LX  # X^T Lap X, [d, d]
    return jnp.sum(M * S.T)


def knn_affinity(X, *, k: int = 5, sigma: float | None = None) -> jax.Array:
    """Symmetric k-NN heat-kernel graph for :func:`laplacian`.

    ``W_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` if ``j`` is among the ``k`` nearest neighbours of ``i``
    or vice versa, else 0; ``sigma`` defaults to the median of the non-zero k-NN distances (duplicate
    points do not shrink it to 0; 1 if every k-NN distance is 0). Translation invariant: ``X`` is
    centred first and the edge weights use exact differences ``x_i - x_j``.

    Args:
      X: ``[n, d]``.
      k: neighbours (``1 <= k < n``).
      sigma: kernel width (> 0) or None.

    Returns:
      ``[n, n]`` symmetric, zero diagonal.
    """
    X = check_array(X, "X", ndim=2, min_rows=2)
    n = X.shape[0]
    k = check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k must be smaller than the number of points n={n}, got k={k}")
    if sigma is not None:
        sigma = as_real(sigma, "sigma")  # not bool or str
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    X = X - jnp.mean(X, axis=0)  # |x|^2 + |y|^2 - 2 x.y loses small distances far from the origin
    d2 = pairwise_sqeuclidean(X)
    d2_self = d2 + jnp.diag(jnp.full((n,), jnp.inf, d2.dtype))
    _, idx = jax.lax.top_k(-d2_self, k)
    # exact squared distances of the chosen edges (duplicates give exactly 0, symmetric bit for bit)
    knn_d2 = jnp.sum((X[:, None, :] - X[idx]) ** 2, axis=-1)  # [n, k]
    if sigma is None:
        dist = np.sqrt(np.asarray(knn_d2, np.float64))
        dist = dist[dist > 0]
        s2 = jnp.asarray(float(np.median(dist)) ** 2 if dist.size else 1.0, d2.dtype)
        s2 = jnp.maximum(s2, jnp.finfo(d2.dtype).tiny)
    else:
        s2 = jnp.asarray(sigma, d2.dtype) ** 2
    rows = jnp.arange(n)[:, None]
    Wd = jnp.zeros((n, n), d2.dtype).at[rows, idx].set(jnp.exp(-knn_d2 / (2.0 * s2)))
    # an edge chosen from both ends has the same exact weight; one chosen once counts both ways
    return jnp.maximum(Wd, Wd.T)


def soft_threshold(M: jax.Array, threshold, *, offdiagonal: bool = False) -> jax.Array:
    """Proximal operator of ``threshold * l1``: ``sign(M) max(|M| - threshold, 0)`` entrywise.

    Args:
      M: ``[d, d]``.
      threshold: scalar ``>= 0`` (``step * weight`` inside a proximal-gradient step).
      offdiagonal: leave the diagonal untouched (prox of the off-diagonal L1 norm).

    Returns:
      ``[d, d]``.

    Raises:
      ValueError: a concrete ``threshold`` that is negative (it would enlarge the entries) or not
        finite; ``offdiagonal`` not a bool.
    """
    check_hyper(nonnegative=("threshold",), threshold=threshold)
    check_flags(offdiagonal=offdiagonal)
    shrunk = jnp.sign(M) * jnp.maximum(jnp.abs(M) - threshold, 0.0)
    if offdiagonal:
        eye = jnp.eye(M.shape[0], dtype=bool)
        shrunk = jnp.where(eye, M, shrunk)
    return shrunk


PRIORS = ("identity", "covariance", "random")


def prior_matrix(prior, X, *, key=None, name: str = "prior", ridge: float = 1e-3) -> jax.Array:
    """A positive-definite prior / initial metric ``M0 [d, d]`` (ITML, SDML, MMC).

    * ``"identity"``: ``I``.
    * ``"covariance"``: the inverse covariance of ``X``, regularized as
      ``(Cov(X) + ridge * tr(Cov)/d * I)^-1`` so constant features (zero variance) stay finite;
      ``I`` when every feature is constant.
    * ``"random"``: ``Q diag(u) Q^T`` with ``Q`` a random orthogonal matrix and ``u ~ U(0.5, 1.5)``
      (``key``; default ``jax.random.key(0)``).
    * an array ``[d, d]``: validated symmetric positive definite (``ValueError`` otherwise).

    Args:
      prior: name or array.
      X: ``[n, d]`` points (e.g. the points of the training pairs), used for ``"covariance"`` and ``d``.
      key: PRNG key for ``"random"``.
      name: argument name for messages.
      ridge: relative ridge of the covariance prior, a finite number ``>= 0`` (0: the plain inverse
        covariance, which needs a non-singular covariance).

    Returns:
      ``[d, d]`` symmetric positive definite matrix in ``X``'s dtype.

    Raises:
      ValueError: unknown ``prior`` name, an array prior that is not symmetric positive definite, a
        negative or non-finite ``ridge`` (a negative one gave an indefinite "prior"), or a
        ``"covariance"`` prior that is singular (``ridge=0``) or not representable in ``X``'s dtype.
    """
    check_hyper(nonnegative=("ridge",), ridge=ridge)
    X = check_array(X, "X", ndim=2, min_rows=1)
    d = X.shape[1]
    if not isinstance(prior, str):
        P = _check_prior(prior, d, name).astype(X.dtype)
        return 0.5 * (P + P.T)
    if prior not in PRIORS:
        raise ValueError(f"unknown {name} {prior!r}; valid: {', '.join(PRIORS)} or a [d, d] array")
    if prior == "identity":
        return jnp.eye(d, dtype=X.dtype)
    if prior == "random":
        key = jax.random.key(0) if key is None else as_key(key)
        k1, k2 = jax.random.split(key)
        Q, _ = jnp.linalg.qr(jax.random.normal(k1, (d, d), X.dtype))
        u = jax.random.uniform(k2, (d,), X.dtype, 0.5, 1.5)
        return 0.5 * ((Q * u) @ Q.T + ((Q * u) @ Q.T).T)
    Xc = np.asarray(X, np.float64)
    Xc = Xc - Xc.mean(0)
    cov = Xc.T @ Xc / max(Xc.shape[0] - 1, 1)
    scale = float(np.trace(cov)) / d
    if not scale > 0:
        return jnp.eye(d, dtype=X.dtype)
    w, V = np.linalg.eigh(cov + ridge * scale * np.eye(d))
    w = np.maximum(w, ridge * scale)
    if ridge == 0 and not w[0] > d * np.finfo(np.float64).eps * w[-1]:  # constant / collinear
        raise ValueError(
            f"the covariance of X is singular (eigenvalues {w[0]:.3g} to {w[-1]:.3g}), so it has no "
            f"inverse; use ridge > 0 (got ridge={ridge!r})"
        )
    info = np.finfo(np.dtype(X.dtype))
    if 1.0 / w[0] > float(info.max) / d or 1.0 / w[-1] < float(info.tiny):
        raise ValueError(
            f"the inverse covariance of X (eigenvalues {1.0 / w[-1]:.3g} to {1.0 / w[0]:.3g}) is "
            f"not representable in {np.dtype(X.dtype)}: rescale X (e.g. standardise it) or use float64"
        )
    inv = (V / w) @ V.T
    return jnp.asarray(0.5 * (inv + inv.T), X.dtype)


REGULARIZERS: dict[str, Callable[..., jax.Array]] = {
    "frobenius": frobenius,
    "trace": trace,
    "logdet": logdet_divergence,
    "l1": l1,
    "l21": l21,
    "laplacian": laplacian,
}


def get_regularizer(name_or_fn) -> Callable[..., jax.Array]:
    """A regularizer from :data:`REGULARIZERS` by name, or a callable passed through.

    Raises:
      ValueError: unknown name (the message lists the valid ones).
    """
    if callable(name_or_fn):
        return name_or_fn
    if not isinstance(name_or_fn, str) or name_or_fn not in REGULARIZERS:
        valid = ", ".join(sorted(REGULARIZERS))
        raise ValueError(f"unknown regularizer {name_or_fn!r}; valid: {valid}")
    return REGULARIZERS[name_or_fn]
