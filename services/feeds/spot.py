"""BTC spot from crypto venues (data_sources.md C): parsing, connections, freshness and 1-second bars.

Three layers, each usable alone:
- `parse_coinbase`, `parse_kraken`, `parse_bitstamp`, `parse_binance`: pure functions from one raw
  WebSocket frame to `VenueTick`s (acks and heartbeats give none; a malformed frame raises
  `VenueMessageError`). Prices become integer $0.0001 ticks here, at the client boundary (DESIGN §3).
- `Venue` (built by `coinbase()`, `kraken()`, `bitstamp()`, `binance()`): the URL — a seam that tests
  point at `services.sim.venues` —, the subscribe messages, the keepalive and the time budgets.
- `VenueFeed`: connect, subscribe, read, reconnect with jittered exponential back-off (C5), publish
  `SpotTick`s on `md.spot.btc.<venue>` through an injected `emit`, mark `Freshness` per venue.
- `BarBuilder`: 1-second OHLC bars per venue and symbol, handed to an injected async sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from libs.common import subjects
from libs.common.backoff import Backoff
from libs.common.config import Mode
from libs.common.events import Event, SpotTick, new_id, utcnow
from libs.common.health import Freshness
from libs.common.logs import get_logger
from libs.common.money import ONE_DOLLAR, MoneyError

log = get_logger(__name__)

Emit = Callable[[str, Event], Awaitable[None]]
TickKind = Literal["trade", "ticker"]

COINBASE_URL = "wss://ws-feed.exchange.coinbase.com"
KRAKEN_URL = "wss://ws.kraken.com/v2"
BITSTAMP_URL = "wss://ws.bitstamp.net"
BINANCE_URL = "wss://stream.binance.com:9443/ws"


# --- errors ------------------------------------------------------------------------------------

class VenueMessageError(ValueError):
    """A venue frame is not valid JSON or lacks or mangles a field we need; the feed logs and skips it."""


class VenueRejected(RuntimeError):
    """The venue answered with an error (e.g. a refused subscription); the feed reconnects with back-off."""


class VenueReconnectRequested(RuntimeError):
    """The venue asked us to reconnect (Bitstamp `bts:request_reconnect`, Binance `serverShutdown`)."""


# --- exact prices --------------------------------------------------------------------------------

_USD_RE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?")
_TICK = Decimal(1) / ONE_DOLLAR
_MAX_USD_DECIMALS = 8
_FINEST = Decimal(1).scaleb(-_MAX_USD_DECIMALS)
_MAX_USD = 10**12  # keeps every value inside Decimal's default 28-digit precision


def usd_ticks(value: str | Decimal | int) -> int:
    """Convert a positive USD price ("95012.34", Decimal, int) to $0.0001 ticks, rounding half-even.

    Venues quote BTC with 0 (Bitstamp) to 8 (Binance) decimals; anything finer than $0.0001 is rounded
    explicitly to the nearest tick. Floats are refused: parse JSON with `parse_float=Decimal`.
    """
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise MoneyError(f"USD price must be a decimal string, Decimal or int, got {value!r} ({type(value).__name__})")
    if isinstance(value, str):
        if not _USD_RE.fullmatch(value):
            raise MoneyError(f"malformed USD price {value!r}: expected a plain decimal like '95012.34'")
        d = Decimal(value)
    else:
        d = Decimal(value)
    if not d.is_finite() or not 0 < d < _MAX_USD:
        raise MoneyError(f"USD price {value!r} must be a finite number above zero and below {_MAX_USD:,}")
    if d != d.quantize(_FINEST):
        raise MoneyError(f"USD price {value!r} has more than {_MAX_USD_DECIMALS} significant decimals")
    ticks = int((d / _TICK).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if ticks == 0:  # "0.00001" rounds to nothing: a positive price it is not
        raise MoneyError(f"USD price {value!r} is below half a tick ($0.00005)")
    return ticks


def _qty(value: object, what: str) -> Decimal:
    """A non-negative base-currency quantity, exactly."""
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise VenueMessageError(f"{what} must be a decimal string or number, got {value!r}")
    if isinstance(value, str) and not _USD_RE.fullmatch(value):
        raise VenueMessageError(f"malformed {what} {value!r}")
    d = Decimal(value)
    if not d.is_finite() or d < 0:
        raise VenueMessageError(f"{what} {value!r} must be a finite number >= 0")
    return d


def _price(value: object, what: str) -> int:
    try:
        return usd_ticks(value)  # type: ignore[arg-type]
    except MoneyError as e:
        raise VenueMessageError(f"{what}: {e}") from e


def _opt_price(value: object, what: str) -> int | None:
    return None if value is None or value == "" else _price(value, what)


def _rfc3339(value: object, what: str = "time") -> datetime:
    if not isinstance(value, str):
        raise VenueMessageError(f"{what} must be an RFC 3339 string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as e:
        raise VenueMessageError(f"{what} {value!r} is not an RFC 3339 time") from e
    if dt.tzinfo is None:
        raise VenueMessageError(f"{what} {value!r} has no UTC offset")
    return dt.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_epoch(value: object, unit_per_s: int, what: str) -> datetime:
    if isinstance(value, bool):
        raise VenueMessageError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise VenueMessageError(f"{what} must be an integer timestamp, got {value!r}")
    return _EPOCH + timedelta(microseconds=value * 1_000_000 // unit_per_s)


def _int_id(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value) == "":
        raise VenueMessageError(f"{what} must be an integer id, got {value!r}")
    return str(value)


def _load(raw: str | bytes) -> dict[str, Any]:
    # Decimal for JSON numbers: Kraken and Bitstamp send prices as numbers, and a float would lose cents.
    try:
        msg = json.loads(raw, parse_float=Decimal)
    except (ValueError, TypeError, RecursionError) as e:  # RecursionError: nested deeper than json can read
        raise VenueMessageError(f"not JSON: {e}") from e
    if not isinstance(msg, dict):
        raise VenueMessageError(f"expected a JSON object, got {type(msg).__name__}")
    return msg


def _str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise VenueMessageError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


# --- parsing -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VenueTick:
    """One normalised observation from a venue, before it becomes a `SpotTick` event."""

    venue: str
    symbol: str  # venue-native: BTC-USD, BTC/USD, btcusd, BTCUSDT
    kind: TickKind
    price: int  # $0.0001 ticks: the trade price, the last price (Kraken ticker) or the mid (Binance bookTicker)
    size: Decimal | None = None
    bid: int | None = None
    ask: int | None = None
    ts_event: datetime | None = None  # venue time when given
    trade_id: str | None = None  # the venue's id when it has one; makes the event id deterministic


def _guard(parse: Callable[[str | bytes], list[VenueTick]]) -> Callable[[str | bytes], list[VenueTick]]:
    """Turn stray KeyError/TypeError/ValueError from deep inside a parser into VenueMessageError."""

    @functools.wraps(parse)
    def wrapped(raw: str | bytes) -> list[VenueTick]:
        try:
            return parse(raw)
        except (VenueMessageError, VenueRejected, VenueReconnectRequested):
            raise
        # OverflowError: a time beyond what datetime holds (year 0 or 10000 after the offset, 10**30 µs).
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError, OverflowError) as e:
            raise VenueMessageError(f"{type(e).__name__}: {e}") from e

    return wrapped


@_guard
def parse_coinbase(raw: str | bytes) -> list[VenueTick]:
    """Coinbase Exchange frame (C1) → ticks: `ticker` gives one trade with the top of book."""
    msg = _load(raw)
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise VenueMessageError(f"Coinbase frame without a type: {str(raw)[:120]}")
    if kind == "ticker":
        # The ticker channel fires on every match, so a ticker is a trade (price, last_size, trade_id)
        # plus best bid/ask; the first one after subscribing repeats the latest trade (same trade_id).
        trade_id = msg.get("trade_id")
        return [VenueTick(
            venue="coinbase", symbol=_str(msg, "product_id"), kind="trade" if trade_id is not None else "ticker",
            price=_price(msg.get("price"), "price"),
            size=None if msg.get("last_size") is None else _qty(msg["last_size"], "last_size"),
            bid=_opt_price(msg.get("best_bid"), "best_bid"), ask=_opt_price(msg.get("best_ask"), "best_ask"),
            ts_event=None if msg.get("time") is None else _rfc3339(msg["time"]),
            trade_id=None if trade_id is None else _int_id(trade_id, "trade_id"),
        )]
    if kind == "error":
        raise VenueRejected(f"Coinbase error: {msg.get('message')}: {msg.get('reason', '')}")
    # heartbeat, subscriptions and any other type: no ticks. Coinbase says unknown types must be ignored (C1).
    return []


@_guard
def parse_kraken(raw: str | bytes) -> list[VenueTick]:
    """Kraken WS v2 frame (C2) → ticks: `ticker` snapshot/update rows, live `trade` rows."""
    msg = _load(raw)
    method = msg.get("method")
    if method is not None:
        if msg.get("success") is False:
            raise VenueRejected(f"Kraken refused {method}: {msg.get('error')}")
        return []  # subscribe/unsubscribe acks, pong
    channel = msg.get("channel")
    if not isinstance(channel, str):
        if "error" in msg:
            raise VenueRejected(f"Kraken error: {msg['error']}")
        raise VenueMessageError(f"Kraken frame with neither method nor channel: {str(raw)[:120]}")
    if channel not in ("ticker", "trade"):
        return []  # heartbeat, status, channels we did not ask for
    typ = msg.get("type")
    if typ not in ("snapshot", "update"):
        raise VenueMessageError(f"Kraken {channel} frame with type {typ!r}")
    data = msg.get("data")
    if not isinstance(data, list):
        raise VenueMessageError(f"Kraken {channel} frame without a data list")
    out: list[VenueTick] = []
    if channel == "ticker":
        for row in data:
            ts = row.get("timestamp")
            out.append(VenueTick(
                venue="kraken", symbol=_str(row, "symbol"), kind="ticker", price=_price(row.get("last"), "last"),
                bid=_opt_price(row.get("bid"), "bid"), ask=_opt_price(row.get("ask"), "ask"),
                ts_event=None if ts is None else _rfc3339(ts, "timestamp"),
            ))
    elif typ == "update":  # a trade snapshot is recent history, not live (C2): skip it
        for row in data:
            out.append(VenueTick(
                venue="kraken", symbol=_str(row, "symbol"), kind="trade", price=_price(row.get("price"), "price"),
                size=_qty(row.get("qty"), "qty"), ts_event=_rfc3339(row.get("timestamp"), "timestamp"),
                trade_id=_int_id(row.get("trade_id"), "trade_id"),
            ))
    return out


_BITSTAMP_TRADES = "live_trades_"


@_guard
def parse_bitstamp(raw: str | bytes) -> list[VenueTick]:
    """Bitstamp frame (C4) → ticks: one per `trade` event on `live_trades_<pair>`."""
    msg = _load(raw)
    event = msg.get("event")
    if not isinstance(event, str):
        raise VenueMessageError(f"Bitstamp frame without an event: {str(raw)[:120]}")
    if event == "trade":
        channel = _str(msg, "channel")
        if not channel.startswith(_BITSTAMP_TRADES):
            return []
        d = msg["data"]
        if not isinstance(d, dict):
            raise VenueMessageError("Bitstamp trade without a data object")
        # The *_str fields carry the exact decimal; the bare numbers are a convenience copy.
        price = d.get("price_str", d.get("price"))
        amount = d.get("amount_str", d.get("amount"))
        if d.get("microtimestamp") is not None:
            ts = _from_epoch(d["microtimestamp"], 1_000_000, "microtimestamp")
        else:
            ts = _from_epoch(d.get("timestamp"), 1, "timestamp")
        return [VenueTick(venue="bitstamp", symbol=channel[len(_BITSTAMP_TRADES):], kind="trade",
                          price=_price(price, "price"), size=_qty(amount, "amount"), ts_event=ts,
                          trade_id=_int_id(d.get("id"), "id"))]
    if event == "bts:request_reconnect":
        raise VenueReconnectRequested("Bitstamp asked for a reconnect (bts:request_reconnect)")
    if event == "bts:error":
        raise VenueRejected(f"Bitstamp error: {msg.get('data')}")
    return []  # bts:subscription_succeeded, bts:heartbeat replies, other channels


@_guard
def parse_binance(raw: str | bytes) -> list[VenueTick]:
    """Binance frame (C3), raw or combined-stream wrapped → ticks from `@trade` and `@bookTicker`."""
    msg = _load(raw)
    if "stream" in msg and isinstance(msg.get("data"), dict):
        msg = msg["data"]  # combined stream wrapper {stream, data}
    if "error" in msg:
        raise VenueRejected(f"Binance error: {msg['error']}")
    if "result" in msg and "id" in msg:
        return []  # answer to SUBSCRIBE / LIST_SUBSCRIPTIONS
    event = msg.get("e")
    if event == "trade":
        return [VenueTick(venue="binance", symbol=_str(msg, "s"), kind="trade", price=_price(msg.get("p"), "p"),
                          size=_qty(msg.get("q"), "q"), ts_event=_from_epoch(msg.get("T"), 1000, "T"),
                          trade_id=_int_id(msg.get("t"), "t"))]
    if event == "serverShutdown":
        raise VenueReconnectRequested("Binance announced a server shutdown")
    if event is not None:
        return []
    if {"u", "s", "b", "a"} <= msg.keys():
        # bookTicker has no trade price and no event time: price is the mid, floored to a tick.
        bid, ask = _price(msg["b"], "b"), _price(msg["a"], "a")
        return [VenueTick(venue="binance", symbol=_str(msg, "s"), kind="ticker", price=(bid + ask) // 2,
                          bid=bid, ask=ask)]
    raise VenueMessageError(f"unrecognised Binance frame: {str(raw)[:120]}")


# --- venues --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Venue:
    """How to talk to one venue: where, what to send on connect, how to read frames and keep alive."""

    name: str
    url: str
    symbol: str
    parse: Callable[[str | bytes], list[VenueTick]]
    subscribe: tuple[str, ...]  # sent, in order, after every (re)connect (C5)
    keepalive: Callable[[int], str] | None = None  # app-level ping built from a counter; None = not needed
    keepalive_interval_s: float = 10.0
    stale_after_s: float = 5.0  # no frame at all (heartbeats included) for this long = dead connection (C5)
    max_age_s: float = 5.0  # Freshness budget: ticks older than this make the venue stale
    max_connection_age_s: float | None = None  # reconnect pre-emptively (Binance drops connections at 24 h)


def coinbase(url: str = COINBASE_URL, product: str = "BTC-USD") -> Venue:
    """Coinbase Exchange `ticker` + `heartbeat` for one product (C1)."""
    sub = {"type": "subscribe", "product_ids": [product], "channels": ["ticker", "heartbeat"]}
    # The server closes a socket with no subscribe within 5 s; we send it right after the handshake.
    # Heartbeats arrive once a second, so 5 s of silence means a dead connection.
    return Venue(name="coinbase", url=url, symbol=product, parse=parse_coinbase, subscribe=(json.dumps(sub),),
                 stale_after_s=5.0, max_age_s=5.0)


def kraken(url: str = KRAKEN_URL, symbol: str = "BTC/USD", *, trades: bool = False) -> Venue:
    """Kraken WS v2 `ticker` for one symbol (C2), optionally the `trade` channel too."""
    # event_trigger "bbo": an update on every best bid/offer change, not only on trades, so the
    # venue's mid stays current between trades (the BRTI is built from books, section D).
    msgs = [{"method": "subscribe", "params": {"channel": "ticker", "symbol": [symbol], "event_trigger": "bbo",
                                               "snapshot": True}, "req_id": 1}]
    if trades:
        msgs.append({"method": "subscribe", "params": {"channel": "trade", "symbol": [symbol], "snapshot": False},
                     "req_id": 2})
    # Kraken sends {"channel":"heartbeat"} about once a second when idle; the ping is an extra round trip.
    return Venue(name="kraken", url=url, symbol=symbol, parse=parse_kraken,
                 subscribe=tuple(json.dumps(m) for m in msgs),
                 keepalive=lambda n: json.dumps({"method": "ping", "req_id": 1000 + n}),
                 keepalive_interval_s=10.0, stale_after_s=5.0, max_age_s=5.0)


def bitstamp(url: str = BITSTAMP_URL, pair: str = "btcusd") -> Venue:
    """Bitstamp `live_trades_<pair>` (C4)."""
    sub = {"event": "bts:subscribe", "data": {"channel": f"{_BITSTAMP_TRADES}{pair}"}}
    # Bitstamp sends no heartbeats of its own and trades can be seconds apart, so we send a client
    # `bts:heartbeat` every 3 s (3P clients send one every ~10 s) and read its reply as a sign of life.
    # That reply is 3P-sourced, UNCONFIRMED live: without it a 10 s lull in trades costs one reconnect.
    # Trades are sparser than quotes, hence the longer freshness budget.
    return Venue(name="bitstamp", url=url, symbol=pair, parse=parse_bitstamp, subscribe=(json.dumps(sub),),
                 keepalive=lambda n: json.dumps({"event": "bts:heartbeat"}), keepalive_interval_s=3.0,
                 stale_after_s=10.0, max_age_s=30.0)


def binance(url: str = BINANCE_URL, symbol: str = "btcusdt") -> Venue:
    """Binance `<sym>@trade` + `<sym>@bookTicker` (C3); USDT-quoted, not a BRTI constituent, off by default."""
    sub = {"method": "SUBSCRIBE", "params": [f"{symbol}@trade", f"{symbol}@bookTicker"], "id": 1}
    # The server pings every 20 s and websockets answers with a pong on its own; connections live at
    # most 24 h, so roll them a little earlier. Binance.com refuses US IPs (HTTP 451).
    return Venue(name="binance", url=url, symbol=symbol.upper(), parse=parse_binance, subscribe=(json.dumps(sub),),
                 stale_after_s=5.0, max_age_s=5.0, max_connection_age_s=23.5 * 3600)


def default_venues(*, coinbase_url: str = COINBASE_URL, kraken_url: str = KRAKEN_URL,
                   bitstamp_url: str = BITSTAMP_URL, binance_url: str | None = None) -> list[Venue]:
    """The USD BRTI constituents we follow; Binance only when a URL is given."""
    out = [coinbase(coinbase_url), kraken(kraken_url), bitstamp(bitstamp_url)]
    if binance_url is not None:
        out.append(binance(binance_url))
    return out


def freshness_name(venue: str) -> str:
    """The `Freshness` input name of one venue's feed."""
    return f"spot_{subjects.token(venue)}"


