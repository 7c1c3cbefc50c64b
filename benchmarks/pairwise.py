"""Throughput of ``metriclearn.distances.pairwise`` against a plain matmul, SciPy and scikit-learn.

Run::

    python -m benchmarks.pairwise                       # 4096 x 512 vs 4096 x 512, float32
    python -m benchmarks.pairwise --n 4096 --d 512 --repeats 7
    python -m benchmarks.pairwise --quick               # small shapes (smoke test)

Every candidate computes an ``[n, m]`` block of distances between rows of ``X`` (``[n, d]``) and
``Y`` (``[m, d]``); throughput is quoted as GFLOP/s-equivalent, counting ``2·rows·m·d`` flops for every
candidate (a matmul's count), so the jitted matmul ``X @ Y.T`` of the same shapes is the ceiling.
The Mahalanobis candidates do extra work (``X @ L.T`` or ``X @ M``: ``2·(n+m)·d²`` more flops), which the
equivalent count deliberately ignores.

SciPy's ``cdist`` is a per-pair C loop whose throughput does not depend on ``n``, so it is timed on the
first ``--scipy-rows`` rows of ``X`` (``--maha-rows`` for ``cdist(metric="mahalanobis")``, which is far
slower) and compared by throughput; scikit-learn and the JAX candidates run the full ``n`` rows.
All candidates are called once (first call = compile time for jitted ones, reported apart), then run
round-robin ``--repeats`` times (``benchmarks._timing.alternate``); medians are quoted.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._timing import alternate, machine_line, markdown_table, ratio
from metriclearn import distances

TARGET = 0.70  # Euclidean pairwise throughput / matmul throughput
# sizes: default mode, and --quick (each only where the command line gives none)
FULL = {"n": 4096, "d": 512, "repeats": 7, "scipy_rows": 512, "maha_rows": 2}
QUICK = {"n": 256, "d": 32, "repeats": 2, "scipy_rows": 64, "maha_rows": 8}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairwise", description=__doc__.splitlines()[0]
    )

    # sizes default to None: --quick fills in its small sizes only where none was given
    def size(flag: str, name: str, text: str) -> None:
        parser.add_argument(
            flag,
            type=int,
            default=None,
            help=f"{text} (default {FULL[name]}, --quick {QUICK[name]})",
        )

    size("--n", "n", "rows of X")
    parser.add_argument("--m", type=int, default=None, help="rows of Y (default: n)")
    size("--d", "d", "features")
    size("--repeats", "repeats", "timed round-robin repetitions")
    size("--scipy-rows", "scipy_rows", "rows of X timed with cdist")
    size("--maha-rows", "maha_rows", "rows timed with cdist(metric='mahalanobis')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small shapes, 2 repeats (smoke test); sizes given explicitly are kept",
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    args.m = args.n if args.m is None else args.m
    args.scipy_rows = min(args.scipy_rows, args.n)
    args.maha_rows = min(args.maha_rows, args.n)
    for name in ("n", "m", "d", "repeats", "scipy_rows", "maha_rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _candidates(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    """Zero-argument callables, rows each one computes, and the metric each one computes."""
    from scipy.spatial.distance import cdist
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(args.seed)
    Xn = rng.standard_normal((args.n, args.d)).astype(np.float32)
    Yn = rng.standard_normal((args.m, args.d)).astype(np.float32)
    Ln = (rng.standard_normal((args.d, args.d)) / np.sqrt(args.d)).astype(np.float32)
    Mn = Ln.T @ Ln
    X, Y, L, M = (jnp.asarray(a) for a in (Xn, Yn, Ln, Mn))

    matmul = jax.jit(lambda a, b: a @ b.T)
    eu = jax.jit(functools.partial(distances.pairwise, "euclidean"))
    sq = jax.jit(functools.partial(distances.pairwise, "sqeuclidean"))
    cos = jax.jit(functools.partial(distances.pairwise, "cosine"))
    maha = jax.jit(lambda a, b, **kw: distances.pairwise("mahalanobis", a, b, **kw))

    s, r = args.scipy_rows, args.maha_rows
    Xs = Xn[:s]
    XLs, YL = Xs @ Ln.T, Yn @ Ln.T
    Mn64 = Mn.astype(np.float64)
    cands: dict[str, Any] = {
        "matmul X@Y.T (XLA, jit)": lambda: matmul(X, Y),
        "matmul X@Y.T (NumPy/BLAS)": lambda: Xn @ Yn.T,
        "pairwise euclidean (jit)": lambda: eu(X, Y),
        "pairwise sqeuclidean (jit)": lambda: sq(X, Y),
        "pairwise cosine (jit)": lambda: cos(X, Y),
        "pairwise mahalanobis L= (jit)": lambda: maha(X, Y, L=L),
        "pairwise mahalanobis M= (jit)": lambda: maha(X, Y, M=M),
        "scipy cdist euclidean": lambda: cdist(Xs, Yn, "euclidean"),
        "scipy cdist cosine": lambda: cdist(Xs, Yn, "cosine"),
        "scipy cdist mahalanobis": lambda: cdist(Xn[:r], Yn, "mahalanobis", VI=Mn64),
        "scipy cdist euclidean on x@L.T": lambda: cdist(XLs, YL, "euclidean"),
        "sklearn pairwise_distances euclidean": lambda: pairwise_distances(Xn, Yn),
        "sklearn pairwise_distances cosine": lambda: pairwise_distances(Xn, Yn, metric="cosine"),
    }
    rows = {name: args.n for name in cands}
    for name in cands:
        if name.startswith("scipy"):
            rows[name] = r if "mahalanobis" in name else s
    metric = {
        name: next(
            (
                k
                for k in ("euclidean", "cosine", "mahalanobis")
                if k in name and "sqeuclidean" not in name
            ),
            "",
        )
        for name in cands
    }
    metric["scipy cdist euclidean on x@L.T"] = "mahalanobis"
    return cands, rows, metric


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a Markdown report, and return the numbers (for tests and notes)."""
    args = _parse(argv)
    cands, rows, metric = _candidates(args)
    timings = alternate(cands, repeats=args.repeats, warmup=1)

    def gflops(name: str) -> float:
        return 2.0 * rows[name] * args.m * args.d / timings[name]["median_s"] / 1e9

    thr = {name: gflops(name) for name in cands}
    ceiling = thr["matmul X@Y.T (XLA, jit)"]
    scipy_ref = {"euclidean": "scipy cdist euclidean", "cosine": "scipy cdist cosine"}
    # the fair SciPy Mahalanobis baseline transforms once and uses Euclidean cdist (cdist's own
    # metric="mahalanobis" is ~300x slower still; its row is in the table)
    scipy_ref["mahalanobis"] = "scipy cdist euclidean on x@L.T"
    sk_ref = {
        "euclidean": "sklearn pairwise_distances euclidean",
        "cosine": "sklearn pairwise_distances cosine",
    }
    table = []
    for name in cands:
        t = timings[name]
        is_jax = name.startswith("pairwise")
        m = metric[name]
        vs_scipy = ratio(thr[name], thr[scipy_ref[m]]) if is_jax and m in scipy_ref else ""
        vs_sk = ratio(thr[name], thr[sk_ref[m]]) if is_jax and m in sk_ref else ""
        table.append(
            [
                name,
                rows[name],
                t["first_s"],
                t["median_s"],
                thr[name],
                ratio(thr[name], ceiling),
                vs_scipy,
                vs_sk,
            ]
        )
    eu_ratio = ratio(thr["pairwise euclidean (jit)"], ceiling)
    print(f"# pairwise benchmark: X [{args.n}, {args.d}] vs Y [{args.m}, {args.d}], float32")
    print(machine_line())
    print(
        f"repeats {args.repeats} (alternating, after one warm-up call); throughput = "
        "2·rows·m·d / median; scipy timed on a row subset"
    )
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n")
    print(
        markdown_table(
            [
                "candidate",
                "rows",
                "first call s",
                "median s",
                "GFLOP/s-eq",
                "vs XLA matmul",
                "vs scipy (same metric)",
                "vs sklearn (same metric)",
            ],
            table,
        )
    )
    verdict = "meets" if eu_ratio >= TARGET else "MISSES"
    print(
        f"\nEuclidean pairwise reaches {eu_ratio:.0%} of the XLA matmul's throughput "
        f"({verdict} the {TARGET:.0%} target)."
    )
    return {
        "args": vars(args),
        "timings": timings,
        "gflops": thr,
        "euclidean_vs_matmul": eu_ratio,
        "meets_target": eu_ratio >= TARGET,
    }


if __name__ == "__main__":
    main()
