"""Tests of the tuple/chunklet learners: RCA (chunklets), LSML (quadruplets), SCML (triplets).

Small synthetic data (3 classes in 4-D, one informative small-scale feature and three large noisy ones),
constraints from :mod:`metriclearn.constraints`. Shapes are shared between tests so each jitted program
compiles once per module.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from metriclearn import constraints, solver
from metriclearn import regularizers as R
from metriclearn.convex import rca, scml
from metriclearn.convex.lsml import fit_lsml, lsml_loss
from metriclearn.convex.rca import fit_rca
from metriclearn.convex.scml import fit_scml

N, D = 60, 4
SCML_KW = dict(n_basis=40, max_iter=2000, output_iter=500, batch_size=10)


def _data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(size=(n, d))
    X[:, 0] += 1.5 * y  # the class signal: a small-scale feature
    X[:, 1:] *= 3.0  # large-scale noise that the Euclidean metric over-weights
    return X.astype(np.float32), y


def _frac_triplets(T, M):
    """Fraction of triplets (a, p, n) with d_M(a, p) < d_M(a, n)."""
    M = np.asarray(M, np.float64)
    a, b = T[:, 0] - T[:, 1], T[:, 0] - T[:, 2]
    return float(np.mean(np.einsum("ij,jk,ik->i", a, M, a) < np.einsum("ij,jk,ik->i", b, M, b)))


def _frac_quads(Q, M):
    """Fraction of quadruplets (a, b, c, d) with d_M(a, b) < d_M(c, d)."""
    M = np.asarray(M, np.float64)
    a, b = Q[:, 0] - Q[:, 1], Q[:, 2] - Q[:, 3]
    return float(np.mean(np.einsum("ij,jk,ik->i", a, M, a) < np.einsum("ij,jk,ik->i", b, M, b)))


def _assert_psd_finite(M, tol=1e-5):
    M = np.asarray(M, np.float64)
    assert np.all(np.isfinite(M))
    np.testing.assert_allclose(M, M.T, atol=1e-6 * max(1.0, np.abs(M).max()))
    w = np.linalg.eigvalsh(M)
    assert w[0] >= -tol * max(1.0, np.abs(w).max())


@pytest.fixture(scope="module")
def data():
    X, y = _data()
    T = X[constraints.triplets(0, y, n_triplets=200)]
    Q = X[constraints.quadruplets(1, y, n_quadruplets=200)]
    ch = constraints.chunklets(2, y, n_chunks=15, chunk_size=3)
    return X, y, T, Q, ch


# ----------------------------------------------------------------------------------------------------
# RCA


def _rca_bruteforce(X, chunks, k=None):
    """Loop over chunklets in NumPy float64: C, its inverse square root (or the FLD + whitening)."""
    X = np.asarray(X, np.float64)
    centred = []
    for c in np.unique(chunks[chunks >= 0]):
        P = X[chunks == c]
        centred.append(P - P.mean(0))
    Z = np.vstack(centred)
    C = Z.T @ Z / len(Z)
    if k is None:
        w, U = np.linalg.eigh(C)
        return U @ np.diag(w**-0.5) @ U.T
    Xs = X[chunks >= 0]
    T = np.cov(Xs, rowvar=False)
    mu, V = scipy.linalg.eigh(C, T)  # ascending
    V = V[:, :k]
    return (V / np.sqrt(np.einsum("ij,jk,ki->i", V.T, C, V))[None, :]).T


def _rca_case():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 3)) * np.array([1.0, 2.0, 0.5])
    chunks = np.full(30, -1)
    chunks[:24] = np.repeat([7, 3, 11, 0, 5, 9, 2, 4], 3)  # non-contiguous ids, 6 points unassigned
    return X, chunks


def test_rca_matches_bruteforce_float64(x64):
    X, chunks = _rca_case()
    res = fit_rca(X, chunks)
    assert res.components.dtype == jnp.float64
    L_ref = _rca_bruteforce(X, chunks)
    np.testing.assert_allclose(np.asarray(res.components), L_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(res.M), L_ref.T @ L_ref, rtol=1e-9, atol=1e-10)
    assert res.n_iter == 1 and res.converged
    # dimension reduction: FLD directions, whitened; compare the sign-invariant metric
    res2 = fit_rca(X, chunks, n_components=2)
    L2 = _rca_bruteforce(X, chunks, k=2)
    assert res2.components.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(res2.M), L2.T @ L2, rtol=1e-7, atol=1e-9)


def test_rca_float32_close_to_bruteforce():
    X, chunks = _rca_case()
    res = fit_rca(X.astype(np.float32), chunks)
    assert res.M.dtype == jnp.float32
    L_ref = _rca_bruteforce(X, chunks)
    np.testing.assert_allclose(np.asarray(res.components), L_ref, rtol=2e-4, atol=2e-5)


def test_rca_invariant_to_translating_the_data(x64):
    # the chunklets' points moved by 1e7 (e.g. timestamps): C is unchanged, but the test for points
    # coinciding up to rounding was relative to |x|^2, so RCA warned and returned a scaled identity
    X, chunks = _rca_case()
    L_ref = _rca_bruteforce(X, chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fit_rca(X + 1e7, chunks)
    np.testing.assert_allclose(np.asarray(res.M), L_ref.T @ L_ref, rtol=1e-6, atol=1e-8)


def test_rca_under_jit_with_non_contiguous_ids():
    # traced chunk ids went straight into segment sums over n segments: an id >= n (1100 for
    # n = 30 rows) was dropped or clamped, giving another metric without a word
    X, chunks = _rca_case()
    want = np.asarray(fit_rca(X.astype(np.float32), chunks).M)
    jitted = jax.jit(lambda X, c: fit_rca(X, c).M)
    for ids in (chunks, np.where(chunks >= 0, chunks * 100, -1)):
        np.testing.assert_allclose(jitted(X.astype(np.float32), ids), want, rtol=1e-4, atol=1e-5)
    # no chunklet at all: eagerly an error, under jit it returned the identity as converged
    assert np.all(np.isnan(np.asarray(jitted(X.astype(np.float32), np.full(len(X), -1)))))


def test_rca_keeps_float32_under_x64(x64):
    # (d - rank) / d was float64 under x64 and made a float32 fit float64
    X, chunks = _rca_case()
    X = X.astype(np.float32)
    X[:, -1] = 0.0  # a constant feature: rank-deficient, the shrinkage path
    res = fit_rca(X, chunks)
    assert res.components.dtype == np.float32 and res.M.dtype == np.float32


def test_rca_learns_and_ranks_better_than_identity(data):
    X, y, T, Q, ch = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough chunklets: no regularisation warning
        res = fit_rca(X, ch)
    _assert_psd_finite(res.M)
    assert res.components.shape == (D, D)
    np.testing.assert_allclose(
        np.asarray(res.M), np.asarray(res.components.T @ res.components), rtol=1e-5
    )
    assert _frac_triplets(T, res.M) > _frac_triplets(T, np.eye(D)) + 0.05
    assert _frac_quads(Q, res.M) > _frac_quads(Q, np.eye(D)) + 0.05


def test_rca_one_tiny_chunklet_warns_and_is_finite(data):
    X = data[0]
    chunks = np.full(N, -1)
    chunks[[4, 9]] = 0  # one chunklet of two points: C has rank 1 in 4-D
    with pytest.warns(UserWarning, match="singular"):
        res = fit_rca(X, chunks)
    _assert_psd_finite(res.M)
    # the direction separating the two chunk members is shrunk the most
    v = X[4] - X[9]
    v = v / np.linalg.norm(v)
    M = np.asarray(res.M, np.float64)
    assert v @ M @ v <= np.linalg.eigvalsh(M)[0] * 1.01 + 1e-6


def test_rca_constant_feature_and_degenerate_chunklets(data):
    X, _, _, _, ch = data
    Xc = X.copy()
    Xc[:, 2] = 5.0  # zero-variance feature (as digits' constant pixels)
    with pytest.warns(UserWarning):
        res = fit_rca(Xc, ch)
    _assert_psd_finite(res.M)
    # every chunklet made of identical points: C = 0 -> scaled identity, finite
    Xd = X.copy()
    chunks = np.full(N, -1)
    chunks[:6] = [0, 0, 0, 1, 1, 1]
    Xd[1] = Xd[2] = Xd[0]
    Xd[4] = Xd[5] = Xd[3]
    with pytest.warns(UserWarning):
        res = fit_rca(Xd, chunks)
    M = np.asarray(res.M)
    assert np.all(np.isfinite(M))
    np.testing.assert_allclose(M, M[0, 0] * np.eye(D), rtol=1e-5, atol=1e-7)


def test_rca_fixed_regularization(data):
    X, _, _, _, ch = data
    full = np.asarray(fit_rca(X, ch, regularization=1.0).M)
    np.testing.assert_allclose(full, full[0, 0] * np.eye(D), rtol=1e-5, atol=1e-7)  # shrunk to mu I
    none = np.asarray(fit_rca(X, ch, regularization=0.0).M)
    auto = np.asarray(fit_rca(X, ch).M)
    np.testing.assert_allclose(none, auto, rtol=1e-5)  # well-posed case: auto does not shrink


def test_rca_compiles_once_per_shape_bucket(data):
    X, y, _, _, ch = data
    fit_rca(X, ch)
    before = rca._rca_core._cache_size()
    X2, _ = _data(seed=5)
    fit_rca(X2, ch)  # other values, same shape
    fit_rca(X2[:50], ch[:50])  # n = 50 pads to the same bucket as n = 60
    assert rca._rca_core._cache_size() == before


def test_rca_bad_input(data):
    X, _, _, _, ch = data
    with pytest.raises(ValueError, match="no chunklet"):
        fit_rca(X, np.full(N, -1))
    with pytest.raises(ValueError, match="chunks must have shape"):
        fit_rca(X, ch[:-1])
    with pytest.raises(ValueError, match=">= -1"):
        fit_rca(X, np.where(ch < 0, -2, ch))
    with pytest.raises(ValueError, match="integer"):
        fit_rca(X, ch + 0.5)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains"):
        fit_rca(Xn, ch)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        fit_rca(X[:, 0], ch)
    with pytest.raises(ValueError, match="n_components"):
        fit_rca(X, ch, n_components=D + 1)
    with pytest.raises(ValueError, match="regularization"):
        fit_rca(X, ch, regularization=1.5)
    with pytest.raises(ValueError, match="regularization"):
        fit_rca(X, ch, regularization="ledoit")


# ----------------------------------------------------------------------------------------------------
# LSML


def test_lsml_loss_matches_loop():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(12, 4, 3))
    Q[0, 1] = Q[0, 0]  # a degenerate pair
    A = rng.normal(size=(3, 3))
    M = A @ A.T + 0.1 * np.eye(3)
    w = rng.random(12)
    ref = 0.0
    for t in range(12):
        dab = np.sqrt((Q[t, 0] - Q[t, 1]) @ M @ (Q[t, 0] - Q[t, 1]))
        dcd = np.sqrt((Q[t, 2] - Q[t, 3]) @ M @ (Q[t, 2] - Q[t, 3]))
        if dab > dcd:
            ref += w[t] * (dab - dcd) ** 2
    f = jax.jit(lsml_loss)
    val = f(jnp.asarray(M), jnp.asarray(Q[:, 0] - Q[:, 1]), jnp.asarray(Q[:, 2] - Q[:, 3]), w)
    np.testing.assert_allclose(float(val), ref, rtol=1e-5)
    g = jax.grad(lsml_loss)(jnp.asarray(M), Q[:, 0] - Q[:, 1], Q[:, 2] - Q[:, 3], w)
    assert np.all(np.isfinite(np.asarray(g)))  # degenerate pair: finite gradient


def test_lsml_loss_gradient(x64):
    rng = np.random.default_rng(1)
    Q = rng.normal(size=(8, 4, 3))
    A = rng.normal(size=(3, 3))
    M = jnp.asarray(A @ A.T + np.eye(3))
    vab, vcd, w = Q[:, 0] - Q[:, 1], Q[:, 2] - Q[:, 3], np.full(8, 0.125)
    check_grads(lambda M: lsml_loss(M, vab, vcd, w), (M,), order=1, modes=("rev",))


def test_lsml_learns_psd_and_ranks_better_than_identity(data):
    X, y, T, Q, ch = data
    res = fit_lsml(Q)
    _assert_psd_finite(res.M)
    assert np.linalg.eigvalsh(np.asarray(res.M, np.float64))[0] > 0  # positive definite (LogDet)
    assert res.n_iter >= 1
    assert _frac_quads(Q, res.M) > _frac_quads(Q, np.eye(D)) + 0.05
    # the learned metric lowers the objective below the prior's
    vab, vcd = Q[:, 0] - Q[:, 1], Q[:, 2] - Q[:, 3]
    w = np.full(len(Q), 1.0 / len(Q), np.float32)
    obj = lsml_loss(res.M, vab, vcd, w) + R.logdet_divergence(res.M, jnp.eye(D))
    assert float(obj) < float(lsml_loss(jnp.eye(D), vab, vcd, w))


def test_lsml_priors_weights_and_degenerate(data):
    X, y, T, Q, ch = data
    res = fit_lsml(Q, prior="covariance")
    _assert_psd_finite(res.M)
    prior = np.diag([2.0, 1.0, 1.0, 0.5]).astype(np.float32)
    res = fit_lsml(Q, prior=prior)
    _assert_psd_finite(res.M)
    # zero weight on every violated quadruplet: nothing to fix, M stays at the prior
    M0 = np.eye(D)
    a, b = Q[:, 0] - Q[:, 1], Q[:, 2] - Q[:, 3]
    ok = np.einsum("ij,ij->i", a, a) < np.einsum("ij,ij->i", b, b)
    res = fit_lsml(Q, weights=ok.astype(np.float32))
    np.testing.assert_allclose(np.asarray(res.M), M0, atol=1e-5)
    # all points equal: no loss, M = prior, never NaN
    Qd = np.broadcast_to(Q[:, :1], Q.shape).copy()
    res = fit_lsml(Qd)
    np.testing.assert_allclose(np.asarray(res.M), M0, atol=1e-6)


def test_lsml_compiles_once(data):
    X, y, T, Q, ch = data
    fit_lsml(Q)
    before = solver._run._cache_size()
    Q2 = Q + np.float32(0.25)
    fit_lsml(Q2, prior=np.diag([2.0, 1.0, 1.0, 0.5]).astype(np.float32))
    assert solver._run._cache_size() == before


def test_lsml_quadruplets_far_from_the_origin(data):
    """LSML sees the points only through a - b and c - d: an offset of 1e6 (float32 spacing 0.0625)
    leaves M unchanged. The differences were taken after the cast to float32 (M off by 3e-3)."""
    X, _, _, Q, _ = data
    Q = Q.astype(np.float64)
    ref = np.asarray(fit_lsml(Q).M, np.float64)
    M = np.asarray(fit_lsml(Q + 1e6).M, np.float64)
    np.testing.assert_allclose(M, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_lsml_bad_input(data):
    Q = data[3]
    with pytest.raises(ValueError, match="not positive|positive semi|positive definite"):
        fit_lsml(Q, prior=np.diag([1.0, 1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="prior"):
        fit_lsml(Q, prior=np.eye(3))
    with pytest.raises(ValueError, match="prior"):
        fit_lsml(Q, prior="mahalanobis")
    with pytest.raises(ValueError, match=r"\[m, 4, d\]"):
        fit_lsml(Q[:, :3])
    with pytest.raises(ValueError, match="quadruplets must be 3-dimensional"):
        fit_lsml(Q[:, 0])
    with pytest.raises(ValueError, match="empty"):
        fit_lsml(Q[:0])
    Qn = Q.copy()
    Qn[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="quadruplets contains"):
        fit_lsml(Qn)
    with pytest.raises(ValueError, match="weights must have shape"):
        fit_lsml(Q, weights=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        fit_lsml(Q, weights=-np.ones(len(Q)))
    with pytest.raises(ValueError, match="all be zero"):
        fit_lsml(Q, weights=np.zeros(len(Q)))
    with pytest.raises(ValueError, match="weights contains"):
        fit_lsml(Q, weights=np.full(len(Q), np.nan))


# ----------------------------------------------------------------------------------------------------
# SCML


def _scml_reference(Dp, Dn, B, idx, beta, gamma):
    """NumPy loop of metric-learn's AdaGrad dual averaging (the minibatch indices given)."""
    Dp, Dn, B = (np.asarray(a, np.float64) for a in (Dp, Dn, B))
    delta_all = (Dp @ B.T) ** 2 - (Dn @ B.T) ** 2
    K = B.shape[0]
    w, avg, ada = np.zeros(K), np.zeros(K), np.zeros(K)
    best_w, best = w, np.inf
    n_outer, out_iter, bs = idx.shape
    for it, ib in enumerate(idx.reshape(-1, bs)):
        delta = delta_all[ib]
        g = delta[(1 + delta @ w) > 0].sum(0) / bs
        avg = (it * avg + g) / (it + 1)
        ada = np.sqrt(ada**2 + g**2)
        w = (it + 1) / (gamma * (1e-3 + ada)) * np.maximum(-(avg + beta), 0)
        if (it + 1) % out_iter == 0:
            slack = 1 + delta_all @ w
            obj = beta * w.sum() + slack[slack > 0].sum() / len(Dp)
            if obj < best:
                best, best_w = obj, w
    return best_w


