"""Scenario scripts: weather bracket events and BTC ladders shaped like Kalshi's (kalshi_api.md §9), from a seed.

Every market gets a hidden true probability and a seeded outcome drawn from the same distribution,
so tests know the truth. The underlying facts (the day's true max, the BTC settlement price and a
price path leading to it) are kept in `world.facts` for the fake weather services and venues.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from libs.common.climate import climate_day, climate_day_bounds
from libs.common.events import WxMember
from libs.common.money import PriceGrid
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo
from services.sim.world import World

if TYPE_CHECKING:
    from services.sim.wxfake import WeatherTruth

ET = ZoneInfo("America/New_York")
BRIDGE_TERMS = 200
YEAR_S = 365 * 86_400


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def climate_day_end_utc(day: date, tz: str | ZoneInfo) -> datetime:
    """Midnight local standard time at the end of `day`, in UTC (05:00Z for New York, 06:00Z for Chicago)."""
    return climate_day_bounds(day, tz)[1]


def weather_event_ticker(series: str, day: date) -> str:
    """`KXHIGHNY-26NOV23`: series, then the climate day as YYMONDD in capitals."""
    return f"{series}-{day:%y%b%d}".upper()


def _weather_series(world: World, series: str, city: str) -> None:
    # The Oct-2026 shape (kalshi_api.md §9.1): The Weather Company relays the station's data.
    world.add_series(SeriesInfo(
        ticker=series, title=f"Highest temperature in {city} today?", category="Climate and Weather",
        frequency="daily", fee_type="quadratic", fee_multiplier=Decimal(1),
        settlement_sources=[{"name": "The Weather Company", "url": "https://weather.com/kalshi"}],
        contract_url="https://kalshi.com/markets/" + series.lower(),
        contract_terms_url="https://kalshi.com/docs/contract-terms/HIGHTEMP.pdf", tags=["weather", city]))


def weather_event(world: World, *, series: str = "KXHIGHNY", city: str = "New York", station: str = "KNYC",
                  tz: str = "America/New_York", day: date, true_mean_f: float | None = None,
                  true_max_f: float | None = None, spread_f: float = 2.5) -> str:
    """Six markets (two tails, four 2°F brackets) for one climate day; returns the event ticker.

    The day's max is distributed normal(`true_max_f`, `spread_f`) and reported in whole °F; that
    distribution is every market's truth, and one seeded draw from it (`world.facts[event]["true_max_f"]`)
    is the outcome. `true_mean_f` is the same centre under its older name; if neither is given it is drawn.
    The ladder is centred on Kalshi's own forecast: the true centre plus a little seeded noise.
    """
    if true_mean_f is not None and true_max_f is not None and true_mean_f != true_max_f:
        raise ValueError("give the centre of the daily max once: true_max_f (or its old name true_mean_f)")
    zone = ZoneInfo(tz)
    event = weather_event_ticker(series, day)
    rng = world.rng_for("weather", event)
    centre = true_max_f if true_max_f is not None else true_mean_f
    mu = centre if centre is not None else rng.uniform(38, 72)
    lo = round(mu + rng.gauss(0, 1.5)) - 3  # ladder: T<lo>, B<lo>.5 ... B<lo+6>.5, T<lo+7>
    actual = round(rng.gauss(mu, spread_f))
    hi = lo + 7
    _weather_series(world, series, city)
    close = climate_day_end_utc(day, zone)
    world.add_event(EventInfo(event_ticker=event, series_ticker=series,
                              title=f"Highest temperature in {city} on {day:%b %d, %Y}?",
                              sub_title=f"On {day:%b %d, %Y}", strike_date=close))

    def p_range(a: float, b: float) -> float:  # P(a <= max rounded to whole °F <= b)
        return _phi((b + 0.5 - mu) / spread_f) - _phi((a - 0.5 - mu) / spread_f)

    ladder: list[tuple[str, str, Decimal | None, Decimal | None, str, float, bool]] = [
        (f"T{lo}", "less", None, Decimal(lo), f"{lo - 1}° or below", p_range(-math.inf, lo - 1), actual < lo)]
    for k in range(4):
        a = lo + 2 * k
        ladder.append((f"B{a}.5", "between", Decimal(a), Decimal(a + 1), f"{a}° to {a + 1}°", p_range(a, a + 1),
                       a <= actual <= a + 1))
    ladder.append((f"T{hi}", "greater", Decimal(hi), None, f"{hi + 1}° or above", p_range(hi + 1, math.inf),
                   actual > hi))
    winner = next(f"{event}-{suffix}" for suffix, *_, wins in ladder if wins)
    world.facts[event] = {"kind": "weather", "series": series, "station": station, "tz": tz, "date": day,
                          "mean_f": mu, "spread_f": spread_f, "true_max_f": actual, "winner": winner}
    open_time = datetime.combine(day - timedelta(days=1), time(10), zone).astimezone(UTC)  # 10 AM local
    cli = "CLI" + station[1:]  # KNYC -> CLINYC: the rules name the station by its climate report id
    for suffix, kind, floor, cap, sub, p, wins in ladder:
        world.add_market(MarketInfo(
            ticker=f"{event}-{suffix}", event_ticker=event, series_ticker=series,
            title=f"Will the high temp in {city} be {sub} on {day:%b %d, %Y}?",
            yes_sub_title=sub, no_sub_title=sub, strike_type=kind, floor_strike=floor, cap_strike=cap,
            open_time=open_time, close_time=close,
            expected_expiration_time=close + timedelta(hours=14),  # 19:00Z for New York
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(),
            rules_primary=f"If the maximum temperature recorded at {city} ({cli}) for {day:%b %d, %Y} is {sub}, "
                          "according to The Weather Company, then the market resolves to Yes.",
            created_time=open_time),
            truth=min(max(p, 0.0), 1.0), outcome="yes" if wins else "no")
    return event


def ensemble_around(facts: dict[str, Any], *, seed: int = 3, per_model: int = 50) -> tuple[WxMember, ...]:
    """Ensemble members (3 models) drawn around a weather event's forecast centre and spread — what an
    honest forecast of the day looks like, unlike the fake API's members (drawn around the realised max)."""
    rng = random.Random(seed)
    return tuple(WxMember(model=model, member=k, target_date=facts["date"],
                          tmax_f=rng.gauss(facts["mean_f"], facts["spread_f"]))
                 for model in ("ncep_gefs025", "ecmwf_ifs025_ensemble", "gem_global_ensemble")
                 for k in range(per_model))


