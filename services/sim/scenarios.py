"""Scenario scripts: weather bracket events and BTC ladders shaped like Kalshi's (kalshi_api.md §9), from a seed.

Every market gets a hidden true probability and a seeded outcome drawn from the same distribution,
so tests know the truth. The underlying facts (the day's true max, the BTC settlement price and a
price path leading to it) are kept in `world.facts` for the fake weather services and venues.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from libs.common.money import PriceGrid
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo
from services.sim.world import World

if TYPE_CHECKING:
    from services.sim.wxfake import WeatherTruth

ET = ZoneInfo("America/New_York")
BRIDGE_TERMS = 200


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def standard_offset(tz: ZoneInfo, day: date) -> timedelta:
    """The zone's standard (non-DST) UTC offset on `day`: climate days ignore daylight time."""
    noon = datetime.combine(day, time(12), tz)
    return (noon.utcoffset() or timedelta()) - (noon.dst() or timedelta())


def climate_day_end_utc(day: date, tz: ZoneInfo) -> datetime:
    """Midnight local standard time at the end of `day`, in UTC (05:00Z for New York)."""
    return datetime.combine(day + timedelta(days=1), time(0), UTC) - standard_offset(tz, day)


def _weather_series(world: World, series: str, city: str, station: str) -> None:
    world.add_series(SeriesInfo(
        ticker=series, title=f"Highest temperature in {city} today?", category="Climate and Weather",
        frequency="daily", fee_type="quadratic", fee_multiplier=Decimal(1),
        settlement_sources=[{"name": "National Weather Service", "url": f"https://forecast.weather.gov/ ({station})"}],
        contract_terms_url="https://kalshi.com/docs/contract-terms/HIGHTEMP.pdf", tags=["weather", city]))


def weather_event(world: World, *, series: str = "KXHIGHNY", city: str = "New York", station: str = "KNYC",
                  tz: str = "America/New_York", day: date, true_mean_f: float | None = None,
                  spread_f: float = 2.5) -> str:
    """Six markets (two tails, four 2°F brackets) for one climate day; returns the event ticker."""
    zone = ZoneInfo(tz)
    rng = world.rng
    mu = true_mean_f if true_mean_f is not None else rng.uniform(38, 72)
    # Kalshi centres the ladder on its own forecast, which is near but not at the truth.
    lo = round(mu + rng.gauss(0, 1.5)) - 3
    actual = round(rng.gauss(mu, spread_f))
    event = f"{series}-{day:%y%b%d}".upper()
    _weather_series(world, series, city, station)
    world.add_event(EventInfo(event_ticker=event, series_ticker=series, title=f"Highest temperature in {city} on "
                              f"{day:%b %d, %Y}", strike_date=climate_day_end_utc(day, zone)))
    world.facts[event] = {"kind": "weather", "station": station, "tz": tz, "date": day, "mean_f": mu,
                          "spread_f": spread_f, "true_max_f": actual}

    def p_range(a: float, b: float) -> float:  # P(a <= rounded max <= b)
        return _phi((b + 0.5 - mu) / spread_f) - _phi((a - 0.5 - mu) / spread_f)

    ladder: list[tuple[str, str, Decimal | None, Decimal | None, str, float, bool]] = [
        (f"T{lo}", "less", None, Decimal(lo), f"{lo - 1}° or below", p_range(-1e9, lo - 1), actual < lo)]
    for k in range(4):
        a = lo + 2 * k
        ladder.append((f"B{a}.5", "between", Decimal(a), Decimal(a + 1), f"{a}° to {a + 1}°", p_range(a, a + 1),
                       a <= actual <= a + 1))
    hi = lo + 7
    ladder.append((f"T{hi}", "greater", Decimal(hi), None, f"{hi + 1}° or above", p_range(hi + 1, 1e9), actual > hi))
    close = climate_day_end_utc(day, zone)
    open_time = datetime.combine(day - timedelta(days=1), time(10), zone).astimezone(UTC)
    for suffix, kind, floor, cap, sub, p, wins in ladder:
        world.add_market(MarketInfo(
            ticker=f"{event}-{suffix}", event_ticker=event, series_ticker=series, title=f"{city} high {sub}",
            yes_sub_title=sub, no_sub_title=sub, strike_type=kind, floor_strike=floor, cap_strike=cap,
            open_time=open_time, close_time=close, expected_expiration_time=close + timedelta(hours=14),
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(),
            rules_primary=f"If the highest temperature recorded at {station} for {day:%b %d, %Y} is {sub}, "
                          "the market resolves to Yes.", created_time=open_time),
            truth=min(max(p, 0.0), 1.0), outcome="yes" if wins else "no")
    return event


