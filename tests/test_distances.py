"""Tests of metriclearn.distances: paired forms, pairwise, gradients, axioms, bad input, benchmark."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads
from scipy.spatial import distance as sd
from scipy.special import rel_entr
from sklearn.metrics import pairwise_distances
from sklearn.metrics.pairwise import additive_chi2_kernel

from metriclearn import distances as D

REAL = ["euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski", "cosine_distance"]
PROB = ["kl_divergence", "jensen_shannon", "bhattacharyya", "matusita", "chi_square"]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _probs(rng, n, d, zeros=False):
    p = rng.random((n, d)) + 0.05
    if zeros:
        p[rng.random((n, d)) < 0.3] = 0.0
        p[:, 0] += 0.1  # no all-zero row
    return p / p.sum(-1, keepdims=True)


def _psd(rng, d, rank=None):
    A = rng.standard_normal((rank or d, d))
    return A.T @ A, A


# ------------------------------------------------------------------------------------------------
# Paired forms vs scipy (float64)
# ------------------------------------------------------------------------------------------------


def _bhattacharyya_ref(p, q):
    return -np.log(np.sum(np.sqrt(p * q)))


def _reference(name, a, b, /, **kw):
    """Scipy/NumPy reference of one distance on single vectors (float64)."""
    if name == "euclidean":
        return sd.euclidean(a, b)
    if name == "sqeuclidean":
        return sd.sqeuclidean(a, b)
    if name == "manhattan":
        return sd.cityblock(a, b)
    if name == "chebyshev":
        return sd.chebyshev(a, b)
    if name == "minkowski":
        return sd.minkowski(a, b, p=kw.get("p", 2.0))
    if name in ("cosine", "cosine_distance"):
        return sd.cosine(a, b)
    if name == "cosine_similarity":
        return 1.0 - sd.cosine(a, b)
    if name == "mahalanobis":
        M = kw["M"] if "M" in kw else kw["L"].T @ kw["L"]
        v = sd.mahalanobis(a, b, M)
        return v * v if kw.get("squared") else v
    if name == "kl_divergence":
        return rel_entr(a, b).sum()
    if name == "jensen_shannon":
        js = sd.jensenshannon(a, b)
        return js if kw.get("distance") else js * js
    if name == "bhattacharyya":
        return _bhattacharyya_ref(a, b)
    if name == "matusita":
        return sd.euclidean(np.sqrt(a), np.sqrt(b))
    if name == "chi_square":
        return -0.5 * additive_chi2_kernel(a[None], b[None])[0, 0]
    raise AssertionError(name)


def _cases(rng, d=5):
    M, A = _psd(rng, d)
    return [
        ("euclidean", {}),
        ("sqeuclidean", {}),
        ("manhattan", {}),
        ("chebyshev", {}),
        ("minkowski", {"p": 1.0}),
        ("minkowski", {"p": 1.5}),
        ("minkowski", {"p": 3}),
        ("minkowski", {"p": 0.5}),
        ("cosine_distance", {}),
        ("cosine_similarity", {}),
        ("mahalanobis", {"M": M}),
        ("mahalanobis", {"L": A[:3]}),
        ("mahalanobis", {"M": M, "squared": True}),
    ]


@pytest.mark.usefixtures("x64")
def test_paired_real_matches_scipy():
    rng = _rng(1)
    X, Y = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    for name, kw in _cases(rng):
        got = np.asarray(D.DISTANCES[name](X, Y, **kw))
        assert got.dtype == np.float64
        want = [_reference(name, x, y, **kw) for x, y in zip(X, Y)]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {kw}")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("zeros", [False, True])
def test_paired_probability_matches_scipy(zeros):
    rng = _rng(2)
    P, Q = _probs(rng, 6, 7, zeros), _probs(rng, 6, 7, zeros)
    for name in PROB:
        for kw in [{}, {"distance": True}] if name == "jensen_shannon" else [{}]:
            got = np.asarray(D.DISTANCES[name](P, Q, **kw))
            want = [_reference(name, p, q, **kw) for p, q in zip(P, Q)]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
            assert not np.isnan(got).any()


def test_float32_default_and_values():
    x, y = jnp.array([0.0, 0.0]), jnp.array([3.0, 4.0])
    assert D.euclidean(x, y).dtype == jnp.float32
    assert float(D.euclidean(x, y)) == 5.0
    assert float(D.manhattan(x, y)) == 7.0
    assert float(D.chebyshev(x, y)) == 4.0
    assert float(D.minkowski(x, y, p=math.inf)) == 4.0
    np.testing.assert_allclose(D.minkowski(x, y, p=2), 5.0, rtol=1e-6)
    # integer input becomes float32
    assert D.sqeuclidean([0, 0], [3, 4]).dtype == jnp.float32
    np.testing.assert_allclose(D.jensen_shannon([1.0, 0.0], [0.0, 1.0]), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(D.chi_square([1.0, 0.0], [0.0, 1.0]), 1.0)
    np.testing.assert_allclose(D.matusita([1.0, 0.0], [0.0, 1.0]), np.sqrt(2), rtol=1e-6)


def test_float64_under_x64(x64):
    assert D.euclidean(np.zeros(3), np.ones(3)).dtype == jnp.float64
    assert D.pairwise("cosine", np.ones((3, 2))).dtype == jnp.float64


def test_paired_broadcasts_leading_axes():
    rng = _rng(3)
    X, y = rng.standard_normal((4, 3, 5)), rng.standard_normal(5)
    out = D.manhattan(X, y)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, np.abs(X - y).sum(-1), rtol=1e-5)


def test_minkowski_large_p_no_overflow():
    x, y = jnp.zeros(3), jnp.array([30.0, 1.0, 2.0])
    np.testing.assert_allclose(D.minkowski(x, y, p=200.0), 30.0, rtol=1e-5)


def test_zero_vector_cosine_convention():
    z, x = jnp.zeros(3), jnp.array([1.0, 2.0, 3.0])
    assert float(D.cosine_similarity(z, x)) == 0.0
    assert float(D.cosine_distance(z, x)) == 1.0
    g = jax.grad(lambda a: D.cosine_distance(a, x))(z)
    assert np.isfinite(g).all()


def test_kl_inf_not_nan_and_gradient_finite():
    p, q = jnp.array([0.5, 0.5, 0.0]), jnp.array([1.0, 0.0, 0.0])
    assert float(D.kl_divergence(p, q)) == np.inf
    assert float(D.kl_divergence(q, p)) == pytest.approx(np.log(2.0), rel=1e-6)  # 0 log 0 = 0
    assert float(D.bhattacharyya(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))) == np.inf
    for f in (D.kl_divergence, D.jensen_shannon, D.bhattacharyya, D.matusita, D.chi_square):
        for a, b in [(q, p), (p, p), (q, q)]:
            gp, gq = jax.grad(f, argnums=(0, 1))(a, b)
            assert np.isfinite(gp).all() and np.isfinite(gq).all(), f.__name__
    # where the value is infinite the gradient is still not NaN
    gp, gq = jax.grad(D.kl_divergence, argnums=(0, 1))(p, q)
    assert not (np.isnan(gp).any() or np.isnan(gq).any())


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------


def test_gradients_finite_at_coincident_points():
    rng = _rng(4)
    x = jnp.asarray(rng.standard_normal(4), dtype=jnp.float32)
    M, A = _psd(rng, 4)
    for name, kw in _cases(rng, d=4) + [("mahalanobis", {"M": M}), ("mahalanobis", {"L": A})]:
        f = functools.partial(D.DISTANCES[name], **kw)
        gx, gy = jax.jit(jax.grad(f, argnums=(0, 1)))(x, x)
        assert np.isfinite(gx).all() and np.isfinite(gy).all(), (name, kw)
    # pairwise X vs X (diagonal at zero distance)
    X = jnp.asarray(rng.standard_normal((5, 4)), dtype=jnp.float32)
    X = X.at[1].set(X[0])  # two coincident rows off the diagonal too
    for name in ["euclidean", "cosine", "manhattan", "minkowski", "chebyshev"]:
        g = jax.jit(jax.grad(lambda A, name=name: D.pairwise(name, A).sum()))(X)
        assert np.isfinite(g).all(), name
    g = jax.jit(jax.grad(lambda A: D.pairwise("mahalanobis", A, M=M).sum()))(X)
    assert np.isfinite(g).all()


@pytest.mark.usefixtures("x64")
def test_check_grads():
    rng = _rng(5)
    x, y = rng.standard_normal(4), rng.standard_normal(4)
    M, A = _psd(rng, 4)
    p, q = _probs(rng, 1, 4)[0], _probs(rng, 1, 4)[0]
    # under jit the value checks are skipped, so finite-difference perturbations of a probability
    # vector (no longer summing to 1) are accepted
    check_grads(jax.jit(D.euclidean), (x, y), order=2, modes=["rev"])
    check_grads(jax.jit(lambda a, b: D.minkowski(a, b, p=3.0)), (x, y), order=1, modes=["rev"])
    check_grads(jax.jit(D.cosine_distance), (x, y), order=1, modes=["rev"])
    check_grads(jax.jit(lambda a, b: D.mahalanobis(a, b, M=M)), (x, y), order=1, modes=["rev"])
    for f in (D.kl_divergence, D.jensen_shannon, D.bhattacharyya, D.matusita, D.chi_square):
        check_grads(jax.jit(f), (p, q), order=1, modes=["rev"], eps=1e-6)
    X, Y = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    check_grads(jax.jit(lambda a, b: D.pairwise("euclidean", a, b)), (X, Y), order=1, modes=["rev"])
    check_grads(jax.jit(lambda a: D.pairwise("mahalanobis", a, L=A)), (X,), order=1, modes=["rev"])


# ------------------------------------------------------------------------------------------------
# Pairwise
# ------------------------------------------------------------------------------------------------


def _all_named(rng, d):
    M, A = _psd(rng, d, rank=2)
    return [
        ("euclidean", {}),
        ("sqeuclidean", {}),
        ("manhattan", {}),
        ("chebyshev", {}),
        ("minkowski", {"p": 3.0}),
        ("cosine", {}),
        ("cosine_similarity", {}),
        ("mahalanobis", {"M": M}),
        ("mahalanobis", {"L": A}),
        ("mahalanobis", {"L": A, "squared": True}),
    ]


@pytest.mark.usefixtures("x64")
def test_pairwise_matches_double_loop():
    rng = _rng(6)
    X, Y = rng.standard_normal((7, 4)), rng.standard_normal((5, 4))
    for name, kw in _all_named(rng, 4):
        got = np.asarray(D.pairwise(name, X, Y, **kw))
        want = np.array([[_reference(name, x, y, **kw) for y in Y] for x in X])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{name} {kw}")
        got_same = np.asarray(D.pairwise(name, X, **kw))
        want_same = np.array([[_reference(name, x, y, **kw) for y in X] for x in X])
        if name != "cosine_similarity":
            np.fill_diagonal(want_same, 0.0)
        np.testing.assert_allclose(got_same, want_same, rtol=1e-9, atol=1e-9, err_msg=name)
    P, Q = _probs(rng, 6, 5, zeros=True), _probs(rng, 4, 5, zeros=True)
    for name in PROB:
        got = np.asarray(D.pairwise(name, P, Q))
        want = np.array([[_reference(name, p, q) for q in Q] for p in P])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)

    def user_fn(x, y, *, w):
        return jnp.sum(w * jnp.abs(x - y))

    got = D.pairwise(user_fn, X, Y, w=2.0)
    np.testing.assert_allclose(got, 2.0 * sd.cdist(X, Y, "cityblock"), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_pairwise_matches_sklearn():
    rng = _rng(7)
    X, Y = rng.standard_normal((9, 6)), rng.standard_normal((4, 6))
    M, _ = _psd(rng, 6)
    for ours, theirs, kw in [
        ("euclidean", "euclidean", {}),
        ("sqeuclidean", "sqeuclidean", {}),
        ("manhattan", "cityblock", {}),
        ("chebyshev", "chebyshev", {}),
        ("minkowski", "minkowski", {"p": 3}),
        ("cosine", "cosine", {}),
    ]:
        np.testing.assert_allclose(
            D.pairwise(ours, X, Y, **kw), pairwise_distances(X, Y, metric=theirs, **kw), atol=1e-10
        )
        np.testing.assert_allclose(
            D.pairwise(ours, X, **kw), pairwise_distances(X, metric=theirs, **kw), atol=1e-10
        )
    np.testing.assert_allclose(
        D.pairwise("mahalanobis", X, Y, M=M),
        pairwise_distances(X, Y, metric="mahalanobis", VI=M),
        rtol=1e-9,
    )


@pytest.mark.parametrize("name", ["euclidean", "cosine", "mahalanobis", "manhattan", "chi_square"])
def test_blocked_equals_unblocked(name):
    rng = _rng(8)
    X = rng.standard_normal((11, 3)).astype(np.float32)
    Y = rng.standard_normal((6, 3)).astype(np.float32)
    kw = {"M": _psd(rng, 3)[0]} if name == "mahalanobis" else {}
    if name == "chi_square":
        X, Y = _probs(rng, 11, 3).astype(np.float32), _probs(rng, 6, 3).astype(np.float32)
    for Yarg in (None, Y):
        full = D.pairwise(name, X, Yarg, block_size=100, **kw)
        for bs in (1, 4):
            np.testing.assert_allclose(
                D.pairwise(name, X, Yarg, block_size=bs, **kw), full, rtol=1e-5, atol=1e-6
            )
        if Yarg is None:
            assert np.all(np.diag(np.asarray(D.pairwise(name, X, block_size=4, **kw))) == 0.0)


def test_blocked_by_memory_budget(monkeypatch):
    rng = _rng(9)
    X = rng.standard_normal((37, 8)).astype(np.float32)
    full = D.pairwise("euclidean", X)
    full_v = D.pairwise("manhattan", X)
    monkeypatch.setattr(D, "BLOCK_ELEMENTS", 64)  # forces 1-row blocks (matmul) and 1-row (vmap)
    assert D._rows_per_block(37, 37, 1, None) == 1
    np.testing.assert_allclose(D.pairwise("euclidean", X), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(D.pairwise("manhattan", X), full_v, rtol=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "sqeuclidean", "cosine", "mahalanobis", "manhattan"])
def test_diagonal_exactly_zero(name):
    rng = _rng(10)
    X = (100.0 * rng.standard_normal((16, 5)) + 1e3).astype(np.float32)  # cancellation-prone
    kw = {"M": _psd(rng, 5)[0]} if name == "mahalanobis" else {}
    Dm = np.asarray(D.pairwise(name, X, **kw))
    assert np.all(np.diag(Dm) == 0.0)
    assert np.all(Dm >= 0.0)
    np.testing.assert_allclose(Dm, Dm.T, rtol=1e-5, atol=1e-3 * Dm.max())
    # without the forced diagonal the identity would leave rounding noise there (float32, |x|~1e3)
    if name in ("euclidean", "sqeuclidean"):
        off = np.asarray(D.pairwise(name, X, X + 0.0, **kw))
        assert np.all(np.isfinite(off)) and np.all(off >= 0.0)


def test_jit_and_vmap_forms():
    rng = _rng(11)
    X = jnp.asarray(rng.standard_normal((6, 3)), dtype=jnp.float32)
    M, A = (jnp.asarray(a, dtype=jnp.float32) for a in _psd(rng, 3))
    P = jnp.asarray(_probs(rng, 6, 3), dtype=jnp.float32)
    cases = [
        ("euclidean", {}, X),
        ("minkowski", {"p": 3.0}, X),
        ("cosine", {}, X),
        ("mahalanobis", {"M": M}, X),
        ("mahalanobis", {"L": A}, X),
        ("kl_divergence", {}, P),
        ("jensen_shannon", {"distance": True}, P),
    ]
    for name, kw, Z in cases:
        f = functools.partial(D.DISTANCES[name], **kw)
        Z2 = Z[::-1]
        eager = f(Z, Z2)
        np.testing.assert_allclose(jax.jit(f)(Z, Z2), eager, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(jax.vmap(f)(Z, Z2), eager, rtol=1e-5, atol=1e-6)
        pw = jax.jit(functools.partial(D.pairwise, name, **kw))(Z, Z2)
        np.testing.assert_allclose(jnp.diag(pw), eager, rtol=1e-4, atol=1e-5)
    # M and L as traced arguments of a jitted function (value checks skipped, shapes checked)
    pw = jax.jit(lambda a, m: D.pairwise("mahalanobis", a, M=m))(X, M)
    np.testing.assert_allclose(pw, D.pairwise("mahalanobis", X, L=A), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Metric axioms
# ------------------------------------------------------------------------------------------------

_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pts=hnp.arrays(np.float64, (3, 4), elements=_floats),
    name=st.sampled_from(["euclidean", "manhattan", "chebyshev", "minkowski"]),
    p=st.floats(1.0, 6.0),
)
def test_axioms_property(pts, name, p):
    kw = {"p": p} if name == "minkowski" else {}
    with jax.enable_x64(True):
        f = functools.partial(D.DISTANCES[name], **kw)
        x, y, z = (jnp.asarray(a) for a in pts)
        dxy, dyx, dxz, dyz, dxx = (float(v) for v in (f(x, y), f(y, x), f(x, z), f(y, z), f(x, x)))
    scale = 1e-9 * (1.0 + np.abs(pts).max())
    assert dxy >= 0.0 and dxz >= 0.0 and dyz >= 0.0
    assert dxx == 0.0
    assert abs(dxy - dyx) <= scale
    assert dxz <= dxy + dyz + scale
    if np.abs(pts[0] - pts[1]).max() > 1e-100:  # squares of smaller gaps underflow
        assert dxy > 0.0


@settings(max_examples=20, deadline=None)
@given(pts=hnp.arrays(np.float64, (3, 3), elements=st.floats(0.01, 1.0)))
def test_axioms_property_probability(pts):
    P = pts / pts.sum(-1, keepdims=True)
    with jax.enable_x64(True):
        p, q, r = (jnp.asarray(a) for a in P)
        for f in (D.matusita, functools.partial(D.jensen_shannon, distance=True)):
            assert float(f(p, r)) <= float(f(p, q)) + float(f(q, r)) + 1e-12
            assert abs(float(f(p, q)) - float(f(q, p))) <= 1e-12
        for f in (D.kl_divergence, D.bhattacharyya, D.chi_square):
            assert float(f(p, q)) >= 0.0 and abs(float(f(p, p))) <= 1e-12


def test_check_metric_axioms_examples():
    rng = _rng(12)
    X = rng.standard_normal((25, 3)).astype(np.float32)
    r = D.check_metric_axioms("euclidean", X)
    assert r["kind"] == "metric"
    assert all(r[a]["holds"] for a in ("non_negativity", "identity", "symmetry", "triangle"))

    r = D.check_metric_axioms("sqeuclidean", X)
    assert not r["triangle"]["holds"] and r["triangle"]["worst_violation"] > 0.1
    assert r["triangle"]["violating_triples"] > 0
    assert r["symmetry"]["holds"] and r["identity"]["holds"]
    assert r["kind"] == "semimetric"

    P = _probs(rng, 20, 4).astype(np.float32)
    r = D.check_metric_axioms("kl_divergence", P)
    assert not r["symmetry"]["holds"] and r["symmetry"]["worst_violation"] > 1e-3
    assert r["identity"]["holds"] and r["non_negativity"]["holds"]
    assert r["kind"] in ("divergence", "quasimetric")
    assert D.check_metric_axioms("jensen_shannon", P, distance=True)["kind"] == "metric"
    assert D.check_metric_axioms("matusita", P)["kind"] == "metric"

    # singular M: a random rank-2 metric in 4-D; pairs differing along its null space
    A = rng.standard_normal((2, 4))
    M = (A.T @ A).astype(np.float32)
    null = np.linalg.svd(A)[2][-1]
    Xs = rng.standard_normal((12, 4))
    Xs = np.concatenate([Xs, Xs[:6] + 3.0 * null]).astype(np.float32)
    r = D.check_metric_axioms("mahalanobis", Xs, M=M)
    assert r["kind"] == "pseudometric"
    assert not r["identity"]["holds"] and r["identity"]["reflexive"]
    assert r["identity"]["zero_distinct_pairs"] >= 6
    assert r["identity"]["worst_violation"] == pytest.approx(3.0, rel=1e-3)
    assert r["non_negativity"]["holds"] and r["symmetry"]["holds"] and r["triangle"]["holds"]
    r = D.check_metric_axioms("mahalanobis", Xs, L=A.astype(np.float32))
    assert r["kind"] == "pseudometric"
    # a full-rank M is a metric
    assert D.check_metric_axioms("mahalanobis", Xs, M=_psd(rng, 4)[0])["kind"] == "metric"


def test_check_metric_axioms_callables_and_inf():
    rng = _rng(13)
    X = rng.standard_normal((10, 2))

    def neg(x, y):
        return -jnp.sum(jnp.abs(x - y))

    r = D.check_metric_axioms(neg, X)
    assert not r["non_negativity"]["holds"] and r["kind"] == "not a distance"

    def asym(x, y):
        return jnp.sum(jnp.abs(x - y)) + 0.5 * jnp.maximum(x[0] - y[0], 0.0)

    r = D.check_metric_axioms(asym, X)
    assert not r["symmetry"]["holds"] and r["kind"] == "quasimetric"
    # minkowski p < 1 breaks the triangle inequality
    assert not D.check_metric_axioms("minkowski", X, p=0.5)["triangle"]["holds"]
    # KL with disjoint supports: inf values, no NaN, violations reported
    P = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    r = D.check_metric_axioms("kl_divergence", P)
    assert r["kind"] == "divergence" and not r["symmetry"]["holds"]
    assert not np.isnan(r["triangle"]["worst_violation"])
    assert not np.isnan(r["symmetry"]["worst_violation"])


def test_check_metric_axioms_numpy_callables():
    """A callable that cannot be traced (scipy's, NumPy's) is evaluated pair by pair on the host."""
    import scipy.spatial.distance as sd

    X = _rng(14).standard_normal((9, 3))
    assert D.check_metric_axioms(sd.euclidean, X)["kind"] == "metric"
    r = D.check_metric_axioms(sd.sqeuclidean, X)
    assert r["kind"] == "semimetric" and r["triangle"]["violating_triples"] > 0
    ref = D.check_metric_axioms("minkowski", X, p=0.5)
    got = D.check_metric_axioms(sd.minkowski, X, p=0.5)
    assert got["triangle"]["violating_triples"] == ref["triangle"]["violating_triples"] > 0
    np.testing.assert_allclose(
        got["triangle"]["worst_violation"], ref["triangle"]["worst_violation"], rtol=1e-9
    )

    def branchy(x, y):  # Python branching on values
        return 0.0 if float(np.sum(x - y)) == 0 else float(np.linalg.norm(x - y))

    assert D.check_metric_axioms(branchy, X)["kind"] == "metric"
    with pytest.raises(ValueError, match="one number per pair"):
        D.check_metric_axioms(lambda a, b: np.abs(np.asarray(a) - b), X)
    with pytest.raises(ValueError, match="NaN"):
        D.check_metric_axioms(lambda a, b: float("nan") if a[0] > b[0] else 1.0, X)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

_REAL_FNS = [D.euclidean, D.sqeuclidean, D.manhattan, D.chebyshev, D.minkowski]
_REAL_FNS += [D.cosine_distance, D.cosine_similarity]
_PROB_FNS = [D.kl_divergence, D.jensen_shannon, D.bhattacharyya, D.matusita, D.chi_square]


def test_bad_input_paired():
    x, y = np.ones((4, 3)), np.ones((4, 2))
    M = np.eye(3)
    for f in _REAL_FNS + [functools.partial(D.mahalanobis, M=M)]:
        with pytest.raises(ValueError, match="x and y"):
            f(x, y)
        with pytest.raises(ValueError, match="x contains 3 NaN"):
            f(np.where(np.eye(4, 3) > 0, np.nan, 1.0), np.ones((4, 3)))
        with pytest.raises(ValueError, match="y contains"):
            f(np.ones(3), np.array([1.0, np.inf, 0.0]))
        with pytest.raises(ValueError, match="broadcast"):
            f(np.ones((4, 3)), np.ones((5, 3)))
        with pytest.raises(ValueError, match="scalar"):
            f(1.0, 2.0)
        with pytest.raises(ValueError, match="at least one feature"):
            f(np.ones((2, 0)), np.ones((2, 0)))
        with pytest.raises(ValueError, match="numeric"):
            f(["a", "b"], ["c", "d"])
    p = np.array([0.2, 0.8])
    for f in _PROB_FNS:
        with pytest.raises(ValueError, match="p must be a probability vector .non-negative"):
            f(np.array([-0.2, 1.2]), p)
        with pytest.raises(ValueError, match="q must be a probability vector summing to 1"):
            f(p, np.array([0.2, 0.2]))
        with pytest.raises(ValueError, match="p and q"):
            f(p, np.array([0.2, 0.3, 0.5]))
        with pytest.raises(ValueError, match="q contains"):
            f(p, np.array([np.nan, 1.0]))
        f(p, p + np.array([1e-5, -1e-5]))  # inside the tolerance
    with pytest.raises(ValueError, match="distance must be a Python bool"):
        D.jensen_shannon(p, p, distance="yes")
    for bad_p in (0, -1.0, "two", None, True):
        with pytest.raises(ValueError, match="p must be"):
            D.minkowski(np.ones(2), np.zeros(2), p=bad_p)


def test_bad_input_mahalanobis():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="exactly one of M= .* or L="):
        D.mahalanobis(x, x)
    with pytest.raises(ValueError, match="exactly one"):
        D.mahalanobis(x, x, M=np.eye(3), L=np.eye(3))
    with pytest.raises(ValueError, match="M must be square"):
        D.mahalanobis(x, x, M=np.ones((3, 2)))
    with pytest.raises(ValueError, match="M must be .d, d. with d = 3"):
        D.mahalanobis(x, x, M=np.eye(2))
    with pytest.raises(ValueError, match="M must be positive semi-definite"):
        D.mahalanobis(x, x, M=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="M must be symmetric"):
        D.mahalanobis(x, x, M=np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="M contains"):
        D.mahalanobis(x, x, M=np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="L must be .k, d. with d = 3"):
        D.mahalanobis(x, x, L=np.ones((2, 2)))
    with pytest.raises(ValueError, match="L must be 2-dimensional"):
        D.mahalanobis(x, x, L=np.ones(3))
    with pytest.raises(ValueError, match="squared must be a Python bool"):
        D.mahalanobis(x, x, L=np.eye(3), squared="no")
    with pytest.raises(ValueError, match="M must be positive semi-definite"):
        D.pairwise("mahalanobis", x, M=-np.eye(3))


def test_bad_input_pairwise():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="unknown distance 'eucldean'; valid: .*euclidean"):
        D.pairwise("eucldean", X)
    with pytest.raises(ValueError, match="name_or_fn must be"):
        D.pairwise(3, X)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        D.pairwise("euclidean", np.ones(3))
    with pytest.raises(ValueError, match="X and Y"):
        D.pairwise("euclidean", X, np.ones((2, 4)))
    with pytest.raises(ValueError, match="Y contains"):
        D.pairwise("manhattan", X, np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match="X needs at least 1 rows"):
        D.pairwise("euclidean", np.ones((0, 3)))
    with pytest.raises(ValueError, match="X must be a probability vector"):
        D.pairwise("kl_divergence", X)
    with pytest.raises(ValueError, match="Y must be a probability vector"):
        D.pairwise("chi_square", X / 3, X)
    with pytest.raises(ValueError, match="unknown keyword.*'q'.*valid: \\['p'\\]"):
        D.pairwise("minkowski", X, q=3)
    with pytest.raises(ValueError, match="p must be"):
        D.pairwise("minkowski", X, p=-1)
    for bs in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="block_size"):
            D.pairwise("euclidean", X, block_size=bs)


def test_bad_input_check_metric_axioms():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="unknown distance"):
        D.check_metric_axioms("nope", X)
    with pytest.raises(ValueError, match="X contains"):
        D.check_metric_axioms("euclidean", np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        D.check_metric_axioms("euclidean", np.ones(3))
    with pytest.raises(ValueError, match="atol"):
        D.check_metric_axioms("euclidean", X, atol=-1.0)
    with pytest.raises(ValueError, match="identity_atol"):
        D.check_metric_axioms("euclidean", X, identity_atol=float("nan"))
    with pytest.raises(ValueError, match="X must be a probability vector"):
        D.check_metric_axioms("kl_divergence", X)
    with pytest.raises(ValueError, match="NaN"):
        D.check_metric_axioms(lambda x, y: jnp.log(jnp.sum(x - y)), _rng(0).random((4, 3)))
    with pytest.raises(ValueError, match="scalar"):
        D.check_metric_axioms(lambda x, y: x - y, X)
    with pytest.raises(ValueError, match="exactly one"):
        D.check_metric_axioms("mahalanobis", X)


def test_registry():
    assert set(D.DISTANCES) >= {
        "euclidean",
        "sqeuclidean",
        "manhattan",
        "chebyshev",
        "minkowski",
        "cosine_distance",
        "mahalanobis",
        "kl_divergence",
        "jensen_shannon",
        "bhattacharyya",
        "matusita",
        "chi_square",
    }
    for name, f in D.DISTANCES.items():
        assert f.__doc__ and "Reference" in f.__doc__, name


# ------------------------------------------------------------------------------------------------
# Benchmark smoke test
# ------------------------------------------------------------------------------------------------


def test_benchmark_quick(capsys):
    from benchmarks import pairwise as bench

    out = bench.main(["--quick", "--repeats", "1"])
    text = capsys.readouterr().out
    assert "pairwise euclidean (jit)" in text and "vs XLA matmul" in text
    assert out["euclidean_vs_matmul"] > 0
    assert all(v > 0 for v in out["gflops"].values())


# ------------------------------------------------------------------ numerical edge cases (audit)


def test_pairwise_matmul_identity_does_not_overflow_or_underflow():
    """|x|² overflowed in float32 long before the distance did: two points 1e19 apart were at
    distance 0 (inf − inf = NaN read as 0), later NaN, and 1e20 apart inf. The identity now runs on
    the data divided by a power of two, so in-range distances come out exact."""
    X = np.array([[1e19, 0.0], [2e19, 0.0], [0.0, -1e20]], np.float32)
    want = sd.cdist(X.astype(np.float64), X.astype(np.float64))
    np.testing.assert_allclose(np.asarray(D.pairwise("euclidean", X)), want, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(D.pairwise("euclidean", X, X[:2])), want[:, :2], rtol=1e-6
    )
    assert float(D.euclidean(X[0], X[1])) == pytest.approx(1e19, rel=1e-6)  # as the paired form
    # squared distances of 1e19 fit float32 (1e38); the squares of 1e20 do not: a clear error
    sq = np.asarray(D.pairwise("sqeuclidean", X[:2]))
    assert sq[0, 1] == pytest.approx(1e38, rel=1e-6)
    with pytest.raises(ValueError, match="sqeuclidean: distances overflow float32"):
        D.pairwise("sqeuclidean", X)
    with pytest.raises(ValueError, match="overflow float32"):
        D.sqeuclidean(X[0], X[2])
    # under jit nothing can raise: the inf is passed on, never a NaN or a 0
    off = np.asarray(jax.jit(lambda a: D.pairwise("sqeuclidean", a))(X))[0, 2]
    assert off == np.inf
    # and at the other end, squares of 1e-25 underflow to 0 in float32
    T = np.array([[1e-25, 0.0], [0.0, 2e-25]], np.float32)
    assert np.asarray(D.pairwise("euclidean", T))[0, 1] == pytest.approx(
        np.sqrt(5) * 1e-25, rel=1e-6
    )


def test_mahalanobis_does_not_overflow_for_in_range_distances():
    """The quadratic form overflowed (inf) for a distance of 4e25 with M = 1e10 I in float32."""
    x = np.full(4, 1e20, np.float32)
    y = -x
    M = np.eye(4, dtype=np.float32) * 1e10
    want = 4e20 * 1e5
    assert float(D.mahalanobis(x, y, M=M)) == pytest.approx(want, rel=1e-6)
    assert float(D.mahalanobis(x, y, L=np.sqrt(M))) == pytest.approx(want, rel=1e-6)
    P = np.asarray(D.pairwise("mahalanobis", np.stack([x, y]), M=M))
    assert P[0, 1] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="mahalanobis: distances overflow"):
        D.mahalanobis(x, y, M=M, squared=True)
    # gradient as the plain form's, and zero at coincident points
    Md = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    g = jax.grad(lambda a: D.mahalanobis(a, jnp.ones(3), M=Md))(jnp.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(g), [1 / np.sqrt(3), -2 / np.sqrt(3), 0.0], rtol=1e-6)
    g0 = jax.grad(lambda a: D.mahalanobis(a, jnp.ones(3), M=Md))(jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(g0), 0.0)


def test_distances_beyond_the_dtype_raise():
    """Manhattan, Chebyshev and Minkowski of coordinates near float32's maximum are inf: an error
    on concrete values, as every other overflow in the library."""
    X = np.array([[3e38, 0.0], [-3e38, 0.0]], np.float32)
    for name in ("manhattan", "chebyshev", "minkowski", "euclidean"):
        with pytest.raises(ValueError, match=f"{name}: distances overflow float32"):
            D.pairwise(name, X)
        with pytest.raises(ValueError, match="overflow"):
            getattr(D, name)(X[0], X[1])
    # divergences are inf by definition (p > 0 where q = 0): not an overflow
    assert np.isinf(float(D.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))))


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_cosine_is_scale_invariant_for_large_and_tiny_vectors(scale):
    x = np.array([1.0, 2.0, 0.0], np.float32) * np.float32(scale)
    y = np.array([2.0, 0.0, 1.0], np.float32) * np.float32(scale)
    want = sd.cosine([1.0, 2.0, 0.0], [2.0, 0.0, 1.0])
    assert float(D.cosine_distance(x, y)) == pytest.approx(want, rel=1e-6)
    assert np.asarray(D.pairwise("cosine_distance", np.stack([x, y])))[0, 1] == pytest.approx(
        want, rel=1e-6
    )
    g = jax.grad(lambda a: D.cosine_distance(a, y))(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.usefixtures("x64")
def test_kl_of_near_equal_histograms_matches_scipy():
    """p (log p − log q) cancelled for p ≈ q: relative errors up to 1e-4 (scipy: 1e-10)."""
    rng = _rng(21)
    worst = 0.0
    for _ in range(50):
        p = rng.dirichlet(np.ones(6))
        q = p * (1 + 1e-6 * rng.standard_normal(6))
        q /= q.sum()
        want = rel_entr(p, q).sum()
        worst = max(worst, abs(float(D.kl_divergence(p, q)) - want) / want)
    assert worst < 1e-6
    # ratios that over/underflow keep the log difference; zeros keep their conventions
    assert float(D.kl_divergence(np.array([1.0 - 1e-300, 1e-300]), np.array([1e-300, 1.0 - 1e-300]))) == pytest.approx(rel_entr([1.0, 1e-300], [1e-300, 1.0]).sum(), rel=1e-12)  # fmt: skip
    assert float(D.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))) == np.inf


def test_jensen_shannon_of_near_equal_histograms_in_float32():
    """½Σ p log(p/m) cancelled to 0 in float32 for histograms 1e-4 apart, and the axiom check then
    found the JS distance breaking the triangle inequality."""
    rng = _rng(22)
    P0 = rng.dirichlet(np.ones(5), size=3)
    P = np.concatenate([P0, P0 * (1 + 1e-4 * rng.standard_normal(P0.shape))])
    P = (P / P.sum(-1, keepdims=True)).astype(np.float32)
    with jax.enable_x64(True):
        want = float(
            D.jensen_shannon(P[0].astype(np.float64), P[3].astype(np.float64), distance=True)
        )
    got = float(D.jensen_shannon(P[0], P[3], distance=True))
    assert want > 0 and got == pytest.approx(want, rel=1e-4)
    assert D.check_metric_axioms("jensen_shannon", P, distance=True)["kind"] == "metric"
    # entries the probability check admits just below 0 count as 0: finite, not inf
    p = np.array([0.5 + 1e-5, 0.5, -1e-5], np.float32)
    q = np.array([0.5 - 5e-6, 0.5, 5e-6], np.float32)
    assert np.isfinite(float(D.jensen_shannon(p, q)))


def test_bhattacharyya_when_p_times_q_underflows():
    p = np.array([1e-25, 1.0, 0.0], np.float32)
    q = np.array([1e-25, 0.0, 1.0], np.float32)
    assert float(D.bhattacharyya(p, q)) == pytest.approx(-math.log(1e-25), rel=1e-6)


def test_minkowski_p_as_numpy_or_jax_inf_and_as_a_string():
    x, y = jnp.array([0.0, 1.0, 3.0]), jnp.array([0.0, 0.0, 0.0])
    for p in (np.float32(np.inf), jnp.array(np.inf), float("inf")):
        g = jax.grad(lambda a, p=p: D.minkowski(a, y, p=p))(x)
        np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="p must be a positive number or inf, got '2'"):
        D.minkowski(x, y, p="2")
    with pytest.raises(ValueError, match="p must be a positive number or inf"):
        D.pairwise("minkowski", np.eye(3), p="2")


def test_identity_tolerance_is_not_the_spread_of_the_sample():
    """The default identity tolerance was sqrt(eps)·max D: points 0.5 apart in a sample reaching
    1e4 counted as coincident (float32), and near-duplicate histograms 2e-5 apart too."""
    X = np.array([[0.0], [0.5], [1e4]], np.float32)
    r = D.check_metric_axioms("euclidean", X)
    assert r["kind"] == "metric" and r["identity"]["zero_distinct_pairs"] == 0
    rng = _rng(23)
    P0 = rng.dirichlet(np.ones(5), size=3)
    P = np.concatenate([P0, P0 * (1 + 1e-4 * rng.standard_normal(P0.shape))])
    P = (P / P.sum(-1, keepdims=True)).astype(np.float32)
    assert D.check_metric_axioms("matusita", P)["kind"] == "metric"


@pytest.mark.usefixtures("x64")
def test_paired_euclidean_does_not_overflow():
    """|x - y|^2 overflowed to inf for coordinates 3e200 and 4e200 apart (SciPy: 5e200)."""
    x, y = np.array([3e200, 0.0]), np.array([0.0, 4e200])
    assert float(D.euclidean(x, y)) == pytest.approx(sd.euclidean(x, y), rel=1e-15)
    g = jax.grad(lambda a: D.euclidean(a, jnp.ones(3)))(jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(g), 0.0)  # coincident points: zero gradient


def test_gradients_and_values_at_float32_extremes():
    """KL / JS / chi-square gradients were NaN for a softmax-small q (~1e-20: autodiff's q**2
    underflowed); paired Euclidean / Minkowski / Mahalanobis gradients were NaN 1e-20 apart; and
    9e37 came out as 0 (XLA:CPU flushes 1 / 2**127 to 0, and dividing by it flushed the data)."""
    p, q = jnp.array([0.5, 0.5]), jnp.array([1.0, 1e-20])
    np.testing.assert_allclose(jax.grad(lambda q: D.kl_divergence(p, q))(q), [-0.5, -5e19])
    p3, q3 = jnp.array([0.5, 0.5, 0.0]), jnp.array([0.5, 0.5, 1e-20])
    for f in (D.jensen_shannon, D.chi_square):
        assert bool(jnp.all(jnp.isfinite(jax.grad(lambda q, f=f: f(p3, q))(q3))))
    z = jnp.array([0.0, 0.0, -50.0])
    g = jax.grad(lambda z: D.jensen_shannon(jax.nn.softmax(z), p3))(z)
    assert bool(jnp.all(jnp.isfinite(g)))
    x, y = jnp.zeros(2), jnp.array([3e-20, 4e-20])
    for f in (
        D.euclidean,
        lambda a, b: D.minkowski(a, b, p=3),
        lambda a, b: D.mahalanobis(a, b, M=jnp.eye(2)),
    ):
        g = jax.grad(f)(x, y)
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0.5
    np.testing.assert_allclose(jax.grad(D.euclidean)(x, y), [-0.6, -0.8], rtol=1e-6)
    # the largest ratio stays exactly 1: with ratios in [1/2, 1), p >= 127 underflowed to 0
    e1 = jnp.array([1.0, 0.0])
    assert float(D.minkowski(jnp.zeros(2), e1, p=200.0)) == 1.0
    np.testing.assert_allclose(
        jax.grad(lambda a: D.minkowski(a, e1, p=200.0))(jnp.zeros(2)), [-1, 0]
    )
    np.testing.assert_allclose(
        D.pairwise("minkowski", jnp.array([[0.0, 0.0], [1.0, 0.0], [3.0, 4.0]]), p=127.0)[0],
        [0.0, 1.0, 4.0],
        rtol=1e-6,
    )
    big, zero = jnp.array([9e37, 0.0]), jnp.zeros(2)
    for value in (
        D.euclidean(big, zero),
        D.minkowski(big, zero, p=3),
        D.mahalanobis(big, zero, M=jnp.eye(2)),
    ):
        np.testing.assert_allclose(value, 9e37, rtol=1e-6)
    np.testing.assert_allclose(D.cosine_similarity(big, big), 1.0)
    np.testing.assert_allclose(
        D.pairwise("euclidean", jnp.stack([big, zero]))[0, 1], 9e37, rtol=1e-6
    )
    np.testing.assert_allclose(
        D.pairwise("euclidean", jnp.array([[2e38, 0.0], [1e38, 0.0]]))[0, 1],
        1e38,
        rtol=1e-6,
    )


def test_raw_kernels_and_small_checks():
    """pairwise_euclidean took NaN and mismatched widths unchecked (TypeError) and put NaN on its
    "exact zero" diagonal for 1e20 (inf - inf); minkowski took p=np.True_; pairwise with a function
    returning a vector gave an [n, n, d] array; reduce(..., ["mean"]) raised TypeError; masked inf
    losses gave avg_nonzero a NaN weight gradient."""
    from metriclearn import reducers

    X = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="pairwise_sqeuclidean: distances overflow"):  # was NaN
        D.pairwise_euclidean(X * 1e20)
    with pytest.raises(ValueError, match="NaN or inf"):
        D.pairwise_euclidean(X.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError):
        D.pairwise_sqeuclidean(X, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="p must be a positive number"):
        D.minkowski(X[0], X[1], p=np.True_)
    with pytest.raises(ValueError, match="one number per pair"):
        D.pairwise(lambda a, b: a - b, X)
    with pytest.raises(ValueError, match="unknown reduction"):
        reducers.reduce(jnp.ones(3), ["mean"])
    losses = jnp.array([1.0, 0.0, 3.0, jnp.inf, jnp.nan])
    g = jax.grad(lambda w: reducers.avg_nonzero(losses, w))(jnp.array([1.0, 1.0, 2.0, 0.0, 0.0]))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_metric_axiom_tolerances_follow_the_data():
    """Absolute tolerances (max(1, max D)) made Euclidean on data of scale 1e-5 a "pseudometric";
    a float32 rank-one M's rounding broke the triangle inequality by ~5e-7 ("semimetric")."""
    X = jax.random.normal(jax.random.key(0), (10, 3))
    assert D.check_metric_axioms("euclidean", X * 1e-5)["kind"] == "metric"
    assert (
        D.check_metric_axioms("manhattan", jnp.array([[0.0], [1e-6], [2e-6]]))["kind"] == "metric"
    )
    w = jnp.array([1.0, 2.0, 3.0]) / 7
    Y = jax.random.normal(jax.random.key(2), (30, 3))
    assert D.check_metric_axioms("mahalanobis", Y, M=jnp.outer(w, w))["kind"] == "metric"
    assert D.check_metric_axioms("sqeuclidean", X * 1e-5)["kind"] == "semimetric"  # still caught


