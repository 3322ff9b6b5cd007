"""Signals over real NATS + PostgreSQL against a sim scenario: the mispriced markets signal, the fair ones do not."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, load_settings
from libs.common.db import create_engine, session_factory
from libs.common.db import signals as tables
from libs.common.events import ANY_EVENT, PriceRange, Signal, WxForecast
from services.signals.pipeline import SignalPipeline
from services.signals.service import SignalStore, attach
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import weather_event
from services.sim.world import World
from tests.integration.test_kalshi_client import until
from tests.kit.factories import book_update, ensemble_members, market_definition


async def test_mispriced_weather_markets_signal_and_fair_ones_do_not(nats_url: str, db_url: str) -> None:
    now = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # 15:00 EST: tomorrow's NYC markets are open
    world = World(11, lambda: now)
    event = weather_event(world, day=date(2026, 11, 23), true_mean_f=55.0, spread_f=2.5)
    markets = world.catalog.markets_of(event)
    # Bracket markets whose truth leaves room for a 25-point overpricing.
    mispriced = [m.ticker for m in markets if 0.1 < world.truth[m.ticker] < 0.6][:2]
    assert len(mispriced) == 2
    traders = BackgroundTraders(world, mispricing={t: 0.25 for t in mispriced}, half_spread=0.015, noise=0.005)
    traders.step(1500)

    bus = await Bus.connect(nats_url, service="signals-test", mode=Mode.SIM)
    await bus.provision()
    got: list[Signal] = []

    async def on_sig(ev: Any) -> None:
        if isinstance(ev, Signal):
            got.append(ev)

    await bus.subscribe("sig.>", ANY_EVENT, on_sig)
    engine = create_engine(db_url)
    store = SignalStore(session_factory(engine))
    risk = load_settings(min_edge=0.06, taker_min_edge=0.10, confidence_floor=0.3).risk

    async def emit(sig: Signal) -> None:
        await bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)
        await store.signal(sig, pipeline)

    pipeline = SignalPipeline(emit, mode=Mode.SIM, risk=risk, clock=lambda: now)
    try:
        await attach(bus, pipeline, store)
        for m in markets:  # what feeds would publish: definitions, a forecast, books
            d = market_definition(m.ticker, ts_event=now, event_ticker=event, series_ticker=m.series_ticker,
                                  strike_type=m.strike_type, floor_strike=m.floor_strike, cap_strike=m.cap_strike,
                                  close_time=m.close_time,
                                  price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges))
            await bus.publish_js(subjects.md_market(m.series_ticker, m.ticker), d)
        facts = world.facts[event]
        members = ensemble_members(facts)
        await bus.publish_js(subjects.md_wx_forecast("nyc"), WxForecast(
            id="wx:test:KNYC:1", ts_event=now, mode=Mode.SIM, city="nyc", station="KNYC", run_time=now,
            members=members))
        await until(lambda: len(pipeline.weather_p) == len(markets), what="weather ladder")
        for seq, m in enumerate(markets, start=1):
            yes, no = world.engine.book(m.ticker)
            await bus.publish(subjects.md_book(m.series_ticker, m.ticker), book_update(
                m.ticker, tuple(yes), tuple(no), ts_event=now, series_ticker=m.series_ticker, seq=seq))
        await until(lambda: sum(st.book is not None for st in pipeline.markets.values()) == len(markets), what="books")
        await until(lambda: {s.ticker for s in got} >= set(mispriced),
                    what=f"signals for the mispriced markets (suppressed: {pipeline.suppressed})")
        await asyncio.sleep(0.3)
        assert {s.ticker for s in got} == set(mispriced), pipeline.suppressed
        for s in got:
            assert s.action == "buy_no" and s.edge_maker is not None and s.edge_maker >= 600
            assert abs(s.p_model - world.truth[s.ticker]) < 0.06
        async with session_factory(engine)() as session:
            rows = (await session.execute(select(tables.Signal))).scalars().all()
            assert {r.ticker for r in rows} == set(mispriced)
            assert all(r.inputs["run_id"] == "wx:test:KNYC:1" and r.inputs["members"] == 150 for r in rows)
            probs = (await session.execute(select(tables.WeatherBracketProb))).scalars().all()
            assert {p.ticker for p in probs} == {m.ticker for m in markets}
            assert abs(sum(p.prob for p in probs) - 1) < 1e-9
        assert pipeline.suppressed["no_edge"] >= 1  # the fair markets were looked at and declined
    finally:
        await bus.close()
        await engine.dispose()


async def test_signal_rows_are_stored_beside_the_hot_path_and_kept_while_the_database_is_away(db_url: str) -> None:
    from services.signals.service import SignalWriter

    good = create_engine(db_url)
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    pipeline = SignalPipeline(lambda s: asyncio.sleep(0), mode=Mode.SIM, risk=load_settings().risk)
    sigs = [Signal(id=f"sig:test:{i}", ts_event=datetime.now(UTC), mode=Mode.SIM, family="weather",
                   series_ticker="KXHIGHNY", event_ticker="KXHIGHNY-26NOV23", ticker=f"KXHIGHNY-26NOV23-B{i}",
                   model="wx_ens", model_version="1", p_model=0.6, p_market=0.5, action="buy_yes",
                   confidence=0.8, valid_until=datetime.now(UTC)) for i in range(5)]
    try:
        writer = SignalWriter(SignalStore(session_factory(dead)), max_pending=4)
        for s in sigs:
            writer.put(SignalStore.row(s, pipeline))
        await writer.flush()  # refused: kept, and the oldest beyond max_pending dropped and counted
        assert writer.failing == 1 and writer.dropped == 1 and len(writer.pending) == 4
        writer.store = SignalStore(session_factory(good))
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        stop.set()
        await task  # the last rows are written on the way out
        assert writer.written == 4 and not writer.pending
        async with session_factory(good)() as session:
            ids = set((await session.scalars(select(tables.Signal.signal_id))).all())
        assert ids == {s.id for s in sigs[1:]}
    finally:
        await good.dispose()
        await dead.dispose()
