"""SDML: Sparse Determinant Metric Learning (Qi, Tang, Zha, Chua & Zhang, ICML 2009).

SDML keeps the metric close to a prior ``M0`` in LogDet divergence, pulls similar pairs together and
pushes dissimilar pairs apart through a linear term, and asks for a sparse metric through an
(off-diagonal) L1 penalty:

    min_{M ≻ 0}  D_ld(M, M0) + eta * sum_i y_i (x_i - x'_i)^T M (x_i - x'_i) + alpha * sum_{j != k} |M_jk|
              =  tr(M S) - logdet(M) + alpha |M|_{1,off} + const,     S = M0^-1 + eta * K,
    K = sum_i y_i v_i v_i^T  (y = +1 similar, -1 dissimilar),

a graphical-lasso problem with "covariance" ``S``. It is bounded (has a solution) only when ``S`` is
positive definite; metric-learn passes an indefinite ``S`` to scikit-learn's ``graphical_lasso`` and fails
on iris, wine, breast_cancer and digits with its defaults. Here, when ``M0^-1 + eta K`` is not
sufficiently positive definite, ``eta`` is reduced to the largest value with
``lambda_min(M0^{1/2} S M0^{1/2}) >= pd_margin`` (a ``UserWarning`` reports it), so the problem is always
well posed and the result finite and positive definite.

The problem is solved by proximal projected gradient (:func:`metriclearn.solver.projected_gradient`
with the ``"logdet"`` regularizer, soft-thresholding for the L1 term and an eigenvalue floor that keeps
iterates inside the domain), started from the closed-form unpenalized solution ``S^-1``.

Degenerate pairs (``x = x'``) contribute nothing to ``K``; they are harmless.

Example::

    from metriclearn.convex.sdml import fit_sdml
    res = fit_sdml(X[idx], pair_y, balance_param=0.5, sparsity_param=0.01)
    res.M
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_positive_int, require_concrete
from metriclearn.constraints import check_pairs
from metriclearn.convex._common import tuple_differences
from metriclearn.regularizers import prior_matrix
from metriclearn.solver import projected_gradient

__all__ = ["SDMLResult", "fit_sdml", "sdml_objective"]


class SDMLResult(NamedTuple):
    """Outcome of :func:`fit_sdml`.

    Attributes:
      M: ``[d, d]`` learned Mahalanobis matrix (symmetric positive definite, finite).
      n_iter: proximal-gradient iterations.
      converged: whether the solver's stopping test was met.
    """

    M: jax.Array
    n_iter: int
    converged: bool


def sdml_objective(M: jax.Array, K: jax.Array, eta: jax.Array) -> jax.Array:
    """The pair term ``eta * tr(M K) = eta * sum_i y_i d_M^2(x_i, x'_i)`` of SDML (smooth part).

    Args:
      M: ``[d, d]``.
      K: ``[d, d]`` signed scatter ``sum_i y_i v_i v_i^T``.
      eta: balance parameter (scalar).

    Returns:
      scalar.
    """
    return eta * jnp.sum(M * K)


def _check_number(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        op = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {op}, got {value!r}")
    return value


def fit_sdml(
    pairs,
    pair_y,
    *,
    prior="identity",
    balance_param: float = 0.5,
    sparsity_param: float = 0.01,
    max_iter: int = 1000,
    tol: float = 1e-6,
    pd_margin: float = 0.1,
    key=None,
) -> SDMLResult:
    """Learn a sparse Mahalanobis matrix from similar/dissimilar pairs with SDML.

    Args:
      pairs: ``[n, 2, d]`` point pairs.
      pair_y: ``[n]`` in ``{-1, +1}``; both kinds needed.
      prior: ``"identity"``, ``"covariance"``, ``"random"`` or a ``[d, d]`` positive-definite array
        (:func:`metriclearn.regularizers.prior_matrix`).
      balance_param: ``eta >= 0``, weight of the pair term (metric-learn's scale: a sum over pairs).
        Reduced automatically (with a warning) when the problem would be unbounded.
      sparsity_param: ``alpha >= 0``, weight of the off-diagonal L1 penalty.
      max_iter: solver iterations.
      tol: solver relative tolerance.
      pd_margin: in ``(0, 1]``; smallest allowed eigenvalue of ``M0^{1/2} S M0^{1/2}`` (``S`` relative
        to the prior) when ``eta`` must be reduced. Smaller values stretch discriminative directions
        more.
      key: PRNG key for ``prior="random"``.

    Returns:
      :class:`SDMLResult` ``(M [d, d], n_iter, converged)``.

    Raises:
      ValueError: bad pairs/labels, non-PD prior, negative parameters.

    Reference: Qi et al., "An efficient sparse metric learning in high-dimensional space via
    l1-penalized log-determinant regularization", ICML 2009; Friedman, Hastie & Tibshirani,
    "Sparse inverse covariance estimation with the graphical lasso", Biostatistics 2008.
    """
    require_concrete("fit_sdml", pairs, pair_y)
    P, yv = check_pairs(pairs, pair_y)
    dtype = P.dtype
    d = P.shape[-1]
    eta = _check_number(balance_param, "balance_param")
    alpha = _check_number(sparsity_param, "sparsity_param")
    tol = _check_number(tol, "tol")
    margin = _check_number(pd_margin, "pd_margin", positive=True)
    if margin > 1:
        raise ValueError(f"pd_margin must be in (0, 1], got {pd_margin!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    P_np = np.asarray(P, np.float64)
    pts = np.unique(P_np.reshape(-1, d), axis=0)
    M0 = np.asarray(prior_matrix(prior, pts, key=key, name="prior"), np.float64)
    (V,) = tuple_differences(pairs, P, ((0, 1),), host=True)  # float64, from the caller's pairs
    K = (V.T * yv) @ V
    # S relative to the prior: M0^{1/2} S M0^{1/2} = I + eta * M0^{1/2} K M0^{1/2}
    w0, U0 = np.linalg.eigh(M0)
    root = (U0 * np.sqrt(w0)) @ U0.T
    mu_min = float(np.linalg.eigvalsh(root @ K @ root)[0])
    if eta * mu_min < margin - 1.0:
        eta_eff = (1.0 - margin) / -mu_min
        warnings.warn(
            f"SDML: prior^-1 + balance_param * K is not positive definite enough for "
            f"balance_param={eta:.4g} (the problem would be unbounded); using {eta_eff:.4g}",
            UserWarning,
            stacklevel=2,
        )
        eta = eta_eff
    Sigma0 = (U0 / w0) @ U0.T
    S = Sigma0 + eta * K
    S = 0.5 * (S + S.T)
    ws, Us = np.linalg.eigh(S)
    M_init = (Us / ws) @ Us.T
    floor = 0.5 / (float(ws[-1]) + alpha * d)
    # K and eta passed as K 2^-e, eta 2^e: the same products, exactly (a power of two), but K stays
    # representable in float32 for huge features (~1e19: K ~ 1e40, while eta K is O(1))
    k_max = float(np.abs(K).max())
    e = int(np.floor(np.log2(k_max))) if k_max > 0 else 0
    info = np.finfo(dtype)
    if not abs(eta) * 2.0**e < info.max or np.abs(M_init).max() < info.tiny:
        # the metric (~ 1 / (eta K)) underflows where eta K overflows: the solver's message named
        # only "args[1]" (pairs scaled by 1e19 in float32)
        raise ValueError(
            f"fit_sdml: the pairs' squared differences (scatter up to {k_max:.3g}) put the metric "
            f"(~ 1 / {k_max:.1g}) beyond {np.dtype(dtype).name}'s range; rescale the data (e.g. "
            "sklearn.preprocessing.StandardScaler) or enable float64 (jax.enable_x64)"
        )
    res = projected_gradient(
        sdml_objective,
        jnp.asarray(M_init, dtype),
        args=(jnp.asarray(K * 2.0**-e, dtype), jnp.asarray(eta * 2.0**e, dtype)),
        regularizer="logdet",
        regularizer_kwargs={"M0": jnp.asarray(M0, dtype)},
        lam=1.0,
        max_iter=max_iter,
        tol=tol,
        min_eigenvalue=floor,
        step_size=1.0 / float(ws[-1]) ** 2,
        l1_prox=alpha,
    )
    M = res.M
    if not bool(jnp.all(jnp.isfinite(M))):  # cannot happen with finite inputs; never return NaN
        M = jnp.asarray(M_init, dtype)
    return SDMLResult(M, int(res.n_iter), bool(res.converged))
