"""The local supervisor behind `kdesk up`: one child process per service, restarted when it dies.

Children run in their own sessions so a terminal Ctrl-C reaches only the supervisor, which then
stops them in order (SIGTERM, then SIGKILL after a grace period). On Linux each child also gets
PDEATHSIG, so even a SIGKILLed supervisor leaves nothing running. A child that keeps dying is
restarted with back-off (`libs.common.backoff`), started over once it has run `stable_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from libs.common.backoff import Backoff
from libs.common.embedded import child_preexec

# Start order: the simulated world first, then data producers before consumers; the web page reads them all.
SERVICE_ORDER = ("sim", "feeds", "signals", "executor", "resolver", "notifier", "dashboard")
SERVICES_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


SIM_ONLY = frozenset({"sim"})  # the offline world: nothing in paper, demo or live mode talks to it


def discover(services_dir: Path = SERVICES_DIR, order: Sequence[str] = SERVICE_ORDER, *,
             mode: str = "sim") -> tuple[list[ServiceSpec], list[str]]:
    """Services of this mode that have a `__main__.py`, and the names of those without one (not built yet)."""
    present, missing = [], []
    for name in order:
        if name in SIM_ONLY and mode != "sim":
            continue
        if (services_dir / name / "__main__.py").is_file():
            present.append(ServiceSpec(name, (sys.executable, "-m", f"services.{name}")))
        else:
            missing.append(name)
    return present, missing


@dataclass
class Child:
    """Runtime state of one supervised service."""

    spec: ServiceSpec
    backoff: Backoff = field(default_factory=Backoff)
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    last_exit: int | None = None
    next_start: float = 0.0
    state: str = "starting"
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    # What its health check last said while this process runs (None: nothing passed yet, shown as "starting"):
    # "ready", "degraded" or "silent", with a short why. `kdesk up` feeds it (services/ctl/readiness.py).
    health: str | None = None
    health_detail: str = ""
    spawned_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def restarts(self) -> int:
        """Restarts since the service last ran stably (its back-off's failure count)."""
        return self.backoff.failures


class Supervisor:
    """Starts, watches, restarts and stops service processes."""

    def __init__(self, specs: Sequence[ServiceSpec], *, env: dict[str, str] | None = None,
                 backoff_base_s: float = 1.0, backoff_cap_s: float = 30.0, stable_after_s: float = 60.0,
                 stop_timeout_s: float = 7.0, say: Callable[[str], None] | None = None,
                 log_dir: Path | None = None) -> None:
        self.children = [Child(s, Backoff(backoff_base_s, backoff_cap_s, healthy_after_s=stable_after_s))
                         for s in specs]
        self.env = {**os.environ, **(env or {})}
        self.stop_timeout_s = stop_timeout_s
        self.say = say or (lambda line: print(line, flush=True))
        self.log_dir = log_dir
        self._stopping = False

    async def _spawn(self, child: Child) -> None:
        env = {**self.env, **child.spec.env}
        child.proc = await asyncio.create_subprocess_exec(
            *child.spec.argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=child_preexec())
        child.started_at = time.monotonic()
        child.spawned_at = datetime.now(UTC)
        child.state = "running"
        child.health, child.health_detail = None, ""
        child.pumps = [asyncio.create_task(self._pump(child, child.proc))]
        self.say(f"[supervisor] {child.spec.name:<9} started  pid {child.proc.pid}"
                 + (f" (restart #{child.restarts})" if child.restarts else ""))

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        # Prefix every output line with the service name; keep a copy under var/log/.
        assert proc.stdout is not None
        sink = None
        if self.log_dir is not None:
            from services.ctl.private import open_private_log, private_dir

            private_dir(self.log_dir)  # logs are the owner's alone (0700 directory, 0600 files)
            sink = open(open_private_log(self.log_dir / f"{child.spec.name}.log"), "ab")  # noqa: ASYNC230
        try:
            async for line in proc.stdout:
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                self.say(f"[{child.spec.name}] {line.decode(errors='replace').rstrip()}")
        finally:
            if sink is not None:
                sink.close()

    async def start(self) -> None:
        """Start every service."""
        for child in self.children:
            await self._spawn(child)

    async def watch(self, stop: asyncio.Event, tick_s: float = 0.2) -> None:
        """Restart services that die (with backoff, saying so) until `stop` is set."""
        while not stop.is_set():
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                if child.state == "running" and proc is not None and proc.returncode is not None:
                    for t in child.pumps:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(t, 1.0)
                    ran = now - child.started_at
                    child.backoff.reset_if_healthy(lasted_s=ran)  # it had run stably: start the back-off over
                    child.last_exit = proc.returncode
                    delay = child.backoff.next_delay()
                    child.next_start = now + delay
                    child.state = "backoff"
                    self.say(f"[supervisor] {child.spec.name:<9} exited with code {proc.returncode} after "
                             f"{ran:.1f}s; restarting in {delay:.0f}s (restart #{child.restarts})")
                elif child.state == "backoff" and now >= child.next_start:
                    await self._spawn(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)

    def child(self, name: str) -> Child | None:
        """The supervised service called `name`."""
        return next((c for c in self.children if c.spec.name == name), None)

    def set_health(self, name: str, health: str, detail: str = "") -> bool:
        """Record what the running service's health check says; True when that changed (worth a status line)."""
        c = self.child(name)
        if c is None or c.state != "running" or (c.health, c.health_detail) == (health, detail):
            return False
        c.health, c.health_detail = health, detail
        return True

    def shown_state(self, c: Child) -> str:
        """`starting` until the health check first passes, then what it says; else the process state."""
        return (c.health or "starting") if c.state == "running" else c.state

    def all_ready(self) -> bool:
        """Every service runs and passes its health check."""
        return bool(self.children) and all(c.state == "running" and c.health == "ready" for c in self.children)

    def status_block(self, c: Child) -> list[str]:
        """One service: state (health), pid, uptime, restarts; then, indented, why it is not ready."""
        now = time.monotonic()
        pid = c.proc.pid if c.proc and c.state == "running" else "-"
        up = f"{now - c.started_at:.0f}s" if c.state == "running" else "-"
        line = (f"{c.spec.name:<9} {self.shown_state(c):<8} pid {pid!s:<7} up {up:<6} restarts {c.restarts}"
                + (f" last exit {c.last_exit}" if c.last_exit is not None else ""))
        return [line] + ([f"{'':<9} {c.health_detail}"] if c.state == "running" and c.health_detail else [])

    def status_lines(self) -> list[str]:
        """Per service: state, pid, uptime, restarts (and a second line saying why it is not ready)."""
        return [line for c in self.children for line in self.status_block(c)]

    async def stop(self) -> None:
        """SIGTERM every service, wait for the grace period, SIGKILL whatever is left."""
        self._stopping = True
        running = [c for c in self.children if c.proc is not None and c.proc.returncode is None]
        for c in running:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for c in running:
            assert c.proc is not None
            try:
                await asyncio.wait_for(c.proc.wait(), self.stop_timeout_s)
            except TimeoutError:
                self.say(f"[supervisor] {c.spec.name:<9} did not stop within {self.stop_timeout_s:.0f}s; killing")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                await c.proc.wait()
            c.state = "stopped"
            self.say(f"[supervisor] {c.spec.name:<9} stopped (code {c.proc.returncode})")
        for c in self.children:
            c.state = "stopped"
            for t in c.pumps:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 1.0)
