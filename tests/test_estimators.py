"""Tests of the scikit-learn estimators (metriclearn.estimators)."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import metriclearn as ml
from metriclearn import estimators as est_mod


def _iris_small(n_per_class=15, seed=0):
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in range(3)])
    return StandardScaler().fit_transform(X)[idx], y[idx]


def _pairs_data(seed=0):
    X, y = _iris_small()
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), 120)
    j = rng.integers(0, len(X), 120)
    keep = i != j
    i, j = i[keep], j[keep]
    pair_y = np.where(y[i] == y[j], 1, -1)
    return X, np.stack([i, j], 1), pair_y


# ----------------------------------------------------------------------------------------------------
# scikit-learn conformance


# Checks whose fixtures cannot satisfy a learner's documented requirement.
_EXPECTED_FAILURES = {
    "LMNN": {
        "check_fit2d_1feature": "LMNN needs n_neighbors + 1 samples per class; the 10-sample fixture "
        "has a class of 3, which raises a ValueError by design",
    },
    "RCA": {
        "check_fit_score_takes_y": "RCA.fit's second argument is chunks (chunklet ids), named as in "
        "metric-learn",
    },
}

_FAST_CHECKS = ["Covariance"]
_SLOW_CHECKS = [
    "LFDA",
    "NCA",
    "MLKR",
    "LMNN",
    "ITML_Supervised",
    "SDML_Supervised",
    "MMC_Supervised",
    "LSML_Supervised",
    "SCML_Supervised",
    "RCA_Supervised",
    "RCA",
]


def _run_check_estimator(name):
    est = getattr(ml, name)()
    # max_iter None is the learner's own budget (MMC: 10 ascent cycles)
    if getattr(est, "max_iter", None) is not None:
        est.set_params(max_iter=min(est.max_iter, 50))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(est, expected_failed_checks=_EXPECTED_FAILURES.get(name, {}))


@pytest.mark.parametrize("name", _FAST_CHECKS)
def test_check_estimator(name):
    _run_check_estimator(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", _SLOW_CHECKS)
def test_check_estimator_iterative(name):
    _run_check_estimator(name)


def test_cross_val_score_pipeline_runs_as_written():
    scores = cross_val_score(
        make_pipeline(ml.NCA(), KNeighborsClassifier()), *load_iris(return_X_y=True)
    )
    assert scores.shape == (5,) and scores.mean() > 0.9


# ----------------------------------------------------------------------------------------------------
# the Mahalanobis API


@pytest.mark.parametrize(
    "make",
    [
        lambda: ml.Covariance(),
        lambda: ml.NCA(max_iter=20),
        lambda: ml.LFDA(k=3),
        lambda: ml.MLKR(max_iter=20),
    ],
)
def test_mahalanobis_api_against_brute_force(make):
    X, y = _iris_small()
    est = make().fit(X, y)
    L = est.components_
    assert L.shape[1] == 4 and np.all(np.isfinite(L)) and est.n_features_in_ == 4
    M = est.get_mahalanobis_matrix()
    np.testing.assert_allclose(M, L.T @ L)
    np.testing.assert_allclose(est.transform(X), X @ L.T)
    pairs = np.stack([X[:10], X[10:20]], axis=1)
    brute = np.array([np.sqrt((a - b) @ M @ (a - b)) for a, b in zip(X[:10], X[10:20])])
    np.testing.assert_allclose(est.pair_distance(pairs), brute, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(est.pair_score(pairs), -brute, rtol=1e-6, atol=1e-9)
    # metric-learn < 0.7's name for the distances, still in ported code
    with pytest.warns(FutureWarning, match="pair_distance"):
        np.testing.assert_allclose(est.score_pairs(pairs), brute, rtol=1e-6, atol=1e-9)
    metric = est.get_metric()
    np.testing.assert_allclose([metric(a, b) for a, b in zip(X[:10], X[10:20])], brute, rtol=1e-6)
    assert pickle.loads(pickle.dumps(metric))(X[0], X[1]) == pytest.approx(metric(X[0], X[1]))
    # called directly: NaN input returned NaN, and vectors of the wrong length NumPy's matmul error
    with pytest.raises(ValueError, match="v contains NaN"):
        metric(X[0], np.where(np.arange(4) == 2, np.nan, X[1]))
    with pytest.raises(ValueError, match="vectors of 4 features"):
        metric(X[0], X[1][:3])


def test_get_metric_in_knn_matches_transform():
    X, y = _iris_small()
    est = ml.LFDA(k=3).fit(X, y)
    knn_metric = KNeighborsClassifier(3, metric=est.get_metric()).fit(X, y)
    knn_euclid = KNeighborsClassifier(3).fit(est.transform(X), y)
    Xq = X[::3] + 0.05
    np.testing.assert_array_equal(knn_metric.predict(Xq), knn_euclid.predict(est.transform(Xq)))


def test_unfitted_and_wrong_width():
    X, y = _iris_small()
    with pytest.raises(Exception, match="not fitted"):
        ml.NCA().transform(X)
    est = ml.Covariance().fit(X)
    with pytest.raises(ValueError, match="features"):
        est.transform(X[:, :3])
    with pytest.raises(ValueError, match="features"):
        est.pair_distance(np.stack([X[:3, :3], X[3:6, :3]], 1))


# ----------------------------------------------------------------------------------------------------
# bad input for every label-supervised class


_SUPERVISED = {
    "Covariance": lambda: ml.Covariance(),
    "NCA": lambda: ml.NCA(max_iter=5),
    "LMNN": lambda: ml.LMNN(max_iter=5),
    "LFDA": lambda: ml.LFDA(),
    "MLKR": lambda: ml.MLKR(max_iter=5),
    "ITML_Supervised": lambda: ml.ITML_Supervised(max_iter=5),
    "SDML_Supervised": lambda: ml.SDML_Supervised(max_iter=5),
    "MMC_Supervised": lambda: ml.MMC_Supervised(max_iter=5),
    "LSML_Supervised": lambda: ml.LSML_Supervised(max_iter=5),
    "SCML_Supervised": lambda: ml.SCML_Supervised(max_iter=5),
    "RCA_Supervised": lambda: ml.RCA_Supervised(),
}


@pytest.mark.parametrize("name", list(_SUPERVISED))
def test_bad_input_raises_value_error(name):
    X, y = _iris_small()
    make = _SUPERVISED[name]
    Xbad = X.copy()
    Xbad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(Xbad, y)
    Xinf = X.copy()
    Xinf[0, 0] = np.inf
    with pytest.raises(ValueError, match="(?i)inf"):
        make().fit(Xinf, y)
    with pytest.raises(ValueError):
        make().fit(X[:, 0], y)
    if name == "Covariance":  # unsupervised: y is ignored
        return
    with pytest.raises(ValueError, match="(?i)inconsistent|samples"):
        make().fit(X, y[:-1])
    if name == "MLKR":  # real targets: a constant target is the degenerate case
        with pytest.raises(ValueError, match="constant"):
            make().fit(X, np.zeros(len(X)))
        return
    with pytest.raises(ValueError, match="(?i)class"):
        make().fit(X, np.zeros(len(X), int))
    # a regression target is refused as scikit-learn's NCA refuses it; NCA said "non-finite
    # transformation; check the input scaling", and a rounded one was fitted as 24 classes
    for target in (np.linspace(0.0, 1.0, len(X)), np.round(X[:, 0], 1)):
        with pytest.raises(ValueError, match="continuous"):
            make().fit(X, target)


@pytest.mark.parametrize("name", ["NCA", "LMNN", "LFDA", "MLKR", "RCA_Supervised"])
def test_n_components_too_large(name):
    X, y = _iris_small()
    est = _SUPERVISED[name]().set_params(n_components=5)
    with pytest.raises(ValueError, match="n_components"):
        est.fit(X, y)


_SHIFT_SETTINGS = {
    "Covariance": {},
    "NCA": {"max_iter": 30},
    "LMNN": {"max_iter": 30},
    "LFDA": {"k": 3},
    "MLKR": {"max_iter": 30},
    "ITML_Supervised": {"max_iter": 30, "random_state": 0},
    "SDML_Supervised": {"random_state": 0},
    "MMC_Supervised": {"random_state": 0},
    "LSML_Supervised": {"max_iter": 30, "random_state": 0},
    "SCML_Supervised": {"max_iter": 50, "random_state": 0},
    "RCA_Supervised": {"random_state": 0},
}


@pytest.mark.parametrize("name", list(_SHIFT_SETTINGS))
def test_moving_the_data_does_not_change_the_metric(name):
    """Every learner depends on differences of points only. In float32, data far from the origin
    lost their differences: NCA's metric changed completely for iris + 100, LFDA's by 5.6e3
    (relative) for iris + 1000, and RCA took iris + 1000 for degenerate."""
    X, y = _iris_small(n_per_class=20)
    target = y.astype(float) if name == "MLKR" else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        M0 = getattr(ml, name)(**_SHIFT_SETTINGS[name]).fit(X, target).get_mahalanobis_matrix()
        for shift in (100.0, 1000.0):
            est = getattr(ml, name)(**_SHIFT_SETTINGS[name]).fit(X + shift, target)
            M = est.get_mahalanobis_matrix()
            assert np.linalg.norm(M - M0) <= 1e-5 * np.linalg.norm(M0), (name, shift)
            # the transform is of the user's (uncentred) data: distances are what the metric says
            Z = est.transform(X + shift)
            d = np.linalg.norm(Z[0] - Z[1])
            assert d == pytest.approx(np.sqrt((X[0] - X[1]) @ M @ (X[0] - X[1])), rel=1e-6)


def test_pair_learner_on_shifted_pairs():
    X, idx, pair_y = _pairs_data()
    M0 = ml.ITML(max_iter=30, random_state=0).fit(X[idx], pair_y).get_mahalanobis_matrix()
    M = ml.ITML(max_iter=30, random_state=0).fit(X[idx] + 1000.0, pair_y).get_mahalanobis_matrix()
    assert np.linalg.norm(M - M0) <= 1e-5 * np.linalg.norm(M0)


def test_lmnn_neighbors_vs_class_size():
    X, y = _iris_small(n_per_class=3)
    with pytest.raises(ValueError, match="n_neighbors"):
        ml.LMNN(n_neighbors=3, max_iter=5).fit(X, y)


@pytest.mark.parametrize("name", ["ITML_Supervised", "SDML_Supervised", "LSML_Supervised"])
def test_non_psd_prior_rejected(name):
    X, y = _iris_small()
    prior = np.diag([1.0, 1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="(?i)psd|positive|prior"):
        _SUPERVISED[name]().set_params(prior=prior).fit(X, y)


def test_supervised_weak_learners_are_seeded():
    X, y = _iris_small()
    a = ml.ITML_Supervised(max_iter=20, random_state=3).fit(X, y).components_
    b = ml.ITML_Supervised(max_iter=20, random_state=3).fit(X, y).components_
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["LSML_Supervised", "SCML_Supervised"])
def test_refused_constraint_draw_leaves_no_state(name):
    # every class a singleton: no quadruplet / k-NN triplet exists, so the fit is refused before
    # the solver runs; no solver key stays stashed for a later fit of the same estimator
    X, _ = _iris_small()
    est = _SUPERVISED[name]()
    with pytest.raises(ValueError, match="single member"):
        est.fit(X, np.arange(len(X)))
    assert "_fit_key" not in vars(est) and not hasattr(est, "components_")


def test_default_constraint_count():
    assert est_mod._default_constraints(None, np.array([0, 1, 2])) == 180
    assert est_mod._default_constraints(7, np.array([0, 1])) == 7
    with pytest.raises(ValueError, match="n_constraints"):
        est_mod._default_constraints(0, np.array([0, 1]))


# ----------------------------------------------------------------------------------------------------
# pair learners


def _threshold_brute(dist, y, strategy, min_rate=None, beta=1.0):
    """Best value of the strategy's criterion over every cut (brute force)."""
    best = -np.inf
    for t in np.r_[-1.0, np.unique(dist)]:
        pred = np.where(dist <= t, 1, -1)
        tp = np.sum((pred == 1) & (y == 1))
        fp = np.sum((pred == 1) & (y == -1))
        tn = np.sum((pred == -1) & (y == -1))
        fn = np.sum((pred == -1) & (y == 1))
        tpr, tnr = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
        if strategy == "accuracy":
            v = (tp + tn) / len(y)
        elif strategy == "f_beta":
            d = (1 + beta**2) * tp + beta**2 * fn + fp
            v = (1 + beta**2) * tp / d if d else 0.0
        elif strategy == "max_tpr":
            v = tpr if tnr >= min_rate else -np.inf
        else:
            v = tnr if tpr >= min_rate else -np.inf
        best = max(best, v)
    return best


