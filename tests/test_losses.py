"""Tests for metriclearn.losses and metriclearn.reducers.

Brute-force loops over pairs / triplets / anchors written here, NaN-safety at coincident and all-zero
embeddings, one-class batches, per-tuple (vmapped) forms vs batch forms, jit, the ``build`` training
interface, and agreement with pytorch-metric-learning (skipped when torch / PML are absent).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from metriclearn import losses, miners, reducers

B, D, C = 10, 4, 3


def _batch(seed=0, b=B, d=D, n_classes=C):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, d))
    y = rng.integers(0, n_classes, b)
    y[:n_classes] = np.arange(n_classes)  # every class present
    y[n_classes : 2 * n_classes] = np.arange(n_classes)  # and with a positive
    return x, y


def _norm(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0)


def _dist(x):
    xn = _norm(x)
    return np.sqrt(((xn[:, None] - xn[None]) ** 2).sum(-1))


@functools.cache
def _jitted(fn, static):
    return jax.jit(functools.partial(fn, **dict(static)))


def _j(fn, *args, **kwargs):
    """Call ``fn`` under ``jax.jit`` (cheaper than eager dispatch in tests).

    Scalar / string keyword arguments are static, array ones traced; one compile per configuration.
    """
    static = tuple(
        sorted((k, v) for k, v in kwargs.items() if isinstance(v, int | float | str | bool))
    )
    dynamic = {k: v for k, v in kwargs.items() if k not in dict(static)}
    return _jitted(fn, static)(*args, **dynamic)


def _avg_nonzero(vals):
    vals = [v for v in vals if v > 0]
    return sum(vals) / len(vals) if vals else 0.0


def _lse(vals, add_one=False):
    vals = list(vals) + ([0.0] if add_one else [])
    if not vals:
        return 0.0
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


# ------------------------------------------------------------------------------------------------
# reducers
# ------------------------------------------------------------------------------------------------


def test_reducers_values_weights_and_empty():
    l = jnp.array([0.0, 1.0, 3.0, 2.0])
    w = jnp.array([1.0, 2.0, 0.0, 1.0])
    assert float(reducers.mean(l)) == pytest.approx(1.5)
    assert float(reducers.sum(l)) == pytest.approx(6.0)
    assert float(reducers.avg_nonzero(l)) == pytest.approx(2.0)
    assert float(reducers.mean(l, w)) == pytest.approx((2 + 2) / 4)
    assert float(reducers.sum(l, w)) == pytest.approx(4.0)
    assert float(reducers.avg_nonzero(l, w)) == pytest.approx((2 + 2) / 3)
    zero = jnp.zeros(3)
    for name, fn in reducers.REDUCERS.items():
        assert float(jax.jit(fn)(zero, jnp.zeros(3))) == 0.0, name
        g = jax.grad(lambda v, f=fn: f(v, jnp.zeros(3)))(zero)
        assert np.all(np.isfinite(np.asarray(g))), name
        assert float(reducers.reduce(l, name, w)) == float(fn(l, w))
    # avg_nonzero counts integer weights as multiplicities
    assert float(
        reducers.avg_nonzero(jnp.array([1.0, 4.0]), jnp.array([3.0, 1.0]))
    ) == pytest.approx((1 + 1 + 1 + 4) / 4)
    with pytest.raises(
        ValueError, match="unknown reduction 'median'; valid: avg_nonzero, mean, sum"
    ):
        reducers.get("median")


# ------------------------------------------------------------------------------------------------
# brute force
# ------------------------------------------------------------------------------------------------


def test_contrastive_brute_force(x64):
    x, y = _batch(0)
    d = _dist(x)
    for pm, nm, red in [(0.0, 1.0, "avg_nonzero"), (0.3, 0.9, "mean"), (0.2, 1.2, "sum")]:
        pos, neg = [], []
        for i, j in itertools.permutations(range(B), 2):
            if y[i] == y[j]:
                pos.append(max(d[i, j] - pm, 0.0))
            else:
                neg.append(max(nm - d[i, j], 0.0))
        agg = {"avg_nonzero": _avg_nonzero, "mean": np.mean, "sum": np.sum}[red]
        want = agg(pos) + agg(neg)
        got = _j(losses.contrastive, x, y, pos_margin=pm, neg_margin=nm, reduction=red)
        np.testing.assert_allclose(float(got), want, rtol=1e-9)
    # squared distances, no normalization, Hadsell's squared hinge
    xs = x * 0.3
    d2 = ((xs[:, None] - xs[None]) ** 2).sum(-1)
    pos = [d2[i, j] ** 2 for i, j in itertools.permutations(range(B), 2) if y[i] == y[j]]
    neg = [
        max(2.0 - d2[i, j], 0) ** 2 for i, j in itertools.permutations(range(B), 2) if y[i] != y[j]
    ]
    got = _j(
        losses.contrastive,
        xs,
        y,
        neg_margin=2.0,
        squared=True,
        normalize=False,
        hinge_power=2.0,
        reduction="mean",
    )
    np.testing.assert_allclose(float(got), np.mean(pos) + np.mean(neg), rtol=1e-9)


def test_triplet_margin_brute_force(x64):
    x, y = _batch(1)
    d = _dist(x)
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, (B, B, B)).astype(float)
    for margin, red in [(0.05, "avg_nonzero"), (0.3, "mean"), (0.2, "sum")]:
        vals, wvals, ws = [], [], []
        for a, p, n in itertools.product(range(B), repeat=3):
            if a != p and y[a] == y[p] and y[n] != y[a]:
                v = max(d[a, p] - d[a, n] + margin, 0.0)
                vals.append(v)
                wvals += [v] * int(weights[a, p, n])
        agg = {"avg_nonzero": _avg_nonzero, "mean": np.mean, "sum": np.sum}[red]
        got = _j(losses.triplet_margin, x, y, margin=margin, reduction=red)
        np.testing.assert_allclose(float(got), agg(vals), rtol=1e-9)
        got_w = _j(losses.triplet_margin, x, y, margin=margin, reduction=red, triplet_mask=weights)
        np.testing.assert_allclose(float(got_w), agg(wvals), rtol=1e-9)
        del ws
    # swap and smooth
    vals = []
    for a, p, n in itertools.product(range(B), repeat=3):
        if a != p and y[a] == y[p] and y[n] != y[a]:
            v = d[a, p] - min(d[a, n], d[p, n]) + 0.1
            vals.append(math.log1p(math.exp(v)))
    got = _j(losses.triplet_margin, x, y, margin=0.1, swap=True, smooth=True, reduction="mean")
    np.testing.assert_allclose(float(got), np.mean(vals), rtol=1e-9)


def test_multi_similarity_brute_force(x64):
    x, y = _batch(2)
    s = _norm(x) @ _norm(x).T
    alpha, beta, base = 2.0, 10.0, 0.4
    per = []
    for i in range(B):
        P = [j for j in range(B) if j != i and y[j] == y[i]]
        N = [j for j in range(B) if y[j] != y[i]]
        lp = math.log1p(sum(math.exp(-alpha * (s[i, j] - base)) for j in P)) / alpha
        ln = math.log1p(sum(math.exp(beta * (s[i, j] - base)) for j in N)) / beta
        per.append(lp + ln)
    got = _j(losses.multi_similarity, x, y, alpha=alpha, beta=beta, base=base)
    np.testing.assert_allclose(float(got), np.mean(per), rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_multi_similarity_closed_form_gradient_matches_autodiff(dtype):
    """multi_similarity differentiates through a hand-written rule unless its hyperparameters are
    traced; traced (an outer jit's arguments) it is plain autodiff of the same loss. Both must agree,
    with and without the miner's pair sets, at ties, all-zero rows and a class with one member."""
    with jax.enable_x64(dtype == "float64"):
        x, y, x_clean, y_clean = _ties_batch(dtype)
        y = y.copy()
        y[-1] = 7  # a class of one: an anchor without positives
        mined = miners.multi_similarity(x, y, epsilon=0.1)
        configs = [
            ({}, None),
            ({"reduction": "sum"}, None),
            ({"reduction": "avg_nonzero", "alpha": 1.0, "beta": 10.0, "base": 0.2}, None),
            ({}, mined),
        ]
        for kw, pair_mask in configs:
            hyper = {"alpha": 2.0, "beta": 50.0, "base": 0.5}
            hyper.update({k: kw[k] for k in hyper if k in kw})
            red = kw.get("reduction", "mean")

            def labels_for(e):
                return y if e.shape[0] == len(y) else y_clean

            def fast(e, hyper=hyper, red=red, pm=pair_mask):
                pm = pm if e.shape[0] == len(y) else None
                return losses.multi_similarity(
                    e, labels_for(e), reduction=red, pair_mask=pm, **hyper
                )

            def autodiff(e, hyper=hyper, red=red, pm=pair_mask):
                pm = pm if e.shape[0] == len(y) else None
                h = jnp.asarray([hyper["alpha"], hyper["beta"], hyper["base"]], e.dtype)

                @jax.jit
                def traced(e, h):
                    a, b, c = h[0], h[1], h[2]
                    return losses.multi_similarity(
                        e, labels_for(e), alpha=a, beta=b, base=c, reduction=red, pair_mask=pm
                    )

                return traced(e, h)

            what = f"{kw} mined={pair_mask is not None}"
            _assert_same_derivatives(fast, autodiff, x, x_clean, _RTOL[dtype], what)


def test_lifted_structure_brute_force(x64):
    x, y = _batch(3)
    d = _dist(x)
    total, count = 0.0, 0
    for i, j in itertools.combinations(range(B), 2):
        if y[i] != y[j]:
            continue
        terms = [1.0 - d[i, k] for k in range(B) if y[k] != y[i]]
        terms += [1.0 - d[j, l] for l in range(B) if y[l] != y[j]]
        J = _lse(terms) + d[i, j]
        total += max(J, 0.0) ** 2
        count += 1
    want = total / (2 * count)  # the paper's 1/(2|P|) over unordered positive pairs
    got = jax.jit(losses.lifted_structure)(x, y)
    np.testing.assert_allclose(float(got), want, rtol=1e-9)


def test_n_pairs_brute_force(x64):
    x, y = _batch(4)
    for normalize in (True, False):
        xx = _norm(x) if normalize else x
        anchors, positives = [], []
        for c in sorted(set(y.tolist())):
            members = [i for i in range(B) if y[i] == c]
            if len(members) >= 2:
                anchors.append(members[0])
                positives.append(members[1])
        vals = []
        for k, a in enumerate(anchors):
            logits = [xx[a] @ xx[p] for p in positives]
            vals.append(_lse(logits) - logits[k])
        got = _j(losses.n_pairs, x, y, normalize=normalize, l2_reg=0.1)
        want = np.mean(vals) + 0.1 * np.mean((x**2).sum(1))
        np.testing.assert_allclose(float(got), want, rtol=1e-9)


def test_ntxent_and_two_view_brute_force(x64):
    x, y = _batch(5)
    t = 0.5
    s = _norm(x) @ _norm(x).T / t
    vals = []
    for a, p in itertools.permutations(range(B), 2):
        if y[a] != y[p]:
            continue
        negs = [s[a, n] for n in range(B) if y[n] != y[a]]
        vals.append(-(s[a, p] - _lse([s[a, p]] + negs)))
    got = _j(losses.ntxent, x, y, temperature=t)
    np.testing.assert_allclose(float(got), np.mean(vals), rtol=1e-9)
    # two views
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    S = _norm(z1) @ _norm(z2).T / t
    row = np.mean([_lse(S[i]) - S[i, i] for i in range(5)])
    col = np.mean([_lse(S[:, i]) - S[i, i] for i in range(5)])
    got = _j(losses.ntxent_two_view, z1, z2, temperature=t)
    np.testing.assert_allclose(float(got), (row + col) / 2, rtol=1e-9)


def test_supcon_brute_force(x64):
    x, y = _batch(6)
    t = 0.2
    s = _norm(x) @ _norm(x).T / t
    per = []
    for i in range(B):
        P = [j for j in range(B) if j != i and y[j] == y[i]]
        A = [j for j in range(B) if j != i]
        if not P:
            continue
        den = _lse([s[i, k] for k in A])
        per.append(-np.mean([s[i, p] - den for p in P]))
    got = _j(losses.supcon, x, y, temperature=t)
    np.testing.assert_allclose(float(got), _avg_nonzero(per), rtol=1e-9)


def test_supcon_anchor_without_negatives_is_exactly_zero_under_jit():
    """A miner can keep one positive and no negative for an anchor: its term is exactly 0 (its
    softmax has one member). Under jit XLA computed the similarities twice with different rounding,
    and avg_nonzero counted the anchor's 1e-7: 8.64 instead of 12.97 (PML's value, and eager's)."""
    x = jax.random.normal(jax.random.key(0), (8, 4))
    y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    spec = losses.build("supcon", miner="pair_margin")
    pos, neg = miners.pair_margin(x, y)
    lonely = (np.asarray(pos).sum(1) == 1) & (np.asarray(neg).sum(1) == 0)
    assert lonely.any()  # the case at hand: an anchor with one positive and no negative
    eager = float(spec.apply({}, x, y, None))
    np.testing.assert_allclose(float(jax.jit(spec.apply)({}, x, y, None)), eager, rtol=1e-5)
    np.testing.assert_allclose(eager, 12.966501, rtol=1e-5)  # PML 2.9.0's SupConLoss, same pairs


def test_circle_brute_force(x64):
    x, y = _batch(7)
    s = _norm(x) @ _norm(x).T
    m, g = 0.25, 32.0
    per = []
    for i in range(B):
        P = [j for j in range(B) if j != i and y[j] == y[i]]
        N = [j for j in range(B) if y[j] != y[i]]
        if not P or not N:
            per.append(0.0)
            continue
        lp = _lse([-g * max(1 + m - s[i, j], 0) * (s[i, j] - (1 - m)) for j in P])
        ln = _lse([g * max(s[i, j] + m, 0) * (s[i, j] - m) for j in N])
        per.append(math.log1p(math.exp(lp + ln)))
    got = _j(losses.circle, x, y, m=m, gamma=g)
    np.testing.assert_allclose(float(got), _avg_nonzero(per), rtol=1e-9)


def test_proxy_losses_brute_force(x64):
    x, y = _batch(8)
    P = np.random.default_rng(9).normal(size=(C, D))
    xn, pn = _norm(x), _norm(P)
    # proxy-NCA
    vals = []
    for i in range(B):
        logits = [-2.0 * ((xn[i] - pn[c]) ** 2).sum() for c in range(C)]
        vals.append(_lse(logits) - logits[y[i]])
    got = _j(losses.proxy_nca, x, y, P, softmax_scale=2.0)
    np.testing.assert_allclose(float(got), np.mean(vals), rtol=1e-9)
    # proxy-anchor
    cos = xn @ pn.T
    alpha, delta = 16.0, 0.1
    pos_terms, neg_terms = [], []
    for c in range(C):
        members = [i for i in range(B) if y[i] == c]
        others = [i for i in range(B) if y[i] != c]
        if members:
            pos_terms.append(
                math.log1p(sum(math.exp(-alpha * (cos[i, c] - delta)) for i in members))
            )
        neg_terms.append(math.log1p(sum(math.exp(alpha * (cos[i, c] + delta)) for i in others)))
    want = sum(pos_terms) / len(pos_terms) + sum(neg_terms) / C
    got = _j(losses.proxy_anchor, x, y, P, alpha=alpha, margin=delta)
    np.testing.assert_allclose(float(got), want, rtol=1e-9)


def test_arcface_cosface_brute_force(x64):
    x, y = _batch(9)
    W = np.random.default_rng(10).normal(size=(C, D))
    cos = _norm(x) @ _norm(W).T
    s, m = 8.0, 0.5
    arc, cosf = [], []
    for i in range(B):
        theta = math.acos(np.clip(cos[i, y[i]], -1, 1))
        target = math.cos(theta + m) if theta <= math.pi - m else cos[i, y[i]] - m * math.sin(m)
        la = [s * (target if c == y[i] else cos[i, c]) for c in range(C)]
        arc.append(_lse(la) - la[y[i]])
        lc = [s * (cos[i, c] - (0.3 if c == y[i] else 0.0)) for c in range(C)]
        cosf.append(_lse(lc) - lc[y[i]])
    got = _j(losses.arcface, x, y, W, margin=m, scale=s)
    np.testing.assert_allclose(float(got), np.mean(arc), rtol=1e-9)
    got = _j(losses.cosface, x, y, W, margin=0.3, scale=s)
    np.testing.assert_allclose(float(got), np.mean(cosf), rtol=1e-9)
    # the monotone branch (theta > pi - m) is exercised by an embedding opposite its class centre
    xo = -W[:1] * 2.0
    target = -1.0 - m * math.sin(m)
    la = [s * (target if c == 0 else (_norm(xo) @ _norm(W).T)[0, c]) for c in range(C)]
    got = _j(losses.arcface, xo, np.array([0]), W, margin=m, scale=s)
    np.testing.assert_allclose(float(got), _lse(la) - la[0], rtol=1e-9)


# ------------------------------------------------------------------------------------------------
# per-tuple forms agree with batch forms
# ------------------------------------------------------------------------------------------------


def _assert_same_derivatives(fast, autodiff, x, x_clean, rtol, what):
    """``fast`` (hand-written derivative rule) against ``autodiff`` (the same loss, plain autodiff).

    Values and gradients on ``x``, a forward-mode derivative along a random tangent, and Hessians on
    ``x_clean`` (a small batch without ties, where the loss is twice differentiable).
    """
    tangent = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), x.dtype)

    @jax.jit  # one program per call: compiling five small ones dominated these tests' time
    def derivatives(x, x_clean, tangent):
        v, g = jax.value_and_grad(fast)(x)
        v0, g0 = jax.value_and_grad(autodiff)(x)
        _, jvp = jax.jvp(fast, (x,), (tangent,))
        return v, g, v0, g0, jvp, jax.hessian(fast)(x_clean), jax.hessian(autodiff)(x_clean)

    v, g, v0, g0, jvp, h, h0 = derivatives(x, x_clean, tangent)
    assert g.dtype == x.dtype
    np.testing.assert_allclose(float(v), float(v0), rtol=rtol, err_msg=what)
    scale = float(jnp.max(jnp.abs(g0)))
    assert scale > 0, what  # active pairs: equal zero gradients would prove nothing
    np.testing.assert_allclose(g, g0, rtol=rtol, atol=rtol * scale, err_msg=what)
    np.testing.assert_allclose(
        float(jvp), float(jnp.sum(g0 * tangent)), rtol=1e-4, atol=rtol * scale
    )
    hs = float(jnp.max(jnp.abs(h0)))
    np.testing.assert_allclose(h, h0, rtol=1e-4, atol=1e-4 * hs, err_msg=what)


