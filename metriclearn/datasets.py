"""Data sets: scikit-learn's shipped copies, MNIST-1D generated locally, synthetic Gaussian classes, and
loaders for a user's own MNIST-format IDX and ``.npz`` files; plus a stratified split and standardization.

Nothing here downloads anything. Every loader returns a :class:`Dataset` whose ``X`` is ``float32
[n, d]`` (images flattened; the original shape is kept in ``feature_shape``) and whose ``y`` is an
integer vector ``[n]``::

    from metriclearn import datasets
    ds = datasets.load("digits")                 # Dataset(X [1797, 64], y [1797], feature_shape=(8, 8))
    X_tr, X_te, y_tr, y_te = datasets.train_test_split(0, ds.X, ds.y, test_size=0.3)
    X_tr, X_te = datasets.standardize(X_tr, X_te)

References:
  Greydanus, "Scaling down deep learning with MNIST-1D" (ICML 2024), for ``mnist1d``.
  LeCun et al., "Gradient-based learning applied to document recognition" (1998), for the IDX format.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import random
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from metriclearn._validation import (
    as_real,
    check_array,
    check_flags,
    check_labels,
    check_positive_int,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "gaussian_classes",
    "load",
    "load_idx",
    "load_mnist_idx",
    "load_npz",
    "standardize",
    "synthetic",
    "train_test_split",
]


class Dataset(NamedTuple):
    """A labelled data set.

    Attributes:
      X: ``float32 [n, d]`` features (images flattened row-major).
      y: ``int64 [n]`` labels.
      name: short name (``"iris"``, ``"mnist1d"``, a file name, ...).
      description: one line saying where the data came from and its size.
      feature_shape: shape of one example before flattening, e.g. ``(8, 8)`` for digits, ``(4,)`` for iris.
      X_test: ``float32 [n_test, d]`` for data sets with an official test split (``mnist1d``), else None.
      y_test: ``int64 [n_test]`` or None.
    """

    X: np.ndarray
    y: np.ndarray
    name: str
    description: str
    feature_shape: tuple[int, ...]
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _seed_from(key_or_seed, name: str = "key") -> int:
    """An int seed from an int or a JAX PRNG key (typed or raw ``uint32[2]``)."""
    if isinstance(key_or_seed, bool):
        raise ValueError(f"{name} must be an int seed or a jax.random key, got {key_or_seed!r}")
    if isinstance(key_or_seed, int | np.integer):
        # [0, 2**32) as every other seed of the library (as_key), though NumPy would take more
        if not 0 <= int(key_or_seed) < 2**32:
            raise ValueError(
                f"{name} must be a jax.random key or an int seed in [0, 2**32), got {key_or_seed}"
            )
        return int(key_or_seed)
    try:
        arr = jax.numpy.asarray(key_or_seed)
        if jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key) or (
            arr.dtype == np.uint32 and arr.shape == (2,)
        ):
            return int(jax.random.bits(key_or_seed, dtype=np.uint32))
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{name} must be an int seed or a jax.random key, got {key_or_seed!r}")


# --------------------------------------------------------------------------------------------------
# Shipped and generated data sets
# --------------------------------------------------------------------------------------------------


@functools.cache
def _sklearn_dataset(name: str) -> Dataset:
    import sklearn.datasets as skd

    loader = {
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
        "digits": skd.load_digits,
    }[name]
    bunch = loader()
    X = np.ascontiguousarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    shape = tuple(bunch.images.shape[1:]) if name == "digits" else (X.shape[1],)
    desc = (
        f"{name}: {X.shape[0]} samples, {X.shape[1]} features, {len(np.unique(y))} classes "
        "(scikit-learn's shipped copy)"
    )
    return Dataset(_readonly(X), _readonly(y), name, desc, shape)


def _make_sklearn_loader(name: str) -> Callable[..., Dataset]:
    def loader(**kw) -> Dataset:
        if kw:
            raise ValueError(f"load({name!r}) takes no options, got {sorted(kw)}")
        return _sklearn_dataset(name)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"scikit-learn's shipped ``{name}`` data set as a :class:`Dataset` (cached)."
    return loader


_MNIST1D_OPTIONS = (
    "num_samples",
    "train_split",
    "template_len",
    "padding",
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
    "final_seq_length",
    "seed",
)


@functools.lru_cache(maxsize=8)
def _mnist1d_cached(options: tuple[tuple[str, Any], ...]) -> Dataset:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    for k, v in options:
        setattr(args, k, list(v) if k == "padding" else v)
    # make_dataset seeds Python's and NumPy's global generators: leave the caller's state untouched.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, by name
            data = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    X = np.ascontiguousarray(data["x"], dtype=np.float32)
    y = np.asarray(data["y"], dtype=np.int64)
    X_test = np.ascontiguousarray(data["x_test"], dtype=np.float32)
    y_test = np.asarray(data["y_test"], dtype=np.int64)
    values = np.concatenate([X.ravel(), X_test.ravel()])
    if not (np.all(np.isfinite(values)) and np.ptp(values) > 0):
        # make_dataset divides by the signals' standard deviation: huge finite scales overflowed it
        # to inf and every value became 0, silently
        raise ValueError(
            "mnist1d generated constant or non-finite signals: scale_coeff, corr_noise_scale, "
            f"iid_noise_scale or shear_scale is too large (options {dict(options)})"
        )
    desc = (
        f"mnist1d: {X.shape[0]} train + {X_test.shape[0]} test samples, {X.shape[1]} features, "
        f"10 classes (generated locally by mnist1d.data.make_dataset, seed {args.seed})"
    )
    return Dataset(
        _readonly(X),
        _readonly(y),
        "mnist1d",
        desc,
        (X.shape[1],),
        _readonly(X_test),
        _readonly(y_test),
    )


def load_mnist1d(**kw) -> Dataset:
    """MNIST-1D generated locally (never downloaded): 40-long 1-D signals of the 10 digit templates.

    Calls ``mnist1d.data.make_dataset(get_dataset_args())`` with any of its arguments overridden by
    keyword (``num_samples=5000``, ``seed=42``, ``train_split=0.8``, ...). The defaults give the
    official 4,000 train / 1,000 test split in ``X, y`` / ``X_test, y_test``. Results are cached in
    memory per process (per set of options); the global ``random``/``np.random`` states are restored.

    Example:
      >>> ds = load_mnist1d(num_samples=500, seed=0)   # small and fast, for tests
      >>> ds.X.shape, ds.X_test.shape
      ((400, 40), (100, 40))

    Reference: Greydanus, "Scaling down deep learning with MNIST-1D", ICML 2024.
    """
    unknown = sorted(set(kw) - set(_MNIST1D_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown mnist1d option(s) {unknown}; valid: {', '.join(sorted(_MNIST1D_OPTIONS))}"
        )
    if "num_samples" in kw:
        check_positive_int(kw["num_samples"], "num_samples", minimum=10)
    if "seed" in kw:
        check_positive_int(kw["seed"], "seed", minimum=0)
        _seed_from(kw["seed"], "seed")  # [0, 2**32), as every seed
        kw["seed"] = int(kw["seed"])  # mnist1d's random.seed refuses NumPy integers
    # max_translation 0 failed in np.random.choice(0) ("a must be greater than 0"); 1 is no shift
    for name in ("template_len", "max_translation", "final_seq_length"):
        if name in kw:
            check_positive_int(kw[name], name, minimum=1)
    for name in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
        if name in kw:
            v = as_real(kw[name], name)
            if not (np.isfinite(v) and v >= 0):  # NaN made every signal NaN, silently
                raise ValueError(f"{name} must be a finite number >= 0, got {kw[name]!r}")
    if "shuffle_seq" in kw and not isinstance(kw["shuffle_seq"], bool | np.bool_):
        raise ValueError(f"shuffle_seq must be True or False, got {kw['shuffle_seq']!r}")
    if "padding" in kw:
        pad = kw["padding"]
        ok = isinstance(pad, list | tuple) and len(pad) == 2
        ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in pad)
        if not (ok and 0 <= pad[0] <= pad[1]):  # mnist1d draws low + int(rand * (high - low + 1))
            raise ValueError(
                f"padding must be a pair [low, high] of integers with 0 <= low <= high (the range "
                f"of random padding lengths, both included, default [36, 60]), got {pad!r}"
            )
    if "train_split" in kw:
        split = as_real(kw["train_split"], "train_split")
        n = 10 * (kw.get("num_samples", 5000) // 10)  # mnist1d makes num_samples // 10 per class
        if not (0.0 < split < 1.0 and 1 <= int(n * split) < n):
            raise ValueError(
                f"train_split must leave rows on both sides (0 < train_split < 1), got {split!r}"
            )
    options = tuple(
        sorted((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in kw.items())
    )
    return _mnist1d_cached(options)


def gaussian_classes(
    key=0,
    *,
    n_samples: int = 1000,
    n_features: int = 2,
    n_classes: int = 3,
    class_sep: float = 2.0,
    scale: float = 1.0,
) -> Dataset:
    r"""Synthetic Gaussian classes of any size, dimension and class count.

    Class means :math:`\mu_c = \text{class\_sep}\cdot z_c`, :math:`z_c \sim N(0, I_d)`; samples
    :math:`x = \mu_{y} + \text{scale}\cdot\varepsilon`, :math:`\varepsilon \sim N(0, I_d)`. Labels are
    balanced (class sizes differ by at most one) and shuffled.

    Args:
      key: ``jax.random`` key or int seed (same key, same data; the draws use a NumPy generator seeded
        from it, so no compilation is involved).
      n_samples: number of rows ``n``.
      n_features: dimension ``d``.
      n_classes: number of classes ``C`` (``2 <= C <= n``).
      class_sep: scale of the class means (larger is easier), finite and ``>= 0``.
      scale: within-class standard deviation, finite and ``>= 0``.

    Returns:
      :class:`Dataset` with ``X`` ``float32 [n, d]`` and ``y`` ``int64 [n]`` in ``0..C-1``.

    Raises:
      ValueError: bad sizes; ``class_sep`` or ``scale`` negative, not finite, or so large that the
        data would overflow float32 (named: the larger contribution).

    Example:
      >>> ds = gaussian_classes(0, n_samples=100, n_features=5, n_classes=4)
      >>> ds.X.shape, sorted(set(ds.y.tolist()))
      ((100, 5), [0, 1, 2, 3])
    """
    rng = np.random.default_rng(_seed_from(key))
    n_samples = check_positive_int(n_samples, "n_samples")
    n_features = check_positive_int(n_features, "n_features")
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    if n_classes > n_samples:
        raise ValueError(f"n_classes ({n_classes}) must be <= n_samples ({n_samples})")
    for value, name in ((class_sep, "class_sep"), (scale, "scale")):
        value = as_real(value, name)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        means = class_sep * rng.standard_normal((n_classes, n_features))
        y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
        noise = rng.standard_normal((n_samples, n_features))
        X = (means[y] + scale * noise).astype(np.float32)
    if not np.all(np.isfinite(X)):  # class_sep=1e300 gave inf data with only a RuntimeWarning
        with np.errstate(over="ignore"):
            big = float(np.max(np.abs(means))) >= scale * float(np.max(np.abs(noise)))
        name = "class_sep" if big else "scale"
        raise ValueError(
            f"{name} is too large: class_sep={class_sep!r} and scale={scale!r} give data beyond "
            f"float32's range (max {float(np.finfo(np.float32).max):.3g})"
        )
    desc = (
        f"synthetic: {n_samples} samples, {n_features} features, {n_classes} Gaussian classes "
        f"(class_sep={class_sep}, scale={scale})"
    )
    return Dataset(X, y, "synthetic", desc, (n_features,))


synthetic = gaussian_classes


_SYNTHETIC_OPTIONS = ("key", "seed", "n_samples", "n_features", "n_classes", "class_sep", "scale")


def _load_synthetic(**kw) -> Dataset:
    unknown = sorted(set(kw) - set(_SYNTHETIC_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown synthetic option(s) {unknown}; valid: {', '.join(sorted(_SYNTHETIC_OPTIONS))}"
        )
    if "key" in kw and "seed" in kw:
        raise ValueError("give key= or seed=, not both")
    key = kw.pop("key", kw.pop("seed", 0))
    return gaussian_classes(key, **kw)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "iris": _make_sklearn_loader("iris"),
    "wine": _make_sklearn_loader("wine"),
    "breast_cancer": _make_sklearn_loader("breast_cancer"),
    "digits": _make_sklearn_loader("digits"),
    "mnist1d": load_mnist1d,
    "synthetic": _load_synthetic,
}


def load(name: str, **kw) -> Dataset:
    """Load a named data set (no downloads).

    Names: ``iris``, ``wine``, ``breast_cancer``, ``digits`` (scikit-learn's shipped copies; digits keeps
    ``feature_shape=(8, 8)``), ``mnist1d`` (generated locally, options as :func:`load_mnist1d`, with the
    official test split in ``X_test``/``y_test``), ``synthetic`` (options as :func:`gaussian_classes`,
    ``key=`` or ``seed=``).

    Args:
      name: a key of :data:`DATASETS`.
      **kw: options of that loader.

    Returns:
      :class:`Dataset`. The shipped sets and MNIST-1D are cached per process and read-only (copy to
      modify); ``synthetic`` is drawn afresh on each call.

    Example:
      >>> ds = load("iris")
      >>> ds.X.shape, ds.X.dtype
      ((150, 4), dtype('float32'))
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**kw)


