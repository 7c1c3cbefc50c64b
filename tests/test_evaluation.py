"""Tests of metriclearn.evaluation: k-NN, retrieval (P@1, R-precision, MAP@R, Recall@K, NMI), pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.neighbors import KNeighborsClassifier

from metriclearn import datasets, evaluation

# ----------------------------------------------------------------------------------------------- k-NN


def brute_knn_predict(train_X, train_y, test_X, k, metric="euclidean"):
    """Loop reference: stable sort by distance (lower index first), vote, smallest label on ties."""
    D = cdist(np.asarray(test_X, np.float64), np.asarray(train_X, np.float64), metric=metric)
    classes = np.unique(train_y)
    out = []
    for row in D:
        nn = np.argsort(row, kind="stable")[:k]
        votes = [np.sum(train_y[nn] == c) for c in classes]
        out.append(classes[int(np.argmax(votes))])
    return np.asarray(out)


@pytest.mark.parametrize(
    "metric,scipy_name",
    [("euclidean", "euclidean"), ("manhattan", "cityblock"), ("chebyshev", "chebyshev")],
)
def test_knn_ties_duplicates_against_sklearn_and_loop(metric, scipy_name):
    """Integer grids: many duplicated points, distance ties and class-vote ties."""
    rng = np.random.default_rng(0)
    n_checked = n_compared = 0
    n_dup = n_vote_ties = 0
    for _ in range(4):
        n = int(rng.integers(20, 60))
        Xtr = rng.integers(0, 6, size=(n, 3)).astype(np.float32)
        Xtr[-8:] = Xtr[:8]  # exact duplicates (with their own labels)
        ytr = rng.integers(0, 4, size=n)
        Xte = np.concatenate([rng.integers(0, 6, size=(26, 3)), Xtr[:4]]).astype(np.float32)
        n_dup += n - len(np.unique(Xtr, axis=0))
        D_sorted = np.sort(cdist(Xte, Xtr, metric=scipy_name), axis=1)
        for k in (1, 2, 3, 4, 6):
            ours = evaluation.knn_predict(Xtr, ytr, Xte, k=k, metric=metric)
            # the loop reference (stable by index) must agree everywhere
            np.testing.assert_array_equal(ours, brute_knn_predict(Xtr, ytr, Xte, k, scipy_name))
            # scikit-learn agrees wherever the k-th neighbour is not tied with the (k+1)-th
            sk = (
                KNeighborsClassifier(k, algorithm="brute", metric=metric).fit(Xtr, ytr).predict(Xte)
            )
            clear = D_sorted[:, k - 1] < D_sorted[:, k]
            np.testing.assert_array_equal(ours[clear], sk[clear])
            n_checked += clear.sum()
            n_compared += len(clear)
            if k in (2, 4):
                nn = np.argsort(cdist(Xte, Xtr, metric=scipy_name), axis=1, kind="stable")[:, :k]
                counts = np.stack([np.sum(ytr[nn] == c, axis=1) for c in range(4)], axis=1)
                n_vote_ties += int(np.sum(np.sum(counts == counts.max(1, keepdims=True), 1) > 1))
    # the comparison was not vacuous: many clear cases, duplicated points and class-vote ties
    assert n_checked > 100 and n_dup > 10 and n_vote_ties > 10, (n_checked, n_compared)


def test_knn_class_tie_goes_to_smallest_label():
    train_X = np.array([[0.0], [1.0], [-1.0], [5.0]])
    train_y = np.array([7, 2, 7, 2])
    # k=2 at 0.6: neighbours 1.0 (label 2) and 0.0 (label 7): tie -> 2
    assert evaluation.knn_predict(train_X, train_y, np.array([[0.6]]), k=2).tolist() == [2]
    sk = KNeighborsClassifier(2, algorithm="brute").fit(train_X, train_y).predict([[0.6]])
    assert sk.tolist() == [2]
    # string labels come back as strings
    pred = evaluation.knn_predict(train_X, np.array(["b", "a", "b", "a"]), [[-0.9]], k=1)
    assert pred.tolist() == ["b"]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_accuracy_matches_sklearn_on_digits(k):
    ds = datasets.load("digits")
    X_tr, X_te = datasets.standardize(ds.X[:1200], ds.X[1200:])
    ours = evaluation.knn_accuracy(X_tr, ds.y[:1200], X_te, ds.y[1200:], k=k)
    sk = KNeighborsClassifier(k, algorithm="brute").fit(X_tr, ds.y[:1200]).score(X_te, ds.y[1200:])
    assert ours == pytest.approx(sk, abs=1e-12)
    chunked = evaluation.knn_accuracy(X_tr, ds.y[:1200], X_te, ds.y[1200:], k=k, chunk_size=37)
    assert chunked == ours


def test_knn_other_metrics_against_sklearn():
    ds = datasets.load("wine")
    X = datasets.standardize(ds.X)
    tr, te = slice(0, None, 2), slice(1, None, 2)
    cases = [
        ("minkowski", {"p": 3.0}, dict(metric="minkowski", p=3)),
        ("cosine", None, dict(metric="cosine")),
    ]
    M = np.linalg.inv(np.cov(X[tr].T))
    for metric, kw, sk_kw in cases:
        ours = evaluation.knn_predict(X[tr], ds.y[tr], X[te], metric=metric, metric_kwargs=kw)
        sk = KNeighborsClassifier(3, algorithm="brute", **sk_kw).fit(X[tr], ds.y[tr]).predict(X[te])
        np.testing.assert_array_equal(ours, sk)
    ours = evaluation.knn_predict(X[tr], ds.y[tr], X[te], metric=M)
    sk = KNeighborsClassifier(
        3, algorithm="brute", metric="mahalanobis", metric_params={"VI": M}
    ).fit(X[tr], ds.y[tr])
    np.testing.assert_array_equal(ours, sk.predict(X[te]))

    def paired_l1(x, y):
        return jnp.abs(x - y).sum(-1)

    ours = evaluation.knn_predict(X[tr], ds.y[tr], X[te], metric=paired_l1)
    np.testing.assert_array_equal(ours, brute_knn_predict(X[tr], ds.y[tr], X[te], 3, "cityblock"))


def test_knn_bad_input():
    X, y = np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1] * 3)
    with pytest.raises(ValueError, match="k=7 is larger than the number of training samples"):
        evaluation.knn_accuracy(X, y, X, y, k=7)
    with pytest.raises(ValueError, match="k must be"):
        evaluation.knn_accuracy(X, y, X, y, k=0)
    with pytest.raises(
        ValueError, match="train_X and test_X must have the same number of features"
    ):
        evaluation.knn_accuracy(X, y, X[:, :1], y)
    with pytest.raises(ValueError, match="test_X contains 2 NaN"):
        evaluation.knn_accuracy(X, y, np.where(np.eye(6, 2) > 0, np.nan, X), y)
    with pytest.raises(ValueError, match="train_y has 5 labels"):
        evaluation.knn_accuracy(X, y[:5], X, y)
    with pytest.raises(ValueError, match="test_y must be 1-D"):
        evaluation.knn_accuracy(X, y, X, y[:5])
    with pytest.raises(ValueError, match="train_X needs at least 1 rows"):
        evaluation.knn_accuracy(np.zeros((0, 2)), np.zeros(0), X, y)
    with pytest.raises(ValueError, match="unknown distance 'nope'"):
        evaluation.knn_accuracy(X, y, X, y, metric="nope")
    with pytest.raises(ValueError, match="similarity"):
        evaluation.knn_accuracy(X, y, X, y, metric="cosine_similarity")
    with pytest.raises(ValueError, match="square"):
        evaluation.knn_accuracy(X, y, X, y, metric=np.ones((2, 3)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        evaluation.knn_accuracy(X, y, X, y, metric=-np.eye(2))
    with pytest.raises(ValueError, match="metric must be"):
        evaluation.knn_accuracy(X, y, X, y, metric=3)
    # an M in metric_kwargs was silently replaced by the matrix given as metric
    with pytest.raises(ValueError, match="give the matrix once"):
        evaluation.knn_accuracy(X, y, X, y, metric=np.eye(2), metric_kwargs={"M": 4 * np.eye(2)})
    with pytest.raises(ValueError, match="p must be"):
        evaluation.knn_accuracy(X, y, X, y, metric="minkowski", metric_kwargs={"p": -1.0})


def test_labels_of_different_kinds_are_refused_not_compared():
    """Numbers never equal strings: an int train_y against a string test_y used to score 0.0, and
    NumPy turned [0, "0"] into one class "0"; a NaN test label used to count as a miss."""
    X, y = np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1] * 3)
    assert evaluation.knn_accuracy(X, y.astype(str), X, y.astype(str), k=1) == 1.0  # one kind: fine
    with pytest.raises(ValueError, match="train_y holds numbers .* test_y holds strings"):
        evaluation.knn_accuracy(X, y, X, y.astype(str), k=1)
    with pytest.raises(ValueError, match="test_y contains NaN"):
        evaluation.knn_accuracy(X, y, X, np.where(y == 0, np.nan, 1.0), k=1)
    with pytest.raises(ValueError, match="test_y mixes numbers and strings"):
        evaluation.knn_accuracy(X, y, X, [0, "1", 0, "1", 0, "1"], k=1)
    with pytest.raises(ValueError, match="train_y mixes numbers and strings"):
        evaluation.knn_accuracy(X, [0, "0", 1, 0, 1, "1"], X, y, k=1)
    with pytest.raises(ValueError, match="no None"):
        evaluation.knn_accuracy(X, np.array([0, None, 1, 0, 1, 1], dtype=object), X, y, k=1)
    with pytest.raises(ValueError, match="labels holds numbers .* ref_labels holds strings"):
        evaluation.retrieval_metrics(X, y, X, y.astype(str), nmi=False)
    with pytest.raises(ValueError, match="labels mixes numbers and strings"):
        evaluation.retrieval_metrics(X, [0, "0", 1, 0, 1, "1"], nmi=False)
    # object arrays of numbers are numbers (NaN checked); of strings, strings
    obj = evaluation.retrieval_metrics(X, y.astype(object), X, y.astype(float), k_values=(1, 2))
    assert obj == evaluation.retrieval_metrics(X, y, X, y, k_values=(1, 2))
    with pytest.raises(ValueError, match="labels contains NaN"):
        evaluation.retrieval_metrics(X, np.array([0, np.nan, 1, 0, 1, 1], dtype=object), nmi=False)


def test_kmeans_seed_is_checked_before_the_neighbour_search(monkeypatch):
    X, y = np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1] * 3)

    def no_search(*args, **kwargs):
        raise AssertionError("the neighbour search ran before the seed was checked")

    monkeypatch.setattr(evaluation, "_nearest", no_search)
    with pytest.raises(
        ValueError, match=r"seed must be a jax.random key or an int seed in \[0, 2\*\*32\)"
    ):
        evaluation.retrieval_metrics(X, y, k_values=(1,), seed=2**32)
    with pytest.raises(ValueError, match="kmeans_n_init must be an integer"):
        evaluation.retrieval_metrics(X, y, k_values=(1,), kmeans_n_init=0)
    monkeypatch.undo()
    assert 0.0 <= evaluation.retrieval_metrics(X, y, k_values=(1,), seed=2**32 - 1)["nmi"] <= 1.0


# ------------------------------------------------------------------------------------------ retrieval


def brute_retrieval(Q, q_labels, R=None, r_labels=None, k_values=(1, 2, 4, 8), metric="euclidean"):
    """Loop reference of the Musgrave et al. definitions (float64, stable order, lone queries skipped)."""
    self_ref = R is None
    R, r_labels = (Q, q_labels) if self_ref else (R, r_labels)
    D = cdist(np.asarray(Q, np.float64), np.asarray(R, np.float64), metric=metric)
    p1, rp, ap, rec, used = [], [], [], {k: [] for k in k_values}, 0
    for i in range(len(Q)):
        order = [j for j in np.argsort(D[i], kind="stable") if not (self_ref and j == i)]
        rel = [r_labels[j] == q_labels[i] for j in order]
        n_rel = sum(rel)
        if n_rel == 0:
            continue
        used += 1
        p1.append(float(rel[0]))
        rp.append(sum(rel[:n_rel]) / n_rel)
        hits, total = 0, 0.0
        for pos in range(n_rel):
            if rel[pos]:
                hits += 1
                total += hits / (pos + 1)
        ap.append(total / n_rel)
        for k in k_values:
            rec[k].append(float(any(rel[:k])))
    return {
        "precision_at_1": np.mean(p1),
        "r_precision": np.mean(rp),
        "map_at_r": np.mean(ap),
        "recall_at_k": {k: np.mean(v) for k, v in rec.items()},
        "n_queries": used,
    }


def assert_metrics_close(ours, ref, tol=1e-9):
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert ours[key] == pytest.approx(ref[key], abs=tol), key
    for k, v in ref["recall_at_k"].items():
        assert ours["recall_at_k"][k] == pytest.approx(v, abs=tol), k
    assert ours["n_queries"] == ref["n_queries"]


def _blobs(seed, n, d, sizes_p, sep=1.0):
    rng = np.random.default_rng(seed)
    y = rng.choice(len(sizes_p), size=n, p=sizes_p)
    means = sep * rng.normal(size=(len(sizes_p), d))
    return means[y] + rng.normal(size=(n, d)), y


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_retrieval_against_loop_self_and_separate(x64, metric):
    X, y = _blobs(0, 240, 6, [0.4, 0.3, 0.2, 0.1])
    y = y.copy()
    y[0] = 99  # a lone query: no other member of its class
    ours = evaluation.retrieval_metrics(X, y, metric=metric, nmi=False)
    ref = brute_retrieval(X, y, metric=metric)
    assert ref["n_queries"] == 239
    assert_metrics_close(ours, ref)
    # separate reference set (a query label absent from the references is skipped)
    ours = evaluation.retrieval_metrics(
        X[:90], y[:90], X[90:], y[90:], metric=metric, nmi=False, k_values=(1, 3)
    )
    assert_metrics_close(ours, brute_retrieval(X[:90], y[:90], X[90:], y[90:], (1, 3), metric))


def test_retrieval_hand_example():
    # 1-D points; labels a a b a b: hand-computed metrics (query = reference set)
    X = np.array([[0.0], [1.0], [2.0], [3.5], [5.0]])
    y = np.array(["a", "a", "b", "a", "b"])
    m = evaluation.retrieval_metrics(X, y, k_values=(1, 2), nmi=False)
    # nearest lists (self excluded): 0:[1,2,3,4] 1:[0,2,3,4] 2:[1,3,0,4] 3:[2,4,1,0] 4:[3,2,1,0]
    # R: a -> 2, b -> 1. P@1: 0:a✓ 1:a✓ 2:a✗ 3:b✗ 4:a✗ = 2/5
    assert m["precision_at_1"] == pytest.approx(2 / 5)
    # R-prec: 0: [1,2]->1/2; 1: [0,2]->1/2; 2: [1]->0; 3: [2,4]->0; 4: [3]->0
    assert m["r_precision"] == pytest.approx((0.5 + 0.5) / 5)
    # AP@R: 0: rel at 1 -> (1/1)/2; 1: same; others 0
    assert m["map_at_r"] == pytest.approx((0.5 + 0.5) / 5)
    # Recall@2: 0 ✓ 1 ✓ 2: [1,3] ✗ 3: [2,4] ✗ 4: [3,2] ✓
    assert m["recall_at_k"] == {1: pytest.approx(0.4), 2: pytest.approx(0.6)}


def test_retrieval_chunked_equals_unchunked():
    """5,000 float32 embeddings: odd block sizes give exactly the unchunked numbers."""
    X, y = _blobs(1, 5000, 16, [0.02] * 50, sep=0.8)
    X = X.astype(np.float32)
    full = evaluation.retrieval_metrics(X, y, nmi=False, chunk_size=5000, ref_chunk_size=5000)
    chunked = evaluation.retrieval_metrics(X, y, nmi=False, chunk_size=317, ref_chunk_size=701)
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_k", "n_queries"):
        assert chunked[key] == full[key], key
    assert 0.05 < full["map_at_r"] < 0.9  # a non-trivial setting


def test_retrieval_chunked_float64_against_loop(x64):
    X, y = _blobs(2, 300, 5, [0.5, 0.3, 0.2])
    ours = evaluation.retrieval_metrics(X, y, nmi=False, chunk_size=70, ref_chunk_size=130)
    assert_metrics_close(ours, brute_retrieval(X, y))
    ours = evaluation.retrieval_metrics(
        X[:50], y[:50], X[50:], y[50:], nmi=False, chunk_size=20, ref_chunk_size=100
    )
    assert_metrics_close(ours, brute_retrieval(X[:50], y[:50], X[50:], y[50:]))


def test_retrieval_against_pytorch_metric_learning():
    pytest.importorskip("torch")
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    del pml
    X, y = _blobs(3, 240, 8, [0.35, 0.3, 0.2, 0.15], sep=0.7)
    y = y.copy()
    y[5] = 7  # lone query label
    X32 = X.astype(np.float32)
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    for dist, metric in (
        (LpDistance(normalize_embeddings=False), "euclidean"),
        (CosineSimilarity(), "cosine"),
    ):
        calc = AccuracyCalculator(include=include, k="max_bin_count", knn_func=CustomKNN(dist))
        ref = calc.get_accuracy(X32, y)  # reference = query, self excluded
        ours = evaluation.retrieval_metrics(X32, y, metric=metric, nmi=False)
        assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
        assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
        assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
        ref = calc.get_accuracy(X32[:90], y[:90], X32[90:], y[90:])
        ours = evaluation.retrieval_metrics(
            X32[:90], y[:90], X32[90:], y[90:], metric=metric, nmi=False
        )
        assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
        assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


def _grid(seed, n, d, n_classes, levels=4):
    """Integer points: float32 squared distances are exact, with many ties (order then by index)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, levels, size=(n, d)).astype(np.float32)
    return X, rng.integers(0, n_classes, size=n)