def _criterion(pred, y, strategy, beta=1.0):
    tp = np.sum((pred == 1) & (y == 1))
    fp = np.sum((pred == 1) & (y == -1))
    tn = np.sum((pred == -1) & (y == -1))
    fn = np.sum((pred == -1) & (y == 1))
    if strategy == "accuracy":
        return (tp + tn) / len(y)
    if strategy == "f_beta":
        d = (1 + beta**2) * tp + beta**2 * fn + fp
        return (1 + beta**2) * tp / d if d else 0.0
    if strategy == "max_tpr":
        return tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    return tn / max(tn + fp, 1), tp / max(tp + fn, 1)


def test_pairs_learner_api_with_preprocessor():
    X, idx, pair_y = _pairs_data()
    itml = ml.ITML(max_iter=50, preprocessor=X).fit(idx, pair_y)
    explicit = ml.ITML(max_iter=50).fit(X[idx], pair_y)
    np.testing.assert_allclose(itml.components_, explicit.components_, rtol=1e-6, atol=1e-8)
    d = itml.pair_distance(idx)
    np.testing.assert_allclose(d, explicit.pair_distance(X[idx]), rtol=1e-6)
    np.testing.assert_allclose(itml.decision_function(idx), -d)
    np.testing.assert_array_equal(itml.predict(idx), np.where(d <= itml.threshold_, 1, -1))
    from sklearn.metrics import roc_auc_score

    assert itml.score(idx, pair_y) == pytest.approx(roc_auc_score(pair_y, -d))
    assert itml.score(idx, pair_y) > 0.8
    # the default threshold maximises training accuracy
    acc = np.mean(itml.predict(idx) == pair_y)
    assert acc == pytest.approx(_threshold_brute(d, pair_y, "accuracy"))
    assert list(itml.classes_) == [-1, 1]