def test_nan_input_gives_nan_not_zero_under_jit():
    # the largest coordinate NaN failed `m > 0`, and euclidean / minkowski returned 0
    x, y = jnp.array([jnp.nan, 1.0]), jnp.array([0.0, 1.0])
    assert np.isnan(float(jax.jit(D.euclidean)(x, y)))
    assert np.isnan(float(jax.jit(functools.partial(D.minkowski, p=3.0))(x, y)))
    assert np.all(np.isnan(np.asarray(jax.grad(D.euclidean)(x, y))))


def test_identity_tolerance_is_the_data_precision_in_the_units_of_the_distance():
    """The default identity tolerance was a fraction of the largest distance (100 eps or
    sqrt(eps) of it): float32 points 0.01 apart made sqeuclidean a 'pseudosemimetric', M = 3I
    with points 1e-3 apart a 'pseudometric' (L = sqrt(3) I: 'metric')."""
    X = jax.random.normal(jax.random.key(0), (20, 4))
    X = X.at[1].set(X[0] + jnp.array([0.01, 0.0, 0.0, 0.0]))
    r = D.check_metric_axioms("sqeuclidean", X)
    assert r["kind"] == "semimetric" and r["identity"]["zero_distinct_pairs"] == 0
    X2 = X.at[1].set(X[0] + jnp.array([1e-3, 0.0, 0.0, 0.0]))
    assert D.check_metric_axioms("mahalanobis", X2, M=3 * jnp.eye(4))["kind"] == "metric"
    assert D.check_metric_axioms("mahalanobis", X2, L=3**0.5 * jnp.eye(4))["kind"] == "metric"
    Xh = _rng(0).standard_normal((20, 4)).astype(np.float16)
    Xh[1] = Xh[0]
    Xh[1, 0] += np.float16(0.25)  # float16's spacing near 1 is 1e-3
    assert D.check_metric_axioms("euclidean", Xh)["kind"] == "metric"
    # still coincident: x and 2x for cosine, an exact override, a discontinuous metric
    Xc = _rng(1).standard_normal((8, 5)).astype(np.float32)
    r = D.check_metric_axioms("cosine", np.concatenate([Xc, 2 * Xc[:2]]))
    assert not r["identity"]["holds"] and r["identity"]["zero_distinct_pairs"] == 2
    assert D.check_metric_axioms("sqeuclidean", X, identity_atol=1e-3)["kind"] == (
        "pseudosemimetric"
    )
    bits = (_rng(2).random((8, 6)) > 0.5).astype(np.float64)
    assert D.check_metric_axioms(sd.hamming, bits)["kind"] == "metric"


