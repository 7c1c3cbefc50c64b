"""Matplotlib figures for metric learning runs (headless: figures are built without pyplot).

* :func:`plot_distance_curves` -- per-epoch mean distance of similar and of dissimilar pairs with
  +-1 std bands (the "distance curves" of the metric learning surveys), next to the training loss and
  the held-out retrieval metrics.
* :func:`plot_metric_curves` -- loss / metric columns of several runs per epoch (one panel per column,
  one line per run), e.g. MAP@R of triplet loss under different miners.
* :func:`plot_embedding_2d` and :func:`plot_embedding_before_after` -- 2-D PCA scatter of the data,
  coloured by class, before and after a learned map.
* :func:`plot_mahalanobis_matrix` -- heatmap of a learned Mahalanobis matrix ``M``.
* :func:`plot_accuracy_bars` -- grouped bars (mean +- std) of accuracies across learners and data sets.
* :func:`plot_retrieval_examples` -- query images and their nearest neighbours (correct ones framed
  green, wrong ones red), one block of rows per metric.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no global state, works on a
headless machine with the Agg canvas), returns it, and, when ``path`` is given, saves it at exactly
``path`` in the format its extension names (``.png``; also matplotlib's other formats such as
``.pdf``, ``.svg``, ``.jpg``). A path without an extension or with one matplotlib cannot write
(``.txt``), and a ``dpi`` that is not a finite number > 0, raise ``ValueError`` before anything is
created on disk.

Example::

    from metriclearn import plotting
    fig = plotting.plot_distance_curves(result.history, "curves.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from metriclearn._validation import (
    as_real,
    check_comparable_labels,
    check_positive_int,
    label_array,
)
from metriclearn.psd import default_tol

__all__ = [
    "plot_distance_curves",
    "plot_metric_curves",
    "plot_embedding_2d",
    "plot_embedding_before_after",
    "plot_mahalanobis_matrix",
    "plot_accuracy_bars",
    "plot_retrieval_examples",
]


def _column(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array(
        [float(h[key]) if h.get(key) is not None else math.nan for h in history], dtype=np.float64
    )


def plot_distance_curves(
    history: Sequence[Mapping[str, float]],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Plot the distance curves of a training history (and its loss and metrics).

    Left panel: mean distance of similar (same-class) pairs and of dissimilar pairs per epoch, with
    shaded bands of +-1 standard deviation (keys ``pos_distance``, ``pos_distance_std``,
    ``neg_distance``, ``neg_distance_std``). Right panel: the training loss per epoch and, where
    evaluated, the held-out ``map_at_r`` and ``precision_at_1`` (right axis).

    Args:
      history: list of per-epoch dicts as in ``metriclearn.training.FitResult.history``.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      title: figure title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The ``matplotlib.figure.Figure``.

    Raises:
      ValueError: empty history or missing distance columns.
    """
    _check_rows(history, "history")
    for key in ("epoch", "pos_distance", "neg_distance"):
        if key not in history[0]:
            raise ValueError(f"history rows lack the {key!r} column; got {sorted(history[0])}")
    epoch = _column(history, "epoch")
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_d, ax_l = fig.subplots(1, 2)
    for kind, label, color in (
        ("pos", "similar pairs", "tab:blue"),
        ("neg", "dissimilar pairs", "tab:red"),
    ):
        mean = _column(history, f"{kind}_distance")
        std = (
            _column(history, f"{kind}_distance_std")
            if f"{kind}_distance_std" in history[0]
            else np.zeros_like(mean)
        )
        ax_d.plot(epoch, mean, marker="o", markersize=3, color=color, label=f"{label} (mean)")
        ax_d.fill_between(
            epoch, mean - std, mean + std, color=color, alpha=0.2, label=f"{label} ±1 std"
        )
    ax_d.set_xlabel("epoch")
    ax_d.set_ylabel("embedding distance")
    ax_d.set_title("distance curves (training batches)")
    ax_d.legend(loc="best", fontsize="small")
    ax_d.grid(alpha=0.3)

    loss = _column(history, "loss")
    ax_l.plot(epoch, loss, color="black", marker="o", markersize=3, label="training loss")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.grid(alpha=0.3)
    handles, labels = ax_l.get_legend_handles_labels()
    ax_m = ax_l.twinx()
    for key, color in (("map_at_r", "tab:green"), ("precision_at_1", "tab:purple")):
        if key in history[0]:
            values = _column(history, key)
            ok = np.isfinite(values)
            if ok.any():
                ax_m.plot(epoch[ok], values[ok], marker="s", markersize=3, color=color, label=key)
    ax_m.set_ylabel("held-out metric")
    h2, l2 = ax_m.get_legend_handles_labels()
    # On the twin (top-most) axes and below the plot: the rising metrics and falling loss cross the
    # whole panel, so no inside position stays clear of them.
    ax_m.legend(
        handles + h2,
        labels + l2,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=3,
        fontsize="small",
        frameon=False,
    )
    ax_l.set_title("loss and retrieval metrics")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


