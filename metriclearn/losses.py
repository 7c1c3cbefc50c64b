"""Deep metric-learning losses over a batch of embeddings and labels.

Every loss is a pure function ``loss(embeddings [B, d], labels [B], *, ...) -> scalar`` (the proxy /
class-weight losses also take their learnable ``[C, d]`` parameters explicitly). They are jittable with
fixed shapes and NaN-safe: coinciding or all-zero embeddings give a finite loss and finite gradients,
and a batch with no valid triplet / anchor-positive-negative set gives loss 0 with finite gradients.
On a batch with one class the pair losses with a positive term of their own (contrastive,
multi_similarity) keep that term, as PML's do; the others (lifted_structure included, whose positive
term lives inside its log over negatives: PML returns 0 there too) give 0.

Pair and triplet losses also come as the loss of **one** pair / triplet (``contrastive_pair``,
``triplet_margin_triplet``), vmapped over fixed-size arrays of tuples (``contrastive_pairs``,
``triplet_margin_triplets``) for Siamese / triplet-network training; these agree with the batch forms.

Miner outputs (:mod:`metriclearn.miners`) plug in through ``pair_mask=(pos [B,B], neg [B,B])`` or
``triplet_mask [B,B,B]``. :func:`build` bundles a loss, an optional miner and the loss parameters
into a :class:`LossSpec` ``(init, apply)`` for the training loop.

Defaults follow pytorch-metric-learning (PML): Euclidean distance between L2-normalized embeddings
for contrastive / triplet / lifted, cosine similarity for multi-similarity / circle / NT-Xent / SupCon,
and PML's reducers (``contrastive``, ``triplet_margin`` and ``multi_similarity`` reproduce PML's
``ContrastiveLoss``, ``TripletMarginLoss`` and ``MultiSimilarityLoss`` values).

Example::

    >>> import jax, jax.numpy as jnp
    >>> from metriclearn import losses
    >>> x = jax.random.normal(jax.random.key(0), (8, 4)); y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> loss = losses.triplet_margin(x, y, margin=0.2)
    >>> spec = losses.build("triplet_margin", miner="semihard", margin=0.2)
    >>> params = spec.init(jax.random.key(1))          # {} for parameter-free losses
    >>> value = jax.jit(spec.apply)(params, x, y, jax.random.key(2))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn import miners as _miners
from metriclearn import reducers as _reducers
from metriclearn._cache import reuse
from metriclearn._validation import (
    as_key,
    check_array,
    check_choice,
    check_flags,
    check_kwargs,
    check_positive_int,
    is_traced,
)
from metriclearn._validation import check_hyper as _check_hyper
from metriclearn.distances import _clamp_sqeuclidean, _sqeuclidean_raw, safe_sqrt
from metriclearn.miners import (
    check_embeddings_labels,
    cosine_similarity_matrix,
    distance_matrix,
    l2_normalize,
    label_masks,
)
from metriclearn.sampling import _flat_draw

__all__ = [
    "LOSSES",
    "LOSS_KIND",
    "LossSpec",
    "arcface",
    "build",
    "circle",
    "contrastive",
    "contrastive_pair",
    "contrastive_pairs",
    "cosface",
    "init_proxies",
    "lifted_structure",
    "multi_similarity",
    "n_pairs",
    "ntxent",
    "ntxent_two_view",
    "proxy_anchor",
    "proxy_nca",
    "supcon",
    "triplet_margin",
    "triplet_margin_triplet",
    "triplet_margin_triplets",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _nan_unless_finite(loss: jax.Array, *arrays: jax.Array) -> jax.Array:
    """``loss``, or NaN where an input holds a NaN / inf. Eager calls refuse such inputs; traced ones
    (under ``jit`` or ``grad``) reach losses whose masks leave the bad pairs out, and a finite loss
    from NaN embeddings would hide the failure (multi_similarity, circle, proxy_anchor)."""
    ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where(ok, loss, jnp.nan)


def _masked_logsumexp(
    x: jax.Array,
    mask: jax.Array,
    axis: int,
    *,
    add_one: bool,
    with_softmax: bool = False,
    weights: jax.Array | None = None,
):
    """``log(sum_{mask} w exp(x) [+ 1])`` along ``axis``; 0 where the mask is empty (PML semantics).

    ``weights`` (default 1) count each term that many times: a miner's pair multiplicities, as PML
    counts a pair repeated in its index lists.

    Stable (max-shifted, the shift under ``stop_gradient``) and NaN-free in value and gradient. With
    ``with_softmax`` also returns its gradient with respect to ``x`` (the masked softmax, shape of
    ``x``; 0 off the mask and on empty rows), for hand-written backward passes.
    """
    neg = jnp.asarray(jnp.finfo(x.dtype).min, x.dtype)
    xm = jnp.where(mask, x, neg)
    m = jnp.max(xm, axis=axis, keepdims=True)
    if add_one:
        m = jnp.maximum(m, 0.0)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, x, m) - m), 0.0)
    if weights is not None:
        e = e * weights
    s = jnp.sum(e, axis=axis, keepdims=True)
    if add_one:
        s = s + jnp.exp(-m)
    any_ = jnp.any(mask, axis=axis, keepdims=True)
    ok = s > 0
    out = jnp.where(ok, jnp.log(jnp.where(ok, s, 1.0)), 0.0) + m
    out = jnp.squeeze(jnp.where(any_, out, 0.0), axis=axis)
    if not with_softmax:
        return out
    return out, jnp.where(any_ & ok, e / jnp.where(ok, s, 1.0), 0.0)


def _pair_weights(labels: jax.Array, pair_mask, dtype) -> tuple[jax.Array, jax.Array]:
    """Label-valid pair weights, optionally restricted/weighted by a miner's ``(pos, neg)``."""
    pos, neg = label_masks(labels)
    pos_w, neg_w = pos.astype(dtype), neg.astype(dtype)
    if pair_mask is not None:
        mp, mn = pair_mask
        pos_w = pos_w * jnp.asarray(mp, dtype)
        neg_w = neg_w * jnp.asarray(mn, dtype)
    return pos_w, neg_w


def _reduce_pos_neg(pos_l, pos_w, neg_l, neg_w, reduction: str) -> jax.Array:
    """``R(pos_l, pos_w) + R(neg_l, neg_w)`` for the reducer ``R`` named ``reduction``.

    Same values and gradients as calling :mod:`metriclearn.reducers` twice. Each term's numerator
    and denominator are plain sums, which XLA:CPU fuses with the loss's elementwise work; stacking
    the two terms into one reduction instead cost three concatenate kernels, 3-4 % of the contrastive
    training step (``benchmarks/results/deep_products.md``). ``reduction`` is validated by the
    caller.
    """

    def term(lo, w):
        w = jnp.broadcast_to(w.astype(lo.dtype), lo.shape)
        if reduction == "avg_nonzero":
            w = jnp.where((lo > 0) & (w > 0), w, 0.0)
        num = jnp.sum(w * lo)
        return num if reduction == "sum" else _reducers.safe_divide(num, jnp.sum(w))

    return term(pos_l, pos_w) + term(neg_l, neg_w)


def _check_pair_mask(pair_mask, b: int):
    if pair_mask is None:
        return None
    if not isinstance(pair_mask, tuple | list) or len(pair_mask) != 2:
        raise ValueError("pair_mask must be a tuple (pos_mask [B, B], neg_mask [B, B])")
    out = []
    for name, m in zip(("pair_mask[0]", "pair_mask[1]"), pair_mask):
        m = check_array(m, name, ndim=2)
        if tuple(m.shape) != (b, b):
            raise ValueError(f"{name} must have shape {(b, b)}, got {tuple(m.shape)}")
        out.append(_nonnegative_mask(m, name))
    return tuple(out)


def _nonnegative_mask(m: jax.Array, name: str) -> jax.Array:
    """A concrete miner mask / weight array must be ``>= 0``: a negative weight silently subtracted
    its pairs' loss (a weight of -1 on the positives dropped the positive term), where the reducers
    refuse negative weights."""
    if not is_traced(m) and bool(jnp.any(m < 0)):
        raise ValueError(
            f"{name} must be non-negative (0/1 or weights), got min {float(jnp.min(m))}"
        )
    return m


