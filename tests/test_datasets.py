"""Tests of metriclearn.datasets: shipped/generated sets, IDX and npz loaders, split, standardize."""

import gzip
import random
import struct

import jax
import numpy as np
import pytest
import sklearn.datasets as skd
from sklearn.preprocessing import StandardScaler

from metriclearn import datasets

# ---------------------------------------------------------------------------------------------- load


@pytest.mark.parametrize(
    "name,loader,shape",
    [
        ("iris", skd.load_iris, (4,)),
        ("wine", skd.load_wine, (13,)),
        ("breast_cancer", skd.load_breast_cancer, (30,)),
        ("digits", skd.load_digits, (8, 8)),
    ],
)
def test_sklearn_sets_match_sklearn(name, loader, shape):
    ds = datasets.load(name)
    ref = loader()
    assert ds.X.dtype == np.float32 and ds.X.ndim == 2
    assert np.issubdtype(ds.y.dtype, np.integer) and ds.y.shape == (ds.X.shape[0],)
    np.testing.assert_allclose(ds.X, ref.data, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, ref.target)
    assert ds.feature_shape == shape and int(np.prod(shape)) == ds.X.shape[1]
    assert ds.name == name and name in ds.description
    assert ds.X_test is None and ds.y_test is None
    # cached and read-only, so the cache cannot be corrupted
    assert datasets.load(name).X is ds.X
    with pytest.raises(ValueError):
        ds.X[0, 0] = 1.0


def test_registry_and_unknown_name():
    assert set(datasets.DATASETS) == {
        "iris",
        "wine",
        "breast_cancer",
        "digits",
        "mnist1d",
        "synthetic",
    }
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*breast_cancer.*mnist1d"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="takes no options"):
        datasets.load("iris", seed=1)


def test_mnist1d_small_matches_package_and_keeps_global_rng():
    import mnist1d.data

    # the legacy global generators are what mnist1d re-seeds: check they are left untouched
    legacy = np.random  # noqa: NPY002
    random.seed(123)
    legacy.seed(123)  # noqa: NPY002
    before = (random.random(), legacy.rand())  # noqa: NPY002
    random.seed(123)
    legacy.seed(123)  # noqa: NPY002
    ds = datasets.load("mnist1d", num_samples=200, seed=3)
    after = (random.random(), legacy.rand())  # noqa: NPY002
    assert before == after  # make_dataset re-seeds the globals; load restores them

    assert ds.X.shape == (160, 40) and ds.X_test.shape == (40, 40)
    assert ds.X.dtype == np.float32 and ds.y.shape == (160,) and ds.y_test.shape == (40,)
    assert ds.feature_shape == (40,) and set(np.unique(ds.y)) <= set(range(10))
    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.seed = 200, 3
    ref = mnist1d.data.make_dataset(args)
    np.testing.assert_allclose(ds.X, ref["x"], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    assert datasets.load("mnist1d", seed=3, num_samples=200) is ds  # in-memory cache
    other = datasets.load("mnist1d", num_samples=200, seed=4)
    assert not np.allclose(other.X, ds.X)


def test_mnist1d_bad_options():
    with pytest.raises(ValueError, match="unknown mnist1d option.*url"):
        datasets.load("mnist1d", url="http://example.com")
    with pytest.raises(ValueError, match="num_samples"):
        datasets.load("mnist1d", num_samples=0)


def test_gaussian_classes():
    ds = datasets.load("synthetic", seed=1, n_samples=101, n_features=7, n_classes=4, class_sep=8.0)
    assert ds.X.shape == (101, 7) and ds.X.dtype == np.float32 and ds.feature_shape == (7,)
    counts = np.bincount(ds.y)
    assert counts.tolist() == [26, 25, 25, 25]
    # same key, same data; jax keys accepted; different key differs
    again = datasets.gaussian_classes(1, n_samples=101, n_features=7, n_classes=4, class_sep=8.0)
    np.testing.assert_array_equal(again.X, ds.X)
    k1 = datasets.gaussian_classes(jax.random.key(7), n_samples=20)
    np.testing.assert_array_equal(
        datasets.gaussian_classes(jax.random.key(7), n_samples=20).X, k1.X
    )
    assert not np.array_equal(datasets.gaussian_classes(jax.random.key(8), n_samples=20).X, k1.X)
    assert not np.allclose(datasets.synthetic(2, n_samples=101, n_features=7).X[:, :2], ds.X[:, :2])
    # well separated: class means far apart relative to the unit noise
    means = np.stack([ds.X[ds.y == c].mean(0) for c in range(4)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(4, 1)]
    assert gaps.min() > 3.0
    within = np.mean([ds.X[ds.y == c].std(0).mean() for c in range(4)])
    assert 0.6 < within < 1.4


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_samples": 3, "n_classes": 4}, "n_classes"),
        ({"n_features": 0}, "n_features"),
        ({"class_sep": -1.0}, "class_sep"),
        ({"scale": float("nan")}, "scale"),
    ],
)
def test_gaussian_classes_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        datasets.gaussian_classes(0, **kw)
    with pytest.raises(ValueError, match="key"):
        datasets.gaussian_classes("abc")
    # int seeds are 32-bit seeds here too, as the README says of every seed (2**40 was taken)
    for seed in (2**32, 2**40, -1):
        with pytest.raises(ValueError, match=r"int seed in \[0, 2\*\*32\)"):
            datasets.gaussian_classes(seed)
        with pytest.raises(ValueError, match=r"int seed in \[0, 2\*\*32\)"):
            datasets.train_test_split(seed, np.zeros((4, 2)), np.array([0, 0, 1, 1]))


