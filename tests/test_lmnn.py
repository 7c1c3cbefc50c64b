"""LMNN: objective vs a brute-force loop, closed-form gradient vs finite differences, fitting, inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from sklearn.neighbors import KNeighborsClassifier

from metriclearn.constraints import target_neighbors
from metriclearn.convex import lmnn
from metriclearn.convex.lmnn import fit_lmnn, lmnn_loss


def brute_objective(L, X, y, targets, reg):
    """eps(L) written as the triple loop of the paper."""
    Z = X @ L.T
    n = len(X)
    pull = push = 0.0
    for i in range(n):
        for j in targets[i]:
            dij = float(np.sum((Z[i] - Z[j]) ** 2))
            pull += dij
            for m in range(n):
                if y[m] != y[i]:
                    push += max(0.0, 1.0 + dij - float(np.sum((Z[i] - Z[m]) ** 2)))
    return (reg * pull + (1.0 - reg) * push) / n


def tiny_problem(n=16, d=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, d)) + 0.8 * y[:, None]
    L = rng.normal(size=(2, d)) * 0.7
    return X, y, L


def noisy_dims(n_per_class=40, seed=0):
    """Two informative dims (3 well-separated classes) drowned by 6 high-variance noise dims."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    y = np.repeat(np.arange(3), n_per_class)
    signal = centers[y] + 0.5 * rng.normal(size=(len(y), 2))
    noise = 6.0 * rng.normal(size=(len(y), 6))
    return np.concatenate([signal, noise], axis=1), y


def knn_acc(Xtr, ytr, Xte, yte):
    return KNeighborsClassifier(3).fit(Xtr, ytr).score(Xte, yte)


def test_objective_matches_brute_force_loop(x64):
    X, y, L = tiny_problem()
    targets = target_neighbors(X, y, k=2)
    for reg in (0.5, 0.2):
        got = float(lmnn_loss(L, X, y, targets, regularization=reg))
        np.testing.assert_allclose(got, brute_objective(L, X, y, targets, reg), rtol=1e-10)
    # a non-trivial problem: some hinges active, some not
    Z = X @ L.T
    d = ((Z[:, None] - Z[None]) ** 2).sum(-1)
    hinge = 1 + d[np.arange(16)[:, None], targets][:, :, None] - d[:, None, :]
    other = y[:, None] != y[None, :]
    active = (hinge > 0) & other[:, None, :]
    assert 0 < active.sum() < other.sum() * 2


def test_block_sizes_agree_and_jit(x64):
    X, y, L = tiny_problem()
    targets = target_neighbors(X, y, k=2)
    ref_v, ref_g = jax.value_and_grad(lmnn_loss)(L, X, y, targets, block_size=16)
    for b in (1, 4, 8):
        fn = jax.jit(jax.value_and_grad(lambda L, b=b: lmnn_loss(L, X, y, targets, block_size=b)))
        v, g = fn(L)
        np.testing.assert_allclose(v, ref_v, rtol=1e-12)
        np.testing.assert_allclose(g, ref_g, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="block_size"):
        lmnn_loss(L, X, y, targets, block_size=5)


def test_gradient_matches_finite_differences(x64):
    X, y, L = tiny_problem()
    targets = target_neighbors(X, y, k=2)

    def f(L, X, reg):
        return lmnn_loss(L, X, y, targets, regularization=reg)

    check_grads(f, (jnp.asarray(L), jnp.asarray(X), 0.3), order=1, modes=["rev"], eps=1e-6)
    # and against autodiff of the brute-force formula in jax
    Xj, Lj = jnp.asarray(X), jnp.asarray(L)

    def dense(L):
        Z = Xj @ L.T
        d = jnp.sum((Z[:, None] - Z[None]) ** 2, -1)
        dt = jnp.take_along_axis(d, jnp.asarray(targets), axis=1)
        other = jnp.asarray(y[:, None] != y[None, :])
        h = jnp.where(other[:, None, :], jax.nn.relu(1 + dt[:, :, None] - d[:, None, :]), 0.0)
        return (0.5 * dt.sum() + 0.5 * h.sum()) / len(X)

    np.testing.assert_allclose(
        jax.grad(lmnn_loss)(Lj, Xj, y, targets), jax.grad(dense)(Lj), rtol=1e-9
    )