def _check_triplet_mask(triplet_mask, b: int):
    if triplet_mask is None:
        return None
    m = check_array(triplet_mask, "triplet_mask", ndim=3)
    if tuple(m.shape) != (b, b, b):
        raise ValueError(f"triplet_mask must have shape {(b, b, b)}, got {tuple(m.shape)}")
    return _nonnegative_mask(m, "triplet_mask")


def _check_proxies(proxies, emb, name: str):
    p = check_array(proxies, name, ndim=2, min_rows=1, min_features=1)
    if p.shape[1] != emb.shape[1]:
        raise ValueError(
            f"{name} and embeddings must have the same number of features (last axis), got "
            f"shapes {tuple(p.shape)} and {tuple(emb.shape)}"
        )
    return p.astype(emb.dtype)


def _paired_distance(a, b, *, normalize: bool, squared: bool):
    if normalize:
        a, b = l2_normalize(a), l2_normalize(b)
    d2 = jnp.sum((a - b) ** 2, axis=-1)
    return d2 if squared else safe_sqrt(d2)


# --------------------------------------------------------------------------------------------------
# contrastive
# --------------------------------------------------------------------------------------------------


def _contrastive_hinges(d, pos_margin, neg_margin):
    """``([d - m_pos]_+, [m_neg - d]_+)``, before the hinge power."""
    return jax.nn.relu(d - pos_margin), jax.nn.relu(neg_margin - d)


def _hinge_power(hinge, hinge_power):
    return (
        hinge if isinstance(hinge_power, (int, float)) and hinge_power == 1 else hinge**hinge_power
    )


def _contrastive_terms(d, pos_margin, neg_margin, hinge_power):
    pos, neg = _contrastive_hinges(d, pos_margin, neg_margin)
    return _hinge_power(pos, hinge_power), _hinge_power(neg, hinge_power)


