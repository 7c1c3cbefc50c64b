"""Deep metric learning quality over many seeds: metriclearn vs pytorch-metric-learning, ANCHORS protocol.

The anchors in ``../shared/ANCHORS.md`` are one seed of pytorch-metric-learning (PML). On digits one
test query is 0.0019 of P@1 and seeds spread MAP@R by about +-0.009, so a single seed cannot tell two
implementations apart. This runs the protocol (MLP 64 -> 256 -> 256 -> 64, Adam 1e-3,
``MPerClassSampler(m=16, batch_size=128, length_before_new_iter=len(train))``, 30 epochs, digits
70/30 split or MNIST-1D's own split) for seeds ``0 .. n-1`` in both libraries and prints the mean +-
std of P@1 and MAP@R, and Welch's t-test p-value for the difference of the means.

Both libraries' test embeddings are scored by :func:`metriclearn.evaluation.retrieval_metrics`
(query = reference, self excluded; PML's ``AccuracyCalculator`` needs faiss, which is not installed
here). PML seed 0 reproduces its anchor exactly (P@1 .9685, MAP@R .8789). PML is seeded with
``torch.manual_seed(seed)`` and ``np.random.seed(seed)`` (its sampler draws from NumPy's global
generator); metriclearn with ``seed`` in :func:`metriclearn.training.train_and_evaluate`.

Run::

    python -m benchmarks.deep_quality                     # 60 seeds, triplet + semihard and contrastive
    python -m benchmarks.deep_quality --quick             # 2 seeds (smoke test)
    python -m benchmarks.deep_quality --seeds 10 --losses triplet
    python -m benchmarks.deep_quality --dataset mnist1d --seeds 20
    python -m benchmarks.deep_quality --dataset mnist1d --losses triplet --first-seed 60 --seeds 60
    python -m benchmarks.deep_quality --dataset mnist1d --trajectory   # our gradient along PML's run
    python -m benchmarks.deep_quality --dataset mnist1d --losses triplet --decompose init,sampler,step
    python -m benchmarks.deep_quality --dataset mnist1d --losses triplet --pml-numpy-offset 100003
    python -m benchmarks.deep_quality --dataset mnist1d --losses triplet --pml-numpy-offset 0,100003
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import _timing

EPOCHS = 30
# name -> metriclearn train_and_evaluate settings (PML: benchmarks.deep.pml_loss_and_miner(name))
LOSSES: dict[str, dict[str, Any]] = {
    "triplet": {
        "loss": "triplet_margin",
        "loss_kwargs": {"margin": 0.2},
        "miner": "semihard",
        "miner_kwargs": {"margin": 0.2},
    },
    "contrastive": {"loss": "contrastive"},
}


DATASETS = ("digits", "mnist1d")


def ours(loss: str, seed: int, dataset: str = "digits") -> tuple[float, float]:
    """``(P@1, MAP@R)`` of metriclearn's run of the protocol at ``seed``."""
    from metriclearn import training

    cfg = {"dataset": dataset, "seed": seed, "epochs": EPOCHS, "eval_every": EPOCHS}
    cfg.update(LOSSES[loss], progress=False)
    with tempfile.TemporaryDirectory() as workdir:
        res = training.train_and_evaluate(cfg, workdir)
    return float(res["precision_at_1"]), float(res["map_at_r"])


def pml(
    loss: str, seed: int, split, step_hook=None, numpy_seed: int | None = None
) -> tuple[float, float]:
    """``(P@1, MAP@R)`` of pytorch-metric-learning's run of the protocol at ``seed``
    (:func:`benchmarks.deep.pml_train`, :data:`EPOCHS` epochs; its sampler seeded with
    ``numpy_seed`` if given).

    ``step_hook(embeddings, labels, loss, d loss / d embeddings)``, if given, sees every training
    step's batch (NumPy arrays and a float) after PML's backward pass.
    """
    import torch

    from benchmarks.deep import pml_train
    from metriclearn import evaluation

    X, y, X_test, y_test = split
    net = pml_train(loss, seed, X, y, epochs=EPOCHS, step_hook=step_hook, numpy_seed=numpy_seed)
    with torch.no_grad():
        emb = net(torch.tensor(X_test, dtype=torch.float32)).numpy()
    res = evaluation.retrieval_metrics(emb, y_test)
    return float(res["precision_at_1"]), float(res["map_at_r"])


def our_loss(loss: str, y: np.ndarray):
    """Our loss spec for a :data:`LOSSES` name, built as ``train_and_evaluate`` builds it."""
    from metriclearn import training

    cfg = {**training.default_config(), **LOSSES[loss]}
    return training._loss_from_config(cfg, n_classes=len(np.unique(y)))