def _btc_settlement(world: World, close: datetime, spot: float, vol: float, horizon_s: float) -> dict[str, object]:
    key = f"btc:{close.isoformat()}"
    if key not in world.facts:
        tau = horizon_s / (365 * 86_400)
        z = world.rng.gauss(0, 1)
        settle = spot * math.exp(vol * math.sqrt(tau) * z - 0.5 * vol * vol * tau)
        world.facts[key] = {"kind": "btc", "open": close - timedelta(seconds=horizon_s), "close": close,
                            "spot0": spot, "vol": vol, "settle_price": round(settle, 2),
                            "noise_seed": world.rng.getrandbits(32)}
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
    sd_total = a * float(f["vol"]) * math.sqrt(span / (365 * 86_400))
    wiggle = sum(z * math.sqrt(2) * math.sin((k + 1) * math.pi * x) / ((k + 1) * math.pi) for k, z in enumerate(zs))
    return a + (b - a) * x + wiggle * sd_total


def _btc_series(world: World, series: str, title: str) -> None:
    world.add_series(SeriesInfo(
        ticker=series, title=title, category="Crypto", frequency="hourly", fee_type="quadratic",
        settlement_sources=[{"name": "CF Benchmarks", "url": "https://www.cfbenchmarks.com/data/indices/BRTI"}],
        exchange_index=2, tags=["crypto", "btc"]))


