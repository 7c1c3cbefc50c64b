"""Side-by-side timing used by every benchmark: warm-up, alternating runs, medians, compile time apart.

The machine is shared and noisy, so candidates are never timed in separate blocks: after each has been
called once (its first call, which includes JAX compilation, is reported separately), the candidates
run round-robin ``repeats`` times and the median of each is quoted, with the ratio to a baseline.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax


def block(value: Any) -> Any:
    """Wait for every JAX array in ``value`` (a pytree) so wall time covers the computation."""
    return jax.block_until_ready(value)


def first_call_seconds(fn: Callable[[], Any]) -> float:
    """Seconds of the first call of ``fn`` (for a jitted function: trace + compile + one run)."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def alternate(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Time each zero-argument callable, round-robin, after warm-up.

    Returns:
      ``{name: {"first_s": first call, "median_s": steady-state median, "min_s", "max_s"}}``.
    """
    first = {name: first_call_seconds(fn) for name, fn in candidates.items()}
    for _ in range(max(warmup - 1, 0)):
        for fn in candidates.values():
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            block(fn())
            samples[name].append(time.perf_counter() - start)
    return {
        name: {
            "first_s": first[name],
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
        }
        for name, times in samples.items()
    }


def back_to_back(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    calls: int = 20,
    rounds: int = 3,
    warmup: int = 5,
) -> dict[str, float]:
    """Median seconds per call of each callable when it runs ``calls`` times in a row.

    Blocks still alternate (``rounds`` times, each block after ``warmup`` untimed calls), but no timed
    call directly follows the other candidate's. Libraries whose worker threads spin after a call
    (OpenMP in torch, XLA's pool) slow the next call of the *other* library when calls alternate one by
    one; in a training loop each runs back to back, which is what this measures.

    Returns:
      ``{name: median seconds per call}`` over all timed calls of all rounds.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(warmup):
                block(fn())
            for _ in range(calls):
                start = time.perf_counter()
                block(fn())
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` guarded against a zero denominator."""
    return numerator / denominator if denominator > 0 else float("inf")


def machine_line() -> str:
    """One line naming the machine and versions, for the header of a benchmark's output."""
    import jaxlib
    import numpy

    return (
        f"{platform.node()} | {platform.processor() or platform.machine()} | "
        f"python {platform.python_version()} | jax {jax.__version__} / jaxlib {jaxlib.__version__} | "
        f"numpy {numpy.__version__} | devices {jax.devices()}"
    )


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """Render rows as a Markdown table (floats to 4 significant digits)."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
