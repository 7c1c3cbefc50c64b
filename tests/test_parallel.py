"""Data parallelism over 8 simulated CPU devices (XLA_FLAGS set in conftest.py).

Every sharded computation is compared with the same computation on one device on the concatenated
batch: losses, gradients, updated parameters, fitted M, retrieval metrics and k-NN predictions.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from metriclearn import evaluation, losses, miners, models, parallel, solver, training

N_DEV = 8


@pytest.fixture(scope="module")
def mesh8():
    assert len(jax.devices()) >= N_DEV, "tests/conftest.py must set 8 simulated CPU devices"
    return parallel.make_mesh(N_DEV)


def _data(n=64, d=6, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n // n_classes).astype(np.int32)
    X = rng.normal(size=(n, d)).astype(np.float32) + y[:, None].astype(np.float32)
    return X, y


def _setup(loss="triplet_margin", miner="semihard", optimizer=None):
    model = models.build_model("mlp", hidden=(16,), embedding_dim=8)
    spec = losses.build(loss, miner=miner)
    opt = optimizer or optax.sgd(0.1)
    return model, spec, opt


# --------------------------------------------------------------------------------------------------
# mesh and batch placement


def test_make_mesh_parallel(mesh8):
    assert mesh8.devices.size == N_DEV and mesh8.axis_names == ("data",)
    assert parallel.make_mesh(2, axis_name="batch").axis_names == ("batch",)
    with pytest.raises(ValueError, match=r"n_devices=9 but only 8"):
        parallel.make_mesh(9)
    with pytest.raises(ValueError, match="n_devices"):
        parallel.make_mesh(0)


def test_shard_batch_layout_and_errors_parallel(mesh8):
    X, y = _data(n=16)
    xs, ys = parallel.shard_batch((X, y), mesh8)
    assert xs.sharding.spec == P("data")
    # device i holds rows 2i, 2i+1
    for shard in xs.addressable_shards:
        i = mesh8.devices.tolist().index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), X[2 * i : 2 * i + 2])
    np.testing.assert_array_equal(np.asarray(ys), y)
    with pytest.raises(ValueError, match=r"12 rows.*8 devices"):
        parallel.shard_batch(X[:12], mesh8)
    with pytest.raises(ValueError, match="leading"):
        parallel.shard_batch((X, y[:8]), mesh8)
    rep = parallel.replicate({"w": jnp.ones(3)}, mesh8)
    assert rep["w"].sharding.is_fully_replicated


# --------------------------------------------------------------------------------------------------
# deep training


def test_sharded_train_step_matches_single_device_parallel(mesh8):
    X, y = _data(n=16)
    model, spec, opt = _setup()
    state = training.create_train_state(0, model, spec, opt, X[:1])
    single = training.make_train_step(model, spec, opt)
    sharded = parallel.make_sharded_train_step(model, spec, opt, mesh8)
    s1, m1 = single(state, X, y)
    s8, m8 = sharded(state, X, y)
    assert float(m1["loss"]) > 0
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
    for k in ("pos_sum", "neg_sum", "pos_count", "neg_count"):
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5)
    # SGD: new params = params - lr * grads, so equal params means equal gradients
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s8.params, s1.params
    )
    assert jax.tree.leaves(s8.params)[0].sharding.is_fully_replicated
    np.testing.assert_array_equal(s8.key, s1.key)
    # mining is over the global batch: the mean of per-shard losses is a different number
    emb = model.apply(state.params, X, train=True, rngs={"dropout": jax.random.key(0)})
    k_loss = jax.random.split(jax.random.wrap_key_data(state.key), 3)[1]
    per_shard = [
        float(spec.apply({}, emb[i : i + 2], y[i : i + 2], k_loss)) for i in range(0, 16, 2)
    ]
    assert abs(np.mean(per_shard) - float(m1["loss"])) > 1e-3
    with pytest.raises(ValueError, match=r"14 rows.*8 devices"):
        sharded(state, X[:14], y[:14])
    # a y of another length: JAX's IndivisibleError from device_put named neither argument
    with pytest.raises(
        ValueError, match=r"x, y must be arrays with one common leading.*\[12, 16\]"
    ):
        sharded(state, X, y[:12])
    with pytest.raises(ValueError, match="y must fit in int32"):
        sharded(state, X, y.astype(np.int64) + 2**32)


def test_sharded_gradients_match_parallel(mesh8):
    X, y = _data(n=16, seed=1)
    model, spec, opt = _setup(loss="contrastive", miner=None)
    params = model.init(jax.random.key(1), X[:1], train=False)
    key = jax.random.key(2)

    def objective(p, x, lab):
        return spec.apply({}, model.apply(p, x, train=False), lab, key)

    grad = jax.value_and_grad(objective)
    l1, g1 = jax.jit(grad)(params, X, y)
    data, rep = parallel.data_sharding(mesh8), parallel.replicated_sharding(mesh8)
    sharded_grad = jax.jit(grad, in_shardings=(rep, data, data), out_shardings=rep)
    l8, g8 = sharded_grad(params, *parallel.shard_batch((X, y), mesh8))
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
    hlo = sharded_grad.lower(params, X, y).compile().as_text()
    assert "all-gather" in hlo or "all-reduce" in hlo  # XLA inserted the cross-device collectives


def test_sharded_train_epoch_matches_single_device_parallel(mesh8):
    X, y = _data(n=32, seed=3)
    model, spec, opt = _setup(loss="contrastive", miner=None, optimizer=optax.adam(1e-2))
    state = training.create_train_state(0, model, spec, opt, X[:1])
    batches = jnp.asarray(np.random.default_rng(0).permutation(32).reshape(2, 16), jnp.int32)
    s1, m1 = training.make_train_epoch(model, spec, opt)(
        state, jnp.asarray(X), jnp.asarray(y), batches
    )
    epoch8 = parallel.make_sharded_train_epoch(model, spec, opt, mesh8)
    # as training.fit does: lower + compile once, then call with a state committed to one device
    # (e.g. restored from a checkpoint): the program places it replicated itself
    state_dev0 = jax.device_put(state, jax.devices()[0])
    s8, m8 = epoch8.lower(state, X, y, batches).compile()(state_dev0, X, y, batches)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), s8.params, s1.params
    )
    with pytest.raises(ValueError, match=r"12 rows.*8 devices"):
        epoch8(state, X, y, batches[:, :12])
    # one program per settings (was rebuilt, so every data-parallel fit compiled again)
    assert parallel.make_sharded_train_epoch(model, spec, opt, mesh8) is epoch8


def test_sharded_step_and_epoch_take_lists_as_arrays_parallel(mesh8):
    """A list x or y was one leaf per entry for jit: the step's size check read its leading size as
    missing ("got leading sizes [-1, 16]"), the epoch's index check raised a TypeError."""
    X, y = _data(n=16, seed=3)
    model, spec, opt = _setup(loss="contrastive", miner=None)
    state = training.create_train_state(0, model, spec, opt, X[:1])
    step8 = parallel.make_sharded_train_step(model, spec, opt, mesh8)
    ref = float(step8(state, X, y)[1]["loss"])
    for xx, yy in ((X, y.tolist()), (X.tolist(), y)):
        np.testing.assert_allclose(float(step8(state, xx, yy)[1]["loss"]), ref, rtol=1e-6)
    epoch8 = parallel.make_sharded_train_epoch(model, spec, opt, mesh8)
    batches = np.arange(16)[None]
    ref = float(epoch8(state, X, y, batches)[1]["loss"][0])
    got = epoch8(state, X.tolist(), y.tolist(), batches.tolist())[1]["loss"]
    np.testing.assert_allclose(float(got[0]), ref, rtol=1e-6)


