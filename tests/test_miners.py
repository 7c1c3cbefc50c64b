"""Tests for metriclearn.miners: hand-made batches, brute force, jit, PML agreement."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metriclearn import losses, miners

# 1-D points, normalize=False: d(0,1)=1, d(0,2)=.5, d(0,3)=3, d(1,2)=.5, d(1,3)=2, d(2,3)=2.5
X_HAND = np.array([[0.0], [1.0], [0.5], [3.0]])
Y_HAND = np.array([0, 0, 1, 1])


def _mask3(triplets, b=4):
    m = np.zeros((b, b, b))
    for a, p, n in triplets:
        m[a, p, n] = 1
    return m


def _mask2(pairs, b=4):
    m = np.zeros((b, b))
    for a, p in pairs:
        m[a, p] = 1
    return m


def _random_batch(seed=0, b=12, d=5, n_classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, d))
    y = rng.integers(0, n_classes, b)
    return x, y


def _dist(x, normalize=True):
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


# ------------------------------------------------------------------------------------------------
# hand-made batch, every miner under jit
# ------------------------------------------------------------------------------------------------

HARD = [(0, 1, 2), (1, 0, 2), (2, 3, 0), (2, 3, 1), (3, 2, 1)]
SEMIHARD_06 = [(3, 2, 0)]
EASY_06 = [(0, 1, 3), (1, 0, 3)]


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("all", HARD + SEMIHARD_06),
        ("hard", HARD),
        ("semihard", SEMIHARD_06),
        ("easy", EASY_06),
    ],
)
def test_triplet_margin_hand(kind, expected):
    fn = jax.jit(
        lambda x, y: miners.triplet_margin(x, y, margin=0.6, type_of_triplets=kind, normalize=False)
    )
    np.testing.assert_array_equal(np.asarray(fn(X_HAND, Y_HAND)), _mask3(expected))


def test_named_hard_semihard_and_all_hand():
    hard = jax.jit(lambda x, y: miners.hard(x, y, margin=0.6, normalize=False))(X_HAND, Y_HAND)
    semi = jax.jit(lambda x, y: miners.semihard(x, y, margin=0.6, normalize=False))(X_HAND, Y_HAND)
    np.testing.assert_array_equal(np.asarray(hard), _mask3(HARD))
    np.testing.assert_array_equal(np.asarray(semi), _mask3(SEMIHARD_06))
    all_t = jax.jit(miners.all_triplets)(X_HAND, Y_HAND)
    np.testing.assert_array_equal(np.asarray(all_t), _mask3(HARD + SEMIHARD_06 + EASY_06))
    pos, neg = jax.jit(miners.all_pairs)(X_HAND, Y_HAND)
    np.testing.assert_array_equal(np.asarray(pos), _mask2([(0, 1), (1, 0), (2, 3), (3, 2)]))
    np.testing.assert_array_equal(np.asarray(neg), (Y_HAND[:, None] != Y_HAND[None, :]) * 1.0)


def test_semihard_facenet_hand():
    f = jax.jit(lambda x, y, m: miners.semihard_facenet(x, y, margin=m, normalize=False))
    np.testing.assert_array_equal(np.asarray(f(X_HAND, Y_HAND, 0.6)), _mask3([(3, 2, 0)]))
    # margin 1.2: (1, 0) gets negative 3 (d=2 < 1+1.2); (0, 1) does not (d=3 >= 2.2)
    np.testing.assert_array_equal(
        np.asarray(f(X_HAND, Y_HAND, 1.2)), _mask3([(3, 2, 0), (1, 0, 3)])
    )


def test_semihard_facenet_brute_force():
    x, y = _random_batch(3, b=10)
    d = _dist(x)
    margin = 0.4
    got = np.asarray(jax.jit(lambda a, b: miners.semihard_facenet(a, b, margin=margin))(x, y))
    want = np.zeros_like(got)
    for a, p in itertools.permutations(range(len(y)), 2):
        if y[a] != y[p]:
            continue
        cands = [n for n in range(len(y)) if y[n] != y[a] and d[a, n] > d[a, p]]
        if cands:
            n = min(cands, key=lambda k: (d[a, k], k))
            if d[a, n] < d[a, p] + margin:
                want[a, p, n] = 1
    np.testing.assert_array_equal(got, want)
    # at most one negative per (a, p) and a subset of PML-style semihard
    assert got.sum(axis=2).max() <= 1
    semi = np.asarray(jax.jit(miners.semihard)(x, y, margin=margin))
    assert np.all(got <= semi)


def test_batch_hard_hand():
    got = np.asarray(jax.jit(lambda x, y: miners.batch_hard(x, y, normalize=False))(X_HAND, Y_HAND))
    np.testing.assert_array_equal(got, _mask3([(0, 1, 2), (1, 0, 2), (2, 3, 0), (3, 2, 1)]))


def test_batch_easy_hard_hand():
    f = jax.jit(
        lambda x, y: miners.batch_easy_hard(
            x, y, pos_strategy="easy", neg_strategy="semihard", normalize=False
        )
    )
    # anchor 0: pos 1 (d=1), closest negative farther than 1: 3; anchor 1: pos 0, neg 3 (d=2);
    # anchor 2: pos 3 (2.5), no negative farther -> none; anchor 3: pos 2 (2.5), neg 0 (3)
    np.testing.assert_array_equal(
        np.asarray(f(X_HAND, Y_HAND)), _mask3([(0, 1, 3), (1, 0, 3), (3, 2, 0)])
    )
    g = jax.jit(
        lambda x, y: miners.batch_easy_hard(
            x, y, pos_strategy="hard", neg_strategy="easy", normalize=False
        )
    )
    np.testing.assert_array_equal(
        np.asarray(g(X_HAND, Y_HAND)), _mask3([(0, 1, 3), (1, 0, 3), (2, 3, 0), (3, 2, 0)])
    )


def test_pair_margin_hand():
    pos, neg = jax.jit(
        lambda x, y: miners.pair_margin(x, y, pos_margin=0.8, neg_margin=1.0, normalize=False)
    )(X_HAND, Y_HAND)
    np.testing.assert_array_equal(np.asarray(pos), _mask2([(0, 1), (1, 0), (2, 3), (3, 2)]))
    np.testing.assert_array_equal(np.asarray(neg), _mask2([(0, 2), (2, 0), (1, 2), (2, 1)]))
    pos, neg = miners.pair_margin(X_HAND, Y_HAND, pos_margin=1.5, neg_margin=0.4, normalize=False)
    np.testing.assert_array_equal(np.asarray(pos), _mask2([(2, 3), (3, 2)]))
    assert float(jnp.sum(neg)) == 0.0


def test_multi_similarity_hand_and_brute_force():
    # unit vectors at angles (degrees); labels 0, 0, 1, 1
    ang = np.radians([0.0, 80.0, 30.0, 170.0])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    pos, neg = jax.jit(lambda a, b: miners.multi_similarity(a, b, epsilon=0.1))(x, Y_HAND)
    s = x @ x.T
    # anchor 0: S_01=cos80=.17, max neg = cos30=.87 -> keep (0,1); negatives vs min pos .17: 2 (.87) kept,
    # 3 (cos170=-.98) dropped
    assert pos[0, 1] == 1 and neg[0, 2] == 1 and neg[0, 3] == 0
    want_p = np.zeros((4, 4))
    want_n = np.zeros((4, 4))
    for a in range(4):
        P = [j for j in range(4) if j != a and Y_HAND[j] == Y_HAND[a]]
        N = [j for j in range(4) if Y_HAND[j] != Y_HAND[a]]
        for p in P:
            want_p[a, p] = float(N != [] and s[a, p] - 0.1 < max(s[a, k] for k in N))
        for n in N:
            want_n[a, n] = float(P != [] and s[a, n] + 0.1 > min(s[a, k] for k in P))
    np.testing.assert_array_equal(np.asarray(pos), want_p)
    np.testing.assert_array_equal(np.asarray(neg), want_n)


def test_distance_weighted_structure_and_determinism():
    x, y = _random_batch(1, b=10, d=4)
    key = jax.random.key(0)
    f = jax.jit(lambda k, a, b: miners.distance_weighted(k, a, b))
    t = np.asarray(f(key, x, y))
    np.testing.assert_array_equal(t, np.asarray(f(key, x, y)))
    d = _dist(x)
    valid_pos = (y[:, None] == y[None, :]) & ~np.eye(10, dtype=bool)
    neg = y[:, None] != y[None, :]
    admissible = neg & (np.maximum(d, 0.5) < 1.4)
    for a, p in itertools.product(range(10), range(10)):
        if valid_pos[a, p] and admissible[a].any():
            assert t[a, p].sum() == 1
            n = int(np.argmax(t[a, p]))
            assert admissible[a, n]
        else:
            assert t[a, p].sum() == 0
    other = np.asarray(f(jax.random.key(1), x, y))
    assert other.shape == t.shape


def test_distance_weighted_sampling_frequencies():
    # anchor 0 / positive 1 of class 0, negatives 2..5 at various angles on the circle (k=2 dims:
    # weight 1/q(d) ∝ d^0 (1 - d^2/4)^(+1/2) = sqrt(1 - d^2/4))
    ang = np.radians([0.0, 5.0, 40.0, 60.0, 75.0, 150.0])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    y = np.array([0, 0, 1, 1, 1, 1])
    keys = jax.random.split(jax.random.key(3), 4000)
    t = jax.jit(jax.vmap(lambda k: miners.distance_weighted(k, x, y)))(keys)
    freq = np.asarray(t[:, 0, 1, :]).mean(0)
    d = np.maximum(_dist(x)[0], 0.5)
    w = np.sqrt(1 - d**2 / 4) * (d < 1.4) * (y != 0)
    w = w / w.sum()
    assert w[5] == 0.0  # 150° is farther than the nonzero-loss cutoff
    np.testing.assert_allclose(freq, w, atol=0.03)


def test_converters():
    x, y = _random_batch(2, b=8)
    pos, neg = jax.jit(miners.pair_margin)(x, y, pos_margin=0.5, neg_margin=1.3)
    t = np.asarray(jax.jit(miners.pairs_to_triplets)(pos, neg))
    p, n = np.asarray(pos), np.asarray(neg)
    for a, b, c in itertools.product(range(8), repeat=3):
        assert t[a, b, c] == p[a, b] * n[a, c]
    tm = np.asarray(jax.jit(miners.semihard)(x, y, margin=0.5))
    pw, nw = jax.jit(miners.triplets_to_pairs)(tm)
    np.testing.assert_array_equal(np.asarray(pw), tm.sum(2))
    np.testing.assert_array_equal(np.asarray(nw), tm.sum(1))


def test_triplet_margin_counts_equal_triplets_to_pairs():
    x, y = _random_batch(5, b=13, d=3)
    x[1] = x[0]  # ties
    x = np.round(x, 1)
    d = miners.distance_matrix(jnp.asarray(x))
    yy = jnp.asarray(y, jnp.int32)
    counts = jax.jit(miners._triplet_margin_counts, static_argnames=("type_of_triplets",))
    for kind in ("all", "hard", "semihard", "easy", None):
        for margin, loss_margin in [(0.0, None), (0.3, 0.1)]:
            if kind is None:
                mask = miners.all_triplets(x, y)
            else:
                mask = miners.triplet_margin(x, y, margin=margin, type_of_triplets=kind)
            if loss_margin is not None:
                mask = mask * ((d[:, :, None] - d[:, None, :]) + loss_margin > 0)
            want = miners.triplets_to_pairs(mask)
            got = counts(d, yy, margin=margin, type_of_triplets=kind, loss_margin=loss_margin)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=str(kind))
            assert float(jnp.sum(got[0])) == float(jnp.sum(mask))


_JITTED = {name: jax.jit(fn) for name, fn in miners.MINERS.items()}


def _mine(name, x, y, key=None):
    key = jax.random.key(0) if key is None else key
    fn = _JITTED[name]
    return fn(key, x, y) if name in miners.NEEDS_KEY else fn(x, y)


def test_one_class_and_singletons_give_empty_masks():
    x = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    one = np.zeros(12, np.int32)
    distinct = np.arange(12, dtype=np.int32)
    for name in miners.MINERS:
        for y in (one, distinct):
            out = _mine(name, x, y)
            leaves = jax.tree_util.tree_leaves(out)
            assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves), name
            if miners.MINER_OUTPUT[name] == "triplet":
                assert float(jnp.sum(out)) == 0.0, name
            else:
                pos, neg = out
                # one class: no negatives; all distinct: no positives
                assert float(jnp.sum(neg if y is one else pos)) == 0.0, name


def test_all_miners_under_jit_shapes_and_coincident_embeddings():
    x, y = _random_batch(4)
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    x[1] = x[0]  # duplicates
    assert set(miners.MINER_OUTPUT) == set(miners.MINERS)
    for name in miners.MINERS:
        out = _mine(name, x, y)
        if miners.MINER_OUTPUT[name] == "triplet":
            assert out.shape == (12, 12, 12), name
            valid = np.asarray(miners.all_triplets(x, y))
            assert np.all(np.asarray(out) <= valid), name  # only valid triplets
        else:
            assert len(out) == 2 and out[0].shape == (12, 12) and out[1].shape == (12, 12)
            pos, neg = miners.all_pairs(x, y)
            assert np.all(np.asarray(out[0]) <= np.asarray(pos)), name
            assert np.all(np.asarray(out[1]) <= np.asarray(neg)), name
        for v in jax.tree_util.tree_leaves(out):
            assert np.all(np.isfinite(np.asarray(v))), name
        zeros = _mine(name, np.zeros_like(x), y)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(zeros))
    # the jitted hard miner equals the eager one
    np.testing.assert_array_equal(np.asarray(_mine("hard", x, y)), np.asarray(miners.hard(x, y)))


def test_validation_errors():
    x, y = _random_batch(0, b=6)
    with pytest.raises(ValueError, match="unknown miner 'nope'; valid: all"):
        miners.get("nope")
    with pytest.raises(ValueError, match="type_of_triplets"):
        miners.triplet_margin(x, y, type_of_triplets="medium")
    with pytest.raises(ValueError, match="cannot both"):
        miners.batch_easy_hard(x, y, pos_strategy="semihard", neg_strategy="semihard")
    with pytest.raises(ValueError, match="pos_strategy"):
        miners.batch_easy_hard(x, y, pos_strategy="all")
    with pytest.raises(ValueError, match="2-dimensional"):
        miners.semihard(x[0], y)
    with pytest.raises(ValueError, match="labels has 5 entries"):
        miners.batch_hard(x, y[:5])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        miners.pair_margin(bad, y)
    with pytest.raises(ValueError, match="integer class ids"):
        miners.all_pairs(x, y + 0.5)
    with pytest.raises(ValueError, match="1-dimensional"):
        miners.multi_similarity(x, y[:, None])


# ------------------------------------------------------------------------------------------------
# agreement with pytorch-metric-learning
# ------------------------------------------------------------------------------------------------


def _pml():
    torch = pytest.importorskip("torch")
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    return torch, pml_miners


def _idx_to_mask3(t, b):
    m = np.zeros((b, b, b))
    m[t[0].numpy(), t[1].numpy(), t[2].numpy()] = 1
    return m


def _idx_to_mask2(a, p, b):
    m = np.zeros((b, b))
    m[a.numpy(), p.numpy()] = 1
    return m


@pytest.mark.parametrize("seed", [0, 1])
def test_pml_triplet_margin_miner(x64, seed):
    torch, M = _pml()
    x, y = _random_batch(seed, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    mine = jax.jit(miners.triplet_margin, static_argnames=("type_of_triplets",))
    for kind, margin in itertools.product(["all", "hard", "semihard", "easy"], [0.1, 0.3]):
        ref = _idx_to_mask3(M.TripletMarginMiner(margin=margin, type_of_triplets=kind)(xt, yt), 16)
        got = mine(x, y, margin=margin, type_of_triplets=kind)
        np.testing.assert_array_equal(np.asarray(got), ref, err_msg=f"{kind} {margin}")
    ref = _idx_to_mask3(M.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(xt, yt), 16)
    np.testing.assert_array_equal(np.asarray(jax.jit(miners.semihard)(x, y, margin=0.2)), ref)
    ref = _idx_to_mask3(M.TripletMarginMiner(margin=0.2, type_of_triplets="hard")(xt, yt), 16)
    np.testing.assert_array_equal(np.asarray(jax.jit(miners.hard)(x, y, margin=0.2)), ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_pml_pair_miners(x64, seed):
    torch, M = _pml()
    x, y = _random_batch(seed, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    a1, p, a2, n = M.MultiSimilarityMiner(epsilon=0.1)(xt, yt)
    pos, neg = jax.jit(miners.multi_similarity)(x, y, epsilon=0.1)
    np.testing.assert_array_equal(np.asarray(pos), _idx_to_mask2(a1, p, 16))
    np.testing.assert_array_equal(np.asarray(neg), _idx_to_mask2(a2, n, 16))
    a1, p, a2, n = M.PairMarginMiner(pos_margin=0.6, neg_margin=1.2)(xt, yt)
    pos, neg = jax.jit(miners.pair_margin)(x, y, pos_margin=0.6, neg_margin=1.2)
    assert 0 < float(jnp.sum(pos)) and 0 < float(jnp.sum(neg))
    np.testing.assert_array_equal(np.asarray(pos), _idx_to_mask2(a1, p, 16))
    np.testing.assert_array_equal(np.asarray(neg), _idx_to_mask2(a2, n, 16))


@pytest.mark.parametrize("seed", [0, 1])
def test_pml_batch_miners(x64, seed):
    torch, M = _pml()
    x, y = _random_batch(seed, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    ref = _idx_to_mask3(M.BatchHardMiner()(xt, yt), 16)
    np.testing.assert_array_equal(np.asarray(jax.jit(miners.batch_hard)(x, y)), ref)
    beh = jax.jit(miners.batch_easy_hard, static_argnames=("pos_strategy", "neg_strategy"))
    for ps, ns in [("easy", "semihard"), ("semihard", "hard"), ("hard", "easy"), ("easy", "hard")]:
        a, p, _, n = M.BatchEasyHardMiner(pos_strategy=ps, neg_strategy=ns)(xt, yt)
        ref = _idx_to_mask3((a, p, n), 16)
        got = beh(x, y, pos_strategy=ps, neg_strategy=ns)
        np.testing.assert_array_equal(np.asarray(got), ref, err_msg=f"{ps} {ns}")


def test_miner_hyperparameters_are_checked():
    """A NaN margin / epsilon / cutoff mined nothing (an all-zero mask, so a zero loss) silently."""
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    nan = float("nan")
    for call, what in [
        (lambda: miners.semihard(x, y, margin=nan), "margin"),
        (lambda: miners.hard(x, y, margin=nan), "margin"),
        (lambda: miners.semihard_facenet(x, y, margin=nan), "margin"),
        (lambda: miners.pair_margin(x, y, neg_margin=nan), "neg_margin"),
        (lambda: miners.multi_similarity(x, y, epsilon=nan), "epsilon"),
        (lambda: miners.distance_weighted(jax.random.key(0), x, y, cutoff=0.0), "cutoff"),
    ]:
        with pytest.raises(ValueError, match=f"{what} must be a"):
            call()


def test_exact_ties_are_kept_without_normalization():
    """Integer points at exactly equal distances: centring by the exact mean (not representable)
    made them unequal, so ``batch_hard`` broke the documented lowest-index rule and ``hard`` dropped
    a triplet with ``m = 0`` that PML keeps."""
    y = np.array([0, 0, 1, 1, 2, 2])
    x = np.array([[-3, 3], [3, 2], [-2, 2], [1, 2], [1, 1], [-1, 3]], np.float32)
    d = np.asarray(miners.distance_matrix(x, normalize=False))
    assert d[2, 0] == d[2, 5]  # both sqrt(2)
    T = np.asarray(miners.batch_hard(x, y, normalize=False))
    assert tuple(np.argwhere(T[2])[0]) == (3, 0)  # the tie goes to the lower index, as PML's
    x = np.array([[-1, 0], [1, 1], [-2, 2], [2, 3], [2, -2], [-1, 1]], np.float32)
    assert np.asarray(miners.hard(x, y, normalize=False))[0, 1, 2] == 1.0  # d(0,1) = d(0,2)
    # far from the origin the centring still removes the offset (no cancellation)
    rng = np.random.default_rng(3)
    far = (1000.0 + 0.1 * rng.standard_normal((16, 8))).astype(np.float32)
    exact = np.sqrt(((far[:, None].astype(np.float64) - far[None]) ** 2).sum(-1))
    np.testing.assert_allclose(
        miners.distance_matrix(far, normalize=False), exact, rtol=1e-4, atol=1e-5
    )


def test_string_flags_are_refused():
    """``normalize="False"`` is truthy: it silently meant ``normalize=True``."""
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    for call, what in [
        (lambda: miners.triplet_margin(x, y, normalize="False"), "normalize"),
        (lambda: miners.semihard(x, y, squared="no"), "squared"),
        (lambda: miners.hard(x, y, normalize=0), "normalize"),
        (lambda: miners.semihard_facenet(x, y, squared=None), "squared"),
        (lambda: miners.batch_hard(x, y, normalize="False"), "normalize"),
        (lambda: miners.batch_easy_hard(x, y, squared=1), "squared"),
        (lambda: miners.pair_margin(x, y, normalize="False"), "normalize"),
        (lambda: miners.distance_matrix(x, normalize="False"), "normalize"),
        (lambda: losses.contrastive(x, y, normalize="False"), "normalize"),
        (lambda: losses.triplet_margin(x, y, swap="yes"), "swap"),
        (lambda: losses.lifted_structure(x, y, squared="False"), "squared"),
        (lambda: losses.n_pairs(x, y, normalize="False"), "normalize"),
    ]:
        with pytest.raises(ValueError, match=f"{what} must be True or False"):
            call()
    with pytest.raises(ValueError, match="normalize must be True or False"):  # at build
        losses.build("triplet_margin", normalize="False")
    # NumPy booleans are booleans
    assert float(losses.contrastive(x, y, normalize=np.bool_(True))) == float(
        losses.contrastive(x, y)
    )


def test_distance_weighted_cutoffs_that_can_mine_nothing_are_refused():
    """Distances are clipped up to ``cutoff`` before the ``< nonzero_loss_cutoff`` test: with
    ``cutoff >= nonzero_loss_cutoff`` (or >= 2) no negative was ever drawn, a zero loss silently."""
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    key = jax.random.key(0)
    assert float(np.sum(miners.distance_weighted(key, x, y))) > 0
    for kw in [
        {"cutoff": 1.4, "nonzero_loss_cutoff": 1.4},
        {"cutoff": 2.0, "nonzero_loss_cutoff": 3.0},
    ]:
        with pytest.raises(ValueError, match="cutoff must be below nonzero_loss_cutoff and 2"):
            miners.distance_weighted(key, x, y, **kw)


def test_converters_and_l2_normalize_check_their_inputs():
    """pairs_to_triplets on 1-D masks was an IndexError, triplets_to_pairs on 2-D an axis error;
    l2_normalize with eps=NaN zeroed every row and eps<0 made zero rows NaN."""
    with pytest.raises(ValueError, match=r"pos_mask and neg_mask must both be \[B, B\]"):
        miners.pairs_to_triplets(jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"pos_mask and neg_mask must both be \[B, B\]"):
        miners.pairs_to_triplets(jnp.ones((3, 3)), jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"triplet_mask must be \[B, B, B\]"):
        miners.triplets_to_pairs(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="eps must be a non-negative number, got nan"):
        miners.l2_normalize(jnp.ones((2, 3)), eps=float("nan"))
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        miners.l2_normalize(jnp.zeros((2, 3)), eps=-1.0)


def test_flags_accept_concrete_bool_arrays():
    """check_flags first refused jnp.array(True), which worked before it."""
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(
        miners.distance_matrix(x, normalize=jnp.bool_(False)),
        miners.distance_matrix(x, normalize=False),
    )
    assert float(losses.contrastive(x, y, normalize=jnp.array(True))) == float(
        losses.contrastive(x, y)
    )


def test_l2_normalize_refuses_complex_input():
    """sum(x * x) is not |x|^2 for complex x: [[3 + 4j, 0]] came out [[3e12 + 4e12j, 0]]."""
    with pytest.raises(ValueError, match="l2_normalize needs real x, got complex64"):
        miners.l2_normalize(jnp.array([[3 + 4j, 0j]]))
    np.testing.assert_allclose(miners.l2_normalize(jnp.array([[3.0, 4.0]])), [[0.6, 0.8]])
