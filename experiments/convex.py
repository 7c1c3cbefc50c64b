r"""Convex (Mahalanobis) metric learning experiment: cross-validated 3-NN accuracy of one learner.

Run (the ANCHORS.md protocol: NCA on iris)::

    python -m experiments.convex --algorithm=nca --dataset=iris --workdir=/tmp/convex_iris_nca

Expected (seed 0): 3-NN accuracy about 0.96-0.97 after NCA (Euclidean 3-NN: 0.947); fit well under a
second per fold after the first (compiling) one.

Protocol: features standardized with ``StandardScaler`` fitted on the whole set; 5-fold
``StratifiedKFold(shuffle=True, random_state=seed)``; on each fold the learner is fitted on the training
rows (its defaults, ``random_state=seed`` where it takes one, overridden by the hyperparameter flags) and
``KNeighborsClassifier(k)`` is fitted and scored on the transformed rows.

Writes into ``--workdir``:

* ``config.json`` -- the resolved settings (flags and the learner's hyperparameters);
* ``metrics.json`` -- mean / std / per-fold test accuracy, the Euclidean k-NN baseline on the same
  folds, mean / std / per-fold fit seconds (the first fold includes JAX compilation);
* ``mahalanobis.png`` -- heatmap of the learned matrix ``M = L^T L`` (learner of the first fold);
* ``embedding.png`` -- 2-D PCA scatter of the standardized data before and after the learned map.

An unknown ``--algorithm`` / ``--dataset`` or an out-of-range integer exits with status 1 and a message
naming the flag and the valid values. The flags only build a config; the work is :func:`run`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from experiments import check_output_dir, exit_with_help
from metriclearn._json import plain

# short name -> (estimator class name in metriclearn, its neighbourhood-size argument or None)
LEARNERS: dict[str, tuple[str, str | None]] = {
    "euclidean": ("", None),
    "covariance": ("Covariance", None),
    "nca": ("NCA", None),
    "lmnn": ("LMNN", "n_neighbors"),
    "lfda": ("LFDA", "k"),
    "mlkr": ("MLKR", None),
    "itml": ("ITML_Supervised", None),
    "sdml": ("SDML_Supervised", None),
    "rca": ("RCA_Supervised", None),
    "mmc": ("MMC_Supervised", None),
    "lsml": ("LSML_Supervised", None),
    "scml": ("SCML_Supervised", None),
}
DATASET_NAMES = ("iris", "wine", "breast_cancer", "digits", "mnist1d", "synthetic")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this entry point's absl flags (called when run as a script, so importing
    :mod:`experiments.convex` from another entry point, e.g. ``reproduce``, defines no flags)."""
    flags.DEFINE_enum(
        "algorithm",
        "nca",
        list(LEARNERS),
        "convex learner (euclidean = no learning, the 3-NN baseline)",
    )
    flags.DEFINE_enum("dataset", "iris", list(DATASET_NAMES), "data set (metriclearn.datasets)")
    flags.DEFINE_string("workdir", None, "output directory (required)")
    flags.DEFINE_integer(
        "n_components",
        None,
        "output dimension of the learned map (default: the learner's)",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "k", 3, "neighbours of the k-NN classifier that scores the metric", lower_bound=1
    )
    flags.DEFINE_integer(
        "n_neighbors",
        None,
        "neighbourhood size of the learner (LMNN n_neighbors, LFDA k; default: the learner's)",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "max_iter",
        None,
        "iteration cap of iterative learners (default: the learner's)",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "seed",
        0,
        "random_state of the folds and of the learner",
        lower_bound=0,
        upper_bound=2**32 - 1,
    )
    flags.DEFINE_integer("n_folds", 5, "folds of StratifiedKFold", lower_bound=2)
    flags.DEFINE_integer(
        "max_samples",
        None,
        "stratified subsample of at most this many rows before the protocol (default: all)",
        lower_bound=10,
    )
    flags.DEFINE_string(
        "learner_kwargs",
        "{}",
        "further hyperparameters of the learner as JSON, e.g. '{\"gamma\": 0.5}'",
    )
    flags.DEFINE_boolean("figures", True, "write mahalanobis.png and embedding.png")