def _ties_batch(dtype, b=12):
    """A batch with coincident rows (4, 5) and an all-zero row (6), and a small batch without ties."""
    x, y = _batch(3, b=b, d=5)
    x[4] = x[5]
    x[6] = 0.0
    x_clean, y_clean = _batch(4, b=6, d=3)
    return jnp.asarray(x, dtype), y, jnp.asarray(x_clean, dtype), y_clean


# float32: near coincident rows the rounding of |x|^2 + |y|^2 - 2 x.y decides d ~ 1e-3 and gradients
# there scale as 1/d, so two kernels' rounding shows up at ~1e-4 of the gradient's scale
_RTOL = {"float32": 1e-4, "float64": 1e-10}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_contrastive_closed_form_gradient_matches_autodiff(dtype):
    """Without a miner, contrastive differentiates through a hand-written rule (``custom_jvp``).

    With a miner it is plain autodiff of the same loss, and an all-ones pair mask turns that path
    into the same function: values, gradients and forward-mode derivatives must agree, also at
    coincident and all-zero embeddings (ties, the safe sqrt and the norm at 0), and Hessians
    (autodiff through the rule) on a batch without ties.
    """
    with jax.enable_x64(dtype == "float64"):
        x, y, x_clean, y_clean = _ties_batch(dtype)
        configs = [
            {},
            {"squared": True},
            {"normalize": False, "neg_margin": 4.0},
            {"normalize": False, "squared": True, "neg_margin": 8.0, "hinge_power": 2.0},
            {"pos_margin": 0.3, "neg_margin": 1.1, "reduction": "mean"},
            {"pos_margin": 0.2, "hinge_power": 1.5, "reduction": "sum"},
        ]
        for kw in configs:

            def fast(e, kw=kw):
                labels = y if e.shape[0] == len(y) else y_clean
                return losses.contrastive(e, labels, **kw)

            def autodiff(e, kw=kw):
                labels = y if e.shape[0] == len(y) else y_clean
                m = jnp.ones((e.shape[0], e.shape[0]), e.dtype)
                return losses.contrastive(e, labels, pair_mask=(m, m), **kw)

            _assert_same_derivatives(fast, autodiff, x, x_clean, _RTOL[dtype], str(kw))


