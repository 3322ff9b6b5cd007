"""Kalshi books onto the bus: coalesced `md.book.*` updates, sampled snapshots, divergence checks.

Coalescing: the WS client updates local books on every delta and marks the market dirty; a flush
loop publishes each dirty market's *current* book every `coalesce_s`. A burst of deltas becomes
one update per market per flush, and a slow bus never builds a backlog — the next flush simply
carries the latest state.

Time: a book's `ts_event` is when this feed last vouched for it — the flush after a snapshot or
delta, or a refresh while its subscription is live; `ts_exchange` is the exchange's time of the last
delta (or when the snapshot came). Downstream services measure a book's age from `ts_event`, never
from when they received it, so a book replayed from JetStream after a restart is as old as it is.

Refresh: a quiet market's book may not change for minutes. A valid book (the WebSocket client keeps a
book valid only while its subscription is live and in sequence) is therefore published again after
`refresh_s` without a change, so a quiet market does not look stale — and a silent feed, whose books
are no longer valid, does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.backoff import Backoff, sleep_unless_stopped
from libs.common.config import Mode
from libs.common.db import feeds as tables
from libs.common.db.upsert import insert_many_if_new
from libs.common.events import Alert, BookUpdate, Event, utcnow
from libs.common.health import Freshness
from libs.common.kalshi import KalshiError, KalshiRest, LocalBook
from libs.common.logs import get_logger
from libs.common.money import ONE_DOLLAR

log = get_logger(__name__)

REFRESH_MIN_BATCH = 20  # quiet books republished per tick at least (a small desk refreshes in one go)
Emit = Callable[[str, Event], Awaitable[None]]


def book_event(book: LocalBook, series: str, mode: Mode, ts: datetime, depth: int | None = None) -> BookUpdate:
    """The bus event for a book's current state, as vouched for at `ts`."""
    return BookUpdate(id=f"book:{book.ticker}:{book.seq}:{ts.timestamp():.6f}", ts_event=ts, mode=mode,
                      ticker=book.ticker, series_ticker=series, seq=book.seq or 0,
                      yes_bids=tuple(book.yes_levels(depth)), no_bids=tuple(book.no_levels(depth)),
                      depth="full" if depth is None else "top", ts_exchange=book.ts_exchange)


class BookFanout:
    """Publishes coalesced book updates for books that changed."""

    def __init__(self, emit: Emit, *, mode: Mode, series_of: Callable[[str], str] = subjects.series_of,
                 coalesce_s: float = 0.005, depth: int | None = None, refresh_s: float = 10.0,
                 tick_s: float = 0.1, clock: Callable[[], datetime] = utcnow) -> None:
        self.emit = emit
        self.clock = clock
        self.refresh_s = refresh_s
        self.tick_s = tick_s
        self._books: dict[str, LocalBook] = {}
        self._published_at: dict[str, float] = {}
        self.mode = mode
        self.series_of = series_of
        self.coalesce_s = coalesce_s
        self.depth = depth
        self._dirty: dict[str, LocalBook] = {}
        self._wake = asyncio.Event()
        self.deltas_in = 0
        self.published = 0

    def on_book(self, book: LocalBook) -> None:
        """WS callback: remember that this book changed (cheap; no I/O on the hot path)."""
        self.deltas_in += 1
        self._dirty[book.ticker] = book
        self._books[book.ticker] = book
        self._wake.set()

    async def flush(self) -> int:
        """Publish every dirty valid book once; returns how many were published."""
        dirty, self._dirty = self._dirty, {}
        self._wake.clear()
        now = self.clock()
        n = 0
        for book in dirty.values():
            if not book.valid:
                continue  # a resnapshot is on its way; publishing now could show a wrong book
            await self.emit(subjects.md_book(self.series_of(book.ticker), book.ticker),
                            book_event(book, self.series_of(book.ticker), self.mode, now, self.depth))
            self._published_at[book.ticker] = time.monotonic()
            n += 1
        self.published += n
        return n

    def refresh_due(self, now: float | None = None) -> int:
        """Mark books not published for `refresh_s` dirty again, oldest first; the number marked.

        At most twice a tick's share of all books is marked per call (`run` calls it every `tick_s`): quiet
        books were all refreshed in one burst every `refresh_s` (they had been published together at start),
        and at 2,000 markets the signals service then had ~1,500 books to evaluate at once, the last of them
        a second or more late (benchmarks/scale.py). Spread, they arrive at an even ~`books / refresh_s`."""
        now = time.monotonic() if now is None else now
        due = []
        for t, b in self._books.items():
            at = self._published_at.get(t, 0.0)
            if b.valid and t not in self._dirty and now - at >= self.refresh_s:
                due.append((at, t))
        cap = max(REFRESH_MIN_BATCH, math.ceil(2 * len(self._books) * self.tick_s / self.refresh_s))
        if len(due) > cap:
            due = heapq.nsmallest(cap, due)
        for _, t in due:
            self._dirty[t] = self._books[t]
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush loop."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            self.refresh_due()
            if self._dirty:
                await asyncio.sleep(self.coalesce_s)
                await self.flush()


def _top(book: LocalBook) -> dict[str, int | None]:
    yb, na = book.best_yes_bid, book.best_no_bid
    return {"yes_bid_price": yb[0] if yb else None, "yes_bid_count": yb[1] if yb else None,
            "yes_ask_price": ONE_DOLLAR - na[0] if na else None, "yes_ask_count": na[1] if na else None}


