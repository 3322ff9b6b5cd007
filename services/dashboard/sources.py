"""What the page shows, as the desk's services answer it: `cmd.*` answers (cached briefly), heartbeats, alerts.

Every number comes from the service that owns it, the same requests the CLI and the Telegram bot make:
`cmd.executor.status|pnl|positions|orders|fills|decisions`, `cmd.signals.recent`, `cmd.resolver.accuracy`,
`cmd.feeds.ws_status`. Each answer is kept for a short while (`Source.ttl_s`) and refreshed in the background
(one request however many pages ask), so ten open pages cost the executor what one does, and a slow answer
never holds up a page. Heartbeats (`ops.health.*`) and alerts
(`ops.alert.*`, the last ones replayed from the OPS stream at start) are followed live.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.js import api

from libs.common import control, subjects
from libs.common.bus import Bus, CommandError
from libs.common.events import Alert, Heartbeat, utcnow
from libs.common.logs import get_logger, redact_text

log = get_logger(__name__)

# The services whose silence the health panel reports (the simulator sends no heartbeat).
LLM_CALLS_SHOWN = 15
DESK_SERVICES = ("feeds", "signals", "executor", "resolver", "notifier", "dashboard")
PNL_DAYS = 7
ACCURACY_DAYS = 30
FILLS_SHOWN = 25
SIGNALS_SHOWN = 20
ALERTS_KEPT = 30
ALERTS_REPLAYED = 300  # stream messages looked at for the last alerts at start (dead letters share the stream)


@dataclass
class Answer:
    """One source's last answer (or why there is none), and when it came."""

    value: Any = None
    error: str | None = None
    at: float | None = None  # monotonic time of the answer; None: never asked yet
    version: int = 0  # bumped on each new answer (charts are rebuilt only when it moves)
    ok_at: float | None = None  # monotonic time of the last good answer (the value shown)

    @property
    def ok(self) -> bool:
        """Whether the last ask was answered."""
        return self.error is None and self.at is not None


Fetch = Callable[[], Awaitable[Any]]


RETRY_S = 1.0  # a source whose last ask failed is asked again this soon, whatever its TTL