@pytest.mark.parametrize("selection", ["host", "device"])
def test_retrieval_selections_exact_with_ties_against_loop(selection):
    """Both selections give the loop's numbers exactly when distances tie (ties go by index)."""
    X, y = _grid(10, 400, 3, 5)
    kv = (1, 3, 16)
    ours = evaluation.retrieval_metrics(
        X, y, nmi=False, k_values=kv, selection=selection, chunk_size=90
    )
    assert_metrics_close(ours, brute_retrieval(X, y, k_values=kv), tol=1e-12)
    ours = evaluation.retrieval_metrics(
        X[:150], y[:150], X[150:], y[150:], nmi=False, k_values=kv, selection=selection
    )
    assert_metrics_close(ours, brute_retrieval(X[:150], y[:150], X[150:], y[150:], kv), tol=1e-12)
    nn = evaluation.knn_predict(X[:300], y[:300], X[300:], k=4, selection=selection)
    np.testing.assert_array_equal(nn, brute_knn_predict(X[:300], y[:300], X[300:], 4))


def test_host_selection_unlucky_sample_is_exact():
    """References where the strided threshold sample sees only the nearest points: rows redone."""
    # integer data: float32 distances are exact, so host (which re-ranks the near picks of rows
    # whose float32 error bound is in doubt) and device agree to the bit
    rng = np.random.default_rng(11)
    m, d = 1024, 4  # the sample takes every 4th reference
    R = np.round(4.0 * rng.normal(size=(m, d))).astype(np.float32) + 200.0
    R[::4] = np.round(4.0 * rng.normal(size=(m // 4, d)))  # sampled rows: all near the queries
    r_lab = rng.integers(0, 3, size=m)
    Q = np.round(4.0 * rng.normal(size=(40, d))).astype(np.float32)
    q_lab = rng.integers(0, 3, size=40)
    threshold_rows = evaluation._thresholds(
        np.asarray(evaluation.distances.pairwise_sqeuclidean(Q, R)), np.full(40, 400)
    )
    assert np.all(threshold_rows < 1000.0)  # the thresholds keep < 400 entries: fallback path
    host = evaluation.retrieval_metrics(Q, q_lab, R, r_lab, nmi=False, selection="host")
    dev = evaluation.retrieval_metrics(Q, q_lab, R, r_lab, nmi=False, selection="device")
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_k"):
        assert host[key] == pytest.approx(dev[key], abs=1e-12), key
    assert_metrics_close(host, brute_retrieval(Q, q_lab, R, r_lab))


def test_host_select_negative_and_signed_zero_distances():
    X, y = _grid(12, 60, 2, 3)

    def neg_dot(a, b):  # a "distance" that is negative: ordering by its signed value
        return -(a * b).sum(-1)

    ours = evaluation.knn_predict(X[:40], y[:40], X[40:], k=3, metric=neg_dot)
    D = -(X[40:].astype(np.float64) @ X[:40].T.astype(np.float64))
    for i, row in enumerate(D):
        nn = np.argsort(row, kind="stable")[:3]
        votes = np.bincount(y[:40][nn], minlength=3)
        assert ours[i] == int(np.argmax(votes))

    def signed_zero(a, b):  # every distance is +0.0 or -0.0: all tie, the lowest index wins
        return (a - b)[..., 0] * 0.0

    pred = evaluation.knn_predict(X[:40], y[:40], X[40:], k=1, metric=signed_zero)
    assert np.all(pred == y[0])
    for sel in ("host", "device"):
        m = evaluation.retrieval_metrics(X, y, nmi=False, metric=signed_zero, selection=sel)
        assert_metrics_close(m, brute_retrieval(X, y, metric=lambda a, b: 0.0), tol=1e-12)


def test_selection_and_mesh_bad_input():
    X, y = _grid(13, 30, 2, 3)
    with pytest.raises(ValueError, match="unknown selection 'gpu'; valid: auto, device, host"):
        evaluation.retrieval_metrics(X, y, nmi=False, selection="gpu")
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
        evaluation.knn_predict(X, y, X, mesh="cpu")

    def nan_metric(a, b):
        return jnp.sqrt(-1.0 - ((a - b) ** 2).sum(-1))

    def neg_inf_metric(a, b):  # -inf for one reference point: would be every query's nearest
        d = jnp.sqrt(((a - b) ** 2).sum(-1))
        return jnp.where(jnp.all(b == X[0]), -jnp.inf, d)

    for sel in ("host", "device"):
        with pytest.raises(ValueError, match="NaN"):
            evaluation.knn_predict(X, y, X, metric=nan_metric, selection=sel)
        with pytest.raises(ValueError, match="infinite distances"):
            evaluation.knn_predict(X, y, X, metric=neg_inf_metric, selection=sel)


def test_nmi_matches_sklearn_kmeans():
    X, y = _blobs(4, 150, 5, [0.25] * 4, sep=1.5)
    m = evaluation.retrieval_metrics(X, y, seed=3, kmeans_n_init=2)
    X32 = X.astype(np.float32).astype(np.float64)  # the embeddings as evaluated (float32)
    clusters = KMeans(4, n_init=2, random_state=3).fit_predict(X32)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters), abs=1e-12)
    assert 0.2 < m["nmi"] < 1.0
    well = datasets.gaussian_classes(0, n_samples=90, n_features=4, n_classes=3, class_sep=30.0)
    m = evaluation.retrieval_metrics(well.X, well.y, kmeans_n_init=1)
    assert m["nmi"] == pytest.approx(1.0) and m["precision_at_1"] == 1.0


def test_retrieval_bad_input():
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="embeddings contains 3 NaN"):
        evaluation.retrieval_metrics(np.where(np.eye(10, 3) > 0, np.nan, X), y)
    with pytest.raises(ValueError, match="embeddings contains 3 NaN"):
        evaluation.retrieval_metrics(np.where(np.eye(10, 3) > 0, np.inf, X), y)
    with pytest.raises(ValueError, match="labels must be 1-D with one label per row"):
        evaluation.retrieval_metrics(X, y[:9])
    with pytest.raises(ValueError, match="embeddings must be 2-dimensional"):
        evaluation.retrieval_metrics(X[0], y)
    with pytest.raises(ValueError, match="embeddings needs at least 1 rows"):
        evaluation.retrieval_metrics(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="same number of features"):
        evaluation.retrieval_metrics(X, y, X[:, :2], y)
    with pytest.raises(ValueError, match="ref_labels is required"):
        evaluation.retrieval_metrics(X, y, X)
    with pytest.raises(ValueError, match="ref_labels given without ref_embeddings"):
        evaluation.retrieval_metrics(X, y, ref_labels=y)
    with pytest.raises(ValueError, match="ref_labels must be 1-D with one label per row"):
        evaluation.retrieval_metrics(X, y, X, y[:3])
    with pytest.raises(ValueError, match="no query has a reference with the same label"):
        evaluation.retrieval_metrics(X, np.arange(10))
    with pytest.raises(ValueError, match="at least 2 classes for nmi"):
        evaluation.retrieval_metrics(X, np.zeros(10))
    single = evaluation.retrieval_metrics(X, np.zeros(10), nmi=False)  # fine without NMI
    assert single["precision_at_1"] == 1.0 and single["map_at_r"] == 1.0
    with pytest.raises(
        ValueError, match="k_values asks for 10 neighbours but the reference set has only 9"
    ):
        evaluation.retrieval_metrics(X, y, k_values=(1, 10), nmi=False)
    with pytest.raises(ValueError, match="k_values"):
        evaluation.retrieval_metrics(X, y, k_values=(0,))
    with pytest.raises(ValueError, match="k_values must be a sequence of integers"):
        evaluation.retrieval_metrics(X, y, k_values=5, nmi=False)
    np.testing.assert_equal(  # an array of k is a sequence too
        evaluation.retrieval_metrics(X, y, k_values=np.array([1, 2]), nmi=False)["recall_at_k"],
        evaluation.retrieval_metrics(X, y, k_values=(1, 2), nmi=False)["recall_at_k"],
    )
    with pytest.raises(ValueError, match="at least 2 rows"):
        evaluation.retrieval_metrics(X[:1], y[:1], k_values=(), nmi=False)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluation.retrieval_metrics(X, y, chunk_size=0)
    with pytest.raises(ValueError, match="ref_chunk_size must be an integer >= 1"):
        evaluation.retrieval_metrics(X, y, ref_chunk_size=0, nmi=False)
    with pytest.raises(ValueError, match="unknown distance"):
        evaluation.retrieval_metrics(X, y, metric="nope")