def make_learner(
    algorithm: str,
    *,
    seed: int = 0,
    n_components: int | None = None,
    n_neighbors: int | None = None,
    max_iter: int | None = None,
    **kwargs: Any,
):
    """An unfitted metriclearn estimator for a short ``algorithm`` name (``None`` for ``euclidean``).

    ``random_state=seed`` is set where the estimator takes one; ``n_components``, ``n_neighbors`` (the
    learner's neighbourhood argument: LMNN ``n_neighbors``, LFDA ``k``) and ``max_iter`` are set only
    when given and accepted; ``kwargs`` are passed as they are.

    Raises:
      ValueError: unknown algorithm, or a hyperparameter the learner does not take.
    """
    import metriclearn

    if algorithm not in LEARNERS:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(LEARNERS)}")
    cls_name, nbr_arg = LEARNERS[algorithm]
    if not cls_name:
        if n_components is not None or n_neighbors is not None or max_iter is not None or kwargs:
            raise ValueError("algorithm 'euclidean' takes no hyperparameters")
        return None
    cls = getattr(metriclearn, cls_name)
    valid = set(cls().get_params())
    params: dict[str, Any] = {}
    if "random_state" in valid:
        params["random_state"] = seed
    for name, value in (("n_components", n_components), ("max_iter", max_iter)):
        if value is not None:
            if name not in valid:
                raise ValueError(
                    f"{cls_name} takes no {name}; its hyperparameters: {sorted(valid)}"
                )
            params[name] = value
    if n_neighbors is not None:
        if nbr_arg is None:
            raise ValueError(
                f"{cls_name} has no neighbourhood size; n_neighbors applies to lmnn, lfda"
            )
        params[nbr_arg] = n_neighbors
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise ValueError(f"{cls_name} takes no {bad}; its hyperparameters: {sorted(valid)}")
    params.update(kwargs)
    return cls(**params)


