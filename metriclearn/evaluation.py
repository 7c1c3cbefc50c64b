"""Evaluation: k-NN classification, retrieval metrics (P@1, R-precision, MAP@R, Recall@K, NMI) and
pair-verification metrics (ROC AUC, EER, accuracy at a calibrated threshold).

Nearest neighbours are exact and chunked: query rows are processed in blocks, and for each block the
best ``k`` references are merged across reference blocks with ``jax.lax.top_k``, so memory stays
bounded by ``chunk_size x (ref_chunk_size + k)`` whatever the number of embeddings (never an ``n x n``
matrix). Ties in distance go to the reference with the lower index (``lax.top_k`` is stable), so
results are deterministic and independent of the chunk sizes.

Example::

    from metriclearn import datasets, evaluation
    ds = datasets.load("digits")
    evaluation.knn_accuracy(ds.X[:1000], ds.y[:1000], ds.X[1000:], ds.y[1000:], k=3)   # ~0.97
    evaluation.retrieval_metrics(ds.X, ds.y)   # {'precision_at_1': ..., 'map_at_r': ..., 'nmi': ...}

References:
  Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020 (P@1, R-precision, MAP@R).
  Jegou, Douze, Schmid, "Product quantization for nearest neighbor search", TPAMI 2011 (Recall@K).
  Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 2006 (ROC, AUC).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn import distances
from metriclearn._validation import (
    check_array,
    check_labels,
    check_positive_int,
    check_same_dim,
)
from metriclearn.datasets import _seed_from

__all__ = [
    "accuracy_at_threshold",
    "knn_accuracy",
    "knn_predict",
    "retrieval_metrics",
    "roc_curve",
    "verification_metrics",
]

# metric names ranked by the squared-Euclidean matmul kernel (same order as Euclidean, finer ties)
_EUCLIDEAN_NAMES = ("euclidean", "sqeuclidean")
# names whose checks need no concrete data values (the rest are validated eagerly once)
_PLAIN_NAMES = ("euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski", "cosine")
_DEFAULT_BLOCK_ELEMENTS = 2**24  # distances held per block (64 MB in float32)


# --------------------------------------------------------------------------------------------------
# Chunked exact top-k
# --------------------------------------------------------------------------------------------------


def _resolve_metric(metric, metric_kwargs) -> tuple[Any, tuple, dict]:
    """Return (dist, static_kw, array_kw) for the block kernel.

    ``dist`` is ``None`` for the matmul squared-Euclidean kernel, else a name or callable passed to
    :func:`metriclearn.distances.pairwise`; scalar keyword arguments are static, arrays are traced.
    """
    if metric_kwargs is not None and not isinstance(metric_kwargs, dict):
        raise ValueError(
            f"metric_kwargs must be a dict or None, got {type(metric_kwargs).__name__}"
        )
    kw = dict(metric_kwargs or {})
    if isinstance(metric, str):
        if metric in _EUCLIDEAN_NAMES and not kw:
            return None, (), {}
        if metric == "cosine_similarity":
            raise ValueError(
                "metric 'cosine_similarity' is a similarity (larger is nearer); use 'cosine' "
                "(cosine distance) for nearest neighbours"
            )
    elif callable(metric):
        pass
    else:
        M = np.asarray(metric) if metric is not None else None
        if M is None or M.ndim != 2:
            raise ValueError(
                "metric must be a distance name, a paired distance function or a Mahalanobis matrix "
                f"M [d, d], got {type(metric).__name__}"
                + (f" of shape {M.shape}" if M is not None else "")
            )
        check_array(M, "metric", ndim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"metric (Mahalanobis M) must be square, got shape {M.shape}")
        kw["M"] = M
        metric = "mahalanobis"
    static_kw, array_kw = [], {}
    for name, value in kw.items():
        if isinstance(value, np.ndarray | jax.Array):
            array_kw[name] = jnp.asarray(value)
        else:
            static_kw.append((name, value))
    return metric, tuple(sorted(static_kw)), array_kw


def _block_distances(q, r, array_kw, dist, static_kw):
    if dist is None:
        return distances.pairwise_sqeuclidean(q, r)
    return distances.pairwise(dist, q, r, **dict(static_kw), **array_kw)


@functools.partial(jax.jit, static_argnames=("dist", "static_kw", "k", "exclude_self"))
def _block_topk(q, q_idx, refs, ref_idx, ref_valid, array_kw, *, dist, static_kw, k, exclude_self):
    """Exact top-k (smallest distances, lower index first on ties) of one query block.

    ``refs`` is ``[n_blocks, br, d]`` (zero-padded), ``ref_idx``/``ref_valid`` ``[n_blocks, br]``.
    Returns ``(neg_dist [bq, k], idx [bq, k])``.
    """
    bq = q.shape[0]
    init = (jnp.full((bq, k), -jnp.inf, q.dtype), jnp.full((bq, k), -1, jnp.int32))

    def body(carry, xs):
        best_v, best_i = carry
        r, rid, rvalid = xs
        neg = 0.0 - _block_distances(q, r, array_kw, dist, static_kw)  # 0 - d: no -0.0
        bad = ~rvalid[None, :]
        if exclude_self:
            bad = bad | (q_idx[:, None] == rid[None, :])
        neg = jnp.where(bad, -jnp.inf, neg.astype(q.dtype))
        # running best first: it holds lower indices, so top_k's stable ties keep index order
        cand_v = jnp.concatenate([best_v, neg], axis=1)
        cand_i = jnp.concatenate([best_i, jnp.broadcast_to(rid[None, :], neg.shape)], axis=1)
        v, pos = jax.lax.top_k(cand_v, k)
        return (v, jnp.take_along_axis(cand_i, pos, axis=1)), None

    (v, i), _ = jax.lax.scan(body, init, (refs, ref_idx, ref_valid))
    return v, i


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _chunked_topk(
    Q, R, *, k, metric, metric_kwargs, exclude_self, chunk_size, ref_chunk_size, per_block
):
    """Run the exact chunked top-k of every query row against ``R``; call ``per_block`` on each block.

    ``per_block(start, stop, idx)`` receives ``idx`` ``[bq_padded, k]`` (rows ``>= stop - start`` are
    padding). Raises ``ValueError`` if the metric produced NaN among the selected neighbours.
    """
    dist, static_kw, array_kw = _resolve_metric(metric, metric_kwargs)
    n, m, d = Q.shape[0], R.shape[0], Q.shape[1]
    Q_np, R_np = np.asarray(Q), np.asarray(R)
    if dist is not None and (array_kw or dist not in _PLAIN_NAMES):
        # value checks of the distance (PSD M, probability rows, ...) need concrete arrays: run them
        # once here; names, p and other static options are checked again while tracing.
        distances.pairwise(dist, Q_np[:2], R_np[:2], **dict(static_kw), **array_kw)
    if chunk_size is None:
        chunk_size = max(1, min(n, 1024))
    # block sizes are rounded up (rows padded and masked) so nearby sizes share one compiled shape
    bq = _round_up(min(n, check_positive_int(chunk_size, "chunk_size")), 32)
    if ref_chunk_size is None:
        ref_chunk_size = max(4096, _DEFAULT_BLOCK_ELEMENTS // bq)
    br = _round_up(min(m, check_positive_int(ref_chunk_size, "ref_chunk_size")), 128)
    n_rb = -(-m // br)
    pad = n_rb * br - m
    # padding on the host (NumPy): jnp.pad would compile once per distinct shape
    refs = jnp.asarray(np.pad(R_np, ((0, pad), (0, 0))).reshape(n_rb, br, d))
    ref_idx = jnp.asarray(np.arange(n_rb * br, dtype=np.int32).reshape(n_rb, br))
    ref_valid = jnp.asarray((np.arange(n_rb * br) < m).reshape(n_rb, br))
    for start in range(0, n, bq):
        stop = min(start + bq, n)
        q = Q_np[start:stop]
        if q.shape[0] < bq:  # pad the last block: one compiled shape
            q = np.pad(q, ((0, bq - (stop - start)), (0, 0)))
        q_idx = np.arange(start, start + bq, dtype=np.int32)
        v, idx = _block_topk(
            q,
            q_idx,
            refs,
            ref_idx,
            ref_valid,
            array_kw,
            dist=dist,
            static_kw=static_kw,
            k=k,
            exclude_self=exclude_self,
        )
        if not np.all(np.isfinite(np.asarray(v)[: stop - start])):
            raise ValueError(f"metric {metric!r} produced NaN or infinite distances")
        per_block(start, stop, idx)


# --------------------------------------------------------------------------------------------------
# k-NN classification
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_classes",))
def _vote(idx, codes, *, n_classes):
    """Majority label code of each row of neighbour indices; ties -> smallest code (first max)."""
    votes = jax.nn.one_hot(codes[idx], n_classes, dtype=jnp.int32).sum(axis=1)
    return jnp.argmax(votes, axis=1)


def knn_predict(
    train_X,
    train_y,
    test_X,
    *,
    k: int = 3,
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Predict labels of ``test_X`` by a uniform majority vote of the ``k`` nearest training rows.

    Uniform majority vote; a tie between classes goes to the smallest class label, as in scikit-learn's
    ``KNeighborsClassifier``. Among training rows at equal distance the lower index is taken first
    (deterministic, chunk-independent). The prediction therefore equals scikit-learn's whenever the
    ``k``-th nearest distance is strictly below the ``(k+1)``-th (duplicates and vote ties included);
    when several rows tie *at* the ``k``-th distance, scikit-learn's pick depends on its heap or tree
    traversal order (neither by index nor stable), so the two may differ there.

    Args:
      train_X: ``[n, d]`` training features.
      train_y: ``[n]`` training labels (any sortable dtype).
      test_X: ``[m, d]`` features to classify.
      k: number of neighbours, ``1 <= k <= n``.
      metric: a name of :func:`metriclearn.distances.pairwise` (``"euclidean"``, ``"manhattan"``,
        ``"chebyshev"``, ``"minkowski"`` with ``metric_kwargs={"p": 3}``, ``"cosine"``, ...), a paired
        distance function ``f(x [..., d], y [..., d]) -> [...]``, or a Mahalanobis matrix ``M [d, d]``.
      metric_kwargs: keyword arguments of the metric.
      chunk_size: test rows per block (default: bounded memory, ~16M distances per block).

    Returns:
      ``np.ndarray [m]`` predicted labels, same dtype as ``train_y``.

    Example:
      >>> knn_predict(np.array([[0.], [1.], [10.]]), np.array([0, 0, 1]), np.array([[0.4], [9.]]), k=1)
      array([0, 1])
    """
    train_X = check_array(train_X, "train_X", ndim=2, min_rows=1)
    test_X = check_array(test_X, "test_X", ndim=2, min_rows=1)
    check_same_dim(train_X, test_X, "train_X", "test_X")
    codes = check_labels(train_y, train_X.shape[0], name="train_y", min_classes=1)
    classes = np.unique(np.asarray(train_y))
    k = check_positive_int(k, "k")
    if k > train_X.shape[0]:
        raise ValueError(
            f"k={k} is larger than the number of training samples ({train_X.shape[0]})"
        )
    n_test = test_X.shape[0]
    if chunk_size is None:
        chunk_size = max(1, min(n_test, _DEFAULT_BLOCK_ELEMENTS // train_X.shape[0] // 4))
    # padded like the reference blocks (to a multiple of 128) so nearby sizes share one compile
    codes_j = jnp.asarray(np.pad(codes, (0, _round_up(len(codes), 128) - len(codes))))
    pred = np.empty(n_test, dtype=np.int64)

    def vote(start, stop, idx):
        pred[start:stop] = np.asarray(_vote(idx, codes_j, n_classes=len(classes)))[: stop - start]

    _chunked_topk(
        test_X,
        train_X,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        exclude_self=False,
        chunk_size=chunk_size,
        ref_chunk_size=train_X.shape[0],
        per_block=vote,
    )
    return classes[pred]


def knn_accuracy(
    train_X,
    train_y,
    test_X,
    test_y,
    *,
    k: int = 3,
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    chunk_size: int | None = None,
) -> float:
    """Accuracy of the ``k``-nearest-neighbour classifier (see :func:`knn_predict` for the tie rules).

    :math:`\\text{acc} = \\frac{1}{m}\\sum_i [\\hat y_i = y_i]` with :math:`\\hat y_i` the majority label
    of the ``k`` training rows nearest to test row ``i`` under ``metric``.

    Args:
      train_X: ``[n, d]``; train_y: ``[n]``; test_X: ``[m, d]``; test_y: ``[m]``.
      k, metric, metric_kwargs, chunk_size: as :func:`knn_predict`.

    Returns:
      Python float in ``[0, 1]``.

    Example:
      >>> from metriclearn import datasets
      >>> ds = datasets.load("iris")
      >>> knn_accuracy(ds.X[::2], ds.y[::2], ds.X[1::2], ds.y[1::2], k=3) > 0.9
      True

    Reference: Cover and Hart, "Nearest neighbor pattern classification", IEEE Trans. IT, 1967.
    """
    n_test = np.shape(test_X)[0] if np.ndim(test_X) else 0
    test_y = np.asarray(test_y)
    if test_y.ndim != 1 or test_y.shape[0] != n_test:
        raise ValueError(
            f"test_y must be 1-D with one label per row of test_X ({n_test}), got shape {test_y.shape}"
        )
    pred = knn_predict(
        train_X,
        train_y,
        test_X,
        k=k,
        metric=metric,
        metric_kwargs=metric_kwargs,
        chunk_size=chunk_size,
    )
    return float(np.mean(pred == test_y))


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k_values",))
def _retrieval_block(idx, q_codes, ref_codes, r_counts, *, k_values):
    """Per-query P@1, R-precision, AP@R and hit@k for one block of neighbour indices ``[bq, K]``."""
    match = ref_codes[idx] == q_codes[:, None]  # [bq, K]
    K = idx.shape[1]
    rank = jnp.arange(1, K + 1)
    R = r_counts
    relevant = match & (rank[None, :] <= R[:, None])
    safe_R = jnp.maximum(R, 1).astype(jnp.result_type(float))
    hits = jnp.cumsum(relevant, axis=1)
    r_prec = hits[:, -1] / safe_R
    ap_r = jnp.sum(jnp.where(relevant, hits / rank[None, :], 0.0), axis=1) / safe_R
    recall = [jnp.any(match[:, :kk], axis=1) for kk in k_values]
    return match[:, 0], r_prec, ap_r, recall


def _kmeans_nmi(X: np.ndarray, labels: np.ndarray, seed: int, n_init: int) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    n_clusters = len(np.unique(labels))
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    clusters = km.fit_predict(np.asarray(X, dtype=np.float64))
    return float(normalized_mutual_info_score(labels, clusters))


def _check_retrieval_inputs(embeddings, labels, ref_embeddings, ref_labels):
    """Validate query / reference embeddings and labels for retrieval (also used by ``parallel``).

    Returns:
      ``(Q, q_labels, R, r_labels)``; ``R`` is None when there is no reference set (then
      ``r_labels is q_labels``).
    """
    Q = check_array(embeddings, "embeddings", ndim=2, min_rows=1)
    q_labels = np.asarray(labels)
    if q_labels.ndim != 1 or q_labels.shape[0] != Q.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per row of embeddings ({Q.shape[0]}), got shape "
            f"{q_labels.shape}"
        )
    check_labels(q_labels, Q.shape[0], name="labels", min_classes=1)
    if ref_embeddings is None:
        if ref_labels is not None:
            raise ValueError("ref_labels given without ref_embeddings")
        R, r_labels = None, q_labels
    else:
        R = check_array(ref_embeddings, "ref_embeddings", ndim=2, min_rows=1)
        check_same_dim(Q, R, "embeddings", "ref_embeddings")
        if ref_labels is None:
            raise ValueError("ref_labels is required with ref_embeddings")
        r_labels = np.asarray(ref_labels)
        if r_labels.ndim != 1 or r_labels.shape[0] != R.shape[0]:
            raise ValueError(
                f"ref_labels must be 1-D with one label per row of ref_embeddings ({R.shape[0]}), "
                f"got shape {r_labels.shape}"
            )
        check_labels(r_labels, R.shape[0], name="ref_labels", min_classes=1)
    return Q, q_labels, R, r_labels


def retrieval_metrics(
    embeddings,
    labels,
    ref_embeddings=None,
    ref_labels=None,
    *,
    k_values: Sequence[int] = (1, 2, 4, 8),
    metric: str | Callable | Any = "euclidean",
    metric_kwargs: dict | None = None,
    nmi: bool = True,
    seed=0,
    kmeans_n_init: int = 3,
    chunk_size: int | None = None,
    ref_chunk_size: int | None = None,
) -> dict[str, Any]:
    r"""Retrieval metrics of labelled embeddings, as in "A Metric Learning Reality Check".

    Each query ranks the references by distance (exact, chunked; distance ties by lower index). With
    :math:`R_q` the number of references sharing the query's label (not counting the query itself when
    the queries are the references) and :math:`\mathrm{rel}_q(i)` whether the i-th neighbour shares it:

    - ``precision_at_1`` = mean :math:`\mathrm{rel}_q(1)`;
    - ``r_precision`` = mean :math:`\frac{1}{R_q}\sum_{i\le R_q}\mathrm{rel}_q(i)`;
    - ``map_at_r`` = mean :math:`\frac{1}{R_q}\sum_{i\le R_q} P_q(i)\,\mathrm{rel}_q(i)` with
      :math:`P_q(i)` the precision among the first ``i``;
    - ``recall_at_k`` = ``{k: mean [any of the first k is relevant]}`` (Recall@K of the retrieval
      literature);
    - ``nmi`` = normalized mutual information (scikit-learn, arithmetic mean) between the labels and a
      k-means clustering of the query embeddings into as many clusters as labels (scikit-learn
      ``KMeans(n_init=kmeans_n_init, random_state=seed)``).

    Queries whose label has no reference (:math:`R_q = 0`) are left out of the averages, as
    pytorch-metric-learning's ``AccuracyCalculator`` does; ``n_queries`` says how many were used.
    These match ``AccuracyCalculator(k="max_bin_count")``.

    Args:
      embeddings: ``[n, d]`` query embeddings.
      labels: ``[n]`` query labels.
      ref_embeddings: ``[m, d]`` reference embeddings, or None: the queries are their own references and
        each query is excluded from its own neighbours.
      ref_labels: ``[m]`` reference labels (required with ``ref_embeddings``).
      k_values: the ``k`` of Recall@K.
      metric: ``"euclidean"`` (default), ``"cosine"``, or any name / paired function of
        :func:`metriclearn.distances.pairwise` (with ``metric_kwargs``), or a Mahalanobis matrix ``M``.
      metric_kwargs: keyword arguments of the metric.
      nmi: also cluster and compute ``nmi`` (needs >= 2 query labels).
      seed: int or ``jax.random`` key for k-means.
      kmeans_n_init: k-means restarts.
      chunk_size: query rows per block (default 1024).
      ref_chunk_size: reference rows per block (default ``max(4096, 2**24 // chunk_size)``).
        Memory is about ``chunk_size * (ref_chunk_size + K)`` distances with ``K = max(max R,
        max k_values)``; time grows with ``K`` (the top-K selection dominates for large classes).
        float64 embeddings (with ``jax_enable_x64``) are exact but several times slower on CPU, where
        XLA's fast top-k kernel is float32-only; cast to float32 for large sets.

    Returns:
      dict with ``precision_at_1``, ``r_precision``, ``map_at_r`` (floats), ``recall_at_k``
      (``{k: float}``), ``nmi`` (float, if requested), ``n_queries`` (int).

    Example:
      >>> from metriclearn import datasets
      >>> ds = datasets.load("iris")
      >>> m = retrieval_metrics(ds.X, ds.y)
      >>> sorted(m)
      ['map_at_r', 'n_queries', 'nmi', 'precision_at_1', 'r_precision', 'recall_at_k']
    """
    Q, q_labels, R, r_labels = _check_retrieval_inputs(
        embeddings, labels, ref_embeddings, ref_labels
    )
    self_ref = R is None
    k_values = tuple(check_positive_int(kk, "k_values") for kk in k_values)
    try:
        classes, codes = np.unique(np.concatenate([q_labels, r_labels]), return_inverse=True)
    except TypeError as err:
        raise ValueError(f"labels and ref_labels are not comparable: {err}") from err
    q_codes = codes[: len(q_labels)].astype(np.int32)
    r_codes = codes[len(q_labels) :].astype(np.int32)
    counts = np.bincount(r_codes, minlength=len(classes))
    r_counts = counts[q_codes] - (1 if self_ref else 0)
    n_avail = (Q.shape[0] - 1) if self_ref else R.shape[0]
    if n_avail < 1:
        raise ValueError("embeddings needs at least 2 rows when it is its own reference set")
    valid = r_counts > 0
    if not valid.any():
        raise ValueError(
            "no query has a reference with the same label (every class of labels has a single "
            "member or is missing from ref_labels); R-precision and MAP@R need R >= 1"
        )
    K = max([int(r_counts.max()), *k_values])
    if K > n_avail:
        raise ValueError(
            f"k_values asks for {max(k_values)} neighbours but the reference set has only {n_avail} "
            f"({'embeddings minus the query itself' if self_ref else 'ref_embeddings'})"
        )
    if nmi:
        if len(np.unique(q_codes)) < 2:
            raise ValueError("labels must contain at least 2 classes for nmi (or pass nmi=False)")

    sums = {"p1": 0.0, "rp": 0.0, "ap": 0.0}
    rec = np.zeros(len(k_values))
    qc_j, rc_j, cnt_j = jnp.asarray(q_codes), jnp.asarray(r_codes), jnp.asarray(r_counts)

    def accumulate(start, stop, idx):
        bq = idx.shape[0]
        sl_codes = jnp.pad(qc_j[start:stop], (0, bq - (stop - start)))
        sl_counts = jnp.pad(cnt_j[start:stop], (0, bq - (stop - start)))
        p1, rp, ap, recall = _retrieval_block(idx, sl_codes, rc_j, sl_counts, k_values=k_values)
        w = valid[start:stop]
        n_rows = stop - start
        sums["p1"] += float(np.sum(np.asarray(p1)[:n_rows][w], dtype=np.float64))
        sums["rp"] += float(np.sum(np.asarray(rp, dtype=np.float64)[:n_rows][w]))
        sums["ap"] += float(np.sum(np.asarray(ap, dtype=np.float64)[:n_rows][w]))
        for j, r in enumerate(recall):
            rec[j] += float(np.sum(np.asarray(r)[:n_rows][w]))

    _chunked_topk(
        Q,
        Q if self_ref else R,
        k=K,
        metric=metric,
        metric_kwargs=metric_kwargs,
        exclude_self=self_ref,
        chunk_size=chunk_size,
        ref_chunk_size=ref_chunk_size,
        per_block=accumulate,
    )
    n_q = int(valid.sum())
    out: dict[str, Any] = {
        "precision_at_1": sums["p1"] / n_q,
        "r_precision": sums["rp"] / n_q,
        "map_at_r": sums["ap"] / n_q,
        "recall_at_k": {kk: float(rec[j] / n_q) for j, kk in enumerate(k_values)},
        "n_queries": n_q,
    }
    if nmi:
        kmeans_n_init = check_positive_int(kmeans_n_init, "kmeans_n_init")
        out["nmi"] = _kmeans_nmi(np.asarray(Q), q_codes, _seed_from(seed, "seed"), kmeans_n_init)
    return out


# --------------------------------------------------------------------------------------------------
# Verification (pairs)
# --------------------------------------------------------------------------------------------------


def _check_pairs(scores, same) -> tuple[np.ndarray, np.ndarray]:
    check_array(scores, "distances_or_scores", ndim=1, min_rows=1)
    s = np.asarray(scores, dtype=np.float64)  # NumPy float64: no rounding to float32
    same = np.asarray(same)
    if same.ndim != 1 or same.shape[0] != s.shape[0]:
        raise ValueError(
            f"same must be 1-D with one entry per pair ({s.shape[0]}), got shape {same.shape}"
        )
    if same.dtype != bool:
        if not np.all(np.isin(same, (0, 1))):
            raise ValueError(
                "same must be boolean (or 0/1): True where the pair is a same-class pair"
            )
        same = same.astype(bool)
    if same.all() or not same.any():
        raise ValueError("same must contain both same (True) and different (False) pairs")
    return s, same


def roc_curve(
    distances_or_scores, same, *, higher_is_similar: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of pair verification: one point per distinct threshold (no points dropped).

    A pair is declared "same" when ``distance <= threshold`` (or ``score >= threshold`` with
    ``higher_is_similar=True``). Points run from nothing accepted (first threshold ``-inf`` for
    distances, ``+inf`` for scores) to everything accepted, as scikit-learn's
    ``roc_curve(same, score, drop_intermediate=False)``.

    Args:
      distances_or_scores: ``[p]`` distance (or similarity) of each pair.
      same: ``[p]`` bool, True for same-class pairs.
      higher_is_similar: the first argument is a similarity, not a distance.

    Returns:
      ``(fpr, tpr, thresholds)``, each ``[t]`` NumPy float64, fpr and tpr non-decreasing.

    Example:
      >>> fpr, tpr, thr = roc_curve([0.1, 0.5, 0.9], [True, False, False])
      >>> fpr.tolist(), tpr.tolist()
      ([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
    """
    s, same = _check_pairs(distances_or_scores, same)
    score = s if higher_is_similar else -s
    order = np.argsort(-score, kind="mergesort")
    score, lab = score[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]  # end of each distinct value
    tps = np.cumsum(lab)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thr = np.r_[np.inf, score[last]]
    if not higher_is_similar:
        thr = -thr
    return fpr, tpr, thr


def verification_metrics(
    distances_or_scores, same, *, higher_is_similar: bool = False
) -> dict[str, float]:
    r"""Pair-verification metrics: ROC AUC, equal error rate, best accuracy and their thresholds.

    - ``roc_auc``: area under the ROC curve (trapezoidal; ties count one half), equal to
      scikit-learn's ``roc_auc_score``.
    - ``eer``: the rate where false accepts equal false rejects (:math:`\mathrm{FPR} = 1-\mathrm{TPR}`),
      linearly interpolated between the two ROC points around the crossing; ``eer_threshold`` is the
      threshold of the ROC point nearest the crossing.
    - ``best_accuracy``: the highest accuracy of "same iff distance <= t" over all thresholds ``t``,
      ``best_threshold`` the ``t`` achieving it (calibrate on one set, then apply with
      :func:`accuracy_at_threshold` on another).

    Args:
      distances_or_scores: ``[p]`` distance per pair (or similarity with ``higher_is_similar=True``).
      same: ``[p]`` bool, True for same-class pairs (needs both kinds).
      higher_is_similar: see above.

    Returns:
      dict of floats: ``roc_auc``, ``eer``, ``eer_threshold``, ``best_accuracy``, ``best_threshold``.

    Example:
      >>> m = verification_metrics([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
      >>> m["roc_auc"], m["eer"], m["best_accuracy"]
      (1.0, 0.0, 1.0)

    Reference: Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27 (2006).
    """
    s, same = _check_pairs(distances_or_scores, same)
    fpr, tpr, thr = roc_curve(s, same, higher_is_similar=higher_is_similar)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    fnr = 1.0 - tpr
    gap = fnr - fpr  # non-increasing from 1 to -1
    i = int(np.argmax(gap <= 0))  # first point at or past the crossing (i >= 1)
    g0, g1 = gap[i - 1], gap[i]
    t = g0 / (g0 - g1) if g0 != g1 else 0.0
    eer = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    near = i if abs(g1) <= abs(g0) else i - 1
    if not np.isfinite(thr[near]):
        near = 1
    n_pos, n_neg = same.sum(), (~same).sum()
    acc = (tpr * n_pos + (1.0 - fpr) * n_neg) / same.size
    best = int(np.argmax(acc))
    return {
        "roc_auc": auc,
        "eer": eer,
        "eer_threshold": float(thr[near]),
        "best_accuracy": float(acc[best]),
        "best_threshold": float(thr[best]),
    }


def accuracy_at_threshold(
    distances_or_scores, same, threshold: float, *, higher_is_similar: bool = False
) -> float:
    """Accuracy of "same iff distance <= threshold" (or "score >= threshold") on pairs.

    Args:
      distances_or_scores: ``[p]``.
      same: ``[p]`` bool (may contain one kind only).
      threshold: e.g. ``verification_metrics(...)["best_threshold"]`` calibrated on other pairs.
      higher_is_similar: the first argument is a similarity.

    Returns:
      Python float in ``[0, 1]``.

    Example:
      >>> accuracy_at_threshold([0.1, 0.6, 0.9], [True, True, False], 0.5)
      0.6666666666666666
    """
    check_array(distances_or_scores, "distances_or_scores", ndim=1, min_rows=1)
    s = np.asarray(distances_or_scores, dtype=np.float64)
    same = np.asarray(same)
    if same.ndim != 1 or same.shape[0] != s.shape[0]:
        raise ValueError(
            f"same must be 1-D with one entry per pair ({s.shape[0]}), got shape {same.shape}"
        )
    if same.dtype != bool and not np.all(np.isin(same, (0, 1))):
        raise ValueError("same must be boolean (or 0/1)")
    if not isinstance(threshold, int | float | np.number) or np.isnan(threshold):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    pred = s >= threshold if higher_is_similar else s <= threshold
    return float(np.mean(pred == same.astype(bool)))