TRAJECTORY_HEADER = [
    "loss",
    "steps",
    "largest loss difference",
    "gradient: median relative difference",
    "gradient: largest relative difference",
    "steps above 1e-4",
]


def trajectory(loss: str, seed: int, split) -> list[Any]:
    """Our loss and gradient on every batch of a PML training run, against PML's own.

    PML trains as in :func:`pml`. At every step, our loss (built as ``fit`` builds it) differentiates
    the very embeddings PML's network produced, in float32. The relative difference of a step is
    ``max |g_ours - g_pml| / max |g_pml|``. Returns a row of :data:`TRAJECTORY_HEADER`.
    """
    import jax
    import jax.numpy as jnp

    spec = our_loss(loss, split[1])
    value_and_grad = jax.jit(jax.value_and_grad(spec.apply, argnums=1))
    key = jax.random.key(0)
    loss_gaps, grad_gaps = [], []

    def compare(emb, labels, pml_value, pml_grad):
        value, grad = value_and_grad({}, jnp.asarray(emb), jnp.asarray(labels, jnp.int32), key)
        loss_gaps.append(abs(float(value) - pml_value))
        scale = float(np.abs(pml_grad).max())
        gap = float(np.abs(np.asarray(grad) - pml_grad).max())
        grad_gaps.append(gap / scale if scale > 0 else gap)

    pml(loss, seed, split, step_hook=compare)
    g = np.asarray(grad_gaps)
    return [
        loss,
        len(g),
        max(loss_gaps),
        float(np.median(g)),
        float(g.max()),
        int((g > 1e-4).sum()),
    ]


PARTS = ("init", "sampler", "step")


def decompose(
    part: str, loss: str, seed: int, split
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(PML's (P@1, MAP@R), the variant's)`` at ``seed``: PML's run with one part made ours.

    ``init``: PML's loop from our MLP's initial weights (``training.create_train_state`` at ``seed``).
    ``sampler``: PML's loop on our m-per-class batches (``sampling.m_per_class_sampler``).
    ``step``: our jitted training epoch (``training.make_train_epoch``: loss, miner, MLP, Adam) from
    PML's initial weights on PML's own batches. Both runs of a seed share everything else, so their
    difference measures that part alone.
    """
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from benchmarks import deep
    from metriclearn import evaluation, sampling, training

    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
    X, y, X_test, y_test = split
    model, spec = deep.protocol_model(), our_loss(loss, y)
    opt = optax.adam(deep.LEARNING_RATE)

    def scores(emb):
        res = evaluation.retrieval_metrics(np.asarray(emb), y_test)
        return float(res["precision_at_1"]), float(res["map_at_r"])

    def pml_scores(net):
        with torch.no_grad():
            return scores(net(torch.tensor(X_test, dtype=torch.float32)).numpy())

    record: list | None = [] if part == "step" else None  # PML's batches, for our step
    reference = pml_scores(deep.pml_train(loss, seed, X, y, epochs=EPOCHS, record=record))
    if part == "init":
        ours_init = training.create_train_state(seed, model, spec, opt, X[:1]).params
        variant = pml_scores(deep.pml_train(loss, seed, X, y, epochs=EPOCHS, init_params=ours_init))
    elif part == "sampler":
        sample = sampling.m_per_class_sampler(y, m=deep.M_PER_CLASS, batch_size=deep.BATCH_SIZE)
        key = jax.random.key(seed)
        variant = pml_scores(
            deep.pml_train(
                loss,
                seed,
                X,
                y,
                epochs=EPOCHS,
                batches=lambda e: np.asarray(sample(jax.random.fold_in(key, e))),
            )
        )
    else:
        torch.manual_seed(seed)
        pml_init = deep.flax_mlp_params(deep.pml_mlp(X.shape[1]))  # what pml_train started from
        epoch = training.make_train_epoch(model, spec, opt)
        state = training.create_train_state(seed, model, spec, opt, X[:1])
        state = state._replace(params=pml_init, opt_state=opt.init((pml_init, state.loss_params)))
        Xd, yd = jnp.asarray(X), jnp.asarray(y, jnp.int32)
        for idx in record:
            state, _ = epoch(state, Xd, yd, jnp.asarray(idx, jnp.int32))
        variant = scores(model.apply(state.params, jnp.asarray(X_test), train=False))
    return reference, variant


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test for equal means."""
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def run(
    n_seeds: int,
    losses: Sequence[str],
    log=print,
    dataset: str = "digits",
    first_seed: int = 0,
    pml_numpy_offsets: Sequence[int] = (0,),
) -> list[list[Any]]:
    """Table rows of :func:`run_header`: per loss and metric, our mean ± std, then per PML run its mean
    ± std, our difference and Welch's p; with a second offset also that run minus the first, paired.

    Seeds ``first_seed .. first_seed + n_seeds - 1`` (a later batch of seeds extends an earlier run).
    PML trains once per entry of ``pml_numpy_offsets``, its sampler seeded with ``seed + offset``:
    ``0`` is the protocol as written (``np.random.seed(seed)``), another offset uncouples its batches
    from its initial weights (:func:`benchmarks.deep.pml_train`). The runs of one seed share PML's
    initial weights, so their difference is paired.
    """
    from scipy import stats

    from metriclearn import training

    offsets = list(pml_numpy_offsets)
    if not offsets or min(offsets) < 0:
        raise ValueError(f"pml_numpy_offsets must be non-negative integers, got {offsets}")
    X, y, X_test, y_test, _ = training.load_split(dataset)
    split = (X, y, X_test, y_test)
    rows = []
    for loss in losses:
        ours_scores: list[tuple[float, float]] = []
        pml_scores: list[list[tuple[float, float]]] = [[] for _ in offsets]
        for seed in range(first_seed, first_seed + n_seeds):
            t0 = time.perf_counter()
            ours_scores.append(ours(loss, seed, dataset))
            for runs, offset in zip(pml_scores, offsets):
                numpy_seed = seed + offset if offset else None
                runs.append(pml(loss, seed, split, numpy_seed=numpy_seed))
            theirs = ", ".join(
                f"PML{_offset_label(o)} {r[-1][0]:.4f} / {r[-1][1]:.4f}"
                for o, r in zip(offsets, pml_scores)
            )
            log(
                f"  {loss} seed {seed}: ours P@1 / MAP@R {ours_scores[-1][0]:.4f} / "
                f"{ours_scores[-1][1]:.4f}, {theirs} ({time.perf_counter() - t0:.1f} s)"
            )
        a = np.asarray(ours_scores)
        bs = [np.asarray(r) for r in pml_scores]
        for col, metric in enumerate(("P@1", "MAP@R")):
            row = [loss, metric, f"{a[:, col].mean():.4f} ± {a[:, col].std(ddof=1):.4f}"]
            for b in bs:
                row += [
                    f"{b[:, col].mean():.4f} ± {b[:, col].std(ddof=1):.4f}",
                    f"{a[:, col].mean() - b[:, col].mean():+.4f}",
                    f"{welch_p(a[:, col], b[:, col]):.3f}",
                ]
            for b in bs[1:]:
                d = b[:, col] - bs[0][:, col]
                row += [
                    f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}",
                    f"{stats.ttest_rel(b[:, col], bs[0][:, col]).pvalue:.3f}",
                ]
            rows.append(row)
    return rows


