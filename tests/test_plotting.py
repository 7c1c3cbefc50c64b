"""Tests of metriclearn.plotting: each figure is built headless, has the expected axes and artists,
saves a PNG, and rejects bad input with a ValueError."""

import math

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from metriclearn import plotting


def _history(n=4, pos0=1.0, neg0=1.0, with_metrics=True):
    rows = []
    for e in range(1, n + 1):
        row = {
            "epoch": e,
            "loss": 1.0 / e,
            "pos_distance": pos0 - 0.1 * e,
            "pos_distance_std": 0.05,
            "neg_distance": neg0 + 0.1 * e,
            "neg_distance_std": 0.05,
        }
        if with_metrics:
            row["map_at_r"] = 0.5 + 0.05 * e if e % 2 == 0 else math.nan
            row["precision_at_1"] = 0.9
        rows.append(row)
    return rows


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_headless_backend_not_pyplot():
    # the module builds Figures directly; importing it must not switch to an interactive backend
    assert matplotlib.get_backend().lower() in ("agg", "module://matplotlib_inline.backend_inline")


def test_distance_curves_two_bands_and_lines(tmp_path):
    path = tmp_path / "curves.png"
    fig = plotting.plot_distance_curves(_history(), path, title="t")
    assert isinstance(fig, Figure) and _is_png(path)
    ax_d = fig.axes[0]
    assert len(ax_d.lines) == 2  # similar and dissimilar means
    assert len(ax_d.collections) == 2  # their bands
    assert ax_d.get_xlabel() == "epoch" and ax_d.get_ylabel()
    np.testing.assert_allclose(ax_d.lines[0].get_ydata(), [0.9, 0.8, 0.7, 0.6])


def test_metric_curves_one_line_per_run_skipping_nan(tmp_path):
    path = tmp_path / "m.png"
    hists = {"all": _history(), "semi-hard": _history(), "batch-hard": _history()}
    fig = plotting.plot_metric_curves(hists, ("loss", "map_at_r"), path)
    assert _is_png(path)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 3
        assert ax.get_legend() is not None and ax.get_xlabel() == "epoch"
    assert fig.axes[1].get_ylabel() == "MAP@R (held-out)"
    # map_at_r is evaluated at even epochs only: NaN epochs are skipped
    np.testing.assert_allclose(fig.axes[1].lines[0].get_xdata(), [2, 4])
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == list(hists)


def test_metric_curves_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_metric_curves({})
    with pytest.raises(ValueError, match="lacks"):
        plotting.plot_metric_curves({"a": _history(with_metrics=False)}, ("map_at_r",))
    with pytest.raises(ValueError, match="keys"):
        plotting.plot_metric_curves({"a": _history()}, ())


def test_embedding_scatter_before_after(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y = np.repeat([0, 1, 2], 10)
    path = tmp_path / "e.png"
    fig = plotting.plot_embedding_before_after(X, X[:, :3] * 2.0, y, path)
    assert _is_png(path)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.collections) == 3  # one scatter per class
        assert ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2"
        offsets = np.concatenate([c.get_offsets() for c in ax.collections])
        assert offsets.shape == (30, 2)
    # the scatter is the PCA projection: its total variance equals that of the top-2 components
    Xc = X - X.mean(0)
    s = np.linalg.svd(Xc, compute_uv=False)
    pts = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    np.testing.assert_allclose((pts**2).sum(), (s[:2] ** 2).sum(), rtol=1e-6)
    # one-dimensional input is padded, not an error
    fig1 = plotting.plot_embedding_2d(X[:, :1], y)
    assert len(fig1.axes) == 1