# --------------------------------------------------------------------------------------------------
# Users' own files
# --------------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{path!r} is not a valid gzip file: {err}") from err
    return raw


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (detected from the content, not the name).

    Format: 2 zero bytes, a dtype byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64), a byte with the number of dimensions ``D``, then ``D`` big-endian
    uint32 sizes, then the data, big-endian, row-major.

    Args:
      path: file path.

    Returns:
      ``np.ndarray`` with the file's shape and the dtype in native byte order.

    Raises:
      FileNotFoundError: the file does not exist (message names the path).
      ValueError: bad magic number, unknown dtype code, truncated header or data, trailing bytes.

    Example (with MNIST's files on disk; nothing is downloaded)::

      >>> images = load_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
      >>> images.shape, images.dtype  # doctest: +SKIP
      ((60000, 28, 28), dtype('uint8'))
    """
    raw = _read_bytes(path)
    path = os.fspath(path)
    if len(raw) < 4:
        raise ValueError(f"{path!r}: truncated IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path!r}: bad IDX magic number {raw[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path!r}: unknown IDX dtype code 0x{code:02X}; valid: {valid}")
    if ndim == 0:
        raise ValueError(f"{path!r}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path!r}: truncated IDX header: {ndim} dimensions need {header} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no int64 wrap-around
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{path!r}: IDX data {kind}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"found {got}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_mnist_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, *, name: str | None = None
) -> Dataset:
    """Images and labels from a pair of IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST, ...).

    Images ``[n, h, w, ...]`` are flattened to ``float32 [n, h*w*...]``; uint8 pixels are divided by
    255 (other dtypes are cast unchanged). Labels must be a 1-D integer IDX file of the same length.

    Args:
      images_path: IDX file of images, gzipped or not.
      labels_path: IDX file of labels.
      name: data set name (default: the images file name).

    Returns:
      :class:`Dataset` with ``feature_shape`` the shape of one image, e.g. ``(28, 28)``.

    Example (with MNIST's test files on disk; nothing is downloaded)::

      >>> ds = load_mnist_idx("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
      >>> ds.X.shape, ds.feature_shape  # doctest: +SKIP
      ((10000, 784), (28, 28))
    """
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim < 2:
        raise ValueError(
            f"images_path {os.fspath(images_path)!r} must hold an array of >= 2 dimensions "
            f"[n, ...], got shape {images.shape}"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"labels_path {os.fspath(labels_path)!r} must hold a 1-D array, got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels_path {os.fspath(labels_path)!r} must hold integers, got {labels.dtype}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images_path {os.fspath(images_path)!r} has {images.shape[0]} images but labels_path "
            f"{os.fspath(labels_path)!r} has {labels.shape[0]} labels"
        )
    if images.shape[0] == 0 or math.prod(images.shape[1:]) == 0:
        raise ValueError(
            f"images_path {os.fspath(images_path)!r} holds no data (shape {images.shape})"
        )
    with np.errstate(over="ignore"):
        X = images.reshape(images.shape[0], -1).astype(np.float32)
    if images.dtype == np.uint8:
        X /= 255.0
    if not np.all(np.isfinite(X)):
        raise ValueError(
            f"images_path {os.fspath(images_path)!r} holds NaN or infinite values, or values beyond "
            "float32's range"
        )
    name = name or os.path.basename(os.fspath(images_path))
    desc = (
        f"{name}: {X.shape[0]} images of shape {images.shape[1:]} from IDX files "
        f"({len(np.unique(labels))} classes)"
    )
    return Dataset(X, labels.astype(np.int64), name, desc, tuple(images.shape[1:]))


def load_npz(
    path: str | os.PathLike, x_key: str = "X", y_key: str = "y", *, name: str | None = None
) -> Dataset:
    """Features and labels from a NumPy ``.npz`` archive (``np.savez(path, X=..., y=...)``).

    ``X`` may have any shape ``[n, ...]``; it is flattened to ``float32 [n, d]`` and the per-example
    shape kept in ``feature_shape``. ``y`` must be 1-D integer labels of the same length. Loaded with
    ``allow_pickle=False``.

    Args:
      path: ``.npz`` file.
      x_key: name of the feature array in the archive.
      y_key: name of the label array.
      name: data set name (default: the file name).

    Returns:
      :class:`Dataset`.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: not a valid npz archive, missing keys (lists the available ones), length mismatch,
        non-finite features, non-integer labels.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
      >>> np.savez(path, X=np.random.rand(10, 3), y=np.arange(10) % 2)
      >>> load_npz(path).X.shape
      (10, 3)
    """
    raw = _read_bytes(path)
    path = os.fspath(path)
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path!r} is not a valid .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path!r} holds a single array, not an .npz archive with {x_key!r}/{y_key!r}"
        )
    with archive:
        missing = [k for k in (x_key, y_key) if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path!r} has no array(s) {missing}; available: {', '.join(archive.files) or 'none'}"
            )
        try:
            X = archive[x_key]
            y = archive[y_key]
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path!r}: cannot read arrays: {err}") from err
    for arr, key in ((X, x_key), (y, y_key)):
        if not isinstance(arr, np.ndarray):  # NpzFile returns a member that is no .npy as bytes
            raise ValueError(f"{path!r}: member {key!r} is not a .npy array")
    if X.ndim < 2:
        raise ValueError(f"{path!r}: {x_key!r} must be at least 2-D [n, ...], got shape {X.shape}")
    if y.ndim != 1:
        raise ValueError(f"{path!r}: {y_key!r} must be 1-D, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{path!r}: {x_key!r} has {X.shape[0]} rows but {y_key!r} has {y.shape[0]} labels"
        )
    if X.dtype.kind not in "iuf":  # timedelta64 counts as a NumPy number
        raise ValueError(f"{path!r}: {x_key!r} must be real numeric, got {X.dtype}")
    if X.shape[0] == 0 or math.prod(X.shape[1:]) == 0:
        raise ValueError(f"{path!r}: {x_key!r} holds no data (shape {X.shape})")
    with np.errstate(over="ignore"):
        X32 = X.reshape(X.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(X32)):  # after the cast: 1e300 would become inf
        raise ValueError(
            f"{path!r}: {x_key!r} contains NaN or infinite values, or values beyond float32's range"
        )
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        if np.abs(y).max() >= 2.0**63:
            raise ValueError(f"{path!r}: {y_key!r} holds labels beyond the int64 range")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":  # timedelta64 is an np.integer subtype
        raise ValueError(f"{path!r}: {y_key!r} must hold integer labels, got {y.dtype}")
    if y.dtype == np.uint64 and y.size and y.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{path!r}: {y_key!r} holds labels beyond the int64 range")
    name = name or os.path.basename(path)
    desc = f"{name}: {X.shape[0]} samples of shape {X.shape[1:]} from {x_key!r}/{y_key!r}"
    return Dataset(
        X32,
        y.astype(np.int64),
        name,
        desc,
        tuple(X.shape[1:]),
    )


# --------------------------------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------------------------------


def _largest_remainder(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integers ``a_c <= counts_c`` summing to ``total``, as close as possible to proportional."""
    if total <= 0 or counts.sum() <= 0:  # nothing to share (0 / 0 would make the shares NaN)
        return np.zeros_like(counts, dtype=np.int64)
    ideal = counts * (total / counts.sum())
    alloc = np.floor(ideal).astype(np.int64)
    rest = total - alloc.sum()
    if rest > 0:
        frac = ideal - alloc
        # random tie-break among equal remainders, then largest remainder first
        order = np.lexsort((rng.permutation(len(counts)), -frac))
        for c in order:
            if rest == 0:
                break
            if alloc[c] < counts[c]:
                alloc[c] += 1
                rest -= 1
    return alloc


def _stratified_test_counts(
    counts: np.ndarray, n_test: int, rng: np.random.Generator
) -> np.ndarray:
    """Test rows per class: proportional to the class sizes (largest remainder), then moved one at
    a time so that every class keeps at least one row on each side, each move taking from the class
    furthest above its proportional share and giving to the one furthest below. (Setting one row
    of each class aside first and sharing out the rest in proportion to ``counts - 2`` favoured the
    small classes: 90 + 10 rows at ``test_size=0.1`` gave 8 + 2 test rows instead of 9 + 1.)"""
    ideal = counts * (n_test / counts.sum())
    alloc = np.clip(_largest_remainder(counts, n_test, rng), 1, counts - 1)
    while alloc.sum() > n_test:
        alloc[np.argmax(np.where(alloc > 1, alloc - ideal, -np.inf))] -= 1
    while alloc.sum() < n_test:
        alloc[np.argmax(np.where(alloc < counts - 1, ideal - alloc, -np.inf))] += 1
    return alloc


def train_test_split(
    key,
    X,
    y,
    *,
    test_size: float | int = 0.25,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random (by default class-stratified) train/test split.

    With ``stratify=True`` each class contributes to the test set in proportion to its size (largest
    remainder rounding, so the test set has exactly ``n_test`` rows), and every class keeps at least one
    row on each side. ``n_test = ceil(test_size * n)`` for a fraction, as scikit-learn.

    Args:
      key: ``jax.random`` key or int seed.
      X: ``[n, ...]`` features.
      y: ``[n]`` labels.
      test_size: fraction in (0, 1) or an integer count in ``[1, n - 1]``.
      stratify: keep class proportions (needs >= 2 rows per class); a bool.

    Returns:
      ``(X_train, X_test, y_train, y_test)`` as NumPy arrays, rows in random order.

    Example:
      >>> ds = load("iris")
      >>> X_tr, X_te, y_tr, y_te = train_test_split(0, ds.X, ds.y, test_size=0.2)
      >>> X_te.shape, np.bincount(y_te).tolist()
      ((30, 4), [10, 10, 10])
    """
    check_flags(stratify=stratify)  # a string "False" is truthy: it stratified
    seed = _seed_from(key)
    X = np.asarray(X)
    if X.ndim < 1 or X.shape[0] < 2:
        raise ValueError(f"X needs at least 2 rows to split, got shape {X.shape}")
    n = X.shape[0]
    codes = check_labels(y, n, name="y", min_classes=1)
    y = np.asarray(y)
    if isinstance(test_size, bool):
        raise ValueError(f"test_size must be a float in (0, 1) or an int, got {test_size!r}")
    if isinstance(test_size, int | np.integer):
        if not 1 <= test_size <= n - 1:
            raise ValueError(f"test_size must be in [1, {n - 1}] for {n} rows, got {test_size}")
        n_test = int(test_size)
    else:
        if not (isinstance(test_size, float | np.floating) and 0.0 < test_size < 1.0):
            raise ValueError(f"test_size must be a float in (0, 1) or an int, got {test_size!r}")
        n_test = int(np.ceil(test_size * n))
        if n_test >= n:
            raise ValueError(f"test_size={test_size} leaves no training rows for {n} rows")
    rng = np.random.default_rng(seed)
    if not stratify:
        perm = rng.permutation(n)
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:
        counts = np.bincount(codes)
        if counts.min() < 2:
            small = int(np.argmin(counts))
            raise ValueError(
                f"stratify=True needs at least 2 rows per class in y; class "
                f"{np.unique(y)[small]!r} has {counts[small]}"
            )
        n_classes = len(counts)
        if n_test < n_classes or n - n_test < n_classes:
            raise ValueError(
                f"test_size gives {n_test} test and {n - n_test} train rows, fewer than the "
                f"{n_classes} classes; use stratify=False or a different test_size"
            )
        alloc = _stratified_test_counts(counts, n_test, rng)
        tests, trains = [], []
        for c in range(n_classes):
            idx = rng.permutation(np.flatnonzero(codes == c))
            tests.append(idx[: alloc[c]])
            trains.append(idx[alloc[c] :])
        test_idx = rng.permutation(np.concatenate(tests))
        train_idx = rng.permutation(np.concatenate(trains))
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


def standardize(train, test=None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Zero-mean, unit-variance features, with statistics fitted on ``train`` only.

    :math:`x' = (x - \mu_{train}) / \sigma_{train}`, population std; features whose training std is
    (numerically) zero get :math:`\sigma = 1` so they become 0, never NaN (as scikit-learn's
    ``StandardScaler``).

    Args:
      train: ``[n, d]``.
      test: ``[m, d]`` or None.

    Returns:
      ``train'`` if ``test`` is None, else ``(train', test')``; float32 (float64 input stays float64).

    Example:
      >>> X_tr, X_te = standardize(np.array([[0., 1.], [2., 1.]]), np.array([[1., 5.]]))
      >>> X_te.tolist()
      [[0.0, 4.0]]
    """
    check_array(train, "train", ndim=2, min_rows=1, allow_overflow=True)  # float64 below
    tr = np.asarray(train, dtype=np.float64)
    out_dtype = np.float64 if np.asarray(train).dtype == np.float64 else np.float32
    # statistics of each feature divided by a power of two near its largest value (exact): the
    # variance of a +-1e300 column overflowed to inf, and the column was taken as constant
    top = np.max(np.abs(tr), axis=0)
    e = np.where(top > 0, np.frexp(top)[1], 0)  # by ldexp: 2**1024 itself is inf
    z = np.ldexp(tr, -e)
    mean_z, std_z = z.mean(axis=0), z.std(axis=0)
    # constant up to rounding, relative to the feature's own magnitude (scikit-learn's bound): a
    # feature of values around 1e-17 is scaled, not left as is
    eps, n = np.finfo(np.float64).eps, tr.shape[0]
    var = std_z * std_z
    constant = (var == 0) | (var <= n * eps * var + (n * np.abs(mean_z) * eps) ** 2)
    mean = np.ldexp(mean_z, e)
    std = np.where(constant, 1.0, np.ldexp(std_z, e))
    tr_s = ((tr - mean) / std).astype(out_dtype)
    if test is None:
        return tr_s
    check_array(test, "test", ndim=2, allow_overflow=True)
    te = np.asarray(test, dtype=np.float64)
    if te.shape[1] != tr.shape[1]:
        raise ValueError(
            f"train and test must have the same number of features, got shapes "
            f"{tr.shape} and {te.shape}"
        )
    te_s = (te - mean) / std
    with np.errstate(over="ignore"):
        te_out = te_s.astype(out_dtype)
    if not np.all(np.isfinite(te_out)):  # a tiny training spread: was inf with only a NumPy warning
        j = int(np.flatnonzero(~np.all(np.isfinite(te_out), axis=0))[0])
        raise ValueError(
            f"test standardized does not fit {np.dtype(out_dtype).name}: feature {j} has a "
            f"training std of {std[j]:.3g} and a test value {np.max(np.abs(te[:, j] - mean[j])):.3g} from its "
            "mean; pass float64 data (standardize keeps float64) or drop the feature"
        )
    return tr_s, te_out
