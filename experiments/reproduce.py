r"""The main job: reproduce metriclearn's result tables and figures and write them under ``results/``.

Run::

    python -m experiments.reproduce                      # every section, quick settings (a few minutes)
    python -m experiments.reproduce --full               # larger settings: exact ANCHORS protocol,
                                                         # 30 epochs, MNIST-1D as well
    python -m experiments.reproduce --sections=nca_iris,convex --results_dir /tmp/out

Sections (``--sections``; each a ``run_<name>`` function writing Markdown tables and PNG figures):

* ``distances`` -- ``distances.md``: 5-fold stratified cross-validated 3-NN accuracy under each distance
  (Euclidean, Manhattan, Chebyshev, Minkowski p=3, cosine, Mahalanobis with the inverse covariance of
  the training fold) on iris, wine, breast_cancer and digits (``--full`` adds MNIST-1D).
* ``nca_iris`` -- ``nca_iris.md``, ``nca_iris_embedding.png``, ``nca_iris_mahalanobis.png``: the classic
  "before / after metric learning" example, 5-fold 3-NN accuracy on iris, Euclidean vs after NCA.
* ``convex`` -- ``convex.md``, ``convex_accuracy.png``: every convex learner x {iris, wine,
  breast_cancer, digits}, 3-NN accuracy (mean ± std over folds) and fit time (the ANCHORS.md protocol;
  by default digits is a stratified subsample of 600 rows, ``--full`` uses all 1,797).
* ``curves`` -- ``distance_curves_<data>.md`` / ``.png``: a Siamese network (MLP) trained with the
  contrastive loss on digits (``--full``: and MNIST-1D); per epoch, the mean distance of similar pairs
  falls and of dissimilar pairs rises (bands: ± 1 std over all pairs of the epoch's batches).
* ``mining`` -- ``mining.md``, ``mining.png``: triplet loss with all triplets vs semi-hard vs batch-hard
  mining, MAP@R on the held-out split per epoch.
* ``losses`` -- ``losses_<data>.md``: loss comparison in the style of "A Metric Learning Reality Check"
  (P@1, R-precision, MAP@R, NMI, time) on digits (``--full``: and MNIST-1D).

Every table states its protocol (splits, seeds, hyperparameters, command) in its header; the same
``--seed`` gives the same numbers (times aside). Deep runs keep their ``config.json``, ``metrics.json``
and ``history.csv`` under ``results/runs/<name>/``.

Expected (seed 0): Euclidean 3-NN about 0.95 / 0.95 / 0.96 / 0.98 on iris / wine / breast_cancer /
digits (compare ANCHORS: 0.947 / 0.955 / 0.965 / 0.977 with the scaler fitted on the whole set); NCA on
iris about 0.96; deep runs on digits P@1 about 0.97.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from experiments import check_output_dir, exit_with_help

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "results_dir", "results", "Directory the Markdown tables and PNG figures are written to."
)
flags.DEFINE_bool(
    "full",
    False,
    "Larger settings: MNIST-1D in the distance, curve and loss sections, all 1,797 digits in the "
    "convex table (the exact ANCHORS.md protocol), 30 epochs for the deep sections.",
)
SECTIONS = ("distances", "nca_iris", "convex", "curves", "mining", "losses")
flags.DEFINE_list(
    "sections", list(SECTIONS), f"comma-separated sections to run; valid: {','.join(SECTIONS)}"
)
flags.DEFINE_integer(
    "seed",
    0,
    "seed of the folds, the learners and the deep runs",
    lower_bound=0,
    upper_bound=2**32 - 1,
)
flags.DEFINE_integer(
    "epochs", None, "epochs of the deep sections (default 10, or 30 with --full)", lower_bound=1
)

QUICK_DATASETS = ("iris", "wine", "breast_cancer", "digits")
FULL_DATASETS = (*QUICK_DATASETS, "mnist1d")

# label -> function(train_X) -> (metric, metric_kwargs) for metriclearn.evaluation.knn_accuracy
DISTANCES: dict[str, Callable[[np.ndarray], tuple[Any, dict | None]]] = {
    "Euclidean": lambda X: ("euclidean", None),
    "Manhattan": lambda X: ("manhattan", None),
    "Chebyshev": lambda X: ("chebyshev", None),
    "Minkowski (p=3)": lambda X: ("minkowski", {"p": 3.0}),
    "cosine": lambda X: ("cosine", None),
    "Mahalanobis (inverse covariance)": lambda X: (inverse_covariance(X), None),
}


def inverse_covariance(X: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of the sample covariance of ``X`` ``[n, d]`` (PSD even for constant features)."""
    cov = np.cov(np.asarray(X, dtype=np.float64), rowvar=False)
    return np.linalg.pinv(np.atleast_2d(cov), hermitian=True)