def test_contrastive_traced_margins(x64):
    """Margins passed as traced arrays (an outer jit, a gradient in the margin) take autodiff."""
    x, y = _batch(5)
    want = losses.contrastive(x, y, pos_margin=0.1, neg_margin=0.9)
    got = jax.jit(lambda m: losses.contrastive(x, y, pos_margin=m[0], neg_margin=m[1]))(
        jnp.array([0.1, 0.9])
    )
    np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
    # a traced hinge power too (it used to fail on Python's `if hinge_power != 1`)
    want = losses.contrastive(x, y, neg_margin=0.9, hinge_power=2.0)
    got = jax.jit(lambda k: losses.contrastive(x, y, neg_margin=0.9, hinge_power=k))(2.0)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
    assert float(want) != float(losses.contrastive(x, y, neg_margin=0.9))
    # with reduction='sum', dL/d(neg_margin) is the number of active negative (ordered) pairs
    g = jax.grad(lambda m: losses.contrastive(x, y, neg_margin=m, reduction="sum"))(0.9)
    d = _dist(x)
    active = sum(
        1 for i, j in itertools.permutations(range(B), 2) if y[i] != y[j] and d[i, j] < 0.9
    )
    assert active > 0
    np.testing.assert_allclose(float(g), active, rtol=1e-12)


def test_contrastive_pairs_agree_with_batch(x64):
    x, y = _batch(11)
    idx = np.array([(i, j) for i, j in itertools.permutations(range(B), 2)])
    same = y[idx[:, 0]] == y[idx[:, 1]]
    kw = dict(pos_margin=0.1, neg_margin=0.8)
    f = jax.jit(lambda a, b, s: losses.contrastive_pairs(a, b, s, **kw))
    np.testing.assert_allclose(
        float(f(x[idx[:, 0]], x[idx[:, 1]], same)),
        float(_j(losses.contrastive, x, y, **kw)),
        rtol=1e-9,
    )
    # padding pairs with weight 0 do not change the result
    pad = np.concatenate([idx, idx[:5]])
    w = np.r_[np.ones(len(idx)), np.zeros(5)]
    got = _j(
        losses.contrastive_pairs,
        x[pad[:, 0]],
        x[pad[:, 1]],
        y[pad[:, 0]] == y[pad[:, 1]],
        weights=w,
        **kw,
    )
    np.testing.assert_allclose(float(got), float(_j(losses.contrastive, x, y, **kw)), rtol=1e-9)
    # the single-pair form, vmapped by hand
    per = jax.vmap(lambda a, b, s: losses.contrastive_pair(a, b, s, **kw))(
        x[idx[:, 0]], x[idx[:, 1]], same
    )
    d = _dist(x)[idx[:, 0], idx[:, 1]]
    np.testing.assert_allclose(
        np.asarray(per), np.where(same, np.maximum(d - 0.1, 0), np.maximum(0.8 - d, 0)), atol=1e-12
    )


def test_triplet_triplets_agree_with_batch(x64):
    x, y = _batch(12)
    t = np.array(
        [
            (a, p, n)
            for a, p, n in itertools.product(range(B), repeat=3)
            if a != p and y[a] == y[p] and y[n] != y[a]
        ]
    )
    for kw in [dict(margin=0.2), dict(margin=0.1, swap=True), dict(margin=0.3, squared=True)]:
        f = jax.jit(lambda a, p, n, kw=kw: losses.triplet_margin_triplets(a, p, n, **kw))
        np.testing.assert_allclose(
            float(f(x[t[:, 0]], x[t[:, 1]], x[t[:, 2]])),
            float(_j(losses.triplet_margin, x, y, **kw)),
            rtol=1e-9,
        )
    # with a miner mask: the mined triplets as tuples
    mask = np.asarray(_j(miners.semihard, x, y, margin=0.3))
    mt = np.argwhere(mask > 0)
    assert len(mt) > 0
    np.testing.assert_allclose(
        float(
            _j(losses.triplet_margin_triplets, x[mt[:, 0]], x[mt[:, 1]], x[mt[:, 2]], margin=0.3)
        ),
        float(_j(losses.triplet_margin, x, y, margin=0.3, triplet_mask=mask)),
        rtol=1e-9,
    )


# ------------------------------------------------------------------------------------------------
# fast triplet paths (linear form / per-pair counts) vs the straightforward [B, B, B] formula
# ------------------------------------------------------------------------------------------------


def _triplet_b3(e, y, margin, reduction, mask=None, normalize=True, squared=False):
    """The direct formula: [B, B, B] hinge, valid (and mined) weights, reducer."""
    d = miners.distance_matrix(e, normalize=normalize, squared=squared)
    pos, neg = miners.label_masks(jnp.asarray(y))
    w = (pos[:, :, None] & neg[:, None, :]).astype(d.dtype)
    if mask is not None:
        w = w * mask
    return reducers.get(reduction)(jax.nn.relu(d[:, :, None] - d[:, None, :] + margin), w)


def _assert_pairs_close(pairs, rtol=1e-9):
    """``pairs``: list of ((value, grads), (value, grads)) to compare."""
    for (vf, gf), (vg, gg) in pairs:
        np.testing.assert_allclose(float(vf), float(vg), rtol=rtol, atol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(gf), jax.tree_util.tree_leaves(gg)):
            scale = float(jnp.max(jnp.abs(b))) + 1e-30
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * scale)


def _assert_same_value_and_grad(f, g, *args, rtol=1e-9, argnums=0):
    both = jax.jit(
        lambda *a: (jax.value_and_grad(f, argnums)(*a), jax.value_and_grad(g, argnums)(*a))
    )
    _assert_pairs_close([both(*args)], rtol=rtol)


_REDUCTIONS = ("avg_nonzero", "mean", "sum")


