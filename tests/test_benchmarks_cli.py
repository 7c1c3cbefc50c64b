"""Argument checks of the benchmarks' command lines (parsing only: nothing is timed here)."""

import pytest

from benchmarks import convex, deep, pairwise, run_all, scaling


def test_quick_keeps_explicit_sizes_and_bad_values_are_usage_errors(tmp_path):
    """--quick overrode sizes given explicitly (--n=100000 ran at 256); --seed=-1, --steps=0,
    --synthetic-max-iter=0 and --datasets= ended in tracebacks (some after the work); scaling's
    ratios were against the first count listed, whatever it was."""
    args = pairwise._parse(["--quick", "--n=1000"])
    assert (args.n, args.d) == (1000, 32)
    for bad in (
        lambda: pairwise._parse(["--seed=-1"]),
        lambda: deep.main(["--steps=0", "--quick"]),
        lambda: convex._parse(["--datasets=,"]),
        lambda: convex._parse(["--synthetic-max-iter=0"]),
        lambda: scaling._parse(["--devices=abc"]),
        lambda: scaling._parse(["--devices=2,1"]),
        lambda: scaling._parse(["--devices=,"]),
    ):
        with pytest.raises(SystemExit) as err:
            bad()
        assert err.value.code == 2
    assert scaling._parse(["--quick", "--repeats=9"]).repeats == 9
    assert scaling._parse(["--devices=1,2"]).device_counts == [1, 2]


def test_run_all_reports_go_beside_out_and_out_is_checked_first(tmp_path):
    """A run with its own --out overwrote the committed benchmarks/results/*.md; an --out under a
    file failed with a traceback after every benchmark had run."""
    args = run_all._parse(["--out", str(tmp_path / "R.md"), "--only", "pairwise"])
    assert args.logs == str(tmp_path / "results")
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit):
        run_all._parse(["--out", str(tmp_path / "afile" / "R.md")])


def test_deep_quality_takes_quick_as_the_other_benchmarks(monkeypatch):
    # the README says every benchmark takes --quick; deep_quality exited 2 on it
    from benchmarks import deep_quality

    seen = []
    monkeypatch.setattr(deep_quality, "run", lambda n, *a, **k: seen.append(n) or [])
    assert deep_quality.main(["--quick"]) == 0
    assert deep_quality.main(["--quick", "--seeds", "5"]) == 0
    assert seen == [2, 5]


def test_convex_ratio_at_a_worse_objective_says_so():
    # MLKR's 10.5x was quoted as like for like, though ours stops at 225.6 against 161
    row = {"learner": "MLKR", "dataset": "digits", "speedup": 10.5}
    worse = {**row, "ours_objective": 225.6, "ml_objective": 161.0}
    assert "worse objective" not in run_all._ratios_convex({"timing": [row]})[0][3]
    assert "worse objective (225.6 vs 161)" in run_all._ratios_convex({"timing": [worse]})[0][3]
