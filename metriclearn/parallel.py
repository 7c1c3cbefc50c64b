r"""Multi-device and multi-host data parallelism with JAX's own machinery (``jax.sharding``).

Nothing here is a home-made distributed runtime: a 1-D :class:`jax.sharding.Mesh` names the devices
(``"data"`` axis), :class:`jax.sharding.NamedSharding` says how each array is laid out, ``jax.jit``
compiles the *global* program once and XLA's SPMD partitioner inserts the collectives, and
``jax.distributed.initialize()`` joins several hosts into one device list. The same code runs on one
device, on 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on
several GPUs/TPUs and on several hosts.

* Deep training (:func:`make_sharded_train_step`, :func:`make_sharded_train_epoch`): the batch is
  sharded over the ``data`` axis (device ``i`` holds rows ``i*B/n : (i+1)*B/n``), the parameters,
  optimizer state and PRNG key are replicated. The step is :mod:`metriclearn.training`'s own step,
  jitted with these shardings: the loss is the loss of the *global* batch, so in-batch mining sees
  every pair and triplet of the concatenated batch (negatives come from all devices, as large-batch
  contrastive training requires); XLA all-gathers the embeddings and labels for the ``[B, B]``
  distance matrix and all-reduces the gradients. Loss and gradients equal the single-device step on the concatenated
  batch up to float summation order. :func:`all_gather_batch` is the explicit form for
  ``jax.shard_map`` code.
* Convex fitting (:func:`shard_constraints`, :func:`sharded_objective`,
  :func:`sharded_projected_gradient`): the pairs / triplets are sharded, ``M`` is replicated; the
  per-tuple terms of :func:`metriclearn.solver.projected_gradient` run vmapped on each device's
  tuples and the mean is one all-reduce.
* Evaluation (:func:`sharded_knn_predict`, :func:`sharded_knn_accuracy`,
  :func:`sharded_retrieval_metrics`): :mod:`metriclearn.evaluation`'s own exact chunked k-NN called
  with a mesh: each query block is sharded across devices, the references are replicated.
* Multi-host (:func:`initialize_distributed`, :func:`host_local_to_global`): each process feeds its
  own rows; the global batch is their concatenation in process order.

Example::

    import jax, optax
    from metriclearn import losses, models, parallel, training
    mesh = parallel.make_mesh()                        # all devices on a "data" axis
    model = models.build_model("mlp", hidden=(64,), embedding_dim=16)
    spec = losses.build("triplet_margin", miner="semihard")
    opt = optax.adam(1e-3)
    state = parallel.replicate(training.create_train_state(0, model, spec, opt, X[:1]), mesh)
    step = parallel.make_sharded_train_step(model, spec, opt, mesh)
    state, metrics = step(state, X[:128], y[:128])     # batch 128 split over the devices

Reference: Xu et al., "GSPMD: General and Scalable Parallelization for ML Computation Graphs", 2021;
Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR), ICML
2020 (negatives gathered across devices for large-batch contrastive training).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from metriclearn._cache import CheckedProgram, reuse
from metriclearn._validation import check_array, check_config, check_flags, check_positive_int
from metriclearn.evaluation import RECALL_K_VALUES

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "data_sharding",
    "replicated_sharding",
    "shard_batch",
    "replicate",
    "all_gather_batch",
    "make_sharded_train_step",
    "make_sharded_train_epoch",
    "mesh_from_config",
    "train_and_evaluate",
    "shard_constraints",
    "sharded_objective",
    "sharded_projected_gradient",
    "sharded_knn_predict",
    "sharded_knn_accuracy",
    "sharded_retrieval_metrics",
    "initialize_distributed",
    "host_local_to_global",
]

DATA_AXIS = "data"


# --------------------------------------------------------------------------------------------------
# Mesh and shardings
# --------------------------------------------------------------------------------------------------


def make_mesh(n_devices: int | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D device mesh for data parallelism.

    Args:
      n_devices: number of devices (default: all of ``jax.devices()``, i.e. every device of every
        process after :func:`initialize_distributed`); the first ``n_devices`` are used.
      axis_name: name of the mesh axis.

    Returns:
      ``jax.sharding.Mesh`` of shape ``(n_devices,)``.

    Raises:
      ValueError: ``n_devices`` not a positive int or more than the devices available.

    Example::

        mesh = make_mesh(4)        # Mesh('data': 4)
    """
    devices = jax.devices()
    if n_devices is None:
        n_devices = len(devices)
    n_devices = check_positive_int(n_devices, "n_devices")
    if n_devices > len(devices):
        raise ValueError(
            f"n_devices={n_devices} but only {len(devices)} device(s) are available "
            f"({jax.default_backend()}); on CPU set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{n_devices} before importing jax"
        )
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty string, got {axis_name!r}")
    return Mesh(np.asarray(devices[:n_devices]), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh must be a jax.sharding.Mesh (see make_mesh), got {type(mesh).__name__}"
        )
    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D data mesh, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's data axis, other axes whole."""
    return NamedSharding(mesh, P(_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The whole array on every device of the mesh."""
    _axis(mesh)
    return NamedSharding(mesh, P())


def _check_divisible(n_rows: int, mesh: Mesh, name: str) -> None:
    _axis(mesh)  # a mesh, 1-D (an int or None failed with an AttributeError)
    n_dev = mesh.devices.size
    if n_rows % n_dev:
        raise ValueError(
            f"{name} has {n_rows} rows, not divisible by the {n_dev} devices of the mesh; use a batch "
            f"size that is a multiple of {n_dev}"
        )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a batch (array or pytree of arrays with the same leading size) sharded over the mesh.

    Args:
      batch: array ``[B, ...]`` or pytree of such arrays (host NumPy or JAX arrays).
      mesh: a 1-D mesh (:func:`make_mesh`).

    Returns:
      the same pytree of ``jax.Array`` with :func:`data_sharding`: device ``i`` holds rows
      ``i * B / n`` to ``(i + 1) * B / n``.

    Raises:
      ValueError: ``B`` not divisible by the number of devices (both numbers named), or leaves with
        different leading sizes.
    """
    sharding = data_sharding(mesh)
    _check_divisible(_common_leading_size(batch, "batch"), mesh, "batch")
    return jax.device_put(batch, sharding)


def _common_leading_size(tree: Any, name: str) -> int:
    """The one leading (batch) size of every leaf of ``tree``; ``ValueError`` otherwise."""
    leaves = jax.tree.leaves(tree)
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
    if not leaves or len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"{name} must be arrays with one common leading (batch) size, got leading sizes "
            f"{sorted(sizes)}"
        )
    return sizes.pop()


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (parameters, train state, ``M``) whole on every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))


