"""Bad-input fuzz campaign (issue 18): Hypothesis-generated garbage against the desk's real parsers and handlers.

Each target feeds one entry point the desk really uses with structured bad input — valid-looking messages with
mutated fields, wrong types, huge numbers, NaN/Infinity, unicode, truncation, deep nesting, long repetitions —
and counts a *crash* whenever the outcome is not what the code documents for bad input. Per target, the entry
point and what counts as "a clear error or a skip":

- kalshi_ws_books: `KalshiWS._dispatch` with the feeds' wiring (books, `trade`, lifecycle). The frame is counted
  malformed and skipped (a book message resyncs its books); books keep positive sizes at prices in ($0, $1);
  every book and trade published decodes back to itself.
- kalshi_ws_private: `KalshiWS._dispatch` into the executor's `OrderLifecycle.on_frame`, the ledger recorded.
  Skipped as malformed; every order state and fill handed to the ledger is sane (counts >= 0, fills > 0, prices
  in ($0, $1), aware times) — a wrong ledger row is a crash.
- kalshi_rest: `KalshiRest` calls over `httpx.MockTransport`: the model or a `KalshiError`; REST fills, orders
  and books as the executor and the REST poller take them are sane.
- kalshi_discovery: `Discovery.poll_once` over the same mock: nothing escapes the pass (a bad series is logged
  and skipped, a bad market too); definitions decode.
- venue_coinbase / _kraken / _bitstamp / _binance: `VenueFeed._handle` (parser, `SpotTick`, emit): skipped as
  malformed, or `VenueRejected` / `VenueReconnectRequested` (the feed reconnects); ticks have positive prices.
- open_meteo: `EnsemblePoller.poll_once` over a mock: a `WxForecast`, or `WeatherDataError` / `httpx.HTTPError`
  (what the poller's loop catches: anything else would end it).
- nws_observations: `ObservationPoller.poll_once` over a mock: observations, or the same two errors.
- nws_climate_report: `climate_report.parse` (a `ClimateReport` or `ReportError`) and the resolver's
  `reports._row`, which must never raise (a product that cannot be read is stored with its reason).
- telegram: `NotifierBot` through aiogram's `Dispatcher.feed_update`, bus, control KV and store recorded. An
  answer or a refusal; no handler fails on its arguments; unknown users cause nothing, viewers steer nothing,
  live is armed only by an operator's exact phrase; every update is audited; replies fit Telegram (<= 4096
  characters, HTML it accepts). No call reaches Telegram.
- ctl_argv: `build_parser().parse_args` then the command as `kdesk` runs it, with no desk running: exit 0, 1
  or 2 (argparse's 2, the CLI's own 1 and 2), never a traceback. `up`, `run`, `migrate` and `provision` are
  only parsed (they start servers).
- config: `load_settings()` from a patched environment, then what services derive at start: `Settings`, or a
  `ConfigError` whose message names the variable.
- bus_events: `events.decode_event` and `codec.decoder(cls)`: the event or `pydantic.ValidationError`; a
  decoded event re-encodes.
- llm_answer: `llm.parse.parse_answer`: the schema object (finite, in range) or a `ParseFailure`.

A case that runs past its budget is a hang (SIGALRM interrupts it when the campaign owns the main thread).
Handlers that need NATS or PostgreSQL get recording stand-ins for exactly the calls they make, so what runs is
the real parsing and deciding code; where a service wires a callback inline (the feeds' `on_message`), those
few lines are repeated here and say so. Known issues not fixed are listed in `KNOWN_ISSUES` and reported.

`python -m benchmarks benchmarks.fuzz` runs `run()`: the default campaign in two child processes (one per core),
flat keys. `campaign(cases_per_target, seed)` returns the nested report in this process;
`python -m benchmarks.fuzz [--cases N] [--seed S] [--only T ...]` prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import io
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import structlog
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from pydantic import ValidationError

from libs.common.money import ONE_DOLLAR

DEFAULT_CASES_PER_TARGET = 650  # x 16 targets: 10,400 cases, 1-2 minutes on the 2-core box (two processes)
DEFAULT_SEED = 18
CASE_BUDGET_S = 3.0  # longer than this is a hang
EXAMPLES_KEPT = 3


class WrongEffect(Exception):
    """A handler took bad input without failing, and did the wrong thing with it (a wrong row, a bad book)."""


class _Stuck(BaseException):
    """Raised by SIGALRM inside a case that ran past its budget (BaseException: handlers must not swallow it)."""


# --- generators ----------------------------------------------------------------------------------

WEIRD_TEXT = (
    "", " ", "\t", "\n", "NaN", "nan", "-NaN", "Infinity", "-Infinity", "inf", "+1", "1e309", "-1e309", "1e5", "1E-7",
    "0x1F", "1_000", "١٢٣", "²", "٣.٥", "0.4200", "10.00", "-0.0100", "0.00001", "1.00000000001", "0.0000", "1.0000",
    "99999999999999999999", "9" * 40, "0" * 30 + "1", "\x00", "\u202e", "\ufeff1", "\u200b", "😀", "null", "true", "[]",
    "{}", "'", '"', "\\", "%s%n", "<b>", "</pre>", "&amp;", "&", "<", "a>b", "2026-02-30T00:00:00Z",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2026-08-25T17:00:00", "2026-08-25T17:00:00Z",
    "1787677200", "-1", "0", "yes", "no", "bid", "ask", "resting", "a" * 5000, "BTC USD", "*", ">", "a.b.c",
)
WEIRD_NUMBERS = (0, -1, 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**18, 10**30, 1e308, -1e308, 5e-324, 0.1,
                 -0.0, math.nan, math.inf, -math.inf, True, False, 253_402_300_800_000, 10**17)

# Numbers written as text, as Kalshi writes money ("0.4200") and counts ("10.00"): in range, out of range, odd forms.
numeric_text = st.one_of(
    st.builds(lambda w, f: f"{w}.{f}", st.integers(0, 10**16) | st.sampled_from((0, 1, 2, 99)),
              st.text("0123456789", max_size=8)),
    st.builds(lambda w, f: f"-{w}.{f}", st.integers(0, 10**6), st.text("0123456789", min_size=1, max_size=6)),
    st.sampled_from(("0.0000", "1.0000", "0.0001", "0.9999", "1.0001", "-0.0001", "0.00", "0.01", "99.9999", "0",
                     "1", "0.00005", "0.42001", "5.00", "-5.00", "100000000000000.00", "1e2", ".5", "5.", "00.42")),
    st.integers(-(10**20), 10**20).map(str), st.floats().map(repr))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**20), 10**20), st.floats(),
                    st.sampled_from(WEIRD_NUMBERS), st.text(max_size=20), st.sampled_from(WEIRD_TEXT), numeric_text)
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), c, max_size=4)),
                           max_leaves=8)


# Edge values by the shape of what they replace: a time, an epoch, an identifier (ticker, symbol, id).
TIME_EDGES = ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-12:00",
              "9999-12-31T23:59:59+00:00", "2026-08-25T17:00:00", "2026-02-30T00:00:00Z",
              "2026-08-25T17:00:00.1234567Z", "2026-08-25T24:00:00Z", "2026-08-25", "17:00:00", "yesterday",
              "2026-08-25T17:00:00+25:00", "1787677200")
EPOCH_EDGES = (0, -1, 1, 10**20, 10**30, -(10**20), 2**63, 2**64, 253_402_300_800_000, 253_402_300_800,
               10**17, 1.5e12, math.inf, math.nan, "1787677200", "9" * 30, True)
IDENT_EDGES = ("", " ", "A B", "a.b", "a..b", "*", ">", "a*b", "x" * 300, "é", "\u00a0", "KXMVE-X", "-", "_", "\t",
               "BTC/USD", "btc-usd ", "😀", "9" * 300, "null")
_LOOKS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")
_LOOKS_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@st.composite
def _leaf(draw: st.DrawFn, value: Any) -> Any:
    """A changed scalar: an edge value for its shape, another type, or a near miss of the same one."""
    kind = draw(st.integers(0, 11))
    if kind <= 4:  # by shape
        if isinstance(value, str) and _LOOKS_TIME.match(value):
            return draw(st.sampled_from(TIME_EDGES))
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= 10**9:
            return draw(st.sampled_from(EPOCH_EDGES))
        if isinstance(value, str) and not _LOOKS_NUMBER.match(value):
            return draw(st.sampled_from(IDENT_EDGES))
        if not isinstance(value, bool):
            return draw(numeric_text) if isinstance(value, str) or kind % 2 else draw(st.sampled_from(WEIRD_NUMBERS))
    if kind <= 6:
        return draw(scalars)
    if kind == 7:
        return draw(json_values)
    if isinstance(value, str) and value:
        k = draw(st.integers(1, 2000))
        return draw(st.sampled_from((
            "-" + value, value + "0" * k, value[: draw(st.integers(0, len(value)))], value * min(k, 50),
            value.upper(), value.lower(), " " + value, value + " ", value.replace(".", ","), value + "1", "9" * k,
            value + "\u0301", "1" + value, value.replace("0", "٠"),
        )))
    if isinstance(value, bool):
        return draw(st.sampled_from((not value, int(value), str(value).lower(), None)))
    if isinstance(value, int):
        return draw(st.sampled_from((-value, value + 1, value - 1, value * 10**12, value * 10**40,
                                     float(value) if abs(value) < 10**300 else math.inf, str(value), 0)))
    if isinstance(value, float):
        return draw(st.sampled_from((-value, value * 1e300, math.nan, math.inf, str(value),
                                     int(value) if math.isfinite(value) else 0)))
    return draw(scalars)


@st.composite
def mutated(draw: st.DrawFn, value: Any, rate: int = 4) -> Any:
    """`value` (a JSON-like template) with some fields dropped, retyped, changed or added; sometimes untouched.

    `rate` is the chance in 20 that each field of a container is changed.
    """
    if draw(st.integers(0, 99)) < 3:
        return draw(json_values)  # the whole thing replaced
    if isinstance(value, dict | list) and draw(st.integers(0, 99)) < 8:
        return draw(st.sampled_from(([], {}, [value], "", 0, None, "x"))) if draw(st.booleans()) else \
            draw(json_values)  # a container of another type, or a scalar where an object belongs
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            op = draw(st.integers(0, 19))
            if op == 0:
                continue  # dropped
            out[k] = draw(mutated(v, rate)) if op <= rate else v
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.sampled_from((*value.keys(), "extra", "")) | st.text(max_size=8))] = draw(json_values)
        return out
    if isinstance(value, list):
        items = list(value)
        op = draw(st.integers(0, 11))
        if op == 0:
            items = []
        elif op == 1:
            items = items[: draw(st.integers(0, len(items)))]
        elif op == 2:
            items = items * draw(st.integers(2, 40))
        elif op == 3:
            items.append(draw(json_values))
        for _ in range(draw(st.integers(0, min(3, len(items))))):
            i = draw(st.integers(0, len(items) - 1))
            items[i] = draw(mutated(items[i], rate))
        return items
    if draw(st.integers(0, 19)) < rate * 3:
        return draw(_leaf(value))
    return value


def _dumps(value: Any, ascii_only: bool = True) -> str:
    try:
        return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    except (ValueError, TypeError):  # an int beyond str()'s digit limit, say
        return repr(value)


@st.composite
def wire(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> str | bytes:
    """Values as the bytes a socket or an HTTP body would carry, sometimes broken on the way."""
    text = _dumps(draw(values), draw(st.booleans()))
    op = draw(st.integers(0, 24))
    if op == 0:
        return text[: draw(st.integers(0, len(text)))]  # truncated
    if op == 1:
        d = draw(st.sampled_from((100, 1000, 5000, 100_000)))
        return "[" * d + text + "]" * d  # deep nesting
    if op == 2:
        d = draw(st.sampled_from((100, 1000, 50_000)))
        return '{"msg":' * d + text + "}" * d
    if op == 3:
        return draw(st.binary(max_size=300))
    if op == 4:
        raw = text.encode()
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"))) + raw[i:]
    if op == 5:
        return text + draw(st.sampled_from(("x", "}", "]", ",", "\x00", " {}", text)))
    if op == 6:
        return "\ufeff" + text
    if op == 7:
        return re.sub(r"\d+", "1" * draw(st.sampled_from((400, 4301, 20_000))), text, count=1)
    if op == 8:
        return text * draw(st.integers(2, 200))
    if op == 9:
        return text.encode()
    return text


def _variants(*templates: Any, rate: int = 4) -> st.SearchStrategy[Any]:
    return st.one_of(*[mutated(t, rate) for t in templates], json_values)


def repeated(fragments: st.SearchStrategy[str], max_times: int = 3000) -> st.SearchStrategy[str]:
    """A fragment repeated many times: long lines that make naive regular expressions quadratic."""
    return st.builds(lambda f, k: f * k, fragments, st.integers(1, max_times))


# --- invariants shared by targets ------------------------------------------------------------------

def _aware(ts: Any, what: str) -> None:
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        raise WrongEffect(f"{what} is not a UTC-aware time: {ts!r}")


def _price_in_book(p: Any, what: str) -> None:
    if not isinstance(p, int) or isinstance(p, bool) or not 0 < p < ONE_DOLLAR:
        raise WrongEffect(f"{what} {p!r} is not a price in (0, $1)")


def _count(c: Any, what: str, *, positive: bool = False) -> None:
    if not isinstance(c, int) or isinstance(c, bool) or c < (1 if positive else 0) or c >= 10**17:
        raise WrongEffect(f"{what} {c!r} is not a {'positive' if positive else 'non-negative'} count")


def _fill_fact(f: Any) -> None:
    """A fill as the ledger applies it: a real execution of a positive size at a real price."""
    for name in ("trade_id", "order_id", "ticker"):
        if not isinstance(getattr(f, name), str) or not getattr(f, name):
            raise WrongEffect(f"fill {name} {getattr(f, name)!r} is empty or not text")
    if f.outcome_side not in ("yes", "no") or f.book_side not in ("bid", "ask"):
        raise WrongEffect(f"fill sides {f.outcome_side!r}/{f.book_side!r}")
    _count(f.count, "fill count", positive=True)
    _price_in_book(f.yes_price, "fill yes_price")
    if not isinstance(f.fee, int) or abs(f.fee) >= 10**17:
        raise WrongEffect(f"fill fee {f.fee!r}")
    _aware(f.filled_at, "fill time")


def _order_totals(status: Any, fill: Any, remaining: Any, price: Any, ts: Any) -> None:
    if status not in ("resting", "canceled", "executed"):
        raise WrongEffect(f"order status {status!r}")
    _count(fill, "order fill_count")
    _count(remaining, "order remaining_count")
    _price_in_book(price, "order yes_price")
    if ts is not None:
        _aware(ts, "order update time")


def _republishes(event: Any) -> None:
    """What a handler publishes must reach its consumers: it encodes, and decodes back to an equal event."""
    from libs.common.events import decode_event

    try:
        back = decode_event(event.to_json())
    except ValidationError as e:
        raise WrongEffect(f"published {type(event).__name__} does not decode: {e.errors()[0]['msg']}") from None
    if back != event:
        raise WrongEffect(f"published {type(event).__name__} changes on the wire")


# --- target: Kalshi WebSocket ----------------------------------------------------------------------

T1, T2 = "KXHIGHNY-26AUG25-B80.5", "KXBTCD-26AUG2517-T78499.99"
EVENT_T1 = "KXHIGHNY-26AUG25"
TS_MS = 1_787_677_200_123


def _book_frames() -> list[dict[str, Any]]:
    return [
        {"type": "orderbook_snapshot", "sid": 1, "seq": 3,
         "msg": {"market_ticker": T1, "market_id": "m-1", "yes_dollars_fp": [["0.4100", "10.00"], ["0.4200", "5.00"]],
                 "no_dollars_fp": [["0.5500", "3.00"], ["0.5700", "1.50"]]}},
        {"type": "orderbook_delta", "sid": 1, "seq": 3,
         "msg": {"market_ticker": T1, "market_id": "m-1", "price_dollars": "0.4200", "delta_fp": "-2.00", "side": "yes",
                 "ts_ms": TS_MS, "ts": "2026-08-25T17:00:00.123Z"}},
        {"type": "trade", "sid": 2, "seq": 1,
         "msg": {"trade_id": "t-1", "market_ticker": T2, "yes_price_dollars": "0.3600", "no_price_dollars": "0.6400",
                 "count_fp": "4.00", "taker_outcome_side": "yes", "ts_ms": TS_MS}},
        {"type": "market_lifecycle_v2", "sid": 3, "seq": 1,
         "msg": {"market_ticker": T2, "event_type": "activated", "open_ts": 1787670000, "close_ts": 1787680000}},
        {"type": "error", "id": 9, "sid": 1, "msg": {"code": 17, "msg": "Internal error"}},
        {"type": "subscribed", "id": 5, "msg": {"channel": "orderbook_delta", "sid": 7}},
        {"type": "ok", "id": 6, "sid": 1, "seq": 4, "msg": {"market_tickers": [T1]}},
        # Without sid/seq a frame is in order whatever came before, so its fields reach the book itself.
        {"type": "orderbook_delta", "msg": {"market_ticker": T2, "price_dollars": "0.5800", "delta_fp": "3.00",
                                            "side": "no", "ts_ms": TS_MS}},
        {"type": "orderbook_snapshot", "msg": {"market_ticker": T2, "yes_dollars_fp": [["0.3500", "2.00"]],
                                               "no_dollars_fp": [["0.6000", "4.00"]]}},
    ]


def _private_frames() -> list[dict[str, Any]]:
    return [
        {"type": "user_order", "sid": 4, "seq": 1, "msg": {
            "order_id": "o-1", "user_id": "0f6c1d3e-8a4b-4e5f-9c2d-7b1a3e5f7d90", "ticker": T1, "status": "resting",
            "side": "yes", "is_yes": True, "outcome_side": "yes", "book_side": "bid", "yes_price_dollars": "0.4200",
            "fill_count_fp": "2.00", "remaining_count_fp": "8.00", "initial_count_fp": "10.00",
            "taker_fill_cost_dollars": "0.0000", "maker_fill_cost_dollars": "0.8400", "taker_fees_dollars": "0.0000",
            "maker_fees_dollars": "0.0100", "client_order_id": "c-1", "self_trade_prevention_type": "taker_at_cross",
            "created_ts_ms": TS_MS - 5000, "last_updated_ts_ms": TS_MS, "created_time": "2026-08-25T16:59:55.123Z",
            "last_update_time": "2026-08-25T17:00:00.123Z", "subaccount_number": 0}},
        {"type": "fill", "sid": 5, "seq": 1, "msg": {
            "trade_id": "t-1", "order_id": "o-1", "market_ticker": T1, "exchange_index": 0, "is_taker": False,
            "side": "yes", "yes_price_dollars": "0.4200", "no_price_dollars": "0.5800", "count_fp": "2.00",
            "fee_cost": "0.0100", "action": "buy", "ts_ms": TS_MS, "ts": TS_MS // 1000, "client_order_id": "c-1",
            "post_position_fp": "2.00", "purchased_side": "yes", "outcome_side": "yes", "book_side": "bid",
            "subaccount": 0}},
    ]


def ws_frames(templates: list[dict[str, Any]]) -> st.SearchStrategy[list[str | bytes]]:
    """One to four frames of a session, each a mutated real frame (or garbage), on the wire."""
    return st.lists(wire(_variants(*templates, rate=6)), min_size=1, max_size=4)


class _Socket:
    """Stands in for the open connection: keeps what the client would send (subscriptions, resyncs)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self) -> None:
        return None