@pytest.mark.parametrize("precompute", [True, False])
def test_scml_core_matches_numpy_loop(precompute):
    rng = np.random.default_rng(4)
    Dp = rng.normal(size=(30, 3)).astype(np.float32) * 0.5
    Dn = rng.normal(size=(30, 3)).astype(np.float32)
    B = rng.normal(size=(6, 3)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    idx = rng.integers(0, 30, size=(3, 7, 4)).astype(np.int32)
    args = (np.float32(1e-3), np.float32(5e-3), np.float32(30))
    _, w, _, hist = scml._scml_core(idx, Dp, Dn, B, *args, block=8, precompute=precompute)
    ref = _scml_reference(Dp, Dn, B, idx, 1e-3, 5e-3)
    assert np.any(ref > 0)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=2e-4, atol=1e-6)
    assert hist.shape == (3,)
    # padded to a bucket with junk rows past m_valid = 30: the same weights and objectives
    junk = rng.normal(size=(10, 3)).astype(np.float32) * 5.0
    Pp, Pn = np.concatenate([Dp, junk]), np.concatenate([Dn, -junk])
    _, wp, _, hp = scml._scml_core(idx, Pp, Pn, B, *args, block=8, precompute=precompute)
    np.testing.assert_allclose(np.asarray(wp), np.asarray(w), rtol=2e-5, atol=1e-6)  # rounding
    np.testing.assert_allclose(np.asarray(hp), np.asarray(hist), rtol=1e-5)