def all_gather_batch(tree: Any, axis_name: str = DATA_AXIS) -> Any:
    """Inside ``jax.shard_map``: concatenate every device's rows into the global batch.

    ``[B/n, ...]`` per device -> ``[B, ...]`` on every device, ordered by device index (tiled
    ``jax.lax.all_gather``). Use it before in-batch mining so that positives and negatives come from
    the whole global batch, as large-batch contrastive training requires. (The jit-based steps of this
    module need no explicit call: XLA inserts the same all-gather.)

    Args:
      tree: array or pytree of per-device arrays ``[B/n, ...]``.
      axis_name: the mesh axis the batch is split over.

    Returns:
      the pytree with global ``[B, ...]`` arrays.
    """
    return jax.tree.map(lambda x: jax.lax.all_gather(x, axis_name, tiled=True), tree)


# --------------------------------------------------------------------------------------------------
# Deep metric learning: data-parallel train step / epoch
# --------------------------------------------------------------------------------------------------


def make_sharded_train_step(
    model, loss_spec, optimizer, mesh: Mesh, *, normalize_curves: bool = True
) -> Callable:
    """Data-parallel ``train_step(state, x, y) -> (state, metrics)`` over ``mesh``.

    The step is :func:`metriclearn.training.make_train_step`'s step (same loss, miner, optax update,
    metrics), jitted with ``x``, ``y`` sharded over the data axis and the state replicated. The
    program is the global one: the loss is computed on the concatenated global batch
    ``x = [x_dev0; x_dev1; ...]``, so in-batch mining draws positives and negatives from all devices
    (XLA all-gathers the embeddings and labels for the ``[B, B]`` distance matrix and all-reduces the
    gradients).
    Loss, gradients and the updated state equal the single-device step on the same ``[B, ...]`` batch
    up to float summation order.

    Args:
      model, loss_spec, optimizer: as in :func:`metriclearn.training.create_train_state`.
      mesh: 1-D mesh (:func:`make_mesh`).
      normalize_curves: see :func:`metriclearn.training.pair_distance_stats`.

    Returns:
      ``train_step(state, x [B, ...], y [B])``; ``B`` must be a multiple of the device count
      (``ValueError`` naming both otherwise). Host arrays are sharded on the way in; the returned
      state is replicated.
    """
    from metriclearn import training

    check_flags(normalize_curves=normalize_curves)  # "false" was True
    data, rep = data_sharding(mesh), replicated_sharding(mesh)
    step = training._step_fn(model, loss_spec, optimizer, bool(normalize_curves))
    jitted = jax.jit(step, in_shardings=(rep, data, data), out_shardings=(rep, rep))

    def put(state, x, y):
        return jax.device_put(state, rep), jax.device_put(x, data), jax.device_put(y, data)

    def check(state, x, y) -> None:
        # x and y one common batch size: a y of another length reached device_put, whose
        # IndivisibleError named neither
        _check_divisible(_common_leading_size((x, y), "x, y"), mesh, "batch")
        training._check_batch_labels(y)  # ids beyond int32 merged classes under jit

    return CheckedProgram(jitted, check, put, data_args=(1, 2))