# ----------------------------------------------------------------------------------------------- IDX

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
_CODES[np.float64] = 0x0E


def write_idx(path, arr, *, gz=False, code=None):
    """Write ``arr`` in the IDX format (independent of the loader under test)."""
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.type] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(raw)
    return raw


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_all_dtypes(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        arr = rng.normal(size=(3, 4, 5)).astype(dtype) * 1e3
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr, gz=gz)
    out = datasets.load_idx(path)
    assert out.shape == (3, 4, 5) and out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    vec = np.arange(7, dtype=dtype)
    write_idx(tmp_path / "v", vec, gz=gz)
    np.testing.assert_array_equal(datasets.load_idx(str(tmp_path / "v")), vec)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "plain.gz", arr)  # misleading name, not compressed
    write_idx(tmp_path / "packed", arr, gz=True)  # compressed, no .gz
    np.testing.assert_array_equal(datasets.load_idx(tmp_path / "plain.gz"), arr)
    np.testing.assert_array_equal(datasets.load_idx(tmp_path / "packed"), arr)


def test_load_mnist_idx(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 3, 4)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "img.gz", images, gz=True)
    write_idx(tmp_path / "lab", labels)
    ds = datasets.load_mnist_idx(tmp_path / "img.gz", tmp_path / "lab")
    assert ds.X.shape == (5, 12) and ds.X.dtype == np.float32 and ds.feature_shape == (3, 4)
    np.testing.assert_allclose(ds.X, images.reshape(5, 12) / 255.0, rtol=1e-6)
    assert ds.X.max() <= 1.0
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.name == "img.gz"


def test_idx_bad_files(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "good", arr)
    missing = tmp_path / "nope.idx"
    with pytest.raises(FileNotFoundError, match="nope.idx"):
        datasets.load_idx(missing)
    cases = {
        "magic": (b"\x01\x00" + raw[2:], "magic"),
        "dtype": (raw[:2] + b"\x0a" + raw[3:], "dtype code 0x0A"),
        "zero_dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "short": (raw[:3], "truncated IDX header"),
        "short_dims": (raw[:9], "truncated IDX header"),
        "truncated": (raw[:-5], "truncated"),
        "trailing": (raw + b"\x00", "trailing"),
        "badgz": (b"\x1f\x8b" + b"garbage", "gzip"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=match):
            datasets.load_idx(path)
    # gzipped but truncated content
    (tmp_path / "gz_trunc").write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_idx(tmp_path / "gz_trunc")


def test_load_mnist_idx_bad_pairs(tmp_path):
    write_idx(tmp_path / "img", np.zeros((4, 2, 2), np.uint8))
    write_idx(tmp_path / "lab3", np.zeros(3, np.uint8))
    write_idx(tmp_path / "lab2d", np.zeros((4, 1), np.uint8))
    write_idx(tmp_path / "labf", np.zeros(4, np.float32))
    write_idx(tmp_path / "img1d", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="img' has 4 images but labels_path .*lab3' has 3 labels"):
        datasets.load_mnist_idx(tmp_path / "img", tmp_path / "lab3")
    with pytest.raises(ValueError, match="labels_path.*1-D"):
        datasets.load_mnist_idx(tmp_path / "img", tmp_path / "lab2d")
    with pytest.raises(ValueError, match="integers"):
        datasets.load_mnist_idx(tmp_path / "img", tmp_path / "labf")
    with pytest.raises(ValueError, match="images_path"):
        datasets.load_mnist_idx(tmp_path / "img1d", tmp_path / "lab3")
    with pytest.raises(FileNotFoundError, match="missing_labels"):
        datasets.load_mnist_idx(tmp_path / "img", tmp_path / "missing_labels")


# ----------------------------------------------------------------------------------------------- npz


def test_load_npz(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 2, 3))
    y = np.array([0, 1, 0, 1, 2, 2])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = datasets.load_npz(tmp_path / "d.npz")
    assert ds.X.shape == (6, 6) and ds.X.dtype == np.float32 and ds.feature_shape == (2, 3)
    np.testing.assert_allclose(ds.X, X.reshape(6, 6), rtol=1e-6)
    np.testing.assert_array_equal(ds.y, y)
    np.savez_compressed(tmp_path / "k.npz", feats=X[:, 0], labels=y.astype(np.float64))
    ds2 = datasets.load_npz(str(tmp_path / "k.npz"), x_key="feats", y_key="labels")
    assert ds2.X.shape == (6, 3) and np.issubdtype(ds2.y.dtype, np.integer)


