"""scikit-learn estimators wrapping the pure fit functions of :mod:`metriclearn.convex`.

Every learner ends with a linear map ``components_`` (``L``, ``[k, d]``) and the Mahalanobis metric
``M = L^T L``; :class:`MahalanobisMixin` gives all of them ``transform``, ``get_mahalanobis_matrix``,
``get_metric`` (a plain ``(u, v) -> float`` callable usable as ``KNeighborsClassifier(metric=...)``),
``pair_distance`` and ``pair_score``.

Three families, as in metric-learn:

* label-supervised transformers ``fit(X, y)``: :class:`Covariance` (``y`` ignored), :class:`NCA`,
  :class:`LMNN`, :class:`LFDA`, :class:`MLKR` (real targets), :class:`RCA_Supervised` and the
  ``*_Supervised`` weak learners, which build tuples from labels with :mod:`metriclearn.constraints`
  like metric-learn (random pairs and quadruplets, default ``20 * n_classes**2`` seeded by
  ``random_state``; SCML's k-NN triplets, :func:`~metriclearn.constraints.knn_triplets`). These pass
  ``sklearn.utils.estimator_checks.check_estimator``.
* tuple learners: pairs (:class:`ITML`, :class:`SDML`, :class:`MMC`: ``fit(pairs [n, 2, d], y in
  {-1, +1})``, ``decision_function``, ``predict`` with ``threshold_``, ``score`` = ROC AUC,
  ``calibrate_threshold``), triplets (:class:`SCML`: ``fit(triplets [n, 3, d])``, ``predict``,
  ``score`` = accuracy), quadruplets (:class:`LSML`). Tuples may be given as index arrays
  (``[n, 2]`` ints) together with ``preprocessor=X``.
* chunklets: :class:`RCA` (``fit(X, chunks)``).

Fitted attributes end with ``_``; ``__init__`` only stores hyperparameters.

Example::

    from sklearn.datasets import load_iris
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    import metriclearn as ml

    X, y = load_iris(return_X_y=True)
    cross_val_score(make_pipeline(ml.NCA(), KNeighborsClassifier()), X, y)
    knn = KNeighborsClassifier(metric=ml.LFDA(k=3).fit(X, y).get_metric()).fit(X, y)
"""

from __future__ import annotations

import importlib
import warnings

import jax
import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.metrics import roc_auc_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from metriclearn._validation import (
    as_real,
    check_array,
    check_choice,
    check_kwargs,
    check_labels,
    label_array,
)

__all__ = [
    "MahalanobisMixin",
    "MahalanobisDistance",
    "Covariance",
    "NCA",
    "LMNN",
    "LFDA",
    "MLKR",
    "ITML",
    "ITML_Supervised",
    "SDML",
    "SDML_Supervised",
    "MMC",
    "MMC_Supervised",
    "RCA",
    "RCA_Supervised",
    "LSML",
    "LSML_Supervised",
    "SCML",
    "SCML_Supervised",
    "MetricLearner",
]

_FLOATS = (np.float64, np.float32)


# ----------------------------------------------------------------------------------------------------
# helpers


def _convex(name: str):
    """The module ``metriclearn.convex.<name>`` (imported on first use)."""
    return importlib.import_module(f"metriclearn.convex.{name}")


def _key_from(random_state) -> jax.Array:
    """A JAX PRNG key drawn from a scikit-learn ``random_state`` (None, int or RandomState)."""
    rs = check_random_state(random_state)
    return jax.random.key(int(rs.randint(0, 2**31 - 1)))


def _components_from_result(result, learner: str) -> np.ndarray:
    """``L`` from a fit result holding ``.components`` or ``.M`` (factored with ``psd.factor``)."""
    from metriclearn import psd

    if getattr(result, "components", None) is not None:
        L = np.asarray(result.components, np.float64)
    else:
        M = np.asarray(result.M, np.float64)
        if not np.all(np.isfinite(M)):
            raise ValueError(f"{learner} produced a non-finite metric M; check the input scaling")
        L = np.asarray(psd.factor(psd.project_psd(M)), np.float64)
    if not np.all(np.isfinite(L)):
        raise ValueError(f"{learner} produced a non-finite transformation; check the input scaling")
    return L


def _default_constraints(n_constraints, codes: np.ndarray) -> int:
    """metric-learn's default ``20 * n_classes**2`` when ``n_constraints`` is None."""
    if n_constraints is None:
        return 20 * int(codes.max() + 1) ** 2
    if isinstance(n_constraints, bool) or not isinstance(n_constraints, int | np.integer):
        raise ValueError(f"n_constraints must be a positive integer or None, got {n_constraints!r}")
    if n_constraints < 1:
        raise ValueError(f"n_constraints must be a positive integer or None, got {n_constraints!r}")
    return int(n_constraints)


def _refuse_bools(est, *names: str) -> None:
    """``ValueError`` when a numeric hyperparameter of ``est`` is a bool: ``True`` would be taken as
    ``1`` (``ITML(tol=True)``, ``RCA(regularization=True)``, ``SCML(beta=True)`` were accepted while
    ``ITML(gamma=True)`` was refused)."""
    for name in names:
        value = getattr(est, name)
        if isinstance(value, bool | np.bool_):
            raise ValueError(f"{name} must be a number, got {value!r}")


def _centered(P: np.ndarray) -> np.ndarray:
    """``P`` (points ``[n, d]`` or tuples ``[n, k, d]``) shifted by the mean point, in float64.

    Every learner here depends on differences of points only, so the shift changes no metric; but
    the fits run in float32 by default, where data far from the origin lose their differences
    (``|a|^2 + |b|^2 - 2 a.b`` in NCA, LMNN, MLKR and LFDA; RCA took such data for degenerate):
    NCA's metric changed completely when iris was moved by 100.
    """
    P = np.asarray(P)
    if P.dtype.kind != "f" or not P.size:
        return P
    flat = P.reshape(-1, P.shape[-1])
    return (P - flat.mean(axis=0, dtype=np.float64)).astype(P.dtype, copy=False)


class MahalanobisDistance:
    """The learned distance as a plain, picklable callable ``(u, v) -> float``.

    ``d(u, v) = ||L (u - v)||_2 = sqrt((u - v)^T M (u - v))``; pass it to scikit-learn as
    ``KNeighborsClassifier(metric=est.get_metric())``.
    """

    def __init__(self, components):
        self.components = np.array(components, dtype=np.float64)

    def __call__(self, u, v) -> float:
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        if u.shape != v.shape or u.shape[-1:] != self.components.shape[1:]:
            raise ValueError(
                f"u and v must be vectors of {self.components.shape[1]} features, got shapes "
                f"{u.shape} and {v.shape}"
            )
        diff = self.components @ (u - v)
        out = float(np.sqrt(diff @ diff))
        if not np.isfinite(out):  # checked only then: sklearn calls this once per pair
            bad = "u" if not np.all(np.isfinite(u)) else "v" if not np.all(np.isfinite(v)) else None
            if bad is not None:
                raise ValueError(f"{bad} contains NaN or inf")
        return out

    def __repr__(self) -> str:
        k, d = self.components.shape
        return f"MahalanobisDistance(components=[{k}, {d}])"