def test_embedding_bad_input():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_embedding_2d(X, np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        plotting.plot_embedding_2d(np.full((5, 2), np.nan), np.zeros(5))
    with pytest.raises(ValueError, match="same rows|labels"):
        plotting.plot_embedding_before_after(X, np.zeros((4, 2)), np.zeros(5))


def test_mahalanobis_heatmap(tmp_path):
    M = np.array([[2.0, -1.0], [-1.0, 3.0]])
    path = tmp_path / "M.png"
    fig = plotting.plot_mahalanobis_matrix(M, path, feature_names=["a", "b"])
    assert _is_png(path)
    assert len(fig.axes) == 2  # heatmap + colour bar
    img = fig.axes[0].images[0]
    np.testing.assert_allclose(img.get_array(), M)
    assert img.get_clim() == (-3.0, 3.0)  # symmetric colour scale
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="square"):
        plotting.plot_mahalanobis_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        plotting.plot_mahalanobis_matrix(np.full((2, 2), np.inf))
    with pytest.raises(ValueError, match="feature_names"):
        plotting.plot_mahalanobis_matrix(M, feature_names=["a"])
    # a square L (components_) is not M = L^T L: it was drawn as if it were
    L = np.array([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric.*get_mahalanobis_matrix"):
        plotting.plot_mahalanobis_matrix(L)
    # float32 rounding of a symmetric product is not asymmetry
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6)).astype(np.float32)
    M32 = A.T @ A
    M32[0, 1] = np.nextafter(M32[1, 0], np.float32(np.inf))
    plotting.plot_mahalanobis_matrix(M32)


def test_accuracy_bars(tmp_path):
    results = {
        "Euclidean": {"iris": (0.95, 0.02), "wine": (0.96, 0.01)},
        "NCA": {"iris": (0.97, 0.01), "wine": 0.98},
        "SDML": {"iris": math.nan},  # failure: a gap
    }
    path = tmp_path / "bars.png"
    fig = plotting.plot_accuracy_bars(results, path)
    assert _is_png(path)
    (ax,) = fig.axes
    assert len(ax.containers) >= 3
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 6  # 3 learners x 2 data sets
    assert heights[:2] == [0.95, 0.96] and heights[4:] == [0.0, 0.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["iris", "wine"]
    assert ax.get_ylabel() == "3-NN accuracy"
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_accuracy_bars({})


def test_retrieval_examples(tmp_path):
    rng = np.random.default_rng(1)
    refs = rng.random((20, 64))
    ref_y = np.arange(20) % 4
    queries, q_y = refs[:3], ref_y[:3]
    nb = {"before": np.array([[4, 1, 8], [5, 2, 9], [6, 3, 10]]), "after": np.zeros((3, 3), int)}
    path = tmp_path / "r.png"
    fig = plotting.plot_retrieval_examples(queries, q_y, refs, ref_y, nb, path)
    assert _is_png(path)
    assert len(fig.axes) == 2 * 3 * 4  # 2 metrics x 3 queries rows, query + 3 neighbours
    # colour-coded titles: neighbour 4 of query 0 has label 0 == query label -> green; 1 -> red
    assert fig.axes[1].title.get_color() == "tab:green"
    assert fig.axes[2].title.get_color() == "tab:red"
    with pytest.raises(ValueError, match="outside"):
        plotting.plot_retrieval_examples(queries, q_y, refs, ref_y, {"x": np.full((3, 2), 99)})
    with pytest.raises(ValueError, match="image_shape"):
        plotting.plot_retrieval_examples(
            queries[:, :10], q_y, refs[:, :10], ref_y, {"x": nb["before"]}
        )
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_retrieval_examples(queries, q_y, refs, ref_y, {})


def test_audit_edge_cases(tmp_path):
    """Fixes from an audit: plot_distance_curves creates its directory as the others do; the bar
    chart's default range holds bars above 1; more than 20 classes get distinct colours; bad
    inputs raise ValueError instead of KeyError / IndexError / matplotlib's errors."""
    path = tmp_path / "new" / "curves.png"
    plotting.plot_distance_curves(_history(), path)
    assert _is_png(path)
    fig = plotting.plot_accuracy_bars({"a": {"x": 95.0}, "b": {"x": 97.0}})
    lo, hi = fig.axes[0].get_ylim()
    assert lo <= 95.0 <= hi and hi >= 97.0
    rng = np.random.default_rng(0)
    fig = plotting.plot_embedding_2d(rng.normal(size=(50, 2)), np.arange(50) % 25)
    colours = {tuple(c.get_facecolor()[0]) for c in fig.axes[0].collections}
    assert len(colours) == 25
    with pytest.raises(ValueError, match="d >= 1"):
        plotting.plot_mahalanobis_matrix(np.zeros((0, 0)))
    columns = {k: [row[k] for row in _history()] for k in _history()[0]}
    with pytest.raises(ValueError, match="list of per-epoch dicts"):
        plotting.plot_distance_curves(columns)
    fig = plotting.plot_metric_curves({"a": _history()}, keys="loss")  # a name, not its letters
    assert len(fig.axes) == 1
    refs, ref_y = rng.random((6, 4)), np.arange(6) % 2
    for nb in (np.array([[np.nan]]), np.array([[1.7]])):
        with pytest.raises(ValueError, match="integer indices"):
            plotting.plot_retrieval_examples(refs[:1], ref_y[:1], refs, ref_y, {"m": nb})
    with pytest.raises(ValueError, match="at least one image"):
        plotting.plot_retrieval_examples(
            refs[:0], ref_y[:0], refs, ref_y, {"m": np.zeros((0, 1), int)}
        )


def test_negative_bars_and_row_mismatch_message():
    # the default y-range started at 0 and hid negative scores
    fig = plotting.plot_accuracy_bars({"a": {"x": -0.5, "y": 0.5}})
    assert fig.axes[0].get_ylim()[0] < -0.5
    # the row check came after the labels check, so its message could never show
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ValueError, match="X_before and X_after must have the same rows"):
        plotting.plot_embedding_before_after(X, X[:20], np.arange(30) % 3)


