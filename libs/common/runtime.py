"""The life of one service process: config, logging, bus, health, and a clean stop on SIGTERM.

Each service's `__main__` does `run_service("feeds", main)` where `main(rt)` wires its parts and
returns when `rt.stopping` is set. Exit codes: 0 clean stop, 2 bad configuration, 1 crash.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from libs.common.bus import Bus, BusError
from libs.common.config import ConfigError, Settings, load_settings
from libs.common.families import set_llm_series
from libs.common.health import Freshness, HealthReporter
from libs.common.logs import configure_logging, get_logger

log = get_logger(__name__)


class ServiceRuntime:
    """What a service's main gets: settings, a connected bus, freshness tracking, a stop signal."""

    def __init__(self, name: str, settings: Settings, bus: Bus) -> None:
        self.name = name
        self.settings = settings
        self.bus = bus
        set_llm_series(settings.llm_series_list())
        self.freshness = Freshness()
        self.health = HealthReporter(bus, name, settings.instance, self.freshness, settings.health_interval_s)
        self.stopping = asyncio.Event()

    async def wait_stopping(self) -> None:
        """Return when the process was asked to stop."""
        await self.stopping.wait()


async def serve(name: str, main: Callable[[ServiceRuntime], Awaitable[None]], settings: Settings) -> None:
    """Connect, provision, run `main` until SIGTERM/SIGINT, then drain the bus."""
    if not settings.nats_url:
        raise ConfigError("KDESK_NATS_URL is not set (`make run` sets it for you)")
    bus = await Bus.connect(settings.nats_url, service=name, mode=settings.mode, instance=settings.instance)
    rt = ServiceRuntime(name, settings, bus)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rt.stopping.set)
    try:
        await bus.provision(replicas=settings.stream_replicas)
        await rt.health.start()
        log.info("service_started", mode=settings.mode.value, profile=settings.profile.value)
        await main(rt)
    finally:
        log.info("service_stopping")
        await rt.health.stop()
        await bus.drain()
        log.info("service_stopped")


def run_service(name: str, main: Callable[[ServiceRuntime], Awaitable[None]]) -> None:
    """Process entry point for `python -m services.<name>`."""
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"kdesk {name}: {e}", file=sys.stderr)
        sys.exit(2)
    configure_logging(name, settings.log_level, settings.log_format, settings.instance)
    try:
        asyncio.run(serve(name, main, settings))
    except ConfigError as e:
        log.error("bad_configuration", error=str(e))
        sys.exit(2)
    except BusError as e:
        log.error("bus_unavailable", error=str(e))
        sys.exit(1)