def event_id(tick: VenueTick) -> str:
    """Deterministic for trades with a venue id (a re-sent trade dedupes on JetStream), random otherwise."""
    if tick.trade_id is None:
        return new_id()
    return f"spot:{tick.venue}:{subjects.token(tick.symbol.replace('/', '-'))}:{tick.trade_id}"


# --- the connection loop -------------------------------------------------------------------------

class _Silent(TimeoutError):
    """No frame within the venue's `stale_after_s`."""


class VenueFeed:
    """One venue's self-healing WebSocket session; run it with `await feed.run(stop)`."""

    def __init__(self, venue: Venue, emit: Emit, *, mode: Mode, freshness: Freshness | None = None,
                 clock: Callable[[], datetime] = utcnow, backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0,
                 open_timeout_s: float = 10.0, ping_interval_s: float | None = 20.0,
                 rng: random.Random | None = None) -> None:
        self.venue = venue
        self.emit = emit
        self.mode = mode
        self.freshness = freshness
        self.clock = clock
        # Jittered (libs.common.backoff) so several replicas, and several venues after one network blip,
        # do not reconnect in step.
        self.backoff = Backoff(backoff_base_s, backoff_cap_s, rng=rng)
        self.open_timeout_s = open_timeout_s
        self.ping_interval_s = ping_interval_s
        self.subject = subjects.md_spot_btc(venue.name)
        self.freshness_key = freshness_name(venue.name)
        if freshness is not None:
            freshness.expect(self.freshness_key, venue.max_age_s)
        self.connected = asyncio.Event()
        self._conn: ClientConnection | None = None
        self._healthy = False
        # Counters for health detail and tests.
        self.connects = 0
        self.frames = 0
        self.ticks = 0
        self.malformed = 0
        self.rejections = 0
        self.emit_errors = 0
        self.last_tick: SpotTick | None = None
        self.last_malformed: str | None = None  # the latest parse error, for health detail
        self.last_frame_at: datetime | None = None  # when the last frame arrived (our clock), for `ws_status`

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe and publish until `stop` is set; reconnects with back-off on any failure."""
        while not stop.is_set():
            self._healthy = False
            try:
                await self._session(stop)
            except VenueReconnectRequested as e:
                log.info("spot_venue_reconnect_requested", venue=self.venue.name, reason=str(e))
            except VenueRejected as e:
                self.rejections += 1
                log.warning("spot_venue_rejected", venue=self.venue.name, error=str(e))
            except (OSError, TimeoutError, WebSocketException) as e:
                if not stop.is_set():
                    log.warning("spot_venue_disconnected", venue=self.venue.name, error=f"{type(e).__name__}: {e}")
            finally:
                self.connected.clear()
                self._conn = None
            if stop.is_set():
                break
            # A session that delivered ticks was healthy: start the back-off over.
            self.backoff.reset_if_healthy(delivered=self._healthy)
            if await self.backoff.sleep(stop):
                break

    async def close(self) -> None:
        """Close the current connection (run() reconnects unless stopped)."""
        if self._conn is not None:
            await self._conn.close()

    async def _session(self, stop: asyncio.Event) -> None:
        v = self.venue
        conn = await websockets.connect(v.url, open_timeout=self.open_timeout_s, ping_interval=self.ping_interval_s,
                                        ping_timeout=self.ping_interval_s, close_timeout=2, max_size=2**20)
        self._conn = conn
        self.connects += 1
        closer = asyncio.create_task(self._close_on(stop, conn))
        loop = asyncio.get_running_loop()
        try:
            for m in v.subscribe:
                await conn.send(m)
            self.connected.set()
            log.info("spot_venue_connected", venue=v.name, url=v.url, connects=self.connects)
            started = last_frame = loop.time()
            pings = 0
            next_ping = started + v.keepalive_interval_s if v.keepalive is not None else float("inf")
            roll_at = started + v.max_connection_age_s if v.max_connection_age_s else float("inf")
            while True:
                now = loop.time()
                if v.keepalive is not None and now >= next_ping:
                    pings += 1
                    await conn.send(v.keepalive(pings))
                    next_ping = now + v.keepalive_interval_s
                if now >= roll_at:
                    log.info("spot_venue_roll", venue=v.name, age_s=round(now - started))
                    return
                if now - last_frame >= v.stale_after_s:
                    raise _Silent(f"no frame from {v.name} for {v.stale_after_s:g} s")
                wait = min(last_frame + v.stale_after_s, next_ping, roll_at) - now
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        raw = await conn.recv()  # cancelling recv() is safe in websockets' asyncio API
                except TimeoutError:
                    continue
                last_frame = loop.time()
                await self._handle(raw)
        finally:
            closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closer
            await conn.close()

    @staticmethod
    async def _close_on(stop: asyncio.Event, conn: ClientConnection) -> None:
        await stop.wait()
        await conn.close()

    def status(self, now: datetime) -> dict[str, Any]:
        """The connection as plain data (`cmd.feeds.ws_status`): state, reconnects, last message age, counts."""
        state = "connected" if self.connected.is_set() else "reconnecting" if self.connects else "connecting"
        age = None if self.last_frame_at is None else round(max((now - self.last_frame_at).total_seconds(), 0.0), 3)
        return {"name": self.venue.name, "kind": "spot", "url": self.venue.url, "state": state,
                "connects": self.connects, "reconnects": max(self.connects - 1, 0),
                "failures_in_a_row": self.backoff.failures, "messages": self.frames, "ticks": self.ticks,
                "malformed": self.malformed, "last_message_age_s": age}

    async def _handle(self, raw: str | bytes) -> None:
        self.frames += 1
        self.last_frame_at = self.clock()
        now = self.clock()
        try:
            events = [SpotTick(id=event_id(t), ts_event=t.ts_event or now, ts_init=now, mode=self.mode,
                               venue=t.venue, symbol=t.symbol, kind=t.kind, price=t.price, size=t.size,
                               bid=t.bid, ask=t.ask) for t in self.venue.parse(raw)]
        # ValueError: a tick that cannot become an event (a symbol no subject token can hold, an id too long).
        except (VenueMessageError, ValueError) as e:
            self.malformed += 1
            self.last_malformed = str(e)
            log.warning("spot_malformed_message", venue=self.venue.name, error=str(e), frame=str(raw)[:200])
            return
        for event in events:
            self.ticks += 1
            self.last_tick = event
            self._healthy = True
            if self.freshness is not None:
                self.freshness.mark(self.freshness_key)
            try:
                await self.emit(self.subject, event)
            except Exception as e:  # the bus is down or a sink failed: keep reading, the next tick may get through
                self.emit_errors += 1
                log.warning("spot_emit_failed", venue=self.venue.name, error=f"{type(e).__name__}: {e}")


# --- 1-second bars -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpotBar:
    """OHLC of one venue's price over one interval, in $0.0001 ticks."""

    venue: str
    symbol: str
    ts: datetime  # bar start, UTC
    interval_s: int
    open: int
    high: int
    low: int
    close: int
    volume: Decimal | None  # traded base currency, trade ticks only; None when the bar saw no trade sizes
    vwap: int | None  # volume-weighted trade price, half-even to a tick
    ticks: int  # every tick in the bar
    trades: int  # trade ticks among them