def _sim_env() -> Any:
    from libs.common.kalshi.rest import sim_environment

    return sim_environment("http://kalshi.fuzz/trade-api/v2", "ws://kalshi.fuzz/trade-api/ws/v2")


async def _ws_session(on_message: Callable[[dict[str, Any]], Any], on_book: Callable[[Any], Any] | None,
                      channels: tuple[str, ...]) -> Any:
    """A `KalshiWS` after its subscriptions were confirmed and its books loaded, on a recording socket."""
    from libs.common.kalshi.ws import KalshiWS

    ws = KalshiWS(_sim_env(), None, on_book=on_book, on_message=on_message)
    await ws.subscribe_books([T1, T2])
    for ch in channels:
        await ws.subscribe(ch)
    ws._conn = _Socket()  # type: ignore[assignment]
    for sid, ch in enumerate(("orderbook_delta", *channels), start=1):
        await ws._dispatch(json.dumps({"type": "subscribed", "msg": {"channel": ch, "sid": sid}}))
    for seq, t in enumerate((T1, T2), start=1):
        await ws._dispatch(json.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": {
            "market_ticker": t, "yes_dollars_fp": [["0.4000", "10.00"]], "no_dollars_fp": [["0.5800", "10.00"]]}}))
    return ws


async def check_ws_books(frames: list[str | bytes]) -> None:
    """The feeds' market-data session: books, public trades and lifecycle wake-ups (services/feeds/service.py)."""
    from libs.common import subjects
    from libs.common.config import Mode
    from services.feeds.books import BookFanout
    from services.feeds.service import trade_event

    published: list[Any] = []

    async def emit(subject: str, event: Any) -> None:
        published.append(event)

    fanout = BookFanout(emit, mode=Mode.SIM)
    wake = asyncio.Event()

    async def on_message(frame: dict[str, Any]) -> None:  # the lines of run_feeds' own on_message
        ev = trade_event(frame, Mode.SIM)
        if ev is not None:
            await emit(subjects.md_trade(ev.series_ticker, ev.ticker), ev)
        elif frame.get("type") == "market_lifecycle_v2":
            wake.set()

    ws = await _ws_session(on_message, fanout.on_book, ("trade", "market_lifecycle_v2"))
    for raw in frames:
        await ws._dispatch(raw)
    await fanout.flush()
    for book in ws.books.values():
        if not book.valid:
            continue
        for side, levels in (("yes", book.yes_levels()), ("no", book.no_levels())):
            for price, size in levels:
                _price_in_book(price, f"{book.ticker} {side} level")
                _count(size, f"{book.ticker} {side} size at {price}", positive=True)
    for ev in published:
        if ev.type == "md.trade":
            _price_in_book(ev.yes_price, "trade yes_price")
            _count(ev.count, "trade count", positive=True)
        _republishes(ev)