@pytest.mark.usefixtures("x64")
def test_identity_tolerance_float64_data():
    X = jax.random.normal(jax.random.key(0), (20, 4), dtype=jnp.float64)
    X = X.at[1].set(X[0] + jnp.array([1e-8, 0.0, 0.0, 0.0]))  # 1e8 x float64's precision
    r = D.check_metric_axioms("euclidean", X)
    assert r["kind"] == "metric" and r["identity"]["zero_distinct_pairs"] == 0


def test_kl_divergence_is_clamped_at_zero():
    """Near-duplicate float32 softmax outputs gave KL = -6.2e-8, and check_metric_axioms 'not a
    distance'."""
    X = jax.random.normal(jax.random.key(0), (10, 4))
    noise = 1e-3 * jax.random.normal(jax.random.key(1), (10, 4))
    P = jax.nn.softmax(jnp.concatenate([X, X + noise]))
    kl = D.kl_divergence(P[:10], P[10:])
    assert float(kl.min()) >= 0.0
    g = jax.grad(lambda q: D.kl_divergence(P[3], q))(P[13])
    assert bool(jnp.all(jnp.isfinite(g)))
    r = D.check_metric_axioms("kl_divergence", P)
    assert r["non_negativity"]["holds"] and r["kind"] == "divergence"


