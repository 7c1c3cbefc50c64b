"""Neighbourhood Components Analysis (NCA): learn ``L`` maximising leave-one-out soft-kNN accuracy.

Each point ``i`` picks a neighbour ``j != i`` with probability

.. math::  p_{ij} = \\frac{\\exp(-\\|L x_i - L x_j\\|^2)}{\\sum_{l \\ne i} \\exp(-\\|L x_i - L x_l\\|^2)},

and NCA minimises ``f(L) = -sum_i p_i`` with ``p_i = sum_{j: y_j = y_i} p_ij`` (the scikit-learn
formulation, not divided by ``n``). With ``W_ij = p_ij ([y_i = y_j] - p_i)`` (the derivative of
``-p_i`` with respect to ``||L x_i - L x_j||^2``) the gradient is closed form,

.. math::  \\nabla_L f = 2\\,\\big((\\mathrm{diag}((W + W^T) 1) - W - W^T) Z\\big)^T X,
           \\qquad Z = X L^T,

so one evaluation costs two or three ``[n, n] x [n, k]`` matmuls plus a few elementwise passes over
``[n, n]`` (no ``n x n x d`` tensor, no autodiff through the masked softmax; see
:func:`metriclearn.convex._common.neighbour_softmax_value_and_grad`). Up to 8192 (padded) rows the
problem is one block; beyond, rows are processed in blocks of at most 1024 (``O(1024 n)`` memory).
L-BFGS (:func:`metriclearn.convex._common.lbfgs_minimize`) optimises it in one jitted loop. Rows are
padded to buckets with a validity mask so cross-validation folds of similar size reuse one compiled
program.

Reference: J. Goldberger, S. Roweis, G. Hinton, R. Salakhutdinov, "Neighbourhood Components
Analysis", NIPS 2004.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import check_array, check_positive_int, is_traced, require_concrete
from metriclearn.convex._common import (
    FitResult,
    centred,
    check_components,
    check_finite_objective,
    check_n_components,
    check_Xy,
    checked_objective,
    init_components,
    lbfgs_minimize,
    lbfgs_tolerances,
    neighbour_softmax_value_and_grad,
    pad_for_softmax,
)

__all__ = ["fit_nca", "nca_objective"]


def _nca_rows(P, cb, codes):
    """Rows' loss ``-p_i`` and ``d(-p_i)/dD_ij = P_ij (same_ij - p_i)`` (see module docstring)."""
    same = cb[:, None] == codes[None, :]
    p_i = jnp.sum(jnp.where(same, P, 0.0), axis=1)
    return -p_i, P * (same.astype(P.dtype) - p_i[:, None])


def _nca_value_and_grad(L, X, codes, valid, block: int):
    """``(-sum_i p_i, d/dL, d/dX)`` on padded ``X [N, d]`` in closed form (matmuls only)."""
    Z = X @ L.T
    f, gZ = neighbour_softmax_value_and_grad(Z, valid, _nca_rows, codes, codes, block=block)
    return f, gZ.T @ X, gZ @ L


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _nca_loss(L, X, codes, valid, block: int):
    """``-sum_i p_i`` over valid rows of padded ``X [N, d]`` (invalid rows/columns masked).

    Differentiable in ``L`` and ``X`` with the closed-form gradient of
    :func:`metriclearn.convex._common.neighbour_softmax_value_and_grad` (one pass computes value
    and gradient, so ``jax.value_and_grad`` costs about one evaluation).
    """
    return _nca_value_and_grad(L, X, codes, valid, block)[0]


def _nca_loss_fwd(L, X, codes, valid, block):
    f, gL, gX = _nca_value_and_grad(L, X, codes, valid, block)
    return f, (gL, gX)


def _nca_loss_bwd(block, res, ct):
    gL, gX = res
    return ct * gL, ct * gX, None, None


_nca_loss.defvjp(_nca_loss_fwd, _nca_loss_bwd)


_nca_loss_jit = jax.jit(_nca_loss, static_argnames=("block",))


@functools.partial(jax.jit, static_argnames=("block",))
def _nca_solve(L0, X, codes, valid, max_iter, ftol, gtol, *, block: int):
    fun = functools.partial(_nca_loss, X=X, codes=codes, valid=valid, block=block)
    return lbfgs_minimize(fun, L0, max_iter=max_iter, ftol=ftol, gtol=gtol)


