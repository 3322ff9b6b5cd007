"""Event factories: every test builds bus events the same way."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

from libs.common.config import Mode
from libs.common.events import Alert, BookUpdate, Level, MarketDefinition, PriceRange, Signal, utcnow
from libs.common.money import ONE_DOLLAR

WX_BRACKET = "KXHIGHNY-26NOV22-B63.5"
_book_seq = itertools.count(1)
_WX_BRACKET_SUFFIX = re.compile(r"-B(\d+)\.5$")  # a weather bracket "B63.5" covers 63 °F to 64 °F


def signal_event(ticker: str = WX_BRACKET, **overrides: Any) -> Signal:
    """A plausible weather signal; override any field."""
    now = utcnow()
    fields: dict[str, Any] = dict(
        ts_event=now, mode=Mode.SIM, family="weather", series_ticker=ticker.split("-")[0],
        event_ticker="-".join(ticker.split("-")[:2]), ticker=ticker, model="wx_ens", model_version="1",
        p_model=0.62, p_market=0.55, action="buy_yes", limit_price=5_600, edge_maker=600, edge_taker=250,
        confidence=0.8, valid_until=now + timedelta(minutes=5),
    )
    fields.update(overrides)
    return Signal(**fields)


def market_definition(ticker: str = WX_BRACKET, **overrides: Any) -> MarketDefinition:
    """An active market on the whole-cent grid with the default fee schedule; override any field.

    Series and event come from the ticker; a weather bracket ticker (`-B63.5`) gets its `between`
    63-64 °F strikes, any other ticker none. No close time unless given: with one, signals also
    require fresh weather inputs.
    """
    fields: dict[str, Any] = dict(
        ts_event=utcnow(), mode=Mode.SIM, ticker=ticker, event_ticker="-".join(ticker.split("-")[:2]),
        series_ticker=ticker.split("-")[0], status="active",
        price_ranges=(PriceRange(start=0, end=ONE_DOLLAR, step=100),), fee_type="quadratic",
        fee_multiplier=Decimal(1))
    if (bracket := _WX_BRACKET_SUFFIX.search(ticker)) is not None:
        low = Decimal(bracket.group(1))
        fields.update(strike_type="between", floor_strike=low, cap_strike=low + 1)
    fields.update(overrides)
    return MarketDefinition(**fields)


def book_update(ticker: str = WX_BRACKET, yes_bids: tuple[Level, ...] = ((4_700, 1_000), (4_800, 2_500)),
                no_bids: tuple[Level, ...] = ((5_000, 1_000), (5_100, 2_500)), **overrides: Any) -> BookUpdate:
    """A full book stamped now (YES 48¢ bid / 49¢ ask by default, levels best last); override any field.

    The series comes from the ticker; `seq` counts up across the test run unless given.
    """
    fields: dict[str, Any] = dict(ts_event=utcnow(), mode=Mode.SIM, ticker=ticker, series_ticker=ticker.split("-")[0],
                                  seq=next(_book_seq), yes_bids=yes_bids, no_bids=no_bids)
    fields.update(overrides)
    return BookUpdate(**fields)


def alert_event(**overrides: Any) -> Alert:
    """An operational alert."""
    fields: dict[str, Any] = dict(ts_event=utcnow(), mode=Mode.SIM, family="test", severity="info",
                                  dedupe_key="k", title="t")
    fields.update(overrides)
    return Alert(**fields)


def ensemble_members(facts: dict[str, Any], *, seed: int = 3, per_model: int = 50) -> tuple[Any, ...]:
    """150 ensemble members (3 models) scattered around a sim weather event's true mean and spread."""
    from services.sim.scenarios import ensemble_around

    return ensemble_around(facts, seed=seed, per_model=per_model)