def test_probability_sum_tolerance_does_not_grow_with_sqrt_d():
    """Sums were checked within sqrt(eps) * sqrt(d): a d = 10000 vector 3 % off was accepted (and
    KL came out -0.03)."""
    d = 10000
    q = np.full(d, 1.0 / d, np.float32)
    for f in (D.kl_divergence, D.chi_square, D.matusita):
        with pytest.raises(ValueError, match="summing to 1"):
            f(q, 1.03 * q)
    p = jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, d)))  # float32, normalised
    assert bool(jnp.all(D.kl_divergence(p, p[:, ::-1]) > 0))
    with jax.enable_x64(True):  # float64 held near its own precision: 1e-5 off is refused
        with pytest.raises(ValueError, match="summing to 1"):
            D.kl_divergence(np.full(100, 0.01 * (1 + 1e-5)), np.full(100, 0.01))


def test_half_precision_inputs():
    """bfloat16 raised ValueError('... not inexact') from np.finfo in the probability checks,
    mahalanobis(M=...) and check_metric_axioms."""
    p = jnp.array([0.25, 0.25, 0.5], jnp.bfloat16)
    q = jnp.array([0.5, 0.25, 0.25], jnp.bfloat16)
    for name in PROB:
        v = D.DISTANCES[name](p, q)
        assert v.dtype == jnp.bfloat16 and 0.0 < float(v) < 2.0
    M = jnp.eye(3, dtype=jnp.bfloat16)
    assert float(D.mahalanobis(p, q, M=M)) == pytest.approx(0.3536, rel=1e-2)
    X = jnp.ones((4, 3), jnp.bfloat16) * jnp.arange(4, dtype=jnp.bfloat16)[:, None]
    assert D.check_metric_axioms("euclidean", X)["kind"] == "metric"
    assert D.check_metric_axioms("mahalanobis", X, M=M)["kind"] == "metric"
    P = jnp.array([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25], [0.125, 0.375, 0.5]], jnp.float16)
    assert D.check_metric_axioms("matusita", P)["kind"] == "metric"


