"""The whole trading path against a living simulated market, over real sockets, NATS and PostgreSQL.

The sim's background traders overprice two brackets of a weather event; the desk's own feeds fan-out,
signals pipeline and executor find them, rest post-only NO orders, and the crowd's takers fill them.
Then the ledger must match the exchange to the $0.0001: positions, fills, fees.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Fill, Order, Position, create_engine, session_factory
from libs.common.events import Signal, WxForecast
from libs.common.kalshi import KalshiWS
from services.executor.broker import KalshiUpdates
from services.executor.service import Executor
from services.feeds.books import BookFanout
from services.signals.pipeline import SignalPipeline
from services.signals.service import attach
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import weather_event
from services.sim.world import World
from tests.integration.test_executor import eventually, rows
from tests.kit.desk import desk_settings, publish_definitions
from tests.kit.factories import ensemble_members
from tests.kit.sim import sim_rig

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # 15:00 EST: tomorrow's NYC markets are open


async def test_mispriced_brackets_are_bought_as_maker_filled_by_the_crowd_and_booked_to_the_tick(
        nats_url: str, db_url: str) -> None:
    world = World(11, lambda: NOW)
    event = weather_event(world, day=date(2026, 11, 23), true_mean_f=55.0, spread_f=2.5)
    markets = world.catalog.markets_of(event)
    mispriced = [m.ticker for m in markets if 0.1 < world.truth[m.ticker] < 0.6][:2]
    traders = BackgroundTraders(world, mispricing={t: 0.25 for t in mispriced}, half_spread=0.015, noise=0.005,
                                take_probability=0.4)
    traders.step(1500)
    async with sim_rig(world, background=True, tick_s=0.02, traders=traders, trader_steps=4) as rig:
        bus = await Bus.connect(nats_url, service="desk-test", mode=Mode.SIM)
        await bus.provision()
        tickers = [m.ticker for m in markets]
        await publish_definitions(bus, rig, tickers)

        async def emit(sig: Signal) -> None:
            await bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)

        settings = desk_settings(min_edge=0.06, taker_min_edge=0.5, confidence_floor=0.3, max_order_usd="20",
                                 reprice_after_s=5)
        pipeline = SignalPipeline(emit, mode=Mode.SIM, risk=settings.risk, clock=lambda: NOW)
        await attach(bus, pipeline, None)
        facts = world.facts[event]
        members = ensemble_members(facts)
        for attempt in range(50):  # until the definitions reached the pipeline and the ladder exists
            await bus.publish_js(subjects.md_wx_forecast("nyc"), WxForecast(
                id=f"wx:flow:{attempt}", ts_event=NOW, mode=Mode.SIM, city="nyc", station="KNYC", run_time=NOW,
                members=members))
            await asyncio.sleep(0.2)
            if len(pipeline.weather_p) == len(markets):
                break

        stop = asyncio.Event()
        fan = BookFanout(bus.publish, mode=Mode.SIM, clock=lambda: NOW)
        rig.client("feeds")
        feed = KalshiWS(rig.env, rig.signer("feeds"), on_book=fan.on_book)
        tasks = [asyncio.create_task(feed.run(stop)), asyncio.create_task(fan.run(stop))]
        await feed.subscribe_books(tickers)
        engine = create_engine(db_url)
        ex = Executor(settings, bus, session_factory(engine), rig.client("desk"),
                      updates=KalshiUpdates(KalshiWS(rig.env, rig.signer("desk"))), clock=lambda: NOW,
                      loop_interval_s=0.5)
        try:
            await ex.start()

            def filled() -> set[str]:
                return {f.ticker for f in rig.exchange.engine.fills("desk")}

            for _ in range(1500):  # the crowd trades through our resting orders
                if filled() >= set(mispriced) or len(filled()) >= 2:
                    break
                await asyncio.sleep(0.02)
            assert filled(), f"no fills; decisions {ex.desk.decisions}, signals suppressed {pipeline.suppressed}"
            assert filled() <= set(mispriced)  # only the mispriced brackets were traded
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
        # The market is still moving; pause the desk so the books we compare stop changing under us.
        rig.exchange.background = False
        await bus.request("executor", "pause", {"reason": "test"})

        async def quiet() -> bool:  # paused, and the pause's cancels are through
            st = await bus.request("executor", "status")
            return st["blocked"] == "paused" and st["open_orders"] == 0

        await eventually(quiet, what="paused with nothing working")
        report = await bus.request("executor", "reconcile")
        try:
            assert report["disagreements"] == [] and report["positions_repaired"] == []
            ex_fills = rig.exchange.engine.fills("desk")

            async def booked():
                fills = await rows(db_url, Fill, Fill.mode == "sim")
                return fills if len(fills) == len(ex_fills) else None
            fills = await eventually(booked, what="every exchange fill in the ledger")
            assert sorted((f.trade_id, f.count, f.yes_price, f.fee_ticks, f.is_taker) for f in fills) == sorted(
                (f.trade_id, f.count, f.yes_price, f.fee, f.is_taker) for f in ex_fills)
            ledger = {p.ticker: p for p in await rows(db_url, Position, Position.mode == "sim")}
            for p in rig.exchange.engine.positions("desk"):
                mine = ledger[p.ticker]
                assert (mine.position, mine.fees_paid_ticks, mine.cost_ticks) == (
                    p.position, p.fees_paid, p.market_exposure), p.ticker
            orders = [o for o in await rows(db_url, Order, Order.mode == "sim") if o.status != "blocked"]
            assert orders and all(o.post_only and o.book_side == "ask" for o in orders)  # maker NO bids
            assert all(not f.is_taker for f in fills)
        finally:
            await ex.stop()
            await bus.close()
            await engine.dispose()