def test_load_npz_bad_files(tmp_path):
    X, y = np.zeros((4, 2)), np.arange(4)
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        datasets.load_npz(tmp_path / "absent.npz")
    np.savez(tmp_path / "keys.npz", data=X, y=y)
    with pytest.raises(ValueError, match=r"no array\(s\) \['X'\]; available: data, y"):
        datasets.load_npz(tmp_path / "keys.npz")
    np.savez(tmp_path / "len.npz", X=X, y=y[:3])
    with pytest.raises(ValueError, match="4 rows but 'y' has 3"):
        datasets.load_npz(tmp_path / "len.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="not a valid .npz"):
        datasets.load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", X)
    with pytest.raises(ValueError, match="single array"):
        datasets.load_npz(tmp_path / "single.npy")
    np.savez(tmp_path / "nan.npz", X=np.array([[np.nan, 1.0], [0.0, 1.0]]), y=np.arange(2))
    with pytest.raises(ValueError, match="NaN"):
        datasets.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "fy.npz", X=X, y=np.array([0.5, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer labels"):
        datasets.load_npz(tmp_path / "fy.npz")
    np.savez(tmp_path / "y2.npz", X=X, y=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="1-D"):
        datasets.load_npz(tmp_path / "y2.npz")
    np.savez(tmp_path / "x1.npz", X=np.zeros(4), y=y)
    with pytest.raises(ValueError, match="at least 2-D"):
        datasets.load_npz(tmp_path / "x1.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([["a", "b"]] * 4), y=y)
    with pytest.raises(ValueError, match="numeric"):
        datasets.load_npz(tmp_path / "obj.npz")


# ------------------------------------------------------------------------------------ split and scale


def test_train_test_split_stratified():
    ds = datasets.load("iris")
    idx = np.arange(150)
    X_tr, X_te, y_tr, y_te = datasets.train_test_split(0, idx, ds.y, test_size=0.2)
    assert len(X_te) == 30 and len(X_tr) == 120
    assert np.bincount(y_te).tolist() == [10, 10, 10]
    assert sorted(np.concatenate([X_tr, X_te]).tolist()) == list(range(150))  # a partition
    np.testing.assert_array_equal(ds.y[X_tr], y_tr)
    np.testing.assert_array_equal(ds.y[X_te], y_te)
    # deterministic per key; jax keys accepted; different key, different split
    again = datasets.train_test_split(0, idx, ds.y, test_size=0.2)
    np.testing.assert_array_equal(again[1], X_te)
    other = datasets.train_test_split(jax.random.key(5), idx, ds.y, test_size=0.2)
    assert not np.array_equal(np.sort(other[1]), np.sort(X_te))


def test_train_test_split_unbalanced_and_counts():
    y = np.array([0] * 50 + [1] * 7 + [2] * 3)
    X = np.arange(60)[:, None].astype(np.float32)
    X_tr, X_te, y_tr, y_te = datasets.train_test_split(1, X, y, test_size=0.25)
    assert len(X_te) == 15  # ceil(0.25 * 60)
    counts = np.bincount(y_te, minlength=3)
    assert counts.sum() == 15 and counts[0] in (12, 13) and counts[1] in (1, 2) and counts[2] >= 1
    assert np.bincount(y_tr, minlength=3).min() >= 1
    X_tr, X_te, _, _ = datasets.train_test_split(1, X, y, test_size=9, stratify=False)
    assert len(X_te) == 9 and len(X_tr) == 51
    ys = np.array(["b", "a", "b", "a", "b", "a"])
    _, _, _, y_te = datasets.train_test_split(0, np.zeros((6, 1)), ys, test_size=2)
    assert sorted(y_te.tolist()) == ["a", "b"]


def test_train_test_split_bad_input():
    X, y = np.zeros((10, 2)), np.array([0] * 9 + [1])
    with pytest.raises(ValueError, match="at least 2 rows per class"):
        datasets.train_test_split(0, X, y)
    y = np.array([0, 1] * 5)
    for bad in (0.0, 1.0, 0, 10, True, "a"):
        with pytest.raises(ValueError, match="test_size"):
            datasets.train_test_split(0, X, y, test_size=bad)
    with pytest.raises(ValueError, match="labels but X has 10"):
        datasets.train_test_split(0, X, y[:9])
    with pytest.raises(ValueError, match="key"):
        datasets.train_test_split(-1, X, y)
    with pytest.raises(ValueError, match="fewer than the"):
        datasets.train_test_split(0, np.zeros((6, 1)), np.array([0, 0, 1, 1, 2, 2]), test_size=2)


def test_standardize_matches_sklearn_and_handles_constant_features():
    ds = datasets.load("digits")
    X_tr, X_te = np.asarray(ds.X[:1000]), np.asarray(ds.X[1000:])
    A, B = datasets.standardize(X_tr, X_te)
    scaler = StandardScaler().fit(X_tr)
    np.testing.assert_allclose(A, scaler.transform(X_tr), atol=1e-5)
    np.testing.assert_allclose(B, scaler.transform(X_te), atol=1e-5)
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(B))
    const = X_tr.std(0) == 0
    assert const.any()  # digits has constant pixels
    np.testing.assert_array_equal(A[:, const], 0.0)
    assert A.dtype == np.float32
    only = datasets.standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(only, [[-1.0, 0.0], [1.0, 0.0]])


def test_standardize_bad_input():
    with pytest.raises(ValueError, match="train contains 1 NaN"):
        datasets.standardize(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="same number of features"):
        datasets.standardize(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="test contains"):
        datasets.standardize(np.zeros((3, 2)), np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="train must be 2-dimensional"):
        datasets.standardize(np.zeros(3))
    with pytest.raises(ValueError, match="train needs at least 1 rows"):
        datasets.standardize(np.zeros((0, 3)))
    # a tiny training spread made the float32 test values inf, with only a NumPy warning
    tiny = np.array([[0.0], [0.0], [0.0], [1e-30]], np.float32)
    with pytest.raises(ValueError, match="test standardized does not fit float32: feature 0"):
        datasets.standardize(tiny, np.array([[1e10]], np.float32))
    assert np.isfinite(datasets.standardize(tiny.astype(np.float64), np.array([[1e10]]))[1]).all()


# ------------------------------------------------------------------ edge cases found by an audit


def test_split_when_every_class_has_two_rows():
    """counts - 2 summed to 0: 0/0 shares cast to INT64_MIN made the test set silently empty."""
    for y, size in (([0, 0, 1, 1], 0.5), ([0, 0, 1, 1, 2, 2], 3)):
        X = np.arange(len(y))
        X_tr, X_te, y_tr, y_te = datasets.train_test_split(0, X, np.array(y), test_size=size)
        assert sorted(y_te.tolist()) == sorted(set(y)) and sorted(y_tr.tolist()) == sorted(set(y))


def test_bad_files_give_value_errors_naming_them(tmp_path):
    good = write_idx(tmp_path / "ok.idx", np.arange(64, dtype=np.uint8).reshape(4, 4, 4))
    corrupt = bytearray(gzip.compress(good))
    corrupt[12:20] = b"\xff" * 8  # a damaged deflate stream: zlib.error before
    (tmp_path / "bad.gz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="bad.gz"):
        datasets.load_idx(tmp_path / "bad.gz")
    # dimensions whose product wraps int64 to 0 matched the 0 data bytes
    (tmp_path / "wrap.idx").write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4))
    with pytest.raises(ValueError, match="wrap.idx.*truncated"):
        datasets.load_idx(tmp_path / "wrap.idx")
    # images of no rows, and non-finite or float32-overflowing images
    write_idx(tmp_path / "img0", np.zeros((0, 2, 2), np.uint8))
    write_idx(tmp_path / "lab0", np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="img0.*holds no data"):
        datasets.load_mnist_idx(tmp_path / "img0", tmp_path / "lab0")
    write_idx(tmp_path / "fimg", np.array([[[np.nan, 1.0]], [[1e300, 0.0]]]))
    write_idx(tmp_path / "flab", np.array([0, 1], np.uint8))
    with pytest.raises(ValueError, match="fimg.*NaN or infinite"):
        datasets.load_mnist_idx(tmp_path / "fimg", tmp_path / "flab")
    # npz: overflowing float32 after the cast, labels beyond int64, a member that is no .npy, no rows
    for fname, arrays, match in (
        ("big.npz", {"X": np.full((2, 2), 1e300), "y": np.array([0, 1])}, "beyond float32"),
        ("bigy.npz", {"X": np.ones((3, 2)), "y": np.array([1e19, 2e19, 3.0])}, "int64 range"),
        ("u64.npz", {"X": np.ones((2, 2)), "y": np.array([2**63, 1], np.uint64)}, "int64 range"),
        ("z.npz", {"X": np.zeros((0, 3)), "y": np.zeros(0, int)}, "holds no data"),
        ("nofeat.npz", {"X": np.zeros((3, 0)), "y": np.zeros(3, int)}, "holds no data"),
    ):
        np.savez(tmp_path / fname, **arrays)
        with pytest.raises(ValueError, match=f"{fname}.*{match}"):
            datasets.load_npz(tmp_path / fname)
    import zipfile

    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as zf:
        zf.writestr("X.npy", b"not an npy")
        zf.writestr("y.npy", b"not an npy")
    with pytest.raises(ValueError, match="raw.npz.*not a .npy array"):
        datasets.load_npz(tmp_path / "raw.npz")


def test_generator_options_are_checked():
    for split in (0.0, 1.0, 1.5, "0.5"):
        with pytest.raises(ValueError, match="train_split"):
            datasets.load_mnist1d(num_samples=100, train_split=split)
    with pytest.raises(ValueError, match="not both"):
        datasets.load("synthetic", key=1, seed=2)
    with pytest.raises(ValueError, match=r"unknown synthetic option\(s\) \['n_sample'\]"):
        datasets.load("synthetic", n_sample=10)
    for bad in ("2", None):
        with pytest.raises(ValueError, match="class_sep must be a real number"):
            datasets.gaussian_classes(0, class_sep=bad)


def test_standardize_scales_small_scale_features():
    X = np.array([[2.0], [1.0], [4.0], [-1.0]]) * 1e-17
    np.testing.assert_allclose(
        datasets.standardize(X), StandardScaler().fit_transform(X), rtol=1e-12
    )


def test_mnist1d_options_are_checked():
    """padding=5 ended in "'int' object is not iterable", final_seq_length=-1 and seed=2**32 in
    NumPy's messages, and scale_coeff=NaN gave all-NaN signals silently."""
    for kw, what in [
        ({"padding": 5}, "padding must be a pair"),
        ({"padding": [60, 36]}, "padding must be a pair"),
        ({"final_seq_length": -1}, "final_seq_length must be an integer >= 1"),
        ({"seed": 2**32}, r"seed must be .*\[0, 2\*\*32\)"),
        ({"scale_coeff": float("nan")}, "scale_coeff must be a finite number >= 0"),
        ({"iid_noise_scale": -0.1}, "iid_noise_scale must be a finite number >= 0"),
        ({"shuffle_seq": "yes"}, "shuffle_seq must be True or False"),
    ]:
        with pytest.raises(ValueError, match=what):
            datasets.load("mnist1d", **kw)


def test_mnist1d_option_edge_cases():
    """train_split=0.06 of num_samples=19 gave 0 training rows (mnist1d makes 10 * (19 // 10));
    max_translation=0 failed in NumPy's np.random.choice; a NumPy-integer seed in mnist1d's
    random.seed; padding [40, 40] (a fixed padding, valid in mnist1d) was refused; scales whose
    signals' standard deviation overflowed gave all-zero data silently."""
    with pytest.raises(ValueError, match="train_split must leave rows on both sides"):
        datasets.load_mnist1d(num_samples=19, train_split=0.06)
    with pytest.raises(ValueError, match="max_translation must be an integer >= 1"):
        datasets.load_mnist1d(num_samples=100, max_translation=0)
    a = datasets.load_mnist1d(num_samples=100, seed=np.int64(3))
    b = datasets.load_mnist1d(num_samples=100, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    fixed = datasets.load_mnist1d(num_samples=100, padding=[40, 40], seed=0)
    assert fixed.X.shape == (80, 40) and np.ptp(fixed.X) > 0
    with pytest.raises(ValueError, match=r"padding must be a pair \[low, high\]"):
        datasets.load_mnist1d(num_samples=100, padding=[41, 40])
    for name in ("iid_noise_scale", "shear_scale"):
        with pytest.raises(ValueError, match=f"constant or non-finite signals: .*{name}"):
            datasets.load_mnist1d(num_samples=100, **{name: 1e300})


def test_load_npz_refuses_timedelta_labels(tmp_path):
    """timedelta64 labels passed as integers (np.issubdtype(m8, np.integer) is True)."""
    path = tmp_path / "tdy.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.arange(4).astype("timedelta64[s]"))
    with pytest.raises(ValueError, match="must hold integer labels, got timedelta64"):
        datasets.load_npz(path)


def test_loader_and_scaling_edge_cases(tmp_path):
    """A +-1e300 column's variance overflowed, so it was left unscaled as "constant"; a directory
    given to load_idx was "no such file"; a timedelta64 X was taken as numbers; split_seed=-1 gave
    scikit-learn's message."""
    X = np.array([[1e300, 1.0], [-1e300, 1.0], [0.5e300, 1.0]])
    np.testing.assert_allclose(
        datasets.standardize(X)[:, 0], datasets.standardize(X / 1e300)[:, 0], rtol=1e-12
    )
    big = datasets.standardize(np.array([[1e308, 1.0], [0.0, 2.0], [0.0, 3.0]]))  # 2**1024 is inf
    assert np.all(np.isfinite(big)) and abs(big[0, 0] - np.sqrt(2)) < 1e-12
    with pytest.raises(ValueError, match="is a directory, not a file"):
        datasets.load_idx(tmp_path)
    path = tmp_path / "td.npz"
    np.savez(path, X=np.arange(6).reshape(3, 2).astype("timedelta64[s]"), y=np.arange(3))
    with pytest.raises(ValueError, match="must be real numeric"):
        datasets.load_npz(path)
    from metriclearn import training

    with pytest.raises(ValueError, match="split_seed must be"):
        training.load_split("iris", split_seed=-1)
    assert training.load_split("iris", split_seed=None)[0].shape == (105, 4)  # sklearn's None


def test_train_test_split_is_proportional():
    """One test row per class set aside first over-represented small classes (8 + 2 test rows of
    90 + 10 at test_size=0.1; scikit-learn gives 9 + 1)."""
    X = np.zeros((100, 1))
    for y, size, want in [
        (np.repeat([0, 1], [90, 10]), 0.1, [9, 1]),
        (np.repeat([0, 1], [80, 20]), 0.1, [8, 2]),
        (np.repeat([0, 1, 2], [2, 2, 96]), 3, [1, 1, 1]),  # one row per side still guaranteed
    ]:
        for seed in range(4):
            _, _, y_tr, y_te = datasets.train_test_split(seed, X[: len(y)], y, test_size=size)
            assert np.bincount(y_te).tolist() == want
            assert np.all(np.bincount(y_tr) >= 1)


def test_flag_and_overflow_checks():
    # stratify="False" is truthy (it stratified); class_sep=1e300 gave inf data with a RuntimeWarning
    X, y = np.zeros((20, 2)), np.repeat(np.arange(4), 5)
    with pytest.raises(ValueError, match="stratify must be True or False"):
        datasets.train_test_split(0, X, y, stratify="False")
    with pytest.raises(ValueError, match="class_sep is too large"):
        datasets.gaussian_classes(0, n_samples=4, class_sep=1e300)
    with pytest.raises(ValueError, match="scale is too large"):
        datasets.gaussian_classes(0, n_samples=4, scale=1e39)
    ds = datasets.gaussian_classes(0, n_samples=4, class_sep=1e36)
    assert np.all(np.isfinite(ds.X))
