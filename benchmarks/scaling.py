"""Data-parallel scaling over 1, 2, 4, 8 (simulated) devices: deep train step, pairwise, evaluation.

Run::

    python -m benchmarks.scaling                       # 1,2,4,8 simulated CPU devices
    python -m benchmarks.scaling --quick               # small shapes, 3 repeats (smoke test)
    python -m benchmarks.scaling --devices 1,2 --json /tmp/scaling.json
    python -m benchmarks.scaling --eval-scale 20000,100000 --eval-classes 10,100,1000

The device count of the CPU backend is fixed when jax starts (``XLA_FLAGS=
--xla_force_host_platform_device_count=N``), so each device count runs in its own subprocess
(``--worker N``), which prints one JSON line; the parent prints a Markdown table and the ratio of each
throughput to the 1-device run.

What is measured, per device count ``N`` (mesh of ``N`` devices, :mod:`metriclearn.parallel`):

* ``train step``: one data-parallel step (``parallel.make_sharded_train_step``) of the ANCHORS.md MLP
  (64 -> 256 -> 256 -> 64) with the contrastive loss over all pairs of a 128 batch (the batch sharded,
  parameters replicated): ms per step.
* ``pairwise``: ``distances.pairwise_sqeuclidean(X, Y)`` with ``X`` rows sharded and ``Y`` replicated,
  ``[n, 64] x [n, 64]``: GFLOP/s-equivalent (``2 n^2 d`` per call).
* ``retrieval``: ``parallel.sharded_retrieval_metrics`` (exact chunked k-NN, query blocks sharded) of
  ``[n_eval, 64]`` embeddings in 100 classes, NMI off: seconds per call.

``--eval-scale N1,N2,...`` measures instead, on one device, exact retrieval at scale
(``evaluation.retrieval_metrics`` of ``[N, 64]`` float32 embeddings in ``C`` classes, NMI off, so
``R`` = class size ~ ``N / C`` neighbours per query) against the distance matmuls alone (the same
``[chunk, N]`` blocks, nothing else), each ``(N, C)`` in its own process for its peak RSS: seconds
(wall and process CPU) of a second call (the first compiles), the ratio retrieval / matmuls.

Simulated devices share the machine's cores: on a 2-core CPU, going from 1 to 2 devices can use the
second core (up to ~2x for work that XLA runs single-threaded), but 4 or 8 simulated devices cannot be
faster than 2 -- the table shows that the same program runs unchanged on 1..8 devices and how the
partitioning and collective overhead grows. Real speed-ups need real devices (GPUs/TPUs or hosts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

DEVICE_FLAG = "--xla_force_host_platform_device_count"
# sizes and repeats: default mode, and --quick (each only where the command line gives none)
FULL = {"n_pairwise": 4096, "n_eval": 10000, "repeats": 5}
QUICK = {"n_pairwise": 1024, "n_eval": 4000, "repeats": 3}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--devices", default="1,2,4,8", help="ascending comma list of device counts, from 1"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=128,
        help="train batch: a multiple of 16 (classes of 16) and of each device count",
    )
    # sizes default to None: --quick fills in its small sizes only where none was given
    parser.add_argument(
        "--n-pairwise",
        type=int,
        default=None,
        help=f"rows of X and Y (pairwise; default {FULL['n_pairwise']}, --quick {QUICK['n_pairwise']})",
    )
    parser.add_argument(
        "--n-eval",
        type=int,
        default=None,
        help=f"embeddings for retrieval (default {FULL['n_eval']}, --quick {QUICK['n_eval']})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed repetitions (default {FULL['repeats']}, --quick {QUICK['repeats']})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small shapes, 3 repeats (smoke test); sizes given explicitly are kept",
    )
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per device count")
    parser.add_argument(
        "--eval-scale",
        default=None,
        help="comma list of embedding counts: time retrieval vs its matmuls instead (1 device)",
    )
    parser.add_argument("--eval-classes", default="10,100,1000", help="classes for --eval-scale")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--eval-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("n_pairwise", "n_eval", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    try:
        counts = [int(c) for c in args.devices.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--devices must be a comma list of integers, got {args.devices!r}")
    # the ratios are against 1 device and the summary against the most: an ascending list from 1
    if not counts or counts[0] != 1 or counts != sorted(set(counts)):
        parser.error(f"--devices must be an ascending list starting at 1, got {args.devices!r}")
    args.device_counts = counts
    if args.eval_scale is not None:
        for flag, text in (
            ("--eval-scale", args.eval_scale),
            ("--eval-classes", args.eval_classes),
        ):
            try:
                values = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                values = []
            if not values or min(values) < 1:
                parser.error(f"{flag} must be a comma list of integers >= 1, got {text!r}")
    elif args.eval_worker is None:
        # the labels are batch // 16 classes of 16, and the batch is split over the devices
        checked = [args.worker] if args.worker is not None else counts
        bad = [c for c in checked if args.batch % c]
        if args.batch < 16 or args.batch % 16 or bad:
            parser.error(
                f"--batch must be a positive multiple of 16 and of every device count "
                f"({', '.join(map(str, checked))}), got {args.batch}"
            )
    if args.json:  # before the run, not after it
        from absl import app

        from experiments import check_output_dir

        try:
            check_output_dir(os.path.dirname(os.path.abspath(args.json)), "--json")
        except app.UsageError as err:
            parser.error(str(err))
        if os.path.isdir(args.json) or args.json.endswith(("/", os.sep)):
            parser.error(f"--json={args.json!r} is a directory; give a file path")
    return args


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything on a mesh of ``args.worker`` devices (this process's device count)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks._timing import alternate
    from metriclearn import distances, losses, models, parallel, training

    n_dev = args.worker
    mesh = parallel.make_mesh(n_dev)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"devices": n_dev, "jax_devices": len(jax.devices())}

    # deep train step
    x = rng.normal(size=(args.batch, 64)).astype(np.float32)
    y = np.repeat(np.arange(args.batch // 16), 16).astype(np.int32)
    model = models.build_model("mlp", hidden=(256, 256), embedding_dim=64)
    spec = losses.build("contrastive")
    opt = optax.adam(1e-3)
    state = parallel.replicate(training.create_train_state(0, model, spec, opt, x[:1]), mesh)
    step = parallel.make_sharded_train_step(model, spec, opt, mesh)
    xs, ys = parallel.shard_batch((x, y), mesh)
    holder = {"state": state}

    def train_step():
        holder["state"], metrics = step(holder["state"], xs, ys)
        return metrics["loss"]

    # pairwise: X sharded by rows, Y replicated
    n, d = args.n_pairwise, 64
    X = parallel.shard_batch(rng.normal(size=(n, d)).astype(np.float32), mesh)
    Y = parallel.replicate(jnp.asarray(rng.normal(size=(n, d)).astype(np.float32)), mesh)
    data, rep = parallel.data_sharding(mesh), parallel.replicated_sharding(mesh)
    pw = jax.jit(distances.pairwise_sqeuclidean, in_shardings=(data, rep), out_shardings=data)

    t = alternate(
        {"train": train_step, "pairwise": lambda: pw(X, Y)}, repeats=args.repeats, warmup=1
    )
    out["train_ms_per_step"] = 1e3 * t["train"]["median_s"]
    out["train_first_s"] = t["train"]["first_s"]
    out["pairwise_gflops"] = 2.0 * n * n * d / t["pairwise"]["median_s"] / 1e9
    out["pairwise_first_s"] = t["pairwise"]["first_s"]

    # retrieval over n_eval embeddings (one call is long: time two calls after a warm-up)
    E = rng.normal(size=(args.n_eval, 64)).astype(np.float32)
    labels = rng.integers(0, 100, size=args.n_eval)
    E += 2.0 * rng.normal(size=(100, 64)).astype(np.float32)[labels]
    t0 = time.perf_counter()
    m = parallel.sharded_retrieval_metrics(E, labels, k_values=(1,), nmi=False, mesh=mesh)
    out["retrieval_first_s"] = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        parallel.sharded_retrieval_metrics(E, labels, k_values=(1,), nmi=False, mesh=mesh)
        times.append(time.perf_counter() - t0)
    out["retrieval_s"] = min(times)
    out["retrieval_map_at_r"] = m["map_at_r"]
    return out


def _eval_worker(n: int, n_classes: int) -> dict[str, Any]:
    """Retrieval over ``[n, 64]`` embeddings in ``n_classes`` classes vs its distance matmuls alone."""
    import resource

    import jax
    import numpy as np

    from metriclearn import evaluation

    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, size=n)
    E = rng.normal(size=(n, 64)).astype(np.float32)
    E += rng.normal(size=(n_classes, 64)).astype(np.float32)[labels]
    # the matmuls of the host selection: the same jitted [chunk, n] blocks, results discarded
    bq = evaluation._round_up(min(n, max(1, evaluation._HOST_BLOCK_ELEMENTS // n)), 32)
    block_dist = evaluation._program("dist", None, None, (), 0, True)
    refs = jax.device_put(E)

    def matmuls():
        for start in range(0, n, bq):
            q = E[start : start + bq]
            q = np.pad(q, ((0, bq - q.shape[0]), (0, 0)))
            block_dist(
                q, np.arange(start, start + bq, dtype=np.int32), refs, {}
            ).block_until_ready()

    def retrieval():
        return evaluation.retrieval_metrics(E, labels, k_values=(1, 8), nmi=False)

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return time.perf_counter() - wall, time.process_time() - cpu, out

    out: dict[str, Any] = {"n": n, "classes": n_classes, "chunk": bq}
    out["retrieval_first_s"] = timed(retrieval)[0]
    matmuls()
    out["matmul_s"], out["matmul_cpu_s"], _ = timed(matmuls)
    out["retrieval_s"], out["retrieval_cpu_s"], m = timed(retrieval)
    out["map_at_r"], out["r_precision"] = m["map_at_r"], m["r_precision"]
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def _eval_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Run one process per (n, classes), print a Markdown table, return the results."""
    from benchmarks._timing import machine_line, markdown_table

    results = []
    for n in [int(v) for v in args.eval_scale.split(",") if v.strip()]:
        for c in [int(v) for v in args.eval_classes.split(",") if v.strip()]:
            cmd = [sys.executable, "-m", "benchmarks.scaling", "--eval-worker", f"{n},{c}"]
            env = {**os.environ, "JAX_PLATFORMS": "cpu"}
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=args.timeout
            )
            if proc.returncode != 0:
                raise RuntimeError(f"eval worker {n},{c} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads([ln for ln in proc.stdout.splitlines() if ln[:1] == "{"][-1]))
            print(f"  done: n={n} classes={c}", file=sys.stderr, flush=True)
    print("# exact retrieval (MAP@R, R-precision, P@1, Recall@K) vs its distance matmuls alone")
    print(machine_line())
    print("[n, 64] float32, R = class size; seconds of a second call; CPU = process CPU seconds\n")
    rows = [
        [
            r["n"],
            r["classes"],
            r["n"] // r["classes"],
            r["matmul_s"],
            r["retrieval_s"],
            r["retrieval_s"] / r["matmul_s"],
            r["retrieval_cpu_s"] / r["matmul_cpu_s"],
            r["retrieval_first_s"],
            r["peak_rss_gb"],
        ]
        for r in results
    ]
    headers = ["n", "classes", "~R", "matmuls s", "retrieval s", "ratio (wall)", "ratio (CPU)"]
    print(markdown_table([*headers, "first call s", "peak RSS GB"], rows))
    report = {"args": vars(args), "eval_scale": results}
    if args.json:
        _write_json(args.json, report)
    return report


def _write_json(path: str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` as JSON, creating its directory (checked writable by ``_parse``,
    created only now: a run refused or failed earlier leaves nothing behind)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)


def _run_one(n_dev: int, args: argparse.Namespace) -> dict[str, Any]:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": " ".join([*flags, f"{DEVICE_FLAG}={n_dev}"]),
    }
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "--worker",
        str(n_dev),
        "--batch",
        str(args.batch),
    ]
    cmd += ["--n-pairwise", str(args.n_pairwise), "--n-eval", str(args.n_eval)]
    cmd += ["--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {n_dev} devices failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the workers, print the table, return (and optionally write) the results."""
    args = _parse(argv)
    if args.worker is not None:
        print(json.dumps(_worker(args)), flush=True)
        return {}
    if args.eval_worker is not None:
        n, n_classes = (int(v) for v in args.eval_worker.split(","))
        print(json.dumps(_eval_worker(n, n_classes)), flush=True)
        return {}
    if args.eval_scale:
        return _eval_scale(args)
    from benchmarks._timing import machine_line, markdown_table

    counts = args.device_counts  # and --batch a multiple of each: checked by _parse
    results = []
    for c in counts:
        results.append(_run_one(c, args))
        print(f"  done: {c} device(s)", file=sys.stderr, flush=True)
    base = results[0]
    rows = []
    for r in results:
        rows.append(
            [
                r["devices"],
                r["train_ms_per_step"],
                base["train_ms_per_step"] / r["train_ms_per_step"],
                r["pairwise_gflops"],
                r["pairwise_gflops"] / base["pairwise_gflops"],
                r["retrieval_s"],
                base["retrieval_s"] / r["retrieval_s"],
                r["train_first_s"],
            ]
        )
    print(f"# data-parallel scaling over simulated CPU devices ({os.cpu_count()} cores)")
    print(machine_line())
    print(
        f"train: MLP 64-256-256-64, contrastive all pairs, batch {args.batch}; pairwise: "
        f"[{args.n_pairwise}, 64]^2 sqeuclidean; retrieval: [{args.n_eval}, 64], 100 classes; "
        f"medians of {args.repeats} (retrieval: best of 2)\n"
    )
    print(
        markdown_table(
            [
                "devices",
                "train ms/step",
                "train speed vs 1",
                "pairwise GFLOP/s",
                "pairwise vs 1",
                "retrieval s",
                "retrieval speed vs 1",
                "train compile+1st s",
            ],
            rows,
        )
    )
    print(
        f"\nSimulated devices share the machine's {os.cpu_count()} cores: beyond that many devices, "
        "the ratios measure partitioning/collective overhead, not real multi-device hardware."
    )
    last = results[-1]
    summary = {
        "train_speed_max_vs_1": base["train_ms_per_step"] / last["train_ms_per_step"],
        "pairwise_speed_max_vs_1": last["pairwise_gflops"] / base["pairwise_gflops"],
        "retrieval_speed_max_vs_1": base["retrieval_s"] / last["retrieval_s"],
    }
    report = {"args": vars(args), "results": results, "summary": summary, "max_devices": counts[-1]}
    if args.json:
        _write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
