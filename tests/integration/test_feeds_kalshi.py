"""Feeds' Kalshi side against the simulated exchange, with real NATS and PostgreSQL.

Discovery finds the scenario's markets and stores them; `md.book` follows the exchange book through
random flow, a forced seq gap and a dropped connection; a corrupted local book is caught by the
divergence check; without keys, books come from REST polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import create_engine, session_factory
from libs.common.db import feeds as tables
from libs.common.events import ANY_EVENT, Alert, BookUpdate, MarketDefinition
from libs.common.kalshi import KalshiRest, KalshiWS
from services.feeds.books import BookFanout, DivergenceCheck, RestBookPoller, SnapshotSampler
from services.feeds.discovery import Discovery
from services.feeds.service import make_emit
from tests.integration.test_kalshi_client import random_flow, until
from tests.kit.sim import BTC_SERIES, BTC_TICKERS, SERIES, TICKERS, SimRig, sim_rig


class Tap:
    """Everything published under `md.>` and `ops.alert.>`, as seen by a subscriber on the bus."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.books: dict[str, BookUpdate] = {}

    async def on_event(self, ev: Any) -> None:
        self.events.append(ev)
        if isinstance(ev, BookUpdate):
            self.books[ev.ticker] = ev

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def env(nats_url: str, db_url: str) -> AsyncIterator[tuple[SimRig, Bus, Tap, Any]]:
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
    await bus.provision()
    tap = Tap()
    await bus.subscribe("md.>", ANY_EVENT, tap.on_event)
    await bus.subscribe("ops.alert.>", ANY_EVENT, tap.on_event)
    engine = create_engine(db_url)
    async with sim_rig() as rig:
        yield rig, bus, tap, session_factory(engine)
    await bus.close()
    await engine.dispose()


async def books_match(tap: Tap, rest: KalshiRest, tickers: list[str]) -> None:
    """The last md.book event of every market equals the exchange's REST book."""
    want = await rest.orderbooks(tickers)
    await until(lambda: all(t in tap.books and list(tap.books[t].yes_bids) == want[t].yes
                            and list(tap.books[t].no_bids) == want[t].no for t in tickers),
                what="md.book to match the exchange")


async def test_discovery_stores_and_publishes_changes_once(env: tuple[SimRig, Bus, Tap, Any]) -> None:
    rig, bus, tap, sessions = env
    rest = rig.client("feeds")
    opened: list[list[str]] = []

    async def on_open(tickers: list[str]) -> None:
        opened.append(tickers)

    d = Discovery(rest, [SERIES, BTC_SERIES], make_emit(bus), mode=Mode.SIM, sessions=sessions, on_open=on_open)
    changed = await d.poll_once()
    assert sorted(c.ticker for c in changed) == sorted(TICKERS + BTC_TICKERS)
    assert opened[-1] == sorted(TICKERS + BTC_TICKERS)
    await until(lambda: len(tap.of(MarketDefinition)) == 9, what="md.market events")
    btc = next(m for m in tap.of(MarketDefinition) if m.ticker == BTC_TICKERS[0])
    assert btc.ticker == "KXBTCD-26NOV2317-T78499.99" and str(btc.floor_strike) == "78499.99"
    assert btc.price_ranges[0].step == 100 and btc.fee_type == "quadratic"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(tables.Market)) == 9
        row = await s.get(tables.Market, TICKERS[1])
        assert row.strike_type == "between" and row.status == "active"

    assert await d.poll_once() == []  # nothing changed: nothing re-published
    rig.exchange.engine.set_status(TICKERS[0], "closed")
    changed = await d.poll_once()
    assert [(c.ticker, c.status) for c in changed] == [(TICKERS[0], "closed")]
    assert TICKERS[0] not in opened[-1]
    async with sessions() as s:
        assert (await s.get(tables.Market, TICKERS[0])).status == "closed"