class _Ledger:
    """The three ledger calls `OrderLifecycle.on_frame` makes, recorded instead of written to PostgreSQL."""

    def __init__(self) -> None:
        self.states: list[Any] = []
        self.fills: list[Any] = []

    async def order_by_id(self, order_id: str) -> Any:
        if order_id == "o-1":
            return SimpleNamespace(client_order_id="c-1", event_ticker=EVENT_T1, series_ticker="KXHIGHNY",
                                   family="weather")
        return None

    async def set_state(self, coid: str, state: Any, *, accepted: bool = False) -> tuple[Any, bool]:
        self.states.append(state)
        return None, False

    async def apply_fill(self, fill: Any, *, event_ticker: str, series_ticker: str | None,
                         family: str | None) -> bool:
        self.fills.append(fill)
        return True


class _Markets:
    def get(self, ticker: str) -> None:
        return None


async def check_ws_private(frames: list[str | bytes]) -> None:
    """The executor's private session: `user_order` and `fill` frames into the ledger."""
    from libs.common.config import Mode
    from libs.common.events import utcnow
    from services.executor.orders import OrderLifecycle

    ledger = _Ledger()
    lifecycle = OrderLifecycle(None, ledger, _Markets(), mode=Mode.SIM, clock=utcnow)  # type: ignore[arg-type]
    ws = await _ws_session(lifecycle.on_frame, None, ("user_orders", "fill"))
    for raw in frames:
        await ws._dispatch(raw)
    for s in ledger.states:
        _order_totals(s.status, s.fill_count, s.remaining_count, s.yes_price, s.ts)
        if not isinstance(s.order_id, str) or not s.order_id:
            raise WrongEffect(f"order id {s.order_id!r}")
    for f in ledger.fills:
        _fill_fact(f)


# --- target: Kalshi REST ---------------------------------------------------------------------------

_MARKET = {
    "ticker": T1, "event_ticker": EVENT_T1, "status": "active", "market_type": "binary",
    "title": "High temp in NYC", "yes_sub_title": "80° to 81°", "open_time": "2026-08-24T14:00:00Z",
    "close_time": "2026-08-26T03:59:00Z", "expected_expiration_time": "2026-08-26T14:00:00Z",
    "yes_bid_dollars": "0.4200", "yes_ask_dollars": "0.4400", "no_bid_dollars": "0.5600", "no_ask_dollars": "0.5800",
    "last_price_dollars": "0.4300", "volume_fp": "1234.00", "open_interest_fp": "500.00", "strike_type": "between",
    "floor_strike": 80, "cap_strike": 80.99, "price_level_structure": "linear_cent",
    "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}], "rules_primary": "If the high...",
    "exchange_index": 0, "settlement_value_dollars": None, "result": "",
}
_ORDER = {
    "order_id": "o-1", "client_order_id": "c-1", "ticker": T1, "outcome_side": "yes", "book_side": "bid",
    "status": "resting", "yes_price_dollars": "0.4200", "fill_count_fp": "2.00", "remaining_count_fp": "8.00",
    "initial_count_fp": "10.00", "taker_fees_dollars": "0.0000", "maker_fees_dollars": "0.0100",
    "taker_fill_cost_dollars": "0.0000", "maker_fill_cost_dollars": "0.8400", "created_time": "2026-08-25T16:59:55Z",
    "last_update_time": "2026-08-25T17:00:00.123Z", "exchange_index": 0,
}
_FILL = {
    "fill_id": "t-1", "trade_id": "t-1", "order_id": "o-1", "ticker": T1, "outcome_side": "yes", "book_side": "bid",
    "count_fp": "2.00", "yes_price_dollars": "0.4200", "no_price_dollars": "0.5800", "is_taker": False,
    "fee_cost": "0.0100", "created_time": "2026-08-25T17:00:00.123Z",
}
_SERIES = {"ticker": "KXHIGHNY", "title": "Highest temperature in NYC", "category": "Climate and Weather",
           "frequency": "daily", "fee_type": "quadratic", "fee_multiplier": 1,
           "settlement_sources": [{"name": "National Weather Service", "url": "https://www.weather.gov/"}],
           "tags": ["Weather"]}
_EVENT = {"event_ticker": EVENT_T1, "series_ticker": "KXHIGHNY", "title": "NYC high", "mutually_exclusive": True,
          "strike_date": "2026-08-26T04:00:00Z", "markets": [_MARKET]}
_BOOK = {"yes_dollars": [["0.4100", "10.00"], ["0.4200", "5.00"]], "no_dollars": [["0.5600", "3.00"]]}

# (call, a valid answer, what the call must return): the answer is mutated, the call made through the client.
REST_CALLS: dict[str, tuple[Callable[[Any], Any], dict[str, Any]]] = {
    "exchange_status": (lambda r: r.exchange_status(), {"exchange_active": True, "trading_active": True}),
    "series": (lambda r: r.series("KXHIGHNY"), {"series": _SERIES}),
    "events": (lambda r: r.events(series_ticker="KXHIGHNY", with_nested_markets=True),
               {"events": [_EVENT], "cursor": ""}),
    "event": (lambda r: r.event(EVENT_T1), {"event": _EVENT, "markets": [_MARKET]}),
    "market": (lambda r: r.market(T1), {"market": _MARKET}),
    "markets": (lambda r: r.markets(series_ticker="KXHIGHNY"), {"markets": [_MARKET, _MARKET], "cursor": "abc"}),
    "orderbook": (lambda r: r.orderbook(T1), {"orderbook_fp": _BOOK}),
    "orderbooks": (lambda r: r.orderbooks([T1, T2]), {"orderbooks": [{"ticker": T1, "orderbook_fp": _BOOK}]}),
    "trades": (lambda r: r.trades(ticker=T1), {"trades": [
        {"trade_id": "t-9", "ticker": T1, "yes_price_dollars": "0.4200", "no_price_dollars": "0.5800",
         "count_fp": "3.00", "taker_outcome_side": "no", "created_time": "2026-08-25T17:00:00Z"}], "cursor": ""}),
    "balance": (lambda r: r.balance(), {"balance": 100000, "balance_dollars": "1000.0000", "portfolio_value": 5000,
                                        "updated_ts": 1787677200, "balance_breakdown": [
                                            {"exchange_index": 0, "balance": "900.0000"},
                                            {"exchange_index": 2, "balance": "100.0000"}]}),
    "positions": (lambda r: r.positions(), {"market_positions": [
        {"ticker": T1, "position_fp": "-10.00", "market_exposure_dollars": "5.8000", "realized_pnl_dollars": "0.0000",
         "fees_paid_dollars": "0.0100", "total_traded_dollars": "5.8000", "exchange_index": 0}], "cursor": ""}),
    "fills": (lambda r: r.fills(ticker=T1), {"fills": [_FILL], "cursor": ""}),
    "settlements": (lambda r: r.settlements(), {"settlements": [
        {"ticker": T1, "event_ticker": EVENT_T1, "market_result": "yes", "yes_count_fp": "10.00",
         "no_count_fp": "0.00", "yes_total_cost_dollars": "4.2000", "no_total_cost_dollars": "0.0000",
         "revenue": 1000, "fee_cost": "0.0100", "settled_time": "2026-08-26T15:00:00Z"}], "cursor": ""}),
    "orders": (lambda r: r.orders(ticker=T1), {"orders": [_ORDER], "cursor": ""}),
    "order": (lambda r: r.order("o-1", exchange_index=0), {"order": _ORDER}),
    "queue_position": (lambda r: r.queue_position("o-1"), {"queue_position_fp": "120.00", "market_ticker": T1}),
    "create_order": (lambda r: r.create_order(T1, "bid", 4200, 1000, client_order_id="c-1", post_only=True),
                     {"order_id": "o-1", "client_order_id": "c-1", "fill_count": "0.00", "remaining_count": "10.00",
                      "ts_ms": TS_MS}),
    "cancel_order": (lambda r: r.cancel_order("o-1", ticker=T1, exchange_index=0),
                     {"order_id": "o-1", "client_order_id": "c-1", "reduced_by": "8.00", "ts_ms": TS_MS}),
    "amend_order": (lambda r: r.amend_order("o-1", ticker=T1, side="bid", price=4100, count=1000),
                    {"order_id": "o-1", "fill_count": "2.00", "remaining_count": "8.00", "ts_ms": TS_MS}),
    "decrease_order": (lambda r: r.decrease_order("o-1", reduce_to=500, ticker=T1),
                       {"order_id": "o-1", "remaining_count": "5.00", "ts_ms": TS_MS}),
    "batch_create": (lambda r: r.batch_create([{"ticker": T1, "client_order_id": "c-2"}]), {"orders": [
        {"order_id": "o-2", "client_order_id": "c-2", "fill_count": "0.00", "remaining_count": "1.00"},
        {"error": {"code": "invalid_order", "message": "invalid order", "details": "post only cross"}}]}),
    "batch_cancel": (lambda r: r.batch_cancel([]), {"orders": [{"order_id": "o-1", "reduced_by": "8.00"}]}),
}
STATUSES = (200, 200, 200, 200, 200, 201, 204, 400, 401, 403, 404, 409, 429, 500, 503, 302)


@st.composite
def rest_cases(draw: st.DrawFn) -> tuple[str, int, str | bytes]:
    """(call, HTTP status, body): a mutated answer to a real client call."""
    name = draw(st.sampled_from(sorted(REST_CALLS)))
    status = draw(st.sampled_from(STATUSES))
    if status >= 400:
        body = draw(wire(_variants({"error": {"code": "order_already_exists", "message": "x", "details": "y"}},
                                   {"error": "too many requests"})))
    else:
        body = draw(wire(_variants(REST_CALLS[name][1], rate=5)))
    return name, status, body


_SIGNER: Any = None