@pytest.mark.parametrize(
    "strategy,kw",
    [
        ("accuracy", {}),
        ("f_beta", {"beta": 2.0}),
        ("max_tpr", {"min_rate": 0.8}),
        ("max_tnr", {"min_rate": 0.9}),
    ],
)
def test_calibrate_threshold_strategies(strategy, kw):
    X, idx, pair_y = _pairs_data()
    est = ml.ITML(max_iter=20, preprocessor=X).fit(idx, pair_y)
    est.calibrate_threshold(idx, pair_y, strategy=strategy, **kw)
    d = est.pair_distance(idx)
    pred = est.predict(idx)
    got = _criterion(pred, pair_y, strategy, kw.get("beta", 1.0))
    best = _threshold_brute(d, pair_y, strategy, kw.get("min_rate"), kw.get("beta", 1.0))
    if strategy in ("max_tpr", "max_tnr"):
        assert got[1] >= kw["min_rate"] and got[0] == pytest.approx(best)
    else:
        assert got == pytest.approx(best)


@pytest.mark.parametrize("beta", [1e200, np.inf])
def test_calibrate_threshold_f_beta_large_beta_is_recall(beta):
    """F-beta tends to recall as beta grows (scikit-learn's fbeta_score: beta=inf is recall); beta^2
    overflowed to inf and every F-score became NaN, so the threshold was the first cut's (ITML on
    these pairs: recall .025 where 1.0 is reachable)."""
    X, idx, pair_y = _pairs_data()
    est = ml.ITML(max_iter=20, preprocessor=X).fit(idx, pair_y)
    t_recall = est.calibrate_threshold(idx, pair_y, strategy="max_tnr", min_rate=1.0).threshold_
    est.calibrate_threshold(idx, pair_y, strategy="f_beta", beta=beta)
    assert np.all(est.predict(idx)[pair_y == 1] == 1)
    assert est.threshold_ == t_recall  # recall 1 at the best precision, as for beta = 1e6
    assert est.calibrate_threshold(idx, pair_y, strategy="f_beta", beta=1e6).threshold_ == t_recall


