"""The simulated exchange's WebSocket API v2 (`/trade-api/ws/v2`): commands, channels, seq, pings.

Commands (kalshi_api.md §4.1–4.2): `subscribe` answers one `subscribed` per channel with a new
`sid`; re-subscribing to a channel merges the tickers into the existing subscription (Kalshi's
behaviour since 2025-10); `unsubscribe` answers `unsubscribed`; `update_subscription`
(`add_markets`, `delete_markets`, `get_snapshot`) answers `ok` with the full ticker list;
`list_subscriptions` answers `ok` with `[{channel, sid}]`. Errors use the §4.7 codes.

Data: engine events (received synchronously from `MatchingEngine.listen`, in causal order) are
serialised at once into each connection's outgoing queue, so every connection sees them in the
engine's order. `seq` is per sid, starts at 1 with the first snapshot and grows by one per
message of that sid, `ok`/`unsubscribed` replies included (§4.5); only orderbook messages and
those replies carry it. One writer task per connection drains the queue (applying the latency
fault); another sends a Ping with payload `heartbeat` every 10 s (§4.6).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from aiohttp import WSMsgType, web

from libs.common.logs import get_logger
from libs.common.matching.types import (
    BookDelta,
    EngineEvent,
    Fill,
    MarketStatusChange,
    OrderUpdate,
    PositionUpdate,
    Trade,
)
from libs.common.money import ONE_DOLLAR
from services.sim import render
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo
from services.sim.faults import Faults
from services.sim.render import MarketStats, Top

log = get_logger(__name__)

BOOK = "orderbook_delta"
TICKER = "ticker"
TRADE = "trade"
FILL = "fill"
USER_ORDERS = "user_orders"
POSITIONS = "market_positions"
LIFECYCLE = "market_lifecycle_v2"
CHANNELS = (BOOK, TICKER, TRADE, FILL, USER_ORDERS, POSITIONS, LIFECYCLE)
PRIVATE = {FILL: "fill", USER_ORDERS: "user_order", POSITIONS: "market_position"}  # channel -> message type
UNFILTERED = {LIFECYCLE}  # channels that take no market filter (lifecycle covers every market)

# §4.7 error codes used here.
E_UNPROCESSABLE, E_PARAMS, E_CHANNELS, E_SIDS, E_UNKNOWN_CMD = 1, 2, 3, 4, 5
E_UNKNOWN_SID, E_UNKNOWN_CHANNEL, E_INVALID_PARAM, E_ONE_SID, E_ACTION_UNSUPPORTED = 7, 8, 11, 12, 13
E_TICKER_REQUIRED, E_ACTION_REQUIRED, E_MARKET_NOT_FOUND, E_BUFFER_OVERFLOW = 14, 15, 16, 25
_ERROR_TEXT = {
    1: "Unable to process message", 2: "Params required", 3: "Channels required", 4: "Subscription IDs required",
    5: "Unknown command", 7: "Unknown subscription ID", 8: "Unknown channel name", 11: "Invalid parameter",
    12: "Exactly one subscription ID is required", 13: "Unsupported action", 14: "Market Ticker required",
    15: "Action required", 16: "Market not found", 25: "Subscription buffer overflow",
}


class MarketData(Protocol):
    """What the hub needs from the exchange besides engine events."""

    def clock(self) -> datetime: ...

    def market_exists(self, ticker: str) -> bool: ...

    def book(self, ticker: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...

    def top(self, ticker: str) -> Top: ...

    def stats(self, ticker: str) -> MarketStats: ...

    def user_volume(self, user_id: str, ticker: str) -> int: ...

    def exchange_index(self, ticker: str) -> int: ...

    def market_info(self, ticker: str) -> MarketInfo | None: ...

    def all_tickers(self) -> list[str]: ...


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


@dataclass
class Sub:
    """One subscription of one connection."""

    sid: int
    channel: str
    tickers: set[str] | None  # None = every market
    use_yes_price: bool = False
    skip_ticker_ack: bool = False
    seq: int = 0

    def covers(self, ticker: str) -> bool:
        """True when messages about `ticker` belong to this subscription."""
        return self.tickers is None or ticker in self.tickers

    def next_seq(self, skip: bool = False) -> int:
        """Advance and return the sid's seq (skipping one number when a fault asks)."""
        self.seq += 2 if skip else 1
        return self.seq