# ---------------------------------------------------------------------------------------- verification


def _pairs(seed=0, n=300, rounding=1):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    dist = np.round(rng.normal(size=n) + 1.5 - 1.2 * same, rounding)  # ties from rounding
    return dist, same


def test_roc_curve_matches_sklearn():
    dist, same = _pairs()
    fpr, tpr, thr = evaluation.roc_curve(dist, same)
    f2, t2, th2 = sk_roc_curve(same, -dist, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], -th2[1:])
    assert thr[0] == -np.inf
    score = -dist
    f3, t3, th3 = evaluation.roc_curve(score, same, higher_is_similar=True)
    np.testing.assert_allclose(f3, f2)
    np.testing.assert_allclose(th3, th2)


def _brute_eer(fpr, tpr):
    """EER as commonly computed in face verification: root of 1 - x - interp(fpr, tpr)(x)."""
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq

    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verification_metrics_against_sklearn_and_loops(seed):
    dist, same = _pairs(seed)
    m = evaluation.verification_metrics(dist, same)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(same, -dist), abs=1e-12)
    f, t, _ = sk_roc_curve(same, -dist, drop_intermediate=False)
    assert m["eer"] == pytest.approx(_brute_eer(f, t), abs=1e-9)
    # best accuracy: loop over every candidate threshold
    cands = np.concatenate([[-np.inf], np.unique(dist)])
    accs = [np.mean((dist <= c) == same) for c in cands]
    assert m["best_accuracy"] == pytest.approx(max(accs), abs=1e-12)
    assert evaluation.accuracy_at_threshold(dist, same, m["best_threshold"]) == pytest.approx(
        m["best_accuracy"]
    )
    # the EER threshold's own error rates straddle the EER
    fa = np.mean(dist[~same] <= m["eer_threshold"])
    fr = np.mean(dist[same] > m["eer_threshold"])
    assert min(fa, fr) - 1e-12 <= m["eer"] <= max(fa, fr) + 1e-12
    # similarities give the same numbers
    ms = evaluation.verification_metrics(-dist, same, higher_is_similar=True)
    for key in ("roc_auc", "eer", "best_accuracy"):
        assert ms[key] == pytest.approx(m[key], abs=1e-12)
    assert ms["best_threshold"] == pytest.approx(-m["best_threshold"])


