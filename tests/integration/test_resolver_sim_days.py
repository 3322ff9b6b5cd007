"""Forty simulated weather days and twelve BTC hours settle on a stepped clock; the resolver reads every one
of them from the simulator's REST API, and every prediction is scored against the seeded outcome."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import MarketResolution, PredictionAccuracy, create_engine, session_factory
from libs.common.db import signals as sig_tables
from libs.common.db.upsert import insert_many_if_new
from libs.common.kalshi import KalshiRest
from services.resolver.service import Resolver
from services.resolver.store import ResolverStore
from services.sim.scenarios import btc_ladder, weather_event
from services.sim.world import World
from tests.kit.desk import desk_settings
from tests.kit.sim import sim_rig

START = datetime(2026, 10, 1, 12, tzinfo=UTC)


@pytest.mark.slow
async def test_hundreds_of_sim_markets_settle_and_are_each_resolved_and_scored_once(nats_url: str,
                                                                                  db_url: str) -> None:
    now = [START]
    world = World(21, lambda: now[0])
    events = [weather_event(world, day=date(2026, 10, 2) + timedelta(days=d)) for d in range(40)]
    events += [btc_ladder(world, close=START + timedelta(hours=2 + h), spot=88_000.0 + 300 * h, n_strikes=20)
               for h in range(12)]
    markets = [m.ticker for e in events for m in world.catalog.markets_of(e)]
    rng = random.Random(3)
    signals = [{"signal_id": f"sig:{t}", "mode": "sim", "family": "weather" if t.startswith("KXHIGH") else "btc",
                "series_ticker": t.split("-")[0], "event_ticker": t.rsplit("-", 1)[0], "ticker": t, "model": "test",
                "model_prob": min(max(world.truth[t] + rng.gauss(0, 0.05), 0.01), 0.99), "market_prob": 0.5,
                "decision": "trade", "ts_event": START} for t in markets]
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        await insert_many_if_new(s, sig_tables.Signal, signals, key=["signal_id"])
    now[0] = START + timedelta(days=45)  # every market is past its expiration
    world.advance()
    async with sim_rig(world) as rig:
        bus = await Bus.connect(nats_url, service="resolver", mode=Mode.SIM)
        await bus.provision()
        rest = KalshiRest(rig.env)
        resolver = Resolver(desk_settings(feeds_series="KXHIGHNY,KXBTCD"), bus, ResolverStore(sessions, "sim"), rest,
                            None)
        try:
            assert await resolver.sweep() == len(markets) >= 480
            assert await resolver.score() == len(markets)
            assert await resolver.sweep() == 0 and await resolver.score() == 0  # a second pass: nothing
            async with sessions() as s:
                res = {r.ticker: r for r in (await s.scalars(select(MarketResolution))).all()}
                scores = (await s.scalars(select(PredictionAccuracy))).all()
            assert {t: r.result for t, r in res.items()} == {t: world.outcomes[t] for t in markets}
            assert all(r.expiration_value for r in res.values())  # the day's max / the settlement price
            assert len(scores) == len(markets)
            assert all(a.outcome == (1 if world.outcomes[a.ticker] == "yes" else 0) for a in scores)
            acc = await resolver.cmd_accuracy({"days": 3650})
            assert acc["families"]["weather"]["n"] == 240 and acc["families"]["btc"]["n"] == 240
        finally:
            await rest.aclose()
            await bus.close()
            await engine.dispose()