def test_padding_rows_do_not_change_objective(x64):
    X, y, L = tiny_problem(n=13)
    targets = target_neighbors(X, y, k=2)
    n_pad = lmnn._bucket(13)
    assert n_pad >= 13 and n_pad % lmnn._block_rows(n_pad, 2) == 0
    pad = 16 - 13
    Xp = np.concatenate([X, np.zeros((pad, 3))])
    yp = np.concatenate([y, -np.ones(pad, int)])
    tp = np.concatenate([targets, np.repeat(np.arange(13, 16)[:, None], 2, 1)])
    valid = np.arange(16) < 13
    args = (jnp.asarray(yp, jnp.int32), jnp.asarray(valid), jnp.asarray(tp, jnp.int32), 0.5, 4)
    v, g = jax.value_and_grad(lmnn._loss)(jnp.asarray(L), jnp.asarray(Xp), *args)
    v_ref, g_ref = jax.value_and_grad(lmnn_loss)(L, X, y, targets)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-14)


def test_far_from_origin_matches_centred_data():
    # float32 |a|^2 + |b|^2 - 2 a.b cancels far from the origin: iris shifted by 1e4 gave an
    # objective of 132 instead of 4.0 at L = I, and fit_lmnn stopped at 118 instead of 1.5
    X, y, L = tiny_problem(n=30)
    X = X - X.mean(0)
    targets = target_neighbors(X, y, k=2)
    ref = float(lmnn_loss(L, X, y, targets))
    np.testing.assert_allclose(float(lmnn_loss(L, X + 1e4, y, targets)), ref, rtol=1e-5)
    a = fit_lmnn(X, y, n_neighbors=2, max_iter=5)
    b = fit_lmnn(X + 1e4, y, n_neighbors=2, max_iter=5)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5)
    np.testing.assert_allclose(b.components, a.components, rtol=1e-4, atol=1e-5)


def test_overflowing_scale_raises_instead_of_inf():
    X, y, _ = tiny_problem(n=30)
    with pytest.raises(ValueError, match="not finite.*rescale"):
        fit_lmnn(X.astype(np.float32) * 1e20, y, n_neighbors=2, max_iter=3)
    # the objective function itself: called on concrete arrays it raises too (was inf); traced
    # (under grad) it is not checked
    Xbig = X.astype(np.float32) * 1e20
    targets = target_neighbors(X, y, k=2)
    L = jnp.eye(X.shape[1], dtype=jnp.float32)
    with pytest.raises(ValueError, match="lmnn_loss: the objective at L is not finite"):
        lmnn_loss(L, Xbig, y, targets)
    assert np.isfinite(float(lmnn_loss(L, X.astype(np.float32), y, targets)))
    jax.grad(lambda L: lmnn_loss(L, Xbig, y, targets))(L)