def test_calibrate_threshold_errors():
    X, idx, pair_y = _pairs_data()
    est = ml.ITML(max_iter=5, preprocessor=X).fit(idx, pair_y)
    with pytest.raises(ValueError, match="strategy"):
        est.calibrate_threshold(idx, pair_y, strategy="nope")
    with pytest.raises(ValueError, match="min_rate"):
        est.calibrate_threshold(idx, pair_y, strategy="max_tpr")
    with pytest.raises(ValueError, match="beta"):
        est.calibrate_threshold(idx, pair_y, strategy="f_beta", beta=0)
    # bad calibration_params of fit: refused before the solver runs (an unknown key raised
    # TypeError after it, with components_ already replaced and threshold_ left stale)
    before = (est.components_.copy(), est.threshold_)
    for params, message in (
        ({"strategy": "max_tpr", "min_rte": 0.9}, "unknown calibration_params"),
        ({"strategy": "max_tnr"}, "min_rate"),
        ({"strategy": "nope"}, "strategy"),
    ):
        with pytest.raises(ValueError, match=message):
            est.fit(idx[:10], pair_y[:10], calibration_params=params)
        np.testing.assert_array_equal(est.components_, before[0])
        assert est.threshold_ == before[1]


def _spread_pairs(n=200, seed=0):
    """Pairs of points spread over +-1e5 whose two points differ by ~0.01: float32 (ulp ~0.008 at
    1e5) loses most of each pair's difference, float64 keeps it."""
    rng = np.random.RandomState(seed)
    a = rng.uniform(-1e5, 1e5, (n, 1, 2))
    y = np.where(rng.rand(n) < 0.5, -1, 1)
    delta = np.where(y[:, None, None] == 1, 0.01, 0.02) * rng.rand(n, 1, 2)
    return np.concatenate([a, a + delta], axis=1), y


def test_pairs_score_and_threshold_use_float64_distances():
    """score and calibrate_threshold ran on pairs rounded to float32 (check_pairs' copy), predict and
    decision_function on float64 ones: score was .8028 where the ROC AUC of decision_function is
    .8224, and the accuracy threshold left a better float64 cut unused."""
    from sklearn.metrics import roc_auc_score

    P, y = _spread_pairs()
    est = ml.ITML(max_iter=5).fit(P, y)
    d = est.pair_distance(P)
    assert est.score(P, y) == roc_auc_score(y, est.decision_function(P))
    assert np.mean(est.predict(P) == y) == _threshold_brute(d, y, "accuracy")
    est.calibrate_threshold(P, y, strategy="f_beta", beta=0.5)
    got = _criterion(est.predict(P), y, "f_beta", 0.5)
    assert got == pytest.approx(_threshold_brute(d, y, "f_beta", beta=0.5))
    for strategy in ("max_tpr", "max_tnr"):
        for rate in (0.0, 0.3, 0.5, 0.7, 0.9, 1.0):
            est.calibrate_threshold(P, y, strategy=strategy, min_rate=rate)
            primary, constrained = _criterion(est.predict(P), y, strategy)
            assert constrained >= rate, (strategy, rate)
            assert primary == pytest.approx(_threshold_brute(d, y, strategy, rate)), (
                strategy,
                rate,
            )


def test_metric_learner_pair_score_and_threshold_use_float64_distances():
    """MetricLearner(loss="pair_hinge"): same float32 rounding in score (.8008 vs .8222) and in the
    threshold_ fitted for the best training accuracy."""
    from sklearn.metrics import roc_auc_score

    P, y = _spread_pairs()
    est = ml.MetricLearner(loss="pair_hinge", max_iter=5).fit(P, y)
    assert est.score(P, y) == roc_auc_score(y, est.decision_function(P))
    d = est.pair_distance(P)
    assert np.mean(est.predict(P) == y) == _threshold_brute(d, y, "accuracy")


