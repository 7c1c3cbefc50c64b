"""Batch samplers for deep metric learning: m-per-class batches, pair and triplet batches.

* :func:`m_per_class_batches` -- one epoch of batches, each made of ``batch_size // m`` distinct
  classes with ``m`` samples each (the sampler of pytorch-metric-learning's ``MPerClassSampler``):
  with ``m >= 2`` every batch contains positives and negatives for the batch-wise losses and miners
  (``m = 1``, one sample per class, suits only the proxy losses; a class with fewer than ``m``
  samples is drawn with replacement, so its "positives" can be a sample paired with itself).
* :func:`pair_batches` / :func:`triplet_batches` -- fixed-shape index batches for Siamese / triplet
  networks, drawn with :func:`metriclearn.constraints.pairs` and :func:`metriclearn.constraints.triplets`
  (distinct tuples, sampled without replacement).

All samplers take a PRNG ``key`` first and return ``int32`` index arrays into the training set, so the
data can stay on device and be gathered inside a jitted step.

Example::

    import jax, numpy as np
    from metriclearn import sampling
    y = np.repeat(np.arange(10), 30)
    idx = sampling.m_per_class_batches(jax.random.key(0), y, m=4, batch_size=32)  # [9, 32]
"""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn import constraints
from metriclearn._validation import (
    as_single_key,
    check_labels,
    check_positive_int,
    require_concrete,
)

__all__ = [
    "m_per_class_batches",
    "m_per_class_sampler",
    "class_table",
    "pair_batches",
    "triplet_batches",
]


def _class_runs(labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, starts, counts)``: the sample indices sorted by class (stable), where each class's
    run starts in ``order``, and its size (all int32). Memory ~ ``n``, whatever the class sizes."""
    codes = check_labels(labels, min_classes=2, name="labels")
    counts = np.bincount(codes).astype(np.int32)
    order = np.argsort(codes, kind="stable").astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    return order, starts, counts


def class_table(labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-class member table: each class's sample indices as one padded row.

    The samplers do not use it: they index the flat per-class runs, so one large class among many
    small ones costs memory ~ ``n``, where this table takes ``n_classes * max_count``.

    Args:
      labels: ``[n]`` class labels (any hashable dtype).

    Returns:
      ``(members, counts)``: ``members`` int32 ``[n_classes, max_count]`` holding each class's sample
      indices (padded with 0 beyond ``counts[c]``), ``counts`` int32 ``[n_classes]``.
    """
    require_concrete("class_table", labels)
    order, starts, counts = _class_runs(labels)
    members = np.zeros((len(counts), int(counts.max())), np.int32)
    for c, (s, k) in enumerate(zip(starts, counts)):
        members[c, :k] = order[s : s + k]
    return members, counts


def _flat_draw(draw, key, shape, *args, **kwargs):
    """``draw(key, shape, *args, **kwargs)`` made as a flat draw and reshaped: the same numbers
    (threefry's bits depend only on an element's flat index), but XLA:CPU compiles a
    multi-dimensional threefry about ten times slower than a flat one (1 s against 0.1 s for
    ``[9, 8, 16]``). ``args`` are broadcast to ``shape`` (per-element bounds, as ``randint``'s
    ``maxval`` here); ``kwargs`` pass unchanged. Also used by the initializers in ``models`` and
    ``losses.init_proxies``."""
    n = int(np.prod(shape))
    flat_args = [jnp.broadcast_to(a, shape).reshape(n) for a in args]
    return draw(key, (n,), *flat_args, **kwargs).reshape(shape)


#: Above this many uniforms (``n_batches * classes_per_batch * largest class``) the members of a
#: class are drawn by a partial Fisher-Yates shuffle (memory ~ the output) instead of ``top_k`` over
#: one uniform per member: with one large class the latter grows as ``n**2 / batch_size`` (2.5 GB
#: for a class of 50,000 among 51,000 rows). Both draw a uniform ordered ``m``-subset; they give
#: different (equally distributed) batches for the same key.
_DENSE_DRAW_LIMIT = 1 << 22

#: Above this many class uniforms (``n_batches * n_classes``, 4 MB of float32) each batch's classes
#: are drawn by a partial Fisher-Yates shuffle of the class ids (memory ~ the output) instead of
#: ``top_k`` over one uniform per class and batch: with many small classes the latter grows as
#: ``n * n_classes / batch_size`` (800 MB for 20,000 classes of 4). Both draw a uniform ordered
#: ``batch_size // m``-subset of the classes; they give different (equally distributed) batches for
#: the same key, so below the limit the batches stay those of the ``top_k`` draw.
_DENSE_CLASS_DRAW_LIMIT = 1 << 20