def test_bucket_sizes():
    assert lmnn._bucket(1437) == lmnn._bucket(1438) == 1536
    assert lmnn._bucket(20000) == 20480
    for n in (2, 7, 100, 150, 999, 4097):
        b = lmnn._bucket(n)
        assert n <= b <= max(n * 1.125, 8) + 1e-9
        assert b % lmnn._block_rows(b, 3) == 0


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_fit_decreases_loss_and_improves_knn(solver):
    X, y = noisy_dims(n_per_class=50)
    test = np.arange(len(y)) % 3 == 0  # 100 training points: same bucket as the other fits
    Xtr, ytr, Xte, yte = X[~test], y[~test], X[test], y[test]
    res = fit_lmnn(Xtr, ytr, n_neighbors=3, init="identity", solver=solver, max_iter=300)
    L = np.asarray(res.components)
    assert L.shape == (8, 8) and np.all(np.isfinite(L))
    targets = target_neighbors(Xtr, ytr, k=3)
    start = float(lmnn_loss(np.eye(8), Xtr, ytr, targets))
    assert res.objective < 0.5 * start
    np.testing.assert_allclose(res.objective, float(lmnn_loss(L, Xtr, ytr, targets)), rtol=1e-4)
    assert res.n_iter >= 1
    base = knn_acc(Xtr, ytr, Xte, yte)
    learned = knn_acc(Xtr @ L.T, ytr, Xte @ L.T, yte)
    assert base < 0.85 and learned >= base + 0.1
    # the noise dims are shrunk relative to the signal dims
    M = L.T @ L
    assert np.diag(M)[:2].mean() > 10 * np.diag(M)[2:].mean()


def test_no_impostors_converges_cleanly():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 34)
    X = np.concatenate([100.0 * np.eye(3)[y], np.zeros((102, 5))], 1) + rng.normal(size=(102, 8))
    targets = target_neighbors(X, y, k=3)
    # at the start no point has an impostor: the push term is exactly zero
    pull_only = float(lmnn_loss(np.eye(8), X, y, targets, regularization=1.0))
    np.testing.assert_allclose(
        float(lmnn_loss(np.eye(8), X, y, targets)), 0.5 * pull_only, rtol=1e-6
    )
    res = fit_lmnn(X, y, init="identity")
    L = np.asarray(res.components)
    assert res.converged and np.all(np.isfinite(L)) and np.isfinite(res.objective)
    assert knn_acc(X @ L.T, y, X @ L.T, y) == 1.0


def test_n_components_and_inits():
    X, y = noisy_dims(n_per_class=15)
    for init in ("pca", "lda", "random"):
        res = fit_lmnn(X, y, n_components=2, init=init, max_iter=30, key=jax.random.key(0))
        assert res.components.shape == (2, 8) and np.all(np.isfinite(res.components))
    res = fit_lmnn(X, y, init=np.eye(8)[:2], max_iter=5)
    assert res.components.shape == (2, 8)


def test_float64_path(x64):
    X, y = noisy_dims(n_per_class=34)
    res = fit_lmnn(X, y, init="identity", max_iter=50)
    assert res.components.dtype == jnp.float64
    targets = target_neighbors(X, y, k=3)
    np.testing.assert_allclose(
        res.objective, float(lmnn_loss(res.components, X, y, targets)), rtol=1e-10
    )


def test_cross_validation_folds_share_one_compilation():
    X, y = noisy_dims(n_per_class=40)
    fit_lmnn(X[:97], y[:97], max_iter=3)
    before = lmnn._full_round._cache_size()
    fit_lmnn(X[:101], y[:101], max_iter=3)
    fit_lmnn(X[:104], y[:104], max_iter=3)
    assert lmnn._full_round._cache_size() == before


