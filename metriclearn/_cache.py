"""Reuse of built objects (specs, optimizers, jitted programs) across calls with equal arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def reuse(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` that builds afresh when an argument is unhashable.

    Equal arguments return the same object, so what is jitted for it is compiled once per process.
    Arguments that cannot key a cache (arrays, unhashable modules or options) still work: each such
    call builds its own object. A ``TypeError`` raised by the builder itself is raised again by the
    fresh call.
    """

    def wrap(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            try:
                return cached(*args)
            except TypeError:  # an unhashable argument
                return fn(*args)

        return call  # type: ignore[return-value]

    return wrap