def _fisher_yates_positions(key, cnt, m: int):
    """``m`` distinct positions in ``[0, cnt)`` per entry of ``cnt [...]``, uniform and in random
    order: the first ``m`` steps of a Fisher-Yates shuffle of ``arange(cnt)``, with the swapped
    entries kept in a map of ``m`` slots (entries with ``cnt < m`` give unspecified positions)."""
    shape = (*cnt.shape, m)
    steps = jnp.arange(m, dtype=cnt.dtype)
    # step j swaps position j with a uniform t_j in [j, cnt)
    t = steps + _flat_draw(
        jax.random.randint, key, shape, 0, jnp.maximum(cnt[..., None] - steps, 1)
    )
    slots = jnp.arange(m)

    def value_at(pos, keys, vals):  # the current entry at ``pos``: its latest swap, else pos itself
        hit = keys == pos[..., None]
        last = jnp.argmax(jnp.where(hit, slots, -1), axis=-1)
        return jnp.where(hit.any(-1), jnp.take_along_axis(vals, last[..., None], -1)[..., 0], pos)

    def step(j, carry):
        keys, vals, out = carry
        tj = t[..., j]
        out = out.at[..., j].set(value_at(tj, keys, vals))
        # position t_j now holds what position j held (position j is never read again)
        vals = vals.at[..., j].set(value_at(jnp.full_like(tj, j), keys, vals))
        keys = keys.at[..., j].set(tj)
        return keys, vals, out

    init = (
        jnp.full(shape, -1, cnt.dtype),
        jnp.zeros(shape, cnt.dtype),
        jnp.zeros(shape, cnt.dtype),
    )
    return jax.lax.fori_loop(0, m, step, init)[2]


_CORE_STATIC = ("m", "classes_per_batch", "n_batches", "max_count", "sparse", "sparse_classes")


@partial(jax.jit, static_argnames=_CORE_STATIC)
def _m_per_class_core(
    key,
    order,
    starts,
    counts,
    *,
    m,
    classes_per_batch,
    n_batches,
    max_count,
    sparse=False,
    sparse_classes=False,
):
    n_classes = counts.shape[0]
    k_cls, k_perm, k_repl = jax.random.split(key, 3)
    # Classes: a uniform ordered draw of classes_per_batch of them without replacement per batch.
    if sparse_classes:  # partial Fisher-Yates: memory ~ n_batches * classes_per_batch
        n_cls = jnp.full((n_batches,), n_classes, jnp.int32)
        classes = _fisher_yates_positions(k_cls, n_cls, classes_per_batch)
    else:  # the classes_per_batch largest of n_classes uniforms
        u_cls = _flat_draw(jax.random.uniform, k_cls, (n_batches, n_classes))
        _, classes = jax.lax.top_k(u_cls, classes_per_batch)
    cnt = counts[classes][..., None]  # [nb, cpb, 1]
    if max_count < m:
        without = None
    elif sparse:
        without = _fisher_yates_positions(k_perm, cnt[..., 0], m)
    else:
        # Members without replacement: the m largest uniforms among the class's members (padding -1).
        u = _flat_draw(jax.random.uniform, k_perm, (n_batches, classes_per_batch, max_count))
        u = jnp.where(jnp.arange(max_count) < cnt, u, -1.0)
        _, without = jax.lax.top_k(u, m)
    # With replacement (classes with fewer than m members): uniform over the class's members.
    with_repl = _flat_draw(
        jax.random.randint, k_repl, (n_batches, classes_per_batch, m), 0, jnp.maximum(cnt, 1)
    )
    pos = with_repl if without is None else jnp.where(cnt >= m, without, with_repl)
    idx = order[starts[classes][..., None] + pos]  # [nb, cpb, m]
    return idx.reshape(n_batches, classes_per_batch * m).astype(jnp.int32)


