"""Tests of metriclearn.regularizers: brute-force values, gradients, priors, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from metriclearn import regularizers as R


def spd(d, seed=0):
    A = np.random.RandomState(seed).randn(d, d)
    return A @ A.T / d + 0.5 * np.eye(d)


def test_values_against_loops(x64):
    rng = np.random.RandomState(0)
    d = 4
    M = rng.randn(d, d)
    assert np.isclose(
        R.frobenius(jnp.asarray(M)), sum(M[i, j] ** 2 for i in range(d) for j in range(d))
    )
    assert np.isclose(R.trace(jnp.asarray(M)), sum(M[i, i] for i in range(d)))
    assert np.isclose(R.l1(jnp.asarray(M)), sum(abs(M[i, j]) for i in range(d) for j in range(d)))
    off = sum(abs(M[i, j]) for i in range(d) for j in range(d) if i != j)
    assert np.isclose(R.l1(jnp.asarray(M), offdiagonal=True), off)
    assert np.isclose(
        R.l21(jnp.asarray(M)), sum(np.sqrt(sum(M[i, j] ** 2 for j in range(d))) for i in range(d))
    )


def test_logdet_divergence_accurate_near_the_prior_in_float32():
    # a metric 1e-3 away from its prior in d = 100: the divergence (~5e-5) is far below the rounding
    # of tr - logdet - d in float32 (~1e-5); the eigenvalue form keeps a few ulps of the value itself
    rng = np.random.default_rng(3)
    d = 100
    M0 = spd(d, 4)
    E = rng.normal(size=(d, d))
    M = M0 + 1e-3 * (E + E.T) / np.sqrt(d)
    C0inv = np.linalg.inv(np.linalg.cholesky(M0))
    mu = np.linalg.eigvalsh(C0inv @ (M - M0) @ C0inv.T)
    expect = np.sum(mu - np.log1p(mu))  # float64 reference
    f32 = jnp.asarray(M, jnp.float32), jnp.asarray(M0, jnp.float32)
    got = float(R.logdet_divergence(*f32))
    assert abs(got - expect) < 1e-3 * expect
    W = jnp.asarray(C0inv, jnp.float32)
    got_w = float(R.logdet_divergence_whitened(*f32, W))
    assert abs(got_w - expect) < 1e-3 * expect
    # the gradient M0^-1 - M^-1 from the eigenvalue form (exact also at M = M0, all eigenvalues equal)
    g = jax.grad(lambda A: R.logdet_divergence_whitened(A, *f32[1:], W))(f32[0])
    G = np.linalg.inv(M0) - np.linalg.inv(M)
    assert np.max(np.abs(np.asarray(g, np.float64) - G)) < 1e-3 * np.max(np.abs(G))
    g0 = jax.grad(lambda A: R.logdet_divergence(A, f32[1]))(f32[1])
    assert np.all(np.isfinite(g0)) and float(jnp.max(jnp.abs(g0))) < 1e-4


def test_logdet_divergence_far_below_the_prior_in_float32():
    """A positive-definite M far below its prior: 1 + mu rounded M's small eigenvalues away in
    float32 (M = 1e-8 I against I gave mu = -1 exactly: an infinite divergence; 1e-7 I lost 1.2 %),
    which stopped SDML on pairs scaled by 1e3 ("not finite at the starting point")."""
    d = 3
    M0 = spd(d, 1)
    C0 = np.linalg.cholesky(M0)
    W = jnp.asarray(np.linalg.inv(C0), jnp.float32)
    for s in (0.3, 1e-4, 1e-7, 1e-8, 1e-12):
        lam = s * np.array([1.0, 2.0, 3.0])
        Q = np.linalg.qr(np.random.RandomState(0).randn(d, d))[0]
        M = C0 @ (Q * lam) @ Q.T @ C0.T  # whitened M has eigenvalues lam
        expect = np.sum(lam - 1.0 - np.log(lam))
        f32 = jnp.asarray(M, jnp.float32), jnp.asarray(M0, jnp.float32)
        for got in (R.logdet_divergence(*f32), R.logdet_divergence_whitened(*f32, W)):
            np.testing.assert_allclose(float(got), expect, rtol=1e-5)
        g = jax.grad(R.logdet_divergence)(*f32)
        G = np.linalg.inv(M0) - np.linalg.inv(M)
        np.testing.assert_allclose(
            np.asarray(g, np.float64), G, rtol=0, atol=1e-3 * np.abs(G).max()
        )
    # still inf outside the cone, with a zero gradient
    bad = jnp.asarray(-1e-3 * M0, jnp.float32)
    assert float(R.logdet_divergence(bad, jnp.asarray(M0, jnp.float32))) == np.inf
    g = jax.grad(lambda A: R.logdet_divergence(A, jnp.asarray(M0, jnp.float32)))(bad)
    assert np.all(np.asarray(g) == 0)


def test_sdml_scaled_pairs_are_fitted_far_from_the_prior():
    """SDML with the identity prior on pairs scaled by 1e3-1e10 starts far below the prior; its
    LogDet term was inf there in float32 and the fit refused to start. M scales as 1 / s^2."""
    from metriclearn.convex.sdml import fit_sdml

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    P = np.stack([X[rng.integers(0, 20, 2)] for _ in range(30)])
    y = np.where(np.arange(30) % 2, 1, -1)
    ref = np.asarray(fit_sdml(P * 1e3, y).M, np.float64) * 1e6
    for s in (1e5, 1e10):
        M = np.asarray(fit_sdml(P * s, y).M, np.float64) * s**2
        np.testing.assert_allclose(M, ref, rtol=0, atol=1e-3 * np.abs(ref).max())


def test_logdet_divergence_whitened_rejects_bad_inputs():
    M0 = jnp.asarray(spd(3, 8), jnp.float32)
    W = jnp.asarray(np.linalg.inv(np.linalg.cholesky(spd(3, 8))), jnp.float32)
    M = 1.1 * M0
    assert np.isclose(
        float(R.logdet_divergence_whitened(M, M0, W)), float(R.logdet_divergence(M, M0)), rtol=1e-4
    )
    with pytest.raises(ValueError, match="W must be"):
        R.logdet_divergence_whitened(M, M0, W[:2, :2])
    with pytest.raises(ValueError, match="whiten"):
        R.logdet_divergence_whitened(M, M0, jnp.eye(3))
    with pytest.raises(ValueError, match="finite|NaN"):
        R.logdet_divergence_whitened(M, M0, W.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="positive definite"):
        R.logdet_divergence_whitened(M, jnp.diag(jnp.array([1.0, 0.0, 1.0])), W)
    # traced inputs (inside a solver) are not checked, and the jitted value is the same
    jitted = jax.jit(R.logdet_divergence_whitened)(M, M0, W)
    assert np.isclose(float(jitted), float(R.logdet_divergence(M, M0)), rtol=1e-4)


def test_trace_is_nuclear_norm_on_psd(x64):
    M = spd(5)
    assert np.isclose(R.trace(jnp.asarray(M)), np.linalg.norm(M, "nuc"))


def test_logdet_divergence_formula(x64):
    M, M0 = spd(4, 1), spd(4, 2)
    A = M @ np.linalg.inv(M0)
    expect = np.trace(A) - np.log(np.linalg.det(A)) - 4
    assert np.isclose(R.logdet_divergence(jnp.asarray(M), jnp.asarray(M0)), expect)
    assert abs(float(R.logdet_divergence(jnp.asarray(M0), jnp.asarray(M0)))) < 1e-10
    assert np.isclose(R.logdet_divergence(2.0 * jnp.eye(3), jnp.eye(3)), 3 * (2 - np.log(2) - 1))
    jitted = jax.jit(R.logdet_divergence)(jnp.asarray(M), jnp.asarray(M0))
    assert np.isclose(jitted, expect)


def test_logdet_outside_domain_is_inf_not_nan(x64):
    bad = jnp.diag(jnp.array([1.0, -1.0, 2.0]))
    val = R.logdet_divergence(bad, jnp.eye(3))
    assert np.isinf(val) and val > 0
    g = jax.grad(R.logdet_divergence)(bad, jnp.eye(3))
    assert np.all(np.isfinite(g))
    sing = jnp.diag(jnp.array([1.0, 0.0, 2.0]))
    assert np.isinf(R.logdet_divergence(sing, jnp.eye(3)))
    with pytest.raises(ValueError, match="positive definite"):
        R.logdet_divergence(jnp.eye(3), jnp.diag(jnp.array([1.0, 0.0, 1.0])))
    with pytest.raises(ValueError, match="symmetric"):
        R.logdet_divergence(jnp.eye(2), jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        R.logdet_divergence(jnp.eye(3), jnp.eye(2))


def test_laplacian_against_double_loop(x64):
    rng = np.random.RandomState(3)
    n, d = 7, 3
    X = rng.randn(n, d)
    W = np.abs(rng.randn(n, n))  # not symmetric: the term uses its symmetric part
    M = spd(d, 4)
    loop = 0.5 * sum(
        W[i, j] * (X[i] - X[j]) @ M @ (X[i] - X[j]) for i in range(n) for j in range(n)
    )
    assert np.isclose(R.laplacian(jnp.asarray(M), jnp.asarray(X), jnp.asarray(W)), loop)


def test_knn_affinity():
    X = np.random.RandomState(0).randn(12, 2)
    W = np.asarray(R.knn_affinity(X, k=3))
    assert np.allclose(W, W.T) and np.all(np.diag(W) == 0) and np.all(W >= 0)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    for i in range(12):
        nn = np.argsort(d2[i])[:3]
        assert np.all(W[i, nn] > 0)
    with pytest.raises(ValueError, match="k must be smaller"):
        R.knn_affinity(X, k=12)
    with pytest.raises(ValueError, match="sigma"):
        R.knn_affinity(X, k=2, sigma=-1.0)


def test_gradients(x64):
    rng = np.random.RandomState(5)
    d = 3
    M = jnp.asarray(spd(d, 6) + 0.1 * rng.randn(d, d))  # generic (no zero entries)
    M0 = jnp.asarray(spd(d, 7))
    X = jnp.asarray(rng.randn(6, d))
    W = jnp.asarray(np.abs(rng.randn(6, 6)))
    for f in (R.frobenius, R.trace, R.l1, R.l21):
        check_grads(f, (M,), order=1, modes=("rev",))
    Ms = 0.5 * (M + M.T)
    check_grads(lambda A: R.logdet_divergence(A, M0), (Ms,), order=1, modes=("rev",))
    check_grads(lambda A: R.laplacian(A, X, W), (M,), order=1, modes=("rev",))
    # logdet gradient = M0^-1 - M^-1 (symmetric M)
    g = jax.grad(lambda A: R.logdet_divergence(A, M0))(Ms)
    np.testing.assert_allclose(g, np.linalg.inv(M0) - np.linalg.inv(Ms), atol=1e-8)
    # l21 safe at a zero row
    Z = M.at[0].set(0.0)
    assert np.all(np.isfinite(jax.grad(R.l21)(Z)))


def test_soft_threshold():
    M = jnp.array([[1.0, -0.3], [0.05, -2.0]])
    np.testing.assert_allclose(R.soft_threshold(M, 0.1), [[0.9, -0.2], [0.0, -1.9]], atol=1e-6)
    np.testing.assert_allclose(
        R.soft_threshold(M, 0.1, offdiagonal=True), [[1.0, -0.2], [0.0, -2.0]], atol=1e-6
    )


def test_registry():
    assert set(R.REGULARIZERS) == {"frobenius", "trace", "logdet", "l1", "l21", "laplacian"}
    assert R.get_regularizer("trace") is R.trace
    assert R.get_regularizer(R.l1) is R.l1
    with pytest.raises(ValueError, match="valid: frobenius, l1, l21, laplacian, logdet, trace"):
        R.get_regularizer("nuclear")
    for name, f in R.REGULARIZERS.items():
        if name in ("logdet", "laplacian"):
            continue
        assert jnp.isfinite(jax.jit(f)(jnp.eye(3)))


def test_prior_matrix():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 4)
    X[:, 2] = 3.0  # constant feature (as digits' pixels)
    assert np.allclose(R.prior_matrix("identity", X), np.eye(4))
    C = np.asarray(R.prior_matrix("covariance", X))
    w = np.linalg.eigvalsh(C)
    assert np.all(np.isfinite(C)) and w.min() > 0
    R1 = np.asarray(R.prior_matrix("random", X, key=jax.random.key(1)))
    R2 = np.asarray(R.prior_matrix("random", X, key=jax.random.key(1)))
    np.testing.assert_array_equal(R1, R2)
    assert np.linalg.eigvalsh(R1).min() >= 0.49
    np.testing.assert_allclose(R.prior_matrix(2 * np.eye(4), X), 2 * np.eye(4))
    with pytest.raises(ValueError, match="positive definite"):
        R.prior_matrix(-np.eye(4), X)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        R.prior_matrix(np.eye(3), X)
    with pytest.raises(ValueError, match="unknown prior"):
        R.prior_matrix("lda", X)
    with pytest.raises(ValueError, match="NaN"):
        R.prior_matrix(np.full((4, 4), np.nan), X)


def test_float32_prior_numerically_singular_raises():
    # condition number 1e9 is positive definite in float64 but singular in float32: before, the
    # divergence of M = I from it came out inf (garbage Cholesky whitening), with no error
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    M0 = (Q * np.array([1.0, 1.0, 1e-9])) @ Q.T
    with pytest.raises(ValueError, match="numerically singular in float32"):
        R.logdet_divergence(jnp.eye(3), jnp.asarray(M0, jnp.float32))
    with jax.enable_x64(True):  # fine in float64: D = sum(1/w - 1 + log w) over the eigenvalues
        expect = 1e9 - 1 + np.log(1e-9)
        assert np.isclose(float(R.logdet_divergence(jnp.eye(3), jnp.asarray(M0))), expect)


def test_laplacian_and_knn_graph_translation_invariant_in_float32():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    W = np.abs(rng.normal(size=(30, 30)))
    B = rng.normal(size=(3, 3))
    M = B @ B.T
    ref = 0.5 * sum(
        W[i, j] * (X[i] - X[j]) @ M @ (X[i] - X[j]) for i in range(30) for j in range(30)
    )
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    # before: 25% off at an offset of 1e4 (deg x_i - sum_j W_ij x_j cancelled)
    for off in (0.0, 1e4):
        assert abs(float(R.laplacian(f32(M), f32(X + off), f32(W))) - ref) < 1e-3 * ref
    # before: 30 of the k-NN edges changed and weights moved by 0.78 when X was shifted by 1e3
    G = np.asarray(R.knn_affinity(f32(X), k=4))
    G_off = np.asarray(R.knn_affinity(f32(X + 1e3), k=4))
    assert np.array_equal(G > 0, G_off > 0)
    np.testing.assert_allclose(G_off, G, atol=2e-3)


def test_knn_affinity_default_sigma_ignores_duplicates():
    # before: sigma = median k-NN distance = 0 with duplicated points, so every other edge had
    # weight exp(-d / tiny) = 0 and points 4, 5 were cut off from the graph
    X = np.random.default_rng(0).normal(size=(6, 2))
    X[1] = X[2] = X[3] = X[0]
    W = np.asarray(R.knn_affinity(X, k=2))
    assert np.all(W.sum(1) > 0)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    knn = np.sort(np.sqrt(d2), axis=1)[:, :2]
    sigma = np.median(knn[knn > 0])
    i, j = 4, int(np.argmin(d2[4]))
    assert np.isclose(W[i, j], np.exp(-d2[i, j] / (2 * sigma**2)), rtol=1e-5)


def test_bad_arguments_raise_value_error():
    X = np.random.default_rng(1).normal(size=(8, 2))
    for bad in ("a", True, [1.0]):
        with pytest.raises(ValueError, match="sigma"):
            R.knn_affinity(X, k=2, sigma=bad)
    with pytest.raises(ValueError, match="unknown regularizer"):
        R.get_regularizer(["trace"])  # before: TypeError (unhashable)
    # an int seed is a key, as everywhere in metriclearn (before: TypeError)
    np.testing.assert_array_equal(
        R.prior_matrix("random", X, key=3), R.prior_matrix("random", X, key=jax.random.key(3))
    )
    # an inverse covariance outside float32's range raises (before: inf entries)
    with pytest.raises(ValueError, match="not representable"):
        R.prior_matrix("covariance", np.asarray(X * 1e-20, np.float32))


def test_l21_at_extreme_scales_and_laplacian_checks():
    # sum(M * M) underflowed (1e-19 -> l21 = 0, gradient 0) or overflowed (1e20 -> inf) in float32
    for s in (1e-19, 1e20):
        M = jnp.full((2, 2), s, jnp.float32)
        np.testing.assert_allclose(float(R.l21(M)), 2 * np.sqrt(2) * s, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(jax.grad(R.l21)(M)), np.sqrt(0.5), rtol=1e-5)
    # mismatched shapes were a raw JAX TypeError; negative affinities were accepted (unbounded below)
    with pytest.raises(ValueError, match=r"laplacian needs M \[d, d\], X \[n, d\] and W \[n, n\]"):
        R.laplacian(jnp.eye(3), jnp.ones((4, 2)), jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="W must hold non-negative affinities"):
        R.laplacian(jnp.eye(2), jnp.ones((4, 2)), -jnp.ones((4, 4)))


def test_logdet_and_soft_threshold_refuse_what_they_cannot_mean():
    """M of another shape was blamed on M0; an all-NaN M gave inf (as if outside the PD cone); a
    negative soft threshold enlarged the entries."""
    with pytest.raises(
        ValueError,
        match=r"M and M0 must have the same shape \[d, d\]: M is \[4, 4\], M0 is \[3, 3\]",
    ):
        R.logdet_divergence(jnp.eye(4), jnp.eye(3))
    with pytest.raises(ValueError, match="M contains .*NaN or inf"):
        R.logdet_divergence(jnp.full((3, 3), jnp.nan), jnp.eye(3))
    with pytest.raises(ValueError, match="M contains .*NaN or inf"):
        R.logdet_divergence_whitened(jnp.full((2, 2), jnp.nan), jnp.eye(2), jnp.eye(2))
    with pytest.raises(ValueError, match="threshold must be a non-negative number"):
        R.soft_threshold(jnp.array([[2.0, -3.0], [1.5, 4.0]]), -1.0)
    # traced values still pass (inside a solver)
    assert float(jax.jit(R.logdet_divergence)(2.0 * jnp.eye(3), jnp.eye(3))) > 0
    out = jax.jit(R.soft_threshold)(jnp.array([[2.0, -3.0]]).reshape(1, 2), 1.0)
    np.testing.assert_allclose(out, [[1.0, -2.0]])


def test_prior_matrix_refuses_bad_ridge():
    # ridge=-1 gave an indefinite "prior" (eigenvalues -4.3, -3.0), ridge=nan a raw LinAlgError
    X = np.random.default_rng(0).normal(size=(20, 3))
    for ridge in (-1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="ridge must be"):
            R.prior_matrix("covariance", X, ridge=ridge)
    P = np.asarray(R.prior_matrix("covariance", X, ridge=0.0))  # the plain inverse covariance
    np.testing.assert_allclose(P, np.linalg.inv(np.cov(X, rowvar=False)), rtol=1e-4)
    Xs = np.c_[X, X[:, 0]]  # singular covariance: no inverse without a ridge
    with pytest.raises(ValueError, match="covariance of X is singular.*ridge > 0"):
        R.prior_matrix("covariance", Xs, ridge=0)
    assert np.linalg.eigvalsh(np.asarray(R.prior_matrix("covariance", Xs)))[0] > 0


def test_l1_flags_must_be_bools():
    # offdiagonal="False" is truthy: l1 dropped the diagonal, soft_threshold kept it
    M = jnp.array([[1.0, 0.5], [0.5, 1.0]])
    with pytest.raises(ValueError, match="offdiagonal must be True or False"):
        R.l1(M, offdiagonal="False")
    with pytest.raises(ValueError, match="offdiagonal must be True or False"):
        R.soft_threshold(M, 0.2, offdiagonal="False")
    assert float(R.l1(M, offdiagonal=np.bool_(False))) == 3.0
    np.testing.assert_allclose(R.soft_threshold(M, 0.2, offdiagonal=True).diagonal(), [1.0, 1.0])


def test_logdet_fit_does_not_stall_on_the_cone_boundary():
    """A triplet-hinge fit with a LogDet regularizer on standardized wine (min_eigenvalue 0): the PSD
    projection's exact zero eigenvalues must count as outside the LogDet domain. The whitened
    difference rounded them to mu = -1 (inf) only sometimes, and a far-from-prior branch without a
    rounding threshold read them as +1e-8 (finite): either way the line search stepped onto the
    boundary, where the gradient is 1e5, and stalled after 3 iterations at 0.20-0.27 instead of
    reaching ~0.01."""
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    from metriclearn import solver

    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    d = X.shape[1]

    def obj(M, a, b):
        return solver.triplet_hinge_loss(M, a, b, margin=1.0)

    for seed in (0, 3):
        rng = np.random.RandomState(seed)
        idx = rng.randint(0, len(X), size=(400, 3))
        keep = (y[idx[:, 0]] == y[idx[:, 1]]) & (y[idx[:, 0]] != y[idx[:, 2]])
        T = X[idx[keep]]
        a = jnp.asarray(T[:, 0] - T[:, 1], jnp.float32)
        b = jnp.asarray(T[:, 0] - T[:, 2], jnp.float32)
        r = solver.projected_gradient(
            obj, jnp.eye(d), args=(a, b), regularizer="logdet",
            regularizer_kwargs={"M0": jnp.eye(d)}, lam=1e-2,
        )  # fmt: skip
        total = float(obj(r.M, a, b) + 1e-2 * R.logdet_divergence(r.M, jnp.eye(d)))
        assert total < 0.05, (seed, int(r.n_iter), total)