@jax.jit
def _fast_vs_b3(x, y, w, margin):
    """(fast, direct) value-and-grad pairs: no mask (counts), mask (linear form, grads w.r.t. it too)."""
    out = []
    for r in _REDUCTIONS:
        out.append(
            tuple(
                jax.value_and_grad(f)(x, margin)
                for f in (
                    lambda e, m, r=r: losses.triplet_margin(e, y, margin=m, reduction=r),
                    lambda e, m, r=r: _triplet_b3(e, y, m, r),
                )
            )
        )
        out.append(
            tuple(
                jax.value_and_grad(f, (0, 1))(x, w, margin)
                for f in (
                    lambda e, t, m, r=r: losses.triplet_margin(
                        e, y, margin=m, reduction=r, triplet_mask=t
                    ),
                    lambda e, t, m, r=r: _triplet_b3(e, y, m, r, mask=t),
                )
            )
        )
        # squared / unnormalized distances take the same paths
        out.append(
            tuple(
                jax.value_and_grad(f)(x * 0.3, margin)
                for f in (
                    lambda e, m, r=r: losses.triplet_margin(
                        e, y, margin=m, squared=True, normalize=False, reduction=r
                    ),
                    lambda e, m, r=r: _triplet_b3(e, y, m, r, normalize=False, squared=True),
                )
            )
        )
    return out


def test_fast_triplet_paths_match_b3_formula(x64):
    x, y = _batch(20, b=14, n_classes=3)
    x[1] = x[0]  # coincident embeddings: ties in the hinge and the miner
    x[5] = 2.0 * x[2]  # same direction: distance 0 after normalizing
    rng = np.random.default_rng(3)
    weights = rng.integers(0, 3, (14,) * 3).astype(float)
    for margin, w in [(0.0, weights), (0.2, weights), (0.7, weights * rng.uniform(size=(14,) * 3))]:
        _assert_pairs_close(_fast_vs_b3(x, y, w, margin))


@pytest.mark.parametrize(
    "miner,miner_kwargs",
    [
        ("semihard", {"margin": 0.3}),
        ("hard", {}),
        ("triplet_margin", {"type_of_triplets": "all", "margin": 0.1}),
        ("triplet_margin", {"type_of_triplets": "easy", "margin": 0.1}),
        ("semihard", {"margin": 0.4, "squared": True}),  # miner / loss distances differ
    ],
)
def test_build_counted_miners_match_mask_path(x64, miner, miner_kwargs):
    x, y = _batch(21, b=14, n_classes=3)
    x[1] = x[0]
    key = jax.random.key(0)
    mine = miners.MINERS[miner]

    @jax.jit
    def pairs(e):
        out = []
        for r in ("avg_nonzero", "mean"):
            spec = losses.build(
                "triplet_margin", miner=miner, miner_kwargs=miner_kwargs, margin=0.2, reduction=r
            )
            out.append(
                (
                    jax.value_and_grad(lambda v, s=spec: s.apply({}, v, y, key))(e),
                    jax.value_and_grad(
                        lambda v, r=r: _triplet_b3(v, y, 0.2, r, mask=mine(v, y, **miner_kwargs))
                    )(e),
                )
            )
        # pair losses get the miner's pair multiplicities (triplets_to_pairs of its mask)
        for name in ("contrastive", "multi_similarity"):
            spec = losses.build(name, miner=miner, miner_kwargs=miner_kwargs)
            out.append(
                (
                    jax.value_and_grad(lambda v, s=spec: s.apply({}, v, y, key))(e),
                    jax.value_and_grad(
                        lambda v, n=name: losses.LOSSES[n](
                            v, y, pair_mask=miners.triplets_to_pairs(mine(v, y, **miner_kwargs))
                        )
                    )(e),
                )
            )
        return out

    _assert_pairs_close(pairs(x))


def test_fast_triplet_float32_batch_128():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(128, 16)).astype(np.float32)
    y = np.repeat(np.arange(8), 16).astype(np.int32)
    spec = losses.build(
        "triplet_margin", miner="semihard", miner_kwargs={"margin": 0.2}, margin=0.2
    )
    _assert_same_value_and_grad(
        lambda e: spec.apply({}, e, y, None),
        lambda e: _triplet_b3(e, y, 0.2, "avg_nonzero", mask=miners.semihard(e, y, margin=0.2)),
        x,
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="type_of_triplets"):
        losses.build(
            "triplet_margin", miner="triplet_margin", miner_kwargs={"type_of_triplets": "x"}
        )


# ------------------------------------------------------------------------------------------------
# NaN safety, degenerate batches, gradients
# ------------------------------------------------------------------------------------------------


# losses made only of terms that need a negative: 0 on a one-class batch
_NEED_NEGATIVES = ("triplet_margin", "circle", "ntxent", "supcon", "n_pairs")
_SPECS = {name: losses.build(name, n_classes=C, embedding_dim=D) for name in losses.LOSSES}
# one jitted value-and-grad per loss, through the training interface (grads w.r.t. params and x)
_GRAD_FNS = {
    name: jax.jit(jax.value_and_grad(spec.apply, argnums=(0, 1))) for name, spec in _SPECS.items()
}


@pytest.mark.parametrize("case", ["normal", "zeros", "duplicates", "one_class", "distinct"])
def test_finite_loss_and_grads_degenerate(case):
    x, y = _batch(13)
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    key = jax.random.key(0)
    if case == "zeros":
        x = np.zeros_like(x)
    elif case == "duplicates":
        x[1] = x[0]
        x[B // 2 :] = x[: B - B // 2]
    elif case == "one_class":
        y = np.zeros_like(y)
    elif case == "distinct":
        y = np.arange(B, dtype=np.int32)  # no positive pair, no triplet
    for name, spec in _SPECS.items():
        params = spec.init(key)
        if case == "duplicates" and params:
            params = {k: v.at[1].set(v[0]) for k, v in params.items()}
        if case == "distinct" and losses.LOSS_KIND[name] == "proxy":
            continue  # labels must be < n_classes for proxies
        val, (gp, gx) = _GRAD_FNS[name](params, x, y, key)
        assert np.isfinite(float(val)), (name, case)
        assert np.all(np.isfinite(np.asarray(gx))), (name, case)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(gp))
        if case == "normal":
            assert float(val) > 0, name
            assert float(jnp.max(jnp.abs(gx))) > 0, name
        if case in ("one_class", "distinct") and name in _NEED_NEGATIVES:
            assert float(val) == 0.0, (name, case)
        if case == "distinct" and name in ("lifted_structure", "multi_similarity"):
            # no positives: lifted has no terms; multi-similarity keeps its negative (push) term
            assert (float(val) == 0.0) == (name == "lifted_structure"), name
    if case == "one_class":
        # contrastive / multi-similarity / lifted keep their positive (pull) term, as PML does
        d = _dist(x)
        pos = [d[i, j] for i, j in itertools.permutations(range(B), 2)]
        val = _GRAD_FNS["contrastive"]({}, x, y, key)[0]
        np.testing.assert_allclose(float(val), np.mean(pos), rtol=1e-5)


def test_empty_triplet_mask_gives_zero():
    x, y = _batch(13)
    val, g = jax.jit(
        jax.value_and_grad(lambda e: losses.triplet_margin(e, y, triplet_mask=jnp.zeros((B,) * 3)))
    )(x)
    assert float(val) == 0.0 and np.all(np.isfinite(np.asarray(g)))


