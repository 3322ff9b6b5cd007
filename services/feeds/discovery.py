"""Market discovery: series, events and markets of the configured series, kept in PostgreSQL and on `md.market.*`.

A market definition is published when anything an analyst or trader relies on changes (status,
times, strikes, grid, fees, result) — not on every poll. The event id is derived from the
definition's content, so a re-publish after a restart is deduplicated by JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.config import Mode
from libs.common.db import feeds as tables
from libs.common.db.upsert import upsert
from libs.common.events import Event, MarketDefinition, PriceRange, utcnow
from libs.common.families import family_of
from libs.common.health import Freshness
from libs.common.kalshi import KalshiError, KalshiRest
from libs.common.kalshi.models import Event as KEvent
from libs.common.kalshi.models import Market, Series
from libs.common.logs import get_logger

log = get_logger(__name__)

Emit = Callable[[str, Event], Awaitable[None]]
FINAL_STATUSES = {"finalized"}
COMBO_PREFIX = "KXMVE"  # multivariate combos: separate endpoints, reject plain orders (kalshi_api.md §10.7)


def definition(market: Market, series: Series, mode: Mode, now: datetime) -> MarketDefinition:
    """The bus event for a market, with a content-derived id."""
    grid = market.grid
    fields = dict(
        ticker=market.ticker, event_ticker=market.event_ticker, series_ticker=series.ticker, status=market.status,
        title=market.title or market.yes_sub_title, strike_type=market.strike_type,
        floor_strike=market.floor_strike, cap_strike=market.cap_strike, open_time=market.open_time,
        close_time=market.close_time, expected_expiration_time=market.expected_expiration_time,
        price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in grid.ranges),
        fee_type=series.fee_type, fee_multiplier=series.fee_multiplier, exchange_index=market.exchange_index,
        result=market.result or None, rules=market.rules_primary or None,
        # Volume only where a consumer filters on it (the llm family): elsewhere it would change the
        # definition's content, and so re-publish it, on every trade.
        volume=market.volume if family_of(series.ticker) == "llm" else None,
    )
    probe = MarketDefinition(id="x", ts_event=now, ts_init=now, mode=mode, **fields)
    digest = hashlib.sha256(probe.model_dump_json(exclude={"id", "ts_event", "ts_init"}).encode()).hexdigest()
    return MarketDefinition(id=f"mkt:{market.ticker}:{digest[:16]}", ts_event=now, mode=mode, **fields)


class Discovery:
    """Polls the configured series and reports open markets to whoever keeps books."""

    def __init__(self, rest: KalshiRest, series: Sequence[str], emit: Emit, *, mode: Mode,
                 sessions: async_sessionmaker[AsyncSession] | None = None, freshness: Freshness | None = None,
                 on_open: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        self.rest = rest
        self.series = [s.upper() for s in series]
        self.emit = emit
        self.mode = mode
        self.sessions = sessions
        self.freshness = freshness
        self.on_open = on_open
        self.published: dict[str, str] = {}  # ticker -> id of the last definition published
        self.markets: dict[str, Market] = {}
        self.series_of: dict[str, str] = {}  # market ticker -> the configured series it was found under
        self.series_info: dict[str, Series] = {}
        if freshness is not None:
            freshness.expect("discovery", 600)

    @property
    def open_tickers(self) -> list[str]:
        """Markets currently trading (status active)."""
        return sorted(t for t, m in self.markets.items() if m.status == "active")

    async def poll_once(self) -> list[MarketDefinition]:
        """One discovery pass; returns the definitions that changed (and were published)."""
        changed: list[MarketDefinition] = []
        now = utcnow()
        for series_ticker in self.series:
            try:
                series = await self.rest.series(series_ticker)
                events = await self.rest.events(series_ticker=series_ticker, status="open", with_nested_markets=True)
            except KalshiError as e:
                log.warning("discovery_series_failed", series=series_ticker, error=str(e))
                continue
            self.series_info[series_ticker] = series
            seen = {m.ticker for e in events for m in e.markets}
            # Markets we track that left the open list: fetch them to learn close/settle and result.
            # (Match on the recorded series, not a ticker prefix: "KXBTC" is a prefix of "KXBTCD".)
            gone = [t for t, m in self.markets.items()
                    if self.series_of.get(t) == series_ticker and t not in seen and m.status not in FINAL_STATUSES]
            extra = await self._fetch(gone)
            await self._store(series, events)
            for market in [m for e in events for m in e.markets] + extra:
                if market.ticker.startswith(COMBO_PREFIX):
                    continue
                try:
                    d = definition(market, series, self.mode, now)
                    subject = subjects.md_market(series.ticker, market.ticker)
                # A bad grid (MoneyError) or a ticker no subject can hold (SubjectError): skip this market alone;
                # raising here would end the pass, and every pass, before the markets after it.
                except ValueError as e:
                    log.warning("discovery_market_malformed", series=series_ticker, ticker=market.ticker, error=str(e))
                    continue
                self.markets[market.ticker] = market
                self.series_of[market.ticker] = series_ticker
                if self.published.get(market.ticker) != d.id:
                    await self._store_market(market, series)
                    await self.emit(subject, d)
                    self.published[market.ticker] = d.id
                    changed.append(d)
        if self.freshness is not None:
            self.freshness.mark("discovery")
        if changed:
            log.info("markets_changed", count=len(changed), open=len(self.open_tickers))
        if self.on_open is not None:
            await self.on_open(self.open_tickers)
        return changed

    async def _fetch(self, tickers: Iterable[str]) -> list[Market]:
        out = []
        for t in tickers:
            try:
                out.append(await self.rest.market(t))
            except KalshiError as e:
                log.warning("discovery_market_failed", ticker=t, error=str(e))
        return out

    async def _store(self, series: Series, events: list[KEvent]) -> None:
        if self.sessions is None:
            return
        async with self.sessions() as s, s.begin():
            await upsert(s, tables.Series, {
                "ticker": series.ticker, "title": series.title, "category": series.category,
                "frequency": series.frequency, "tags": series.tags, "fee_type": series.fee_type,
                "fee_multiplier": series.fee_multiplier, "settlement_sources": series.settlement_sources,
                "contract_url": series.contract_url, "contract_terms_url": series.contract_terms_url,
                "exchange_index": series.exchange_index}, key=["ticker"])
            for e in events:
                await upsert(s, tables.Event, {
                    "event_ticker": e.event_ticker, "series_ticker": e.series_ticker, "title": e.title,
                    "sub_title": e.sub_title, "mutually_exclusive": e.mutually_exclusive,
                    "strike_date": e.strike_date}, key=["event_ticker"])

    async def _store_market(self, m: Market, series: Series) -> None:
        if self.sessions is None:
            return
        async with self.sessions() as s, s.begin():
            await upsert(s, tables.Market, {
                "ticker": m.ticker, "event_ticker": m.event_ticker, "series_ticker": series.ticker,
                "market_type": m.market_type, "title": m.title, "yes_sub_title": m.yes_sub_title,
                "no_sub_title": m.no_sub_title, "status": m.status, "strike_type": m.strike_type,
                "floor_strike": m.floor_strike, "cap_strike": m.cap_strike, "open_time": m.open_time,
                "close_time": m.close_time, "expected_expiration_time": m.expected_expiration_time,
                "latest_expiration_time": m.latest_expiration_time, "can_close_early": m.can_close_early,
                "price_level_structure": m.price_level_structure,
                "price_ranges": [list(r) for r in m.grid.ranges], "result": m.result or None,
                "expiration_value": m.expiration_value or None, "rules_primary": m.rules_primary,
                "exchange_index": m.exchange_index}, key=["ticker"])

    async def run(self, stop: asyncio.Event, interval_s: float = 60.0, wake: asyncio.Event | None = None) -> None:
        """Poll every `interval_s`, or sooner when `wake` is set (a lifecycle event arrived)."""
        wake = wake or asyncio.Event()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("discovery_failed")
            wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
            await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            for p in waiters:
                p.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await p