def load_standardized(
    dataset: str, *, max_samples: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a named data set, optionally stratified-subsampled, standardized on the whole set.

    MNIST-1D pools its official train and test splits. Constant features stay 0 after scaling.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from metriclearn import datasets

    ds = datasets.load(dataset)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    if ds.X_test is not None:
        X, y = np.concatenate([X, ds.X_test]), np.concatenate([y, ds.y_test])
    if max_samples is not None and max_samples < X.shape[0]:
        n_classes = len(np.unique(y))
        if X.shape[0] - max_samples < n_classes or max_samples < n_classes:
            # the stratified subsample needs a row of every class on both sides of its split
            raise ValueError(
                f"max_samples={max_samples}: a stratified subsample of {dataset} ({X.shape[0]} rows, "
                f"{n_classes} classes) needs between {n_classes} and {X.shape[0] - n_classes} rows, "
                f"or at least {X.shape[0]} for all of them"
            )
        X, _, y, _ = train_test_split(X, y, train_size=max_samples, stratify=y, random_state=seed)
    X = StandardScaler().fit_transform(np.asarray(X, np.float64))
    return X, y


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    algorithm: str,
    *,
    k: int = 3,
    n_folds: int = 5,
    seed: int = 0,
    return_learners: bool = False,
    **learner_kwargs: Any,
) -> dict[str, Any]:
    """k-NN accuracy after a learner on each fold of ``StratifiedKFold(n_folds, shuffle, seed)``.

    Args:
      X: ``[n, d]`` (already standardized, as in the ANCHORS protocol).
      y: ``[n]`` class labels.
      algorithm: a key of :data:`LEARNERS`.
      k: neighbours of ``KNeighborsClassifier``.
      n_folds: number of folds.
      seed: ``random_state`` of the folds and of the learner.
      return_learners: also return the fitted learners (key ``"learners"``).
      **learner_kwargs: forwarded to :func:`make_learner`.

    Returns:
      dict with ``accuracy`` / ``fit_seconds`` (per-fold lists), ``accuracy_mean``, ``accuracy_std``,
      ``fit_seconds_mean``, ``fit_seconds_std``, ``euclidean_accuracy_mean`` (the same folds without
      learning), ``failed`` (None, or the error message when the learner raised or produced
      non-finite output; then the accuracies are NaN) and ``warnings`` (the distinct warning
      messages the learner emitted, captured rather than printed).
    """
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    accs, base, times, learners = [], [], [], []
    failed = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for train, test in folds.split(X, y):
            knn = KNeighborsClassifier(n_neighbors=k).fit(X[train], y[train])
            base.append(float(knn.score(X[test], y[test])))
            learner = make_learner(algorithm, seed=seed, **learner_kwargs)
            if learner is None:
                accs.append(base[-1])
                times.append(0.0)
                continue
            if failed is not None:
                continue
            try:
                t0 = time.perf_counter()
                learner.fit(X[train], y[train])
                times.append(time.perf_counter() - t0)
                Z_tr, Z_te = learner.transform(X[train]), learner.transform(X[test])
                if not (np.all(np.isfinite(Z_tr)) and np.all(np.isfinite(Z_te))):
                    raise FloatingPointError("non-finite transformed data")
            except (ImportError, NameError, SyntaxError):  # broken code, not a failing learner
                raise
            except Exception as err:  # a learner failing on a data set is a table entry
                failed = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                continue
            learners.append(learner)
            knn = KNeighborsClassifier(n_neighbors=k).fit(Z_tr, y[train])
            accs.append(float(knn.score(Z_te, y[test])))
    messages = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    if failed is not None:
        accs = [math.nan] * n_folds
    out: dict[str, Any] = {
        "accuracy": accs,
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fit_seconds": times,
        "fit_seconds_mean": float(np.mean(times)) if times else math.nan,
        "fit_seconds_std": float(np.std(times)) if times else math.nan,
        "euclidean_accuracy": base,
        "euclidean_accuracy_mean": float(np.mean(base)),
        "failed": failed,
        "warnings": messages,
    }
    if return_learners:
        out["learners"] = learners
    return out


def default_config() -> dict[str, Any]:
    """Defaults of :func:`run` (the ANCHORS.md protocol with NCA on iris)."""
    return {
        "algorithm": "nca",
        "dataset": "iris",
        "n_components": None,
        "k": 3,
        "n_neighbors": None,
        "max_iter": None,
        "seed": 0,
        "n_folds": 5,
        "max_samples": None,
        "learner_kwargs": {},
        "figures": True,
    }


_SETTINGS = ("n_components", "n_neighbors", "max_iter")


def _learner_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The learner's keyword arguments: the settings given (not None) and ``learner_kwargs``; a key
    in both raises ``ValueError`` (one would silently override the other)."""
    extra = dict(cfg["learner_kwargs"] or {})
    # the learner's own name for its neighbourhood (LFDA's k) is the n_neighbors setting: as a
    # keyword it collided with cross_validate's k-NN k (a TypeError)
    nbr_arg = LEARNERS.get(cfg["algorithm"], (None, None))[1]
    if nbr_arg and nbr_arg != "n_neighbors" and nbr_arg in extra:
        if "n_neighbors" in extra:
            raise ValueError(f"learner_kwargs gives both {nbr_arg!r} and 'n_neighbors'; give one")
        extra["n_neighbors"] = extra.pop(nbr_arg)
    both = sorted(k for k in extra if k in _SETTINGS and cfg[k] is not None)
    if both:
        raise ValueError(f"{both} given both as a setting and in learner_kwargs; give each once")
    merged = {**{k: cfg[k] for k in _SETTINGS}, **extra}
    return {k: v for k, v in merged.items() if v is not None}


def _check_config(cfg: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the key when a config value has the wrong type or range (in place:
    integers become ``int``, ``learner_kwargs`` a ``dict``). Casting would hide mistakes: ``"false"``
    was a true ``figures``, ``k="3"`` a raw ``TypeError``, ``n_folds=1`` a message about 0 rows."""
    from metriclearn._validation import check_flags, check_kwargs, check_positive_int

    for key in ("algorithm", "dataset"):
        if not isinstance(cfg[key], str):
            raise ValueError(f"config {key!r} must be a name (string), got {cfg[key]!r}")
    check_flags(**{"config 'figures'": cfg["figures"]})
    cfg["k"] = check_positive_int(cfg["k"], "config 'k'")
    cfg["n_folds"] = check_positive_int(cfg["n_folds"], "config 'n_folds'", minimum=2)
    cfg["seed"] = check_positive_int(cfg["seed"], "config 'seed'", minimum=0)
    if cfg["seed"] > 2**32 - 1:  # scikit-learn's random_state range
        raise ValueError(f"config 'seed' must be at most 2**32 - 1, got {cfg['seed']}")
    for key in (*_SETTINGS, "max_samples"):
        if cfg[key] is not None:
            cfg[key] = check_positive_int(cfg[key], f"config {key!r}")
    cfg["learner_kwargs"] = check_kwargs(cfg["learner_kwargs"], "config 'learner_kwargs'")