def load_xy(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a named data set; MNIST-1D pools its official train and test splits."""
    from metriclearn import datasets

    ds = datasets.load(name)
    if ds.X_test is not None:
        return np.concatenate([ds.X, ds.X_test]), np.concatenate([ds.y, ds.y_test])
    return np.asarray(ds.X), np.asarray(ds.y)


def cross_validated_knn(
    X: np.ndarray,
    y: np.ndarray,
    distance: Callable[[np.ndarray], tuple[Any, dict | None]],
    *,
    k: int = 3,
    n_splits: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Test accuracy of k-NN on each fold of ``StratifiedKFold(n_splits, shuffle=True, seed)``.

    Features are standardized with the training fold's statistics; ``distance(train_X)`` gives the
    metric (so a Mahalanobis matrix is fitted on the training fold only).
    """
    from sklearn.model_selection import StratifiedKFold

    from metriclearn import datasets, evaluation

    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    accs = []
    for train, test in folds.split(X, y):
        X_tr, X_te = datasets.standardize(X[train], X[test])
        metric, metric_kwargs = distance(X_tr)
        accs.append(
            evaluation.knn_accuracy(
                X_tr, y[train], X_te, y[test], k=k, metric=metric, metric_kwargs=metric_kwargs
            )
        )
    return np.asarray(accs)


def distance_table(
    dataset_names: Sequence[str] = QUICK_DATASETS,
    distance_names: Sequence[str] | None = None,
    *,
    k: int = 3,
    n_splits: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per distance: ``{"distance": label, <data set>: (mean, std) of fold accuracies}``."""
    distance_names = list(DISTANCES) if distance_names is None else list(distance_names)
    unknown = [d for d in distance_names if d not in DISTANCES]
    if unknown:
        raise ValueError(f"unknown distance(s) {unknown}; valid: {', '.join(DISTANCES)}")
    rows = [{"distance": name} for name in distance_names]
    for ds_name in dataset_names:
        X, y = load_xy(ds_name)
        for row in rows:
            accs = cross_validated_knn(
                X, y, DISTANCES[row["distance"]], k=k, n_splits=n_splits, seed=seed
            )
            row[ds_name] = (float(accs.mean()), float(accs.std()))
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str], first: str) -> str:
    """Markdown table: first column ``first``; ``(mean, std)`` cells as ``mean ± std``."""

    def cell(v: Any) -> str:
        if isinstance(v, tuple):
            return f"{v[0]:.3f} ± {v[1]:.3f}"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = [
        "| " + " | ".join([first, *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in [first, *columns]) + " |")
    return "\n".join(lines)


def write_markdown(path: str, title: str, protocol: str, table: str) -> str:
    """Write ``# title``, the protocol paragraph and the table to ``path``; return the text."""
    text = f"# {title}\n\n{protocol.strip()}\n\n{table}\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def command_flags(section: str, *, full: bool = False, seed: int = 0, epochs=None) -> str:
    """The flags of the command that regenerates one section's table as it was made."""
    parts = [" --full"] if full else []
    if epochs is not None and epochs != (FULL_EPOCHS if full else QUICK_EPOCHS):
        parts.append(f" --epochs={epochs}")
    if seed:
        parts.append(f" --seed={seed}")
    parts.append(f" --sections={section}")
    return "".join(parts)


DISTANCE_PROTOCOL = """\
Protocol: 5-fold `StratifiedKFold(shuffle=True, random_state={seed})`; features standardized with the
training fold's mean and standard deviation (constant features become 0); {k}-NN majority vote with
`metriclearn.evaluation.knn_accuracy` (vote ties to the smallest label as in scikit-learn, distance
ties to the lower training index);
Mahalanobis uses the pseudo-inverse of the training fold's covariance. Cells: mean ± std of the test
accuracy over the 5 folds.{extra} Command: `python -m experiments.reproduce{flag}` ({seconds:.0f} s).
"""


def run_distances(
    results_dir: str,
    *,
    full: bool = False,
    seed: int = 0,
    dataset_names: Sequence[str] | None = None,
    distance_names: Sequence[str] | None = None,
) -> tuple[str, str]:
    """Section 1: the distance table, written to ``results_dir/distances.md``.

    Returns ``(path, markdown text)``. ``dataset_names`` overrides the quick/full choice and
    ``distance_names`` restricts the rows (both for tests and quick looks).
    """
    if dataset_names is not None:
        names = tuple(dataset_names)
    else:
        names = FULL_DATASETS if full else QUICK_DATASETS
    start = time.perf_counter()
    rows = distance_table(names, distance_names, seed=seed)
    seconds = time.perf_counter() - start
    protocol = DISTANCE_PROTOCOL.format(
        seed=seed,
        k=3,
        extra=" MNIST-1D pools its 4,000 train and 1,000 test signals." if full else "",
        flag=command_flags("distances", full=full, seed=seed),
        seconds=seconds,
    )
    path = os.path.join(results_dir, "distances.md")
    text = write_markdown(
        path, "3-NN accuracy under each distance", protocol, markdown_table(rows, names, "distance")
    )
    return path, text


# ----------------------------------------------------------------------------------------------------
# Section a: before / after metric learning on iris (NCA)

NCA_IRIS_PROTOCOL = """\
Protocol (the ANCHORS.md convex protocol): iris (150 x 4) standardized with `StandardScaler` fitted on
the whole set; 5-fold `StratifiedKFold(shuffle=True, random_state={seed})`; on each fold
`metriclearn.NCA(max_iter=100, random_state={seed})` is fitted on the training rows and
`KNeighborsClassifier(3)` on the transformed training rows scores the test rows. Cells: mean ± std of
the test accuracy over the 5 folds; fit time: mean seconds per fit (the first fold includes JAX
compilation). Figures: learner of fold 1. Reference: ANCHORS.md, Euclidean 0.947, metric-learn NCA 0.967.
Command: `python -m experiments.reproduce{flag}` ({seconds:.0f} s).
"""


def run_nca_iris(results_dir: str, *, seed: int = 0) -> tuple[list[str], str]:
    """Section a: 5-fold 3-NN accuracy on iris before and after NCA; returns ``(paths, markdown)``."""
    from experiments import convex
    from metriclearn import plotting

    start = time.perf_counter()
    X, y = convex.load_standardized("iris")
    res = convex.cross_validate(
        X, y, "nca", k=3, n_folds=5, seed=seed, max_iter=100, return_learners=True
    )
    seconds = time.perf_counter() - start
    euclid = np.asarray(res["euclidean_accuracy"])
    rows = [
        {
            "metric": "Euclidean (before)",
            "3-NN accuracy": (float(euclid.mean()), float(euclid.std())),
        },
        {
            "metric": "NCA (after)",
            "3-NN accuracy": (res["accuracy_mean"], res["accuracy_std"]),
            "fit seconds": res["fit_seconds_mean"],
        },
    ]
    table = markdown_table(rows, ["3-NN accuracy", "fit seconds"], "metric")
    path = os.path.join(results_dir, "nca_iris.md")
    text = write_markdown(
        path,
        "Before / after metric learning: 3-NN on iris, Euclidean vs NCA",
        NCA_IRIS_PROTOCOL.format(
            seed=seed, seconds=seconds, flag=command_flags("nca_iris", seed=seed)
        ),
        table,
    )
    learner = res["learners"][0]
    emb = os.path.join(results_dir, "nca_iris_embedding.png")
    plotting.plot_embedding_before_after(
        X, learner.transform(X), y, emb, titles=("Euclidean (standardized, PCA)", "after NCA (PCA)")
    )
    mat = os.path.join(results_dir, "nca_iris_mahalanobis.png")
    plotting.plot_mahalanobis_matrix(
        learner.get_mahalanobis_matrix(),
        mat,
        feature_names=["sepal length", "sepal width", "petal length", "petal width"],
        title="NCA on iris: learned M (fold 1)",
    )
    return [path, emb, mat], text


# ----------------------------------------------------------------------------------------------------
# Section b: the convex table

# label -> (short name of experiments.convex.LEARNERS, hyperparameters as in ANCHORS.md)
CONVEX_LEARNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euclidean 3-NN": ("euclidean", {}),
    "Covariance": ("covariance", {}),
    "NCA (max_iter=100)": ("nca", {"max_iter": 100}),
    "LMNN (k=3, max_iter=100)": ("lmnn", {"n_neighbors": 3, "max_iter": 100}),
    "ITML_Supervised": ("itml", {}),
    "MMC_Supervised": ("mmc", {}),
    "SDML_Supervised": ("sdml", {}),
    "RCA_Supervised": ("rca", {}),
    "LFDA (k=3)": ("lfda", {"n_neighbors": 3}),
    "MLKR (max_iter=100)": ("mlkr", {"max_iter": 100}),
    "LSML_Supervised": ("lsml", {}),
    "SCML_Supervised": ("scml", {}),
}
CONVEX_DATASETS = ("iris", "wine", "breast_cancer", "digits")
QUICK_MAX_SAMPLES = {"digits": 600}
# data set -> learner -> hyperparameters replacing the defaults in the quick (default) mode only:
# the slowest fit on digits (measured: ITML 10x cheaper, accuracy within 0.01)
QUICK_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {"ITML_Supervised": {"max_iter": 100}},
}