# ----------------------------------------------------------------------------------------------------
# the Mahalanobis base


class MahalanobisMixin:
    """Methods shared by every learner once ``components_`` (``L``, ``[k, d]``) is fitted."""

    def _tuples(
        self, tuples, size: int, name: str = "tuples", *, reset: bool = False
    ) -> np.ndarray:
        """Points ``[n, size, d]`` from point tuples, or from index tuples via ``preprocessor``.

        ``reset`` (in ``fit``): any width is accepted, as a refit may see different data; otherwise
        the width must be the fitted ``n_features_in_``.
        """
        if tuples is None:
            raise ValueError(f"{name} is required, got None")
        arr = np.asarray(tuples)
        preprocessor = getattr(self, "preprocessor", None)
        if arr.ndim == 2 and arr.dtype.kind in "iu":
            if preprocessor is None:
                raise ValueError(
                    f"{name} of shape {arr.shape} look like index tuples, which need a "
                    f"preprocessor (an array X so that tuples are X[indices]); got none"
                )
            if arr.shape[1] != size:
                raise ValueError(f"{name} must have shape [n, {size}], got {tuple(arr.shape)}")
            if callable(preprocessor):
                pts = np.asarray(preprocessor(arr.reshape(-1)))
                arr = pts.reshape(arr.shape + pts.shape[1:])
            else:
                check_array(
                    preprocessor, "preprocessor", ndim=2, allow_overflow=True
                )  # validation only
                X = np.asarray(preprocessor, dtype=np.float64)
                if arr.size and (arr.min() < 0 or arr.max() >= X.shape[0]):
                    raise ValueError(
                        f"{name} index out of range for preprocessor with {X.shape[0]} rows "
                        f"(got indices in [{arr.min()}, {arr.max()}])"
                    )
                arr = X[arr]
        check_array(arr, name, ndim=3, allow_overflow=True)  # validation only: float64 kept
        P = np.asarray(arr, dtype=np.float64)
        if P.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(P.shape)})")
        if P.shape[1] != size or P.shape[2] == 0:
            raise ValueError(f"{name} must have shape [n, {size}, d] with d >= 1, got {P.shape}")
        if not reset and hasattr(self, "n_features_in_") and P.shape[2] != self.n_features_in_:
            raise ValueError(
                f"{name} have {P.shape[2]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return _centered(P)

    def _set_components(self, L, n_features: int) -> None:
        L = np.asarray(L, np.float64)
        if L.ndim != 2 or L.shape[1] != n_features or not np.all(np.isfinite(L)):
            raise ValueError(
                f"{type(self).__name__} produced an invalid transformation of shape {L.shape}"
            )
        self.components_ = L

    def transform(self, X) -> np.ndarray:
        """Map points into the learned space: ``X @ components_.T`` (``[n, d] -> [n, k]``)."""
        check_is_fitted(self, "components_")
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return X @ self.components_.T

    @property
    def _n_features_out(self) -> int:
        """Output width of :meth:`transform` (``get_feature_names_out`` gives ``nca0, nca1, ...``)."""
        check_is_fitted(self, "components_")
        return int(self.components_.shape[0])

    def get_mahalanobis_matrix(self) -> np.ndarray:
        """The learned metric ``M = L^T L`` (``[d, d]``, symmetric PSD)."""
        check_is_fitted(self, "components_")
        return self.components_.T @ self.components_

    def get_metric(self) -> MahalanobisDistance:
        """A plain ``(u, v) -> float`` callable computing the learned distance (picklable)."""
        check_is_fitted(self, "components_")
        return MahalanobisDistance(self.components_)

    def _pop_fit_key(self) -> jax.Array:
        """The PRNG key for the fit function: one prepared by a ``*_Supervised`` fit, else fresh."""
        key = self.__dict__.pop("_fit_key", None)
        return _key_from(getattr(self, "random_state", None)) if key is None else key

    def pair_distance(self, pairs) -> np.ndarray:
        """Learned distances of ``pairs`` (``[n, 2, d]``, or ``[n, 2]`` indices with a preprocessor)."""
        check_is_fitted(self, "components_")
        return self._distances_of(self._tuples(pairs, 2, "pairs"))

    def _distances_of(self, P: np.ndarray) -> np.ndarray:
        """Learned distances ``[n]`` of float64 pairs ``P [n, 2, d]`` as returned by :meth:`_tuples`.

        The one path of :meth:`pair_distance` (hence ``predict``), ``score`` and the threshold
        calibration, so that a threshold chosen on these values splits the same pairs in ``predict``.
        """
        diff = (P[:, 0] - P[:, 1]) @ self.components_.T
        return np.sqrt(np.sum(diff * diff, axis=1))

    def pair_score(self, pairs) -> np.ndarray:
        """Similarity of ``pairs``: ``-pair_distance(pairs)`` (higher means more similar)."""
        return -self.pair_distance(pairs)

    def score_pairs(self, pairs) -> np.ndarray:
        """Deprecated alias of :meth:`pair_distance` (metric-learn < 0.7's name, kept so that ported
        code runs): the learned distances of ``pairs``, with a ``FutureWarning``."""
        warnings.warn(
            "score_pairs returns distances and is deprecated, as in metric-learn 0.7: use "
            "pair_distance for distances or pair_score for similarities",
            FutureWarning,
            stacklevel=2,
        )
        return self.pair_distance(pairs)


class _PointTransformer(
    MahalanobisMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """A learner fitted on points ``X``: scikit-learn's transformer API, ``set_output`` included."""

    def transform(self, X) -> np.ndarray:
        """Map points into the learned space: ``X @ components_.T`` (``[n, d] -> [n, k]``)."""
        # Defined here and not only inherited: scikit-learn's set_output wraps the transform of the
        # class that defines it, so an inherited one ignored set_output (fit_transform did not).
        return MahalanobisMixin.transform(self, X)


class _TransformerBase(_PointTransformer):
    """Label-supervised transformer: validates ``(X, y)``, records ``n_features_in_``."""

    _requires_y = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._requires_y
        return tags

    def _validate_Xy(self, X, y):
        if y is not None:
            shape = getattr(y, "shape", ())  # (np.ndim would call __array_function__)
            if len(shape) == 2 and shape[1] == 1:  # a column vector, as scikit-learn takes
                y = column_or_1d(y, warn=True)
            # before NumPy coerces it: [0, "0", 1] would become the strings "0", "0", "1" (one class)
            y = label_array(y, "y")
        X, y = validate_data(self, X, y, ensure_min_samples=2, dtype=_FLOATS)
        check_classification_targets(y)  # class labels: real-valued targets are MLKR's
        return _centered(X), y

    def _finish(self, result, n_features: int):
        L = _components_from_result(result, type(self).__name__)
        self._set_components(L, n_features)
        self.n_iter_ = int(getattr(result, "n_iter", 0))
        self.converged_ = bool(getattr(result, "converged", True))
        return self


# ----------------------------------------------------------------------------------------------------
# supervised learners


class Covariance(_TransformerBase):
    """Mahalanobis metric from the inverse covariance of the data (unsupervised; ``y`` is ignored).

    Attributes:
      components_: ``[d, d]`` with ``components_.T @ components_`` the (pseudo-)inverse covariance.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> Covariance().fit(X).transform(X).shape
      (150, 4)
    """

    _requires_y = False

    def __init__(self):
        pass

    def fit(self, X, y=None):
        """Fit on ``X [n, d]``; ``y`` is ignored."""
        X = _centered(validate_data(self, X, ensure_min_samples=2, dtype=_FLOATS))
        _, L = _convex("covariance").fit_covariance(X, return_factor=True)
        self._set_components(np.asarray(L, np.float64), X.shape[1])
        return self


class NCA(_TransformerBase):
    """Neighbourhood Components Analysis (Goldberger et al., NIPS 2004).

    Args:
      n_components: output dimension (default ``d``).
      init: ``"auto"``, ``"pca"``, ``"lda"``, ``"identity"``, ``"random"`` or an array ``[k, d]``.
      max_iter: L-BFGS iterations.
      tol: stopping tolerance; ``None`` (default) keeps scipy's L-BFGS-B defaults like metric-learn,
        a number sets both tolerances like scikit-learn's NCA.
      random_state: seed for ``init="random"``.

    Attributes: ``components_ [k, d]``, ``n_iter_``, ``converged_``, ``objective_`` (``-sum p_i``).
    """

    def __init__(self, n_components=None, init="auto", max_iter=100, tol=None, random_state=None):
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        X, y = self._validate_Xy(X, y)
        res = _convex("nca").fit_nca(
            X,
            y,
            n_components=self.n_components,
            init=self.init,
            max_iter=self.max_iter,
            tol=self.tol,
            key=_key_from(self.random_state),
        )
        self.objective_ = float(res.objective)
        return self._finish(res, X.shape[1])


class LMNN(_TransformerBase):
    """Large Margin Nearest Neighbour (Weinberger & Saul, JMLR 2009).

    Args:
      n_neighbors: target neighbours per point (each class needs ``n_neighbors + 1`` samples).
      n_components: output dimension (default ``d``).
      init: initialisation of ``L`` (as :class:`NCA`).
      max_iter: iteration budget.
      tol: stopping tolerance.
      learn_rate: step size for the gradient-descent solver (``None``: solver default).
      regularization: weight of the pull term, as in metric-learn: ``regularization * pull + (1 - regularization) * push`` (``1 - mu`` in Weinberger & Saul's notation; equal at the default 0.5).
      solver: optimiser of :func:`metriclearn.convex.lmnn.fit_lmnn`.
      impostors: ``"all"`` (scan every differently labelled point at every evaluation),
        ``"active_set"`` (scan once per round, optimise over candidate impostors; exact at
        convergence) or ``"auto"`` (active set from 4096 samples on); see ``fit_lmnn``.
      random_state: seed for ``init="random"``.
    """

    def __init__(
        self,
        n_neighbors=3,
        n_components=None,
        init="auto",
        max_iter=1000,
        tol=1e-6,
        learn_rate=None,
        regularization=0.5,
        solver="lbfgs",
        impostors="auto",
        random_state=None,
    ):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.learn_rate = learn_rate
        self.regularization = regularization
        self.solver = solver
        self.impostors = impostors
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        X, y = self._validate_Xy(X, y)
        res = _convex("lmnn").fit_lmnn(
            X,
            y,
            n_neighbors=self.n_neighbors,
            n_components=self.n_components,
            init=self.init,
            max_iter=self.max_iter,
            tol=self.tol,
            learn_rate=self.learn_rate,
            regularization=self.regularization,
            solver=self.solver,
            impostors=self.impostors,
            key=_key_from(self.random_state),
        )
        self.objective_ = float(res.objective)
        return self._finish(res, X.shape[1])


class LFDA(_TransformerBase):
    """Local Fisher Discriminant Analysis (Sugiyama, JMLR 2007).

    Args:
      n_components: output dimension (default ``d``).
      k: neighbour of the local scaling (``sigma_i`` = distance to the ``k``-th same-class neighbour).
      embedding_type: ``"weighted"``, ``"orthonormalized"`` or ``"plain"``.
    """

    def __init__(self, n_components=None, k=7, embedding_type="weighted"):
        self.n_components = n_components
        self.k = k
        self.embedding_type = embedding_type

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        X, y = self._validate_Xy(X, y)
        res = _convex("lfda").fit_lfda(
            X, y, n_components=self.n_components, k=self.k, embedding_type=self.embedding_type
        )
        return self._finish(res, X.shape[1])


class MLKR(_TransformerBase):
    """Metric Learning for Kernel Regression (Weinberger & Tesauro, AISTATS 2007); real targets.

    Args: as :class:`NCA` (``init="lda"`` is not available: targets are real-valued). The default
    ``tol=None`` keeps scipy's L-BFGS-B tolerances, as metric-learn does; ``tol=1e-5`` stops
    earlier (on digits' first 300 samples at a leave-one-out error of 18 instead of 1e-6) with the
    same 3-NN accuracy in the ANCHORS.md protocol (iris .967, wine .961, breast_cancer .963,
    digits .977 either way).
    """

    def __init__(self, n_components=None, init="auto", max_iter=100, tol=None, random_state=None):
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and real targets ``y [n]``."""
        X, y = validate_data(self, X, y, ensure_min_samples=2, dtype=_FLOATS, y_numeric=True)
        res = _convex("mlkr").fit_mlkr(
            _centered(X),
            y,
            n_components=self.n_components,
            init=self.init,
            max_iter=self.max_iter,
            tol=self.tol,
            key=_key_from(self.random_state),
        )
        self.objective_ = float(res.objective)
        return self._finish(res, X.shape[1])


# ----------------------------------------------------------------------------------------------------
# tuple learners: shared behaviour


_STRATEGIES = ("accuracy", "f_beta", "max_tpr", "max_tnr")


def _best_threshold(dist, y, strategy, min_rate, beta) -> float:
    """Distance threshold (predict +1 when ``dist <= threshold``) optimising ``strategy``.

    ``dist`` must be the float64 distances that ``predict`` computes for the same pairs. The
    candidates split the sorted distinct distances: "reject all" is ``min - max(1, |min|)``, a cut
    between two distances ``a < b`` is their midpoint (``a`` itself when ``a`` and ``b`` are so
    close that the midpoint rounds to ``b``), and "accept all" is ``max + max(1, |max|)``, strictly
    above every distance. So ``dist <= threshold`` accepts exactly the pairs counted for the chosen
    cut (ties fall on the same side), and the rates it was chosen for are the rates ``predict`` gets.
    """
    dist = np.asarray(dist, np.float64)
    order = np.argsort(dist, kind="stable")
    ds, ys = dist[order], y[order]
    pos = ys == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    last = np.r_[ds[1:] != ds[:-1], True]  # last index of each group of tied distances
    tp = np.r_[0, np.cumsum(pos)[last]]
    fp = np.r_[0, np.cumsum(~pos)[last]]
    cut = ds[last]
    nxt = cut[1:]
    mid = cut[:-1] + 0.5 * (nxt - cut[:-1])  # no overflow of cut + nxt
    mid = np.where(mid < nxt, mid, cut[:-1])  # adjacent floats: the midpoint must not accept nxt
    thresholds = np.r_[cut[0] - max(1.0, abs(cut[0])), mid, cut[-1] + max(1.0, abs(cut[-1]))]
    tn, fn = n_neg - fp, n_pos - tp
    tpr = tp / max(n_pos, 1)
    tnr = tn / max(n_neg, 1)
    if strategy == "accuracy":
        score = (tp + tn) / len(ds)
    elif strategy == "f_beta":
        # (1 + b2) tp / ((1 + b2) tp + b2 fn + fp), divided through by 1 + b2 so that a large beta
        # (b2 overflowing to inf) tends to recall instead of inf / inf = NaN
        b = float(beta)
        w_fp = 1.0 / (1.0 + b * b)
        denom = tp + (1.0 - w_fp) * fn + w_fp * fp
        score = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
    elif strategy == "max_tpr":
        feasible = tnr >= min_rate
        score = np.where(feasible, tpr + 1e-9 * tnr, -np.inf)
    else:  # max_tnr
        feasible = tpr >= min_rate
        score = np.where(feasible, tnr + 1e-9 * tpr, -np.inf)
    return float(thresholds[int(np.argmax(score))])


def _check_calibration(strategy="accuracy", min_rate=None, beta=1.0) -> None:
    """The arguments of :meth:`_PairsMixin.calibrate_threshold`, checked (``ValueError``)."""
    check_choice(strategy, "strategy", _STRATEGIES)
    if strategy in ("max_tpr", "max_tnr"):
        if min_rate is None or not 0.0 <= as_real(min_rate, "min_rate") <= 1.0:
            raise ValueError(f"strategy {strategy!r} needs min_rate in [0, 1], got {min_rate!r}")
    if strategy == "f_beta" and not as_real(beta, "beta") > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")


class _PairsMixin(ClassifierMixin):
    """Pair-classifier API: ``fit(pairs, y)``, ``decision_function``, ``predict``, ``score``."""

    def _check_pair_labels(self, pairs, y, *, require_both=True, reset=False):
        from metriclearn import constraints

        P = self._tuples(pairs, 2, "pairs", reset=reset)
        # validation only: check_pairs' float32 copy would round the pairs that predict sees in
        # float64 (score and calibrate_threshold disagreed with decision_function and predict)
        _, py = constraints.check_pairs(P, y, require_both=require_both)
        return P, py

    def fit(self, pairs, y, calibration_params=None):
        """Fit on ``pairs [n, 2, d]`` (or index pairs with ``preprocessor``), ``y [n]`` in ``{-1, +1}``.

        The decision threshold is then calibrated on the training pairs
        (``calibrate_threshold(pairs, y, **calibration_params)``, default strategy ``"accuracy"``).
        """
        calibration = dict(calibration_params or {})
        unknown = sorted(set(calibration) - {"strategy", "min_rate", "beta"})
        if unknown:
            raise ValueError(
                f"unknown calibration_params {unknown}; valid: beta, min_rate, strategy"
            )
        _check_calibration(**calibration)  # before the solver runs, not after it
        P, py = self._check_pair_labels(pairs, y, reset=True)
        L = self._fit_pairs(P, py)
        self.n_features_in_ = P.shape[2]
        self._set_components(L, P.shape[2])
        self.classes_ = np.array([-1, 1])
        cal = {"strategy": "accuracy", "min_rate": None, "beta": 1.0, **calibration}
        # calibrate_threshold's path: the float64 distances predict(pairs) computes
        self.threshold_ = _best_threshold(
            self._distances_of(P), py, cal["strategy"], cal["min_rate"], cal["beta"]
        )
        return self

    def decision_function(self, pairs) -> np.ndarray:
        """``-distance`` of each pair (higher: more similar)."""
        return self.pair_score(pairs)

    def predict(self, pairs) -> np.ndarray:
        """``+1`` (similar) when the learned distance is ``<= threshold_``, else ``-1``."""
        check_is_fitted(self, "threshold_")
        return np.where(self.pair_distance(pairs) <= self.threshold_, 1, -1)

    def score(self, pairs, y) -> float:
        """ROC AUC of ``decision_function(pairs)`` against ``y`` in ``{-1, +1}``."""
        check_is_fitted(self, "components_")
        P, py = self._check_pair_labels(pairs, y)
        return float(roc_auc_score(py, -self._distances_of(P)))

    def calibrate_threshold(self, pairs, y, strategy="accuracy", min_rate=None, beta=1.0):
        """Set ``threshold_`` on the learned distance from labelled pairs.

        Args:
          pairs: ``[n, 2, d]`` (or index pairs with ``preprocessor``).
          y: ``[n]`` in ``{-1, +1}``.
          strategy: ``"accuracy"`` (max accuracy), ``"f_beta"`` (max F-beta), ``"max_tpr"`` (max
            true-positive rate with true-negative rate ``>= min_rate``) or ``"max_tnr"`` (the
            converse).
          min_rate: required for ``max_tpr`` / ``max_tnr``, in ``[0, 1]``.
          beta: ``> 0``, for ``f_beta``.

        Returns:
          ``self``.
        """
        check_is_fitted(self, "components_")
        _check_calibration(strategy, min_rate, beta)
        P, py = self._check_pair_labels(pairs, y, require_both=False)
        dist = self._distances_of(P)  # float64, as predict computes them
        self.threshold_ = _best_threshold(dist, py, strategy, min_rate, beta)
        return self


class _OrderedTuplesMixin:
    """Triplet/quadruplet API: ``predict`` (+1 when the first pair is closer), ``score`` (accuracy)."""

    _tuple_size = 3

    def _pairs_of(self, T):
        if self._tuple_size == 3:
            return T[:, [0, 1]], T[:, [0, 2]]
        return T[:, [0, 1]], T[:, [2, 3]]

    def decision_function(self, tuples) -> np.ndarray:
        """``d(second pair) - d(first pair)``: positive when the constraint is satisfied."""
        check_is_fitted(self, "components_")
        T = self._tuples(tuples, self._tuple_size, self._tuple_name)
        close, far = self._pairs_of(T)
        return self.pair_distance(far) - self.pair_distance(close)

    def predict(self, tuples) -> np.ndarray:
        """``+1`` when the first pair is closer than the second (``d(a, b) < d(a|c, c|d)``), else -1."""
        return np.where(self.decision_function(tuples) > 0, 1, -1)

    def score(self, tuples, y=None) -> float:
        """Accuracy of :meth:`predict` against ``y`` (default: all constraints hold, ``+1``)."""
        pred = self.predict(tuples)
        if y is None:
            return float(np.mean(pred == 1))
        y = np.asarray(y)
        if y.shape != pred.shape or not np.all(np.isin(y, (-1, 1))):
            raise ValueError(f"y must have shape {pred.shape} with values in {{-1, +1}}")
        return float(np.mean(pred == y))


class _SupervisedWeak(_TransformerBase):
    """``fit(X, y)`` for weak learners: build tuples from labels, then call the tuple fit."""

    def _labels(self, X, y):
        X, y = self._validate_Xy(X, y)
        codes = check_labels(y, X.shape[0], min_classes=2)
        return X, codes

    def _constraint_keys(self):
        rs = check_random_state(self.random_state)
        k1 = jax.random.key(int(rs.randint(0, 2**31 - 1)))
        k2 = jax.random.key(int(rs.randint(0, 2**31 - 1)))
        return k1, k2

    def _fit_from_pairs(self, X, codes):
        from metriclearn import constraints

        n = _default_constraints(self.n_constraints, codes)
        kc, kf = self._constraint_keys()
        idx, py = constraints.pairs(kc, codes, n_similar=n, n_dissimilar=n)
        if len(np.unique(py)) < 2:
            raise ValueError("y yields only one kind of pair (similar or dissimilar); need both")
        self._fit_key = kf
        self._set_components(self._fit_pairs(np.asarray(X)[idx], py), X.shape[1])
        return self


class _SupervisedPairs(_SupervisedWeak):
    """``fit(X, y)`` of the pair learners: similar/dissimilar pairs from labels, then the pair fit."""

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        X, codes = self._labels(X, y)
        return self._fit_from_pairs(X, codes)


# ----------------------------------------------------------------------------------------------------
# ITML


class _BaseITML(MahalanobisMixin, BaseEstimator):
    def _fit_pairs(self, P, py):
        _refuse_bools(self, "gamma", "tol")
        key = self._pop_fit_key()
        res = _convex("itml").fit_itml(
            P,
            py,
            gamma=self.gamma,
            max_iter=self.max_iter,
            tol=self.tol,
            prior=self.prior,
            bounds=self.bounds,
            key=key,
        )
        self.n_iter_ = int(res.n_iter)
        return _components_from_result(res, "ITML")


class ITML(_PairsMixin, _BaseITML):
    """Information-Theoretic Metric Learning on pairs (Davis et al., ICML 2007).

    Args:
      gamma: slack trade-off.
      max_iter, tol: Bregman-projection budget and tolerance.
      prior: ``"identity"``, ``"covariance"``, ``"random"`` or a PSD array ``[d, d]``.
      bounds: ``(u, l)`` bounds on squared distances, or None (5th/95th percentiles of the training
        pairs' squared distances; metric-learn's are their square roots).
      preprocessor: array ``X`` so pairs may be given as indices ``[n, 2]``.
      random_state: seed (random prior).
    """

    def __init__(
        self,
        gamma=1.0,
        max_iter=1000,
        tol=1e-3,
        prior="identity",
        bounds=None,
        preprocessor=None,
        random_state=None,
    ):
        self.gamma = gamma
        self.max_iter = max_iter
        self.tol = tol
        self.prior = prior
        self.bounds = bounds
        self.preprocessor = preprocessor
        self.random_state = random_state


class ITML_Supervised(_SupervisedPairs, _BaseITML):
    """ITML on pairs built from labels (``n_constraints`` similar + as many dissimilar pairs).

    Args: as :class:`ITML`, plus ``n_constraints`` (default ``20 * n_classes**2``).
    """

    def __init__(
        self,
        gamma=1.0,
        max_iter=1000,
        tol=1e-3,
        n_constraints=None,
        prior="identity",
        bounds=None,
        random_state=None,
    ):
        self.gamma = gamma
        self.max_iter = max_iter
        self.tol = tol
        self.n_constraints = n_constraints
        self.prior = prior
        self.bounds = bounds
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        _refuse_bools(self, "gamma", "tol")  # before the pairs are drawn
        return super().fit(X, y)


# ----------------------------------------------------------------------------------------------------
# SDML


class _BaseSDML(MahalanobisMixin, BaseEstimator):
    def _fit_pairs(self, P, py):
        key = self._pop_fit_key()
        res = _convex("sdml").fit_sdml(
            P,
            py,
            prior=self.prior,
            balance_param=self.balance_param,
            sparsity_param=self.sparsity_param,
            max_iter=self.max_iter,
            key=key,
        )
        self.n_iter_ = int(getattr(res, "n_iter", 0))
        return _components_from_result(res, "SDML")


class SDML(_PairsMixin, _BaseSDML):
    """Sparse Determinant Metric Learning on pairs (Qi et al., ICML 2009).

    Args:
      prior: ``"identity"``, ``"covariance"``, ``"random"`` or a PSD array.
      balance_param: weight of the pair term.
      sparsity_param: L1 weight on the off-diagonal of ``M``.
      max_iter: solver budget.
      preprocessor, random_state: as :class:`ITML`.
    """

    def __init__(
        self,
        prior="identity",
        balance_param=0.5,
        sparsity_param=0.01,
        max_iter=1000,
        preprocessor=None,
        random_state=None,
    ):
        self.prior = prior
        self.balance_param = balance_param
        self.sparsity_param = sparsity_param
        self.max_iter = max_iter
        self.preprocessor = preprocessor
        self.random_state = random_state


class SDML_Supervised(_SupervisedPairs, _BaseSDML):
    """SDML on pairs built from labels. Args: as :class:`SDML`, plus ``n_constraints``."""

    def __init__(
        self,
        prior="identity",
        balance_param=0.5,
        sparsity_param=0.01,
        max_iter=1000,
        n_constraints=None,
        random_state=None,
    ):
        self.prior = prior
        self.balance_param = balance_param
        self.sparsity_param = sparsity_param
        self.max_iter = max_iter
        self.n_constraints = n_constraints
        self.random_state = random_state


# ----------------------------------------------------------------------------------------------------
# MMC


class _BaseMMC(MahalanobisMixin, BaseEstimator):
    def _fit_pairs(self, P, py):
        key = self._pop_fit_key()
        res = _convex("mmc").fit_mmc(
            P,
            py,
            solver=self.solver,
            diagonal=self.diagonal,
            max_iter=self.max_iter,
            max_proj=self.max_proj,
            tol=self.tol,
            diagonal_c=self.diagonal_c,
            key=key,
        )
        self.n_iter_ = int(getattr(res, "n_iter", 0))
        return _components_from_result(res, "MMC")


class MMC(_PairsMixin, _BaseMMC):
    """Mahalanobis Metric for Clustering on pairs (Xing et al., NIPS 2002), full or diagonal.

    Maximises the sum of dissimilar-pair distances subject to ``sum_S d_M^2 <= t`` and ``M ⪰ 0``.
    The default solver is an *early-stopped* ascent: 10 cycles from the feasible multiple of the
    identity, scale-free steps, exact projections onto the constraint set. Stopping early is what
    regularises MMC (its optimum is close to rank one and a poor k-NN metric): 3-NN accuracy with the
    ANCHORS.md protocol (seed 0) iris .960, wine .989, breast_cancer .958, digits .925, ~0.1 s per fit
    on digits once compiled (metric-learn 0.7.0: .967 / .939 / .965 / .849, ~71 s per fit).

    Args:
      max_iter: solver budget; None (default): 10 ascent cycles for ``"projection"`` (raise it to move
        further toward the optimum: higher objective, usually lower k-NN accuracy), 100 for the other
        solvers and the diagonal metric (see :data:`metriclearn.convex.mmc.DEFAULT_MAX_ITER`).
      tol: ascent solvers: stop when the step falls below ``tol * ||M||``; otherwise the solver's
        relative tolerance.
      solver: ``"projection"`` (default: early-stopped, scale-free ascent with exact projections,
        fast), ``"alternating"`` (the authors' and metric-learn's iteration with alternating
        projections, slow; returns the identity when they stall, e.g. on breast_cancer) or
        ``"optimal"`` (the exact optimum, often near rank one); see
        :func:`metriclearn.convex.mmc.fit_mmc`.
      max_proj: budget of eigendecompositions per cycle (``"projection"``, ``"alternating"``).
      diagonal: learn a diagonal ``M``.
      diagonal_c: weight of the dissimilarity term in the diagonal problem.
      preprocessor, random_state: as :class:`ITML`.

    Example::

        est = MMC(preprocessor=X).fit(index_pairs, pair_y)   # index_pairs [n, 2], pair_y in {-1, +1}
        Z = est.transform(X)
    """

    def __init__(
        self,
        max_iter=None,
        tol=1e-3,
        solver="projection",
        max_proj=10000,
        diagonal=False,
        diagonal_c=1.0,
        preprocessor=None,
        random_state=None,
    ):
        self.max_iter = max_iter
        self.solver = solver
        self.max_proj = max_proj
        self.tol = tol
        self.diagonal = diagonal
        self.diagonal_c = diagonal_c
        self.preprocessor = preprocessor
        self.random_state = random_state


class MMC_Supervised(_SupervisedPairs, _BaseMMC):
    """MMC on pairs built from labels (``fit(X, y)``): ``n_constraints`` similar and as many dissimilar
    pairs drawn with ``random_state`` (None: ``20 * n_classes**2``, as metric-learn).

    Args: as :class:`MMC` (same defaults: the early-stopped ``"projection"`` ascent, 10 cycles), plus
    ``n_constraints``.

    Example::

        Z = MMC_Supervised(random_state=0).fit(X, y).transform(X)
    """

    def __init__(
        self,
        max_iter=None,
        tol=1e-3,
        solver="projection",
        max_proj=10000,
        diagonal=False,
        diagonal_c=1.0,
        n_constraints=None,
        random_state=None,
    ):
        self.max_iter = max_iter
        self.solver = solver
        self.max_proj = max_proj
        self.tol = tol
        self.diagonal = diagonal
        self.diagonal_c = diagonal_c
        self.n_constraints = n_constraints
        self.random_state = random_state


# ----------------------------------------------------------------------------------------------------
# RCA (chunklets)


class RCA(_PointTransformer):
    """Relevant Components Analysis from chunklets (Bar-Hillel et al., JMLR 2005).

    ``fit(X, chunks)`` with ``chunks [n]`` integer chunklet ids (``-1``: in no chunklet).

    Args:
      n_components: output dimension (default ``d``).
      regularization: ridge on the within-chunklet covariance (``"auto"`` or a number).
    """

    def __init__(self, n_components=None, regularization="auto"):
        self.n_components = n_components
        self.regularization = regularization

    def fit(self, X, chunks):
        """Fit on ``X [n, d]`` and chunklet ids ``chunks [n]``."""
        _refuse_bools(self, "regularization")
        X = _centered(validate_data(self, X, ensure_min_samples=2, dtype=_FLOATS))
        res = _convex("rca").fit_rca(
            X, chunks, n_components=self.n_components, regularization=self.regularization
        )
        self._set_components(_components_from_result(res, "RCA"), X.shape[1])
        return self


class RCA_Supervised(_TransformerBase):
    """RCA on chunklets drawn from labels (``n_chunks`` groups of ``chunk_size`` same-class points).

    Unlike metric-learn, too few possible chunklets is a warning (all that exist are used), never a
    failure.
    """

    def __init__(
        self,
        n_components=None,
        n_chunks=100,
        chunk_size=2,
        regularization="auto",
        random_state=None,
    ):
        self.n_components = n_components
        self.n_chunks = n_chunks
        self.chunk_size = chunk_size
        self.regularization = regularization
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        from metriclearn import constraints

        _refuse_bools(self, "regularization")
        X, y = self._validate_Xy(X, y)
        codes = check_labels(y, X.shape[0], min_classes=2)
        chunks = constraints.chunklets(
            _key_from(self.random_state), codes, n_chunks=self.n_chunks, chunk_size=self.chunk_size
        )
        res = _convex("rca").fit_rca(
            X, chunks, n_components=self.n_components, regularization=self.regularization
        )
        self._set_components(_components_from_result(res, "RCA"), X.shape[1])
        return self


# ----------------------------------------------------------------------------------------------------
# LSML (quadruplets)


class _BaseLSML(MahalanobisMixin, BaseEstimator):
    def _fit_quadruplets(self, Q, weights):
        key = self._pop_fit_key()
        res = _convex("lsml").fit_lsml(
            Q, weights=weights, prior=self.prior, max_iter=self.max_iter, tol=self.tol, key=key
        )
        self.n_iter_ = int(getattr(res, "n_iter", 0))
        return _components_from_result(res, "LSML")


class LSML(_OrderedTuplesMixin, _BaseLSML):
    """Least Squared-residual Metric Learning on quadruplets (Liu et al., ICDM 2012).

    Each quadruplet ``(a, b, c, d)`` states ``d(a, b) < d(c, d)``.

    Args:
      prior: ``"identity"``, ``"covariance"``, ``"random"`` or a PSD array.
      max_iter, tol: solver budget and tolerance.
      preprocessor, random_state: as :class:`ITML`.
    """

    _tuple_size = 4
    _tuple_name = "quadruplets"

    def __init__(
        self, prior="identity", max_iter=1000, tol=1e-3, preprocessor=None, random_state=None
    ):
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol
        self.preprocessor = preprocessor
        self.random_state = random_state

    def fit(self, quadruplets, weights=None):
        """Fit on ``quadruplets [n, 4, d]`` (or indices with ``preprocessor``), optional ``weights [n]``."""
        Q = self._tuples(quadruplets, 4, "quadruplets", reset=True)
        L = self._fit_quadruplets(Q, weights)
        self.n_features_in_ = Q.shape[2]
        self._set_components(L, Q.shape[2])
        return self


class LSML_Supervised(_SupervisedWeak, _BaseLSML):
    """LSML on quadruplets drawn from labels. Args: as :class:`LSML`, plus ``n_constraints``."""

    def __init__(
        self, prior="identity", max_iter=1000, tol=1e-3, n_constraints=None, random_state=None
    ):
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol
        self.n_constraints = n_constraints
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        from metriclearn import constraints

        X, codes = self._labels(X, y)
        n = _default_constraints(self.n_constraints, codes)
        kc, kf = self._constraint_keys()
        idx = constraints.quadruplets(kc, codes, n_quadruplets=n)
        # stashed only now: a refused constraint draw must not leave a key for a later fit
        self._fit_key = kf
        self._set_components(self._fit_quadruplets(np.asarray(X)[idx], None), X.shape[1])
        return self


# ----------------------------------------------------------------------------------------------------
# SCML (triplets)


class _BaseSCML(MahalanobisMixin, BaseEstimator):
    def _fit_triplets(self, T, X=None, y=None):
        _refuse_bools(self, "beta", "gamma")
        key = self._pop_fit_key()
        res = _convex("scml").fit_scml(
            T,
            basis=self.basis,
            n_basis=self.n_basis,
            beta=self.beta,
            gamma=self.gamma,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            key=key,
            X=X,
            y=y,
        )
        self.n_iter_ = int(getattr(res, "n_iter", 0))
        return _components_from_result(res, "SCML")


class SCML(_OrderedTuplesMixin, _BaseSCML):
    """Sparse Compositional Metric Learning on triplets (Shi, Bellet & Sha, AAAI 2014).

    Each triplet ``(a, b, c)`` states ``d(a, b) < d(a, c)``; ``M`` is a sparse non-negative
    combination of rank-one bases.

    Args:
      beta: L1 weight on the basis weights.
      basis: ``"triplet_diffs"`` or an array of bases ``[n_basis, d]``.
      n_basis: number of bases (default from the data).
      gamma: step size; max_iter, batch_size: stochastic solver budget.
      preprocessor, random_state: as :class:`ITML`.
    """

    _tuple_size = 3
    _tuple_name = "triplets"

    def __init__(
        self,
        beta=1e-5,
        basis="triplet_diffs",
        n_basis=None,
        gamma=5e-3,
        max_iter=10000,
        batch_size=10,
        preprocessor=None,
        random_state=None,
    ):
        self.beta = beta
        self.basis = basis
        self.n_basis = n_basis
        self.gamma = gamma
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.preprocessor = preprocessor
        self.random_state = random_state

    def fit(self, triplets):
        """Fit on ``triplets [n, 3, d]`` (or indices with ``preprocessor``)."""
        T = self._tuples(triplets, 3, "triplets", reset=True)
        L = self._fit_triplets(T)
        self.n_features_in_ = T.shape[2]
        self._set_components(L, T.shape[2])
        return self


class SCML_Supervised(_SupervisedWeak, _BaseSCML):
    """SCML on k-NN triplets built from labels (metric-learn 0.7's ``SCML_Supervised``).

    For every point ``a`` its ``k_genuine`` nearest same-class neighbours ``b`` are combined with its
    ``k_impostor`` nearest other-class points ``c`` (input space), giving ``n * k_genuine *
    k_impostor`` triplets ``d(a, b) < d(a, c)`` (:func:`metriclearn.constraints.knn_triplets`); SCML
    then learns ``M = B^T diag(w) B`` on the ``"lda"`` basis (local LDA directions around k-means
    centres, built from ``X, y``). Small classes are handled as in metric-learn: fewer neighbours for
    that class and a ``UserWarning``.

    Args:
      k_genuine: same-class neighbours per point (default 3, as metric-learn).
      k_impostor: other-class neighbours per point (default 10, as metric-learn).
      beta, basis, n_basis, gamma, max_iter, batch_size: as :class:`SCML` (defaults of metric-learn's
        ``SCML_Supervised``: ``basis="lda"``, ``max_iter=10000``, ``batch_size=10``).
      n_constraints: ``None`` (default) uses every k-NN triplet; an int keeps a random subset of that
        many (drawn with ``random_state``; all of them if fewer exist).
      random_state: seeds the k-means of the basis, the minibatches and the optional subsampling.

    Example::

        est = SCML_Supervised(random_state=0).fit(X, y)
        Z = est.transform(X)
    """

    def __init__(
        self,
        k_genuine=3,
        k_impostor=10,
        beta=1e-5,
        basis="lda",
        n_basis=None,
        gamma=5e-3,
        max_iter=10000,
        batch_size=10,
        n_constraints=None,
        random_state=None,
    ):
        self.k_genuine = k_genuine
        self.k_impostor = k_impostor
        self.beta = beta
        self.basis = basis
        self.n_basis = n_basis
        self.gamma = gamma
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.n_constraints = n_constraints
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on ``X [n, d]`` and class labels ``y [n]``."""
        from metriclearn import constraints

        _refuse_bools(self, "beta", "gamma")  # before the k-NN triplets are built
        X, y = self._validate_Xy(X, y)
        codes = check_labels(y, X.shape[0], min_classes=2)
        kc, kf = self._constraint_keys()
        # the user's labels, so that a shortfall warning names the classes as given
        idx = constraints.knn_triplets(X, y, k_genuine=self.k_genuine, k_impostor=self.k_impostor)
        if self.n_constraints is not None:
            n = _default_constraints(self.n_constraints, codes)
            if n < len(idx):
                pick = np.sort(jax.random.choice(kc, len(idx), (n,), replace=False))
                idx = idx[np.asarray(pick)]
        # index triplets into X: the solver never materialises [n * k_genuine * k_impostor, 3, d]
        self._fit_key = kf
        L = self._fit_triplets(idx, X=X, y=codes)
        self._set_components(L, X.shape[1])
        return self


# ----------------------------------------------------------------------------------------------------
# the survey's formulation as one estimator


def _pair_objective(M, diffs_sim, diffs_dis, u, l):
    from metriclearn import solver

    return solver.pair_hinge_loss(M, diffs_sim, diffs_dis, u=u, l=l)


def _triplet_hinge_objective(M, d_ab, d_ac, margin):
    from metriclearn import solver

    return solver.triplet_hinge_loss(M, d_ab, d_ac, margin=margin)


def _triplet_logistic_objective(M, d_ab, d_ac, margin):
    from metriclearn import solver

    return solver.triplet_logistic_loss(M, d_ab, d_ac, margin=margin)


_GENERIC_LOSSES = {
    "pair_hinge": (2, _pair_objective),
    "triplet_hinge": (3, _triplet_hinge_objective),
    "triplet_logistic": (3, _triplet_logistic_objective),
}


class MetricLearner(_OrderedTuplesMixin, MahalanobisMixin, BaseEstimator):
    """``min_{M >= 0} loss(M; tuples) + lam * R(M)``: the survey's formulation, pick the pieces.

    Solved by :func:`metriclearn.solver.projected_gradient` (gradient step, PSD projection).

    Args:
      loss: ``"pair_hinge"`` (``fit(pairs [n, 2, d], y in {-1, +1})``: similar pairs below ``u``,
        dissimilar above ``l`` in squared distance), ``"triplet_hinge"`` or ``"triplet_logistic"``
        (``fit(triplets [n, 3, d])``: ``d^2(a, b) + margin <= d^2(a, c)``).
      regularizer: a name of :data:`metriclearn.regularizers.REGULARIZERS` (``"frobenius"``,
        ``"trace"``, ``"logdet"`` (to the identity unless ``regularizer_kwargs`` has ``M0``),
        ``"l1"``, ``"l21"``, ``"laplacian"`` (needs ``regularizer_kwargs``)) or None.
      lam: regularization weight ``>= 0`` (unused with ``regularizer=None``).
      margin: triplet margin (squared-distance units).
      u, l: pair-hinge thresholds; default the 5th / 95th percentile of the training pairs'
        squared Euclidean distances (ITML's choice).
      regularizer_kwargs: dict of extra keyword arrays for the regularizer, or None.
      max_iter, tol: solver budget and tolerance.
      preprocessor: array ``X`` so tuples may be index arrays.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> from metriclearn import constraints
      >>> triplets = X[constraints.triplets(0, y, n_triplets=200)]   # [200, 3, 4]
      >>> learner = MetricLearner(loss="triplet_hinge", regularizer="trace", lam=0.1).fit(triplets)
      >>> learner.get_mahalanobis_matrix().shape
      (4, 4)

    Reference: Bellet, Habrard & Sebban, "A Survey on Metric Learning for Feature Vectors and
    Structured Data", 2013 (the general formulation, Section 3).
    """

    _tuple_size = 3  # triplet losses use the ordered-tuple predict/score
    _tuple_name = "triplets"

    def __init__(
        self,
        loss="triplet_hinge",
        regularizer="frobenius",
        lam=1e-3,
        margin=1.0,
        u=None,
        l=None,
        regularizer_kwargs=None,
        max_iter=500,
        tol=1e-6,
        preprocessor=None,
    ):
        self.loss = loss
        self.regularizer = regularizer
        self.lam = lam
        self.margin = margin
        self.u = u
        self.l = l
        self.regularizer_kwargs = regularizer_kwargs
        self.max_iter = max_iter
        self.tol = tol
        self.preprocessor = preprocessor

    def fit(self, tuples, y=None):
        """Fit on pairs (with ``y``) or triplets, as chosen by ``loss``."""
        import jax.numpy as jnp

        from metriclearn import constraints, solver

        check_choice(self.loss, "loss", _GENERIC_LOSSES)
        size, objective = _GENERIC_LOSSES[self.loss]
        for name in ("u", "l", "margin", "lam"):  # before any work: named, finite, >= 0
            value = getattr(self, name)
            if value is not None and not (0.0 <= as_real(value, name) < np.inf):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        reg_kwargs = check_kwargs(self.regularizer_kwargs, "regularizer_kwargs")
        T = self._tuples(tuples, size, "pairs" if size == 2 else "triplets", reset=True)
        d = T.shape[2]
        if self.regularizer == "logdet" and "M0" not in reg_kwargs:
            reg_kwargs["M0"] = jnp.eye(d)
        if size == 2:
            _, py = constraints.check_pairs(T, y)  # validation only: T holds float64 pairs
            diffs = T[:, 0] - T[:, 1]  # float64: far from the origin float32 pairs lost x - x'
            sq = np.sum(diffs * diffs, axis=1)
            u = float(np.percentile(sq, 5)) if self.u is None else float(self.u)
            l = float(np.percentile(sq, 95)) if self.l is None else float(self.l)
            args = (jnp.asarray(diffs[py == 1]), jnp.asarray(diffs[py == -1]), u, l)
        else:
            args = (jnp.asarray(T[:, 0] - T[:, 1]), jnp.asarray(T[:, 0] - T[:, 2]), self.margin)
        res = solver.projected_gradient(
            objective,
            jnp.eye(d, dtype=args[0].dtype),
            args=args,
            regularizer=self.regularizer,
            regularizer_kwargs=reg_kwargs or None,
            # lam weights R(M): with regularizer=None there is nothing to weight (the solver
            # refuses a positive lam without a regularizer; the default lam is 1e-3)
            lam=self.lam if self.regularizer is not None else 0.0,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.n_features_in_ = d
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self._set_components(_components_from_result(res, "MetricLearner"), d)
        if size == 2:  # pair losses classify pairs: threshold of best training accuracy
            dist = self._distances_of(T)  # float64 pairs, as predict computes them
            self.threshold_ = _best_threshold(dist, py, "accuracy", None, 1.0)
        return self

    def _is_pair_loss(self) -> bool:
        check_choice(self.loss, "loss", _GENERIC_LOSSES)
        return _GENERIC_LOSSES[self.loss][0] == 2

    def decision_function(self, tuples) -> np.ndarray:
        """Pairs: ``-distance``; triplets: ``d(a, c) - d(a, b)`` (positive: constraint holds)."""
        if self._is_pair_loss():
            return self.pair_score(tuples)
        return _OrderedTuplesMixin.decision_function(self, tuples)

    def predict(self, tuples) -> np.ndarray:
        """Pairs: ``+1`` when ``distance <= threshold_``; triplets: ``+1`` when ``d(a, b) < d(a, c)``."""
        if self._is_pair_loss():
            check_is_fitted(self, "threshold_")
            return np.where(self.pair_distance(tuples) <= self.threshold_, 1, -1)
        return _OrderedTuplesMixin.predict(self, tuples)

    def score(self, tuples, y=None) -> float:
        """Pairs: ROC AUC against ``y`` in ``{-1, +1}``; triplets: accuracy of :meth:`predict`."""
        if self._is_pair_loss():
            from metriclearn import constraints

            check_is_fitted(self, "components_")
            P = self._tuples(tuples, 2, "pairs")
            _, py = constraints.check_pairs(P, y)  # validation only: keep the float64 pairs
            return float(roc_auc_score(py, -self._distances_of(P)))
        return _OrderedTuplesMixin.score(self, tuples, y)
