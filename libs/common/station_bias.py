"""A weather station's forecast bias (forecast − observed, °F), fitted from resolved days (data_sources.md E1.5).

Fitted by the resolver from official climate reports, used by the signals weather model (members are
shifted by −bias). Shrinkage towards 0 — a zero-mean prior worth `prior_n` days — keeps a few days
from swinging it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fit_station_bias(forecast_means: Sequence[float], observed: Sequence[float], prior_n: float = 10) -> float:
    """The mean residual (forecast − observed) over days where both are finite, shrunk by `prior_n` days."""
    f, o = list(forecast_means), list(observed)
    if len(f) != len(o):
        raise ValueError(f"forecast_means and observed differ in length: {len(f)} vs {len(o)}")
    if not math.isfinite(prior_n) or prior_n < 0:
        raise ValueError(f"prior_n must be a finite number >= 0, got {prior_n!r}")
    pairs = [(a, b) for a, b in zip(f, o, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return 0.0
    return sum(a - b for a, b in pairs) / (len(pairs) + prior_n)


__all__ = ["fit_station_bias"]
