"""What the simulated exchange lists: series, events and markets with their metadata.

The matching engine knows only what it needs to match (`MarketSpec`); the catalog holds what the
REST and WS APIs describe (titles, strikes, times, rules). Scenarios fill both; the server reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from libs.common.matching.types import MarketSpec
from libs.common.money import PriceGrid


@dataclass
class SeriesInfo:
    """A series (`GET /series/{ticker}`)."""

    ticker: str
    title: str
    category: str
    frequency: str
    fee_type: str = "quadratic"
    fee_multiplier: Decimal = Decimal(1)
    settlement_sources: list[dict[str, str]] = field(default_factory=list)
    contract_url: str = ""
    contract_terms_url: str = ""
    tags: list[str] = field(default_factory=list)
    exchange_index: int = 0  # the shard its new events are created on (kalshi_api.md §3.12)
    # Discovery categories (SDK 3.34 `categories`); empty = just `category`.
    categories: list[str] = field(default_factory=list)
    last_updated: datetime | None = None  # None = when its first market was listed

    def all_categories(self) -> list[str]:
        """`categories` as the API lists it: never empty when the series has a category."""
        return list(self.categories) if self.categories else ([self.category] if self.category else [])


@dataclass
class EventInfo:
    """An event (`GET /events/{event_ticker}`)."""

    event_ticker: str
    series_ticker: str
    title: str
    sub_title: str = ""
    strike_date: datetime | None = None
    mutually_exclusive: bool = True
    # The shard the event and all its markets live on; None = its series' (set when listed). An event
    # created before its series moved shards stays where it was, so the event, not the series, decides.
    exchange_index: int | None = None
    last_updated: datetime | None = None  # None = when its first market was listed

    @property
    def shard(self) -> int:
        """The shard the event lives on (its `exchange_index`, resolved when the catalog listed it)."""
        return self.exchange_index if self.exchange_index is not None else 0

    @property
    def collateral_return_type(self) -> str:
        """`MECNET` for mutually exclusive events, `""` otherwise (kalshi_api.md §4.4 enum)."""
        return "MECNET" if self.mutually_exclusive else ""


@dataclass
class MarketInfo:
    """A market's descriptive fields (`GET /markets/{ticker}`); status/result live in the engine."""

    ticker: str
    event_ticker: str
    series_ticker: str
    title: str
    yes_sub_title: str
    no_sub_title: str
    strike_type: str  # greater | less | between | greater_or_equal ...
    floor_strike: Decimal | None
    cap_strike: Decimal | None
    open_time: datetime
    close_time: datetime
    expected_expiration_time: datetime | None
    latest_expiration_time: datetime
    grid: PriceGrid
    price_level_structure: str = "linear_cent"
    rules_primary: str = ""
    rules_secondary: str = ""
    created_time: datetime | None = None
    settlement_timer_seconds: int = 3600
    can_close_early: bool = False
    exchange_index: int | None = None  # None = its event's (set when listed); never another shard than the event's
    expiration_value: str = ""
    # Settlement bounds (docs `getting_started/settlement_bounds`, SDK 3.34): "default" never has a
    # floor; "floor" markets carry `settlement_floor_dollars`, starting at $0. Always "default" in
    # MECNET/DIRECNET events.
    settlement_bounds_type: str = "default"
    settlement_floor: int = 0  # $0.0001 ticks; only shown when settlement_bounds_type == "floor"

    def spec(self, series: SeriesInfo) -> MarketSpec:
        """The engine's view of this market."""
        return MarketSpec(ticker=self.ticker, event_ticker=self.event_ticker, series_ticker=self.series_ticker,
                          grid=self.grid, fee_type=series.fee_type, fee_multiplier=series.fee_multiplier,
                          status="initialized", exchange_index=self.shard)

    @property
    def shard(self) -> int:
        """The shard the market lives on (its `exchange_index`, resolved when the catalog listed it)."""
        return self.exchange_index if self.exchange_index is not None else 0


@dataclass
class Catalog:
    """Everything listed, in insertion order (pagination follows it)."""

    series: dict[str, SeriesInfo] = field(default_factory=dict)
    events: dict[str, EventInfo] = field(default_factory=dict)
    markets: dict[str, MarketInfo] = field(default_factory=dict)

    def add_series(self, s: SeriesInfo) -> None:
        """List a series."""
        self.series[s.ticker] = s

    def add_event(self, e: EventInfo) -> None:
        """List an event of a listed series (on its series' shard unless it names one)."""
        series = self.series.get(e.series_ticker)
        if series is None:
            raise KeyError(f"unknown series {e.series_ticker}")
        if e.exchange_index is None:
            e.exchange_index = series.exchange_index
        self.events[e.event_ticker] = e

    def add_market(self, m: MarketInfo) -> None:
        """List a market of a listed event."""
        event = self.events.get(m.event_ticker)
        if event is None:
            raise KeyError(f"unknown event {m.event_ticker}")
        if m.settlement_bounds_type not in ("default", "floor"):
            raise ValueError(f"settlement_bounds_type must be 'default' or 'floor', got {m.settlement_bounds_type!r}")
        if m.settlement_bounds_type == "floor" and event.collateral_return_type in ("MECNET", "DIRECNET"):
            raise ValueError(f"{m.ticker}: markets of {event.collateral_return_type} events are always 'default'")
        # "All child markets of an event will live on the same exchange instance" (sharding guide FAQ).
        if m.exchange_index is None:
            m.exchange_index = event.exchange_index
        elif m.exchange_index != event.exchange_index:
            raise ValueError(f"{m.ticker}: exchange_index {m.exchange_index}, but its event {event.event_ticker} "
                             f"lives on {event.exchange_index}")
        self.markets[m.ticker] = m

    def markets_of(self, event_ticker: str) -> list[MarketInfo]:
        """Markets of one event, in listing order."""
        return [m for m in self.markets.values() if m.event_ticker == event_ticker]
