"""Projected-gradient solver over the PSD cone, and a factored (low-rank) variant.

Solves

    min_M  f(M) + lam * R(M) + w_1 * ||M||_1      s.t.  M ⪰ min_eigenvalue * I

by iterating ``M <- P(prox(M - t * grad))``: a gradient step, the soft-thresholding prox of the optional
L1 term, and the projection ``P`` onto the PSD cone (symmetrize, ``eigh``, clip the eigenvalues;
:func:`metriclearn.psd.project_psd`). The step ``t`` comes from a backtracking line search (the spectral
projected gradient: each search first tries the Barzilai-Borwein step ``<s, s> / <s, y>`` of the last
move, halves until the Armijo test ``F(M+) <= F(M) + 1e-4 (<g, M+ - M> + h(M+) - h(M))`` holds, ``F`` the
whole objective and ``h`` its L1 part), or the update from any
``optax.GradientTransformation``. The whole loop is one ``lax.while_loop`` inside ``jit`` with a fixed-size
history buffer; it stops on a small relative objective change or a zero step.

:func:`factored_gradient` runs the same loop on ``L`` (``[k, d]``, ``M = L^T L``) without projection:
low rank and no ``eigh`` for large ``d``.

Objectives are plain JAX functions ``objective(M, *args) -> scalar``. Passing the data through ``args``
(rather than closing over it) lets repeated fits with same-shaped data reuse one compiled program. The
per-tuple loss helpers (:func:`pair_hinge_loss`, :func:`triplet_hinge_loss`,
:func:`triplet_logistic_loss`) are written for one pair/triplet and vmapped.

Example::

    import jax.numpy as jnp
    from metriclearn import solver
    A = jnp.array([[2.0, 0.0], [0.0, -1.0]])
    res = solver.projected_gradient(lambda M: jnp.sum((M - A) ** 2), jnp.eye(2))
    res.M          # ~ [[2, 0], [0, 0]] = project_psd(A)

Reference: Xing, Ng, Jordan & Russell, "Distance metric learning with application to clustering with
side-information", NIPS 2002 (projected gradient for metric learning); Beck & Teboulle, "A fast iterative
shrinkage-thresholding algorithm", SIAM J. Imaging Sci. 2009 (backtracking for proximal gradient);
Birgin, Martinez & Raydan, "Nonmonotone spectral projected gradient methods on convex sets", SIAM J.
Optim. 2000 (spectral steps with an Armijo test along the projected direction).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn._validation import (
    check_array,
    check_flags,
    check_hyper,
    check_kwargs,
    check_positive_int,
    is_traced,
)
from metriclearn.psd import _project_psd
from metriclearn.regularizers import get_regularizer, soft_threshold

__all__ = [
    "SolverResult",
    "projected_gradient",
    "factored_gradient",
    "squared_mahalanobis",
    "pair_hinge_loss",
    "triplet_hinge_loss",
    "triplet_logistic_loss",
]


class SolverResult(NamedTuple):
    """Outcome of :func:`projected_gradient` / :func:`factored_gradient`.

    Attributes:
      M: the solution (``[d, d]`` PSD matrix; for :func:`factored_gradient` the factor ``L [k, d]``).
      n_iter: iterations run (int scalar array).
      converged: whether the stopping test was met before ``max_iter`` (bool scalar array).
      history: dict of ``[n_iter]`` arrays (``[max_iter]``, NaN-padded after ``n_iter``, when called
        under an outer ``jit``): ``objective`` (after each step, regularizers included), ``grad_norm``
        (Frobenius norm of the gradient before the step), ``step`` (``||M_{t+1} - M_t||_F``) and
        ``step_size`` (accepted line-search step ``t``; NaN for optax optimizers).
    """

    M: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: dict[str, jax.Array]


# ----------------------------------------------------------------------------------------------------
# per-tuple losses (one tuple, vmapped)


def squared_mahalanobis(M: jax.Array, diff: jax.Array) -> jax.Array:
    """``diff^T M diff`` for one difference vector ``[d]`` (vmap it over ``[n, d]``)."""
    return diff @ (M @ diff)


def _check_diffs(M, *named) -> None:
    """Shape checks of the loss helpers (shapes are known under ``jit``, so this is free), and
    finiteness of the concrete arrays (a NaN difference or ``M`` gave a NaN loss)."""
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square [d, d] matrix, got shape {tuple(M.shape)}")
    d = M.shape[0]
    for name, arr in named:
        if arr.ndim != 2 or arr.shape[1] != d:
            raise ValueError(
                f"{name} must be [n, {d}] (M has shape {tuple(M.shape)}), got shape {tuple(arr.shape)}"
            )
    for name, arr in (("M", M), *named):
        if not is_traced(arr) and not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{name} contains NaN or inf")


def _pair_hinge_one(M, diff, sign, u, l):
    d2 = squared_mahalanobis(M, diff)
    return jnp.where(sign > 0, jnp.maximum(d2 - u, 0.0), jnp.maximum(l - d2, 0.0))


def pair_hinge_loss(M: jax.Array, diffs_sim: jax.Array, diffs_dis: jax.Array, *, u, l) -> jax.Array:
    """Mean pair hinge with distance thresholds: similar pairs below ``u``, dissimilar above ``l``.

    ``(sum_S [d_M^2 - u]_+ + sum_D [l - d_M^2]_+) / (|S| + |D|)`` with ``d_M^2 = v^T M v``.

    Args:
      M: ``[d, d]``.
      diffs_sim: ``[n_s, d]`` differences ``x_i - x_j`` of similar pairs.
      diffs_dis: ``[n_d, d]`` differences of dissimilar pairs.
      u: upper bound on similar squared distances.
      l: lower bound on dissimilar squared distances.

    Returns:
      scalar.

    Raises:
      ValueError: shapes not ``[n, d]`` for a ``[d, d]`` ``M``, or no pair at all (the mean of an empty
        set would be NaN).

    Reference: the thresholded pair constraints of Davis et al. (ITML), ICML 2007.
    """
    _check_diffs(M, ("diffs_sim", diffs_sim), ("diffs_dis", diffs_dis))
    check_hyper(u=u, l=l)
    if diffs_sim.shape[0] + diffs_dis.shape[0] == 0:
        raise ValueError(
            "pair_hinge_loss needs at least one pair: diffs_sim and diffs_dis are both empty "
            f"(shapes {tuple(diffs_sim.shape)} and {tuple(diffs_dis.shape)})"
        )
    diffs = jnp.concatenate([diffs_sim, diffs_dis], axis=0)
    sign = jnp.concatenate(
        [jnp.ones(diffs_sim.shape[0], diffs.dtype), -jnp.ones(diffs_dis.shape[0], diffs.dtype)]
    )
    per = jax.vmap(_pair_hinge_one, in_axes=(None, 0, 0, None, None))(M, diffs, sign, u, l)
    return jnp.mean(per)


def _check_triplets(M, d_ab, d_ac) -> None:
    _check_diffs(M, ("d_ab", d_ab), ("d_ac", d_ac))
    if d_ab.shape != d_ac.shape:
        raise ValueError(
            f"d_ab and d_ac must have the same shape, got {tuple(d_ab.shape)} and {tuple(d_ac.shape)}"
        )
    if d_ab.shape[0] == 0:
        raise ValueError(
            f"need at least one triplet: d_ab and d_ac are empty (shape {tuple(d_ab.shape)})"
        )


def _triplet_margin_one(M, d_ab, d_ac):
    return squared_mahalanobis(M, d_ab) - squared_mahalanobis(M, d_ac)


def triplet_hinge_loss(M: jax.Array, d_ab: jax.Array, d_ac: jax.Array, *, margin=1.0) -> jax.Array:
    """Mean triplet hinge ``[margin + d_M^2(a, b) - d_M^2(a, c)]_+`` (``b`` closer to ``a`` than ``c``).

    Args:
      M: ``[d, d]``.
      d_ab: ``[n, d]`` differences ``x_a - x_b`` (should be close).
      d_ac: ``[n, d]`` differences ``x_a - x_c`` (should be far).
      margin: margin (> 0 avoids the trivial ``M = 0``).

    Returns:
      scalar.

    Raises:
      ValueError: ``d_ab``, ``d_ac`` not both ``[n, d]`` with ``n >= 1`` for a ``[d, d]`` ``M``.

    Reference: Schultz & Joachims, NIPS 2003; Weinberger & Saul (LMNN), JMLR 2009.
    """
    _check_triplets(M, d_ab, d_ac)
    check_hyper(margin=margin)
    gap = jax.vmap(_triplet_margin_one, in_axes=(None, 0, 0))(M, d_ab, d_ac)
    return jnp.mean(jnp.maximum(margin + gap, 0.0))


def triplet_logistic_loss(
    M: jax.Array, d_ab: jax.Array, d_ac: jax.Array, *, margin=0.0
) -> jax.Array:
    """Mean logistic triplet loss ``log(1 + exp(margin + d_M^2(a, b) - d_M^2(a, c)))`` (smooth hinge).

    Computed with ``softplus``, finite for any gap.

    Args:
      M: ``[d, d]``.
      d_ab: ``[n, d]`` differences ``x_a - x_b``.
      d_ac: ``[n, d]`` differences ``x_a - x_c``.
      margin: shift of the gap.

    Returns:
      scalar.

    Raises:
      ValueError: ``d_ab``, ``d_ac`` not both ``[n, d]`` with ``n >= 1`` for a ``[d, d]`` ``M``.
    """
    _check_triplets(M, d_ab, d_ac)
    check_hyper(margin=margin)
    gap = jax.vmap(_triplet_margin_one, in_axes=(None, 0, 0))(M, d_ab, d_ac)
    return jnp.mean(jax.nn.softplus(margin + gap))


# ----------------------------------------------------------------------------------------------------
# the shared loop


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Static description of the smooth part ``f(x, *args) + lam * R(to_metric(x), **reg_kw)``."""

    objective: Callable
    regularizer: Callable | None
    factored: bool
    # hashable (name, type, value) keywords of the regularizer compiled into the program
    reg_static: tuple = ()

    def value(self, x, args, reg_kw, lam):
        val = self.objective(x, *args)
        if self.regularizer is not None:
            M = x.T @ x if self.factored else x
            static = {key: value for key, _, value in self.reg_static}
            val = val + lam * self.regularizer(M, **reg_kw, **static)
        return val


