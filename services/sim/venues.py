"""Fake crypto venues: Coinbase Exchange, Kraken WS v2, Bitstamp and Binance public feeds on real sockets.

Each fake speaks its venue's public WebSocket protocol as data_sources.md section C describes it
(subscribe messages, acks, data frames with the real field names and number formats, heartbeats,
pings), so the real clients in `services.feeds.spot` reach them by URL alone. Prices follow the
scenario's BTC path, `price_source(clock())`, with a little per-venue noise and a bid/ask spread,
rounded to the venue's price increment. One quote is drawn per `interval_s` and broadcast to every
subscribed connection.

Fault switches, per venue: `pause()` (send nothing at all — a dead venue that keeps its sockets
open), `resume()`, `cut()` (abort every connection without a close frame), `send_garbage()` (one
malformed frame to each subscriber). Bitstamp also has `request_reconnect()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from libs.common.events import utcnow
from libs.common.logs import get_logger

log = get_logger(__name__)

PriceSource = Callable[[datetime], float]
Clock = Callable[[], datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`, as Coinbase and Kraken write it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Quote:
    """One step of a venue: top of book and the trade that printed, in dollars."""

    ts: datetime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    side: Literal["buy", "sell"]  # taker side
    price: Decimal  # trade price: the ask for a buy, the bid for a sell
    size: Decimal
    trade_id: int


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    subs: set[str] = field(default_factory=set)  # venue-specific subscription keys
    combined: bool = False  # Binance combined-stream wrapper
    last_sent: float = 0.0  # loop time of the last frame we sent
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # per-connection timers, cancelled on close


@dataclass
class _Stats:
    """Running 24 h-style statistics the ticker messages carry."""

    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)

    def add(self, q: Quote) -> None:
        self.open = q.price if self.open is None else self.open
        self.high = q.price if self.high is None else max(self.high, q.price)
        self.low = q.price if self.low is None else min(self.low, q.price)
        self.volume += q.size
        self.notional += q.size * q.price

    @property
    def vwap(self) -> Decimal:
        return self.notional / self.volume if self.volume else Decimal(0)


class FakeVenue:
    """Base of the fakes: the server, the quote generator, the broadcast and heartbeat loops, the faults."""

    name: ClassVar[str] = ""
    increment: ClassVar[Decimal] = Decimal("0.01")  # price increment in dollars
    default_spread_bps: ClassVar[float] = 0.5
    default_noise_bps: ClassVar[float] = 1.0
    path: ClassVar[str] = ""  # appended to ws://host:port in `ws_url`

    def __init__(self, price_source: PriceSource, *, clock: Clock = utcnow, interval_s: float = 0.1,
                 heartbeat_interval_s: float = 1.0, spread_bps: float | None = None, noise_bps: float | None = None,
                 basis_bps: float = 0.0, seed: int | str = 0, host: str = "127.0.0.1", port: int = 0,
                 ping_interval_s: float | None = 20.0) -> None:
        self.price_source = price_source
        self.clock = clock
        self.interval_s = interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.spread_bps = self.default_spread_bps if spread_bps is None else spread_bps
        self.noise_bps = self.default_noise_bps if noise_bps is None else noise_bps
        self.basis_bps = basis_bps
        self.host = host
        self.port = port
        self.ping_interval_s = ping_interval_s
        self._rng = random.Random(f"{seed}:{self.name}")
        self._trade_ids = itertools.count(1)
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._paused = False
        self._garbage: list[str | None] = []
        self.last_quote: Quote | None = None
        self.stats = _Stats()
        self.received: deque[Any] = deque(maxlen=1000)  # decoded client messages, newest last
        self.connections_total = 0
        self.frames_sent = 0
        self.garbage_sent = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeVenue:
        """Listen (port 0 = a free port) and start the emit and heartbeat loops."""
        self._server = await serve(self._handler, self.host, self.port, ping_interval=self.ping_interval_s,
                                   ping_timeout=self.ping_interval_s)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._emit_loop(), name=f"fake-{self.name}-emit"),
                       asyncio.create_task(self._heartbeat_loop(), name=f"fake-{self.name}-heartbeat")]
        log.info("fake_venue_started", venue=self.name, url=self.ws_url)
        return self

    async def stop(self) -> None:
        """Stop the loops and close the server and every connection."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def ws_url(self) -> str:
        """The URL a client connects to."""
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def subscribers(self) -> int:
        """Connections with at least one subscription."""
        return sum(1 for c in self._clients if c.subs)

    # -- faults -----------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True while the venue sends nothing."""
        return self._paused

    def pause(self) -> None:
        """Send nothing (no data, heartbeats or replies) while keeping connections open: a dead venue."""
        self._paused = True

    def resume(self) -> None:
        """Undo `pause()`: subscriptions made meanwhile start receiving data."""
        self._paused = False

    def cut(self) -> int:
        """Abort every connection without a close frame, like a network drop; return how many."""
        n = 0
        for c in list(self._clients):
            c.conn.transport.abort()
            n += 1
        return n

    def send_garbage(self, payload: str | None = None) -> None:
        """Send one malformed frame to every subscriber with the next quote (default: a truncated data frame)."""
        self._garbage.append(payload)

    def band(self, at: datetime | None = None) -> tuple[Decimal, Decimal]:
        """Lowest and highest price (bid, ask or trade) this venue can quote at `at` (default now)."""
        p = Decimal(repr(self.price_source(at or self.clock()))) * (1 + Decimal(repr(self.basis_bps)) / 10_000)
        width = (Decimal(repr(self.noise_bps)) + Decimal(repr(self.spread_bps)) / 2) / 10_000
        return p * (1 - width) - self.increment, p * (1 + width) + self.increment

    # -- quotes -----------------------------------------------------------------------------------

    def next_quote(self) -> Quote:
        """Draw the next top of book and trade around the price path."""
        now = self.clock()
        p = self.price_source(now) * (1 + self.basis_bps / 10_000)
        mid = p * (1 + self._rng.uniform(-1.0, 1.0) * self.noise_bps / 10_000)
        half = mid * self.spread_bps / 20_000
        bid = Decimal(repr(mid - half)).quantize(self.increment, rounding=ROUND_FLOOR)
        ask = Decimal(repr(mid + half)).quantize(self.increment, rounding=ROUND_CEILING)
        if ask <= bid:
            ask = bid + self.increment
        side: Literal["buy", "sell"] = self._rng.choice(("buy", "sell"))
        q = Quote(ts=now, bid=bid, ask=ask, bid_size=self._size(), ask_size=self._size(), side=side,
                  price=ask if side == "buy" else bid, size=self._size(), trade_id=next(self._trade_ids))
        self.last_quote = q
        self.stats.add(q)
        return q

    def _size(self) -> Decimal:
        return Decimal(self._rng.randint(1, 50_000_000)) / 100_000_000  # up to 0.5 BTC, 8 decimals

    # -- per-venue protocol (overridden) ----------------------------------------------------------

    async def on_open(self, client: _Client) -> None:
        """Called when a connection opens."""

    async def on_message(self, client: _Client, msg: Any) -> None:
        """Answer one decoded client message."""

    def render(self, q: Quote) -> list[tuple[str, dict[str, Any]]]:
        """Data frames for a quote, each with the subscription key that receives it."""
        return []

    def heartbeats(self, client: _Client, idle_s: float) -> list[dict[str, Any]]:
        """Heartbeat frames due for a client that has been idle `idle_s` seconds."""
        return []

    def frame(self, client: _Client, key: str, payload: dict[str, Any]) -> str:
        """Wire text of a data frame for one client."""
        return json.dumps(payload)

    def on_bad_json(self, raw: str | bytes) -> dict[str, Any] | None:
        """Reply to a client frame that is not JSON (None = ignore it)."""
        return None

    # -- plumbing ---------------------------------------------------------------------------------

    async def send(self, client: _Client, payload: dict[str, Any] | str) -> None:
        """Send one frame unless paused; a closed connection is ignored."""
        if self._paused:
            return
        text = payload if isinstance(payload, str) else json.dumps(payload)
        with contextlib.suppress(ConnectionClosed):
            await client.conn.send(text)
            client.last_sent = asyncio.get_running_loop().time()
            self.frames_sent += 1

    async def _handler(self, conn: ServerConnection) -> None:
        client = _Client(conn, last_sent=asyncio.get_running_loop().time())
        self._clients.add(client)
        self.connections_total += 1
        try:
            await self.on_open(client)
            async for raw in conn:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    reply = self.on_bad_json(raw)
                    if reply is not None:
                        await self.send(client, reply)
                    continue
                self.received.append(msg)
                await self.on_message(client, msg)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            for t in client.tasks:
                t.cancel()

    async def _emit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._paused:
                continue
            frames = self.render(self.next_quote())
            for client in list(self._clients):
                if not client.subs:
                    continue
                if self._garbage:
                    await self.send(client, self._garbage_text(self._garbage[0], frames, client))
                for key, payload in frames:
                    if key in client.subs:
                        await self.send(client, self.frame(client, key, payload))
            if self._garbage and any(c.subs for c in self._clients):
                self._garbage.pop(0)
                self.garbage_sent += 1

    def _garbage_text(self, payload: str | None, frames: Sequence[tuple[str, dict[str, Any]]],
                      client: _Client) -> str:
        if payload is not None:
            return payload
        if frames:
            text = self.frame(client, *frames[0])
            return text[: len(text) // 2]  # a frame cut in half: not JSON
        return "{not json"

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self._paused:
                continue
            now = loop.time()
            for client in list(self._clients):
                if client.subs:
                    for hb in self.heartbeats(client, now - client.last_sent):
                        await self.send(client, hb)


# --- Coinbase Exchange (C1) ----------------------------------------------------------------------

class FakeCoinbase(FakeVenue):
    """`wss://ws-feed.exchange.coinbase.com`: `ticker` and `heartbeat` channels for BTC-USD."""

    name = "coinbase"
    increment = Decimal("0.01")
    default_spread_bps = 0.2
    default_noise_bps = 1.0
    products: ClassVar[frozenset[str]] = frozenset({"BTC-USD"})
    public_channels: ClassVar[frozenset[str]] = frozenset({"ticker", "heartbeat"})
    auth_channels: ClassVar[frozenset[str]] = frozenset({"level2", "full", "level3", "user"})

    def __init__(self, price_source: PriceSource, *, subscribe_timeout_s: float = 5.0, **kw: Any) -> None:
        super().__init__(price_source, **kw)
        self.subscribe_timeout_s = subscribe_timeout_s
        self._sequence = itertools.count(1)

    async def on_open(self, client: _Client) -> None:
        """Coinbase closes a socket that sends no subscribe within 5 s."""

        async def deadline() -> None:
            await asyncio.sleep(self.subscribe_timeout_s)
            if not client.subs:
                await client.conn.close(1008, "subscribe timeout")

        client.tasks.append(asyncio.create_task(deadline(), name="fake-coinbase-subscribe-deadline"))

    def on_bad_json(self, raw: str | bytes) -> dict[str, Any]:
        """Coinbase answers unparseable input with an error message."""
        return {"type": "error", "message": "Failed to subscribe", "reason": "malformed JSON"}

    async def on_message(self, client: _Client, msg: Any) -> None:
        """Handle `subscribe` / `unsubscribe` (channels as names or `{name, product_ids}` objects)."""
        typ = msg.get("type") if isinstance(msg, dict) else None
        if typ not in ("subscribe", "unsubscribe"):
            await self.send(client, {"type": "error", "message": "Failed to subscribe",
                                     "reason": "Type has to be either subscribe or unsubscribe"})
            return
        products = msg.get("product_ids") or []
        wanted: set[str] = set()
        for ch in msg.get("channels") or []:
            name, prods = (ch, products) if isinstance(ch, str) else (ch.get("name"), ch.get("product_ids", products))
            if name in self.auth_channels:
                await self.send(client, {"type": "error", "message": "Failed to subscribe",
                                         "reason": f"{name} channel requires authentication"})
                return
            if name not in self.public_channels:
                await self.send(client, {"type": "error", "message": "Failed to subscribe",
                                         "reason": f"{name} is not a valid channel"})
                return
            for p in prods:
                if p not in self.products:
                    await self.send(client, {"type": "error", "message": "Failed to subscribe",
                                             "reason": f"{p} is not a valid product"})
                    return
                wanted.add(f"{name}:{p}")
        if not wanted:
            await self.send(client, {"type": "error", "message": "Failed to subscribe",
                                     "reason": "No channels provided"})
            return
        new = wanted - client.subs
        if typ == "subscribe":
            client.subs |= wanted
        else:
            client.subs -= wanted
        by_channel: dict[str, list[str]] = {}
        for key in sorted(client.subs):
            ch, p = key.split(":", 1)
            by_channel.setdefault(ch, []).append(p)
        await self.send(client, {"type": "subscriptions",
                                 "channels": [{"name": c, "product_ids": ps} for c, ps in by_channel.items()]})
        # A new ticker subscription gets the latest ticker at once.
        if typ == "subscribe" and self.last_quote is not None:
            for key in sorted(new):
                if key.startswith("ticker:"):
                    await self.send(client, self._ticker(self.last_quote, key.split(":", 1)[1]))

    def _ticker(self, q: Quote, product: str = "BTC-USD") -> dict[str, Any]:
        s = self.stats
        return {
            "type": "ticker", "sequence": next(self._sequence), "product_id": product, "price": str(q.price),
            "open_24h": str(s.open), "volume_24h": str(s.volume), "low_24h": str(s.low), "high_24h": str(s.high),
            "volume_30d": str(s.volume), "best_bid": str(q.bid), "best_bid_size": str(q.bid_size),
            "best_ask": str(q.ask), "best_ask_size": str(q.ask_size), "side": q.side, "time": _rfc3339(q.ts),
            "trade_id": q.trade_id, "last_size": str(q.size),
        }

    def render(self, q: Quote) -> list[tuple[str, dict[str, Any]]]:
        """One `ticker` per trade."""
        return [(f"ticker:{p}", self._ticker(q, p)) for p in sorted(self.products)]

    def heartbeats(self, client: _Client, idle_s: float) -> list[dict[str, Any]]:
        """One `heartbeat` per subscribed product every interval, busy or not."""
        last = self.last_quote.trade_id if self.last_quote else 0
        return [{"type": "heartbeat", "sequence": next(self._sequence), "last_trade_id": last,
                 "product_id": key.split(":", 1)[1], "time": _rfc3339(self.clock())}
                for key in sorted(client.subs) if key.startswith("heartbeat:")]


# --- Kraken WS v2 (C2) ---------------------------------------------------------------------------

class FakeKraken(FakeVenue):
    """`wss://ws.kraken.com/v2`: `ticker` and `trade` channels for BTC/USD, heartbeats, ping/pong."""

    name = "kraken"
    increment = Decimal("0.1")
    default_spread_bps = 0.5
    default_noise_bps = 1.5
    symbols: ClassVar[frozenset[str]] = frozenset({"BTC/USD"})
    channels: ClassVar[frozenset[str]] = frozenset({"ticker", "trade"})

    def __init__(self, price_source: PriceSource, **kw: Any) -> None:
        super().__init__(price_source, **kw)
        self._connection_ids = itertools.count(8_000_000_000_000_000_000)

    def _times(self) -> dict[str, str]:
        t = _rfc3339(self.clock())
        return {"time_in": t, "time_out": t}

    async def on_open(self, client: _Client) -> None:
        """Kraken greets every connection with a `status` frame."""
        await self.send(client, {"channel": "status", "type": "update", "data": [{
            "version": "2.0.10", "system": "online", "api_version": "v2",
            "connection_id": next(self._connection_ids)}]})

    def on_bad_json(self, raw: str | bytes) -> dict[str, Any]:
        """Kraken answers unparseable input with an error."""
        return {"error": "Malformed request", "success": False, **self._times()}

    async def on_message(self, client: _Client, msg: Any) -> None:
        """Handle `subscribe`, `unsubscribe` and `ping`."""
        method = msg.get("method") if isinstance(msg, dict) else None
        req = {"req_id": msg["req_id"]} if isinstance(msg, dict) and "req_id" in msg else {}
        if method == "ping":
            await self.send(client, {"method": "pong", **req, **self._times()})
            return
        if method not in ("subscribe", "unsubscribe"):
            await self.send(client, {"error": f"Method not found: {method}", "method": method, "success": False,
                                     **req, **self._times()})
            return
        params = msg.get("params") or {}
        channel = params.get("channel")
        if channel not in self.channels:
            await self.send(client, {"error": f"Channel {channel} not supported", "method": method,
                                     "success": False, **req, **self._times()})
            return
        snapshot = params.get("snapshot", True)
        for sym in params.get("symbol") or []:
            if sym not in self.symbols:
                await self.send(client, {"error": f"Currency pair not supported {sym}", "method": method,
                                         "success": False, "symbol": sym, **req, **self._times()})
                continue
            key = f"{channel}:{sym}"
            result: dict[str, Any] = {"channel": channel, "snapshot": snapshot, "symbol": sym}
            if channel == "ticker":
                result["event_trigger"] = params.get("event_trigger", "trades")
            if method == "subscribe":
                client.subs.add(key)
            else:
                client.subs.discard(key)
            await self.send(client, {"method": method, "result": result, "success": True, **req, **self._times()})
            if method == "subscribe" and snapshot and self.last_quote is not None:
                q = self.last_quote
                if channel == "ticker":
                    await self.send(client, {"channel": "ticker", "type": "snapshot", "data": [self._ticker(q, sym)]})
                else:
                    await self.send(client, {"channel": "trade", "type": "snapshot", "data": [self._trade(q, sym)]})

    def _ticker(self, q: Quote, sym: str) -> dict[str, Any]:
        # Kraken v2 sends numbers as JSON numbers; float(Decimal) prints the same shortest digits.
        s = self.stats
        change = q.price - (s.open or q.price)
        return {"symbol": sym, "bid": float(q.bid), "bid_qty": float(q.bid_size), "ask": float(q.ask),
                "ask_qty": float(q.ask_size), "last": float(q.price), "volume": float(s.volume),
                "vwap": float(round(s.vwap, 1)), "low": float(s.low or q.price), "high": float(s.high or q.price),
                "change": float(change), "change_pct": float(round(change / (s.open or q.price) * 100, 2)),
                "timestamp": _rfc3339(q.ts)}

    def _trade(self, q: Quote, sym: str) -> dict[str, Any]:
        return {"symbol": sym, "side": q.side, "price": float(q.price), "qty": float(q.size), "ord_type": "market",
                "trade_id": q.trade_id, "timestamp": _rfc3339(q.ts)}

    def render(self, q: Quote) -> list[tuple[str, dict[str, Any]]]:
        """A ticker update and a trade update per quote."""
        out: list[tuple[str, dict[str, Any]]] = []
        for sym in sorted(self.symbols):
            out.append((f"ticker:{sym}", {"channel": "ticker", "type": "update", "data": [self._ticker(q, sym)]}))
            out.append((f"trade:{sym}", {"channel": "trade", "type": "update", "data": [self._trade(q, sym)]}))
        return out

    def heartbeats(self, client: _Client, idle_s: float) -> list[dict[str, Any]]:
        """`{"channel":"heartbeat"}` about once a second when nothing else was sent."""
        return [{"channel": "heartbeat"}] if idle_s >= self.heartbeat_interval_s * 0.9 else []


# --- Bitstamp (C4) -------------------------------------------------------------------------------

class FakeBitstamp(FakeVenue):
    """`wss://ws.bitstamp.net`: `live_trades_btcusd`, client heartbeats, `bts:request_reconnect`."""

    name = "bitstamp"
    increment = Decimal("1")  # Bitstamp quotes BTC/USD in whole dollars
    default_spread_bps = 1.0
    default_noise_bps = 2.0
    channels: ClassVar[frozenset[str]] = frozenset({"live_trades_btcusd"})

    def __init__(self, price_source: PriceSource, **kw: Any) -> None:
        super().__init__(price_source, **kw)
        self._order_ids = itertools.count(1_700_000_000)

    async def on_message(self, client: _Client, msg: Any) -> None:
        """Handle `bts:subscribe`, `bts:unsubscribe` and `bts:heartbeat`."""
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "bts:heartbeat":
            await self.send(client, {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}})
            return
        if event in ("bts:subscribe", "bts:unsubscribe"):
            data = msg.get("data")
            channel = data.get("channel") if isinstance(data, dict) else None
            if channel not in self.channels:
                await self.send(client, {"event": "bts:error", "channel": channel or "",
                                         "data": {"code": None, "message": "Bad subscription string."}})
                return
            if event == "bts:subscribe":
                client.subs.add(channel)
                await self.send(client, {"event": "bts:subscription_succeeded", "channel": channel, "data": {}})
            else:
                client.subs.discard(channel)
                await self.send(client, {"event": "bts:unsubscription_succeeded", "channel": channel, "data": {}})
            return
        await self.send(client, {"event": "bts:error", "channel": "",
                                 "data": {"code": None, "message": "Incorrect JSON format."}})

    def render(self, q: Quote) -> list[tuple[str, dict[str, Any]]]:
        """One `trade` event per quote."""
        price = int(q.price) if self.increment == 1 else float(q.price)
        us = _epoch_us(q.ts)
        data = {"id": q.trade_id, "timestamp": str(us // 1_000_000), "amount": float(q.size),
                "amount_str": f"{q.size:.8f}", "price": price, "price_str": str(q.price), "type": 0 if q.side == "buy"
                else 1, "microtimestamp": str(us), "buy_order_id": next(self._order_ids),
                "sell_order_id": next(self._order_ids)}
        return [(ch, {"event": "trade", "channel": ch, "data": data}) for ch in sorted(self.channels)]

    async def request_reconnect(self) -> int:
        """Ask every client to reconnect (`bts:request_reconnect`), as Bitstamp does before maintenance."""
        clients = list(self._clients)
        for client in clients:
            await self.send(client, {"event": "bts:request_reconnect", "channel": "", "data": ""})
        return len(clients)


# --- Binance (C3) --------------------------------------------------------------------------------

class FakeBinance(FakeVenue):
    """`wss://stream.binance.com:9443`: `/ws[/<streams>]`, `/stream?streams=` and live SUBSCRIBE, btcusdt."""

    name = "binance"
    increment = Decimal("0.01")
    default_spread_bps = 0.2
    default_noise_bps = 1.0
    path = "/ws"
    symbol: ClassVar[str] = "btcusdt"

    def __init__(self, price_source: PriceSource, **kw: Any) -> None:
        super().__init__(price_source, **kw)
        self._update_ids = itertools.count(50_000_000_000)

    @property
    def streams(self) -> frozenset[str]:
        """Stream names this fake serves."""
        return frozenset({f"{self.symbol}@trade", f"{self.symbol}@bookTicker"})

    async def on_open(self, client: _Client) -> None:
        """Streams named in the URL are subscribed from the start (raw `/ws/a/b`, combined `/stream?streams=a/b`)."""
        url = urlsplit(client.conn.request.path if client.conn.request else "/ws")
        if url.path.startswith("/ws"):
            names = [s for s in url.path[len("/ws"):].split("/") if s]
        elif url.path == "/stream":
            client.combined = True
            names = [s for v in parse_qs(url.query).get("streams", []) for s in v.split("/") if s]
        else:
            await client.conn.close(1008, "unknown path")
            return
        client.subs |= {n for n in names if n in self.streams}

    async def on_message(self, client: _Client, msg: Any) -> None:
        """Handle SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS."""
        method = msg.get("method") if isinstance(msg, dict) else None
        req_id = msg.get("id") if isinstance(msg, dict) else None
        params = msg.get("params") if isinstance(msg, dict) else None
        if method == "LIST_SUBSCRIPTIONS":
            await self.send(client, {"result": sorted(client.subs), "id": req_id})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            await self.send(client, {"error": {"code": 2, "msg": "Invalid request"}, "id": req_id})
            return
        names = {p for p in params if p in self.streams}
        if method == "SUBSCRIBE":
            client.subs |= names
        else:
            client.subs -= names
        await self.send(client, {"result": None, "id": req_id})

    def frame(self, client: _Client, key: str, payload: dict[str, Any]) -> str:
        """Raw payloads on `/ws`, `{stream, data}` wrappers on `/stream`."""
        return json.dumps({"stream": key, "data": payload} if client.combined else payload)

    def render(self, q: Quote) -> list[tuple[str, dict[str, Any]]]:
        """A `trade` and a `bookTicker` payload per quote (decimal strings with 8 places)."""
        ms = _epoch_us(q.ts) // 1000
        sym = self.symbol.upper()
        return [
            (f"{self.symbol}@trade", {"e": "trade", "E": ms, "s": sym, "t": q.trade_id, "p": f"{q.price:.8f}",
                                      "q": f"{q.size:.8f}", "T": ms, "m": q.side == "sell", "M": True}),
            (f"{self.symbol}@bookTicker", {"u": next(self._update_ids), "s": sym, "b": f"{q.bid:.8f}",
                                           "B": f"{q.bid_size:.8f}", "a": f"{q.ask:.8f}",
                                           "A": f"{q.ask_size:.8f}"}),
        ]


# --- all of them ---------------------------------------------------------------------------------

VENUES: Mapping[str, type[FakeVenue]] = {
    "coinbase": FakeCoinbase, "kraken": FakeKraken, "bitstamp": FakeBitstamp, "binance": FakeBinance,
}


class FakeVenues:
    """The selected fake venues, each on its own free port, sharing one price path and clock."""

    def __init__(self, price_source: PriceSource, *, venues: Iterable[str] = ("coinbase", "kraken", "bitstamp"),
                 clock: Clock = utcnow, interval_s: float = 0.1, heartbeat_interval_s: float = 1.0,
                 spread_bps: float | None = None, noise_bps: float | None = None, seed: int | str = 0,
                 host: str = "127.0.0.1") -> None:
        names = list(venues)
        unknown = [n for n in names if n not in VENUES]
        if unknown:
            raise ValueError(f"unknown fake venues {unknown}; choose from {sorted(VENUES)}")
        self.venues: dict[str, FakeVenue] = {
            n: VENUES[n](price_source, clock=clock, interval_s=interval_s, heartbeat_interval_s=heartbeat_interval_s,
                         spread_bps=spread_bps, noise_bps=noise_bps, seed=seed, host=host)
            for n in names
        }

    async def start(self) -> FakeVenues:
        """Start every venue."""
        for v in self.venues.values():
            await v.start()
        return self

    async def stop(self) -> None:
        """Stop every venue."""
        for v in self.venues.values():
            await v.stop()

    async def __aenter__(self) -> FakeVenues:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __getitem__(self, name: str) -> FakeVenue:
        return self.venues[name]

    def ws_url(self, name: str) -> str:
        """The URL of one venue."""
        return self.venues[name].ws_url

    @property
    def urls(self) -> dict[str, str]:
        """Every venue's URL by name."""
        return {n: v.ws_url for n, v in self.venues.items()}
