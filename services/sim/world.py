"""The simulated world: an exchange engine, its catalog, hidden truths and seeded outcomes, on a controllable clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import ExchangeError, Result
from services.sim.catalog import Catalog, EventInfo, MarketInfo, SeriesInfo


class World:
    """Everything the simulator knows, including what the desk must not: each market's true probability and outcome."""

    def __init__(self, seed: int, clock: Callable[[], datetime]) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock
        id_rng = random.Random(seed ^ 0x5EED)
        self.engine = MatchingEngine(clock, ids=lambda: f"{id_rng.getrandbits(128):032x}")
        self.catalog = Catalog()
        self.truth: dict[str, float] = {}  # market ticker -> true P(YES)
        self.outcomes: dict[str, Result] = {}  # market ticker -> how it will settle
        self.facts: dict[str, dict[str, Any]] = {}  # event ticker -> the underlying truth (daily max, BTC price)
        self.traders: Any = None  # BackgroundTraders, when attached
        # Scenario hooks called on every advance(now), e.g. to list the next hour's BTC events.
        self.rollers: list[Callable[[World, datetime], None]] = []

    def add_series(self, series: SeriesInfo) -> None:
        """List a series (idempotent)."""
        if series.ticker not in self.catalog.series:
            self.catalog.add_series(series)

    def add_event(self, event: EventInfo) -> None:
        """List an event."""
        self.catalog.add_event(event)

    def add_market(self, info: MarketInfo, truth: float, outcome: Result) -> None:
        """List a market with its hidden truth and outcome; it opens at its open_time."""
        series = self.catalog.series[info.series_ticker]
        self.catalog.add_market(info)
        self.engine.add_market(info.spec(series))
        self.truth[info.ticker] = truth
        self.outcomes[info.ticker] = outcome
        self.advance(self.clock(), only=info.ticker)

    def advance(self, now: datetime, only: str | None = None) -> None:
        """List what scenarios schedule, then open, close and settle markets whose times have come."""
        if only is None:
            for roll in self.rollers:
                roll(self, now)
        for ticker, info in list(self.catalog.markets.items()):
            if only is not None and ticker != only:
                continue
            status = self.engine.market(ticker).status
            if status == "initialized" and now >= info.open_time:
                self.engine.set_status(ticker, "active")
                status = "active"
            if status in ("active", "inactive") and now >= info.close_time:
                self.engine.set_status(ticker, "closed")
                status = "closed"
            settle_at = info.expected_expiration_time or info.close_time
            if status in ("closed", "determined") and now >= settle_at:
                try:
                    self.engine.settle(ticker, self.outcomes[ticker])
                except ExchangeError:
                    pass

    def active_markets(self) -> list[str]:
        """Markets trading now."""
        return [t for t in self.catalog.markets if self.engine.market(t).status == "active"]