def test_nan_std_nan_labels_and_wrong_types():
    """A NaN std put NaN into the axis limits (the bar below the axis, or a raw ValueError from
    math.floor); NaN labels were dropped from the scatter but kept in the legend; lists instead of
    mappings were AttributeErrors."""
    fig = plotting.plot_accuracy_bars({"LMNN": {"wine": 0.95, "iris": (0.80, math.nan)}})
    assert fig.axes[0].get_ylim()[0] <= 0.75
    plotting.plot_accuracy_bars({"LMNN": {"iris": (0.9, math.nan), "wine": 0.95}})
    X = np.random.default_rng(0).random((4, 3))
    with pytest.raises(ValueError, match="y contains NaN"):
        plotting.plot_embedding_2d(X, np.array([0.0, np.nan, 1.0, np.nan]))
    with pytest.raises(ValueError, match="y mixes numbers and strings"):
        plotting.plot_embedding_2d(X, [0, "a", 1, "a"])
    with pytest.raises(ValueError, match="histories must be a mapping"):
        plotting.plot_metric_curves([[{"epoch": 1, "loss": 1.0}]], keys=("loss",))
    with pytest.raises(ValueError, match="results must be a mapping"):
        plotting.plot_accuracy_bars([0.9])


def test_before_after_titles_must_be_a_pair():
    # titles=("a",) was an IndexError; a string of two characters was two one-letter titles
    X, y = np.random.default_rng(0).random((6, 3)), np.arange(6) % 2
    for bad in (("a",), ("a", "b", "c"), "ab", ("a", 1)):
        with pytest.raises(ValueError, match="titles must be a pair"):
            plotting.plot_embedding_before_after(X, X[:, :2], y, titles=bad)
    fig = plotting.plot_embedding_before_after(X, X[:, :2], y, titles=["in", None])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["in", ""]


