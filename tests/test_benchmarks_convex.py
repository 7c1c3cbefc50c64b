"""Smoke test of benchmarks/convex.py on the metriclearn side only (no venv, tiny sizes)."""

import numpy as np
import pytest

from benchmarks import convex


def test_quick_run_metriclearn_only(capsys):
    out = convex.main(
        ["--quick", "--no-metric-learn", "--learners", "covariance,lmnn", "--datasets", "digits"]
    )
    text = capsys.readouterr().out
    assert "## digits (300 x 64)" in text and "recompilation" in text
    rows = {r["learner"]: r for r in out["timing"]}
    assert set(rows) == {"Covariance", "LMNN"}
    for r in rows.values():
        assert r["ours_median"] > 0 and np.isfinite(r["ours_first"])
        assert r["ml_note"] == "not run" and "speedup" not in r
    # five CV folds of LMNN; every fold after the first reuses the compiled program
    cv = [r for r in out["cv"] if r[0] == "LMNN"]
    assert [r[1] for r in cv] == [1, 2, 3, 4, 5]
    assert all(r[4] == 0 for r in cv[1:])


def test_argument_errors():
    with pytest.raises(SystemExit):
        convex.main(["--learners", "nope", "--no-metric-learn"])
    with pytest.raises(SystemExit):
        convex.main(["--datasets", "mnist", "--no-metric-learn"])
    args = convex._parse(["--learners", "itml,LMNN,scml_supervised"])
    assert args.learners == ["ITML_Supervised", "LMNN", "SCML_Supervised"]