def test_matusita_keeps_precision_for_near_equal_histograms():
    """sqrt(p) - sqrt(q) cancelled: relative error 7.9e-3 in float32 at a relative difference of
    1e-5."""
    rng = _rng(0)
    p = rng.dirichlet(np.ones(8))
    q = p * (1 + 1e-5 * rng.standard_normal(8))
    p, q = p.astype(np.float32), (q / q.sum()).astype(np.float32)
    P, Q = p.astype(np.float64), q.astype(np.float64)
    exact = np.sqrt(np.sum((P - Q) ** 2 / (np.sqrt(P) + np.sqrt(Q)) ** 2))
    assert float(D.matusita(p, q)) == pytest.approx(exact, rel=1e-5)
    z = jnp.array([0.5, 0.5, 0.0])
    for a, b in ((z, z), (z, jnp.array([0.5, 0.25, 0.25])), (jnp.array([1.0, 0.0, 0.0]), z)):
        for g in jax.grad(D.matusita, argnums=(0, 1))(a, b):
            assert bool(jnp.all(jnp.isfinite(g)))


def test_pairwise_takes_callables_that_cannot_be_traced():
    """pairwise(scipy.spatial.distance.braycurtis, X) raised TracerArrayConversionError."""
    X = _rng(0).random((4, 3)).astype(np.float32)
    Y = _rng(1).random((2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        D.pairwise(sd.braycurtis, X), sd.cdist(X, X, "braycurtis"), rtol=1e-6
    )
    got = D.pairwise(sd.braycurtis, X, Y)
    assert got.shape == (4, 2) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, sd.cdist(X, Y, "braycurtis"), rtol=1e-6)
    np.testing.assert_allclose(
        D.pairwise(sd.minkowski, X, Y, p=3), sd.cdist(X, Y, "minkowski", p=3), rtol=1e-6
    )
    with pytest.raises(ValueError, match="cannot be traced"):
        jax.jit(lambda A: D.pairwise(sd.braycurtis, A))(X)