def test_save_refuses_empty_and_directory_paths(tmp_path, monkeypatch):
    # "" wrote ./.png; an existing directory wrote <dir>.png beside it; "dir/" wrote dir/.png
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    for path in ("", tmp_path / "out", str(tmp_path / "new") + "/"):
        with pytest.raises(ValueError, match="path must name the PNG file"):
            plotting.plot_distance_curves(_history(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    plotting.plot_distance_curves(_history(), tmp_path / "out" / "c.png")
    assert _is_png(tmp_path / "out" / "c.png")


@pytest.mark.parametrize(
    "cell, message",
    [
        (math.inf, "infinite mean inf"),  # drew empty axes
        (-math.inf, "infinite mean -inf"),  # drawn as a gap like a NaN failure
        ((0.9,), r"must be a mean or a \(mean, std\) pair"),  # IndexError
        ((0.5, None), "std must be a real number"),  # TypeError
        (np.array([0.9, 0.1]), r"must be a mean or a \(mean, std\) pair"),  # TypeError
        ((0.5, -0.1), "std must be finite and >= 0"),
    ],
)
def test_accuracy_bars_refuse_bad_cells_naming_them(cell, message):
    with pytest.raises(ValueError, match=r"results\['a'\]\['iris'\] .*" + message):
        plotting.plot_accuracy_bars({"a": {"iris": cell, "wine": 0.9}})


def test_accuracy_bars_still_take_nan_none_and_nan_std():
    fig = plotting.plot_accuracy_bars(
        {"a": {"iris": (0.9, math.nan), "wine": None}, "b": {"iris": np.float32(0.8)}}
    )
    bars = [c for c in fig.axes[0].containers if hasattr(c, "patches")]
    heights = [p.get_height() for c in bars for p in c.patches]
    assert heights == pytest.approx([0.9, 0.0, 0.8, 0.0])


def test_retrieval_examples_refuse_bad_neighbors_shape_and_label_kinds():
    rng = np.random.RandomState(0)
    Q, R, rl = rng.rand(2, 64), rng.rand(10, 64), np.arange(10) % 2
    idx = np.array([[0, 1], [2, 3]])
    for nb in (idx, [idx]):  # "truth value of an array" / "'list' object has no attribute"
        with pytest.raises(ValueError, match="neighbors must be a mapping"):
            plotting.plot_retrieval_examples(Q, [0, 1], R, rl, nb)
    for shape in ((-8, -8), (8, 8.0)):  # reshape's "can only specify one unknown dimension"
        with pytest.raises(ValueError, match=r"image_shape\[[01]\] \([hw]\) must be an integer"):
            plotting.plot_retrieval_examples(Q, [0, 1], R, rl, {"E": idx}, image_shape=shape)
    for shape in ((8,), "88"):  # "not enough values to unpack"
        with pytest.raises(ValueError, match=r"image_shape must be a pair \(h, w\)"):
            plotting.plot_retrieval_examples(Q, [0, 1], R, rl, {"E": idx}, image_shape=shape)
    # "0" never equals 0: every neighbour was framed red without a word
    with pytest.raises(ValueError, match="query_labels holds strings .* ref_labels holds numbers"):
        plotting.plot_retrieval_examples(Q, ["0", "1"], R, rl, {"E": idx})
    fig = plotting.plot_retrieval_examples(Q, [0, 1], R, rl, {"E": idx}, image_shape=[4, 16])
    assert fig.axes[1].get_title() == "0" and fig.axes[1].title.get_color() == "tab:green"


def test_mahalanobis_matrix_huge_and_complex(tmp_path):
    # vmax - vmin overflowed: matplotlib's "Axis limits cannot be NaN or Inf"
    fig = plotting.plot_mahalanobis_matrix(
        np.array([[1e308, -1e308], [-1e308, 1e308]]), tmp_path / "m.png"
    )
    assert _is_png(tmp_path / "m.png")
    assert fig.axes[1].get_ylabel() == "M[i, j] / 1e308"
    assert fig.axes[0].images[0].get_array().max() == pytest.approx(1.0)
    fig = plotting.plot_mahalanobis_matrix(np.eye(2) * 3e-120)
    assert fig.axes[1].get_ylabel() == "M[i, j] × 1e120"
    assert fig.axes[0].images[0].norm.vmax == pytest.approx(3.0)
    assert plotting.plot_mahalanobis_matrix(np.eye(2)).axes[1].get_ylabel() == "M[i, j]"
    with pytest.raises(ValueError, match="M must be real, got complex"):  # a ComplexWarning only
        plotting.plot_mahalanobis_matrix(np.eye(3) * (1 + 1j))


def test_accuracy_bars_keep_their_zoom_for_accuracies_near_one():
    """A bar top above 1/1.02 (0.99) set the top to 1.0098 and the bottom to 0: the zoom from just
    below the lowest bar to 1 was lost exactly for the best accuracies."""
    for top in (0.97, 0.99, 1.0):
        fig = plotting.plot_accuracy_bars({"NCA": {"iris": 0.93, "wine": top}})
        assert fig.axes[0].get_ylim() == pytest.approx((0.85, 1.0)), top
    # an error bar past 1 stays visible, and the zoom is kept for means up to 1
    lo, hi = plotting.plot_accuracy_bars({"a": {"x": (0.98, 0.03)}}).axes[0].get_ylim()
    assert lo == pytest.approx(0.9) and 1.01 < hi < 1.05
    lo, hi = plotting.plot_accuracy_bars({"a": {"x": 93.0}}).axes[0].get_ylim()  # percentages
    assert lo == 0.0 and hi == pytest.approx(93.0 * 1.02)


def test_save_writes_at_path_in_the_format_of_its_extension(tmp_path):
    """A path without an extension wrote <path>.png (nothing at path); .txt failed in matplotlib
    only after its directory had been created; the docs said PNG for every path."""
    for bad, message in (("curves", "has no file extension"), ("curves.txt", "cannot write")):
        with pytest.raises(ValueError, match=message):
            plotting.plot_distance_curves(_history(), tmp_path / "new" / bad)
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the directory
    plotting.plot_distance_curves(_history(), tmp_path / "a" / "b" / "c.pdf")
    assert (tmp_path / "a" / "b" / "c.pdf").read_bytes()[:5] == b"%PDF-"
    plotting.plot_distance_curves(_history(), tmp_path / "c.PNG")
    assert _is_png(tmp_path / "c.PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.PNG"]


@pytest.mark.parametrize("dpi", [math.nan, math.inf, 0, -10, "120", True, None, [120]])
def test_save_refuses_bad_dpi_naming_it(tmp_path, dpi):
    # nan: "cannot convert float NaN to integer"; "120": TypeError; True: a FreeType RuntimeError
    with pytest.raises(ValueError, match="dpi must be a finite number > 0"):
        plotting.plot_distance_curves(_history(), tmp_path / "c.png", dpi=dpi)
    assert not (tmp_path / "c.png").exists()
    plotting.plot_distance_curves(_history(), tmp_path / "c.png", dpi=np.float32(50.0))
    assert _is_png(tmp_path / "c.png")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_retrieval_examples_refuse_nan_and_inf_images(bad):
    # they were drawn as blank tiles, silently
    rng = np.random.default_rng(0)
    q, r = rng.random((2, 16)), rng.random((5, 16))
    labels, ref_labels, nb = [0, 1], np.arange(5) % 2, {"m": [[0, 1], [2, 3]]}
    q_bad, r_bad = q.copy(), r.copy()
    q_bad[1, 3] = bad
    r_bad[4, 0] = -bad
    with pytest.raises(ValueError, match="query_images contains NaN or inf"):
        plotting.plot_retrieval_examples(q_bad, labels, r, ref_labels, nb)
    with pytest.raises(ValueError, match="ref_images contains NaN or inf"):
        plotting.plot_retrieval_examples(q, labels, r_bad, ref_labels, nb)


def test_embedding_2d_tiny_and_huge_data_are_drawn_scaled():
    """Embeddings of spread below ~1e-285 were all drawn on one point (matplotlib's autoscale)."""
    X = np.random.default_rng(0).normal(size=(20, 5))
    y = np.arange(20) % 3
    ref = plotting.plot_embedding_2d(X, y).axes[0]
    for scale, label in ((1e-290, "PC 1 (× 1e290)"), (1e300, "PC 1 (/ 1e300)")):
        ax = plotting.plot_embedding_2d(X * scale, y).axes[0]
        assert ax.get_xlabel() == label
        np.testing.assert_allclose(ax.get_xlim(), ref.get_xlim(), rtol=1e-6)
    assert ref.get_xlabel() == "PC 1"
