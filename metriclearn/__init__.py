"""metriclearn: convex and deep metric learning in JAX.

Submodules and the scikit-learn estimators load lazily on first use, so ``import metriclearn`` stays
cheap and the convex half never imports Flax::

    import metriclearn as ml
    ml.distances.pairwise("euclidean", X)
    ml.NCA(n_components=2).fit(X, y)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "constraints",
    "convex",
    "datasets",
    "distances",
    "estimators",
    "evaluation",
    "losses",
    "miners",
    "models",
    "parallel",
    "plotting",
    "psd",
    "reducers",
    "regularizers",
    "sampling",
    "solver",
    "training",
)

_ESTIMATORS = (
    "Covariance",
    "NCA",
    "LMNN",
    "LFDA",
    "MLKR",
    "RCA",
    "RCA_Supervised",
    "ITML",
    "ITML_Supervised",
    "SDML",
    "SDML_Supervised",
    "MMC",
    "MMC_Supervised",
    "LSML",
    "LSML_Supervised",
    "SCML",
    "SCML_Supervised",
    "MetricLearner",
)

__all__ = [*_SUBMODULES, *_ESTIMATORS]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _ESTIMATORS:
        estimators = importlib.import_module(f"{__name__}.estimators")
        value = getattr(estimators, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metriclearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