def test_scml_learns_sparse_nonnegative_psd(data):
    X, y, T, Q, ch = data
    res = fit_scml(T, key=0, **SCML_KW)
    w, B = np.asarray(res.weights), np.asarray(res.basis)
    assert B.shape == (40, D) and w.shape == (40,)
    np.testing.assert_allclose(np.linalg.norm(B, axis=1), 1.0, rtol=1e-5)
    assert np.all(w >= 0) and np.any(w > 0)
    np.testing.assert_allclose(np.asarray(res.M), (B.T * w) @ B, rtol=1e-5, atol=1e-6)
    _assert_psd_finite(res.M)
    assert res.n_iter == 2000
    assert _frac_triplets(T, res.M) > _frac_triplets(T, np.eye(D)) + 0.1
    # larger beta: smaller and no less sparse weights; huge beta: all zero (warning, M = 0)
    big = fit_scml(T, key=0, beta=0.1, **SCML_KW)
    wb = np.asarray(big.weights)
    assert np.all(wb >= 0)
    assert wb.sum() < w.sum() and np.count_nonzero(wb) <= np.count_nonzero(w)
    with pytest.warns(UserWarning, match="zero"):
        huge = fit_scml(T, key=0, beta=100.0, **SCML_KW)
    assert np.all(np.asarray(huge.weights) == 0) and np.all(np.asarray(huge.M) == 0)