class SnapshotSampler:
    """Writes a `market_snapshots` row per market every `interval_s` (sampled, not every delta)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], books: dict[str, LocalBook], *,
                 interval_s: float = 60.0, depth: int = 10, source: str = "ws") -> None:
        self.sessions = sessions
        self.books = books
        self.interval_s = interval_s
        self.depth = depth
        self.source = source

    async def sample_once(self) -> int:
        """Store the current top of every valid book; returns rows written."""
        now = utcnow().replace(microsecond=0)
        rows = [{"ticker": b.ticker, "ts": now, "seq": b.seq, "source": self.source, **_top(b),
                 "depth": {"yes": b.yes_levels(self.depth), "no": b.no_levels(self.depth)}}
                for b in list(self.books.values()) if b.valid]
        if not rows:
            return 0
        async with self.sessions() as s, s.begin():
            return await insert_many_if_new(s, tables.MarketSnapshot, rows, key=["ticker", "ts"])

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until stopped."""
        while not stop.is_set():
            try:
                await self.sample_once()
            except Exception:
                log.exception("snapshot_sample_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)


class DivergenceCheck:
    """Compares WS books with REST books; a persistent mismatch raises an alert and forces a resnapshot.

    A market moving during the check can differ legitimately, so a mismatch only counts when the
    local book's `seq` did not move between the REST read and the comparison, and it is confirmed
    by a second REST read.
    """

    def __init__(self, rest: KalshiRest, books: dict[str, LocalBook], emit: Emit, *, mode: Mode,
                 resnapshot: Callable[[list[str]], Awaitable[None]], confirm_delay_s: float = 0.5) -> None:
        self.rest = rest
        self.books = books
        self.emit = emit
        self.mode = mode
        self.resnapshot = resnapshot
        self.confirm_delay_s = confirm_delay_s
        self.divergences = 0

    async def _mismatched(self, tickers: Sequence[str]) -> list[str]:
        before = {t: self.books[t].seq for t in tickers}
        rest_books = await self.rest.orderbooks(tickers)
        out = []
        for t in tickers:
            book, rb = self.books[t], rest_books.get(t)
            if rb is None or not book.valid or book.seq != before[t]:
                continue
            if book.yes_levels() != rb.yes or book.no_levels() != rb.no:
                out.append(t)
        return out

    async def check_once(self) -> list[str]:
        """One comparison pass over every valid book; returns the markets found diverged."""
        tickers = [t for t, b in self.books.items() if b.valid]
        if not tickers:
            return []
        try:
            suspects = await self._mismatched(tickers)
            if not suspects:
                return []
            await asyncio.sleep(self.confirm_delay_s)
            diverged = await self._mismatched(suspects)
        except KalshiError as e:
            log.warning("divergence_check_failed", error=str(e))
            return []
        if diverged:
            self.divergences += len(diverged)
            now = utcnow()
            log.warning("book_divergence", markets=diverged)
            await self.emit(subjects.ops_alert("divergence"), Alert(
                ts_event=now, mode=self.mode, family="divergence", severity="warning",
                dedupe_key=f"divergence:{','.join(sorted(diverged))}",
                title=f"WS book differs from REST for {len(diverged)} market(s); resnapshotting",
                data={"markets": diverged}))
            await self.resnapshot(diverged)
        return diverged

    async def run(self, stop: asyncio.Event, interval_s: float = 180.0) -> None:
        """Check every `interval_s`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if not stop.is_set():
                await self.check_once()


class RestBookPoller:
    """Books by REST polling (no API keys): batched orderbooks every `interval_s`, published on change."""

    def __init__(self, rest: KalshiRest, fanout: BookFanout, *, interval_s: float = 2.0,
                 freshness: Freshness | None = None) -> None:
        self.rest = rest
        self.freshness = freshness
        if freshness is not None:
            freshness.expect("kalshi_rest_books", max(30.0, 10 * interval_s))
        self.fanout = fanout
        self.interval_s = interval_s
        # After a failure the next poll waits twice the interval, doubling up to a minute.
        self.backoff = Backoff(base_s=2 * interval_s, cap_s=60.0)
        self.books: dict[str, LocalBook] = {}
        self._polls = 0
        self.last_ok_at: datetime | None = None  # the last poll that answered (`ws_status` lists the poller)

    def track(self, tickers: Sequence[str]) -> None:
        """Poll these markets (others are dropped); the dict is updated in place, readers keep their reference."""
        for t in [t for t in self.books if t not in set(tickers)]:
            del self.books[t]
        for t in tickers:
            self.books.setdefault(t, LocalBook(t))

    async def poll_once(self) -> int:
        """One poll; returns how many books changed."""
        if not self.books:
            return 0
        self._polls += 1
        fresh = await self.rest.orderbooks(list(self.books))
        changed = 0
        for t, ob in fresh.items():
            book = self.books.get(t)
            if book is None:
                continue
            if not book.valid or book.yes_levels() != ob.yes or book.no_levels() != ob.no:
                book.load_snapshot(ob.yes, ob.no, seq=self._polls)
                self.fanout.on_book(book)
                changed += 1
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until stopped, backing off on errors."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except KalshiError as e:
                delay = self.backoff.next_delay()
                log.warning("rest_book_poll_failed", error=str(e), failures=self.backoff.failures,
                            retry_in_s=round(delay, 1))
            else:
                self.last_ok_at = utcnow()
                if self.freshness is not None:
                    self.freshness.mark("kalshi_rest_books")
                self.backoff.reset()
                delay = self.interval_s
            if await sleep_unless_stopped(stop, delay):
                return
