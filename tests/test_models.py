"""Embedding networks: shapes, normalization, registry, Siamese / triplet application."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metriclearn import losses, models

CASES = [
    ("mlp", {"hidden": (16, 16)}, (5, 12)),
    ("resmlp", {"width": 16, "n_blocks": 2}, (5, 12)),
    ("conv1d", {"channels": (4, 4), "hidden": 16}, (5, 40)),
    ("conv2d", {"image_shape": (8, 8, 1), "features": (4, 8), "hidden": 16}, (5, 64)),
    ("conv2d", {"image_shape": (28, 28, 1), "features": (4,), "hidden": 0}, (3, 784)),
]


def _init(model, x):
    return model.init(jax.random.key(0), x)


@pytest.mark.parametrize("name,kw,shape", CASES)
def test_output_shape_and_normalization(name, kw, shape):
    normalize = name != "resmlp"  # one unnormalized case (the manual MLP forward is another)
    model = models.build_model(name, embedding_dim=7, normalize=normalize, **kw)
    x = jax.random.normal(jax.random.key(1), shape)
    params = _init(model, x)
    emb = jax.jit(model.apply)(params, x)
    assert emb.shape == (shape[0], 7)
    assert emb.dtype == jnp.float32
    norms = np.linalg.norm(np.asarray(emb), axis=1)
    if normalize:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    else:
        assert not np.allclose(norms, 1.0, rtol=1e-3)
    # rows are embedded independently: embedding one row alone gives the same vector
    np.testing.assert_allclose(model.apply(params, x[:1]), emb[:1], rtol=1e-4, atol=1e-5)


def test_l2_normalize_nan_safe_at_zero():
    z = jnp.zeros((2, 3))
    assert np.all(np.asarray(models.l2_normalize(z)) == 0.0)
    g = jax.grad(lambda v: jnp.sum(models.l2_normalize(v)))(z)
    assert np.all(np.isfinite(np.asarray(g)))
    v = jnp.array([[3.0, 4.0]])
    np.testing.assert_allclose(models.l2_normalize(v), [[0.6, 0.8]], rtol=1e-6)


def test_normalized_model_with_zero_embedding_has_finite_gradient():
    model = models.MLP(hidden=(), embedding_dim=4, normalize=True)
    x = jnp.zeros((3, 5))
    params = _init(model, x)
    params = jax.tree.map(jnp.zeros_like, params)  # zero weights and bias -> zero embedding
    emb = model.apply(params, x)
    assert np.all(np.asarray(emb) == 0.0)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x + 1.0) ** 2))(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_mlp_matches_manual_forward():
    model = models.MLP(hidden=(6,), embedding_dim=3)
    x = jax.random.normal(jax.random.key(2), (4, 5))
    params = _init(model, x)
    p = params["params"]
    h = np.maximum(np.asarray(x) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0.0)
    out = h @ p["head"]["embedding"]["kernel"] + p["head"]["embedding"]["bias"]
    np.testing.assert_allclose(model.apply(params, x), out, rtol=1e-5, atol=1e-6)


def test_conv2d_accepts_flat_and_image_inputs():
    model = models.Conv2DNet(image_shape=(8, 8, 1), features=(4,), hidden=8, embedding_dim=5)
    x = jax.random.normal(jax.random.key(3), (2, 64))
    params = _init(model, x)
    a = model.apply(params, x)
    b = model.apply(params, x.reshape(2, 8, 8, 1))
    c = model.apply(params, x.reshape(2, 8, 8))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-6)
    with pytest.raises(ValueError, match="image_shape"):
        model.init(jax.random.key(0), jnp.zeros((2, 50)))


def test_dropout_only_in_training_mode():
    model = models.MLP(hidden=(32,), embedding_dim=4, dropout=0.5)
    x = jax.random.normal(jax.random.key(4), (6, 5))
    params = _init(model, x)
    a = model.apply(params, x)
    b = model.apply(params, x)
    np.testing.assert_array_equal(a, b)
    t1 = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)})
    t2 = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(t1, t2)


def test_build_model_errors():
    with pytest.raises(ValueError, match="conv1d.*mlp|mlp.*resmlp"):
        models.build_model("transformer")
    with pytest.raises(ValueError, match="no option"):
        models.build_model("mlp", widths=(3,))
    with pytest.raises(ValueError, match="activation"):
        models.MLP(hidden=(3,), activation="swish2")  # at construction, not at the first call
    with pytest.raises(ValueError, match="initializer"):
        models.build_model("resmlp", initializer="he")
    assert set(models.MODELS) == {"mlp", "resmlp", "conv1d", "conv2d"}
    assert models.build_model("mlp", hidden=[8, 8]).hidden == (8, 8)

    # sizes and rates that would train to nothing or fail deep inside JAX
    for name, kw, message in [
        ("mlp", {"hidden": [0]}, "hidden must be an integer >= 1"),
        ("mlp", {"hidden": (8, -5)}, "hidden must be an integer >= 1"),
        ("mlp", {"embedding_dim": 0}, "embedding_dim must be an integer >= 1"),
        ("mlp", {"dropout": 1.0}, r"dropout must be a rate in \[0, 1\)"),
        ("mlp", {"dropout": -0.5}, "dropout must be a rate"),
        ("resmlp", {"width": 0}, "width must be an integer >= 1"),
        ("conv1d", {"hidden": -1}, "hidden must be an integer >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            models.build_model(name, **kw)
    assert models.build_model("conv1d", hidden=0).hidden == 0  # no dense layer: allowed
    # inputs of the wrong rank: a clear error, not merged examples or a deep JAX one
    for model, shape in [
        (models.Conv1DNet(), (8,)),
        (models.Conv1DNet(), (2, 4, 8, 1)),
        (models.Conv2DNet(), (64,)),
        (models.Conv2DNet(), (2, 4, 8, 8, 1)),
    ]:
        with pytest.raises(ValueError, match="needs x of shape"):
            model.init(jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("name,kw,shape", [CASES[0], CASES[2]])
def test_siamese_and_triplet_equal_separate_applies(name, kw, shape):
    model = models.build_model(name, embedding_dim=6, **kw)
    keys = jax.random.split(jax.random.key(5), 3)
    a, p, n = (jax.random.normal(k, shape) for k in keys)
    params = _init(model, a)
    e1, e2 = jax.jit(lambda pr, u, v: models.siamese_apply(model, pr, u, v))(params, a, p)
    np.testing.assert_allclose(e1, model.apply(params, a), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e2, model.apply(params, p), rtol=1e-5, atol=1e-6)
    ta, tp, tn = models.triplet_apply(model, params, a, p, n)
    for got, x in ((ta, a), (tp, p), (tn, n)):
        np.testing.assert_allclose(got, model.apply(params, x), rtol=1e-5, atol=1e-6)


def test_siamese_gradient_flows_through_shared_weights():
    model = models.MLP(hidden=(8,), embedding_dim=3)
    x1 = jax.random.normal(jax.random.key(6), (4, 5))
    x2 = jax.random.normal(jax.random.key(7), (4, 5))
    params = _init(model, x1)

    def via_siamese(pr):
        e1, e2 = models.siamese_apply(model, pr, x1, x2)
        return jnp.sum((e1 - e2) ** 2)

    def separate(pr):
        return jnp.sum((model.apply(pr, x1) - model.apply(pr, x2)) ** 2)

    g1, g2 = jax.grad(via_siamese)(params), jax.grad(separate)(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_siamese_shape_mismatch():
    model = models.MLP(hidden=(4,), embedding_dim=2)
    params = _init(model, jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="same shape"):
        models.siamese_apply(model, params, jnp.zeros((4, 3)), jnp.zeros((5, 3)))


def test_torch_initializer_bounds():
    model = models.MLP(hidden=(50,), embedding_dim=3, initializer="torch")
    params = _init(model, jnp.zeros((1, 16)))["params"]
    for layer, fan_in in ((params["dense_0"], 16), (params["head"]["embedding"], 50)):
        bound = 1.0 / np.sqrt(fan_in)
        for w in (layer["kernel"], layer["bias"]):
            w = np.asarray(w)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    default = _init(models.MLP(hidden=(50,), embedding_dim=3), jnp.zeros((1, 16)))["params"]
    assert np.all(np.asarray(default["dense_0"]["bias"]) == 0.0)
    # the flat draws behind the torch init give Flax's own initializers' numbers, key for key
    dense = models._dense(50, 16, "torch", "dense")
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        dense.kernel_init(key, (16, 50)),
        jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")(key, (16, 50)),
    )
    bound = 1.0 / np.sqrt(16)
    np.testing.assert_array_equal(
        dense.bias_init(key, (50,)), jax.random.uniform(key, (50,), jnp.float32, -bound, bound)
    )
    with pytest.raises(ValueError, match="initializer.*lecun, torch"):
        _init(models.MLP(hidden=(4,), initializer="xavier"), jnp.zeros((1, 2)))


@pytest.mark.parametrize(
    "model", [models.MLP(hidden=(8,), embedding_dim=3), models.ResMLP(width=8)]
)
def test_mlps_refuse_unbatched_input(model):
    # a single example [d] used to be taken as a batch of d scalars: params for 1 feature, [d, e] out
    with pytest.raises(ValueError, match="needs x of shape"):
        model.init(jax.random.key(0), jnp.zeros(5))
    params = _init(model, jnp.zeros((1, 5)))
    with pytest.raises(ValueError, match="needs x of shape"):
        model.apply(params, jnp.zeros(5))


@pytest.mark.parametrize("name,kw,shape", CASES[:4])
def test_empty_batch_gives_empty_embeddings(name, kw, shape):
    model = models.build_model(name, embedding_dim=7, **kw)
    params = _init(model, jnp.zeros(shape))
    assert model.apply(params, jnp.zeros((0, *shape[1:]))).shape == (0, 7)


def test_l2_normalize_float16_zero_row_not_nan():
    z = jnp.zeros((2, 3), jnp.float16)
    out = models.l2_normalize(z)
    assert out.dtype == jnp.float16 and np.all(np.asarray(out, np.float32) == 0.0)
    g = jax.grad(lambda v: jnp.sum(models.l2_normalize(v)).astype(jnp.float32))(z)
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
    v = models.l2_normalize(jnp.array([[3e-3, 4e-3]], jnp.float16))
    np.testing.assert_allclose(np.asarray(v, np.float32), [[0.6, 0.8]], rtol=2e-3)


@pytest.mark.parametrize("name,x", [("conv1d", jnp.zeros((2, 40))), ("conv2d", jnp.zeros((2, 64)))])
def test_conv_dropout_without_dense_layer_is_refused(name, x):
    # hidden=0 has no dense layer, so dropout used to be silently ignored in training
    with pytest.raises(ValueError, match="needs hidden > 0"):
        models.build_model(name, hidden=0, dropout=0.5, embedding_dim=4)
    assert models.build_model(name, hidden=0, embedding_dim=4).init(jax.random.key(0), x)


def test_direct_construction_is_checked_as_build_model():
    # MLP(dropout=1.0) built directly used to skip build_model's checks and train on all zeros
    for cls, kw, message in [
        (models.MLP, {"dropout": 1.0}, "dropout must be a rate"),
        (models.MLP, {"hidden": [8, 0]}, "hidden must be an integer >= 1"),
        (models.ResMLP, {"width": 0}, "width must be an integer >= 1"),
        (models.Conv1DNet, {"hidden": 0, "dropout": 0.1}, "needs hidden > 0"),
        (models.Conv2DNet, {"image_shape": (8,)}, r"image_shape must be \(H, W\)"),
        (models.MLP, {"activation": "swish2"}, "activation"),
    ]:
        with pytest.raises(ValueError, match=message):
            cls(**kw)
    # a list of widths still works when the net is built directly
    m = models.MLP(hidden=[8, 8], embedding_dim=3)
    assert m.apply(_init(m, jnp.ones((2, 5))), jnp.ones((2, 5))).shape == (2, 3)


def test_build_model_checks_conv_and_residual_sizes():
    for name, kw, message in [
        ("resmlp", {"n_blocks": -1}, "n_blocks must be an integer >= 0"),
        ("resmlp", {"expansion": 0}, "expansion must be an integer >= 1"),
        ("conv1d", {"kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ("conv1d", {"channels": (0, 8)}, "channels must be an integer >= 1"),
        ("conv1d", {"hidden": (8,)}, "hidden must be an integer >= 0"),
        ("conv2d", {"features": [4, 0]}, "features must be an integer >= 1"),
        ("conv2d", {"image_shape": (-8, -8, 1)}, "image_shape must be an integer >= 1"),
        ("conv2d", {"image_shape": (64,)}, r"image_shape must be \(H, W\)"),
        ("mlp", {"hidden": 16}, "hidden must be a sequence"),
    ]:
        with pytest.raises(ValueError, match=message):
            models.build_model(name, **kw)
    assert models.build_model("conv2d", features=[4, 8]).features == (4, 8)


def test_siamese_and_triplet_branches_draw_their_own_dropout_masks():
    # vmapping one dropout key gave every branch the same mask: a pair of equal inputs came out
    # equal in training, where two forward passes differ
    model = models.MLP(hidden=(64,), embedding_dim=8, dropout=0.5)
    x = jax.random.normal(jax.random.key(8), (5, 6))
    params = _init(model, x)
    key = jax.random.key(3)
    e1, e2 = models.siamese_apply(model, params, x, x, train=True, rngs={"dropout": key})
    assert not np.allclose(e1, e2)
    keys = jax.random.split(key, 2)
    for got, k in zip((e1, e2), keys):
        want = model.apply(params, x, train=True, rngs={"dropout": k})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    t = models.triplet_apply(model, params, x, x, x, train=True, rngs={"dropout": key})
    assert not np.allclose(t[0], t[1]) and not np.allclose(t[1], t[2])
    # without training, dropout is off and the branches agree
    d1, d2 = models.siamese_apply(model, params, x, x)
    np.testing.assert_array_equal(d1, d2)


def test_construction_checks_close_the_audit_gaps():
    """dropout with no layer to follow (MLP hidden=(), ResMLP n_blocks=0) was silently ignored; a
    NumPy float32 rate was refused; build_model listed the ClassVar _kind as an option and passed it
    on (a TypeError); normalize='yes' was taken."""
    assert models.MLP(dropout=np.float32(0.25)).dropout == np.float32(0.25)
    with pytest.raises(ValueError, match="hidden=\\(\\) would silently ignore it"):
        models.MLP(hidden=(), dropout=0.5)
    with pytest.raises(ValueError, match="n_blocks=0 would silently ignore it"):
        models.ResMLP(n_blocks=0, dropout=0.5)
    with pytest.raises(ValueError, match=r"no option\(s\) \['_kind'\]") as err:
        models.build_model("mlp", _kind="x")
    assert "_kind" not in str(err.value).split("valid:")[1]
    with pytest.raises(ValueError, match="normalize must be True or False"):
        models.MLP(normalize="yes")
    from metriclearn import training

    model = models.MLP(hidden=(8,), embedding_dim=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least one row"):
        training.make_embed_fn(model)(params, np.zeros((0, 3), np.float32))  # was IndexError
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        training.make_embed_fn(model, chunk_size=0)


def test_l2_normalize_rows_whose_squares_overflow():
    # |x|^2 of a float32 row of norm 5e19 overflowed to inf and the row normalized to 0, silently
    from metriclearn import miners

    x = jnp.array([[3e19, 4e19], [3.0, 4.0], [0.0, 0.0]], jnp.float32)
    for fn in (models.l2_normalize, miners.l2_normalize):
        out = np.asarray(fn(x))
        assert np.all(np.isnan(out[0])), fn
        np.testing.assert_allclose(out[1:], [[0.6, 0.8], [0, 0]], rtol=1e-6)
    # a loss refuses such embeddings (it gave 0)
    y = jnp.array([0, 0, 1, 1])
    e = jnp.array([[1.0, 0.1], [0.9, 0.3], [-1.0, 0.2], [0.1, -1.0]], jnp.float32)
    with pytest.raises(ValueError, match="embeddings are too far apart for float32"):
        losses.contrastive(e * 2.0**66, y)
    assert np.isfinite(float(losses.contrastive(e * 2.0**40, y)))


def test_l2_normalize_floor_keeps_zero_rows_finite():
    """eps=0 (or any eps below ~1e-13 in float32) made the gradient at a zero row NaN; a negative
    eps gave NaN values."""
    z = jnp.zeros((2, 3))
    for eps in (1e-12, 1e-19, 0.0):
        assert np.all(np.asarray(models.l2_normalize(z, eps=eps)) == 0)
        g = jax.grad(lambda x, e=eps: models.l2_normalize(x, eps=e).sum())(z)
        assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(models.l2_normalize(jnp.array([[3.0, 4.0]]), eps=0.0), [[0.6, 0.8]])
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        models.l2_normalize(z, eps=-1.0)


def test_list_fields_are_stored_as_tuples_so_programs_are_reused():
    """MLP(hidden=[32]) kept the list: unhashable, so fit's cached programs were never reused (each
    fit compiled again), and it never equalled MLP(hidden=(32,))."""
    a = models.MLP(hidden=[32, 16], embedding_dim=4)
    b = models.MLP(hidden=(32, 16), embedding_dim=4)
    assert a.hidden == (32, 16) and a == b and hash(a) == hash(b)
    c = models.Conv1DNet(channels=[8], embedding_dim=4)
    assert c.channels == (8,) and c == models.Conv1DNet(channels=(8,), embedding_dim=4)
    x = np.ones((2, 5), np.float32)
    params = a.init(jax.random.key(0), x)
    np.testing.assert_array_equal(a.apply(params, x), b.apply(params, x))


def test_parameters_are_float64_under_x64(x64):
    """Under jax_enable_x64 the activations were float64 but every parameter (and gradient) stayed
    float32; the README promises float64 everywhere."""
    # one dense net per initializer, one conv net (Dense, Conv and LayerNorm all take the dtype)
    cases = [(*CASES[0], "torch"), (*CASES[1], "lecun"), (*CASES[3], None)]
    for name, kw, shape, init in cases:
        extra = {} if init is None else {"initializer": init}
        model = models.build_model(name, embedding_dim=3, **kw, **extra)
        x = jnp.ones(shape)
        params = model.init(jax.random.key(0), x)
        grads = jax.jit(jax.grad(lambda p, m=model, x=x: m.apply(p, x).sum()))(params)
        assert {leaf.dtype for leaf in jax.tree.leaves((params, grads))} == {
            jnp.dtype("float64")
        }, (name, init)
        assert model.apply(params, x).dtype == jnp.float64
    assert hash(model) == hash(models.build_model(name, embedding_dim=3, **kw))


def test_parameters_stay_float32_by_default():
    model = models.MLP(hidden=(8,), embedding_dim=3, initializer="torch")
    params = model.init(jax.random.key(0), jnp.ones((1, 4)))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}


def test_l2_normalize_integer_zero_rows_huge_eps_and_complex():
    """An integer zero row with eps=0 was NaN (the floor applied to floats only); eps=1e20 gave 0
    for every row (eps * eps overflowed); complex x normalized by sum(x * x), not |x|^2."""
    out = models.l2_normalize(jnp.array([[0, 0, 0], [3, 4, 0]], jnp.int32), eps=0.0)
    np.testing.assert_allclose(out, [[0, 0, 0], [0.6, 0.8, 0]], rtol=1e-6)
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(
        models.l2_normalize(x, eps=1e20), [[3e-20, 4e-20], [0, 0]], rtol=1e-6
    )
    traced = jax.jit(lambda v, e: models.l2_normalize(v, eps=e))(x, 1e20)
    np.testing.assert_allclose(traced, [[3e-20, 4e-20], [0, 0]], rtol=1e-6)
    g = jax.grad(lambda v: models.l2_normalize(v, eps=1e20).sum())(x)
    np.testing.assert_allclose(g, np.full((2, 2), 1e-20), rtol=1e-6)
    with pytest.raises(ValueError, match="needs real x, got complex"):
        models.l2_normalize(jnp.array([[3 + 4j, 0j]]))
    # ordinary float32 rows: the same bits as x * rsqrt(|x|^2)
    v = jax.random.normal(jax.random.key(0), (16, 8))
    sq = jnp.sum(v * v, axis=-1, keepdims=True)
    np.testing.assert_array_equal(models.l2_normalize(v), v * jax.lax.rsqrt(sq))


def test_train_flag_must_be_a_bool_and_jax_scalar_rates_are_taken():
    """apply(..., train="False") applied dropout (a truthy string); MLP(dropout=jnp.float32(0.5))
    was refused as out of [0, 1)."""
    model = models.MLP(hidden=(8,), embedding_dim=3, dropout=0.5)
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)
    for bad in ("False", 0, None):
        with pytest.raises(ValueError, match="train must be True or False"):
            model.apply(params, x, train=bad, rngs={"dropout": jax.random.key(1)})
    for flag in (False, np.bool_(False), jnp.array(False)):
        np.testing.assert_array_equal(model.apply(params, x, train=flag), model.apply(params, x))
    m = models.MLP(hidden=(8,), embedding_dim=3, dropout=jnp.float32(0.5))
    assert m.dropout == 0.5 and m == model.clone(dropout=np.float32(0.5))
    assert hash(m) == hash(models.MLP(hidden=(8,), embedding_dim=3, dropout=np.float32(0.5)))
    np.testing.assert_array_equal(
        m.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)}),
        model.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)}),
    )
    with pytest.raises(ValueError, match="dropout must be a rate in"):
        models.MLP(dropout=jnp.float32(1.5))