def test_verification_separable_and_calibration():
    m = evaluation.verification_metrics([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
    assert (m["roc_auc"], m["eer"], m["best_accuracy"]) == (1.0, 0.0, 1.0)
    assert 0.2 <= m["best_threshold"] < 0.8
    # calibrate on one set, apply to another
    d_cal, s_cal = _pairs(5)
    d_new, s_new = _pairs(6)
    thr = evaluation.verification_metrics(d_cal, s_cal)["best_threshold"]
    acc = evaluation.accuracy_at_threshold(d_new, s_new, thr)
    assert acc == pytest.approx(np.mean((d_new <= thr) == s_new))
    assert 0.6 < acc < 1.0
    assert evaluation.accuracy_at_threshold([0.3, 0.9], [1, 0], 0.5, higher_is_similar=True) == 0.0


def test_verification_bad_input():
    with pytest.raises(ValueError, match="both same"):
        evaluation.verification_metrics([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="same must be 1-D with one entry per pair"):
        evaluation.verification_metrics([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="distances_or_scores contains 1 NaN"):
        evaluation.verification_metrics([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="boolean"):
        evaluation.roc_curve([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="distances_or_scores must be 1-dimensional"):
        evaluation.roc_curve(np.zeros((2, 2)), [True, False])
    with pytest.raises(ValueError, match="distances_or_scores needs at least 1 rows"):
        evaluation.verification_metrics([], [])
    with pytest.raises(ValueError, match="threshold must be a number"):
        evaluation.accuracy_at_threshold([0.1], [True], float("nan"))
    with pytest.raises(ValueError, match="same must be 1-D"):
        evaluation.accuracy_at_threshold([0.1, 0.2], [True], 0.5)


def test_float32_neighbours_of_data_far_from_the_origin():
    # |q|^2 + |r|^2 - 2 q.r cancels in float32 at 1000 + N(0, 1): the neighbour search centres the
    # data first (Euclidean and Mahalanobis are translation invariant), so it stays exact
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = (1000.0 + rng.normal(size=(400, 8))).astype(np.float32)
    y = rng.integers(0, 4, 400)
    want = KNeighborsClassifier(1).fit(X[:200], y[:200]).predict(X[200:])
    np.testing.assert_array_equal(evaluation.knn_predict(X[:200], y[:200], X[200:], k=1), want)
    np.testing.assert_array_equal(
        evaluation.knn_predict(X[:200], y[:200], X[200:], k=1, metric=np.eye(8)), want
    )
    near = np.array([[3000.0], [3000.2], [3000.25]], np.float32)
    res = evaluation.retrieval_metrics(near, np.array([0, 1, 1]), nmi=False, k_values=(1,))
    assert res["precision_at_1"] == 1.0 and res["map_at_r"] == 1.0
    # and the result no longer depends on the block sizes or where the selection runs
    runs = [
        evaluation.retrieval_metrics(X, y, nmi=False, chunk_size=c, selection=s)["r_precision"]
        for c in (None, 33)
        for s in ("host", "device")
    ]
    assert len(set(runs)) == 1


# ------------------------------------------------------------------------------ exotic but valid input


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_half_precision_embeddings_are_ranked_in_float32(dtype):
    # float16 |x|^2 overflows at 65504 (was: "produced NaN distances"); bfloat16 distances rounded
    # most neighbours into ties (was: P@1 0.275 instead of 0.29)
    rng = np.random.default_rng(0)
    X = (100.0 * rng.normal(size=(200, 8))).astype(dtype)
    y = rng.integers(0, 4, 200)
    X64 = np.asarray(X, np.float64)
    ours = evaluation.retrieval_metrics(X, y, nmi=False)
    assert_metrics_close(ours, brute_retrieval(X64, y), tol=1e-9)
    np.testing.assert_array_equal(
        evaluation.knn_predict(X[:150], y[:150], X[150:], k=1),
        brute_knn_predict(X64[:150], y[:150], X64[150:], 1),
    )


def test_integer_labels_are_not_merged_by_float_promotion():
    # uint64 with int64 promotes to float64 in NumPy: 2**60 + 0..3 became one class (all metrics 1.0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    yq = (2**60 + rng.integers(0, 4, 20)).astype(np.uint64)
    yr = (2**60 + rng.integers(0, 4, 20)).astype(np.int64)
    ours = evaluation.retrieval_metrics(X[:20], yq, X[20:], yr, nmi=False, k_values=(1,))
    ref = brute_retrieval(X[:20], yq.astype(object), X[20:], yr.astype(object), k_values=(1,))
    assert ref["precision_at_1"] < 0.5
    assert_metrics_close(ours, ref)
    # int64 beyond 2**53 against float64: 2**53 + 1 == 2.0**53 in NumPy, not in Python
    Xtr = np.array([[0.0], [1.0]])
    ytr = np.array([2**53 + 1, 2**53 + 3], np.int64)
    acc = evaluation.knn_accuracy(Xtr, ytr, Xtr, np.array([2.0**53, 2.0**53 + 4]), k=1)
    assert acc == 0.0

    # ints and floats in one object array became float64, merging 2**53 + 1 into 2**53: knn_predict
    # then returned the label of another class
    y_obj = np.array([2**53 + 1, 2**53 + 1, 2**53, 0.5, 0.5, 0.5], dtype=object)
    X6 = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]], np.float32)
    with pytest.raises(ValueError, match="two classes would become one"):
        evaluation.knn_predict(X6, y_obj, X6[:1], k=1)


def test_squared_distances_beyond_float32_are_ranked():
    # |x|^2 of points 4e19 apart overflowed float32 (inf - inf: "produced NaN distances"); 1e-25
    # apart underflowed to ties. Only the order is used, so both sets are scaled by a power of two.
    for scale in (4e19, 1e-25):
        X = (scale * np.array([[0.0], [1.0], [3.0], [-2.5]])).astype(np.float32)
        y = np.array([0, 1, 2, 3])
        Q = (scale * np.array([[0.1], [1.2], [2.9], [-2.8]])).astype(np.float32)
        np.testing.assert_array_equal(evaluation.knn_predict(X, y, Q, k=1), [0, 1, 2, 3])
        res = evaluation.retrieval_metrics(np.r_[X, Q], np.r_[y, y], nmi=False, k_values=(1,))
        assert res["precision_at_1"] == 1.0


def test_float32_neighbours_of_data_at_two_scales():
    """One shift for all the data cannot serve a cluster of spread 1e-3 near 0 and one near 3000:
    in float32 the matmul identity lost the near cluster's order (82 of 100 1-NN wrong). Rows whose
    error bound reaches their k-th distance are re-ranked from the differences."""
    Xtr = np.array([[2e-5], [1e-5], [2000.0], [2000.0], [2000.0]], np.float32)
    np.testing.assert_array_equal(
        evaluation.knn_predict(Xtr, [0, 1, 2, 2, 2], np.zeros((1, 1), np.float32), k=1), [1]
    )
    rng = np.random.default_rng(0)
    near = 1e-3 * rng.normal(size=(150, 4))
    X = np.r_[near, 3000.0 + near[::-1]].astype(np.float32)
    y = rng.integers(0, 3, 300)
    X64 = X.astype(np.float64)
    Q = np.r_[1e-3 * rng.normal(size=(40, 4)), 3000.0 + 1e-3 * rng.normal(size=(40, 4))]
    Q = Q.astype(np.float32)
    want = brute_knn_predict(X64, y, Q.astype(np.float64), 1)
    np.testing.assert_array_equal(evaluation.knn_predict(X, y, Q, k=1), want)
    np.testing.assert_array_equal(evaluation.knn_predict(X, y, Q, k=1, metric=np.eye(4)), want)
    assert_metrics_close(
        evaluation.retrieval_metrics(X, y, nmi=False, selection="host"), brute_retrieval(X64, y)
    )
    # one far outlier among ordinary data sent every row through the re-ranking (2.5x the time)
    Z = rng.normal(size=(400, 8)).astype(np.float32)
    Z[0] = 300.0
    refiner = evaluation._Refiner(Z, Z, Z, Z, None, True, np.float32)
    D = ((Z[:, None].astype(np.float64) - Z[None]) ** 2).sum(-1)
    picks = np.argsort(D[5])[1:4]
    assert refiner(5, D[5].astype(np.float32), picks) is picks  # not re-ranked


def test_probability_rows_are_all_checked():
    # the probability check of the divergences ran on the first two rows only: a bad row 10 gave
    # finite, meaningless metrics
    P = np.random.default_rng(0).dirichlet(np.ones(3), 30).astype(np.float32)
    y = np.arange(30) % 3
    bad = P.copy()
    bad[10] = [-0.5, 1.0, 0.5]
    for metric in ("kl_divergence", "jensen_shannon", "chi_square", "bhattacharyya", "matusita"):
        with pytest.raises(ValueError, match="train_X must be a probability vector"):
            evaluation.knn_accuracy(bad, y, P, y, k=1, metric=metric)
        with pytest.raises(ValueError, match="test_X must be a probability vector"):
            evaluation.knn_accuracy(P, y, bad, y, k=1, metric=metric)
    with pytest.raises(ValueError, match="ref_embeddings must be a probability vector"):
        evaluation.retrieval_metrics(P, y, bad, y, metric="matusita", nmi=False)


def test_embeddings_without_features_are_refused():
    # [n, 0]: every distance 0, every neighbour a tie (was accepted; NMI then failed in scikit-learn)
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="embeddings must have at least one feature"):
        evaluation.retrieval_metrics(np.zeros((4, 0)), y)
    with pytest.raises(ValueError, match="train_X must have at least one feature"):
        evaluation.knn_accuracy(np.zeros((4, 0)), y, np.zeros((2, 0)), y[:2], k=1)


def test_bytes_and_str_labels_are_refused_not_compared():
    X = np.arange(6.0)[:, None]
    yb, ys = np.array([b"a", b"b"] * 3), np.array(["a", "b"] * 3)
    with pytest.raises(ValueError, match="train_y holds bytes .* test_y holds strings"):
        evaluation.knn_accuracy(X, yb, X, ys, k=1)  # was: accuracy 0.0
    with pytest.raises(ValueError, match="labels holds strings .* ref_labels holds bytes"):
        evaluation.retrieval_metrics(X, ys, X + 0.1, yb, nmi=False, k_values=(1,))
    assert evaluation.knn_accuracy(X, yb, X, yb, k=1) == 1.0
    # within one label array: an object array raised TypeError in np.unique, and a list was turned
    # into str by NumPy (b"a" merged with "a")
    mixed_obj = np.array([b"a", "a", b"b", "b", "a", "b"], dtype=object)
    with pytest.raises(ValueError, match="test_y mixes bytes and strings"):
        evaluation.knn_accuracy(X, ys, X, mixed_obj, k=1)
    with pytest.raises(ValueError, match="labels mixes bytes and strings"):
        evaluation.retrieval_metrics(X, [b"a", "a", b"b", "b", "a", "b"], nmi=False)


def test_accuracy_at_threshold_takes_0d_arrays():
    d, same = [0.1, 0.6, 0.9], [True, True, False]
    for thr in (np.float32(0.7), np.array(0.7), jnp.float32(0.7), jnp.array(0.7)):
        assert evaluation.accuracy_at_threshold(d, same, thr) == 1.0
    with pytest.raises(ValueError, match="threshold must be a real number"):
        evaluation.accuracy_at_threshold(d, same, True)


def test_knn_device_selection_keeps_blocks_bounded(monkeypatch):
    # knn_predict used the whole training set as one reference block: chunk_size x n distances
    shapes = []
    real = evaluation._program

    def spy(kind, *args):
        prog = real(kind, *args)

        def run(q, q_idx, refs, *rest):
            shapes.append((q.shape[0], refs.shape[1]))
            return prog(q, q_idx, refs, *rest)

        return run

    monkeypatch.setattr(evaluation, "_program", spy)
    rng = np.random.default_rng(0)
    Xtr = rng.normal(size=(20000, 2)).astype(np.float32)
    ytr = rng.integers(0, 3, 20000)
    Xte = rng.normal(size=(1024, 2)).astype(np.float32)
    pred = evaluation.knn_predict(Xtr, ytr, Xte, k=3, selection="device", chunk_size=1024)
    assert shapes and all(bq * br <= 2**24 for bq, br in shapes), shapes
    monkeypatch.setattr(evaluation, "_program", real)
    np.testing.assert_array_equal(
        pred, evaluation.knn_predict(Xtr, ytr, Xte, k=3, selection="host")
    )


def test_cosine_similarity_function_is_refused_as_a_metric():
    # the name was refused, the function itself ranked the farthest first (1-NN on the training set
    # scored 0.37 instead of 1.0)
    from metriclearn import distances

    X, y = _blobs(0, 60, 3, [0.4, 0.3, 0.3])
    for sim in ("cosine_similarity", distances.cosine_similarity):
        with pytest.raises(ValueError, match="is a similarity"):
            evaluation.knn_accuracy(X, y, X, y, k=1, metric=sim)
        with pytest.raises(ValueError, match="is a similarity"):
            evaluation.retrieval_metrics(X, y, metric=sim, nmi=False)
    assert evaluation.knn_accuracy(X, y, X, y, k=1, metric=distances.cosine_distance) == 1.0


def test_public_distance_functions_rank_like_their_names():
    # metric=distances.euclidean skipped the centring of metric="euclidean": 1000 + N(0, 1) data
    # had a quarter of its 1-NN wrong in float32
    from metriclearn import distances

    rng = np.random.default_rng(0)
    X = (1000.0 + rng.normal(size=(400, 8))).astype(np.float32)
    y = rng.integers(0, 4, 400)
    want = brute_knn_predict(X[:200], y[:200], X[200:], 1)
    for fn, kw in (
        (distances.euclidean, None),
        (distances.sqeuclidean, None),
        (distances.mahalanobis, {"M": np.eye(8)}),
    ):
        pred = evaluation.knn_predict(X[:200], y[:200], X[200:], k=1, metric=fn, metric_kwargs=kw)
        np.testing.assert_array_equal(pred, want)


def test_host_functions_under_jit_name_themselves():
    # they raised raw TracerArrayConversionError / ConcretizationTypeError under jit
    from metriclearn import constraints, sampling
    from metriclearn.convex import itml, nca

    X = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)), jnp.float32)
    y = jnp.repeat(jnp.arange(3), 4)
    calls = {
        "knn_predict": lambda X, y: evaluation.knn_predict(X, y, X, k=1),
        "retrieval_metrics": lambda X, y: evaluation.retrieval_metrics(X, y)["map_at_r"],
        "roc_curve": lambda X, y: evaluation.roc_curve(X[:, 0], y > 0)[0],
        "pairs": lambda X, y: constraints.pairs(jax.random.key(0), y, n_similar=2, n_dissimilar=2)[
            0
        ],
        "m_per_class_batches": lambda X, y: sampling.m_per_class_batches(0, y, m=2, batch_size=4),
        "fit_nca": lambda X, y: nca.fit_nca(X, y).components,
        "fit_itml": lambda X, y: itml.fit_itml(X[:4].reshape(2, 2, 3), jnp.array([1, -1])).M,
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name} runs on the host"):
            jax.jit(call)(X, y)