def make_sharded_train_epoch(
    model, loss_spec, optimizer, mesh: Mesh, *, normalize_curves: bool = True
) -> Callable:
    """Data-parallel ``train_epoch(state, X, y, batches) -> (state, metrics)`` (drop-in for
    :func:`metriclearn.training.make_train_epoch`).

    The training set ``X``, ``y`` and the index array ``batches [n_batches, B]`` are replicated; each
    scanned step gathers its batch ``X[batches[t]]`` and constrains it to the data sharding, so device
    ``i`` works on rows ``i*B/n : (i+1)*B/n`` of every batch, then runs the global step of
    :func:`make_sharded_train_step` (mining over the whole batch). Same results as the single-device
    epoch up to float summation order.

    Args:
      model, loss_spec, optimizer, mesh, normalize_curves: as :func:`make_sharded_train_step`.

    Returns:
      jitted-like callable (with ``.lower``); ``B`` must be a multiple of the device count. Equal
      (hashable) arguments return the same program, so a second ``fit`` compiles nothing.
    """
    check_flags(normalize_curves=normalize_curves)  # "false" was True
    return _cached_sharded_epoch(model, loss_spec, optimizer, mesh, bool(normalize_curves))


def _sharded_epoch_program(model, loss_spec, optimizer, mesh: Mesh, normalize_curves: bool):
    from metriclearn import training

    data, rep = data_sharding(mesh), replicated_sharding(mesh)
    step = training._step_fn(model, loss_spec, optimizer, normalize_curves)

    def epoch(state, X, y, batches):
        def body(s, idx):
            xb = jax.lax.with_sharding_constraint(X[idx], data)
            yb = jax.lax.with_sharding_constraint(y[idx], data)
            return step(s, xb, yb)

        return jax.lax.scan(body, state, batches)

    jitted = jax.jit(epoch, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep))

    def put(*args):
        return jax.device_put(args, rep)

    def check(state, X, y, batches) -> None:
        training._check_epoch_args(state, X, y, batches)
        _check_divisible(int(np.shape(batches)[1]), mesh, "batch")

    return CheckedProgram(jitted, check, put, data_args=(1, 2, 3))


# as training's epoch program: one compiled program per (model, loss, optimizer, mesh) in a process
_cached_sharded_epoch = reuse(16)(_sharded_epoch_program)


