"""Convex (Mahalanobis) metric learners: one pure fit function per file.

Supervised (labels or real targets), each returning a :class:`metriclearn.convex._common.FitResult`
or, for covariance, the metric ``M`` itself:

* ``covariance.fit_covariance(X) -> M``                 inverse covariance (unsupervised)
* ``nca.fit_nca(X, y, ...)``                            Neighbourhood Components Analysis
* ``lmnn.fit_lmnn(X, y, ...)``                          Large Margin Nearest Neighbour
* ``lfda.fit_lfda(X, y, ...)``                          Local Fisher Discriminant Analysis
* ``mlkr.fit_mlkr(X, y_real, ...)``                     Metric Learning for Kernel Regression

Weakly supervised (pairs, triplets, quadruplets, chunklets): ``itml``, ``sdml``, ``mmc``, ``rca``,
``lsml``, ``scml``.

Submodules load lazily on attribute access (``metriclearn.convex.nca``), so importing the package
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = (
    "_common",
    "covariance",
    "nca",
    "lmnn",
    "lfda",
    "mlkr",
    "itml",
    "sdml",
    "mmc",
    "rca",
    "lsml",
    "scml",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'metriclearn.convex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
