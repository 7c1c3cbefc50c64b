"""Argument checks of the benchmarks' command lines (parsing only: nothing is timed here)."""

import sys
import types

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


def test_scaling_checks_its_numbers_and_json_path_before_any_work(tmp_path, capsys):
    """--repeats 0, --batch 8, --timeout -1 each ended in a traceback from a worker or subprocess,
    and --json under a file in NotADirectoryError after the whole run."""
    (tmp_path / "afile").write_text("")
    for argv, message in (
        (["--repeats=0"], "--repeats must be >= 1"),
        (["--n-pairwise=0"], "--n-pairwise must be >= 1"),
        (["--n-eval=0"], "--n-eval must be >= 1"),
        (["--devices=1", "--batch=8"], "--batch must be a positive multiple of 16"),
        (["--devices=1,3", "--batch=32"], "--batch must be a positive multiple of 16"),
        (["--timeout=-1"], "--timeout must be a finite number"),
        (["--timeout=nan"], "--timeout must be a finite number"),
        (["--json", str(tmp_path / "afile" / "x.json")], "--json="),
    ):
        _refused(capsys, scaling._parse, argv, message)
    args = scaling._parse(["--devices=1,3", "--batch=48", "--json", str(tmp_path / "r.json")])
    assert (args.batch, args.device_counts) == (48, [1, 3])
    # a worker checks the batch against its own device count, not the default list
    assert scaling._parse(["--worker=3", "--batch=48"]).worker == 3


def test_run_all_refuses_an_empty_only_and_a_bad_timeout(tmp_path, capsys):
    """--only= exited 0 and wrote an empty table over --out; --timeout -1 reported every benchmark
    as timed out, rc 0."""
    out = tmp_path / "R.md"
    for argv, message in (
        (["--only="], "--only is empty"),
        (["--only", " , "], "--only is empty"),
        (["--timeout=-1"], "--timeout must be a finite number"),
        (["--timeout=0"], "--timeout must be a finite number"),
        (["--timeout=nan"], "--timeout must be a finite number"),
    ):
        _refused(capsys, lambda a: run_all.main(["--out", str(out), *a]), argv, message)
    assert not out.exists()


def test_convex_range_checks_its_guards(capsys):
    """--timeout -1 (or 0, NaN) killed every metric-learn fit at once ("timeout > -1 s"), rc 0."""
    for flag in ("--timeout", "--slow-seconds", "--ml-memory-gb"):
        for value in ("-1", "0", "nan", "inf"):
            _refused(
                capsys, convex._parse, [f"{flag}={value}"], f"{flag} must be a finite number > 0"
            )
    args = convex._parse(["--timeout=0.5", "--slow-seconds=2", "--ml-memory-gb=1.5"])
    assert (args.timeout, args.slow_seconds, args.ml_memory_gb) == (0.5, 2.0, 1.5)


def test_quick_keeps_sizes_given_even_when_they_equal_the_defaults(monkeypatch):
    """--quick decided "given" by comparing with the default, so --quick --n 4096 ran at 256 (and
    convex overrode --repeats and --synthetic-max-iter outright)."""
    args = pairwise._parse(["--quick", "--n=4096", "--d=512", "--repeats=7"])
    assert (args.n, args.d, args.repeats, args.scipy_rows) == (4096, 512, 7, 64)
    args = pairwise._parse([])
    assert (args.n, args.d, args.repeats, args.scipy_rows, args.maha_rows) == (4096, 512, 7, 512, 2)
    args = scaling._parse(["--quick", "--n-pairwise=4096", "--repeats=5"])
    assert (args.n_pairwise, args.n_eval, args.repeats) == (4096, 4000, 5)
    assert (lambda a: (a.n_pairwise, a.n_eval, a.repeats))(scaling._parse([])) == (4096, 10000, 5)
    args = convex._parse(["--quick", "--repeats=5", "--synthetic-max-iter=8"])
    assert (args.repeats, args.synthetic_max_iter) == (5, 8)
    assert (lambda a: (a.repeats, a.synthetic_max_iter))(convex._parse(["--quick"])) == (1, 5)
    assert (lambda a: (a.repeats, a.synthetic_max_iter))(convex._parse([])) == (3, 10)

    from benchmarks import deep, deep_quality

    seen = []
    monkeypatch.setattr(deep, "run", lambda steps, **k: seen.append(("deep", steps)) or [])
    monkeypatch.setattr(deep_quality, "run", lambda n, *a, **k: seen.append(("dq", n)) or [])
    assert deep.main(["--quick", "--steps=30"]) == 0
    assert deep.main(["--quick"]) == 0
    assert deep_quality.main(["--quick", "--seeds=60"]) == 0
    assert seen == [("deep", 30), ("deep", 5), ("dq", 60)]


