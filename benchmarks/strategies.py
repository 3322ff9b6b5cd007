"""Strategies: the market maker and quick flip side by side over one seeded sim session.

The session (KDESK_BENCH_STRATEGY_S seconds, default 600: ten minutes) runs the real path — the simulated
exchange with its learning background crowd (services/sim/liquidity.py), the feeds' book fan-out over the
sim's WebSocket, one executor over real NATS + PostgreSQL with KDESK_ALLOCATION
`directional=0.4,market_making=0.3,quick_flip=0.3` — on two events: an hourly BTC ladder the maker quotes
(KXBTCD) and a Chicago daily-high event quick flip trades (KXHIGHCHI), three of whose brackets the crowd
misprices by 12 cents. The clock runs in real time, started inside the BTC hour so the ladder is open.

The desk's model stands in for the signals service: every half second, for each market, the sim's ideal
probability (what a perfect forecaster with the desk's information would say) plus a model error of
1.5 points (a normal draw per market and minute, about the weather model's measured distance from the
ideal in benchmarks/prediction.py). The maker gets it as its fair value (action `none`); quick flip's
markets get a signal when the book shows an edge over it (libs/common/edge.best_action, the pipeline's
rule).

Reported, from the executor's own `cmd.executor.strategies` at the end of the session:
`mm_pnl_usd` / `quick_flip_pnl_usd` (realized + open positions at the best bid: the desk's conservative
mark), `mm_pnl_at_ideal_usd` / `quick_flip_pnl_at_ideal_usd` (open positions marked at the sim's ideal
probability instead — the expected value of what is held), `mm_fill_rate` / `quick_flip_fill_rate`
(contracts filled / ordered), `mm_adverse_selection_ticks` (per contract, how far the fair value moved
against a maker fill 30 s later), `mm_quote_update_ms_p99` (a book-top or fair-value change to the maker's
create or amend answered) with its stages `mm_quote_{wait,read,venue}_ms_*` (the market's turn; reading
its quotes and position; the venue calls, refresh included), and counts. Everything — the simulator and
its crowd included — shares one event loop here, so the latencies carry the simulator's load too.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from benchmarks.harness import private_nats, private_postgres
from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Position, create_engine, session_factory
from libs.common.edge import BookTop, best_action, edges
from libs.common.events import Signal
from libs.common.kalshi import KalshiWS
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.executor.broker import KalshiUpdates
from services.executor.service import Executor
from services.feeds.books import BookFanout
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import btc_ladder, weather_event
from services.sim.world import World
from tests.kit.desk import desk_settings, publish_definitions
from tests.kit.sim import sim_rig

SEED = 17
START = datetime(2026, 11, 22, 20, 2, tzinfo=UTC)  # two minutes into the 20:00 UTC BTC hour
MODEL_ERROR = 0.015
MISPRICED = 0.12


def _top(world: World, ticker: str) -> BookTop | None:
    yes, no = world.engine.book(ticker)
    if not yes and not no:
        return None
    return BookTop(best_yes_bid=yes[-1][0] if yes else None, best_no_bid=no[-1][0] if no else None,
                   yes_bid_size=yes[-1][1] if yes else 0, no_bid_size=no[-1][1] if no else 0)


async def _session(nats_url: str, db_url: str, seconds: float) -> dict[str, Any]:
    t0 = time.monotonic()

    def clock() -> datetime:
        return START + timedelta(seconds=time.monotonic() - t0)

    world = World(SEED, clock)
    btc = btc_ladder(world, close=START.replace(minute=0) + timedelta(hours=1), spot=95_000.0, n_strikes=8, step=250)
    wx = weather_event(world, series="KXHIGHCHI", city="Chicago", station="KMDW", tz="America/Chicago",
                       day=date(2026, 11, 23))
    mm_tickers = world.catalog.markets_of(btc)
    flip_tickers = world.catalog.markets_of(wx)
    rng = random.Random(SEED)
    mispriced = {m.ticker: MISPRICED * rng.choice((-1, 1)) for m in rng.sample(flip_tickers, 3)}
    traders = BackgroundTraders(world, mispricing=mispriced, half_spread=0.02, noise=0.01, take_probability=0.3)
    traders.step(600)
    tickers = [m.ticker for m in (*mm_tickers, *flip_tickers)]
    settings = desk_settings(allocation="directional=0.4,market_making=0.3,quick_flip=0.3", mm_series="KXBTCD",
                             quick_flip_series="KXHIGHCHI", min_edge=0.04, taker_min_edge=0.5, max_order_usd="20",
                             max_market_usd="60", max_event_usd="150", max_open_orders=80, confidence_floor=0.3,
                             mm_quote_contracts=10, mm_max_inventory=40, mm_max_event_inventory=120,
                             mm_quote_per_minute=300, quick_flip_time_limit_s=240, reprice_after_s=30)
    async with sim_rig(world, background=True, tick_s=0.05, traders=traders, trader_steps=3) as rig:
        bus = await Bus.connect(nats_url, service="bench-strategies", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, tickers)
        stop = asyncio.Event()
        fan = BookFanout(bus.publish, mode=Mode.SIM, clock=clock)
        rig.client("feeds")
        feed = KalshiWS(rig.env, rig.signer("feeds"), on_book=fan.on_book)
        tasks = [asyncio.create_task(feed.run(stop)), asyncio.create_task(fan.run(stop))]
        await feed.subscribe_books(tickers)
        engine = create_engine(db_url)
        ex = Executor(settings, bus, session_factory(engine), rig.client("desk"),
                      updates=KalshiUpdates(KalshiWS(rig.env, rig.signer("desk"))), clock=clock, loop_interval_s=0.5)
        errors: dict[tuple[str, int], float] = {}

        def model_p(ticker: str, now: datetime) -> float:
            key = (ticker, int(now.timestamp() // 60))
            if key not in errors:
                errors[key] = random.Random(f"{SEED}:{key}").gauss(0, MODEL_ERROR)
            return min(max(world.ideal_p(ticker, now) + errors[key], 0.01), 0.99)

        seq = 0

        async def model() -> None:
            nonlocal seq
            lim = settings.risk
            while not stop.is_set():
                now = clock()
                for m in (*mm_tickers, *flip_tickers):
                    p = model_p(m.ticker, now)
                    action = "none"
                    limit = None
                    if m.series_ticker == "KXHIGHCHI":
                        top = _top(world, m.ticker)
                        if top is None:
                            continue
                        d = best_action(edges(p, top, world.engine.market(m.ticker).grid, fee_type="quadratic",
                                              fee_multiplier=1),
                                        min_edge=round(lim.min_edge * ONE_DOLLAR),
                                        taker_min_edge=round(lim.taker_min_edge * ONE_DOLLAR))
                        if d.action == "none":
                            continue
                        action, limit = d.action, d.limit_price
                    seq += 1
                    family = "btc" if m.series_ticker == "KXBTCD" else "weather"
                    sig = Signal(id=f"bench:{m.ticker}:{seq}:{action}", ts_event=now, mode=Mode.SIM, family=family,
                                 series_ticker=m.series_ticker, event_ticker=m.event_ticker, ticker=m.ticker,
                                 model="bench", model_version="1", p_model=p, p_market=0.5, action=action,  # type: ignore[arg-type]
                                 limit_price=limit, confidence=0.9, valid_until=now + timedelta(seconds=20))
                    await bus.publish_js(subjects.sig(family, m.series_ticker, m.ticker), sig)
                await asyncio.sleep(0.5)

        try:
            await ex.start()
            tasks.append(asyncio.create_task(model()))
            await asyncio.sleep(seconds)
            report = await bus.request("executor", "strategies", {}, timeout=10)
            async with session_factory(engine)() as s:
                held = (await s.execute(select(Position.ticker, Position.position, Position.cost_ticks,
                                               Position.realized_pnl_ticks, Position.strategy)
                                        .where(Position.mode == "sim"))).all()
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await ex.stop()
            await bus.close()
            await engine.dispose()
    at_ideal: dict[str, int] = {"market_making": 0, "quick_flip": 0}
    now = clock()
    for ticker, pos, cost, realized, strategy in held:
        if strategy not in at_ideal:
            continue
        p = world.ideal_p(ticker, now)
        value = abs(pos) * round((p if pos > 0 else 1 - p) * ONE_DOLLAR) // ONE_CONTRACT if pos else 0
        at_ideal[strategy] += realized + value - cost
    return {"report": report, "at_ideal": at_ideal}


def _usd(ticks: int | None) -> float | None:
    return None if ticks is None else round(ticks / ONE_DOLLAR, 2)


async def run() -> dict[str, float | int | None]:
    seconds = float(os.environ.get("KDESK_BENCH_STRATEGY_S", "600"))
    with private_postgres() as url:
        async with private_nats() as nats_url:
            out = await _session(nats_url, url, seconds)
    s = out["report"]["strategies"]
    mm, flip = s["market_making"], s["quick_flip"]
    maker = mm.get("maker", {})
    return {
        "strategy_session_s": seconds,
        "mm_pnl_usd": _usd(mm["pnl_ticks"]), "mm_pnl_at_ideal_usd": _usd(out["at_ideal"]["market_making"]),
        "mm_fees_usd": _usd(mm["fees_ticks"]), "mm_fill_rate": mm["fill_rate"],
        "mm_adverse_selection_ticks": mm["adverse_selection_ticks"],
        "mm_quote_update_ms_p50": maker.get("quote_update_ms_p50"),
        "mm_quote_update_ms_p99": maker.get("quote_update_ms_p99"),
        **{f"mm_{k}": v for k, v in maker.items() if k.startswith("quote_") and k.endswith(("_p50", "_p99"))
           and not k.startswith("quote_update")},
        "mm_quotes_created": maker.get("created"), "mm_quotes_amended": maker.get("amended"),
        "mm_orders": mm["orders"], "mm_filled_contracts": mm["filled_count"] // ONE_CONTRACT,
        "mm_inventory_contracts": mm["inventory"] // ONE_CONTRACT,
        "quick_flip_pnl_usd": _usd(flip["pnl_ticks"]),
        "quick_flip_pnl_at_ideal_usd": _usd(out["at_ideal"]["quick_flip"]),
        "quick_flip_fill_rate": flip["fill_rate"], "quick_flip_orders": flip["orders"],
        "quick_flip_exits_rested": flip.get("flip", {}).get("exits_rested"),
        "quick_flip_given_up": flip.get("flip", {}).get("given_up"),
    }
