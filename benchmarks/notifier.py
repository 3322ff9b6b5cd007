"""Notifier: alerts stored and deduplicated per second, through the real consumer.

A burst of alerts (a few dedupe keys repeating, as a flapping feed produces them, plus distinct ones)
is published first; then a notifier starts and the clock runs until every alert is stored with its
send-or-suppress decision and enqueued for Telegram, while the sender delivers to the fake Bot API
(in a process of its own). The clock includes the notifier's start.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from benchmarks.harness import private_nats, private_postgres
from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, load_settings
from libs.common.db import create_engine, session_factory
from libs.common.events import Alert
from services.notifier.service import Notifier, make_bot
from services.notifier.store import NotifierStore
from services.sim.telegram import SIM_TOKEN

ALERTS = 6000
OPERATOR = 1001


FAKE = """
import asyncio, sys
from services.sim.telegram import FakeTelegram

async def main():
    fake = FakeTelegram(chats=[int(sys.argv[1])])
    print(await fake.start(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _alerts_per_s(nats_url: str, db_url: str) -> tuple[float, int, int]:
    # Telegram is another machine: its fake runs in a process of its own, not on the notifier's event loop.
    fake = await asyncio.create_subprocess_exec(sys.executable, "-c", FAKE, str(OPERATOR),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert fake.stdout is not None
        line = b""
        while not line.startswith(b"http"):  # its own log lines may come first
            line = await asyncio.wait_for(fake.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the fake Bot API process ended before it listened")
        return await _measure(nats_url, db_url, line.decode().strip())
    finally:
        fake.kill()
        await fake.wait()


async def _measure(nats_url: str, db_url: str, fake_url: str) -> tuple[float, int, int]:
    settings = load_settings(mode=Mode.SIM, telegram_bot_token=SIM_TOKEN, telegram_api_url=fake_url,
                             telegram_operators=str(OPERATOR), digest_every_s=0, alert_daily_cap=3000)
    pub = await Bus.connect(nats_url, service="bench", mode=Mode.SIM)
    now = datetime.now(UTC)
    for i in range(ALERTS):
        key = f"feed:venue{i % 5}:stale" if i % 3 else f"order:{i}"
        await pub.publish_js(subjects.ops_alert("feed"), Alert(
            id=f"bench-{i}", ts_event=now, mode=Mode.SIM, family="feed", severity="warning", dedupe_key=key,
            title=f"bench alert {i}"))
    bus = await Bus.connect(nats_url, service="notifier", mode=Mode.SIM)
    engine = create_engine(db_url)
    store = NotifierStore(session_factory(engine), "sim", cooldown_s=900, daily_cap=3000)
    n = Notifier(settings, bus, store, make_bot(settings))
    started = time.perf_counter()
    await n.start()
    while n.alerts_seen < ALERTS:  # noqa: ASYNC110 - a bench probe, polled
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    counts = await store.alert_counts()
    await n.stop()
    await bus.close()
    await pub.close()
    await engine.dispose()
    return ALERTS / elapsed, counts["stored"], counts["suppressed"]


async def run() -> dict[str, float | int]:
    with private_postgres() as db_url:
        async with private_nats() as nats_url:
            rate, stored, suppressed = await _alerts_per_s(nats_url, db_url)
    return {"notifier_alerts_per_s": round(rate, 1), "notifier_alerts_stored": stored,
            "notifier_alerts_suppressed": suppressed}
