"""Reuse of built objects (specs, optimizers, jitted programs) across calls with equal arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

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
    The arguments at the positions ``data_args`` are data: a list or tuple there becomes a NumPy
    array first (``jit`` takes a list for a pytree of scalars: a list of labels reached the loss as
    traced scalars, a ``TracerArrayConversionError``).
    """

    def __init__(
        self,
        jitted,
        check: Callable[..., object],
        put: Callable[..., tuple] | None = None,
        *,
        data_args: tuple[int, ...] = (),
    ):
        self._jitted = jitted
        self._check = check
        self._put = put
        self._data_args = data_args

    def _arrays(self, args: tuple) -> tuple:
        if not self._data_args:
            return args
        return tuple(
            np.asarray(a) if i in self._data_args and isinstance(a, (list, tuple)) else a
            for i, a in enumerate(args)
        )

    def _place(self, args: tuple) -> tuple:
        """The arguments of a call of the compiled program: as arrays, then ``put`` (no check)."""
        args = self._arrays(args)
        return args if self._put is None else self._put(*args)

    def _prepare(self, args: tuple) -> tuple:
        args = self._arrays(args)  # the check sees the arrays the program gets
        self._check(*args)
        return args if self._put is None else self._put(*args)

    def __call__(self, *args):
        return self._jitted(*self._prepare(args))

    def lower(self, *args) -> _Lowered:
        place = self._place if self._data_args or self._put is not None else None
        return _Lowered(self._jitted.lower(*self._prepare(args)), place)


class _Lowered:
    """``CheckedProgram.lower(...)``: ``compile()`` returns a callable that keeps placing arguments
    (e.g. a restored state; lists of data as arrays) as the program does, without its check."""

    def __init__(self, lowered, place: Callable[[tuple], tuple] | None):
        self._lowered = lowered
        self._place = place

    def compile(self) -> Callable:
        compiled = self._lowered.compile()
        place = self._place
        return compiled if place is None else (lambda *args: compiled(*place(args)))

    def as_text(self) -> str:
        return self._lowered.as_text()
