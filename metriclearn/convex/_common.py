"""Shared pieces of the supervised convex learners: the fit result, input checks and initialisation.

Every supervised learner in :mod:`metriclearn.convex` returns a :class:`FitResult` holding the
learned linear map ``L`` (``[k, d]``, so that ``M = L^T L``), and starts iterative optimisation from
:func:`init_components`, which follows scikit-learn's ``NeighborhoodComponentsAnalysis`` rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn._validation import (
    as_key,
    check_array,
    check_choice,
    check_labels,
    check_positive_int,
    is_traced,
    require_concrete,
)

INITS = ("auto", "pca", "lda", "identity", "random")


class FitResult(NamedTuple):
    """Outcome of a supervised fit.

    Attributes:
      components: ``[k, d]`` linear map ``L``; the learned metric is ``M = L^T L``.
      n_iter: number of optimiser iterations run (0 for closed-form learners).
      converged: whether the stopping criterion was met (True for closed-form learners).
      objective: final objective value (learner specific; NaN-free by construction).
    """

    components: jax.Array
    n_iter: int
    converged: bool
    objective: float


def in_float64(fit: Callable) -> Callable:
    """Run a closed-form fit ``fit(X, ...)`` in float64 (x64 enabled for the call); its arrays come
    back in the dtype ``X`` would have had.

    These fits are one pass over the data and a ``d x d`` eigenproblem, cheap in float64, and float32
    spoils them on features of very different scales (raw wine, variances spanning 1e8): RCA took the
    within-chunklet covariance for singular and LFDA's local scatter lost its small features (3-NN
    accuracy .72 and .75 against .97 and .85). Traced inputs (inside ``jit``) keep their dtype; the
    fits that check their data on the host refuse them (:func:`metriclearn._validation.require_concrete`).
    """

    @functools.wraps(fit)
    def wrapper(X, *args, **kwargs):
        if (
            jax.config.jax_enable_x64
            or is_traced(X)
            or any(is_traced(a) for a in (*args, *kwargs.values()))
        ):
            return fit(X, *args, **kwargs)
        dtype = check_array(X, "X").dtype  # its checks and messages, before the float64 copy
        with jax.enable_x64(True):
            out = fit(np.asarray(X, dtype=np.float64), *args, **kwargs)
            return jax.tree.map(
                lambda a: (
                    jnp.asarray(np.asarray(a), dtype)
                    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)
                    else a
                ),
                out,
            )

    return wrapper


def centred(X_raw, X: jax.Array) -> jax.Array:
    """Validated ``X [n, d]`` minus its column mean (taken in float64 on ``X_raw`` when concrete).

    NCA, LMNN and MLKR depend on differences of points only, but their squared distances
    ``|z_i|^2 + |z_j|^2 - 2 z_i . z_j`` cancel catastrophically in float32 far from the origin (iris
    moved by 1e4: NCA's loss at ``L = I`` was -53 instead of -126, LMNN's 132 instead of 4.0).
    Centring before the cast to ``X.dtype`` removes the common offset; traced inputs are centred in
    their own dtype (differentiable, and the objectives' gradients are unchanged).
    """
    if is_traced(X_raw) or is_traced(X):
        return X - jnp.mean(X, axis=0)
    A = np.asarray(X_raw, dtype=np.float64)
    return jnp.asarray(A - A.mean(axis=0), X.dtype)


def tuple_differences(
    raw, T: jax.Array, index_pairs: Sequence[tuple[int, int]], *, host: bool = False
) -> tuple:
    """Differences ``T[:, i] - T[:, j]`` of validated tuples ``T [n, k, d]`` (taken in float64 on
    ``raw``, the caller's array, when concrete).

    The weakly supervised learners (ITML, SDML, MMC, LSML, SCML) see the points only through such
    differences. Formed after the cast to float32 they lose their digits far from the origin (points
    near 1e5 are rounded to multiples of ~0.0078, so pairs 0.01 apart got differences of 0 or
    0.0156); formed in float64 on ``raw`` and then cast, they are exact up to one rounding. Traced
    inputs are differenced in their own dtype.

    Args:
      raw: the caller's ``[n, k, d]`` tuples (array-like), before validation.
      T: ``raw`` validated (e.g. by :func:`metriclearn.constraints.check_pairs`); gives the dtype.
      index_pairs: the ``(i, j)`` tuple positions to difference.
      host: return float64 NumPy arrays (for host-side scatter matrices); needs concrete inputs.

    Returns:
      one ``[n, d]`` array per ``(i, j)``: ``jax.Array`` of ``T.dtype``, or float64 NumPy with ``host``.
    """
    if is_traced(raw) or is_traced(T):
        if host:
            require_concrete("tuple_differences", raw, T)
        return tuple(T[:, i] - T[:, j] for i, j in index_pairs)
    A = np.asarray(raw, dtype=np.float64)
    diffs = tuple(A[:, i] - A[:, j] for i, j in index_pairs)
    if host:
        return diffs
    return tuple(jnp.asarray(v, T.dtype) for v in diffs)


def check_finite_objective(
    value: float, X: jax.Array, name: str, what: str = "X", at: str = "the initial map"
) -> None:
    """Raise ``ValueError`` when a fit ends with a non-finite objective: the solvers only accept
    finite steps, so the objective at the initial map overflowed (the data's scale is too large)."""
    if not np.isfinite(value):
        scale = float(jnp.max(jnp.abs(X)))
        raise ValueError(
            f"{name}: the objective at {at} is not finite ({value}) in {X.dtype}: the "
            f"squares of {what} overflow (largest |x - mean(x)| of X: {scale:.3g}); rescale "
            f"(e.g. sklearn.preprocessing.StandardScaler) or enable float64 (jax.enable_x64)"
        )


def checked_objective(value: jax.Array, X: jax.Array, name: str, what: str = "X") -> jax.Array:
    """``value`` of a public objective function; ``ValueError`` (via :func:`check_finite_objective`)
    when it is concrete and not finite. Traced values (under ``jit`` / ``grad``) pass unchecked."""
    if not is_traced(value):
        check_finite_objective(float(value), X, name, what, at="L")
    return value


def check_Xy(
    X,
    y,
    *,
    min_per_class: int = 1,
    min_classes: int = 2,
    name_X: str = "X",
    name_y: str = "y",
) -> tuple[jax.Array, np.ndarray, int]:
    """Validate a labelled data set at a public boundary.

    Args:
      X: ``[n, d]`` finite features.
      y: ``[n]`` labels of any hashable dtype.
      min_per_class: every class must have at least this many samples (e.g. ``n_neighbors + 1``).
      min_classes: minimum number of distinct classes.
      name_X, name_y: argument names used in error messages.

    Returns:
      ``(X, codes, n_classes)``: ``X`` as a floating ``jax.Array``, ``codes`` an ``int32`` NumPy
      array of class indices ``0..C-1`` and ``C``.

    Raises:
      ValueError: wrong ranks, NaN/inf, ``len(y) != len(X)``, too few classes or samples per class.
    """
    X = check_array(X, name_X, ndim=2, min_rows=2, min_features=1)
    codes = check_labels(y, X.shape[0], name=name_y, min_classes=min_classes)
    counts = np.bincount(codes)
    n_classes = int(counts.shape[0])
    if min_per_class > 1 and counts.min() < min_per_class:
        worst = int(np.argmin(counts))
        raise ValueError(
            f"every class in {name_y} needs at least {min_per_class} samples, but class index "
            f"{worst} has {int(counts[worst])} (class sizes: {counts.tolist()[:10]})"
        )
    return X, codes, n_classes


def check_n_components(n_components, n_features: int) -> int:
    """Return ``n_components`` (``None`` -> ``n_features``), or raise unless ``1 <= k <= d``."""
    if n_components is None:
        return int(n_features)
    k = check_positive_int(n_components, "n_components")
    if k > n_features:
        raise ValueError(
            f"n_components={k} is larger than the number of features d={n_features}; "
            f"choose 1 <= n_components <= {n_features}"
        )
    return k


def resolve_init(init, *, n_components: int, n_features: int, n_samples: int, n_classes: int):
    """Resolve ``init="auto"`` with scikit-learn's NCA rule; return the name or the array unchanged.

    ``auto`` picks ``"lda"`` when ``k <= min(d, C - 1)``, else ``"pca"`` when ``k < min(d, n)``,
    else ``"identity"``.
    """
    if not isinstance(init, str):
        return init
    check_choice(init, "init", INITS)
    if init != "auto":
        return init
    if n_components <= min(n_features, n_classes - 1):
        return "lda"
    if n_components < min(n_features, n_samples):
        return "pca"
    return "identity"


def generalized_eigh(A: jax.Array, B: jax.Array, *, rtol: float | None = None):
    """Solve ``A v = mu B v`` for symmetric ``A`` and PSD, possibly singular ``B``; stable.

    ``B`` is regularised by flooring its eigenvalues at ``rtol * max(eig(B))`` (equivalently
    solving with ``B + floor`` on its null space), then ``A`` is whitened by ``B^{-1/2}`` and the
    ordinary symmetric problem is solved. The result is always real and finite, also when ``B``
    is rank deficient (constant features), where ``scipy.linalg.eigh(A, B)`` fails.

    Args:
      A: ``[d, d]`` symmetric.
      B: ``[d, d]`` symmetric PSD.
      rtol: relative eigenvalue floor; default ``sqrt(eps)`` of the dtype (1e-8 in float64 is too
        small to be meaningful in float32, hence dtype dependent).

    Returns:
      ``(mu [d], V [d, d])`` with eigenvalues descending and columns ``V[:, i]`` normalised so that
      ``V^T B_reg V = I``.
    """
    dtype = A.dtype
    if rtol is None:
        rtol = float(np.sqrt(np.finfo(dtype).eps)) * 10.0
    A = 0.5 * (A + A.T)
    B = 0.5 * (B + B.T)
    lam, U = jnp.linalg.eigh(B)
    # B = 0 (e.g. LDA's within-class scatter when every class is one point) is floored at rtol * I
    top = jnp.where(lam[-1] > 0, lam[-1], 1.0)
    lam = jnp.maximum(lam, rtol * top)
    W = U / jnp.sqrt(lam)[None, :]
    C = W.T @ A @ W
    C = 0.5 * (C + C.T)
    mu, Q = jnp.linalg.eigh(C)
    order = jnp.argsort(-mu)
    return mu[order], (W @ Q)[:, order]


def _lda_components(X: jax.Array, codes: np.ndarray, n_classes: int, k: int) -> jax.Array:
    """LDA directions ``[k, d]`` whitening the unbiased within-class covariance (divided by
    ``n - C``): scikit-learn's directions, each row ``sqrt((n - C) / n)`` times as long as its
    (``LinearDiscriminantAnalysis`` divides by ``n``)."""
    n = X.shape[0]
    onehot = jax.nn.one_hot(jnp.asarray(codes), n_classes, dtype=X.dtype)
    counts = onehot.sum(0)
    means = (onehot.T @ X) / counts[:, None]
    Xw = X - onehot @ means
    Sw = Xw.T @ Xw / max(n - n_classes, 1)
    centred = means - X.mean(0)
    Sb = (centred * (counts / n)[:, None]).T @ centred
    _, V = generalized_eigh(Sb, Sw)
    return V[:, :k].T


def _pca_components(X: jax.Array, k: int) -> jax.Array:
    """Top ``k`` principal directions (unit rows), as scikit-learn's ``PCA.components_``."""
    Xc = X - X.mean(0)
    _, _, Vt = jnp.linalg.svd(Xc, full_matrices=False)
    if Vt.shape[0] < k:  # fewer samples than components: complete with an orthonormal basis
        _, _, Vfull = jnp.linalg.svd(Xc, full_matrices=True)
        Vt = Vfull
    return Vt[:k]


def init_components(
    X,
    y,
    *,
    n_components: int | None = None,
    init="auto",
    key: jax.Array | None = None,
) -> jax.Array:
    """Initial linear map ``L0 [k, d]`` for the iterative supervised learners.

    The rules follow scikit-learn's ``NeighborhoodComponentsAnalysis``:

    * ``"auto"``: ``"lda"`` if ``k <= min(d, C - 1)``, else ``"pca"`` if ``k < min(d, n)``, else
      ``"identity"``.
    * ``"pca"``: the top ``k`` principal directions (unit rows).
    * ``"lda"``: the top ``k`` generalised eigenvectors of (between, within)-class scatter,
      normalised to whiten the unbiased within-class covariance (scikit-learn's directions, rows
      ``sqrt((n - C) / n)`` times as long as its); needs ``k <= min(d, C - 1)``. A singular
      within-class covariance (constant features) is regularised, never NaN.
    * ``"identity"``: ``eye(k, d)``.
    * ``"random"``: standard normal entries drawn with ``key``.
    * an array ``[k, d]``: used as given (validated).

    Args:
      X: ``[n, d]`` features.
      y: ``[n]`` labels (only used by ``"lda"`` and ``"auto"``; may be real-valued targets for
        ``"pca"``, ``"identity"``, ``"random"``, or an array init).
      n_components: ``k``; ``None`` means ``d``. ``k > d`` raises ``ValueError``.
      init: one of ``"auto"``, ``"pca"``, ``"lda"``, ``"identity"``, ``"random"`` or an array.
      key: PRNG key for ``"random"``; default ``jax.random.key(0)``.

    Returns:
      ``[k, d]`` array in ``X``'s dtype.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> init_components(X, y, n_components=2, init="pca").shape
      (2, 4)

    Reference: Goldberger et al., "Neighbourhood Components Analysis", NIPS 2004; scikit-learn's NCA.
    """
    X = check_array(X, "X", ndim=2, min_rows=1)
    n, d = X.shape
    if not isinstance(init, str):
        L0 = check_array(init, "init", ndim=2, dtype=X.dtype)
        if L0.shape[1] != d:
            raise ValueError(
                f"init has {L0.shape[1]} columns but X has d={d} features "
                f"(init shape {tuple(L0.shape)}, X shape {tuple(X.shape)})"
            )
        if n_components is not None and L0.shape[0] != n_components:
            raise ValueError(
                f"init has {L0.shape[0]} rows but n_components={n_components} "
                f"(init shape {tuple(L0.shape)})"
            )
        check_n_components(L0.shape[0], d)
        return L0
    k = check_n_components(n_components, d)
    check_choice(init, "init", INITS)
    needs_labels = init in ("auto", "lda")
    if needs_labels:
        codes = check_labels(y, n, name="y", min_classes=1)
        n_classes = int(codes.max()) + 1
    else:
        codes, n_classes = None, 0
    init = resolve_init(init, n_components=k, n_features=d, n_samples=n, n_classes=n_classes)
    if init == "identity":
        return jnp.eye(k, d, dtype=X.dtype)
    if init == "random":
        key = jax.random.key(0) if key is None else as_key(key)
        return jax.random.normal(key, (k, d), dtype=X.dtype)
    if init == "pca":
        return _pca_components(X, k)
    # lda
    if k > min(d, n_classes - 1):
        raise ValueError(
            f'init="lda" needs n_components <= min(d, n_classes - 1) = {min(d, n_classes - 1)}, '
            f"got n_components={k}; use init='pca' or 'auto'"
        )
    return _lda_components(X, codes, n_classes, k)


def bucket_size(n: int, *, minimum: int = 64) -> int:
    """Bucketed row count for ``n`` samples: the next of ``64, 80, 96, 112, 128, 160, 192, ...``.

    Four buckets per octave (``p, 1.25p, 1.5p, 1.75p`` for powers of two ``p >= minimum``) keep
    the padding overhead under 25 % while cross-validation folds of similar size share one compiled
    program instead of recompiling for every ``n``. Buckets of 2048 rows or more are multiples of
    512 (see :func:`row_block`).
    """
    p = max(int(minimum), 4)
    while True:
        for m in (4, 5, 6, 7):
            size = p * m // 4
            if size >= n:
                return size
        p *= 2


def row_block(size: int) -> int:
    """Row-block length for chunked ``[block, size]`` pairwise computations (divides ``size``)."""
    return size if size <= 2048 else 512


def pad_rows(X: jax.Array, size: int, fill=0) -> tuple[jax.Array, jax.Array]:
    """Pad ``X [n, ...]`` with ``fill`` to ``[size, ...]``; return it and the validity mask ``[size]``."""
    n = X.shape[0]
    pad = [(0, size - n)] + [(0, 0)] * (X.ndim - 1)
    mask = jnp.arange(size) < n
    return jnp.pad(X, pad, constant_values=fill), mask


def map_row_blocks(fn, block: int, *arrays):
    """``fn`` applied to row blocks of ``arrays`` (same first axis), outputs concatenated.

    A single block calls ``fn`` directly; several blocks run under ``lax.map`` with
    ``jax.checkpoint`` so reverse-mode autodiff keeps only one ``[block, n]`` tile alive: memory is
    ``O(block * n)`` instead of ``O(n^2)``.
    """
    size = arrays[0].shape[0]
    if size <= block:
        return fn(*arrays)
    n_blocks = size // block
    split = [a.reshape((n_blocks, block) + a.shape[1:]) for a in arrays]
    out = jax.lax.map(lambda args: jax.checkpoint(fn)(*args), tuple(split))
    return jax.tree_util.tree_map(lambda o: o.reshape((size,) + o.shape[2:]), out)


def lbfgs_tolerances(tol: float | None) -> tuple[float, float]:
    """``(ftol, gtol)`` from a user ``tol``, as ``scipy.optimize.minimize(method="L-BFGS-B")``.

    A number sets both (scikit-learn's NCA); ``None`` keeps scipy's defaults ``ftol = 2.2e-9``,
    ``gtol = 1e-5`` (metric-learn's NCA and MLKR, which run closer to convergence).
    """
    if tol is None:
        return 2.220446049250313e-09, 1e-5
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.floating) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0 or None, got {tol!r}")
    return float(tol), float(tol)


class LBFGSResult(NamedTuple):
    """Outcome of :func:`lbfgs_minimize` (all JAX scalars/arrays, usable inside ``jit``)."""

    params: jax.Array
    value: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def lbfgs_minimize(
    fun,
    x0,
    *,
    max_iter,
    ftol,
    gtol,
    memory_size: int = 10,
    max_linesearch_steps: int = 25,
    initial_step: str = "one",
) -> LBFGSResult:
    """Minimise a smooth scalar ``fun(params)`` with L-BFGS (optax) in a ``lax.while_loop``.

    The one L-BFGS loop of the convex learners (NCA, MLKR, ...). Stopping rule as scipy's
    ``L-BFGS-B``: stop when the relative decrease
    ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`` or the largest gradient entry
    ``<= gtol``, or after ``max_iter`` iterations (see :func:`lbfgs_tolerances`). A step that makes the objective non-finite or
    larger is rejected and the loop stops at the best point found, so the result is never NaN.

    Args:
      fun: ``params -> scalar``, traceable (close over the data inside the caller's ``jit``).
      x0: initial parameters (any pytree of floating arrays).
      max_iter: iteration budget (may be traced).
      ftol: relative-decrease tolerance (may be traced).
      gtol: gradient (max-abs) tolerance (may be traced).
      memory_size: number of curvature pairs kept.
      max_linesearch_steps: zoom line-search budget per iteration.
      initial_step: line-search starting step, ``"one"`` (the quasi-Newton step, as scipy) or
        ``"keep"`` (the last accepted step); optax's ``initial_guess_strategy``.

    Returns:
      :class:`LBFGSResult` ``(params, value, n_iter, converged)``.

    Reference: Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
    Mathematical Programming 45 (1989); optax.lbfgs.
    """
    opt = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=max_linesearch_steps, initial_guess_strategy=initial_step
        ),
    )
    f0, g0 = jax.value_and_grad(fun)(x0)
    state0 = opt.init(x0)

    def grad_max(g):
        leaves = jax.tree_util.tree_leaves(g)
        return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in leaves]))

    def cond(carry):
        _, _, _, _, it, done, _ = carry
        return (it < max_iter) & ~done

    def body(carry):
        x, state, f, g, it, _, _ = carry
        updates, new_state = opt.update(g, state, x, value=f, grad=g, value_fn=fun)
        x_new = optax.apply_updates(x, updates)
        # The zoom line search stores the value and gradient at the accepted point in the state.
        # Read them directly rather than via optax.value_and_grad_from_state, whose fallback
        # re-evaluation (taken only for a non-finite value, which would recur anyway) would be one
        # more copy of the objective in the compiled loop.
        f_new = optax.tree.get(new_state, "value")
        g_new = optax.tree.get(new_state, "grad")
        ok = jnp.isfinite(f_new) & (f_new <= f) & jnp.isfinite(grad_max(g_new))
        rel = (f - f_new) / jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f_new)), 1.0)
        small = ok & ((rel <= ftol) | (grad_max(g_new) <= gtol))
        pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(ok, u, v), a, b)  # noqa: E731
        x_out = pick(x_new, x)
        f_out = jnp.where(ok, f_new, f)
        g_out = pick(g_new, g)
        return x_out, new_state, f_out, g_out, it + 1, small | ~ok, small

    start_done = grad_max(g0) <= gtol
    carry = (x0, state0, f0, g0, jnp.asarray(0), start_done, start_done)
    x, _, f, _, it, _, converged = jax.lax.while_loop(cond, body, carry)
    return LBFGSResult(x, f, it, converged)