def _btc_window(world: World, close: datetime, spot: float, vol: float, horizon_s: float) -> dict[str, Any]:
    """The hour's BTC facts: start price, seeded settlement price (lognormal, zero drift), path noise seed."""
    key = f"btc:{close.isoformat()}"
    if key not in world.facts:
        rng = world.rng_for("btc", close.isoformat())
        tau = horizon_s / YEAR_S
        z = rng.gauss(0, 1)
        settle = spot * math.exp(vol * math.sqrt(tau) * z - 0.5 * vol * vol * tau)
        world.facts[key] = {"kind": "btc", "open": close - timedelta(seconds=horizon_s), "close": close,
                            "spot0": spot, "vol": vol, "settle_price": round(settle, 2),
                            "noise_seed": rng.getrandbits(32)}
    return world.facts[key]


def btc_price_at(world: World, t: datetime) -> float:
    """The simulated BTC price at `t`: a seeded path from each window's start price to its settlement price."""
    windows = sorted((f for f in world.facts.values() if f.get("kind") == "btc"), key=lambda f: f["close"])
    if not windows:
        return 90_000.0
    f = next((w for w in windows if w["open"] <= t <= w["close"]), windows[-1] if t > windows[-1]["close"]
             else windows[0])
    a, b = float(f["spot0"]), float(f["settle_price"])
    span = (f["close"] - f["open"]).total_seconds()
    x = min(max((t - f["open"]).total_seconds() / span, 0.0), 1.0)
    # A Brownian bridge from spot0 to the settlement price with the window's volatility (Karhunen–Loève
    # series), so the path the venues show is as volatile as the truths the markets were priced with.
    zs = f.get("bridge_z")
    if zs is None:
        rng = random.Random(int(f["noise_seed"]))
        zs = f["bridge_z"] = [rng.gauss(0, 1) for _ in range(BRIDGE_TERMS)]
    sd_total = a * float(f["vol"]) * math.sqrt(span / YEAR_S)
    wiggle = sum(z * math.sqrt(2) * math.sin((k + 1) * math.pi * x) / ((k + 1) * math.pi) for k, z in enumerate(zs))
    return a + (b - a) * x + wiggle * sd_total