def nca_objective(L, X, y) -> jax.Array:
    """The NCA loss ``-sum_i p_i`` of ``L [k, d]`` on ``X [n, d]``, labels ``y [n]`` (validated).

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> bool(-150 <= nca_objective(jnp.eye(4), X, y) < 0)   # minus the expected correct count
      True
    """
    X_raw = X
    if is_traced(y):  # under jit: the labels only enter as equalities, so int labels serve as codes
        X = check_array(X, "X", ndim=2, min_rows=2, min_features=1)
        codes = jnp.asarray(y)
        if codes.shape != (X.shape[0],) or not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(
                f"y must be [{X.shape[0]}] integer labels under jit, got {codes.dtype} "
                f"{tuple(codes.shape)}"
            )
        # -1 marks padding rows: shift the labels to >= 0 so none equals it
        codes = codes - jnp.min(codes)
    else:
        X, codes, _ = check_Xy(X, y, min_per_class=1)
    X = centred(X_raw, X)
    L = check_components(L, X)
    Xp, cp, valid, block = pad_for_softmax(X, codes, fill=-1)
    return checked_objective(_nca_loss_jit(L, Xp, cp, valid, block=block), X, "nca_objective")


def fit_nca(
    X,
    y,
    *,
    n_components: int | None = None,
    init="auto",
    max_iter: int = 100,
    tol: float | None = 1e-5,
    key: jax.Array | None = None,
) -> FitResult:
    """Fit NCA: the linear map ``L [k, d]`` minimising ``-sum_i p_i`` (see module docstring).

    Args:
      X: ``[n, d]`` features (finite).
      y: ``[n]`` class labels, at least two classes (a singleton class contributes ``p_i = 0``).
      n_components: ``k`` (default ``d``); ``k > d`` raises ``ValueError``.
      init: ``"auto"`` (scikit-learn's rule), ``"pca"``, ``"lda"``, ``"identity"``, ``"random"``
        or an array ``[k, d]``; see :func:`metriclearn.convex._common.init_components`.
      max_iter: L-BFGS iterations.
      tol: relative-decrease and gradient tolerance (scipy's L-BFGS-B ``tol`` semantics; ``None``
        keeps scipy's defaults ``ftol=2.2e-9, gtol=1e-5`` and runs closer to convergence).
      key: PRNG key for ``init="random"``.

    ``X`` is centred first (mean taken in float64): the loss depends on differences only, and
    float32 squared distances lose them far from the origin. ``ValueError`` if the loss at the
    initial map overflows ``X``'s dtype (scale near ``sqrt(finfo.max)``).

    Returns:
      :class:`FitResult` with ``components [k, d]``, ``n_iter``, ``converged`` and
      ``objective = -sum_i p_i`` (``-n`` is the best possible value).

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> res = fit_nca(X, y, n_components=2)
      >>> res.components.shape
      (2, 4)

    Reference: Goldberger et al., "Neighbourhood Components Analysis", NIPS 2004.
    """
    require_concrete("fit_nca", X, y)
    X_raw = X
    X, codes, _ = check_Xy(X, y, min_per_class=1)
    if np.bincount(codes).max() < 2:
        raise ValueError(
            "every class in y has a single sample: NCA has no same-class neighbour to pull "
            "(its objective is 0 for every map); NCA needs a class with two samples"
        )
    X = centred(X_raw, X)
    check_n_components(n_components, X.shape[1])
    max_iter = check_positive_int(max_iter, "max_iter")  # NumPy integers too (grid searches)
    ftol, gtol = lbfgs_tolerances(tol)
    L0 = init_components(X, codes, n_components=n_components, init=init, key=key)
    Xp, cp, valid, block = pad_for_softmax(X, codes, fill=-1)
    res = _nca_solve(
        L0,
        Xp,
        cp,
        valid,
        jnp.asarray(max_iter),
        jnp.asarray(ftol, X.dtype),
        jnp.asarray(gtol, X.dtype),
        block=block,
    )
    check_finite_objective(float(res.value), X, "fit_nca")
    return FitResult(res.params, int(res.n_iter), bool(res.converged), float(res.value))