def test_scml_lda_basis_and_determinism(data):
    X, y, T, Q, ch = data
    res = fit_scml(T, basis="lda", X=X, y=y, key=1, **SCML_KW)
    _assert_psd_finite(res.M)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(res.basis), axis=1), 1.0, rtol=1e-5)
    assert _frac_triplets(T, res.M) > _frac_triplets(T, np.eye(D)) + 0.1
    again = fit_scml(T, basis="lda", X=X, y=y, key=1, **SCML_KW)
    np.testing.assert_array_equal(np.asarray(res.weights), np.asarray(again.weights))


def test_scml_array_basis_degenerate_and_compiles_once(data):
    X, y, T, Q, ch = data
    B = np.asarray(fit_scml(T, key=0, **SCML_KW).basis)
    before = scml._scml_core._cache_size()
    res = fit_scml(T + np.float32(0.5), basis=B, key=3, **SCML_KW)  # same shapes: no recompile
    assert scml._scml_core._cache_size() == before
    _assert_psd_finite(res.M)
    Td = np.broadcast_to(T[:, :1], T.shape).copy()  # all three points equal
    with pytest.warns(UserWarning, match="zero"):
        res = fit_scml(Td, basis=B, key=0, **SCML_KW)
    assert np.all(np.isfinite(np.asarray(res.M))) and np.all(np.asarray(res.M) == 0)
    with pytest.raises(ValueError, match="degenerate"):
        fit_scml(Td, key=0, **SCML_KW)