def _offset_label(offset: int) -> str:
    return f" (sampler seed + {offset})" if offset else ""


def run_header(pml_numpy_offsets: Sequence[int] = (0,)) -> list[str]:
    """Column names of :func:`run`'s rows."""
    offsets = list(pml_numpy_offsets)
    header = ["loss", "metric", "metriclearn"]
    for o in offsets:
        header += [f"pytorch-metric-learning{_offset_label(o)}", "difference", "Welch p"]
    first = _offset_label(offsets[0]).strip() or "(as written)"
    for o in offsets[1:]:
        header += [f"PML{_offset_label(o)} - PML {first}", "paired p"]
    return header


DECOMPOSE_HEADER = [
    "part made ours",
    "metric",
    "PML",
    "PML with that part ours",
    "paired difference ± s.e.",
    "paired p",
]


def decompose_run(
    part: str,
    n_seeds: int,
    loss: str = "triplet",
    dataset: str = "mnist1d",
    first_seed: int = 0,
    log=print,
) -> list[list[Any]]:
    """Rows of :data:`DECOMPOSE_HEADER`: :func:`decompose` over seeds, paired t-test per metric."""
    from scipy import stats

    from metriclearn import training

    X, y, X_test, y_test, _ = training.load_split(dataset)
    pairs = []
    for seed in range(first_seed, first_seed + n_seeds):
        ref, var = decompose(part, loss, seed, (X, y, X_test, y_test))
        pairs.append((ref, var))
        log(
            f"  {part} seed {seed}: PML {ref[0]:.4f} / {ref[1]:.4f}, variant {var[0]:.4f} / {var[1]:.4f}"
        )
    a = np.asarray([p[0] for p in pairs])
    b = np.asarray([p[1] for p in pairs])
    rows = []
    for col, metric in enumerate(("P@1", "MAP@R")):
        d = b[:, col] - a[:, col]
        rows.append(
            [
                part,
                metric,
                f"{a[:, col].mean():.4f}",
                f"{b[:, col].mean():.4f}",
                f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}",
                f"{stats.ttest_rel(b[:, col], a[:, col]).pvalue:.3f}",
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,  # --quick's 2 only where --seeds is not given
        help="how many seeds, in both libraries (default 60, --quick 2)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds (unless --seeds is given): a smoke test"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first .. first + n - 1 (default 0)"
    )
    parser.add_argument(
        "--losses",
        default=None,
        help="comma list: triplet, contrastive (default both; --decompose: one loss, default triplet)",
    )
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument(
        "--trajectory",
        action="store_true",
        help="instead: PML's run at --first-seed, our loss and gradient on each of its batches",
    )
    parser.add_argument(
        "--decompose",
        default="",
        help="instead: PML's runs with one part made ours (comma list of init, sampler, step), paired",
    )
    parser.add_argument(
        "--pml-numpy-offset",
        default="0",
        help="seed PML's sampler (NumPy) with seed + N, not seed: PyTorch and NumPy draw the same "
        "MT19937 stream from one integer seed, which couples PML's initial weights to its batches. "
        "A comma list (e.g. 0,100003) trains PML once per offset and compares the runs, paired",
    )
    args = parser.parse_args(argv)
    # --trajectory and --decompose are modes of their own: refuse what they would silently drop
    decomposing = any(p.strip() for p in args.decompose.split(","))
    if args.decompose.strip() and not decomposing:  # "--decompose=," ran the seed comparison
        parser.error(f"--decompose names no part, got {args.decompose!r}")
    if args.trajectory and decomposing:
        parser.error("--trajectory and --decompose are separate modes; give one")
    if args.trajectory and (args.seeds is not None or args.quick):
        parser.error("--trajectory runs one seed (--first-seed); --seeds and --quick do not apply")
    if args.losses is None:
        args.losses = "triplet" if decomposing else "triplet,contrastive"
    if args.seeds is None:
        args.seeds = 2 if args.quick else 60
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = sorted(set(losses) - set(LOSSES))
    if unknown or not losses:
        parser.error(f"unknown loss(es) {unknown}; valid: {', '.join(LOSSES)}")
    if args.first_seed < 0:
        parser.error("--first-seed must be >= 0")
    try:
        offsets = [int(v) for v in args.pml_numpy_offset.split(",") if v.strip()]
    except ValueError:
        offsets = []
    if not offsets or min(offsets) < 0 or len(set(offsets)) < len(offsets):
        parser.error(
            "--pml-numpy-offset must be distinct integers >= 0, comma separated (NumPy seeds are "
            f"non-negative), got {args.pml_numpy_offset!r}"
        )
    parts = [p.strip() for p in args.decompose.split(",") if p.strip()]
    if sorted(set(parts) - set(PARTS)):
        parser.error(
            f"unknown part(s) {sorted(set(parts) - set(PARTS))}; valid: {', '.join(PARTS)}"
        )
    if parts and len(losses) > 1:
        parser.error(f"--decompose takes one loss, got --losses={args.losses!r}")
    if (parts or args.trajectory) and offsets != [0]:
        mode = "--decompose" if parts else "--trajectory"
        parser.error(
            f"--pml-numpy-offset applies to the seed comparison only; {mode} seeds PML as written "
            f"(offset 0), got {args.pml_numpy_offset!r}"
        )
    if parts:
        if args.seeds < 2:
            parser.error("--seeds must be at least 2 (a standard error needs two runs)")
        print(_timing.machine_line())
        print(
            f"{args.dataset}, {losses[0]}, {EPOCHS} epochs, seeds {args.first_seed}.."
            f"{args.first_seed + args.seeds - 1}: PML's run and PML's run with one part ours\n"
        )
        rows = [
            row
            for part in parts
            for row in decompose_run(
                part, args.seeds, losses[0], args.dataset, first_seed=args.first_seed
            )
        ]
        print(_timing.markdown_table(DECOMPOSE_HEADER, rows))
        return 0
    if args.trajectory:
        from metriclearn import training

        X, y, X_test, y_test, _ = training.load_split(args.dataset)
        print(_timing.machine_line())
        print(
            f"{args.dataset}, PML's run of the protocol at seed {args.first_seed}, {EPOCHS} epochs\n"
        )
        rows = [trajectory(loss, args.first_seed, (X, y, X_test, y_test)) for loss in losses]
        print(_timing.markdown_table(TRAJECTORY_HEADER, rows))
        return 0
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a standard deviation needs two runs)")
    last = args.first_seed + args.seeds - 1
    print(_timing.machine_line())
    print(
        f"{args.dataset}, ANCHORS protocol, {EPOCHS} epochs, seeds {args.first_seed}..{last} in both "
        "libraries\n"
    )
    if offsets != [0]:
        print(f"PML's sampler seeded with seed + N, N in {offsets}\n")
    rows = run(
        args.seeds,
        losses,
        dataset=args.dataset,
        first_seed=args.first_seed,
        pml_numpy_offsets=offsets,
    )
    print(_timing.markdown_table(run_header(offsets), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