_LABELS = {
    "loss": "training loss",
    "map_at_r": "MAP@R (held-out)",
    "precision_at_1": "P@1 (held-out)",
    "r_precision": "R-precision (held-out)",
    "nmi": "NMI (held-out)",
    "pos_distance": "similar-pair distance",
    "neg_distance": "dissimilar-pair distance",
}


def _check_rows(history, name: str) -> None:
    """A history is a non-empty sequence of per-epoch dicts (``FitResult.history``)."""
    if isinstance(history, Mapping):
        raise ValueError(
            f"{name} must be a list of per-epoch dicts (FitResult.history), got a dict of "
            f"columns {sorted(history)[:5]}"
        )
    if not isinstance(history, str) and not history:
        raise ValueError(f"{name} is empty: nothing to plot")
    if isinstance(history, str) or not all(isinstance(row, Mapping) for row in history):
        raise ValueError(f"{name} must be a list of per-epoch dicts (FitResult.history)")


def _check_dpi(dpi) -> float:
    """``dpi`` as a float: a finite real number > 0 (bools and strings refused)."""
    if isinstance(dpi, bool | np.bool_ | str | bytes) or np.ndim(dpi) != 0:
        raise ValueError(f"dpi must be a finite number > 0, got {dpi!r}")
    try:
        value = float(dpi)
    except (TypeError, ValueError):
        raise ValueError(f"dpi must be a finite number > 0, got {dpi!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"dpi must be a finite number > 0, got {dpi!r}")
    return value


def _save(fig: Figure, path: str | os.PathLike | None, dpi: int) -> Figure:
    """Save ``fig`` at exactly ``path`` unless ``path`` is None; the format is the one its extension
    names (``.png``, or another of matplotlib's: ``.pdf``, ``.svg``, ``.jpg``, ...). Missing parent
    directories are created (and removed again if the save fails).

    Raises:
      ValueError: ``dpi`` not a finite number > 0; ``path`` empty, ending with a separator or naming
        an existing directory (matplotlib wrote ``./.png`` or ``<dir>.png`` beside it); ``path``
        without an extension (matplotlib wrote ``<path>.png``, nothing at ``path``) or with one
        matplotlib cannot write. These are checked before anything is created.
    """
    dpi = _check_dpi(dpi)
    if path is not None:
        p = os.fspath(path)
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if not p or os.path.isdir(p) or not os.path.basename(p):
            raise ValueError(
                f"path must name the PNG file to write, got {p!r}"
                + (" (an existing directory)" if p and os.path.isdir(p) else "")
            )
        ext = os.path.splitext(p)[1][1:].lower()
        formats = fig.canvas.get_supported_filetypes()
        if not ext:
            raise ValueError(
                f"path {p!r} has no file extension (matplotlib would write {p + '.png'!r}, "
                f"not {p!r}): pass {p + '.png'!r}, or another extension of {sorted(formats)}"
            )
        if ext not in formats:
            raise ValueError(
                f"path {p!r} has the extension {'.' + ext!r}, which matplotlib cannot write; "
                f"use .png or one of {sorted(formats)}"
            )
        directory = os.path.dirname(os.path.abspath(p))
        missing = []  # the directories this call creates, deepest first
        parent = directory
        while not os.path.exists(parent) and parent != os.path.dirname(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(directory, exist_ok=True)
        try:
            fig.savefig(p, dpi=dpi, format=ext)
        except BaseException:
            for created in missing:  # leave no empty directory behind a failed save
                try:
                    os.rmdir(created)
                except OSError:
                    break
            raise
    return fig


def plot_metric_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("loss", "map_at_r"),
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Per-epoch curves of several runs: one panel per history column, one line per run.

    Epochs where a column is NaN (metric not evaluated) are skipped; a ``<key>_std`` column, when
    present, is drawn as a +-1 std band.

    Args:
      histories: run label -> per-epoch history (list of dicts with ``epoch`` and the ``keys``), as in
        ``metriclearn.training.FitResult.history``.
      keys: the columns to plot, e.g. ``("loss", "map_at_r")``.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      title: figure title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure (``len(keys)`` axes, one line per run in each).

    Raises:
      ValueError: no histories, an empty history, no keys, or a history without one of the keys.

    Example::

        plot_metric_curves({"semi-hard": h1, "batch-hard": h2}, keys=("map_at_r",))
    """
    _check_mapping(histories, "histories", "run label -> per-epoch history")
    if not histories:
        raise ValueError("histories is empty: nothing to plot")
    if isinstance(keys, str):  # one column name, not its letters
        keys = (keys,)
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty: give at least one history column")
    for label, history in histories.items():
        _check_rows(history, f"history {label!r}")
        missing = [k for k in ("epoch", *keys) if k not in history[0]]
        if missing:
            raise ValueError(
                f"history {label!r} lacks the column(s) {missing}; got {sorted(history[0])}"
            )
    fig = Figure(figsize=(5 * len(keys), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys, strict=True):
        for label, history in histories.items():
            epoch = _column(history, "epoch")
            values = _column(history, key)
            ok = np.isfinite(values)
            (line,) = ax.plot(epoch[ok], values[ok], marker="o", markersize=3, label=label)
            if f"{key}_std" in history[0]:
                std = _column(history, f"{key}_std")[ok]
                ax.fill_between(
                    epoch[ok],
                    values[ok] - std,
                    values[ok] + std,
                    color=line.get_color(),
                    alpha=0.15,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(_LABELS.get(key, key))
        ax.set_title(_LABELS.get(key, key.replace("_", " ")))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def _pca_2d(X: np.ndarray) -> np.ndarray:
    """First two principal components of ``X`` ``[n, d]`` (zero-padded when ``d < 2``)."""
    Xc = X - X.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    Z = Xc @ vt[:2].T
    if Z.shape[1] < 2:
        Z = np.concatenate([Z, np.zeros((Z.shape[0], 2 - Z.shape[1]))], axis=1)
    # fix the sign of each component so the picture does not flip between runs
    signs = np.sign(Z[np.argmax(np.abs(Z), axis=0), [0, 1]])
    return Z * np.where(signs == 0, 1.0, signs)


def _check_mapping(value, name: str, what: str) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping {what}, got {type(value).__name__}")


def _check_xy(X, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"{name} must be [n, d] with n >= 2, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    # one kind of label, no NaN (NaN points were dropped from the scatter but kept in the legend;
    # mixed numbers and strings failed in np.unique with a raw TypeError)
    y = label_array(y, "y")
    if y.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape ({X.shape[0]},) to match {name}, got {y.shape}")
    return X, y


def _rescale_for_axes(X: np.ndarray) -> tuple[np.ndarray, str]:
    """``X`` scaled by a power of ten when its spread is below ``1e-100`` or its values beyond
    ``1e100`` (matplotlib's autoscale drew spreads below ~1e-285 as one point at the origin and
    overflows near 1e308), with the axis-label suffix naming the factor (``""`` when unscaled)."""
    exp = 0
    amax = float(np.max(np.abs(X)))
    if amax > 1e100:
        exp = math.floor(math.log10(amax))
        X = X / 10.0**exp
    Xc = X - X.mean(axis=0, keepdims=True)
    spread = float(np.max(np.abs(Xc)))
    if 0.0 < spread < 1e-100:
        e = math.floor(math.log10(spread))
        X = Xc / 10.0**e if e > -300 else (Xc * 1e300) / 10.0 ** (e + 300)
        exp += e
    if exp == 0:
        return X, ""
    return X, (f" (× 1e{-exp})" if exp < 0 else f" (/ 1e{exp})")


def plot_embedding_2d(
    X,
    y,
    path: str | os.PathLike | None = None,
    *,
    ax=None,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Scatter of the first two principal components of ``X``, coloured by class.

    Args:
      X: ``[n, d]`` data or embeddings.
      y: ``[n]`` class labels.
      path: file to write, e.g. ``"emb.png"`` (format from the extension; None: do not save;
        ignored when ``ax`` is given).
      ax: draw into this Axes instead of a new figure.
      title: axes title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure holding the scatter (data whose spread is below ``1e-100`` or whose values are
      beyond ``1e100`` is drawn scaled by a power of ten, named in the axis labels).

    Raises:
      ValueError: bad shapes, fewer than two rows, NaN/inf.
    """
    X, y = _check_xy(X, y, "X")
    X, unit = _rescale_for_axes(X)
    Z = _pca_2d(X)
    own = ax is None
    if own:
        fig = Figure(figsize=(5, 4.5), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    classes = np.unique(y)
    if len(classes) <= 20:
        cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        colors = [cmap(i % cmap.N) for i in range(len(classes))]
    else:  # a distinct colour per class (tab20 would repeat from class 20 on)
        colors = matplotlib.colormaps["turbo"](np.linspace(0.0, 1.0, len(classes)))
    for i, c in enumerate(classes):
        sel = y == c
        ax.scatter(Z[sel, 0], Z[sel, 1], s=12, alpha=0.8, color=colors[i], label=str(c))
    ax.set_xlabel(f"PC 1{unit}")
    ax.set_ylabel(f"PC 2{unit}")
    if title:
        ax.set_title(title)
    ax.legend(
        title="class",
        loc="best",
        fontsize="x-small",
        markerscale=1.5,
        ncol=2 if len(classes) > 5 else 1,
    )
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi) if own else fig


def plot_embedding_before_after(
    X_before,
    X_after,
    y,
    path: str | os.PathLike | None = None,
    *,
    titles: tuple[str, str] = ("before metric learning", "after metric learning"),
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Two PCA scatters side by side: the input and its image under a learned map (or network).

    Args:
      X_before: ``[n, d]`` input.
      X_after: ``[n, k]`` the same rows after learning (e.g. ``learner.transform(X)``).
      y: ``[n]`` class labels.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      titles: titles of the two panels (two strings; ``None`` for no title).
      title: figure title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure (two axes).

    Raises:
      ValueError: bad shapes, fewer than two rows, NaN/inf; ``titles`` not a pair of strings (or
        ``None`` entries for no title).
    """
    if (
        isinstance(titles, str | bytes)
        or not isinstance(titles, Sequence)
        or len(titles) != 2
        or not all(t is None or isinstance(t, str) for t in titles)
    ):
        raise ValueError(
            f"titles must be a pair (title of the left panel, title of the right panel) of strings "
            f"or None, got {titles!r}"
        )
    X_before, y = _check_xy(X_before, y, "X_before")
    if np.ndim(X_after) >= 1 and np.shape(X_after)[0] != X_before.shape[0]:  # before the labels
        raise ValueError(
            f"X_before and X_after must have the same rows, got {X_before.shape} and "
            f"{np.shape(X_after)}"
        )
    X_after, _ = _check_xy(X_after, y, "X_after")
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    plot_embedding_2d(X_before, y, ax=ax0, title=titles[0])
    plot_embedding_2d(X_after, y, ax=ax1, title=titles[1])
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def plot_mahalanobis_matrix(
    M,
    path: str | os.PathLike | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Heatmap of a Mahalanobis matrix ``M`` ``[d, d]`` (diverging colours centred at 0).

    Args:
      M: ``[d, d]`` symmetric matrix, e.g. ``learner.get_mahalanobis_matrix()``.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      feature_names: ``d`` tick labels (default: indices; ticks are omitted beyond 30 features).
      title: axes title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure (the heatmap axes and its colour bar; an ``M`` whose largest ``|M[i, j]|`` is beyond
      ``1e100`` or below ``1e-100`` is drawn scaled by a power of ten, named in the colour bar label).

    Raises:
      ValueError: ``M`` not square 2-D, complex, NaN/inf, not symmetric (within
        :func:`metriclearn.psd.default_tol` of its dtype: e.g. a square ``components_`` ``L`` passed
        for ``M = LᵀL``), or ``feature_names`` of the wrong length.
    """
    raw = np.asarray(M)
    if raw.dtype.kind == "c":  # the cast dropped the imaginary part with only a ComplexWarning
        raise ValueError(f"M must be real, got complex dtype {raw.dtype}")
    tol_dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.float64
    M = np.asarray(raw, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"M must be a square [d, d] matrix with d >= 1, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("M contains NaN or inf")
    asym = float(np.max(np.abs(M - M.T)))
    if asym > default_tol(tol_dtype, M.shape[0]) * float(np.max(np.abs(M))):
        raise ValueError(
            f"M must be symmetric (a Mahalanobis matrix), but max |M - Mᵀ| = {asym:.3g}; pass "
            "learner.get_mahalanobis_matrix() (M = LᵀL), not components_ (L)"
        )
    d = M.shape[0]
    if feature_names is not None and len(feature_names) != d:
        raise ValueError(f"feature_names must have {d} entries, got {len(feature_names)}")
    vmax = float(np.max(np.abs(M))) or 1.0
    cbar_label = "M[i, j]"
    if not 1e-100 < vmax < 1e100:
        # matplotlib computes vmax - vmin (inf for 1e308: "Axis limits cannot be NaN or Inf") and
        # loses tiny ranges: draw M scaled by a power of ten and say so on the colour bar
        exp = math.floor(math.log10(vmax))
        M = M / 10.0**exp if exp > -300 else (M * 1e300) / 10.0 ** (exp + 300)
        vmax = float(np.max(np.abs(M)))
        cbar_label = f"M[i, j] × 1e{-exp}" if exp < 0 else f"M[i, j] / 1e{exp}"
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=cbar_label)
    if d <= 30:
        names = list(feature_names) if feature_names is not None else [str(i) for i in range(d)]
        ax.set_xticks(range(d), names, rotation=90 if feature_names is not None else 0, fontsize=8)
        ax.set_yticks(range(d), names, fontsize=8)
    ax.set_xlabel("feature j")
    ax.set_ylabel("feature i")
    ax.set_title(title or "learned Mahalanobis matrix M")
    return _save(fig, path, dpi)


def plot_accuracy_bars(
    results: Mapping[str, Mapping[str, float | tuple[float, float]]],
    path: str | os.PathLike | None = None,
    *,
    ylabel: str = "3-NN accuracy",
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
    dpi: int = 120,
) -> Figure:
    """Grouped bars: one group per data set, one bar per learner, error bars = std over folds.

    Args:
      results: learner -> {data set: mean or (mean, std)}; NaN / None / missing cells (failures)
        leave a gap; a NaN std draws no error bar.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      ylabel: y-axis label.
      title: axes title.
      ylim: y-axis range (default, for means up to 1: from just below the lowest bar (its error bar
        included) to 1, or to 2% above the highest error bar when that passes 1; for means above 1
        such as percentages: from 0 to 2% above the highest error bar).
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure (one axes; one bar container per learner).

    Raises:
      ValueError: empty results; a cell that is not a number, None or a (mean, std) pair of numbers,
        an infinite mean, or an infinite or negative std (naming ``results[learner][data set]``).
    """
    _check_mapping(results, "results", "learner -> {data set: mean or (mean, std)}")
    for learner, cells in results.items():
        _check_mapping(cells, f"results[{learner!r}]", "data set -> mean or (mean, std)")
    if not results or not any(results.values()):
        raise ValueError("results is empty: nothing to plot")
    learners = list(results)
    datasets: list[str] = []
    for cells in results.values():
        datasets += [d for d in cells if d not in datasets]

    def split(v, name: str) -> tuple[float, float]:
        """``(mean, std)`` of a cell; ``ValueError`` naming it for anything but a number, None or a
        pair of numbers, and for an infinite mean (inf drew empty axes, -inf a gap like a failure)
        or an infinite / negative std."""
        if isinstance(v, tuple | list):
            if len(v) != 2:
                raise ValueError(f"{name} must be a mean or a (mean, std) pair, got {v!r}")
            mean, std = as_real(v[0], f"{name} mean"), as_real(v[1], f"{name} std")
        else:
            if v is not None and np.ndim(v) != 0:
                raise ValueError(f"{name} must be a mean or a (mean, std) pair, got {v!r}")
            mean, std = (math.nan if v is None else as_real(v, name)), 0.0
        if math.isinf(mean):
            raise ValueError(f"{name} has an infinite mean {mean}; use NaN for a failure (a gap)")
        if math.isinf(std) or std < 0:
            raise ValueError(f"{name} std must be finite and >= 0 (or NaN), got {std}")
        # a NaN std (one fold) draws no error bar; it hid the bar (NaN in the axis limits)
        return mean, std if math.isfinite(std) else 0.0

    table = {
        learner: [
            split(results[learner].get(d, math.nan), f"results[{learner!r}][{d!r}]")
            for d in datasets
        ]
        for learner in learners
    }

    fig = Figure(
        figsize=(max(6.0, 1.6 * len(datasets) + 0.25 * len(learners) * len(datasets)), 4.5),
        layout="constrained",
    )
    ax = fig.subplots()
    width = 0.8 / len(learners)
    x = np.arange(len(datasets))
    lows, highs, finite_means = [], [], []
    cmap = matplotlib.colormaps["tab20"]
    for i, learner in enumerate(learners):
        cells = table[learner]
        means = np.array([c[0] for c in cells])
        stds = np.array([c[1] for c in cells])
        lows += list((means - stds)[np.isfinite(means)])
        highs += list((means + stds)[np.isfinite(means)])
        finite_means += list(means[np.isfinite(means)])
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            np.nan_to_num(means, nan=0.0),
            width,
            yerr=np.where(np.isfinite(means), stds, 0.0),
            label=learner,
            color=cmap(i % cmap.N),
            capsize=2,
        )
    ax.set_xticks(x, datasets)
    ax.set_xlabel("data set")
    ax.set_ylabel(ylabel)
    if ylim is None and lows:
        # accuracies sit in [0, 1]: from just below the lowest bar to 1, or just past the highest
        # error bar when it passes 1; scores above 1 (percentages) from 0. The zoom once depended on
        # the top being exactly 1, so a bar of 0.99 (top * 1.02 > 1) lost it.
        top = max(highs)
        upper = 1.0 if top <= 1.0 else top * 1.02
        low = min(lows)
        if low < 0:  # negative scores: below the lowest bar (0 as the floor hid them)
            lower = low - 0.05 * (upper - low)
        elif max(finite_means) <= 1.0:
            lower = max(0.0, math.floor(20 * low) / 20 - 0.05)
        else:
            lower = 0.0
        ylim = (min(lower, upper), upper)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title or f"{ylabel} by learner and data set")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, dpi)


