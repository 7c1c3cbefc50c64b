"""Run every benchmark and write one table of ratios to ``benchmarks/RESULTS.md``.

Run::

    python -m benchmarks.run_all              # default sizes of every benchmark (long: tens of minutes)
    python -m benchmarks.run_all --quick      # every benchmark in its quick mode (smoke test)
    python -m benchmarks.run_all --quick=convex,scaling   # quick mode for these two only
    python -m benchmarks.run_all --only pairwise,scaling --out /tmp/RESULTS.md

Each benchmark runs in its own subprocess (a crash or a hung run cannot take the others down; the
scaling benchmark needs fresh processes anyway, its device count being fixed when jax starts), through
this module's ``--child`` mode, which calls the benchmark's Python entry point and writes what it
returns as JSON; its printed report is passed through and saved next to the results
(``results/<name>.md`` beside ``--out``; ``benchmarks/results/<name>.md`` by default). The ratios
collected:

* ``pairwise``: throughput of each ``metriclearn.distances.pairwise`` kernel / the jitted XLA matmul of
  the same shapes (the ceiling), and / scipy ``cdist`` and scikit-learn for the same metric;
* ``convex``: speed-up = metric-learn 0.7.0 median fit time / metriclearn median fit time, per learner
  and data set;
* ``deep``: speed-up = pytorch-metric-learning median step time / metriclearn median step time;
* ``scaling``: throughput on the largest simulated device count / on 1 device (simulated devices share
  the same cores: this measures overhead, not speed-up).

Ratios above 1 mean metriclearn is faster (or, for the matmul ceiling, closer to 1 is better).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (entry point called by the child, argv in quick mode, argv in default mode)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "pairwise": ("main", ["--quick"], []),
    "convex": ("main", ["--quick", "--no-cv"], []),
    # deep's own --quick drops pytorch-metric-learning (no ratio); a few steps of both instead
    "deep": ("run", ["--steps", "5"], ["--steps", "30"]),
    "scaling": ("main", ["--quick"], []),
}


# --------------------------------------------------------------------------------------------------
# child: run one benchmark in this process, dump its result as JSON


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _child(name: str, out_path: str, argv: list[str]) -> None:
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    entry = BENCHMARKS[name][0]
    if entry == "run":  # benchmarks.deep: the rows come from run(); print them like its main
        ap = argparse.ArgumentParser()
        ap.add_argument("--steps", type=int, default=30)
        steps = ap.parse_args(argv).steps
        from benchmarks import _timing

        print(_timing.machine_line())
        rows = module.run(steps=steps, quick=False)
        print(_timing.markdown_table(module.table_header(quick=False), rows))
        result: Any = {"rows": rows, "steps": steps}
    else:
        result = getattr(module, entry)(argv)
    with open(out_path, "w") as fh:
        json.dump(_plain(result), fh)


# --------------------------------------------------------------------------------------------------
# ratio extraction, one function per benchmark: result -> rows [benchmark, case, ratio, meaning]


def _ratios_pairwise(r: dict) -> list[list[Any]]:
    g = r["gflops"]
    ceiling = g["matmul X@Y.T (XLA, jit)"]
    rows = [
        ["pairwise", name, g[name] / ceiling, "throughput / XLA matmul (ceiling 1.0)"]
        for name in g
        if name.startswith("pairwise")
    ]
    for ours, theirs in (
        ("pairwise euclidean (jit)", "scipy cdist euclidean"),
        ("pairwise euclidean (jit)", "sklearn pairwise_distances euclidean"),
    ):
        if ours in g and theirs in g:
            rows.append(
                ["pairwise", f"{ours} vs {theirs}", g[ours] / g[theirs], "throughput ratio"]
            )
    return rows


def _ratios_convex(r: dict) -> list[list[Any]]:
    rows = []
    for row in r.get("timing", []):
        sp = row.get("speedup")
        case = f"{row.get('learner')} on {row.get('dataset')}"
        if sp is None:
            rows.append(
                ["convex", case, math.nan, f"metric-learn: {row.get('ml_note') or 'not run'}"]
            )
        else:
            meaning = "metric-learn fit s / metriclearn fit s"
            ours_obj, ml_obj = row.get("ours_objective"), row.get("ml_objective")
            if (
                ours_obj is not None
                and ml_obj is not None
                and ours_obj > ml_obj
                and row.get("speedup_equal_objective") is None
            ):
                # not like for like: ours stops at a worse objective and never reaches metric-learn's
                meaning += f"; ours ends at a worse objective ({ours_obj:.4g} vs {ml_obj:.4g})"
            rows.append(["convex", case, sp, meaning])
        eq = row.get("speedup_equal_objective")
        if eq is not None:
            meaning = "metric-learn fit s / metriclearn s to reach metric-learn's final objective"
            rows.append(["convex", f"{case}, equal objective", eq, meaning])
    return rows


def _ratios_deep(r: dict) -> list[list[Any]]:
    rows = []
    for row in r["rows"]:
        if len(row) < 10:  # --quick: metriclearn only, no ratios
            continue
        meaning = "PML step / scanned-epoch step, each back to back (blocks alternate)"
        rows.append(["deep", f"{row[0]}, training loop, back to back", row[-1], meaning])
        meaning = "PML step / scanned-epoch step, calls alternating one by one"
        rows.append(["deep", f"{row[0]}, training loop, alternating", row[-2], meaning])
        rows.append(["deep", f"{row[0]}, single step", row[-3], "PML step / one jitted step"])
    return rows


def _ratios_scaling(r: dict) -> list[list[Any]]:
    n = r["max_devices"]
    s = r["summary"]
    cores = os.cpu_count()
    meaning = (
        f"throughput on {n} simulated devices / on 1 ({cores} shared cores: at most ~{cores}x)"
    )
    return [
        ["scaling", f"deep train step, {n} devices", s["train_speed_max_vs_1"], meaning],
        ["scaling", f"pairwise sqeuclidean, {n} devices", s["pairwise_speed_max_vs_1"], meaning],
        ["scaling", f"retrieval metrics, {n} devices", s["retrieval_speed_max_vs_1"], meaning],
    ]


RATIOS: dict[str, Callable[[dict], list[list[Any]]]] = {
    "pairwise": _ratios_pairwise,
    "convex": _ratios_convex,
    "deep": _ratios_deep,
    "scaling": _ratios_scaling,
}


# --------------------------------------------------------------------------------------------------
# parent


def _versions() -> str:
    from importlib import metadata

    names = ["jax", "jaxlib", "flax", "optax", "numpy", "scipy", "scikit-learn", "torch"]
    names.append("pytorch-metric-learning")
    parts = []
    for n in names:
        try:
            parts.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{n} (not installed)")
    return ", ".join(parts)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} cores | Python {platform.python_version()}"
    )


def _run_child(
    name: str, argv: list[str], timeout: float, log_dir: Path
) -> tuple[dict | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "benchmarks.run_all", "--child", name, "--child-out", out]
        cmd += ["--", *argv]
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:g} s"
        secs = time.perf_counter() - t0
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{name}.md").write_text(
            f"<!-- python -m benchmarks.{name} {' '.join(argv)} ({secs:.0f} s) -->\n{proc.stdout}"
        )
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0 or not os.path.exists(out):
            (log_dir / f"{name}.stderr.txt").write_text(proc.stderr)
            last = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:]
            reason = last[0][-300:] if last else "no error output"
            return None, f"failed (exit {proc.returncode}): {reason}"
        with open(out) as fh:
            return json.load(fh), f"ok ({secs:.0f} s)"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_results(
    path: Path,
    rows: list[list[Any]],
    status: dict[str, str],
    modes: dict[str, str],
    logs: Path,
    argv: Sequence[str] | None = None,
) -> str:
    """Render and write RESULTS.md (creating its directory if needed); return its text."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m benchmarks.run_all", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on {now}.",
        "",
        f"- machine: {_machine()}",
        f"- versions: {_versions()}",
        "- modes: " + ", ".join(f"{k} {v}" for k, v in modes.items()),
        "- runs: " + "; ".join(f"{k} {v}" for k, v in status.items()),
        f"- full reports: `{_rel(logs)}/<benchmark>.md`",
        "",
        "Ratios > 1: metriclearn faster; pairwise: fraction of the XLA matmul ceiling (1.0); scaling: "
        "simulated devices share the machine's cores, so beyond the core count extra devices only add "
        "partitioning overhead. Quick modes are "
        "smoke tests: their tiny shapes make timing ratios noisy.",
        "",
        "| benchmark | case | ratio | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| {b} | {c} | {_fmt(r)} | {m} |" for b, c, r, m in rows]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)  # checked writable by _parse, created only now
    path.write_text(text)
    return text


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        nargs="?",
        const="all",
        default="",
        help="quick mode for all benchmarks, or for a comma list (e.g. --quick=convex,scaling)",
    )
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma list of benchmarks")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="output Markdown file")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per benchmark")
    parser.add_argument(
        "--logs",
        default=None,
        help="directory for each benchmark's full report (default: results/ beside --out, so a run "
        "with its own --out leaves the committed benchmarks/results alone)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rest and args.child is None:  # the catch-all only carries a child's argv
        parser.error(f"unrecognized arguments: {' '.join(args.rest)}")
    if args.child_out is not None and args.child is None:  # internal: written by a parent run
        parser.error("--child-out is internal to run_all (with --child); use --out")
    if Path(args.out).is_dir() or args.out.endswith(("/", os.sep)):
        parser.error(f"--out={args.out!r} is a directory; give a file path")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")
    if not names and args.child is None:  # would write an empty table over --out
        parser.error(f"--only is empty; valid: {', '.join(BENCHMARKS)}")
    args.only = names
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    if args.logs is None:
        args.logs = str(Path(args.out).resolve().parent / "results")
    # before hours of benchmarks, not after them
    from absl import app

    from experiments import check_output_dir

    try:
        check_output_dir(str(Path(args.out).resolve().parent), "--out")
        check_output_dir(args.logs, "--logs")
    except app.UsageError as err:
        parser.error(str(err))
    quick = [n.strip() for n in args.quick.split(",") if n.strip()]
    args.quick = set(BENCHMARKS) if quick == ["all"] else set(quick)
    unknown = sorted(args.quick - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) in --quick: {unknown}; valid: {', '.join(BENCHMARKS)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, write RESULTS.md, return ``{"rows": ..., "status": ...}``."""
    args = _parse(argv)
    if args.child:
        _child(args.child, args.child_out, list(args.rest))
        return {}
    modes = {name: "quick" if name in args.quick else "default" for name in args.only}
    rows: list[list[Any]] = []
    status: dict[str, str] = {}
    for name in args.only:
        bench_argv = BENCHMARKS[name][1 if modes[name] == "quick" else 2]
        print(f"\n=== {name}: python -m benchmarks.{name} {' '.join(bench_argv)}", flush=True)
        result, status[name] = _run_child(name, bench_argv, args.timeout, Path(args.logs))
        print(f"=== {name}: {status[name]}", flush=True)
        if result is not None:
            try:
                rows += RATIOS[name](result)
            except (KeyError, IndexError, TypeError, ZeroDivisionError) as err:
                status[name] = f"ran, but its result had no ratios ({err!r})"
    text = write_results(Path(args.out), rows, status, modes, Path(args.logs), argv)
    print("\n" + text)
    return {"rows": rows, "status": status}


if __name__ == "__main__":
    main()
