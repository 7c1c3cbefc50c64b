"""experiments.deep: a tiny end-to-end run writes every output; bad names exit non-zero."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app, flags

from experiments import deep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--dataset=synthetic",
    '--dataset_kwargs={"n_samples": 120, "n_features": 6, "n_classes": 4, "class_sep": 1.0}',
    "--test_size=0.25",
    "--hidden=16",
    "--embedding_dim=4",
    "--batch_size=16",
    "--m_per_class=4",
    "--epochs=3",
    "--eval_every=2",
    "--checkpoint_every=1",
    "--noprogress",
]


def _parse(args) -> flags.FlagValues:
    """Parse ``args`` into a fresh FlagValues (isolated from other entry points' flags)."""
    fv = deep.define_flags(flags.FlagValues())
    fv(["deep", *args])
    return fv


def test_smoke_run_writes_all_files(tmp_path, capsys):
    workdir = tmp_path / "run"
    fv = _parse(
        [
            *TINY,
            f"--workdir={workdir}",
            "--loss=triplet_margin",
            "--miner=semihard",
            '--miner_kwargs={"margin": 0.2}',
        ]
    )
    deep.run(fv)
    for name in ("config.json", "metrics.json", "history.csv", "distance_curves.png"):
        assert (workdir / name).stat().st_size > 0, name
    assert (workdir / "checkpoints").is_dir()
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in (
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "nmi",
        "steady_ms_per_step",
        "compile_seconds",
    ):
        assert isinstance(metrics[key], float) and metrics[key] >= 0, key
    assert metrics["steps"] == 3 * (90 // 16)
    config = json.loads((workdir / "config.json").read_text())
    assert config["loss"] == "triplet_margin" and config["miner"] == "semihard"
    assert config["hidden"] == [16]
    with open(workdir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for col in ("loss", "pos_distance", "neg_distance", "map_at_r", "precision_at_1", "nmi"):
        assert col in rows[0]
    assert rows[0]["map_at_r"] == "" and rows[1]["map_at_r"] != ""
    assert float(rows[2]["map_at_r"]) == pytest.approx(metrics["map_at_r"])
    assert (workdir / "distance_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "map_at_r=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag,value,valid",
    [
        ("loss", "tripletz", "contrastive"),
        ("miner", "hardest", "semihard"),
        ("dataset", "cifar10", "digits"),
        ("model", "vit", "mlp"),
        ("optimizer", "lamb", "adam"),
    ],
)
def test_unknown_names_are_usage_errors(tmp_path, flag, value, valid):
    fv = _parse([f"--{flag}={value}", f"--workdir={tmp_path}"])
    with pytest.raises(app.UsageError, match=rf"--{flag}='{value}'.*valid: .*{valid}"):
        deep.run(fv)
    assert not os.listdir(tmp_path)


def test_bad_combination_and_missing_workdir(tmp_path):
    fv = _parse(["--loss=proxy_anchor", "--miner=semihard", f"--workdir={tmp_path}"])
    with pytest.raises(app.UsageError, match="does not take a miner"):
        deep.run(fv)
    fv = _parse(["--loss_kwargs=[1]", f"--workdir={tmp_path}"])
    with pytest.raises(app.UsageError, match="JSON object"):
        deep.run(fv)
    fv = _parse([])
    with pytest.raises(app.UsageError, match="--workdir is required"):
        deep.run(fv)
    for seed in ("-1", str(2**32)):  # JAX keeps 32 bits of a seed: refused before any data load
        fv = _parse([f"--seed={seed}", f"--workdir={tmp_path / 'seed'}"])
        with pytest.raises(app.UsageError, match=r"seed must be .* in \[0, 2\*\*32\)"):
            deep.run(fv)
        assert not (tmp_path / "seed").exists()


def test_unknown_loss_exits_non_zero_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.deep", "--loss=nope", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode != 0
    assert "--loss='nope'" in proc.stderr and "triplet_margin" in proc.stderr


def test_benchmark_quick_mode_metriclearn_side():
    from benchmarks import deep as bench

    rows = bench.run(steps=2, quick=True, cases=["contrastive (all pairs)"])
    assert len(rows) == 1 and rows[0][0] == "contrastive (all pairs)"
    ms_per_step, compile_s = rows[0][1], rows[0][2]
    assert 0 < ms_per_step < 5000 and compile_s > 0


def test_benchmark_anatomy_splits_the_step():
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from benchmarks import deep as bench

    (row,) = bench.anatomy(steps=3, cases=["contrastive (all pairs)"])
    assert len(row) == len(bench.ANATOMY_HEADER) and row[0] == "contrastive (all pairs)"
    ours, ours_free, ours_loss, pml, pml_free, pml_loss, speedup, bound, bare, bare_bound = row[1:]
    assert min(ours, ours_free, pml, pml_free, bare) > 0 and bare_bound == pytest.approx(pml / bare)
    assert ours_loss == pytest.approx(ours - ours_free) and pml_loss == pytest.approx(
        pml - pml_free
    )
    assert speedup == pytest.approx(pml / ours) and bound == pytest.approx(pml / ours_free)
    with pytest.raises(SystemExit):
        bench.main(["--anatomy", "--quick"])


def test_benchmark_products_are_the_mlp_steps_products():
    pytest.importorskip("torch")
    from benchmarks import deep as bench

    specs = bench.mlp_products()
    # three forward products, three weight gradients, input gradients of layers 2 and 3: their
    # multiply-adds are those of one forward and backward pass of the 64-256-256-64 MLP at batch 128
    assert len(specs) == 8 and sum(lay == "tn" for *_, lay in specs) == 3
    forward = 128 * (64 * 256 + 256 * 256 + 256 * 64)
    assert sum(m * k * n for _, m, k, n, _ in specs) == 2 * forward + 128 * (256 * 256 + 256 * 64)
    for _, m, k, n, lay in specs:
        assert bench._xla_product(m, k, n, lay, reps=2)().shape == (m, n)
        assert tuple(bench._torch_product(m, k, n, lay, reps=1, threads=1)().shape) == (m, n)
    rows = bench.products(reps=2, rounds=1)
    assert len(rows) == 9 and rows[-1][0] == "all eight"
    # XLA on 2 cores and on 1 (a pinned child process, where the OS can pin), torch 2 and 1 threads
    for col in (2, 3, 4, 5) if hasattr(os, "sched_setaffinity") else (2, 4, 5):
        assert all(r[col] > 0 for r in rows[:-1])
        assert rows[-1][col] == pytest.approx(sum(r[col] for r in rows[:-1]))
    assert rows[-1][6] == pytest.approx(rows[-1][2] / rows[-1][4])
    with pytest.raises(SystemExit):
        bench.main(["--products", "--quick"])


def test_benchmark_protocol_times_whole_runs_of_both_libraries():
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from benchmarks import deep as bench

    (row,) = bench.protocol(epochs=1, repeats=1, cases=["contrastive (all pairs)"])
    assert len(row) == len(bench.PROTOCOL_HEADER) and row[0] == "contrastive (all pairs)"
    pml_ms, ours_ms, first_s, speedup = row[1:]
    assert pml_ms > 0 and ours_ms > 0 and speedup == pytest.approx(pml_ms / ours_ms)
    assert first_s > 1e-3 * ours_ms  # the first fit's run includes its steps (and the compile)
    # PML's loop trains: its network moves away from its initial weights (same seed)
    import torch

    X, y, _, _, _ = bench.training.load_split("digits")
    trained = bench.pml_train("contrastive", 0, X, y, epochs=1)
    torch.manual_seed(0)
    initial = bench.pml_mlp(X.shape[1])
    assert not torch.equal(trained[0].weight, initial[0].weight)
    with pytest.raises(SystemExit):
        bench.main(["--protocol", "--quick"])


def test_benchmark_fresh_processes_protocol(monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from benchmarks import deep as bench

    case = "contrastive (all pairs)"
    # the child's side: one JSON line {case: [PML ms/step, our ms/step]}
    assert bench.main(["--loop-json", "--steps", "3", "--cases", case]) == 0
    child_line = capsys.readouterr().out.strip().splitlines()[-1]
    (pml_ms, ours_ms) = json.loads(child_line)[case]
    assert pml_ms > 0 and ours_ms > 0

    # the parent's side: N children, each one draw; medians, extremes and the count at >= 3x
    draws = iter([[3.0, 1.5], [9.0, 1.0], [4.0, 1.0]])  # speed-ups 2, 9, 4
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = json.dumps({case: next(draws)})
        return subprocess.CompletedProcess(cmd, 0, stdout=f"noise\n{out}\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    log = []
    (row,) = bench.processes(3, steps=3, cases=[case], log=log.append)
    assert len(calls) == 3 and "--loop-json" in calls[0] and case in calls[0]
    assert row == [case, 4.0, 1.0, 4.0, 2.0, 9.0, "2/3"] and len(log) == 3

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="boom")

    monkeypatch.setattr(bench.subprocess, "run", failing_run)
    with pytest.raises(RuntimeError, match="process 0 failed:\n.*boom"):
        bench.processes(1, steps=3, cases=[case])
    with pytest.raises(ValueError, match="n must be at least 1"):
        bench.processes(0)
    with pytest.raises(ValueError, match="no process results"):
        bench.summarize_processes([])
    for bad in (["--processes", "-1"], ["--quick", "--processes", "2"], ["--cases", "nope"]):
        with pytest.raises(SystemExit):
            bench.main(bad)


def test_benchmark_burn_in_trains_both_networks_before_timing(monkeypatch):
    """``--burn-in N``: both libraries train N steps (on batches of their own) before the timed
    blocks, so a later stage of training is timed; the children of ``--processes`` get the flag."""
    from benchmarks import deep as bench

    case = "multi_similarity + ms miner"
    counts = {"pml": 0, "ours": 0}

    def fake_pml(case_, X, y, idx, **kw):
        assert len(idx) == 8 + 20  # the timed batches and the burn-in's

        def run():
            counts["pml"] += 1
            return 0.0

        return run

    def fake_epoch(case_, X, y, idx, **kw):
        def run():
            counts["ours"] += 1
            return np.zeros(())

        return run

    monkeypatch.setattr(bench, "pml_stepper", fake_pml)
    monkeypatch.setattr(bench, "metriclearn_epoch", fake_epoch)
    monkeypatch.setattr(bench, "_loop_ms", lambda *a: (counts["pml"], counts["ours"]))
    out = bench.training_loop(steps=3, cases=[case], burn_in=20)
    epoch_steps = len(bench.training.load_split("digits")[1]) // bench.BATCH_SIZE
    # PML: 20 steps; ours: the compiling call, then whole epochs covering at least 20 steps
    assert out[case] == [20, 1 + -(-20 // epoch_steps)]
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        bench.training_loop(steps=3, cases=[case], burn_in=-1)

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({case: [4.0, 1.0]}), stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    bench.processes(1, steps=3, cases=[case], log=lambda _: None, burn_in=7)
    assert calls[0][calls[0].index("--burn-in") + 1] == "7"
    for bad in (["--burn-in", "5"], ["--processes", "2", "--burn-in", "-1"]):
        with pytest.raises(SystemExit):
            bench.main(bad)


def test_run_refused_by_fit_leaves_the_config_as_it_was(tmp_path):
    """--epochs=0 is refused by fit, after config.json used to be written: a config of a run that
    never ran was left behind (or replaced the previous run's)."""
    fresh = tmp_path / "fresh"
    with pytest.raises(app.UsageError, match="epochs"):
        deep.run(_parse([*TINY, "--epochs=0", f"--workdir={fresh}"]))
    assert not fresh.exists()  # neither a config nor an empty workdir
    workdir = tmp_path / "run"
    deep.run(_parse([*TINY, "--epochs=1", f"--workdir={workdir}"]))
    before = (workdir / "config.json").read_text()
    with pytest.raises(app.UsageError, match="epochs"):
        deep.run(_parse([*TINY, "--epochs=0", f"--workdir={workdir}"]))
    assert (workdir / "config.json").read_text() == before


def test_resume_under_other_settings_is_refused(tmp_path):
    """A second run in a workdir with checkpoints resumed whatever its settings: --seed=1 returned
    the seed-0 run's results, untrained. Only epochs, eval_every, checkpoint_every, progress and
    devices may change on resume."""
    workdir = tmp_path / "run"
    deep.run(_parse([*TINY, "--epochs=1", f"--workdir={workdir}"]))
    before = (workdir / "config.json").read_text()
    with pytest.raises(app.UsageError, match=r"other settings \(seed: 0 -> 1\)"):
        deep.run(_parse([*TINY, "--epochs=1", "--seed=1", f"--workdir={workdir}"]))
    assert (workdir / "config.json").read_text() == before  # left as it was
    metrics = deep.run(_parse([*TINY, "--epochs=2", f"--workdir={workdir}"]))  # longer: fine
    assert json.loads((workdir / "metrics.json").read_text())["steps"] == metrics["steps"]
    # a run without checkpoints in between rewrote config.json, and seed 1 then resumed seed 0's
    # checkpoints as its own: the checkpoints' settings have their own record
    deep.run(
        _parse([*TINY, "--epochs=1", "--seed=1", "--checkpoint_every=0", f"--workdir={workdir}"])
    )
    assert json.loads((workdir / "config.json").read_text())["seed"] == 1
    with pytest.raises(app.UsageError, match=r"other settings \(seed: 0 -> 1\)"):
        deep.run(_parse([*TINY, "--epochs=3", "--seed=1", f"--workdir={workdir}"]))
    (workdir / "checkpoint_config.json").unlink()
    (workdir / "config.json").unlink()
    with pytest.raises(app.UsageError, match="no record of the settings"):
        deep.run(_parse([*TINY, "--epochs=3", f"--workdir={workdir}"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(app.UsageError, match="--workdir=.*cannot be created as a directory"):
        deep.run(_parse([*TINY, f"--workdir={tmp_path / 'file'}"]))


def test_output_dir_writability_is_tried_not_asked(tmp_path):
    """As root, os.access says /proc is writable, so --workdir=/proc/x passed the check and ended in
    a traceback from makedirs. The check now creates (and removes) a probe directory."""
    from experiments import check_output_dir

    check_output_dir(str(tmp_path / "new" / "run"), "--workdir")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    if os.path.isdir("/proc/self"):
        with pytest.raises(app.UsageError, match="--workdir=.*is not writable"):
            check_output_dir("/proc/metriclearn-run", "--workdir")
