"""Miners: choose the informative pairs or triplets of a batch, as fixed-shape masks.

A miner looks at the (gradient-stopped) embeddings and labels of a batch of ``B`` examples and returns

* **pair miners** -> ``(pos_mask, neg_mask)``, two ``[B, B]`` float arrays; ``pos_mask[a, p] > 0``
  selects the positive pair ``(a, p)`` (same label, ``a != p``), ``neg_mask[a, n] > 0`` the negative
  pair ``(a, n)`` (different labels). Values are weights (1.0 for a plain selection).
* **triplet miners** -> ``triplet_mask``, a ``[B, B, B]`` float array indexed
  ``[anchor, positive, negative]``; 1.0 selects the triplet.

Shapes never depend on the data, so every miner jits; nothing is a variable-length index list.
:data:`MINER_OUTPUT` says which kind each entry of :data:`MINERS` returns, :data:`NEEDS_KEY` which ones
sample (they take a PRNG ``key`` first). :func:`pairs_to_triplets` and :func:`triplets_to_pairs` convert
between the two kinds the way pytorch-metric-learning (PML) does.

Distances are Euclidean between L2-normalized embeddings by default (``normalize=True,
squared=False``), which is PML's default ``LpDistance``; ``multi_similarity`` works on cosine
similarity, as PML's ``MultiSimilarityMiner``.

Semi-hard, two definitions (both offered):

* ``semihard`` (PML ``TripletMarginMiner(type_of_triplets="semihard")``): **every** triplet with
  ``d(a,p) < d(a,n) <= d(a,p) + margin``.
* ``semihard_facenet`` (Schroff et al. 2015, FaceNet): for each anchor-positive pair **one** negative, the
  closest one that is still farther than the positive, kept only if it lies inside the margin band
  ``d(a,p) < d(a,n) < d(a,p) + margin``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from metriclearn import miners
    >>> x = jax.random.normal(jax.random.key(0), (8, 4)); y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> miners.MINERS["semihard"](x, y, margin=0.5).shape
    (8, 8, 8)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import (
    as_key,
    check_array,
    check_choice,
    check_flags,
    check_hyper,
    check_int32_ids,
    is_traced,
)
from metriclearn.distances import _grid_centre, pairwise_sqeuclidean, safe_sqrt

__all__ = [
    "MINERS",
    "MINER_OUTPUT",
    "NEEDS_KEY",
    "all_pairs",
    "all_triplets",
    "batch_easy_hard",
    "batch_hard",
    "check_embeddings_labels",
    "distance_matrix",
    "distance_weighted",
    "get",
    "hard",
    "l2_normalize",
    "label_masks",
    "multi_similarity",
    "pair_margin",
    "pairs_to_triplets",
    "semihard",
    "semihard_facenet",
    "triplet_margin",
    "triplets_to_pairs",
]


# --------------------------------------------------------------------------------------------------
# shared helpers (also used by metriclearn.losses)
# --------------------------------------------------------------------------------------------------


def check_embeddings(embeddings, name: str = "embeddings") -> jax.Array:
    """``[B, d]`` finite embeddings with ``B, d >= 1`` (a ``[B, 0]`` batch gave losses of empty sums);
    float16 / bfloat16 upcast to float32: squared norms overflow float16 at ``|x| ~ 256`` (the L2
    normalization then made every row 0). Concrete batches whose centred squared norms overflow
    (distances beyond the dtype) raise ``ValueError``."""
    emb = check_array(embeddings, name, ndim=2, min_rows=1, min_features=1)
    emb = emb.astype(jnp.float32) if emb.dtype in (jnp.float16, jnp.bfloat16) else emb
    if not is_traced(emb):
        # distances square the (centred) rows: inf, then a NaN or a silent 0 (far from the
        # origin but close together, as 2e19 +- 1e18, stays fine: the batch is centred first)
        centred = _centred(emb)
        if not bool(jnp.all(jnp.isfinite(jnp.sum(centred * centred, axis=1)))):
            raise ValueError(
                f"{name} are too far apart for {emb.dtype}: a squared distance overflows "
                f"(largest |entry| {float(jnp.max(jnp.abs(emb))):.3g}); rescale them or use float64"
            )
    return emb


def check_embeddings_labels(embeddings, labels, *, name: str = "embeddings"):
    """Validate a batch at the public boundary; returns ``(embeddings [B, d] float, labels [B] int32)``.

    Works on concrete arrays (full checks: rank, finiteness, integer labels, matching length) and on
    traced ones inside ``jit`` (shape and dtype checks only). A batch with one class is allowed: the
    losses return 0 for it. float16 / bfloat16 embeddings are upcast to float32.
    """
    emb = check_embeddings(embeddings, name)
    if labels is None:
        raise ValueError("labels is required, got None")
    if is_traced(labels):
        lab = labels
        if not (jnp.issubdtype(lab.dtype, jnp.integer) or lab.dtype == jnp.bool_):
            # eagerly whole floats are taken; traced ones cannot be checked (0.5 was truncated to 0)
            raise ValueError(
                f"labels must be integer class ids, got dtype {lab.dtype} under jit (pass int labels)"
            )
    else:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iub":
            if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
                lab = lab.astype(np.int64)
            else:
                raise ValueError(f"labels must be integer class ids, got dtype {lab.dtype}")
        check_int32_ids(lab, "labels")
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-dimensional, got shape {tuple(lab.shape)}")
    if lab.shape[0] != emb.shape[0]:
        raise ValueError(
            f"labels has {lab.shape[0]} entries but {name} has {emb.shape[0]} rows "
            f"(shapes {tuple(lab.shape)} and {tuple(emb.shape)})"
        )
    return emb, jnp.asarray(lab, dtype=jnp.int32)


def l2_normalize(x: jax.Array, *, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / |x|`` along ``axis``; a zero vector maps to zero with zero (finite) gradient.

    For ``|x| > eps`` the values equal ``torch.nn.functional.normalize`` (which divides by
    ``max(|x|, eps)``); below ``eps`` the result is 0 instead of ``x / eps``.
    """
    check_hyper(nonnegative=("eps",), eps=eps)  # NaN zeroed every row, a negative one made NaN
    if jnp.iscomplexobj(x):  # sum(x * x) is not |x|^2 for complex x
        raise ValueError(f"l2_normalize needs real x, got {jnp.result_type(x)}")
    return x * _l2_scale(x, axis=axis, eps=eps)


