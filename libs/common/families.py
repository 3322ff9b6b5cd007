"""Which model family a Kalshi series belongs to (the unit of per-family switches, caps and exits)."""

from __future__ import annotations

from libs.common.stations import BY_SERIES


def family_of(series: str) -> str | None:
    """`weather` for daily-high series, `btc` for Bitcoin series, None for anything else."""
    if series in BY_SERIES or series.startswith("KXHIGH"):
        return "weather"
    if series.startswith("KXBTC"):
        return "btc"
    return None
