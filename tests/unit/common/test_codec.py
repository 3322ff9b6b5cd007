"""The wire codec: what orjson writes is what pydantic would, and decoding still validates everything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from libs.common import codec
from libs.common.bus import _typed_callback, keeps_history
from libs.common.config import Mode
from libs.common.events import (
    ANY_EVENT,
    Alert,
    BookUpdate,
    Event,
    Heartbeat,
    InputFreshness,
    MarketDefinition,
    OrderEvent,
    PublicTrade,
    Signal,
    SpotTick,
    WxForecast,
    WxObservation,
    decode_event,
)
from tests.kit.factories import book_update, market_definition, signal_event

T0 = datetime(2026, 11, 22, 14, 30, 5, 123456, tzinfo=UTC)


def spot_tick(**overrides: Any) -> SpotTick:
    fields: dict[str, Any] = dict(id="spot:coinbase:btc-usd:1", ts_event=T0, mode=Mode.SIM, venue="coinbase",
                                  symbol="BTC-USD", kind="trade", price=1_034_567_800, size=Decimal("0.01234567"))
    fields.update(overrides)
    return SpotTick(**fields)


def hot_events() -> list[Event]:
    """Hot events with the awkward values: Decimals in several forms, floats, None, offsets, whole seconds."""
    return [
        book_update(),
        book_update(yes_bids=(), no_bids=(), depth="top", ts_exchange=T0.replace(microsecond=0)),
        book_update(ts_event=datetime(2026, 11, 22, 9, 30, tzinfo=timezone(timedelta(hours=-5)))),
        spot_tick(),
        spot_tick(size=Decimal("1E+2")),
        spot_tick(size=Decimal("123456789012345678901234567890.123")),
        spot_tick(kind="ticker", size=None, bid=1_034_500_000, ask=1_034_600_000),
        signal_event(),
        signal_event(p_model=1 / 3, p_market=0.1, confidence=1, p_raw=5e-324, limit_price=None, action="none"),
        signal_event(p_model=0.30000000000000004, p_market=1e-7, inputs_ref="run:2026-11-22T06"),
    ]


def other_events() -> list[Event]:
    """One of each other kind, plain (orjson) and not (pydantic's serializer)."""
    return [
        market_definition(floor_strike=Decimal("78499.99"), close_time=T0),
        PublicTrade(ts_event=T0, mode=Mode.SIM, ticker="T", series_ticker="S", trade_id="t1", yes_price=4_200,
                    count=100, taker_outcome_side="no"),
        OrderEvent(ts_event=T0, mode=Mode.PAPER, kind="fill", client_order_id="c1", ticker="T", event_ticker="E",
                   book_side="bid", price=4_200, count=100, fee=7, is_taker=True),
        WxObservation(ts_event=T0, mode=Mode.SIM, station="KNYC", observed_at=T0, climate_date=T0.date(),
                      temp_f=61.2, running_max_f=None),
        WxForecast(ts_event=T0, mode=Mode.SIM, city="nyc", station="KNYC", run_time=T0, members=(),
                   deterministic={"2026-11-22": 63.5}, traces={"gfs:0": (60.1, 61.0)}),
        Alert(ts_event=T0, mode=Mode.SIM, family="deadletter", severity="warning", dedupe_key="k", title="t",
              data={"seq": 3, "nested": {"a": [1, 2]}, "size": "0.5"}),
        Heartbeat(ts_event=T0, mode=Mode.SIM, service="feeds", instance="i", status="ok", started_at=T0,
                  inputs={"md_book": InputFreshness(age_s=0.5, max_age_s=5, stale=False)}),
    ]


# --- encoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("event", hot_events() + other_events(), ids=lambda e: type(e).__name__)
def test_wire_bytes_are_what_pydantic_writes(event: Event) -> None:
    assert event.to_json() == event.model_dump_json().encode()


def test_hot_events_take_the_orjson_path_and_models_with_nested_or_any_fields_do_not() -> None:
    for cls in (BookUpdate, SpotTick, Signal, PublicTrade, OrderEvent, WxObservation):
        assert codec.is_plain(cls), cls
    for cls in (MarketDefinition, Alert, Heartbeat, WxForecast):
        assert not codec.is_plain(cls), cls


def test_a_model_that_customises_its_json_is_left_to_pydantic() -> None:
    class Serialized(BaseModel):
        model_config = ConfigDict(frozen=True)
        price: int

        @field_serializer("price")
        def _dollars(self, v: int) -> str:
            return f"${v / 10_000:.2f}"

    class Aliased(BaseModel):
        model_config = ConfigDict(frozen=True)
        price: int = Field(serialization_alias="p")

    for model in (Serialized(price=4_200), Aliased(price=4_200)):
        assert not codec.is_plain(type(model))
        assert codec.encode(model) == model.model_dump_json().encode()
    assert json.loads(codec.encode(Serialized(price=4_200))) == {"price": "$0.42"}


def test_what_orjson_refuses_falls_back_to_pydantic() -> None:
    huge = book_update(seq=2**70)  # beyond orjson's 64-bit integers
    assert huge.to_json() == huge.model_dump_json().encode()
    assert BookUpdate.model_validate_json(huge.to_json()).seq == 2**70


def test_an_unvalidated_model_copy_still_encodes() -> None:
    paper = signal_event().model_copy(update={"mode": Mode.PAPER})
    assert json.loads(paper.to_json())["mode"] == "paper"
    assert decode_event(paper.to_json()) == paper


# --- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("event", hot_events() + other_events(), ids=lambda e: type(e).__name__)
def test_round_trip_gives_an_equal_event_by_class_and_by_union(event: Event) -> None:
    data = event.to_json()
    by_class = codec.decoder(type(event))(data)
    assert type(by_class) is type(event) and by_class == event
    assert decode_event(data) == event
    assert codec.decoder(ANY_EVENT)(data) == event


def test_timestamps_come_back_aware_and_the_same_instant() -> None:
    for event in hot_events():
        back = codec.decoder(type(event))(event.to_json())
        for name in ("ts_event", "ts_init"):
            sent, got = getattr(event, name), getattr(back, name)
            assert got.tzinfo is not None and got.utcoffset() == sent.utcoffset() and got == sent
    assert codec.decoder(BookUpdate)(book_update(ts_event=T0).to_json()).ts_event.utcoffset() == timedelta(0)


def _wire(event: Event, **changes: Any) -> bytes:
    d = json.loads(event.to_json())
    for k, v in changes.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


BAD_BOOKS = {
    "not json": b'{"id": "b1", "type": "md.book"',
    "extra field": _wire(book_update(), surprise=1),
    "seq not an int": _wire(book_update(), seq="first"),
    "level not a pair": _wire(book_update(), yes_bids=[[4_200]]),
    "level count a word": _wire(book_update(), yes_bids=[[4_200, "lots"]]),
    "naive timestamp": _wire(book_update(), ts_event="2026-11-22T14:30:05"),
    "unknown mode": _wire(book_update(), mode="prod"),
    "wrong type tag": _wire(book_update(), type="md.spot"),
    "missing ticker": _wire(book_update(), ticker=...),
    "empty id": _wire(book_update(), id=""),
    "depth not allowed": _wire(book_update(), depth="partial"),
}


@pytest.mark.parametrize("data", BAD_BOOKS.values(), ids=BAD_BOOKS.keys())
def test_malformed_books_are_rejected(data: bytes) -> None:
    with pytest.raises(ValidationError):
        codec.decoder(BookUpdate)(data)
    with pytest.raises(ValidationError):
        decode_event(data)


BAD_SIGNALS = {
    "p_model above 1": _wire(signal_event(), p_model=1.5),
    "confidence below 0": _wire(signal_event(), confidence=-0.1),
    "action unknown": _wire(signal_event(), action="sell_yes"),
    "limit price a float": _wire(signal_event(), limit_price=56.5),
    "valid_until naive": _wire(signal_event(), valid_until="2026-11-22T14:30:05"),
    "extra field": _wire(signal_event(), note="hi"),
}


@pytest.mark.parametrize("data", BAD_SIGNALS.values(), ids=BAD_SIGNALS.keys())
def test_malformed_signals_are_rejected(data: bytes) -> None:
    with pytest.raises(ValidationError):
        codec.decoder(Signal)(data)


def test_malformed_spot_ticks_are_rejected() -> None:
    for data in (_wire(spot_tick(), size="a lot"), _wire(spot_tick(), price="1e9x"), _wire(spot_tick(), kind="bar"),
                 _wire(spot_tick(), venue=None)):
        with pytest.raises(ValidationError):
            codec.decoder(SpotTick)(data)


def test_decoded_events_are_frozen() -> None:
    for event in hot_events():
        back = codec.decoder(type(event))(event.to_json())
        with pytest.raises(ValidationError):
            back.id = "other"  # type: ignore[misc]
        assert hash(back) == hash(event)


# --- the bus's use of it -----------------------------------------------------------------------

def test_core_publishes_carry_msg_id_only_where_a_stream_keeps_history() -> None:
    assert not keeps_history("md.book.kxhighny.kxhighny-26nov22-b63_5")  # MD_BOOKS: last per subject
    assert not keeps_history("ops.health.feeds.a")  # no stream
    assert keeps_history("md.spot.btc.coinbase")  # MD_SPOT: a re-sent trade must be stored once
    assert keeps_history("res.accuracy")
    assert keeps_history("sig.weather.kxhighny.kxhighny-26nov22-b63_5")


class _Bus:
    """What `_typed_callback` needs of a bus: its mode and the foreign-mode check."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.foreign: list[str] = []

    def is_foreign(self, event: Any, subject: str) -> bool:
        if event.mode == self.mode:
            return False
        self.foreign.append(event.id)
        return True


async def test_subscription_callback_skips_malformed_and_foreign_events_and_hands_over_the_rest() -> None:
    bus, got = _Bus(Mode.SIM), []

    async def handler(ev: BookUpdate) -> None:
        got.append(ev.id)

    cb = _typed_callback(bus, BookUpdate, handler)  # type: ignore[arg-type]
    mine, theirs = book_update(id="mine"), book_update(id="theirs", mode=Mode.LIVE)
    for data in (mine.to_json(), theirs.to_json(), BAD_BOOKS["extra field"], BAD_BOOKS["not json"]):
        await cb(SimpleNamespace(subject="sim.md.book.s.t", data=data))  # type: ignore[arg-type]
    assert got == ["mine"] and bus.foreign == ["theirs"]
