"""Training loop for deep metric learning: train state, jitted step and epoch, history, checkpoints.

The pieces, from small to large:

* :class:`TrainState` -- ``params`` (the model's variables), ``opt_state`` (optax state over
  ``(params, loss_params)``), ``loss_params`` (proxies / class weights of proxy losses; ``{}``
  otherwise), ``step`` and ``key`` (raw ``uint32[2]`` PRNG key data, so it checkpoints as an array).
* :func:`create_train_state` -- initialise a state from a model, a ``LossSpec`` and an optax optimizer.
* :func:`make_train_step` -- a jitted ``train_step(state, x, y) -> (state, metrics)``: one optax update
  of the model parameters *and* the loss parameters from ``grad`` of the loss on one batch
  (``donate=True`` updates the state in place; :func:`fit` does so).
* :func:`make_train_epoch` -- a jitted ``train_epoch(state, X, y, batches) -> (state, metrics)`` that
  ``lax.scan``\\ s the step over an epoch's ``[n_batches, batch_size]`` index array, gathering the rows
  from the on-device training set inside the compiled program (no host round trip per step).
* :func:`fit` -- the epoch loop: m-per-class batches, a tqdm progress bar, evaluation every
  ``eval_every`` epochs with :func:`metriclearn.evaluation.retrieval_metrics`, a per-epoch
  ``history``, a clear error on a non-finite loss, and orbax checkpoints every ``checkpoint_every``
  epochs from which an interrupted run resumes bit-for-bit.
* :func:`train_and_evaluate` -- ``(config, workdir)``: data, model, loss, optimizer from a config, then
  :func:`fit`, then ``config.json``, ``metrics.json``, ``history.csv`` and ``distance_curves.png``.

Distance curves. For every training batch the step also measures the Euclidean distances between the
batch's embeddings (the forward pass that produced the loss, i.e. before that step's update, in
training mode), over all same-class pairs ``i < j`` (``pos``) and all different-class pairs (``neg``).
The history reports, per epoch, the mean and the standard deviation over *all pairs of all training
batches seen in that epoch*. With ``normalize_curves=True`` (default) the embeddings are L2-normalized
first, so the distances lie in ``[0, 2]`` -- the geometry that the cosine/normalized losses see;
``False`` measures the raw embeddings.

Example::

    import jax, optax
    from metriclearn import losses, models, training
    model = models.build_model("mlp", hidden=(64,), embedding_dim=16)
    spec = losses.build("contrastive")
    result = training.fit(model, spec, optax.adam(1e-3), X_tr, y_tr, X_te, y_te,
                          key=jax.random.key(0), epochs=5, batch_size=32, m_per_class=4)
    result.history[-1]["map_at_r"], result.metrics["precision_at_1"]

Reference: Hadsell, Chopra & LeCun, CVPR 2006 (the distance curves of similar / dissimilar pairs);
Musgrave, Belongie & Lim, "A Metric Learning Reality Check", ECCV 2020 (protocol).
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn import sampling
from metriclearn._cache import CheckedProgram, reuse
from metriclearn._json import plain
from metriclearn._validation import (
    as_key,
    as_real,
    check_array,
    check_config,
    check_flags,
    check_int32_ids,
    check_labels,
    check_positive_int,
    check_same_dim,
    is_traced,
    label_array,
)
from metriclearn.miners import check_embeddings, distance_matrix

__all__ = [
    "TrainState",
    "FitResult",
    "OPTIMIZERS",
    "make_optimizer",
    "create_train_state",
    "make_train_step",
    "make_train_epoch",
    "make_embed_fn",
    "pair_distance_stats",
    "fit",
    "default_config",
    "load_split",
    "train_and_evaluate",
    "write_history_csv",
]

METRIC_KEYS = ("precision_at_1", "r_precision", "map_at_r", "nmi")
HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "loss_std",
    "pos_distance",
    "pos_distance_std",
    "neg_distance",
    "neg_distance_std",
    *METRIC_KEYS,
    "seconds",
)


class TrainState(NamedTuple):
    """Everything a run needs to continue: a pytree (jit- and checkpoint-friendly).

    Attributes:
      params: the model's variables (``{"params": ...}``).
      opt_state: optax state of the optimizer over ``(params, loss_params)``.
      loss_params: learnable parameters of the loss (proxies), ``{}`` for parameter-free losses.
      step: int32 scalar, number of updates done.
      key: uint32 ``[2]`` raw PRNG key data (split for sampling, dropout and stochastic miners).
    """

    params: Any
    opt_state: Any
    loss_params: Any
    step: jax.Array
    key: jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: final :class:`TrainState`.
      history: one dict per epoch with the keys of ``HISTORY_COLUMNS`` (metrics NaN when not evaluated).
      metrics: final retrieval metrics on the held-out split (``{}`` without one).
      steady_ms_per_step: mean wall time per training step over the epochs after the first.
      compile_seconds: trace + compile time of the epoch program (0 if nothing was trained).
    """

    state: TrainState
    history: list[dict[str, float]]
    metrics: dict[str, float]
    steady_ms_per_step: float
    compile_seconds: float


def _raw_key(key) -> jax.Array:
    return jax.random.key_data(as_key(key))


def _wrap(raw: jax.Array) -> jax.Array:
    return jax.random.wrap_key_data(raw)