CONVEX_PROTOCOL = """\
Protocol (ANCHORS.md): features standardized with `StandardScaler` fitted on the whole set{subsample};
5-fold `StratifiedKFold(shuffle=True, random_state={seed})`; each learner fitted on the training folds
with metriclearn's defaults plus the hyperparameters in its row name and `random_state={seed}`; then
`KNeighborsClassifier(3)` on the transformed data. Cells: 3-NN test accuracy mean ± std over the folds /
mean fit seconds per fold (the first fold of each learner and data set includes JAX compilation, so
small data sets are dominated by it). "fails" = the learner raised or produced non-finite output.
Measured on a shared 2-core CPU. Command: `python -m experiments.reproduce{flag}`
({seconds:.0f} s).
"""


def convex_table(
    dataset_names: Sequence[str] = CONVEX_DATASETS,
    learner_names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    max_samples: Mapping[str, int] | None = None,
    n_folds: int = 5,
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per learner: ``{"learner": label, <data set>: (mean, std, fit seconds) or "fails (..)"}``.

    ``overrides`` (data set -> learner label -> hyperparameters) replace a learner's settings on one
    data set; ``log`` (e.g. ``print``) receives one progress line per learner and data set.
    """
    from experiments import convex

    learner_names = list(CONVEX_LEARNERS) if learner_names is None else list(learner_names)
    unknown = [n for n in learner_names if n not in CONVEX_LEARNERS]
    if unknown:
        raise ValueError(f"unknown learner(s) {unknown}; valid: {', '.join(CONVEX_LEARNERS)}")
    max_samples = dict(max_samples or {})
    rows = [{"learner": name} for name in learner_names]
    for ds_name in dataset_names:
        X, y = convex.load_standardized(ds_name, max_samples=max_samples.get(ds_name), seed=seed)
        for row in rows:
            algorithm, kwargs = CONVEX_LEARNERS[row["learner"]]
            kwargs = {**kwargs, **dict((overrides or {}).get(ds_name, {}).get(row["learner"], {}))}
            t0 = time.perf_counter()
            res = convex.cross_validate(X, y, algorithm, k=3, n_folds=n_folds, seed=seed, **kwargs)
            if log is not None:
                acc = res["failed"] or f"{res['accuracy_mean']:.3f}"
                log(
                    f"  convex: {ds_name:<13} {row['learner']:<26} {acc} ({time.perf_counter() - t0:.0f} s)"
                )
            if res["failed"]:
                row[ds_name] = f"fails ({res['failed'].split(':')[0]})"
            else:
                row[ds_name] = (res["accuracy_mean"], res["accuracy_std"], res["fit_seconds_mean"])
    return rows


def _convex_cell(v: Any) -> str:
    if isinstance(v, tuple) and len(v) == 3:
        return f"{v[0]:.3f} ± {v[1]:.3f} / {v[2]:.3f} s"
    return str(v)


def run_convex(
    results_dir: str,
    *,
    full: bool = False,
    seed: int = 0,
    dataset_names: Sequence[str] | None = None,
    learner_names: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[str], str]:
    """Section b: the convex table ``convex.md`` and ``convex_accuracy.png``."""
    from metriclearn import plotting

    names = tuple(dataset_names) if dataset_names is not None else CONVEX_DATASETS
    max_samples = {} if full else {k: v for k, v in QUICK_MAX_SAMPLES.items() if k in names}
    overrides = {} if full else {k: v for k, v in QUICK_OVERRIDES.items() if k in names}
    start = time.perf_counter()
    rows = convex_table(
        names, learner_names, seed=seed, max_samples=max_samples, overrides=overrides, log=log
    )
    seconds = time.perf_counter() - start
    subsample = "".join(
        f"; {k}: stratified subsample of {v} rows (`train_test_split(train_size={v}, "
        f"stratify=y, random_state={seed})`, `--full` uses all rows)"
        for k, v in max_samples.items()
    )
    subsample += "".join(
        f"; on {d} (quick mode only, `--full` uses the defaults): "
        + ", ".join(f"{learner} {kw}" for learner, kw in per.items())
        for d, per in overrides.items()
    )
    protocol = CONVEX_PROTOCOL.format(
        seed=seed,
        subsample=subsample,
        flag=command_flags("convex", full=full, seed=seed),
        seconds=seconds,
    )
    lines = [
        "| learner | " + " | ".join(f"{d} acc / fit" for d in names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join([row["learner"], *(_convex_cell(row[d]) for d in names)]) + " |"
        )
    path = os.path.join(results_dir, "convex.md")
    text = write_markdown(
        path, "Convex learners: 3-NN accuracy and fit time", protocol, "\n".join(lines)
    )
    bars = {
        row["learner"]: {d: row[d][:2] for d in names if isinstance(row[d], tuple)} for row in rows
    }
    fig_path = os.path.join(results_dir, "convex_accuracy.png")
    plotting.plot_accuracy_bars(
        {k: v for k, v in bars.items() if v}, fig_path, title="3-NN accuracy after each learner"
    )
    return [path, fig_path], text


# ----------------------------------------------------------------------------------------------------
# Deep sections (c, d, e)

QUICK_EPOCHS = 10
FULL_EPOCHS = 30

# label -> (loss, loss_kwargs, miner, miner_kwargs): the pytorch-metric-learning defaults of ANCHORS.md
DEEP_LOSSES: dict[str, tuple[str, dict[str, Any], str | None, dict[str, Any]]] = {
    "contrastive (all pairs)": ("contrastive", {}, None, {}),
    "triplet_margin(0.2) + semihard": (
        "triplet_margin",
        {"margin": 0.2},
        "semihard",
        {"margin": 0.2},
    ),
    "multi_similarity + miner": ("multi_similarity", {}, "multi_similarity", {}),
    "ntxent (supervised, all pairs)": ("ntxent", {}, None, {}),
    "proxy_anchor": ("proxy_anchor", {}, None, {}),
}
MINING: dict[str, tuple[str, dict[str, Any]]] = {
    "all triplets": ("all", {}),
    "semi-hard": ("semihard", {"margin": 0.2}),
    "batch-hard": ("batch_hard", {}),
}
DEEP_PROTOCOL = """\
Protocol (ANCHORS.md deep protocol): MLP in→256→ReLU→256→ReLU→64 (PyTorch-style init), Adam lr 1e-3,
m-per-class batches (m=16, batch 128, n_train // 128 steps per epoch), {epochs} epochs, seed {seed}.
Data: {data}; features standardized with training statistics. Retrieval on the held-out split
(queries = references, self excluded; MAP@R, R-precision, P@1; NMI of k-means on the embeddings),
evaluated {evaluated}. {extra}Command: `python -m experiments.reproduce{flag}`
({seconds:.0f} s on a shared 2-core CPU).
"""
DATA_DESCRIPTION = {
    "digits": "digits 8×8, 70/30 stratified split (`random_state=0`), 1,257 train / 540 test",
    "mnist1d": "MNIST-1D (40 features), official 4,000 train / 1,000 test",
}


def deep_config(
    dataset: str,
    loss: str,
    *,
    loss_kwargs: Mapping[str, Any] | None = None,
    miner: str | None = None,
    miner_kwargs: Mapping[str, Any] | None = None,
    epochs: int = QUICK_EPOCHS,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """A ``metriclearn.training.train_and_evaluate`` config: the ANCHORS protocol, evaluated every epoch."""
    cfg = {
        "dataset": dataset,
        "loss": loss,
        "loss_kwargs": dict(loss_kwargs or {}),
        "miner": miner,
        "miner_kwargs": dict(miner_kwargs or {}),
        "epochs": int(epochs),
        "seed": int(seed),
        "eval_every": 1,
        "progress": False,
    }
    cfg.update(overrides)
    return cfg


def read_history(path: str) -> list[dict[str, float]]:
    """Read a ``history.csv`` written by ``metriclearn.training.write_history_csv`` (empty -> NaN)."""
    import csv

    with open(path, newline="") as fh:
        return [
            {k: (float(v) if v != "" else float("nan")) for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


class DeepRuns:
    """Runs ``train_and_evaluate`` configs under ``<results_dir>/runs/<name>``, once per config.

    Sections share runs (the contrastive run of the curves section is the contrastive row of the loss
    table, the semi-hard run of the mining section its triplet row), so each config is trained once per
    invocation. ``overrides`` (e.g. ``{"n_batches": 2}``) apply to every config (used by the tests).
    """

    def __init__(self, results_dir: str, **overrides: Any):
        self.root = os.path.join(results_dir, "runs")
        self.overrides = overrides
        self._done: dict[str, tuple[dict[str, Any], list[dict[str, float]]]] = {}
        #: wall seconds of runs handed out again instead of trained (a section that reuses them
        #: adds these to its own time, so its table quotes what its command alone would take)
        self.reused_seconds = 0.0

    def run(
        self, name: str, config: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, float]]]:
        """``(metrics, history)`` of the config, training it unless this invocation already did."""
        import json

        from metriclearn import training

        cfg = {**config, **self.overrides}
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in self._done:
            workdir = os.path.join(self.root, name)
            metrics = training.train_and_evaluate(cfg, workdir)
            self._done[key] = (metrics, read_history(os.path.join(workdir, "history.csv")))
        else:
            self.reused_seconds += float(self._done[key][0].get("wall_seconds") or 0.0)
        return self._done[key]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_").replace("__", "_")


def _deep_datasets(full: bool, dataset_names: Sequence[str] | None) -> tuple[str, ...]:
    if dataset_names is not None:
        return tuple(dataset_names)
    return ("digits", "mnist1d") if full else ("digits",)


def run_curves(
    results_dir: str,
    *,
    full: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    dataset_names: Sequence[str] | None = None,
    runs: DeepRuns | None = None,
) -> tuple[list[str], str]:
    """Section c: contrastive distance curves per epoch (table + figure per data set)."""
    from metriclearn import plotting

    runs = runs or DeepRuns(results_dir)
    epochs = epochs or (FULL_EPOCHS if full else QUICK_EPOCHS)
    paths, texts = [], []
    for ds in _deep_datasets(full, dataset_names):
        start, reused0 = time.perf_counter(), runs.reused_seconds
        metrics, history = runs.run(
            f"{ds}_contrastive", deep_config(ds, "contrastive", epochs=epochs, seed=seed)
        )
        seconds = time.perf_counter() - start + (runs.reused_seconds - reused0)
        rows = [
            {
                "epoch": int(h["epoch"]),
                "loss": h["loss"],
                "similar pairs": (h["pos_distance"], h["pos_distance_std"]),
                "dissimilar pairs": (h["neg_distance"], h["neg_distance_std"]),
                "MAP@R": h["map_at_r"],
            }
            for h in history
        ]
        protocol = DEEP_PROTOCOL.format(
            epochs=epochs,
            seed=seed,
            data=DATA_DESCRIPTION.get(ds, ds),
            evaluated="after every epoch",
            extra=(
                "Loss: contrastive (pos margin 0, neg margin 1, all pairs of the batch). Distances: "
                "Euclidean between L2-normalized embeddings, over all same-class (similar) and "
                "different-class (dissimilar) pairs of every training batch of the epoch, measured in "
                "the forward pass of each step; cells mean ± std. "
            ),
            flag=command_flags("curves", full=full, seed=seed, epochs=epochs),
            seconds=seconds,
        )
        table = markdown_table(
            rows, ["loss", "similar pairs", "dissimilar pairs", "MAP@R"], "epoch"
        )
        path = os.path.join(results_dir, f"distance_curves_{ds}.md")
        texts.append(
            write_markdown(
                path, f"Distance curves: Siamese network, contrastive loss, {ds}", protocol, table
            )
        )
        fig = os.path.join(results_dir, f"distance_curves_{ds}.png")
        plotting.plot_distance_curves(history, fig, title=f"{ds}: contrastive loss (Siamese MLP)")
        paths += [path, fig]
    return paths, "\n".join(texts)


def run_mining(
    results_dir: str,
    *,
    full: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    dataset: str = "digits",
    runs: DeepRuns | None = None,
) -> tuple[list[str], str]:
    """Section d: triplet loss with all / semi-hard / batch-hard mining, MAP@R per epoch."""
    from metriclearn import plotting

    runs = runs or DeepRuns(results_dir)
    epochs = epochs or (FULL_EPOCHS if full else QUICK_EPOCHS)
    start, reused0 = time.perf_counter(), runs.reused_seconds
    histories, rows = {}, []
    for label, (miner, miner_kwargs) in MINING.items():
        metrics, history = runs.run(
            f"{dataset}_triplet_{miner}",
            deep_config(
                dataset,
                "triplet_margin",
                loss_kwargs={"margin": 0.2},
                miner=miner,
                miner_kwargs=miner_kwargs,
                epochs=epochs,
                seed=seed,
            ),
        )
        histories[label] = history
        maps = np.array([h["map_at_r"] for h in history])
        rows.append(
            {
                "miner": label,
                "MAP@R (epoch 1)": float(maps[0]),
                "MAP@R (final)": metrics["map_at_r"],
                "best MAP@R (epoch)": f"{np.nanmax(maps):.3f} ({int(np.nanargmax(maps)) + 1})",
                "P@1": metrics["precision_at_1"],
                "ms / step": metrics["steady_ms_per_step"],
            }
        )
    seconds = time.perf_counter() - start + (runs.reused_seconds - reused0)
    protocol = DEEP_PROTOCOL.format(
        epochs=epochs,
        seed=seed,
        data=DATA_DESCRIPTION.get(dataset, dataset),
        evaluated="after every epoch",
        extra=(
            "Loss: triplet margin 0.2 (Euclidean on L2-normalized embeddings, mean over the mined "
            "triplets with positive loss); miners: all valid triplets of the batch, semi-hard "
            "(PML `TripletMarginMiner(margin=0.2, type_of_triplets='semihard')`), batch-hard "
            "(hardest positive and hardest negative per anchor, Hermans et al. 2017). "
        ),
        flag=command_flags("mining", full=full, seed=seed, epochs=epochs),
        seconds=seconds,
    )
    columns = ["MAP@R (epoch 1)", "MAP@R (final)", "best MAP@R (epoch)", "P@1", "ms / step"]
    path = os.path.join(results_dir, "mining.md")
    text = write_markdown(
        path,
        f"Informative sample selection: triplet loss and mining on {dataset}",
        protocol,
        markdown_table(rows, columns, "miner"),
    )
    fig = os.path.join(results_dir, "mining.png")
    plotting.plot_metric_curves(
        histories, ("loss", "map_at_r"), fig, title=f"{dataset}: triplet loss, mining strategies"
    )
    return [path, fig], text


def run_losses(
    results_dir: str,
    *,
    full: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    dataset_names: Sequence[str] | None = None,
    loss_names: Sequence[str] | None = None,
    runs: DeepRuns | None = None,
) -> tuple[list[str], str]:
    """Section e: loss comparison table per data set (P@1, R-precision, MAP@R, NMI, time)."""
    runs = runs or DeepRuns(results_dir)
    epochs = epochs or (FULL_EPOCHS if full else QUICK_EPOCHS)
    loss_names = list(DEEP_LOSSES) if loss_names is None else list(loss_names)
    unknown = [n for n in loss_names if n not in DEEP_LOSSES]
    if unknown:
        raise ValueError(f"unknown loss row(s) {unknown}; valid: {', '.join(DEEP_LOSSES)}")
    paths, texts = [], []
    for ds in _deep_datasets(full, dataset_names):
        start, reused0 = time.perf_counter(), runs.reused_seconds
        rows = []
        for label in loss_names:
            loss, loss_kwargs, miner, miner_kwargs = DEEP_LOSSES[label]
            name = f"{ds}_{loss}" if miner is None else f"{ds}_{loss}_{miner}"
            if loss == "triplet_margin" and miner is not None:
                name = f"{ds}_triplet_{miner}"  # shared with the mining section
            metrics, _ = runs.run(
                name,
                deep_config(
                    ds,
                    loss,
                    loss_kwargs=loss_kwargs,
                    miner=miner,
                    miner_kwargs=miner_kwargs,
                    epochs=epochs,
                    seed=seed,
                ),
            )
            rows.append(
                {
                    "loss": label,
                    "P@1": metrics["precision_at_1"],
                    "R-precision": metrics["r_precision"],
                    "MAP@R": metrics["map_at_r"],
                    "NMI": metrics["nmi"],
                    "ms / step": metrics["steady_ms_per_step"],
                    "train s": metrics["wall_seconds"],
                }
            )
        seconds = time.perf_counter() - start + (runs.reused_seconds - reused0)
        protocol = DEEP_PROTOCOL.format(
            epochs=epochs,
            seed=seed,
            data=DATA_DESCRIPTION.get(ds, ds),
            evaluated="after the last epoch",
            extra=(
                "Losses and miners with pytorch-metric-learning's default hyperparameters (ANCHORS.md "
                "reference at 30 epochs on digits: contrastive P@1 0.969 / MAP@R 0.871, "
                "triplet+semihard 0.969 / 0.879, multi-similarity+miner 0.967 / 0.878). Time: steady "
                "ms per training step (after the compiling first epoch) and wall seconds of the run "
                "including compilation and per-epoch evaluation. "
            ),
            flag=command_flags("losses", full=full, seed=seed, epochs=epochs),
            seconds=seconds,
        )
        columns = ["P@1", "R-precision", "MAP@R", "NMI", "ms / step", "train s"]
        path = os.path.join(results_dir, f"losses_{ds}.md")
        texts.append(
            write_markdown(
                path,
                f'Loss comparison on {ds} ("A Metric Learning Reality Check" metrics)',
                protocol,
                markdown_table(rows, columns, "loss"),
            )
        )
        paths.append(path)
    return paths, "\n".join(texts)


def run_sections(
    results_dir: str,
    sections: Sequence[str] = SECTIONS,
    *,
    full: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    log=print,
) -> dict[str, tuple[list[str], float]]:
    """Run the named sections in order; returns ``{section: (written paths, seconds)}``."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown section(s) {bad}; valid: {', '.join(SECTIONS)}")
    runs = DeepRuns(results_dir)
    done: dict[str, tuple[list[str], float]] = {}
    for section in sections:
        start, cpu = time.perf_counter(), time.process_time()
        if section == "distances":
            path, _ = run_distances(results_dir, full=full, seed=seed)
            paths = [path]
        elif section == "nca_iris":
            paths, _ = run_nca_iris(results_dir, seed=seed)
        elif section == "convex":
            paths, _ = run_convex(results_dir, full=full, seed=seed, log=log)
        elif section == "curves":
            paths, _ = run_curves(results_dir, full=full, seed=seed, epochs=epochs, runs=runs)
        elif section == "mining":
            paths, _ = run_mining(results_dir, full=full, seed=seed, epochs=epochs, runs=runs)
        else:
            paths, _ = run_losses(results_dir, full=full, seed=seed, epochs=epochs, runs=runs)
        done[section] = (paths, time.perf_counter() - start)
        log(
            f"[{section}] {done[section][1]:.0f} s wall, {time.process_time() - cpu:.0f} s CPU: "
            + ", ".join(paths)
        )
    return done


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    sections = list(dict.fromkeys(s.strip() for s in FLAGS.sections if s.strip()))  # once each
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        raise app.UsageError(
            f"--sections={','.join(FLAGS.sections)}: unknown section(s) {bad}; valid: "
            f"{','.join(SECTIONS)}"
        )
    check_output_dir(FLAGS.results_dir, "--results_dir")
    if sections == ["distances"]:  # the original single-table behaviour: print the table
        path, text = run_distances(FLAGS.results_dir, full=FLAGS.full, seed=FLAGS.seed)
        print(text)
        print(f"wrote {path}")
        return
    start, cpu = time.perf_counter(), time.process_time()
    done = run_sections(
        FLAGS.results_dir, sections, full=FLAGS.full, seed=FLAGS.seed, epochs=FLAGS.epochs
    )
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"\nwrote {sum(len(p) for p, _ in done.values())} files in {total:.0f} s ({cpu:.0f} s CPU) "
        f"under {os.path.abspath(FLAGS.results_dir)}:"
    )
    for section, (paths, seconds) in done.items():
        print(f"  {section:<10} {seconds:6.0f} s  " + "  ".join(os.path.basename(p) for p in paths))


if __name__ == "__main__":
    if any(arg in ("--help", "-h", "--helpshort", "--helpfull") for arg in sys.argv[1:]):
        exit_with_help(__doc__, full="--helpfull" in sys.argv[1:])
    app.run(main)