def _check_batch_layout(m, batch_size, n_classes: int, m_name: str = "m") -> tuple[int, int]:
    """Check ``m`` (samples per class) and ``batch_size`` for ``n_classes`` classes.

    Raises ``ValueError`` (naming ``m`` as ``m_name``) unless both are positive integers and
    ``batch_size`` is a multiple of ``m`` and at most ``m * n_classes``. Returns them as ints.
    """
    m = check_positive_int(m, m_name)
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size % m:
        raise ValueError(
            f"batch_size must be a multiple of {m_name}, got batch_size={batch_size}, {m_name}={m}"
        )
    if batch_size > m * n_classes:
        raise ValueError(
            f"batch_size must be at most {m_name} * n_classes = {m} * {n_classes} = "
            f"{m * n_classes}, got {batch_size}"
        )
    return m, batch_size


def m_per_class_sampler(
    labels, *, m: int, batch_size: int, n_batches: int | None = None
) -> Callable[[Any], jax.Array]:
    """``sample(key) -> [n_batches, batch_size]``: :func:`m_per_class_batches` for fixed labels.

    Validates the settings and sorts the samples by class once (kept on device), so each epoch's
    draw is a single jitted call -- what a training loop calls every epoch. ``sample(key)`` equals
    ``m_per_class_batches(key, labels, m=m, batch_size=batch_size, n_batches=n_batches)``.

    Raises:
      ValueError: as :func:`m_per_class_batches`.

    Example:

    >>> import numpy as np
    >>> sample = m_per_class_sampler(np.repeat(np.arange(10), 30), m=4, batch_size=32)
    >>> sample(0).shape
    (9, 32)
    """
    order, starts, counts = _class_runs(labels)
    max_count = int(counts.max())
    m, batch_size = _check_batch_layout(m, batch_size, len(counts))
    n = int(counts.sum())
    if n_batches is None:
        n_batches = max(n // batch_size, 1)
    n_batches = check_positive_int(n_batches, "n_batches")
    if n_batches * batch_size >= 2**31:  # int32 indices; 1e8 batches ran out of memory instead
        raise ValueError(
            f"n_batches * batch_size = {n_batches} * {batch_size} indices per epoch is beyond int32 "
            f"indices (2**31); use fewer batches per epoch and more epochs"
        )
    order_dev, starts_dev, counts_dev = jnp.asarray(order), jnp.asarray(starts), jnp.asarray(counts)
    sparse = n_batches * (batch_size // m) * max_count > _DENSE_DRAW_LIMIT
    sparse_classes = n_batches * len(counts) > _DENSE_CLASS_DRAW_LIMIT

    def sample(key) -> jax.Array:
        return _m_per_class_core(
            as_single_key(key),
            order_dev,
            starts_dev,
            counts_dev,
            m=m,
            classes_per_batch=batch_size // m,
            n_batches=n_batches,
            max_count=max_count,
            sparse=sparse,
            sparse_classes=sparse_classes,
        )

    return sample


def m_per_class_batches(
    key, labels, *, m: int, batch_size: int, n_batches: int | None = None
) -> jax.Array:
    """One epoch of m-per-class batches (as pytorch-metric-learning's ``MPerClassSampler``).

    Each batch draws ``batch_size // m`` distinct classes uniformly without replacement and, for each,
    ``m`` of its samples: without replacement when the class has at least ``m`` samples, with
    replacement otherwise. Batches are independent; an epoch has ``n_batches`` of them (default
    ``n // batch_size``, the number of full batches that cover the training set once, like PML with
    ``length_before_new_iter=len(dataset)``).

    Args:
      key: PRNG key (or int seed).
      labels: ``[n]`` class labels of the training set.
      m: samples per class in a batch.
      batch_size: batch size; a multiple of ``m`` and at most ``m * n_classes``.
      n_batches: batches in the epoch (default ``max(n // batch_size, 1)``).

    Returns:
      int32 ``[n_batches, batch_size]`` indices into the training set; within a batch, consecutive
      groups of ``m`` share a class.

    Raises:
      ValueError: ``batch_size`` not a multiple of ``m``, larger than ``m * n_classes``, or labels with
        fewer than two classes.

    Example::

        idx = m_per_class_batches(jax.random.key(0), y_train, m=16, batch_size=128)
        for batch in idx: x, y = X[batch], y_train[batch]

    Reference: Musgrave, Belongie & Lim, "A Metric Learning Reality Check", ECCV 2020 (sampler of
    pytorch-metric-learning).
    """
    require_concrete("m_per_class_batches", labels)
    return m_per_class_sampler(labels, m=m, batch_size=batch_size, n_batches=n_batches)(key)


def pair_batches(
    key, labels, *, batch_size: int, n_batches: int, positive_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-shape batches of similar / dissimilar index pairs for a Siamese network.

    Draws ``n_batches * batch_size`` distinct pairs with :func:`metriclearn.constraints.pairs`
    (``positive_fraction`` of them similar), shuffles them and cuts them into batches.

    Args:
      key: PRNG key (or int seed).
      labels: ``[n]`` class labels.
      batch_size: pairs per batch.
      n_batches: number of batches.
      positive_fraction: share of similar pairs, in ``[0, 1]``.

    Returns:
      ``(idx, same)``: ``idx`` int32 ``[n_batches, batch_size, 2]``, ``same`` int32
      ``[n_batches, batch_size]`` (1 similar, 0 dissimilar).

    Raises:
      ValueError: bad sizes, or fewer distinct pairs exist than requested.

    Example::

        idx, same = pair_batches(key, y, batch_size=64, n_batches=10)
        e1, e2 = models.siamese_apply(model, params, X[idx[0, :, 0]], X[idx[0, :, 1]])
    """
    require_concrete("pair_batches", labels)
    batch_size = check_positive_int(batch_size, "batch_size")
    n_batches = check_positive_int(n_batches, "n_batches")
    if (
        isinstance(positive_fraction, bool)
        or not isinstance(positive_fraction, numbers.Real)
        or not 0.0 <= positive_fraction <= 1.0
    ):
        raise ValueError(f"positive_fraction must be a number in [0, 1], got {positive_fraction!r}")
    codes = check_labels(labels, min_classes=2, name="labels")  # named as here (not "y")
    total = batch_size * n_batches
    n_sim = int(round(total * positive_fraction))
    if n_sim and np.bincount(codes).max() < 2:  # constraints.pairs would name "y"
        raise ValueError(
            f"no similar pair can exist: every class in labels has a single member "
            f"(positive_fraction={positive_fraction} asks for {n_sim} similar pairs)"
        )
    k_pairs, k_shuffle = jax.random.split(as_single_key(key))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            idx, pair_y = constraints.pairs(
                k_pairs, labels, n_similar=n_sim, n_dissimilar=total - n_sim
            )
        except UserWarning as err:
            raise ValueError(
                f"not enough distinct pairs for {n_batches} batches of {batch_size} "
                f"({total} pairs): {_shortfall_text(err)}; use fewer or smaller batches"
            ) from err
    perm = np.asarray(jax.random.permutation(k_shuffle, total))
    idx = idx[perm].reshape(n_batches, batch_size, 2)
    same = (pair_y[perm] > 0).astype(np.int32).reshape(n_batches, batch_size)
    return idx, same


def _shortfall_text(warning: Warning) -> str:
    """The constraint generator's shortfall warning without its "; returning N": re-raised as an
    error, nothing is returned."""
    return re.sub(r"; returning \d+\s*$", "", str(warning))


def triplet_batches(key, labels, *, batch_size: int, n_batches: int) -> np.ndarray:
    """Fixed-shape batches of (anchor, positive, negative) index triplets for a triplet network.

    Draws ``n_batches * batch_size`` distinct triplets with :func:`metriclearn.constraints.triplets`.

    Args:
      key: PRNG key (or int seed).
      labels: ``[n]`` class labels.
      batch_size: triplets per batch.
      n_batches: number of batches.

    Returns:
      int32 ``[n_batches, batch_size, 3]``; columns anchor, positive (same class), negative.

    Raises:
      ValueError: bad sizes, or fewer distinct triplets exist than requested.
    """
    require_concrete("triplet_batches", labels)
    batch_size = check_positive_int(batch_size, "batch_size")
    n_batches = check_positive_int(n_batches, "n_batches")
    codes = check_labels(labels, min_classes=2, name="labels")  # named as here (not "y")
    if np.bincount(codes).max() < 2:  # constraints.triplets would name "y"
        raise ValueError("no triplet can exist: every class in labels has a single member")
    total = batch_size * n_batches
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            t = constraints.triplets(key, labels, n_triplets=total)  # checks the key
        except UserWarning as err:
            raise ValueError(
                f"not enough distinct triplets for {n_batches} batches of {batch_size} "
                f"({total} triplets): {_shortfall_text(err)}; use fewer or smaller batches"
            ) from err
    return t.reshape(n_batches, batch_size, 3)