def _btc_series(world: World, series: str, title: str) -> None:
    world.add_series(SeriesInfo(
        ticker=series, title=title, category="Crypto", frequency="hourly", fee_type="quadratic",
        settlement_sources=[{"name": "CF Benchmarks", "url": "https://www.cfbenchmarks.com/data/indices/BRTI"}],
        contract_terms_url="https://assets.kalshi.com/contract_terms/BTC.pdf", exchange_index=2,
        tags=["crypto", "btc"]))


def _et_label(t: datetime) -> str:
    """`Nov 23, 2026 at 5pm EST`: how Kalshi titles name an hourly crypto close."""
    et = t.astimezone(ET)
    return f"{et:%b %d, %Y} at {et.hour % 12 or 12}{'am' if et.hour < 12 else 'pm'} {et.tzname()}"


def btc_event_ticker(series: str, close: datetime) -> str:
    """`KXBTCD-26NOV2317`: series, then the close as YYMONDDHH with the Eastern-time hour."""
    return f"{series}-{close.astimezone(ET):%y%b%d%H}".upper()


def _btc_cdf(spot: float, vol: float, tau: float) -> Callable[[float], float]:
    """P(settlement < x) under a driftless lognormal from `spot` over `tau` years."""
    sd = vol * math.sqrt(tau)
    return lambda x: _phi((math.log(x / spot) + 0.5 * sd * sd) / sd)


def _btc_event_facts(world: World, event: str, window: dict[str, Any]) -> None:
    world.facts[event] = {"kind": "btc_event", "window": f"btc:{window['close'].isoformat()}",
                          "settle_price": window["settle_price"]}


