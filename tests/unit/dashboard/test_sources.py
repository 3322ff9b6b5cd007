"""The page's sources: cached, shared `cmd.*` answers; heartbeats and alerts followed over a real NATS server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from libs.common import subjects
from libs.common.bus import Bus, CommandError
from libs.common.config import Mode
from libs.common.events import Alert
from services.dashboard.sources import Source, Sources
from tests.unit.dashboard.desk import beat

ROOT = Path(__file__).resolve().parents[3]


async def test_a_source_asks_once_per_ttl_shares_the_request_and_answers_stale_while_it_refreshes() -> None:
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    src = Source("x", fetch, ttl_s=1.0)
    waiting = [asyncio.create_task(src.get(10.0)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*waiting)
    assert calls == 1 and {a.value for a in answers} == {1} and answers[0].version == 1, "the first is waited for"
    assert (await src.get(10.5)).value == 1 and calls == 1, "fresh enough: not asked again"
    gate.clear()
    stale = await src.get(11.1)
    await asyncio.sleep(0)  # the refresh task starts
    assert stale.value == 1 and calls == 2, "too old: the last answer now, a refresh under way"
    assert (await src.get(11.2)).value == 1 and calls == 2, "one refresh in flight, however many ask"
    gate.set()
    assert (await src.settle()).value == 2 and (await src.get(11.3)).value == 2


async def test_a_failing_source_keeps_its_last_value_and_says_why() -> None:
    fail = False

    async def fetch() -> str:
        if fail:
            raise CommandError("unavailable", "no executor instance is running in sim mode")
        return "ok"

    src = Source("x", fetch, ttl_s=30.0)
    good = await src.get(1.0)
    fail = True
    await src.get(40.0)
    bad = await src.settle()
    assert good.ok and not bad.ok and bad.value == "ok" and bad.version == good.version
    assert bad.error == "unavailable: no executor instance is running in sim mode" and bad.ok_at == good.ok_at
    fail = False
    await src.get(41.5)  # a failure is asked again after RETRY_S, not after the TTL of 30 s
    assert (await src.settle()).ok


async def test_sources_ask_the_owning_services_and_follow_heartbeats_and_alerts(nats_url: str) -> None:
    desk = await Bus.connect(nats_url, service="ctl", mode=Mode.SIM)
    await desk.provision()
    for i in range(3):
        await desk.publish_js(subjects.ops_alert("feed"), Alert(
            id=f"old-{i}", ts_event=datetime.now(UTC), mode=Mode.SIM, family="feed", severity="warning",
            dedupe_key=f"k{i}", title=f"old alert {i}"))
    asked: list[tuple[str, Any]] = []

    def answering(service: str, verb: str, data: Any) -> Any:
        async def handler(req: dict[str, Any]) -> Any:
            asked.append((f"{service}.{verb}", req))
            return data(req) if callable(data) else data
        return handler

    await desk.serve("executor", "status", answering("executor", "status", {"paused": False}))
    await desk.serve("signals", "recent", answering("signals", "recent", [
        {"signal_id": "s1", "ticker": "T-1", "reason": None}, {"signal_id": "s2", "ticker": "T-2", "reason": "x"}]))
    await desk.serve("executor", "decisions", answering("executor", "decisions", {
        "s1": {"status": "blocked", "reason": "cap_event", "client_order_id": "c1"}}))
    bus = await Bus.connect(nats_url, service="dashboard", mode=Mode.SIM)
    sources = Sources(bus, refresh_s=2.0, health_interval_s=5.0, timeout_s=1.0)
    try:
        await sources.start()
        await desk.publish_js(subjects.ops_alert("order"), Alert(
            id="new", ts_event=datetime.now(UTC), mode=Mode.SIM, family="order", severity="critical",
            dedupe_key="n", title="new alert"))
        await desk.publish(subjects.ops_health("executor", "1"), beat("executor", at=datetime.now(UTC)))
        for _ in range(100):
            if len(sources.alerts) == 4 and sources.beats:
                break
            await asyncio.sleep(0.05)
        assert [a.title for a in sources.last_alerts()] == ["new alert", "old alert 2", "old alert 1", "old alert 0"]
        beats, silent = sources.live_beats()
        assert [b.service for b in beats] == ["executor"] and "executor" not in silent and "feeds" in silent
        a = await sources.answers()  # the first answers are waited for
        assert a["status"].ok and a["status"].value == {"paused": False}
        assert [(r["signal_id"], r["order_status"], r["reason"]) for r in a["signals"].value] == [
            ("s1", "blocked", "cap_event"), ("s2", None, "x")], "signals joined with the executor's decisions"
        assert ("signals.recent", {"limit": 20}) in asked
        assert ("executor.decisions", {"signal_ids": ["s1", "s2"]}) in asked
        assert not a["positions"].ok and a["positions"].error.startswith("unavailable: no executor instance")
        assert a["control"].ok and a["control"].value == {"control_mode": None, "live_armed_until": None,
                                                          "live_armed": False}
        n = len(asked)
        await sources.answers()
        assert len(asked) == n, "a second page within the TTL asks nobody"
    finally:
        await sources.stop()
        await bus.close()
        await desk.close()


@pytest.mark.parametrize("argv", [["-m", "services.dashboard"], ["-m", "services.ctl", "run", "dashboard"]],
                         ids=["python-m", "kdesk-run"])
def test_the_service_refuses_an_unsafe_binding_before_anything_starts(tmp_path: Path, argv: list[str]) -> None:
    """`python -m services.dashboard` (and `kdesk run dashboard`) bound beyond loopback with no token: exit 2,
    naming the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env.update({"KDESK_DASHBOARD_HOST": "0.0.0.0", "KDESK_VAR_DIR": str(tmp_path),
                "KDESK_NATS_URL": "nats://127.0.0.1:1"})
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=env, check=False)
    assert out.returncode == 2, out.stderr
    assert "KDESK_DASHBOARD_TOKEN is not set" in out.stderr and "KDESK_DASHBOARD_HOST=0.0.0.0" in out.stderr
