"""MMC: Mahalanobis Metric for Clustering (Xing, Ng, Jordan & Russell, NIPS 2002).

Make dissimilar pairs far (sum of distances, not squared) while similar pairs stay close:

    max_M  g(M) = sum_D d_M(x, x')     s.t.   C1: f(M) = sum_S d_M^2(x, x') <= t,   C2: M ⪰ 0.

Two solvers for the full metric (``solver=``):

* ``"projection"`` (default) — the published iteration of Xing et al.: from ``M0`` (``init``), with
  ``t = f(M0) / 100``, each cycle first projects onto ``C1`` and ``C2`` by *alternating* projections
  (half-space, then PSD cone, repeated until ``f(M) <= 1.01 t``, at most ``max_proj`` times); if that
  succeeded and ``log g`` increased, the point is accepted and the step ``alpha`` (0.1 at start) grows by
  5 %, otherwise ``alpha`` is halved and the step is retried from the last accepted point; the step is
  ``alpha`` times the unit gradient of ``log g`` made orthogonal to the gradient of ``f``. It stops when
  ``alpha / ||M|| < tol`` or after ``max_iter`` cycles and returns the last accepted point (the
  constants ``t = f(M0) / 100``, ``alpha``, 1.05 / 0.5 and the 1 % projection tolerance are those of the
  authors' reference code, which metric-learn follows too). This is an
  *early-stopped* ascent from ``M0``: on standardized data it typically stays far from the optimum
  (which is close to rank one), and that implicit regularization toward ``M0`` is what gives MMC its
  usual k-NN accuracy (and what metric-learn's ``MMC`` computes). When the alternating projections
  never reach ``C1 ∩ C2`` within ``max_proj`` (it happens, e.g. on breast_cancer), no point is accepted
  and ``M0`` is returned (``MMCResult.accepted == 0``, ``converged=False``, ``UserWarning``). The
  alternating projections converge linearly, sometimes slowly (thousands of ``eigh`` per cycle): this
  solver costs far more than ``"optimal"`` on ill-conditioned similar-pair scatters.
  Everything runs in one ``jit``-compiled ``lax.while_loop`` (no Python loop, no loop over pairs).
* ``"optimal"`` — the exact optimum of the same problem. Because ``g`` is 1/2-homogeneous and ``f``
  linear, it equals the minimiser of the convex problem
  ``min_{M ⪰ 0} sum_S d_M^2 - c log sum_D d_M`` rescaled to ``sum_S d_M^2 = 1``, solved with
  :func:`metriclearn.solver.projected_gradient` in a preconditioned variable ``M = P N P``,
  ``P = (K_S + eps I)^{-1/2}`` (``K_S`` the similar-pair scatter). Better objective, usually worse
  k-NN accuracy (near rank one).

The diagonal metric (``diagonal=True``) is always solved to its optimum, as Xing et al. do (by
Newton-Raphson there, here by projected gradient on the same objective
``sum_S d_M^2 - c log sum_D d_M`` over non-negative diagonals, ``c = diagonal_c``, returned unscaled).

Degenerate pairs (``x = x'``) contribute zero to both sums (safe square root, zero gradient), never NaN;
if *every* dissimilar pair is degenerate the objective is undefined and ``ValueError`` is raised.

Example::

    from metriclearn.convex.mmc import fit_mmc
    res = fit_mmc(X[idx], pair_y)                    # Xing et al.'s iteration (default)
    res_opt = fit_mmc(X[idx], pair_y, solver="optimal")
    res_diag = fit_mmc(X[idx], pair_y, diagonal=True)
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_choice, check_positive_int
from metriclearn.constraints import check_pairs
from metriclearn.distances import safe_sqrt
from metriclearn.psd import _project_psd
from metriclearn.regularizers import prior_matrix
from metriclearn.solver import projected_gradient, squared_mahalanobis

__all__ = ["MMCResult", "SOLVERS", "fit_mmc", "mmc_objective"]

#: solvers of the full problem (name -> summary); see the module docstring
SOLVERS = {
    "projection": "Xing et al.'s ascent with alternating projections, early-stopped (default)",
    "optimal": "exact optimum of the same problem (preconditioned projected gradient)",
}


class MMCResult(NamedTuple):
    """Outcome of :func:`fit_mmc`.

    Attributes:
      M: ``[d, d]`` learned Mahalanobis matrix (PSD, finite; diagonal when ``diagonal=True``).
      n_iter: solver iterations.
      converged: whether the solver's stopping test was met.
      accepted: ``"projection"`` solver: number of accepted ascent points (0 means the alternating
        projections never reached the constraint set and ``M`` is the initial metric); for the other
        paths, ``n_iter``.
    """

    M: jax.Array
    n_iter: int
    converged: bool
    accepted: int


def mmc_objective(M: jax.Array, K_sim: jax.Array, diffs_dis: jax.Array, c) -> jax.Array:
    """``tr(M K_S) - c * log sum_D sqrt(v^T M v)`` (per dissimilar pair, vmapped).

    Args:
      M: ``[d, d]``.
      K_sim: ``[d, d]`` similar-pair scatter ``sum_S v v^T`` (so ``tr(M K_S) = sum_S d_M^2``).
      diffs_dis: ``[n_d, d]`` dissimilar differences.
      c: weight of the dissimilar term.

    Returns:
      scalar (``+inf`` when every dissimilar distance is zero).
    """
    d2 = jax.vmap(squared_mahalanobis, in_axes=(None, 0))(M, diffs_dis)
    total = jnp.sum(safe_sqrt(d2))
    safe_total = jnp.where(total > 0, total, 1.0)
    log_total = jnp.where(total > 0, jnp.log(safe_total), -jnp.inf)
    return jnp.sum(M * K_sim) - c * log_total


def _log_sum_dist(M: jax.Array, diffs_dis: jax.Array) -> jax.Array:
    """``log sum_D sqrt(v^T M v)`` (``log`` of the tiny float at zero: finite, never NaN)."""
    d2 = jnp.sum((diffs_dis @ M) * diffs_dis, axis=1)
    total = jnp.sum(safe_sqrt(d2))
    return jnp.log(jnp.maximum(total, jnp.finfo(M.dtype).tiny))


def _unit(G: jax.Array) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(G * G))
    return jnp.where(norm > 0, G / jnp.where(norm > 0, norm, 1.0), jnp.zeros_like(G))


@jax.jit
def _projection_run(M0, K, diffs_dis, max_iter, max_proj, tol):
    """Xing et al.'s ascent + alternating projections, one compiled loop (see the module docstring)."""
    dtype = M0.dtype
    t = jnp.sum(K * M0) / 100.0
    K_sq = jnp.sum(K * K)
    K_unit = _unit(K)
    grad_log_g = jax.grad(_log_sum_dist)

    def direction(M):
        G = grad_log_g(M, diffs_dis)
        G = 0.5 * (G + G.T)
        return _unit(G - jnp.sum(G * K_unit) * K_unit)

    def project(M):
        def body(c):
            i, M, _ = c
            excess = jnp.sum(K * M) - t
            M = jnp.where(excess > 0, M - (excess / jnp.where(K_sq > 0, K_sq, 1.0)) * K, M)
            M = _project_psd(M)
            rel = (jnp.sum(K * M) - t) / jnp.where(t > 0, t, 1.0)
            return i + 1, M, (rel < 0.01) | (t <= 0)

        def cond(c):
            i, _, ok = c
            return (i < max_proj) & ~ok

        _, M, ok = jax.lax.while_loop(cond, body, (jnp.asarray(0), M, jnp.asarray(False)))
        return M, ok

    def cycle(s):
        it, M, M_acc, D, alpha, n_acc, _ = s
        M, ok = project(M)
        up = _log_sum_dist(M, diffs_dis) > _log_sum_dist(M_acc, diffs_dis)
        accept = ok & (up | (it == 0))
        alpha = jnp.where(accept, 1.05 * alpha, 0.5 * alpha)
        M_acc = jnp.where(accept, M, M_acc)
        D = jnp.where(accept, direction(M), D)
        M = M_acc + alpha * D
        norm = jnp.sqrt(jnp.sum(M_acc * M_acc))
        small = alpha * jnp.sqrt(jnp.sum(D * D)) < tol * norm
        return it + 1, M, M_acc, D, alpha, n_acc + accept.astype(jnp.int32), small

    def cond(s):
        return (s[0] < max_iter) & ~s[6]

    s0 = (
        jnp.asarray(0),
        M0,
        M0,
        direction(M0),
        jnp.asarray(0.1, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
    )
    it, _, M_acc, _, _, n_acc, small = jax.lax.while_loop(cond, cycle, s0)
    return M_acc, it, small & (n_acc > 0), n_acc


def _project_nonneg_diagonal(M: jax.Array, floor: jax.Array) -> jax.Array:
    """Projection onto ``{diag(a) : a >= floor}`` (Frobenius)."""
    return jnp.diag(jnp.maximum(jnp.diagonal(M), floor))


def fit_mmc(
    pairs,
    pair_y,
    *,
    solver: str = "projection",
    diagonal: bool = False,
    max_iter: int = 100,
    max_proj: int = 10000,
    tol: float = 1e-3,
    init="identity",
    diagonal_c: float = 1.0,
    key=None,
) -> MMCResult:
    """Learn a Mahalanobis matrix from similar/dissimilar pairs with MMC (Xing et al. 2002).

    Args:
      pairs: ``[n, 2, d]`` point pairs.
      pair_y: ``[n]`` in ``{-1, +1}``; both kinds needed.
      solver: full metric only: ``"projection"`` (Xing et al.'s early-stopped iteration, default) or
        ``"optimal"`` (the exact optimum); see the module docstring. Ignored when ``diagonal``.
      diagonal: learn a diagonal metric (feature weights).
      max_iter: ascent cycles (``"projection"``) or projected-gradient iterations.
      max_proj: ``"projection"``: alternating projections per cycle at most.
      tol: ``"projection"``: stop when the step ``alpha < tol * ||M||``; otherwise the relative
        tolerance of the solver's stopping test.
      init: starting metric: ``"identity"``, ``"covariance"``, ``"random"`` or a ``[d, d]`` PD array
        (its diagonal when ``diagonal``).
      diagonal_c: weight ``c > 0`` of the dissimilar term (used as is by the diagonal version; the full
        version is rescaled to ``sum_S d^2 = 1`` and does not depend on it).
      key: PRNG key for ``init="random"``.

    Returns:
      :class:`MMCResult` ``(M [d, d], n_iter, converged, accepted)``.

    Raises:
      ValueError: bad pairs/labels, all dissimilar pairs degenerate, non-PD ``init``, bad numbers,
        unknown ``solver``.

    Warns:
      UserWarning: ``"projection"`` accepted no point (the initial metric is returned).

    Reference: Xing, Ng, Jordan & Russell, "Distance metric learning, with application to clustering
    with side-information", NIPS 2002.
    """
    P, yv = check_pairs(pairs, pair_y)
    dtype = P.dtype
    d = P.shape[-1]
    check_choice(solver, "solver", SOLVERS)
    max_iter = check_positive_int(max_iter, "max_iter")
    max_proj = check_positive_int(max_proj, "max_proj")
    for name, value, strict in (("tol", tol, False), ("diagonal_c", diagonal_c, True)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not np.isfinite(value) or value < 0 or (strict and value == 0):
            raise ValueError(
                f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}"
            )
    P_np = np.asarray(P, np.float64)
    V = P_np[:, 0, :] - P_np[:, 1, :]
    Vs, Vd = V[yv == 1], V[yv == -1]
    if not np.any(np.sum(Vd * Vd, axis=1) > 0):
        raise ValueError(
            "every dissimilar pair is degenerate (x = x'); MMC needs a dissimilar distance"
        )
    pts = np.unique(P_np.reshape(-1, d), axis=0)
    M0 = np.asarray(prior_matrix(init, pts, key=key, name="init"), np.float64)
    K = Vs.T @ Vs
    if solver == "projection" and not diagonal:
        M_acc, it, conv, n_acc = _projection_run(
            jnp.asarray(M0, dtype),
            jnp.asarray(K, dtype),
            jnp.asarray(Vd, dtype),
            max_iter,
            max_proj,
            jnp.asarray(tol, dtype),
        )
        M = np.asarray(M_acc, np.float64)
        if int(n_acc) == 0:
            warnings.warn(
                f"MMC: the alternating projections did not reach the constraint set within "
                f"max_proj={max_proj} in any cycle; the initial metric is returned unchanged "
                f"(as in Xing et al.'s algorithm). Increase max_proj or use solver='optimal'.",
                UserWarning,
                stacklevel=2,
            )
        if not np.all(np.isfinite(M)):  # cannot happen with finite inputs; never return NaN
            M = M0
        return MMCResult(jnp.asarray(0.5 * (M + M.T), dtype), int(it), bool(conv), int(n_acc))
    scale = float(np.trace(K)) / d
    if not scale > 0:  # every similar pair degenerate: no preconditioning information
        scale = float(np.sum(Vd * Vd)) / (d * len(Vd))
    eps = 1e-3 * scale
    if diagonal:
        p = 1.0 / np.sqrt(np.diag(K) + eps)
        Pm = np.diag(p)
        N0 = np.diag(np.diag(M0) / p**2)
        project = _project_nonneg_diagonal
    else:
        w, U = np.linalg.eigh(K + eps * np.eye(d))
        Pm = (U / np.sqrt(w)) @ U.T
        Pinv = (U * np.sqrt(w)) @ U.T
        N0 = Pinv @ M0 @ Pinv
        project = True
    K_pre = Pm @ K @ Pm
    W_dis = Vd @ Pm
    # normalise the start so that sum_S d^2 = c / 2 (the optimum's scale): fewer wasted steps
    start_scale = float(np.sum(N0 * K_pre))
    c = float(diagonal_c)
    if start_scale > 0:
        N0 = N0 * (0.5 * c / start_scale)
    res = projected_gradient(
        mmc_objective,
        jnp.asarray(0.5 * (N0 + N0.T), dtype),
        args=(jnp.asarray(K_pre, dtype), jnp.asarray(W_dis, dtype), jnp.asarray(c, dtype)),
        max_iter=max_iter,
        tol=tol,
        project=project,
    )
    N = np.asarray(res.M, np.float64)
    M = Pm @ N @ Pm
    M = 0.5 * (M + M.T)
    if not diagonal:
        s = float(np.sum(M * K))
        if s > 0:
            M = M / s
        w, U = np.linalg.eigh(M)
        M = (U * np.maximum(w, 0.0)) @ U.T
    else:
        M = np.diag(np.maximum(np.diag(M), 0.0))
    if not np.all(np.isfinite(M)):  # cannot happen with finite inputs; never return NaN
        M = M0
    n_iter = int(res.n_iter)
    return MMCResult(jnp.asarray(M, dtype), n_iter, bool(res.converged), n_iter)