def test_metric_learner_pairs_spread_far_from_the_origin():
    """MetricLearner(loss="pair_hinge") sees the pairs through x - x' only: moving each pair by its
    own shift of up to 1e5 must leave M unchanged. The differences were taken after the cast to
    float32 (fit centres the pairs, but spread data stay far from the centre), where pairs 0.05-0.2
    apart near 1e5 lose their digits (M off by ~1e-2)."""
    rng = np.random.RandomState(0)
    P = rng.randn(60, 2, 3) * np.array([0.05, 0.1, 0.2])
    y = np.where(rng.rand(60) < 0.5, 1, -1)
    shifts = 1e5 * rng.randn(60, 1, 3)
    ref = ml.MetricLearner(loss="pair_hinge", max_iter=20).fit(P, y).get_mahalanobis_matrix()
    M = ml.MetricLearner(loss="pair_hinge", max_iter=20).fit(P + shifts, y).get_mahalanobis_matrix()
    np.testing.assert_allclose(M, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_metric_learner_without_regularizer_ignores_lam_but_checks_it():
    """The solver refuses lam > 0 without a regularizer; MetricLearner's default lam (1e-3) must not
    make regularizer=None unusable, and a negative lam is still refused by name."""
    T = np.random.RandomState(0).randn(40, 3, 3)
    est = ml.MetricLearner(regularizer=None, max_iter=20).fit(T)
    assert est.n_iter_ >= 1 and np.all(np.isfinite(est.get_mahalanobis_matrix()))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        ml.MetricLearner(regularizer=None, lam=-1.0).fit(T)


def test_calibrate_threshold_max_tpr_min_rate_zero_accepts_every_pair():
    """max_tpr with min_rate=0 must give TPR 1: the threshold was the largest float32-rounded distance,
    just below the float64 one that predict compares (TPR .957 on 5 of 10 such ITML fits)."""
    for seed in range(3):
        rng = np.random.RandomState(seed)
        P = rng.randn(40, 2, 3)
        y = np.where(rng.rand(40) < 0.5, -1, 1)
        y[:2] = [-1, 1]
        est = ml.ITML(max_iter=5).fit(P, y)
        y[np.argmax(est.pair_distance(P))] = 1  # the farthest pair is a similar one
        est.calibrate_threshold(P, y, strategy="max_tpr", min_rate=0.0)
        assert np.all(est.predict(P)[y == 1] == 1), seed
        assert est.threshold_ > est.pair_distance(P).max()


def test_best_threshold_cuts_are_exact_on_the_given_distances():
    """The chosen threshold splits the given float64 distances exactly as counted: a midpoint of two
    adjacent floats rounded up to the larger one (accepting it), and "accept all" sat exactly on the
    largest distance (flipped by any rounding of a recomputed distance)."""
    a = 1.0 + 2.0**-52
    b = np.nextafter(a, 2.0)
    assert 0.5 * (a + b) == b  # the naive midpoint rounds up to b
    dist, y = np.array([a, b]), np.array([1, -1])
    t = est_mod._best_threshold(dist, y, "accuracy", None, 1.0)
    assert a <= t < b
    np.testing.assert_array_equal(np.where(dist <= t, 1, -1), y)
    # accept all: strictly above the largest distance; reject all: strictly below the smallest
    dist = np.array([0.5, 2.0, 2.0, 3.0])
    t = est_mod._best_threshold(dist, np.array([1, 1, -1, 1]), "max_tpr", 0.0, 1.0)
    assert t > 3.0
    t = est_mod._best_threshold(dist, np.array([-1, 1, 1, -1]), "max_tnr", 0.0, 1.0)
    assert t < 0.5


@pytest.mark.parametrize(
    "make",
    [lambda: ml.ITML(max_iter=20), lambda: ml.SDML(max_iter=20), lambda: ml.MMC(max_iter=20)],
)
def test_pair_learners_fit_and_validate(make):
    X, idx, pair_y = _pairs_data()
    P = X[idx]
    est = make().fit(P, pair_y)
    assert np.all(np.isfinite(est.components_)) and est.score(P, pair_y) > 0.7
    with pytest.raises(ValueError, match=r"\[n, 2, d\]"):
        make().fit(X[:10, None, :].repeat(3, 1), np.ones(10))
    with pytest.raises(ValueError, match="-1"):
        make().fit(P, np.where(pair_y > 0, 2, -1))
    with pytest.raises(ValueError, match="only"):
        make().fit(P, np.ones(len(P)))
    with pytest.raises(ValueError, match="empty"):
        make().fit(P[:0], pair_y[:0])
    with pytest.raises(ValueError, match="preprocessor"):
        make().fit(idx, pair_y)
    with pytest.raises(ValueError, match="NaN"):
        make().fit(np.where(P > 1.5, np.nan, P), pair_y)


# ----------------------------------------------------------------------------------------------------
# triplet and quadruplet learners


def _triplets(X, y, n=150, seed=0):
    from metriclearn import constraints

    return constraints.triplets(seed, y, n_triplets=n)


def test_triplet_learner_predict_and_score():
    X, y = _iris_small()
    t = _triplets(X, y)
    est = ml.SCML(max_iter=300, preprocessor=X, random_state=0).fit(t)
    T = X[t]
    L = est.components_
    d_ab = np.linalg.norm((T[:, 0] - T[:, 1]) @ L.T, axis=1)
    d_ac = np.linalg.norm((T[:, 0] - T[:, 2]) @ L.T, axis=1)
    np.testing.assert_array_equal(est.predict(t), np.where(d_ab < d_ac, 1, -1))
    assert est.score(t) == pytest.approx(np.mean(d_ab < d_ac))
    assert est.score(T) > 0.7
    with pytest.raises(ValueError, match=r"\[n, 3, d\]"):
        ml.SCML().fit(T[:, :2])


def test_quadruplet_learner_predict_and_score():
    from metriclearn import constraints

    X, y = _iris_small()
    q = constraints.quadruplets(0, y, n_quadruplets=150)
    est = ml.LSML(max_iter=200, preprocessor=X).fit(q)
    Q = X[q]
    L = est.components_
    d_ab = np.linalg.norm((Q[:, 0] - Q[:, 1]) @ L.T, axis=1)
    d_cd = np.linalg.norm((Q[:, 2] - Q[:, 3]) @ L.T, axis=1)
    np.testing.assert_array_equal(est.predict(Q), np.where(d_ab < d_cd, 1, -1))
    assert est.score(Q) == pytest.approx(np.mean(d_ab < d_cd)) and est.score(Q) > 0.7
    y_flip = -est.predict(Q)
    assert est.score(Q, y_flip) == 0.0
    with pytest.raises(ValueError, match=r"\[n, 4, d\]"):
        ml.LSML().fit(Q[:, :3])
    with pytest.raises(ValueError, match="empty"):
        ml.LSML().fit(Q[:0])


@pytest.mark.parametrize(
    "make,kind",
    [
        (lambda: ml.ITML(max_iter=5), "pairs"),
        (lambda: ml.MMC(max_iter=5), "pairs"),
        (lambda: ml.SCML(max_iter=20, random_state=0), "triplets"),
        (lambda: ml.LSML(max_iter=5), "quadruplets"),
        (lambda: ml.MetricLearner(max_iter=5), "triplets"),
    ],
    ids=["ITML", "MMC", "SCML", "LSML", "MetricLearner"],
)
def test_tuple_learner_refit_on_data_of_another_width(make, kind):
    """A second fit is a fresh fit: it refused tuples of another width than the first fit's
    ("pairs have 3 features, but ITML is expecting 4 features as input")."""
    from metriclearn import constraints

    X, y = _iris_small()
    if kind == "pairs":
        idx, py = constraints.pairs(0, y, n_similar=30, n_dissimilar=30)
        extra = (py,)
    elif kind == "triplets":
        idx, extra = constraints.triplets(0, y, n_triplets=60), ()
    else:
        idx, extra = constraints.quadruplets(0, y, n_quadruplets=60), ()
    est = make().fit(X[idx], *extra)
    est.fit(X[idx][..., :3], *extra)
    assert est.n_features_in_ == 3 and est.components_.shape[1] == 3
    assert est.transform(X[:, :3]).shape[0] == len(X)
    with pytest.raises(ValueError, match="features"):
        est.transform(X)
    fresh = make().fit(X[idx][..., :3], *extra)
    np.testing.assert_allclose(est.components_, fresh.components_, rtol=1e-6, atol=1e-9)


def test_rca_chunklets():
    X, y = _iris_small()
    chunks = np.full(len(X), -1)
    chunks[:10] = np.repeat(np.arange(5), 2)  # chunklets within class 0 of the sorted subset
    est = ml.RCA().fit(X, chunks)
    assert est.components_.shape[1] == 4 and np.all(np.isfinite(est.components_))
    # integer ids in an object array (scikit-learn's check_dtype_object) were refused
    np.testing.assert_array_equal(
        ml.RCA().fit(X, chunks.astype(object)).components_, est.components_
    )
    for bad in (
        chunks.astype(str).astype(object),
        np.where(chunks >= 0, True, False).astype(object),
    ):
        with pytest.raises(ValueError, match="integer chunk ids"):
            ml.RCA().fit(X, bad)


# ----------------------------------------------------------------------------------------------------
# quality (ANCHORS.md protocol)


_ANCHORS = {  # metric-learn 0.7.0 3-NN accuracy (ANCHORS.md); None: metric-learn fails
    "Covariance": {"iris": 0.900, "wine": 0.910, "breast_cancer": 0.812, "digits": 0.943},
    "NCA": {"iris": 0.967, "wine": 0.972, "breast_cancer": 0.965, "digits": 0.981},
    "LFDA": {"iris": 0.953, "wine": 0.989, "breast_cancer": 0.951, "digits": None},
    "MLKR": {"iris": 0.967, "wine": 0.961, "breast_cancer": 0.963, "digits": 0.978},
}
_LOADERS = {
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "digits": load_digits,
}
_EUCLID_DIGITS = 0.977


def anchors_accuracy(make, dataset):
    X, y = _LOADERS[dataset](return_X_y=True)
    X = StandardScaler().fit_transform(X)
    accs = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        est = make().fit(X[tr], y[tr])
        assert np.all(np.isfinite(est.components_))
        knn = KNeighborsClassifier(3).fit(est.transform(X[tr]), y[tr])
        accs.append(knn.score(est.transform(X[te]), y[te]))
    return float(np.mean(accs))


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(_LOADERS))
@pytest.mark.parametrize("name", list(_ANCHORS))
def test_quality_against_metric_learn(name, dataset):
    make = {
        "Covariance": lambda: ml.Covariance(),
        "NCA": lambda: ml.NCA(max_iter=100, random_state=0),
        "LFDA": lambda: ml.LFDA(),
        "MLKR": lambda: ml.MLKR(max_iter=100, random_state=0),
    }[name]
    acc = anchors_accuracy(make, dataset)
    ref = _ANCHORS[name][dataset]
    if ref is None:  # metric-learn fails: finite and useful (within 1 point of Euclidean 3-NN)
        assert acc >= _EUCLID_DIGITS - 0.01
    else:
        assert acc >= ref - 0.01, f"{name} on {dataset}: {acc:.3f} < {ref:.3f} - 0.01"


