"""Service health: per-input freshness, heartbeats on `ops.health.*`, NATS service-API pings, checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

from nats.micro import Service, add_service
from nats.micro.service import ServiceConfig

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.events import Heartbeat, InputFreshness, utcnow
from libs.common.logs import get_logger

log = get_logger(__name__)
VERSION = "0.1.0"


class Freshness:
    """Tracks when each input of a service last delivered data, against its allowed age."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max_age: dict[str, float] = {}
        self._seen: dict[str, float] = {}

    def expect(self, name: str, max_age_s: float) -> None:
        """Declare an input and how old its data may get before the service is degraded."""
        self._max_age[name] = max_age_s

    def mark(self, name: str, *, age_s: float = 0.0) -> None:
        """Record that `name` delivered data whose source timestamp is `age_s` old (0: as of now)."""
        seen = self._clock() - max(age_s, 0.0)
        self._seen[name] = max(seen, self._seen.get(name, seen))

    def snapshot(self) -> dict[str, InputFreshness]:
        """Age of every declared input, now."""
        now = self._clock()
        out: dict[str, InputFreshness] = {}
        for name, max_age in self._max_age.items():
            seen = self._seen.get(name)
            age = None if seen is None else round(now - seen, 3)
            out[name] = InputFreshness(age_s=age, max_age_s=max_age, stale=age is None or age > max_age)
        return out


def service_api_name(service: str) -> str:
    """Name under which a service registers with the NATS service API (`$SRV.PING.<name>`)."""
    return f"kdesk_{subjects.token(service).replace('-', '_')}"


class HealthReporter:
    """Publishes heartbeats and registers the process with the NATS service API."""

    def __init__(self, bus: Bus, service: str, instance: str, freshness: Freshness, interval_s: float = 5.0) -> None:
        self.bus = bus
        self.service = service
        self.instance = instance
        self.freshness = freshness
        self.interval_s = interval_s
        self.started_at: datetime = utcnow()
        self.detail = ""
        self._task: asyncio.Task[None] | None = None
        self._micro: Service | None = None

    def heartbeat(self) -> Heartbeat:
        """The heartbeat as of now: ok when every input is fresh, degraded otherwise."""
        inputs = self.freshness.snapshot()
        stale = sorted(k for k, v in inputs.items() if v.stale)
        return Heartbeat(ts_event=utcnow(), mode=self.bus.mode, service=self.service, instance=self.instance,
                         status="degraded" if stale else "ok", started_at=self.started_at, inputs=inputs,
                         detail=self.detail or (f"stale: {', '.join(stale)}" if stale else ""))

    async def start(self) -> None:
        """Register with the service API and start the heartbeat loop."""
        self._micro = await add_service(self.bus.nc, ServiceConfig(
            name=service_api_name(self.service), version=VERSION, description=f"kdesk {self.service}",
            metadata={"instance": self.instance, "mode": self.bus.mode.value}))
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat:{self.service}")

    async def _loop(self) -> None:
        subject = subjects.ops_health(self.service, self.instance)
        while True:
            try:
                await self.bus.publish(subject, self.heartbeat())
            except Exception as e:  # NATS down: the reconnecting client buffers or raises; keep beating
                log.warning("heartbeat_publish_failed", error=str(e))
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Stop beating and leave the service API."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()


async def check(bus: Bus, service: str, instance: str | None = None, *, wait_s: float = 12.0) -> tuple[bool, str]:
    """Wait for a heartbeat of `service` (one instance, or any); return (healthy, explanation)."""
    subject = subjects.ops_health(service, instance) if instance else subjects.ops_health_all(service)
    got: asyncio.Future[Heartbeat] = asyncio.get_running_loop().create_future()

    async def on_beat(hb: Heartbeat) -> None:
        if not got.done():
            got.set_result(hb)

    sub = await bus.subscribe(subject, Heartbeat, on_beat)
    try:
        hb = await asyncio.wait_for(got, wait_s)
    except TimeoutError:
        return False, f"{service}: no heartbeat on {subject} within {wait_s:.0f} s"
    finally:
        await sub.unsubscribe()
    return judge(hb)


def judge(hb: Heartbeat, now: datetime | None = None) -> tuple[bool, str]:
    """Whether a heartbeat says healthy (status ok and no stale input), with the explanation `kdesk health` prints.

    The one health check of the desk: `kdesk health` (compose healthchecks) and `kdesk up` (a service is
    ready when it passes) both judge by it.
    """
    age = ((now or utcnow()) - hb.ts_event).total_seconds()
    stale = {k: v for k, v in hb.inputs.items() if v.stale}
    parts = [f"{k} {'never' if v.age_s is None else f'{v.age_s:.1f}s'}" for k, v in sorted(hb.inputs.items())]
    text = f"{hb.service}/{hb.instance}: {hb.status}, heartbeat {age:.1f}s old"
    if parts:
        text += f"; {', '.join(parts)}"
    if hb.detail:
        text += f" ({hb.detail})"
    return hb.status == "ok" and not stale, text