class Connection:
    """One WebSocket client: its user, subscriptions and outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, user_id: str, transport: asyncio.Transport | None,
                 faults: Faults) -> None:
        self.ws = ws
        self.user_id = user_id
        self.transport = transport
        self.faults = faults
        self.subs: dict[int, Sub] = {}
        self.dead: dict[int, Sub] = {}  # killed by a terminal error; unsubscribe still answers for them
        self.queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._next_sid = 1

    def new_sid(self) -> int:
        """A sid unique within this connection."""
        sid, self._next_sid = self._next_sid, self._next_sid + 1
        return sid

    def send(self, obj: dict[str, Any]) -> None:
        """Queue a message (serialised now, so later state changes cannot alter it)."""
        self.queue.put_nowait((self._loop.time() + self.faults.latency_s, _dumps(obj)))

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.abort()

    async def writer(self) -> None:
        """Send queued messages in order, each no earlier than its due time."""
        while True:
            due, text = await self.queue.get()
            delay = due - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.ws.closed:
                return
            await self.ws.send_str(text)

    async def pinger(self, interval_s: float) -> None:
        """Send a Ping with payload `heartbeat` every `interval_s` (Kalshi does every 10 s)."""
        while not self.ws.closed:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.ping(b"heartbeat")


class CommandError(Exception):
    """A command is refused with a §4.7 code."""

    def __init__(self, code: int, *, market_ticker: str | None = None, text: str | None = None) -> None:
        super().__init__(text or _ERROR_TEXT.get(code, "error"))
        self.code = code
        self.market_ticker = market_ticker
        self.text = text or _ERROR_TEXT.get(code, "error")


class Hub:
    """Every WebSocket connection of the exchange, and the fan-out of engine events to them."""

    def __init__(self, data: MarketData, faults: Faults, *, ping_interval_s: float = 10.0) -> None:
        self.data = data
        self.faults = faults
        self.ping_interval_s = ping_interval_s
        self.conns: list[Connection] = []
        self._status: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._flush_scheduled = False

    # -- connection lifecycle -------------------------------------------------------------------

    async def serve(self, request: web.Request, user_id: str) -> web.WebSocketResponse:
        """Run one authenticated WebSocket connection until it ends."""
        transport = request.transport
        ws = web.WebSocketResponse(autoping=True, max_msg_size=4 * 2**20)
        await ws.prepare(request)
        conn = Connection(ws, user_id, transport, self.faults)
        self.conns.append(conn)
        tasks = [asyncio.create_task(conn.writer()), asyncio.create_task(conn.pinger(self.ping_interval_s))]
        log.debug("sim_ws_connected", user_id=user_id)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.command(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.send(_error(None, E_UNPROCESSABLE))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if conn in self.conns:
                self.conns.remove(conn)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            log.debug("sim_ws_disconnected", user_id=user_id)
        return ws

    async def close_all(self) -> None:
        """Close every connection politely (server shutdown)."""
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"server shutdown")

    def cut_connections(self) -> int:
        """Abort every connection (no close frame); return how many."""
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    def inject_error_25(self, ticker: str | None) -> int:
        """Kill orderbook subscriptions covering `ticker` (None = all) with error 25."""
        n = 0
        for conn in self.conns:
            for sub in list(conn.subs.values()):
                if sub.channel == BOOK and (ticker is None or sub.covers(ticker)):
                    conn.send({"type": "error", "sid": sub.sid,
                               "msg": {"code": E_BUFFER_OVERFLOW, "msg": _ERROR_TEXT[E_BUFFER_OVERFLOW]}})
                    conn.dead[sub.sid] = conn.subs.pop(sub.sid)
                    n += 1
        return n

    # -- commands -------------------------------------------------------------------------------

    def command(self, conn: Connection, raw: str) -> None:
        """Handle one client command, queueing its replies (and any snapshots)."""
        try:
            cmd = orjson.loads(raw)
        except orjson.JSONDecodeError:
            conn.send(_error(None, E_UNPROCESSABLE))
            return
        if not isinstance(cmd, dict):
            conn.send(_error(None, E_UNPROCESSABLE))
            return
        cmd_id = cmd.get("id")
        cmd_id = cmd_id if isinstance(cmd_id, int) and not isinstance(cmd_id, bool) and cmd_id else None
        name = cmd.get("cmd")
        handler = {"subscribe": self._subscribe, "unsubscribe": self._unsubscribe,
                   "update_subscription": self._update, "list_subscriptions": self._list}.get(name)  # type: ignore[arg-type]
        if handler is None:
            conn.send(_error(cmd_id, E_UNKNOWN_CMD))
            return
        params = cmd.get("params")
        if name != "list_subscriptions" and not isinstance(params, dict):
            conn.send(_error(cmd_id, E_PARAMS))
            return
        try:
            handler(conn, cmd_id, params or {})
        except CommandError as e:
            conn.send(_error(cmd_id, e.code, market_ticker=e.market_ticker, text=e.text))

    def _tickers_param(self, params: dict[str, Any]) -> list[str] | None:
        """The market filter of a command (`market_ticker` / `market_tickers` / `market_id(s)`), None if absent."""
        out: list[str] = []
        found = False
        one = params.get("market_ticker")
        if one is not None:
            found = True
            if not isinstance(one, str) or not one:
                raise CommandError(E_INVALID_PARAM, text="market_ticker must be a string")
            out.append(one)
        many = params.get("market_tickers")
        if many is not None:
            found = True
            if not isinstance(many, list) or not all(isinstance(t, str) and t for t in many):
                raise CommandError(E_INVALID_PARAM, text="market_tickers must be a list of strings")
            out.extend(many)
        ids = [params["market_id"]] if params.get("market_id") is not None else []
        ids += params.get("market_ids") or []
        if ids:
            found = True
            by_id = {render.market_id(t): t for t in self.data.all_tickers()}
            for mid in ids:
                if mid not in by_id:
                    raise CommandError(E_MARKET_NOT_FOUND, text=f"Market not found: {mid}")
                out.append(by_id[mid])
        if not found:
            return None
        return list(dict.fromkeys(out))

    def _check_markets(self, tickers: Iterable[str]) -> None:
        for t in tickers:
            if not self.data.market_exists(t):
                raise CommandError(E_MARKET_NOT_FOUND, market_ticker=t)

    def _subscribe(self, conn: Connection, cmd_id: int | None, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise CommandError(E_CHANNELS)
        tickers = self._tickers_param(params)
        use_yes = bool(params.get("use_yes_price", False))
        for channel in channels:
            try:
                self._subscribe_one(conn, cmd_id, channel, tickers, use_yes, params)
            except CommandError as e:
                conn.send(_error(cmd_id, e.code, market_ticker=e.market_ticker, text=e.text))

    def _subscribe_one(self, conn: Connection, cmd_id: int | None, channel: Any, tickers: list[str] | None,
                       use_yes: bool, params: dict[str, Any]) -> None:
        if channel not in CHANNELS:
            # e.g. the retired `market_lifecycle` or `ticker_v2` names (kalshi_api.md §4.4).
            raise CommandError(E_UNKNOWN_CHANNEL, text=f"Unknown channel name: {channel}")
        if channel in UNFILTERED:
            tickers = None
        elif channel == BOOK and not tickers:
            raise CommandError(E_TICKER_REQUIRED)
        if tickers:
            self._check_markets(tickers)
        existing = next((s for s in conn.subs.values() if s.channel == channel), None)
        if existing is not None:
            # Re-subscribing merges the tickers into the existing subscription (no error 6 since 2025-10).
            added = [] if existing.tickers is None else [t for t in tickers or () if t not in existing.tickers]
            if tickers is None:
                existing.tickers = None
            elif existing.tickers is not None:
                existing.tickers.update(added)
            sub = existing
        else:
            sub = Sub(conn.new_sid(), channel, set(tickers) if tickers is not None else None, use_yes_price=use_yes,
                      skip_ticker_ack=bool(params.get("skip_ticker_ack", False)))
            conn.subs[sub.sid] = sub
            added = list(tickers or ())
        conn.send(_reply(cmd_id, "subscribed", {"channel": channel, "sid": sub.sid}))
        if channel == BOOK:
            for t in added:
                self._send_snapshot(conn, sub, t)
        elif channel == TICKER and params.get("send_initial_snapshot"):
            for t in (added if tickers is not None else self.data.all_tickers()):
                conn.send({"type": "ticker", "sid": sub.sid, "msg": self._ticker_msg(t)})

    def _unsubscribe(self, conn: Connection, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids:
            raise CommandError(E_SIDS)
        for sid in sids:
            sub = conn.subs.pop(sid, None) if isinstance(sid, int) else None
            if sub is None and isinstance(sid, int):
                sub = conn.dead.pop(sid, None)
            if sub is None:
                conn.send(_error(cmd_id, E_UNKNOWN_SID))
                continue
            conn.send(_reply(cmd_id, "unsubscribed", None, sid=sub.sid, seq=sub.next_seq()))

    def _update(self, conn: Connection, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids")
        if sids is None and params.get("sid") is not None:
            sids = [params["sid"]]
        if not sids:
            raise CommandError(E_SIDS)
        if not isinstance(sids, list) or len(sids) != 1:
            raise CommandError(E_ONE_SID)
        action = params.get("action")
        if not action:
            raise CommandError(E_ACTION_REQUIRED)
        sub = conn.subs.get(sids[0]) if isinstance(sids[0], int) else None
        if sub is None:
            raise CommandError(E_UNKNOWN_SID)
        if action not in ("add_markets", "delete_markets", "get_snapshot") or sub.channel in UNFILTERED:
            raise CommandError(E_ACTION_UNSUPPORTED)
        if action == "get_snapshot" and sub.channel != BOOK:
            raise CommandError(E_ACTION_UNSUPPORTED)
        tickers = self._tickers_param(params)
        if not tickers:
            raise CommandError(E_TICKER_REQUIRED)
        self._check_markets(tickers)
        snapshots: list[str] = []
        if action == "add_markets":
            if sub.tickers is not None:
                snapshots = [t for t in tickers if t not in sub.tickers]
                sub.tickers.update(snapshots)
        elif action == "delete_markets":
            if sub.tickers is not None:
                sub.tickers.difference_update(tickers)
                if not sub.tickers and sub.channel != BOOK:
                    sub.tickers = None  # an emptied filter on a filterable channel means every market
        else:
            missing = [t for t in tickers if not sub.covers(t)]
            if missing:
                raise CommandError(E_INVALID_PARAM, market_ticker=missing[0],
                                   text=f"Market {missing[0]} is not in subscription {sub.sid}")
            snapshots = tickers
        msg: dict[str, Any] = {}
        if not sub.skip_ticker_ack:
            msg["market_tickers"] = sorted(sub.tickers) if sub.tickers is not None else []
        conn.send(_reply(cmd_id, "ok", msg, sid=sub.sid, seq=sub.next_seq()))
        if sub.channel == BOOK:
            for t in snapshots:
                self._send_snapshot(conn, sub, t)

    def _list(self, conn: Connection, cmd_id: int | None, params: dict[str, Any]) -> None:
        conn.send(_reply(cmd_id, "ok", [{"channel": s.channel, "sid": s.sid} for s in conn.subs.values()]))

    def _send_snapshot(self, conn: Connection, sub: Sub, ticker: str) -> None:
        yes, no = self.data.book(ticker)
        skip = self.faults.take_drop(ticker)
        conn.send({"type": "orderbook_snapshot", "sid": sub.sid, "seq": sub.next_seq(skip),
                   "msg": render.ws_snapshot(ticker, yes, no, use_yes_price=sub.use_yes_price)})

    # -- engine events --------------------------------------------------------------------------

    def _targets(self, channel: str, ticker: str, user_id: str | None = None) -> Iterator[tuple[Connection, Sub]]:
        for conn in self.conns:
            if user_id is not None and conn.user_id != user_id:
                continue
            for sub in conn.subs.values():
                if sub.channel == channel and sub.covers(ticker):
                    yield conn, sub

    def on_event(self, ev: EngineEvent) -> None:
        """Fan one engine event out to the subscriptions it concerns (called synchronously by the engine)."""
        if not self.conns:
            return
        if isinstance(ev, BookDelta):
            self._on_delta(ev)
            self._mark_dirty(ev.ticker)
        elif isinstance(ev, Trade):
            payload = render.ws_trade(ev)
            for conn, sub in self._targets(TRADE, ev.ticker):
                conn.send({"type": "trade", "sid": sub.sid, "msg": payload})
            self._mark_dirty(ev.ticker)
        elif isinstance(ev, Fill):
            payload = render.ws_fill(ev, exchange_index=self.data.exchange_index(ev.ticker))
            for conn, sub in self._targets(FILL, ev.ticker, ev.user_id):
                conn.send({"type": "fill", "sid": sub.sid, "msg": payload})
        elif isinstance(ev, OrderUpdate):
            o = ev.order
            payload = render.ws_user_order(o)
            for conn, sub in self._targets(USER_ORDERS, o.ticker, o.user_id):
                conn.send({"type": "user_order", "sid": sub.sid, "msg": payload})
        elif isinstance(ev, PositionUpdate):
            p = ev.position
            payload = render.ws_market_position(p, self.data.user_volume(p.user_id, p.ticker))
            for conn, sub in self._targets(POSITIONS, p.ticker, p.user_id):
                conn.send({"type": "market_position", "sid": sub.sid, "msg": payload})
        elif isinstance(ev, MarketStatusChange):
            for msg in self._lifecycle(ev):
                self.lifecycle(msg)

    def _on_delta(self, d: BookDelta) -> None:
        targets = list(self._targets(BOOK, d.ticker))
        if not targets:
            return
        # One exchange message fans out to every sid; a seq-skip fault applies to that message everywhere.
        skip = self.faults.take_drop(d.ticker)
        for conn, sub in targets:
            own = d.user_id is not None and d.user_id == conn.user_id
            conn.send({"type": "orderbook_delta", "sid": sub.sid, "seq": sub.next_seq(skip),
                       "msg": render.ws_delta(d, use_yes_price=sub.use_yes_price, own=own)})

    def lifecycle(self, msg: dict[str, Any], kind: str = "market_lifecycle_v2") -> None:
        """Send a lifecycle message (`market_lifecycle_v2` or `event_lifecycle`) to every lifecycle sid."""
        for conn in self.conns:
            for sub in conn.subs.values():
                if sub.channel == LIFECYCLE:
                    conn.send({"type": kind, "sid": sub.sid, "msg": msg})

    def market_created(self, m: MarketInfo) -> None:
        """Announce a newly listed market."""
        self.lifecycle(render.ws_lifecycle_created(m))

    def event_created(self, e: EventInfo, series: SeriesInfo | None) -> None:
        """Announce a newly listed event."""
        self.lifecycle(render.ws_event_lifecycle(e, series), kind="event_lifecycle")

    def _lifecycle(self, ev: MarketStatusChange) -> list[dict[str, Any]]:
        """Kalshi's lifecycle messages for a status change (none for time-based open and close)."""
        prev = self._status.get(ev.ticker)
        self._status[ev.ticker] = ev.status
        if prev == ev.status:
            return []
        base = {"market_ticker": ev.ticker, "exchange_index": self.data.exchange_index(ev.ticker)}
        ts = render.unix_s(ev.ts)
        out: list[dict[str, Any]] = []
        if ev.status == "inactive":
            out.append({**base, "event_type": "deactivated", "is_deactivated": True})
        elif ev.status == "active" and prev == "inactive":
            out.append({**base, "event_type": "activated", "is_deactivated": False})
        elif ev.status == "closed":
            info = self.data.market_info(ev.ticker)
            if info is not None and ev.ts < info.close_time:  # closed early: the close date moved
                out.append({**base, "event_type": "close_date_updated", "close_ts": ts})
        if ev.status in ("determined", "finalized") and prev not in ("determined", "finalized") and ev.result:
            value = render.dollars(ONE_DOLLAR if ev.result == "yes" else 0)
            out.append({**base, "event_type": "determined", "result": ev.result, "determination_ts": ts,
                        "settlement_value": value})
        if ev.status == "finalized":
            out.append({**base, "event_type": "settled", "settled_ts": ts})
        return out

    # -- ticker channel -------------------------------------------------------------------------

    def _ticker_msg(self, ticker: str) -> dict[str, Any]:
        return render.ws_ticker(ticker, self.data.top(ticker), self.data.stats(ticker), self.data.clock())

    def _mark_dirty(self, ticker: str) -> None:
        # Coalesce: one `ticker` message per market per engine call, sent once the call has finished.
        if not any(s.channel == TICKER for c in self.conns for s in c.subs.values()):
            return
        self._dirty.add(ticker)
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_scheduled = True
            loop.call_soon(self._flush_tickers)

    def _flush_tickers(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for t in sorted(dirty):
            targets = list(self._targets(TICKER, t))
            if not targets:
                continue
            payload = self._ticker_msg(t)
            for conn, sub in targets:
                conn.send({"type": "ticker", "sid": sub.sid, "msg": payload})


def _reply(cmd_id: int | None, kind: str, msg: Any, *, sid: int | None = None, seq: int | None = None
           ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cmd_id is not None:
        out["id"] = cmd_id
    if sid is not None:
        out["sid"] = sid
    if seq is not None:
        out["seq"] = seq
    out["type"] = kind
    if msg is not None:
        out["msg"] = msg
    return out


def _error(cmd_id: int | None, code: int, *, market_ticker: str | None = None, text: str | None = None
           ) -> dict[str, Any]:
    msg: dict[str, Any] = {"code": code, "msg": text or _ERROR_TEXT.get(code, "error")}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    return _reply(cmd_id, "error", msg)


__all__ = ["CHANNELS", "Connection", "Hub", "MarketData", "Sub"]
