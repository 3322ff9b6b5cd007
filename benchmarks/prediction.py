"""How far the desk's models are from the simulator's hidden truth, and whether they beat its crowd.

Seeded sim days run in-process (no clock to wait for): for each weather event (six markets) the
signals pipeline gets the definitions and an ensemble drawn around the day's forecast centre at
15:00 local the day before; for each hourly BTC ladder (20 strikes) it gets the spot 30 minutes
before the close. `model_abs_error_*` is the mean |p_model − p_true| against the sim's truth;
`brier_skill_*` is 1 − Brier(model) / Brier(crowd), the crowd being the mid the sim's background
makers quote. The figures describe the sim as much as the models (see the prediction-quality issue).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from libs.common.config import Mode, load_settings
from libs.common.events import MarketDefinition, PriceRange, Signal, SpotTick, WxForecast
from libs.common.money import ONE_DOLLAR
from services.resolver.scoring import Scored, summary
from services.signals.pipeline import SignalPipeline
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import btc_ladder, btc_price_at, ensemble_around, weather_event
from services.sim.world import World

WEATHER_SEEDS, BTC_SEEDS = 40, 12  # 240 weather markets, 240 BTC markets
DAY = date(2026, 11, 23)
NY = ZoneInfo("America/New_York")


def _definition(world: World, ticker: str, now: datetime) -> MarketDefinition:
    m = world.catalog.markets[ticker]
    return MarketDefinition(ts_event=now, mode=Mode.SIM, ticker=ticker, event_ticker=m.event_ticker,
                            series_ticker=m.series_ticker, status="active", strike_type=m.strike_type,
                            floor_strike=m.floor_strike, cap_strike=m.cap_strike, close_time=m.close_time,
                            price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges))


def _crowd(world: World, tickers: list[str]) -> dict[str, float | None]:
    """The mid of the book the sim's makers quote (None where a side is empty)."""
    BackgroundTraders(world, half_spread=0.02, noise=0.01).step(40 * len(tickers))
    out: dict[str, float | None] = {}
    for t in tickers:
        yes, no = world.engine.book(t)
        out[t] = ((yes[-1][0] + ONE_DOLLAR - no[-1][0]) / 2 / ONE_DOLLAR) if yes and no else None
    return out


async def _noop(_: Signal) -> None:
    return None


async def _weather() -> list[tuple[float, float, int, float | None]]:
    rows = []
    now = datetime.combine(DAY - timedelta(days=1), time(15), NY).astimezone(UTC)
    risk = load_settings().risk
    for seed in range(WEATHER_SEEDS):
        world = World(seed, lambda now=now: now)
        event = weather_event(world, day=DAY)
        tickers = [m.ticker for m in world.catalog.markets_of(event)]
        pipe = SignalPipeline(_noop, mode=Mode.SIM, risk=risk, clock=lambda now=now: now)
        for t in tickers:
            await pipe.on_market(_definition(world, t, now))
        await pipe.on_forecast(WxForecast(ts_event=now, mode=Mode.SIM, city="nyc", station="KNYC", run_time=now,
                                          members=ensemble_around(world.facts[event], seed=seed)))
        crowd = _crowd(world, tickers)
        for t in tickers:
            if (mp := pipe.model_p(t)) is not None:
                rows.append((mp.p, world.truth[t], 1 if world.outcomes[t] == "yes" else 0, crowd[t]))
    return rows


async def _btc() -> list[tuple[float, float, int, float | None]]:
    rows = []
    risk = load_settings().risk
    for seed in range(BTC_SEEDS):
        close = datetime(2026, 11, 23, 17 + seed % 6, tzinfo=UTC) + timedelta(days=seed // 6)
        now = close - timedelta(minutes=30)
        world = World(1000 + seed, lambda now=now: now)
        event = btc_ladder(world, close=close, spot=90_000.0 + 500 * seed, vol=0.5)
        tickers = [m.ticker for m in world.catalog.markets_of(event)]
        pipe = SignalPipeline(_noop, mode=Mode.SIM, risk=risk, clock=lambda now=now: now)
        for t in tickers:
            await pipe.on_market(_definition(world, t, now))
        price = round(btc_price_at(world, now) * ONE_DOLLAR)
        await pipe.on_spot(SpotTick(ts_event=now, mode=Mode.SIM, venue="coinbase", symbol="BTC-USD", kind="trade",
                                    price=price))
        crowd = _crowd(world, tickers)
        for t in tickers:
            mp = pipe.model_p(t)
            if mp is not None:
                rows.append((mp.p, world.truth[t], 1 if world.outcomes[t] == "yes" else 0, crowd[t]))
    return rows


def _report(family: str, rows: list[tuple[float, float, int, float | None]]) -> dict[str, Any]:
    s = summary([Scored(p=p, outcome=o, p_market=c) for p, _, o, c in rows])
    return {f"model_abs_error_{family}": round(sum(abs(p - t) for p, t, _, _ in rows) / len(rows), 4),
            f"brier_skill_{family}": None if s["brier_skill"] is None else round(s["brier_skill"], 4),
            f"prediction_markets_{family}": len(rows)}


async def run() -> dict[str, Any]:
    return {**_report("weather", await _weather()), **_report("btc", await _btc())}