def _signer() -> Any:
    """A throwaway RSA key: signed calls go through the real signing code (generated once per process)."""
    global _SIGNER
    if _SIGNER is None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        from libs.common.kalshi.signing import Signer

        _SIGNER = Signer("fuzz-key", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _SIGNER


def _rest(respond: Callable[[httpx.Request], httpx.Response]) -> Any:
    from libs.common.kalshi.ratelimit import Tier
    from libs.common.kalshi.rest import KalshiRest

    # An unlimited tier and one attempt: the fuzz is about the answers, not the pacing or the retries.
    return KalshiRest(_sim_env(), _signer(), tier=Tier("fuzz", 1e9, 1e9), transport=httpx.MockTransport(respond),
                      max_attempts=1, backoff_base_s=0.0, backoff_cap_s=0.0)


def _answer_once(status: int, body: str | bytes) -> Callable[[httpx.Request], httpx.Response]:
    """The fuzzed answer once, then empty last pages (a cursor in garbage must not page forever in a test)."""
    calls = {"n": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(status, content=body if isinstance(body, bytes) else body.encode("utf-8", "replace"))
        return httpx.Response(200, json={"cursor": ""})

    return respond


async def check_rest(case: tuple[str, int, str | bytes]) -> None:
    """One client call against a garbage answer: a model or a KalshiError; fills and orders as the ledger takes them."""
    from libs.common.kalshi.errors import KalshiError
    from libs.common.kalshi.models import Fill, Order, Orderbook
    from services.executor.orders import rest_fill

    name, status, body = case
    call, _ = REST_CALLS[name]
    rest = _rest(_answer_once(status, body))
    try:
        result = await call(rest)
    except KalshiError:
        return
    finally:
        await rest.aclose()
    items = result if isinstance(result, list) else list(result.values()) if isinstance(result, dict) else [result]
    for item in items:
        if isinstance(item, Fill):
            _fill_fact(rest_fill(item))
        elif isinstance(item, Order):
            _order_totals(item.status, item.fill_count, item.remaining_count, item.yes_price, item.last_update_time)
        elif isinstance(item, Orderbook):  # what the REST poller loads into books and publishes
            for price, size in (*item.yes, *item.no):
                _price_in_book(price, "REST book level")
                _count(size, f"REST book size at {price}")


async def check_discovery(case: tuple[int, str | bytes, tuple[str | bytes, bool]]) -> None:
    """A discovery pass when the series or the events answer is garbage: nothing escapes, definitions decode,
    and a sound market is published even when the one before it is not."""
    from libs.common.config import Mode
    from services.feeds.discovery import Discovery

    which, series_body, (events_body, neighbour) = case
    good_series = json.dumps({"series": _SERIES})
    good_events = json.dumps({"events": [_EVENT], "cursor": ""})

    pages = {"n": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/series/KXHIGHNY"):
            body = series_body if which in (0, 2) else good_series
        elif path.endswith("/events"):
            pages["n"] += 1  # the garbage is the first page: a cursor in it gets one (empty) page more
            body = (events_body if which in (1, 2) else good_events) if pages["n"] % 2 else '{"events": []}'
        else:
            body = json.dumps({"market": _MARKET})
        return httpx.Response(200, content=body if isinstance(body, bytes) else body.encode("utf-8", "replace"))

    published: list[Any] = []

    async def emit(subject: str, event: Any) -> None:
        published.append(event)

    rest = _rest(respond)
    try:
        d = Discovery(rest, ["KXHIGHNY"], emit, mode=Mode.SIM)
        await d.poll_once()
        read_events = "KXHIGHNY" in d.series_info  # the series and its events page were read
        await d.poll_once()  # a second pass: markets tracked from the first one are looked up again
    finally:
        await rest.aclose()
    for ev in published:
        _republishes(ev)
    if neighbour and which == 1 and read_events and _neighbour_intact(events_body) \
            and not any(ev.ticker == _MARKET_2["ticker"] for ev in published):
        raise WrongEffect("a sound market was not published because the market before it is broken")


def _neighbour_intact(body: str | bytes) -> bool:
    """Whether the answer still holds the sound market where it was put (the wire may have garbled it)."""
    try:
        return json.loads(body)["events"][0]["markets"][1] == _MARKET_2
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return False


_MARKET_2 = {**_MARKET, "ticker": "KXHIGHNY-26AUG25-B82.5", "floor_strike": 82, "cap_strike": 82.99}
discovery_cases = st.tuples(
    st.integers(0, 2), wire(_variants({"series": _SERIES}, rate=5)),
    st.one_of(st.tuples(wire(_variants({"events": [_EVENT, _EVENT], "cursor": ""}, rate=5)), st.just(False)),
              # one market of an event broken, its neighbour fine: the neighbour must still be published
              st.tuples(wire(st.builds(lambda m: {"events": [{**_EVENT, "markets": [m, _MARKET_2]}], "cursor": ""},
                                       mutated(_MARKET, 6))), st.just(True))))


# --- target: crypto venues -------------------------------------------------------------------------

VENUE_FRAMES: dict[str, list[dict[str, Any]]] = {
    "coinbase": [
        {"type": "ticker", "sequence": 37475248783, "product_id": "BTC-USD", "price": "95012.34",
         "open_24h": "94010.01",
         "volume_24h": "12345.67890123", "best_bid": "95012.33", "best_bid_size": "0.50000000", "best_ask": "95012.34",
         "best_ask_size": "0.01234567", "side": "buy", "time": "2026-08-25T17:00:00.123456Z", "trade_id": 612345678,
         "last_size": "0.00150000"},
        {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
         "time": "2026-08-25T17:00:00.123456Z"},
        {"type": "error", "message": "Failed to subscribe", "reason": "BTC-XYZ is not a valid product"},
    ],
    "kraken": [
        {"channel": "ticker", "type": "update", "data": [
            {"symbol": "BTC/USD", "bid": 95012.3, "bid_qty": 0.5, "ask": 95012.4, "ask_qty": 1.25, "last": 95012.4,
             "volume": 1234.56789, "vwap": 94900.1, "low": 93800.0, "high": 95500.0, "change": 1002.3,
             "change_pct": 1.07, "timestamp": "2026-08-25T17:00:00.742599Z"}]},
        {"channel": "trade", "type": "update", "data": [
            {"symbol": "BTC/USD", "side": "buy", "price": 95012.4, "qty": 0.0125, "ord_type": "market",
             "trade_id": 4665984, "timestamp": "2026-08-25T17:00:00.742599Z"}]},
        {"method": "subscribe", "success": True, "result": {"channel": "ticker", "symbol": "BTC/USD"},
         "time_in": "2026-08-25T17:00:00.1Z", "time_out": "2026-08-25T17:00:00.2Z"},
        {"channel": "heartbeat"},
    ],
    "bitstamp": [
        {"event": "trade", "channel": "live_trades_btcusd", "data": {
            "id": 412345678, "timestamp": "1787677200", "amount": 0.0125, "amount_str": "0.01250000", "price": 95012,
            "price_str": "95012", "type": 1, "microtimestamp": "1787677200123456", "buy_order_id": 1812345678901234,
            "sell_order_id": 1812345678905678}},
        {"event": "bts:subscription_succeeded", "channel": "live_trades_btcusd", "data": {}},
        {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}},
    ],
    "binance": [
        {"e": "trade", "E": 1787677200124, "s": "BTCUSDT", "t": 5123456789, "p": "95012.34000000", "q": "0.00100000",
         "T": 1787677200123, "m": True, "M": True},
        {"u": 400900217, "s": "BTCUSDT", "b": "95012.33000000", "B": "31.21000000", "a": "95012.34000000",
         "A": "40.66000000"},
        {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1787677200124, "s": "BTCUSDT", "t": 5123456790,
                                             "p": "95012.35", "q": "0.002", "T": 1787677200125, "m": False}},
        {"result": None, "id": 1},
    ],
}


def _check_venue(name: str) -> Callable[[str | bytes], Any]:
    async def check(raw: str | bytes) -> None:
        from libs.common.config import Mode
        from services.feeds import spot

        published: list[Any] = []

        async def emit(subject: str, event: Any) -> None:
            published.append(event)

        venue = getattr(spot, name)("ws://venue.fuzz")
        feed = spot.VenueFeed(venue, emit, mode=Mode.SIM)
        try:
            await feed._handle(raw)
        except (spot.VenueRejected, spot.VenueReconnectRequested):
            return  # documented: the feed reconnects with back-off
        for tick in published:
            _price_in_tick(tick.price, "price")
            for side in ("bid", "ask"):
                if getattr(tick, side) is not None:
                    _price_in_tick(getattr(tick, side), side)
            if tick.size is not None and (not tick.size.is_finite() or tick.size < 0):
                raise WrongEffect(f"tick size {tick.size!r}")
            _aware(tick.ts_event, "tick time")
            _republishes(tick)

    check.__name__ = f"check_venue_{name}"
    return check


def _price_in_tick(p: Any, what: str) -> None:
    if not isinstance(p, int) or isinstance(p, bool) or p <= 0:
        raise WrongEffect(f"spot {what} {p!r} is not a positive price")


# --- target: Open-Meteo and NWS ---------------------------------------------------------------------

WX_NOW = datetime(2026, 8, 25, 15, 0, tzinfo=UTC)


def _ensemble_template() -> dict[str, Any]:
    times = [f"2026-08-25T{h:02d}:00" for h in range(24)] + [f"2026-08-26T{h:02d}:00" for h in range(24)] + \
        [f"2026-08-27T{h:02d}:00" for h in range(12)]
    hourly: dict[str, Any] = {"time": times}
    for model in ("ncep_gefs025", "ecmwf_ifs025_ensemble"):
        for m in range(3):
            key = f"temperature_2m_{model}" if m == 0 else f"temperature_2m_member{m:02d}_{model}"
            hourly[key] = [round(70 + 10 * math.sin(i / 4) + m, 1) for i in range(len(times))]
    return {"latitude": 40.78, "longitude": -73.97, "generationtime_ms": 1.2, "utc_offset_seconds": 0,
            "timezone": "GMT", "hourly_units": {"time": "iso8601", "temperature_2m_ncep_gefs025": "°F"},
            "hourly": hourly}


ENSEMBLE = _ensemble_template()


@st.composite
def _ensemble_bodies(draw: st.DrawFn) -> Any:
    """An ensemble answer with some columns and hours broken (the arrays are long: change a few cells)."""
    body = json.loads(json.dumps(ENSEMBLE))
    op = draw(st.integers(0, 9))
    if op <= 5:
        hourly = body["hourly"]
        for _ in range(draw(st.integers(1, 4))):
            key = draw(st.sampled_from(sorted(hourly)))
            if draw(st.booleans()) and isinstance(hourly[key], list) and hourly[key]:
                i = draw(st.integers(0, len(hourly[key]) - 1))
                hourly[key][i] = draw(_leaf(hourly[key][i]))
            else:
                hourly[key] = draw(mutated(hourly[key], 6))
        if draw(st.integers(0, 4)) == 0:
            hourly[draw(st.sampled_from(("temperature_2m_member99_x", "temperature_2m", "temperature_2m_member1",
                                         "temperature_2m_member01_")))] = draw(json_values)
        return body
    if op <= 8:
        return draw(mutated(body, 3))
    return draw(json_values)


ensemble_cases = st.tuples(wire(_ensemble_bodies()), wire(_ensemble_bodies()), st.sampled_from((200, 200, 200, 429,
                                                                                                 500)))

_OBS = {"type": "FeatureCollection", "features": [
    {"id": f"https://api.weather.gov/stations/KNYC/observations/2026-08-25T{h:02d}:51:00+00:00", "type": "Feature",
     "properties": {"station": "https://api.weather.gov/stations/KNYC", "timestamp": f"2026-08-25T{h:02d}:51:00+00:00",
                    "rawMessage": f"KNYC 25{h:02d}51Z AUTO 00000KT 10SM CLR 27/18 A3001",
                    "temperature": {"unitCode": "wmoUnit:degC", "value": 20.6 + h / 3, "qualityControl": "V"}}}
    for h in range(5, 14)]}

obs_cases = st.tuples(wire(st.one_of(mutated(_OBS, 3), mutated(_OBS, 6), json_values)),
                      st.sampled_from((200, 200, 200, 404, 503)))


def _station() -> Any:
    from libs.common.stations import STATIONS

    return STATIONS[0]


def _mock_client(respond: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(respond))


def _body(status: int, body: str | bytes) -> httpx.Response:
    return httpx.Response(status, content=body if isinstance(body, bytes) else body.encode("utf-8", "replace"))


async def check_open_meteo(case: tuple[str | bytes, str | bytes, int]) -> None:
    """One ensemble poll (and its deterministic companion) against garbage answers."""
    from libs.common.config import Mode
    from services.feeds.wx import EnsemblePoller, WeatherDataError

    ensemble, deterministic, status = case

    def respond(request: httpx.Request) -> httpx.Response:
        return _body(status, ensemble) if "/v1/ensemble" in request.url.path else _body(200, deterministic)

    published: list[Any] = []

    async def emit(subject: str, event: Any) -> None:
        published.append(event)

    async with _mock_client(respond) as client:
        poller = EnsemblePoller(_station(), emit, mode=Mode.SIM, client=client, clock=lambda: WX_NOW)
        try:
            await poller.poll_once()
        except (WeatherDataError, httpx.HTTPError):
            return  # the poller's documented failures: logged, backed off, polled again
    for ev in published:
        for m in ev.members:
            if not math.isfinite(m.tmax_f):
                raise WrongEffect(f"member {m.model}:{m.member} max {m.tmax_f!r}")
        for v in ev.deterministic.values():
            if not math.isfinite(v):
                raise WrongEffect(f"deterministic max {v!r}")
        _republishes(ev)


async def check_nws_observations(case: tuple[str | bytes, int]) -> None:
    """One observation poll against a garbage answer."""
    from libs.common.config import Mode
    from services.feeds.wx import ObservationPoller, WeatherDataError

    body, status = case
    published: list[Any] = []

    async def emit(subject: str, event: Any) -> None:
        published.append(event)

    async with _mock_client(lambda request: _body(status, body)) as client:
        poller = ObservationPoller(_station(), emit, mode=Mode.SIM, client=client, user_agent="kdesk-fuzz",
                                   clock=lambda: WX_NOW)
        try:
            await poller.poll_once()
        except (WeatherDataError, httpx.HTTPError):
            return
    for ev in published:
        for v in (ev.temp_f, ev.running_max_f):
            if v is not None and not math.isfinite(v):
                raise WrongEffect(f"observation temperature {v!r}")
        _republishes(ev)


CLI_BULLETIN = """000
CDUS41 KOKX 030616
CLINYC

CLIMATE REPORT
NATIONAL WEATHER SERVICE NEW YORK NY
116 AM EST THU JAN 3 2013

...................................

...THE CENTRAL PARK NY CLIMATE SUMMARY FOR JANUARY 2 2013...
VALID TODAY AS OF 0500 PM LOCAL TIME.
CLIMATE NORMAL PERIOD: 1981 TO 2010
CLIMATE RECORD PERIOD: 1869 TO 2013


WEATHER ITEM   OBSERVED TIME   RECORD YEAR NORMAL DEPARTURE LAST
                VALUE   (LST)  VALUE       VALUE  FROM      YEAR
                                                  NORMAL
...................................................................
TEMPERATURE (F)
 YESTERDAY
  MAXIMUM         33   301 PM  68    1876  39     -6       50
  MINIMUM         27   11:59 PM 2    1879  28     -1       29
  AVERAGE         30                        33     -3       40

PRECIPITATION (IN)
  YESTERDAY        0.00          1.84 1895   0.12  -0.12     0.00
"""
_CLI_TOKENS = ("MM", "102R", "-999", "9999", "1" * 400, "R", "-", "12:60", "1261", "0000", "99:99", "AM", "PM",
               "FEBRUARY 30 2026", "JANUARY 0 2013", "SMARCH 2 2013", "DECEMBER 31 9999", "JANUARY 2 0000", "TODAY",
               "YESTERDAY", "CORRECTION", "CCA", "RRA", "MAXIMUM", "MINIMUM", "TEMPERATURE (F)", "...THE ",
               "CLIMATE SUMMARY FOR", "VALID AS OF 1300 PM", "\r", "\x00", "é", "٣٣", "")


@st.composite
def cli_texts(draw: st.DrawFn) -> str:
    """A CLI bulletin with lines dropped, doubled or rewritten and tokens swapped; or repetitive garbage."""
    lines = CLI_BULLETIN.split("\n")
    op = draw(st.integers(0, 9))
    if op == 9:
        return draw(st.one_of(st.text(max_size=300), repeated(st.sampled_from(
            ("...THE X ", "...THE X CLIMATE SUMMARY FOR ", "TEMPERATURE (F)\n", " MAXIMUM ", "VALID AS OF 1 ", "\n\n",
             "CLIMATE SUMMARY FOR JANUARY 2 ")), 20_000)))
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.integers(0, 5))
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[i])
        elif kind == 2:
            words = lines[i].split(" ")
            j = draw(st.integers(0, len(words) - 1))
            words[j] = draw(st.sampled_from(_CLI_TOKENS) | st.text(max_size=6))
            lines[i] = " ".join(words)
        elif kind == 3:
            lines[i] = draw(st.text(max_size=80))
        elif kind == 4:
            lines[i] = lines[i] * draw(st.integers(2, 200))
        else:
            lines[i] = lines[i].lower()
    return "\n".join(lines)