def mesh_from_config(config: Mapping[str, Any]) -> Mesh | None:
    """The mesh of ``config["devices"]`` (``None`` for 1 device or no key: plain single-device run).

    Args:
      config: a dict or an ``ml_collections.ConfigDict``.

    Returns:
      A 1-D data mesh of ``devices`` devices, or ``None``.

    Raises:
      ValueError: ``config`` not a dict or ``ConfigDict``; ``devices`` not a positive integer or more
        than the available devices.
    """
    n = check_config(config).get("devices", 1)
    n = check_positive_int(1 if n is None else n, "devices")
    return make_mesh(n) if n > 1 else None


def train_and_evaluate(config: Mapping[str, Any], workdir) -> dict[str, Any]:
    """:func:`metriclearn.training.train_and_evaluate` with ``config["devices"]`` data parallelism.

    ``devices`` (default 1) is the number of devices of the data mesh; the batch size must be a
    multiple of it. With ``devices > 1`` training uses :func:`make_sharded_train_epoch` (needs
    ``training.fit(..., mesh=...)``); the results equal the single-device run up to float summation
    order.

    Raises:
      ValueError: ``devices`` larger than the available devices, or ``batch_size`` not a multiple of it.
    """
    from metriclearn import training

    config = check_config(config)
    mesh = mesh_from_config(config)
    if mesh is not None:
        batch = int(config.get("batch_size", training.default_config()["batch_size"]))
        _check_divisible(batch, mesh, "batch_size")
    if "devices" in training.default_config():
        return training.train_and_evaluate(config, workdir)
    config.pop("devices", None)
    if mesh is None:
        return training.train_and_evaluate(config, workdir)
    raise ValueError(
        "devices > 1 needs metriclearn.training to accept the 'devices' config key "
        "(training.fit(..., mesh=parallel.mesh_from_config(cfg)))"
    )


# --------------------------------------------------------------------------------------------------
# Convex metric learning: constraint-parallel objectives
# --------------------------------------------------------------------------------------------------


def _constraint_array(a, name: str) -> np.ndarray | jax.Array:
    """A per-tuple array: integer / bool arrays (tuple indices, signs) keep their dtype (cast to
    float32 they could not index, and lost integers past 2**24); others go through ``check_array``."""
    if not isinstance(a, jax.Array):
        a = np.asarray(a)
    if a.dtype == bool or jnp.issubdtype(a.dtype, jnp.integer):
        if a.ndim < 1 or a.shape[0] < 1:
            raise ValueError(f"{name} must have at least one row, got shape {tuple(a.shape)}")
        return a
    return check_array(a, name, min_rows=1)


def shard_constraints(*arrays, mesh: Mesh) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Shard per-tuple arrays (pair / triplet differences, signs, ...) over the mesh, padding if needed.

    The ``n`` tuples are padded to a multiple of the device count by repeating the last one, and a
    weight vector marks the real ones, so a weighted mean over the padded set equals the mean over the
    ``n`` tuples. (Zero rows would do for the value, but a loss not differentiable at a zero
    difference, e.g. a hinge on ``sqrt(a M a)``, gives them a NaN gradient, and 0 * NaN is NaN.)

    Args:
      *arrays: arrays ``[n, ...]`` with a common leading size ``n >= 1``; integer and bool arrays
        (tuple indices, signs) keep their dtype, the others become the float dtype.
      mesh: 1-D mesh.

    Returns:
      ``(weights [n_pad], (array_1 [n_pad, ...], ...))`` sharded over the data axis; ``weights`` is 1
      for real tuples, 0 for padding.

    Raises:
      ValueError: no arrays, an empty constraint set, different leading sizes, or NaN/inf.
    """
    if not arrays:
        raise ValueError("shard_constraints needs at least one array of tuples")
    checked = [_constraint_array(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    sizes = [int(a.shape[0]) for a in checked]
    if len(set(sizes)) != 1:
        raise ValueError(f"constraint arrays must have the same number of rows, got {sizes}")
    n = sizes[0]
    _axis(mesh)
    n_dev = mesh.devices.size
    n_pad = -(-n // n_dev) * n_dev
    padded = tuple(
        np.pad(np.asarray(a), [(0, n_pad - n)] + [(0, 0)] * (a.ndim - 1), mode="edge")
        for a in checked
    )
    floats = [a.dtype for a in padded if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = np.result_type(*floats, np.float32)
    weights = (np.arange(n_pad) < n).astype(dtype)
    sharding = data_sharding(mesh)
    return jax.device_put(weights, sharding), tuple(jax.device_put(padded, sharding))


def sharded_objective(
    per_tuple: Callable[..., jax.Array], *, reduction: str = "mean"
) -> Callable[..., jax.Array]:
    """Build ``objective(M, weights, *arrays)`` from the loss of one tuple, vmapped over the tuples.

    ``objective = sum_i w_i f(M, a_i, b_i, ...) / sum_i w_i`` (``reduction="mean"``) or
    ``sum_i w_i f(...)`` (``"sum"``). With the outputs of :func:`shard_constraints` the vmapped terms
    run on the device holding their tuples and the sum is an all-reduce; ``M`` is replicated.

    Args:
      per_tuple: ``f(M [d, d], *rows) -> scalar`` for one pair / triplet (e.g. a hinge of
        :func:`metriclearn.solver.squared_mahalanobis`).
      reduction: ``"mean"`` or ``"sum"``.

    Returns:
      ``objective(M, weights [n], *arrays [n, ...]) -> scalar`` for
      :func:`metriclearn.solver.projected_gradient` (``args=(weights, *arrays)``).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; valid: mean, sum")
    if not callable(per_tuple):
        raise ValueError(f"per_tuple must be callable f(M, *rows) -> scalar, got {per_tuple!r}")
    return functools.partial(_weighted_objective, per_tuple, reduction == "mean")