def test_quasipseudometric_kind():
    """max(sum(a - b), 0): the triangle inequality holds, symmetry and separation fail; it was
    labelled 'premetric'."""
    X = jax.random.normal(jax.random.key(0), (20, 3))
    r = D.check_metric_axioms(lambda a, b: jnp.maximum(jnp.sum(a - b), 0.0), X)
    assert r["triangle"]["holds"] and not r["symmetry"]["holds"] and not r["identity"]["holds"]
    assert r["kind"] == "quasipseudometric"


def test_pairwise_matmul_path_far_from_the_origin():
    """The matmul identity cancelled for 1000 + N(0, 1) in float32: self-distances of 1, errors of
    0.66 on distances of 3.7 (scikit-learn upcasts; evaluation already shifted its data)."""
    X = np.asarray(1000.0 + jax.random.normal(jax.random.key(0), (50, 8)), np.float32)
    Y = X[::-1] + np.float32(0.5)
    exact = np.sqrt(((X[:, None].astype(np.float64) - Y[None]) ** 2).sum(-1))
    np.testing.assert_allclose(D.pairwise("euclidean", X, Y), exact, rtol=0, atol=1e-3)
    A = np.asarray(jax.random.normal(jax.random.key(1), (3, 8)), np.float32)
    exact_m = np.sqrt(
        (((X[:, None].astype(np.float64) - Y[None]) @ A.T.astype(np.float64)) ** 2).sum(-1)
    )
    np.testing.assert_allclose(D.pairwise("mahalanobis", X, Y, L=A), exact_m, rtol=0, atol=3e-3)
    # integer points keep exact ties (the shift is on a coarse grid)
    G = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], np.float32) + np.float32(1000)
    d = np.asarray(D.pairwise("euclidean", G, G))
    assert d[0, 1] == d[0, 2] == 1.0 and np.all(np.diag(d) == 0)


