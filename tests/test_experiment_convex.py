"""Tests of ``python -m experiments.convex`` and the convex / deep sections of ``experiments.reproduce``:
the protocol against scikit-learn written out here, the files written, bad flags, reproducibility."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from experiments import convex, reproduce
from metriclearn import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "experiments.convex", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_make_learner_names_and_errors():
    assert convex.make_learner("euclidean") is None
    lmnn = convex.make_learner("lmnn", seed=3, n_neighbors=5, max_iter=7)
    assert type(lmnn).__name__ == "LMNN"
    assert (lmnn.n_neighbors, lmnn.max_iter, lmnn.random_state) == (5, 7, 3)
    assert convex.make_learner("lfda", n_neighbors=4).k == 4
    with pytest.raises(ValueError, match="unknown algorithm 'foo'; valid: euclidean, covariance"):
        convex.make_learner("foo")
    with pytest.raises(ValueError, match="no neighbourhood size"):
        convex.make_learner("nca", n_neighbors=3)
    with pytest.raises(ValueError, match="takes no max_iter"):
        convex.make_learner("covariance", max_iter=3)
    with pytest.raises(ValueError, match="takes no"):
        convex.make_learner("nca", bogus=1)
    with pytest.raises(ValueError, match="no hyperparameters"):
        convex.make_learner("euclidean", max_iter=3)


def test_cross_validate_matches_sklearn_protocol():
    # Covariance is closed-form: whitening with the training folds' covariance, written out here
    X, y = convex.load_standardized("iris")
    res = convex.cross_validate(X, y, "covariance", k=3, n_folds=5, seed=0)
    X0, y0 = load_iris(return_X_y=True)
    np.testing.assert_allclose(X, StandardScaler().fit_transform(X0), atol=1e-5)
    Xs = StandardScaler().fit_transform(datasets.load("iris").X.astype(np.float64))
    np.testing.assert_array_equal(X, Xs)
    base, accs = [], []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(Xs, y0):
        base.append(KNeighborsClassifier(3).fit(Xs[tr], y0[tr]).score(Xs[te], y0[te]))
        evals, evecs = np.linalg.eigh(np.cov(Xs[tr], rowvar=False))
        W = evecs @ np.diag(evals**-0.5) @ evecs.T  # M = cov^-1 = W^T W
        knn = KNeighborsClassifier(3).fit(Xs[tr] @ W.T, y0[tr])
        accs.append(knn.score(Xs[te] @ W.T, y0[te]))
    assert res["euclidean_accuracy_mean"] == pytest.approx(np.mean(base), abs=1e-12)
    assert res["euclidean_accuracy_mean"] == pytest.approx(0.947, abs=1e-3)  # ANCHORS.md
    np.testing.assert_allclose(res["accuracy"], accs, atol=1e-12)
    assert res["failed"] is None and len(res["fit_seconds"]) == 5


def test_cross_validate_reports_failure_instead_of_raising():
    X, y = convex.load_standardized("iris")
    # n_components larger than the 4 features: every fit raises; the run reports it
    res = convex.cross_validate(X, y, "nca", n_folds=2, n_components=9, max_iter=2)
    assert res["failed"] and "n_components" in res["failed"]
    assert np.isnan(res["accuracy_mean"])
    assert res["euclidean_accuracy_mean"] > 0.8


def test_run_writes_outputs_and_is_reproducible(tmp_path):
    cfg = {"algorithm": "lfda", "dataset": "wine", "n_neighbors": 3, "n_folds": 3, "seed": 1}
    m1 = convex.run(cfg, tmp_path / "a")
    m2 = convex.run({**cfg, "figures": False}, tmp_path / "b")
    assert m1["accuracy"] == m2["accuracy"]  # same seed -> same numbers
    assert 0.9 < m1["accuracy_mean"] <= 1.0
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == ["config.json", "embedding.png", "mahalanobis.png", "metrics.json"]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["learner"] == "LFDA" and config["learner_params"]["k"] == 3
    assert config["n_samples"] == 178 and config["n_features"] == 13
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(metrics) >= {"accuracy_mean", "accuracy_std", "fit_seconds_mean", "failed"}
    assert len(metrics["accuracy"]) == 3
    m3 = convex.run({**cfg, "seed": 2, "figures": False}, tmp_path / "c")
    assert m3["euclidean_accuracy"] != m1["euclidean_accuracy"]  # the seed changes the folds
    # a later run in the same workdir left the LFDA figures beside its own metrics
    convex.run({"algorithm": "euclidean", "dataset": "wine", "n_folds": 3}, tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == ["config.json", "metrics.json"]
    # n_components beyond the features is the user's setting, not a failed learner
    with pytest.raises(ValueError, match="n_components=9 is larger than the 4 features of iris"):
        convex.run({"algorithm": "nca", "dataset": "iris", "n_components": 9}, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    with pytest.raises(ValueError, match="unknown config key"):
        convex.run({"algo": "nca"}, tmp_path / "d")
    with pytest.raises(ValueError, match="unknown dataset"):
        convex.run({"dataset": "irs"}, tmp_path / "d")


def test_load_standardized_subsample_is_stratified():
    X, y = convex.load_standardized("digits", max_samples=200, seed=0)
    assert X.shape == (200, 64)
    assert np.all(np.bincount(y) >= 19)
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-9)


def test_cli_help_bad_flags_and_run(tmp_path):
    proc = _run("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--algorithm",
        "--dataset",
        "--workdir",
        "--n_components",
        "--k",
        "--n_neighbors",
        "--max_iter",
        "--seed",
        "--n_folds",
        "--max_samples",
        "--learner_kwargs",
    ):
        assert flag in proc.stdout, flag
    bad = _run("--algorithm=foo", f"--workdir={tmp_path}", timeout=60)
    assert bad.returncode != 0
    assert "--algorithm=foo" in bad.stderr and "nca|lmnn" in bad.stderr
    bad = _run("--n_folds=1", f"--workdir={tmp_path}", timeout=60)
    assert bad.returncode != 0 and "--n_folds" in bad.stderr
    bad = _run("--algorithm=covariance", "--max_iter=5", f"--workdir={tmp_path}", timeout=120)
    assert (
        bad.returncode != 0 and "--algorithm=covariance" in bad.stderr and "max_iter" in bad.stderr
    )
    out = tmp_path / "run"
    ok = _run("--algorithm=rca", "--dataset=iris", "--n_folds=2", "--nofigures", f"--workdir={out}")
    assert ok.returncode == 0, ok.stderr
    assert "3-NN accuracy" in ok.stdout
    assert json.loads((out / "metrics.json").read_text())["accuracy_mean"] > 0.8


# ------------------------------------------------------------------------------------------------
# reproduce: the convex and deep sections on tiny settings


def test_convex_section_tiny(tmp_path):
    learners = ["Euclidean 3-NN", "LFDA (k=3)", "NCA (max_iter=100)"]
    paths, text = reproduce.run_convex(
        str(tmp_path), dataset_names=["iris"], learner_names=learners
    )
    assert [os.path.basename(p) for p in paths] == ["convex.md", "convex_accuracy.png"]
    assert "StratifiedKFold(shuffle=True, random_state=0)" in text
    assert "| learner | iris acc / fit |" in text
    assert "| Euclidean 3-NN | 0.947 ± " in text  # ANCHORS.md
    assert text.count("\n| ") == 1 + len(learners)
    rows = reproduce.convex_table(["iris"], learners[:2])
    assert rows[1]["iris"][:2] == reproduce.convex_table(["iris"], learners[1:2])[0]["iris"][:2]
    with pytest.raises(ValueError, match="unknown learner"):
        reproduce.convex_table(["iris"], ["NCA"])


TINY = {"n_batches": 2, "hidden": [16], "embedding_dim": 8}


def test_deep_sections_tiny_and_reproducible(tmp_path):
    runs = reproduce.DeepRuns(str(tmp_path), **TINY)
    paths, text = reproduce.run_curves(str(tmp_path), epochs=2, runs=runs)
    assert [os.path.basename(p) for p in paths] == [
        "distance_curves_digits.md",
        "distance_curves_digits.png",
    ]
    assert "| epoch | loss | similar pairs | dissimilar pairs | MAP@R |" in text
    assert "seed 0" in text and "2 epochs" in text
    assert text.count("\n| ") == 1 + 2  # header + one row per epoch
    l_paths, l_text = reproduce.run_losses(
        str(tmp_path), epochs=2, runs=runs, loss_names=["contrastive (all pairs)"]
    )
    assert [os.path.basename(p) for p in l_paths] == ["losses_digits.md"]
    assert "| loss | P@1 | R-precision | MAP@R | NMI | ms / step | train s |" in l_text
    assert "| contrastive (all pairs) | " in l_text
    # the loss table reuses the curves section's run: one trained config
    assert len(runs._done) == 1
    assert sorted(os.listdir(tmp_path / "runs")) == ["digits_contrastive"]
    # same seed -> same numbers: a fresh run of the same config reproduces the metrics and history
    again = reproduce.DeepRuns(str(tmp_path / "again"), **TINY)
    cfg = reproduce.deep_config("digits", "contrastive", epochs=2)
    m1, h1 = runs.run("digits_contrastive", cfg)
    m2, h2 = again.run("digits_contrastive", cfg)
    for key in ("precision_at_1", "r_precision", "map_at_r", "nmi"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6)
    np.testing.assert_allclose(
        [h["pos_distance"] for h in h1], [h["pos_distance"] for h in h2], rtol=1e-5
    )
    with pytest.raises(ValueError, match="unknown loss row"):
        reproduce.run_losses(str(tmp_path), loss_names=["arc"], runs=runs)


@pytest.mark.slow
def test_mining_section_all_miners(tmp_path):
    runs = reproduce.DeepRuns(str(tmp_path), **TINY)
    paths, text = reproduce.run_mining(str(tmp_path), epochs=2, runs=runs)
    assert [os.path.basename(p) for p in paths] == ["mining.md", "mining.png"]
    for label in reproduce.MINING:
        assert f"| {label} |" in text
    # the triplet row of the loss table is the semi-hard mining run (no new training)
    _, l_text = reproduce.run_losses(
        str(tmp_path), epochs=2, runs=runs, loss_names=["triplet_margin(0.2) + semihard"]
    )
    assert len(runs._done) == 3 and "| triplet_margin(0.2) + semihard |" in l_text
    assert sorted(os.listdir(tmp_path / "runs")) == [
        "digits_triplet_all",
        "digits_triplet_batch_hard",
        "digits_triplet_semihard",
    ]


def test_run_sections_rejects_unknown(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        reproduce.run_sections(str(tmp_path), ["convexx"])


def test_settings_the_data_refute_fail_before_any_file(tmp_path):
    with pytest.raises(ValueError, match=r"\['max_iter'\] given both"):
        convex.run(
            {"algorithm": "nca", "max_iter": 5, "learner_kwargs": {"max_iter": 7}}, tmp_path / "a"
        )
    with pytest.raises(ValueError, match="k=200 neighbours but a training fold has only 120 rows"):
        convex.run({"algorithm": "euclidean", "k": 200}, tmp_path / "b")
    with pytest.raises(ValueError, match="n_folds=5 needs at least that many rows per class"):
        convex.run({"algorithm": "euclidean", "max_samples": 10}, tmp_path / "c")
    # a subsample that leaves a class out of one side of its split (the message named test_size)
    with pytest.raises(ValueError, match="max_samples=148: a stratified subsample of iris"):
        convex.run({"algorithm": "euclidean", "max_samples": 148}, tmp_path / "d")
    # a hyperparameter value the learner refuses: was a "failed" table entry with files written
    with pytest.raises(ValueError, match=r"LFDA refuses \['embedding_type'\]"):
        convex.run(
            {"algorithm": "lfda", "learner_kwargs": {"embedding_type": "foo"}, "figures": False},
            tmp_path / "e",
        )
    for d in ("a", "b", "c", "d", "e"):
        assert not (tmp_path / d).exists()  # not even an empty workdir
    # LFDA's own neighbourhood k through learner_kwargs collided with the k-NN k (a TypeError)
    m = convex.run(
        {"algorithm": "lfda", "learner_kwargs": {"k": 5}, "dataset": "iris", "figures": False},
        tmp_path / "f",
    )
    assert m["failed"] is None and m["accuracy_mean"] > 0.9


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "figures",
            "false",
            "config 'figures' must be True or False",
        ),  # was truthy: figures written
        ("k", "3", r"config 'k' must be an integer >= 1, got '3'"),  # was a raw TypeError
        ("k", 0, r"config 'k' must be an integer >= 1"),
        ("n_folds", 1, r"config 'n_folds' must be an integer >= 2, got 1"),  # "has only 0 rows"
        ("seed", -1, r"config 'seed' must be an integer >= 0"),
        ("max_iter", 2.5, r"config 'max_iter' must be an integer >= 1"),
        ("learner_kwargs", "x", "config 'learner_kwargs' must be a dict"),  # "update sequence"
        ("algorithm", ["nca"], "config 'algorithm' must be a name"),
    ],
)
def test_run_refuses_config_values_of_the_wrong_type(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        convex.run({"algorithm": "covariance", key: value}, tmp_path / "w")
    assert not (tmp_path / "w").exists()