@dataclass
class _Acc:
    start: datetime
    open: int
    high: int
    low: int
    close: int
    volume: Decimal = field(default_factory=Decimal)
    notional: Decimal = field(default_factory=Decimal)
    sized: bool = False
    ticks: int = 0
    trades: int = 0

    def add(self, tick: SpotTick) -> None:
        self.high = max(self.high, tick.price)
        self.low = min(self.low, tick.price)
        self.close = tick.price
        self.ticks += 1
        if tick.kind == "trade":
            self.trades += 1
            if tick.size is not None:
                self.sized = True
                self.volume += tick.size
                self.notional += tick.size * tick.price

    def bar(self, venue: str, symbol: str, interval_s: int) -> SpotBar:
        vwap = None
        if self.sized and self.volume > 0:
            vwap = int((self.notional / self.volume).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        return SpotBar(venue=venue, symbol=symbol, ts=self.start, interval_s=interval_s, open=self.open,
                       high=self.high, low=self.low, close=self.close, volume=self.volume if self.sized else None,
                       vwap=vwap, ticks=self.ticks, trades=self.trades)


BarSink = Callable[[Sequence[SpotBar]], Awaitable[None]]


class BarBuilder:
    """Builds OHLC bars per (venue, symbol) from ticks' venue time; closed bars go to `sink`."""

    def __init__(self, sink: BarSink, *, interval_s: int = 1) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s}")
        self.sink = sink
        self.interval_s = interval_s
        self._width = timedelta(seconds=interval_s)
        self._open: dict[tuple[str, str], _Acc] = {}
        self._closed_until: dict[tuple[str, str], datetime] = {}
        self.late = 0  # ticks for a bar that was already closed: dropped

    def bar_start(self, ts: datetime) -> datetime:
        """Start of the bar containing `ts` (integer arithmetic, no float rounding at second edges)."""
        return _EPOCH + ((ts - _EPOCH) // self._width) * self._width

    async def add(self, tick: SpotTick) -> None:
        """Fold one tick in; a tick of a later bar closes the open one first."""
        key = (tick.venue, tick.symbol)
        start = self.bar_start(tick.ts_event)
        acc = self._open.get(key)
        if acc is not None and start > acc.start:
            del self._open[key]
            self._closed_until[key] = acc.start + self._width
            await self.sink([acc.bar(*key, self.interval_s)])
            acc = None
        if acc is None:
            if start < self._closed_until.get(key, _EPOCH):
                self.late += 1
                log.debug("spot_bar_late_tick", venue=tick.venue, ts=tick.ts_event.isoformat())
                return
            acc = self._open[key] = _Acc(start=start, open=tick.price, high=tick.price, low=tick.price,
                                         close=tick.price)
        elif start < acc.start:
            self.late += 1
            log.debug("spot_bar_late_tick", venue=tick.venue, ts=tick.ts_event.isoformat())
            return
        acc.add(tick)

    async def flush(self, now: datetime | None = None) -> int:
        """Close every bar that ended by `now` (every open bar when None); return how many were closed."""
        done = [k for k, a in self._open.items() if now is None or a.start + self._width <= now]
        bars = []
        for key in done:
            acc = self._open.pop(key)
            self._closed_until[key] = acc.start + self._width
            bars.append(acc.bar(*key, self.interval_s))
        if bars:
            await self.sink(bars)
        return len(bars)

    async def run(self, stop: asyncio.Event, *, clock: Callable[[], datetime] = utcnow,
                  grace_s: float = 2.0) -> None:
        """Flush bars of quiet venues once per interval, `grace_s` after they end; flush all on stop."""
        # The grace lets a venue whose clock runs behind ours still land its ticks in the right bar.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
            if not stop.is_set():
                try:
                    await self.flush(clock() - timedelta(seconds=grace_s))
                except Exception as e:  # the sink failed (database down): those bars are lost, keep going
                    log.warning("spot_bar_sink_failed", error=f"{type(e).__name__}: {e}")
        await self.flush()
