"""`python -m services.sim`: the offline Kalshi exchange with a default world and background traders.

    python -m services.sim --port 8089 --seed 7 --keys-dir var/sim/keys

With no arguments it reads KDESK_SIM_BASE_PORT (set by `kdesk up`; else KDESK_SIM_PORT, else 8089),
KDESK_SIM_HOST (127.0.0.1), KDESK_SIM_SEED (1),
KDESK_SIM_KEYS_DIR (`$KDESK_VAR_DIR/sim/keys`, i.e. var/sim/keys) and KDESK_SIM_BALANCE (10000.00
dollars per account, split evenly over the exchange shards the markets live on: 0 and 2 for BTC),
which is how `kdesk up` starts it. Every `<key_id>.pub.pem` in the keys
directory becomes an API key acting for user `<key_id>` with a funded account; the directory is
rescanned every few seconds, so keys created after start work too. The fake crypto venues
(services/sim/venues.py) listen on the next ports of the block (libs/common/simnet.py), their
prices following the world's BTC path; fake Open-Meteo/NWS follow on the next one, and the fake
Telegram Bot API (services/sim/telegram.py) on the last, unless --no-telegram. Its bot token is
KDESK_SIM_TELEGRAM_TOKEN (else services.sim.telegram.SIM_TOKEN) and the users in
KDESK_TELEGRAM_OPERATORS / KDESK_TELEGRAM_VIEWERS (comma-separated ids) have started a chat with
it, so the bot may write to them; `kdesk chat` talks to it through its `/_sim/` endpoints.
SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from libs.common.logs import configure_logging, get_logger
from libs.common.money import MoneyError, parse_dollars
from services.sim.server import SimExchange
from services.sim.telegram import SIM_TOKEN, bot_id

log = get_logger("services.sim")

KEY_SUFFIX = ".pub.pem"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line, with defaults from the environment."""
    env = os.environ
    var_dir = Path(env.get("KDESK_VAR_DIR", "var"))
    p = argparse.ArgumentParser(prog="python -m services.sim", description="Simulated Kalshi exchange")
    p.add_argument("--host", default=env.get("KDESK_SIM_HOST", "127.0.0.1"))
    # `kdesk up` hands every process the same block of ports (libs/common/simnet.py): the exchange is its first.
    p.add_argument("--port", type=int,
                   default=int(env.get("KDESK_SIM_BASE_PORT") or env.get("KDESK_SIM_PORT") or "8089"))
    p.add_argument("--seed", type=int, default=int(env.get("KDESK_SIM_SEED", "1")))
    p.add_argument("--keys-dir", type=Path, default=Path(env.get("KDESK_SIM_KEYS_DIR", var_dir / "sim" / "keys")))
    p.add_argument("--balance", default=env.get("KDESK_SIM_BALANCE", "10000.00"),
                   help="starting balance of each key's account, in dollars (split evenly over its shards)")
    p.add_argument("--tick-s", type=float, default=float(env.get("KDESK_SIM_TICK_S", "1.0")),
                   help="seconds between world steps (lifecycle, expiries, background traders)")
    p.add_argument("--no-traders", action="store_true", help="do not run background traders")
    p.add_argument("--trader-steps", type=int, default=int(env.get("KDESK_SIM_TRADER_STEPS", "3")),
                   help="background trader actions per tick")
    p.add_argument("--no-venues", action="store_true",
                   help="do not serve the fake crypto venues on the ports after the exchange's")
    p.add_argument("--no-telegram", action="store_true", help="do not serve the fake Telegram Bot API")
    args = p.parse_args(argv)
    try:
        args.balance_ticks = parse_dollars(args.balance)
    except MoneyError as e:
        p.error(f"--balance / KDESK_SIM_BALANCE: {e}")
    args.telegram_token = env.get("KDESK_SIM_TELEGRAM_TOKEN") or SIM_TOKEN
    try:
        bot_id(args.telegram_token)
        args.telegram_chats = telegram_chats(env.get("KDESK_TELEGRAM_OPERATORS", ""),
                                             env.get("KDESK_TELEGRAM_VIEWERS", ""))
    except ValueError as e:
        p.error(f"fake Telegram: {e}")
    return args


