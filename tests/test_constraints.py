"""Tests of metriclearn.constraints: samplers against brute-force enumeration, LMNN helpers."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metriclearn import constraints as C

Y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 3 is a singleton


def brute_similar(y):
    return {(i, j) for i, j in itertools.combinations(range(len(y)), 2) if y[i] == y[j]}


def brute_dissimilar(y):
    return {(i, j) for i, j in itertools.combinations(range(len(y)), 2) if y[i] != y[j]}


def as_set(rows):
    return {tuple(sorted(map(int, r))) for r in rows}


# ---------------------------------------------------------------------------------------------------
# pairs


def test_pairs_valid_distinct_and_labelled():
    idx, py = C.pairs(jax.random.key(0), Y, n_similar=5, n_dissimilar=7)
    assert idx.shape == (12, 2) and idx.dtype == np.int32 and py.dtype == np.int32
    assert np.all(py[:5] == 1) and np.all(py[5:] == -1)
    for (i, j), s in zip(idx, py):
        assert i != j
        assert (Y[i] == Y[j]) == (s == 1)
    assert len(as_set(idx)) == 12  # distinct unordered pairs


def test_pairs_deterministic_per_key_and_int_seed():
    a = C.pairs(jax.random.key(3), Y, n_similar=4, n_dissimilar=4)
    b = C.pairs(jax.random.key(3), Y, n_similar=4, n_dissimilar=4)
    c = C.pairs(3, Y, n_similar=4, n_dissimilar=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], c[0])
    draws = {C.pairs(k, Y, n_similar=4, n_dissimilar=4)[0].tobytes() for k in range(6)}
    assert len(draws) > 1


def test_pairs_shortfall_returns_all_with_warning():
    with pytest.warns(UserWarning, match="similar pairs"):
        idx, py = C.pairs(0, Y, n_similar=100, n_dissimilar=3)
    sim = idx[py == 1]
    assert as_set(sim) == brute_similar(Y)
    with pytest.warns(UserWarning, match="dissimilar pairs"):
        idx, py = C.pairs(0, Y, n_similar=1, n_dissimilar=10_000)
    assert as_set(idx[py == -1]) == brute_dissimilar(Y)


def test_pairs_uniform_coverage_large():
    y = np.random.RandomState(0).randint(0, 7, 5000)
    idx, py = C.pairs(1, y, n_similar=3000, n_dissimilar=3000)
    assert len(as_set(idx)) == 6000
    assert np.all((y[idx[:, 0]] == y[idx[:, 1]]) == (py == 1))
    # every class appears among similar pairs roughly in proportion to its number of pairs
    counts = np.bincount(y[idx[py == 1, 0]], minlength=7)
    assert counts.min() > 0


def test_dissimilar_pairs_memory_linear_in_n_with_many_classes():
    # used to enumerate all C (C - 1) / 2 class pairs: ~8 GB for 30k singleton classes
    import tracemalloc

    y = np.arange(4000)
    tracemalloc.start()
    try:
        idx, py = C.pairs(0, y, n_similar=0, n_dissimilar=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak  # O(n) work arrays, not O(C^2)
    assert idx.shape == (50, 2) and len(as_set(idx)) == 50 and np.all(idx[:, 0] != idx[:, 1])


def test_dissimilar_pairs_uniform_over_brute_force():
    counts = dict.fromkeys(brute_dissimilar(Y), 0)
    for seed in range(300):
        idx, _ = C.pairs(seed, Y, n_similar=0, n_dissimilar=5)
        for r in as_set(idx):
            counts[r] += 1  # KeyError if a pair is not dissimilar
    freq = np.array(list(counts.values())) / 300
    assert freq.min() > 0.05 and freq.max() < 0.25  # each has probability 5/35 = 0.143


def test_pairs_errors():
    with pytest.raises(ValueError, match="single class"):
        C.pairs(0, np.zeros(5), n_similar=1, n_dissimilar=1)
    with pytest.raises(ValueError, match="single member"):
        C.pairs(0, np.arange(5), n_similar=1, n_dissimilar=1)
    # only dissimilar pairs from singletons is fine
    idx, py = C.pairs(0, np.arange(5), n_similar=0, n_dissimilar=3)
    assert idx.shape == (3, 2) and np.all(py == -1)
    with pytest.raises(ValueError, match="positive"):
        C.pairs(0, Y, n_similar=0, n_dissimilar=0)
    with pytest.raises(ValueError, match="n_similar"):
        C.pairs(0, Y, n_similar=-1, n_dissimilar=2)
    with pytest.raises(ValueError, match="1-dimensional"):
        C.pairs(0, Y[:, None], n_similar=1, n_dissimilar=1)
    with pytest.raises(ValueError, match="key"):
        C.pairs(None, Y, n_similar=1, n_dissimilar=1)
    with pytest.raises(ValueError, match="NaN"):
        C.pairs(0, np.array([0.0, np.nan, 1.0]), n_similar=1, n_dissimilar=1)


# ---------------------------------------------------------------------------------------------------
# triplets and quadruplets


def brute_triplets(y):
    n = len(y)
    return {
        (a, b, c)
        for a in range(n)
        for b in range(n)
        for c in range(n)
        if a != b and y[a] == y[b] and y[c] != y[a]
    }


def test_triplets_valid_and_distinct():
    t = C.triplets(0, Y, n_triplets=40)
    assert t.shape == (40, 3) and t.dtype == np.int32
    rows = {tuple(map(int, r)) for r in t}
    assert len(rows) == 40
    assert rows <= brute_triplets(Y)


def test_triplets_dense_and_shortfall():
    total = brute_triplets(Y)
    t = C.triplets(1, Y, n_triplets=len(total) - 3)  # dense request: enumeration path
    assert len({tuple(map(int, r)) for r in t}) == len(total) - 3
    with pytest.warns(UserWarning, match="triplets"):
        t = C.triplets(1, Y, n_triplets=len(total) + 10)
    assert {tuple(map(int, r)) for r in t} == total


def test_triplets_errors():
    with pytest.raises(ValueError, match="at least 2 classes"):
        C.triplets(0, np.zeros(6), n_triplets=3)
    with pytest.raises(ValueError, match="single member"):
        C.triplets(0, np.arange(4), n_triplets=3)
    with pytest.raises(ValueError, match="n_triplets"):
        C.triplets(0, Y, n_triplets=0)


def test_quadruplets_valid_distinct_and_shortfall():
    q = C.quadruplets(0, Y, n_quadruplets=50)
    assert q.shape == (50, 4) and q.dtype == np.int32
    assert len({tuple(map(int, r)) for r in q}) == 50
    assert np.all(Y[q[:, 0]] == Y[q[:, 1]]) and np.all(q[:, 0] != q[:, 1])
    assert np.all(Y[q[:, 2]] != Y[q[:, 3]])
    y = np.array([0, 0, 1])
    total = 2 * 4  # ordered similar pairs x ordered dissimilar pairs
    with pytest.warns(UserWarning, match="quadruplets"):
        q = C.quadruplets(0, y, n_quadruplets=20)
    assert len({tuple(map(int, r)) for r in q}) == total
    with pytest.raises(ValueError):
        C.quadruplets(0, np.zeros(4), n_quadruplets=2)


# ---------------------------------------------------------------------------------------------------
# chunklets


def test_chunklets_groups_same_class():
    y = np.repeat(np.arange(3), [7, 5, 4])
    ids = C.chunklets(0, y, n_chunks=4, chunk_size=3)
    assert ids.shape == y.shape and ids.dtype == np.int32
    assert set(np.unique(ids[ids >= 0])) == {0, 1, 2, 3}
    for c in range(4):
        members = np.flatnonzero(ids == c)
        assert len(members) == 3 and len(set(y[members])) == 1


def test_chunklets_shortfall_never_fails():
    # iris-like: metric-learn's RCA_Supervised fails when too few chunks can be formed
    y = np.repeat(np.arange(3), 50)
    with pytest.warns(UserWarning, match="chunklets"):
        ids = C.chunklets(0, y, n_chunks=100, chunk_size=2)
    assert ids.max() == 74 and np.all(ids >= 0)
    np.testing.assert_array_equal(np.bincount(ids), np.full(75, 2))
    with pytest.raises(ValueError, match="chunk_size=5"):
        C.chunklets(0, np.array([0, 0, 1, 1]), n_chunks=1, chunk_size=5)
    with pytest.raises(ValueError, match="chunk_size"):
        C.chunklets(0, y, n_chunks=3, chunk_size=1)
    # a single class is fine for chunklets
    assert C.chunklets(0, np.zeros(6), n_chunks=2, chunk_size=3).max() == 1


# ---------------------------------------------------------------------------------------------------
# target neighbours and impostors


def brute_targets(X, y, k):
    out = []
    for i in range(len(X)):
        cand = [j for j in range(len(X)) if j != i and y[j] == y[i]]
        d = [np.sum((X[i] - X[j]) ** 2) for j in cand]
        order = sorted(range(len(cand)), key=lambda t: (d[t], cand[t]))
        out.append([cand[t] for t in order[:k]])
    return np.array(out)


def test_target_neighbors_brute_force():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 4)
    y = rng.randint(0, 3, 30)
    got = C.target_neighbors(X, y, k=3, block_size=7)
    assert got.shape == (30, 3) and got.dtype == np.int32
    np.testing.assert_array_equal(got, brute_targets(X, y, 3))


def test_target_neighbors_ties_go_to_lower_index():
    # integer grid: many exact distance ties at the k-th neighbour (argpartition picks arbitrarily)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(30, 2)).astype(float)
    y = rng.integers(0, 2, 30)
    np.testing.assert_array_equal(C.target_neighbors(X, y, k=3), brute_targets(X, y, 3))
    X = np.zeros((40, 2))  # all tied: the k lowest other indices of the class
    y = np.repeat([0, 1], 20)
    got = C.target_neighbors(X, y, k=3, block_size=7)
    np.testing.assert_array_equal(got[5], [0, 1, 2])
    np.testing.assert_array_equal(got[21], [20, 22, 23])


def test_target_neighbors_errors():
    X = np.random.RandomState(0).randn(6, 2)
    with pytest.raises(ValueError, match="class 'b' has 2 member"):
        C.target_neighbors(X, np.array(["a", "a", "a", "a", "b", "b"]), k=2)
    with pytest.raises(ValueError, match="labels"):
        C.target_neighbors(X, np.zeros(5), k=1)
    with pytest.raises(ValueError, match="NaN"):
        C.target_neighbors(np.full((6, 2), np.nan), np.zeros(6), k=1)


def brute_impostors(XL, y, targets, margin):
    out = []
    for i in range(len(XL)):
        thresh = max(np.sum((XL[i] - XL[j]) ** 2) for j in targets[i]) + margin
        out.append(
            {l for l in range(len(XL)) if y[l] != y[i] and np.sum((XL[i] - XL[l]) ** 2) < thresh}
        )
    return out


def test_impostors_brute_force_and_jit():
    rng = np.random.RandomState(1)
    X = rng.randn(23, 3)
    y = rng.randint(0, 3, 23)
    targets = C.target_neighbors(X, y, k=2)
    L = rng.randn(2, 3)
    XL = X @ L.T
    expect = brute_impostors(XL, y, targets, 0.5)
    imp = C.impostors(XL, y, targets, margin=0.5, block_size=5)
    assert imp.idx.shape == imp.valid.shape and imp.idx.shape[0] == 23
    for i in range(23):
        assert set(np.asarray(imp.idx[i])[np.asarray(imp.valid[i])].tolist()) == expect[i]
        assert int(imp.n_candidates[i]) == len(expect[i])
    mask = C.impostor_mask(XL, y, targets, margin=0.5, block_size=6)
    for i in range(23):
        assert set(np.flatnonzero(np.asarray(mask[i])).tolist()) == expect[i]
    # jitted, truncated to the m nearest candidates
    f = jax.jit(C.impostors, static_argnames=("max_impostors", "block_size"))
    imp3 = f(jnp.asarray(XL), jnp.asarray(y), jnp.asarray(targets), margin=0.5, max_impostors=3)
    for i in range(23):
        d = {l: np.sum((XL[i] - XL[l]) ** 2) for l in expect[i]}
        nearest = sorted(d, key=d.get)[:3]
        got = np.asarray(imp3.idx[i])[np.asarray(imp3.valid[i])].tolist()
        assert set(got) == set(nearest)
    with pytest.raises(ValueError, match="max_impostors"):
        jax.jit(lambda a, b, c: C.impostors(a, b, c).idx)(XL, jnp.asarray(y), targets)
    with pytest.raises(ValueError, match="target_idx"):
        C.impostors(XL, y, targets[:5])


@pytest.mark.parametrize("fn", [C.impostors, C.impostor_mask])
def test_impostors_reject_nonfinite_margin(fn):
    # a NaN margin used to give an empty impostor set (every comparison with NaN is False), silently
    X = np.random.RandomState(0).randn(8, 2)
    y = np.repeat([0, 1], 4)
    targets = C.target_neighbors(X, y, k=1)
    for bad in (float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="margin"):
            fn(X, y, targets, margin=bad)


def test_check_pairs_errors():
    P = np.zeros((4, 2, 3))
    y = np.array([1, -1, 1, -1])
    got, yy = C.check_pairs(P, y.astype(float))
    assert got.shape == (4, 2, 3) and yy.dtype == np.int32
    with pytest.raises(ValueError, match=r"\[n, 2, d\]"):
        C.check_pairs(np.zeros((4, 3, 3)), y)
    with pytest.raises(ValueError, match="3-dimensional"):
        C.check_pairs(np.zeros((4, 3)), y)
    with pytest.raises(ValueError, match="empty"):
        C.check_pairs(np.zeros((0, 2, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="only -1"):
        C.check_pairs(P, np.array([1, 0, 1, -1]))
    with pytest.raises(ValueError, match="only similar"):
        C.check_pairs(P, np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        C.check_pairs(P, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        C.check_pairs(np.full((4, 2, 3), np.nan), y)


# ---------------------------------------------------------------------------------------------------
# k-NN triplets (SCML_Supervised)


def brute_knn_triplets(X, y, k_genuine, k_impostor):
    """Loop over anchors: nearest same-class points x nearest other-class points, ties to lower index."""
    rows = []
    for a in range(len(X)):
        d = {j: float(np.sum((X[a] - X[j]) ** 2)) for j in range(len(X))}
        same = sorted((j for j in d if j != a and y[j] == y[a]), key=lambda j: (d[j], j))
        other = sorted((j for j in d if y[j] != y[a]), key=lambda j: (d[j], j))
        for b in same[:k_genuine]:
            for c in other[:k_impostor]:
                rows.append((a, b, c))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _knn_data(seed=0, n=30, d=4):
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(3), n // 3)
    rng.shuffle(y)
    return rng.randn(n, d) * [1.0, 3.0, 0.5, 2.0][:d] + 5.0, y


@pytest.mark.parametrize("use_x64", [False, True])
def test_knn_triplets_brute_force(use_x64):
    X, y = _knn_data()
    with jax.enable_x64(use_x64):
        got = C.knn_triplets(X, y, k_genuine=3, k_impostor=4, block_size=7)
        again = C.knn_triplets(X, y, k_genuine=3, k_impostor=4, block_size=1)
    assert got.shape == (30 * 3 * 4, 3) and got.dtype == np.int32
    np.testing.assert_array_equal(got, brute_knn_triplets(X, y, 3, 4))
    np.testing.assert_array_equal(again, got)
    a, b, c = got.T
    assert np.all(a != b) and np.all(y[a] == y[b]) and np.all(y[a] != y[c])


def test_knn_triplets_defaults_and_exact_ties():
    # symmetric integer grid (mean exactly 0): many exactly equal distances, broken by lower index
    g = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], np.float32)
    X = np.concatenate([g, g])  # every point duplicated: distance-0 neighbours
    y = (np.arange(len(X)) % 2).astype(np.int64)
    got = C.knn_triplets(X, y)  # metric-learn's defaults k_genuine=3, k_impostor=10
    assert got.shape == (50 * 3 * 10, 3)
    np.testing.assert_array_equal(got, brute_knn_triplets(X, y, 3, 10))


def test_knn_triplets_shortfalls_warn_and_return_what_exists():
    X = np.random.RandomState(2).randn(len(Y), 3)
    # class 1 has 2 members, class 3 one: fewer genuine neighbours; the singleton anchors nothing
    with pytest.warns(UserWarning, match=r"k_genuine=2.*but only"):
        got = C.knn_triplets(X, Y, k_genuine=2, k_impostor=3)
    np.testing.assert_array_equal(got, brute_knn_triplets(X, Y, 2, 3))
    assert len(got) == (3 * 2 + 2 * 1 + 4 * 2 + 1 * 0) * 3
    assert 9 not in got[:, 0] and 9 not in got[:, 1] and 9 in got[:, 2]
    # class 2 (4 members) sees only 6 other-class points, fewer than k_impostor = 7
    with pytest.warns(UserWarning, match=r"\[2\] have < k_impostor=7"):
        got = C.knn_triplets(X, Y, k_genuine=1, k_impostor=7)
    np.testing.assert_array_equal(got, brute_knn_triplets(X, Y, 1, 7))
    assert len(got) == 3 * 7 + 2 * 7 + 4 * 6 + 1 * 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shortfall, no warning
        C.knn_triplets(X[:9], Y[:9], k_genuine=1, k_impostor=4)


def test_knn_triplets_errors():
    X, y = _knn_data()
    with pytest.raises(ValueError, match="at least 2 classes"):
        C.knn_triplets(X, np.zeros(30))
    with pytest.raises(ValueError, match="single member"):
        C.knn_triplets(X[:3], np.arange(3))
    Xn = X.copy()
    Xn[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        C.knn_triplets(Xn, y)
    Xn[4, 1] = -np.inf
    with pytest.raises(ValueError, match="infinite"):
        C.knn_triplets(Xn, y)
    with pytest.raises(ValueError, match="2-dimensional"):
        C.knn_triplets(X[:, 0], y)
    with pytest.raises(ValueError, match="at least one feature"):
        C.knn_triplets(X[:, :0], y)
    with pytest.raises(ValueError, match="29 labels but X has 30"):
        C.knn_triplets(X, y[:-1])
    for name, bad in (("k_genuine", 0), ("k_impostor", -1), ("k_genuine", 2.5), ("block_size", 0)):
        with pytest.raises(ValueError, match=name):
            C.knn_triplets(X, y, **{name: bad})


def test_knn_triplets_at_float32_extremes():
    """x 1e20 overflowed the squared distances (inf - inf): no triplet, and SCML_Supervised then
    failed with "index triplets must have shape [m, 3] with m >= 1"."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    want = C.knn_triplets(X, y, k_genuine=2, k_impostor=3)
    for scale in (1e20, 1e-25):
        got = C.knn_triplets(X * np.float32(scale), y, k_genuine=2, k_impostor=3)
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------------
# audit fixes: exact counts, float64 centring, messages