class _State(NamedTuple):
    it: jax.Array
    x: jax.Array
    f: jax.Array
    g: jax.Array
    t: jax.Array
    informed: (
        jax.Array
    )  # t comes from curvature (Barzilai-Borwein) or from an earlier failed search
    t_max: jax.Array  # the largest step a line search has accepted (the stationarity test's step)
    opt_state: Any
    done: jax.Array
    converged: jax.Array
    hist: dict


_ARMIJO = 1e-4  # fraction of the model decrease a step must achieve (Birgin, Martinez & Raydan)


def _next_trial_step(dx, dg, t):
    """First step the next line search tries: Barzilai-Borwein's ``<s, s> / <s, y>``, else ``2 t``.

    ``s = x_{k+1} - x_k`` and ``y = g_{k+1} - g_k`` (the spectral projected gradient of Birgin,
    Martinez & Raydan, SIAM J. Optim. 2000): the inverse of the curvature along the last step, so the
    search usually accepts its first trial instead of halving down from twice the last step. Where the
    curvature is not positive (or the quotient not finite) it falls back to doubling the last step.
    """
    ss = jnp.sum(dx * dx)
    sy = jnp.sum(dx * dg)
    bb = ss / jnp.where(sy > 0, sy, 1.0)
    ok = (sy > 0) & (ss > 0) & jnp.isfinite(bb)
    return jnp.clip(jnp.where(ok, bb, 2.0 * t), 1e-30, 1e12), ok