@dataclass
class Source:
    """A cached request, stale-while-revalidate: `get` answers at once with the last answer and, when that is
    older than `ttl_s`, starts one refresh in the background (concurrent callers share it); only a source that
    never answered yet is waited for. So a slow service delays what the page shows by one poll, not the page."""

    name: str
    fetch: Fetch
    ttl_s: float
    answer: Answer = field(default_factory=Answer)
    asked_at: float | None = None
    _inflight: asyncio.Task[None] | None = None

    def _stale(self, now: float) -> bool:
        if self.asked_at is None:
            return True
        return now - self.asked_at >= (self.ttl_s if self.answer.error is None else min(self.ttl_s, RETRY_S))

    async def get(self, now: float) -> Answer:
        """The last answer; a refresh started when it is stale; the first answer waited for."""
        if (self._inflight is None or self._inflight.done()) and self._stale(now):
            self.asked_at = now
            self._inflight = asyncio.create_task(self._refresh(), name=f"dashboard:{self.name}")
        if self.answer.at is None and self._inflight is not None and not self._inflight.done():
            # Shielded: a page that goes away mid-request does not cancel the answer the next one will use.
            await asyncio.shield(self._inflight)
        return self.answer

    async def settle(self) -> Answer:
        """The answer once the refresh in flight (if any) is done."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
        return self.answer

    def cancel(self) -> None:
        """Drop the refresh in flight (the service is stopping)."""
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    async def _refresh(self) -> None:
        try:
            value = await self.fetch()
        except CommandError as e:
            self.answer = Answer(self.answer.value, f"{e.code}: {redact_text(str(e))}", time.monotonic(),
                                 self.answer.version, self.answer.ok_at)
            return
        except Exception as e:  # NATS reconnecting, a malformed answer: say so on the page, keep serving
            log.warning("dashboard_source_failed", source=self.name, error=redact_text(str(e)))
            self.answer = Answer(self.answer.value, redact_text(str(e)) or type(e).__name__, time.monotonic(),
                                 self.answer.version, self.answer.ok_at)
            return
        now = time.monotonic()
        self.answer = Answer(value, None, now, self.answer.version + 1, now)


class Sources:
    """The desk as the page sees it: cached `cmd.*` answers, live heartbeats and the last alerts."""

    def __init__(self, bus: Bus, *, refresh_s: float, health_interval_s: float, timeout_s: float = 5.0,
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.mode = bus.mode.value
        self.timeout_s = timeout_s
        self.clock = clock
        self.monotonic = monotonic
        self.health_interval_s = health_interval_s
        self.beats: dict[str, Heartbeat] = {}
        self.alerts: deque[Alert] = deque(maxlen=ALERTS_KEPT)
        self._subs: list[Any] = []
        fast = min(1.0, refresh_s / 2)  # fresher than the page asks, so every poll of one page sees news
        self.sources: dict[str, Source] = {s.name: s for s in (
            Source("status", lambda: self._ask("executor", "status"), fast),
            Source("positions", lambda: self._ask("executor", "positions"), fast),
            Source("orders", lambda: self._ask("executor", "orders", {"open": True}), fast),
            Source("fills", lambda: self._ask("executor", "fills", {"limit": FILLS_SHOWN}), fast),
            Source("signals", self._signals, max(fast, 2.0)),
            # History: P&L by day and scores change slowly and cost the database more.
            Source("pnl", lambda: self._ask("executor", "pnl", {"days": PNL_DAYS}), max(fast, 5.0)),
            Source("accuracy", lambda: self._ask("resolver", "accuracy", {"days": ACCURACY_DAYS}), 30.0),
            Source("ws", lambda: self._ask("feeds", "ws_status"), max(fast, 5.0)),
            Source("control", self._control, max(fast, 2.0)),
            # The llm family's day and its call record; signals does not answer it when the family is off.
            Source("llm", lambda: self._ask("signals", "llm", {"limit": LLM_CALLS_SHOWN}), max(fast, 5.0)),
        )}

    async def _ask(self, service: str, verb: str, payload: dict[str, Any] | None = None) -> Any:
        return await self.bus.request(service, verb, payload or {}, timeout=self.timeout_s)

    async def _signals(self) -> list[dict[str, Any]]:
        """The newest signals with what the executor decided on each (as `/signals` in Telegram)."""
        rows = await self._ask("signals", "recent", {"limit": SIGNALS_SHOWN})
        try:
            decided = await self._ask("executor", "decisions", {"signal_ids": [r["signal_id"] for r in rows]})
        except CommandError:
            decided = {}  # the signals still show; "what happened" reads unknown
        for r in rows:
            d = decided.get(r["signal_id"]) or {}
            r["order_status"], r["reason"] = d.get("status"), d.get("reason") or r.get("reason")
        return rows  # type: ignore[no-any-return]

    async def _control(self) -> dict[str, Any]:
        """The mode's control switches (mode, live arming), as `kdesk mode` reads them."""
        return (await control.read_mode(await self.bus.control())).as_dict(self.clock())

    # -- live feeds ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow heartbeats and alerts (the last alerts first)."""
        self._subs.append(await self.bus.subscribe(subjects.ops_health_all(), Heartbeat, self._on_beat))
        await self._follow_alerts()

    async def stop(self) -> None:
        """Stop following and refreshing (the bus's drain ends the subscriptions too)."""
        for src in self.sources.values():
            src.cancel()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_beat(self, hb: Heartbeat) -> None:
        self.beats[f"{hb.service}/{hb.instance}"] = hb

    async def _follow_alerts(self) -> None:
        try:
            info = await self.bus.js.stream_info(self.bus.stream("OPS"))
        except Exception as e:  # not provisioned yet: alerts from now on only
            log.warning("dashboard_alert_history_unavailable", error=redact_text(str(e)))
            info = None
        if info is not None and info.state.messages:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=max(info.state.first_seq, info.state.last_seq - ALERTS_REPLAYED))
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)

        async def on_msg(msg: Any) -> None:
            try:
                a = Alert.model_validate_json(msg.data)
            except ValueError:
                return  # not an alert (dead letters are alerts; anything else is skipped)
            if a.mode.value == self.mode:
                self.alerts.append(a)

        self._subs.append(await self.bus.js.subscribe(self.bus.wire("ops.alert.>"), cb=on_msg, ordered_consumer=True,
                                                      config=config))

    # -- reading ------------------------------------------------------------------------------------

    async def answers(self) -> dict[str, Answer]:
        """Every cached answer, refreshed where stale (all at once)."""
        now = self.monotonic()
        names = list(self.sources)
        got = await asyncio.gather(*(self.sources[n].get(now) for n in names))
        return dict(zip(names, got, strict=True))

    def live_beats(self) -> tuple[list[Heartbeat], list[str]]:
        """Heartbeats heard lately (newest per instance), and the desk services with none."""
        horizon = self.clock() - timedelta(seconds=3 * self.health_interval_s + 2)
        beats = sorted((b for b in self.beats.values() if b.ts_event >= horizon),
                       key=lambda b: (b.service, b.instance))
        heard = {b.service for b in beats}
        return beats, [s for s in DESK_SERVICES if s not in heard]

    def last_alerts(self) -> list[Alert]:
        """The last alerts, newest first."""
        return list(reversed(self.alerts))


__all__ = ["ACCURACY_DAYS", "DESK_SERVICES", "PNL_DAYS", "RETRY_S", "Answer", "Source", "Sources"]
