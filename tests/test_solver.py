"""Tests of metriclearn.solver: known optima, PSD iterates, history, losses vs loops, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from metriclearn import psd, solver

A3 = np.array([[2.0, 0.5, 0.0], [0.5, -1.0, 0.3], [0.0, 0.3, 0.5]])


def sq_dist(M, A):
    return jnp.sum((M - A) ** 2)


def test_nearest_psd_is_the_optimum(x64):
    A = jnp.asarray(A3)
    res = solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), tol=1e-12, max_iter=200)
    np.testing.assert_allclose(res.M, psd.project_psd(A), atol=1e-8)
    assert bool(res.converged) and res.M.dtype == jnp.float64
    assert psd.is_psd(res.M)
    h = res.history
    assert set(h) == {"objective", "grad_norm", "step", "step_size"}
    assert len(h["objective"]) == int(res.n_iter)
    assert np.all(np.diff(np.asarray(h["objective"])) <= 1e-12)  # monotone with line search


def pair_problem(M, S, D, u, l):
    return solver.pair_hinge_loss(M, S, D, u=u, l=l) + 0.1 * jnp.sum(M * M)


def test_spectral_step_on_an_ill_conditioned_quadratic(x64):
    # curvatures spread over two decades: Barzilai-Borwein trial steps with an Armijo test converge
    # in 137 iterations here, where doubling the last accepted step took 378
    rng = np.random.default_rng(0)
    d = 6
    C = 10 ** rng.uniform(-1, 1, size=(d, d))
    C = jnp.asarray(0.5 * (C + C.T))
    B = rng.normal(size=(d, d))
    A = jnp.asarray(B @ B.T / d + np.eye(d))
    res = solver.projected_gradient(
        lambda M: 0.5 * jnp.sum(C * (M - A) ** 2), jnp.eye(d), max_iter=500, tol=1e-12
    )
    assert bool(res.converged) and int(res.n_iter) <= 200
    np.testing.assert_allclose(res.M, A, atol=1e-9)
    # on an isotropic quadratic of curvature 4 the second step is exactly the inverse curvature
    res = solver.projected_gradient(lambda M: 2.0 * jnp.sum((M - A) ** 2), jnp.eye(d), max_iter=2)
    np.testing.assert_allclose(res.history["step_size"], [0.25, 0.25])


def test_pair_hinge_problem_matches_grid_search(x64):
    """2-D pair-hinge + Frobenius problem: solver objective <= brute-force grid minimum."""
    rng = np.random.RandomState(0)
    S = jnp.asarray(rng.randn(6, 2) * np.array([2.0, 0.3]))
    D = jnp.asarray(rng.randn(6, 2) * np.array([0.3, 2.0]))
    args = (S, D, 1.0, 3.0)
    res = solver.projected_gradient(pair_problem, jnp.eye(2), args=args, tol=1e-10, max_iter=400)
    f_solver = float(pair_problem(res.M, *args))
    # brute force over a grid of PSD 2x2 matrices [[a, b], [b, c]] (vectorised NumPy loop)
    grid = np.linspace(-2.0, 4.0, 121)
    a, b, c = (g.ravel() for g in np.meshgrid(grid, grid, grid, indexing="ij"))
    ok = (a >= 0) & (c >= 0) & (a * c >= b * b)
    a, b, c = a[ok], b[ok], c[ok]
    S_, D_ = np.asarray(S), np.asarray(D)
    d2s = (
        a[:, None] * S_[:, 0] ** 2
        + 2 * b[:, None] * S_[:, 0] * S_[:, 1]
        + c[:, None] * S_[:, 1] ** 2
    )
    d2d = (
        a[:, None] * D_[:, 0] ** 2
        + 2 * b[:, None] * D_[:, 0] * D_[:, 1]
        + c[:, None] * D_[:, 1] ** 2
    )
    hinge = np.concatenate([np.maximum(d2s - 1.0, 0), np.maximum(3.0 - d2d, 0)], axis=1).mean(1)
    values = hinge + 0.1 * (a**2 + 2 * b**2 + c**2)
    best = values.min()
    # the grid point nearest the solver's answer scores the same as the solver up to grid resolution
    assert f_solver <= best + 1e-6
    assert best - f_solver < 0.05
    assert f_solver < float(pair_problem(jnp.eye(2), *args))
    assert np.linalg.eigvalsh(np.asarray(res.M)).min() >= -1e-10


def test_iterates_psd_and_eigenvalue_floor():
    A = jnp.asarray(A3, jnp.float32)
    res = solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), min_eigenvalue=0.2)
    w = np.linalg.eigvalsh(np.asarray(res.M))
    assert w.min() >= 0.2 - 1e-5
    assert res.M.dtype == jnp.float32


def test_optax_optimizer_and_factored_mode():
    A = jnp.asarray(A3, jnp.float32)
    target = np.asarray(psd.project_psd(A))
    res = solver.projected_gradient(
        sq_dist, jnp.eye(3), args=(A,), optimizer=optax.sgd(0.25), max_iter=300, tol=1e-9
    )
    np.testing.assert_allclose(res.M, target, atol=1e-3)
    assert np.all(np.isnan(np.asarray(res.history["step_size"])))

    def fact(L, A):
        return jnp.sum((L.T @ L - A) ** 2)

    res = solver.factored_gradient(fact, jnp.eye(3), args=(A,), max_iter=500, tol=1e-9)
    np.testing.assert_allclose(res.M.T @ res.M, target, atol=1e-3)
    assert np.all(np.diff(np.asarray(res.history["objective"])) <= 1e-5)
    # low rank: k=1 factor gives the best rank-one approximation of the PSD part
    res1 = solver.factored_gradient(fact, jnp.ones((1, 3)), args=(A,), max_iter=500, tol=1e-9)
    w, V = np.linalg.eigh(target)
    np.testing.assert_allclose(res1.M.T @ res1.M, w[-1] * np.outer(V[:, -1], V[:, -1]), atol=1e-3)
    # a [2, 3] factor: rank two (the L1 mask of the loop took it for square and raised a TypeError)
    res2 = solver.factored_gradient(fact, jnp.eye(2, 3), args=(A,), max_iter=500, tol=1e-9)
    top = V[:, -2:] * w[-2:]
    np.testing.assert_allclose(res2.M.T @ res2.M, top @ V[:, -2:].T, atol=1e-3)


def test_mixed_dtype_history_without_future_warning(x64):
    # a float64 objective of a float32 M0 was scattered into the float32 history: JAX warned that
    # this implicit cast will become an error
    import warnings

    A = jnp.diag(jnp.array([2.0, -1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        res = solver.projected_gradient(sq_dist, jnp.eye(2, dtype=jnp.float32), args=(A,))
    np.testing.assert_allclose(res.M, np.diag([2.0, 0.0]), atol=1e-5)


def test_l1_prox_closed_form(x64):
    A = jnp.array([[3.0, 0.4, -0.05], [0.4, 2.0, 0.2], [-0.05, 0.2, 2.5]])
    res = solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), l1_prox=0.2, tol=1e-12)
    # min ||M - A||^2 + 0.2 |M|_offdiag: off-diagonals soft-thresholded by 0.1, diagonal kept
    expect = np.asarray(A)
    off = ~np.eye(3, dtype=bool)
    expect = np.where(off, np.sign(expect) * np.maximum(np.abs(expect) - 0.1, 0.0), expect)
    np.testing.assert_allclose(res.M, expect, atol=1e-8)
    assert abs(float(res.M[0, 2])) < 1e-12  # exact sparsity up to the eigh reconstruction


def test_regularizer_by_name_and_under_jit(x64):
    A = jnp.asarray(A3)
    res = solver.projected_gradient(
        sq_dist, jnp.eye(3), args=(A,), regularizer="trace", lam=1.0, tol=1e-12
    )
    # min ||M - A||^2 + tr(M) over PSD = project_psd(A - I / 2)
    np.testing.assert_allclose(res.M, psd.project_psd(A - 0.5 * jnp.eye(3)), atol=1e-8)
    prior = jnp.asarray(np.diag([1.0, 2.0, 3.0]))
    res = solver.projected_gradient(
        lambda M: 0.0 * jnp.sum(M),
        jnp.eye(3),
        regularizer="logdet",
        regularizer_kwargs={"M0": prior},
        lam=1.0,
        min_eigenvalue=1e-3,
        tol=1e-12,
    )
    np.testing.assert_allclose(res.M, prior, atol=1e-6)

    @jax.jit
    def inside(M0, A):
        r = solver.projected_gradient(sq_dist, M0, args=(A,), max_iter=50, tol=1e-12)
        return r.M, r.history["objective"]

    M, hist = inside(jnp.eye(3), A)
    np.testing.assert_allclose(M, psd.project_psd(A), atol=1e-8)
    assert hist.shape == (50,) and np.isnan(np.asarray(hist)[-1])


def test_nonfinite_start_raises_and_stops_unconverged_under_jit():
    def f(M):
        return jnp.log(-jnp.trace(M))  # NaN on the PSD cone

    # called eagerly: a clear error (it used to return M0 with n_iter=0, silently)
    with pytest.raises(ValueError, match="not finite at the starting point M0"):
        solver.projected_gradient(f, jnp.eye(2))
    # factored with a rank-deficient L: L^T L singular, the LogDet divergence infinite at the start
    with pytest.raises(ValueError, match="not finite at the starting point L0"):
        solver.factored_gradient(
            lambda L: jnp.sum(L * L),
            jnp.ones((1, 3)),
            regularizer="logdet",
            regularizer_kwargs={"M0": jnp.eye(3)},
            lam=1.0,
        )
    # under jit nothing can raise: the loop stops before its first step, not converged
    n_iter, converged = jax.jit(
        lambda M0: (lambda r: (r.n_iter, r.converged))(solver.projected_gradient(f, M0))
    )(jnp.eye(2))
    assert int(n_iter) == 0 and not bool(converged)


def test_solver_errors():
    A = jnp.asarray(A3)
    with pytest.raises(ValueError, match="square"):
        solver.projected_gradient(sq_dist, jnp.ones((2, 3)), args=(A,))
    with pytest.raises(ValueError, match="NaN"):
        solver.projected_gradient(sq_dist, jnp.full((3, 3), jnp.nan), args=(A,))
    with pytest.raises(ValueError, match="unknown regularizer"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), regularizer="nuclear")
    with pytest.raises(ValueError, match="unknown optimizer"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), optimizer="adam")
    with pytest.raises(ValueError, match="lam"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), lam=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), max_iter=0)
    with pytest.raises(ValueError, match="l1_prox"):
        solver.projected_gradient(
            sq_dist, jnp.eye(3), args=(A,), optimizer=optax.sgd(0.1), l1_prox=0.1
        )
    with pytest.raises(ValueError, match="args"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=[A])
    with pytest.raises(ValueError, match="objective"):
        solver.projected_gradient("loss", jnp.eye(3))
    with pytest.raises(ValueError, match="L0"):
        solver.factored_gradient(sq_dist, jnp.ones(3))


# ---------------------------------------------------------------------------------------------------
# per-tuple losses


def test_losses_against_loops_and_jit(x64):
    rng = np.random.RandomState(1)
    d = 3
    M = rng.randn(d, d)
    M = M @ M.T
    S, D = rng.randn(4, d), rng.randn(5, d)
    u, l = 2.0, 4.0
    loop = [max(v @ M @ v - u, 0.0) for v in S] + [max(l - v @ M @ v, 0.0) for v in D]
    got = jax.jit(lambda *a: solver.pair_hinge_loss(*a, u=u, l=l))(M, S, D)
    assert np.isclose(got, np.mean(loop))
    ab, ac = rng.randn(6, d), rng.randn(6, d)
    gaps = [a @ M @ a - c @ M @ c for a, c in zip(ab, ac)]
    assert np.isclose(
        jax.jit(lambda *a: solver.triplet_hinge_loss(*a, margin=1.0))(M, ab, ac),
        np.mean([max(1.0 + g, 0.0) for g in gaps]),
    )
    assert np.isclose(
        jax.jit(lambda *a: solver.triplet_logistic_loss(*a, margin=0.5))(M, ab, ac),
        np.mean([np.log1p(np.exp(0.5 + g)) for g in gaps]),
    )
    # finite for huge gaps
    assert np.isfinite(solver.triplet_logistic_loss(jnp.asarray(M) * 1e6, ab, ac))


def test_loss_gradients(x64):
    rng = np.random.RandomState(2)
    d = 3
    M = jnp.asarray(rng.randn(d, d))
    S, D = jnp.asarray(rng.randn(4, d)), jnp.asarray(rng.randn(5, d))
    ab, ac = jnp.asarray(rng.randn(6, d)), jnp.asarray(rng.randn(6, d))
    check_grads(
        lambda A: solver.pair_hinge_loss(A, S, D, u=1.0, l=2.0), (M,), order=1, modes=("rev",)
    )
    check_grads(
        lambda A: solver.triplet_hinge_loss(A, ab, ac, margin=0.3), (M,), order=1, modes=("rev",)
    )
    check_grads(lambda A: solver.triplet_logistic_loss(A, ab, ac), (M,), order=2, modes=("rev",))


# ---------------------------------------------------------------------------------------------------
# audit regressions: honest convergence flags at any scale, clear errors for bad data


@pytest.mark.parametrize("scale", [1e14, 1e-9])
def test_converged_flag_honest_at_extreme_objective_scales(x64, scale):
    # c ||M - A||^2: the answer does not depend on c. Before, c = 1e14 stopped at iteration 1 with
    # converged=True and M = M0 (the first search failed within 40 halvings of step_size=1), and
    # c = 1e-9 likewise (the tiny first step changed F by less than tol)
    A = jnp.asarray(A3)
    res = solver.projected_gradient(lambda M, A: scale * sq_dist(M, A), jnp.eye(3), args=(A,))
    assert bool(res.converged)
    np.testing.assert_allclose(res.M, psd.project_psd(A), atol=1e-9)


def test_scaled_data_same_metric_in_float32():
    # triplets scaled by s and prior by 1/s^2: the solution scales exactly by 1/s^2. Before, s = 1e3
    # and s = 1e-2 stopped at iteration 1 (float32) reporting converged=True, 40-56% away
    rng = np.random.default_rng(0)
    ab = rng.normal(size=(30, 4)) * [1.0, 0.2, 1.0, 0.5]
    ac = rng.normal(size=(30, 4)) * [0.2, 1.0, 1.0, 2.0]

    def obj(M, ab, ac):
        return solver.triplet_logistic_loss(M, ab, ac, margin=0.5)

    sols = []
    for s in (1.0, 1e3, 1e-2):
        M0 = jnp.eye(4, dtype=jnp.float32) / s**2
        args = (jnp.asarray(ab * s, jnp.float32), jnp.asarray(ac * s, jnp.float32))
        res = solver.projected_gradient(
            obj,
            M0,
            args=args,
            regularizer="logdet",
            regularizer_kwargs={"M0": M0},
            lam=0.1,
            tol=1e-9,
        )
        assert bool(res.converged)
        sols.append(np.asarray(res.M, np.float64) * s**2)
    for M in sols[1:]:
        np.testing.assert_allclose(M, sols[0], atol=2e-3 * np.abs(sols[0]).max())


def test_converges_at_once_at_an_optimum_and_on_the_boundary(x64):
    # zero gradient at the start, and an optimum (0) where the projection undoes every step
    res = solver.projected_gradient(sq_dist, jnp.asarray(psd.project_psd(A3)), args=(A3,))
    assert bool(res.converged) and int(res.n_iter) == 1
    neg = -jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
    res = solver.projected_gradient(sq_dist, jnp.zeros((2, 2)), args=(neg,))
    assert bool(res.converged) and int(res.n_iter) == 1


def test_empty_or_mismatched_tuples_raise():
    M = jnp.eye(2)
    e = jnp.zeros((0, 2))
    # before: NaN (mean over an empty set)
    with pytest.raises(ValueError, match="at least one pair"):
        solver.pair_hinge_loss(M, e, e, u=1.0, l=2.0)
    for f in (solver.triplet_hinge_loss, solver.triplet_logistic_loss):
        with pytest.raises(ValueError, match="at least one triplet"):
            f(M, e, e)
        with pytest.raises(ValueError, match="same shape"):
            f(M, jnp.ones((3, 2)), jnp.ones((2, 2)))
        with pytest.raises(ValueError, match=r"d_ab must be \[n, 2\]"):
            f(M, jnp.ones((3, 3)), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match=r"diffs_sim must be \[n, 2\]"):
        solver.pair_hinge_loss(M, jnp.ones((3, 3)), jnp.ones((2, 2)), u=1.0, l=2.0)
    # one empty side is fine
    assert float(solver.pair_hinge_loss(M, e, jnp.ones((2, 2)), u=1.0, l=2.0)) == 0.0


def test_bad_data_and_prior_raise_instead_of_stopping_silently():
    # before: n_iter=0, converged=False, no error (the checks were skipped inside jit)
    def f(M):
        return jnp.sum(M * M)

    with pytest.raises(ValueError, match="positive definite"):
        solver.projected_gradient(
            f, jnp.eye(2), regularizer="logdet", regularizer_kwargs={"M0": -jnp.eye(2)}, lam=1.0
        )
    with pytest.raises(ValueError, match=r"args\[0\] contains NaN"):
        solver.projected_gradient(sq_dist, jnp.eye(2), args=(jnp.full((2, 2), jnp.nan),))
    with pytest.raises(ValueError, match=r"regularizer_kwargs\['X'\] contains NaN"):
        solver.projected_gradient(
            f,
            jnp.eye(2),
            regularizer="laplacian",
            lam=1.0,
            regularizer_kwargs={"X": jnp.full((4, 2), jnp.nan), "W": jnp.ones((4, 4))},
        )
    with pytest.raises(ValueError, match="does not accept regularizer_kwargs"):
        solver.projected_gradient(f, jnp.eye(2), regularizer="logdet", lam=1.0)


def test_converged_means_stationary_not_just_a_short_step(x64):
    """A tiny Barzilai-Borwein step near the LogDet boundary (F 22.6 against 17.84), an optax
    learning rate too small (one step) and a hinge's kink were all reported as converged."""
    from metriclearn import regularizers

    A = jnp.diag(jnp.array([3.0, -4.0]))
    res = solver.projected_gradient(
        sq_dist, jnp.eye(2), args=(A,), regularizer="logdet",
        regularizer_kwargs={"M0": jnp.eye(2)}, lam=0.5, min_eigenvalue=1e-6,
    )  # fmt: skip
    # per eigenvalue a: 2 (m - a) + 0.5 (1 - 1/m) = 0
    exact = sorted(np.roots([2, 0.5 - 2 * a, -0.5]).max() for a in (3.0, -4.0))
    assert bool(res.converged)
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(res.M)), exact, rtol=3e-3)
    F = sq_dist(res.M, A) + 0.5 * regularizers.logdet_divergence(res.M, jnp.eye(2))
    assert float(F) < 17.85
    # a start at (or near) the optimum is converged: its gradient is rounding noise, which the
    # start's gradient cannot scale (it was reported unconverged)
    B = jnp.diag(jnp.array([1.0, 2.0, 3.0], jnp.float32))
    first = solver.projected_gradient(sq_dist, jnp.eye(3, dtype=jnp.float32), args=(B,))
    for start in (first.M, B, B + 1e-4 * jnp.eye(3, dtype=jnp.float32)):
        assert bool(solver.projected_gradient(sq_dist, start, args=(B,)).converged)
    for lr in (1e-7, 1e-9):
        slow = solver.projected_gradient(sq_dist, jnp.eye(2), args=(A,), optimizer=optax.sgd(lr))
        assert not bool(slow.converged) and int(slow.n_iter) == 500
    # a hinge stalls at a kink: the line search stops there without claiming the optimum
    rng = np.random.default_rng(0)
    a, c = 0.5 * rng.normal(size=(7, 3)), 1.5 * rng.normal(size=(7, 3))

    def hinge(M, a, c):
        gap = jnp.sqrt(jnp.einsum("ni,ij,nj->n", a, M, a)) - jnp.sqrt(
            jnp.einsum("ni,ij,nj->n", c, M, c)
        )
        return jnp.mean(jnp.maximum(1.0 + gap, 0.0))

    a, c = jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32)
    stuck = solver.projected_gradient(
        hinge, jnp.eye(3, dtype=jnp.float32), args=(a, c), regularizer="frobenius", lam=0.1
    )
    assert int(stuck.n_iter) < 500 and not bool(stuck.converged)


