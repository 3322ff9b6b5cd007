"""Scores of probability forecasts: per prediction, and over a set of them. Pure functions, no I/O.

Brier = (p − o)²; the market's Brier scores the market-implied probability at decision time the same
way; skill = 1 − Brier / market Brier (above 0: the model beat the price). Log loss clips p to
[EPS, 1 − EPS] so one confident miss is a large but finite number. Sharpness is the variance of the
forecasts (a model that always says 0.5 has none). Reliability bins are equal-width on [0, 1]; each
holds its count, mean forecast and observed frequency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EPS = 1e-4


@dataclass(frozen=True, slots=True, kw_only=True)
class Scored:
    """One prediction against its outcome (1 = YES)."""

    p: float
    outcome: int
    p_market: float | None = None
    traded: bool = False
    pnl_ticks: int | None = None
    fees_ticks: int | None = None


def brier(p: float, outcome: int) -> float:
    return (p - outcome) ** 2


def log_loss(p: float, outcome: int) -> float:
    q = min(max(p, EPS), 1 - EPS)
    return -math.log(q if outcome == 1 else 1 - q)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def bins(rows: Sequence[Scored], n: int = 10) -> list[dict[str, Any]]:
    """Reliability bins: [lo, hi), the last one closed; empty bins are listed with count 0."""
    out = []
    for k in range(n):
        lo, hi = k / n, (k + 1) / n
        inside = [r for r in rows if lo <= r.p < hi or (k == n - 1 and r.p == 1.0)]
        out.append({"lo": lo, "hi": hi, "count": len(inside), "mean_p": _mean([r.p for r in inside]),
                    "observed": _mean([float(r.outcome) for r in inside])})
    return out


def summary(rows: Sequence[Scored], *, n_bins: int = 10) -> dict[str, Any]:
    """Brier, market Brier (over the rows that have a market price), skill, log loss, hit rate, sharpness,
    calibration bins, and for the traded rows the count, P&L and fees."""
    n = len(rows)
    with_market = [r for r in rows if r.p_market is not None]
    b = _mean([brier(r.p, r.outcome) for r in rows])
    b_model_m = _mean([brier(r.p, r.outcome) for r in with_market])
    b_market = _mean([brier(r.p_market, r.outcome) for r in with_market if r.p_market is not None])
    mean_p = _mean([r.p for r in rows])
    traded = [r for r in rows if r.traded]
    return {
        "n": n, "brier": b, "log_loss": _mean([log_loss(r.p, r.outcome) for r in rows]),
        "n_market": len(with_market), "brier_model_on_market_rows": b_model_m, "brier_market": b_market,
        # Skill against the market on the same rows only, so a missing price cannot flatter either side.
        "brier_skill": (1 - b_model_m / b_market) if b_model_m is not None and b_market else None,
        "hit_rate": _mean([float((r.p >= 0.5) == (r.outcome == 1)) for r in rows]),
        "sharpness": _mean([(r.p - mean_p) ** 2 for r in rows]) if mean_p is not None else None,
        "base_rate": _mean([float(r.outcome) for r in rows]),
        "traded": len(traded), "pnl_ticks": sum(r.pnl_ticks or 0 for r in traded),
        "fees_ticks": sum(r.fees_ticks or 0 for r in traded),
        "bins": bins(rows, n_bins),
    }


__all__ = ["EPS", "Scored", "bins", "brier", "log_loss", "summary"]