async def test_ws_books_on_the_bus_follow_the_exchange_through_faults(env: tuple[SimRig, Bus, Tap, Any]) -> None:
    rig, bus, tap, sessions = env
    fanout = BookFanout(make_emit(bus), mode=Mode.SIM)
    ws = KalshiWS(rig.env, rig.signer("feeds"), on_book=fanout.on_book, backoff_base_s=0.05,
                  backoff_cap_s=0.05)
    rig.client("feeds")
    await ws.subscribe_books(TICKERS)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ws.run(stop)), asyncio.create_task(fanout.run(stop))]
    users = [rig.client(u) for u in ("alice", "bob", "carol")]
    try:
        await random_flow(users, TICKERS, 200, seed=21)
        await books_match(tap, users[0], TICKERS)
        assert fanout.published < fanout.deltas_in, "bursts should be coalesced"

        rig.exchange.faults.drop_next_seq(TICKERS[2])
        await random_flow(users, [TICKERS[2]], 20, seed=22)
        await until(lambda: ws.gaps >= 1, what="gap")
        await books_match(tap, users[0], TICKERS)

        rig.exchange.faults.cut_connections()
        await random_flow(users, TICKERS, 40, seed=23)
        await books_match(tap, users[0], TICKERS)

        sampler = SnapshotSampler(sessions, ws.books)
        assert await sampler.sample_once() == len(TICKERS)
        async with sessions() as s:
            snap = (await s.execute(select(tables.MarketSnapshot).where(
                tables.MarketSnapshot.ticker == TICKERS[2]))).scalar_one()
        book = ws.books[TICKERS[2]]
        assert snap.yes_bid_price == (book.best_yes_bid[0] if book.best_yes_bid else None)

        # Corrupt one local book behind the client's back: the divergence check notices and repairs it.
        ws.books[TICKERS[3]].apply_delta("yes", 100, 777)
        check = DivergenceCheck(users[0], ws.books, make_emit(bus), mode=Mode.SIM, resnapshot=ws.resnapshot,
                                confirm_delay_s=0.05)
        assert await check.check_once() == [TICKERS[3]]
        await until(lambda: any(isinstance(a, Alert) and a.family == "divergence" for a in tap.events),
                    what="divergence alert")
        want = (await users[0].orderbook(TICKERS[3])).yes
        await until(lambda: ws.books[TICKERS[3]].valid and ws.books[TICKERS[3]].yes_levels() == want,
                    what="resnapshot")
        assert await check.check_once() == []
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_rest_polling_books_without_keys(env: tuple[SimRig, Bus, Tap, Any]) -> None:
    rig, bus, tap, _ = env
    users = [rig.client(u) for u in ("alice", "bob")]
    await random_flow(users, TICKERS, 60, seed=31)
    public = KalshiRest(rig.env)
    try:
        fanout = BookFanout(make_emit(bus), mode=Mode.SIM)
        poller = RestBookPoller(public, fanout)
        poller.track(TICKERS)
        assert await poller.poll_once() >= 1
        await fanout.flush()
        assert await poller.poll_once() == 0  # unchanged books are not republished
        await books_match(tap, users[0], [t for t in TICKERS if tap.books.get(t)])
        assert all(e.series_ticker == SERIES for e in tap.of(BookUpdate))
        assert subjects.md_book(SERIES, TICKERS[1]).endswith("b50_5")
    finally:
        await public.aclose()


async def test_discovery_keeps_series_apart_when_one_ticker_prefixes_another() -> None:
    from datetime import UTC, datetime

    from services.sim.scenarios import default_world

    async def nothing(subject: str, event: Any) -> None:
        return None

    async with sim_rig(default_world(3, datetime.now(UTC))) as rig:
        d = Discovery(rig.client("feeds"), ["KXBTC", "KXBTCD"], nothing, mode=Mode.SIM)
        first = await d.poll_once()
        assert len(first) == len({c.ticker for c in first})  # each market published once
        assert all(c.series_ticker == c.ticker.split("-")[0] for c in first)
        assert await d.poll_once() == []


async def test_public_trades_reach_md_trade(env: tuple[SimRig, Bus, Tap, Any]) -> None:
    from libs.common.events import PublicTrade
    from services.feeds.service import trade_event

    rig, bus, tap, _ = env
    emit = make_emit(bus)

    async def on_message(frame: dict[str, Any]) -> None:
        ev = trade_event(frame, Mode.SIM)
        if ev is not None:
            await emit(subjects.md_trade(ev.series_ticker, ev.ticker), ev)

    ws = KalshiWS(rig.env, rig.signer("feeds"), on_message=on_message)
    rig.client("feeds")
    await ws.subscribe("trade")
    stop = asyncio.Event()
    task = asyncio.create_task(ws.run(stop))
    try:
        await until(lambda: len(ws._by_sid) == 1, what="trade subscription")
        alice, bob = rig.client("alice"), rig.client("bob")
        await bob.create_order(TICKERS[1], "ask", 3_700, 250, client_order_id="b1")
        await alice.create_order(TICKERS[1], "bid", 3_800, 250, client_order_id="a1")
        await until(lambda: bool(tap.of(PublicTrade)), what="md.trade")
        [trade] = tap.of(PublicTrade)
        assert (trade.ticker, trade.yes_price, trade.count, trade.taker_outcome_side) == (TICKERS[1], 3_700, 250,
                                                                                          "yes")
        assert trade.id.startswith("trade:")
    finally:
        stop.set()
        await task
