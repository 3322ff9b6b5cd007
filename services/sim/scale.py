"""A scaled sim world for the scale benchmark: thousands of open markets, as Kalshi lists them.

    python -m services.sim.scale --target 2000 --port 0 --keys-dir var/sim/keys

- Weather: the 11 real settlement stations of libs/common/stations.py plus 13 synthesized, sim-only ones
  (`SIM_STATIONS`: real US airports, series `KXHIGHS<code>` so no real Kalshi series is implied), each with
  today's and tomorrow's climate-day events of six markets. Kalshi opens day D at 10 AM local on D-1; so
  that both days trade at any wall-clock time, markets the scenario would list as not yet open are opened
  at once. Centres are fixed per event (`true_max_f`), which keeps each market's truth fixed: an honest
  day's ideal (a Monte Carlo over the station's weather, ~0.2 s per event) would stall the exchange's event
  loop every five minutes for every event at this size.
- BTC: "above" ladders (`KXBTCD`, strike_type greater) and range ladders (`KXBTC`) for the next hours'
  closes, plus the daily 5 PM ET close, each with 100+ strikes at $100 (ranges $250 wide); a roller keeps
  as many hours listed as the hours close.

The desk's services only know stations in `libs.common.stations.BY_SERIES`; `install_stations()` adds the
synthesized ones to that table in place (the benchmark calls it in each service process before the service
starts), without touching stations.py.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from libs.common import stations as station_table
from libs.common.climate import climate_day
from libs.common.stations import STATIONS, Station
from services.sim.scenarios import ET, btc_ladder, btc_range, weather_event
from services.sim.world import World

# Sim-only stations (real airports, approximate coordinates): none of these series exists on Kalshi.
SIM_STATIONS: tuple[Station, ...] = (
    Station("KXHIGHSBOS", "bos", "KBOS", "BOS", 42.361, -71.010, "America/New_York"),
    Station("KXHIGHSATL", "atl", "KATL", "ATL", 33.630, -84.442, "America/New_York"),
    Station("KXHIGHSDFW", "dfw", "KDFW", "DFW", 32.897, -97.038, "America/Chicago"),
    Station("KXHIGHSLAS", "las", "KLAS", "LAS", 36.072, -115.163, "America/Los_Angeles"),
    Station("KXHIGHSMSP", "msp", "KMSP", "MSP", 44.883, -93.229, "America/Chicago"),
    Station("KXHIGHSSFO", "sfo", "KSFO", "SFO", 37.619, -122.375, "America/Los_Angeles"),
    Station("KXHIGHSMSY", "msy", "KMSY", "MSY", 29.993, -90.251, "America/Chicago"),
    Station("KXHIGHSDTW", "dtw", "KDTW", "DTW", 42.231, -83.331, "America/Detroit"),
    Station("KXHIGHSBNA", "bna", "KBNA", "BNA", 36.119, -86.689, "America/Chicago"),
    Station("KXHIGHSSLC", "slc", "KSLC", "SLC", 40.788, -111.978, "America/Denver"),
    Station("KXHIGHSMCI", "mci", "KMCI", "MCI", 39.297, -94.714, "America/Chicago"),
    Station("KXHIGHSPDX", "pdx", "KPDX", "PDX", 45.589, -122.597, "America/Los_Angeles"),
    Station("KXHIGHSSTL", "stl", "KSTL", "STL", 38.749, -90.370, "America/Chicago"),
)
ALL_STATIONS: tuple[Station, ...] = STATIONS + SIM_STATIONS
BRACKETS_PER_DAY = 6
GROUP_SIZE = 200  # BTC markets per close: ~3/4 "above" strikes, ~1/4 range brackets


def install_stations() -> None:
    """Make the synthesized stations known to this process (BY_SERIES / BY_ICAO in place; STATIONS rebound)."""
    for st in SIM_STATIONS:
        station_table.BY_SERIES.setdefault(st.series, st)
        station_table.BY_ICAO.setdefault(st.icao, st)
    if SIM_STATIONS[0] not in station_table.STATIONS:
        station_table.STATIONS = ALL_STATIONS


@dataclass(frozen=True)
class Plan:
    """How a target market count is split."""

    cities: int
    btc_closes: int  # events per BTC series (the last one is the daily close)
    strikes: int  # "above" strikes per close
    brackets: int  # range brackets per close (plus two tails)

    @property
    def weather_markets(self) -> int:
        return self.cities * 2 * BRACKETS_PER_DAY

    @property
    def btc_markets(self) -> int:
        return self.btc_closes * (self.strikes + self.brackets + 2)

    @property
    def total(self) -> int:
        return self.weather_markets + self.btc_markets


def plan(target: int) -> Plan:
    """Weather for up to every station (fewer for a small world), BTC for the rest, in groups of ~200."""
    cities = min(len(ALL_STATIONS), max(2, target // 80))
    rest = max(target - cities * 2 * BRACKETS_PER_DAY, 60)
    closes = max(1, round(rest / GROUP_SIZE))
    per = math.ceil(rest / closes)
    brackets = max(8, per // 4 - 2)
    strikes = max(per - brackets - 2, 20)
    return Plan(cities=cities, btc_closes=closes, strikes=strikes, brackets=brackets)


def _daily_close(now: datetime) -> datetime:
    """The next 5 PM Eastern (Kalshi's daily BTC close), at least two hours away."""
    et = now.astimezone(ET)
    close = datetime.combine(et.date(), time(17), ET)
    if close - now < timedelta(hours=2):
        close = datetime.combine(et.date() + timedelta(days=1), time(17), ET)
    return close.astimezone(UTC)


def _list_btc(world: World, close: datetime, now: datetime, p: Plan, spot: float) -> None:
    horizon = max(3600.0, (close - now).total_seconds() + 600.0)  # open now, whatever the close
    btc_ladder(world, close=close, spot=spot, n_strikes=p.strikes, step=100, horizon_s=horizon)
    btc_range(world, close=close, spot=spot, n_brackets=p.brackets, width=250, horizon_s=horizon)


def _hourly_closes(now: datetime, n: int, skip: datetime) -> list[datetime]:
    first = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out = []
    k = 0
    while len(out) < n:
        c = first + timedelta(hours=k)
        k += 1
        if c != skip:
            out.append(c)
    return out


def scaled_world(seed: int, now: datetime, target: int = 2000, clock: Any = None) -> World:
    """A world with about `target` open markets (see the module doc); `clock` defaults to the wall clock."""
    from services.sim.wxfake import WeatherTruth

    p = plan(target)
    world = World(seed, clock or (lambda: datetime.now(UTC)))
    world.weather = WeatherTruth(seed, stations=ALL_STATIONS)
    for st in ALL_STATIONS[: p.cities]:
        zone = ZoneInfo(st.tz)
        today = climate_day(now, st.tz)
        for day in (today, today + timedelta(days=1)):
            centre = 45 + world.rng_for("scale-centre", st.icao, day).randrange(0, 40)
            event = weather_event(world, series=st.series, city=st.city.upper(), station=st.icao, tz=st.tz,
                                  day=day, true_max_f=float(centre))
            for info in world.catalog.markets_of(event):
                if info.open_time > now:  # tomorrow before 10 AM local: open it now (see the module doc)
                    info.open_time = now - timedelta(minutes=1)
                    info.created_time = info.open_time
                    world.advance(now, only=info.ticker)
        del zone
    spot = world.rng_for("btc-spot").uniform(60_000, 120_000)
    daily = _daily_close(now)
    hourly = _hourly_closes(now, p.btc_closes - 1, daily)
    for close in [*hourly, daily]:  # earliest first: the path starts at the first window's open
        _list_btc(world, close, now, p, spot)

    def roll(w: World, at: datetime) -> None:
        # Keep `btc_closes - 1` hourly closes listed as hours close (each new hour starts from the last settle).
        want = _hourly_closes(at, p.btc_closes - 1, daily)
        for close in want:
            if f"btc:{close.isoformat()}" not in w.facts:
                _list_btc(w, close, at, p, float(w.btc.price_at(max(at, w.btc.start))) if w.btc else spot)

    world.rollers.append(roll)
    return world


def series_list(target: int) -> list[str]:
    """The series the desk should follow for a world of `target` markets (KDESK_FEEDS_SERIES)."""
    return [st.series for st in ALL_STATIONS[: plan(target).cities]] + ["KXBTCD", "KXBTC"]


# -- the process ------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m services.sim.scale", description="Scaled simulated Kalshi exchange")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(env.get("KDESK_SIM_BASE_PORT") or "8089"))
    p.add_argument("--seed", type=int, default=int(env.get("KDESK_SIM_SEED", "1")))
    p.add_argument("--target", type=int, default=2000, help="open markets to list (about)")
    p.add_argument("--keys-dir", type=Path, default=Path(env.get("KDESK_SIM_KEYS_DIR", "var/sim/keys")))
    p.add_argument("--balance", default="10000.00")
    p.add_argument("--tick-s", type=float, default=0.1, help="seconds between world steps")
    p.add_argument("--actions-per-s", type=float, default=100.0, help="background trader actions per second")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Build the scaled world and serve it (exchange, venues, weather) until `stop`."""
    from libs.common.money import parse_dollars
    from libs.common.simnet import SimEndpoints
    from services.sim.__main__ import register_keys, serve_until, start_venues
    from services.sim.liquidity import BackgroundTraders
    from services.sim.server import SimExchange
    from services.sim.wxfake import WeatherFake

    world = scaled_world(args.seed, datetime.now(UTC), args.target)
    traders = BackgroundTraders(world)
    steps = max(1, round(args.actions_per_s * args.tick_s))
    exchange = SimExchange(world, background=True, tick_s=args.tick_s, traders=traders, trader_steps=steps)
    balance = parse_dollars(args.balance)
    register_keys(exchange, args.keys_dir, balance)
    await exchange.start(args.host, args.port)
    venues = await start_venues(world, args.host, exchange.port)
    weather = await WeatherFake(world.weather, clock=world.clock, stations=ALL_STATIONS).start(
        args.host, SimEndpoints(args.host, exchange.port).weather_port)
    print(f"sim_scale_ready markets={len(world.active_markets())} port={exchange.port}", flush=True)
    await serve_until(stop, exchange, args.keys_dir, balance, venues, weather, every_s=1.0)


async def _main(args: argparse.Namespace) -> None:
    from services.sim.__main__ import until_signalled

    await until_signalled(lambda stop: run(args, stop))


def main(argv: Sequence[str] | None = None) -> None:
    """Process entry point."""
    from libs.common.logs import configure_logging

    args = parse_args(argv)
    configure_logging("sim", os.environ.get("KDESK_LOG_LEVEL", "WARNING"), os.environ.get("KDESK_LOG_FORMAT", "auto"))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