def plot_retrieval_examples(
    query_images,
    query_labels,
    ref_images,
    ref_labels,
    neighbors: Mapping[str, np.ndarray],
    path: str | os.PathLike | None = None,
    *,
    image_shape: tuple[int, int] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Queries and their nearest neighbours as images, one block of rows per metric.

    Each row shows a query (first column) then its ``k`` nearest references in order; a neighbour with
    the query's label is framed green, a wrong one red, and its label is printed above it.

    Args:
      query_images: ``[q, h*w]`` or ``[q, h, w]`` query images.
      query_labels: ``[q]``.
      ref_images: ``[n, h*w]`` or ``[n, h, w]`` reference images.
      ref_labels: ``[n]``.
      neighbors: metric label -> ``[q, k]`` indices into the references (nearest first), e.g.
        ``{"Euclidean": idx_before, "after NCA": idx_after}``.
      path: file to write, e.g. ``"curves.png"`` (format from the extension; None: do not save).
      image_shape: ``(h, w)`` of flattened images (default: square).
      title: figure title.
      dpi: resolution of the saved image (a finite number > 0).

    Returns:
      The Figure (``len(neighbors) * q`` rows of ``k + 1`` axes).

    Raises:
      ValueError: ``neighbors`` not a mapping or empty, images with NaN or inf (naming
        ``query_images`` or ``ref_images``), mismatched shapes, indices out of range, non-square
        flat images without ``image_shape``, ``image_shape`` not two positive integers, labels that
        are not 1-D numbers or strings, or query and reference labels of different kinds (numbers
        vs strings).
    """
    _check_mapping(neighbors, "neighbors", "metric label -> [q, k] index array")
    if not neighbors:
        raise ValueError("neighbors is empty: give at least one metric's [q, k] index array")
    if image_shape is not None:
        if isinstance(image_shape, np.ndarray):
            pair = image_shape.ndim == 1 and len(image_shape) == 2
        else:
            pair = (
                isinstance(image_shape, Sequence)
                and not isinstance(image_shape, str | bytes)
                and len(image_shape) == 2
            )
        if not pair:
            raise ValueError(f"image_shape must be a pair (h, w) of integers, got {image_shape!r}")
        image_shape = (
            check_positive_int(image_shape[0], "image_shape[0] (h)"),
            check_positive_int(image_shape[1], "image_shape[1] (w)"),
        )
    qi = np.asarray(query_images, dtype=np.float64)
    ri = np.asarray(ref_images, dtype=np.float64)
    for a, name in ((qi, "query_images"), (ri, "ref_images")):
        if not np.all(np.isfinite(a)):  # NaN / inf pixels were drawn as blank tiles
            raise ValueError(f"{name} contains NaN or inf")
    # one kind of label on both sides: a query "0" never equals a reference 0 (every neighbour was
    # framed red)
    ql, rl = label_array(query_labels, "query_labels"), label_array(ref_labels, "ref_labels")
    check_comparable_labels(ql, rl, "query_labels", "ref_labels")
    if ql.shape != (qi.shape[0],) or rl.shape != (ri.shape[0],):
        raise ValueError(
            f"labels must match the images: query {qi.shape} / {ql.shape}, ref {ri.shape} / {rl.shape}"
        )

    def as_images(a: np.ndarray, name: str) -> np.ndarray:
        if a.ndim == 3:
            return a
        if a.ndim != 2:
            raise ValueError(f"{name} must be [n, h*w] or [n, h, w], got shape {a.shape}")
        if image_shape is not None:
            h, w = image_shape
        else:
            h = w = int(round(math.sqrt(a.shape[1])))
        if h * w != a.shape[1]:
            raise ValueError(
                f"{name} rows of {a.shape[1]} values are not {h}x{w} images; pass image_shape"
            )
        return a.reshape(a.shape[0], h, w)

    qi, ri = as_images(qi, "query_images"), as_images(ri, "ref_images")
    if qi.shape[0] == 0 or ri.shape[0] == 0:
        raise ValueError("query_images and ref_images need at least one image each")
    idx = {}
    for label, nb in neighbors.items():
        nb = np.asarray(nb)
        if nb.dtype.kind not in "iu" and not (
            nb.dtype.kind == "f" and np.all(np.isfinite(nb)) and np.all(nb == np.round(nb))
        ):
            raise ValueError(f"neighbors[{label!r}] must hold integer indices, got {nb.dtype}")
        if nb.ndim != 2 or nb.shape[0] != qi.shape[0]:
            raise ValueError(
                f"neighbors[{label!r}] must be [q={qi.shape[0]}, k], got shape {nb.shape}"
            )
        if nb.size and (nb.min() < 0 or nb.max() >= ri.shape[0]):
            raise ValueError(f"neighbors[{label!r}] has indices outside [0, {ri.shape[0]})")
        idx[label] = nb.astype(int)
    k = max(nb.shape[1] for nb in idx.values())
    q = qi.shape[0]
    rows = q * len(idx)
    fig = Figure(figsize=(1.1 * (k + 1) + 1.2, 1.15 * rows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(rows, k + 1, squeeze=False))
    for b, (label, nb) in enumerate(idx.items()):
        for r in range(q):
            row = axes[b * q + r]
            row[0].imshow(qi[r], cmap="gray_r", interpolation="nearest")
            row[0].set_title(f"query {ql[r]}", fontsize=8)
            if r == 0:
                row[0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
            for j in range(k):
                ax = row[j + 1]
                if j >= nb.shape[1]:
                    ax.axis("off")
                    continue
                n = nb[r, j]
                ax.imshow(ri[n], cmap="gray_r", interpolation="nearest")
                ok = rl[n] == ql[r]
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green" if ok else "tab:red")
                    spine.set_linewidth(2.5)
                ax.set_title(str(rl[n]), fontsize=8, color="tab:green" if ok else "tab:red")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)
