"""Running a notifier against the fake Telegram Bot API over real NATS + PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import create_engine, session_factory
from libs.common.events import Alert
from services.notifier.service import Notifier, make_bot
from services.notifier.store import NotifierStore
from services.sim.telegram import SIM_TOKEN, FakeTelegram
from tests.kit.desk import desk_settings

OPERATOR, VIEWER, STRANGER = 11_000_001, 22_000_002, 33_000_003


@asynccontextmanager
async def fake_telegram(**kw: Any) -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(chats=[OPERATOR, VIEWER, STRANGER], **kw)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def notifier_settings(fake_url: str, **kw: Any) -> Any:
    base: dict[str, Any] = {"telegram_bot_token": SIM_TOKEN, "telegram_api_url": fake_url,
                            "telegram_operators": str(OPERATOR), "telegram_viewers": str(VIEWER),
                            "digest_every_s": 0}
    base.update(kw)
    return desk_settings(**base)


@asynccontextmanager
async def notifier(nats_url: str, db_url: str, fake_url: str | None, **kw: Any) -> AsyncIterator[Notifier]:
    """One started notifier (no Telegram when `fake_url` is None)."""
    settings = notifier_settings(fake_url or "http://127.0.0.1:9", **kw)
    if fake_url is None:
        settings = settings.model_copy(update={"telegram_bot_token": None, "telegram_api_url": None})
    bus = await Bus.connect(nats_url, service="notifier", mode=settings.mode)
    await bus.provision()
    engine = create_engine(db_url)
    store = NotifierStore(session_factory(engine), settings.mode.value, cooldown_s=settings.alert_cooldown_s,
                          daily_cap=settings.alert_daily_cap, max_pending=settings.notifier_max_pending,
                          max_wait_s=settings.notifier_max_wait_s)
    n = Notifier(settings, bus, store, make_bot(settings))
    try:
        await n.start()
        yield n
    finally:
        await n.stop()
        await bus.close()
        await engine.dispose()


def alert(i: int, *, key: str | None = None, family: str = "feed", severity: str = "warning") -> Alert:
    return Alert(id=f"alert-{i}", ts_event=datetime.now(UTC), mode=Mode.SIM, family=family,
                 severity=severity,  # type: ignore[arg-type]
                 dedupe_key=key or f"k-{i}", title=f"alert number {i:04d}", detail="")


async def publish_alerts(bus: Bus, alerts: list[Alert]) -> None:
    for a in alerts:
        await bus.publish_js(subjects.ops_alert(a.family), a)


__all__ = ["OPERATOR", "STRANGER", "VIEWER", "alert", "fake_telegram", "notifier", "notifier_settings",
           "publish_alerts"]