def _l1_value(x, w, diagonal):
    A = jnp.abs(x)
    if not diagonal:
        A = A * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))
    return w * jnp.sum(A)


@functools.partial(
    jax.jit,
    static_argnames=(
        "problem",
        "optimizer",
        "project",
        "max_iter",
        "max_backtracks",
        "l1_diagonal",
    ),
)
def _run(
    x0,
    args,
    reg_kw,
    lam,
    tol,
    min_eigenvalue,
    step_size,
    l1_weight,
    *,
    problem: _Problem,
    optimizer,
    project,
    max_iter: int,
    max_backtracks: int,
    l1_diagonal: bool,
):
    dtype = x0.dtype

    def proj(x):
        if callable(project):
            return project(x, min_eigenvalue)
        return _project_psd(x, min_eigenvalue) if project else x

    def smooth(x):
        return problem.value(x, args, reg_kw, lam)

    def total(x, f_smooth):
        # the L1 term (weight possibly zero) is handled by its prox, not by the gradient
        return f_smooth + _l1_value(x, l1_weight, l1_diagonal)

    def prox(x, t):
        return soft_threshold(x, t * l1_weight, offdiagonal=not l1_diagonal)

    value_and_grad = jax.value_and_grad(smooth)
    x0 = proj(x0)
    f0, g0 = value_and_grad(x0)
    x0_norm = jnp.sqrt(jnp.sum(x0 * x0))
    g0_norm = jnp.sqrt(jnp.sum(g0 * g0))
    eps10 = 10.0 * jnp.finfo(dtype).eps
    # the stationarity test's step is never shorter than the caller's step_size capped at the step
    # moving x0 by its own norm (inf for a zero gradient at the start): steps found by halving at a
    # hinge's kink are short because the objective is not smooth there, not because it is curved,
    # and a warm start at a kink accepted only such steps (a test with them passed anywhere). The
    # price: a warm start at a smooth optimum of curvature >> 1 / step_size is only judged
    # stationary to float's resolution times curvature * step_size (pass a matching step_size)
    own_step = jnp.where(g0_norm > 0, x0_norm / jnp.where(g0_norm > 0, g0_norm, 1.0), jnp.inf)
    tau_floor = jnp.minimum(step_size, own_step)

    def stationary(x, g, t_max):
        """First-order optimality, scale-free: the projected (prox) gradient step of length ``tau``
        moves ``x`` by at most ``sqrt(tol) ||x||``. ``tau`` is the largest step the line search
        has accepted (the problem's inverse curvature, in its units; a start at the optimum keeps
        the caller's ``step_size``), or for an optax optimizer ``||x|| / ||g_0||`` (in the
        interior ``||g|| <= sqrt(tol) ||g_0||``; for a quadratic the precision of a relative
        objective change of ``tol``). For the line search ``tau`` is at least ``tau_floor``, the
        caller's ``step_size`` capped at ``||x_0|| / ||g_0||``: a warm start at a hinge's kink
        accepts only steps shortened by halving, which measure the kink, not a curvature. A small
        change of the objective alone also follows from a step that is merely short (a tiny
        Barzilai-Borwein step near a LogDet boundary, halvings stuck at a hinge's kink, an optax
        learning rate too small)."""
        scale = jnp.maximum(jnp.sqrt(jnp.sum(x * x)), x0_norm)
        if optimizer is None:  # no step accepted yet (every search failed): the caller's first
            tau = jnp.maximum(jnp.where(t_max > 0, t_max, step_size), tau_floor)
        else:
            tau = scale / jnp.where(g0_norm > 0, g0_norm, 1.0)
        r = x - proj(prox(x - tau * g, tau))
        # below float's resolution of the objective (tol < eps) the gradient is only known to
        # about sqrt(eps) of its start
        floor = jnp.sqrt(jnp.maximum(tol, 10.0 * jnp.finfo(dtype).eps))
        return jnp.sqrt(jnp.sum(r * r)) <= floor * scale

    nan = jnp.full((max_iter,), jnp.nan, dtype)
    hist = {"objective": nan, "grad_norm": nan, "step": nan, "step_size": nan}
    opt_state = None if optimizer is None else optimizer.init(x0)
    state = _State(
        it=jnp.asarray(0, jnp.int32),
        x=x0,
        f=f0,
        g=g0,
        t=jnp.asarray(step_size, dtype),
        informed=jnp.asarray(False),
        t_max=jnp.asarray(0.0, dtype),
        opt_state=opt_state,
        done=~(jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))),
        converged=jnp.asarray(False),
        hist=hist,
    )

    def line_search(x, f, g, t0):
        """Backtrack from ``t0`` until the Armijo condition holds."""

        h = total(x, 0.0)  # the L1 part at x, once per search
        F = f + h

        def candidate(t):
            x_new = proj(prox(x - t * g, t))
            f_new = smooth(x_new)
            h_new = total(x_new, 0.0)
            # Armijo on the composite objective along the projected (prox) step: the model decrease
            # <g, dx> + h(x_new) - h(x) is <= -||dx||^2 / t < 0 for any prox/projection step
            decrease = jnp.sum(g * (x_new - x)) + h_new - h
            ok = jnp.isfinite(f_new) & (
                f_new + h_new <= F + _ARMIJO * decrease + 1e-12 * jnp.abs(F)
            )
            return x_new, f_new, ok

        def cond(c):
            k, _, _, _, ok = c
            return (~ok) & (k < max_backtracks)

        def body(c):
            k, t, _, _, _ = c
            t = 0.5 * t
            x_new, f_new, ok = candidate(t)
            return k + 1, t, x_new, f_new, ok

        x_new, f_new, ok = candidate(t0)
        _, t, x_new, f_new, ok = jax.lax.while_loop(cond, body, (0, t0, x_new, f_new, ok))
        return x_new, f_new, t, ok

    def body(s: _State) -> _State:
        grad_ok = jnp.all(jnp.isfinite(s.g))
        xnorm_old = jnp.sqrt(jnp.sum(s.x * s.x))
        gnorm = jnp.sqrt(jnp.sum(s.g * s.g))
        if optimizer is None:
            # an uninformed first trial that cannot move x at machine precision (step_size far too
            # small for the problem's scale) starts instead from the step moving x by its own norm
            tiny_step = ~s.informed & (s.t * gnorm <= eps10 * xnorm_old) & (gnorm > 0)
            t0 = jnp.where(tiny_step, xnorm_old / jnp.where(gnorm > 0, gnorm, 1.0), s.t)
            x_try, _, t, ok = line_search(s.x, s.f, s.g, t0)
            opt_state = s.opt_state
            # a failed search (no decrease at any tested step) keeps x; it means convergence only
            # when its smallest trial step was already at machine precision (below), else the
            # next search resumes halving from where this one stopped
            x_new = jnp.where(ok, x_try, s.x)
            dx_try = jnp.sqrt(jnp.sum((x_try - s.x) ** 2))
        else:
            updates, opt_state = optimizer.update(s.g, s.opt_state, s.x)
            x_new = proj(optax.apply_updates(s.x, updates))
            t = jnp.asarray(jnp.nan, dtype)
            ok = jnp.asarray(True)
        f_new, g_new = value_and_grad(x_new)
        if optimizer is None:
            t_bb, bb_ok = _next_trial_step(x_new - s.x, g_new - s.g, t)
            t_next = jnp.where(ok, t_bb, 0.5 * t)
            informed = jnp.where(ok, bb_ok, True)
            # a step accepted at the first trial of an uninformed step size (the caller's
            # step_size, or a doubling) may just be far too short for the problem's scale: a
            # small change or a tiny step then says nothing about convergence
            trusted = s.informed | (t < t0) | ~ok
        else:
            t_next = s.t
            informed = s.informed
            trusted = jnp.asarray(True)
        F_old = total(s.x, s.f)
        F_new = total(x_new, f_new)
        dx = jnp.sqrt(jnp.sum((x_new - s.x) ** 2))
        xnorm = jnp.maximum(jnp.sqrt(jnp.sum(x_new * x_new)), xnorm_old)
        # no progress possible at machine precision, relative to the size of x (scale-free)
        resolution = eps10 * xnorm
        if optimizer is None:
            stalled = jnp.where(ok, dx, dx_try) <= resolution
            # a zero step is conclusive without an informed step size when the gradient is zero, or
            # when the plain gradient step was resolvable and the projection/prox undid it (an
            # optimum on the boundary of the cone)
            stalled = stalled & (trusted | (gnorm == 0) | (t * gnorm > resolution))
        else:
            stalled = dx <= resolution
        denom = jnp.maximum(jnp.maximum(jnp.abs(F_old), jnp.abs(F_new)), jnp.finfo(dtype).tiny)
        small_change = ok & (jnp.abs(F_new - F_old) <= tol * denom)
        finite = jnp.isfinite(F_new) & grad_ok
        # converged: the objective stopped changing (or x cannot move at machine precision) and x is
        # stationary; the optimality test (one more projection) runs only then
        if optimizer is None:
            t_max = jnp.where(ok, jnp.maximum(s.t_max, t), s.t_max)
        else:
            t_max = s.t_max
        settled = finite & (stalled | (trusted & small_change))
        converged = jax.lax.cond(
            settled, lambda: stationary(x_new, g_new, t_max), lambda: jnp.asarray(False)
        )
        # a line search that cannot move x stops there, converged or not (a hinge's kink); an optax
        # optimizer keeps going (its step may be a schedule's)
        stop = converged | ~finite | (stalled & finite if optimizer is None else False)
        i = s.it
        hist = {
            # in the dtype of x (a float64 objective of float32 M0 was cast implicitly, a FutureWarning)
            "objective": s.hist["objective"].at[i].set(F_new.astype(dtype)),
            "grad_norm": s.hist["grad_norm"].at[i].set(gnorm.astype(dtype)),
            "step": s.hist["step"].at[i].set(dx.astype(dtype)),
            "step_size": s.hist["step_size"].at[i].set(t.astype(dtype)),
        }
        keep = finite
        return _State(
            it=i + 1,
            x=jnp.where(keep, x_new, s.x),
            f=jnp.where(keep, f_new, s.f),
            g=jnp.where(keep, g_new, s.g),
            t=t_next.astype(dtype),
            informed=informed,
            t_max=t_max.astype(dtype),
            opt_state=opt_state,
            done=stop,
            converged=converged,
            hist=hist,
        )

    def cond(s: _State):
        return (s.it < max_iter) & ~s.done

    final = jax.lax.while_loop(cond, body, state)
    return final.x, final.it, final.converged, final.hist


