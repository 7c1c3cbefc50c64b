"""Tests of metriclearn.psd: projection, checks, factorisation M = LᵀL, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from metriclearn import psd


def _sym(rng, d):
    A = rng.standard_normal((d, d))
    return 0.5 * (A + A.T)


def _brute_projection(A, eps=0.0):
    S = 0.5 * (A + A.T)
    w, V = np.linalg.eigh(S)
    return V @ np.diag(np.maximum(w, eps)) @ V.T


@pytest.mark.usefixtures("x64")
def test_project_psd_is_frobenius_nearest():
    rng = np.random.default_rng(0)
    for d in (1, 2, 5):
        A = rng.standard_normal((d, d))  # not symmetric: the projection uses the symmetric part
        P = np.asarray(psd.project_psd(A))
        np.testing.assert_allclose(P, _brute_projection(A), atol=1e-12)
        np.testing.assert_array_equal(P, P.T)
        assert np.linalg.eigvalsh(P).min() >= -1e-12
        assert psd.is_psd(P)
        # no random PSD matrix is closer to A than P (Higham 1988)
        dist = np.linalg.norm(A - P)
        for _ in range(50):
            B = rng.standard_normal((d, d))
            Q = P + 0.1 * (B @ B.T) / d
            Q = _brute_projection(Q + 0.05 * _sym(rng, d))
            assert np.linalg.norm(A - Q) >= dist - 1e-12
    # already PSD: unchanged
    B = rng.standard_normal((4, 4))
    M = B @ B.T
    np.testing.assert_allclose(psd.project_psd(M), M, atol=1e-12)


def test_project_psd_eps_and_float32():
    rng = np.random.default_rng(1)
    S = _sym(rng, 6).astype(np.float32)
    P = psd.project_psd(S, eps=0.5)
    assert P.dtype == jnp.float32
    w = np.linalg.eigvalsh(np.asarray(P, dtype=np.float64))
    assert w.min() >= 0.5 - 1e-5
    np.testing.assert_allclose(P, _brute_projection(S.astype(np.float64), 0.5), atol=1e-5)
    # jittable inner form agrees
    np.testing.assert_allclose(jax.jit(psd._project_psd)(S, 0.5), P, atol=1e-6)


def test_is_psd():
    rng = np.random.default_rng(2)
    B = rng.standard_normal((5, 3))
    M = B @ B.T  # rank 3, PSD
    assert psd.is_psd(M)
    assert psd.is_psd(np.zeros((3, 3)))
    assert psd.is_psd(np.eye(1))
    assert not psd.is_psd(-np.eye(3))
    assert not psd.is_psd(np.diag([1.0, 1.0, -0.1]))
    assert not psd.is_psd(np.array([[1.0, 2.0], [0.0, 1.0]]))  # not symmetric
    # relative tolerance: a tiny negative eigenvalue is accepted, at any scale
    E = np.diag([1.0, 1.0, -1e-9])
    assert psd.is_psd(E, tol=1e-6) and psd.is_psd(1e6 * E, tol=1e-6)
    assert not psd.is_psd(E, tol=1e-12)
    assert not psd.is_psd(np.diag([1.0, -1e-3]))
    assert psd.default_tol(np.float32, 4) > psd.default_tol(np.float64, 4)


def test_factor_full_rank_cholesky():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((4, 4))
    M = B @ B.T + 0.1 * np.eye(4)
    with jax.enable_x64(True):
        L = np.asarray(psd.factor(M))
        assert L.shape == (4, 4)
        np.testing.assert_allclose(L, np.triu(L), atol=0)  # Cholesky: upper-triangular L = Cᵀ
        np.testing.assert_allclose(L.T @ L, M, atol=1e-10)
        np.testing.assert_allclose(psd.components_to_metric(L), M, atol=1e-10)
    L32 = psd.factor(M.astype(np.float32))
    assert L32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(L32).T @ np.asarray(L32), M, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("x64")
def test_factor_rank_deficient_and_truncated():
    rng = np.random.default_rng(4)
    B = rng.standard_normal((2, 5))
    M = B.T @ B  # rank 2 in 5-D
    L = np.asarray(psd.factor(M))
    assert L.shape == (5, 5)
    np.testing.assert_allclose(L.T @ L, M, atol=1e-10)
    norms = np.linalg.norm(L, axis=1)
    assert np.all(np.diff(norms) <= 1e-12)  # rows by decreasing eigenvalue
    assert np.all(norms[2:] < 1e-6)
    L2 = np.asarray(psd.factor(M, n_components=2))
    assert L2.shape == (2, 5)
    np.testing.assert_allclose(L2.T @ L2, M, atol=1e-10)
    # truncation of a full-rank M = best rank-k approximation (Eckart-Young)
    C = rng.standard_normal((5, 5))
    F = C @ C.T
    w, V = np.linalg.eigh(F)
    best2 = V[:, -2:] @ np.diag(w[-2:]) @ V[:, -2:].T
    Lk = np.asarray(psd.factor(F, n_components=2))
    np.testing.assert_allclose(Lk.T @ Lk, best2, atol=1e-10)
    # a PSD matrix with rounding-level negative eigenvalues is accepted
    Mr = M + 1e-17 * _sym(rng, 5)
    Lr = np.asarray(psd.factor(Mr))
    np.testing.assert_allclose(Lr.T @ Lr, M, atol=1e-10)
    # Mahalanobis through L equals the quadratic form
    x, y = rng.standard_normal(5), rng.standard_normal(5)
    np.testing.assert_allclose(np.sum((L @ (x - y)) ** 2), (x - y) @ M @ (x - y), rtol=1e-10)


def test_factor_jittable_and_inner_form():
    rng = np.random.default_rng(5)
    B = rng.standard_normal((3, 3)).astype(np.float32)
    M = B @ B.T
    L = jax.jit(psd.factor)(M)  # traced: eigh path, no value checks
    np.testing.assert_allclose(np.asarray(L).T @ np.asarray(L), M, rtol=1e-4, atol=1e-4)
    L1 = jax.jit(psd._factor_eigh, static_argnums=1)(M, 1)
    assert L1.shape == (1, 3)


def test_symmetrize_and_components_to_metric():
    A = np.array([[1.0, 2.0], [0.0, 3.0]])
    np.testing.assert_allclose(psd.symmetrize(A), [[1.0, 1.0], [1.0, 3.0]])
    L = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(psd.components_to_metric(L), [[1.0, 1.0], [1.0, 1.0]])
    assert psd.is_psd(psd.components_to_metric(np.random.default_rng(0).standard_normal((2, 4))))


def test_bad_input():
    ok = np.eye(3)
    for f in (psd.project_psd, psd.is_psd, psd.factor, psd.symmetrize):
        with pytest.raises(ValueError, match="M must be square"):
            f(np.ones((3, 2)))
        with pytest.raises(ValueError, match="M must be 2-dimensional"):
            f(np.ones(3))
        with pytest.raises(ValueError, match="M contains 1 NaN"):
            f(np.diag([1.0, np.nan, 1.0]))
        with pytest.raises(ValueError, match="M must be at least 1x1"):
            f(np.ones((0, 0)))
        with pytest.raises(ValueError, match="numeric"):
            f(np.array([["a"]]))
    with pytest.raises(ValueError, match="M must be positive semi-definite"):
        psd.factor(np.diag([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="M must be symmetric"):
        psd.factor(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="n_components must be <= dimension 3"):
        psd.factor(ok, n_components=4)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_components"):
            psd.factor(ok, n_components=bad)
    for bad in (-1.0, float("nan"), "x", True):
        with pytest.raises(ValueError, match="tol"):
            psd.is_psd(ok, tol=bad)
        with pytest.raises(ValueError, match="tol"):
            psd.factor(ok, tol=bad)
        with pytest.raises(ValueError, match="eps"):
            psd.project_psd(ok, eps=bad)
    with pytest.raises(ValueError, match="L must be 2-dimensional"):
        psd.components_to_metric(np.ones(3))
    with pytest.raises(ValueError, match="L contains"):
        psd.components_to_metric(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="L needs at least 1 rows"):
        psd.components_to_metric(np.ones((0, 3)))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(psd.is_psd)(jnp.eye(2))


def test_project_psd_gradient_finite_at_repeated_eigenvalues(x64):
    # before: jax.grad through project_psd at M = I (eigh's eigenvector derivative) was all NaN
    g = jax.grad(lambda M: jnp.sum(psd.project_psd(M) ** 2))(jnp.eye(3))
    np.testing.assert_allclose(g, 2.0 * np.eye(3), atol=1e-12)  # P(I + E) = I + sym(E) near I
    # against central finite differences at a repeated positive and a repeated negative eigenvalue
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    M = Q @ np.diag([2.0, 2.0, -1.0, -1.0]) @ Q.T
    E = rng.standard_normal((4, 4))
    h = 1e-6
    fd = (_brute_projection(M + h * E) - _brute_projection(M - h * E)) / (2 * h)
    _, jvp = jax.jvp(psd.project_psd, (jnp.asarray(M),), (jnp.asarray(E),))
    np.testing.assert_allclose(jvp, fd, atol=1e-7)
    # and at generic points, with an eigenvalue floor, forward and reverse mode
    A = jnp.asarray(rng.standard_normal((3, 3)))
    check_grads(lambda X: psd.project_psd(X, eps=0.1), (A,), order=1, modes=("fwd", "rev"))


def test_huge_entries_stay_finite_in_float32():
    # before: NaN for entries near the float32 maximum (M + Mᵀ overflowed; eigh failed)
    A = np.array([[2.0, 0.5], [0.5, -1.0]])
    big = (A * 1e38).astype(np.float32)
    want = _brute_projection(A) * 1e38
    for P in (psd.project_psd(big), jax.jit(psd.project_psd)(big)):
        assert np.all(np.isfinite(np.asarray(P)))
        np.testing.assert_allclose(np.asarray(P, np.float64), want, rtol=1e-5, atol=1e32)
    L = np.asarray(psd.factor(psd.project_psd(big)), np.float64)
    np.testing.assert_allclose(L.T @ L, want, rtol=1e-5, atol=1e32)


def test_half_precision_is_accepted_and_computed_in_float32():
    """bfloat16 / float16 raised inside NumPy (np.finfo: "not inexact") or XLA ("Unsupported dtype"
    in eigh / cholesky)."""
    for dt in (jnp.bfloat16, jnp.float16):
        M = jnp.array([[2.0, 1.0], [1.0, 2.0]], dt)
        assert psd.is_psd(M) and not psd.is_psd(-M)
        assert psd.default_tol(dt, 2) == pytest.approx(20 * float(jnp.finfo(dt).eps))
        P = psd.project_psd(jnp.array([[1.0, 0.0], [0.0, -2.0]], dt))
        assert P.dtype == jnp.float32
        np.testing.assert_allclose(P, [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
        for kw in ({}, {"n_components": 1}):
            L = psd.factor(M, **kw)
            assert L.dtype == jnp.float32
        np.testing.assert_allclose(
            psd.factor(M).T @ psd.factor(M), M.astype(jnp.float32), atol=1e-5
        )
        assert jax.jit(psd._project_psd)(M).dtype == jnp.float32


def test_asymmetry_tolerance_is_relative_to_the_largest_entry():
    """The code scaled tol by max(max|M|, max|eig|) (= d for ones(d, d)), not by max|M| as
    documented: an entry off by 5e-3 = 42x tol·max|M| was accepted."""
    d = 100
    M = np.ones((d, d), np.float32)
    M[0, 1] += 5e-3
    assert np.abs(M - M.T).max() > psd.default_tol(M.dtype, d) * np.abs(M).max()
    assert not psd.is_psd(M)
    with pytest.raises(ValueError, match="must be symmetric"):
        psd.factor(M)
    M[0, 1] = 1.0 + 0.5 * psd.default_tol(M.dtype, d)  # within the documented bound
    assert psd.is_psd(M)


@pytest.mark.parametrize("bad", [np.int32, "foo", np.complex64, object, None])  # None: float64
def test_default_tol_rejects_non_float_dtypes(bad):
    """An integer dtype raised NumPy's "not inexact", an unknown name a TypeError."""
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        psd.default_tol(bad, 3)
    with pytest.raises(ValueError, match="dim must be a non-negative integer"):
        psd.default_tol(np.float32, -1)
    assert psd.default_tol(jnp.bfloat16, np.int64(2)) == pytest.approx(20 * 2.0**-7)
