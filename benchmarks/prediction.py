"""How far the desk's models are from the ideal forecast, and whether they beat the sim's crowd.

Seeded sim days run in-process (no clock to wait for) on the sim's honest truth (the prediction-quality
issue): for each weather event the signals pipeline gets what the feeds would publish at several times
of the day — the newest ensemble run the fake serves, reduced by the feed's own `reduce_ensemble`, and
the latest hourly observation with the running max — and for each BTC hour the venues' price. At each
moment three probabilities are scored against the outcome: the model's, the ideal one (what a perfect
forecaster with the desk's information would say, computed by the sim), and the crowd's (the mid of the
book the sim's learning background traders quote). `model_abs_error_*` is mean |p_model − p_ideal|.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from libs.common.climate import climate_day, climate_day_bounds
from libs.common.config import Mode, load_settings
from libs.common.events import MarketDefinition, PriceRange, Signal, SpotTick, WxForecast, WxObservation
from libs.common.money import ONE_DOLLAR
from libs.common.stations import BY_ICAO
from services.feeds.wx import reduce_ensemble
from services.signals.pipeline import SignalPipeline
from services.signals.weather_model import WeatherParams
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import WEATHER_CITIES, btc_ladder, btc_price_at, weather_event, weather_of
from services.sim.weather_truth import MODELS, round_half_up
from services.sim.world import World
from services.sim.wxfake import ensemble_hourly

WEATHER_EVENTS, BTC_HOURS = 340, 100  # 2,040 weather markets, 2,000 BTC markets
FIRST_DAY = date(2026, 11, 1)
# Moments scored (local standard time): the afternoon before, then through the climate day.
WEATHER_TIMES: tuple[tuple[str, int, int], ...] = (("d-1 15:00", -1, 15), ("07:00", 0, 7), ("12:00", 0, 12),
                                                    ("16:00", 0, 16), ("20:00", 0, 20), ("23:00", 0, 23))
# BTC: minutes before the close at which each ladder is scored.
BTC_TIMES = (("45 min", timedelta(minutes=45)), ("30 min", timedelta(minutes=30)), ("10 min", timedelta(minutes=10)),
             ("2 min", timedelta(minutes=2)))
Row = tuple[float, float, int, float | None]  # model p, ideal p, outcome, crowd p
RISK = load_settings().risk


def _definition(world: World, ticker: str, now: datetime) -> MarketDefinition:
    m = world.catalog.markets[ticker]
    return MarketDefinition(ts_event=now, mode=Mode.SIM, ticker=ticker, event_ticker=m.event_ticker,
                            series_ticker=m.series_ticker, status="active", strike_type=m.strike_type,
                            floor_strike=m.floor_strike, cap_strike=m.cap_strike, close_time=m.close_time,
                            price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges))


def _crowd(world: World, traders: BackgroundTraders, tickers: list[str]) -> dict[str, float | None]:
    """The mid of the book the sim's makers quote now (None where a side is empty)."""
    traders.step(4 * len(tickers))
    out: dict[str, float | None] = {}
    for t in tickers:
        yes, no = world.engine.book(t)
        out[t] = ((yes[-1][0] + ONE_DOLLAR - no[-1][0]) / 2 / ONE_DOLLAR) if yes and no else None
    return out


async def _noop(_: Signal) -> None:
    return None


def observations(world: World, icao: str, now: datetime) -> list[WxObservation]:
    """What the observation feed would have published of the current climate day by `now`: each hourly METAR
    with the running max, oldest first (the feed polls NWS for the day's observations)."""
    weather = weather_of(world)
    st = BY_ICAO[icao]
    t = now.replace(minute=51, second=0, microsecond=0)
    if t > now:
        t -= timedelta(hours=1)
    day = climate_day(t, st.tz)
    day_start, _ = climate_day_bounds(day, st.tz)
    times = []
    while t >= day_start:
        times.append(t)
        t -= timedelta(hours=1)
    out, running = [], -math.inf
    for x in reversed(times):
        f = float(round_half_up(weather.temp_f(st, x)))
        running = max(running, f)
        out.append(WxObservation(ts_event=x, mode=Mode.SIM, station=icao, observed_at=x, climate_date=day, temp_f=f,
                                 running_max_f=running))
    return out


