"""Station bias: fitted by the resolver from official reports, published, and applied to the next weather ladder."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, load_settings
from libs.common.db import create_engine, session_factory
from libs.common.db import signals as tables
from libs.common.db.upsert import insert_if_new
from libs.common.events import ModelParamUpdate, PriceRange, Signal, WxForecast
from libs.common.kalshi import KalshiRest
from libs.common.kalshi.rest import sim_environment
from services.resolver.service import Resolver
from services.resolver.store import ResolverStore
from services.signals.pipeline import SignalPipeline
from services.signals.service import SignalStore, attach
from services.sim.scenarios import weather_event
from services.sim.world import World
from services.sim.wxfake import WeatherFake, WeatherTruth
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings
from tests.kit.factories import ensemble_members, market_definition

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
MAXIMA = {date(2026, 11, 21): 50, date(2026, 11, 22): 55, date(2026, 11, 23): 60}
WARM = 3.0  # the desk's forecasts ran 3 °F too warm on each of those days


async def test_a_warm_station_bias_is_fitted_published_and_shifts_the_next_ladder(nats_url: str, db_url: str) -> None:
    wx = await WeatherFake(WeatherTruth(5, {("KNYC", d): float(v) for d, v in MAXIMA.items()}),
                           clock=lambda: NOW).start()
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        for day, mx in MAXIMA.items():
            for k in range(2):
                await insert_if_new(s, tables.Signal, {
                    "signal_id": f"sig:bias:{day}:{k}", "mode": "sim", "family": "weather",
                    "series_ticker": "KXHIGHNY", "event_ticker": f"KXHIGHNY-{day:%y%b%d}".upper(),
                    "ticker": f"KXHIGHNY-{day:%y%b%d}-B{mx}.5".upper(), "model": "wx_ens:1", "model_prob": 0.3,
                    "decision": "trade", "ts_event": NOW - timedelta(days=2),
                    "inputs": {"station": "KNYC", "climate_date": day.isoformat(), "mean_f": mx + WARM,
                               "bias_f": 0.0, "observed_max_f": None}}, key=["signal_id"])
    bus = await Bus.connect(nats_url, service="test", mode=Mode.SIM)
    await bus.provision()
    world = World(3, lambda: NOW)
    event = weather_event(world, day=date(2026, 11, 25), true_mean_f=48.0, spread_f=2.5)
    markets = world.catalog.markets_of(event)

    async def emit(sig: Signal) -> None:
        return None

    pipeline = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings().risk, clock=lambda: NOW)
    nws = httpx.AsyncClient(base_url=wx.url, headers={"User-Agent": "kdesk-test"})
    rest = KalshiRest(sim_environment("http://127.0.0.1:9/trade-api/v2", "ws://127.0.0.1:9"))  # not used here
    resolver = Resolver(desk_settings(feeds_series="KXHIGHNY"), bus, ResolverStore(sessions, "sim", clock=lambda: NOW),
                        rest, nws)
    try:
        await attach(bus, pipeline, SignalStore(sessions))
        for m in markets:
            await bus.publish_js(subjects.md_market(m.series_ticker, m.ticker), market_definition(
                m.ticker, ts_event=NOW, event_ticker=event, series_ticker=m.series_ticker, strike_type=m.strike_type,
                floor_strike=m.floor_strike, cap_strike=m.cap_strike, close_time=m.close_time,
                price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges)))
        await bus.publish_js(subjects.md_wx_forecast("nyc"), WxForecast(
            id="wx:bias:KNYC:1", ts_event=NOW, mode=Mode.SIM, city="nyc", station="KNYC", run_time=NOW,
            members=ensemble_members(world.facts[event])))
        await until(lambda: len(pipeline.weather_p) == len(markets), what="first ladder")
        before = pipeline.weather_p[markets[0].ticker].inputs["mean_f"]

        assert await resolver.reports.poll() == len(MAXIMA)  # the three final CLI reports
        await resolver.fit_station_biases()
        expected = round(len(MAXIMA) * WARM / (len(MAXIMA) + 10), 3)  # shrunk towards 0 by 10 days
        got = await bus.js.subscribe(bus.wire("res.param.>"), ordered_consumer=True)
        param = ModelParamUpdate.model_validate_json((await got.next_msg(timeout=5)).data)
        assert (param.scope, param.value, param.n_samples) == ("KNYC", expected, len(MAXIMA))

        await until(lambda: pipeline.weather_p[markets[0].ticker].inputs.get("bias_f") == expected,
                    what="the ladder re-priced with the bias")
        after = pipeline.weather_p[markets[0].ticker].inputs["mean_f"]
        assert abs((before - after) - expected) < 0.15, (before, after)  # the distribution moved down by it
        await resolver.fit_station_biases()  # nothing new: nothing published again
        async with sessions() as s:
            rows = (await s.scalars(select(tables.ModelParam))).all()
        assert [(r.name, r.scope, r.value) for r in rows] == [("station_bias_f", "KNYC", expected)]
    finally:
        await nws.aclose()
        await rest.aclose()
        await bus.close()
        await wx.stop()
        await engine.dispose()