# ----------------------------------------------------------------------------------------------------
# the generic estimator


@pytest.mark.parametrize("loss", ["triplet_hinge", "triplet_logistic", "pair_hinge"])
def test_metric_learner_improves_constraints(loss):
    from metriclearn import constraints

    X, y = _iris_small()
    if loss == "pair_hinge":
        idx, py = constraints.pairs(0, y, n_similar=60, n_dissimilar=60)
        est = ml.MetricLearner(
            loss=loss, regularizer="logdet", lam=0.1, preprocessor=X, max_iter=100
        )
        est.fit(idx, py)
        from sklearn.metrics import roc_auc_score

        base = roc_auc_score(py, -np.linalg.norm(X[idx[:, 0]] - X[idx[:, 1]], axis=1))
        assert roc_auc_score(py, est.pair_score(idx)) > base
        assert est.score(idx, py) == pytest.approx(roc_auc_score(py, est.pair_score(idx)))
        pred = est.predict(idx)
        assert set(np.unique(pred)) <= {-1, 1}
        assert np.array_equal(pred, np.where(est.pair_distance(idx) <= est.threshold_, 1, -1))
        assert np.mean(pred == py) > 0.5
        with pytest.raises(ValueError, match="only"):
            ml.MetricLearner(loss=loss, preprocessor=X).fit(idx, np.ones(len(idx)))
        return
    t = constraints.triplets(0, y, n_triplets=150)
    est = ml.MetricLearner(
        loss=loss, regularizer="trace", lam=0.01, preprocessor=X, max_iter=100
    ).fit(t)
    T = X[t]

    def satisfied(L):
        return np.mean(
            np.linalg.norm((T[:, 0] - T[:, 1]) @ L.T, axis=1)
            < np.linalg.norm((T[:, 0] - T[:, 2]) @ L.T, axis=1)
        )

    assert satisfied(est.components_) > satisfied(np.eye(4))
    assert est.score(t) == pytest.approx(satisfied(est.components_), abs=1e-6)
    assert set(np.unique(est.predict(t))) <= {-1, 1}
    assert np.all(np.isfinite(est.components_)) and est.n_features_in_ == 4