def telegram_chats(*lists: str) -> list[int]:
    """User ids from comma-separated lists (KDESK_TELEGRAM_OPERATORS, …VIEWERS), each once, in order."""
    out: list[int] = []
    for text in lists:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if not part.lstrip("-").isdigit():
                raise ValueError(f"{part!r} is not a numeric Telegram user id")
            if int(part) not in out:
                out.append(int(part))
    return out


def register_keys(exchange: SimExchange, keys_dir: Path, balance: int) -> list[str]:
    """Register every new `<key_id>.pub.pem` in `keys_dir` (user = key id, funded); return the new key ids."""
    added: list[str] = []
    if not keys_dir.is_dir():
        return added
    for path in sorted(keys_dir.glob("*" + KEY_SUFFIX)):
        key_id = path.name[: -len(KEY_SUFFIX)]
        if not key_id or key_id in exchange.keys:
            continue
        try:
            exchange.register_key(key_id, path.read_bytes(), key_id, balance=balance)
        except (OSError, ValueError) as e:
            log.warning("sim_key_rejected", path=str(path), error=str(e))
            continue
        added.append(key_id)
        log.info("sim_key_registered", key_id=key_id, user_id=key_id)
    return added


def _traders(world: Any) -> Any:
    if getattr(world, "traders", None) is not None:
        return None  # the world brings its own; SimExchange.tick steps it
    try:
        from services.sim.liquidity import BackgroundTraders
    except ImportError as e:
        log.warning("sim_no_background_traders", error=str(e))
        return None
    return BackgroundTraders(world)


async def start_weather(world: Any, host: str, exchange_port: int) -> Any:
    """Serve fake Open-Meteo and NWS on the simnet weather port, truthful to the world's weather events."""
    from libs.common.simnet import SimEndpoints
    from services.sim.scenarios import weather_truth
    from services.sim.wxfake import WeatherFake

    port = SimEndpoints(host, exchange_port).weather_port
    try:
        fake = await WeatherFake(weather_truth(world), clock=world.clock).start(host, port)
    except OSError as e:
        log.warning("sim_fake_weather_failed", port=port, error=str(e))
        return None
    log.info("fake_weather_started", url=f"http://{host}:{port}")
    return fake


async def start_telegram(host: str, exchange_port: int, token: str, chats: Sequence[int]) -> Any:
    """Serve the fake Telegram Bot API on the simnet telegram port; best effort."""
    from libs.common.simnet import SimEndpoints
    from services.sim.telegram import FakeTelegram

    port = SimEndpoints(host, exchange_port).telegram_port
    fake = FakeTelegram(token, chats=chats)
    try:
        await fake.start(host, port)
    except OSError as e:
        log.warning("sim_fake_telegram_failed", port=port, error=str(e))
        return None
    log.info("fake_telegram_started", url=fake.url, bot=fake.bot_user["username"], chats=len(chats))
    return fake


async def start_llm(world: Any, host: str, exchange_port: int) -> Any:
    """Serve the fake LLM provider on the simnet llm port, answering around the world's hidden truths."""
    from libs.common.simnet import SimEndpoints
    from services.sim.llm import FakeLlm

    port = SimEndpoints(host, exchange_port).llm_port
    fake = FakeLlm(seed=world.seed)

    def truth(ticker: str) -> float | None:
        return world.ideal_p(ticker) if world.has_ideal(ticker) else None

    fake.truth_source = truth
    try:
        await fake.start(host, port)
    except OSError as e:
        log.warning("sim_fake_llm_failed", port=port, error=str(e))
        return None
    log.info("fake_llm_started", url=fake.url)
    return fake