def test_pairwise_mahalanobis_with_L_centres_before_the_product():
    """pairwise(..., L=) formed X @ L.T before the shift to the grid centre: at an offset of 1e4
    the float32 rounding of the product stayed in the result (errors of 3.9e-3 on distances of
    2.7; 1e-5 with M=, 8e-7 for the paired form)."""
    rng = _rng(0)
    X = (1e4 + rng.normal(size=(40, 4))).astype(np.float32)
    A = rng.normal(size=(2, 4)).astype(np.float32)
    Xd = X.astype(np.float64)
    exact = np.linalg.norm((Xd[:, None] - Xd[None]) @ A.T.astype(np.float64), axis=-1)
    np.testing.assert_allclose(D.pairwise("mahalanobis", X, L=A), exact, rtol=0, atol=5e-5)
    np.testing.assert_allclose(
        D.pairwise("mahalanobis", X[:10], X[10:], L=A), exact[:10, 10:], rtol=0, atol=5e-5
    )


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_pairwise_matmul_scaling_uses_the_float64_range(x64, scale):
    """The exponent of the data's scaling was clipped to float32's +-100: under x64, data of 1e-200
    gave distances 0 and data of 1e200 an overflow error (the paired forms: 1.41e-+200)."""
    X = np.array([[1.0, 0.0], [0.0, 1.0]]) * scale
    want = math.sqrt(2) * scale
    assert float(D.euclidean(X[0], X[1])) == pytest.approx(want, rel=1e-12, abs=0)
    assert float(D.pairwise("euclidean", X)[0, 1]) == pytest.approx(want, rel=1e-12, abs=0)
    for kw in ({"L": np.eye(2)}, {"M": np.eye(2)}):
        got = float(D.pairwise("mahalanobis", X, X[::-1], **kw)[0, 0])
        assert got == pytest.approx(want, rel=1e-12, abs=0)