def test_fit_refuses_bad_mesh_and_checkpoint_settings_up_front_parallel(mesh8, tmp_path):
    """A batch the devices do not divide was refused at the first compile, after the checkpoint
    directory was made; max_to_keep=0 kept no checkpoint (a resume restarted); a checkpoint_dir
    that is a file failed at the first save, after training."""
    X, y = _data(n=32, seed=3)
    model, spec, opt = _setup(loss="contrastive", miner=None)
    kw = dict(epochs=1, batch_size=12, m_per_class=3, progress=False)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match=r"batch_size has 12 rows.*8 devices"):
        training.fit(model, spec, opt, X, y, mesh=mesh8, checkpoint_dir=ckpt, **kw)
    assert not ckpt.exists()
    for bad in (0, 1.5, -1):
        with pytest.raises(ValueError, match="max_to_keep must be an integer >= 1"):
            training.fit(model, spec, opt, X, y, checkpoint_dir=ckpt, max_to_keep=bad, **kw)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="checkpoint_dir=.* is not a directory"):
        training.fit(model, spec, opt, X, y, checkpoint_dir=tmp_path / "file", **kw)
    assert not ckpt.exists()


def test_global_batch_mining_shard_map_parallel(mesh8):
    """Inside shard_map, anchors on each device are mined against the all-gathered global batch."""
    X, y = _data(n=16, d=8, seed=4)
    b = 16 // N_DEV

    def local_rows(emb, lab):
        g_emb, g_lab = parallel.all_gather_batch((emb, lab))
        full = miners.semihard(g_emb, g_lab, margin=0.5)
        start = jax.lax.axis_index("data") * b
        return jax.lax.dynamic_slice_in_dim(full, start, b, axis=0)

    fn = jax.shard_map(local_rows, mesh=mesh8, in_specs=(P("data"), P("data")), out_specs=P("data"))
    sharded_mask = jax.jit(fn)(*parallel.shard_batch((X, y), mesh8))
    single_mask = miners.semihard(jnp.asarray(X), jnp.asarray(y), margin=0.5)
    assert int(single_mask.sum()) > 0
    np.testing.assert_array_equal(np.asarray(sharded_mask), np.asarray(single_mask))
    # negatives really come from other devices: some mined negatives live on another shard
    a, _, n = np.nonzero(np.asarray(single_mask))
    assert np.any(a // b != n // b)


def test_train_and_evaluate_devices_errors_parallel(tmp_path):
    with pytest.raises(ValueError, match=r"n_devices=16 but only 8"):
        parallel.train_and_evaluate({"devices": 16}, tmp_path)
    with pytest.raises(ValueError, match=r"batch_size has 100 rows.*8 devices"):
        parallel.train_and_evaluate({"devices": 8, "batch_size": 100}, tmp_path)
    assert parallel.mesh_from_config({"devices": 1}) is None
    assert parallel.mesh_from_config({"devices": 4}).devices.size == 4


@pytest.mark.skipif(
    "devices" not in training.default_config(),
    reason="needs the 'devices' config key in metriclearn.training (fit(..., mesh=...))",
)
def test_train_and_evaluate_devices_matches_single_device_parallel(tmp_path):
    cfg = {
        "dataset": "digits",
        "epochs": 1,
        "batch_size": 32,
        "m_per_class": 4,
        "n_batches": 2,
        "hidden": [16],
        "embedding_dim": 8,
        "progress": False,
    }
    one = parallel.train_and_evaluate({**cfg, "devices": 1}, tmp_path / "one")
    eight = parallel.train_and_evaluate({**cfg, "devices": 8}, tmp_path / "eight")
    for k in ("precision_at_1", "map_at_r"):
        assert eight[k] == pytest.approx(one[k], abs=1e-3)


# --------------------------------------------------------------------------------------------------
# convex: constraint-parallel fit


def test_sharded_projected_gradient_matches_single_device_parallel(mesh8, x64):
    rng = np.random.default_rng(5)
    n, d = 37, 4  # 37 triplets: padded to 40 over 8 devices
    d_ab = rng.normal(size=(n, d)) * 0.5
    d_ac = rng.normal(size=(n, d)) * 1.5

    def hinge(M, ab, ac):
        return jnp.maximum(
            1.0 + solver.squared_mahalanobis(M, ab) - solver.squared_mahalanobis(M, ac), 0.0
        )

    kw = {"regularizer": "frobenius", "lam": 0.1, "max_iter": 60}
    ref = solver.projected_gradient(
        lambda M, ab, ac: solver.triplet_hinge_loss(M, ab, ac, margin=1.0),
        jnp.eye(d),
        args=(jnp.asarray(d_ab), jnp.asarray(d_ac)),
        **kw,
    )
    res = parallel.sharded_projected_gradient(hinge, np.eye(d), (d_ab, d_ac), mesh=mesh8, **kw)
    assert res.M.dtype == jnp.float64 and res.M.sharding.is_fully_replicated
    assert not np.allclose(ref.M, np.eye(d))
    np.testing.assert_allclose(res.M, ref.M, rtol=1e-8, atol=1e-10)
    assert int(res.n_iter) == int(ref.n_iter)
    # the weighted objective ignores the padding rows
    w, (ab8, ac8) = parallel.shard_constraints(d_ab, d_ac, mesh=mesh8)
    assert ab8.shape == (40, d) and float(w.sum()) == n and ab8.sharding.spec == P("data")
    obj = jax.jit(parallel.sharded_objective(hinge))
    M = jnp.asarray(rng.normal(size=(d, d)))
    np.testing.assert_allclose(
        obj(M @ M.T, w, ab8, ac8), solver.triplet_hinge_loss(M @ M.T, d_ab, d_ac)
    )


def test_shard_constraints_errors_parallel(mesh8):
    with pytest.raises(ValueError, match="at least one"):
        parallel.shard_constraints(mesh=mesh8)
    with pytest.raises(ValueError, match="arrays\\[0\\]"):
        parallel.shard_constraints(np.zeros((0, 3)), mesh=mesh8)
    with pytest.raises(ValueError, match=r"same number of rows.*\[5, 4\]"):
        parallel.shard_constraints(np.zeros((5, 3)), np.zeros((4, 3)), mesh=mesh8)
    with pytest.raises(ValueError, match="NaN|finite"):
        parallel.shard_constraints(np.full((5, 3), np.nan), mesh=mesh8)
    with pytest.raises(ValueError, match="reduction"):
        parallel.sharded_objective(lambda M, a: 0.0, reduction="max")
    # a per-tuple loss of shape (1, 1) broadcast against the weights: n times the mean, silently
    ab = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    w, arrs = parallel.shard_constraints(ab, mesh=mesh8)
    col = lambda M, a: a[None] @ M @ a[:, None]  # noqa: E731
    with pytest.raises(ValueError, match=r"per_tuple must return a scalar.*\(1, 1\)"):
        parallel.sharded_objective(col)(jnp.eye(3), w, *arrs)
    with pytest.raises(ValueError, match="per_tuple must return a scalar"):
        parallel.sharded_projected_gradient(col, jnp.eye(3), (ab,), mesh=mesh8)
    # integer tuple indices keep their dtype (as float32 they could not index, and 2**24 + 1 changed)
    idx = np.array([[0, 2**24 + 1]] * 5, np.int32)
    w, (sharded_idx,) = parallel.shard_constraints(idx, mesh=mesh8)
    assert sharded_idx.dtype == np.int32 and int(sharded_idx[4, 1]) == 2**24 + 1
    assert w.dtype == np.float32 and float(w.sum()) == 5


def test_parallel_builders_refuse_non_bool_flags_and_process_ids_parallel(mesh8, monkeypatch):
    """normalize_curves="false" meant True in the sharded builders (make_train_step refuses it), and
    initialize_distributed passed process_id=True to JAX as process 1."""
    model, spec, opt = _setup()
    for build in (parallel.make_sharded_train_step, parallel.make_sharded_train_epoch):
        with pytest.raises(ValueError, match="normalize_curves must be True or False"):
            build(model, spec, opt, mesh8, normalize_curves="false")
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for bad in (True, 0.5, "1", -1):
        with pytest.raises(ValueError, match="process_id must be an integer >= 0"):
            parallel.initialize_distributed("127.0.0.1:1234", num_processes=2, process_id=bad)
    parallel.initialize_distributed("127.0.0.1:1234", num_processes=2, process_id=np.int64(1))
    assert calls and calls[0]["process_id"] == 1 and calls[0]["num_processes"] == 2


# --------------------------------------------------------------------------------------------------
# evaluation


def test_sharded_retrieval_metrics_equal_unsharded_parallel(mesh8):
    X, y = _data(n=200, d=5, n_classes=5, seed=6)
    X, y = X[:197], y[:197]  # 197 queries: padded blocks on every device
    ref = evaluation.retrieval_metrics(X, y, nmi=False, chunk_size=32)
    got = parallel.sharded_retrieval_metrics(
        X, y, nmi=False, chunk_size=8, ref_chunk_size=64, mesh=mesh8
    )
    assert got["n_queries"] == ref["n_queries"]
    for k in ("precision_at_1", "r_precision", "map_at_r"):
        assert got[k] == pytest.approx(ref[k], abs=1e-12)
    assert got["recall_at_k"] == pytest.approx(ref["recall_at_k"])
    # separate references, on a 3-device mesh (50 queries: 17 per device, padded)
    ref2 = evaluation.retrieval_metrics(X[:50], y[:50], X[50:], y[50:], nmi=False)
    got2 = parallel.sharded_retrieval_metrics(
        X[:50], y[:50], X[50:], y[50:], nmi=False, mesh=parallel.make_mesh(3)
    )
    for k in ("precision_at_1", "r_precision", "map_at_r"):
        assert got2[k] == pytest.approx(ref2[k], abs=1e-12)


def test_sharded_knn_equal_unsharded_parallel(mesh8):
    X, y = _data(n=160, d=5, n_classes=4, seed=7)
    tr, te = slice(0, 100), slice(100, 160)
    ref_pred = evaluation.knn_predict(X[tr], y[tr], X[te], k=5)
    pred = parallel.sharded_knn_predict(X[tr], y[tr], X[te], k=5, chunk_size=4, mesh=mesh8)
    np.testing.assert_array_equal(pred, ref_pred)
    acc = parallel.sharded_knn_accuracy(X[tr], y[tr], X[te], y[te], k=5, mesh=mesh8)
    assert acc == evaluation.knn_accuracy(X[tr], y[tr], X[te], y[te], k=5)


@pytest.mark.parametrize("selection", ["host", "device"])
def test_evaluation_mesh_argument_both_selections_shard(mesh8, selection):
    """evaluation's own functions with mesh= (what parallel's sharded_* wrap): same numbers."""
    X, y = _data(n=204, d=4, n_classes=6, seed=8)
    X, y = np.round(X[:203]).astype(np.float32), y[:203]  # integer points: exact ties
    ref = evaluation.retrieval_metrics(X, y, nmi=False, k_values=(1, 5), selection=selection)
    got = evaluation.retrieval_metrics(
        X, y, nmi=False, k_values=(1, 5), selection=selection, mesh=mesh8, chunk_size=64
    )
    for k in ("precision_at_1", "r_precision", "map_at_r", "recall_at_k", "n_queries"):
        assert got[k] == ref[k], k
    pred = evaluation.knn_predict(X[:150], y[:150], X[150:], k=3, selection=selection, mesh=mesh8)
    np.testing.assert_array_equal(pred, evaluation.knn_predict(X[:150], y[:150], X[150:], k=3))


def test_sharded_evaluation_bad_input_parallel(mesh8):
    X, y = _data(n=40)
    with pytest.raises(ValueError, match="k=50"):
        parallel.sharded_knn_predict(X, y, X, k=50, mesh=mesh8)
    with pytest.raises(ValueError, match="NaN|finite"):
        parallel.sharded_knn_accuracy(np.full_like(X, np.nan), y, X, y, mesh=mesh8)
    with pytest.raises(ValueError, match="labels"):
        parallel.sharded_retrieval_metrics(X, y[:10], mesh=mesh8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        parallel.sharded_retrieval_metrics(X, np.zeros(40, int), mesh=mesh8)


# --------------------------------------------------------------------------------------------------
# multi-host


def test_host_local_to_global_single_process_shard(mesh8):
    X, y = _data(n=16)
    gx, gy = parallel.host_local_to_global((X, y), mesh8)
    assert gx.shape == (16, 6) and gx.sharding == parallel.data_sharding(mesh8)
    np.testing.assert_array_equal(np.asarray(gx), X)
    with pytest.raises(ValueError, match=r"10 rows.*8 local devices"):
        parallel.host_local_to_global(X[:10], mesh8)
    with pytest.raises(ValueError, match="process_id=2"):
        parallel.initialize_distributed("127.0.0.1:1", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="must be 'host:port'"):
        parallel.initialize_distributed("nonsense", num_processes=2, process_id=0)


def test_constraints_padding_keeps_gradients_finite_parallel():
    """Padding with zero rows gave a hinge on sqrt(a M a) a NaN gradient there (0 * inf), and the
    solver returned its start matrix after one step; the padding now repeats a real tuple."""
    rng = np.random.default_rng(0)
    ab = (0.5 * rng.normal(size=(7, 3))).astype(np.float32)  # 7 tuples on 4 devices: 1 padded
    ac = (1.5 * rng.normal(size=(7, 3))).astype(np.float32)

    def hinge(M, a, c):
        return jnp.maximum(1.0 + jnp.sqrt(a @ M @ a) - jnp.sqrt(c @ M @ c), 0.0)

    kw = {"regularizer": "frobenius", "lam": 0.1, "max_iter": 30}
    ref = solver.projected_gradient(
        lambda M, a, c: jnp.mean(jax.vmap(hinge, (None, 0, 0))(M, a, c)),
        jnp.eye(3),
        args=(jnp.asarray(ab), jnp.asarray(ac)),
        **kw,
    )
    res = parallel.sharded_projected_gradient(
        hinge, np.eye(3), (ab, ac), mesh=parallel.make_mesh(4), **kw
    )
    # the hinge's kink stops the line search before the optimum is verified (converged=False)
    assert bool(res.converged) == bool(ref.converged) and int(res.n_iter) == int(ref.n_iter)
    np.testing.assert_allclose(np.asarray(res.M), np.asarray(ref.M), atol=1e-5)


_WORKER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from metriclearn import parallel
    pid, port = int(sys.argv[1]), sys.argv[2]
    parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                    initialization_timeout=30)
    import jax, jax.numpy as jnp
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 4, mesh
    local = np.arange(4, dtype=np.float32).reshape(2, 2) + 10 * pid  # this process's 2 rows
    g = parallel.host_local_to_global(local, mesh)
    total = jax.jit(lambda a: jnp.sum(a, axis=0), out_shardings=parallel.replicated_sharding(mesh))(g)
    print("SHAPE", g.shape, "SUM", np.asarray(total).tolist(), flush=True)
    # evaluation on each process's own (full) arrays: the default mesh is this process's devices;
    # a mesh with the other process's devices is refused instead of failing to read back
    rng = np.random.default_rng(0)
    E, lab = rng.normal(size=(24, 3)).astype(np.float32), np.arange(24) % 3
    from metriclearn import evaluation
    want = evaluation.retrieval_metrics(E, lab, nmi=False)["map_at_r"]
    got = parallel.sharded_retrieval_metrics(E, lab, nmi=False)["map_at_r"]
    print("EVAL", got == want, flush=True)
    for name, call in (
        ("global-mesh", lambda: evaluation.retrieval_metrics(E, lab, nmi=False, mesh=mesh)),
        ("reinit", lambda: parallel.initialize_distributed(num_processes=5, process_id=3)),
        ("subset", lambda: parallel.host_local_to_global(local, parallel.make_mesh(2))),
    ):
        try:
            call()
            print("NOERROR", name, flush=True)
        except ValueError:
            print("VALUEERROR", name, flush=True)
    jax.distributed.shutdown()
    """
)


def test_two_process_loopback_parallel(tmp_path):
    """Two local processes (2 CPU devices each) on 127.0.0.1 assemble one global batch."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=90)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rc, out, err in outs:
        assert rc == 0, err[-2000:]
        # rows 0..3 of the global batch: [[0,1],[2,3]] from process 0, [[10,11],[12,13]] from process 1
        assert "SHAPE (4, 2) SUM [24.0, 28.0]" in out, out
        assert "EVAL True" in out, out
        for name in ("global-mesh", "reinit", "subset"):
            assert f"VALUEERROR {name}" in out, out


def test_mesh_batches_and_local_batch_checks_parallel(mesh8):
    """A non-mesh was an AttributeError, 1-D batches an IndexError, and host_local_to_global took
    leaves of different lengths (x and y misaligned)."""
    X = np.zeros((16, 3), np.float32)
    for bad in (4, None, "data"):
        with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
            parallel.shard_constraints(X, mesh=bad)
        with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
            parallel.sharded_projected_gradient(lambda M, a: a @ M @ a, np.eye(3), (X,), mesh=bad)
    with pytest.raises(ValueError, match="common leading"):
        parallel.host_local_to_global((np.zeros((8, 2)), np.zeros(16)), mesh8)
    model = models.build_model("mlp", hidden=(8,), embedding_dim=4)
    spec, opt = losses.build("contrastive"), optax.sgd(0.1)
    state = training.create_train_state(0, model, spec, opt, X[:1])
    epoch = parallel.make_sharded_train_epoch(model, spec, opt, mesh8)
    with pytest.raises(ValueError, match=r"batches must be \[n_batches, B\]"):
        epoch(state, X, np.repeat(np.arange(8), 2), np.arange(16))
    # as the single-device epoch: misaligned y and out-of-range indices (clamped in the program)
    y = np.repeat(np.arange(8), 2)
    with pytest.raises(ValueError, match="same number of rows"):
        epoch(state, X, y[:8], np.arange(16).reshape(2, 8))
    with pytest.raises(ValueError, match="got indices 8 to 23"):
        epoch(state, X, y, np.arange(8, 24).reshape(2, 8))


def test_mesh_from_config_refuses_non_mappings():
    # mesh_from_config(None) was "'NoneType' object has no attribute 'get'"
    for bad in (None, 2, [("devices", 2)]):
        with pytest.raises(
            ValueError, match="config must be a dict or an ml_collections.ConfigDict"
        ):
            parallel.mesh_from_config(bad)
    ml_collections = pytest.importorskip("ml_collections")
    assert parallel.mesh_from_config(ml_collections.ConfigDict({"devices": 2})).devices.size == 2
    assert parallel.mesh_from_config({}) is None


def test_parallel_train_and_evaluate_refuses_a_non_mapping_config(tmp_path):
    with pytest.raises(ValueError, match="config must be a dict or an ml_collections.ConfigDict"):
        parallel.train_and_evaluate(None, str(tmp_path))
