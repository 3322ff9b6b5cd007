"""The notifier service: alerts in (a durable consumer on `ops.alert.>`), Telegram out, operators' commands.

Parts: `NotifierStore` (PostgreSQL: alerts, audit, outbox), `NotifierBot` (aiogram dispatcher, access
control, commands), `Sender` (drains the outbox to Telegram), `Digester` (periodic digest).

Without a bot token the notifier still runs: every alert is stored and logged, and it says once that
Telegram is off. Only one notifier per mode should poll Telegram (Telegram answers a second poller
with 409 Conflict); a second replica only stores alerts harmlessly twice-checked by the alert lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from libs.common import subjects
from libs.common.bus import Bus, CommandError, ConsumerSpec
from libs.common.config import Settings
from libs.common.db import create_engine, session_factory
from libs.common.events import Alert, Heartbeat, utcnow
from libs.common.jobs import Jobs
from libs.common.logs import get_logger, redact_text
from libs.common.runtime import ServiceRuntime
from services.notifier import render
from services.notifier.bot import NotifierBot
from services.notifier.sender import Sender
from services.notifier.store import NotifierStore, Outgoing

log = get_logger(__name__)

# Storing an alert is one short transaction; a crashed notifier's unacknowledged alerts return after 10 s.
ALERT_CONSUMER = ConsumerSpec(stream="OPS", durable="notifier", filter_subjects=("ops.alert.>",), batch=100,
                              ack_wait_s=10.0)


def make_bot(settings: Settings) -> Bot | None:
    """The aiogram Bot for the configured token and API server; None without a token."""
    if settings.telegram_bot_token is None:
        return None
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url)) \
        if settings.telegram_api_url else AiohttpSession()
    return Bot(settings.telegram_bot_token.get_secret_value(), session=session,
               default=DefaultBotProperties(parse_mode="HTML"))


class Digester:
    """Builds the periodic digest from what changed since the last one."""

    def __init__(self, notifier: Notifier) -> None:
        self.n = notifier
        self.since: datetime = utcnow()
        self.last_decisions: dict[str, int] | None = None
        self.last_sent: int | None = None
        self.last_resolver: dict[str, Any] | None = None

    async def build(self) -> dict[str, Any]:
        n = self.n
        now = utcnow()
        d: dict[str, Any] = {"window_s": (now - self.since).total_seconds()}
        try:
            st = await n.bot.ask("executor", "status")
            dec = st.get("decisions") or {}
            prev = self.last_decisions or {}
            d["decisions"] = {k: v - prev.get(k, 0) for k, v in dec.items() if v - prev.get(k, 0) > 0}
            d["orders_sent"] = max(0, st.get("orders_sent", 0) - (self.last_sent or 0))
            self.last_decisions, self.last_sent = dec, st.get("orders_sent", 0)
            fills = await n.bot.ask("executor", "fills", {"limit": 500})
            d["fills"] = sum(1 for f in fills if datetime.fromisoformat(str(f["filled_at"])) >= self.since)
            d["pnl"] = await n.bot.ask("executor", "pnl", {"days": 1})
        except CommandError as e:
            d["executor_error"] = str(e)
        try:
            rs = await n.bot.ask("resolver", "status")
            if self.last_resolver is not None and rs.get("counts") != self.last_resolver:
                acc = await n.bot.ask("resolver", "accuracy", {"days": 1})
                d["accuracy"] = acc.get("families") or {}
            self.last_resolver = rs.get("counts")
        except CommandError:
            pass
        d["suppressed"] = await n.store.suppressed_since(self.since)
        d["expired"] = n.expired
        n.expired = 0
        self.since = now
        return d

    async def run_once(self) -> None:
        if not self.n.bot.recipients():
            return
        d = await self.build()
        text = render.digest(self.n.mode, d)
        await self.n.store.enqueue([Outgoing(chat_id=c, kind="digest", body=text, silent=True)
                                    for c in self.n.bot.recipients()])
        self.n.wake()


class Notifier:
    """One notifier process."""

    def __init__(self, settings: Settings, bus: Bus, store: NotifierStore, tg: Bot | None) -> None:
        self.settings = settings
        self.mode = settings.mode.value
        self.bus = bus
        self.store = store
        self.tg = tg
        self.sender = Sender(tg, store) if tg is not None else None
        self.bot = NotifierBot(settings, bus, store, wake=self.wake)
        self.digester = Digester(self)
        self.expired = 0
        self.alerts_seen = 0
        self.alerts_sent = 0
        self.telegram_state = "off" if tg is None else "starting"
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.jobs = Jobs(self._job_failing)
        self.telegram_ok: float | None = None  # monotonic time of the last good getMe
        self.dp: Any = None
        self.jobs.add("expire", 60, self._expire)
        if tg is not None:
            self.jobs.add("telegram_ping", 30, self._ping)
        if settings.digest_every_s > 0 and tg is not None:
            self.jobs.add("digest", settings.digest_every_s, self.digester.run_once)

    def wake(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    async def start(self) -> None:
        await self.bus.subscribe(subjects.ops_health_all(), Heartbeat, self._on_beat)
        await self.bus.consume_batches(ALERT_CONSUMER, Alert, self.on_alerts)
        await self.bus.serve("notifier", "status", self.cmd_status)
        if self.tg is None:
            log.warning("telegram_off", why="KDESK_TELEGRAM_BOT_TOKEN is not set: alerts are stored and logged, "
                        "not sent; no Telegram commands")
        else:
            if not (self.bot.operators or self.bot.viewers):
                log.warning("telegram_nobody_allowed", why="KDESK_TELEGRAM_OPERATORS and KDESK_TELEGRAM_VIEWERS "
                            "are empty: every Telegram user is refused, no alert is sent")
            self._tasks.append(asyncio.create_task(self._poll()))
            assert self.sender is not None
            self._tasks.append(asyncio.create_task(self.sender.run(self._stop)))
        self._tasks += self.jobs.start(self._stop)
        log.info("notifier_started", mode=self.mode, telegram=self.tg is not None,
                 operators=len(self.bot.operators), viewers=len(self.bot.viewers))

    async def stop(self) -> None:
        self._stop.set()
        if self.dp is not None:
            # aiogram's polling runs in tasks of its own: cancelling ours would orphan them; ask it to stop.
            with contextlib.suppress(RuntimeError, TimeoutError):  # RuntimeError: it was not polling
                await asyncio.wait_for(self.dp.stop_polling(), 10)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.tg is not None:
            await self.tg.session.close()

    async def _on_beat(self, hb: Heartbeat) -> None:
        self.bot.on_beat(hb)

    async def _job_failing(self, job: Any, failing: bool) -> None:
        log.warning("notifier_job_failing" if failing else "notifier_job_recovered", job=job.name,
                    error=job.last_error)

    async def _ping(self) -> None:
        assert self.tg is not None
        await self.tg.get_me()
        self.telegram_ok = time.monotonic()

    async def _expire(self) -> None:
        self.expired += await self.store.expire_old()

    async def on_alerts(self, alerts: list[Alert]) -> None:
        """Store, decide, enqueue (one transaction per fetch); the JetStream acks follow, so a crash
        redelivers them and the stored rows make the redelivery a no-op."""
        recipients = self.bot.recipients() if self.tg is not None else []
        verdicts = await self.store.record_alerts(alerts, recipients, render.alert)
        self.alerts_seen += len(alerts)
        for alert, verdict in zip(alerts, verdicts, strict=True):
            if not verdict.stored:
                continue
            # The raising service logged the alert itself; a burst's suppressed repeats stay out of the log.
            # Without Telegram the log is where alerts go, so they are logged at their own level.
            level = _LEVEL.get(alert.severity, 20) if self.tg is None else 20 if verdict.sent else 10
            log.log(level, "alert", family=alert.family, severity=alert.severity, title=alert.title,
                    detail=alert.detail[:300], dedupe_key=alert.dedupe_key, sent=verdict.sent,
                    suppressed=verdict.reason)
            self.alerts_sent += verdict.sent
        if any(v.sent for v in verdicts):
            self.wake()

    async def _poll(self) -> None:
        """Long-poll Telegram through aiogram until stopped; its own loop retries errors with back-off."""
        assert self.tg is not None
        dp = self.dp = self.bot.dispatcher()
        while not self._stop.is_set():
            try:
                me = await self.tg.get_me()
                self.telegram_ok = time.monotonic()
                # Polling and a webhook exclude each other; keep queued updates (they are commands).
                await self.tg.delete_webhook(drop_pending_updates=False)
                await self.tg.set_my_commands(self.bot.bot_commands())
                self.telegram_state = "polling"
                log.info("telegram_polling", bot=me.username)
                # One update at a time, in Telegram's order: "/mode live" is handled before its "CONFIRM LIVE",
                # and two operators' commands never interleave. Commands time out after 10 s.
                await dp.start_polling(self.tg, handle_signals=False, close_bot_session=False, handle_as_tasks=False,
                                       allowed_updates=["message", "callback_query"], polling_timeout=20)
                return
            except Exception as e:  # getMe failed (network, 5xx, bad token): aiogram gives up; we retry
                self.telegram_state = f"unreachable: {redact_text(str(e))[:120]}"
                log.warning("telegram_unreachable", error=redact_text(str(e)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 10.0)

    async def cmd_status(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"mode": self.mode, "telegram": self.telegram_state, "operators": len(self.bot.operators),
                "viewers": len(self.bot.viewers), "alerts_seen": self.alerts_seen, "alerts_sent": self.alerts_sent,
                "commands_handled": self.bot.handled, "commands_denied": self.bot.denied,
                "outbox": await self.store.backlog(), "alerts": await self.store.alert_counts(),
                "sender": None if self.sender is None else {"sent": self.sender.sent, "failed": self.sender.failed,
                                                            "last_error": self.sender.last_error}}


_LEVEL = {"critical": 40, "warning": 30, "info": 20}


async def run_notifier(rt: ServiceRuntime) -> None:
    s = rt.settings
    engine = create_engine(s.require_database_url("the notifier keeps alerts, the audit and its outbox in "
                                                  "PostgreSQL"))
    store = NotifierStore(session_factory(engine), s.mode.value, cooldown_s=s.alert_cooldown_s,
                          daily_cap=s.alert_daily_cap, max_pending=s.notifier_max_pending,
                          max_wait_s=s.notifier_max_wait_s)
    n = Notifier(s, rt.bus, store, make_bot(s))
    if n.tg is not None:
        rt.freshness.expect("telegram", 90.0)  # a getMe every 30 s, or any delivery, proves the API answers
    try:
        await n.start()
        while not rt.stopping.is_set():
            last_ok = max((t for t in (n.telegram_ok, n.sender.last_ok if n.sender else None) if t is not None),
                          default=None)
            if last_ok is not None:
                rt.freshness.mark("telegram", age_s=time.monotonic() - last_ok)
            backlog = await _backlog(store)
            rt.health.detail = (f"telegram {n.telegram_state}; outbox {backlog}; alerts seen {n.alerts_seen}, "
                                f"sent {n.alerts_sent}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.stopping.wait(), min(5.0, s.health_interval_s))
    finally:
        await n.stop()
        await engine.dispose()


async def _backlog(store: NotifierStore) -> str:
    try:
        b = await store.backlog()
        return f"{b['pending']} pending" + (f" (oldest {b['oldest_pending_s']:.0f} s)" if b["pending"] else "")
    except Exception as e:
        return f"unknown ({redact_text(str(e))[:80]})"


__all__ = ["ALERT_CONSUMER", "Notifier", "make_bot", "run_notifier"]