@jax.jit
def _split_epoch_key(raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(epoch key, raw key data of the state's next key)`` from the state's raw key: one call."""
    k_epoch, k_next = jax.random.split(_wrap(raw))
    return k_epoch, jax.random.key_data(k_next)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "rmsprop": optax.rmsprop,
}


def make_optimizer(
    name: str = "adam",
    *,
    learning_rate: float | Callable[[jax.Array], jax.Array] = 1e-3,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """An optax optimizer by name (``adam, adamw, sgd, rmsprop``).

    Equal (hashable) arguments give the same object, so the training programs built for it are
    reused across fits (``train_and_evaluate`` builds its optimizer from the config on every call).

    Args:
      name: optimizer name.
      learning_rate: step size (a number > 0; ``inf`` is accepted so tests can provoke divergence),
        or an optax schedule (a callable ``step -> learning rate``, e.g.
        ``optax.cosine_decay_schedule(1e-3, 1000)``), which optax's optimizers take as is.
      weight_decay: decoupled weight decay (a number >= 0), ``adamw`` only (added as L2 to the
        gradient otherwise).

    Returns:
      ``optax.GradientTransformation``.

    Raises:
      ValueError: an unknown ``name``; a ``learning_rate`` that is neither a number > 0 nor a
        callable schedule, or a ``weight_decay`` that is not a number >= 0 (strings such as
        ``"1e-3"`` and bools are refused, not converted).
    """
    # checked before the cache: True == 1 and hash(True) == hash(1), so a cached learning_rate=1
    # would have returned its optimizer for learning_rate=True without a check
    if not callable(learning_rate):
        try:
            lr = _setting(learning_rate, "learning_rate")
        except ValueError:
            raise ValueError(
                "learning_rate must be a number > 0 or an optax schedule (a callable), got "
                f"{learning_rate!r}"
            ) from None
        if not lr > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    # a negative decay grows the weights; NaN fails this too
    if not _setting(weight_decay, "weight_decay") >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return _optimizer(name, learning_rate, weight_decay)


def _setting(value, name: str) -> float:
    """:func:`as_real` refusing NumPy / 0-d array bools too (``np.True_`` was a learning rate of 1)."""
    if isinstance(value, np.bool_) or getattr(value, "dtype", None) == np.bool_:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return as_real(value, name)


@reuse(32)  # unhashable settings (e.g. a JAX array learning rate) give a fresh optimizer
def _optimizer(name, learning_rate, weight_decay) -> optax.GradientTransformation:
    if name not in OPTIMIZERS:
        valid = ", ".join(sorted(OPTIMIZERS))
        raise ValueError(f"unknown optimizer {name!r}; valid: {valid}")
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    opt = OPTIMIZERS[name](learning_rate)
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


def create_train_state(
    key, model, loss_spec, optimizer: optax.GradientTransformation, sample_input
) -> TrainState:
    """Initialise model variables, loss parameters and optimizer state.

    Args:
      key: PRNG key (or int seed).
      model: a Flax module (``model.init`` / ``model.apply(params, x, train=...)``).
      loss_spec: object with ``init(key) -> loss_params`` and
        ``apply(loss_params, embeddings, labels, key) -> scalar`` (see ``losses.build``).
      optimizer: optax transformation, applied to the pair ``(params, loss_params)``.
      sample_input: an input batch ``[b, ...]`` (only its shape and dtype are used).

    Returns:
      :class:`TrainState` with ``step = 0``.
    """
    k_model, k_loss, k_state = jax.random.split(_wrap(_raw_key(key)), 3)
    sample = jnp.asarray(sample_input)
    params = _cached_model_init(model)(k_model, sample)
    loss_params = loss_spec.init(k_loss)
    opt_state = optimizer.init((params, loss_params))
    return TrainState(
        params=params,
        opt_state=opt_state,
        loss_params=loss_params,
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(k_state),
    )


def _model_init(model) -> Callable:
    """``model.init`` in inference mode as one jitted program. Flax's eager init compiles each
    initializer op on its own (1.5-2.5 s for the protocol MLP); jitted it is one program, with the
    same numbers."""
    return jax.jit(lambda k, x: model.init(k, x, train=False))


# Equal models (Flax modules compare by their fields) share one program, so the fits of a process, or
# train_and_evaluate's models rebuilt from configs, compile the init once.
# An unhashable model gets a fresh program.
_cached_model_init = reuse(16)(_model_init)


def pair_distance_stats(
    embeddings: jax.Array, labels: jax.Array, *, normalize: bool = True
) -> dict[str, jax.Array]:
    """Sums for the distance curves: distances of same-class and different-class pairs in a batch.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      normalize: L2-normalize the embeddings first (distances in ``[0, 2]``).

    Returns:
      dict of scalars ``pos_sum, pos_sqdev, pos_count, neg_sum, neg_sqdev, neg_count`` over the pairs
      ``i < j``: mean = sum / count and variance = sqdev / count, ``sqdev`` the sum of squared
      deviations from the batch's own mean (two passes: ``sqsum / count - mean**2`` cancelled in
      float32 and gave a standard deviation of 0 for distances of spread 1e-4). Batches combine by
      Chan et al.'s pairwise update (:func:`_epoch_summary`).

    Raises:
      ValueError: concrete ``embeddings`` not ``[B, d]`` (``B, d >= 1``) or not finite; concrete
        ``labels`` not 1-D, NaN / infinite, or of another length than ``embeddings``. Traced inputs
        (inside :func:`make_train_step`'s step) pass unchecked.
    """
    if not is_traced(embeddings):
        embeddings = check_embeddings(embeddings, "embeddings")
    if not is_traced(labels):
        lab = label_array(labels, "labels")  # 1-D, no NaN, no mixed kinds
        if lab.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"labels has {lab.shape[0]} entries but embeddings has {embeddings.shape[0]} rows "
                f"(shapes {tuple(lab.shape)} and {tuple(embeddings.shape)})"
            )
        # class codes 0..C-1 compare as the labels do (strings, ids beyond int32 included)
        labels = jnp.asarray(check_labels(lab, name="labels", min_classes=0))
    # The same kernel (miners.distance_matrix) as the distance-based losses: inside a train step XLA
    # merges this forward computation with the loss's, so the curves cost no second distance matrix.
    d = distance_matrix(jax.lax.stop_gradient(embeddings), normalize=normalize)
    n = labels.shape[0]
    upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    same = labels[:, None] == labels[None, :]
    pos = upper & same
    neg = upper & ~same
    zero = jnp.zeros((), d.dtype)
    out = {}
    for kind, mask in (("pos", pos), ("neg", neg)):
        total = jnp.sum(jnp.where(mask, d, zero))
        count = jnp.sum(mask, dtype=d.dtype)
        mean = total / jnp.maximum(count, 1.0)
        out[f"{kind}_sum"] = total
        out[f"{kind}_sqdev"] = jnp.sum(jnp.where(mask, jnp.square(d - mean), zero))
        out[f"{kind}_count"] = count
    return out


def _all_finite(tree) -> jax.Array:
    """Scalar bool: every entry of every leaf is finite.

    ``sum(leaf - leaf)`` is 0 when all entries are finite and NaN otherwise (``inf - inf`` is NaN; no
    overflow, so exact): one scalar reduction per leaf. (``sum(0 * leaf)`` is as exact, but XLA:CPU
    hands its zeros to YNNPACK's reduction as an array the size of the leaf: with the separate
    positive / negative sums of the losses, ``leaf - leaf`` makes the contrastive step ~1 % faster.
    ``max |leaf|`` would be wrong there: YNNPACK's max drops NaN; ``all(isfinite(leaf))`` is 4 %
    slower.)
    """
    return jnp.isfinite(
        sum(jnp.sum(leaf - leaf, dtype=jnp.float32) for leaf in jax.tree.leaves(tree))
    )


def _step_fn(model, loss_spec, optimizer, normalize_curves: bool):
    def step(state: TrainState, x: jax.Array, y: jax.Array):
        key, k_loss, k_drop = jax.random.split(_wrap(state.key), 3)

        def objective(trainable):
            params, loss_params = trainable
            emb = model.apply(params, x, train=True, rngs={"dropout": k_drop})
            return loss_spec.apply(loss_params, emb, y, k_loss), emb

        trainable = (state.params, state.loss_params)
        (loss, emb), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        params, loss_params = optax.apply_updates(trainable, updates)
        metrics = {
            "loss": loss,
            "embeddings_finite": jnp.all(jnp.isfinite(emb)),
            "grads_finite": _all_finite(grads),
            "params_finite": _all_finite((params, loss_params)),
            **pair_distance_stats(emb, y, normalize=normalize_curves),
        }
        new_state = TrainState(
            params, opt_state, loss_params, state.step + 1, jax.random.key_data(key)
        )
        return new_state, metrics

    return step


def make_train_step(
    model, loss_spec, optimizer, *, normalize_curves: bool = True, donate: bool = False
) -> Callable:
    """A jitted ``train_step(state, x, y) -> (state, metrics)``.

    Computes ``loss = loss_spec.apply(loss_params, model.apply(params, x), y, key)``, its gradient with
    respect to both ``params`` and ``loss_params``, and applies one optax update.

    Args:
      model, loss_spec, optimizer: as in :func:`create_train_state`.
      normalize_curves: see :func:`pair_distance_stats`.
      donate: donate the input state's buffers to the output state (``jax.jit(donate_argnums=0)``):
        the update is written in place instead of into fresh buffers, which saves a copy of the
        parameters and optimizer state per step. The state passed in must not be used afterwards
        (write ``state, metrics = step(state, x, y)``).

    Returns:
      jitted function (with ``.lower``); ``x`` ``[B, ...]``, ``y`` int ``[B]``; ``metrics`` holds
      ``loss`` and the sums of :func:`pair_distance_stats` (scalars). Each call refuses, with a
      ``ValueError`` naming ``y``, labels that are not integer class ids (strings, floats) or do
      not fit in int32 (the losses' rule: ``jit`` narrowed larger ids, merging classes), and a ``y``
      of another length than ``x``.
    """
    check_flags(normalize_curves=normalize_curves, donate=donate)
    step = _step_fn(model, loss_spec, optimizer, normalize_curves)
    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
    return CheckedProgram(jitted, _check_step_args, data_args=(1, 2))


def _check_batch_labels(y, name: str = "y") -> None:
    """The labels of a train step or epoch: integer (or bool) class ids within int32.

    The losses' rule (``miners.check_embeddings_labels``): they compare labels as int32, and
    ``jit`` narrows int64 host labels to int32 without x64 (with x64 the loss casts them), so ids
    beyond int32 wrapped and merged classes without an error; string labels gave a raw JAX
    ``TypeError``. Reading the dtype is free; values are read only for host (NumPy) arrays whose
    dtype can exceed int32 (int64 / uint32 / uint64). Device arrays are checked by dtype only (an
    int64 one exists only with x64: reading its range back would block every step's dispatch, 2.4x
    the step time of a small model; ``fit`` passes class codes). Traced labels (an outer ``jit``)
    pass: the loss checks their dtype when it traces.
    """
    if is_traced(y):
        return
    if not hasattr(y, "dtype"):
        try:
            y = np.asarray(y)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"{name} could not be converted to an array: {err}") from err
    dtype = np.dtype(y.dtype)
    if dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class ids, got dtype {dtype}")
    if not np.can_cast(dtype, np.int32) and not isinstance(y, jax.Array):
        check_int32_ids(np.asarray(y), name)


def _check_step_args(state, x, y) -> None:
    """The batch of a train step ``(state, x, y)``: ``y`` ``[B]`` class ids (see
    :func:`_check_batch_labels`) for the ``B`` rows of ``x``."""
    if np.ndim(x) < 1 or np.ndim(y) != 1 or np.shape(x)[0] != np.shape(y)[0]:
        raise ValueError(
            f"x [B, ...] and y [B] must have the same number of rows, got shapes {np.shape(x)} "
            f"and {np.shape(y)}"
        )
    _check_batch_labels(y)


def make_train_epoch(
    model, loss_spec, optimizer, *, normalize_curves: bool = True, donate: bool = False
) -> Callable:
    """A jitted ``train_epoch(state, X, y, batches) -> (state, metrics)`` scanning the step.

    Args:
      model, loss_spec, optimizer, normalize_curves, donate: as in :func:`make_train_step` (with
        ``donate`` only the state is donated, never the training set).

    Returns:
      jitted function; ``X`` ``[n, ...]`` and ``y`` ``[n]`` the training set (on device), ``batches``
      int32 ``[n_batches, B]``; ``metrics`` are the step metrics stacked ``[n_batches]``. ``y`` is
      checked as in :func:`make_train_step`.
    """
    check_flags(normalize_curves=normalize_curves, donate=donate)
    return _cached_epoch_program(model, loss_spec, optimizer, bool(normalize_curves), bool(donate))


def _epoch_program(model, loss_spec, optimizer, normalize_curves: bool, donate: bool) -> Callable:
    step = _step_fn(model, loss_spec, optimizer, normalize_curves)

    def epoch(state, X, y, batches):
        def body(s, idx):
            return step(s, X[idx], y[idx])

        return jax.lax.scan(body, state, batches)

    jitted = jax.jit(epoch, donate_argnums=(0,) if donate else ())
    return CheckedProgram(jitted, _check_epoch_args, data_args=(1, 2, 3))


def _check_epoch_args(state, X, y, batches) -> None:
    """The training set and batches of an epoch program ``(state, X, y, batches)``.

    Inside the jitted epoch ``X[idx]`` and ``y[idx]`` clamp out-of-range indices: a ``y`` shorter
    than ``X``, or indices past the end, trained on repeated rows without an error (a loss of 0).
    So the rows of ``X`` and ``y`` must agree and, when the batches are concrete, every index must
    lie in ``[-n, n)`` (negative ones count from the end, as in NumPy; one small reduction read back
    per call; ``fit`` checks once, when it compiles).
    """
    if np.ndim(X) < 1 or np.ndim(y) != 1 or np.shape(X)[0] != np.shape(y)[0]:
        raise ValueError(
            f"X [n, ...] and y [n] must have the same number of rows, got shapes {np.shape(X)} "
            f"and {np.shape(y)}"
        )
    _check_batch_labels(y)
    dtype = getattr(batches, "dtype", None) or np.asarray(batches).dtype
    if np.ndim(batches) != 2 or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"batches must be [n_batches, B] indices (integers), got shape {np.shape(batches)} "
            f"and dtype {dtype}"
        )
    if is_traced(batches) or np.size(batches) == 0:
        return
    lo, hi = (int(v) for v in jax.device_get((jnp.min(batches), jnp.max(batches))))
    n = int(np.shape(X)[0])
    if lo < -n or hi >= n:  # negative indices count from the end, as in NumPy and JAX
        raise ValueError(
            f"batches must index the {n} rows of X ({-n} to {n - 1}), got indices {lo} to {hi}"
        )


# The same (model, loss, optimizer) objects reuse one jitted program, so repeated or resumed fits in a
# process do not recompile; an unhashable model / loss / optimizer gets a fresh program.
_cached_epoch_program = reuse(16)(_epoch_program)


def make_embed_fn(model, *, chunk_size: int = 4096) -> Callable:
    """``embed(params, X) -> [n, embedding_dim]`` in inference mode, jitted, in row chunks of
    ``chunk_size`` (an integer >= 1); ``X`` needs at least one row."""
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    apply = jax.jit(lambda p, x: model.apply(p, x, train=False))

    def embed(params, X):
        X = jnp.asarray(X)
        if X.ndim == 0 or X.shape[0] == 0:
            raise ValueError(f"X must have at least one row to embed, got shape {tuple(X.shape)}")
        parts = [apply(params, X[i : i + chunk_size]) for i in range(0, X.shape[0], chunk_size)]
        return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

    return embed


def _epoch_summary(metrics: Mapping[str, np.ndarray]) -> dict[str, float]:
    loss = np.asarray(metrics["loss"], np.float64)
    out = {"loss": float(loss.mean()), "loss_std": float(loss.std())}
    for kind in ("pos", "neg"):
        sums = np.asarray(metrics[f"{kind}_sum"], np.float64).ravel()
        sqdev = np.asarray(metrics[f"{kind}_sqdev"], np.float64).ravel()
        counts = np.asarray(metrics[f"{kind}_count"], np.float64).ravel()
        c = float(counts.sum())
        if c == 0:
            out[f"{kind}_distance"] = out[f"{kind}_distance_std"] = math.nan
            continue
        mean = float(sums.sum()) / c
        # Chan et al.: the batches' own squared deviations plus those of their means from the mean
        means = sums / np.maximum(counts, 1.0)
        m2 = float(sqdev.sum() + np.sum(counts * (means - mean) ** 2))
        out[f"{kind}_distance"] = mean
        out[f"{kind}_distance_std"] = math.sqrt(max(m2, 0.0) / c)
    return out


def _raise_if_non_finite(step_metrics, step0: int, epoch: int, n_batches: int) -> None:
    """FloatingPointError naming the first step whose loss, embeddings, gradients or update blew up."""
    losses = np.asarray(step_metrics["loss"])
    checks = {
        "loss": np.isfinite(losses),
        "embeddings": np.asarray(step_metrics["embeddings_finite"], bool),
        "gradients": np.asarray(step_metrics["grads_finite"], bool),
        "parameters after the update": np.asarray(step_metrics["params_finite"], bool),
    }
    ok = np.logical_and.reduce(list(checks.values()))
    if ok.all():
        return
    b = int(np.flatnonzero(~ok)[0])
    what = [name for name, flags in checks.items() if not flags[b]]
    raise FloatingPointError(
        f"non-finite {' and '.join(what)} at step {step0 + b + 1} (epoch {epoch + 1}, batch "
        f"{b + 1} of {n_batches}; loss = {float(losses[b])!r}): lower the learning rate or check "
        "the inputs"
    )


def _evaluate(embed, params, X_val, y_val) -> dict[str, float]:
    from metriclearn import evaluation

    emb = np.asarray(embed(params, X_val))
    if not np.all(np.isfinite(emb)):
        raise FloatingPointError("the model produced non-finite embeddings on the evaluation split")
    # Recall@K for the K a held-out split this small can answer (self excluded: n - 1 references)
    k_values = tuple(k for k in evaluation.RECALL_K_VALUES if k < emb.shape[0])
    res = evaluation.retrieval_metrics(emb, y_val, k_values=k_values)
    out = {k: float(res[k]) for k in METRIC_KEYS if k in res}
    for k, v in (res.get("recall_at_k") or {}).items():
        out[f"recall_at_{k}"] = float(v)
    return out


def _checkpoint_manager(directory: str, max_to_keep: int | None):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    # the item handlers let ``item_metadata`` read the stored shapes before a restore
    handlers = {"state": ocp.StandardCheckpointHandler(), "history": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=handlers
    )


def _leaf_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...] | str]:
    """``{path: shape}`` of a state or of orbax's metadata of one (namedtuple fields, dict keys and
    sequence indices all as strings, so the two spell a path alike); an empty node (optax's
    ``EmptyState``, ``{}``, ``None`` in orbax's metadata) maps to ``"empty"``, so that states with the
    same arrays but another structure (``adam`` and ``adamw``) differ too."""

    def part(k) -> str:
        return str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))

    def is_leaf(x) -> bool:
        return hasattr(x, "shape") or not jax.tree.leaves(x)

    def shape(leaf) -> tuple[int, ...] | str:
        if hasattr(leaf, "shape"):
            return tuple(leaf.shape)
        return tuple(np.shape(leaf)) if jax.tree.leaves(leaf) else "empty"

    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {tuple(map(part, path)): shape(leaf) for path, leaf in flat}


def _check_checkpoint_entries(directory: str) -> None:
    """Refuse a ``checkpoint_dir`` holding, under an epoch-number name, anything :func:`fit` did not
    write: orbax takes every such entry for a checkpoint, so it would be restored as the latest one
    (and fail), or replaced by that epoch's save and then deleted by ``max_to_keep``."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if not (name.isascii() and name.isdigit()):
            continue
        path = os.path.join(directory, name)
        items = ("state", "history")
        if not all(os.path.isdir(os.path.join(path, item)) for item in items):
            raise ValueError(
                f"checkpoint_dir={directory!r} holds {path!r}, which is not a checkpoint written by "
                f"fit (orbax would take it for the checkpoint of epoch {int(name)}: restore, "
                "overwrite or delete it): move it away or use another checkpoint_dir"
            )


def _check_checkpoint_matches(manager, step: int, state, directory: str) -> None:
    """Refuse, before orbax reads any array, a checkpoint saved for another model / loss / optimizer
    (other array shapes or another tree structure), or one that is not a fit checkpoint."""
    metadata = manager.item_metadata(step)
    if metadata is None or metadata.get("state") is None:
        path = os.path.join(directory, str(step))
        raise ValueError(
            f"checkpoint_dir={directory!r} holds {path!r}, which is not a checkpoint written by fit "
            "(no train state on record): move it away or use another checkpoint_dir"
        )
    stored = _leaf_shapes(metadata["state"])
    wanted = _leaf_shapes(state)
    if stored != wanted:
        diff = sorted(set(stored.items()) ^ set(wanted.items()), key=lambda item: item[0])[:4]
        shown = "; ".join(
            f"{'/'.join(path)}: stored {stored.get(path, 'absent')}, needed {wanted.get(path, 'absent')}"
            for path in dict.fromkeys(path for path, _ in diff)
        )
        raise ValueError(
            f"the checkpoint in {directory} (epoch {step}) does not match this model, loss and "
            f"optimizer ({shown}): use another checkpoint_dir"
        )


def _check_loss_fits_labels(loss_params, n_classes: int, m_per_class: int) -> None:
    """Settings that would train without error but to nothing: refused before the first step.

    A proxy / class-weight loss needs a row per class (inside the jitted step an out-of-range label
    is not checked: its class would never get a positive proxy); a loss without parameters learns
    from same-class pairs in the batch, which ``m_per_class=1`` never draws.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(loss_params):
        if getattr(leaf, "ndim", 0) == 2 and leaf.shape[0] < n_classes:
            name = jax.tree_util.keystr(path)
            raise ValueError(
                f"the loss has {leaf.shape[0]} rows in {name} but y_train has {n_classes} classes: "
                f"build it with n_classes={n_classes}"
            )
    if not jax.tree.leaves(loss_params) and m_per_class < 2:
        raise ValueError(
            f"m_per_class={m_per_class} gives batches without same-class pairs, from which this "
            "loss learns nothing; use m_per_class >= 2 (m_per_class=1 suits the proxy losses)"
        )


def _from_json(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: (math.nan if v is None else v) for k, v in h.items()} for h in history]


def _check_optimizer(optimizer) -> None:
    """``ValueError`` unless ``optimizer`` is an optax transformation (``fit(..., "adam", ...)``
    failed with "'str' object has no attribute 'init'")."""
    if not (
        isinstance(optimizer, optax.GradientTransformation)
        or (
            callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))
        )
    ):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation such as optax.adam(1e-3), got "
            f"{type(optimizer).__name__} {optimizer!r}; to build one by name use "
            "training.make_optimizer(name, learning_rate=...) with a name of training.OPTIMIZERS "
            f"({', '.join(sorted(OPTIMIZERS))})"
        )


def fit(
    model,
    loss_spec,
    optimizer: optax.GradientTransformation,
    X_train,
    y_train,
    X_val=None,
    y_val=None,
    *,
    key=0,
    epochs: int = 30,
    batch_size: int = 128,
    m_per_class: int = 16,
    n_batches: int | None = None,
    eval_every: int = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    max_to_keep: int | None = 2,
    normalize_curves: bool = True,
    progress: bool = True,
    mesh=None,
) -> FitResult:
    """Train an embedding network with m-per-class batches; evaluate, record, checkpoint.

    Each epoch draws ``n_batches`` m-per-class batches (:func:`metriclearn.sampling.m_per_class_batches`,
    keyed by the state's PRNG key), runs them through the jitted scanned epoch, then appends to the
    history the epoch's loss (mean and std over its steps), the distance curves (see the module
    docstring) and -- every ``eval_every`` epochs and at the last one -- the retrieval metrics of the
    held-out split (embeddings in inference mode; queries = references, self excluded). Between two
    epochs that need no evaluation or checkpoint, the next epoch is queued on the device before the
    last one's metrics are read and recorded, so the host's per-epoch work overlaps the training.

    A non-finite loss raises ``FloatingPointError`` naming the first bad step (global step number,
    epoch and batch). With ``checkpoint_dir``, the state and history are saved with orbax every
    ``checkpoint_every`` epochs (and at the end); if the directory already holds a checkpoint, training
    resumes from the latest one, so an interrupted run ends with the same parameters as an
    uninterrupted one (the sampler's and the step's randomness both come from the checkpointed key).

    Args:
      model: Flax module.
      loss_spec: ``LossSpec`` (``init``, ``apply``) from ``metriclearn.losses.build``.
      optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-3)`` or
        :func:`make_optimizer`), not a name.
      X_train: ``[n, ...]`` training inputs.
      y_train: ``[n]`` labels.
      X_val: ``[m, ...]`` held-out inputs, or None (no metrics).
      y_val: ``[m]`` labels.
      key: PRNG key or int seed.
      epochs: total number of epochs (including those of a resumed checkpoint).
      batch_size: batch size (multiple of ``m_per_class``, at most ``m_per_class * n_classes``).
      m_per_class: samples per class in a batch.
      n_batches: steps per epoch (default ``n // batch_size``).
      eval_every: evaluate every this many epochs (and at the end).
      checkpoint_dir: directory for orbax checkpoints (None: no checkpoints). Its entries named
        like an epoch number must be checkpoints written by ``fit``.
      checkpoint_every: save every this many epochs (0: only at the end); needs ``checkpoint_dir``.
      max_to_keep: checkpoints kept (None: all); a value other than 2 needs ``checkpoint_dir``.
      normalize_curves: distance curves on L2-normalized embeddings.
      progress: show a tqdm progress bar over epochs.

    Returns:
      :class:`FitResult`.

    Raises:
      ValueError: ``optimizer`` not an optax transformation; bad shapes, labels, NaN inputs or batch
        settings; ``checkpoint_every`` or
        ``max_to_keep`` without ``checkpoint_dir``; a ``checkpoint_dir`` holding something else
        under an epoch-number name, or a checkpoint of another model, loss or optimizer.
      FloatingPointError: the loss became NaN or infinite.
    """
    _check_optimizer(optimizer)
    check_flags(normalize_curves=normalize_curves, progress=progress)
    X_train = check_array(X_train, "X_train", min_rows=2)
    if X_train.ndim < 2:
        raise ValueError(
            f"X_train must be [n, features, ...] (one row per example), got shape "
            f"{tuple(X_train.shape)}; a single feature is X_train[:, None]"
        )
    y_codes = check_labels(y_train, X_train.shape[0], name="y_train")
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    if X_val is not None:
        X_val = check_array(X_val, "X_val", min_rows=2)
        if X_val.shape[1:] != X_train.shape[1:]:
            check_same_dim(X_train, X_val, "X_train", "X_val")
            raise ValueError(
                f"X_train and X_val must have the same example shape, got {tuple(X_train.shape)} "
                f"and {tuple(X_val.shape)}"
            )
        y_val = check_labels(y_val, X_val.shape[0], name="y_val")
        if np.bincount(y_val).max() < 2:
            # retrieval metrics need a query with a same-class reference: fail now, not after training
            raise ValueError(
                "y_val needs at least one class with 2 or more samples for the retrieval metrics"
            )
    epochs = check_positive_int(epochs, "epochs")
    eval_every = check_positive_int(eval_every, "eval_every")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every", minimum=0)
    m_per_class, batch_size = sampling._check_batch_layout(
        m_per_class, batch_size, int(y_codes.max()) + 1, m_name="m_per_class"
    )
    if n_batches is None:
        n_batches = max(X_train.shape[0] // batch_size, 1)
    n_batches = check_positive_int(n_batches, "n_batches")
    if mesh is not None:  # before any state or checkpoint directory is made
        from metriclearn import parallel

        parallel._check_divisible(batch_size, mesh, "batch_size")
    if max_to_keep is not None:
        max_to_keep = check_positive_int(max_to_keep, "max_to_keep")  # 0 kept none: no resume
    if checkpoint_dir is None and (checkpoint_every != 0 or max_to_keep != 2):
        # silently ignored before: a run meant to checkpoint saved nothing
        given = "checkpoint_every" if checkpoint_every != 0 else "max_to_keep"
        value = checkpoint_every if checkpoint_every != 0 else max_to_keep
        raise ValueError(
            f"{given}={value!r} needs a checkpoint_dir (checkpoint_dir=None saves nothing)"
        )
    if checkpoint_dir is not None:
        ckpt_path = os.fspath(checkpoint_dir)
        if os.path.exists(ckpt_path) and not os.path.isdir(ckpt_path):
            # found at the first save, after the training it was to keep
            raise ValueError(f"checkpoint_dir={ckpt_path!r} exists and is not a directory")
        _check_checkpoint_entries(ckpt_path)
    # the class table stays on device: each epoch's batches are then one jitted call
    sample = sampling.m_per_class_sampler(
        y_codes, m=m_per_class, batch_size=batch_size, n_batches=n_batches
    )

    X_dev = jax.device_put(X_train)
    y_dev = jax.device_put(jnp.asarray(y_codes))
    state = create_train_state(key, model, loss_spec, optimizer, X_train[:1])
    _check_loss_fits_labels(state.loss_params, int(y_codes.max()) + 1, m_per_class)
    if mesh is None:
        # fit owns its state: donating it lets each epoch update the parameters in place
        train_epoch = make_train_epoch(
            model, loss_spec, optimizer, normalize_curves=normalize_curves, donate=True
        )
    else:  # data parallel: batch sharded over the mesh, state replicated (metriclearn.parallel)
        train_epoch = parallel.make_sharded_train_epoch(
            model, loss_spec, optimizer, mesh, normalize_curves=normalize_curves
        )
    embed = make_embed_fn(model)

    history: list[dict[str, float]] = []
    start_epoch = 0
    manager = None
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        manager = _checkpoint_manager(os.fspath(checkpoint_dir), max_to_keep)
        try:
            latest = manager.latest_step()
            if latest is not None and int(latest) > epochs:
                raise ValueError(
                    f"{os.fspath(checkpoint_dir)} holds a checkpoint at epoch {latest}, beyond "
                    f"epochs={epochs}: ask for at least {latest} epochs or use another directory"
                )
            if latest is not None:
                _check_checkpoint_matches(manager, latest, state, os.fspath(checkpoint_dir))
                abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
                try:
                    restored = manager.restore(
                        latest,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract),
                            history=ocp.args.JsonRestore(),
                        ),
                    )
                    history = _from_json(restored["history"])
                except (ValueError, TypeError, AttributeError) as err:
                    # a corrupt history file gave a bare JSONDecodeError naming no file
                    raise ValueError(
                        f"{os.fspath(checkpoint_dir)}: the checkpoint of epoch {latest} could not "
                        f"be restored ({type(err).__name__}: {err}); remove that epoch's directory "
                        "to resume from an earlier checkpoint, or use another checkpoint_dir"
                    ) from err
                state = jax.tree.map(jnp.asarray, restored["state"])
                state = TrainState(*state) if not isinstance(state, TrainState) else state
                start_epoch = int(latest)
        except BaseException:
            manager.close()
            raise

    def save(epoch: int) -> None:
        import orbax.checkpoint as ocp

        manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(plain(history))
            ),
            force=True,
        )
        manager.wait_until_finished()

    compile_seconds = 0.0
    epoch_times: list[float] = []
    compiled = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="train", unit="epoch", leave=False)

    def dispatch(state):
        """Queue one epoch (key split, batches, scanned steps) without waiting for it: returns the
        new state, the step metrics (device arrays) and when the epoch was called."""
        nonlocal compiled, compile_seconds
        k_epoch, k_next = _split_epoch_key(state.key)
        state = state._replace(key=k_next)
        batches = sample(k_epoch)
        if compiled is None:
            t0 = time.perf_counter()
            compiled = train_epoch.lower(state, X_dev, y_dev, batches).compile()
            compile_seconds = time.perf_counter() - t0
        called = time.perf_counter()
        return (*compiled(state, X_dev, y_dev, batches), called)

    metrics: dict[str, float] = {}
    step0 = int(state.step)  # counted on the host from here: no device sync per epoch
    try:
        if start_epoch < epochs:
            state, pending, started = dispatch(state)
        for epoch in range(start_epoch, epochs):
            last = epoch + 1 == epochs
            evaluated = X_val is not None and ((epoch + 1) % eval_every == 0 or last)
            saving = manager is not None and (
                last or bool(checkpoint_every and (epoch + 1) % checkpoint_every == 0)
            )
            # When the host needs nothing of this epoch's final state (no evaluation, checkpoint or
            # end), the next epoch is queued before this one's metrics are read: the device keeps
            # working while the host checks and records. This epoch's state is donated to the next
            # one then, and a non-finite step below still raises before the next epoch is read.
            ahead = not (evaluated or saving or last)
            if ahead:
                next_state, next_pending, next_called = dispatch(state)
            step_metrics = jax.device_get(pending)
            done = time.perf_counter()
            epoch_times.append(done - started)
            _raise_if_non_finite(step_metrics, step0, epoch, n_batches)
            step0 += n_batches
            row = {"epoch": epoch + 1, **_epoch_summary(step_metrics)}
            if evaluated:
                metrics = _evaluate(embed, state.params, X_val, y_val)
            row.update(
                {k: metrics.get(k, math.nan) if evaluated else math.nan for k in METRIC_KEYS}
            )
            row["seconds"] = epoch_times[-1]
            history.append(row)
            if saving:
                save(epoch + 1)
            if bar is not None:
                bar.update(1)
                post = {"loss": f"{row['loss']:.4f}"}
                if not math.isnan(row["map_at_r"]):
                    post["map@r"] = f"{row['map_at_r']:.3f}"
                bar.set_postfix(post)
            if ahead:  # the queued epoch started computing when this one finished
                state, pending, started = next_state, next_pending, max(next_called, done)
            elif not last:
                state, pending, started = dispatch(state)
    finally:
        if bar is not None:
            bar.close()
        if manager is not None:
            manager.close()

    if X_val is not None and not metrics:
        metrics = _evaluate(embed, state.params, X_val, y_val)
    steady = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
    # nan when nothing was trained (a checkpoint already at ``epochs``); metrics.json writes null
    ms_per_step = 1e3 * float(np.mean(steady)) / n_batches if steady else math.nan
    return FitResult(state, history, metrics, ms_per_step, compile_seconds)


def default_config() -> dict[str, Any]:
    """Defaults of :func:`train_and_evaluate` (the ANCHORS.md protocol on digits).

    Keys: ``dataset`` (a name of ``datasets.DATASETS``), ``dataset_kwargs``, ``test_size`` and
    ``split_seed`` (used for data sets without an official test split), ``standardize``; ``model``
    (a name of ``models.MODELS``), ``hidden`` (MLP widths; the dense width of the conv nets; the
    residual width and block count of ``resmlp``), ``embedding_dim``, ``normalize_embeddings``,
    ``dropout``, ``initializer`` (``torch``: PyTorch's ``nn.Linear`` init, as in the anchors, or
    ``lecun``: Flax's; MLP and ResMLP), ``model_kwargs``; ``loss``, ``loss_kwargs``, ``miner``, ``miner_kwargs``;
    ``optimizer``, ``learning_rate``, ``weight_decay``; ``batch_size``, ``m_per_class``, ``n_batches``,
    ``epochs``, ``seed``, ``eval_every``, ``checkpoint_every`` (0: no checkpoints), ``normalize_curves``,
    ``progress``.
    """
    return {
        "dataset": "digits",
        "dataset_kwargs": {},
        "test_size": 0.3,
        "split_seed": 0,
        "standardize": True,
        "model": "mlp",
        "hidden": [256, 256],
        "embedding_dim": 64,
        "normalize_embeddings": False,
        "dropout": 0.0,
        "initializer": "torch",
        "model_kwargs": {},
        "loss": "contrastive",
        "loss_kwargs": {},
        "miner": None,
        "miner_kwargs": {},
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 128,
        "m_per_class": 16,
        "n_batches": None,
        "epochs": 30,
        "seed": 0,
        "eval_every": 5,
        "checkpoint_every": 0,
        "normalize_curves": True,
        "progress": True,
        "devices": 1,
    }


#: how each config key must be given (``_check_config``): casting would hide mistakes ("256" as
#: ``hidden`` iterated to widths 2, 5, 6; ``epochs`` 1.7 trained one epoch; "false" was true)
_CONFIG_INTS = ("embedding_dim", "batch_size", "m_per_class", "epochs", "seed", "split_seed",
                "eval_every", "checkpoint_every")  # fmt: skip
_CONFIG_OPTIONAL_INTS = ("n_batches", "devices")  # None: the default (all rows / one device)
_CONFIG_FLOATS = ("test_size", "dropout", "learning_rate", "weight_decay")
_CONFIG_BOOLS = ("standardize", "normalize_embeddings", "normalize_curves", "progress")
_CONFIG_STRS = ("dataset", "model", "initializer", "loss", "optimizer")
_CONFIG_DICTS = ("dataset_kwargs", "model_kwargs", "loss_kwargs", "miner_kwargs")


def _check_config(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the key when a config value has the wrong type."""

    def refuse(key: str, what: str) -> None:
        raise ValueError(f"config {key!r} must be {what}, got {cfg[key]!r}")

    def is_int(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)

    for key in _CONFIG_INTS:
        if not is_int(cfg[key]):
            refuse(key, "an integer")
    for key in _CONFIG_OPTIONAL_INTS:
        if cfg[key] is not None and not is_int(cfg[key]):
            refuse(key, "an integer or None")
    for key in _CONFIG_FLOATS:
        if isinstance(cfg[key], bool | np.bool_) or not isinstance(cfg[key], numbers.Real):
            refuse(key, "a number")
        if not math.isfinite(float(cfg[key])):  # learning_rate=inf diverged at step 1
            refuse(key, "a finite number")
    for key in _CONFIG_BOOLS:
        if not isinstance(cfg[key], bool | np.bool_):
            refuse(key, "true or false")
    for key in _CONFIG_STRS:
        if not isinstance(cfg[key], str):
            refuse(key, "a name (string)")
    if cfg["miner"] is not None and not isinstance(cfg["miner"], str):
        refuse("miner", "a name (string) or None")
    for key in _CONFIG_DICTS:
        if cfg[key] is not None and not isinstance(cfg[key], Mapping):
            refuse(key, "a dict of keyword arguments or None")
    hidden = cfg["hidden"]
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence | np.ndarray):
        refuse("hidden", "a list of integer widths")
    if not all(is_int(h) for h in hidden):
        refuse("hidden", "a list of integer widths")


def load_split(
    name: str,
    *,
    test_size: float = 0.3,
    split_seed: int = 0,
    standardize: bool = True,
    **dataset_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Train / held-out split of a named data set, as in ANCHORS.md.

    Data sets with an official test split (``mnist1d``: 4,000 / 1,000) use it; the others are split
    with scikit-learn's ``train_test_split(test_size, stratify=y, random_state=split_seed)`` (digits:
    the 70/30, ``random_state=0`` split of the pytorch-metric-learning anchors). Features are
    standardized with training-set statistics.

    Args:
      name: a name of ``metriclearn.datasets.DATASETS``.
      test_size: held-out fraction for data sets without an official split.
      split_seed: ``random_state`` of the split.
      standardize: standardize features.
      **dataset_kwargs: forwarded to ``datasets.load``.

    Returns:
      ``(X_train, y_train, X_test, y_test, feature_shape)``.
    """
    from sklearn.model_selection import train_test_split

    from metriclearn import datasets

    check_flags(standardize=standardize)  # "False" standardized
    if isinstance(split_seed, int | np.integer) and not isinstance(split_seed, bool):
        datasets._seed_from(split_seed, "split_seed")  # an int in [0, 2**32), named as here
    ds = datasets.load(name, **dataset_kwargs)
    if ds.X_test is not None:
        X_tr, y_tr, X_te, y_te = ds.X, ds.y, ds.X_test, ds.y_test
    else:
        X_tr, X_te, y_tr, y_te = train_test_split(
            ds.X, ds.y, test_size=test_size, stratify=ds.y, random_state=split_seed
        )
    X_tr = np.asarray(X_tr, np.float32)
    X_te = np.asarray(X_te, np.float32)
    if standardize:
        X_tr, X_te = datasets.standardize(X_tr, X_te)
    return X_tr, np.asarray(y_tr), X_te, np.asarray(y_te), tuple(ds.feature_shape)


def _model_from_config(cfg: Mapping[str, Any], feature_shape: tuple[int, ...]):
    from metriclearn import models

    name = cfg["model"]
    hidden = tuple(int(h) for h in cfg["hidden"])
    kw: dict[str, Any] = {
        "embedding_dim": int(cfg["embedding_dim"]),
        "normalize": bool(cfg["normalize_embeddings"]),
        "dropout": float(cfg["dropout"]),
    }
    if name in ("mlp", "resmlp"):
        kw["initializer"] = cfg["initializer"]
    if name == "mlp":
        kw["hidden"] = hidden
    elif name == "resmlp":
        # residual blocks share one width: [64, 128] built [64, 64], and [] the default 2 x 256
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(
                f"model 'resmlp' needs hidden as one width per residual block, all equal (e.g. "
                f"256,256), got {list(hidden)}"
            )
        kw["width"] = hidden[0]
        kw["n_blocks"] = len(hidden)
    elif name in ("conv1d", "conv2d"):
        kw["hidden"] = hidden[-1] if hidden else 0
        if name == "conv2d" and "image_shape" not in (cfg.get("model_kwargs") or {}):
            # flat features are not taken for an image (iris's 4 features trained as a 2 x 2 one)
            shape = tuple(feature_shape)
            if len(shape) not in (2, 3):
                raise ValueError(
                    f"model 'conv2d' needs image data; {cfg['dataset']!r} has feature shape "
                    f"{shape} (for flattened images give model_kwargs={{'image_shape': (H, W, C)}})"
                )
            kw["image_shape"] = shape if len(shape) == 3 else (*shape, 1)
    kw.update(dict(cfg.get("model_kwargs") or {}))
    return models.build_model(name, **kw)


def _miner_name(cfg: Mapping[str, Any]) -> str | None:
    return cfg["miner"] if cfg["miner"] not in (None, "", "none") else None


def _loss_from_config(cfg: Mapping[str, Any], n_classes: int):
    """``losses.build`` from a config's ``loss``, ``loss_kwargs``, ``miner``, ``miner_kwargs`` and
    ``embedding_dim`` (the proxy / class-weight losses size their parameters from the last two)."""
    from metriclearn import losses

    return losses.build(
        cfg["loss"],
        miner=_miner_name(cfg),
        miner_kwargs=dict(cfg["miner_kwargs"] or {}) or None,
        n_classes=n_classes,
        embedding_dim=int(cfg["embedding_dim"]),
        **dict(cfg["loss_kwargs"] or {}),
    )


def write_history_csv(history: Sequence[Mapping[str, float]], path: str | os.PathLike) -> None:
    """Write a history (list of per-epoch dicts) as CSV; NaN (not evaluated) cells are left empty."""
    columns = list(HISTORY_COLUMNS)
    for row in history:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in history:
            cells = []
            for c in columns:
                v = row.get(c, math.nan)
                cells.append("" if isinstance(v, float) and math.isnan(v) else v)
            writer.writerow(cells)


#: the settings of the run whose checkpoints ``workdir/checkpoints`` holds (see _check_resumable)
CHECKPOINT_CONFIG = "checkpoint_config.json"

#: config keys a resumed run may change: how long, how often, how shown, on how many devices
_RESUME_FREE = frozenset({"epochs", "eval_every", "checkpoint_every", "progress", "devices"})


def _check_resumable(workdir: str, cfg: Mapping[str, Any], checkpoint_every: int) -> None:
    """Refuse to resume ``workdir``'s checkpoints under other settings than they were made with.

    ``fit`` checks that the stored arrays fit the model; a different seed, loss or learning rate
    fits as well, and the run would silently return the old run's results.
    """
    ckpt = os.path.join(workdir, "checkpoints")
    if checkpoint_every <= 0 or not os.path.isdir(ckpt) or not os.listdir(ckpt):
        return
    # the record written by the runs that write checkpoints (config.json is rewritten by any run:
    # a run without checkpoints in between made another seed's checkpoints look like its own)
    old_path = os.path.join(workdir, CHECKPOINT_CONFIG)
    if not os.path.isfile(old_path):
        old_path = os.path.join(workdir, "config.json")  # workdirs from before the record
    if not os.path.isfile(old_path):
        raise ValueError(
            f"{workdir!r} holds checkpoints but no record of the settings they were made with "
            f"({CHECKPOINT_CONFIG} or config.json), so resuming them cannot be checked; use a new "
            "workdir"
        )
    with open(old_path) as fh:
        old = json.load(fh)
    new = json.loads(json.dumps(plain(cfg)))
    changed = sorted(
        k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k)
    )
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(
            f"{workdir!r} holds checkpoints of a run with other settings ({diff}); resuming would "
            "continue that run. Use a new workdir, or the same settings (only "
            f"{', '.join(sorted(_RESUME_FREE))} may change on resume)"
        )


def _listing(directory: str) -> list[str]:
    """Sorted entries of ``directory`` ([] if it does not exist)."""
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def train_and_evaluate(config: Mapping[str, Any], workdir: str | os.PathLike) -> dict[str, Any]:
    """Run one experiment from a config and write its results into ``workdir``.

    Loads and splits the data (:func:`load_split`), builds the model (``models.build_model``), the loss
    (``losses.build`` with the miner) and the optimizer (:func:`make_optimizer`), trains with
    :func:`fit` (checkpoints in ``workdir/checkpoints`` when ``checkpoint_every > 0``; an existing
    checkpoint is resumed) and writes

    * ``config.json`` -- the resolved config;
    * ``metrics.json`` -- final ``precision_at_1, r_precision, map_at_r, nmi`` on the held-out split,
      ``steady_ms_per_step`` (mean step time after the first epoch), ``compile_seconds``, sizes;
    * ``history.csv`` -- per epoch ``epoch, loss, loss_std, pos_distance, pos_distance_std,
      neg_distance, neg_distance_std`` and the metrics (empty when not evaluated), ``seconds``;
    * ``distance_curves.png`` -- :func:`metriclearn.plotting.plot_distance_curves`.

    Args:
      config: mapping (dict or ``ml_collections.ConfigDict``) overriding :func:`default_config`.
      workdir: output directory (created).

    Returns:
      The metrics dict written to ``metrics.json``.

    Raises:
      ValueError: ``config`` not a dict or ``ConfigDict``; unknown config keys or names (dataset,
        model, loss, miner, optimizer), or settings
        that :func:`fit` refuses; a refused run leaves ``workdir``'s ``config.json`` as it was (and no
        new, empty ``workdir``).

    Example::

        train_and_evaluate({"dataset": "digits", "loss": "triplet_margin", "miner": "semihard",
                            "loss_kwargs": {"margin": 0.2}, "epochs": 30}, "/tmp/run")
    """
    from metriclearn import datasets, parallel, plotting

    config = check_config(config)
    cfg = default_config()
    unknown = sorted(set(config) - set(cfg))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid: {', '.join(sorted(cfg))}")
    cfg.update(dict(config))
    _check_config(cfg)
    if cfg["dataset"] not in datasets.DATASETS:
        raise ValueError(
            f"unknown dataset {cfg['dataset']!r}; valid: {', '.join(sorted(datasets.DATASETS))}"
        )
    as_key(cfg["seed"], "seed")  # before the data are loaded, named as in the config
    workdir = os.fspath(workdir)
    created = not os.path.isdir(workdir)

    X_tr, y_tr, X_te, y_te, feature_shape = load_split(
        cfg["dataset"],
        test_size=cfg["test_size"],
        split_seed=cfg["split_seed"],
        standardize=cfg["standardize"],
        **dict(cfg["dataset_kwargs"] or {}),
    )
    n_classes = int(len(np.unique(y_tr)))
    model = _model_from_config(cfg, feature_shape)
    loss_spec = _loss_from_config(cfg, n_classes)
    miner = _miner_name(cfg)
    optimizer = make_optimizer(
        cfg["optimizer"],
        learning_rate=float(cfg["learning_rate"]),
        weight_decay=cfg["weight_decay"],
    )
    checkpoint_every = cfg["checkpoint_every"]
    _check_resumable(workdir, cfg, checkpoint_every)
    # the workdir is made only now, so that settings refused above leave no empty one behind
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    record_path = os.path.join(workdir, CHECKPOINT_CONFIG)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    previous = {}
    for path in (config_path, record_path):
        if os.path.isfile(path):
            with open(path) as fh:
                previous[path] = fh.read()
    checkpoints_before = _listing(ckpt_dir)
    # written before training, so that an interrupted run's checkpoints can be checked on resume;
    # the settings of the run that writes the checkpoints also go to their own record, which runs
    # without checkpoints (that rewrite config.json) leave alone
    written = [config_path, record_path] if checkpoint_every > 0 else [config_path]
    for path in written:
        with open(path, "w") as fh:
            json.dump(plain(cfg), fh, indent=2, sort_keys=True)

    t0 = time.perf_counter()
    try:
        result = fit(
            model,
            loss_spec,
            optimizer,
            X_tr,
            y_tr,
            X_te,
            y_te,
            key=cfg["seed"],
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            m_per_class=cfg["m_per_class"],
            n_batches=cfg["n_batches"],
            eval_every=cfg["eval_every"],
            checkpoint_dir=ckpt_dir if checkpoint_every > 0 else None,
            checkpoint_every=checkpoint_every,
            normalize_curves=cfg["normalize_curves"],
            progress=cfg["progress"],
            mesh=parallel.mesh_from_config(cfg),
        )
    except ValueError:
        # fit refused the settings (a diverging run raises FloatingPointError instead). Unless it
        # wrote checkpoints, which the new config describes, the workdir keeps the config it had:
        # not one of a run that never ran
        if _listing(ckpt_dir) == checkpoints_before:
            for path in written:
                if path in previous:
                    with open(path, "w") as fh:
                        fh.write(previous[path])
                else:
                    os.remove(path)
            if created and not os.listdir(workdir):
                os.rmdir(workdir)
        raise
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {k: result.metrics.get(k, math.nan) for k in METRIC_KEYS}
    out.update(
        {
            "steady_ms_per_step": result.steady_ms_per_step,
            "compile_seconds": result.compile_seconds,
            "wall_seconds": wall,
            "steps": int(result.state.step),
            "epochs": int(cfg["epochs"]),
            "n_train": int(X_tr.shape[0]),
            "n_test": int(X_te.shape[0]),
        }
    )
    with open(os.path.join(workdir, "metrics.json"), "w") as fh:
        json.dump(plain(out), fh, indent=2)
    write_history_csv(result.history, os.path.join(workdir, "history.csv"))
    plotting.plot_distance_curves(
        result.history,
        os.path.join(workdir, "distance_curves.png"),
        title=f"{cfg['dataset']} / {cfg['loss']}" + (f" + {miner}" if miner else ""),
    )
    return out
