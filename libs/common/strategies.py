"""The desk's strategies, and how capital and markets are shared among them.

- `directional`: a signal's cheap leg bought maker-first and held (to settlement or an exit rule);
- `market_making`: two-sided quotes around the model's fair value on the series in KDESK_MM_SERIES
  (services/executor/market_making.py);
- `quick_flip`: a signal's cheap leg bought, then sold at a near-term target, given up after a time
  limit, on the series in KDESK_QUICK_FLIP_SERIES (services/executor/quick_flip.py).

Capital: KDESK_ALLOCATION gives each strategy a fraction of the portfolio cap
(`directional=0.4,market_making=0.3,quick_flip=0.3`); the locked reservation refuses an order that would
take a strategy past its share (`cap_strategy`), across replicas, like every other cap. A strategy not
named gets nothing. Markets: a market belongs to one strategy at a time — the one with an open order or
a position there — so a position is never shared and per-strategy P&L stays exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

Strategy = Literal["directional", "market_making", "quick_flip"]
STRATEGIES: tuple[Strategy, ...] = ("directional", "market_making", "quick_flip")
DEFAULT_ALLOCATION = "directional=1"


def parse_allocation(text: str) -> dict[Strategy, float]:
    """`directional=0.4,market_making=0.3` -> {strategy: fraction}; fractions in [0, 1], summing to at most 1."""
    out: dict[Strategy, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in STRATEGIES:
            raise ValueError(f"expected 'strategy=fraction' with a strategy among {', '.join(STRATEGIES)}, "
                             f"got {part[:80]!r}")
        if name in out:
            raise ValueError(f"{name} is allocated twice")
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value.strip()[:40]!r} is not a fraction like 0.3") from None
        if not 0 <= x <= 1:  # also refuses nan
            raise ValueError(f"{name}: {x} is not a fraction between 0 and 1")
        out[name] = x  # type: ignore[index]
    if sum(out.values()) > 1 + 1e-9:
        raise ValueError(f"the fractions add up to {sum(out.values()):.4g}, more than 1")
    return out


def strategy_caps(allocation: Mapping[Strategy, float], max_portfolio: int) -> dict[Strategy, int]:
    """Each strategy's capital cap in ticks: its fraction of the portfolio cap (0 when not allocated)."""
    return {s: int(allocation.get(s, 0.0) * max_portfolio) for s in STRATEGIES}


def parse_series(text: str) -> frozenset[str]:
    """A comma-separated list of series tickers, upper-cased."""
    return frozenset(s.strip().upper() for s in text.split(",") if s.strip())


def route(series_ticker: str | None, *, mm_series: Iterable[str], flip_series: Iterable[str]) -> Strategy:
    """Which strategy a market's signals belong to: the maker's series, quick flip's, else directional."""
    s = (series_ticker or "").upper()
    if s in mm_series:
        return "market_making"
    if s in flip_series:
        return "quick_flip"
    return "directional"


__all__ = ["DEFAULT_ALLOCATION", "STRATEGIES", "Strategy", "parse_allocation", "parse_series", "route",
           "strategy_caps"]