def test_scml_bad_input(data):
    X, y, T, Q, ch = data
    with pytest.raises(ValueError, match=r"\[m, 3, d\]"):
        fit_scml(Q)
    with pytest.raises(ValueError, match="triplets must be 3-dimensional"):
        fit_scml(T[:, 0])
    with pytest.raises(ValueError, match="empty"):
        fit_scml(T[:0])
    Tn = T.copy()
    Tn[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="triplets contains"):
        fit_scml(Tn)
    with pytest.raises(ValueError, match="unknown basis"):
        fit_scml(T, basis="pca")
    with pytest.raises(ValueError, match="basis must have shape"):
        fit_scml(T, basis=np.ones((5, D + 1)))
    with pytest.raises(ValueError, match="needs the data"):
        fit_scml(T, basis="lda")
    with pytest.raises(ValueError, match="X has"):
        fit_scml(T, basis="lda", X=X[:, :2], y=y)
    with pytest.raises(ValueError, match="output_iter"):
        fit_scml(T, output_iter=0)
    with pytest.raises(ValueError, match="max_iter"):
        fit_scml(T, max_iter=-5)
    with pytest.raises(ValueError, match="gamma"):
        fit_scml(T, gamma=0.0)
    with pytest.raises(ValueError, match="beta"):
        fit_scml(T, beta=-1.0)
    with pytest.raises(ValueError, match="n_basis"):
        fit_scml(T, n_basis=0)