cli_cases = st.tuples(st.one_of(cli_texts(), cli_texts(), cli_texts(), scalars), st.one_of(st.none(), st.sampled_from(
    ("2026-08-25T06:16:00+00:00", "2026-08-25T06:16:00", "not a time", "", "9999-12-31T23:59:59-12:00")), scalars),
    st.sampled_from(("productText", "productText", "text", "")))  # "": the product body is a list


def check_climate_report(case: tuple[Any, Any, str]) -> None:
    """The CLI parser and the resolver's row for a product: a report or a ReportError; the row always comes back."""
    from services.resolver.climate_report import ClimateReport, ReportError, parse
    from services.resolver.reports import _row

    text, issued, key = case
    if isinstance(text, str):
        try:
            r = parse(text)
        except ReportError:
            pass
        else:
            if not isinstance(r, ClimateReport) or not isinstance(r.climate_date, date):
                raise WrongEffect(f"parse gave {r!r}")
            if any(v is not None and not -200 < v < 200 for v in (r.max_temp_f, r.min_temp_f)):
                raise WrongEffect(f"temperatures {r.max_temp_f}, {r.min_temp_f}")
    row = _row(_station(), "nws-cli", "p-1", {key: text, "issuanceTime": issued} if key else [text])
    if row["parse_error"] is None:
        if not isinstance(row["climate_date"], date):
            raise WrongEffect(f"stored climate_date {row['climate_date']!r}")
        _aware(row["issued_at"], "stored issued_at")


# --- target: Telegram --------------------------------------------------------------------------------

OPERATOR, VIEWER, STRANGER = 11_000_001, 22_000_002, 33_000_003
_TG_WORDS = ("status", "positions", "orders", "fills", "balance", "pnl", "signals", "accuracy", "llm", "llmbudget",
             "pause", "resume", "flatten", "family", "mode", "help", "start", "Pause", "MODE", "unknown", "")
_TG_ARGS = ("1", "0", "-1", "50", "51", "365", "366", "9" * 400, "1.5", "nan", "inf", "-inf", "1e9", "$5", "$", "5$",
            "default", "DEFAULT", "-0", "١٢", "²", "on", "off", "ON", "weather", "btc", "llm", "live", "LIVE", "sim",
            "paper", "demo", "<script>", "&", "a&b<c>", "\u200b", "\u202e", "😀", "x" * 5000, "0.00001", "10.0001",
            "1_000", "  ", "\n", "@kdesk_bot", "/mode", "1e999999", "1e999990", "sNaN", "0.0001", "1" * 16)