def _weighted_objective(per_tuple, mean: bool, M, weights, *arrays):
    in_axes = (None,) + (0,) * len(arrays)
    per = jax.vmap(per_tuple, in_axes=in_axes)(M, *arrays)
    if per.shape != weights.shape:  # a [1, 1] "scalar" broadcast to [n, 1, n]: n times the loss
        raise ValueError(
            f"per_tuple must return a scalar per tuple, got shape {per.shape[1:]} for one tuple"
        )
    total = jnp.sum(weights * per)
    return total / jnp.sum(weights) if mean else total


def sharded_projected_gradient(
    per_tuple: Callable[..., jax.Array],
    M0,
    tuples: Sequence[Any],
    *,
    mesh: Mesh,
    reduction: str = "mean",
    **solver_kwargs: Any,
):
    """:func:`metriclearn.solver.projected_gradient` with the tuples sharded and ``M`` replicated.

    Minimises ``mean_i f(M, tuples[0][i], tuples[1][i], ...) + lam R(M)`` over the PSD cone; the result
    equals the single-device fit of the same objective within float tolerance.

    Args:
      per_tuple: loss of one tuple ``f(M, *rows) -> scalar``.
      M0: ``[d, d]`` start.
      tuples: sequence of arrays ``[n, ...]`` (e.g. ``(d_ab, d_ac)`` differences of triplets).
      mesh: 1-D mesh.
      reduction: ``"mean"`` or ``"sum"`` over the tuples.
      **solver_kwargs: forwarded to ``projected_gradient`` (``regularizer``, ``lam``, ``max_iter``, ...).

    Returns:
      ``SolverResult`` (``M`` replicated over the mesh).

    Example::

        hinge = lambda M, ab, ac: jnp.maximum(1 + ab @ M @ ab - ac @ M @ ac, 0)
        res = sharded_projected_gradient(hinge, jnp.eye(d), (d_ab, d_ac), mesh=make_mesh())
    """
    from metriclearn import solver

    if "args" in solver_kwargs:
        raise ValueError("pass the per-tuple arrays as tuples=..., not args=...")
    if isinstance(tuples, np.ndarray | jax.Array) or not isinstance(tuples, Sequence):
        raise ValueError("tuples must be a sequence of arrays [n, ...], e.g. (d_ab, d_ac)")
    weights, arrays = shard_constraints(*tuples, mesh=mesh)
    objective = sharded_objective(per_tuple, reduction=reduction)
    M0 = replicate(jnp.asarray(check_array(M0, "M0", ndim=2)), mesh)
    return solver.projected_gradient(objective, M0, args=(weights, *arrays), **solver_kwargs)