def btc_ladder(world: World, *, series: str = "KXBTCD", close: datetime, spot: float, vol: float = 0.5,
               n_strikes: int = 20, step: int = 500, horizon_s: float = 3600) -> str:
    """An hourly "above K" ladder (`T<K-0.01>`, strike_type greater) around `spot`; returns the event ticker.

    Truths are the lognormal digital P(settle > K - 0.01) given `spot` and annual `vol` over `horizon_s`;
    outcomes compare the seeded settlement price in `world.facts[f"btc:{close}"]` (also under the event).
    """
    window = _btc_window(world, close, spot, vol, horizon_s)
    settle = float(window["settle_price"])
    cdf = _btc_cdf(spot, vol, horizon_s / YEAR_S)
    event = btc_event_ticker(series, close)
    _btc_series(world, series, "Bitcoin price above ...?")
    world.add_event(EventInfo(event_ticker=event, series_ticker=series,
                              title=f"Bitcoin price on {_et_label(close)}?",
                              mutually_exclusive=False, strike_date=close, exchange_index=2))
    _btc_event_facts(world, event, window)
    centre = round(spot / step) * step
    open_time = close - timedelta(seconds=horizon_s)
    for i in range(n_strikes):
        k = centre + (i - n_strikes // 2) * step
        strike = Decimal(k) - Decimal("0.01")
        world.add_market(MarketInfo(
            ticker=f"{event}-T{strike}", event_ticker=event, series_ticker=series, title=f"Bitcoin above {strike}?",
            yes_sub_title=f"${strike:,} or above", no_sub_title=f"${strike:,} or above", strike_type="greater",
            floor_strike=strike, cap_strike=None, open_time=open_time, close_time=close,
            expected_expiration_time=close + timedelta(minutes=5), latest_expiration_time=close + timedelta(days=7),
            grid=PriceGrid.linear_cent(), exchange_index=2, created_time=open_time,
            rules_primary="If the simple average of the sixty seconds of CF Benchmarks' Bitcoin Real-Time Index "
                          f"(BRTI) before {_et_label(close)} is above {strike}, "
                          "then the market resolves to Yes."),
            truth=1.0 - cdf(float(strike)), outcome="yes" if settle > float(strike) else "no")
    return event


def btc_range(world: World, *, series: str = "KXBTC", close: datetime, spot: float, vol: float = 0.5,
              n_brackets: int = 10, width: int = 250, horizon_s: float = 3600) -> str:
    """Range brackets `$width` wide (`B<mid>`, between) plus a tail each side; returns the event ticker.

    Brackets run [a, a + width - 0.01]; the low tail `T<low-0.01>` is `less` than the first floor and the
    high tail `T<high-0.01>` is `greater` than the last cap, so exactly one market wins (prices have cents).
    """
    window = _btc_window(world, close, spot, vol, horizon_s)
    settle = float(window["settle_price"])
    cdf = _btc_cdf(spot, vol, horizon_s / YEAR_S)
    event = btc_event_ticker(series, close)
    _btc_series(world, series, "Bitcoin price range")
    world.add_event(EventInfo(event_ticker=event, series_ticker=series,
                              title=f"Bitcoin price range on {_et_label(close)}?", strike_date=close,
                              exchange_index=2))
    _btc_event_facts(world, event, window)
    cent = Decimal("0.01")
    low = round(spot / width) * width - (n_brackets // 2) * width
    high = low + n_brackets * width
    open_time = close - timedelta(seconds=horizon_s)
    # A settlement price has cents, so (a + width - 0.01, a + width) is empty: P(bracket) = F(a + width) - F(a).
    rows: list[tuple[str, str, Decimal | None, Decimal | None, str, float, bool]] = [
        (f"T{Decimal(low) - cent}", "less", None, Decimal(low), f"Below ${low:,}", cdf(low), settle < low)]
    for i in range(n_brackets):
        a = low + i * width
        cap = Decimal(a + width) - cent
        rows.append((f"B{a + width // 2}", "between", Decimal(a), cap, f"${a:,} to ${cap:,}",
                     cdf(a + width) - cdf(a), a <= settle <= float(cap)))
    rows.append((f"T{Decimal(high) - cent}", "greater", Decimal(high) - cent, None, f"${high:,} or above",
                 1.0 - cdf(high), settle >= high))
    for suffix, kind, floor, cap, sub, p, wins in rows:
        world.add_market(MarketInfo(
            ticker=f"{event}-{suffix}", event_ticker=event, series_ticker=series, title=f"Bitcoin price {sub}?",
            yes_sub_title=sub, no_sub_title=sub, strike_type=kind, floor_strike=floor, cap_strike=cap,
            open_time=open_time, close_time=close, expected_expiration_time=close + timedelta(minutes=5),
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(), exchange_index=2,
            created_time=open_time), truth=min(max(p, 0.0), 1.0), outcome="yes" if wins else "no")
    return event


WEATHER_CITIES = (("KXHIGHNY", "New York", "KNYC", "America/New_York"),
                  ("KXHIGHCHI", "Chicago", "KMDW", "America/Chicago"))


def _roll(world: World, now: datetime) -> None:
    """Keep the newest open weather event per city and the next hour's BTC events listed, as Kalshi does."""
    for series, city, station, tz in WEATHER_CITIES:
        # Day D trades from 10 AM local on D-1 until the end of D's climate day: before 10 AM the newest
        # open event is today's, from 10 AM on it is tomorrow's.
        today = climate_day(now, tz)
        local = now.astimezone(ZoneInfo(tz))
        day = today + timedelta(days=1) if local.time() >= time(10) or local.date() > today else today
        if weather_event_ticker(series, day) not in world.catalog.events:
            weather_event(world, series=series, city=city, station=station, tz=tz, day=day)
    close = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
    if f"btc:{close.isoformat()}" not in world.facts:
        # Each hour starts where the previous hour settled, so the price path is continuous.
        previous = [f for f in world.facts.values() if f.get("kind") == "btc"]
        spot = float(max(previous, key=lambda f: f["close"])["settle_price"]) if previous \
            else world.rng_for("btc-spot").uniform(60_000, 120_000)
        btc_ladder(world, close=close, spot=spot)
        btc_range(world, close=close, spot=spot)


def default_world(seed: int, now: datetime, clock: Callable[[], datetime] | None = None) -> World:
    """The newest NYC and Chicago daily-high events and the next hour's KXBTCD and KXBTC events, all active.

    `clock` defaults to the wall clock (the server); tests pass one that returns `now`. More events are
    listed as `world.advance` moves time on.
    """
    world = World(seed, clock or (lambda: datetime.now(UTC)))
    world.rollers.append(_roll)
    _roll(world, now)
    return world


def weather_truth(world: World) -> WeatherTruth:
    """The fake weather services' truth, read live from the world's weather events (listed as time passes)."""
    from services.sim.wxfake import WeatherTruth

    class _WorldTruth(WeatherTruth):
        def day_max(self, icao: str, day: date) -> float:
            for f in world.facts.values():
                if f.get("kind") == "weather" and f["station"] == icao and f["date"] == day:
                    return float(f["true_max_f"])
            return super().day_max(icao, day)

    return _WorldTruth(world.seed)