def test_bad_inputs():
    X, y = noisy_dims(n_per_class=7)
    with pytest.raises(ValueError, match=r"n_neighbors=7.*class 0 has 7"):
        fit_lmnn(X, y, n_neighbors=7)
    y_small = y.copy()
    y_small[y == 1] = [1, 1, 1, 1, 7, 7, 7]  # class 7 has 3 members
    with pytest.raises(ValueError, match=r"n_neighbors=3.*class 7 has 3"):
        fit_lmnn(X, y_small, n_neighbors=3)
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_lmnn(Xn, y)
    with pytest.raises(ValueError, match="NaN"):
        fit_lmnn(np.where(X > 5, np.inf, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_lmnn(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="labels but X has"):
        fit_lmnn(X, y[:-1])
    with pytest.raises(ValueError, match="n_components"):
        fit_lmnn(X, y, n_components=9)
    with pytest.raises(ValueError, match="2-dimensional"):
        fit_lmnn(X[0], y[:1])
    with pytest.raises(ValueError, match="unknown solver"):
        fit_lmnn(X, y, solver="adam")
    with pytest.raises(ValueError, match="regularization"):
        fit_lmnn(X, y, regularization=1.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        fit_lmnn(X, y, n_neighbors=0)
    with pytest.raises(ValueError, match="learn_rate"):
        fit_lmnn(X, y, solver="gd", learn_rate=-1.0)
    with pytest.raises(ValueError, match="tol"):
        fit_lmnn(X, y, tol=float("nan"))
    with pytest.raises(ValueError, match="max_iter"):
        fit_lmnn(X, y, max_iter=0)
    with pytest.raises(ValueError, match="unknown impostors"):
        fit_lmnn(X, y, impostors="some")


# ----------------------------------------------------------------------------------------------------
# active set


def test_nearest_masked_matches_argsort():
    rng = np.random.default_rng(0)
    d = rng.random((6, 256)).astype(np.float32)
    mask = rng.random((6, 256)) < 0.3
    mask[5] = False
    mask[5, :3] = True  # a row with fewer candidates than asked for
    idx, ok = jax.jit(lmnn._nearest_masked, static_argnums=2)(d, mask, 8)
    idx, ok = np.asarray(idx), np.asarray(ok)
    for i in range(6):
        want = [j for j in np.argsort(d[i]) if mask[i, j]][:8]
        assert list(idx[i][ok[i]]) == want
    assert ok[5].sum() == 3


def test_candidate_objective_with_all_candidates_equals_full_objective(x64):
    X, y, L = tiny_problem(n=24, d=4)
    L = np.random.default_rng(1).normal(size=(3, 4))
    targets = target_neighbors(X, y, k=2)
    n = len(X)
    # every differently labelled point as a candidate, padded to a fixed width with masked entries
    width = max(int(np.sum(y != y[i])) for i in range(n))
    cand = np.zeros((n, width), np.int32)
    ok = np.zeros((n, width), bool)
    for i in range(n):
        others = np.flatnonzero(y != y[i])
        cand[i, : len(others)] = others
        ok[i, : len(others)] = True
    valid = jnp.ones(n, bool)
    reg = jnp.asarray(0.3)
    args = (jnp.asarray(X), valid, jnp.asarray(targets), jnp.asarray(cand), jnp.asarray(ok), reg)
    value, grad = lmnn._candidate_terms(jnp.asarray(L), *args, 8)
    want_value, want_grad = jax.value_and_grad(lmnn_loss)(L, X, y, targets, regularization=0.3)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-8, atol=1e-12)
    # through the custom VJP used by the solver
    fun = lmnn._candidate_objective(*args, 8)
    np.testing.assert_allclose(np.asarray(jax.grad(fun)(jnp.asarray(L))), want_grad, rtol=1e-8)
    # fewer candidates give a lower bound
    lower = lmnn._candidate_terms(jnp.asarray(L), *args[:3], args[3][:, :3], args[4][:, :3], reg, 8)
    assert float(lower[0]) <= float(value) + 1e-12


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_active_set_reaches_the_full_objective_optimum(solver):
    X, y = noisy_dims(n_per_class=60)
    kw = dict(init="identity", max_iter=1000, solver=solver)
    full = fit_lmnn(X, y, impostors="all", **kw)
    active = fit_lmnn(X, y, impostors="active_set", **kw)
    assert active.converged
    targets = target_neighbors(X, y, k=3)
    # the reported objective is the exact one, not the restricted one
    np.testing.assert_allclose(
        active.objective, float(lmnn_loss(active.components, X, y, targets)), rtol=1e-5
    )
    np.testing.assert_allclose(active.objective, full.objective, rtol=2e-2)
    L = np.asarray(active.components)
    assert knn_acc(X @ L.T, y, X @ L.T, y) >= 0.95


def test_active_set_with_many_impostors_falls_back_to_full_rounds(monkeypatch):
    # overlapping classes: most points have far more than 16 active impostors at the start
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 40)
    X = rng.normal(size=(160, 5)) + 0.3 * y[:, None]
    monkeypatch.setattr(lmnn, "_MAX_CANDIDATES", 16)
    targets = target_neighbors(X, y, k=3)
    Z = X
    d = ((Z[:, None] - Z[None]) ** 2).sum(-1)
    radius = np.take_along_axis(d, targets, 1).max(1) + 1
    assert ((d < radius[:, None]) & (y[:, None] != y[None])).sum(1).max() > 16
    calls = []
    real = lmnn._full_round
    monkeypatch.setattr(lmnn, "_full_round", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = fit_lmnn(X, y, init="identity", impostors="active_set", max_iter=60)
    assert calls, "expected at least one round on the full objective"
    assert np.all(np.isfinite(res.components))
    np.testing.assert_allclose(
        res.objective, float(lmnn_loss(res.components, X, y, targets)), rtol=1e-5
    )
    start = float(lmnn_loss(np.eye(5), X, y, targets))
    assert res.objective < start


def test_failed_line_search_is_not_convergence():
    # every step away from L0 raises the objective by 1000 (a jump the gradient cannot see): the
    # line search fails at once, which used to count as a stall and so as convergence
    def jump(L):
        return jnp.sum((L - 2.0) ** 2) + 1e3 * (L[0, 0] != 1.0)

    L0 = jnp.ones((3, 3))
    state = lmnn._solver_state(L0, 1.0, solver="lbfgs", memory_size=10)
    L, it, conv, f, _ = jax.jit(
        lambda L0, s: lmnn._minimize(
            jump, L0, s, 100, jnp.float32(1e-6), solver="lbfgs", memory_size=10
        )
    )(L0, state)
    assert not bool(conv) and int(it) == 1
    # the best iterate is kept: the start
    np.testing.assert_array_equal(np.asarray(L), np.ones((3, 3)))
    assert float(f) == 9.0


def test_failed_round_ends_the_active_set_fit(monkeypatch):
    # a round that stops early without converging (a failed line search) ends the fit, unconverged,
    # instead of starting round after round from the same misleading solver state
    X, y = noisy_dims(n_per_class=20)
    calls = []
    real = lmnn._active_round

    def failing_round(L0, state, *args, **kwargs):
        calls.append(1)
        L, _, _, f, state = real(L0, state, *args[:-2], jnp.int32(1), args[-1], **kwargs)
        return L, jnp.int32(1), jnp.asarray(False), f, state

    monkeypatch.setattr(lmnn, "_active_round", failing_round)
    res = fit_lmnn(X, y, impostors="active_set", max_iter=200)
    assert not res.converged and res.n_iter == 1 and len(calls) == 1


def test_lmnn_loss_checks_regularization_and_block_size_as_fit_lmnn():
    # regularization=2.0 gave a negative "objective"; block_size=0 a ZeroDivisionError
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3)).astype(np.float32)
    y = np.repeat([0, 1, 2], 4)
    targets = target_neighbors(X, y, k=2)
    for kw in ({"regularization": 2.0}, {"regularization": -1.0}, {"regularization": float("nan")}):
        with pytest.raises(ValueError, match="regularization must be in"):
            lmnn.lmnn_loss(jnp.eye(3), X, y, targets, **kw)
    for b in (0, -1, 2.0):
        with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
            lmnn.lmnn_loss(jnp.eye(3), X, y, targets, block_size=b)
    # a class with one sample: the message does not suggest n_neighbors=0
    with pytest.raises(ValueError, match="at least two samples of every class"):
        lmnn.fit_lmnn(X, np.r_[y[:-1], 3], n_neighbors=1)