# --------------------------------------------------------------------------------------------------
# Evaluation at scale: query blocks sharded over devices, references replicated
# --------------------------------------------------------------------------------------------------


def _eval_mesh(mesh: Mesh | None) -> Mesh:
    """The given mesh, or one over this process's own devices: evaluation runs on the arrays each
    process holds, so a default mesh spanning other hosts' devices could not be read back."""
    if mesh is None:
        mesh = Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
    _axis(mesh)
    return mesh


def _per_device_chunk(chunk_size: int | None, mesh: Mesh) -> int | None:
    """Query rows per block over the mesh from rows per device (``None``: evaluation's default)."""
    if chunk_size is None:
        return None
    return check_positive_int(chunk_size, "chunk_size") * mesh.devices.size


def sharded_knn_predict(
    train_X,
    train_y,
    test_X,
    *,
    k: int = 3,
    metric: Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """:func:`metriclearn.evaluation.knn_predict` with the test rows sharded over ``mesh`` devices.

    Same neighbours, tie rules and result as the unsharded function; the training set is replicated on
    every device and each device ranks its share of every block of test rows.

    Args:
      train_X: ``[n, d]``; train_y: ``[n]``; test_X: ``[m, d]``.
      k, metric, metric_kwargs: as :func:`metriclearn.evaluation.knn_predict`.
      chunk_size: test rows per device per block (default: evaluation's, split over the devices).
      mesh: 1-D mesh (default: this process's devices).

    Returns:
      ``np.ndarray [m]`` predicted labels.
    """
    from metriclearn import evaluation

    mesh = _eval_mesh(mesh)
    return evaluation.knn_predict(
        train_X,
        train_y,
        test_X,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        chunk_size=_per_device_chunk(chunk_size, mesh),
        mesh=mesh,
    )


def sharded_knn_accuracy(
    train_X,
    train_y,
    test_X,
    test_y,
    *,
    k: int = 3,
    metric: Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> float:
    """:func:`metriclearn.evaluation.knn_accuracy` with test rows sharded (see :func:`sharded_knn_predict`).

    Returns:
      Python float in ``[0, 1]``, equal to the unsharded accuracy.
    """
    from metriclearn import evaluation

    mesh = _eval_mesh(mesh)
    return evaluation.knn_accuracy(
        train_X,
        train_y,
        test_X,
        test_y,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        chunk_size=_per_device_chunk(chunk_size, mesh),
        mesh=mesh,
    )


def sharded_retrieval_metrics(
    embeddings,
    labels,
    ref_embeddings=None,
    ref_labels=None,
    *,
    k_values: Sequence[int] = RECALL_K_VALUES,
    metric: Any = "euclidean",
    metric_kwargs: dict | None = None,
    nmi: bool = True,
    seed=0,
    kmeans_n_init: int = 3,
    chunk_size: int | None = None,
    ref_chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """:func:`metriclearn.evaluation.retrieval_metrics` with query blocks sharded over ``mesh``.

    A thin wrapper of :func:`metriclearn.evaluation.retrieval_metrics` with ``mesh``: each query block
    is sharded over the devices (its distance matmul partitioned by rows), the references are
    replicated; same definitions and results (P@1, R-precision, MAP@R, Recall@K, NMI,
    ``n_queries``), memory bounded by the block size (never ``n x n``).

    Args:
      embeddings, labels, ref_embeddings, ref_labels, k_values, metric, metric_kwargs, nmi, seed,
        kmeans_n_init, ref_chunk_size: as :func:`metriclearn.evaluation.retrieval_metrics`.
      chunk_size: query rows per device per block (default: evaluation's, split over the devices).
      mesh: 1-D mesh (default: this process's devices).

    Returns:
      dict as :func:`metriclearn.evaluation.retrieval_metrics`.
    """
    from metriclearn import evaluation

    mesh = _eval_mesh(mesh)
    return evaluation.retrieval_metrics(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        k_values=k_values,
        metric=metric,
        metric_kwargs=metric_kwargs,
        nmi=nmi,
        seed=seed,
        kmeans_n_init=kmeans_n_init,
        chunk_size=_per_device_chunk(chunk_size, mesh),
        ref_chunk_size=ref_chunk_size,
        mesh=mesh,
    )


# --------------------------------------------------------------------------------------------------
# Multi-host
# --------------------------------------------------------------------------------------------------


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> None:
    """Join this process to a multi-host run: a thin wrapper over ``jax.distributed.initialize``.

    Call it once per process, before any other JAX call. Afterwards ``jax.devices()`` lists the
    devices of every process and :func:`make_mesh` spans them all; each process feeds its own rows
    with :func:`host_local_to_global`. On managed clusters (SLURM, Cloud TPU, Open MPI) all three
    arguments may be omitted: JAX detects them. Calling it again in an initialised process is a
    no-op.

    Args:
      coordinator_address: ``"host:port"`` of process 0 (e.g. ``"127.0.0.1:12355"``).
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      **kwargs: forwarded (``local_device_ids``, ``initialization_timeout``, ...).

    Raises:
      ValueError: ``process_id`` outside ``[0, num_processes)``; a ``coordinator_address`` not of the
        form ``host:port``; a repeated call whose ``num_processes`` / ``process_id`` contradict the
        run this process already belongs to.
    """
    if process_id is not None:  # True was process 1, 0.5 and "1" passed the range check
        process_id = check_positive_int(process_id, "process_id", minimum=0)
    if num_processes is not None:
        num_processes = check_positive_int(num_processes, "num_processes")
        if process_id is not None and not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id={process_id} must be in [0, num_processes={num_processes})"
            )
    if coordinator_address is not None:
        host, _, port = str(coordinator_address).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"coordinator_address must be 'host:port' (e.g. '127.0.0.1:12355'), got "
                f"{coordinator_address!r}"
            )
    if jax.distributed.is_initialized():
        if (num_processes is not None and num_processes != jax.process_count()) or (
            process_id is not None and process_id != jax.process_index()
        ):
            raise ValueError(
                f"this process already runs as process {jax.process_index()} of "
                f"{jax.process_count()}; got num_processes={num_processes}, process_id={process_id}"
            )
        return
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )


def host_local_to_global(local_batch: Any, mesh: Mesh) -> Any:
    """Assemble the global batch from every process's local rows (``jax.make_array_from_process_local_data``).

    Each process passes its own ``[B_local, ...]`` rows (all processes the same ``B_local``); the
    result is a global ``[B_local * num_processes, ...]`` array sharded over the mesh's data axis, whose
    rows are the processes' local batches concatenated in process-index order (for a mesh over
    ``jax.devices()``, which lists devices by process). In a single process it equals
    :func:`shard_batch`.

    Args:
      local_batch: array or pytree of host arrays ``[B_local, ...]``.
      mesh: 1-D mesh spanning the devices of all processes.

    Returns:
      pytree of global ``jax.Array`` with :func:`data_sharding`.

    Raises:
      ValueError: ``B_local`` not divisible by this process's devices in the mesh.
    """
    sharding = data_sharding(mesh)
    _common_leading_size(local_batch, "local_batch")  # x and y of different lengths: misaligned
    n_local = sum(1 for dv in mesh.devices.flat if dv.process_index == jax.process_index())
    per_process = {
        p: sum(1 for dv in mesh.devices.flat if dv.process_index == p)
        for p in {dv.process_index for dv in mesh.devices.flat}
    }
    if len(set(per_process.values())) > 1:  # JAX's own error did not say why
        raise ValueError(
            f"mesh holds different numbers of devices per process ({per_process}): every process "
            "contributes the same rows per device, so give each process the same number of devices"
        )
    covered = {dv.process_index for dv in mesh.devices.flat}
    if covered != set(range(jax.process_count())):
        missing = sorted(set(range(jax.process_count())) - covered)
        raise ValueError(
            f"mesh has no device of process(es) {missing}: every process contributes rows, so the "
            "mesh must span the devices of all processes (parallel.make_mesh() after "
            "initialize_distributed)"
        )

    def one(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % max(n_local, 1):
            raise ValueError(
                f"local batch has {x.shape[0] if x.ndim else 0} rows, not divisible by the {n_local} "
                "local devices of the mesh"
            )
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(one, local_batch)
