"""Shared test set-up: CPU only, small shapes, a float64 fixture."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# 8 simulated CPU devices for the sharding tests (tests/test_parallel.py); must be set before jax is
# imported. Single-device code is unaffected: it runs on device 0.
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_FLAG}=8".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Run the test body with ``jax_enable_x64`` on (float64 arrays)."""
    with jax.enable_x64(True):
        yield