def feed_inputs(world: World, event: str, icao: str, now: datetime) -> tuple[WxForecast, list[WxObservation]]:
    """What the weather feeds would publish by `now`: the fake's newest ensemble run reduced by the feed's own
    `reduce_ensemble`, and the latest observation."""
    st = BY_ICAO[icao]
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    hours = [start + timedelta(hours=i) for i in range(96)]  # past_days=1, forecast_days=3, as the feed asks
    hourly, _ = ensemble_hourly(weather_of(world), st, hours, list(MODELS), now)
    arrays = {model: np.array([hourly[k] for k in hourly if k != "time" and k.endswith(model)], dtype=float).T
              for model in MODELS}
    forecast, _ = reduce_ensemble(hours, arrays, "°F", st, now, mode=Mode.SIM, provider="sim",
                                  digest=f"{event}:{now:%Y%m%d%H%M}")
    return forecast, observations(world, icao, now)


async def model_probabilities(world: World, event: str, icao: str, now: datetime, forecast: WxForecast,
                              obs: list[WxObservation], params: WeatherParams) -> dict[str, float]:
    """The signals pipeline's probabilities for one event at `now`."""
    pipe = SignalPipeline(_noop, mode=Mode.SIM, risk=RISK, clock=lambda: now)
    pipe.weather_params = params
    tickers = [m.ticker for m in world.catalog.markets_of(event)]
    for t in tickers:
        await pipe.on_market(_definition(world, t, now))
    for o in obs:  # before the forecast, so only the last refresh prices the ladder
        await pipe.on_obs(o)
    await pipe.on_forecast(forecast)
    return {t: mp.p for t in tickers if (mp := pipe.model_p(t)) is not None}


@dataclass
class Moment:
    """One event at one moment: the feeds' inputs, the ideal and the crowd."""

    label: str
    now: datetime
    forecast: WxForecast
    obs: list[WxObservation]
    ideal: dict[str, float]
    crowd: dict[str, float | None]