def test_mahalanobis_scales_L_and_M():
    """The paired form scaled only x - y: an L of 1e-19 on data of 1e19 gave 0 (true 1.414), an L
    of 3e19 an overflow error (true 5.2e19), an M of 2e-38 gave 0 (true 1.22e-19); pairwise's
    (M + Mᵀ) / 2 overflowed for entries beyond 1.7e38 (true 2.45e19)."""
    x = np.array([1e19, 0.0, 0.0], np.float32)
    y = np.array([0.0, 1e19, 0.0], np.float32)
    eye = np.eye(3, dtype=np.float32)
    o, z = np.ones(3, np.float32), np.zeros(3, np.float32)
    cases = [
        (x, y, {"L": eye * np.float32(1e-19)}, math.sqrt(2)),
        (z, o, {"L": eye * np.float32(1e-20)}, math.sqrt(3) * 1e-20),
        (z, o, {"L": eye * np.float32(3e19)}, math.sqrt(3) * 3e19),
        (z, 0.5 * o, {"M": eye * np.float32(2e-38)}, math.sqrt(0.75 * 2e-38)),
        (z, o, {"M": eye * np.float32(2e38)}, math.sqrt(3 * 2e38)),
    ]
    for a, b, kw, want in cases:
        assert float(D.mahalanobis(a, b, **kw)) == pytest.approx(want, rel=1e-5, abs=0), kw
        got = D.pairwise("mahalanobis", np.stack([a, b]), **kw)[0, 1]
        assert float(got) == pytest.approx(want, rel=1e-5, abs=0), kw
    # squared forms, and the gradient, as before on ordinary data
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], np.float32)
    a, b = np.array([1.0, -2.0, 0.5], np.float32), np.array([0.0, 1.0, 2.0], np.float32)
    want2 = float(np.sum((A @ (a - b)) ** 2))
    assert float(D.mahalanobis(a, b, L=A, squared=True)) == pytest.approx(want2, rel=1e-6, abs=0)
    assert float(D.mahalanobis(a, b, M=A.T @ A, squared=True)) == pytest.approx(
        want2, rel=1e-6, abs=0
    )
    g = jax.grad(lambda u: D.mahalanobis(u, b, L=A * 1e-20))(jnp.asarray(a))
    want_g = 1e-20 * A.T @ (A @ (a - b)) / math.sqrt(want2)
    np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-5)


def test_check_metric_axioms_compiles_once_per_setting():
    """A fresh jit(vmap(fn)) per call compiled the paired form again on every call (0.2-0.3 s)."""
    import logging

    compiled = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage():
                compiled.append(record.getMessage())

    X = jax.random.normal(jax.random.key(0), (12, 3))
    settings = (("euclidean", {}), ("minkowski", {"p": 3}), ("mahalanobis", {"M": np.eye(3)}))
    for name, kw in settings:  # the first calls compile
        D.check_metric_axioms(name, X, **kw)
    handler, logger = Count(), logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        for name, kw in settings:
            first = D.check_metric_axioms(name, X, **kw)
            assert D.check_metric_axioms(name, X, **kw) == first
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert compiled == []


def test_check_metric_axioms_callable_may_read_its_settings_concretely():
    """A callable's array settings became traced arguments of the cached program: a callable that
    reads them concretely (np.asarray, float) raised TracerArrayConversionError."""
    X = jax.random.normal(jax.random.key(1), (10, 3))

    def weighted(x, y, w):
        return jnp.sqrt(jnp.sum(np.asarray(w) * (x - y) ** 2))

    def minkowski_p(x, y, p):
        return jnp.sum(jnp.abs(x - y) ** float(p)) ** (1 / float(p))

    assert D.check_metric_axioms(weighted, X, w=np.array([1.0, 2.0, 3.0]))["kind"] == "metric"
    assert D.check_metric_axioms(minkowski_p, X, p=np.array(3.0))["kind"] == "metric"
