"""A matching engine on a hand-driven clock with deterministic ids and a recorded event stream."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import EngineEvent, MarketSpec, OrderRequest, PlaceResult
from libs.common.money import ONE_DOLLAR, PriceGrid

T = "KXHIGHNY-26NOV23-B52.5"
T2 = "KXHIGHNY-26NOV23-B54.5"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FUNDS = 1_000 * ONE_DOLLAR
E = TypeVar("E")


def req(side: str, price: int, count: int, *, ticker: str = T, **kw: Any) -> OrderRequest:
    """A GTC order request with taker_at_cross STP unless overridden."""
    base: dict[str, Any] = {"ticker": ticker, "book_side": side, "price": price, "count": count,
                            "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross"}
    base.update(kw)
    return OrderRequest(**base)


@dataclass
class Rig:
    """An engine, its clock and everything it emitted."""

    engine: MatchingEngine
    now: list[datetime]
    events: list[EngineEvent] = field(default_factory=list)

    def place(self, user: str, side: str, price: int, count: int, **kw: Any) -> PlaceResult:
        """Place an order (GTC, taker_at_cross unless overridden)."""
        return self.engine.place(user, req(side, price, count, **kw))

    def tick(self, seconds: float = 1) -> None:
        """Move the clock on."""
        self.now[0] += timedelta(seconds=seconds)

    def of(self, kind: type[E]) -> list[E]:
        """Recorded events of one type, in emission order."""
        return [e for e in self.events if isinstance(e, kind)]


def make_rig(*, fee_type: str = "quadratic", grid: PriceGrid | None = None, users: tuple[str, ...] = ("a", "b", "c"),
             funds: int = FUNDS, fee_rounding: str = "tick", multiplier: Decimal = Decimal(1),
             tickers: tuple[str, ...] = (T, T2)) -> Rig:
    """Active markets on one grid, funded users, ids id0, id1, ..."""
    now = [NOW]
    ids = (f"id{i}" for i in itertools.count())
    engine = MatchingEngine(lambda: now[0], ids=lambda: next(ids), fee_rounding=fee_rounding)  # type: ignore[arg-type]
    rig = Rig(engine, now)
    engine.listen(rig.events.append)
    for ticker in tickers:
        engine.add_market(MarketSpec(ticker, "KXHIGHNY-26NOV23", "KXHIGHNY", grid or PriceGrid.linear_cent(),
                                     fee_type=fee_type, fee_multiplier=multiplier))
    for u in users:
        engine.open_account(u, funds)
    rig.events.clear()
    return rig
