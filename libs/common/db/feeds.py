"""Tables owned by `services/feeds`: Kalshi market definitions, sampled books, BTC spot bars, weather data."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Identity, Index, Integer, Numeric, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, updated_at_column


class Series(Base):
    """A Kalshi series (template such as `KXHIGHNY`) with its fee schedule; owner feeds, key `ticker`."""

    __tablename__ = "series"

    ticker: Mapped[str] = mapped_column(primary_key=True)
    title: Mapped[str | None]
    category: Mapped[str | None]
    frequency: Mapped[str | None]
    tags: Mapped[list[Any] | None]
    # quadratic | quadratic_with_maker_fees | quadratic_with_combo_maker_fees | flat; read at runtime (§3).
    fee_type: Mapped[str | None]
    fee_multiplier: Mapped[Decimal | None]
    settlement_sources: Mapped[list[Any] | None]
    contract_url: Mapped[str | None]
    contract_terms_url: Mapped[str | None]
    product_metadata: Mapped[dict[str, Any] | None]
    exchange_index: Mapped[int | None] = mapped_column(Integer)
    exchange_updated_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Event(Base):
    """A Kalshi event (one occurrence, e.g. `KXHIGHNY-26OCT04`); owner feeds, key `event_ticker`."""

    __tablename__ = "events"

    event_ticker: Mapped[str] = mapped_column(primary_key=True)
    series_ticker: Mapped[str] = mapped_column(index=True)
    title: Mapped[str | None]
    sub_title: Mapped[str | None]
    # Bracket events are mutually exclusive: exactly one market resolves YES; one exposure for caps (§6).
    mutually_exclusive: Mapped[bool | None]
    collateral_return_type: Mapped[str | None]
    strike_date: Mapped[datetime | None]
    strike_period: Mapped[str | None]
    # Per-event fee overrides; NULL falls back to the series.
    fee_type_override: Mapped[str | None]
    fee_multiplier_override: Mapped[Decimal | None]
    exchange_index: Mapped[int | None] = mapped_column(Integer)
    exchange_updated_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Market(Base):
    """A Kalshi market (binary contract) with strikes, times, tick grid and result; owner feeds, key `ticker`."""

    __tablename__ = "markets"
    __table_args__ = (
        Index("ix_markets_series_ticker_status", "series_ticker", "status"),
    )

    ticker: Mapped[str] = mapped_column(primary_key=True)
    event_ticker: Mapped[str] = mapped_column(index=True)
    series_ticker: Mapped[str]
    market_type: Mapped[str | None]  # binary | scalar
    title: Mapped[str | None]
    yes_sub_title: Mapped[str | None]
    no_sub_title: Mapped[str | None]
    # Exchange status: initialized active inactive closed determined disputed amended finalized.
    status: Mapped[str]
    # greater | greater_or_equal | less | less_or_equal | between | functional | custom | structured
    strike_type: Mapped[str | None]
    floor_strike: Mapped[Decimal | None]
    cap_strike: Mapped[Decimal | None]
    functional_strike: Mapped[str | None]
    custom_strike: Mapped[dict[str, Any] | None]
    open_time: Mapped[datetime | None]
    close_time: Mapped[datetime | None] = mapped_column(index=True)
    expected_expiration_time: Mapped[datetime | None]
    latest_expiration_time: Mapped[datetime | None]
    settlement_timer_seconds: Mapped[int | None] = mapped_column(Integer)
    can_close_early: Mapped[bool | None]
    # Tick grid from Kalshi `price_ranges`, converted at the client boundary: [{start, end, step}] in ticks.
    price_level_structure: Mapped[str | None]
    price_ranges: Mapped[list[Any] | None]
    notional_value_price: Mapped[int | None]
    result: Mapped[str | None]  # yes | no | scalar | '' (not yet determined)
    expiration_value: Mapped[str | None]  # the underlying value used for settlement, as Kalshi sends it
    settlement_value_price: Mapped[int | None]  # YES payout per contract after determination
    settlement_ts: Mapped[datetime | None]
    rules_primary: Mapped[str | None] = mapped_column(Text)
    rules_secondary: Mapped[str | None] = mapped_column(Text)
    is_provisional: Mapped[bool | None]
    exchange_index: Mapped[int | None] = mapped_column(Integer)
    exchange_updated_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class MarketSnapshot(Base):
    """A sampled top of book (not every delta) for one market; owner feeds, key (`ticker`, `ts`)."""

    __tablename__ = "market_snapshots"
    __table_args__ = (UniqueConstraint("ticker", "ts"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    ticker: Mapped[str]
    ts: Mapped[datetime]  # exchange time of the book state
    seq: Mapped[int | None]  # WS sequence number when sampled from the stream
    source: Mapped[str | None]  # ws | rest | sim
    # YES-leg quotes; NO quotes are their complement (no_bid = 1 - yes_ask).
    yes_bid_price: Mapped[int | None]
    yes_ask_price: Mapped[int | None]
    yes_bid_count: Mapped[int | None]
    yes_ask_count: Mapped[int | None]
    last_price: Mapped[int | None]
    volume_count: Mapped[int | None]
    open_interest_count: Mapped[int | None]
    depth: Mapped[dict[str, Any] | None]  # top-N levels both sides, ticks and counts
    created_at: Mapped[datetime] = created_at_column()


class CryptoSpotBar(Base):
    """An OHLC bar of a spot venue's BTC price; owner feeds, key (`venue`, `symbol`, `interval_s`, `ts`)."""

    __tablename__ = "crypto_spot_bars"
    __table_args__ = (UniqueConstraint("venue", "symbol", "interval_s", "ts"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    venue: Mapped[str]  # coinbase | kraken | bitstamp | binance | brti ...
    symbol: Mapped[str]  # venue-native symbol, e.g. BTC-USD
    interval_s: Mapped[int] = mapped_column(Integer)  # bar width in seconds
    ts: Mapped[datetime]  # bar start (UTC)
    open_price: Mapped[int]
    high_price: Mapped[int]
    low_price: Mapped[int]
    close_price: Mapped[int]
    vwap_price: Mapped[int | None]
    volume_base: Mapped[Decimal | None] = mapped_column(Numeric(28, 8))  # traded BTC (not money, not contracts)
    trade_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_at_column()


class WeatherForecastRun(Base):
    """One ensemble fetch for one settlement station (one or more models); owner feeds, key `run_id`."""

    __tablename__ = "weather_forecast_runs"
    __table_args__ = (Index("ix_weather_forecast_runs_station_fetched_at", "station", "fetched_at"),)

    # Deterministic id of the forecast event (provider, station, model run), so redelivery is a no-op.
    run_id: Mapped[str] = mapped_column(primary_key=True)
    provider: Mapped[str]  # open-meteo | sim
    station: Mapped[str]  # settlement station ICAO, e.g. KNYC
    city: Mapped[str | None]
    models: Mapped[list[Any]]  # canonical model names in this run
    issued_at: Mapped[datetime | None]  # model initialisation time when known
    fetched_at: Mapped[datetime]
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    elevation_m: Mapped[float | None]
    # Offset of local standard time from UTC used to cut climate days (e.g. -300 for New York).
    lst_offset_minutes: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()


class WeatherEnsembleMember(Base):
    """One member's max/min over one climate day; owner feeds, key (`run_id`, `model`, `member`, `target_date`)."""

    __tablename__ = "weather_ensemble_members"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("weather_forecast_runs.run_id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(primary_key=True)
    member: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = control run
    target_date: Mapped[date] = mapped_column(primary_key=True)  # climate day (local standard time)
    tmax_f: Mapped[float | None]
    tmin_f: Mapped[float | None]
    hours_covered: Mapped[int | None] = mapped_column(Integer)  # hourly values inside the climate day


class WeatherObservation(Base):
    """A station observation with the running climate-day max; owner feeds, key (`station`, `observed_at`)."""

    __tablename__ = "weather_observations"
    __table_args__ = (
        UniqueConstraint("station", "observed_at"),
        Index("ix_weather_observations_station_climate_date", "station", "climate_date"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    station: Mapped[str]  # ICAO, e.g. KNYC
    observed_at: Mapped[datetime]
    climate_date: Mapped[date]  # climate day (midnight to midnight local standard time) it belongs to
    temperature_c: Mapped[float | None]  # as reported (NWS API values are °C)
    temperature_f: Mapped[float | None]
    running_max_f: Mapped[float | None]  # max so far over the climate day, including this observation
    max_last_24h_c: Mapped[float | None]
    qc: Mapped[str | None]  # MADIS quality-control flag
    source: Mapped[str | None]  # nws-api | metar | sim
    raw_message: Mapped[str | None] = mapped_column(Text)  # METAR text
    created_at: Mapped[datetime] = created_at_column()