def _l2_scale(x: jax.Array, *, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """The factor :func:`l2_normalize` multiplies by: ``1 / |x|`` where ``|x| > eps``, else 0.

    A row whose ``|x|^2`` overflows (float32 norms beyond ~1.8e19) gets NaN, not ``1 / inf = 0``:
    the failure shows (``fit`` names the step) instead of an all-zero embedding.
    """
    norm = safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    ok = norm > eps
    scale = jnp.where(ok, 1.0 / jnp.where(ok, norm, 1.0), 0.0)
    return jnp.where(norm == jnp.inf, jnp.nan, scale)


def _centred(x: jax.Array) -> jax.Array:
    """The rows minus :func:`metriclearn.distances._grid_centre`: a centre near their mean with few
    significant bits, so pairwise distances are unchanged, lose nothing to cancellation far from
    the origin (``1000 + 0.1 N(0, 1)``), and points on a grid stay on it (exact ties stay ties for
    the miners). The centre is a constant of the gradient, which is unchanged: the distances do not
    depend on it.
    """
    return x - _grid_centre(x)


def distance_matrix(
    embeddings: jax.Array, *, normalize: bool = True, squared: bool = False
) -> jax.Array:
    """Pairwise Euclidean (or squared Euclidean) distances ``[B, B]``, optionally after L2-normalizing.

    Uses :func:`metriclearn.distances.pairwise_sqeuclidean` (exact zero diagonal) and a safe sqrt, so
    gradients are finite when embeddings coincide. Without normalization the batch is centred first
    (distances do not change): ``|x|^2 + |y|^2 - 2 x.y`` cancels in float32 for embeddings far from
    the origin (1000 + 0.1 N(0, 1) gave a contrastive loss of 2.0 instead of 0.98).
    """
    check_flags(normalize=normalize, squared=squared)  # for every miner passing its flags here
    x = l2_normalize(embeddings) if normalize else _centred(embeddings)
    d2 = pairwise_sqeuclidean(x)
    return d2 if squared else safe_sqrt(d2)


def cosine_similarity_matrix(embeddings: jax.Array) -> jax.Array:
    """Cosine similarities ``[B, B]`` of the rows (zero rows give similarity 0)."""
    x = l2_normalize(embeddings)
    return x @ x.T


def label_masks(labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Boolean ``(positive [B, B], negative [B, B])``: same label and ``i != j``; different label."""
    same = labels[:, None] == labels[None, :]
    eye = jnp.eye(labels.shape[0], dtype=bool)
    return same & ~eye, ~same


def _triplet_valid(labels: jax.Array) -> jax.Array:
    pos, neg = label_masks(labels)
    return pos[:, :, None] & neg[:, None, :]


def pairs_to_triplets(pos_mask: jax.Array, neg_mask: jax.Array) -> jax.Array:
    """Triplet mask ``[B, B, B]`` from pair masks: ``T[a, p, n] = pos[a, p] * neg[a, n]``.

    Every mined positive pair is combined with every mined negative pair that shares its anchor
    (PML's ``convert_to_triplets`` for a pair tuple).
    """
    pos_mask, neg_mask = jnp.asarray(pos_mask), jnp.asarray(neg_mask)
    if (
        pos_mask.ndim != 2
        or pos_mask.shape[0] != pos_mask.shape[1]
        or neg_mask.shape != pos_mask.shape
    ):
        raise ValueError(
            "pos_mask and neg_mask must both be [B, B], got shapes "
            f"{tuple(pos_mask.shape)} and {tuple(neg_mask.shape)}"
        )
    return pos_mask[:, :, None] * neg_mask[:, None, :]


def triplets_to_pairs(triplet_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pair weights from a triplet mask: ``pos[a, p] = sum_n T[a,p,n]``, ``neg[a, n] = sum_p T[a,p,n]``.

    The weights are multiplicities: PML turns triplets ``(a, p, n)`` into pairs ``(a, p)`` and
    ``(a, n)`` with repetitions, and weighted reducers count a pair as often as it occurs.
    """
    triplet_mask = jnp.asarray(triplet_mask)
    if triplet_mask.ndim != 3 or len(set(triplet_mask.shape)) != 1:
        raise ValueError(f"triplet_mask must be [B, B, B], got shape {tuple(triplet_mask.shape)}")
    return jnp.sum(triplet_mask, axis=2), jnp.sum(triplet_mask, axis=1)


def _prepare(embeddings, labels):
    emb, lab = check_embeddings_labels(embeddings, labels)
    return jax.lax.stop_gradient(emb), lab


# --------------------------------------------------------------------------------------------------
# triplet miners
# --------------------------------------------------------------------------------------------------


def all_triplets(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
    """Every valid triplet: ``y_a = y_p``, ``a != p``, ``y_a != y_n``.

    Args:
      embeddings: ``[B, d]`` (only the batch size is used).
      labels: ``[B]`` integer class ids.

    Returns:
      Triplet mask ``[B, B, B]`` (float, 0/1).
    """
    emb, lab = _prepare(embeddings, labels)
    return _triplet_valid(lab).astype(emb.dtype)


def all_pairs(embeddings: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every positive pair (same label, ``a != p``) and every negative pair.

    Returns:
      ``(pos_mask [B, B], neg_mask [B, B])`` float 0/1.
    """
    emb, lab = _prepare(embeddings, labels)
    pos, neg = label_masks(lab)
    return pos.astype(emb.dtype), neg.astype(emb.dtype)


_TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def triplet_margin(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.2,
    type_of_triplets: str = "all",
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """Triplets by their margin ``m(a,p,n) = d(a,n) - d(a,p)``, as PML's ``TripletMarginMiner``.

    * ``"all"``: ``m <= margin`` (all margin-violating triplets);
    * ``"hard"``: ``m <= 0`` (negative at least as close as the positive);
    * ``"semihard"``: ``0 < m <= margin``;
    * ``"easy"``: ``m > margin``.

    Args:
      embeddings: ``[B, d]``.
      labels: ``[B]`` integer class ids.
      margin: the margin band.
      type_of_triplets: one of the four above.
      normalize: L2-normalize embeddings first.
      squared: use squared Euclidean distances.

    Returns:
      Triplet mask ``[B, B, B]`` float 0/1 (anchor, positive, negative).

    Reference: Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (PML).
    """
    check_choice(type_of_triplets, "type_of_triplets", _TRIPLET_TYPES)
    check_hyper(margin=margin)
    emb, lab = _prepare(embeddings, labels)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    m = d[:, None, :] - d[:, :, None]  # [a, p, n] = d(a,n) - d(a,p)
    cond = _margin_condition(m, type_of_triplets, margin)
    return (cond & _triplet_valid(lab)).astype(emb.dtype)


def _margin_condition(m: jax.Array, kind: str | None, margin: float) -> jax.Array:
    """Which triplets a :func:`triplet_margin` miner of type ``kind`` keeps, from ``m = d(a,n) - d(a,p)``.

    ``kind=None`` keeps every triplet.
    """
    if kind is None:
        return jnp.ones(m.shape, bool)
    if kind == "easy":
        return m > margin
    cond = m <= margin
    if kind == "hard":
        cond = cond & (m <= 0)
    elif kind == "semihard":
        cond = cond & (m > 0)
    return cond


def _triplet_margin_counts(
    d: jax.Array,
    labels: jax.Array,
    *,
    margin: float,
    type_of_triplets: str | None,
    loss_margin: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Pair multiplicities of the :func:`triplet_margin` miner without materializing its mask.

    With ``T`` the miner's triplet mask on the distance matrix ``d`` (and, if ``loss_margin`` is given,
    only the triplets with a positive hinge ``(d(a,p) - d(a,n)) + loss_margin > 0``) this returns
    ``(sum_n T[a, p, n], sum_p T[a, p, n])``, i.e. :func:`triplets_to_pairs` of that mask, exactly
    (integer counts, the same floating-point comparisons). The ``[B, B, B]`` condition is a boolean
    expression of ``[B, B]`` operands summed as int32: no float mask, no gradient through it. (Exact
    bisection on sorted rows would be ``O(B^2 log B)``, but XLA:CPU's gathers made it 4x slower at
    ``B = 128``.)

    Args:
      d: ``[B, B]`` distances (gradient is stopped here).
      labels: ``[B]`` int class ids.
      margin: miner margin.
      type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"``, ``"easy"``, or None for every valid
        triplet (no miner condition).
      loss_margin: if given, keep only triplets active in the triplet-margin hinge with this margin.

    Returns:
      ``(pos_counts [B, B], neg_counts [B, B])`` in ``d.dtype``.
    """
    d = jax.lax.stop_gradient(d)
    pos, neg = label_masks(labels)
    dap = d[:, :, None]
    dan = d[:, None, :]
    m = dan - dap  # [a, p, n], as in triplet_margin
    keep = pos[:, :, None] & neg[:, None, :] & _margin_condition(m, type_of_triplets, margin)
    if loss_margin is not None:
        keep = keep & ((dap - dan) + loss_margin > 0)
    # integer sums: on XLA:CPU a float sum of the [B, B, B] condition goes to a library reduction
    # that first writes the condition out as floats; the int32 sums ran the step 12% faster
    pos_counts = jnp.sum(keep, axis=2, dtype=jnp.int32)
    neg_counts = jnp.sum(keep, axis=1, dtype=jnp.int32)
    return pos_counts.astype(d.dtype), neg_counts.astype(d.dtype)


def hard(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.2,
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """Hard triplets ``d(a,n) <= d(a,p)`` (PML ``TripletMarginMiner(type_of_triplets="hard")``).

    Returns a triplet mask ``[B, B, B]``; see :func:`triplet_margin` (``margin`` only matters through
    ``m <= margin``, which ``m <= 0`` implies for ``margin >= 0``).
    """
    return triplet_margin(
        embeddings,
        labels,
        margin=margin,
        type_of_triplets="hard",
        normalize=normalize,
        squared=squared,
    )


def semihard(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.2,
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """Semi-hard triplets, PML's definition: all with ``d(a,p) < d(a,n) <= d(a,p) + margin``.

    Returns a triplet mask ``[B, B, B]``. For FaceNet's one-negative-per-pair variant see
    :func:`semihard_facenet`.
    """
    return triplet_margin(
        embeddings,
        labels,
        margin=margin,
        type_of_triplets="semihard",
        normalize=normalize,
        squared=squared,
    )


def semihard_facenet(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.2,
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """FaceNet semi-hard mining: per anchor-positive pair, the closest negative farther than the positive.

    For each valid ``(a, p)``: ``n* = argmin { d(a,n) : y_n != y_a, d(a,n) > d(a,p) }``, kept when
    ``d(a,n*) < d(a,p) + margin`` (else the pair gets no triplet; it would have zero loss anyway).

    Returns:
      Triplet mask ``[B, B, B]`` with at most one negative per ``(a, p)``.

    Reference: Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015.
    """
    check_hyper(margin=margin)
    emb, lab = _prepare(embeddings, labels)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    pos, neg = label_masks(lab)
    dap = d[:, :, None]
    dan = d[:, None, :]
    cand = neg[:, None, :] & (dan > dap)  # [a, p, n]
    big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)
    scores = jnp.where(cand, jnp.broadcast_to(dan, cand.shape), big)
    best = jnp.argmin(scores, axis=2)  # [a, p]
    best_d = jnp.take_along_axis(scores, best[:, :, None], axis=2)[:, :, 0]
    keep = pos & jnp.any(cand, axis=2) & (best_d < d + margin)
    onehot = jax.nn.one_hot(best, lab.shape[0], dtype=emb.dtype)
    return onehot * keep[:, :, None].astype(emb.dtype)


_STRATEGIES = ("easy", "hard", "semihard")


def batch_easy_hard(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    pos_strategy: str = "easy",
    neg_strategy: str = "semihard",
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """One triplet per anchor: a positive and a negative chosen by strategy (PML ``BatchEasyHardMiner``).

    Positives: ``"easy"`` = closest, ``"hard"`` = farthest, ``"semihard"`` = farthest positive that is
    still closer than the chosen negative. Negatives: ``"easy"`` = farthest, ``"hard"`` = closest,
    ``"semihard"`` = closest negative that is farther than the chosen positive. Both cannot be
    ``"semihard"``. Anchors without a valid choice get no triplet. Ties go to the lowest index.

    Returns:
      Triplet mask ``[B, B, B]`` with at most one triplet per anchor.

    Reference: Xuan, Stylianou, Pless, "Improved Embeddings with Easy Positive Triplet Mining",
    WACV 2020.
    """
    check_choice(pos_strategy, "pos_strategy", _STRATEGIES)
    check_choice(neg_strategy, "neg_strategy", _STRATEGIES)
    if pos_strategy == neg_strategy == "semihard":
        raise ValueError('pos_strategy and neg_strategy cannot both be "semihard"')
    emb, lab = _prepare(embeddings, labels)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    pos, neg = label_masks(lab)
    big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)

    def pick(mask, closest, threshold=None):
        if threshold is not None:
            mask = mask & ((d < threshold[:, None]) if not closest else (d > threshold[:, None]))
        if closest:
            idx = jnp.argmin(jnp.where(mask, d, big), axis=1)
        else:
            idx = jnp.argmax(jnp.where(mask, d, -big), axis=1)
        return idx, jnp.take_along_axis(d, idx[:, None], axis=1)[:, 0], jnp.any(mask, axis=1)

    pos_closest = pos_strategy == "easy"  # hard/semihard positive = farthest
    neg_closest = neg_strategy in ("hard", "semihard")
    if pos_strategy == "semihard":
        n_idx, n_d, n_ok = pick(neg, neg_closest)
        p_idx, _, p_ok = pick(pos, False, threshold=n_d)
    elif neg_strategy == "semihard":
        p_idx, p_d, p_ok = pick(pos, pos_closest)
        n_idx, _, n_ok = pick(neg, True, threshold=p_d)
    else:
        p_idx, _, p_ok = pick(pos, pos_closest)
        n_idx, _, n_ok = pick(neg, neg_closest)
    b = lab.shape[0]
    keep = (p_ok & n_ok).astype(emb.dtype)
    p1 = jax.nn.one_hot(p_idx, b, dtype=emb.dtype)
    n1 = jax.nn.one_hot(n_idx, b, dtype=emb.dtype)
    return p1[:, :, None] * n1[:, None, :] * keep[:, None, None]


def batch_hard(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    normalize: bool = True,
    squared: bool = False,
) -> jax.Array:
    """Batch-hard mining: per anchor the farthest positive and the closest negative (PML ``BatchHardMiner``).

    Returns:
      Triplet mask ``[B, B, B]`` with at most one triplet per anchor.

    Reference: Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017.
    """
    return batch_easy_hard(
        embeddings,
        labels,
        pos_strategy="hard",
        neg_strategy="hard",
        normalize=normalize,
        squared=squared,
    )


def distance_weighted(
    key: jax.Array,
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
) -> jax.Array:
    """Distance-weighted sampling: per anchor-positive pair one negative drawn with ``p ∝ 1/q(d)``.

    On the unit sphere in ``R^k`` the density of pairwise distances is
    ``q(d) ∝ d^(k-2) (1 - d^2/4)^((k-3)/2)``; negatives are sampled with weight
    ``1/q(max(d, cutoff))``, and never when ``d >= nonzero_loss_cutoff`` (they would give zero loss).
    Embeddings are L2-normalized first, as in the paper and PML's ``DistanceWeightedMiner``.
    Unlike PML (which draws random positives), every valid ``(a, p)`` gets exactly one negative, so the
    output shape is fixed. Pairs whose anchor has no admissible negative get none.

    Args:
      key: PRNG key.
      embeddings: ``[B, d]``.
      labels: ``[B]``.
      cutoff: lower clip of the distance (bounds the weights); below ``nonzero_loss_cutoff`` and 2.
      nonzero_loss_cutoff: distances at or above this get weight 0.

    Returns:
      Triplet mask ``[B, B, B]`` with at most one negative per ``(a, p)``.

    Reference: Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep Embedding Learning", ICCV 2017.
    """
    check_hyper(
        ("cutoff", "nonzero_loss_cutoff"), cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff
    )
    # distances are clipped up to cutoff before the nonzero_loss_cutoff test, and unit vectors are
    # at most 2 apart: either way no negative could ever be drawn (a zero loss on every batch)
    if not is_traced(cutoff) and not is_traced(nonzero_loss_cutoff):
        if not float(cutoff) < min(float(nonzero_loss_cutoff), 2.0):
            raise ValueError(
                f"cutoff must be below nonzero_loss_cutoff and 2 (the largest distance of unit "
                f"vectors), got cutoff={cutoff!r}, nonzero_loss_cutoff={nonzero_loss_cutoff!r}: "
                "no negative could be sampled"
            )
    key = as_key(key)
    emb, lab = _prepare(embeddings, labels)
    k = emb.shape[1]
    d = jnp.maximum(distance_matrix(emb, normalize=True, squared=False), cutoff)
    inner = 1.0 - 0.25 * d * d
    ok_inner = inner > 0
    log_w = (2.0 - k) * jnp.log(d) - ((k - 3) / 2.0) * jnp.log(jnp.where(ok_inner, inner, 1.0))
    pos, neg = label_masks(lab)
    admissible = neg & ok_inner & (d < nonzero_loss_cutoff)
    logits = jnp.where(admissible, log_w, -jnp.inf)
    b = lab.shape[0]
    row_ok = jnp.any(admissible, axis=1)
    logits = jnp.where(row_ok[:, None], logits, 0.0)
    n_idx = jax.random.categorical(key, jnp.broadcast_to(logits[:, None, :], (b, b, b)), axis=-1)
    keep = (pos & row_ok[:, None]).astype(emb.dtype)
    return jax.nn.one_hot(n_idx, b, dtype=emb.dtype) * keep[:, :, None]


# --------------------------------------------------------------------------------------------------
# pair miners
# --------------------------------------------------------------------------------------------------


def pair_margin(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    pos_margin: float = 0.2,
    neg_margin: float = 0.8,
    normalize: bool = True,
    squared: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Positive pairs with ``d > pos_margin`` and negative pairs with ``d < neg_margin`` (PML ``PairMarginMiner``).

    Returns:
      ``(pos_mask [B, B], neg_mask [B, B])`` float 0/1.
    """
    check_hyper(pos_margin=pos_margin, neg_margin=neg_margin)
    emb, lab = _prepare(embeddings, labels)
    d = distance_matrix(emb, normalize=normalize, squared=squared)
    pos, neg = label_masks(lab)
    return (pos & (d > pos_margin)).astype(emb.dtype), (neg & (d < neg_margin)).astype(emb.dtype)


def multi_similarity(
    embeddings: jax.Array, labels: jax.Array, *, epsilon: float = 0.1
) -> tuple[jax.Array, jax.Array]:
    """Multi-similarity pair mining on cosine similarity ``S`` (PML ``MultiSimilarityMiner``).

    Keeps positive ``(a, p)`` with ``S_ap - epsilon < max_{n in N(a)} S_an`` and negative ``(a, n)``
    with ``S_an + epsilon > min_{p in P(a)} S_ap``; anchors without negatives (resp. positives) keep no
    positives (resp. negatives).

    Returns:
      ``(pos_mask [B, B], neg_mask [B, B])`` float 0/1.

    Reference: Wang et al., "Multi-Similarity Loss with General Pair Weighting", CVPR 2019.
    """
    check_hyper(epsilon=epsilon)
    emb, lab = _prepare(embeddings, labels)
    s = cosine_similarity_matrix(emb)
    pos, neg = label_masks(lab)
    big = jnp.asarray(jnp.finfo(s.dtype).max, s.dtype)
    max_neg = jnp.max(jnp.where(neg, s, -big), axis=1, keepdims=True)
    min_pos = jnp.min(jnp.where(pos, s, big), axis=1, keepdims=True)
    has_neg = jnp.any(neg, axis=1, keepdims=True)
    has_pos = jnp.any(pos, axis=1, keepdims=True)
    pos_keep = pos & has_neg & (s - epsilon < max_neg)
    neg_keep = neg & has_pos & (s + epsilon > min_pos)
    return pos_keep.astype(emb.dtype), neg_keep.astype(emb.dtype)


MINERS: dict[str, Callable] = {
    "all": all_triplets,
    "hard": hard,
    "semihard": semihard,
    "semihard_facenet": semihard_facenet,
    "triplet_margin": triplet_margin,
    "batch_hard": batch_hard,
    "batch_easy_hard": batch_easy_hard,
    "distance_weighted": distance_weighted,
    "multi_similarity": multi_similarity,
    "pair_margin": pair_margin,
}

#: Output kind of each miner: ``"pair"`` -> ``(pos_mask, neg_mask)``, ``"triplet"`` -> ``[B,B,B]``.
#: ``"all"`` returns all triplets; :func:`metriclearn.losses.build` uses all pairs for pair losses.
MINER_OUTPUT: dict[str, str] = {
    "all": "triplet",
    "hard": "triplet",
    "semihard": "triplet",
    "semihard_facenet": "triplet",
    "triplet_margin": "triplet",
    "batch_hard": "triplet",
    "batch_easy_hard": "triplet",
    "distance_weighted": "triplet",
    "multi_similarity": "pair",
    "pair_margin": "pair",
}

#: Miners that sample and therefore take a PRNG ``key`` as first argument.
NEEDS_KEY: frozenset[str] = frozenset({"distance_weighted"})


def get(name: str) -> Callable:
    """The miner called ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    check_choice(name, "miner", MINERS)
    return MINERS[name]