def test_loss_helpers_refuse_nan_inputs_and_hyperparameters():
    """A concrete NaN difference, M or bound gave a NaN loss silently."""
    M, D = jnp.eye(2), jnp.ones((3, 2))
    nanD = D.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="diffs_sim contains NaN or inf"):
        solver.pair_hinge_loss(M, nanD, D, u=1.0, l=2.0)
    with pytest.raises(ValueError, match="M contains NaN or inf"):
        solver.pair_hinge_loss(M.at[0, 1].set(jnp.nan), D, D, u=1.0, l=2.0)
    with pytest.raises(ValueError, match="l must be a finite number"):
        solver.pair_hinge_loss(M, D, D, u=1.0, l=float("nan"))
    with pytest.raises(ValueError, match="d_ac contains NaN or inf"):
        solver.triplet_hinge_loss(M, D, nanD)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        solver.triplet_logistic_loss(M, D, D, margin=float("nan"))
    # under jit (inside the solver) the values are not inspected
    f = jax.jit(lambda M, a, b: solver.triplet_hinge_loss(M, a, b, margin=1.0))
    assert float(f(M, D, 2 * D)) >= 0


def test_regularizer_kwargs_and_flags_are_type_checked():
    # regularizer_kwargs=[1] was a raw TypeError, 0 meant "no kwargs"; project="False" projected
    f = lambda M: jnp.sum((M - jnp.diag(jnp.array([1.0, -1.0]))) ** 2)  # noqa: E731
    for bad in ([1], 0, -1, "M0"):
        with pytest.raises(ValueError, match="regularizer_kwargs must be a dict"):
            solver.projected_gradient(
                f, jnp.eye(2), regularizer="trace", lam=0.1, regularizer_kwargs=bad
            )
    with pytest.raises(ValueError, match="regularizer_kwargs must be a dict"):
        solver.factored_gradient(f, jnp.eye(2), regularizer="trace", regularizer_kwargs=[1])
    with pytest.raises(ValueError, match="project must be True or False"):
        solver.projected_gradient(f, jnp.eye(2), project="False")
    with pytest.raises(ValueError, match="l1_diagonal must be True or False"):
        solver.projected_gradient(f, jnp.eye(2), l1_prox=0.1, l1_diagonal="no")
    res = solver.projected_gradient(f, jnp.eye(2), project=False, max_iter=50)
    assert float(res.M[1, 1]) < -0.5  # not projected: the negative eigenvalue is reached