def test_string_flags_are_refused():
    """``higher_is_similar="False"`` / ``nmi="no"`` are truthy: they silently meant True."""
    d, same = [0.1, 0.5, 0.2, 0.9], [True, False, True, False]
    with pytest.raises(ValueError, match="higher_is_similar must be True or False"):
        evaluation.roc_curve(d, same, higher_is_similar="False")
    with pytest.raises(ValueError, match="higher_is_similar must be True or False"):
        evaluation.verification_metrics(d, same, higher_is_similar="False")
    with pytest.raises(ValueError, match="higher_is_similar must be True or False"):
        evaluation.accuracy_at_threshold(d, same, 0.3, higher_is_similar="False")
    emb = np.random.default_rng(0).standard_normal((8, 3))
    with pytest.raises(ValueError, match="nmi must be True or False"):
        evaluation.retrieval_metrics(emb, [0, 0, 1, 1, 2, 2, 3, 3], nmi="no")


def test_untraceable_metric_callables_are_named():
    """scipy's distances and an estimator's get_metric() failed with pairwise's advice to call it
    outside jit, which the caller already did; the search runs jitted."""
    import scipy.spatial.distance as ssd

    X = np.random.default_rng(0).normal(size=(12, 3))
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match="metric 'euclidean' cannot be traced by JAX"):
        evaluation.knn_accuracy(X, y, X, y, k=3, metric=ssd.euclidean)
    # a jax.numpy callable still works
    acc = evaluation.knn_accuracy(
        X, y, X, y, k=3, metric=lambda a, b: jnp.sqrt(jnp.sum((a - b) ** 2))
    )
    assert acc == evaluation.knn_accuracy(X, y, X, y, k=3)


