"""Venue frame parsing (data_sources.md C1–C4): trades, tickers, heartbeats, acks and malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from libs.common.money import MoneyError
from services.feeds.spot import (
    VenueMessageError,
    VenueReconnectRequested,
    VenueRejected,
    VenueTick,
    event_id,
    parse_binance,
    parse_bitstamp,
    parse_coinbase,
    parse_kraken,
    usd_ticks,
)

# --- exact prices ----------------------------------------------------------------------------------


def test_usd_prices_become_exact_ticks() -> None:
    assert usd_ticks("95012.34") == 950_123_400
    assert usd_ticks("95012.34000000") == 950_123_400  # Binance's 8 places
    assert usd_ticks(Decimal("95012.3")) == 950_123_000  # Kraken JSON number read as Decimal
    assert usd_ticks(95012) == 950_120_000  # Bitstamp whole dollars
    assert usd_ticks("0.00015") == 2 and usd_ticks("0.00025") == 2  # finer than $0.0001: half-even, explicit


@pytest.mark.parametrize("bad", ["1e5", "-1", "0", " 95012", "95,012.34", "95012.123456789", "", 95012.34, True,
                                 Decimal("NaN"), Decimal("1E+30")])
def test_usd_prices_refuse_what_is_not_a_plain_positive_decimal(bad: object) -> None:
    with pytest.raises(MoneyError):
        usd_ticks(bad)  # type: ignore[arg-type]


# --- Coinbase Exchange (C1) --------------------------------------------------------------------------

CB_TICKER = {
    "type": "ticker", "sequence": 37475248783, "product_id": "BTC-USD", "price": "95012.34",
    "open_24h": "94010.01", "volume_24h": "12345.67890123", "low_24h": "93800.00", "high_24h": "95500.00",
    "volume_30d": "400000.12345678", "best_bid": "95012.33", "best_bid_size": "0.50000000", "best_ask": "95012.34",
    "best_ask_size": "0.01234567", "side": "buy", "time": "2026-08-25T17:00:00.123456Z", "trade_id": 612345678,
    "last_size": "0.00150000",
}


def test_coinbase_ticker_is_a_trade_with_top_of_book() -> None:
    [t] = parse_coinbase(json.dumps(CB_TICKER))
    assert t == VenueTick(venue="coinbase", symbol="BTC-USD", kind="trade", price=950_123_400,
                          size=Decimal("0.00150000"), bid=950_123_300, ask=950_123_400,
                          ts_event=datetime(2026, 8, 25, 17, 0, 0, 123456, tzinfo=UTC), trade_id="612345678")
    assert event_id(t) == "spot:coinbase:btc-usd:612345678"


def test_coinbase_heartbeat_ack_and_unknown_types_give_nothing() -> None:
    hb = {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
          "time": "2026-08-25T17:00:01.000000Z"}
    ack = {"type": "subscriptions", "channels": [{"name": "ticker", "product_ids": ["BTC-USD"]},
                                                 {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}
    assert parse_coinbase(json.dumps(hb)) == []
    assert parse_coinbase(json.dumps(ack)) == []
    assert parse_coinbase(json.dumps({"type": "status", "products": []})) == []  # unknown types are ignored (C1)


def test_coinbase_error_is_a_rejection() -> None:
    with pytest.raises(VenueRejected, match="not a valid product"):
        parse_coinbase(json.dumps({"type": "error", "message": "Failed to subscribe",
                                   "reason": "BTC-XYZ is not a valid product"}))


@pytest.mark.parametrize("raw", [
    '{"type": "ticker", "product_id": "BTC-USD", "price": "950',  # truncated
    json.dumps({**CB_TICKER, "price": "abc"}),
    json.dumps({**CB_TICKER, "best_bid": [95012.33]}),
    json.dumps({k: v for k, v in CB_TICKER.items() if k != "product_id"}),
    json.dumps({**CB_TICKER, "time": "yesterday"}),
    json.dumps({**CB_TICKER, "trade_id": True}),
    json.dumps({"sequence": 1}),
    "[1, 2]",
])
def test_coinbase_malformed_frames_raise(raw: str) -> None:
    with pytest.raises(VenueMessageError):
        parse_coinbase(raw)


# --- Kraken WS v2 (C2) -------------------------------------------------------------------------------

KR_TICKER_ROW = {"symbol": "BTC/USD", "bid": 95012.3, "bid_qty": 0.50000000, "ask": 95012.4, "ask_qty": 1.25,
                 "last": 95012.4, "volume": 1234.56789, "vwap": 94900.1, "low": 93800.0, "high": 95500.0,
                 "change": 1002.3, "change_pct": 1.07, "timestamp": "2026-08-25T17:00:00.742599Z"}


def test_kraken_ticker_snapshot_and_update_numbers_are_read_exactly() -> None:
    for typ in ("snapshot", "update"):
        [t] = parse_kraken(json.dumps({"channel": "ticker", "type": typ, "data": [KR_TICKER_ROW]}))
        assert t == VenueTick(venue="kraken", symbol="BTC/USD", kind="ticker", price=950_124_000, bid=950_123_000,
                              ask=950_124_000, ts_event=datetime(2026, 8, 25, 17, 0, 0, 742599, tzinfo=UTC))
        assert t.trade_id is None
    # 0.1 + 0.2 style binary noise never reaches a price: the JSON number is read as a decimal.
    [t] = parse_kraken('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":95012.29,'
                       '"ask":95012.31,"last":95012.3}]}')
    assert (t.bid, t.ask, t.price, t.ts_event) == (950_122_900, 950_123_100, 950_123_000, None)


def test_kraken_trade_updates_are_trades_and_the_snapshot_is_skipped() -> None:
    row = {"symbol": "BTC/USD", "side": "sell", "price": 95010.0, "qty": 0.00421, "ord_type": "market",
           "trade_id": 81234567, "timestamp": "2026-08-25T17:00:00.100000Z"}
    [t] = parse_kraken(json.dumps({"channel": "trade", "type": "update", "data": [row]}))
    assert (t.kind, t.price, t.size, t.trade_id) == ("trade", 950_100_000, Decimal("0.00421"), "81234567")
    assert event_id(t) == "spot:kraken:btc-usd:81234567"
    assert parse_kraken(json.dumps({"channel": "trade", "type": "snapshot", "data": [row]})) == []


def test_kraken_heartbeat_status_ack_and_pong_give_nothing() -> None:
    frames = [
        {"channel": "heartbeat"},
        {"channel": "status", "type": "update", "data": [{"api_version": "v2", "connection_id": 1, "system": "online",
                                                          "version": "2.0.10"}]},
        {"method": "subscribe", "result": {"channel": "ticker", "event_trigger": "bbo", "snapshot": True,
                                           "symbol": "BTC/USD"}, "success": True,
         "time_in": "2026-08-25T17:00:00.000000Z", "time_out": "2026-08-25T17:00:00.000100Z", "req_id": 1},
        {"method": "pong", "req_id": 7, "time_in": "2026-08-25T17:00:00.000000Z",
         "time_out": "2026-08-25T17:00:00.000100Z"},
    ]
    for f in frames:
        assert parse_kraken(json.dumps(f)) == []


def test_kraken_refused_subscription_is_a_rejection() -> None:
    with pytest.raises(VenueRejected, match="Currency pair not supported"):
        parse_kraken(json.dumps({"error": "Currency pair not supported BTC/XYZ", "method": "subscribe",
                                 "success": False, "symbol": "BTC/XYZ", "req_id": 1}))


@pytest.mark.parametrize("frame", [
    {"channel": "ticker", "data": [KR_TICKER_ROW]},  # no type
    {"channel": "ticker", "type": "update", "data": KR_TICKER_ROW},  # data not a list
    {"channel": "ticker", "type": "update", "data": [{**KR_TICKER_ROW, "last": "abc"}]},
    {"channel": "ticker", "type": "update", "data": [{**KR_TICKER_ROW, "last": -1}]},
    {"channel": "ticker", "type": "update", "data": ["BTC/USD"]},
    {"channel": "trade", "type": "update", "data": [{"symbol": "BTC/USD", "price": 1.0, "qty": 1.0}]},  # no id/time
    {"req_id": 3},
])
def test_kraken_malformed_frames_raise(frame: dict[str, object]) -> None:
    with pytest.raises(VenueMessageError):
        parse_kraken(json.dumps(frame))


def test_kraken_non_json_raises() -> None:
    with pytest.raises(VenueMessageError):
        parse_kraken(b"\xff\xfe")


# --- Bitstamp (C4) -----------------------------------------------------------------------------------

BS_TRADE = {"event": "trade", "channel": "live_trades_btcusd", "data": {
    "id": 412345678, "timestamp": "1787677200", "amount": 0.0125, "amount_str": "0.01250000", "price": 95012,
    "price_str": "95012", "type": 1, "microtimestamp": "1787677200123456", "buy_order_id": 1812345678901234,
    "sell_order_id": 1812345678905678}}


def test_bitstamp_trade() -> None:
    [t] = parse_bitstamp(json.dumps(BS_TRADE))
    assert t == VenueTick(venue="bitstamp", symbol="btcusd", kind="trade", price=950_120_000,
                          size=Decimal("0.01250000"), ts_event=datetime(2026, 8, 25, 17, 0, 0, 123456, tzinfo=UTC),
                          trade_id="412345678")
    assert event_id(t) == "spot:bitstamp:btcusd:412345678"
    # Without microtimestamp the whole-second timestamp is used.
    data = {k: v for k, v in BS_TRADE["data"].items() if k != "microtimestamp"}  # type: ignore[attr-defined]
    [t] = parse_bitstamp(json.dumps({**BS_TRADE, "data": data}))
    assert t.ts_event == datetime(2026, 8, 25, 17, 0, 0, tzinfo=UTC)


def test_bitstamp_acks_and_heartbeats_give_nothing() -> None:
    assert parse_bitstamp('{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}') == []
    assert parse_bitstamp('{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}') == []


def test_bitstamp_reconnect_request_and_error() -> None:
    with pytest.raises(VenueReconnectRequested):
        parse_bitstamp('{"event":"bts:request_reconnect","channel":"","data":""}')
    with pytest.raises(VenueRejected, match="Bad subscription"):
        parse_bitstamp('{"event":"bts:error","channel":"","data":{"code":null,"message":"Bad subscription string."}}')


@pytest.mark.parametrize("data", [
    {**BS_TRADE["data"], "price_str": "x"},  # type: ignore[dict-item]
    {**BS_TRADE["data"], "amount_str": "-1"},  # type: ignore[dict-item]
    {**BS_TRADE["data"], "microtimestamp": "soon"},  # type: ignore[dict-item]
    {**BS_TRADE["data"], "id": None},  # type: ignore[dict-item]
    "trade",
])
def test_bitstamp_malformed_trades_raise(data: object) -> None:
    with pytest.raises(VenueMessageError):
        parse_bitstamp(json.dumps({**BS_TRADE, "data": data}))


def test_bitstamp_frame_without_event_raises() -> None:
    with pytest.raises(VenueMessageError):
        parse_bitstamp('{"channel":"live_trades_btcusd"}')


# --- Binance (C3) ------------------------------------------------------------------------------------

BN_TRADE = {"e": "trade", "E": 1787677200124, "s": "BTCUSDT", "t": 5123456789, "p": "95012.34000000",
            "q": "0.00100000", "T": 1787677200123, "m": True, "M": True}
BN_BOOK = {"u": 400900217, "s": "BTCUSDT", "b": "95012.33000000", "B": "31.21000000", "a": "95012.34000000",
           "A": "40.66000000"}


def test_binance_trade_raw_and_combined() -> None:
    for frame in (BN_TRADE, {"stream": "btcusdt@trade", "data": BN_TRADE}):
        [t] = parse_binance(json.dumps(frame))
        assert t == VenueTick(venue="binance", symbol="BTCUSDT", kind="trade", price=950_123_400,
                              size=Decimal("0.00100000"), ts_event=datetime(2026, 8, 25, 17, 0, 0, 123000, tzinfo=UTC),
                              trade_id="5123456789")


def test_binance_book_ticker_price_is_the_mid() -> None:
    [t] = parse_binance(json.dumps({"stream": "btcusdt@bookTicker", "data": BN_BOOK}))
    assert (t.kind, t.bid, t.ask, t.price, t.ts_event) == ("ticker", 950_123_300, 950_123_400, 950_123_350, None)
    assert not event_id(t).startswith("spot:")  # no trade id: a random event id


def test_binance_subscribe_answer_gives_nothing_and_errors_raise() -> None:
    assert parse_binance('{"result":null,"id":1}') == []
    with pytest.raises(VenueRejected):
        parse_binance('{"error":{"code":2,"msg":"Invalid request"},"id":1}')
    with pytest.raises(VenueReconnectRequested):
        parse_binance('{"e":"serverShutdown","E":1787677200000}')


@pytest.mark.parametrize("frame", [
    {**BN_TRADE, "p": "NaN"},
    {**BN_TRADE, "T": "later"},
    {k: v for k, v in BN_BOOK.items() if k != "b"},
    {"hello": "world"},
])
def test_binance_malformed_frames_raise(frame: dict[str, object]) -> None:
    with pytest.raises(VenueMessageError):
        parse_binance(json.dumps(frame))
