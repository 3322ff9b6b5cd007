"""The executor's market view: the shared one (libs/common/market_view.py) plus the strike table that the
risk gate nets events with."""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.common.events import MarketDefinition
from libs.common.market_view import MarketState, MarketView
from services.executor.exposure import Strike

__all__ = ["MarketState", "Markets"]


@dataclass(slots=True)
class Markets(MarketView):
    """Definitions, books and strikes by ticker."""

    strikes: dict[str, Strike | None] = field(default_factory=dict)

    def on_market(self, d: MarketDefinition) -> MarketState:
        st = MarketView.on_market(self, d)
        self.strikes[d.ticker] = Strike(d.strike_type, d.floor_strike, d.cap_strike) if d.strike_type else None
        return st