def contrastive(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    squared: bool = False,
    normalize: bool = True,
    hinge_power: float = 1.0,
    reduction: str = "avg_nonzero",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Contrastive (Siamese) loss over all positive and negative pairs of the batch.

    ``L = R_pos([d_ap - m_pos]_+^k) + R_neg([m_neg - d_an]_+^k)``, where ``d`` is the (squared)
    Euclidean distance between (L2-normalized) embeddings, ``k = hinge_power`` and each reducer ``R``
    runs over the positive / negative pairs separately (as PML's ``ContrastiveLoss``). Hadsell et al.'s
    original form is ``pos_margin=0, hinge_power=2`` (up to a factor 1/2).

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` integer class ids.
      pos_margin: positives closer than this cost nothing.
      neg_margin: negatives farther than this cost nothing.
      squared: use squared Euclidean distances.
      normalize: L2-normalize the embeddings first.
      hinge_power: exponent ``k`` of the hinges.
      reduction: ``"avg_nonzero"`` (default), ``"mean"`` or ``"sum"``.
      pair_mask: optional miner output ``(pos [B, B], neg [B, B])``; weights multiply the pairs.

    Returns:
      Scalar loss.

    Example::

      loss = contrastive(emb, labels, neg_margin=0.5)

    Reference: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
    CVPR 2006.
    """
    check_flags(squared=squared, normalize=normalize)
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    check_choice(reduction, "reduction", _reducers.REDUCERS)  # before any work
    _check_hyper(
        ("hinge_power",), pos_margin=pos_margin, neg_margin=neg_margin, hinge_power=hinge_power
    )
    if pair_mask is None and not any(map(is_traced, (pos_margin, neg_margin, hinge_power))):
        cfg = (float(pos_margin), float(neg_margin), bool(squared), bool(normalize))
        return _contrastive_all_pairs(emb, lab, (*cfg, float(hinge_power), reduction))
    # with a miner's weights, or margins traced by an outer jit / grad: autodiff of the same loss
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    pos_w, neg_w = _pair_weights(lab, pair_mask, d.dtype)
    pos_l, neg_l = _contrastive_terms(d, pos_margin, neg_margin, hinge_power)
    return _reduce_pos_neg(pos_l, pos_w, neg_l, neg_w, reduction)


def _contrastive_value_and_grad(emb, labels, cfg, *, with_grad: bool):
    """:func:`contrastive` over all pairs (no miner) and, if ``with_grad``, its gradient in closed form.

    Autodiff of the batch loss runs a dozen small kernels and two ``[B, B] x [B, d]`` products for
    the backward pass; the gradient written out needs one of each. With ``D = dL/d(d2)`` on the
    squared distances ``d2_ij = |x_i|^2 + |x_j|^2 - 2 x_i.x_j`` and ``S = D + D^T``::

        dL/dx = 2 (rowsum(S) x - S x),    dL/de = s (g - x (x.g))  (x = s e, s = 1/|e|, g = dL/dx)

    The forward pass traces the same operations as :func:`metriclearn.miners.distance_matrix`, so
    inside a train step XLA still merges it with the distance curves'. The subgradients are
    autodiff's: ``[.]_+`` has derivative 0 at 0, ``max(raw, 0)`` splits 1/2 : 1/2 at a tie, the safe
    sqrt and the normalization have derivative 0 at zero.
    """
    pos_margin, neg_margin, squared, normalize, hinge_power, reduction = cfg
    scale = _miners._l2_scale(emb) if normalize else None
    # centred as distance_matrix does; dL/dx sums to 0 over rows, so it is also dL/de
    x = emb * scale if normalize else _miners._centred(emb)
    raw = _sqeuclidean_raw(x)
    d2 = _clamp_sqeuclidean(raw, True)
    d = d2 if squared else safe_sqrt(d2)
    pos_w, neg_w = _pair_weights(labels, None, d.dtype)
    hp, hn = _contrastive_hinges(d, pos_margin, neg_margin)
    pos_l, neg_l = _hinge_power(hp, hinge_power), _hinge_power(hn, hinge_power)
    loss = _reduce_pos_neg(pos_l, pos_w, neg_l, neg_w, reduction)
    if not with_grad:
        return loss, None
    if reduction == "avg_nonzero":  # the pairs counted are the active ones; their loss is > 0
        pos_w, neg_w = pos_w * (pos_l > 0), neg_w * (neg_l > 0)
    if reduction == "sum":
        cp = cn = jnp.ones((), d.dtype)
    else:
        one = jnp.ones((), d.dtype)
        cp = _reducers.safe_divide(one, jnp.sum(pos_w))
        cn = _reducers.safe_divide(one, jnp.sum(neg_w))
    if hinge_power == 1:
        dp, dn = (hp > 0).astype(d.dtype), (hn > 0).astype(d.dtype)
    else:
        dp = jnp.where(hp > 0, hinge_power * hp ** (hinge_power - 1), 0.0)
        dn = jnp.where(hn > 0, hinge_power * hn ** (hinge_power - 1), 0.0)
    g = cp * pos_w * dp - cn * neg_w * dn  # dL/dd
    if not squared:
        g = jnp.where(d2 > 0, g * 0.5 / jnp.where(d2 > 0, d, 1.0), 0.0)
    tie = jnp.where(raw > 0, 1.0, jnp.where(raw == 0, 0.5, 0.0))
    g = g * tie * (1.0 - jnp.eye(raw.shape[0], dtype=g.dtype))  # dL/draw
    # S = g + g^T = 2 g: g is symmetric, as d, the label masks and raw are (raw exactly so when the
    # Gram product is, as XLA:CPU's is: the training step's losses are bit-identical to g + g^T's).
    # One [B, B] transpose-add fewer: 2 % of the contrastive step (in-process A/B, 2026-11-25).
    gx = 4.0 * (jnp.sum(g, axis=1, keepdims=True) * x - g @ x)
    return loss, _l2_normalize_backward(x, scale, gx) if normalize else gx


def _l2_normalize_backward(x, scale, gx):
    """``dL/de`` from ``gx = dL/dx`` for ``x = scale * e`` (:func:`metriclearn.miners.l2_normalize`).

    ``scale (gx - x (x . gx))`` row-wise: the Jacobian of ``e / |e|`` is ``(I - x x^T) / |e|``; rows
    with ``|e| <= eps`` have ``scale = 0`` and get 0, as autodiff of the ``where`` gives.
    """
    return scale * (gx - x * jnp.sum(x * gx, axis=-1, keepdims=True))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _contrastive_all_pairs(emb, labels, cfg):
    return _contrastive_value_and_grad(emb, labels, cfg, with_grad=False)[0]


@_contrastive_all_pairs.defjvp
def _contrastive_all_pairs_jvp(cfg, primals, tangents):
    emb, labels = primals
    loss, grad = _contrastive_value_and_grad(emb, labels, cfg, with_grad=True)
    return loss, jnp.sum(grad * tangents[0])


def _check_tuple_members(members, *, ndim: int) -> list[jax.Array]:
    """The members of a tuple form (``x1, x2`` or anchors / positives / negatives): each of rank
    ``ndim`` with at least one row and one feature, finite when concrete, all of one shape (an empty
    set or ``[P, 0]`` gave a loss of 0 or of the bare margin, a NaN member a NaN)."""
    out = [
        check_array(x, name, ndim=ndim, min_rows=1, min_features=1 if ndim == 2 else 0)
        for x, name in members
    ]
    shapes = [tuple(x.shape) for x in out]
    if len(set(shapes)) != 1:
        names = [name for _, name in members]
        names = ", ".join(names[:-1]) + " and " + names[-1]
        got = ", ".join(map(str, shapes[:-1])) + " and " + str(shapes[-1])
        raise ValueError(f"{names} must have the same shape, got {got}")
    return out


def _same_flags(same, name: str, shape: tuple[int, ...]) -> jax.Array:
    """``same`` as bool: bool, 0/1 or the ``+-1`` pair labels of ``constraints.pairs`` (``> 0`` is
    similar; ``asarray(same, bool)`` made -1 similar). Concrete values other than those (NaN, 0.5, 2)
    raise: ``> 0`` silently read them as a label."""
    same = jnp.asarray(same)
    if same.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(same.shape)}")
    if same.dtype == bool:
        return same
    if not is_traced(same) and not bool(jnp.all(jnp.isin(same, jnp.array([-1, 0, 1])))):
        raise ValueError(
            f"{name} must be bool, 0/1 or +-1, got values {np.unique(np.asarray(same))[:5]}"
        )
    return same > 0


def _check_tuple_weights(weights, n: int, what: str):
    """``None`` or weights broadcastable to ``[n]`` (a scalar, or one per tuple; the shape checked
    even under ``jit``: a wrong length gave JAX's broadcasting error, which did not name
    ``weights``)."""
    if weights is None:
        return None
    weights = jnp.asarray(weights)
    try:
        fits = jnp.broadcast_shapes(weights.shape, (n,)) == (n,)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"weights must be broadcastable to shape ({n},), one per {what[:-1]}, got {weights.shape}"
        )
    return weights


def contrastive_pair(
    x1: jax.Array,
    x2: jax.Array,
    same: jax.Array,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    squared: bool = False,
    normalize: bool = True,
    hinge_power: float = 1.0,
) -> jax.Array:
    """Contrastive loss of one pair: ``[d - m_pos]_+^k`` if ``same`` else ``[m_neg - d]_+^k``.

    Args:
      x1, x2: ``[d]`` the two embeddings (``d >= 1``; concrete ones must be finite).
      same: scalar bool (or 0/1, or the ``+-1`` of :func:`metriclearn.constraints.pairs`), whether
        the pair is similar.

    Returns:
      Scalar (unreduced) loss of the pair. See :func:`contrastive` for the other arguments.
    """
    check_flags(squared=squared, normalize=normalize)
    _check_hyper(
        ("hinge_power",), pos_margin=pos_margin, neg_margin=neg_margin, hinge_power=hinge_power
    )
    x1, x2 = _check_tuple_members(((x1, "x1"), (x2, "x2")), ndim=1)
    d = _paired_distance(x1, x2, normalize=normalize, squared=squared)
    pos, neg = _contrastive_terms(d, pos_margin, neg_margin, hinge_power)
    return jnp.where(_same_flags(same, "same", ()), pos, neg)


def contrastive_pairs(
    x1: jax.Array,
    x2: jax.Array,
    same: jax.Array,
    *,
    weights: jax.Array | None = None,
    reduction: str = "avg_nonzero",
    **kwargs: Any,
) -> jax.Array:
    """:func:`contrastive_pair` vmapped over ``P`` pairs, reduced over positives and negatives separately.

    Args:
      x1, x2: ``[P, d]`` first / second element of each pair.
      same: ``[P]`` bool (similar pair or not).
      weights: optional ``[P]`` pair weights (0 drops padding pairs).
      reduction: reducer name, applied to positive and negative pairs separately, then summed.
      **kwargs: keyword arguments of :func:`contrastive_pair`.

    Returns:
      Scalar; equals :func:`contrastive` when the pairs are all ordered pairs of a batch.
    """
    x1, x2 = _check_tuple_members(((x1, "x1"), (x2, "x2")), ndim=2)
    same = _same_flags(same, "same", (x1.shape[0],))
    weights = _check_tuple_weights(weights, x1.shape[0], "pairs")
    red = _reducers.get(reduction)
    per = jax.vmap(lambda a, b, s: contrastive_pair(a, b, s, **kwargs))(x1, x2, same)
    w = jnp.ones_like(per) if weights is None else jnp.asarray(weights, per.dtype)
    return red(per, w * same) + red(per, w * ~same)


# --------------------------------------------------------------------------------------------------
# triplet margin
# --------------------------------------------------------------------------------------------------


def _triplet_term(dap, dan, margin, smooth):
    v = dap - dan + margin
    return jax.nn.softplus(v) if smooth else jax.nn.relu(v)


def _reduce_active_hinge(num, count, total, reduction):
    """Finish a hinge-triplet reduction from ``num = sum w [v]_+``, ``count = sum_{v > 0} w``, ``total``."""
    if reduction == "sum":
        return num
    return _reducers.safe_divide(num, count if reduction == "avg_nonzero" else total)


def _hinge_triplets_masked(d, w, margin, reduction):
    """``reduce_{a,p,n} w [d_ap - d_an + margin]_+`` with a ``[B, B, B]`` weight tensor ``w``.

    Same value and gradients as building the ``[B, B, B]`` hinge and calling the reducer, but the
    gradient with respect to ``d`` is taken through the identity (the active set
    ``A = w [v > 0]`` carries no gradient; ``[.]_+`` has derivative 0 at 0, as ``jax.nn.relu``)::

        sum_{a,p,n} A (d_ap - d_an + margin) = sum_{a,p} d_ap sum_n A - sum_{a,n} d_an sum_p A + ...

    so the backward pass works on ``[B, B]`` matrices. The value is the direct sum, and gradients with
    respect to ``w`` (if it is differentiated) are kept.
    """
    ds = jax.lax.stop_gradient(d)
    v = ds[:, :, None] - ds[:, None, :] + margin
    act = v > 0
    if reduction == "avg_nonzero":
        act = act & (w > 0)
    aw = jnp.where(act, w, 0.0)
    value = jnp.sum(aw * v)  # differentiable in w only
    a_sg = jax.lax.stop_gradient(aw)
    lin = jnp.sum(d * (jnp.sum(a_sg, axis=2) - jnp.sum(a_sg, axis=1)))
    num = value + (lin - jax.lax.stop_gradient(lin))
    return _reduce_active_hinge(num, jnp.sum(aw), jnp.sum(w), reduction)


def _hinge_triplets_counted(d, lab, margin, reduction, miner_type=None, miner_margin=0.0):
    """The hinge triplet loss over valid (optionally mined) triplets, backward pass on ``[B, B]``.

    The active triplets (valid, mined by :func:`metriclearn.miners.triplet_margin` of type
    ``miner_type`` on the same distances, hinge ``> 0``) are only counted per pair
    (``P[a,p] = sum_n A``, ``N[a,n] = sum_p A``, integer sums of the ``[B, B, B]`` condition, see
    :func:`metriclearn.miners._triplet_margin_counts`), and the loss is the
    linear form ``sum d_ap P - sum d_an N + margin sum P``: equal in value (up to rounding) and gradient
    to the ``[B, B, B]`` formula.
    """
    pc, nc = _miners._triplet_margin_counts(
        d, lab, margin=miner_margin, type_of_triplets=miner_type, loss_margin=margin
    )
    count = jnp.sum(pc)
    num = jnp.sum(d * (pc - nc)) + margin * count
    if reduction != "mean":
        return _reduce_active_hinge(num, count, None, reduction)
    if miner_type is None:
        pos, neg = label_masks(lab)
        total = jnp.sum(jnp.sum(pos, axis=1) * jnp.sum(neg, axis=1)).astype(d.dtype)
    else:
        total = jnp.sum(
            _miners._triplet_margin_counts(
                d, lab, margin=miner_margin, type_of_triplets=miner_type
            )[0]
        )
    return _reduce_active_hinge(num, count, total, reduction)


def triplet_margin(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.05,
    squared: bool = False,
    normalize: bool = True,
    swap: bool = False,
    smooth: bool = False,
    reduction: str = "avg_nonzero",
    triplet_mask: jax.Array | None = None,
) -> jax.Array:
    """Triplet margin loss ``[d(a,p) - d(a,n) + margin]_+`` over the valid (or mined) triplets.

    Without ``triplet_mask`` every valid triplet (``y_a = y_p``, ``a != p``, ``y_n != y_a``) counts,
    as PML's ``TripletMarginLoss(triplets_per_anchor="all")``; the mask's values weight the triplets.

    Computation (hinge, no ``swap``): the active set ``A = w [v > 0]`` carries no gradient, so the loss
    is the linear form ``sum_{a,p} d_ap sum_n A - sum_{a,n} d_an sum_p A + margin sum A`` and the
    backward pass works on ``[B, B]`` matrices; without a mask only these per-pair counts are computed
    (a fused boolean ``[B, B, B]`` reduction, no float ``[B, B, B]`` array). Values and gradients equal
    the direct ``[B, B, B]`` formula (up to rounding). ``smooth`` / ``swap`` use the direct formula.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` integer class ids.
      margin: the margin (PML default 0.05).
      squared: squared Euclidean distances.
      normalize: L2-normalize first.
      swap: use ``min(d(a,n), d(p,n))`` as the negative distance (Balntas et al. 2016).
      smooth: ``softplus`` instead of the hinge.
      reduction: ``"avg_nonzero"`` (default), ``"mean"`` or ``"sum"`` over triplets.
      triplet_mask: optional miner output ``[B, B, B]`` (anchor, positive, negative).

    Returns:
      Scalar loss.

    Reference: Weinberger & Saul 2009 (LMNN); Schroff et al., "FaceNet", CVPR 2015.
    """
    check_flags(squared=squared, normalize=normalize, swap=swap, smooth=smooth)
    emb, lab = check_embeddings_labels(embeddings, labels)
    triplet_mask = _check_triplet_mask(triplet_mask, emb.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(margin=margin)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    if not (swap or smooth):
        if triplet_mask is None:
            return _hinge_triplets_counted(d, lab, margin, reduction)
        pos, neg = label_masks(lab)
        w = jnp.where(pos[:, :, None] & neg[:, None, :], triplet_mask.astype(d.dtype), 0.0)
        return _hinge_triplets_masked(d, w, margin, reduction)
    dap = d[:, :, None]
    dan = d[:, None, :]
    if swap:
        dan = jnp.minimum(dan, d[None, :, :])
    loss = _triplet_term(dap, dan, margin, smooth)
    pos, neg = label_masks(lab)
    w = (pos[:, :, None] & neg[:, None, :]).astype(d.dtype)
    if triplet_mask is not None:
        w = w * triplet_mask.astype(d.dtype)
    return red(loss, w)


def triplet_margin_triplet(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    *,
    margin: float = 0.05,
    squared: bool = False,
    normalize: bool = True,
    swap: bool = False,
    smooth: bool = False,
) -> jax.Array:
    """Triplet margin loss of one triplet ``[d(a,p) - d(a,n) + margin]_+`` (each argument ``[d]``).

    See :func:`triplet_margin` for the keyword arguments. Returns a scalar. ``d >= 1``; concrete
    embeddings must be finite.
    """
    check_flags(squared=squared, normalize=normalize, swap=swap, smooth=smooth)
    _check_hyper(margin=margin)
    anchor, positive, negative = _check_tuple_members(
        ((anchor, "anchor"), (positive, "positive"), (negative, "negative")), ndim=1
    )
    dap = _paired_distance(anchor, positive, normalize=normalize, squared=squared)
    dan = _paired_distance(anchor, negative, normalize=normalize, squared=squared)
    if swap:
        dpn = _paired_distance(positive, negative, normalize=normalize, squared=squared)
        dan = jnp.minimum(dan, dpn)
    return _triplet_term(dap, dan, margin, smooth)


def triplet_margin_triplets(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array,
    *,
    weights: jax.Array | None = None,
    reduction: str = "avg_nonzero",
    **kwargs: Any,
) -> jax.Array:
    """:func:`triplet_margin_triplet` vmapped over ``T`` triplets (each ``[T, d]``), then reduced.

    Args:
      anchors, positives, negatives: ``[T, d]``.
      weights: optional ``[T]`` weights (0 drops padding triplets).
      reduction: reducer name.
      **kwargs: keyword arguments of :func:`triplet_margin_triplet`.

    Returns:
      Scalar; equals :func:`triplet_margin` when the triplets are all valid triplets of a batch.
    """
    a, p, n = _check_tuple_members(
        ((anchors, "anchors"), (positives, "positives"), (negatives, "negatives")), ndim=2
    )
    weights = _check_tuple_weights(weights, a.shape[0], "triplets")
    red = _reducers.get(reduction)
    per = jax.vmap(lambda x, y, z: triplet_margin_triplet(x, y, z, **kwargs))(a, p, n)
    return red(per, weights)


# --------------------------------------------------------------------------------------------------
# log-sum-exp pair losses
# --------------------------------------------------------------------------------------------------


def multi_similarity(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    reduction: str = "mean",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Multi-similarity loss on cosine similarities ``S`` (as PML's ``MultiSimilarityLoss``).

    Per anchor ``i``::

        l_i = 1/alpha log(1 + sum_{p in P_i} exp(-alpha (S_ip - base)))
            + 1/beta  log(1 + sum_{n in N_i} exp( beta (S_in - base)))

    reduced over anchors (``"mean"``, PML's default). A miner's ``pair_mask`` restricts ``P_i``,
    ``N_i`` (entries > 0 are kept).

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      alpha, beta, base: the paper's hyperparameters (PML defaults 2, 50, 0.5).
      reduction: reducer over anchors.
      pair_mask: optional ``(pos [B, B], neg [B, B])``.

    Returns:
      Scalar loss.

    Reference: Wang et al., "Multi-Similarity Loss with General Pair Weighting", CVPR 2019.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    check_choice(reduction, "reduction", _reducers.REDUCERS)  # before any work
    _check_hyper(("alpha", "beta"), alpha=alpha, beta=beta, base=base)
    pos_w, neg_w = _pair_weights(lab, pair_mask, emb.dtype)
    if not any(map(is_traced, (alpha, beta, base))):
        # the pair sets enter only as ``> 0`` masks: no gradient flows through a miner's weights
        cfg = (float(alpha), float(beta), float(base), reduction)
        return _nan_unless_finite(_multi_similarity_masked(emb, pos_w > 0, neg_w > 0, cfg), emb)
    # hyperparameters traced by an outer jit / grad: autodiff of the same loss
    return _nan_unless_finite(
        _multi_similarity_value_and_grad(emb, pos_w > 0, neg_w > 0, (alpha, beta, base, reduction))[
            0
        ],
        emb,
    )


def _multi_similarity_value_and_grad(emb, pos, neg, cfg, *, with_grad: bool = False):
    """:func:`multi_similarity` on boolean pair sets and, if ``with_grad``, its gradient in closed form.

    With ``S = x x^T`` (``x`` the L2-normalized rows), the per-anchor terms' derivatives are the masked
    softmaxes ``W+`` (positives, of ``-alpha (S - base)``) and ``W-`` (negatives, of ``beta (S -
    base)``), so ``dL/dS = c (W- - W+)`` row-wise, with ``c`` the reducer's weight of each anchor,
    and ``dL/dx = (G + G^T) x`` for ``G = dL/dS``, then :func:`_l2_normalize_backward`. The forward
    pass traces the same operations as :func:`metriclearn.miners.cosine_similarity_matrix` (XLA
    merges it with the miner's and the distance curves' products).
    """
    alpha, beta, base, reduction = cfg
    red = _reducers.get(reduction)
    scale = _miners._l2_scale(emb)
    x = emb * scale
    s = x @ x.T
    pos_l, w_pos = _masked_logsumexp(-alpha * (s - base), pos, 1, add_one=True, with_softmax=True)
    neg_l, w_neg = _masked_logsumexp(beta * (s - base), neg, 1, add_one=True, with_softmax=True)
    per_anchor = pos_l / alpha + neg_l / beta
    loss = red(per_anchor)
    if not with_grad:
        return loss, None
    c = jax.grad(red)(per_anchor)  # [B]: the reducer's own (sub)gradient
    g = c[:, None] * (w_neg - w_pos)
    return loss, _l2_normalize_backward(x, scale, (g + g.T) @ x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _multi_similarity_masked(emb, pos, neg, cfg):
    return _multi_similarity_value_and_grad(emb, pos, neg, cfg)[0]


@_multi_similarity_masked.defjvp
def _multi_similarity_masked_jvp(cfg, primals, tangents):
    emb, pos, neg = primals
    loss, grad = _multi_similarity_value_and_grad(emb, pos, neg, cfg, with_grad=True)
    return loss, jnp.sum(grad * tangents[0])


def lifted_structure(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    squared: bool = False,
    normalize: bool = True,
    reduction: str = "mean",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Lifted structured loss: every positive pair against all negatives of both its members.

    For each ordered positive pair ``(i, j)``::

        J_ij = log( sum_{k in N_i} exp(m_neg - d_ik) + sum_{l in N_j} exp(m_neg - d_jl) ) + d_ij - m_pos
        l_ij = [J_ij]_+^2 / 2

    reduced over positive pairs (``"mean"`` gives the paper's ``1/(2|P|) sum_{(i,j)} [J_ij]_+^2`` over
    unordered pairs; PML's ``LiftedStructureLoss``). A pair whose members have no negative
    contributes ``log = 0``; a batch (or mined set) without any negative pair gives 0, as PML's.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      neg_margin, pos_margin: margins.
      squared, normalize: distance options (Euclidean on L2-normalized embeddings by default).
      reduction: reducer over positive pairs.
      pair_mask: optional miner ``(pos, neg)``; positive pairs weighted by it, negatives counted
        with its weights (a triplet miner's multiplicities through ``build``, as PML).

    Returns:
      Scalar loss.

    Reference: Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
    """
    check_flags(squared=squared, normalize=normalize)
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(neg_margin=neg_margin, pos_margin=pos_margin)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    pos_w, neg_w = _pair_weights(lab, pair_mask, d.dtype)
    neg_mask = neg_w > 0
    b = d.shape[0]
    x = neg_margin - d
    # for pair (i, j): concatenation of row i and row j of the negative terms -> [B, B, 2B]
    both_x = jnp.concatenate(
        [jnp.broadcast_to(x[:, None, :], (b, b, b)), jnp.broadcast_to(x[None, :, :], (b, b, b))], -1
    )
    both_m = jnp.concatenate(
        [
            jnp.broadcast_to(neg_mask[:, None, :], (b, b, b)),
            jnp.broadcast_to(neg_mask[None, :, :], (b, b, b)),
        ],
        -1,
    )
    both_w = jnp.concatenate(
        [
            jnp.broadcast_to(neg_w[:, None, :], (b, b, b)),
            jnp.broadcast_to(neg_w[None, :, :], (b, b, b)),
        ],
        -1,
    )
    lse = _masked_logsumexp(both_x, both_m, 2, add_one=False, weights=both_w)
    per_pair = jax.nn.relu(lse + d - pos_margin) ** 2 / 2.0
    # no negative pair in the whole batch (one class, or a miner that kept none): 0, as PML's
    return red(per_pair, jnp.where(jnp.any(neg_mask), pos_w, 0.0))


def circle(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    m: float = 0.4,
    gamma: float = 80.0,
    reduction: str = "avg_nonzero",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Circle loss on cosine similarities (pair-label form, as PML's ``CircleLoss``).

    With ``O_p = 1 + m``, ``O_n = -m``, ``D_p = 1 - m``, ``D_n = m`` and the self-paced weights
    ``a_p = [O_p - s_p]_+``, ``a_n = [s_n - O_n]_+`` (no gradient through them), per anchor::

        l_i = softplus( logsumexp_{p} (-gamma a_p (s_p - D_p)) + logsumexp_{n} (gamma a_n (s_n - D_n)) )

    Anchors lacking positives or negatives give 0. Reduced with ``avg_nonzero`` (PML default).

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      m: relaxation margin.
      gamma: scale.
      reduction: reducer over anchors.
      pair_mask: optional miner ``(pos, neg)`` (entries > 0 kept).

    Returns:
      Scalar loss.

    Reference: Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("gamma",), m=m, gamma=gamma)
    s = cosine_similarity_matrix(emb)
    pos_w, neg_w = _pair_weights(lab, pair_mask, s.dtype)
    pm, nm = pos_w > 0, neg_w > 0
    sg = jax.lax.stop_gradient(s)
    logit_p = -gamma * jax.nn.relu(1.0 + m - sg) * (s - (1.0 - m))
    logit_n = gamma * jax.nn.relu(sg + m) * (s - m)
    lse_p = _masked_logsumexp(logit_p, pm, 1, add_one=False)
    lse_n = _masked_logsumexp(logit_n, nm, 1, add_one=False)
    valid = jnp.any(pm, axis=1) & jnp.any(nm, axis=1)
    per = jnp.where(valid, jax.nn.softplus(lse_p + lse_n), 0.0)
    return _nan_unless_finite(red(per), emb)


def ntxent(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 0.07,
    reduction: str = "mean",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """NT-Xent / InfoNCE with labels: each positive pair against its anchor's negatives.

    For each positive pair ``(a, p)`` with cosine similarities ``s``::

        l_ap = -log( exp(s_ap / t) / (exp(s_ap / t) + sum_{n in N_a} exp(s_an / t)) )

    reduced over positive pairs (PML's ``NTXentLoss``). SimCLR is the special case
    ``ntxent(concat([z1, z2]), concat([arange(N), arange(N)]))``; for CLIP-style two-tower batches see
    :func:`ntxent_two_view`. Zero when the batch has no positive or no negative pair.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      temperature: softmax temperature ``t``.
      reduction: reducer over positive pairs.
      pair_mask: optional miner ``(pos, neg)``; positive pairs weighted by it, negatives counted
        with its weights (a triplet miner's multiplicities through ``build``, as PML).

    Returns:
      Scalar loss.

    Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
    (SimCLR), ICML 2020; van den Oord et al., "CPC / InfoNCE", 2018.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("temperature",), temperature=temperature)
    s = cosine_similarity_matrix(emb) / temperature
    pos_w, neg_w = _pair_weights(lab, pair_mask, s.dtype)
    neg_mask = neg_w > 0
    neg_lse = _masked_logsumexp(s, neg_mask, 1, add_one=False, weights=neg_w)  # [B]
    has_neg = jnp.any(neg_mask, axis=1)
    # log(exp(s_ap) + exp(neg_lse_a)) computed stably; rows without negatives: denominator = numerator
    denom = jnp.where(has_neg[:, None], jnp.logaddexp(s, neg_lse[:, None]), s)
    per = denom - s
    active = jnp.any(pos_w > 0) & jnp.any(neg_mask)
    return jnp.where(active, red(per, pos_w), 0.0)


def ntxent_two_view(z1: jax.Array, z2: jax.Array, *, temperature: float = 0.07) -> jax.Array:
    """Symmetric InfoNCE between two views (CLIP-style): row ``i`` of ``z1`` matches row ``i`` of ``z2``.

    With ``S = normalize(z1) normalize(z2)^T / t``::

        L = 1/2 [ mean_i CE(S[i, :], i) + mean_i CE(S[:, i], i) ]

    Args:
      z1: ``[N, d]`` first view / modality.
      z2: ``[N, d]`` second view (same ``N`` and ``d``).
      temperature: ``t``.

    Returns:
      Scalar loss.

    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
    (CLIP), ICML 2021; van den Oord et al. 2018 (InfoNCE).
    """
    a = _miners.check_embeddings(z1, "z1")
    b = _miners.check_embeddings(z2, "z2")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(a.shape)} and {b.shape}")
    _check_hyper(("temperature",), temperature=temperature)
    s = (l2_normalize(a) @ l2_normalize(b).T) / temperature
    diag = jnp.diagonal(s)
    row = jax.nn.logsumexp(s, axis=1) - diag
    col = jax.nn.logsumexp(s, axis=0) - diag
    return 0.5 * (jnp.mean(row) + jnp.mean(col))


def supcon(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 0.1,
    reduction: str = "avg_nonzero",
    pair_mask: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Supervised contrastive loss (the "L_out" form, as PML's ``SupConLoss``).

    With ``s = cos / t`` and ``A_i`` all other samples (positives and negatives) of anchor ``i``::

        l_i = -1/|P_i| sum_{p in P_i} ( s_ip - log sum_{k in A_i} exp(s_ik) )

    Anchors without positives give 0; reduced with ``avg_nonzero`` over anchors (PML default); 0 when the
    batch has no positive or no negative pair.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      temperature: ``t``.
      reduction: reducer over anchors.
      pair_mask: optional miner ``(pos, neg)`` (entries > 0 kept).

    Returns:
      Scalar loss.

    Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    pair_mask = _check_pair_mask(pair_mask, emb.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("temperature",), temperature=temperature)
    s = cosine_similarity_matrix(emb) / temperature
    pos_w, neg_w = _pair_weights(lab, pair_mask, s.dtype)
    pm, nm = pos_w > 0, neg_w > 0
    denom = _masked_logsumexp(s, pm | nm, 1, add_one=False)
    log_prob = s - denom[:, None]
    n_pos = jnp.sum(pm, axis=1)
    per = -_reducers.safe_divide(jnp.sum(jnp.where(pm, log_prob, 0.0), axis=1), n_pos)
    # an anchor with one positive and no negative (a miner's choice) has log_prob exactly 0; under
    # jit XLA computed s twice with different rounding, 1e-7 counted as a nonzero anchor in avg_nonzero
    per = jnp.where(jnp.sum(pm | nm, axis=1) == 1, 0.0, per)
    active = jnp.any(pm) & jnp.any(nm)
    return jnp.where(active, red(per), 0.0)


def n_pairs(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    normalize: bool = True,
    l2_reg: float = 0.0,
) -> jax.Array:
    """Multi-class N-pair loss: one (anchor, positive) pair per class, the other positives as negatives.

    For each class with at least two members, the anchor is its first member and the positive its
    second (PML's ``NPairsLoss`` pairing). With ``K`` such pairs and dot products
    ``S_kl = f(a_k) . f(p_l)``: ``L = mean_k CE(S[k, :], k) + l2_reg * mean_i |f_i|^2``.
    Zero when no class has two members.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      normalize: L2-normalize first (PML's default ``DotProductSimilarity`` does; Sohn uses raw
        embeddings with ``l2_reg``).
      l2_reg: weight of the embedding-norm penalty of Sohn's paper.

    Returns:
      Scalar loss.

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
    """
    check_flags(normalize=normalize)
    emb, lab = check_embeddings_labels(embeddings, labels)
    _check_hyper(nonnegative=("l2_reg",), l2_reg=l2_reg)  # < 0 rewards norms: unbounded below
    x = l2_normalize(emb) if normalize else emb
    b = lab.shape[0]
    idx = jnp.arange(b)
    same = lab[:, None] == lab[None, :]
    earlier = same & (idx[None, :] < idx[:, None])  # [i, j]: j < i same class
    is_first = ~jnp.any(earlier, axis=1)
    later = same & (idx[None, :] > idx[:, None])
    has_pos = jnp.any(later, axis=1)
    anchor = is_first & has_pos  # [B]
    pos_idx = jnp.argmax(later, axis=1)  # first later member (second of class when anchor)
    positives = x[pos_idx]  # [B, d]
    logits = x @ positives.T  # [anchor i, pair l]
    logits = jnp.where(anchor[None, :], logits, jnp.finfo(x.dtype).min)
    lse = _masked_logsumexp(
        logits, jnp.broadcast_to(anchor[None, :], logits.shape), 1, add_one=False
    )
    per = lse - jnp.diagonal(logits)
    per = jnp.where(anchor, per, 0.0)
    loss = _reducers.mean(per, anchor.astype(x.dtype))
    if is_traced(l2_reg) or l2_reg:  # a traced weight (a schedule under jit) always adds the term
        loss = loss + l2_reg * jnp.mean(jnp.sum(emb * emb, axis=1))
    return loss


# --------------------------------------------------------------------------------------------------
# proxy / classification losses
# --------------------------------------------------------------------------------------------------


def init_proxies(key: jax.Array, n_classes: int, dim: int) -> jax.Array:
    """Random proxies / class weights ``[n_classes, dim]``: i.i.d. normal scaled by ``1/sqrt(dim)``.

    Rows have norm close to 1; the cosine-based losses normalize them anyway.
    """
    key = as_key(key)
    n_classes = check_positive_int(n_classes, "n_classes")
    dim = check_positive_int(dim, "dim")
    # drawn flat (sampling._flat_draw): the same numbers as a [C, d] draw, compiled faster on CPU
    return _flat_draw(jax.random.normal, key, (n_classes, dim)) / np.sqrt(dim)


def _check_labels_range(lab, n_classes):
    """``ValueError`` for concrete labels outside ``[0, n_classes)``; returns the guard to apply to
    the loss: under ``jit`` (labels traced) it makes the loss NaN when a label is out of range (its
    one-hot row was all zero: the target term silently dropped, or a NaN from proxy_nca), so the
    failure is visible (``fit`` names the step)."""
    if not is_traced(lab):
        lo, hi = int(jnp.min(lab)), int(jnp.max(lab))
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes}) for {n_classes} proxies, got range [{lo}, {hi}]"
            )
        return lambda loss: loss
    bad = jnp.any((lab < 0) | (lab >= n_classes))
    return lambda loss: jnp.where(bad, jnp.nan, loss)


def proxy_nca(
    embeddings: jax.Array,
    labels: jax.Array,
    proxies: jax.Array,
    *,
    softmax_scale: float = 1.0,
    normalize: bool = True,
    reduction: str = "mean",
) -> jax.Array:
    """Proxy-NCA: softmax over negative squared distances to one proxy per class.

    ``l_i = -log softmax_c(-scale * |f_i - p_c|^2)[y_i]`` with L2-normalized embeddings and proxies
    (PML's ``ProxyNCALoss``; the denominator includes the positive proxy, as in ProxyNCA++).

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` in ``[0, C)``.
      proxies: ``[C, d]`` learnable proxies (see :func:`init_proxies`).
      softmax_scale: inverse temperature.
      normalize: L2-normalize embeddings and proxies.
      reduction: reducer over samples.

    Returns:
      Scalar loss.

    Reference: Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies", ICCV 2017.
    """
    check_flags(normalize=normalize)
    emb, lab = check_embeddings_labels(embeddings, labels)
    p = _check_proxies(proxies, emb, "proxies")
    guard = _check_labels_range(lab, p.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("softmax_scale",), softmax_scale=softmax_scale)
    x = l2_normalize(emb) if normalize else emb
    q = l2_normalize(p) if normalize else p
    d2 = jnp.maximum(jnp.sum(x * x, 1)[:, None] + jnp.sum(q * q, 1)[None, :] - 2.0 * x @ q.T, 0.0)
    logp = jax.nn.log_softmax(-softmax_scale * d2, axis=1)
    per = -jnp.take_along_axis(logp, lab[:, None], axis=1)[:, 0]
    return guard(red(per))


def proxy_anchor(
    embeddings: jax.Array,
    labels: jax.Array,
    proxies: jax.Array,
    *,
    margin: float = 0.1,
    alpha: float = 32.0,
) -> jax.Array:
    """Proxy-Anchor loss: each proxy as an anchor against the batch (cosine similarity ``s``).

    ::

        L = 1/|C+| sum_{c in C+} log(1 + sum_{i: y_i = c} exp(-alpha (s_ic - margin)))
          + 1/|C|  sum_{c}       log(1 + sum_{i: y_i != c} exp( alpha (s_ic + margin)))

    where ``C+`` are the classes present in the batch (PML's ``ProxyAnchorLoss``).

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` in ``[0, C)``.
      proxies: ``[C, d]``.
      margin: ``delta``.
      alpha: scale.

    Returns:
      Scalar loss.

    Reference: Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    p = _check_proxies(proxies, emb, "proxies")
    guard = _check_labels_range(lab, p.shape[0])
    _check_hyper(("alpha",), margin=margin, alpha=alpha)
    n_classes = p.shape[0]
    cos = l2_normalize(emb) @ l2_normalize(p).T  # [B, C]
    pos = jax.nn.one_hot(lab, n_classes, dtype=bool)
    pos_term = _masked_logsumexp(-alpha * (cos - margin), pos, 0, add_one=True)
    neg_term = _masked_logsumexp(alpha * (cos + margin), ~pos, 0, add_one=True)
    n_present = jnp.sum(jnp.any(pos, axis=0))
    loss = _reducers.safe_divide(jnp.sum(pos_term), n_present) + jnp.sum(neg_term) / n_classes
    return guard(_nan_unless_finite(loss, emb, p))


def _cosine_logits(emb, class_weights):
    return l2_normalize(emb) @ l2_normalize(class_weights).T


def arcface(
    embeddings: jax.Array,
    labels: jax.Array,
    class_weights: jax.Array,
    *,
    margin: float = 0.5,
    scale: float = 64.0,
    reduction: str = "mean",
) -> jax.Array:
    """ArcFace (additive angular margin): softmax cross-entropy on ``scale * cos(theta_y + margin)``.

    The target logit ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with a
    safe ``sin`` (no ``arccos``, so gradients stay finite at ``cos = ±1``); when ``theta > pi - m`` it is
    replaced by ``cos(theta) - m sin(m)`` to keep it monotone (as PML's ``ArcFaceLoss``, whose ``margin``
    is in degrees). The default ``margin=0.5`` rad is 28.65°, PML's default 28.6° is 0.4992 rad: pass
    ``margin=np.radians(28.6)`` for PML's values.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` in ``[0, C)``.
      class_weights: ``[C, d]`` learnable class centres (normalized inside).
      margin: angular margin in radians.
      scale: logit scale ``s``.
      reduction: reducer over samples.

    Returns:
      Scalar loss.

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    w = _check_proxies(class_weights, emb, "class_weights")
    guard = _check_labels_range(lab, w.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("scale",), margin=margin, scale=scale)
    cos = jnp.clip(_cosine_logits(emb, w), -1.0, 1.0)
    sin = safe_sqrt(1.0 - cos * cos)
    # in jnp and the embeddings' dtype: a traced margin works, and float32 stays float32 under x64
    m = jnp.asarray(margin, cos.dtype)
    cos_m, sin_m = jnp.cos(m), jnp.sin(m)
    target = jnp.where(cos >= -cos_m, cos * cos_m - sin * sin_m, cos - m * sin_m)
    onehot = jax.nn.one_hot(lab, w.shape[0], dtype=bool)
    logits = scale * jnp.where(onehot, target, cos)
    per = jax.nn.logsumexp(logits, axis=1) - jnp.sum(jnp.where(onehot, logits, 0.0), axis=1)
    return guard(red(per))


def cosface(
    embeddings: jax.Array,
    labels: jax.Array,
    class_weights: jax.Array,
    *,
    margin: float = 0.35,
    scale: float = 64.0,
    reduction: str = "mean",
) -> jax.Array:
    """CosFace (large-margin cosine): softmax cross-entropy on ``scale * (cos(theta_c) - margin [c = y])``.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` in ``[0, C)``.
      class_weights: ``[C, d]`` learnable class centres (normalized inside).
      margin: cosine margin.
      scale: logit scale.
      reduction: reducer over samples.

    Returns:
      Scalar loss.

    Reference: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.
    """
    emb, lab = check_embeddings_labels(embeddings, labels)
    w = _check_proxies(class_weights, emb, "class_weights")
    guard = _check_labels_range(lab, w.shape[0])
    red = _reducers.get(reduction)
    _check_hyper(("scale",), margin=margin, scale=scale)
    cos = _cosine_logits(emb, w)
    onehot = jax.nn.one_hot(lab, w.shape[0], dtype=bool)
    logits = scale * jnp.where(onehot, cos - margin, cos)
    per = jax.nn.logsumexp(logits, axis=1) - jnp.sum(jnp.where(onehot, logits, 0.0), axis=1)
    return guard(red(per))


# --------------------------------------------------------------------------------------------------
# registry and the training interface
# --------------------------------------------------------------------------------------------------

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "contrastive": contrastive,
    "triplet_margin": triplet_margin,
    "n_pairs": n_pairs,
    "lifted_structure": lifted_structure,
    "multi_similarity": multi_similarity,
    "circle": circle,
    "ntxent": ntxent,
    "supcon": supcon,
    "proxy_nca": proxy_nca,
    "proxy_anchor": proxy_anchor,
    "arcface": arcface,
    "cosface": cosface,
}

#: How each loss consumes a miner: ``"pair"`` (``pair_mask``), ``"triplet"`` (``triplet_mask``),
#: ``"none"`` (no miner: n_pairs) or ``"proxy"`` (learnable parameters, no miner).
LOSS_KIND: dict[str, str] = {
    "contrastive": "pair",
    "triplet_margin": "triplet",
    "n_pairs": "none",
    "lifted_structure": "pair",
    "multi_similarity": "pair",
    "circle": "pair",
    "ntxent": "pair",
    "supcon": "pair",
    "proxy_nca": "proxy",
    "proxy_anchor": "proxy",
    "arcface": "proxy",
    "cosface": "proxy",
}

_PARAM_NAME = {
    "proxy_nca": "proxies",
    "proxy_anchor": "proxies",
    "arcface": "class_weights",
    "cosface": "class_weights",
}


class LossSpec(NamedTuple):
    """A loss ready for training.

    Attributes:
      init: ``init(key) -> params`` — ``{}`` for parameter-free losses, ``{"proxies": [C, d]}`` for
        proxy_nca / proxy_anchor, ``{"class_weights": [C, d]}`` for arcface / cosface.
      apply: ``apply(params, embeddings [B, d], labels [B], key) -> scalar`` — mines (if a miner was
        given) on gradient-stopped embeddings, then computes the loss. Jittable, fixed shapes.
    """

    init: Callable[[jax.Array], dict]
    apply: Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]


def _keyword_names(fn: Callable) -> set[str]:
    return {
        n
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _check_kwargs(fn: Callable, kwargs: dict, what: str, exclude: tuple[str, ...] = ()) -> None:
    valid = _keyword_names(fn) - set(exclude)
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise ValueError(
            f"unknown keyword argument(s) {bad} for {what}; valid: {', '.join(sorted(valid))}"
        )


# triplet miners whose mined triplets are margin conditions on d(a,n) - d(a,p): they are counted per
# pair (metriclearn.miners._triplet_margin_counts) instead of materialized as a float [B, B, B] mask
_COUNTED_MINERS = {"semihard": "semihard", "hard": "hard", "triplet_margin": None}


def _keyword_defaults(fn: Callable) -> dict:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _counted_apply(name, loss_fn, kind, miner, miner_kwargs, loss_kwargs):
    """An ``apply`` that never builds the ``[B, B, B]`` mask of a margin-type triplet miner, or None.

    * triplet_margin (hinge, no swap) with the miner on the same distances: the loss from per-pair
      counts of the active mined triplets (:func:`_hinge_triplets_counted`), ``O(B^2 log B)``;
    * pair losses: the miner's pair multiplicities (``triplets_to_pairs`` of its mask) counted
      directly.

    Both equal the mask-based computation (same comparisons, exact integer counts).
    """
    mk = {**_keyword_defaults(_miners.MINERS[miner]), **miner_kwargs}
    m_type = _COUNTED_MINERS[miner] or mk["type_of_triplets"]
    check_choice(m_type, "type_of_triplets", _miners._TRIPLET_TYPES)
    m_margin, m_norm, m_sq = mk["margin"], mk["normalize"], mk["squared"]
    lk = {**_keyword_defaults(loss_fn), **loss_kwargs}

    if kind == "triplet":
        if lk["swap"] or lk["smooth"] or (lk["normalize"], lk["squared"]) != (m_norm, m_sq):
            return None

        def apply_counted_triplets(params, embeddings, labels, key):
            del params, key
            emb, lab = check_embeddings_labels(embeddings, labels)
            _reducers.get(lk["reduction"])
            _check_hyper(margin=lk["margin"])
            d = distance_matrix(emb, normalize=m_norm, squared=m_sq)
            return _hinge_triplets_counted(
                d, lab, lk["margin"], lk["reduction"], miner_type=m_type, miner_margin=m_margin
            )

        return apply_counted_triplets

    def apply_counted_pairs(params, embeddings, labels, key):
        del params, key
        emb, lab = check_embeddings_labels(embeddings, labels)
        dm = distance_matrix(jax.lax.stop_gradient(emb), normalize=m_norm, squared=m_sq)
        pair_mask = _miners._triplet_margin_counts(
            dm, lab, margin=m_margin, type_of_triplets=m_type
        )
        return loss_fn(embeddings, labels, pair_mask=pair_mask, **loss_kwargs)

    return apply_counted_pairs


def build(
    name: str,
    *,
    miner: str | None = None,
    miner_kwargs: dict | None = None,
    n_classes: int | None = None,
    embedding_dim: int | None = None,
    **loss_kwargs: Any,
) -> LossSpec:
    """Bundle a loss (a key of :data:`LOSSES`), an optional miner and the loss parameters.

    Miner compatibility: pair losses (contrastive, lifted_structure, multi_similarity, circle, ntxent,
    supcon) take pair miners directly and triplet miners through
    :func:`metriclearn.miners.triplets_to_pairs` (multiplicities, as PML); triplet_margin takes triplet
    miners directly and pair miners through :func:`metriclearn.miners.pairs_to_triplets`; ``"all"``
    means all valid pairs / triplets. n_pairs and the proxy losses take no miner.

    The margin-type triplet miners (``semihard``, ``hard``, ``triplet_margin``) are never materialized
    as ``[B, B, B]`` masks here: triplet_margin (hinge, no swap, same distance options as the miner)
    gets per-pair counts of the mined active triplets, pair losses the miner's pair multiplicities,
    both counted directly (same comparisons, same values and gradients as mining then reducing).

    Args:
      name: loss name.
      miner: miner name (a key of :data:`metriclearn.miners.MINERS`) or None.
      miner_kwargs: keyword arguments for the miner (e.g. ``{"margin": 0.2}``).
      n_classes: number of classes (required by proxy_nca, proxy_anchor, arcface, cosface).
      embedding_dim: embedding size (required by the same).
      **loss_kwargs: keyword arguments of the loss (e.g. ``margin=0.1``).

    Returns:
      :class:`LossSpec` ``(init, apply)``. Equal arguments (hashable ones) give the same object, so
      the jitted programs built for it (``training.make_train_epoch``) are reused, not recompiled.

    Raises:
      ValueError: unknown loss / miner / keyword, miner not applicable to the loss, or missing
        ``n_classes`` / ``embedding_dim`` for a proxy loss.

    Example::

      spec = build("contrastive", miner="pair_margin", miner_kwargs={"pos_margin": 0.2})
      params = spec.init(key)
      loss = jax.jit(spec.apply)(params, emb, labels, key)
    """
    miner_kwargs = check_kwargs(miner_kwargs, "miner_kwargs")  # [1] was an AttributeError
    # checked before the cache: 10.0 equals 10, so after a build with 10 a later 10.0 skipped the check
    if n_classes is not None:
        n_classes = check_positive_int(n_classes, "n_classes")
    if embedding_dim is not None:
        embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
    # unhashable arguments (e.g. arrays) build a fresh spec
    return _build_from_items(
        name, miner, _items(miner_kwargs), n_classes, embedding_dim, _items(loss_kwargs)
    )


def _items(kwargs: dict) -> tuple:
    # the type is part of the key: True and 1, or 1 and 1.0, must not share a cached spec
    return tuple((k, type(v), v) for k, v in sorted(kwargs.items()))


@reuse(64)
def _build_from_items(name, miner, miner_items, n_classes, embedding_dim, loss_items) -> LossSpec:
    miner_kwargs = {k: v for k, _, v in miner_items}
    loss_kwargs = {k: v for k, _, v in loss_items}
    return _build(name, miner, miner_kwargs, n_classes, embedding_dim, loss_kwargs)


def _trace_stand_in(fn, kwargs, *, key: bool = False, proxies=None) -> None:
    """Trace ``fn(embeddings, labels, **kwargs)`` on an abstract stand-in batch of 4 (``jax.eval_shape``:
    nothing is computed), so the checks a loss or miner makes of its settings when it is traced run
    at ``build``: ``build("ntxent", temperature=0.0)`` was refused only at the first ``apply``.
    ``key``: the function takes a PRNG key first; ``proxies``: ``(n_classes, dim)`` of a proxy loss's
    third argument."""
    dim = 2 if proxies is None else proxies[1]
    args = [jax.ShapeDtypeStruct((4, dim), jnp.float32), jax.ShapeDtypeStruct((4,), jnp.int32)]
    if proxies is not None:
        args.append(jax.ShapeDtypeStruct(proxies, jnp.float32))
    if key:
        args.insert(0, jax.eval_shape(lambda: jax.random.key(0)))
    jax.eval_shape(lambda *a: fn(*a, **kwargs), *args)


def _build(name, miner, miner_kwargs, n_classes, embedding_dim, loss_kwargs) -> LossSpec:
    check_choice(name, "loss", LOSSES)
    loss_fn = LOSSES[name]
    kind = LOSS_KIND[name]
    miner_kwargs = dict(miner_kwargs or {})
    if miner is not None:
        check_choice(miner, "miner", _miners.MINERS)
        if kind in ("none", "proxy"):
            raise ValueError(
                f"loss {name!r} does not take a miner (got miner={miner!r}); use miner=None"
            )
        _check_kwargs(_miners.MINERS[miner], miner_kwargs, f"miner {miner!r}")
        # the miner's own checks of its settings (margins, epsilon, cutoffs) run here, by tracing the
        # public miner: the counted triplet miners below do not go through it (a NaN margin mined
        # nothing: loss 0, no error)
        _trace_stand_in(_miners.MINERS[miner], miner_kwargs, key=miner in _miners.NEEDS_KEY)
    elif miner_kwargs:
        raise ValueError("miner_kwargs given without a miner")
    exclude = ("pair_mask", "triplet_mask")
    for k in exclude:
        if k in loss_kwargs:
            raise ValueError(f"{k} is supplied by the miner inside apply; do not pass it to build")
    _check_kwargs(loss_fn, loss_kwargs, f"loss {name!r}", exclude=exclude)

    if kind == "proxy":
        if n_classes is None or embedding_dim is None:
            raise ValueError(
                f"loss {name!r} has learnable parameters: pass n_classes and embedding_dim "
                f"(got n_classes={n_classes!r}, embedding_dim={embedding_dim!r})"
            )
    # the loss's own checks of its settings (finite margins, positive temperatures, ...), now
    _trace_stand_in(
        loss_fn, loss_kwargs, proxies=(n_classes, embedding_dim) if kind == "proxy" else None
    )

    if kind == "proxy":
        pname = _PARAM_NAME[name]

        def init(key: jax.Array) -> dict:
            return {pname: init_proxies(key, n_classes, embedding_dim)}

        def apply(params: dict, embeddings: jax.Array, labels: jax.Array, key: jax.Array):
            del key
            if pname not in params:
                raise ValueError(f"params must contain {pname!r}, got keys {sorted(params)}")
            return loss_fn(embeddings, labels, params[pname], **loss_kwargs)

        return LossSpec(init, apply)

    def init_empty(key: jax.Array) -> dict:
        del key
        return {}

    if miner is None or miner == "all":

        def apply_plain(params: dict, embeddings: jax.Array, labels: jax.Array, key: jax.Array):
            del params, key
            return loss_fn(embeddings, labels, **loss_kwargs)

        return LossSpec(init_empty, apply_plain)

    if miner in _COUNTED_MINERS:
        counted = _counted_apply(name, loss_fn, kind, miner, miner_kwargs, loss_kwargs)
        if counted is not None:
            return LossSpec(init_empty, counted)

    mine_fn = _miners.MINERS[miner]
    out_kind = _miners.MINER_OUTPUT[miner]
    needs_key = miner in _miners.NEEDS_KEY

    def mine(embeddings, labels, key):
        if needs_key:
            return mine_fn(key, embeddings, labels, **miner_kwargs)
        return mine_fn(embeddings, labels, **miner_kwargs)

    def apply_mined(params: dict, embeddings: jax.Array, labels: jax.Array, key: jax.Array):
        del params
        mined = mine(embeddings, labels, key)
        if kind == "pair":
            pair_mask = _miners.triplets_to_pairs(mined) if out_kind == "triplet" else mined
            return loss_fn(embeddings, labels, pair_mask=pair_mask, **loss_kwargs)
        triplet_mask = _miners.pairs_to_triplets(*mined) if out_kind == "pair" else mined
        return loss_fn(embeddings, labels, triplet_mask=triplet_mask, **loss_kwargs)

    return LossSpec(init_empty, apply_mined)