class WeatherDays:
    """Seeded honest weather events with everything needed to score a model at each moment."""

    def __init__(self, n_events: int = WEATHER_EVENTS) -> None:
        self.items: list[tuple[World, str, str, list[Moment]]] = []
        shared: dict[int, Any] = {}
        for i in range(n_events):
            series, city, icao, tz = WEATHER_CITIES[i % len(WEATHER_CITIES)]
            day = FIRST_DAY + timedelta(days=(i // len(WEATHER_CITIES)) % 60)
            zone = ZoneInfo(tz)
            moments = [(label, datetime.combine(day + timedelta(days=dd), time(h), zone).astimezone(UTC))
                       for label, dd, h in WEATHER_TIMES]
            clock = [moments[0][1]]
            seed = 5000 + i // 120
            world = World(seed, lambda clock=clock: clock[0])
            world.weather = shared.get(seed) or weather_of(world)  # one station history per seed
            shared[seed] = world.weather
            event = weather_event(world, series=series, city=city, station=icao, tz=tz, day=day)
            traders = BackgroundTraders(world)
            tickers = [m.ticker for m in world.catalog.markets_of(event)]
            scored = []
            for label, now in moments:
                clock[0] = now
                world.advance(now)
                forecast, obs = feed_inputs(world, event, icao, now)
                scored.append(Moment(label, now, forecast, obs, {t: world.ideal_p(t, now) for t in tickers},
                                     _crowd(world, traders, tickers)))
            self.items.append((world, event, icao, scored))

    async def rows(self, params: WeatherParams) -> dict[str, list[Row]]:
        """Scored rows per moment for a model with `params`."""
        out: dict[str, list[Row]] = defaultdict(list)
        for world, event, icao, moments in self.items:
            for m in moments:
                probs = await model_probabilities(world, event, icao, m.now, m.forecast, m.obs, params)
                for t, p in probs.items():
                    out[m.label].append((p, m.ideal[t], 1 if world.outcomes[t] == "yes" else 0, m.crowd[t]))
        return out


async def _btc() -> dict[str, list[Row]]:
    """Hourly KXBTCD ladders on one continuous path; the model sees the venue's last 10 minutes of prints."""
    out: dict[str, list[Row]] = defaultdict(list)
    first = datetime(2026, 11, 23, 1, tzinfo=UTC)
    clock = [first - timedelta(hours=1)]
    world = World(1000, lambda: clock[0])
    traders = BackgroundTraders(world)
    for hour in range(BTC_HOURS):
        close = first + timedelta(hours=hour)
        clock[0] = close - timedelta(hours=1)
        spot = btc_price_at(world, clock[0]) if world.btc is not None else 90_000.0
        event = btc_ladder(world, close=close, spot=spot, vol=0.5)
        tickers = [m.ticker for m in world.catalog.markets_of(event)]
        for label, before in BTC_TIMES:
            now = close - before
            clock[0] = now
            world.advance(now)
            pipe = SignalPipeline(_noop, mode=Mode.SIM, risk=RISK, clock=lambda now=now: now)
            for t in tickers:
                await pipe.on_market(_definition(world, t, now))
            for k in range(600, -1, -1):  # one print a second, as the composite keeps them
                at = now - timedelta(seconds=k)
                await pipe.on_spot(SpotTick(ts_event=at, mode=Mode.SIM, venue="coinbase", symbol="BTC-USD",
                                            kind="trade", price=round(btc_price_at(world, at) * ONE_DOLLAR)))
            crowd = _crowd(world, traders, tickers)
            for t in tickers:
                mp = pipe.model_p(t)
                if mp is not None:
                    out[label].append((mp.p, world.ideal_p(t, now), 1 if world.outcomes[t] == "yes" else 0,
                                       crowd[t]))
    return out


def _brier(pairs: list[tuple[float, int]]) -> float | None:
    return statistics.fmean((p - o) ** 2 for p, o in pairs) if pairs else None


def scores(rows: list[Row]) -> dict[str, Any]:
    """Mean |model − ideal| and the three Briers (crowd over the rows that have a two-sided book)."""
    with_crowd = [r for r in rows if r[3] is not None]
    return {"n": len(rows),
            "abs_error": statistics.fmean(abs(p - q) for p, q, _, _ in rows) if rows else None,
            "brier_model": _brier([(p, o) for p, _, o, _ in rows]),
            "brier_ideal": _brier([(q, o) for _, q, o, _ in rows]),
            "brier_crowd": _brier([(c, o) for _, _, o, c in with_crowd if c is not None]),
            "brier_model_vs_crowd_rows": _brier([(p, o) for p, _, o, _ in with_crowd])}


def reliability(rows: list[Row], bins: int = 10) -> list[dict[str, Any]]:
    """Calibration table of the model: per probability bin, count, mean p, observed frequency, mean ideal."""
    table: list[dict[str, Any]] = []
    for b in range(bins):
        sel = [r for r in rows if b / bins <= r[0] < (b + 1) / bins or (b == bins - 1 and r[0] == 1.0)]
        if sel:
            table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "n": len(sel),
                          "p_model": round(statistics.fmean(r[0] for r in sel), 4),
                          "p_ideal": round(statistics.fmean(r[1] for r in sel), 4),
                          "freq": round(statistics.fmean(r[2] for r in sel), 4)})
    return table


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


def _family(family: str, rows: list[Row], by: Callable[[], dict[str, dict[str, Any]]] | None = None
            ) -> dict[str, Any]:
    s = scores(rows)
    skill = None if not s["brier_crowd"] or s["brier_model_vs_crowd_rows"] is None \
        else 1 - s["brier_model_vs_crowd_rows"] / s["brier_crowd"]
    out: dict[str, Any] = {f"model_abs_error_{family}": _round(s["abs_error"]),
                           f"brier_model_{family}": _round(s["brier_model"]),
                           f"brier_ideal_{family}": _round(s["brier_ideal"]),
                           f"brier_crowd_{family}": _round(s["brier_crowd"]),
                           f"brier_skill_{family}": _round(skill),
                           f"prediction_markets_{family}": s["n"]}
    if by is not None:
        out[f"prediction_by_time_{family}"] = by()
    return out


def _by_moment(rows: dict[str, list[Row]]) -> dict[str, dict[str, Any]]:
    return {label: {k: _round(v) if isinstance(v, float) else v for k, v in scores(r).items()}
            for label, r in rows.items()}


async def run() -> dict[str, Any]:
    days = WeatherDays()
    weather = await days.rows(WeatherParams())
    btc = await _btc()
    report: dict[str, Any] = {}
    for family, by_moment, markets in (("weather", weather, len(days.items) * 6), ("btc", btc, BTC_HOURS * 20)):
        every = [r for rows in by_moment.values() for r in rows]
        report.update(_family(family, every, lambda by_moment=by_moment: _by_moment(by_moment)))
        report[f"prediction_markets_{family}"] = markets
        report[f"prediction_rows_{family}"] = len(every)
        report[f"prediction_reliability_{family}"] = reliability(every)
    return report
