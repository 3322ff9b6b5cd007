"""The notifier over real NATS + PostgreSQL, driven through aiogram against the fake Telegram Bot API."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from matplotlib import image as mpimg
from sqlalchemy import select

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import AlertEvent, CommandAudit, OutboxMessage, create_engine, session_factory
from libs.common.display import contracts, usd
from libs.common.events import Signal
from libs.common.matching.types import OrderRequest
from libs.common.subjects import ControlKey
from services.notifier.bot import CONFIRM_LIVE
from services.signals.service import serve_recent
from services.sim.telegram import SIM_TOKEN, FakeTelegram
from tests.integration.test_executor import eventually, mm_quotes
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.notifier import OPERATOR, STRANGER, VIEWER, alert, fake_telegram, notifier, publish_alerts
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig
from tests.unit.ctl.test_render_strategies import ANSWER as STRATEGIES

T, T2 = TICKERS[2], TICKERS[3]


ALERT_LINE = re.compile(r"^\[(SIM|PAPER|DEMO|LIVE)\] [🔴🟠🔵]")


def replies(fake: FakeTelegram, chat: int) -> list[dict[str, Any]]:
    """What the bot sent `chat`, alerts left out (they arrive whenever a service raises one)."""
    return [m for m in fake.messages(chat) if not ALERT_LINE.match(m.get("text") or m.get("caption") or "")]


async def said(fake: FakeTelegram, chat: int, text: str, *, n: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send `text` as `chat` and return the next `n` replies the bot sends that chat."""
    before = len(replies(fake, chat))
    fake.inject_message(chat, text)
    await until(lambda: len(replies(fake, chat)) >= before + n, timeout=timeout, what=f"{n} answer(s) to {text}")
    return replies(fake, chat)[before:before + n]


async def trade(rig: Any, nats_url: str, ex: Any) -> list[Signal]:
    """One filled position and one resting order, made the way the desk makes them (signal → order → fill)."""
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
    await publish_definitions(bus, rig, TICKERS)
    for t in (T, T2):
        mm_quotes(rig, t, 3000, 3400)
        await publish_book(bus, rig, t)
    await until(lambda: all(ex.markets.get(t) is not None and ex.markets.get(t).book is not None for t in (T, T2)),
                what="books")
    sent = [signal(T, EVENT, SERIES, 0.50), signal(T2, EVENT, SERIES, 0.50)]
    await send_signal(bus, sent[0])
    await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="resting order")
    [oid] = rig.exchange.engine.resting_ids("desk", T)
    size = rig.exchange.engine.get_order("desk", oid).initial_count
    rig.client("flow")
    rig.exchange.engine.place("flow", OrderRequest(T, "ask", 3000, size + 1000, "immediate_or_cancel",
                                                   "taker_at_cross"))

    async def held() -> bool:
        return bool(await bus.request("executor", "positions"))

    await eventually(held, timeout=10, what="a position in the ledger")
    await send_signal(bus, sent[1])
    await until(lambda: rig.exchange.engine.resting_ids("desk", T2), what="a second resting order")
    await bus.close()
    return sent


async def audit_rows(db_url: str) -> list[CommandAudit]:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as s:
            return list((await s.scalars(select(CommandAudit).order_by(CommandAudit.id))).all())
    finally:
        await engine.dispose()