def btc_ladder(world: World, *, series: str = "KXBTCD", close: datetime, spot: float, vol: float = 0.5,
               n_strikes: int = 20, step: int = 500, horizon_s: float = 3600) -> str:
    """An hourly "above K" ladder (`T<K-0.01>`, strike_type greater); returns the event ticker."""
    facts = _btc_settlement(world, close, spot, vol, horizon_s)
    settle = float(facts["settle_price"])  # type: ignore[arg-type]
    tau = horizon_s / (365 * 86_400)
    event = f"{series}-{close.astimezone(ET):%y%b%d%H}".upper()
    _btc_series(world, series, "Bitcoin price above ...?")
    world.add_event(EventInfo(event_ticker=event, series_ticker=series, title=f"Bitcoin price at "
                              f"{close.astimezone(ET):%I%p ET %b %d}", mutually_exclusive=False, strike_date=close,
                              exchange_index=2))
    centre = round(spot / step) * step
    open_time = close - timedelta(seconds=horizon_s)
    for i in range(n_strikes):
        k = centre + (i - n_strikes // 2) * step
        strike = Decimal(k) - Decimal("0.01")
        d2 = (math.log(spot / float(strike)) - 0.5 * vol * vol * tau) / (vol * math.sqrt(tau))
        world.add_market(MarketInfo(
            ticker=f"{event}-T{strike}", event_ticker=event, series_ticker=series, title=f"BTC above {strike}",
            yes_sub_title=f"${k:,} or above", no_sub_title=f"${k:,} or above", strike_type="greater",
            floor_strike=strike, cap_strike=None, open_time=open_time, close_time=close,
            expected_expiration_time=close + timedelta(minutes=5), latest_expiration_time=close + timedelta(days=7),
            grid=PriceGrid.linear_cent(), exchange_index=2, created_time=open_time,
            rules_primary="If the simple average of the sixty seconds of CF Benchmarks' BRTI before the close is "
                          f"above {strike}, the market resolves to Yes."),
            truth=_phi(d2), outcome="yes" if settle > float(strike) else "no")
    return event


def btc_range(world: World, *, series: str = "KXBTC", close: datetime, spot: float, vol: float = 0.5,
              n_brackets: int = 10, width: int = 250, horizon_s: float = 3600) -> str:
    """Range brackets `$width` wide (`B<mid>`, between) plus two tails; returns the event ticker."""
    facts = _btc_settlement(world, close, spot, vol, horizon_s)
    settle = float(facts["settle_price"])  # type: ignore[arg-type]
    tau = horizon_s / (365 * 86_400)
    sd = vol * math.sqrt(tau)
    event = f"{series}-{close.astimezone(ET):%y%b%d%H}".upper()
    _btc_series(world, series, "Bitcoin price range")
    world.add_event(EventInfo(event_ticker=event, series_ticker=series, title="Bitcoin price range", strike_date=close,
                              exchange_index=2))

    def cdf(x: float) -> float:
        return _phi((math.log(x / spot) + 0.5 * sd * sd) / sd)

    low = round(spot / width) * width - (n_brackets // 2) * width
    high = low + n_brackets * width
    open_time = close - timedelta(seconds=horizon_s)
    rows: list[tuple[str, str, Decimal | None, Decimal | None, float, bool]] = [
        (f"T{Decimal(low) - Decimal('0.01')}", "less", None, Decimal(low), cdf(low), settle < low)]
    for i in range(n_brackets):
        a = low + i * width
        b = Decimal(a + width) - Decimal("0.01")
        rows.append((f"B{a + width // 2}", "between", Decimal(a), b, cdf(float(b)) - cdf(a), a <= settle <= float(b)))
    rows.append((f"T{Decimal(high) - Decimal('0.01')}", "greater", Decimal(high) - Decimal("0.01"), None,
                 1 - cdf(high), settle > high - 0.01))
    for suffix, kind, floor, cap, p, wins in rows:
        world.add_market(MarketInfo(
            ticker=f"{event}-{suffix}", event_ticker=event, series_ticker=series, title=f"BTC {suffix}",
            yes_sub_title=suffix, no_sub_title=suffix, strike_type=kind, floor_strike=floor, cap_strike=cap,
            open_time=open_time, close_time=close, expected_expiration_time=close + timedelta(minutes=5),
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(), exchange_index=2,
            created_time=open_time), truth=min(max(p, 0.0), 1.0), outcome="yes" if wins else "no")
    return event


WEATHER_CITIES = (("KXHIGHNY", "New York", "KNYC", "America/New_York"),
                  ("KXHIGHCHI", "Chicago", "KMDW", "America/Chicago"))


def _roll(world: World, now: datetime) -> None:
    """Keep tomorrow's weather events and the next hour's BTC events listed, as Kalshi does."""
    day = now.astimezone(ET).date() + timedelta(days=1)
    for series, city, station, tz in WEATHER_CITIES:
        if f"{series}-{day:%y%b%d}".upper() not in world.catalog.events:
            weather_event(world, series=series, city=city, station=station, tz=tz, day=day)
    close = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
    if f"btc:{close.isoformat()}" not in world.facts:
        # Each hour starts where the previous hour settled, so the price path is continuous.
        previous = [f for f in world.facts.values() if f.get("kind") == "btc"]
        spot = float(max(previous, key=lambda f: f["close"])["settle_price"]) if previous \
            else world.rng.uniform(60_000, 120_000)
        btc_ladder(world, close=close, spot=spot)
        btc_range(world, close=close, spot=spot)


def default_world(seed: int, now: datetime, clock: object | None = None) -> World:
    """Tomorrow's NYC and Chicago highs and the next hour's BTC events; more are listed as time passes."""
    world = World(seed, clock or (lambda: datetime.now(UTC)))  # type: ignore[arg-type]
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
