"""JSON-ready copies of results, configs and histories (strict JSON: no NaN / inf)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """A copy of ``value`` that ``json.dump`` writes as strict JSON.

    Mappings become dicts with string keys, tuples / lists / arrays become lists, NumPy and JAX
    scalars become Python scalars, and NaN / infinite floats become ``None`` (``null``), which strict
    JSON readers accept where ``NaN`` would be a syntax error.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("jax"):
        value = np.asarray(value)
        return plain(value.tolist()) if value.ndim else plain(value.item())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
