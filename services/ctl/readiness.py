"""When `kdesk up` calls a service ready: its health check passes, not merely its process exists.

A desk service is ready when its heartbeat passes `libs.common.health.judge` (the check `kdesk health`
makes: status ok and no stale input); a heartbeat that fails it makes the line `degraded` with the stale
inputs, and a service whose heartbeats stop is `silent`. The simulator sends no heartbeat: it is ready when
its exchange answers `GET /exchange/status`. Each change prints the service's status line; when every
service is ready, one line says the desk is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from libs.common import subjects
from libs.common.events import Heartbeat, utcnow
from libs.common.health import judge
from services.ctl.supervisor import Supervisor

SIM = "sim"


def why_not_ready(hb: Heartbeat, width: int = 60) -> str:
    """A failing heartbeat in about `width` characters: its stale inputs (`+N` for those left out), else its
    status and detail."""
    stale = sorted(k for k, v in hb.inputs.items() if v.stale)
    if not stale:
        return (f"{hb.status}: {hb.detail}" if hb.detail else hb.status)[:width]
    for keep in range(len(stale), 0, -1):
        text = "stale: " + ", ".join(stale[:keep]) + (f" +{len(stale) - keep}" if keep < len(stale) else "")
        if len(text) <= width:
            break
    return text


class Readiness:
    """Follows heartbeats (and probes the simulator) for the supervisor's services; says what changes."""

    def __init__(self, sup: Supervisor, *, say: Callable[[str], None], health_interval_s: float,
                 sim_status_url: str | None = None, started: float | None = None, passes_needed: int = 2) -> None:
        self.sup = sup
        # A service's first heartbeat goes out before it has declared its inputs (nothing can be stale yet), so
        # one pass proves little: ready takes `passes_needed` passing heartbeats in a row.
        self.passes_needed = passes_needed
        self.passes: dict[tuple[str, datetime], int] = {}  # (service, its process's spawn time) -> passes in a row
        self.say = say
        self.silent_after_s = 3 * health_interval_s + 2
        self.sim_status_url = sim_status_url
        self.started = time.monotonic() if started is None else started
        self.last_beat: dict[str, float] = {}  # service -> monotonic time of its last heartbeat
        self.ready_announced = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, bus: Any) -> None:
        """Subscribe to this mode's heartbeats and start the simulator probe and the silence watch."""
        await bus.subscribe(subjects.ops_health_all(), Heartbeat, self.on_beat)
        self._tasks.append(asyncio.create_task(self._watch(), name="readiness"))

    async def stop(self) -> None:
        """Stop probing and watching."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    def on_beat(self, hb: Heartbeat) -> None:
        """A heartbeat: ready after enough passing ones in a row, degraded (with the reason) at a failing one."""
        c = self.sup.child(hb.service)
        # A beat from before this process started (the last one of a process that died) says nothing about it.
        if c is None or hb.started_at < c.spawned_at - timedelta(seconds=2):
            return
        self.last_beat[hb.service] = time.monotonic()
        ok, _ = judge(hb, utcnow())
        key = (hb.service, c.spawned_at)  # passes are counted per process
        self.passes[key] = self.passes.get(key, 0) + 1 if ok else 0
        if not ok:
            self._mark(hb.service, "degraded", why_not_ready(hb))
        elif self.passes[key] >= self.passes_needed:
            self._mark(hb.service, "ready")

    def _mark(self, name: str, health: str, detail: str = "") -> None:
        if not self.sup.set_health(name, health, detail):
            return
        c = self.sup.child(name)
        assert c is not None
        for line in self.sup.status_block(c):
            self.say(f"[status] {line}")
        if self.sup.all_ready() and not self.ready_announced:
            self.ready_announced = True
            self.say(f"[kdesk] desk ready: every service passed its health check "
                     f"({time.monotonic() - self.started:.0f} s after start)")
        elif not self.sup.all_ready() and self.ready_announced:
            self.ready_announced = False
            self.say(f"[kdesk] desk not ready: {name} is {health}" + (f" ({detail})" if detail else ""))

    async def _sim_ok(self, client: httpx.AsyncClient) -> bool:
        assert self.sim_status_url is not None
        try:
            return (await client.get(self.sim_status_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _watch(self, tick_s: float = 1.0, ready_probe_every: int = 5) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for n in itertools.count():
                now = time.monotonic()
                for c in self.sup.children:
                    if c.state != "running":
                        continue
                    if c.spec.name == SIM:
                        # Every tick until it answers, then every few: a simulator that stops answering shows.
                        if self.sim_status_url is not None and (c.health != "ready" or n % ready_probe_every == 0):
                            ok = await self._sim_ok(client)
                            if ok or c.health is not None:
                                self._mark(SIM, "ready" if ok else "silent",
                                           "" if ok else "the exchange does not answer")
                        continue
                    beat = self.last_beat.get(c.spec.name)
                    if c.health is not None and beat is not None and now - beat > self.silent_after_s:
                        self._mark(c.spec.name, "silent", f"no heartbeat for {now - beat:.0f} s")
                await asyncio.sleep(tick_s)


__all__ = ["Readiness", "why_not_ready"]