def test_metric_option_types_are_part_of_the_program_cache():
    """p=True and p=1 compare equal: the kernel compiled for one served the other, so after a refused
    p=True every valid p=1 call failed, and after p=1 a p=True was accepted."""
    X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    y = np.arange(30) % 3

    def predict(p):
        return evaluation.knn_predict(X, y, X[:5], k=3, metric="minkowski", metric_kwargs={"p": p})

    for first, second in ((True, 1), (1, True)):
        for p in (first, second):
            if p is True:
                with pytest.raises(ValueError, match="p must be a positive number or inf"):
                    predict(p)
            else:
                assert predict(p).shape == (5,)


def test_near_neighbours_are_re_ranked_when_the_kth_is_far():
    # the re-ranking was triggered by the k-th distance only: with k = max(R, max(k_values))
    # reaching a cluster 3000 away, the near picks kept the cancelled-matmul order (P@1 0.0 with
    # the default k_values, 1.0 with k_values=(1,); 0.0 or 1.0 with the far references' labels)
    rng = np.random.default_rng(0)
    q = (1e-3 * rng.normal(size=(1, 4))).astype(np.float32)
    near = (1e-3 * rng.normal(size=(6, 4))).astype(np.float32)
    R = np.r_[near, (3000.0 + rng.normal(size=(20, 4))).astype(np.float32)]
    nearest = int(np.linalg.norm(near.astype(np.float64) - q, axis=1).argmin())
    for far_label, k_values in ((0, (1, 2, 4, 8)), (1, (1,))):
        ry = np.zeros(26, int)
        ry[nearest] = 1
        ry[6:] = far_label
        res = evaluation.retrieval_metrics(q, [1], R, ry, nmi=False, k_values=k_values)
        assert res["precision_at_1"] == 1.0
    # the near queries of two clusters, each class in both: as brute force (the near references
    # seen from the far cluster are within float32's resolution of one another: not compared)
    X = np.r_[1e-3 * rng.normal(size=(30, 4)), 3000.0 + rng.normal(size=(30, 4))]
    X = X.astype(np.float32)
    y = rng.integers(0, 2, 60)
    assert_metrics_close(
        evaluation.retrieval_metrics(X[:30], y[:30], X, y, nmi=False, selection="host"),
        brute_retrieval(X[:30].astype(np.float64), y[:30], X.astype(np.float64), y),
    )