def test_check_grads(x64):
    x, y = _batch(14)
    P = np.random.default_rng(1).normal(size=(C, D))
    for fn in (
        lambda e: losses.contrastive(e, y, pos_margin=0.05, neg_margin=1.5, reduction="mean"),
        lambda e: losses.multi_similarity(e, y),
        lambda e: losses.arcface(e, y, P, scale=4.0),
    ):
        check_grads(jax.jit(fn), (jnp.asarray(x),), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# build: the training interface
# ------------------------------------------------------------------------------------------------


def test_build_init_and_miner_combinations():
    key = jax.random.key(0)
    for name, kind in losses.LOSS_KIND.items():
        params = _SPECS[name].init(key)
        if kind == "proxy":
            assert set(params) == {"proxies" if "proxy" in name else "class_weights"}
            assert params[next(iter(params))].shape == (C, D)
            with pytest.raises(ValueError, match="does not take a miner"):
                losses.build(name, miner="semihard", n_classes=C, embedding_dim=D)
            with pytest.raises(ValueError, match="n_classes and embedding_dim"):
                losses.build(name)
        else:
            assert params == {}
        if kind == "none":
            with pytest.raises(ValueError, match="does not take a miner"):
                losses.build(name, miner="batch_hard")
    x, y = _batch(15)
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    # direct, converted pair->triplet and triplet->pair, sampled (every miner alone is jitted in
    # test_miners.py)
    combos = [
        ("triplet_margin", "semihard"),
        ("contrastive", "batch_hard"),
        ("triplet_margin", "pair_margin"),
        ("triplet_margin", "distance_weighted"),
        ("multi_similarity", "multi_similarity"),
        ("supcon", "semihard_facenet"),
    ]
    for i, (loss_name, miner_name) in enumerate(combos):
        spec = losses.build(loss_name, miner=miner_name)
        if i < 2:  # gradients through the mining path (the miners stop gradients)
            val, g = jax.jit(jax.value_and_grad(spec.apply, argnums=1))({}, x, y, key)
            assert np.all(np.isfinite(np.asarray(g))), (loss_name, miner_name)
        else:
            val = jax.jit(spec.apply)({}, x, y, key)
        assert np.isfinite(float(val)) and float(val) >= 0, (loss_name, miner_name)
    # "all" means no restriction: same value as the un-mined loss (compiled above for "normal")
    spec = losses.build("contrastive", miner="all")
    np.testing.assert_allclose(
        float(jax.jit(spec.apply)({}, x, y, key)),
        float(_GRAD_FNS["contrastive"]({}, x, y, key)[0]),
        rtol=1e-6,
    )


def test_build_matches_manual_mining():
    x, y = _batch(16)
    key = jax.random.key(1)
    cases = [
        (
            losses.build(
                "triplet_margin", miner="semihard", miner_kwargs={"margin": 0.3}, margin=0.1
            ),
            lambda a, b, k: losses.triplet_margin(
                a, b, margin=0.1, triplet_mask=miners.semihard(a, b, margin=0.3)
            ),
        ),
        (
            losses.build("contrastive", miner="pair_margin", neg_margin=0.7),
            lambda a, b, k: losses.contrastive(
                a, b, neg_margin=0.7, pair_mask=miners.pair_margin(a, b)
            ),
        ),
        (
            losses.build("triplet_margin", miner="distance_weighted"),
            lambda a, b, k: losses.triplet_margin(
                a, b, triplet_mask=miners.distance_weighted(k, a, b)
            ),
        ),
    ]
    for spec, manual in cases:
        both = jax.jit(lambda a, b, k, s=spec, f=manual: (s.apply({}, a, b, k), f(a, b, k)))
        got, want = both(x, y, key)
        assert float(want) > 0
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_build_returns_one_spec_per_settings():
    a = losses.build("contrastive", pos_margin=0.1, neg_margin=0.9)
    assert losses.build("contrastive", neg_margin=0.9, pos_margin=0.1) is a
    assert losses.build("contrastive", pos_margin=0.2, neg_margin=0.9) is not a
    # the type is part of the key: 0 and 0.0, or True and 1, build separate specs
    assert losses.build("contrastive", pos_margin=0) is not losses.build(
        "contrastive", pos_margin=0.0
    )
    losses.build("contrastive", squared=True)
    with pytest.raises(ValueError, match="squared must be True or False, got 1"):  # not a cache hit
        losses.build("contrastive", squared=1)
    p1 = losses.build("proxy_anchor", n_classes=3, embedding_dim=4)
    assert losses.build("proxy_anchor", n_classes=3, embedding_dim=4) is p1
    assert losses.build("proxy_anchor", n_classes=4, embedding_dim=4) is not p1
    # unhashable settings still build, as fresh specs with the same values
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
    y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    m1 = losses.build("contrastive", neg_margin=jnp.asarray(0.9))
    m2 = losses.build("contrastive", neg_margin=jnp.asarray(0.9))
    assert m1 is not m2
    want = losses.build("contrastive", neg_margin=0.9).apply({}, x, y, jax.random.key(0))
    np.testing.assert_allclose(m1.apply({}, x, y, jax.random.key(0)), want, rtol=1e-6)


@pytest.mark.parametrize("partitionable", [True, False])
def test_init_proxies_is_the_shaped_normal_draw(partitionable):
    # drawn flat (faster to compile on CPU), the proxies must be the [C, d] draw's numbers
    key = jax.random.key(4)
    with jax.threefry_partitionable(partitionable):
        np.testing.assert_array_equal(
            losses.init_proxies(key, 5, 7), jax.random.normal(key, (5, 7)) / np.sqrt(7)
        )


def test_build_errors():
    with pytest.raises(ValueError, match="unknown loss 'nope'; valid: arcface, circle"):
        losses.build("nope")
    with pytest.raises(ValueError, match="unknown miner 'nope'; valid: all, batch_easy_hard"):
        losses.build("contrastive", miner="nope")
    with pytest.raises(ValueError, match="unknown keyword argument"):
        losses.build("contrastive", margin=0.1)
    with pytest.raises(ValueError, match="unknown keyword argument"):
        losses.build("contrastive", miner="semihard", miner_kwargs={"epsilon": 0.1})
    with pytest.raises(ValueError, match="miner_kwargs given without a miner"):
        losses.build("contrastive", miner_kwargs={"margin": 0.1})
    with pytest.raises(ValueError, match="supplied by the miner"):
        losses.build("contrastive", pair_mask=None)
    with pytest.raises(ValueError, match="supplied by the miner"):
        losses.build("triplet_margin", triplet_mask=None)
    with pytest.raises(ValueError, match="n_classes must be an integer"):
        losses.build("arcface", n_classes=0, embedding_dim=4)
    with pytest.raises(ValueError, match="unknown reduction"):
        losses.build("contrastive", reduction="median").apply(
            {}, np.ones((4, 2)), [0, 0, 1, 1], None
        )


# ------------------------------------------------------------------------------------------------
# validation at the boundary
# ------------------------------------------------------------------------------------------------


def test_validation_errors():
    x, y = _batch(17)
    P = np.ones((C, D))
    with pytest.raises(ValueError, match="embeddings must be 2-dimensional"):
        losses.contrastive(x[0], y)
    with pytest.raises(ValueError, match="labels has 9 entries but embeddings has 10 rows"):
        losses.triplet_margin(x, y[:9])
    bad = x.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        losses.multi_similarity(bad, y)
    with pytest.raises(ValueError, match="integer class ids"):
        losses.supcon(x, y + 0.5)
    with pytest.raises(ValueError, match="labels is required"):
        losses.ntxent(x, None)
    with pytest.raises(ValueError, match="pair_mask"):
        losses.contrastive(x, y, pair_mask=(np.ones((B, B)), np.ones((B, B + 1))))
    with pytest.raises(ValueError, match="pair_mask must be a tuple"):
        losses.contrastive(x, y, pair_mask=np.ones((B, B)))
    with pytest.raises(ValueError, match="triplet_mask must have shape"):
        losses.triplet_margin(x, y, triplet_mask=np.ones((B, B, B - 1)))
    with pytest.raises(ValueError, match="proxies and embeddings must have the same number"):
        losses.proxy_anchor(x, y, np.ones((C, D + 1)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        losses.proxy_nca(x, y, P[:2])
    with pytest.raises(ValueError, match="class_weights"):
        losses.cosface(x, y, np.ones((C,)))
    with pytest.raises(ValueError, match="unknown reduction"):
        losses.circle(x, y, reduction="max")
    with pytest.raises(ValueError, match="z1 and z2 must have the same shape"):
        losses.ntxent_two_view(x, x[:5])
    with pytest.raises(ValueError, match="same must have shape"):
        losses.contrastive_pairs(x, x, np.ones(3, bool))
    with pytest.raises(ValueError, match="anchors, positives and negatives"):
        losses.triplet_margin_triplets(x, x, x[:3])
    with pytest.raises(ValueError, match="n_classes must be an integer"):
        losses.init_proxies(jax.random.key(0), 0, 4)


def test_labels_outside_int32_are_refused_not_wrapped():
    # 2**32 would wrap to 0 as int32 and merge two classes into one
    x = np.random.default_rng(18).normal(size=(4, D))
    with pytest.raises(ValueError, match=r"labels must fit in int32.*np.unique"):
        losses.triplet_margin(x, np.array([0, 2**32, 1, 2**32 + 1]))
    with pytest.raises(ValueError, match="labels must fit in int32"):
        miners.semihard(x, np.array([0, 0, -(2**31) - 1, 1]))
    # the int32 range itself is fine (large ids that fit)
    y = np.array([0, 2**31 - 1, 1, 2**31 - 1])
    assert float(losses.triplet_margin(x, y)) == float(losses.triplet_margin(x, [0, 2, 1, 2]))


_BAD_HYPER = [
    (losses.ntxent, {"temperature": 0.0}, "temperature must be a positive number"),
    (losses.supcon, {"temperature": -0.1}, "temperature must be a positive number"),
    (losses.multi_similarity, {"alpha": 0.0}, "alpha must be a positive number"),
    (losses.multi_similarity, {"base": float("nan")}, "base must be a finite number"),
    (losses.circle, {"gamma": -1.0}, "gamma must be a positive number"),
    (losses.contrastive, {"neg_margin": float("inf")}, "neg_margin must be a finite number"),
    (losses.contrastive, {"hinge_power": 0.0}, "hinge_power must be a positive number"),
    (losses.triplet_margin, {"margin": float("nan")}, "margin must be a finite number"),
    (losses.lifted_structure, {"neg_margin": "big"}, "neg_margin must be a number"),
    (losses.n_pairs, {"l2_reg": float("nan")}, "l2_reg must be a non-negative number"),
]


@pytest.mark.parametrize("fn, kwargs, message", _BAD_HYPER)
def test_bad_hyperparameters_raise_instead_of_nan(fn, kwargs, message):
    x, y = _batch(19)
    with pytest.raises(ValueError, match=message):
        fn(x, y, **kwargs)


def test_bad_hyperparameters_of_the_proxy_losses_and_two_views():
    x, y = _batch(20)
    P = np.ones((C, D))
    with pytest.raises(ValueError, match="softmax_scale must be a positive number"):
        losses.proxy_nca(x, y, P, softmax_scale=0.0)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        losses.proxy_anchor(x, y, P, alpha=-32.0)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        losses.arcface(x, y, P, scale=0)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        losses.cosface(x, y, P, margin=float("nan"))
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        losses.ntxent_two_view(x, x, temperature=0)
    with pytest.raises(ValueError, match="margin must be a finite number"):  # at build
        losses.build("triplet_margin", miner="semihard", margin=float("nan"))


def test_traced_hyperparameters_under_jit():
    """A hyperparameter passed through ``jit`` (a schedule) gives the same loss as a constant."""
    x, y = _batch(21)
    P = np.random.default_rng(21).normal(size=(C, D))
    cases = [
        (lambda v: losses.arcface(x, y, P, margin=v), 0.3),
        (lambda v: losses.n_pairs(x, y, normalize=False, l2_reg=v), 0.1),
        (lambda v: losses.ntxent(x, y, temperature=v), 0.2),
        (lambda v: losses.proxy_anchor(x, y, P, alpha=v), 16.0),
    ]
    for fn, value in cases:
        np.testing.assert_allclose(float(jax.jit(fn)(value)), float(fn(value)), rtol=1e-5)


def test_arcface_keeps_the_embedding_dtype(x64):
    x, y = _batch(22)
    P = np.ones((C, D), np.float32)
    assert losses.arcface(x.astype(np.float32), y, P).dtype == jnp.float32
    assert losses.arcface(x, y, P.astype(np.float64)).dtype == jnp.float64


def test_bfloat16_embeddings_outside_jit():
    x, y = _batch(23)
    xb = jnp.asarray(x, jnp.bfloat16)
    eager = losses.contrastive(xb, y)
    assert eager.dtype == jnp.float32  # half-precision embeddings are upcast for the loss
    np.testing.assert_allclose(float(eager), float(jax.jit(losses.contrastive)(xb, y)), rtol=2e-2)
    np.testing.assert_allclose(float(eager), float(losses.contrastive(xb.astype(jnp.float32), y)))
    bad = xb.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN or infinite"):
        losses.contrastive(bad, y)


# ------------------------------------------------------------------------------------------------
# agreement with pytorch-metric-learning
# ------------------------------------------------------------------------------------------------


def _pml():
    torch = pytest.importorskip("torch")
    pml = pytest.importorskip("pytorch_metric_learning")
    del pml
    from pytorch_metric_learning import losses as L
    from pytorch_metric_learning import miners as M

    return torch, L, M


@pytest.mark.parametrize("seed", [0, 1])
def test_pml_contrastive_triplet_multisimilarity(x64, seed):
    torch, L, M = _pml()
    x, y = _batch(100 + seed, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    cases = [
        (_j(losses.contrastive, x, y), L.ContrastiveLoss()(xt, yt)),
        (
            _j(losses.contrastive, x, y, pos_margin=0.3, neg_margin=0.9),
            L.ContrastiveLoss(pos_margin=0.3, neg_margin=0.9)(xt, yt),
        ),
        (_j(losses.triplet_margin, x, y), L.TripletMarginLoss()(xt, yt)),
        (_j(losses.triplet_margin, x, y, margin=0.3), L.TripletMarginLoss(margin=0.3)(xt, yt)),
        (_j(losses.multi_similarity, x, y), L.MultiSimilarityLoss()(xt, yt)),
        (
            _j(losses.multi_similarity, x, y, alpha=1.0, beta=20.0, base=0.3),
            L.MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3)(xt, yt),
        ),
    ]
    for ours, theirs in cases:
        np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_pml_losses_with_miners(x64, seed):
    torch, L, M = _pml()
    x, y = _batch(200 + seed, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for kind in ("all", "hard", "semihard"):
        idx = M.TripletMarginMiner(margin=0.2, type_of_triplets=kind)(xt, yt)
        mask = _j(miners.triplet_margin, x, y, margin=0.2, type_of_triplets=kind)
        assert float(jnp.sum(mask)) == len(idx[0])
        np.testing.assert_allclose(
            float(_j(losses.triplet_margin, x, y, triplet_mask=mask)),
            float(L.TripletMarginLoss()(xt, yt, idx)),
            rtol=1e-9,
        )
        # contrastive with triplets: pairs repeated as often as PML repeats them
        np.testing.assert_allclose(
            float(_j(losses.contrastive, x, y, pair_mask=miners.triplets_to_pairs(mask))),
            float(L.ContrastiveLoss()(xt, yt, idx)),
            rtol=1e-9,
        )
    # semihard through build
    spec = losses.build("triplet_margin", miner="semihard", miner_kwargs={"margin": 0.2})
    idx = M.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(xt, yt)
    np.testing.assert_allclose(
        float(jax.jit(spec.apply)({}, x, y, jax.random.key(0))),
        float(L.TripletMarginLoss()(xt, yt, idx)),
        rtol=1e-9,
    )
    # multi-similarity miner + loss
    idx = M.MultiSimilarityMiner(epsilon=0.1)(xt, yt)
    pm = _j(miners.multi_similarity, x, y, epsilon=0.1)
    np.testing.assert_allclose(
        float(_j(losses.multi_similarity, x, y, pair_mask=pm)),
        float(L.MultiSimilarityLoss()(xt, yt, idx)),
        rtol=1e-9,
    )
    # pair-margin miner with contrastive and (converted) triplet loss
    idx = M.PairMarginMiner(pos_margin=0.5, neg_margin=1.2)(xt, yt)
    pm = _j(miners.pair_margin, x, y, pos_margin=0.5, neg_margin=1.2)
    np.testing.assert_allclose(
        float(_j(losses.contrastive, x, y, pair_mask=pm)),
        float(L.ContrastiveLoss()(xt, yt, idx)),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        float(_j(losses.triplet_margin, x, y, triplet_mask=miners.pairs_to_triplets(*pm))),
        float(L.TripletMarginLoss()(xt, yt, idx)),
        rtol=1e-9,
    )
    # batch-hard triplets
    idx = M.BatchHardMiner()(xt, yt)
    np.testing.assert_allclose(
        float(
            _j(losses.triplet_margin, x, y, margin=0.2, triplet_mask=_j(miners.batch_hard, x, y))
        ),
        float(L.TripletMarginLoss(margin=0.2)(xt, yt, idx)),
        rtol=1e-9,
    )


_PML_PAIR_LOSSES = {
    "contrastive": "ContrastiveLoss",
    "lifted_structure": "LiftedStructureLoss",
    "multi_similarity": "MultiSimilarityLoss",
    "circle": "CircleLoss",
    "ntxent": "NTXentLoss",
    "supcon": "SupConLoss",
    "triplet_margin": "TripletMarginLoss",
}
_PML_MINERS = {
    "semihard": ("TripletMarginMiner", {"margin": 0.2, "type_of_triplets": "semihard"}),
    "triplet_margin": ("TripletMarginMiner", {"margin": 0.2, "type_of_triplets": "all"}),
    "batch_hard": ("BatchHardMiner", {}),
    "multi_similarity": ("MultiSimilarityMiner", {"epsilon": 0.1}),
    "pair_margin": ("PairMarginMiner", {"pos_margin": 0.5, "neg_margin": 1.2}),
}


@pytest.mark.parametrize("miner", sorted(_PML_MINERS))
def test_pml_every_loss_with_every_miner_through_build(x64, miner):
    """``build(loss, miner=...)`` equals PML's loss on PML's mined tuples, for every pair / triplet
    loss: a triplet miner's repeated pairs count as often in the negatives of ntxent and
    lifted_structure as in PML's index lists."""
    torch, L, M = _pml()
    x, y = _batch(300, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    cls, kw = _PML_MINERS[miner]
    idx = getattr(M, cls)(**kw)(xt, yt)
    ours_kw = {k: v for k, v in kw.items() if k != "type_of_triplets"}
    for name, pml_name in _PML_PAIR_LOSSES.items():
        spec = losses.build(name, miner=miner, miner_kwargs=ours_kw or None)
        ours = float(jax.jit(spec.apply)({}, x, y, jax.random.key(0)))
        theirs = float(getattr(L, pml_name)()(xt, yt, idx))
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, err_msg=f"{name} + {miner}")


def test_pml_other_losses(x64):
    torch, L, M = _pml()
    x, y = _batch(300, b=16, d=6, n_classes=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    W = np.random.default_rng(0).normal(size=(4, 6))
    pa = L.ProxyAnchorLoss(4, 6)
    pa.proxies.data = torch.tensor(W)
    pn = L.ProxyNCALoss(4, 6)
    pn.proxies.data = torch.tensor(W)
    af = L.ArcFaceLoss(4, 6)
    af.W.data = torch.tensor(W.T)
    cf = L.CosFaceLoss(4, 6)
    cf.W.data = torch.tensor(W.T)
    cases = [
        (_j(losses.lifted_structure, x, y), L.LiftedStructureLoss()(xt, yt)),
        (_j(losses.circle, x, y), L.CircleLoss()(xt, yt)),
        (_j(losses.ntxent, x, y), L.NTXentLoss()(xt, yt)),
        (_j(losses.supcon, x, y), L.SupConLoss()(xt, yt)),
        (_j(losses.n_pairs, x, y), L.NPairsLoss()(xt, yt)),
        (_j(losses.proxy_anchor, x, y, W), pa(xt, yt)),
        (_j(losses.proxy_nca, x, y, W), pn(xt, yt)),
        (_j(losses.arcface, x, y, W, margin=np.radians(28.6)), af(xt, yt)),
        (_j(losses.cosface, x, y, W), cf(xt, yt)),
    ]
    for i, (ours, theirs) in enumerate(cases):
        np.testing.assert_allclose(float(ours), float(theirs.detach()), rtol=1e-9, err_msg=str(i))


@pytest.mark.parametrize("double", [True, False])
def test_pml_gradients_of_the_benchmark_cases(double):
    """The gradient that trains the model: d loss / d embeddings of the three benchmarked cases
    (contrastive on all pairs, triplet + semihard miner, multi-similarity + its miner), built as
    ``fit`` builds them, against PML's autograd on the same clustered, unnormalized embeddings."""
    torch, L, M = _pml()
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 8)
    x = 1.5 * rng.normal(size=(4, 8))[y] + rng.normal(size=(32, 8))  # classes overlap: mining bites
    x *= rng.uniform(0.5, 3.0, size=(32, 1))  # the loss normalizes; the norms still vary
    cases = [
        (losses.build("contrastive"), L.ContrastiveLoss(), None),
        (
            losses.build(
                "triplet_margin", margin=0.2, miner="semihard", miner_kwargs={"margin": 0.2}
            ),
            L.TripletMarginLoss(margin=0.2),
            M.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
        ),
        (
            losses.build(
                "multi_similarity", miner="multi_similarity", miner_kwargs={"epsilon": 0.1}
            ),
            L.MultiSimilarityLoss(),
            M.MultiSimilarityMiner(epsilon=0.1),
        ),
    ]
    dtype, tol = (np.float64, 1e-9) if double else (np.float32, 2e-4)
    with jax.enable_x64(double):
        for spec, pml_loss, pml_miner in cases:
            xt = torch.tensor(x.astype(dtype), requires_grad=True)
            yt = torch.tensor(y)
            theirs = pml_loss(xt, yt) if pml_miner is None else pml_loss(xt, yt, pml_miner(xt, yt))
            theirs.backward()
            value, grad = jax.jit(jax.value_and_grad(spec.apply, argnums=1))(
                {}, jnp.asarray(x, dtype), jnp.asarray(y), jax.random.key(0)
            )
            assert grad.dtype == dtype and float(theirs.detach()) > 0
            np.testing.assert_allclose(float(value), float(theirs.detach()), rtol=tol)
            g_pml = xt.grad.numpy()
            np.testing.assert_allclose(
                np.asarray(grad), g_pml, rtol=tol, atol=tol * np.abs(g_pml).max()
            )


def test_audit_regressions_half_precision_lifted_and_checks():
    """Five silent failures: float16 rows of norm > ~256 normalized to 0 (|x|^2 overflowed); lifted
    was non-zero on a batch without negatives (PML: 0); NaN margins of miners and per-tuple losses
    mined nothing / gave NaN; float labels under jit were truncated; +-1 pair labels all counted as
    similar in contrastive_pairs."""
    x = np.random.default_rng(0).standard_normal((8, 16)) * 300.0
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    full = float(losses.triplet_margin(x.astype(np.float32), y))
    half = jnp.asarray(x, jnp.float16)
    assert abs(float(losses.triplet_margin(half, y)) - full) < 1e-3
    g = jax.grad(lambda e: losses.contrastive(e, y))(half)
    assert g.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    value, grad = jax.value_and_grad(losses.lifted_structure)(x[:, :4], np.zeros(8, int))
    assert float(value) == 0.0 and bool(jnp.all(grad == 0))
    spec = losses.build(
        "lifted_structure", miner="pair_margin", miner_kwargs={"pos_margin": 0.0, "neg_margin": 0.0}
    )
    assert float(spec.apply({}, x[:, :4], y, jax.random.key(0))) == 0.0  # no negative pair mined
    nan = float("nan")
    with pytest.raises(ValueError, match="margin must be a finite number"):
        losses.triplet_margin_triplets(x[:2], x[1:3], x[2:4], margin=nan)
    with pytest.raises(ValueError, match="neg_margin must be a finite number"):
        losses.contrastive_pairs(x[:2], x[2:4], np.array([True, False]), neg_margin=nan)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        losses.build("triplet_margin", miner="semihard", miner_kwargs={"margin": nan})
    with pytest.raises(ValueError, match="margin must be a number, got '0.2'"):
        losses.triplet_margin(x, y, margin="0.2")
    with pytest.raises(ValueError, match="integer class ids.*under jit"):
        jax.jit(losses.triplet_margin)(x, y + 0.5)
    plus_minus = losses.contrastive_pairs(x[:4], x[4:], np.array([1, -1, -1, -1]))
    np.testing.assert_allclose(
        plus_minus, losses.contrastive_pairs(x[:4], x[4:], np.array([1, 0, 0, 0]))
    )


def test_unnormalized_distances_of_embeddings_far_from_the_origin():
    """normalize=False ranked by |x|^2 + |y|^2 - 2 x.y, which cancels in float32 at 1000 + 0.1 N(0, 1):
    contrastive gave 2.0 instead of 0.98. The batch is centred first (distances unchanged)."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 16)
    x = (0.1 * rng.standard_normal((16, 8))).astype(np.float32)
    for loss in (losses.contrastive, losses.triplet_margin):
        near = float(loss(x, y, normalize=False))
        assert abs(float(loss(x + np.float32(1000.0), y, normalize=False)) - near) < 1e-3 * near
    g_near = jax.grad(lambda e: losses.contrastive(e, y, normalize=False))(x)
    g_far = jax.grad(lambda e: losses.contrastive(e, y, normalize=False))(x + np.float32(1000.0))
    np.testing.assert_allclose(g_far, g_near, atol=1e-3 * float(jnp.abs(g_near).max()))


def test_audit_regressions_two_view_half_precision_proxy_labels_under_jit_and_checks():
    """ntxent_two_view normalized float16 rows of norm > ~256 to 0 (loss log N); proxy losses under
    jit with a label >= C dropped the target term (finite, wrong); [B, 0] embeddings gave losses;
    n_pairs took l2_reg < 0 (unbounded below)."""
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    full = float(losses.ntxent_two_view(z1.astype(np.float32), z2.astype(np.float32)))
    half = losses.ntxent_two_view((300 * z1).astype(np.float16), (300 * z2).astype(np.float16))
    assert half.dtype == jnp.float32 and abs(float(half) - full) < 1e-2 and full > 2 * math.log(5)
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    P = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    ok, bad = jnp.array([0, 1, 2, 0, 1, 2]), jnp.array([0, 1, 2, 3, 0, 1])
    for name in ("proxy_nca", "proxy_anchor", "arcface", "cosface"):
        fn = jax.jit(losses.LOSSES[name])
        assert np.isfinite(float(fn(x, ok, P))), name
        assert np.isnan(float(fn(x, bad, P))), name
        assert np.isnan(float(fn(x, bad - 1, P))), name  # a label -1
    for call in (
        lambda: losses.ntxent(np.zeros((4, 0), np.float32), [0, 0, 1, 1]),
        lambda: losses.ntxent_two_view(np.zeros((4, 0)), np.zeros((4, 0))),
        lambda: losses.arcface(np.zeros((4, 0)), [0, 0, 1, 1], np.zeros((2, 0))),
        lambda: miners.pair_margin(np.zeros((4, 0)), [0, 0, 1, 1]),
    ):
        with pytest.raises(ValueError, match="at least one feature"):
            call()
    with pytest.raises(ValueError, match="l2_reg must be a non-negative number"):
        losses.n_pairs(x, ok, l2_reg=-1.0)
    assert np.isfinite(float(losses.n_pairs(x, ok, l2_reg=0.0)))


def test_nan_embeddings_under_jit_give_nan_not_a_finite_loss():
    # their masks left the NaN pairs out: multi_similarity 0.84, circle 118, proxy_anchor 13.3
    rng = np.random.default_rng(0)
    e = rng.normal(size=(8, 4)).astype(np.float32)
    e[2, 1] = np.nan
    y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    P = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
    assert np.isnan(float(jax.jit(losses.multi_similarity)(e, y)))
    assert np.isnan(float(jax.jit(losses.circle)(e, y)))
    assert np.isnan(float(jax.jit(losses.proxy_anchor)(e, y, P)))
    assert np.isnan(
        float(jax.jit(losses.proxy_anchor)(np.nan_to_num(e), y, P.at[0, 0].set(jnp.nan)))
    )
    assert np.isfinite(float(jax.jit(losses.multi_similarity)(np.nan_to_num(e), y)))


def test_far_but_close_embeddings_without_normalization_are_accepted():
    # the overflow check looks at the centred batch: 2e19 +- 1e18 has distances that fit float32
    rng = np.random.default_rng(0)
    e = (2e19 + 1e18 * rng.normal(size=(8, 3))).astype(np.float32)
    y = np.repeat(np.arange(4), 2)
    assert np.isfinite(float(losses.contrastive(e, y, normalize=False, neg_margin=1e19)))


def test_tuple_forms_validate_as_the_batch_forms():
    """The per-pair / per-triplet forms returned NaN for NaN members, 1.0 or the bare margin for
    [P, 0] members, 0 for an empty set; same=NaN or 0.5 was read as a label, -1 as similar in
    contrastive_pair; a wrong-length weights gave JAX's broadcasting error."""
    a, b = jnp.ones(3), jnp.zeros(3)
    with pytest.raises(ValueError, match="x1 contains 1 NaN"):
        losses.contrastive_pair(a.at[0].set(jnp.nan), b, True)
    with pytest.raises(ValueError, match="anchor contains 1 NaN"):
        losses.triplet_margin_triplet(a.at[0].set(jnp.inf), b, b)
    with pytest.raises(ValueError, match="x1 and x2 must have the same shape"):
        losses.contrastive_pair(a, jnp.ones(4), True)
    with pytest.raises(ValueError, match="x1 must be 1-dimensional"):
        losses.contrastive_pair(jnp.ones((4, 3)), jnp.zeros((4, 3)), True)
    # -1 (constraints.pairs' dissimilar label) is dissimilar, as in contrastive_pairs
    neg = float(losses.contrastive_pair(a, b, False))
    assert float(losses.contrastive_pair(a, b, -1)) == neg
    assert float(losses.contrastive_pair(a, b, 1)) == float(losses.contrastive_pair(a, b, True))
    with pytest.raises(ValueError, match="at least one feature"):
        losses.contrastive_pairs(jnp.ones((2, 0)), jnp.ones((2, 0)), jnp.array([1, 0]))
    with pytest.raises(ValueError, match="at least one feature"):
        losses.triplet_margin_triplets(*(jnp.ones((2, 0)),) * 3)
    with pytest.raises(ValueError, match="needs at least 1 rows"):
        losses.contrastive_pairs(jnp.ones((0, 3)), jnp.ones((0, 3)), jnp.zeros(0, bool))
    with pytest.raises(ValueError, match="needs at least 1 rows"):
        losses.triplet_margin_triplets(*(jnp.ones((0, 3)),) * 3)
    A, B = jnp.ones((4, 3)), jnp.zeros((4, 3))
    for bad in ([jnp.nan, 0.0, 1.0, 0.0], [0.5, 0.2, 2.0, 0.0]):
        with pytest.raises(ValueError, match="same must be bool, 0/1 or"):
            losses.contrastive_pairs(A, B, jnp.array(bad))
    with pytest.raises(ValueError, match=r"weights must be broadcastable to shape \(4,\)"):
        losses.contrastive_pairs(A, B, jnp.array([1, 0, 1, 0]), weights=jnp.ones(3))
    with pytest.raises(ValueError, match=r"weights must be broadcastable to shape \(4,\)"):
        losses.triplet_margin_triplets(A, B, B, weights=jnp.ones(3))
    # under jit the members are not inspected, and the forms still agree with the batch loss
    same = jnp.array([1, -1, 1, -1])
    f = jax.jit(lambda x, y, s: losses.contrastive_pairs(x, y, s))
    assert float(f(A, B, same)) == float(losses.contrastive_pairs(A, B, same))


def test_sampling_losses_take_int_seeds():
    """init_proxies, a built proxy loss's init and the distance_weighted miner raised JAX's
    'invalid PRNG key data' for an int seed, which every other sampler takes."""
    np.testing.assert_array_equal(
        losses.init_proxies(0, 4, 3), losses.init_proxies(jax.random.key(0), 4, 3)
    )
    spec = losses.build("proxy_nca", n_classes=3, embedding_dim=4)
    assert jax.tree.leaves(spec.init(0))[0].shape == (3, 4)
    x, y = _batch(21)
    dw = losses.build("triplet_margin", miner="distance_weighted")
    assert np.isfinite(float(dw.apply({}, x, y, 0)))
    with pytest.raises(ValueError, match="key must be a jax.random key or an int seed"):
        losses.init_proxies("x", 4, 3)


def test_negative_miner_masks_are_refused():
    """A weight of -1 on the positive pairs silently dropped their term (0.276 instead of 1.943)."""
    x, y = _batch(22)
    pos, neg = miners.all_pairs(x, y)
    with pytest.raises(ValueError, match=r"pair_mask\[0\] must be non-negative"):
        losses.contrastive(x, y, pair_mask=(-pos, neg))
    T = miners.all_triplets(x, y)
    with pytest.raises(ValueError, match="triplet_mask must be non-negative"):
        losses.triplet_margin(x, y, triplet_mask=-T)
    assert np.isfinite(float(losses.contrastive(x, y, pair_mask=(2.0 * pos, neg))))


def test_build_refuses_miner_kwargs_that_are_not_a_dict():
    with pytest.raises(
        ValueError, match="miner_kwargs must be a dict of keyword arguments or None"
    ):
        losses.build("triplet_margin", miner="semihard", miner_kwargs=[1])


def test_configdict_kwargs_and_broadcast_tuple_weights_work():
    """miner_kwargs from a ConfigDict config and a scalar weight for every tuple (both refused by a
    first version of the new checks)."""
    import ml_collections

    spec = losses.build(
        "contrastive",
        miner="pair_margin",
        miner_kwargs=ml_collections.ConfigDict({"pos_margin": 0.1}),
    )
    x, y = _batch(23)
    assert np.isfinite(float(spec.apply({}, x, y, None)))
    A, B = jnp.asarray(x[:4]), jnp.asarray(x[4:8])
    same = jnp.array([1, 0, 1, 0])
    np.testing.assert_allclose(
        losses.contrastive_pairs(A, B, same, weights=2.0),
        losses.contrastive_pairs(A, B, same, weights=jnp.full(4, 2.0)),
    )


def test_build_checks_proxy_sizes_whatever_was_built_before():
    """10.0 == 10: after build(..., n_classes=10) the cache returned the valid spec for a later
    n_classes=10.0 (and embedding_dim=True after 1) without checking it."""
    losses.build("proxy_anchor", n_classes=10, embedding_dim=4)
    losses.build("proxy_anchor", n_classes=10, embedding_dim=1)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1, got 10.0"):
        losses.build("proxy_anchor", n_classes=10.0, embedding_dim=4)
    with pytest.raises(ValueError, match="embedding_dim must be an integer >= 1, got True"):
        losses.build("proxy_anchor", n_classes=10, embedding_dim=True)


def test_build_refuses_bad_settings_before_any_apply():
    """Settings the loss or miner checks when traced (a NaN margin, a zero temperature, a
    distance-weighted cutoff beyond 2) built fine and were refused only at the first apply."""
    bad = [
        (("contrastive",), {"neg_margin": float("nan")}, "neg_margin must be a finite number"),
        (("ntxent",), {"temperature": 0.0}, "temperature must be a positive number"),
        (("contrastive",), {"normalize": "False"}, "normalize must be True or False"),
        (
            ("proxy_anchor",),
            {"n_classes": 3, "embedding_dim": 4, "margin": float("inf")},
            "margin must be a finite number",
        ),
        (
            ("triplet_margin",),
            {"miner": "distance_weighted", "miner_kwargs": {"cutoff": 2.5}},
            "cutoff must be below nonzero_loss_cutoff and 2",
        ),
    ]
    for args, kw, match in bad:
        with pytest.raises(ValueError, match=match):
            losses.build(*args, **kw)
    # every loss and every miner it takes still builds with its defaults, and applies
    emb = jax.random.normal(jax.random.key(0), (8, 4))
    y = jnp.repeat(jnp.arange(4), 2)
    for name in losses.LOSSES:
        proxy = losses.LOSS_KIND[name] == "proxy"
        spec = losses.build(name, **({"n_classes": 4, "embedding_dim": 4} if proxy else {}))
        loss = spec.apply(spec.init(jax.random.key(1)), emb, y, jax.random.key(2))
        assert np.isfinite(float(loss))