def _check_float(value, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        if is_traced(value):
            return value
        # a concrete 0-d real array (jnp.asarray(0.5), np.array(0.5)) is a number too
        dtype = getattr(value, "dtype", None)
        if not (
            getattr(value, "ndim", None) == 0
            and dtype is not None
            and (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))
        ):
            raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    bad = (value <= minimum) if strict else (value < minimum)
    if not np.isfinite(value) or bad:
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {op} {minimum}, got {value!r}")
    return value


def _check_finite_leaves(tree, name: str) -> None:
    """``ValueError`` for a concrete floating array holding NaN/inf in ``args``/``regularizer_kwargs``.

    Inside ``jit`` NaN data would only stop the loop at iteration 0 (``converged=False``), silently.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if is_traced(leaf) or not hasattr(leaf, "dtype"):
            continue
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(np.all(np.isfinite(leaf))):
            where = f"{name}{jax.tree_util.keystr(path)}"
            raise ValueError(f"{where} contains NaN or infinite values (shape {tuple(leaf.shape)})")


_STATIC_KWARG = (bool, int, str, np.bool_, np.integer, type(None))


def _split_kwargs(reg_kw: dict) -> tuple[dict, tuple]:
    """``regularizer_kwargs`` as (array keywords, traced by ``jit``; static keywords, hashable).

    Python bools, ints, strings and None (options such as ``offdiagonal=True``) are passed to the
    regularizer as they are, compiled into the program: traced, ``l1``'s flag check refused them. A
    list or tuple of numbers (``X`` given as a list) becomes an array; other values (arrays, floats,
    pytrees of arrays) are traced as before.
    """
    arrays, static = {}, []
    for key, value in reg_kw.items():
        if isinstance(value, _STATIC_KWARG):
            static.append((key, type(value), value))
            continue
        if isinstance(value, list | tuple):
            arr = np.asarray(value)
            if arr.dtype.kind in "biuf":
                value = jnp.asarray(arr)
        arrays[key] = value
    return arrays, tuple(sorted(static, key=lambda item: item[0]))


def _check_project(project, x0, min_eigenvalue) -> None:
    """``ValueError`` unless ``project(M, min_eigenvalue)`` returns an array of ``M``'s shape and dtype
    (checked once on abstract values, no computation)."""
    out = jax.eval_shape(project, x0, jnp.asarray(min_eigenvalue, x0.dtype))
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != x0.shape or dtype != x0.dtype:
        got = f"{tuple(shape)} {dtype}" if shape is not None else type(out).__name__
        raise ValueError(
            f"project must return an array of M's shape and dtype {tuple(x0.shape)} {x0.dtype}, "
            f"got {got}"
        )


def _probe_regularizer(reg, x0, reg_kw, reg_static, factored: bool) -> None:
    """Evaluate the regularizer once on concrete inputs, so its own boundary checks run.

    Inside the solver's ``jit`` the keyword arrays are traced and e.g. the LogDet prior's positive
    definiteness check is skipped: a non-PD prior would make every objective value NaN/inf and stop the
    loop at iteration 0 without an error.
    """
    if is_traced(x0) or any(is_traced(v) for v in jax.tree_util.tree_leaves(reg_kw)):
        return
    M = x0.T @ x0 if factored else x0
    try:
        reg(M, **reg_kw, **{key: value for key, _, value in reg_static})
    except TypeError as err:
        name = getattr(reg, "__name__", repr(reg))
        raise ValueError(
            f"regularizer {name} does not accept regularizer_kwargs {sorted(reg_kw)} for a "
            f"{tuple(M.shape)} metric: {err}"
        ) from err


def _solve(
    objective,
    x0,
    *,
    factored,
    args,
    regularizer,
    regularizer_kwargs,
    lam,
    optimizer,
    max_iter,
    tol,
    project,
    min_eigenvalue,
    step_size,
    max_backtracks,
    l1_prox,
    l1_diagonal,
) -> SolverResult:
    if not callable(objective):
        raise ValueError(
            f"objective must be a callable objective(M, *args) -> scalar, got {objective!r}"
        )
    reg = None if regularizer is None else get_regularizer(regularizer)
    reg_kw = check_kwargs(regularizer_kwargs, "regularizer_kwargs")
    if not callable(project):  # a string "False" is truthy: it projected
        check_flags(project=project)
    check_flags(l1_diagonal=l1_diagonal)
    if reg is None and reg_kw:
        raise ValueError("regularizer_kwargs given without a regularizer")
    lam = _check_float(lam, "lam")
    if reg is None and isinstance(lam, float) and lam > 0:
        raise ValueError(
            f"lam={lam!r} given without a regularizer: it weights lam * R(M) and would be ignored "
            "(pass regularizer=..., or lam=0)"
        )
    tol = _check_float(tol, "tol")
    min_eigenvalue = _check_float(min_eigenvalue, "min_eigenvalue")
    step_size = _check_float(step_size, "step_size", strict=True)
    l1_prox = _check_float(l1_prox, "l1_prox")
    max_iter = check_positive_int(max_iter, "max_iter")
    max_backtracks = check_positive_int(max_backtracks, "max_backtracks")
    if isinstance(optimizer, str):
        if optimizer != "line_search":
            raise ValueError(
                f"unknown optimizer {optimizer!r}; valid: 'line_search' or an optax.GradientTransformation"
            )
        opt = None
    elif isinstance(optimizer, optax.GradientTransformation):
        opt = optimizer
        if not isinstance(l1_prox, float) or l1_prox > 0:
            raise ValueError("l1_prox needs optimizer='line_search' (the prox needs the step size)")
    else:
        raise ValueError(
            f"optimizer must be 'line_search' or an optax.GradientTransformation, got {optimizer!r}"
        )
    if not isinstance(args, tuple):
        raise ValueError(
            f"args must be a tuple of extra objective arguments, got {type(args).__name__}"
        )
    _check_finite_leaves(args, "args")
    reg_kw, reg_static = _split_kwargs(reg_kw)
    _check_finite_leaves(reg_kw, "regularizer_kwargs")
    if reg is not None:
        _probe_regularizer(reg, x0, reg_kw, reg_static, factored)
    if callable(project):
        _check_project(project, x0, min_eigenvalue)
    problem = _Problem(
        objective=objective, regularizer=reg, factored=factored, reg_static=reg_static
    )
    x, n_iter, converged, hist = _run(
        x0,
        args,
        reg_kw,
        jnp.asarray(lam, x0.dtype),
        jnp.asarray(tol, x0.dtype),
        jnp.asarray(min_eigenvalue, x0.dtype),
        jnp.asarray(step_size, x0.dtype),
        jnp.asarray(l1_prox, x0.dtype),
        problem=problem,
        optimizer=opt,
        project=project if callable(project) else (bool(project) and not factored),
        max_iter=max_iter,
        max_backtracks=max_backtracks,
        l1_diagonal=bool(l1_diagonal),
    )
    if not is_traced(n_iter):
        k = int(n_iter)
        if k == 0:  # max_iter >= 1: the loop stops before its first step only at a non-finite start
            start = "L0" if factored else "M0"
            raise ValueError(
                f"the objective or its gradient is not finite at the starting point {start} (shape "
                f"{tuple(x0.shape)}): nothing to minimise from there. Check the data in args, and "
                "that the regularizer is finite at the start (e.g. 'logdet' needs a positive "
                "definite M: with factored_gradient, an L of full rank d)"
            )
        hist = {name: h[:k] for name, h in hist.items()}
    return SolverResult(x, n_iter, converged, hist)


def projected_gradient(
    objective: Callable[..., jax.Array],
    M0,
    *,
    args: tuple = (),
    regularizer: str | Callable | None = None,
    regularizer_kwargs: dict | None = None,
    lam: float = 0.0,
    optimizer: str | optax.GradientTransformation = "line_search",
    max_iter: int = 500,
    tol: float = 1e-6,
    project: bool | Callable[[jax.Array, jax.Array], jax.Array] = True,
    min_eigenvalue: float = 0.0,
    step_size: float = 1.0,
    max_backtracks: int = 40,
    l1_prox: float = 0.0,
    l1_diagonal: bool = False,
) -> SolverResult:
    """Minimise ``objective(M, *args) + lam * R(M) + l1_prox * |M|_1`` over ``{M ⪰ min_eigenvalue I}``.

    Each iteration: gradient ``g`` of the smooth part; candidate ``M+ = P(S(M - t g, t * l1_prox))``
    (``S`` soft-thresholding, ``P`` PSD projection); for ``optimizer="line_search"`` the step ``t``
    starts at ``step_size``, later at the Barzilai-Borwein step ``<s, s> / <s, y>`` of the last move
    (twice the last step where the curvature is not positive), and halves until the Armijo test
    ``F(M+) <= F(M) + 1e-4 (<g, M+ - M> + h(M+) - h(M))`` holds (``h`` the L1 part); for an optax
    optimizer ``M+ = P(M + update)``. Stops, converged, when ``|F+ - F| <= tol max(|F|, |F+|)`` (``F``
    the full objective) or the step is zero at machine precision relative to ``||M||``, and ``M`` is
    stationary: the projected (prox) gradient step of length ``tau`` moves it by at most
    ``sqrt(max(tol, 10 eps)) ||M||``, with ``tau`` the largest step a line search has accepted (the
    problem's inverse curvature; ``step_size`` until one is), or for an optax optimizer
    ``||M|| / ||g_0||`` (in the interior ``||g|| <= sqrt(tol) ||g_0||``). A small change alone also
    follows from a step that is merely short (a tiny Barzilai-Borwein step near a LogDet boundary, an
    optax learning rate too small), and for the line search the change counts only once the step
    size is informed (a Barzilai-Borwein step, or one found by halving), not the uninformed first
    trial (``step_size``, or a doubling). A line search that finds no decrease within
    ``max_backtracks`` halvings keeps ``M``; the next one resumes halving where it stopped. A line
    search that cannot move ``M`` at machine precision stops, converged only if ``M`` is stationary:
    a non-smooth objective (a hinge) can stall at a kink short of its optimum (``converged=False``).
    Also stops at ``max_iter``, or when the objective or gradient becomes non-finite (not converged,
    the last finite iterate is returned).

    Args:
      objective: JAX function ``objective(M, *args) -> scalar`` (e.g. built from
        :func:`pair_hinge_loss`). Pass data via ``args`` so repeated calls reuse the compiled loop.
      M0: ``[d, d]`` starting matrix (projected first when ``project``).
      args: extra arrays for ``objective``.
      regularizer: name in :data:`metriclearn.regularizers.REGULARIZERS` or a callable ``R(M, **kw)``.
      regularizer_kwargs: dict of keyword arrays for the regularizer (``{"M0": prior}`` for
        ``"logdet"``, ``{"X": X, "W": W}`` for ``"laplacian"``), or None.
      lam: regularization weight ``>= 0``.
      optimizer: ``"line_search"`` or an ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-2)``).
      max_iter: iteration cap (also the history buffer length).
      tol: relative tolerance of the stopping test.
      project: project onto the PSD cone after every step (a bool, or a callable; False: plain
        (proximal) gradient descent;
        a callable ``project(M, min_eigenvalue) -> M``: projection onto another convex set, e.g.
        non-negative diagonal matrices; pass a module-level function so the loop compiles once).
      min_eigenvalue: eigenvalue floor of the projection (> 0 keeps ``M`` positive definite, e.g. with
        a LogDet term).
      step_size: first line-search trial step (later searches start from the Barzilai-Borwein step).
      max_backtracks: halvings per line search.
      l1_prox: weight of an entrywise L1 penalty handled exactly by soft-thresholding (line search only).
      l1_diagonal: whether that penalty includes the diagonal (default: off-diagonal, as graphical
        lasso); a bool.

    Returns:
      :class:`SolverResult` ``(M, n_iter, converged, history)``; ``M`` is symmetric PSD when ``project``.

    Raises:
      ValueError: non-square/non-finite ``M0``, unknown regularizer/optimizer names, bad numbers,
        ``regularizer_kwargs`` not a dict (or None), ``project`` / ``l1_diagonal`` not a bool (a string
        ``"False"`` is truthy), an objective that is not finite at the (projected) start.

    Example::

        res = projected_gradient(
            pair_hinge_loss_objective, jnp.eye(d), args=(S, D),
            regularizer="frobenius", lam=1e-3)

    Reference: Xing et al., NIPS 2002; Beck & Teboulle, 2009.
    """
    M0 = check_array(M0, "M0", ndim=2)
    if M0.shape[0] != M0.shape[1] or M0.shape[0] == 0:
        raise ValueError(f"M0 must be a non-empty square matrix, got shape {tuple(M0.shape)}")
    return _solve(
        objective,
        M0,
        factored=False,
        args=args,
        regularizer=regularizer,
        regularizer_kwargs=regularizer_kwargs,
        lam=lam,
        optimizer=optimizer,
        max_iter=max_iter,
        tol=tol,
        project=project,
        min_eigenvalue=min_eigenvalue,
        step_size=step_size,
        max_backtracks=max_backtracks,
        l1_prox=l1_prox,
        l1_diagonal=l1_diagonal,
    )


def factored_gradient(
    objective_L: Callable[..., jax.Array],
    L0,
    *,
    args: tuple = (),
    regularizer: str | Callable | None = None,
    regularizer_kwargs: dict | None = None,
    lam: float = 0.0,
    optimizer: str | optax.GradientTransformation = "line_search",
    max_iter: int = 500,
    tol: float = 1e-6,
    step_size: float = 1.0,
    max_backtracks: int = 40,
) -> SolverResult:
    """Minimise ``objective_L(L, *args) + lam * R(L^T L)`` over ``L`` in ``R^{k x d}`` (no projection).

    ``M = L^T L`` is PSD by construction and has rank ``<= k``: no ``eigh`` per step, so this scales to
    large ``d``. Non-convex in ``L`` (local minima possible), same loop, stopping test and history as
    :func:`projected_gradient`.

    Args:
      objective_L: ``objective_L(L, *args) -> scalar``.
      L0: ``[k, d]`` starting factor.
      args, regularizer, regularizer_kwargs, lam, optimizer, max_iter, tol, step_size,
        max_backtracks: as in :func:`projected_gradient` (the regularizer sees ``M = L^T L``).

    Returns:
      :class:`SolverResult` with ``M`` holding the factor ``L [k, d]``.

    Raises:
      ValueError: as :func:`projected_gradient`; e.g. ``regularizer="logdet"`` with ``k < d`` (``L^T L``
        is singular, the divergence infinite at the start).

    Example::

        res = factored_gradient(lambda L, D: triplet_hinge_loss(L.T @ L, *D), L0, args=((dab, dac),))
        M = res.M.T @ res.M
    """
    L0 = check_array(L0, "L0", ndim=2, min_rows=1)
    if L0.shape[1] == 0:
        raise ValueError(f"L0 must have at least one column, got shape {tuple(L0.shape)}")
    return _solve(
        objective_L,
        L0,
        factored=True,
        args=args,
        regularizer=regularizer,
        regularizer_kwargs=regularizer_kwargs,
        lam=lam,
        optimizer=optimizer,
        max_iter=max_iter,
        tol=tol,
        project=False,
        min_eigenvalue=0.0,
        step_size=step_size,
        max_backtracks=max_backtracks,
        l1_prox=0.0,
        l1_diagonal=True,  # no L1 term here, and a [k, d] factor has no diagonal to mask out
    )