def test_mahalanobis_given_L_is_re_ranked_as_given_M():
    # metric_kwargs={"L": L} was never re-ranked: P@1 0.4 against 0.6 for euclidean and M = I
    rng = np.random.default_rng(0)
    X = np.r_[1e-3 * rng.normal(size=(20, 3)), 3000.0 + rng.normal(size=(20, 3))]
    X = X.astype(np.float32)
    y = np.r_[rng.integers(0, 2, 20), rng.integers(2, 4, 20)]
    L = np.array([[2.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
    X64 = X.astype(np.float64)
    for kw, Z in ((np.eye(3), X64), (L, X64 @ L.T)):
        got = evaluation.retrieval_metrics(
            X, y, metric="mahalanobis", metric_kwargs={"L": kw}, nmi=False, k_values=(1,)
        )
        assert_metrics_close(got, brute_retrieval(Z, y, k_values=(1,)))


def test_mahalanobis_given_L_re_ranks_no_row_of_ordinary_data(monkeypatch):
    """The bound for L (norms of |L||x|, squared, times (k + 4d + 3) u) sent 1796 of digits' 1797
    rows with a random L through the float64 re-ranking (3x slower, same results)."""
    X = datasets.load("digits").X.astype(np.float32)
    y = datasets.load("digits").y
    L = np.random.default_rng(0).normal(size=(10, 64))
    re_ranked = []
    call = evaluation._Refiner.__call__

    def counting(self, i, row, cols):
        out = call(self, i, row, cols)
        if out is not cols:
            re_ranked.append(i)
        return out

    monkeypatch.setattr(evaluation._Refiner, "__call__", counting)
    res = evaluation.retrieval_metrics(
        X, y, metric="mahalanobis", metric_kwargs={"L": L}, nmi=False, selection="host"
    )
    assert re_ranked == []
    # float32 rounding may order a near-tie otherwise (MAP@R in the 9th digit)
    assert_metrics_close(res, brute_retrieval(X.astype(np.float64) @ L.T, y), tol=1e-6)