async def test_every_view_command_answers_with_the_desks_own_numbers(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url) as ex, fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url) as n:
        sent = await trade(rig, nats_url, ex)
        bus: Bus = n.bus
        positions = await bus.request("executor", "positions")
        assert positions
        [pos] = await said(fake, OPERATOR, "/positions")
        assert pos["text"].startswith("[SIM]"), pos["text"]
        for p in positions:
            event, market = p["ticker"].rsplit("-", 1)
            assert event in pos["text"] and market in pos["text"] and usd(p["cost_ticks"]) in pos["text"]
            assert contracts(abs(p["position"])) in pos["text"]
            assert usd(p["unrealized_pnl_ticks"], sign=True) in pos["text"]

        bal = await bus.request("executor", "balance")
        [b] = await said(fake, VIEWER, "/balance")  # a viewer may look
        assert usd(bal["balance_ticks"]) in b["text"] and "[SIM]" in b["text"]

        fills = await bus.request("executor", "fills", {"limit": 2})
        [f] = await said(fake, OPERATOR, "/fills 2")
        assert f"last {len(fills)} fill(s)" in f["text"] and fills
        assert all(contracts(x["count"]) in f["text"] for x in fills)

        working = await bus.request("executor", "orders", {"open": True})
        [o] = await said(fake, OPERATOR, "/orders")
        assert f"{len(working)} open order(s)" in o["text"] and T2.rsplit("-", 1)[1] in o["text"]

        status = await bus.request("executor", "status")
        [st] = await said(fake, OPERATOR, "/status")
        assert "trading: on" in st["text"] and f"open orders: {status['open_orders']}" in st["text"], st["text"]
        assert "today P&amp;L" not in st["text"] and "today P&L" in st["text"]

        await serve_recent(bus, None, deque(sent))  # the signals service's answer (here from memory)
        decided = await bus.request("executor", "decisions", {"signal_ids": [x.id for x in sent]})
        assert {x.id for x in sent} == set(decided)
        [sg] = await said(fake, OPERATOR, "/signals 5")
        assert "last 2 signal(s)" in sg["text"]
        for x in sent:
            assert x.ticker.rsplit("-", 1)[1] in sg["text"] and decided[x.id]["status"] in sg["text"]

        [h] = await said(fake, OPERATOR, "/help")
        assert "/pause" in h["text"] and "/accuracy" in h["text"]
        assert {c["command"] for c in fake.commands} >= {"status", "pause", "mode", "flatten", "accuracy"}

        [u] = await said(fake, OPERATOR, "/nonsense")
        assert "unknown command" in u["text"]
        [bad] = await said(fake, OPERATOR, "/fills many")
        assert "bad_request" in bad["text"]
    rows = await audit_rows(db_url)
    assert [r.command for r in rows] == ["/positions", "/balance", "/fills", "/orders", "/status", "/signals", "/help",
                                         "/nonsense", "/fills"]
    assert [r.outcome for r in rows] == ["ok"] * 7 + ["error", "error"]
    assert all(r.authorized and r.mode == "sim" and r.completed_at for r in rows)


async def test_strategies_answers_operators_and_viewers_with_the_mode_and_strangers_nothing(
        nats_url: str, db_url: str) -> None:
    # A stand-in for the executor's `cmd.executor.strategies`: the bot only renders what it answers.
    stand_in = await Bus.connect(nats_url, service="executor", mode=Mode.SIM)
    sim_answer = STRATEGIES | {"mode": "sim"}

    async def answer(_: dict[str, Any]) -> dict[str, Any]:
        return sim_answer

    try:
        await stand_in.serve("executor", "strategies", answer)
        async with fake_telegram() as fake, notifier(nats_url, db_url, fake.url):
            [op] = await said(fake, OPERATOR, "/strategies")
            assert op["text"].startswith("[SIM] 3 strategies"), op["text"]
            assert all(x in op["text"] for x in ("$1,234.56", "+116.68", "71.5%", "+0.0125", "maker: leading"))
            [v] = await said(fake, VIEWER, "/strategies")  # read-only: a viewer may look
            assert v["text"] == op["text"]
            [r] = await said(fake, STRANGER, "/strategies")
            assert "Not authorized" in r["text"] and "$" not in r["text"]
            fake.inject_message(STRANGER, "/strategies")
            await said(fake, OPERATOR, "/help")  # everything before it has been handled by now (one at a time)
            assert len(fake.messages(STRANGER)) == 1, "one refusal, then silence"
            assert "strategies" in {c["command"] for c in fake.commands}
    finally:
        await stand_in.close()