# ---------------------------------------------------------------------------------------------------
# audit regressions (2026-11-25): kink warm restarts, bad inputs refused at the boundary


def test_warm_restart_at_a_hinge_kink_is_not_converged():
    # the cold run stalls at a kink (converged=False); a second call from its M accepted one step
    # halved to ~3e-5 and tested stationarity with that step: converged=True at n_iter=1
    rng = np.random.default_rng(0)
    S = jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)
    D = jnp.asarray(rng.normal(size=(12, 3)) * [2.0, 0.3, 1.0], jnp.float32)

    def obj(M, S, D):
        return solver.pair_hinge_loss(M, S, D, u=1.0, l=4.0)

    kw = dict(args=(S, D), regularizer="trace", lam=0.01)
    cold = solver.projected_gradient(obj, jnp.eye(3), **kw)
    assert not bool(cold.converged)
    warm = solver.projected_gradient(obj, cold.M, **kw)
    assert not bool(warm.converged)
    assert float(warm.history["objective"][-1]) <= float(cold.history["objective"][-1])


def test_nonfinite_gradient_at_the_start_raises():
    # finite objective, infinite gradient at M0 = I (sqrt at 0): M0 came back, n_iter=1, no error
    A = jnp.array([[2.0, 0.0], [0.0, -1.0]])

    def f(M):
        return jnp.sqrt(jnp.abs(M[0, 1])) + jnp.sum((M - A) ** 2)

    with pytest.raises(ValueError, match="gradient is not finite at the starting point M0"):
        solver.projected_gradient(f, jnp.eye(2))


