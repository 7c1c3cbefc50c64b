"""Smoke and correctness tests of the main job ``python -m experiments.reproduce``."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app
from absl.testing import flagsaver
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from experiments import reproduce
from metriclearn import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distance_table_iris_plausible_and_matches_sklearn():
    rows = reproduce.distance_table(["iris"])
    by_name = {row["distance"]: row["iris"] for row in rows}
    assert list(by_name) == list(reproduce.DISTANCES)
    for name, (mean, std) in by_name.items():
        assert 0.8 < mean <= 1.0 and 0.0 <= std < 0.1, name
    assert by_name["Euclidean"][0] > 0.9
    # the same protocol written directly with scikit-learn
    ds = datasets.load("iris")
    accs = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(ds.X, ds.y):
        scaler = StandardScaler().fit(ds.X[tr])
        knn = KNeighborsClassifier(3).fit(scaler.transform(ds.X[tr]), ds.y[tr])
        accs.append(knn.score(scaler.transform(ds.X[te]), ds.y[te]))
    assert by_name["Euclidean"][0] == pytest.approx(np.mean(accs), abs=1e-9)


def test_distance_table_bad_name():
    with pytest.raises(ValueError, match="unknown distance"):
        reproduce.distance_table(["iris"], ["Euclid"])
    with pytest.raises(ValueError, match="unknown data set"):
        reproduce.distance_table(["irises"], ["Euclidean"])


def test_run_distances_writes_markdown(tmp_path):
    names = ["Euclidean", "Mahalanobis (inverse covariance)"]
    path, text = reproduce.run_distances(
        str(tmp_path / "out"), dataset_names=["iris"], distance_names=names
    )
    assert path == str(tmp_path / "out" / "distances.md")
    with open(path, encoding="utf-8") as f:
        written = f.read()
    assert written == text
    assert written.startswith("# 3-NN accuracy under each distance")
    assert "StratifiedKFold(shuffle=True, random_state=0)" in written  # the protocol is stated
    assert "| distance | iris |" in written
    assert written.count("\n| ") == 1 + len(names)  # header + one row per distance
    assert "Mahalanobis" in written and "±" in written


def test_main_with_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "QUICK_DATASETS", ("iris",))
    # --sections=distances: only the distance table (the default runs every section)
    with flagsaver.flagsaver(results_dir=str(tmp_path / "res"), sections=["distances"]):
        reproduce.FLAGS.mark_as_parsed()
        reproduce.main(["reproduce"])
        with pytest.raises(app.UsageError):
            reproduce.main(["reproduce", "extra"])
    out = capsys.readouterr().out
    assert "| Euclidean |" in out and "wrote " in out
    assert (tmp_path / "res" / "distances.md").exists()


def test_help_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--results_dir" in proc.stdout and "--full" in proc.stdout
    for flag in ("--sections", "--seed", "--epochs"):
        assert flag in proc.stdout, flag


def test_main_rejects_unknown_section(tmp_path):
    with flagsaver.flagsaver(results_dir=str(tmp_path / "res"), sections=["distances", "convexx"]):
        reproduce.FLAGS.mark_as_parsed()
        with pytest.raises(app.UsageError, match="--sections=distances,convexx.*valid: distances"):
            reproduce.main(["reproduce"])


def test_tables_name_the_command_that_made_them(tmp_path):
    """The header said `python -m experiments.reproduce` for a table made with --seed=1 of one
    section (which the plain command would not reproduce)."""
    assert reproduce.command_flags("distances") == " --sections=distances"
    assert (
        reproduce.command_flags("convex", full=True, seed=3) == " --full --seed=3 --sections=convex"
    )
    assert reproduce.command_flags("curves", seed=0, epochs=1) == " --epochs=1 --sections=curves"
    assert reproduce.command_flags("curves", epochs=reproduce.QUICK_EPOCHS) == " --sections=curves"
    _, text = reproduce.run_distances(
        str(tmp_path / "out"), dataset_names=["iris"], distance_names=["Euclidean"], seed=1
    )
    assert "Command: `python -m experiments.reproduce --seed=1 --sections=distances`" in text


def test_shared_runs_count_in_each_section_time(tmp_path, monkeypatch):
    """A section that reuses another section's run adds that run's time to its own."""
    from metriclearn import training

    monkeypatch.setattr(training, "train_and_evaluate", lambda cfg, workdir: {"wall_seconds": 7.0})
    monkeypatch.setattr(reproduce, "read_history", lambda path: [])
    runs = reproduce.DeepRuns(str(tmp_path))
    runs.run("a", {"x": 1})
    assert runs.reused_seconds == 0.0
    runs.run("a", {"x": 1})
    assert runs.reused_seconds == 7.0


def test_main_dedupes_sections_and_checks_results_dir(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        reproduce, "run_sections", lambda d, sections, **kw: calls.append(list(sections)) or {}
    )
    with flagsaver.flagsaver(results_dir=str(tmp_path / "res"), sections=["nca_iris", "nca_iris"]):
        reproduce.FLAGS.mark_as_parsed()
        reproduce.main(["reproduce"])
    assert calls == [["nca_iris"]]
    (tmp_path / "file").write_text("")
    with flagsaver.flagsaver(results_dir=str(tmp_path / "file"), sections=["nca_iris"]):
        reproduce.FLAGS.mark_as_parsed()
        with pytest.raises(app.UsageError, match="--results_dir=.*cannot be created"):
            reproduce.main(["reproduce"])
    # an empty --results_dir wrote into the working directory, silently
    with flagsaver.flagsaver(results_dir="", sections=["nca_iris"]):
        reproduce.FLAGS.mark_as_parsed()
        with pytest.raises(app.UsageError, match="--results_dir is empty"):
            reproduce.main(["reproduce"])
    assert calls == [["nca_iris"]]
    # --helpfull exited 1 (absl's own handling)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", "--helpfull"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--sections" in proc.stdout