def _refused(capsys, run, argv, message: str) -> None:
    """``run(argv)`` stops with argparse's usage error (exit 2) and prints ``message``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        run(argv)
    assert err.value.code == 2, argv
    assert message in capsys.readouterr().err, argv


def _no_work(*args, **kwargs):
    raise AssertionError("a benchmark ran: the arguments should have been refused first")


def test_run_all_out_directory_and_stray_arguments_are_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    """--out naming a directory passed the up-front check and ended in IsADirectoryError after
    every benchmark; an --out in a directory not yet there in FileNotFoundError; stray positional
    arguments were dropped silently."""
    ran = []
    monkeypatch.setattr(run_all, "_run_child", lambda name, *a: ran.append(name) or (None, "x"))
    for argv, message in (
        (["--out", str(tmp_path)], "is a directory"),
        (["--out", str(tmp_path / "new") + "/"], "is a directory"),
        (["--out", str(tmp_path / "R.md"), "bogus"], "unrecognized arguments: bogus"),
        (["--out", str(tmp_path / "R.md"), "--child-out", "x"], "--child-out is internal"),
    ):
        _refused(capsys, lambda a: run_all.main([*a, "--only", "pairwise"]), argv, message)
    assert ran == []
    # the child's own argv still travels after --child
    assert run_all._parse(["--child", "deep", "--", "--steps", "5"]).rest == ["--steps", "5"]
    out = tmp_path / "a" / "b" / "R.md"
    result = run_all.main(["--out", str(out), "--only", "pairwise", "--logs", str(tmp_path / "l")])
    assert ran == ["pairwise"] and result["status"] == {"pairwise": "x"}
    assert out.read_text().startswith("# Benchmark results")


def test_scaling_json_in_a_new_directory_is_written(tmp_path, monkeypatch):
    """--json in a directory not yet there passed the up-front check, then FileNotFoundError after
    the whole run."""
    import json

    fake = {"devices": 1, "train_ms_per_step": 2.0, "pairwise_gflops": 3.0, "retrieval_s": 4.0}
    monkeypatch.setattr(scaling, "_run_one", lambda n, args: {**fake, "train_first_s": 1.0})
    path = tmp_path / "new" / "dir" / "x.json"
    report = scaling.main(["--devices=1", "--json", str(path)])
    assert json.loads(path.read_text())["summary"] == report["summary"]
    with pytest.raises(SystemExit):
        scaling._parse(["--json", str(tmp_path / "other") + "/"])
    assert not (tmp_path / "other").exists()


def test_deep_quality_refuses_options_its_mode_would_drop(monkeypatch, capsys):
    """--trajectory with --decompose ran the decomposition only; --decompose used the first of
    --losses only; --pml-numpy-offset was ignored by --decompose and --trajectory; --seeds by
    --trajectory."""
    from benchmarks import deep_quality

    for work in ("run", "decompose_run", "trajectory"):  # a refusal must come before any work
        monkeypatch.setattr(deep_quality, work, _no_work)
    for argv, message in (
        (["--trajectory", "--decompose=init"], "separate modes"),
        (["--decompose=init", "--losses=contrastive,triplet"], "--decompose takes one loss"),
        (["--decompose=init", "--losses=triplet", "--pml-numpy-offset=0,7"], "--pml-numpy-offset"),
        (["--trajectory", "--pml-numpy-offset=5"], "--pml-numpy-offset"),
        (["--trajectory", "--seeds=3"], "--seeds and --quick do not apply"),
        (["--decompose=,"], "--decompose names no part"),  # ran the seed comparison
    ):
        _refused(capsys, deep_quality.main, argv, message)
    # what each mode does use still goes through: one loss (triplet unless given), offset 0
    seen = []
    monkeypatch.setattr(deep_quality, "decompose_run", lambda *a, **k: seen.append(a[2]) or [])
    monkeypatch.setattr(deep_quality, "run", lambda n, losses, **k: seen.append(losses) or [])
    monkeypatch.setattr(deep_quality._timing, "machine_line", lambda: "")
    assert deep_quality.main(["--decompose=init", "--seeds=2"]) == 0
    assert deep_quality.main(["--decompose=step", "--losses=contrastive", "--seeds=2"]) == 0
    assert deep_quality.main(["--seeds=2", "--pml-numpy-offset=0"]) == 0
    assert seen == ["triplet", "contrastive", ["triplet", "contrastive"]]


def test_deep_modes_are_exclusive(monkeypatch, capsys):
    """--anatomy --protocol printed the protocol's header over the anatomy table; --products
    silently won over the others; --steps was dropped by --protocol and --products."""
    for work in ("run", "anatomy", "protocol", "processes", "products"):
        monkeypatch.setattr(deep, work, _no_work)
    for argv, message in (
        (["--anatomy", "--protocol"], "--anatomy and --protocol are separate modes"),
        (["--processes=3", "--anatomy"], "--anatomy and --processes are separate modes"),
        (["--products", "--protocol"], "--protocol and --products are separate modes"),
        (["--protocol", "--steps=3"], "--steps does not apply to --protocol"),
        (["--products", "--steps=3"], "--steps does not apply to --products"),
        (["--products", "--cases=contrastive (all pairs)"], "--cases does not apply"),
    ):
        _refused(capsys, deep.main, argv, message)
    # --processes with --steps (each process's loop) and --burn-in is one mode, accepted
    seen = []
    monkeypatch.setattr(deep, "processes", lambda n, **k: seen.append((n, k["steps"])) or [])
    monkeypatch.setattr(deep._timing, "machine_line", lambda: "")
    for name in ("torch", "pytorch_metric_learning"):  # only their versions are printed
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(__version__="x"))
    assert deep.main(["--processes=2", "--steps=6", "--burn-in=3"]) == 0
    assert seen == [(2, 6)]