def test_lam_without_regularizer_raises():
    # lam=5 without a regularizer was silently ignored
    A = jnp.asarray(A3)
    with pytest.raises(ValueError, match="lam=5.0 given without a regularizer"):
        solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), lam=5.0)
    solver.projected_gradient(sq_dist, jnp.eye(3), args=(A,), lam=0.0, max_iter=2)  # fine


def test_static_and_list_regularizer_kwargs(x64):
    from metriclearn import regularizers

    # a bool option was traced (l1's flag check refused the tracer); a list X reached jnp.mean
    A = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
    res = solver.projected_gradient(
        sq_dist,
        jnp.eye(2),
        args=(A,),
        regularizer="l1",
        lam=0.1,
        regularizer_kwargs={"offdiagonal": True},
        tol=1e-12,
    )
    # off-diagonal L1 only: the diagonal stays at A's, the off-diagonal is shrunk by lam / 2
    np.testing.assert_allclose(res.M, [[2.0, 0.45], [0.45, 1.0]], atol=1e-3)
    X = np.random.default_rng(0).normal(size=(10, 2))
    W = regularizers.knn_affinity(X, k=3)
    kw = dict(regularizer="laplacian", lam=0.1, max_iter=20)
    as_list = solver.projected_gradient(
        sq_dist, jnp.eye(2), args=(A,), regularizer_kwargs={"X": X.tolist(), "W": W}, **kw
    )
    as_array = solver.projected_gradient(
        sq_dist, jnp.eye(2), args=(A,), regularizer_kwargs={"X": jnp.asarray(X), "W": W}, **kw
    )
    np.testing.assert_allclose(as_list.M, as_array.M)