def softmax_row_block(size: int, *, max_block: int = 8192, target: int = 1024) -> int:
    """Row-block length for :func:`neighbour_softmax_value_and_grad` on ``size`` padded rows.

    Up to ``max_block`` rows the whole ``[size, size]`` problem is one block (a few ``size^2``
    arrays: 256 MB each in float32 at 8192). Beyond, the largest divisor of ``size`` that is at
    most ``target`` (buckets of 2048 rows or more are multiples of 512, so at least 512).
    """
    if size <= max_block:
        return size
    for b in range(min(target, size), 0, -1):
        if size % b == 0:
            return b
    return 1


def neighbour_softmax_value_and_grad(Z, valid, row_fn, row_data, col_data, *, block: int):
    """Loss and gradient of a leave-one-out softmax-over-neighbours objective, through matmuls.

    Every valid row ``i`` of ``Z [N, k]`` gets neighbour weights

    .. math::  P_{ij} = \\frac{\\exp(-D_{ij})}{\\sum_{l \\ne i, l\\ \\mathrm{valid}} \\exp(-D_{il})},
               \\qquad D_{ij} = \\|z_i - z_j\\|^2,

    (``P_ii = 0``, ``P_ij = 0`` for padded ``j``) and the loss is ``sum_i loss_i`` where
    ``row_fn(P_B, row_data_B, col_data) -> (loss_B [b], G_B [b, N])`` returns, for a block ``B``
    of rows, their loss terms and ``G_ij = d loss / d D_ij``. The chain rule through
    ``D_ij = |z_i|^2 + |z_j|^2 - 2 z_i . z_j`` is then closed form,

    .. math::  \\nabla_Z = 2\\,(\\mathrm{diag}(G 1 + G^T 1) - G - G^T)\\, Z,

    i.e. two ``[N, N] @ [N, k]`` matmuls: no ``N x N x k`` tensor and no autodiff through the
    masked softmax. With ``block < N`` the rows are processed by ``lax.scan`` in blocks of
    ``block`` (``O(block * N)`` memory), accumulating ``G^T 1`` and ``G^T Z``.

    Args:
      Z: ``[N, k]`` embedded (padded) rows.
      valid: ``[N]`` bool, False for padding rows.
      row_fn: ``(P [b, N], row_data_B, col_data) -> (loss [b], G [b, N])``; rows of padding are
        masked afterwards, so it need not care about them.
      row_data: pytree of ``[N, ...]`` arrays split into row blocks.
      col_data: pytree passed whole to every block.
      block: rows per block (divides ``N``).

    Returns:
      ``(loss, grad_Z [N, k])``.
    """
    n = Z.shape[0]
    sq = jnp.sum(Z * Z, axis=1)
    cols = jnp.arange(n)

    def one(Zb, sqb, vb, idx, rb, rows_part=True):
        d2 = jnp.maximum(sqb[:, None] + sq[None, :] - 2.0 * (Zb @ Z.T), 0.0)
        allowed = valid[None, :] & (idx[:, None] != cols[None, :]) & vb[:, None]
        logits = jnp.where(allowed, -d2, -jnp.inf)
        top = jnp.max(logits, axis=1, keepdims=True)
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        e = jnp.where(allowed, jnp.exp(logits - top), 0.0)
        s = jnp.sum(e, axis=1, keepdims=True)
        P = e / jnp.where(s > 0, s, 1.0)
        loss_b, G = row_fn(P, rb, col_data)
        G = jnp.where(allowed, G, 0.0)
        loss_b = jnp.where(vb, loss_b, 0.0)
        if not rows_part:
            return loss_b, None, G
        return loss_b, jnp.sum(G, axis=1)[:, None] * Zb - G @ Z, G

    if block >= n:
        loss_rows, _, G = one(Z, sq, valid, cols, row_data, rows_part=False)
        Gs = G + G.T  # one [N, N] @ [N, k] matmul instead of two
        grad = 2.0 * (jnp.sum(Gs, axis=1)[:, None] * Z - Gs @ Z)
        return jnp.sum(loss_rows), grad
    n_blocks = n // block
    split = lambda a: a.reshape((n_blocks, block) + a.shape[1:])  # noqa: E731
    xs = (split(Z), split(sq), split(valid), split(cols), jax.tree_util.tree_map(split, row_data))

    def step(carry, args):
        col_sum, col_mat = carry
        Zb = args[0]
        loss_b, rows_part, G = one(*args)
        return (col_sum + jnp.sum(G, axis=0), col_mat + G.T @ Zb), (jnp.sum(loss_b), rows_part)

    init = (jnp.zeros((n,), Z.dtype), jnp.zeros_like(Z))
    (col_sum, col_mat), (losses, rows_part) = jax.lax.scan(step, init, xs)
    grad = 2.0 * (rows_part.reshape(Z.shape) + col_sum[:, None] * Z - col_mat)
    return jnp.sum(losses), grad


def check_components(L, X: jax.Array) -> jax.Array:
    """``L`` as an array of ``X``'s dtype; ``ValueError`` unless it is a finite ``[k, d]`` with
    ``d = X.shape[1]`` (a NaN in ``L`` was otherwise reported as a non-finite objective of X)."""
    L = check_array(L, "L", dtype=X.dtype)
    if L.ndim != 2 or L.shape[1] != X.shape[1]:
        raise ValueError(f"L must be [k, {X.shape[1]}], got shape {tuple(L.shape)}")
    return L


def pad_for_softmax(X: jax.Array, targets, *, fill=0):
    """Pad ``X [n, d]`` and per-row ``targets [n]`` to the size bucket of ``n`` (NCA, MLKR).

    Returns:
      ``(X_padded, targets_padded, valid, block)``: padded rows have ``valid = False`` and target
      ``fill``; ``block`` is :func:`softmax_row_block` of the padded size.
    """
    size = bucket_size(X.shape[0])
    Xp, valid = pad_rows(X, size)
    tp, _ = pad_rows(jnp.asarray(targets), size, fill=fill)
    return Xp, tp, valid, softmax_row_block(size)
