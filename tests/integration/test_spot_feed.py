"""Spot feeds against the fake venues over real sockets; bars into a real PostgreSQL; ticks over real NATS."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import websockets
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import CryptoSpotBar, create_engine, session_factory
from libs.common.events import Event, SpotTick
from libs.common.health import Freshness
from services.feeds.spot import (
    BarBuilder,
    SpotBar,
    Venue,
    VenueFeed,
    binance,
    bitstamp,
    coinbase,
    kraken,
    usd_ticks,
)
from services.feeds.spot_store import store_bars
from services.sim.venues import FakeCoinbase, FakeVenues

PRICE = 95_000.0
THREE = ("coinbase", "kraken", "bitstamp")


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until true (tests wait on conditions, never fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Desk:
    """Three running feeds and what they emitted."""

    fakes: FakeVenues
    freshness: Freshness
    feeds: dict[str, VenueFeed]
    events: list[tuple[str, Event]] = field(default_factory=list)

    def ticks(self, venue: str) -> list[SpotTick]:
        return [e for s, e in self.events if isinstance(e, SpotTick) and e.venue == venue]


def fast(v: Venue, **kw: object) -> Venue:
    """A venue with test-sized time budgets (the fakes emit every 20 ms and beat every 100 ms)."""
    return replace(v, stale_after_s=1.0, max_age_s=0.5, keepalive_interval_s=0.2, **kw)  # type: ignore[arg-type]


def start_feeds(fakes: FakeVenues, emit: Callable[[str, Event], Awaitable[None]], stop: asyncio.Event,
                freshness: Freshness) -> tuple[dict[str, VenueFeed], list[asyncio.Task[None]]]:
    venues = [fast(coinbase(fakes.ws_url("coinbase"))), fast(kraken(fakes.ws_url("kraken"))),
              fast(bitstamp(fakes.ws_url("bitstamp")))]
    feeds = {v.name: VenueFeed(v, emit, mode=Mode.SIM, freshness=freshness, backoff_base_s=0.05, backoff_cap_s=0.2,
                               rng=random.Random(1)) for v in venues}
    return feeds, [asyncio.create_task(f.run(stop)) for f in feeds.values()]


@pytest.fixture
async def fakes() -> AsyncIterator[FakeVenues]:
    async with FakeVenues(lambda _: PRICE, venues=THREE, interval_s=0.02, heartbeat_interval_s=0.1, seed=7) as f:
        yield f


@pytest.fixture
async def desk(fakes: FakeVenues) -> AsyncIterator[Desk]:
    freshness = Freshness()
    events: list[tuple[str, Event]] = []

    async def emit(subject: str, event: Event) -> None:
        events.append((subject, event))

    stop = asyncio.Event()
    feeds, tasks = start_feeds(fakes, emit, stop, freshness)
    d = Desk(fakes, freshness, feeds, events)
    await wait_until(lambda: all(len(d.ticks(v)) >= 3 for v in THREE), what="ticks from every venue")
    yield d
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_ticks_arrive_from_all_three_venues_at_the_fake_prices(desk: Desk) -> None:
    for venue in THREE:
        lo, hi = (usd_ticks(x.quantize(Decimal("0.0001"))) for x in desk.fakes[venue].band())
        ticks = desk.ticks(venue)
        assert all(lo <= t.price <= hi for t in ticks), (venue, lo, hi, [t.price for t in ticks])
        assert all(t.mode == Mode.SIM for t in ticks)
        quoted = [t for t in ticks if t.bid is not None]
        assert all(lo <= t.bid < t.ask <= hi for t in quoted)  # type: ignore[operator]
    assert {s for s, _ in desk.events} == {subjects.md_spot_btc(v) for v in THREE}
    cb = desk.ticks("coinbase")
    assert {t.kind for t in cb} == {"trade"} and all(t.bid and t.ask and t.size for t in cb)
    assert all(t.id.startswith("spot:coinbase:btc-usd:") for t in cb)
    assert {t.kind for t in desk.ticks("kraken")} == {"ticker"}
    bs = desk.ticks("bitstamp")
    assert all(t.kind == "trade" and t.id.startswith("spot:bitstamp:btcusd:") and t.price % 10_000 == 0 for t in bs)
    assert not any(t.stale for t in desk.freshness.snapshot().values())
    # The fake stamps venue time; the feed keeps it as ts_event and its own time as ts_init.
    assert all(t.ts_event <= t.ts_init for t in cb)


async def test_paused_venue_goes_stale_while_the_others_stay_fresh(desk: Desk) -> None:
    desk.fakes["coinbase"].pause()
    await wait_until(lambda: desk.freshness.snapshot()["spot_coinbase"].stale, what="coinbase stale")
    snap = desk.freshness.snapshot()
    assert not snap["spot_kraken"].stale and not snap["spot_bitstamp"].stale
    # Silence past stale_after_s is a dead connection: the feed reconnects, and the paused venue still says nothing.
    await wait_until(lambda: desk.feeds["coinbase"].connects >= 2, what="reconnect to the silent venue")
    assert desk.freshness.snapshot()["spot_coinbase"].stale
    desk.fakes["coinbase"].resume()
    await wait_until(lambda: not desk.freshness.snapshot()["spot_coinbase"].stale, what="coinbase fresh again")


async def test_cut_connection_reconnects_and_ticks_resume(desk: Desk) -> None:
    feed = desk.feeds["kraken"]
    assert feed.connects == 1
    assert desk.fakes["kraken"].cut() == 1
    await wait_until(lambda: feed.connects == 2, what="kraken reconnect")
    n = len(desk.ticks("kraken"))
    await wait_until(lambda: len(desk.ticks("kraken")) >= n + 5, what="kraken ticks after reconnect")
    # Resubscribed on the new connection (C5): the fake saw the subscribe twice.
    subs = [m for m in desk.fakes["kraken"].received if m.get("method") == "subscribe"]
    assert len(subs) == 2 and subs[0] == subs[1]


async def test_garbage_is_counted_and_skipped_and_the_feed_keeps_going(desk: Desk) -> None:
    for venue in THREE:
        desk.fakes[venue].send_garbage()
    await wait_until(lambda: all(desk.feeds[v].malformed == 1 for v in THREE), what="garbage seen")
    counts = {v: len(desk.ticks(v)) for v in THREE}
    await wait_until(lambda: all(len(desk.ticks(v)) >= counts[v] + 3 for v in THREE), what="ticks after garbage")
    assert all(desk.feeds[v].connects == 1 for v in THREE)  # a bad frame is no reason to reconnect
    assert "not JSON" in (desk.feeds["coinbase"].last_malformed or "")


async def test_bitstamp_reconnect_request_is_obeyed(desk: Desk) -> None:
    assert await desk.fakes["bitstamp"].request_reconnect() == 1  # type: ignore[attr-defined]
    await wait_until(lambda: desk.feeds["bitstamp"].connects == 2, what="bitstamp reconnect")
    n = len(desk.ticks("bitstamp"))
    await wait_until(lambda: len(desk.ticks("bitstamp")) > n, what="bitstamp ticks after reconnect")


async def test_keepalives_are_sent_and_answered(desk: Desk) -> None:
    pings = lambda v: [m for m in desk.fakes[v].received if m.get("method") == "ping" or  # noqa: E731
                       m.get("event") == "bts:heartbeat"]
    await wait_until(lambda: len(pings("kraken")) >= 2 and len(pings("bitstamp")) >= 2, what="client keepalives")


async def test_ticks_reach_subscribers_over_nats(fakes: FakeVenues, nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
    got: list[SpotTick] = []

    async def on_tick(t: SpotTick) -> None:
        got.append(t)

    await bus.subscribe("md.spot.btc.*", SpotTick, on_tick)
    stop = asyncio.Event()
    _, tasks = start_feeds(fakes, bus.publish, stop, Freshness())
    try:
        await wait_until(lambda: {t.venue for t in got} == set(THREE), what="ticks over NATS")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await bus.close()
    assert all(isinstance(t.price, int) for t in got)


async def test_binance_feed_against_the_fake() -> None:
    events: list[tuple[str, Event]] = []

    async def emit(subject: str, event: Event) -> None:
        events.append((subject, event))

    async with FakeVenues(lambda _: PRICE, venues=("binance",), interval_s=0.02) as fakes:
        feed = VenueFeed(fast(binance(fakes.ws_url("binance"))), emit, mode=Mode.SIM, backoff_base_s=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            await wait_until(lambda: {e.kind for _, e in events} == {"trade", "ticker"},  # type: ignore[attr-defined]
                             what="binance trades and book tickers")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        lo, hi = (usd_ticks(x.quantize(Decimal("0.0001"))) for x in fakes["binance"].band())
    assert {s for s, _ in events} == {subjects.md_spot_btc("binance")}
    assert all(lo <= e.price <= hi for _, e in events)  # type: ignore[attr-defined]
    assert fakes["binance"].received[0] == {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@bookTicker"],
                                            "id": 1}


async def test_fake_coinbase_closes_a_socket_that_does_not_subscribe_in_time() -> None:
    fake = await FakeCoinbase(lambda _: PRICE, interval_s=0.02, subscribe_timeout_s=0.1).start()
    try:
        async with websockets.connect(fake.ws_url) as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    await ws.recv()
            assert ws.close_code == 1008
    finally:
        await fake.stop()


# --- bars ------------------------------------------------------------------------------------------

T0 = datetime(2026, 8, 25, 17, 0, 0, tzinfo=UTC)


def tick(ms: int, price: str, size: str | None = None, venue: str = "coinbase", kind: str = "trade") -> SpotTick:
    return SpotTick(ts_event=T0 + timedelta(milliseconds=ms), mode=Mode.SIM, venue=venue,
                    symbol="BTC-USD" if venue == "coinbase" else "BTC/USD", kind=kind,  # type: ignore[arg-type]
                    price=usd_ticks(price), size=None if size is None else Decimal(size))


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Callable[[], object]]:
    engine = create_engine(db_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_bars_have_exact_ohlc_and_store_idempotently(sessions: Callable[[], object]) -> None:
    closed: list[SpotBar] = []

    async def sink(bars: Sequence[SpotBar]) -> None:
        closed.extend(bars)
        async with sessions() as s:  # type: ignore[attr-defined]
            await store_bars(s, bars)
            await s.commit()

    builder = BarBuilder(sink)
    for t in [tick(0, "95000.00", "0.5"), tick(100, "95010.50", "0.25"), tick(300, "94990.25", "0.25"),
              tick(999, "95001.00", "1.0"),
              tick(150, "95100.0", venue="kraken", kind="ticker"),
              tick(1_000, "95002.00", "0.1"),  # second 1: closes coinbase's second 0
              tick(500, "94000.00", "9"),  # late for a closed bar: dropped
              tick(1_200, "95003.00", "0.1")]:
        await builder.add(t)
    assert [b.ts for b in closed] == [T0] and builder.late == 1
    b0 = closed[0]
    assert (b0.open, b0.high, b0.low, b0.close) == (950_000_000, 950_105_000, 949_902_500, 950_010_000)
    assert (b0.volume, b0.ticks, b0.trades) == (Decimal("2.00"), 4, 4)
    # VWAP = (95000×0.5 + 95010.5×0.25 + 94990.25×0.25 + 95001×1) / 2 = 95000.59375 → half-even to $0.0001.
    assert b0.vwap == 950_005_938
    assert await builder.flush(T0 + timedelta(seconds=1, milliseconds=500)) == 1  # kraken's second 0 only
    assert await builder.flush() == 1  # coinbase's second 1 on shutdown
    kr = next(b for b in closed if b.venue == "kraken")
    assert (kr.open, kr.close, kr.volume, kr.vwap, kr.ticks, kr.trades) == (951_000_000, 951_000_000, None, None, 1, 0)

    async with sessions() as s:  # type: ignore[attr-defined]
        rows = (await s.execute(select(CryptoSpotBar).order_by(CryptoSpotBar.venue, CryptoSpotBar.ts))).scalars().all()
        assert [(r.venue, r.symbol, r.interval_s, r.ts) for r in rows] == [
            ("coinbase", "BTC-USD", 1, T0), ("coinbase", "BTC-USD", 1, T0 + timedelta(seconds=1)),
            ("kraken", "BTC/USD", 1, T0)]
        r0 = rows[0]
        assert (r0.open_price, r0.high_price, r0.low_price, r0.close_price, r0.vwap_price, r0.volume_base,
                r0.trade_count) == (950_000_000, 950_105_000, 949_902_500, 950_010_000, 950_005_938, Decimal("2"), 4)
        assert rows[2].volume_base is None and rows[2].trade_count == 0
        # Re-storing the same bars inserts nothing and changes nothing.
        assert await store_bars(s, closed) == 0
        await s.commit()
        again = (await s.execute(select(CryptoSpotBar).order_by(CryptoSpotBar.venue, CryptoSpotBar.ts))).scalars()
        assert [(r.id, r.open_price, r.close_price, r.volume_base) for r in again.all()] == [
            (r.id, r.open_price, r.close_price, r.volume_base) for r in rows]


async def test_live_feeds_close_bars_into_the_database(fakes: FakeVenues, sessions: Callable[[], object]) -> None:
    stored: list[SpotBar] = []

    async def sink(bars: Sequence[SpotBar]) -> None:
        async with sessions() as s:  # type: ignore[attr-defined]
            await store_bars(s, bars)
            await s.commit()
        stored.extend(bars)

    builder = BarBuilder(sink)

    async def emit(subject: str, event: Event) -> None:
        assert isinstance(event, SpotTick)
        await builder.add(event)

    stop = asyncio.Event()
    _, tasks = start_feeds(fakes, emit, stop, Freshness())
    try:
        await wait_until(lambda: {b.venue for b in stored} == set(THREE), what="a closed bar per venue")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    async with sessions() as s:  # type: ignore[attr-defined]
        rows = (await s.execute(select(CryptoSpotBar))).scalars().all()
    assert {r.venue for r in rows} == set(THREE)
    for r in rows:
        assert r.low_price <= min(r.open_price, r.close_price) <= max(r.open_price, r.close_price) <= r.high_price
        assert abs(r.close_price - PRICE * 10_000) < PRICE * 10_000 * 0.001
