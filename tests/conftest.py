"""Shared test set-up: CPU only, small shapes, a float64 fixture."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Run the test body with ``jax_enable_x64`` on (float64 arrays)."""
    with jax.enable_x64(True):
        yield