def test_metric_learner_bad_names():
    X, y = _iris_small()
    with pytest.raises(ValueError, match="unknown loss"):
        ml.MetricLearner(loss="nope").fit(np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="unknown regularizer"):
        ml.MetricLearner(regularizer="nope").fit(X[np.array([[0, 1, 40], [2, 3, 41]])])
    # thresholds and margin: named (u="a" raised float()'s own message, margin=nan reported a
    # non-finite objective at the start without naming it)
    pairs, py = X[np.array([[0, 1], [2, 41]])], np.array([1, -1])
    for kw, name in (({"u": "a"}, "u"), ({"l": -1.0}, "l"), ({"u": np.inf}, "u")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            ml.MetricLearner(loss="pair_hinge", **kw).fit(pairs, py)
    with pytest.raises(ValueError, match="^margin must be a finite number"):
        ml.MetricLearner(margin=np.nan).fit(X[np.array([[0, 1, 40], [2, 3, 41]])])


def test_parameter_errors_name_the_parameter():
    X, y = _iris_small()
    for kw, name in (
        ({"regularization": "a"}, "regularization"),
        ({"tol": "a"}, "tol"),
        ({"learn_rate": "a", "solver": "gd"}, "learn_rate"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be a real number, got 'a'"):
            ml.LMNN(max_iter=3, **kw).fit(X, y)
    _, idx, pair_y = _pairs_data()
    est = ml.ITML(max_iter=5, preprocessor=X).fit(idx, pair_y)
    with pytest.raises(ValueError, match="min_rate must be a real number"):
        est.calibrate_threshold(idx, pair_y, strategy="max_tpr", min_rate="a")
    with pytest.raises(ValueError, match="beta must be a real number"):
        est.calibrate_threshold(idx, pair_y, strategy="f_beta", beta=[1.0])
    with pytest.raises(ValueError, match="diagonal must be True or False, got 'yes'"):
        ml.MMC_Supervised(diagonal="yes", random_state=0).fit(X, y)


def test_feature_names_out_and_set_output():
    X, y = _iris_small()
    pipe = make_pipeline(StandardScaler(), ml.NCA(n_components=2, max_iter=5)).fit(X, y)
    assert list(pipe.get_feature_names_out()) == ["nca0", "nca1"]
    rca = ml.RCA().fit(X, np.repeat(np.arange(len(X) // 3), 3)[: len(X)])
    assert list(rca.get_feature_names_out()) == [f"rca{i}" for i in range(4)]
    est = ml.LFDA(k=3).set_output(transform="default")
    with pytest.raises(Exception, match="not fitted"):
        est.get_feature_names_out()
    assert est.fit(X, y).transform(X).shape == (len(X), 4)
    # set_output reached fit_transform but not transform (inherited, so scikit-learn never wrapped it)
    try:
        import pandas
    except ImportError:
        pandas = None
    chunks = np.repeat(np.arange(len(X) // 3), 3)[: len(X)]
    for fitted in (
        ml.Covariance().set_output(transform="pandas").fit(X, y),
        ml.RCA().set_output(transform="pandas").fit(X, chunks),
    ):
        if pandas is None:
            with pytest.raises(ImportError, match="pandas"):
                fitted.transform(X)
        else:
            out = fitted.transform(X)
            assert isinstance(out, pandas.DataFrame) and list(out.columns)[0].endswith("0")


def test_itml_keeps_the_metric_positive_definite_with_an_ill_conditioned_prior():
    """ITML's rank-one updates keep M positive definite in exact arithmetic; in float32 the inverse
    covariance of digits' pixels as prior lost it (rank 61 of 64, 3-NN accuracy .49 against .99):
    such a fit is redone in float64."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:200], y[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ml.ITML_Supervised(max_iter=50, prior="covariance", random_state=0).fit(X, y)
    w = np.linalg.eigvalsh(est.get_mahalanobis_matrix())
    assert w[0] > 1e-6 * w[-1]
    acc = cross_val_score(KNeighborsClassifier(3), est.transform(X), y, cv=3).mean()
    assert acc > 0.95


@pytest.mark.parametrize("name", ["RCA_Supervised", "LFDA", "Covariance"])
def test_closed_form_fits_run_in_float64(name):
    """On raw wine (feature variances spanning 1e8) float32 spoiled the closed forms: RCA took the
    within-chunklet covariance for singular (3-NN accuracy .72), LFDA lost its small features (.75);
    they now run in float64 and give what an x64 session gives."""
    import jax

    X, y = load_wine(return_X_y=True)
    kw = {"LFDA": {"k": 7}, "RCA_Supervised": {"random_state": 0}}.get(name, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        M = getattr(ml, name)(**kw).fit(X, y).get_mahalanobis_matrix()
        with jax.enable_x64(True):
            M64 = getattr(ml, name)(**kw).fit(X, y).get_mahalanobis_matrix()
    np.testing.assert_allclose(M, M64, rtol=1e-4, atol=1e-6 * np.abs(M64).max())
    if name != "Covariance":
        Z = X @ np.linalg.cholesky(M + 1e-12 * np.eye(len(M)) * np.trace(M))
        acc = cross_val_score(KNeighborsClassifier(3), Z, y, cv=5).mean()
        assert acc > 0.83


@pytest.mark.parametrize("cls", ["NCA", "LFDA", "ITML_Supervised"])
def test_mixed_kind_labels_are_refused_not_merged(cls):
    # a list [0, "0", 1] became the strings "0", "0", "1": the classes 0 and "0" were fitted as one
    X = np.random.default_rng(0).normal(size=(30, 3))
    est = getattr(ml, cls)()
    for y in ([0, "0", 1] * 10, [b"a", "a", "c"] * 10):
        with pytest.raises(ValueError, match="y mixes"):
            est.fit(X, y)
    assert est.fit(X, np.array([0, 1, 2] * 10, dtype=object)).components_.shape[1] == 3


def test_column_vector_y_is_taken_as_scikit_learn_does():
    # y of shape (n, 1) fitted before the mixed-kind label check; scikit-learn ravels it with a warning
    from sklearn.exceptions import DataConversionWarning

    X, y = load_iris(return_X_y=True)
    with pytest.warns(DataConversionWarning):
        est = ml.LFDA().fit(X, y[:, None])
    np.testing.assert_allclose(est.components_, ml.LFDA().fit(X, y).components_)


def test_bool_hyperparameters_and_kwargs_types_are_refused():
    # ITML(tol=True), RCA(regularization=True), SCML(beta=True) ran with True as 1 while
    # ITML(gamma=True) was refused; MetricLearner(regularizer_kwargs=-1) was a raw TypeError and
    # regularizer_kwargs=0 was taken as "no kwargs"
    X, y = load_iris(return_X_y=True)
    X, y = X[::5], y[::5]
    P = np.stack([X[:10], X[10:20]], axis=1)
    py = np.where(y[:10] == y[10:20], 1, -1)
    py[:2] = [1, -1]
    T = np.stack([X[:10], X[10:20], X[20:30]], axis=1)
    for est, data in [
        (ml.ITML(tol=True), (P, py)),
        (ml.ITML_Supervised(tol=np.bool_(True)), (X, y)),
        (ml.RCA(regularization=True), (X, np.repeat(np.arange(10), 3))),
        (ml.RCA_Supervised(regularization=True), (X, y)),
        (ml.SCML(beta=True), (T,)),
        (ml.SCML(gamma=True), (T,)),
        (ml.SCML_Supervised(beta=False), (X, y)),
    ]:
        name = next(k for k, v in est.get_params().items() if isinstance(v, bool | np.bool_))
        with pytest.raises(ValueError, match=f"{name} must be a number, got "):
            est.fit(*data)
    for bad in (-1, 0, [1], "M0"):
        with pytest.raises(ValueError, match="regularizer_kwargs must be a dict"):
            ml.MetricLearner(regularizer_kwargs=bad, max_iter=3).fit(T)
    assert ml.MetricLearner(regularizer_kwargs={}, max_iter=3).fit(T).components_.shape == (4, 4)
