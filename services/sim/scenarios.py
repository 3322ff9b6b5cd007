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
from libs.common.stations import Station
from services.sim.btc_truth import BtcPath
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo
from services.sim.weather_truth import bracket_mass
from services.sim.world import World

if TYPE_CHECKING:
    from services.sim.weather_truth import WeatherTruth

ET = ZoneInfo("America/New_York")


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


def weather_of(world: World) -> WeatherTruth:
    """The world's station weather (created on first use, from the world's seed)."""
    if world.weather is None:
        from services.sim.wxfake import WeatherTruth

        world.weather = WeatherTruth(world.seed)
    return world.weather


def weather_event(world: World, *, series: str = "KXHIGHNY", city: str = "New York", station: str = "KNYC",
                  tz: str = "America/New_York", day: date, true_mean_f: float | None = None,
                  true_max_f: float | None = None, spread_f: float = 2.5) -> str:
    """Six markets (two tails, four 2°F brackets) for one climate day; returns the event ticker.

    Without a centre, the day is the station's honest weather (services/sim/weather_truth.py): the outcome
    is the true CLI max, each market's truth is the ideal probability at listing, and `world.ideals`
    answers the ideal at any later moment (the crowd follows it; the bench scores against it).

    With `true_max_f` (or its older name `true_mean_f`) a test fixes the centre: the day's max is
    distributed normal(centre, `spread_f`) in whole °F, that distribution is every market's fixed truth,
    and one seeded draw from it is the outcome — pinned in the station's weather, so the fake services
    report the same max. The ladder is centred on Kalshi's own forecast: the centre plus a little noise.
    """
    if true_mean_f is not None and true_max_f is not None and true_mean_f != true_max_f:
        raise ValueError("give the centre of the daily max once: true_max_f (or its old name true_mean_f)")
    zone = ZoneInfo(tz)
    event = weather_event_ticker(series, day)
    rng = world.rng_for("weather", event)
    centre = true_max_f if true_max_f is not None else true_mean_f
    weather = weather_of(world)
    open_time = datetime.combine(day - timedelta(days=1), time(10), zone).astimezone(UTC)  # 10 AM local
    listed_at = max(open_time, world.clock())
    weather.add_station(Station(series=series, city=city.lower(), icao=station, cli=station[1:], lat=40.5,
                                lon=-74.0, tz=tz))
    if centre is None:
        pmf = weather.ideal_pmf(station, day, listed_at)
        mu = sum(k * p for k, p in pmf.items())
        spread_f = math.sqrt(max(sum((k - mu) ** 2 * p for k, p in pmf.items()), 0.25))
        actual = weather.day_max(station, day)
    else:
        mu = centre
        actual = round(rng.gauss(mu, spread_f))
    lo = round(mu + rng.gauss(0, 1.5)) - 3  # ladder: T<lo>, B<lo>.5 ... B<lo+6>.5, T<lo+7>
    hi = lo + 7
    _weather_series(world, series, city)
    close = climate_day_end_utc(day, zone)
    world.add_event(EventInfo(event_ticker=event, series_ticker=series,
                              title=f"Highest temperature in {city} on {day:%b %d, %Y}?",
                              sub_title=f"On {day:%b %d, %Y}", strike_date=close))

    bounds = [(-math.inf, lo - 1)] + [(lo + 2 * k, lo + 2 * k + 1) for k in range(4)] + [(hi + 1, math.inf)]

    def p_range(a: float, b: float) -> float:  # P(a <= max rounded to whole °F <= b)
        if centre is None:
            return bracket_mass(pmf, a, b)
        return _phi((b + 0.5 - mu) / spread_f) - _phi((a - 0.5 - mu) / spread_f)

    ladder: list[tuple[str, str, Decimal | None, Decimal | None, str, float, bool]] = [
        (f"T{lo}", "less", None, Decimal(lo), f"{lo - 1}° or below", p_range(*bounds[0]), actual < lo)]
    for k in range(4):
        a = lo + 2 * k
        ladder.append((f"B{a}.5", "between", Decimal(a), Decimal(a + 1), f"{a}° to {a + 1}°", p_range(a, a + 1),
                       a <= actual <= a + 1))
    ladder.append((f"T{hi}", "greater", Decimal(hi), None, f"{hi + 1}° or above", p_range(*bounds[-1]),
                   actual > hi))
    winner = next(f"{event}-{suffix}" for suffix, *_, wins in ladder if wins)
    if centre is not None:
        weather.pin(station, day, actual)
    world.facts[event] = {"kind": "weather", "series": series, "station": station, "tz": tz, "date": day,
                          "mean_f": mu, "spread_f": spread_f, "true_max_f": actual, "winner": winner,
                          "honest": centre is None}
    cli = "CLI" + station[1:]  # KNYC -> CLINYC: the rules name the station by its climate report id
    tickers = []
    for suffix, kind, floor, cap, sub, p, wins in ladder:
        tickers.append(f"{event}-{suffix}")
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
    if centre is None:
        def ideal(now: datetime) -> dict[str, float]:
            later = weather.ideal_pmf(station, day, max(now, open_time))
            return {t: bracket_mass(later, a, b) for t, (a, b) in zip(tickers, bounds, strict=True)}

        world.ideals[event] = (ideal, 300.0)
    return event