async def test_strangers_are_refused_once_and_viewers_cannot_steer(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url) as ex, fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url):
        [r] = await said(fake, STRANGER, "/pause")
        assert "Not authorized" in r["text"]
        fake.inject_message(STRANGER, "/flatten")
        fake.inject_message(STRANGER, "/status")
        [v] = await said(fake, VIEWER, "/pause")
        assert "needs an operator" in v["text"]
        await said(fake, OPERATOR, "/help")  # everything before it has been handled by now (one at a time)
        assert len(fake.messages(STRANGER)) == 1, "one refusal, then silence"
        assert ex.control is not None and not ex.control.state.paused
        # In a group, the sender's id decides, not the chat: the operator may steer, a stranger beside them not.
        group = -1001234567
        fake.inject_message(OPERATOR, "/pause from the group", chat_id=group, chat_type="group")
        await until(lambda: ex.control.state.paused, what="paused from the group")
        fake.inject_message(STRANGER, "/resume", chat_id=group, chat_type="group")
        await said(fake, OPERATOR, "/help")
        assert ex.control.state.paused and ex.control.state.pause_reason == "from the group"
    rows = await audit_rows(db_url)
    stranger = [r for r in rows if r.actor == str(STRANGER)]
    assert [r.command for r in stranger] == ["/pause", "/flatten", "/status", "/resume"]
    assert stranger[-1].chat_id == "-1001234567"
    assert all(not r.authorized and r.outcome == "denied" for r in stranger)
    [viewer] = [r for r in rows if r.actor == str(VIEWER)]
    assert viewer.command == "/pause" and not viewer.authorized


async def test_pause_within_a_second_resume_and_family_switch(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url) as ex, fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url):
        assert ex.control is not None
        started = time.monotonic()
        fake.inject_message(OPERATOR, "/pause lunch")
        await until(lambda: ex.control.state.paused, timeout=5, what="paused")
        took = time.monotonic() - started
        assert took < 1.0, f"pause took {took:.2f}s"
        await until(lambda: replies(fake, OPERATOR), what="the answer")
        assert "PAUSED" in replies(fake, OPERATOR)[0]["text"]
        assert ex.control.state.pause_reason == "lunch"
        [r] = await said(fake, OPERATOR, "/resume")
        assert "resumed" in r["text"] and not ex.control.state.paused
        await said(fake, OPERATOR, "/family btc off")
        await until(lambda: "btc" in ex.control.state.families_off, timeout=5, what="btc off")
        [bad] = await said(fake, OPERATOR, "/family cats off")
        assert "usage" in bad["text"]