async def start_venues(world: Any, host: str, exchange_port: int) -> list[Any]:
    """Serve the fake crypto venues on the ports simnet assigns after the exchange's; best effort."""
    try:
        from libs.common.simnet import SimEndpoints
        from services.sim.scenarios import btc_price_at
        from services.sim.venues import VENUES
    except ImportError as e:
        log.warning("sim_no_fake_venues", error=str(e))
        return []
    ends = SimEndpoints(host, exchange_port)
    started = []
    for name, cls in VENUES.items():
        try:
            venue = cls(lambda t: btc_price_at(world, t), clock=world.clock, seed=world.seed, host=host,
                        port=ends.venue_port(name))
            await venue.start()
        except (OSError, ValueError) as e:
            log.warning("sim_fake_venue_failed", venue=name, error=str(e))
            continue
        started.append(venue)
    return started


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Build the world, serve it until `stop` is set."""
    from services.sim.scenarios import default_world

    llm_series = tuple(t.strip().upper() for t in os.environ.get("KDESK_LLM_SERIES", "").split(",") if t.strip())
    world = default_world(args.seed, datetime.now(UTC), llm_series=llm_series)
    traders = None if args.no_traders else _traders(world)
    exchange = SimExchange(world, background=True, tick_s=args.tick_s, traders=traders,
                           trader_steps=args.trader_steps)
    register_keys(exchange, args.keys_dir, args.balance_ticks)
    await exchange.start(args.host, args.port)
    venues = [] if args.no_venues else await start_venues(world, args.host, exchange.port)
    weather = await start_weather(world, args.host, exchange.port)
    telegram = None if args.no_telegram else await start_telegram(args.host, exchange.port, args.telegram_token,
                                                                  args.telegram_chats)
    llm = await start_llm(world, args.host, exchange.port)
    log.info("sim_ready", rest_url=exchange.rest_url, ws_url=exchange.ws_url, seed=args.seed,
             keys_dir=str(args.keys_dir), keys=len(exchange.keys.key_ids()),
             markets=len(exchange.catalog.markets), venues={v.name: v.ws_url for v in venues},
             telegram_url=telegram.url if telegram is not None else None)
    await serve_until(stop, exchange, args.keys_dir, args.balance_ticks, venues, weather, telegram, llm)


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


async def serve_until(stop: asyncio.Event, exchange: SimExchange, keys_dir: Path, balance: int,
                      venues: Sequence[_Stoppable], *fakes: _Stoppable | None, every_s: float = 2.0) -> None:
    """Serve until `stop` is set, registering every `every_s` the key files dropped into `keys_dir` (`kdesk up`
    writes the desk's there); then stop the venues (one that fails to stop is skipped), the other fakes (None:
    not started) and the exchange."""
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            register_keys(exchange, keys_dir, balance)
    finally:
        for v in venues:
            with contextlib.suppress(Exception):
                await v.stop()
        for f in fakes:
            if f is not None:
                await f.stop()
        await exchange.stop()


async def until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `serve(stop)` with `stop` set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(stop)


async def _main(args: argparse.Namespace) -> None:
    await until_signalled(lambda stop: run(args, stop))


def main(argv: Sequence[str] | None = None) -> None:
    """Process entry point."""
    args = parse_args(argv)
    configure_logging("sim", os.environ.get("KDESK_LOG_LEVEL", "INFO"), os.environ.get("KDESK_LOG_FORMAT", "auto"))
    try:
        asyncio.run(_main(args))
    except OSError as e:
        log.error("sim_cannot_listen", host=args.host, port=args.port, error=str(e))
        sys.exit(1)
    except ImportError as e:
        log.error("sim_world_unavailable", error=str(e), hint="services/sim/scenarios.py provides default_world")
        sys.exit(1)
    log.info("sim_stopped")


if __name__ == "__main__":
    main()