def test_scml_core_indexed_rows_match_numpy_loop():
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(12, 3)) * [3.0, 0.5, 0.5] + 4.0).astype(np.float32)
    tidx = rng.integers(0, 12, size=(30, 3)).astype(np.int32)
    far = np.abs(X[tidx[:, 0], 0] - X[tidx[:, 1], 0]) > np.abs(X[tidx[:, 0], 0] - X[tidx[:, 2], 0])
    tidx[far] = tidx[far][:, [0, 2, 1]]  # positives closer on feature 0: a learnable signal
    B = rng.normal(size=(6, 3)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    idx = rng.integers(0, 30, size=(3, 7, 4)).astype(np.int32)
    Xc = X - X.mean(0)
    _, w, _, _ = scml._scml_core(
        idx, None, None, B, np.float32(1e-3), np.float32(5e-3), np.float32(30), Xc @ B.T, tidx,
        Xc, block=8, precompute=False,
    )  # fmt: skip
    Dp, Dn = X[tidx[:, 0]] - X[tidx[:, 1]], X[tidx[:, 0]] - X[tidx[:, 2]]
    ref = _scml_reference(Dp, Dn, B, idx, 1e-3, 5e-3)
    assert np.any(ref > 0)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=2e-4, atol=1e-6)


def test_fit_scml_index_triplets_match_point_triplets(data, x64, monkeypatch):
    X, y, *_ = data
    X = X.astype(np.float64)
    t = constraints.triplets(0, y, n_triplets=360)
    B = np.random.default_rng(0).normal(size=(40, D))
    kw = dict(basis=B / np.linalg.norm(B, axis=1, keepdims=True), key=2, **SCML_KW)
    for limit in (2**25, len(X) * 40):  # rows materialised / gathered from the projected points
        monkeypatch.setattr(scml, "_PRECOMPUTE_MAX", limit)
        by_idx, by_pts = fit_scml(t, X=X, **kw), fit_scml(X[t], **kw)
        assert np.any(np.asarray(by_idx.weights) > 0)
        np.testing.assert_allclose(by_idx.weights, by_pts.weights, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(by_idx.M, by_pts.M, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="need the data X"):
        fit_scml(t)
    with pytest.raises(ValueError, match=r"lie in \[0, 60\)"):
        fit_scml(t + 1, X=X)
    with pytest.raises(ValueError, match=r"shape \[m, 3\]"):
        fit_scml(t[:, :2], X=X)


# ----------------------------------------------------------------------------------------------------
# SCML_Supervised: k-NN triplets (metric-learn 0.7's construction) and its quality


@pytest.mark.parametrize("given", ["points", "indices"])
def test_scml_triplets_far_from_the_origin(data, given):
    """SCML sees the points only through a - p and a - n (and the basis built from them): an offset
    of 1e6 leaves M unchanged. The differences (and for index triplets the centring) were taken
    in float32, where the points are rounded to multiples of 0.0625 (M off by ~50 %)."""
    X, y, *_ = data
    X = X.astype(np.float64)
    t = constraints.triplets(0, y, n_triplets=60)

    def fit(Z):
        args = (Z[t],) if given == "points" else (t,)
        kw = {} if given == "points" else {"X": Z}
        return np.asarray(fit_scml(*args, key=0, **kw, **SCML_KW).M, np.float64)

    ref = fit(X)
    np.testing.assert_allclose(fit(X + 1e6), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_scml_supervised_fits_knn_triplets(data, monkeypatch):
    import metriclearn as ml

    X, y, T, *_ = data
    seen = []
    real = scml.fit_scml

    def spy(triplets, **kw):
        seen.append(np.asarray(triplets))
        return real(triplets, **kw)

    monkeypatch.setattr(scml, "fit_scml", spy)
    kw = dict(k_genuine=2, k_impostor=4, n_basis=40, max_iter=2000, random_state=0)
    est = ml.SCML_Supervised(**kw).fit(X, y)
    assert est.get_params()["k_genuine"] == 2 and est.get_params()["k_impostor"] == 4
    knn = constraints.knn_triplets(X, y, k_genuine=2, k_impostor=4)
    np.testing.assert_array_equal(seen[-1], knn)  # every k-NN triplet, in order, as indices into X
    again = ml.SCML_Supervised(**kw).fit(X, y)
    np.testing.assert_array_equal(again.components_, est.components_)
    # the learned metric satisfies more of its own k-NN triplets than the Euclidean one
    M = est.get_mahalanobis_matrix()
    assert _frac_triplets(X[knn], M) > _frac_triplets(X[knn], np.eye(D)) + 0.1
    # n_constraints: a random subset of the k-NN triplets, seeded by random_state; all if too many
    sub = ml.SCML_Supervised(n_constraints=len(T), **kw).fit(X, y)  # T's shape: compiled once
    rows = {tuple(r) for r in knn.tolist()}
    assert seen[-1].shape == (len(T), 3) and all(tuple(r) in rows for r in seen[-1].tolist())
    assert len({tuple(r) for r in seen[-1].tolist()}) == len(T)
    assert not np.allclose(sub.components_, est.components_)
    ml.SCML_Supervised(n_constraints=10**6, **kw).fit(X, y)
    np.testing.assert_array_equal(seen[-1], knn)
    with pytest.raises(ValueError, match="k_genuine"):
        ml.SCML_Supervised(k_genuine=0).fit(X, y)
    with pytest.raises(ValueError, match="n_constraints"):
        ml.SCML_Supervised(n_constraints=0).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ml.SCML_Supervised().fit(X, np.zeros(len(X)))


def _scml_supervised_cv_accuracy(name):
    """ANCHORS.md protocol: standardised, 5-fold stratified CV, defaults + random_state=0, 3-NN."""
    from sklearn import datasets
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    import metriclearn as ml

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    accs = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L = ml.SCML_Supervised(random_state=0).fit(X[tr], y[tr]).components_
        knn = KNeighborsClassifier(3).fit(X[tr] @ L.T, y[tr])
        accs.append(knn.score(X[te] @ L.T, y[te]))
    return float(np.mean(accs))


def test_scml_supervised_wine_quality():
    # measured 0.989 (metric-learn 0.7.0: 0.989); random label triplets gave 0.972
    assert _scml_supervised_cv_accuracy("wine") >= 0.978


@pytest.mark.slow
def test_scml_supervised_digits_quality():
    # measured 0.981 (metric-learn 0.7.0: 0.977); random label triplets gave 0.966
    assert _scml_supervised_cv_accuracy("digits") >= 0.975


def test_scml_supervised_pipeline_compiles_once_per_bucket(data):
    # cross-validation folds differ by a sample or two: k-NN triplets, the LDA basis (k-means and
    # local LDA) and the solver pad to buckets, so a new fold size reuses every compiled program
    X, y, *_ = data
    jitted = (
        constraints._knn_genuine_impostor,
        scml._kmeans,
        scml._local_lda,
        scml._scml_core,
    )

    def fold(n):
        t = constraints.knn_triplets(X[:n], y[:n], k_genuine=2, k_impostor=3)
        return fit_scml(t, X=X[:n], y=y[:n], basis="lda", key=0, **SCML_KW)

    first = fold(len(X) - 3)
    sizes = [f._cache_size() for f in jitted]
    second = fold(len(X) - 1)
    assert [f._cache_size() for f in jitted] == sizes
    for res in (first, second):
        _assert_psd_finite(res.M)
        assert np.any(np.asarray(res.weights) > 0)


def test_scml_lda_basis_cap_warns():
    """More directions than 2 scales x n centres x (C - 1) exist: n_basis was cut silently."""
    from sklearn import datasets

    X, y = datasets.load_iris(return_X_y=True)
    X, y = X[::15], y[::15]  # 10 points, 3 classes: at most 2 * 10 * 2 = 40 directions
    with pytest.warns(UserWarning, match="only 40 'lda' basis directions"):
        B = scml.lda_basis(0, X, y, n_basis=100)
    assert B.shape == (40, 4) and np.all(np.isfinite(np.asarray(B)))
