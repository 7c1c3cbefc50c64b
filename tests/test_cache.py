"""metriclearn._cache.reuse: built objects shared across equal arguments, fresh ones otherwise."""

import numpy as np
import pytest

from metriclearn._cache import reuse


def test_reuse_shares_equal_and_builds_unhashable_afresh():
    calls = []

    @reuse(4)
    def build(a, b):
        calls.append((a, b))
        return [a, b]

    first = build(1, "x")
    assert build(1, "x") is first and len(calls) == 1
    assert build(2, "x") is not first and len(calls) == 2
    arr = np.arange(3)
    one, two = build(arr, "x"), build(arr, "x")  # an array cannot key the cache
    assert one is not two and one[0] is arr and len(calls) == 4


def test_reuse_raises_the_builders_own_type_error():
    @reuse(4)
    def build(a):
        raise TypeError(f"bad {a}")

    with pytest.raises(TypeError, match="bad 1"):
        build(1)