def test_concrete_jax_scalars_accepted_as_numbers():
    # jnp.asarray(0.5) was refused ("lam must be a number") while NumPy scalars were accepted
    A = jnp.asarray(A3, jnp.float32)
    kw = dict(args=(A,), regularizer="trace", max_iter=30)
    ref = solver.projected_gradient(sq_dist, jnp.eye(3), lam=0.5, tol=1e-6, step_size=1.0, **kw)
    res = solver.projected_gradient(
        sq_dist,
        jnp.eye(3),
        lam=jnp.asarray(0.5),
        tol=jnp.asarray(1e-6),
        step_size=jnp.asarray(1.0),
        min_eigenvalue=jnp.asarray(0.0),
        **kw,
    )
    np.testing.assert_allclose(res.M, ref.M)
    with pytest.raises(ValueError, match="lam must be a finite number"):
        solver.projected_gradient(sq_dist, jnp.eye(3), lam=jnp.asarray(-1.0), **kw)
    with pytest.raises(ValueError, match="lam must be a number"):
        solver.projected_gradient(sq_dist, jnp.eye(3), lam=jnp.ones(2), **kw)


def _first_row(M, min_eigenvalue):
    return M[:1]


def test_project_of_another_shape_raises():
    # a [1, 2] projection came back as res.M with converged=True
    A = jnp.asarray([[2.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"project must return an array of M's shape"):
        solver.projected_gradient(sq_dist, jnp.eye(2), args=(A,), project=_first_row)