@st.composite
def tg_text(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        mention = draw(st.sampled_from(("", "", "@kdesk_bot", "@other_bot", "@", "@@")))
        args = draw(st.lists(st.one_of(st.sampled_from(_TG_ARGS), st.sampled_from(_TG_ARGS), st.text(max_size=12)),
                             max_size=4))
        sep = draw(st.sampled_from((" ", "  ", "\n", "\t", "\u00a0")))
        return sep.join([f"/{draw(st.sampled_from(_TG_WORDS))}{mention}", *args])
    if kind == 6:
        return draw(st.sampled_from(("CONFIRM LIVE", " CONFIRM LIVE ", "confirm live", "CONFIRM  LIVE",
                                     "CONFIRM\u200bLIVE", "CONFIRM LIVE\n", "/CONFIRM LIVE")))
    if kind == 7:
        return draw(repeated(st.sampled_from(("a", "/", "😀", "<b>", "&", " ", "/help ")), 30_000))
    if kind == 8:
        return None  # a sticker, a photo: no text
    return draw(st.text(max_size=60))


_TG_USERS = st.sampled_from((OPERATOR, OPERATOR, VIEWER, STRANGER, None))
_TG_NAMES = st.sampled_from(("u", "Ω", "x" * 64, "<b>", "\u202e"))


@st.composite
def tg_update(draw: st.DrawFn) -> dict[str, Any]:
    """One Telegram update as the Bot API sends it (the kinds a bot sees, from its three kinds of users)."""
    who = draw(_TG_USERS)
    sender = None if who is None else {"id": who, "is_bot": False, "first_name": draw(_TG_NAMES)}
    chat_id = -1001234567890 if who is None or draw(st.integers(0, 2)) == 0 else who
    chat = {"id": chat_id, "type": "private" if chat_id and chat_id > 0 else "supergroup", "title": "g"}
    message: dict[str, Any] = {"message_id": draw(st.integers(1, 10**6)), "date": 1787677200, "chat": chat}
    if sender is not None:
        message["from"] = sender
    text = draw(tg_text())
    if text is not None:
        message["text"] = text
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        return {"message": message}
    if kind == 7 and sender is not None:
        data = draw(st.one_of(st.builds(lambda n, a: f"flatten:{n}:{a}", st.text(max_size=10),
                                        st.sampled_from(("yes", "no", ""))), st.text(max_size=80)))
        return {"callback_query": {"id": "cb", "from": sender, "chat_instance": "ci", "data": data,
                                   "message": message}}
    if kind == 8:
        return {"edited_message": message}
    return {"channel_post": {k: v for k, v in message.items() if k != "from"}}


tg_sessions = st.lists(tg_update(), min_size=1, max_size=3)


class _KV:
    """The control bucket's get/put/delete, in memory, with every write kept."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.writes: list[tuple[str, str]] = []

    async def get(self, key: str) -> Any:
        import nats.js.errors

        if key not in self.data:
            raise nats.js.errors.KeyNotFoundError()
        return SimpleNamespace(value=self.data[key])

    async def put(self, key: str, value: bytes) -> int:
        self.writes.append(("put", key))
        self.data[key] = value
        return len(self.writes)

    async def delete(self, key: str) -> None:
        self.writes.append(("delete", key))
        self.data.pop(key, None)


class _Bus:
    """Answers `executor status` (live allowed, so the arming path is reachable); no other service is up."""

    def __init__(self, kv: _KV) -> None:
        self.kv = kv
        self.requests: list[tuple[str, str]] = []

    async def request(self, service: str, verb: str, payload: dict[str, Any] | None = None, *,
                      timeout: float = 10.0) -> Any:
        from libs.common.bus import CommandUnavailable

        self.requests.append((service, verb))
        if (service, verb) == ("executor", "status"):
            return {"allow_live": True, "paused": False, "open_orders": 0, "orders_sent": 0}
        raise CommandUnavailable("unavailable", f"no {service} answered {verb}")

    async def control(self) -> _KV:
        return self.kv


class _Store:
    """The audit and the outbox, in memory."""

    def __init__(self) -> None:
        self.begun: list[dict[str, Any]] = []
        self.finished: list[tuple[str, str, str | None]] = []
        self.outbox: list[Any] = []
        self._seen: set[str] = set()

    async def begin_command(self, *, command_id: str, actor: str, chat_id: str | None, command: str, args: list[Any],
                            authorized: bool, received_at: datetime) -> bool:
        if command_id in self._seen:
            return False
        self._seen.add(command_id)
        self.begun.append({"command_id": command_id, "actor": actor, "command": command, "authorized": authorized})
        return True

    async def finish_command(self, command_id: str, outcome: str, detail: str | None, replies: Any = ()) -> None:
        self.finished.append((command_id, outcome, detail))
        self.outbox.extend(replies)

    async def enqueue(self, messages: Any) -> None:
        self.outbox.extend(messages)


class _NoTelegram:
    """An aiogram session that never reaches Telegram: `answerCallbackQuery` is all a handler may call."""

    def __init__(self) -> None:
        from aiogram.client.session.base import BaseSession

        class Session(BaseSession):
            def __init__(self) -> None:
                super().__init__()
                self.calls: list[str] = []

            async def make_request(self, bot: Any, method: Any, timeout: int | None = None) -> Any:
                self.calls.append(type(method).__name__)
                if type(method).__name__ == "AnswerCallbackQuery":
                    return True
                raise RuntimeError(f"a handler called Telegram itself: {type(method).__name__}")

            async def stream_content(self, *a: Any, **kw: Any) -> Any:  # pragma: no cover - never used
                raise RuntimeError("no downloads in the fuzz")

            async def close(self) -> None:
                return None

        self.session = Session()


_TG_TAG = re.compile(r"<(/?)([a-zA-Z-]+)(?:\s[^<>]*)?>")
_TG_ALLOWED = {"b", "i", "u", "s", "code", "pre", "a", "tg-spoiler", "blockquote"}
_TG_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


def _telegram_html(text: str) -> None:
    """Telegram refuses (400) a message whose HTML it cannot parse; that answer would never arrive."""
    stack: list[str] = []
    for m in _TG_TAG.finditer(text):
        closing, tag = m.group(1), m.group(2).lower()
        if tag not in _TG_ALLOWED:
            raise WrongEffect(f"reply has a <{tag}> tag Telegram does not accept")
        if closing:
            if not stack or stack.pop() != tag:
                raise WrongEffect(f"reply closes <{tag}> it did not open")
        else:
            stack.append(tag)
    if stack:
        raise WrongEffect(f"reply leaves <{stack[-1]}> open")
    bare = _TG_ENTITY.sub("", _TG_TAG.sub("", text))
    if "<" in bare or ">" in bare or "&" in bare:
        raise WrongEffect("reply has an unescaped <, > or &")


_TG: dict[str, Any] = {}


def _notifier_bot() -> tuple[Any, Any, Any, Any]:
    """One NotifierBot and its dispatcher for the campaign (building aiogram's routers costs more than a case)."""
    if not _TG:
        from aiogram import Bot

        from libs.common.config import load_settings
        from services.notifier.bot import NotifierBot

        settings = load_settings(mode="sim", telegram_operators=str(OPERATOR), telegram_viewers=str(VIEWER))
        nb = NotifierBot(settings, None, None, wake=lambda: None)  # type: ignore[arg-type]
        no_tg = _NoTelegram()
        _TG.update(nb=nb, dp=nb.dispatcher(), bot=Bot("123456:" + "A" * 35, session=no_tg.session),
                   session=no_tg.session)
    return _TG["nb"], _TG["dp"], _TG["bot"], _TG["session"]


async def check_telegram(updates: list[dict[str, Any]]) -> _Store:
    """A short session of updates through the dispatcher: access, arguments, arming, replies (the store returned)."""
    from aiogram.types import Update

    from libs.common.db.notifier import COMMAND_OUTCOMES, OUTBOX_KINDS
    from libs.common.subjects import ControlKey
    from services.notifier.bot import BY_NAME, CONFIRM_LIVE, Answer, parse
    from services.notifier.sender import MAX_TEXT

    nb, dp, bot, session = _notifier_bot()
    kv = _KV()
    bus = _Bus(kv)
    store = _Store()
    # A fresh desk behind the same bot: its bus, KV and store, and none of the last case's pending confirmations.
    nb.bus, nb.store, nb.pending, nb.refused_at, nb.beats = bus, store, {}, {}, {}
    session.calls.clear()
    for uid, raw in enumerate(updates, start=1):
        update = Update.model_validate({"update_id": uid, **raw}, context={"bot": bot})
        requests, writes, outbox = len(bus.requests), len(kv.writes), len(store.outbox)
        msg = update.message
        cb = update.callback_query
        user = (msg.from_user if msg else cb.from_user if cb else None)
        role = nb.role(user.id if user else None)
        answer = await dp.feed_update(bot, update)
        new_requests, new_writes = bus.requests[requests:], kv.writes[writes:]
        if msg is None and cb is None:
            if new_requests or new_writes or len(store.outbox) != outbox:
                raise WrongEffect(f"an update of no kind we handle did something: {new_requests} {new_writes}")
            continue
        if role is None and (new_requests or new_writes):
            raise WrongEffect(f"an unknown user caused {new_requests or new_writes}")
        name = parse(msg.text or "")[0] if msg else ""
        if role == "viewer" and (new_writes or any(v in ("pause", "resume", "flatten") for _, v in new_requests)):
            raise WrongEffect(f"a viewer steered the desk: {new_requests} {new_writes}")
        if ("put", ControlKey.LIVE_ARMED_UNTIL) in new_writes and not (
                role == "operator" and msg is not None and (msg.text or "").strip() == CONFIRM_LIVE):
            raise WrongEffect(f"live armed by {role} with {msg.text if msg else cb.data!r}")  # type: ignore[union-attr]
        if isinstance(answer, Answer) and answer.outcome == "error" and answer.texts:
            label = f"/{name[:64]}" if name else "(text)" if msg else "(button)"
            first = answer.texts[0].split("\n", 1)[0]
            if first.endswith(f"{label} failed") or (name in BY_NAME and first.endswith(" failed")):
                raise WrongEffect(f"the {label} handler raised on its input: {answer.detail}")
    if len(store.begun) != sum(1 for u in updates if "message" in u or "callback_query" in u):
        raise WrongEffect(f"{len(store.begun)} audit rows for {len(updates)} updates")
    for _, outcome, _ in store.finished:
        if outcome not in COMMAND_OUTCOMES:  # the audit table's check constraint would refuse the row
            raise WrongEffect(f"audit outcome {outcome!r}")
    for out in store.outbox:
        if out.kind not in OUTBOX_KINDS:
            raise WrongEffect(f"outbox kind {out.kind!r}")
        if out.body is not None:
            if len(out.body) > MAX_TEXT:
                raise WrongEffect(f"a {len(out.body)}-character reply: Telegram refuses more than {MAX_TEXT}")
            _telegram_html(out.body)
    if any(c != "AnswerCallbackQuery" for c in session.calls):
        raise WrongEffect(f"a handler called Telegram: {session.calls}")
    return store


# --- target: operator CLI ------------------------------------------------------------------------------

_CTL_COMMANDS = ("up", "status", "positions", "orders", "fills", "balance", "accuracy", "pnl", "signals",
                 "orderbook", "forecast", "llm", "ws-status", "alerts", "pause", "resume", "flatten", "mode", "chat",
                 "run", "health", "desk", "resolver", "migrate", "provision", "", "STATUS", "--help", "-h", "help",
                 "--json", "x" * 300)
_CTL_FLAGS = ("--json", "--limit", "--open", "--days", "--family", "--ticker", "--last", "--depth", "--budget",
              "--default-budget", "--reason", "--yes", "--say", "--wait", "--user", "--instance", "--bins",
              "--status-every", "--help", "--", "-", "--limit=", "--days=nan", "--no-such-flag")
_CTL_VALUES = ("0", "-1", "1", "365", "366", "nan", "inf", "-inf", "1e309", "9" * 5000, "1.5", "abc", "", " ",
               "2026-02-30", "2026-08-25", "20260825", "nyc", "KNYC", "KXHIGHNY", "live", "sim", "LIVE", "status",
               "reconcile", "backfill", "calibration", "$5", "1e3", "-5", "0x10", "١٢", "😀", "\x00"[:0] + "\u202e",
               "a" * 2000, "--json", "-h")
# Executed after parsing; the rest (up, run, migrate, provision) start servers or services, so they are only parsed.
_CTL_RUN = {"status", "positions", "orders", "fills", "balance", "accuracy", "pnl", "signals", "orderbook",
            "forecast", "llm", "ws-status", "alerts", "pause", "resume", "flatten", "mode", "health", "desk",
            "resolver", "chat"}

ctl_argvs = st.builds(lambda cmd, rest: [c for c in [cmd] if c] + rest, st.sampled_from(_CTL_COMMANDS),
                      st.lists(st.sampled_from(_CTL_FLAGS + _CTL_VALUES) | st.text(max_size=10), max_size=6))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with every KDESK_*/KALSHI_* variable removed, then `values` set; restored afterwards."""
    saved = dict(os.environ)
    try:
        for k in list(os.environ):
            if k.startswith(("KDESK_", "KALSHI_")):
                del os.environ[k]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


_EMPTY_VAR = tempfile.mkdtemp(prefix="kdesk-fuzz-var-")


_PARSER: list[Any] = []


def check_ctl(argv: list[str]) -> None:
    """`kdesk ARGV` with no desk running: an exit code of 0, 1 or 2 and no traceback."""
    from services.ctl.cli import build_parser

    if not _PARSER:
        _PARSER.append(build_parser())  # argparse parsers are reusable; `main` builds the same one per run
    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    code: Any
    with _environment({"KDESK_VAR_DIR": _EMPTY_VAR}), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        sys.stdin = io.StringIO("")  # nobody at the keyboard: a prompt reads end-of-file
        try:
            args = _PARSER[0].parse_args(argv)
            # What `main` does after parsing (minus configure_logging, which would re-route the campaign's logs).
            code = args.func(args) if args.command in _CTL_RUN else 0
        except SystemExit as e:
            code = e.code
        finally:
            sys.stdin = stdin
    if code not in (0, 1, 2, None):
        raise WrongEffect(f"exit code {code!r}")


# --- target: configuration ----------------------------------------------------------------------------

def _config_vars() -> tuple[str, ...]:
    from libs.common.config import _FILE_FIELDS, Settings, _var

    names = [_var(f) for f in Settings.model_fields]
    names += [_var(f) + "_FILE" for f in _FILE_FIELDS]
    return tuple(sorted(set(names)))


_CFG_VALUES = ("", " ", "0", "1", "-1", "true", "false", "yes", "2", "nan", "inf", "-inf", "1e999999", "1e999999999",
               "1e999990", "sNaN", "1e15", "999999999999999.9999",
               "1e-999999", "-0", "0.0001", "0.00001", "12.50", "1,000", "$5", "9" * 5000, "١٢٣", "²", "sim", "paper",
               "demo", "live", "LIVE", "balanced", "reckless", "DEBUG", "trace", "json", "nats://localhost:4222",
               "http://x", "postgresql://u:p@h/db", "ftp://x", "weather:stop_loss=0.2", "btc:stop_loss=2",
               "x:unknown=1", "weather:take_profit=nan", "weather:max_hold_s=inf", ";;", "123,456", "123, abc",
               "grok-4=1/2", "grok-4=x/y", "m=-1/2", "/nonexistent/key.pem", "/", "\x7f", "😀", "a" * 300,
               "1" * 20, "65536", "1023", "0.5", "KXHIGHNY,KXBTC", ",,,")


def _typed_vars() -> tuple[str, ...]:
    """The variables with their own validation or conversion (money, URLs, ids, bounded numbers, pairs)."""
    from libs.common.config import _USD_FIELDS, Settings, _var

    typed = [_var(f) for f in _USD_FIELDS]
    typed += [_var(f) for f, info in Settings.model_fields.items() if info.metadata or info.annotation in (
        bool, int, float, "bool", "int", "float")]
    typed += ["KDESK_MODE", "KDESK_ALLOW_LIVE", "KDESK_EXITS", "KDESK_LLM_PRICES", "KDESK_TELEGRAM_OPERATORS",
              "KDESK_TELEGRAM_VIEWERS", "KDESK_NATS_URL", "KDESK_DATABASE_URL", "KALSHI_DEMO_KEY_ID",
              "KALSHI_DEMO_PRIVATE_KEY_PATH", "KDESK_DASHBOARD_TOKEN", "KDESK_DASHBOARD_OPERATOR_TOKEN"]
    return tuple(sorted(set(typed)))


@st.composite
def config_envs(draw: st.DrawFn) -> dict[str, str]:
    names = _config_vars()
    typed = _typed_vars()
    out: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names) | st.sampled_from(typed))
        if name.endswith("_FILE"):
            out[name] = draw(st.sampled_from((_SECRET_FILES["text"], _SECRET_FILES["binary"], _SECRET_FILES["empty"],
                                              _EMPTY_VAR, "/nonexistent/secret", "")))
        else:
            out[name] = draw(st.one_of(st.sampled_from(_CFG_VALUES), st.sampled_from(_CFG_VALUES),
                                       st.text(max_size=12).filter(lambda s: "\x00" not in s)))
    return out


def _secret_files() -> dict[str, str]:
    d = Path(tempfile.mkdtemp(prefix="kdesk-fuzz-secrets-"))
    (d / "text").write_text("s3cr3t-value-of-twenty-chars\n")
    (d / "binary").write_bytes(b"\xff\xfe\x00garbage\xc3")
    (d / "empty").write_text("")
    return {k: str(d / k) for k in ("text", "binary", "empty")}


_SECRET_FILES = _secret_files()


def check_config(env: dict[str, str]) -> None:
    """Settings from a bad environment: Settings or ConfigError naming the variable; then what services read."""
    from libs.common.config import ConfigError, load_settings
    from libs.common.llm.prices import PriceError, PriceTable

    with _environment(env):
        try:
            s = load_settings()
        except ConfigError as e:
            text = str(e)
            named = set(env) | {n.removesuffix("_FILE") for n in env}
            for name in list(named):  # a pair rule names the other half; the live rule names the allow switch
                for a, b in (("_KEY_ID", "_PRIVATE_KEY_PATH"), ("_PRIVATE_KEY_PATH", "_KEY_ID")):
                    if name.endswith(a):
                        named.add(name.removesuffix(a) + b)
            named |= {"KDESK_ALLOW_LIVE", "KDESK_MODE"} if "KDESK_MODE" in env or "KDESK_ALLOW_LIVE" in env else set()
            if not any(n in text for n in named):
                raise WrongEffect(f"ConfigError names none of {sorted(env)}: {text[:200]}") from None
            return
    # What services derive from the settings as they start (config errors must not surface only here).
    s.risk.as_dict()
    s.telegram_users()
    s.series_list()
    s.freshness  # noqa: B018
    s.weather_root()
    s.llm_endpoint()
    s.kalshi_env()
    try:
        PriceTable.from_config(s.llm_prices)
    except PriceError as e:
        if "KDESK_LLM_PRICES" not in str(e):
            raise WrongEffect(f"KDESK_LLM_PRICES={s.llm_prices!r} passes the settings, then fails at start: {e}")\
                from None


# --- target: bus events --------------------------------------------------------------------------------

def _event_templates() -> list[tuple[type, dict[str, Any]]]:
    from libs.common import events as ev
    from libs.common.config import Mode

    now = datetime(2026, 8, 25, 17, 0, tzinfo=UTC)
    base = {"ts_event": now, "ts_init": now, "mode": Mode.SIM}
    made = [
        ev.BookUpdate(id="b", ticker=T1, series_ticker="KXHIGHNY", seq=7, yes_bids=((4100, 1000), (4200, 500)),
                      no_bids=((5600, 300),), ts_exchange=now, **base),
        ev.SpotTick(id="s", venue="coinbase", symbol="BTC-USD", kind="trade", price=950_123_400,
                    size=Decimal("0.0015"), bid=950_123_300, ask=950_123_400, **base),
        ev.Signal(id="g", family="weather", series_ticker="KXHIGHNY", event_ticker=EVENT_T1, ticker=T1, model="wx",
                  model_version="3", p_model=0.61, p_market=0.42, action="buy_yes", limit_price=4200, edge_maker=1500,
                  edge_taker=900, confidence=0.8, valid_until=now, **base),
        ev.OrderEvent(id="o", kind="fill", client_order_id="c-1", order_id="o-1", ticker=T1, event_ticker=EVENT_T1,
                      book_side="bid", price=4200, count=200, fill_id="t-1:o-1", fee=100, is_taker=False, **base),
        ev.MarketDefinition(id="m", ticker=T1, event_ticker=EVENT_T1, series_ticker="KXHIGHNY", status="active",
                            floor_strike=Decimal("80"), price_ranges=(ev.PriceRange(start=0, end=10_000, step=100),),
                            fee_type="quadratic", fee_multiplier=Decimal("1"), **base),
        ev.WxForecast(id="w", city="nyc", station="KNYC", run_time=now, members=(
            ev.WxMember(model="gefs", member=0, target_date=date(2026, 8, 25), tmax_f=84.2),), **base),
        ev.WxObservation(id="x", station="KNYC", observed_at=now, climate_date=date(2026, 8, 25), temp_f=80.1,
                         running_max_f=82.0, qc="V", **base),
        ev.Alert(id="a", family="risk", severity="critical", dedupe_key="k", title="t", data={"n": 1}, **base),
        ev.Heartbeat(id="h", service="feeds", instance="i", status="ok", started_at=now,
                     inputs={"kalshi_ws": ev.InputFreshness(age_s=1.0, max_age_s=120, stale=False)}, **base),
        ev.Resolution(id="r", ticker=T1, event_ticker=EVENT_T1, result="yes", settlement_value=10_000,
                      settled_time=now, **base),
    ]
    return [(type(e), json.loads(e.to_json())) for e in made]


_EVENT_TEMPLATES = _event_templates()
bus_cases = st.tuples(st.integers(0, len(_EVENT_TEMPLATES)),
                      wire(st.one_of(*[mutated(t, 4) for _, t in _EVENT_TEMPLATES], json_values)))


def check_bus_event(case: tuple[int, str | bytes]) -> None:
    """Wire bytes into an event (any by its tag, or one type): the event or ValidationError; it re-encodes."""
    from libs.common import codec
    from libs.common.events import decode_event

    which, raw = case
    decode = decode_event if which == len(_EVENT_TEMPLATES) else codec.decoder(_EVENT_TEMPLATES[which][0])
    try:
        event = decode(raw)
    except ValidationError:
        return
    codec.encode(event)  # what a consumer re-publishes must encode


# --- target: LLM answers ------------------------------------------------------------------------------

_FORECAST = {"probability": 0.62, "confidence": 0.7, "action": "buy_yes", "reasoning": "the ensemble favours it"}


@st.composite
def llm_answers(draw: st.DrawFn) -> tuple[str | None, str, str | None, str | None]:
    body = _dumps(draw(st.one_of(mutated(_FORECAST, 5), mutated({k: v for k, v in _FORECAST.items()
                                                                  if k in ("probability", "reasoning")}, 5),
                                 json_values)))
    wrap = draw(st.integers(0, 11))
    if wrap == 0:
        body = f"Here is my answer:\n```json\n{body}\n```\nHope that helps."
    elif wrap == 1:
        body = f"<think>{draw(st.text(max_size=50))}</think>{body}"
    elif wrap == 2:
        body = body[: draw(st.integers(0, len(body)))]
    elif wrap == 3:
        body = body + "\n" + body.replace("0.62", "0.7")
    elif wrap == 4:
        # Up to 2,000 repeats: json_repair's known slow path (a run of bare "{", about 0.25 ms a character)
        # is documented in KNOWN_ISSUES and pinned by an xfail test rather than timed out here again and again.
        body = draw(repeated(st.sampled_from(("{", "[", '{"a":', '"', "\\", "```", "<think>", ",", "0.", "{\"p\": [")),
                             2000))
    elif wrap == 5:
        body = draw(st.text(max_size=300))
    elif wrap == 6:
        body = body * draw(st.integers(2, 100))
    text = None if draw(st.integers(0, 30)) == 0 else body
    schema = draw(st.sampled_from(("Forecast", "Estimate")))
    refusal = draw(st.sampled_from((None, None, None, "I can't help with that", "")))
    finish = draw(st.sampled_from((None, "stop", "stop", "length", "content_filter", "tool_calls")))
    return text, schema, refusal, finish


def check_llm_answer(case: tuple[str | None, str, str | None, str | None]) -> None:
    """Any answer text: the schema object (finite, in range) or a ParseFailure."""
    from libs.common.llm import parse as llm_parse

    text, schema_name, refusal, finish = case
    schema = getattr(llm_parse, schema_name)
    got = llm_parse.parse_answer(text, schema, refusal=refusal, finish_reason=finish)
    if isinstance(got, llm_parse.ParseFailure):
        return
    if not isinstance(got, schema):
        raise WrongEffect(f"parse_answer gave a {type(got).__name__}")
    if not (math.isfinite(got.probability) and 0 <= got.probability <= 1) or not got.reasoning:
        raise WrongEffect(f"accepted {got!r}")


# --- the campaign --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One entry point, its inputs, and the check that runs the real code on one input."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], Any]  # raises on a crash; may be a coroutine function
    modules: tuple[str, ...] = ()  # imported before the first case, so that no case pays for an import


_KALSHI = ("libs.common.kalshi.ws", "libs.common.kalshi.rest", "services.feeds.service", "services.feeds.books",
           "services.executor.orders", "services.feeds.discovery")


TARGETS: tuple[Target, ...] = (
    Target("kalshi_ws_books", ws_frames(_book_frames()), check_ws_books, _KALSHI),
    Target("kalshi_ws_private", ws_frames(_private_frames()), check_ws_private, _KALSHI),
    Target("kalshi_rest", rest_cases(), check_rest, _KALSHI),
    Target("kalshi_discovery", discovery_cases, check_discovery, _KALSHI),
    *(Target(f"venue_{name}", wire(_variants(*frames, rate=5)), _check_venue(name), ("services.feeds.spot",))
      for name, frames in VENUE_FRAMES.items()),
    Target("open_meteo", ensemble_cases, check_open_meteo, ("services.feeds.wx",)),
    Target("nws_observations", obs_cases, check_nws_observations, ("services.feeds.wx",)),
    Target("nws_climate_report", cli_cases, check_climate_report, ("services.resolver.reports",)),
    Target("telegram", tg_sessions, check_telegram, ("aiogram", "services.notifier.bot", "services.notifier.sender")),
    Target("ctl_argv", ctl_argvs, check_ctl, ("services.ctl.cli", "services.ctl.render", "services.ctl.supervisor")),
    Target("config", config_envs(), check_config, ("libs.common.config", "libs.common.llm.prices")),
    Target("bus_events", bus_cases, check_bus_event, ("libs.common.events",)),
    Target("llm_answer", llm_answers(), check_llm_answer, ("libs.common.llm.parse",)),
)


@dataclass
class Tally:
    """What one target's run found."""

    cases: int = 0
    crashes: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def crash(self, what: str, value: Any) -> None:
        self.crashes += 1
        if len(self.examples) < EXAMPLES_KEPT:
            shown = repr(value)
            self.examples.append(f"{what[:300]} <- {shown[:400]}{'…' if len(shown) > 400 else ''}")

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "crashes": self.crashes, "examples": self.examples,
                "seconds": round(self.seconds, 2)}


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    """Interrupt the case after `seconds` (main thread only); an outer alarm (pytest-timeout's) is kept."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Stuck(f"no outcome within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - (time.monotonic() - started), 1e-3), outer_interval)


async def _bounded(coro: Any, seconds: float) -> Any:
    """Await `coro`; a wait past `seconds` is a stuck handler, told apart from a TimeoutError it raises itself."""
    cm = asyncio.timeout(seconds)
    try:
        async with cm:
            return await coro
    except TimeoutError:
        if cm.expired():
            raise _Stuck(f"still waiting after {seconds:g} s") from None
        raise


def run_target(target: Target, cases: int, seed: int, budget_s: float = CASE_BUDGET_S) -> Tally:
    """Run `cases` generated inputs through one target; count crashes instead of stopping at the first."""
    tally = Tally()
    runner: list[asyncio.Runner] = []
    for module in target.modules:
        importlib.import_module(module)
    if target.name.startswith("kalshi_"):
        _signer()

    def loop() -> asyncio.Runner:
        if not runner:
            runner.append(asyncio.Runner())
        return runner[0]

    def one(value: Any) -> None:
        tally.cases += 1
        started = time.perf_counter()
        try:
            with _budget(budget_s * 1.5), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy overflow warnings and the like: not outcomes
                out = target.check(value)
                if inspect.iscoroutine(out):
                    loop().run(_bounded(out, budget_s))
        except _Stuck as e:
            tally.crash(f"hang: {e}", value)
            if runner:  # an interrupted loop is not trusted again
                with contextlib.suppress(BaseException):
                    runner.pop().close()
        except Exception as e:
            tally.crash(f"{type(e).__name__}: {e}", value)
        else:
            took = time.perf_counter() - started
            if took > budget_s:
                tally.crash(f"hang: took {took:.1f} s", value)

    test = settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False)(
        hypothesis_seed(seed)(given(target.inputs)(one)))
    started = time.perf_counter()
    try:
        test()
    finally:
        tally.seconds = time.perf_counter() - started
        if runner:
            with contextlib.suppress(BaseException):
                runner[0].close()
    return tally


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Malformed input is logged at WARNING by design; thousands of those lines would only slow the campaign."""
    saved = structlog.get_config()
    root = logging.getLogger()
    level = root.level
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
                        cache_logger_on_first_use=False)  # nothing cached with this config outlives the campaign
    root.setLevel(logging.CRITICAL + 10)
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.setLevel(level)


