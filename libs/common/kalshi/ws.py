"""Kalshi WebSocket v2 client: signed handshake, subscriptions, local books, recovery.

Book correctness rules (kalshi_api.md §4.5): `seq` is per subscription id (`sid`) and increases by
one per message of that sid. A gap, or a terminal channel error (10, 17, 25), makes every book of
that sid untrustworthy: they are invalidated at once (callers never see a silently wrong book) and
fresh snapshots are requested with `update_subscription` / `get_snapshot` (or, for terminal
errors, by subscribing again). After a reconnect every subscription is sent again.

Dead connections: the websockets keepalive pings every `ping_interval_s` and drops the
connection when no pong arrives within `ping_timeout_s`; Kalshi's own pings are answered by the
library. A connection that stays silent for `stale_after_s` (no frame of ours or theirs answered)
is reconnected too. Reconnects back off (`libs.common.backoff`) and start over from `backoff_base_s`
after a session that lasted `healthy_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from libs.common.backoff import Backoff
from libs.common.kalshi.book import BookInconsistent, LocalBook
from libs.common.kalshi.errors import AuthError
from libs.common.kalshi.models import book_price, from_ms
from libs.common.kalshi.rest import Environment
from libs.common.kalshi.signing import Signer
from libs.common.logs import get_logger
from libs.common.money import MoneyError, complement, parse_count

log = get_logger(__name__)

BOOK_CHANNEL = "orderbook_delta"
TERMINAL_ERRORS = {10, 17, 25}

Callback = Callable[[dict[str, Any]], Awaitable[None] | None]
BookCallback = Callable[[LocalBook], Awaitable[None] | None]


@dataclass
class _Sub:
    channel: str
    tickers: set[str] = field(default_factory=set)  # empty = all markets (channels that allow it)
    sid: int | None = None
    seq: int | None = None


class KalshiWS:
    """A self-healing WebSocket session; run it with `await ws.run(stop)`."""

    def __init__(self, env: Environment, signer: Signer | None, *, use_yes_price: bool = False,
                 on_book: BookCallback | None = None, on_message: Callback | None = None,
                 ping_interval_s: float = 10.0, ping_timeout_s: float = 10.0, stale_after_s: float = 60.0,
                 backoff_base_s: float = 0.2, backoff_cap_s: float = 30.0, healthy_after_s: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.env = env
        self.signer = signer
        self.use_yes_price = use_yes_price
        self.on_book = on_book
        self.on_message = on_message
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.stale_after_s = stale_after_s
        self.backoff = Backoff(backoff_base_s, backoff_cap_s, healthy_after_s=healthy_after_s, rng=rng)
        self.books: dict[str, LocalBook] = {}
        self._subs: list[_Sub] = []
        self._by_sid: dict[int, _Sub] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, _Sub] = {}
        self._conn: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.resyncs = 0
        self.gaps = 0
        self.malformed = 0

    # -- public API -----------------------------------------------------------------------------

    async def subscribe_books(self, tickers: Iterable[str]) -> None:
        """Keep local books for these markets (adds to an existing book subscription)."""
        new = {t for t in tickers if t not in self.books}
        if not new:
            return
        for t in new:
            self.books[t] = LocalBook(t)
        sub = next((s for s in self._subs if s.channel == BOOK_CHANNEL), None)
        if sub is None:
            sub = _Sub(BOOK_CHANNEL, set(new))
            self._subs.append(sub)
            await self._send_subscribe(sub)
        else:
            sub.tickers |= new
            if sub.sid is not None:
                params = {"sids": [sub.sid], "market_tickers": sorted(new), "action": "add_markets"}
                await self._send({"cmd": "update_subscription", "params": params})

    async def subscribe(self, channel: str, tickers: Iterable[str] | None = None) -> None:
        """Subscribe to a non-book channel (ticker, trade, fill, user_orders, market_positions, lifecycle)."""
        sub = _Sub(channel, set(tickers or ()))
        self._subs.append(sub)
        await self._send_subscribe(sub)

    async def resnapshot(self, tickers: Iterable[str]) -> None:
        """Force fresh snapshots of these books (e.g. after a divergence check failed)."""
        sub = next((s for s in self._subs if s.channel == BOOK_CHANNEL), None)
        wanted = sorted(t for t in tickers if t in self.books)
        for t in wanted:
            self.books[t].invalidate()
        if sub is not None and sub.sid is not None and wanted:
            self.resyncs += 1
            await self._send({"cmd": "update_subscription",
                              "params": {"sids": [sub.sid], "market_tickers": wanted, "action": "get_snapshot"}})

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, (re)subscribe and dispatch until `stop` is set; reconnects with backoff."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self._session(stop)
            except AuthError:
                raise
            except (OSError, ConnectionClosed, TimeoutError, InvalidStatus) as e:
                log.warning("kalshi_ws_disconnected", error=f"{type(e).__name__}: {e}")
            finally:
                self.connected.clear()
                self._conn = None
                for book in self.books.values():
                    book.invalidate()
            if stop.is_set():
                break
            self.backoff.reset_if_healthy(lasted_s=loop.time() - started)
            if await self.backoff.sleep(stop):
                break

    async def close(self) -> None:
        """Close the current connection (run() reconnects unless stopped)."""
        if self._conn is not None:
            await self._conn.close()

    # -- connection -----------------------------------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
        headers = self.signer.sign("GET", self.env.ws_url) if self.signer else {}
        try:
            conn = await websockets.connect(self.env.ws_url, additional_headers=headers,
                                            ping_interval=self.ping_interval_s, ping_timeout=self.ping_timeout_s,
                                            max_size=8 * 2**20, open_timeout=10)
        except InvalidStatus as e:
            if e.response.status_code in (401, 403):
                raise AuthError(f"Kalshi WebSocket refused the handshake ({e.response.status_code}); check the key "
                                "id, the private key and the clock") from None
            raise
        self._conn = conn
        self.connects += 1
        self._by_sid.clear()
        self._pending.clear()
        for sub in self._subs:
            sub.sid, sub.seq = None, None
            await self._send_subscribe(sub)
        self.connected.set()
        log.info("kalshi_ws_connected", url=self.env.ws_url, subscriptions=len(self._subs))
        stopper = asyncio.create_task(stop.wait())
        recv: asyncio.Task[Any] | None = None
        try:
            while True:
                recv = asyncio.create_task(conn.recv())
                done, _ = await asyncio.wait({recv, stopper}, timeout=self.stale_after_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done or not done:
                    recv.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await recv
                    if not done:
                        raise TimeoutError(f"no frame for {self.stale_after_s:.0f} s")
                    await conn.close()
                    return
                await self._dispatch(recv.result())
        finally:
            # Off the stream, a book stops being the exchange's: it is valid again only after the fresh snapshot
            # the resubscription brings. Until then nobody republishes it as current.
            for book in self.books.values():
                book.invalidate()
            stopper.cancel()
            if recv is not None and not recv.done():
                recv.cancel()  # cancelled from outside: never leave a recv() whose failure nobody reads
            with contextlib.suppress(Exception):
                await conn.close()
            if recv is not None:
                with contextlib.suppress(BaseException):
                    await recv

    async def _send(self, cmd: dict[str, Any]) -> int:
        cmd_id = next(self._ids)
        if self._conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._conn.send(json.dumps({"id": cmd_id, **cmd}))
        return cmd_id

    async def _send_subscribe(self, sub: _Sub) -> None:
        if self._conn is None:
            return  # sent on connect
        params: dict[str, Any] = {"channels": [sub.channel]}
        if sub.tickers:
            params["market_tickers"] = sorted(sub.tickers)
        if sub.channel == BOOK_CHANNEL:
            # Set explicitly: Kalshi plans to flip the default (kalshi_api.md §4.4).
            params["use_yes_price"] = self.use_yes_price
        cmd_id = await self._send({"cmd": "subscribe", "params": params})
        self._pending[cmd_id] = sub

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
            kind = frame["type"]
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nesting too deep for json
            self.malformed += 1
            log.warning("kalshi_ws_malformed_frame", frame=str(raw)[:200])
            return
        try:
            if kind == "subscribed":
                self._on_subscribed(frame)
            elif kind == "orderbook_snapshot":
                await self._on_snapshot(frame)
            elif kind == "orderbook_delta":
                await self._on_delta(frame)
            elif kind == "error":
                await self._on_error(frame)
            elif kind in ("ok", "unsubscribed"):
                self._check_seq(frame)
            elif self.on_message is not None:
                res = self.on_message(frame)
                if asyncio.iscoroutine(res):
                    await res
        # AttributeError: an object that is a list or a string (`msg.get` on `[...]`), here or in a callback.
        except (KeyError, TypeError, ValueError, MoneyError, AttributeError) as e:
            self.malformed += 1
            log.warning("kalshi_ws_malformed_message", type=kind, error=f"{type(e).__name__}: {e}")
            if kind in ("orderbook_delta", "orderbook_snapshot") and isinstance(frame.get("sid"), int):
                # A book message we could not apply is a lost update: resync rather than keep a wrong book.
                await self._gap(frame["sid"])

    def _on_subscribed(self, frame: dict[str, Any]) -> None:
        msg = frame["msg"]
        sub = self._pending.pop(frame.get("id", -1), None)
        if sub is None:
            sub = next((s for s in self._subs if s.channel == msg["channel"] and s.sid is None), None)
        if sub is None:
            return
        sub.sid, sub.seq = int(msg["sid"]), None
        self._by_sid[sub.sid] = sub

    def _check_seq(self, frame: dict[str, Any]) -> bool:
        """True when the frame continues its sid's sequence (or carries none)."""
        sid, seq = frame.get("sid"), frame.get("seq")
        if sid is None or seq is None:
            return True
        # Infinity, "3", 3.5 or 10**300 (which no book event id holds): the frame is malformed.
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise ValueError(f"seq {str(seq)[:40]} is not a sequence number")
        sub = self._by_sid.get(sid)
        if sub is None:
            return True
        ok = sub.seq is None or seq == sub.seq + 1
        sub.seq = seq
        return ok

    async def _on_snapshot(self, frame: dict[str, Any]) -> None:
        in_order = self._check_seq(frame)
        msg = frame["msg"]
        book = self.books.get(msg["market_ticker"])
        if book is None:
            return
        yes = [(book_price(p), parse_count(c)) for p, c in msg.get("yes_dollars_fp") or []]
        no = [(book_price(p), parse_count(c)) for p, c in msg.get("no_dollars_fp") or []]
        if self.use_yes_price:
            no = [(complement(p), c) for p, c in no]
        # A snapshot carries no time of its own: it is the exchange's book as of its arrival.
        book.load_snapshot(yes, no, frame.get("seq"), ts=datetime.now(UTC))
        if not in_order:
            await self._gap(frame["sid"], exclude=book.ticker)
        await self._emit(book)

    async def _on_delta(self, frame: dict[str, Any]) -> None:
        in_order = self._check_seq(frame)
        if not in_order:
            await self._gap(frame["sid"])
            return
        msg = frame["msg"]
        book = self.books.get(msg["market_ticker"])
        if book is None or not book.valid:
            return  # waiting for its snapshot; the snapshot already includes this change
        price = book_price(msg["price_dollars"])
        side = msg["side"]
        if side not in ("yes", "no"):
            raise ValueError(f"unknown side {side!r}")
        if side == "no" and self.use_yes_price:
            price = complement(price)
        ts_ms = msg.get("ts_ms")
        ts = from_ms(ts_ms) if isinstance(ts_ms, int | float) else None  # ValueError (malformed) beyond datetime
        try:
            book.apply_delta(side, price, parse_count(msg["delta_fp"], signed=True), frame.get("seq"), ts=ts)
        except BookInconsistent as e:
            log.warning("kalshi_book_inconsistent", ticker=book.ticker, error=str(e))
            await self.resnapshot([book.ticker])
            return
        await self._emit(book)

    async def _gap(self, sid: int, exclude: str | None = None) -> None:
        sub = self._by_sid.get(sid)
        if sub is None:
            return
        self.gaps += 1
        tickers = [t for t in sub.tickers if t != exclude]
        log.warning("kalshi_ws_seq_gap", sid=sid, markets=len(tickers))
        await self.resnapshot(tickers)

    async def _on_error(self, frame: dict[str, Any]) -> None:
        msg = frame.get("msg") or {}
        code = msg.get("code")
        log.warning("kalshi_ws_error", code=code, message=msg.get("msg"), sid=frame.get("sid"))
        if code not in TERMINAL_ERRORS:
            return
        # A terminal channel error kills the subscription: forget it and subscribe again.
        sub = self._by_sid.pop(frame["sid"], None) if frame.get("sid") is not None else None
        targets = [sub] if sub is not None else [s for s in self._subs if s.channel == BOOK_CHANNEL]
        for s in targets:
            if s.channel == BOOK_CHANNEL:
                for t in s.tickers:
                    self.books[t].invalidate()
            if s.sid is not None:
                await self._send({"cmd": "unsubscribe", "params": {"sids": [s.sid]}})
                self._by_sid.pop(s.sid, None)
            s.sid, s.seq = None, None
            self.resyncs += 1
            await self._send_subscribe(s)

    async def _emit(self, book: LocalBook) -> None:
        if self.on_book is not None and book.valid:
            res = self.on_book(book)
            if asyncio.iscoroutine(res):
                await res
