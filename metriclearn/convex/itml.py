"""ITML: Information-Theoretic Metric Learning (Davis, Kulis, Jain, Sra & Dhillon, ICML 2007).

Find the metric closest to a prior ``M0`` in LogDet divergence that keeps similar pairs within an upper
bound ``u`` and dissimilar pairs beyond a lower bound ``l`` on the *squared* Mahalanobis distance, with
slack (trade-off ``gamma``):

    min_M  D_ld(M, M0) + gamma * D_ld(diag(xi), diag(xi0))
    s.t.   (x - y)^T M (x - y) <= xi_c  (similar),   >= xi_c  (dissimilar),   M ⪰ 0.

Solved by cyclic Bregman projections: one rank-one update ``M <- M + beta (M v)(M v)^T`` per constraint
(Algorithm 1 of the paper, in the form of the authors' reference code), so ``M`` stays positive definite
without any eigen-decomposition. Here the sweep over constraints is a ``lax.scan`` inside a
``lax.while_loop`` over sweeps, all in one jitted program. The stopping test is the authors':
``sum|lambda_new - lambda_old| / (||lambda_new|| + ||lambda_old||) < tol`` between sweeps.

Degenerate pairs (``x = y``, zero difference) carry no information about ``M`` and are skipped (their
dual variable stays 0); they never produce NaN.

Example::

    import jax, numpy as np
    from metriclearn import constraints
    from metriclearn.convex.itml import fit_itml
    idx, pair_y = constraints.pairs(jax.random.key(0), y, n_similar=200, n_dissimilar=200)
    res = fit_itml(X[idx], pair_y)
    res.M, res.n_iter, res.converged
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import as_key, check_array, check_positive_int, require_concrete
from metriclearn.constraints import check_pairs
from metriclearn.convex._common import tuple_differences
from metriclearn.regularizers import prior_matrix

__all__ = ["ITMLResult", "fit_itml", "itml_bounds"]


class ITMLResult(NamedTuple):
    """Outcome of :func:`fit_itml`.

    Attributes:
      M: ``[d, d]`` learned Mahalanobis matrix (symmetric positive semi-definite, finite).
      n_iter: number of sweeps over the constraints.
      converged: whether the dual-variable change fell below ``tol``.
    """

    M: jax.Array
    n_iter: int
    converged: bool


def _unique_points(P: np.ndarray) -> np.ndarray:
    return np.unique(P.reshape(-1, P.shape[-1]), axis=0)


def itml_bounds(pairs, *, key=None, max_points: int = 2000) -> tuple[float, float]:
    """Default ITML bounds: 5th and 95th percentiles of the squared Euclidean distances.

    Over all ordered couples of the distinct points appearing in ``pairs`` (diagonal included), as
    metric-learn; more than ``max_points`` distinct points are subsampled with ``key`` (an int seed
    or a JAX key; default seed 0). The bounds are on squared distances, which ITML's constraints
    compare them with, as in Davis et al.'s code. metric-learn 0.7.0 takes the percentiles of the
    unsquared distances and compares them with squared ones; its bounds are the square roots of
    these, so pass ``bounds=(sqrt(u), sqrt(l))`` to reproduce its default fit.

    Args:
      pairs: ``[n, 2, d]``.
      key: PRNG key or int seed for the subsample.
      max_points: subsample size cap.

    Returns:
      ``(u, l)``: upper bound for similar, lower bound for dissimilar squared distances (``u > 0``: a
      zero 5th percentile, from duplicated points, is replaced by ``1e-6 * l``).

    Raises:
      ValueError: all points coincide (no positive distance).
    """
    check_array(pairs, "pairs", ndim=3, min_rows=1, min_features=1, allow_overflow=True)
    P = np.asarray(pairs, dtype=np.float64)
    if P.shape[1] != 2:  # [n, d] points or triplets gave bounds; a NaN "all points coincide"
        raise ValueError(f"pairs must have shape [n, 2, d], got {P.shape}")
    pts = _unique_points(P)
    # centred: |x|^2 + |y|^2 - 2 x.y cancels catastrophically for points far from the origin
    pts = pts - pts.mean(axis=0)
    max_points = check_positive_int(max_points, "max_points", minimum=2)
    key = jax.random.key(0) if key is None else as_key(key)  # checked even when unused
    if len(pts) > max_points:
        sel = np.asarray(jax.random.choice(key, len(pts), (max_points,), replace=False))
        pts = pts[np.sort(sel)]
    sq = np.sum(pts * pts, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pts @ pts.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    u, l = np.percentile(d2, (5.0, 95.0))
    if not l > 0:
        raise ValueError("all points in pairs coincide: ITML bounds need a positive distance")
    if not u > 0:
        u = 1e-6 * l
    return float(u), float(l)


@jax.jit
def _itml_core(V, delta, xi0, M0, gamma_proj, inv_gamma, tol, max_iter):
    """Cyclic Bregman projections; ``delta`` is +1 (similar, upper bound) / -1 (dissimilar)."""
    dtype = V.dtype
    tiny = jnp.finfo(dtype).tiny * 1e6

    def project_one(A, inp):
        v, dl, lam, xi = inp
        Av = A @ v
        p = v @ Av
        valid = p > tiny
        p_s = jnp.where(valid, p, 1.0)
        alpha = jnp.minimum(lam, gamma_proj * dl * (1.0 / p_s - 1.0 / xi))
        alpha = jnp.where(valid, alpha, 0.0)
        beta = dl * alpha / (1.0 - dl * alpha * p_s)
        xi_new = 1.0 / (1.0 / xi + dl * alpha * inv_gamma)
        A = A + beta * jnp.outer(Av, Av)
        return A, (lam - alpha, xi_new)

    def sweep(state):
        it, A, lam, xi, _, _ = state
        A_new, (lam_new, xi_new) = jax.lax.scan(project_one, A, (V, delta, lam, xi))
        A_new = 0.5 * (A_new + A_new.T)
        normsum = jnp.linalg.norm(lam_new) + jnp.linalg.norm(lam)
        change = jnp.sum(jnp.abs(lam_new - lam))
        conv = jnp.where(normsum > 0, change / jnp.where(normsum > 0, normsum, 1.0), 0.0)
        finite = jnp.all(jnp.isfinite(A_new)) & jnp.all(jnp.isfinite(xi_new))
        # keep the last finite iterate if rounding ever breaks the update (float32, extreme scales)
        A_new = jnp.where(finite, A_new, A)
        lam_new = jnp.where(finite, lam_new, lam)
        xi_new = jnp.where(finite, xi_new, xi)
        return it + 1, A_new, lam_new, xi_new, finite & (conv < tol), ~finite

    def cond(state):
        it, _, _, _, done, broken = state
        return (it < max_iter) & ~done & ~broken

    lam0 = jnp.zeros(V.shape[0], dtype)
    false = jnp.asarray(False)
    init = (jnp.asarray(0, jnp.int32), M0, lam0, xi0, false, false)
    it, A, _, _, done, broken = jax.lax.while_loop(cond, sweep, init)
    return A, it, done, broken


def fit_itml(
    pairs,
    pair_y,
    *,
    gamma: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-3,
    prior="identity",
    bounds=None,
    key=None,
) -> ITMLResult:
    """Learn a Mahalanobis matrix from similar/dissimilar pairs with ITML.

    Args:
      pairs: ``[n, 2, d]`` point pairs.
      pair_y: ``[n]`` in ``{-1, +1}`` (``+1`` similar, ``-1`` dissimilar); both kinds needed.
      gamma: slack trade-off ``> 0`` (``inf``: hard constraints).
      max_iter: maximum number of sweeps over all constraints.
      tol: convergence threshold on the relative change of the dual variables.
      prior: ``"identity"``, ``"covariance"`` (regularized inverse covariance of the pair points),
        ``"random"`` or a ``[d, d]`` positive-definite array (see
        :func:`metriclearn.regularizers.prior_matrix`).
      bounds: ``(u, l)`` bounds on *squared* distances (similar ``<= u``, dissimilar ``>= l``), both
        ``> 0``; default :func:`itml_bounds` (5th/95th percentiles of the squared distances;
        metric-learn's default bounds are their square roots, see there).
      key: PRNG key for ``prior="random"`` and the bounds subsample.

    Returns:
      :class:`ITMLResult` ``(M [d, d], n_iter, converged)``.

    Raises:
      ValueError: bad pairs/labels (see :func:`metriclearn.constraints.check_pairs`), non-PD prior, bad
        bounds or ``gamma``.

    Example::

        res = fit_itml(X[idx], pair_y, gamma=1.0)
        L = metriclearn.psd.factor(res.M)     # transform: X @ L.T

    Reference: Davis et al., "Information-theoretic metric learning", ICML 2007, Algorithm 1.
    """
    require_concrete("fit_itml", pairs, pair_y)
    P, yv = check_pairs(pairs, pair_y)
    dtype = P.dtype
    max_iter = check_positive_int(max_iter, "max_iter")
    if not isinstance(gamma, int | float | np.floating | np.integer) or isinstance(gamma, bool):
        raise ValueError(f"gamma must be a positive number, got {gamma!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    if isinstance(tol, bool | np.bool_) or not (
        isinstance(tol, int | float | np.floating) and np.isfinite(tol) and tol >= 0
    ):
        raise ValueError(f"tol must be a non-negative finite number, got {tol!r}")
    P_np = np.asarray(P)
    if bounds is None:
        u, l = itml_bounds(pairs, key=key)  # float64 distances of the caller's points
    else:
        b = np.asarray(bounds, dtype=np.float64).ravel()
        if b.shape != (2,) or not np.all(np.isfinite(b)) or np.any(b <= 0):
            raise ValueError(f"bounds must be two positive finite numbers (u, l), got {bounds!r}")
        u, l = float(b[0]), float(b[1])
    M0 = prior_matrix(prior, _unique_points(P_np).astype(P_np.dtype), key=key, name="prior")
    # The projections are invariant to v -> v / c, bounds -> bounds / c^2 (M unchanged; the duals
    # scale by c^2). With c a power of two near the pair scale this is exact in floating point and
    # keeps p = v^T M v and the duals O(1): in float32 the duals' norm in the stopping test otherwise
    # underflows (features ~1e10) or overflows (~1e-10) and the loop stops after one sweep, wrong.
    (V64,) = tuple_differences(pairs, P, ((0, 1),), host=True)
    sq = np.sum(V64 * V64, axis=1)
    sq = sq[sq > 0]
    c2 = 2.0 ** (2 * int(np.round(0.5 * np.log2(np.mean(sq))))) if len(sq) else 1.0
    V = V64 * (1.0 / np.sqrt(c2))
    delta = jnp.asarray(yv, dtype)
    xi0 = jnp.where(delta > 0, jnp.asarray(u / c2, dtype), jnp.asarray(l / c2, dtype))
    if np.isinf(gamma):
        gamma_proj, inv_gamma = 1.0, 0.0
    else:
        gamma_proj, inv_gamma = gamma / (gamma + 1.0), 1.0 / gamma

    def run(dt):
        return _itml_core(
            jnp.asarray(V, dt),
            jnp.asarray(delta, dt),
            jnp.asarray(xi0, dt),
            jnp.asarray(M0, dt),
            jnp.asarray(gamma_proj, dt),
            jnp.asarray(inv_gamma, dt),
            jnp.asarray(tol, dt),
            jnp.asarray(max_iter, jnp.int32),
        )

    A, it, done, broken = run(dtype)
    A64 = np.asarray(A, np.float64)
    w = np.linalg.eigvalsh(0.5 * (A64 + A64.T))
    d = A64.shape[0]
    if dtype != np.float64 and (bool(broken) or w[0] <= d * np.finfo(dtype).eps * w[-1]):
        # the rank-one updates keep A positive definite in exact arithmetic; in float32 an
        # ill-conditioned prior (the inverse covariance of digits' pixels) loses that and the metric
        # collapses (3-NN accuracy .49 instead of .99): redo the sweeps in float64
        with jax.enable_x64(True):
            A, it, done, broken = run(np.float64)
            A64 = np.asarray(A, np.float64)
    if bool(broken):
        warnings.warn(
            f"ITML stopped at sweep {int(it)}: an update lost precision (non-finite); returning the "
            "last finite metric. Rescale the features or enable float64.",
            UserWarning,
            stacklevel=2,
        )
    # PD by construction; clip rounding-level negative eigenvalues (NumPy: no eigh compile per call)
    w, U = np.linalg.eigh(0.5 * (A64 + A64.T))
    M = jnp.asarray((U * np.maximum(w, 0.0)) @ U.T, dtype)
    M = 0.5 * (M + M.T)
    return ITMLResult(M, int(it), bool(done))