def run(config: Mapping[str, Any], workdir: str | os.PathLike) -> dict[str, Any]:
    """Run the cross-validated protocol for one learner and data set; write results to ``workdir``.

    Args:
      config: overrides of :func:`default_config`.
      workdir: output directory (created).

    Returns:
      The metrics written to ``metrics.json``.

    Raises:
      ValueError: unknown config keys, algorithm, data set or hyperparameter; a config value of the
        wrong type or range (``figures`` not a bool, ``k`` / ``seed`` / ``n_folds`` not integers
        >= 1 / >= 0 / >= 2, ``learner_kwargs`` not a dict), naming the key.
    """
    cfg = default_config()
    unknown = sorted(set(config) - set(cfg))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid: {', '.join(sorted(cfg))}")
    cfg.update(dict(config))
    _check_config(cfg)
    if cfg["dataset"] not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg['dataset']!r}; valid: {', '.join(DATASET_NAMES)}")
    learner_kwargs = _learner_kwargs(cfg)
    template = make_learner(cfg["algorithm"], seed=cfg["seed"], **learner_kwargs)  # validates early
    workdir = os.fspath(workdir)
    X, y = load_standardized(cfg["dataset"], max_samples=cfg["max_samples"], seed=cfg["seed"])
    # the folds and the k-NN need enough rows: say so before any file is written
    smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    if smallest < cfg["n_folds"]:
        raise ValueError(
            f"n_folds={cfg['n_folds']} needs at least that many rows per class; the smallest class "
            f"of {cfg['dataset']} has {smallest} (max_samples={cfg['max_samples']})"
        )
    n_comp = learner_kwargs.get("n_components")
    if n_comp is not None and n_comp > X.shape[1]:  # a usage error, not a failed learner
        raise ValueError(
            f"n_components={n_comp} is larger than the {X.shape[1]} features of {cfg['dataset']}"
        )
    n_train = X.shape[0] - -(-X.shape[0] // cfg["n_folds"])
    if cfg["k"] > n_train:
        raise ValueError(f"k={cfg['k']} neighbours but a training fold has only {n_train} rows")
    resolved = dict(cfg)
    resolved["learner"] = type(template).__name__ if template is not None else "Euclidean"
    resolved["learner_params"] = (
        {k: plain(v) for k, v in template.get_params().items()} if template is not None else {}
    )
    resolved["n_samples"], resolved["n_features"] = (int(s) for s in X.shape)
    res = cross_validate(
        X,
        y,
        cfg["algorithm"],
        k=cfg["k"],
        n_folds=cfg["n_folds"],
        seed=cfg["seed"],
        return_learners=True,
        **learner_kwargs,
    )
    # a hyperparameter value the learner refuses is a usage error, not a failed table entry (the
    # estimators check values in fit, so the folds find it): nothing is written
    failed = res["failed"] or ""
    named = [name for name in learner_kwargs if re.search(rf"\b{re.escape(name)}\b", failed)]
    if failed.startswith("ValueError") and named:
        raise ValueError(f"{resolved['learner']} refuses {named}: {failed.split(': ', 1)[1]}")
    os.makedirs(workdir, exist_ok=True)  # only now: a refused run leaves no empty workdir
    with open(os.path.join(workdir, "config.json"), "w") as fh:
        json.dump(plain(resolved), fh, indent=2, sort_keys=True)
    learners = res.pop("learners")
    metrics = {
        "algorithm": cfg["algorithm"],
        "dataset": cfg["dataset"],
        **res,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
    }
    with open(os.path.join(workdir, "metrics.json"), "w") as fh:
        json.dump(plain(metrics), fh, indent=2)
    # figures of an earlier run in this workdir would describe another learner: drop them first
    for figure in ("mahalanobis.png", "embedding.png"):
        if os.path.isfile(os.path.join(workdir, figure)):
            os.remove(os.path.join(workdir, figure))
    if cfg["figures"] and learners:
        from metriclearn import plotting

        name = f"{resolved['learner']} on {cfg['dataset']}"
        plotting.plot_mahalanobis_matrix(
            learners[0].get_mahalanobis_matrix(),
            os.path.join(workdir, "mahalanobis.png"),
            title=f"learned M = LᵀL: {name} (fold 1)",
        )
        plotting.plot_embedding_before_after(
            X,
            learners[0].transform(X),
            y,
            os.path.join(workdir, "embedding.png"),
            titles=("standardized input (PCA)", f"after {resolved['learner']} (PCA)"),
        )
    return metrics


def build_config() -> dict[str, Any]:
    """The run's config from the parsed flags (raises ``app.UsageError`` naming a bad flag)."""
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (the directory the results are written to)")
    try:
        extra = json.loads(FLAGS.learner_kwargs)
    except json.JSONDecodeError as err:
        raise app.UsageError(
            f"--learner_kwargs must be a JSON object, got {FLAGS.learner_kwargs!r}: {err}"
        ) from err
    if not isinstance(extra, dict):
        raise app.UsageError(
            f"--learner_kwargs must be a JSON object, got {FLAGS.learner_kwargs!r}"
        )
    return {
        "algorithm": FLAGS.algorithm,
        "dataset": FLAGS.dataset,
        "n_components": FLAGS.n_components,
        "k": FLAGS.k,
        "n_neighbors": FLAGS.n_neighbors,
        "max_iter": FLAGS.max_iter,
        "seed": FLAGS.seed,
        "n_folds": FLAGS.n_folds,
        "max_samples": FLAGS.max_samples,
        "learner_kwargs": extra,
        "figures": FLAGS.figures,
    }


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = build_config()
    check_output_dir(FLAGS.workdir, "--workdir")
    try:
        kwargs = _learner_kwargs(config)
    except ValueError as err:
        raise app.UsageError(f"--learner_kwargs: {err}") from err
    try:
        make_learner(config["algorithm"], **kwargs)
    except ValueError as err:
        raise app.UsageError(f"--algorithm={config['algorithm']}: {err}") from err
    try:
        metrics = run(config, FLAGS.workdir)
    except ValueError as err:  # settings that only the data can refute (k, n_folds vs classes)
        raise app.UsageError(str(err)) from err
    if metrics["failed"]:
        print(f"{config['algorithm']} failed on {config['dataset']}: {metrics['failed']}")
        raise SystemExit(2)
    print(
        f"{config['dataset']} / {config['algorithm']}: {config['k']}-NN accuracy "
        f"{metrics['accuracy_mean']:.3f} ± {metrics['accuracy_std']:.3f} "
        f"(Euclidean {metrics['euclidean_accuracy_mean']:.3f}), fit "
        f"{metrics['fit_seconds_mean']:.3f} s/fold -> {FLAGS.workdir}"
    )


if __name__ == "__main__":
    define_flags()
    if any(arg in ("--help", "-h", "--helpshort", "--helpfull") for arg in sys.argv[1:]):
        exit_with_help(__doc__, full="--helpfull" in sys.argv[1:])
    app.run(main)