async def test_flatten_needs_the_button_and_a_stale_button_does_nothing(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url), fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url):
        [ask] = await said(fake, OPERATOR, "/flatten")
        buttons = [b for row in ask["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons] == ["Flatten now", "Cancel"]
        before = len(replies(fake, OPERATOR))
        fake.inject_callback(VIEWER, ask["message_id"], buttons[0]["callback_data"])  # not theirs to press
        fake.inject_callback(OPERATOR, ask["message_id"], buttons[0]["callback_data"])
        await until(lambda: len(replies(fake, OPERATOR)) > before, what="flatten answer")
        assert "flattened: 0 order(s) canceled" in replies(fake, OPERATOR)[-1]["text"]
        fake.inject_callback(OPERATOR, ask["message_id"], buttons[0]["callback_data"])  # pressed again
        await until(lambda: len(replies(fake, OPERATOR)) > before + 1, what="stale button answer")
        assert "no longer valid" in replies(fake, OPERATOR)[-1]["text"]
        assert len(fake.callback_answers) == 3  # every press answered, so no client spins forever
    rows = await audit_rows(db_url)
    presses = [r for r in rows if r.command == "(button)"]
    assert [(r.authorized, r.outcome) for r in presses] == [(False, "denied"), (True, "ok"), (True, "expired")]


async def test_the_digest_counts_what_happened_and_what_was_suppressed(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url) as ex, fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url) as n:
        await n.digester.build()  # the baseline; the next digest counts from here
        await trade(rig, nats_url, ex)
        await publish_alerts(n.bus, [alert(i, key="same") for i in range(3)])
        await until(lambda: n.alerts_seen >= 3, what="alerts consumed")
        fills = await n.bus.request("executor", "fills")
        await n.digester.run_once()
        await until(lambda: any("digest" in m.get("text", "") for m in fake.messages(VIEWER)), what="digest")
        [d] = [m for m in fake.messages(VIEWER) if "digest" in m.get("text", "")]
        assert d["text"].startswith("[SIM] digest")
        assert f"orders sent 2 · fills {len(fills)}" in d["text"], d["text"]
        assert "2 more alert(s) suppressed: feed 2" in d["text"] and "today P&L" in d["text"]


async def _control(bus: Bus) -> dict[str, str]:
    kv = await bus.control()
    out = {}
    for key in (ControlKey.MODE, ControlKey.LIVE_ARMED_UNTIL):
        try:
            e = await kv.get(key)
            out[key] = e.value.decode() if e.value else ""
        except Exception:
            pass
    return out


async def test_going_live_needs_permission_and_the_exact_confirmation_in_time(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, fake_telegram() as fake:
        async with executor(rig, nats_url, db_url), notifier(nats_url, db_url, fake.url) as n:
            [r] = await said(fake, OPERATOR, "/mode live")
            assert "live refused" in r["text"] and "KDESK_ALLOW_LIVE" in r["text"]
            assert await _control(n.bus) == {}
        async with executor(rig, nats_url, db_url, settings=desk_settings(allow_live=True)), \
                notifier(nats_url, db_url, fake.url) as n:
            clock = [1000.0]
            n.bot.monotonic = lambda: clock[0]
            [r] = await said(fake, OPERATOR, "/mode live")
            assert CONFIRM_LIVE in r["text"]
            [r] = await said(fake, OPERATOR, "confirm live")  # wrong: nothing changes, the request is gone
            assert "not confirmed" in r["text"]
            [r] = await said(fake, OPERATOR, CONFIRM_LIVE)
            assert "only" in r["text"] or "commands" in r["text"]
            assert await _control(n.bus) == {}

            await said(fake, OPERATOR, "/mode live")
            clock[0] += 61
            [r] = await said(fake, OPERATOR, CONFIRM_LIVE)
            assert "too late" in r["text"]
            assert await _control(n.bus) == {}

            [v] = await said(fake, VIEWER, "/mode live")
            assert "needs an operator" in v["text"]

            await said(fake, OPERATOR, "/mode live")
            clock[0] += 30
            [r] = await said(fake, OPERATOR, CONFIRM_LIVE)
            assert "LIVE armed" in r["text"]
            ctl = await _control(n.bus)
            assert ctl[ControlKey.MODE] == "live"
            armed = datetime.fromisoformat(ctl[ControlKey.LIVE_ARMED_UNTIL])
            assert abs((armed - datetime.now(UTC)) - timedelta(hours=8)) < timedelta(seconds=30)

            [r] = await said(fake, OPERATOR, "/mode sim")
            assert "mode set to SIM" in r["text"]
            assert await _control(n.bus) == {ControlKey.MODE: "sim"}
    outcomes = [(r.command, r.outcome) for r in await audit_rows(db_url)]
    assert outcomes.count(("/mode", "awaiting_confirmation")) == 3
    assert ("(text)", "expired") in outcomes and ("(text)", "error") in outcomes


async def test_a_burst_of_one_dedupe_key_sends_one_message_and_counts_the_rest(nats_url: str, db_url: str) -> None:
    async with fake_telegram() as fake, notifier(nats_url, db_url, fake.url) as n:
        await publish_alerts(n.bus, [alert(i, key="feed:coinbase:down") for i in range(1000)])
        await until(lambda: n.alerts_seen >= 1000, timeout=60, what="1000 alerts consumed")
        await said(fake, OPERATOR, "/help")  # the queue has drained past any alert by now
        alerts = [m for m in fake.messages(OPERATOR) if "alert number" in m["text"]]
        assert len(alerts) == 1 and "alert number 0000" in alerts[0]["text"]
        assert alerts[0]["disable_notification"] is True  # a warning arrives silently; a critical one rings
        await publish_alerts(n.bus, [alert(5000, key="risk:daily_loss", family="risk", severity="critical")])
        await until(lambda: any("alert number 5000" in m["text"] for m in fake.messages(OPERATOR)), what="critical")
        [crit] = [m for m in fake.messages(OPERATOR) if "alert number 5000" in m["text"]]
        assert not crit["disable_notification"] and "🔴" in crit["text"]
        async def counted() -> bool:  # Telegram has it; the sender marks it sent right after
            return await n.store.alert_counts() == {"stored": 1001, "suppressed": 999, "delivered": 2}

        await eventually(counted, what="1001 stored, 999 suppressed, 2 delivered")
        assert (await n.store.suppressed_since(datetime.now(UTC) - timedelta(hours=1))) == {"feed": 999}


async def test_a_reply_waits_out_rate_limits_and_an_outage_and_arrives_once(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, executor(rig, nats_url, db_url), fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url) as n:
        n.sender.backoff.cap_s = 0.5  # type: ignore[union-attr]
        fake.fail(2, status=429, retry_after=1, method="sendMessage")
        [r] = await said(fake, OPERATOR, "/balance", timeout=15)
        assert "balance" in r["text"]
        fake.outage(502)
        fake.inject_message(OPERATOR, "/orders")
        await until(lambda: fake.calls["sendMessage"] >= 5, what="tries during the outage")
        fake.outage(None)
        await until(lambda: len(replies(fake, OPERATOR)) == 2, timeout=15, what="the reply after the outage")
        await said(fake, OPERATOR, "/help")
        texts = [m["text"] for m in replies(fake, OPERATOR)]
        assert len(texts) == 3 and "open order(s)" in texts[1], texts
        # Telegram has the third reply a moment before the outbox marks it sent: wait for the mark.
        for _ in range(100):
            rows = await n.store.sent(kind="reply")
            if len(rows) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(rows) == 3 and rows[-1].attempts >= 3  # the /orders answer: failed tries, then one send


@pytest.mark.slow
async def test_a_30s_outage_mid_burst_delivers_every_alert_once_in_order(nats_url: str, db_url: str) -> None:
    async with fake_telegram() as fake, notifier(nats_url, db_url, fake.url, alert_daily_cap=1000) as n:
        n.sender.backoff.cap_s = 2.0  # type: ignore[union-attr]
        burst = [alert(i) for i in range(300)]
        await publish_alerts(n.bus, burst[:100])
        await until(lambda: n.alerts_seen >= 100, timeout=30, what="first part consumed")
        fake.outage(502)
        await publish_alerts(n.bus, burst[100:])
        await asyncio.sleep(30)
        fake.outage(None)

        async def all_delivered() -> bool:  # to both recipients: nothing left waiting
            return (await n.store.alert_counts())["delivered"] == 300 and (await n.store.backlog())["pending"] == 0

        await eventually(all_delivered, timeout=60, what="every alert delivered")
        text = "\n".join(m["text"] for m in fake.messages(OPERATOR))
        seen = [int(x) for x in re.findall(r"alert number (\d{4})", text)]
        assert seen == list(range(300)), "each alert exactly once, in order"
        viewer = re.findall(r"alert number (\d{4})", "\n".join(m["text"] for m in fake.messages(VIEWER)))
        assert [int(x) for x in viewer] == list(range(300))
        assert len(fake.messages(OPERATOR)) < 100, "queued alerts are batched, not one message each"


async def test_accuracy_and_pnl_send_charts_that_open_as_images(nats_url: str, db_url: str) -> None:
    from benchmarks.resolver import seed_resolved
    from libs.common.kalshi import KalshiRest
    from services.resolver.service import Resolver
    from services.resolver.store import ResolverStore

    engine = create_engine(db_url)
    sessions = session_factory(engine)
    await seed_resolved(sessions, markets=20, per_market=5)
    async with sim_rig() as rig, executor(rig, nats_url, db_url), fake_telegram() as fake, \
            notifier(nats_url, db_url, fake.url) as n:
        rbus = await Bus.connect(nats_url, service="resolver", mode=Mode.SIM)
        rest = KalshiRest(rig.env)
        resolver = Resolver(desk_settings(feeds_series="KXHIGHNY"), rbus, ResolverStore(sessions, "sim"),
                            rest, None, sweep_every_s=3600)
        try:
            await resolver.start()
            acc = await n.bus.request("resolver", "accuracy", {"days": 30})
            text, chart = await said(fake, OPERATOR, "/accuracy", n=2)
            fam = acc["families"]["weather"]
            assert f"{fam['brier']:.3f}" in text["text"] and str(fam["n"]) in text["text"]
            png = chart["photo_bytes"]
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            img = mpimg.imread(io.BytesIO(png), format="png")
            assert img.shape[0] > 100 and img.shape[1] > 100
            assert chart["photo"][-1]["width"] == img.shape[1]
            _, curve = await said(fake, OPERATOR, "/pnl 3", n=2)
            assert mpimg.imread(io.BytesIO(curve["photo_bytes"]), format="png").ndim == 3
        finally:
            await resolver.stop()
            await rbus.close()
            await rest.aclose()
    await engine.dispose()


async def test_without_a_token_alerts_are_stored_and_nothing_is_sent(nats_url: str, db_url: str) -> None:
    async with notifier(nats_url, db_url, None) as n:
        await publish_alerts(n.bus, [alert(i) for i in range(5)])
        await until(lambda: n.alerts_seen >= 5, timeout=10, what="alerts consumed")
        assert n.sender is None
        st = await n.bus.request("notifier", "status")
        assert st["telegram"] == "off" and st["alerts"]["stored"] == 5
    engine = create_engine(db_url)
    async with session_factory(engine)() as s:
        assert len((await s.scalars(select(AlertEvent))).all()) == 5
        assert (await s.scalars(select(OutboxMessage))).all() == []
    await engine.dispose()


async def _notifier_process(nats_url: str, db_url: str, fake_url: str, log_path: Any) -> asyncio.subprocess.Process:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env.update({"KDESK_NATS_URL": nats_url, "KDESK_DATABASE_URL": db_url, "KDESK_MODE": "sim",
                "KDESK_TELEGRAM_BOT_TOKEN": SIM_TOKEN, "KDESK_TELEGRAM_API_URL": fake_url,
                "KDESK_TELEGRAM_OPERATORS": str(OPERATOR), "KDESK_TELEGRAM_VIEWERS": str(VIEWER),
                "KDESK_ALERT_DAILY_CAP": "5000", "KDESK_DIGEST_EVERY_S": "0", "KDESK_LOG_FORMAT": "json",
                "KDESK_INSTANCE": "n1"})
    log = open(log_path, "ab")  # noqa: ASYNC230 - test plumbing
    try:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "services.notifier", env=env,
                                                    stdout=log, stderr=log)
    finally:
        log.close()


@pytest.mark.slow
async def test_a_notifier_killed_mid_burst_sends_nothing_twice_and_loses_nothing(
        nats_url: str, db_url: str, tmp_path: Any) -> None:
    import signal as signals

    log_path = tmp_path / "notifier.log"
    bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
    await bus.provision()
    engine = create_engine(db_url)

    async def stored() -> int:
        async with session_factory(engine)() as s:
            return len((await s.scalars(select(AlertEvent.id))).all())

    async def drained() -> bool:
        async with session_factory(engine)() as s:
            rows = (await s.scalars(select(OutboxMessage))).all()
        return len(rows) == 800 and all(r.status == "sent" for r in rows)

    burst = [alert(i) for i in range(400)]
    async with fake_telegram() as fake:
        proc = await _notifier_process(nats_url, db_url, fake.url, log_path)
        try:
            await publish_alerts(bus, burst[:150])
            await fake.wait_sent(1, chat_id=OPERATOR, timeout=30)  # delivering
            fake.outage(502)  # from here on nothing reaches Telegram, so the kill cannot split a send
            await publish_alerts(bus, burst[150:])

            async def mid_burst() -> bool:
                return await stored() >= 250
            await eventually(mid_burst, timeout=30, what="the burst half stored")
            proc.send_signal(signals.SIGKILL)
            await proc.wait()
            fake.outage(None)
            proc = await _notifier_process(nats_url, db_url, fake.url, log_path)
            await eventually(drained, timeout=60, what="every alert delivered to both recipients")
        finally:
            if proc.returncode is None:
                proc.send_signal(signals.SIGTERM)
                await asyncio.wait_for(proc.wait(), 15)
        for chat in (OPERATOR, VIEWER):
            text = "\n".join(m["text"] for m in fake.messages(chat))
            seen = [int(x) for x in re.findall(r"alert number (\d{4})", text)]
            # Each once. Alerts the killed process had fetched but not acknowledged come back after the
            # consumer's ack wait, so they may arrive after newer ones: order holds only without a crash.
            assert len(seen) == 400 and sorted(seen) == list(range(400)), chat
    await engine.dispose()
    await bus.close()
    logs = log_path.read_text()
    assert "alert" in logs and SIM_TOKEN.split(":", 1)[1] not in logs, "the bot token never reaches a log"
