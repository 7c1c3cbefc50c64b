"""Tests of the supervised convex learners: init, NCA, MLKR, LFDA, Covariance (metriclearn.convex)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import NeighborhoodComponentsAnalysis
from sklearn.preprocessing import StandardScaler

from metriclearn.convex import _common, covariance, lfda, mlkr, nca


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _wine():
    X, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _toy(n=40, d=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    X = rng.normal(size=(n, d)) + y[:, None] * 0.7
    return X, y


# ----------------------------------------------------------------------------------------------------
# brute-force references (loops)


def nca_brute(L, X, y):
    Z = X @ L.T
    n = len(X)
    total = 0.0
    for i in range(n):
        logits = np.array([-np.sum((Z[i] - Z[j]) ** 2) if j != i else -np.inf for j in range(n)])
        p = np.exp(logits - scipy.special.logsumexp(logits))
        total += sum(p[j] for j in range(n) if y[j] == y[i] and j != i)
    return -total


def mlkr_brute(L, X, t):
    Z = X @ L.T
    n = len(X)
    loss = 0.0
    for i in range(n):
        logits = np.array([-np.sum((Z[i] - Z[j]) ** 2) if j != i else -np.inf for j in range(n)])
        w = np.exp(logits - scipy.special.logsumexp(logits))
        loss += (t[i] - w @ t) ** 2
    return loss


def lfda_scatter_brute(X, y, k):
    n, d = X.shape
    Slb = np.zeros((d, d))
    Slw = np.zeros((d, d))
    A = np.zeros((n, n))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        D = np.array([[np.sum((X[i] - X[j]) ** 2) for j in idx] for i in idx])
        kk = min(k, len(idx) - 1)
        sig = np.sqrt(np.sort(D, axis=1)[:, kk])
        for a in range(len(idx)):  # k-th neighbour a copy: the nearest distinct point's scale
            if sig[a] == 0 and np.any(D[a] > 0):
                sig[a] = np.sqrt(np.min(D[a][D[a] > 0]))
        for a, i in enumerate(idx):
            for b, j in enumerate(idx):
                s = sig[a] * sig[b]
                A[i, j] = np.exp(-D[a, b] / s) if s > 0 else 0.0
    nc = np.bincount(y)
    for i in range(n):
        for j in range(n):
            v = np.outer(X[i] - X[j], X[i] - X[j])
            if y[i] == y[j]:
                Slw += 0.5 * A[i, j] / nc[y[i]] * v
                Slb += 0.5 * A[i, j] * (1 / n - 1 / nc[y[i]]) * v
            else:
                Slb += 0.5 / n * v
    return Slb, Slw


# ----------------------------------------------------------------------------------------------------
# _common


def test_resolve_init_follows_sklearn_rule():
    # k <= min(d, C-1) -> lda; k < min(d, n) -> pca; else identity
    assert (
        _common.resolve_init("auto", n_components=2, n_features=4, n_samples=150, n_classes=3)
        == "lda"
    )
    assert (
        _common.resolve_init("auto", n_components=3, n_features=4, n_samples=150, n_classes=3)
        == "pca"
    )
    assert (
        _common.resolve_init("auto", n_components=4, n_features=4, n_samples=150, n_classes=3)
        == "identity"
    )
    assert (
        _common.resolve_init("auto", n_components=3, n_features=8, n_samples=3, n_classes=2)
        == "identity"
    )
    assert (
        _common.resolve_init("pca", n_components=4, n_features=4, n_samples=9, n_classes=3) == "pca"
    )
    with pytest.raises(ValueError, match="unknown init"):
        _common.resolve_init("nope", n_components=1, n_features=2, n_samples=3, n_classes=2)


def test_init_components_pca_and_lda_match_sklearn():
    X, y = _iris()
    L = np.asarray(_common.init_components(X, y, n_components=3, init="pca"))
    ref = PCA(n_components=3).fit(X).components_
    np.testing.assert_allclose(np.abs(np.sum(L * ref, axis=1)), 1.0, atol=1e-4)
    L = np.asarray(_common.init_components(X, y, n_components=2, init="lda"))
    ref = LinearDiscriminantAnalysis(n_components=2).fit(X, y).scalings_.T[:2]
    cos = np.abs(np.sum(L * ref, axis=1)) / np.linalg.norm(L, axis=1) / np.linalg.norm(ref, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-3)
    # auto with k=2 <= C-1 is lda
    L_auto = np.asarray(_common.init_components(X, y, n_components=2))
    np.testing.assert_allclose(L_auto, L, atol=1e-6)


def test_init_components_lda_whitens_within_class_on_singular_data():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]  # constant pixels: singular within-class covariance
    L = np.asarray(_common.init_components(X, y, n_components=9, init="lda"))
    assert np.all(np.isfinite(L))
    Z = X @ L.T
    assert np.all(np.isfinite(Z)) and np.all(Z.std(0) > 0)


def test_init_components_identity_random_array_and_errors():
    X, y = _toy()
    np.testing.assert_array_equal(
        _common.init_components(X, y, n_components=3, init="identity"), np.eye(3, 5)
    )
    a = _common.init_components(X, y, n_components=3, init="random", key=jax.random.key(1))
    b = _common.init_components(X, y, n_components=3, init="random", key=jax.random.key(1))
    c = _common.init_components(X, y, n_components=3, init="random", key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    L0 = np.ones((2, 5))
    np.testing.assert_array_equal(_common.init_components(X, y, init=L0), L0)
    with pytest.raises(ValueError, match="n_components=6 is larger"):
        _common.init_components(X, y, n_components=6)
    with pytest.raises(ValueError, match="columns"):
        _common.init_components(X, y, init=np.ones((2, 4)))
    with pytest.raises(ValueError, match="rows but n_components"):
        _common.init_components(X, y, n_components=3, init=np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        _common.init_components(X, y, init=np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match='init="lda" needs'):
        _common.init_components(X, y, n_components=3, init="lda")


def test_generalized_eigh_matches_scipy_and_handles_singular(x64):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    A = A + A.T
    R = rng.normal(size=(5, 5))
    B = R @ R.T + 0.5 * np.eye(5)
    mu, V = _common.generalized_eigh(jnp.asarray(A), jnp.asarray(B), rtol=1e-14)
    ref_mu, ref_V = scipy.linalg.eigh(A, B)
    np.testing.assert_allclose(np.asarray(mu), ref_mu[::-1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.abs(np.asarray(V)), np.abs(ref_V[:, ::-1]), rtol=1e-6, atol=1e-8)
    # singular B (a zero row/column): finite and real
    B[0, :] = 0.0
    B[:, 0] = 0.0
    mu, V = _common.generalized_eigh(jnp.asarray(A), jnp.asarray(B))
    assert np.all(np.isfinite(np.asarray(mu))) and np.all(np.isfinite(np.asarray(V)))


def test_check_xy_errors():
    X, y = _toy()
    with pytest.raises(ValueError, match="NaN"):
        _common.check_Xy(np.where(np.arange(5) == 2, np.nan, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        _common.check_Xy(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="labels but X has"):
        _common.check_Xy(X, y[:-1])
    with pytest.raises(ValueError, match="at least 20 samples"):
        _common.check_Xy(X, y, min_per_class=20)


def test_bucket_size_and_row_blocks():
    assert [_common.bucket_size(n) for n in (1, 64, 65, 81, 100, 120, 129, 150, 1437)] == [
        64,
        64,
        80,
        96,
        112,
        128,
        160,
        160,
        1536,
    ]
    for n in (2049, 5000, 20000):
        size = _common.bucket_size(n)
        assert size >= n and size <= 1.25 * n + 1 and size % _common.row_block(size) == 0


def test_map_row_blocks_matches_single_block():
    x = jnp.arange(32.0).reshape(16, 2)
    one = _common.map_row_blocks(lambda a: a.sum(1) ** 2, 16, x)
    many = _common.map_row_blocks(lambda a: a.sum(1) ** 2, 4, x)
    np.testing.assert_allclose(one, many)


def test_lbfgs_minimize_reaches_rosenbrock_optimum(x64):
    def rosen(p):
        return jnp.sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1 - p[:-1]) ** 2)

    res = jax.jit(lambda x0: _common.lbfgs_minimize(rosen, x0, max_iter=500, ftol=0.0, gtol=1e-8))(
        jnp.zeros(4)
    )
    np.testing.assert_allclose(np.asarray(res.params), np.ones(4), atol=1e-5)
    assert bool(res.converged)


def _softmax_loss_dense(L, X, aux, valid, rows):
    """Autodiff reference for the closed-form kernel: dense masked softmax, plain jnp."""
    Z = X @ L.T
    d2 = jnp.sum((Z[:, None, :] - Z[None, :, :]) ** 2, axis=-1)
    n = X.shape[0]
    allowed = valid[None, :] & valid[:, None] & ~jnp.eye(n, dtype=bool)
    P = jax.nn.softmax(jnp.where(allowed, -d2, -jnp.inf), axis=1)
    P = jnp.where(allowed, P, 0.0)
    return jnp.sum(jnp.where(valid, rows(P, aux), 0.0))


def _nca_rows_ref(P, codes):
    return -jnp.sum(jnp.where(codes[:, None] == codes[None, :], P, 0.0), axis=1)


def _mlkr_rows_ref(P, t):
    return (t - P @ t) ** 2


@pytest.mark.parametrize("which", ["nca", "mlkr"])
def test_closed_form_gradient_matches_autodiff_in_every_block_layout(which, x64):
    X, y = _toy(n=21, d=4)
    rng = np.random.default_rng(5)
    L = jnp.asarray(rng.normal(size=(3, 4)) * 0.6)
    Xp, valid = _common.pad_rows(jnp.asarray(X), 24)
    if which == "nca":
        aux, _ = _common.pad_rows(jnp.asarray(y), 24, fill=-1)
        loss, rows = nca._nca_loss, _nca_rows_ref
    else:
        aux, _ = _common.pad_rows(jnp.asarray(X[:, 0] + np.cos(X[:, 2])), 24)
        loss, rows = mlkr._mlkr_loss, _mlkr_rows_ref
    ref_f, (ref_gL, ref_gX) = jax.value_and_grad(_softmax_loss_dense, argnums=(0, 1))(
        L, Xp, aux, valid, rows
    )
    assert np.abs(np.asarray(ref_gL)).max() > 1e-3  # a non-trivial gradient to compare
    for block in (24, 8, 4):  # one block, and lax.scan over row blocks
        f, (gL, gX) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=4)(
            L, Xp, aux, valid, block
        )
        np.testing.assert_allclose(float(f), float(ref_f), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(gL), np.asarray(ref_gL), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.asarray(gX), np.asarray(ref_gX), rtol=1e-8, atol=1e-10)
        assert np.all(np.asarray(gX)[21:] == 0.0)  # padding rows get no gradient


def test_softmax_row_block_divides_and_caps():
    assert _common.softmax_row_block(1536) == 1536
    assert _common.softmax_row_block(8192) == 8192
    for n in (9000, 20000, 50000):
        size = _common.bucket_size(n)
        b = _common.softmax_row_block(size)
        assert size % b == 0 and 512 <= b <= 1024


def test_lbfgs_tolerances():
    assert _common.lbfgs_tolerances(1e-4) == (1e-4, 1e-4)
    ftol, gtol = _common.lbfgs_tolerances(None)
    assert ftol < 1e-8 and gtol == 1e-5
    with pytest.raises(ValueError, match="tol"):
        _common.lbfgs_tolerances(-1.0)


# ----------------------------------------------------------------------------------------------------
# NCA


def test_nca_objective_matches_brute_force_and_padding(x64):
    X, y = _toy(n=23, d=4)
    L = np.random.default_rng(1).normal(size=(2, 4)) * 0.5
    ref = nca_brute(L, X, y)
    np.testing.assert_allclose(float(nca.nca_objective(L, X, y)), ref, rtol=1e-10)
    # several row blocks and padded rows give the same value
    Xp, valid = _common.pad_rows(jnp.asarray(X), 32)
    cp, _ = _common.pad_rows(jnp.asarray(y), 32, fill=-1)
    blocked = jax.jit(nca._nca_loss, static_argnames="block")(L, Xp, cp, valid, block=8)
    np.testing.assert_allclose(float(blocked), ref, rtol=1e-10)


def test_nca_gradient_finite_differences(x64):
    X, y = _toy(n=12, d=3)
    Xp, valid = _common.pad_rows(jnp.asarray(X), 16)
    cp, _ = _common.pad_rows(jnp.asarray(y), 16, fill=-1)
    L = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3)) * 0.5)
    f = jax.jit(lambda L: nca._nca_loss(L, Xp, cp, valid, 8))
    check_grads(f, (L,), order=1, modes=["rev"])
    g = jax.jit(jax.grad(nca._nca_loss), static_argnums=4)(L, Xp, cp, valid, 16)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("loader", [_iris, pytest.param(_wine, marks=pytest.mark.slow)])
def test_nca_reaches_sklearn_objective(loader):
    X, y = loader()
    sk = NeighborhoodComponentsAnalysis(max_iter=100, tol=1e-5, random_state=0).fit(X, y)
    ref = float(nca.nca_objective(sk.components_, X, y))
    res = nca.fit_nca(X, y, max_iter=100, tol=1e-5)
    assert res.objective <= ref + 1e-4 * abs(ref)
    assert res.converged and 0 < res.n_iter <= 100
    np.testing.assert_allclose(
        float(nca.nca_objective(res.components, X, y)), res.objective, rtol=1e-5
    )


def test_nca_buckets_share_one_compilation():
    X, y = _toy(n=110, d=3)  # (bucket 112, d=3, k=3) is used by no other test
    before = nca._nca_solve._cache_size()
    nca.fit_nca(X[:100], y[:100], max_iter=3)  # bucket 112: one new compilation
    assert nca._nca_solve._cache_size() == before + 1
    res = nca.fit_nca(X[:110], y[:110], max_iter=3)  # same bucket: no new trace
    assert nca._nca_solve._cache_size() == before + 1
    assert res.components.shape == (3, 3)


def test_nca_n_components_init_and_float64(x64):
    X, y = _toy()
    res = nca.fit_nca(X, y, n_components=2, init="pca", max_iter=20)
    assert res.components.shape == (2, 5) and res.components.dtype == jnp.float64
    assert np.isfinite(res.objective)


def test_nca_bad_input():
    X, y = _toy()
    with pytest.raises(ValueError, match="NaN"):
        nca.fit_nca(np.where(X > 2, np.inf, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        nca.fit_nca(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="n_components=9 is larger"):
        nca.fit_nca(X, y, n_components=9)
    with pytest.raises(ValueError, match="labels but X has"):
        nca.fit_nca(X, y[:5])
    with pytest.raises(ValueError, match="max_iter"):
        nca.fit_nca(X, y, max_iter=0)
    with pytest.raises(ValueError, match="2-dimensional"):
        nca.fit_nca(X[:, 0], y)
    # every sample its own class: LDA's init was NaN ("non-finite transformation; check the input
    # scaling"), and other inits returned the start untouched; nothing can be learned
    with pytest.raises(ValueError, match="every class in y has a single sample"):
        nca.fit_nca(X, np.arange(len(X)))


def test_lda_init_finite_when_within_class_scatter_vanishes():
    # one sample per class: the within-class scatter is 0 and the LDA directions were all NaN
    X, _ = _toy()
    L0 = _common.init_components(jnp.asarray(X), np.arange(len(X)), n_components=2, init="lda")
    assert np.all(np.isfinite(np.asarray(L0)))


def test_nca_far_from_origin_matches_centred_data():
    # float32 squared distances |a|^2 + |b|^2 - 2 a.b cancel far from the origin: shifting iris
    # by 1e4 used to give -53 instead of -126 at L = I and a different fit
    X, y = load_iris(return_X_y=True)
    X = X - X.mean(0)
    ref = float(nca.nca_objective(np.eye(4), X, y))
    np.testing.assert_allclose(float(nca.nca_objective(np.eye(4), X + 1e4, y)), ref, rtol=1e-5)
    a, b = nca.fit_nca(X, y, max_iter=10), nca.fit_nca(X + 1e4, y, max_iter=10)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5)
    np.testing.assert_allclose(b.components, a.components, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["nca", "mlkr"])
def test_numpy_integer_max_iter_is_accepted(which):
    # GridSearchCV over np.arange(...) passes NumPy integers; they used to raise "must be an integer"
    X, y = _toy()
    fit = nca.fit_nca if which == "nca" else mlkr.fit_mlkr
    res = fit(X, y, max_iter=np.int64(2))
    assert 1 <= res.n_iter <= 2
    with pytest.raises(ValueError, match="max_iter"):
        fit(X, y, max_iter=np.int64(0))


@pytest.mark.parametrize("which", ["nca", "mlkr"])
def test_overflowing_scale_raises_instead_of_nan(which):
    # finite float32 inputs whose squared distances overflow: a clear ValueError, not objective NaN
    X, y = _toy()
    fit = nca.fit_nca if which == "nca" else mlkr.fit_mlkr
    with pytest.raises(ValueError, match="not finite.*rescale"):
        fit(X.astype(np.float32) * 1e20, y, max_iter=3)
    objective = nca.nca_objective if which == "nca" else mlkr.mlkr_objective
    L = np.eye(X.shape[1], dtype=np.float32)
    with pytest.raises(ValueError, match=f"{which}_objective: the objective at L is not finite"):
        objective(L, X.astype(np.float32) * 1e20, y)  # was NaN
    assert np.isfinite(float(objective(L, X.astype(np.float32), y)))


# ----------------------------------------------------------------------------------------------------
# MLKR


def test_mlkr_objective_matches_brute_force_and_gradient(x64):
    X, y = _toy(n=19, d=4)
    t = X[:, 0] * 2.0 + np.sin(X[:, 1])
    L = np.random.default_rng(3).normal(size=(3, 4)) * 0.5
    np.testing.assert_allclose(float(mlkr.mlkr_objective(L, X, t)), mlkr_brute(L, X, t), rtol=1e-10)
    Xp, valid = _common.pad_rows(jnp.asarray(X), 24)
    tp, _ = _common.pad_rows(jnp.asarray(t), 24)
    check_grads(
        lambda L: mlkr._mlkr_loss(L, Xp, tp, valid, 8), (jnp.asarray(L),), order=1, modes=["rev"]
    )


def test_mlkr_fit_decreases_loss_and_far_points_stay_finite():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    t = X[:, 0] + 0.1 * rng.normal(size=60)
    base = float(mlkr.mlkr_objective(np.eye(4), X, t))
    res = mlkr.fit_mlkr(X, t, max_iter=50)
    assert res.objective < 0.5 * base
    # kernel weights underflow in the linear domain for far-apart points: log-space keeps it finite
    far = mlkr.mlkr_objective(np.eye(4) * 100.0, X, t)
    assert np.isfinite(float(far))


def test_mlkr_invariant_to_offsets_of_points_and_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    t = X[:, 0] + 0.1 * rng.normal(size=60)
    L = np.eye(4)
    ref = float(mlkr.mlkr_objective(L, X, t))
    np.testing.assert_allclose(float(mlkr.mlkr_objective(L, X + 1e4, t)), ref, rtol=1e-4)
    np.testing.assert_allclose(float(mlkr.mlkr_objective(L, X, t + 1e6)), ref, rtol=1e-4)
    a, b = mlkr.fit_mlkr(X, t, max_iter=10), mlkr.fit_mlkr(X + 1e4, t + 1e6, max_iter=10)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-4)


def test_mlkr_bad_input():
    X, y = _toy()
    t = X[:, 0]
    with pytest.raises(ValueError, match="NaN"):
        mlkr.fit_mlkr(X, np.where(t > 0, np.nan, t))
    with pytest.raises(ValueError, match="constant"):
        mlkr.fit_mlkr(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="n_components=7 is larger"):
        mlkr.fit_mlkr(X, t, n_components=7)
    with pytest.raises(ValueError, match="targets but X has"):
        mlkr.fit_mlkr(X, t[:3])
    with pytest.raises(ValueError, match="lda"):
        mlkr.fit_mlkr(X, t, init="lda")


# ----------------------------------------------------------------------------------------------------
# LFDA


def test_lfda_scatter_matches_brute_force(x64):
    X, y = _toy(n=30, d=4)
    y = y.copy()
    y[:4] = 0  # uneven classes
    Slb_ref, Slw_ref = lfda_scatter_brute(X, y, 3)
    size = 32
    Xp, valid = _common.pad_rows(jnp.asarray(X), size)
    cp, _ = _common.pad_rows(jnp.asarray(y), size, fill=-1)
    for block in (32, 8):
        Slb, Slw = lfda._lfda_scatter(Xp, cp, valid, k=3, n_classes=3, block=block)
        np.testing.assert_allclose(np.asarray(Slw), Slw_ref, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(np.asarray(Slb), Slb_ref, rtol=1e-9, atol=1e-10)


def test_lfda_matches_scipy_generalized_eigenvectors(x64):
    X, y = _toy(n=45, d=5, seed=4)
    res = lfda.fit_lfda(X, y, n_components=3, k=7, embedding_type="plain")
    Slb, Slw = lfda_scatter_brute(X, y, 7)
    _, V = scipy.linalg.eigh(Slb, Slw)
    ref = V[:, ::-1][:, :3].T
    L = np.asarray(res.components)
    cos = np.abs(np.sum(L * ref, axis=1)) / np.linalg.norm(L, axis=1) / np.linalg.norm(ref, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def test_lfda_duplicated_points_take_the_nearest_distinct_scale(x64):
    """With k or more copies of a point in its class, its k-th neighbour distance is 0: every
    affinity of the point was 0, and with every point repeated S_lw = 0 and the components were
    ~1e19 (a class of copies of one point only: NaN)."""
    X, y = _toy(n=30, d=3, seed=2)
    X, y = np.tile(X, (3, 1)), np.tile(y, 3)  # every point three times: k=2 picks a copy
    Slb, Slw = lfda_scatter_brute(X, y, 2)
    assert np.linalg.eigvalsh(Slw)[0] > 1e-3
    res = lfda.fit_lfda(X, y, k=2, embedding_type="plain")
    _, V = scipy.linalg.eigh(Slb, Slw)
    ref = V[:, ::-1].T
    L = np.asarray(res.components)
    cos = np.abs(np.sum(L * ref, axis=1)) / np.linalg.norm(L, axis=1) / np.linalg.norm(ref, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    w = np.asarray(lfda.fit_lfda(X, y, k=2).components)
    assert np.all(np.isfinite(w)) and np.abs(w).max() < 10
    with pytest.raises(ValueError, match="two distinct points"):
        lfda.fit_lfda(np.repeat(np.eye(3), 4, axis=0), np.repeat([0, 1, 2], 4))


def test_lfda_invariant_to_translating_the_data():
    # iris moved by 1e8 (timestamps are this far from 0): the embedding was another one by 1e7 and
    # NaN by 1e8, the squared distances cancelling catastrophically
    X, y = load_iris(return_X_y=True)
    for kind in lfda.EMBEDDINGS:
        L0 = np.asarray(lfda.fit_lfda(X, y, n_components=2, embedding_type=kind).components)
        L1 = np.asarray(lfda.fit_lfda(X + 1e8, y, n_components=2, embedding_type=kind).components)
        np.testing.assert_allclose(np.abs(L1), np.abs(L0), rtol=1e-4, atol=1e-4 * np.abs(L0).max())


def test_lfda_embedding_types_and_digits_finite():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]  # blank border pixels: singular local within-class scatter
    for kind in lfda.EMBEDDINGS:
        res = lfda.fit_lfda(X, y, n_components=10, embedding_type=kind)
        L = np.asarray(res.components)
        assert L.shape == (10, 64) and np.all(np.isfinite(L)) and np.isrealobj(L)
        if kind == "orthonormalized":
            np.testing.assert_allclose(L @ L.T, np.eye(10), atol=1e-4)
    assert np.all(np.isfinite(X @ L.T))


def test_lfda_bad_input():
    X, y = _toy()
    with pytest.raises(ValueError, match="NaN"):
        lfda.fit_lfda(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        lfda.fit_lfda(X, np.zeros(len(X), int))
    with pytest.raises(ValueError, match="n_components=6 is larger"):
        lfda.fit_lfda(X, y, n_components=6)
    with pytest.raises(ValueError, match="labels but X has"):
        lfda.fit_lfda(X, y[1:])
    with pytest.raises(ValueError, match="embedding_type"):
        lfda.fit_lfda(X, y, embedding_type="nope")
    with pytest.raises(ValueError, match="k must be"):
        lfda.fit_lfda(X, y, k=0)
    with pytest.raises(ValueError, match="single sample"):
        lfda.fit_lfda(X[:3], np.arange(3))


# ----------------------------------------------------------------------------------------------------
# Covariance


def test_covariance_matches_pinv_and_is_finite_on_constant_features(x64):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    np.testing.assert_allclose(
        np.asarray(covariance.fit_covariance(X)), np.linalg.inv(np.cov(X, rowvar=False)), rtol=1e-8
    )
    Xc = np.c_[X, np.full(50, 3.0)]  # a constant feature
    M = np.asarray(covariance.fit_covariance(Xc))
    np.testing.assert_allclose(M, np.linalg.pinv(np.cov(Xc, rowvar=False)), rtol=1e-7, atol=1e-12)
    assert np.all(np.isfinite(M))
    M2, L = covariance.fit_covariance(Xc, return_factor=True)
    np.testing.assert_allclose(np.asarray(M2), M, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(L).T @ np.asarray(L), M, rtol=1e-7, atol=1e-12)
    with jax.enable_x64(False):
        X, _ = load_digits(return_X_y=True)
        M = np.asarray(covariance.fit_covariance(X))
    assert np.all(np.isfinite(M)) and np.min(np.linalg.eigvalsh(M)) > -1e-4 * np.max(np.abs(M))


def test_covariance_float32_collinear_features_as_float64():
    """[a, b, a + b] cast to float32: the rounding of a + b was kept as a direction of variance
    (rank judged on the covariance at float64 precision), so M had an eigenvalue 1.7e9 where the
    float64 data give 0, and the float32 cast drowned M's other eigenvalues (42 instead of .035)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 2)) * 3 + 1000
    X = np.c_[A, A[:, 0] + A[:, 1]]
    want = np.linalg.pinv(np.cov(X, rowvar=False))
    for Xt in (X, X.astype(np.float32)):
        M = np.asarray(covariance.fit_covariance(Xt), np.float64)
        np.testing.assert_allclose(M, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_covariance_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        covariance.fit_covariance(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        covariance.fit_covariance(np.ones((1, 3)))
    with pytest.raises(ValueError, match="zero variance"):
        covariance.fit_covariance(np.ones((5, 3)))
    with pytest.raises(ValueError, match="2-dimensional"):
        covariance.fit_covariance(np.ones(5))


def test_audit_regressions_objectives_under_jit_and_argument_checks():
    """mlkr_objective failed under jit (a host check before its traced branch); fit_covariance and
    fit_lfda under jit raised tracer errors; a NaN in L was blamed on X; init="random" with an int
    key raised JAX's TypeError."""
    X, y = load_iris(return_X_y=True)
    X = X[:60].astype(np.float32)
    t = X[:, 0] * 2.0
    eager = float(mlkr.mlkr_objective(jnp.eye(4), X, t))
    jitted = float(jax.jit(lambda L: mlkr.mlkr_objective(L, X, t))(jnp.eye(4)))
    assert np.isclose(jitted, eager, rtol=1e-5)
    # nca_objective with traced labels raised TracerArrayConversionError
    labels = y[:60] + 5  # any integer ids
    want = float(nca.nca_objective(jnp.eye(4), X, labels))
    got = float(jax.jit(nca.nca_objective)(jnp.eye(4), jnp.asarray(X), jnp.asarray(labels)))
    assert np.isclose(got, want, rtol=1e-5)
    with pytest.raises(ValueError, match="fit_covariance runs on the host"):
        jax.jit(covariance.fit_covariance)(jnp.asarray(X))
    with pytest.raises(ValueError, match="fit_lfda runs on the host"):
        jax.jit(lambda a: lfda.fit_lfda(a, y[:60]).M)(jnp.asarray(X))
    L = np.eye(4, dtype=np.float32)
    L[0, 0] = np.nan
    for objective in (nca.nca_objective, lambda L_, X_, _: mlkr.mlkr_objective(L_, X_, t)):
        with pytest.raises(ValueError, match="L contains 1 NaN"):
            objective(L, X, y[:60])
    a = nca.fit_nca(X, y[:60], init="random", key=3, max_iter=2).components
    b = nca.fit_nca(X, y[:60], init="random", key=jax.random.key(3), max_iter=2).components
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="key must be a jax.random key or an int seed"):
        mlkr.fit_mlkr(X, t, init="random", key="abc")


def test_fit_covariance_return_factor_must_be_a_bool():
    # return_factor="False" is truthy: a tuple came back where a matrix was asked for
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="return_factor must be True or False"):
        covariance.fit_covariance(X, return_factor="False")
    assert covariance.fit_covariance(X, return_factor=np.bool_(False)).shape == (3, 3)


def test_functional_fits_refuse_bools_as_numbers():
    """float(True) == 1: fit_itml(tol=True), fit_rca(regularization=True) and fit_scml(beta=True)
    ran with 1 (the estimators already refused bools)."""
    from metriclearn.convex import itml, rca, scml

    rng = np.random.default_rng(0)
    P = rng.standard_normal((8, 2, 3))
    py = np.array([1, -1] * 4)
    with pytest.raises(ValueError, match="tol must be a non-negative finite number"):
        itml.fit_itml(P, py, tol=True)
    X = rng.standard_normal((12, 3))
    chunks = np.repeat(np.arange(4), 3)
    with pytest.raises(ValueError, match="regularization must be 'auto' or a float"):
        rca.fit_rca(X, chunks, regularization=True)
    T = rng.standard_normal((10, 3, 3))
    with pytest.raises(ValueError, match="beta must be a number"):
        scml.fit_scml(T, basis=np.eye(3), beta=True)
