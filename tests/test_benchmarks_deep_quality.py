"""benchmarks/deep_quality.py: argument checks, and a two-seed run when torch and PML are installed."""

import numpy as np
import pytest

from benchmarks import deep_quality


def test_argument_errors():
    with pytest.raises(SystemExit):
        deep_quality.main(["--losses", "nope"])
    with pytest.raises(SystemExit):
        deep_quality.main(["--seeds", "1"])
    with pytest.raises(SystemExit):
        deep_quality.main(["--dataset", "mnist"])
    with pytest.raises(SystemExit):
        deep_quality.main(["--first-seed", "-1"])


def test_two_seeds_both_libraries(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    monkeypatch.setattr(deep_quality, "EPOCHS", 2)  # the protocol's loop, shortened
    lines = []
    rows = deep_quality.run(
        2, ["contrastive"], log=lines.append, first_seed=5, pml_numpy_offsets=(0, 1000)
    )
    assert [line.split(":")[0] for line in lines] == [
        "  contrastive seed 5",
        "  contrastive seed 6",
    ]
    assert all("PML " in line and "PML (sampler seed + 1000) " in line for line in lines)
    header = deep_quality.run_header((0, 1000))
    assert [r[:2] for r in rows] == [["contrastive", "P@1"], ["contrastive", "MAP@R"]]
    assert all(len(row) == len(header) == 11 for row in rows)
    for row in rows:
        means = []
        for cell in (row[2], row[3], row[6]):  # "mean ± std" in [0, 1]: ours, PML, PML uncoupled
            mean, std = (float(v) for v in cell.split(" ± "))
            assert 0.0 < mean <= 1.0 and std >= 0.0
            means.append(mean)
        for p in (row[5], row[8], row[10]):  # Welch p twice, then the paired p
            assert 0.0 <= float(p) <= 1.0
        # the differences are ours minus each PML column, and the uncoupled minus the coupled run
        assert float(row[4]) == pytest.approx(means[0] - means[1], abs=2e-4)
        assert float(row[7]) == pytest.approx(means[0] - means[2], abs=2e-4)
        assert float(row[9].split(" ± ")[0]) == pytest.approx(means[2] - means[1], abs=2e-4)
    # two epochs already separate the classes far beyond chance (0.1)
    assert float(rows[0][2].split(" ± ")[0]) > 0.5 and np.isfinite(float(rows[1][4]))
    assert deep_quality.run_header() == [
        "loss", "metric", "metriclearn", "pytorch-metric-learning", "difference", "Welch p"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="non-negative"):
        deep_quality.run(2, ["contrastive"], pml_numpy_offsets=(-1,))


def test_trajectory_compares_our_gradient_on_every_pml_step(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from metriclearn import training

    monkeypatch.setattr(deep_quality, "EPOCHS", 1)
    X, y, X_test, y_test, _ = training.load_split("digits")
    row = deep_quality.trajectory("triplet", 0, (X, y, X_test, y_test))
    assert len(row) == len(deep_quality.TRAJECTORY_HEADER) and row[0] == "triplet"
    steps, loss_gap, median_gap, max_gap, n_above = row[1:]
    assert steps == len(y) // 128  # one epoch of PML's sampler
    # the same loss and gradient up to float32 rounding (a few boundary triplets at most)
    assert loss_gap < 1e-4 and median_gap < 1e-4 and max_gap < 0.05 and n_above <= steps // 2

    # a different margin on our side is caught at once: the loss's margin shifts every mined
    # triplet's loss (not its gradient); a narrower semihard band drops triplets (and changes the
    # gradient; a wider one would only add triplets with zero loss)
    original = dict(deep_quality.LOSSES["triplet"])
    for changed, gap_column in (
        ({"loss_kwargs": {"margin": 0.3}}, 2),
        ({"miner_kwargs": {"margin": 0.1}}, 4),
    ):
        monkeypatch.setitem(deep_quality.LOSSES, "triplet", {**original, **changed})
        assert deep_quality.trajectory("triplet", 0, (X, y, X_test, y_test))[gap_column] > 1e-2


@pytest.mark.slow  # 15 s; three PML-parity steps stay in the default run (test_training)
def test_decompose_swaps_one_part_and_keeps_the_rest(monkeypatch):
    """Same initial weights and batches: our step ends where PML's does (one epoch on digits);
    our init or our sampler change the run; the CLI rejects unknown parts."""
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from metriclearn import training

    monkeypatch.setattr(deep_quality, "EPOCHS", 1)
    X, y, X_test, y_test, _ = training.load_split("digits")
    split = (X, y, X_test, y_test)
    ref, step = deep_quality.decompose("step", "triplet", 0, split)
    assert abs(step[0] - ref[0]) < 2e-3 and abs(step[1] - ref[1]) < 1e-3, (ref, step)
    # a different loss on our side only (margin 1.0 instead of PML's 0.2) shows up at once
    wrong = {**deep_quality.LOSSES["triplet"], "loss_kwargs": {"margin": 1.0}}
    monkeypatch.setitem(deep_quality.LOSSES, "triplet", {**wrong, "miner_kwargs": {"margin": 1.0}})
    assert abs(deep_quality.decompose("step", "triplet", 0, split)[1][1] - ref[1]) > 0.02
    monkeypatch.undo()
    monkeypatch.setattr(deep_quality, "EPOCHS", 1)
    for part in ("init", "sampler"):
        ref2, variant = deep_quality.decompose(part, "triplet", 0, split)
        assert ref2 == ref  # PML's own run is reproduced exactly
        assert variant != ref, part
    with pytest.raises(ValueError, match="unknown part"):
        deep_quality.decompose("optimizer", "triplet", 0, split)
    with pytest.raises(SystemExit):
        deep_quality.main(["--decompose", "optimizer"])
    rows = deep_quality.decompose_run("step", 2, dataset="digits", log=lambda _: None)
    assert [r[:2] for r in rows] == [["step", "P@1"], ["step", "MAP@R"]]


def test_pml_protocol_couples_initial_weights_and_batches_unless_uncoupled():
    """PyTorch's CPU generator and NumPy's legacy one are both MT19937: one integer seed gives both the
    same raw words, so PML's protocol (``torch.manual_seed(s)``, ``np.random.seed(s)``) draws its
    initial weights and its batches from one stream. ``numpy_seed`` uncouples the batches only."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from benchmarks import deep
    from metriclearn import training

    for seed in (0, 7):
        torch.manual_seed(seed)
        words = torch.empty(6, dtype=torch.int32).random_().numpy()  # 31 of each word's 32 bits
        raw = np.random.RandomState(seed).randint(0, 2**32, size=6, dtype=np.uint64)
        np.testing.assert_array_equal(words, raw % 2**31)
    X, y, _, _, _ = training.load_split("digits")
    runs = {}
    for name, numpy_seed in (("default", None), ("same", 3), ("uncoupled", 4)):
        record = []
        net = deep.pml_train("contrastive", 3, X, y, epochs=1, record=record, numpy_seed=numpy_seed)
        runs[name] = (record[0], net)
    # numpy_seed equal to the seed is the protocol itself: same batches, same trained weights
    np.testing.assert_array_equal(runs["default"][0], runs["same"][0])
    assert torch.equal(runs["default"][1][0].weight, runs["same"][1][0].weight)
    assert not np.array_equal(runs["default"][0], runs["uncoupled"][0])
    assert not torch.equal(runs["default"][1][0].weight, runs["uncoupled"][1][0].weight)
    for bad in ("x", "-1", "0,-3", "0,0", ","):
        with pytest.raises(SystemExit):
            deep_quality.main(["--pml-numpy-offset", bad])
