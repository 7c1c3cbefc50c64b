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


class CheckedProgram:
    """A jitted program whose arguments are checked (and placed) before each call and ``lower``.

    ``check(*args)`` raises on bad arguments; ``put(*args)`` returns the arguments to pass on (e.g.
    placed on a mesh). ``lower(...).compile()`` keeps placing the arguments of later calls, so a
    caller that compiles once (``fit``) runs the check once and the compiled program after.
    """

    def __init__(
        self, jitted, check: Callable[..., object], put: Callable[..., tuple] | None = None
    ):
        self._jitted = jitted
        self._check = check
        self._put = put

    def _prepare(self, args: tuple) -> tuple:
        self._check(*args)
        return args if self._put is None else self._put(*args)

    def __call__(self, *args):
        return self._jitted(*self._prepare(args))

    def lower(self, *args) -> _Lowered:
        return _Lowered(self._jitted.lower(*self._prepare(args)), self._put)


class _Lowered:
    """``CheckedProgram.lower(...)``: ``compile()`` returns a callable that keeps placing arguments
    (e.g. a restored state) as the program's ``put`` does."""

    def __init__(self, lowered, put: Callable[..., tuple] | None):
        self._lowered = lowered
        self._put = put

    def compile(self) -> Callable:
        compiled = self._lowered.compile()
        put = self._put
        return compiled if put is None else (lambda *args: compiled(*put(*args)))

    def as_text(self) -> str:
        return self._lowered.as_text()