def ensemble_around(facts: dict[str, Any], *, seed: int = 3, per_model: int = 50) -> tuple[WxMember, ...]:
    """Ensemble members (3 models) drawn around a weather event's forecast centre and spread — what an
    honest forecast of the day looks like, unlike the fake API's members (drawn around the realised max)."""
    rng = random.Random(seed)
    return tuple(WxMember(model=model, member=k, target_date=facts["date"],
                          tmax_f=rng.gauss(facts["mean_f"], facts["spread_f"]))
                 for model in ("ncep_gefs025", "ecmwf_ifs025_ensemble", "gem_global_ensemble")
                 for k in range(per_model))


def btc_path_of(world: World, start: datetime, spot: float, vol: float) -> BtcPath:
    """The world's BTC price path (one continuous path; created at the first listing, from `spot`)."""
    if world.btc is None:
        world.btc = BtcPath(world.rng_for("btc-path").getrandbits(63), start, spot, vol)
    return world.btc


def _btc_window(world: World, close: datetime, spot: float, vol: float, horizon_s: float) -> dict[str, Any]:
    """The hour's BTC facts: the path's price at the open and the settlement (the 60 s average before the close)."""
    key = f"btc:{close.isoformat()}"
    if key not in world.facts:
        opened = close - timedelta(seconds=horizon_s)
        path = btc_path_of(world, opened, spot, vol)
        world.facts[key] = {"kind": "btc", "open": opened, "close": close, "spot0": path.price_at(max(opened,
                                                                                                      path.start)),
                            "vol": vol, "settle_price": path.settlement_price(close)}
    return world.facts[key]


def btc_price_at(world: World, t: datetime) -> float:
    """The simulated BTC price at `t` (the path's last 100 ms print; before the path starts, its first price)."""
    if world.btc is None:
        return 90_000.0
    return world.btc.price_at(max(t, world.btc.start))


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


def _btc_event_facts(world: World, event: str, window: dict[str, Any]) -> None:
    world.facts[event] = {"kind": "btc_event", "window": f"btc:{window['close'].isoformat()}",
                          "settle_price": window["settle_price"]}