def test_triplet_count_beyond_int64_is_exact():
    """sum_c n_c (n_c - 1) (n - n_c) wrapped around int64 for two classes of 2e6: a negative count
    ("only -2446752073709551616 distinct ones exist") and a 29 TiB enumeration (MemoryError)."""
    y = np.repeat(np.array([0, 1], np.int8), 2_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shortfall warning
        t = C.triplets(0, y, n_triplets=10)
        q = C.quadruplets(1, y, n_quadruplets=10)
    assert t.shape == (10, 3) and len(as_set(t)) == 10
    assert np.all(y[t[:, 0]] == y[t[:, 1]]) and np.all(t[:, 0] != t[:, 1])
    assert np.all(y[t[:, 0]] != y[t[:, 2]])
    assert (
        q.shape == (10, 4) and np.all(y[q[:, 0]] == y[q[:, 1]]) and np.all(y[q[:, 2]] != y[q[:, 3]])
    )


def test_unrank_triu_exact_for_ranks_beyond_2_to_53():
    """A float64 rank t > 2**53 (classes of more than ~1.34e8 members) gave sqrt(< 0) = NaN and
    garbage (negative) indices."""
    for m in range(2, 30):  # every rank of small triangles, against NumPy's order
        i, j = C._unrank_triu(np.arange(m * (m - 1) // 2), np.full(m * (m - 1) // 2, m))
        a, b = np.triu_indices(m, 1)
        np.testing.assert_array_equal(i, a)
        np.testing.assert_array_equal(j, b)
    rng = np.random.default_rng(0)
    for m in (2 * 10**8, 3 * 10**8, 10**9, 3 * 10**9):
        total = m * (m - 1) // 2
        t = np.concatenate(
            [[0, 1, m - 2, m - 1, total - 3, total - 2, total - 1], rng.integers(0, total, 200)]
        )
        i, j = C._unrank_triu(t, np.full(len(t), m))
        for ti, ii, jj in zip(t.tolist(), i.tolist(), j.tolist()):  # exact Python ints
            assert 0 <= ii < jj < m and ii * (2 * m - ii - 1) // 2 + jj - ii - 1 == ti


def test_check_array_refuses_values_beyond_the_target_dtype():
    """Finite float64 values beyond float32 were cast to inf silently (finiteness was checked
    before the cast): target_neighbors returned garbage and knn_triplets (0, 3)."""
    from metriclearn._validation import check_array

    big = np.array([[1.0, 2.0], [3e39, 0.0]])
    with pytest.raises(ValueError, match=r"XL has values beyond the range of float32.*3e\+39"):
        check_array(big, "XL")
    with pytest.raises(ValueError, match="A has values beyond the range of float16"):
        check_array(np.array([7e4], np.float32), "A", dtype=jnp.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "overflow encountered in cast"
        assert np.isinf(np.asarray(check_array(big, "XL", allow_overflow=True))).any()
    assert check_array(big / 1e10, "XL").dtype == jnp.float32  # in range: fine
    with jax.enable_x64(True):
        assert check_array(big, "XL").dtype == jnp.float64
    # target_neighbors / knn_triplets compute in float64: such data keep their neighbours (they
    # returned garbage before; test_float64_data_beyond_float32_keep_their_neighbours)
    X = np.random.default_rng(0).normal(size=(12, 3))
    y = np.repeat([0, 1, 2], 4)
    np.testing.assert_array_equal(
        C.target_neighbors(X * 2.0**500, y, k=2), C.target_neighbors(X, y, k=2)
    )


def test_neighbours_are_translation_invariant_and_exact_on_integer_data():
    """X was cast to float32 before target_neighbors' float64 work and knn_triplets' centring:
    iris + 1e7 changed 148 of 150 rows' target neighbours and 3641 of 4500 k-NN triplets."""
    rng = np.random.default_rng(3)
    X = rng.integers(-20, 60, size=(60, 3)) / 8.0  # on a grid: many exact distance ties
    y = rng.integers(0, 3, 60)
    want_t = brute_targets(X, y, 3)
    want_k = brute_knn_triplets(X, y, 2, 3)
    for shift in (0.0, 1e7, -3e5):
        np.testing.assert_array_equal(C.target_neighbors(X + shift, y, k=3, block_size=7), want_t)
        got = C.knn_triplets(X + shift, y, k_genuine=2, k_impostor=3, block_size=16)
        np.testing.assert_array_equal(got, want_k)


def test_knn_triplets_ties_on_an_uncentred_integer_set_go_to_the_lower_index():
    """The mean (3/7) was taken in float32: anchor 2's impostors 4 and 5, both at exactly 1.0,
    came out as 5."""
    X = np.array(
        [[-2.0, -1.0], [-1.0, 1.0], [2.0, 1.0], [-1.0, 1.0], [2.0, 2.0], [2.0, 0.0], [1, 0]]
    )
    y = np.array([1, 0, 0, 0, 1, 1, 1])
    got = C.knn_triplets(X, y, k_genuine=1, k_impostor=1)
    assert got[got[:, 0] == 2][0, 2] == 4
    np.testing.assert_array_equal(got, brute_knn_triplets(X, y, 1, 1))
    np.testing.assert_array_equal(
        C.knn_triplets(X, y, k_genuine=2, k_impostor=3), brute_knn_triplets(X, y, 2, 3)
    )


@pytest.mark.parametrize("fn", [C.impostors, C.impostor_mask])
def test_impostors_validate_block_size(fn):
    """block_size was never checked: -3 and 0 passed silently, 2.5 / None / 'a' raised TypeErrors."""
    X = np.random.default_rng(0).normal(size=(8, 2))
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    T = C.target_neighbors(X, y, k=1)
    for bad in (-3, 0, 2.5, None, "a", True):
        with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
            fn(X, y, T, block_size=bad)
    np.testing.assert_array_equal(
        np.asarray(fn(X, y, T, block_size=np.int64(3))[0]), np.asarray(fn(X, y, T)[0])
    )


def test_messages_name_the_arguments():
    keys = jax.random.split(jax.random.key(0), 2)
    for call in (
        lambda k: C.pairs(k, [0, 0, 1, 1], n_similar=1, n_dissimilar=1),
        lambda k: C.triplets(k, [0, 0, 1, 1], n_triplets=1),
        lambda k: C.quadruplets(k, [0, 0, 1, 1], n_quadruplets=1),
        lambda k: C.chunklets(k, [0, 0, 1, 1], n_chunks=1),
    ):
        with pytest.raises(ValueError, match=r"key must be a single .*shape \(2,\)"):
            call(keys)
    with pytest.raises(ValueError, match="y has 3 labels but XL has 4 rows"):
        C.impostors(np.zeros((4, 2)), [0, 0, 1], np.zeros((4, 1), int))


def test_shortfall_warnings_point_at_the_caller():
    """triplets / quadruplets used stacklevel=5: the warning named the caller's caller."""
    import sys

    y = [0, 0, 1]
    with pytest.warns(UserWarning, match="distinct") as rec:
        C.triplets(0, y, n_triplets=50), (lines := [sys._getframe().f_lineno])
        C.quadruplets(0, y, n_quadruplets=50), lines.append(sys._getframe().f_lineno)
        C.pairs(0, y, n_similar=5, n_dissimilar=1), lines.append(sys._getframe().f_lineno)
        C.chunklets(0, y, n_chunks=5), lines.append(sys._getframe().f_lineno)
    assert [(w.filename, w.lineno) for w in rec] == [(__file__, line) for line in lines]


def test_negative_labels_are_an_ordinary_class_as_documented():
    """metric-learn's Constraints treats negative labels as unlabeled; here -1 is a class (binary
    {-1, +1} labels), and the docstrings say so."""
    y = np.array([-1, -1, -1, 1, 1, 1])
    idx, pair_y = C.pairs(0, y, n_similar=6, n_dissimilar=9)
    assert as_set(idx[pair_y == 1]) == brute_similar(y)
    assert as_set(idx[pair_y == -1]) == brute_dissimilar(y)
    for fn in (C.pairs, C.chunklets, C.knn_triplets):
        assert "``-1`` included" in " ".join(fn.__doc__.split()), fn.__name__


def test_float64_data_beyond_float32_keep_their_neighbours():
    """target_neighbors / knn_triplets compute in float64: data scaled by 2**1000 (exact) must give
    the neighbours of the unscaled data, not the float32 overflow error of a first version."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    np.testing.assert_array_equal(
        C.target_neighbors(X * 2.0**1000, y, k=3), C.target_neighbors(X, y, k=3)
    )
    np.testing.assert_array_equal(
        np.asarray(C.knn_triplets(X * 2.0**1000, y)), np.asarray(C.knn_triplets(X, y))
    )


def _reference_pairs(key, y, n_similar, n_dissimilar):
    """pairs() written out plainly: enumerate every pair in rank order (similar: class, then the
    upper triangle of its members; dissimilar: class pair, then member of the first, then of the
    second) and take Generator.choice(total, k, replace=False) of them, as the draws behind the
    published results did."""
    rng = C._rng(key)
    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    sim = np.array([(a, b) for m in members for a, b in itertools.combinations(m, 2)])
    lin = np.sort(rng.choice(len(sim), size=n_similar, replace=False)) if n_similar else []
    sim = sim[lin][rng.permutation(n_similar)] if n_similar else np.zeros((0, 2), int)
    dis = []
    for c, d in itertools.combinations(range(len(classes)), 2):
        a, b = np.meshgrid(members[c], members[d], indexing="ij")
        dis.append(np.stack([a.ravel(), b.ravel()], axis=1))
    dis = np.concatenate(dis)
    dis = dis[rng.choice(len(dis), size=n_dissimilar, replace=False)]
    return np.concatenate([sim, dis]).astype(np.int32)


def test_pairs_up_to_the_choice_limit_keep_their_draws(monkeypatch):
    """Up to _CHOICE_LIMIT candidate pairs (every *_Supervised default on iris / digits sized data,
    and Generator.choice's own full-permutation regime, k > total // 50, below the limit) a seed
    draws bit-identically the pairs it drew before the memory fix."""
    cases = [
        (np.repeat([0, 1, 2], 50), 180, 180),  # iris, 20 * C**2 constraints
        (np.repeat(np.arange(10), 180), 2000, 2000),  # digits
        (np.repeat([0, 1], 300), 3000, 5000),  # k > total // 50
    ]
    for y, n_s, n_d in cases:
        for seed in (0, 1):
            idx, _ = C.pairs(seed, y, n_similar=n_s, n_dissimilar=n_d)
            np.testing.assert_array_equal(idx, _reference_pairs(seed, y, n_s, n_d))
    # at the limit itself still choice's draw; one candidate more, the other draw
    y, n_s, n_d = cases[2]
    monkeypatch.setattr(C, "_CHOICE_LIMIT", 300 * 300)  # the dissimilar total
    idx, _ = C.pairs(0, y, n_similar=0, n_dissimilar=n_d)
    np.testing.assert_array_equal(idx, _reference_pairs(0, y, 0, n_d))
    monkeypatch.setattr(C, "_CHOICE_LIMIT", 300 * 300 - 1)
    assert not np.array_equal(C.pairs(0, y, n_similar=0, n_dissimilar=n_d)[0], idx)


def _n_distinct(v):  # np.unique, without its hash table (a minute for 2e7 int64 here)
    v = np.sort(v)
    return int(np.count_nonzero(v[1:] != v[:-1])) + 1


def _check_distinct_pairs(idx, pair_y, y, n_similar, n_dissimilar):
    assert idx.shape == (n_similar + n_dissimilar, 2) and idx.dtype == np.int32
    assert np.array_equal(pair_y, np.repeat([1, -1], [n_similar, n_dissimilar]))
    lo, hi = np.minimum(idx[:, 0], idx[:, 1]), np.maximum(idx[:, 0], idx[:, 1])
    assert np.all(lo < hi) and _n_distinct(lo.astype(np.int64) * len(y) + hi) == len(idx)
    assert np.array_equal(y[idx[:, 0]] == y[idx[:, 1]], pair_y == 1)


def test_pairs_beyond_the_choice_limit_in_memory_of_the_request(monkeypatch):
    """Generator.choice(total, k, replace=False) with k > total // 50 permutes a whole
    arange(total): 76 MB for 200,000 of the 9e6 dissimilar pairs of two classes of 3,000
    (3.2 GB and 30 s for 9e6 of 4e8 similar ones). Beyond _CHOICE_LIMIT the draw takes memory
    ~ the request: exact counts, distinct valid pairs, uniform over the members."""
    import tracemalloc

    y = np.repeat([0, 1], 3000)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            idx, pair_y = C.pairs(3, y, n_similar=0, n_dissimilar=200_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, peak  # the output's unranking only (19 MB), no arange(9e6) (76 MB)
    _check_distinct_pairs(idx, pair_y, y, 0, 200_000)
    # the same paths on small totals (a lowered limit): sparse, dense (the complement of a sparse
    # draw), similar and dissimilar, a shortfall
    monkeypatch.setattr(C, "_CHOICE_LIMIT", 1000)
    y = np.repeat([0, 1], 60)  # 3,600 dissimilar and 3,540 similar pairs
    for n_s, n_d in ((3000, 0), (0, 3000), (1000, 1000)):
        idx, pair_y = C.pairs(4, y, n_similar=n_s, n_dissimilar=n_d)
        _check_distinct_pairs(idx, pair_y, y, n_s, n_d)
    idx, pair_y = C.pairs(0, y, n_similar=0, n_dissimilar=1800)
    counts = np.bincount(idx[:, 0], minlength=60)  # 30 expected, sd ~ 4
    assert np.all(np.abs(counts - 30) < 20)
    with pytest.warns(UserWarning, match="only 3600 distinct"):
        idx, pair_y = C.pairs(1, y, n_similar=0, n_dissimilar=3601)
    _check_distinct_pairs(idx, pair_y, y, 0, 3600)
    # the draw itself: distinct, in range, uniform, different per seed
    rng = np.random.default_rng(0)
    total = 200_001
    for k in (total // 50 + 1, total // 3, total - 10):
        v = C._choose_distinct(rng, total, k)
        assert v.dtype == np.int64 and len(v) == k and _n_distinct(v) == k
        assert v.min() >= 0 and v.max() < total
        assert abs(np.mean(v) / total - 0.5) < 0.01
        assert abs(np.mean(v[: k // 2]) - np.mean(v[k // 2 :])) / total < 0.01  # random order


def test_zero_width_inputs_name_the_argument():
    X = np.random.default_rng(0).normal(size=(8, 2))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"X must have at least one feature, got shape \(8, 0\)"):
        C.target_neighbors(X[:, :0], y, k=1)
    for fn in (C.impostors, C.impostor_mask):
        with pytest.raises(ValueError, match=r"target_idx must have at least one column.*\(8, 0\)"):
            fn(X, y, np.zeros((8, 0), np.int32))
        with pytest.raises(ValueError, match="target_idx must have at least one column"):
            jax.jit(lambda t, fn=fn: fn(X, y, t))(jnp.zeros((8, 0), jnp.int32))  # traced
        with pytest.raises(ValueError, match=r"target_idx must have shape \[n, k\] with n = 8"):
            jax.jit(lambda t, fn=fn: fn(X, y, t))(jnp.zeros((7, 2), jnp.int32))


def test_check_pairs_names_a_non_numeric_pair_y():
    P = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match=r"got dtype <U2 with values \['1', '-1'\]"):
        C.check_pairs(P, np.array(["1", "-1", "1"]))
    with pytest.raises(ValueError, match=r"got dtype object with values \[1, 'a'\]"):
        C.check_pairs(P, np.array([1, "a", 1], dtype=object))  # unsortable: np.unique fails
    with pytest.raises(ValueError, match="got dtype bool"):
        C.check_pairs(P, np.array([True, False, True]))
    with pytest.raises(
        ValueError, match=r"only -1 \(dissimilar\) and \+1 \(similar\), got \[0, 2\]"
    ):
        C.check_pairs(P, np.array([1, 0, 2]))
    with pytest.raises(ValueError, match=r"got \[nan\]"):
        C.check_pairs(P, np.array([1.0, -1.0, np.nan]))


def test_float64_beyond_float32_range_warns_nothing():
    """The float32 cast of the check-only validation overflowed with a RuntimeWarning although
    the neighbours are computed in float64 (and right)."""
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = np.repeat([0, 1, 2], 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = C.target_neighbors(X * 1e300, y, k=3)
        trip = np.asarray(C.knn_triplets(X * 1e300, y, k_genuine=2, k_impostor=3))
    np.testing.assert_array_equal(got, C.target_neighbors(X, y, k=3))
    np.testing.assert_array_equal(trip, np.asarray(C.knn_triplets(X, y, k_genuine=2, k_impostor=3)))


def test_impostors_refuse_zero_width_XL():
    """XL of shape [n, 0] was accepted (every distance 0)."""
    y = np.repeat([0, 1], 4)
    for fn in (C.impostors, C.impostor_mask):
        with pytest.raises(
            ValueError, match=r"XL must have at least one feature, got shape \(8, 0\)"
        ):
            fn(np.zeros((8, 0)), y, np.zeros((8, 1), np.int32))