KNOWN_ISSUES: tuple[str, ...] = (
    "llm_answer: json_repair spends about 0.25 ms a character on a run of bare '{' (60,000 of them: ~15 s on the "
    "2-core box, in the caller's event loop); MAX_ANSWER_CHARS (200,000) bounds it at ~50 s. Not fixed here: "
    "lowering the cap (or trying json.loads first and repairing only short answers) is the LLM family's call. "
    "Pinned by tests/fuzz/test_fuzz_campaign.py::test_known_slow_llm_repair (xfail).",
)
ROOT = Path(__file__).resolve().parent.parent


def campaign(cases_per_target: int = DEFAULT_CASES_PER_TARGET, seed: int = DEFAULT_SEED,
             only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run every target (or `only` these) and report `fuzz_cases`, `fuzz_crashes` and `fuzz_by_target`."""
    by_target: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with quiet_logs():
        for i, target in enumerate(TARGETS):
            if only is not None and target.name not in only:
                continue
            by_target[target.name] = run_target(target, cases_per_target, seed * 1000 + i).as_dict()
    return {"fuzz_cases": sum(t["cases"] for t in by_target.values()),
            "fuzz_crashes": sum(t["crashes"] for t in by_target.values()),
            "fuzz_seconds": round(time.perf_counter() - started, 1), "fuzz_seed": seed,
            "fuzz_by_target": by_target, "fuzz_known_issues": list(KNOWN_ISSUES)}


def merge(reports: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One report from the reports of campaigns over disjoint sets of targets."""
    by_target = {k: v for r in reports for k, v in r["fuzz_by_target"].items()}
    return {"fuzz_cases": sum(r["fuzz_cases"] for r in reports),
            "fuzz_crashes": sum(r["fuzz_crashes"] for r in reports),
            "fuzz_seconds": round(seconds, 1), "fuzz_seed": reports[0]["fuzz_seed"],
            "fuzz_by_target": {t.name: by_target[t.name] for t in TARGETS if t.name in by_target},
            "fuzz_known_issues": list(KNOWN_ISSUES)}


async def campaign_in_children(cases_per_target: int = DEFAULT_CASES_PER_TARGET, seed: int = DEFAULT_SEED,
                               workers: int = 2) -> dict[str, Any]:
    """The campaign split over `workers` child processes (targets dealt round-robin), merged into one report."""
    names = [t.name for t in TARGETS]
    shares = [names[i::workers] for i in range(workers)]
    started = time.perf_counter()
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.fuzz", "--cases", str(cases_per_target), "--seed", str(seed), "--only",
        *share, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT)) for share in shares if share]
    outs = [await p.communicate() for p in procs]
    for p in procs:
        if p.returncode != 0:
            raise RuntimeError(f"a fuzz campaign process exited {p.returncode}")
    return merge([json.loads(out) for out, _ in outs], time.perf_counter() - started)


def flat(report: dict[str, Any]) -> dict[str, float | int | str]:
    """The report as the benchmark harness takes it: scalar values, one pair of keys per target."""
    out: dict[str, float | int | str] = {k: v for k, v in report.items()
                                         if k in ("fuzz_cases", "fuzz_crashes", "fuzz_seconds", "fuzz_seed")}
    for name, t in report["fuzz_by_target"].items():
        out[f"fuzz_{name}_cases"] = t["cases"]
        out[f"fuzz_{name}_crashes"] = t["crashes"]
    out["fuzz_known_issues"] = len(report["fuzz_known_issues"])
    return out


async def run() -> dict[str, float | int | str]:
    """The benchmark entry: the default campaign on both cores (child processes: their own main thread,
    environment and logs), flattened."""
    return flat(await campaign_in_children())


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.fuzz [--cases N] [--seed S] [--only target ...]`: print the nested report as JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n", 1)[0])
    p.add_argument("--cases", type=int, default=DEFAULT_CASES_PER_TARGET, help="cases per target")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--only", nargs="*", help="run only these targets")
    a = p.parse_args(argv)
    report = campaign(a.cases, a.seed, tuple(a.only) if a.only else None)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