def btc_ladder(world: World, *, series: str = "KXBTCD", close: datetime, spot: float, vol: float = 0.5,
               n_strikes: int = 20, step: int = 500, horizon_s: float = 3600) -> str:
    """An hourly "above K" ladder (`T<K-0.01>`, strike_type greater) around the price at the open; returns the
    event ticker.

    The world's BTC path (services/sim/btc_truth.py) starts at `spot` when this is the world's first BTC listing.
    Truths are the ideal P(settle > K - 0.01) at listing, outcomes compare the settlement (the 60 s average
    before the close, in `world.facts[f"btc:{close}"]`), and `world.ideals` answers the ideal at any moment.
    """
    window = _btc_window(world, close, spot, vol, horizon_s)
    settle = float(window["settle_price"])
    spot = float(window["spot0"])
    assert world.btc is not None
    path: BtcPath = world.btc
    law = path.forecast(close, max(window["open"], world.clock()))
    event = btc_event_ticker(series, close)
    _btc_series(world, series, "Bitcoin price above ...?")
    world.add_event(EventInfo(event_ticker=event, series_ticker=series,
                              title=f"Bitcoin price on {_et_label(close)}?",
                              mutually_exclusive=False, strike_date=close, exchange_index=2))
    _btc_event_facts(world, event, window)
    centre = round(spot / step) * step
    open_time = close - timedelta(seconds=horizon_s)
    strikes: dict[str, float] = {}
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
            truth=law.above(float(strike)), outcome="yes" if settle > float(strike) else "no")
        strikes[f"{event}-T{strike}"] = float(strike)

    def ideal(now: datetime) -> dict[str, float]:
        later = path.forecast(close, max(now, open_time))
        return {t: later.above(k) for t, k in strikes.items()}

    world.ideals[event] = (ideal, 1.0)
    return event


def btc_range(world: World, *, series: str = "KXBTC", close: datetime, spot: float, vol: float = 0.5,
              n_brackets: int = 10, width: int = 250, horizon_s: float = 3600) -> str:
    """Range brackets `$width` wide (`B<mid>`, between) plus a tail each side; returns the event ticker.

    Brackets run [a, a + width - 0.01]; the low tail `T<low-0.01>` is `less` than the first floor and the
    high tail `T<high-0.01>` is `greater` than the last cap, so exactly one market wins (prices have cents).
    """
    window = _btc_window(world, close, spot, vol, horizon_s)
    settle = float(window["settle_price"])
    spot = float(window["spot0"])
    assert world.btc is not None
    path: BtcPath = world.btc
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
    # A settlement price has cents: the brackets [a, a + width - 0.01] and the two tails cover every price once.
    def probabilities(now: datetime) -> list[float]:
        law = path.forecast(close, max(now, open_time))
        return [law.below(low)] + [law.between(low + i * width, float(Decimal(low + (i + 1) * width) - cent))
                                   for i in range(n_brackets)] + [law.above(float(Decimal(high) - cent))]

    at_listing = probabilities(max(open_time, world.clock()))
    rows: list[tuple[str, str, Decimal | None, Decimal | None, str, float, bool]] = [
        (f"T{Decimal(low) - cent}", "less", None, Decimal(low), f"Below ${low:,}", at_listing[0], settle < low)]
    for i in range(n_brackets):
        a = low + i * width
        cap = Decimal(a + width) - cent
        rows.append((f"B{a + width // 2}", "between", Decimal(a), cap, f"${a:,} to ${cap:,}", at_listing[i + 1],
                     a <= settle <= float(cap)))
    rows.append((f"T{Decimal(high) - cent}", "greater", Decimal(high) - cent, None, f"${high:,} or above",
                 at_listing[-1], settle >= high))
    tickers = [f"{event}-{suffix}" for suffix, *_ in rows]
    world.ideals[event] = (lambda now: dict(zip(tickers, probabilities(now), strict=True)), 1.0)
    for suffix, kind, floor, cap, sub, p, wins in rows:
        world.add_market(MarketInfo(
            ticker=f"{event}-{suffix}", event_ticker=event, series_ticker=series, title=f"Bitcoin price {sub}?",
            yes_sub_title=sub, no_sub_title=sub, strike_type=kind, floor_strike=floor, cap_strike=cap,
            open_time=open_time, close_time=close, expected_expiration_time=close + timedelta(minutes=5),
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(), exchange_index=2,
            created_time=open_time), truth=min(max(p, 0.0), 1.0), outcome="yes" if wins else "no")
    return event


