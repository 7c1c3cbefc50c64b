"""Large Margin Nearest Neighbour (LMNN): pull target neighbours in, push impostors out by a margin.

The learned map ``L [r, d]`` (metric ``M = L^T L``) minimises, with squared distances
``d(i, j) = ||L (x_i - x_j)||^2``, the target neighbours ``j ~> i`` fixed from Euclidean input space
and ``mu = regularization``,

    eps(L) = (1 / n) * [ mu * sum_{i, j~>i} d(i, j)
                         + (1 - mu) * sum_{i, j~>i} sum_{l: y_l != y_i} [1 + d(i, j) - d(i, l)]_+ ].

``regularization`` weights the pull term as in metric-learn (``1 - mu`` in the paper's notation, where
``mu`` weights the push term); at the default 0.5 the two conventions agree. The impostors are not a
stale list: every evaluation of the objective takes the hinge over *all* differently labelled points
under the current ``L``, so the active set is recomputed at every iterate (and every line-search trial).
It is computed in row blocks with matmuls (``[B, n]`` distances and ``[B, k, n]`` hinges per block,
never ``n x n x d``), with a closed-form gradient accumulated in the same pass.

Optimisation runs inside one ``jax.jit``-compiled ``lax.while_loop``: L-BFGS with a zoom line search
(optax, the default; the objective is piecewise quadratic and L-BFGS is what pylmnn uses), or gradient
descent with metric-learn's "bold driver" step adaptation (grow the step after a decrease, halve it and
reject the step after an increase). When no impostors exist the push term is simply zero and the fit
proceeds (metric-learn raises there).

The number of samples is padded to buckets (at most 12.5% padding) with masked rows, so
cross-validation folds of slightly different sizes reuse one compiled program.

Reference: K. Q. Weinberger and L. K. Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
Classification", JMLR 10, 2009.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn._validation import (
    as_real,
    check_array,
    check_choice,
    check_labels,
    check_positive_int,
    check_same_dim,
    is_traced,
    require_concrete,
)
from metriclearn.constraints import target_neighbors
from metriclearn.convex._common import (
    FitResult,
    centred,
    check_finite_objective,
    check_n_components,
    check_Xy,
    checked_objective,
    init_components,
    map_row_blocks,
    pad_rows,
)

SOLVERS = ("lbfgs", "gd")

# Elements of the largest per-block temporary ([B, k, n_pad] hinges); bounds memory per block.
_BLOCK_BUDGET = 1 << 22
# Active set: candidate lists hold at most this many points; rounds between full scans run at most
# this many solver iterations; "auto" uses the active set from this many samples on.
_MAX_CANDIDATES = 512
_ROUND_ITERS = 10
_ACTIVE_SET_MIN_N = 4096
IMPOSTORS = ("auto", "all", "active_set")


def _bucket(n: int) -> int:
    """Padded size for ``n`` samples: ``n`` rounded up to a multiple of ``2^(ceil(log2 n) - 3)``.

    Finer than a power-of-two bucket (at most 12.5% padding) because LMNN's cost grows as ``n^2``; the
    cross-validation folds of one data set (sizes differing by a few samples) share a bucket.
    """
    unit = max(8, 1 << max(int(math.log2(max(n, 2))) - 3, 0))
    return -(-n // unit) * unit


def _rows_within_budget(n_pad: int, per_row: int) -> int:
    """Rows per block: a power of two dividing ``n_pad`` with ``B * per_row <= _BLOCK_BUDGET``."""
    b = 1
    while n_pad % (2 * b) == 0 and 2 * b * per_row <= _BLOCK_BUDGET and 2 * b <= n_pad:
        b *= 2
    return b


def _block_rows(n_pad: int, k: int) -> int:
    """Rows per block of the full scan (``[B, k, n_pad]`` hinges)."""
    return _rows_within_budget(n_pad, k * n_pad)


def _nearest_masked(d, mask, m: int):
    """Indices ``[B, m]`` of the ``m`` smallest ``d [B, n]`` where ``mask``, and which are real.

    Two stages instead of one ``top_k`` over ``n`` (slow on CPU): the row is cut into chunks, the
    ``m`` chunks with the smallest minimum are kept (they hold the ``m`` smallest entries: a chunk
    outside them has at least ``m`` smaller entries elsewhere), and ``top_k`` runs over those
    ``m * chunk`` entries only.
    """
    B, n = d.shape
    chunk = 1
    while chunk < 64 and n % (2 * chunk) == 0 and 2 * chunk * m <= n:
        chunk *= 2
    d = jnp.where(mask, d, jnp.inf).reshape(B, n // chunk, chunk)
    m_chunks = min(m, n // chunk)
    _, best = jax.lax.top_k(-jnp.min(d, axis=2), m_chunks)  # [B, m_chunks]
    vals = jnp.take_along_axis(d, best[:, :, None], axis=1).reshape(B, m_chunks * chunk)
    top, pos = jax.lax.top_k(-vals, m)
    idx = jnp.take_along_axis(best, pos // chunk, axis=1) * chunk + pos % chunk
    return idx.astype(jnp.int32), top > -jnp.inf


def _objective_terms(
    Z, y, valid, targets, reg, n_valid, *, block: int, with_grad: bool, collect: int = 0
):
    """Pull, push and (optionally) ``d eps / d Z`` of the LMNN objective in transformed space.

    Args:
      Z: ``[n, r]`` transformed inputs ``X @ L.T`` (padded rows allowed).
      y: int ``[n]`` labels.
      valid: bool ``[n]``; padded rows are False (no targets, never impostors).
      targets: int ``[n, k]`` target-neighbour indices.
      reg: pull weight ``mu`` (scalar).
      n_valid: number of real rows (normaliser).
      block: rows per block (static); divides ``n``.
      with_grad: also return the gradient with respect to ``Z`` (static).
      collect: if ``> 0`` (static; only without ``with_grad``), also collect each row's ``collect``
        nearest differently labelled points (its candidate impostors).

    Returns:
      ``(pull, push, dZ)`` with ``pull``/``push`` already divided by ``n_valid`` and ``dZ`` the
      gradient of ``reg * pull + (1 - reg) * push`` (``None`` unless ``with_grad``). With
      ``collect``: ``(pull, push, (idx [n, collect], ok [n, collect], n_active [n]))``: candidate
      indices, which of them are real, and each row's number of active impostors (points inside its
      radius ``max_j d(i, j) + 1``; may exceed ``collect``).
    """
    n, _ = Z.shape
    n_blocks = n // block
    sq = jnp.sum(Z * Z, axis=1)
    w = valid.astype(Z.dtype)
    scale = 1.0 / n_valid

    def one_block(carry, s):
        pull, push, colw, colA = carry
        found = None
        rows = s + jnp.arange(block)
        zb = jax.lax.dynamic_slice_in_dim(Z, s, block)
        yb = jax.lax.dynamic_slice_in_dim(y, s, block)
        wb = jax.lax.dynamic_slice_in_dim(w, s, block)
        tb = jax.lax.dynamic_slice_in_dim(targets, s, block)
        diff_t = zb[:, None, :] - Z[tb]  # [B, k, r]
        d_t = jnp.sum(diff_t * diff_t, axis=-1)  # [B, k]
        d_all = jnp.maximum(sq[rows][:, None] + sq[None, :] - 2.0 * (zb @ Z.T), 0.0)  # [B, n]
        other = (yb[:, None] != y[None, :]) & (wb[:, None] > 0) & valid[None, :]
        pull = pull + jnp.sum(d_t * wb[:, None]) * scale
        if collect:
            radius = jnp.max(d_t, axis=1, keepdims=True) + 1.0
            active = other & (d_all < radius)
            idx, ok = _nearest_masked(d_all, other, collect)
            found = (idx, ok, jnp.sum(active, axis=1))
        counts_t = []
        w_l = jnp.zeros_like(d_all)
        for t in range(d_t.shape[1]):
            hinge = 1.0 + d_t[:, t : t + 1] - d_all  # [B, n]
            active = (hinge > 0) & other
            push = push + jnp.sum(jnp.where(active, hinge, 0.0)) * scale
            if with_grad:
                act = active.astype(Z.dtype)
                counts_t.append(jnp.sum(act, axis=1))
                w_l = w_l + act
        if not with_grad:
            return (pull, push, colw, colA), found
        w_t = (reg * wb[:, None] + (1.0 - reg) * jnp.stack(counts_t, axis=1)) * scale  # [B, k]
        w_l = -(1.0 - reg) * scale * w_l  # [B, n]
        g_t = 2.0 * w_t[:, :, None] * diff_t  # [B, k, r]
        row_grad = jnp.sum(g_t, axis=1) + 2.0 * (jnp.sum(w_l, axis=1)[:, None] * zb - w_l @ Z)
        colw = colw + jnp.sum(w_l, axis=0)
        colA = colA + w_l.T @ zb
        return (pull, push, colw, colA), (row_grad, g_t)

    zero = jnp.zeros((), Z.dtype)
    if with_grad:
        init = (zero, zero, jnp.zeros((n,), Z.dtype), jnp.zeros_like(Z))
    else:
        init = (zero, zero, zero, zero)
    starts = jnp.arange(n_blocks, dtype=jnp.int32) * block
    (pull, push, colw, colA), out = jax.lax.scan(one_block, init, starts)
    if not with_grad:
        if collect:
            out = tuple(o.reshape((n,) + o.shape[2:]) for o in out)
        return pull, push, out
    row_grad, g_t = out
    dZ = row_grad.reshape(n, -1) + 2.0 * (colw[:, None] * Z - colA)
    dZ = dZ.at[targets.reshape(-1)].add(-g_t.reshape(-1, Z.shape[1]))
    return pull, push, dZ


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _loss(L, X, y, valid, targets, reg, block):
    Z = X @ L.T
    n_valid = jnp.sum(valid).astype(X.dtype)
    pull, push, _ = _objective_terms(
        Z, y, valid, targets, reg, n_valid, block=block, with_grad=False
    )
    return reg * pull + (1.0 - reg) * push


def _loss_fwd(L, X, y, valid, targets, reg, block):
    Z = X @ L.T
    n_valid = jnp.sum(valid).astype(X.dtype)
    pull, push, dZ = _objective_terms(
        Z, y, valid, targets, reg, n_valid, block=block, with_grad=True
    )
    return reg * pull + (1.0 - reg) * push, (dZ, L, X, pull - push, y, valid, targets)


def _loss_bwd(block, res, g):
    dZ, L, X, dreg, y, valid, targets = res
    int_zero = lambda a: np.zeros(a.shape, jax.dtypes.float0)  # noqa: E731
    return (
        g * (dZ.T @ X),
        g * (dZ @ L),
        int_zero(y),
        int_zero(valid),
        int_zero(targets),
        g * dreg,
    )


_loss.defvjp(_loss_fwd, _loss_bwd)


def _check_regularization(regularization) -> None:
    if is_traced(regularization):
        return
    if not (0.0 <= as_real(regularization, "regularization") <= 1.0):
        raise ValueError(f"regularization must be in [0, 1], got {regularization!r}")


def lmnn_loss(L, X, y, targets, *, regularization: float = 0.5, block_size: int | None = None):
    """The LMNN objective ``eps(L)``, differentiable in ``L`` and ``X``.

    With ``d(i, j) = ||L (x_i - x_j)||^2`` and ``mu = regularization``::

        eps(L) = (1/n) [ mu * sum_{i, j in targets[i]} d(i, j)
                         + (1 - mu) * sum_{i, j in targets[i], l: y_l != y_i} [1 + d(i, j) - d(i, l)]_+ ]

    evaluated in row blocks (memory ``O(block * k * n)``, never ``n x n x d``). The gradient is closed-form (computed in the same blocked pass as the value) through
    ``jax.custom_vjp``, so ``jax.grad(lmnn_loss)`` costs about one extra matmul per block.

    Args:
      L: ``[r, d]`` linear map.
      X: ``[n, d]`` inputs.
      y: int ``[n]`` class codes.
      targets: int ``[n, k]`` target neighbours (e.g. :func:`metriclearn.constraints.target_neighbors`).
      regularization: pull weight ``mu`` in ``[0, 1]``; push weight is ``1 - mu``.
      block_size: rows per block (must divide ``n``); default chosen from a memory budget.

    Returns:
      Scalar objective, normalised by ``n``.

    Raises:
      ValueError: (for concrete inputs) NaN/inf, shapes that do not agree, target indices out of range.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> from metriclearn.constraints import target_neighbors
      >>> X = jnp.asarray(X, jnp.float32)
      >>> targets = target_neighbors(X, y, k=3)   # [150, 3]
      >>> value, grad = jax.value_and_grad(lmnn_loss)(jnp.eye(4), X, y, targets)
      >>> grad.shape
      (4, 4)

    Reference: Weinberger & Saul, JMLR 2009, eq. (14).
    """
    X_raw = X
    X = check_array(X, "X", ndim=2, min_rows=1)
    X = centred(X_raw, X)
    L = check_array(L, "L", ndim=2, dtype=X.dtype)
    check_same_dim(L, X, "L", "X")
    if not is_traced(y):
        y = check_labels(y, X.shape[0], min_classes=1)
    if not is_traced(targets):
        t = np.asarray(targets)
        if t.ndim != 2 or t.shape[0] != X.shape[0] or t.dtype.kind not in "iu":
            raise ValueError(
                f"targets must be integer [n, k] with n = {X.shape[0]}, got {t.dtype} {tuple(t.shape)}"
            )
        if t.size and (t.min() < 0 or t.max() >= X.shape[0]):
            raise ValueError(f"targets must hold indices in [0, {X.shape[0]})")
    targets = jnp.asarray(targets, jnp.int32)
    n, k = targets.shape
    block = (
        _block_rows(n, k) if block_size is None else check_positive_int(block_size, "block_size")
    )
    _check_regularization(regularization)
    if n % block:
        raise ValueError(f"block_size={block} must divide the number of samples n={n}")
    valid = jnp.ones((n,), bool)
    reg = jnp.asarray(regularization, X.dtype)
    value = _loss(L, X, jnp.asarray(y, jnp.int32), valid, targets, reg, block)
    return checked_objective(value, X, "lmnn_loss")


def _candidate_terms(L, X, valid, targets, cand, cand_ok, reg, block):
    """Value and ``d/dL`` of the LMNN objective with impostors restricted to ``cand [n, m]``.

    Equal to the full objective whenever every active impostor of row ``i`` is among ``cand[i]``
    (``cand_ok`` masks padding entries); otherwise a lower bound. Every term is a weighted squared
    distance ``w_ij ||L (x_i - x_j)||^2`` (plus constants), so the gradient is ``2 L C`` with
    ``C = sum_ij w_ij (x_i - x_j)(x_i - x_j)^T = X^T diag(a) X - X^T S - S^T X``, ``a`` the summed
    weights per point and ``S = W X`` (one gather-and-sum of ``X``): ``O(n (k + m) d + n d^2)`` work,
    no ``[n, n]`` array and no vector scatter. Rows run in blocks of ``block``.
    """
    n, k = targets.shape
    Z = X @ L.T
    w = valid.astype(X.dtype)
    n_valid = jnp.sum(w)
    idx = jnp.concatenate([targets, cand], axis=1)  # [n, k + m]

    def rows(zi, ii, oi, wi):
        diff = zi[:, None, :] - Z[ii]  # [B, k + m, r]
        dist = jnp.sum(diff * diff, axis=-1)
        d_t, d_c = dist[:, :k], dist[:, k:]
        hinge = 1.0 + d_t[:, :, None] - d_c[:, None, :]  # [B, k, m]
        act = oi[:, None, :] & (hinge > 0)
        push = jnp.sum(jnp.where(act, hinge, 0.0), axis=(1, 2))
        value = wi * (reg * jnp.sum(d_t, axis=1) + (1.0 - reg) * push)
        w_t = wi[:, None] * (reg + (1.0 - reg) * jnp.sum(act, axis=2))
        w_c = -wi[:, None] * (1.0 - reg) * jnp.sum(act, axis=1)
        return value, jnp.concatenate([w_t, w_c], axis=1)

    value, wp = map_row_blocks(rows, block, Z, idx, cand_ok, w)
    wp = wp / n_valid
    a = jnp.sum(wp, axis=1) + jnp.zeros((n,), X.dtype).at[idx.reshape(-1)].add(wp.reshape(-1))
    S = map_row_blocks(lambda ii, wi: jnp.einsum("bk,bkd->bd", wi, X[ii]), block, idx, wp)
    XS = X.T @ S
    C = X.T @ (a[:, None] * X) - XS - XS.T
    return jnp.sum(value) / n_valid, 2.0 * L @ C


def _candidate_objective(X, valid, targets, cand, cand_ok, reg, block):
    """``L -> `` restricted objective, differentiable in ``L`` through its closed-form gradient."""

    @jax.custom_vjp
    def fun(L):
        return _candidate_terms(L, X, valid, targets, cand, cand_ok, reg, block)[0]

    def fwd(L):
        return _candidate_terms(L, X, valid, targets, cand, cand_ok, reg, block)

    def bwd(grad_L, g):
        return (g * grad_L,)

    fun.defvjp(fwd, bwd)
    return fun


def _minimize(fun, L0, state, max_iter, tol, *, solver, memory_size):
    """Minimise ``fun`` from ``L0`` inside one ``lax.while_loop``.

    ``state`` is the optax L-BFGS state (``solver="lbfgs"``) or the current step size (``"gd"``);
    it is returned so that the active-set rounds of :func:`fit_lmnn` continue where they stopped.
    Returns ``(L, n_iter, converged, objective, state)``.
    """
    dtype = L0.dtype
    value_and_grad = jax.value_and_grad(fun)
    f0, g0 = value_and_grad(L0)
    tiny = jnp.asarray(np.finfo(np.dtype(dtype)).tiny, dtype)

    def stalled(f_old, f_new):
        # a change within the tolerance either way: near the optimum the line search's steps move
        # the (piecewise linear) objective by float noise, up as often as down
        return jnp.abs(f_old - f_new) <= tol * jnp.maximum(
            jnp.maximum(jnp.abs(f_old), jnp.abs(f_new)), 1.0
        )

    if solver == "lbfgs":
        opt = _lbfgs(memory_size)

        def cond(c):
            it, _, _, _, _, done = c[:6]
            return (it < max_iter) & ~done

        def body(c):
            it, L, f, g, st, _, best_L, best_f, _ = c
            updates, st = opt.update(g, st, L, value=f, grad=g, value_fn=fun)
            L_new = optax.apply_updates(L, updates)
            f_new = optax.tree_utils.tree_get(st, "value")
            g_new = optax.tree_utils.tree_get(st, "grad")
            ok = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new))
            gnorm = jnp.sqrt(jnp.sum(g_new * g_new))
            conv = ok & (stalled(best_f, f_new) | (gnorm <= tiny))
            better = ok & (f_new < best_f)
            # a failed line search (a non-finite value or gradient, or an increase beyond the
            # tolerance) stops the loop unconverged at the best iterate: its curvature pairs mislead
            failed = ~conv & ~better
            best_L = jnp.where(better, L_new, best_L)
            best_f = jnp.where(better, f_new, best_f)
            return (it + 1, L_new, f_new, g_new, st, conv | failed, best_L, best_f, conv)

        init = (jnp.int32(0), L0, f0, g0, state, jnp.array(False), L0, f0, jnp.array(False))
        it, _, _, _, state, _, best_L, best_f, conv = jax.lax.while_loop(cond, body, init)
        return best_L, it, conv, best_f, state

    # Gradient descent with bold-driver step adaptation (metric-learn's scheme, factor 1.05 / 0.5).
    def cond_gd(c):
        it, _, _, _, lr, done = c
        return (it < max_iter) & ~done & (lr > tiny)

    def body_gd(c):
        it, L, f, g, lr, _ = c
        L_try = L - lr * g
        f_try, g_try = value_and_grad(L_try)
        accept = jnp.isfinite(f_try) & (f_try < f)
        done = accept & stalled(f, f_try)
        L = jnp.where(accept, L_try, L)
        g = jnp.where(accept, g_try, g)
        f_new = jnp.where(accept, f_try, f)
        lr = jnp.where(accept, lr * 1.05, lr * 0.5)
        return (it + 1, L, f_new, g, lr, done)

    init = (jnp.int32(0), L0, f0, g0, jnp.asarray(state, dtype), jnp.array(False))
    it, L, f, _, lr, done = jax.lax.while_loop(cond_gd, body_gd, init)
    return L, it, done | (lr <= tiny), f, lr


def _lbfgs(memory_size: int) -> optax.GradientTransformationExtraArgs:
    return optax.lbfgs(memory_size=memory_size)


def _solver_state(L0, learn_rate, *, solver: str, memory_size: int):
    return _lbfgs(memory_size).init(L0) if solver == "lbfgs" else learn_rate


@functools.partial(jax.jit, static_argnames=("block", "solver", "memory_size"))
def _full_round(L0, state, X, y, valid, targets, reg, max_iter, tol, *, block, solver, memory_size):
    """Minimise the full objective (all impostors at every evaluation) from ``L0`` and ``state``.

    Returns ``(L, n_iter, converged, objective, state)``.
    """

    def fun(L):
        return _loss(L, X, y, valid, targets, reg, block)

    return _minimize(fun, L0, state, max_iter, tol, solver=solver, memory_size=memory_size)


@functools.partial(jax.jit, static_argnames=("block", "solver", "memory_size"))
def _active_round(
    L0, state, X, valid, targets, cand, cand_ok, reg, max_iter, tol, *, block, solver, memory_size
):
    """One active-set round: minimise :func:`_candidate_terms` with the candidates held fixed."""
    fun = _candidate_objective(X, valid, targets, cand, cand_ok, reg, block)
    return _minimize(fun, L0, state, max_iter, tol, solver=solver, memory_size=memory_size)


@functools.partial(jax.jit, static_argnames=("block", "collect"))
def _scan(L, X, y, valid, targets, reg, *, block, collect):
    """Exact objective at ``L`` over all differently labelled points (+ candidates if ``collect``)."""
    Z = X @ L.T
    n_valid = jnp.sum(valid).astype(X.dtype)
    pull, push, found = _objective_terms(
        Z, y, valid, targets, reg, n_valid, block=block, with_grad=False, collect=collect
    )
    return reg * pull + (1.0 - reg) * push, found


def _pow2_at_least(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _fit_active_set(L0, X, y, valid, targets, reg, lr, max_iter, tol, *, solver, memory_size):
    """Active-set LMNN (Weinberger & Saul 2009, sec. 5.1): exact at convergence, cheap per iterate.

    A full scan under the current ``L`` gives the exact objective, every point's number of active
    impostors and its ``m`` nearest differently labelled points, the *candidates* (``m`` a power of
    two, at least twice the largest number of active impostors). A round of up to ``_ROUND_ITERS``
    solver iterations then minimises the objective restricted to the candidates (``O(n m r)`` per
    evaluation instead of ``O(n^2 r)``), continuing the solver state of the previous round. The next
    scan tells whether an impostor outside the candidates became active: if the restricted and the
    exact objective agree, none did, so a round that converged has converged on the full objective.
    Rounds run on the full objective while some point has more active impostors than the candidate
    cap (``_MAX_CANDIDATES``, at most ``n / 16``) allows.

    Returns ``(L, n_iter, converged, objective)`` with ``objective`` the exact one.
    """
    n_pad, k = targets.shape
    r = L0.shape[0]
    block = _block_rows(n_pad, k)
    m_cap = min(max(16, min(_MAX_CANDIDATES, n_pad // 16)), n_pad)
    m = min(16, m_cap)
    eps = float(np.finfo(np.dtype(X.dtype)).eps)
    slack = max(float(tol), 10.0 * eps)
    state = _solver_state(L0, lr, solver=solver, memory_size=memory_size)
    L, total, converged = L0, 0, False
    f_exact, found = _scan(L, X, y, valid, targets, reg, block=block, collect=m)
    while True:
        budget = jnp.int32(min(_ROUND_ITERS, max_iter - total))
        most = int(jnp.max(found[2]))
        if m < most <= m_cap:
            # more active impostors than candidates: widen the lists before optimising on them
            m = min(_pow2_at_least(2 * most), m_cap)
            f_exact, found = _scan(L, X, y, valid, targets, reg, block=block, collect=m)
            continue
        full = most > m_cap  # too many active impostors for candidate lists: the full objective
        if full:
            L, it, conv, f_exact, state = _full_round(
                L,
                state,
                X,
                y,
                valid,
                targets,
                reg,
                budget,
                tol,
                block=block,
                solver=solver,
                memory_size=memory_size,
            )
        else:
            cblock = _rows_within_budget(n_pad, (k + m) * max(r, X.shape[1]))
            L, it, conv, f_round, state = _active_round(
                L,
                state,
                X,
                valid,
                targets,
                found[0],
                found[1],
                reg,
                budget,
                tol,
                block=cblock,
                solver=solver,
                memory_size=memory_size,
            )
        total += int(it)
        conv = bool(conv)
        # a round that stopped early without converging had a failed line search: the solver
        # cannot go on from its state, so the fit ends there (unconverged)
        last = total >= max_iter or int(it) == 0 or (not conv and int(it) < int(budget))
        found = None
        if not full or not (conv or last):
            # exact objective at the new L (a full round has it already), and fresh candidates
            # unless the fit may end here
            collect = 0 if (conv or last) else m
            f_exact, found = _scan(L, X, y, valid, targets, reg, block=block, collect=collect)
        covered = full or float(f_exact) - float(f_round) <= slack * max(abs(float(f_exact)), 1.0)
        if conv and covered:
            converged = True
            break
        if last:
            break
        if found is None:
            f_exact, found = _scan(L, X, y, valid, targets, reg, block=block, collect=m)
    return L, total, converged, float(f_exact)


def fit_lmnn(
    X,
    y,
    *,
    n_neighbors: int = 3,
    n_components: int | None = None,
    init="auto",
    max_iter: int = 1000,
    tol: float = 1e-6,
    learn_rate: float | None = None,
    regularization: float = 0.5,
    solver: str = "lbfgs",
    memory_size: int = 10,
    impostors: str = "auto",
    key: jax.Array | None = None,
) -> FitResult:
    """Fit LMNN (Weinberger & Saul 2009) and return the learned map ``L``.

    Minimises ``eps(L) = (1/n) [mu * pull(L) + (1 - mu) * push(L)]`` (module docstring) over
    ``L [r, d]`` directly (``M = L^T L`` is PSD by construction); targets are the ``n_neighbors``
    nearest same-class points in Euclidean input space; the impostor hinge is re-evaluated over all
    differently labelled points at every iterate.

    Args:
      X: ``[n, d]`` finite features.
      y: ``[n]`` class labels (any hashable dtype), at least two classes, each with more than
        ``n_neighbors`` members.
      n_neighbors: target neighbours per point ``k``.
      n_components: ``r`` (``None`` = ``d``); ``r > d`` raises.
      init: ``"auto"``, ``"pca"``, ``"lda"``, ``"identity"``, ``"random"`` or an ``[r, d]`` array
        (see :func:`metriclearn.convex._common.init_components`).
      max_iter: maximum optimiser iterations.
      tol: stop (converged) when an iteration changes the objective by at most
        ``tol * max(|eps|, 1)``, either way. A larger increase is a failed L-BFGS line search: the
        fit stops there, unconverged, at the best iterate.
      learn_rate: initial step of ``solver="gd"``; default ``1 / ||grad eps(L0)||_F * ||L0||_F * 1e-2``
        (a 1% relative first step). Ignored by ``"lbfgs"``.
      regularization: pull weight ``mu`` in ``[0, 1]`` (metric-learn's convention).
      solver: ``"lbfgs"`` (optax L-BFGS + zoom line search) or ``"gd"`` (bold-driver descent).
      memory_size: L-BFGS history length.
      impostors: how the push term finds impostors. ``"all"``: every evaluation scans all
        differently labelled points (``O(n^2 r)`` per evaluation). ``"active_set"``: the scan runs
        once per round of at most 10 iterations and collects each point's ``m`` nearest differently
        labelled points as candidate impostors (``m`` at least twice the largest number of active
        impostors); evaluations inside a round cost ``O(n m r)``
        (``m`` candidates per point), and a round only counts as converged when a fresh scan shows no
        active impostor outside the candidates, so the result is exact at convergence (Weinberger &
        Saul 2009, sec. 5.1). ``"auto"`` (default): ``"active_set"`` from 4096 samples on.
      key: PRNG key for ``init="random"``.

    Returns:
      :class:`FitResult` ``(components [r, d], n_iter, converged, objective)``.

    Raises:
      ValueError: NaN/inf in ``X``, ``len(y) != len(X)``, one class, a class with ``<= n_neighbors``
        members (named in the message), ``n_components > d``, bad hyperparameters, or squared
        distances overflowing ``X``'s dtype (``X`` is centred first, in float64, so an offset is
        harmless; a scale near ``sqrt(finfo.max)`` is not).

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> res = fit_lmnn(X, y, n_neighbors=3)
      >>> Xt = X @ np.asarray(res.components).T   # the data in the learned space
      >>> Xt.shape
      (150, 4)

    Reference: Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
    Classification", JMLR 2009.
    """
    require_concrete("fit_lmnn", X, y)
    k = check_positive_int(n_neighbors, "n_neighbors")
    X_raw = X
    X, codes, n_classes = check_Xy(X, y, min_classes=2)
    X = centred(X_raw, X)
    n, d = X.shape
    counts = np.bincount(codes)
    if counts.min() <= k:
        c = int(np.argmin(counts))
        label = np.unique(np.asarray(y))[c].item()
        raise ValueError(
            f"n_neighbors={k} needs more than {k} samples in every class, but class {label!r} has "
            + (
                f"{int(counts[c])}; lower n_neighbors to at most {int(counts.min()) - 1}"
                if counts.min() > 1
                else f"{int(counts[c])}; LMNN needs at least two samples of every class"
            )
        )
    check_choice(solver, "solver", SOLVERS)
    check_choice(impostors, "impostors", IMPOSTORS)
    max_iter = check_positive_int(max_iter, "max_iter")
    memory_size = check_positive_int(memory_size, "memory_size")
    _check_regularization(regularization)
    if not (as_real(tol, "tol") >= 0.0 and math.isfinite(float(tol))):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if learn_rate is not None and not (
        as_real(learn_rate, "learn_rate") > 0 and math.isfinite(float(learn_rate))
    ):
        raise ValueError(f"learn_rate must be a finite number > 0, got {learn_rate!r}")
    check_n_components(n_components, d)
    L0 = init_components(X, codes, n_components=n_components, init=init, key=key)
    L0 = jnp.asarray(L0, X.dtype)

    targets = target_neighbors(X, codes, k=k)
    n_pad = _bucket(n)
    block = _block_rows(n_pad, k)
    Xp, valid = pad_rows(X, n_pad)
    yp, _ = pad_rows(jnp.asarray(codes, jnp.int32), n_pad, fill=-1)
    # Padded rows point at themselves (zero distance, zero weight).
    tp = np.concatenate([targets, np.repeat(np.arange(n, n_pad)[:, None], k, axis=1)], axis=0)
    tp = jnp.asarray(tp, jnp.int32)
    reg = jnp.asarray(regularization, X.dtype)

    if solver == "gd" and learn_rate is None:
        _, g0 = jax.value_and_grad(_loss)(L0, Xp, yp, valid, tp, reg, block)
        gn = float(jnp.linalg.norm(g0))
        learn_rate = 1e-2 * float(jnp.linalg.norm(L0)) / gn if gn > 0 else 1.0
    lr = jnp.asarray(1.0 if learn_rate is None else learn_rate, X.dtype)

    if impostors == "auto":
        impostors = "active_set" if n >= _ACTIVE_SET_MIN_N else "all"
    tol = jnp.asarray(tol, X.dtype)
    if impostors == "active_set":
        L, it, converged, objective = _fit_active_set(
            L0, Xp, yp, valid, tp, reg, lr, max_iter, tol, solver=solver, memory_size=memory_size
        )
    else:
        state = _solver_state(L0, lr, solver=solver, memory_size=memory_size)
        L, it, converged, objective, _ = _full_round(
            L0,
            state,
            Xp,
            yp,
            valid,
            tp,
            reg,
            jnp.int32(max_iter),
            tol,
            block=block,
            solver=solver,
            memory_size=memory_size,
        )
    check_finite_objective(float(objective), X, "fit_lmnn")
    return FitResult(
        components=L, n_iter=int(it), converged=bool(converged), objective=float(objective)
    )