LLM_QUESTIONS = (
    ("Will the city council pass the transit budget by {day}?", "the council's published vote record"),
    ("Will the film open above $40M domestic by {day}?", "Box Office Mojo's weekend estimate"),
    ("Will the central bank announce a rate cut by {day}?", "the bank's official statement"),
    ("Will the launch lift off before {day}?", "the launch provider's mission page"),
)


def llm_event(world: World, *, series: str, day: date, n_markets: int = 3) -> str:
    """A day's worth of plain yes/no markets in an llm-family series (no strike, no model of ours); returns
    the event ticker.

    Each market's hidden truth is drawn once (Beta(2, 2)), its outcome from that truth; the truth is its
    ideal at every moment (there is nothing more to learn in the sim), which the crowd follows with its
    noise and the fake LLM (services/sim/llm.py) answers around with its own.
    """
    event = f"{series}-{day:%y%b%d}".upper()
    rng = world.rng_for("llm", event)
    close = datetime.combine(day, time(23, 0), UTC)
    open_time = close - timedelta(days=2)
    world.add_series(SeriesInfo(ticker=series, title=f"{series} questions", category="World", frequency="daily",
                                fee_type="quadratic", tags=["sim", "llm"],
                                settlement_sources=[{"name": "Official sources", "url": "https://example.org"}]))
    world.add_event(EventInfo(event_ticker=event, series_ticker=series, title=f"Questions resolving {day:%b %d, %Y}",
                              mutually_exclusive=False, strike_date=close))
    truths: dict[str, float] = {}
    for i in range(n_markets):
        question, source = LLM_QUESTIONS[(i + day.toordinal()) % len(LLM_QUESTIONS)]
        title = question.format(day=f"{day:%b %d, %Y}")
        truth = min(max(rng.betavariate(2, 2), 0.03), 0.97)
        ticker = f"{event}-Q{i + 1}"
        world.add_market(MarketInfo(
            ticker=ticker, event_ticker=event, series_ticker=series, title=title, yes_sub_title="Yes",
            no_sub_title="No", strike_type="custom", floor_strike=None, cap_strike=None, open_time=open_time,
            close_time=close, expected_expiration_time=close + timedelta(hours=1),
            latest_expiration_time=close + timedelta(days=7), grid=PriceGrid.linear_cent(), created_time=open_time,
            rules_primary=f'This market resolves to Yes if the answer to "{title}" is yes according to {source} '
                          f"as of 11:00 PM UTC on {day:%b %d, %Y}; otherwise it resolves to No."),
            truth=truth, outcome="yes" if rng.random() < truth else "no")
        truths[ticker] = truth
    world.ideals[event] = (lambda now: dict(truths), 1.0)
    return event


def llm_roller(series: tuple[str, ...]) -> Callable[[World, datetime], None]:
    """Keep tomorrow's llm event of each series listed (for `World.rollers`)."""
    def roll(world: World, now: datetime) -> None:
        day = now.astimezone(UTC).date() + timedelta(days=1)
        for s in series:
            if f"{s}-{day:%y%b%d}".upper() not in world.catalog.events:
                llm_event(world, series=s, day=day)
    return roll


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


def default_world(seed: int, now: datetime, clock: Callable[[], datetime] | None = None,
                  llm_series: tuple[str, ...] = ()) -> World:
    """The newest NYC and Chicago daily-high events and the next hour's KXBTCD and KXBTC events, all active,
    plus tomorrow's questions in each of `llm_series` (the llm family's markets).

    `clock` defaults to the wall clock (the server); tests pass one that returns `now`. More events are
    listed as `world.advance` moves time on.
    """
    world = World(seed, clock or (lambda: datetime.now(UTC)))
    world.rollers.append(_roll)
    if llm_series:
        world.rollers.append(llm_roller(llm_series))
    for roll in world.rollers:
        roll(world, now)
    return world


def weather_truth(world: World) -> WeatherTruth:
    """The fake weather services' truth: the world's station weather, which its weather events settle on."""
    return weather_of(world)
