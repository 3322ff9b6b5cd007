"""Pause and resume from the page: operator only, two steps, sent as the CLI sends them, every step audited.

A real NATS server carries the request to a stand-in executor (it answers `cmd.executor.pause` as the real one
does and records what it was asked); a real PostgreSQL holds `command_audit`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.control import CONFIRM_WINDOW_S
from libs.common.db import create_engine, session_factory
from services.dashboard.access import Access
from services.dashboard.app import Controls, create_app, templates
from services.dashboard.audit import ControlAudit
from services.dashboard.page import PageBuilder
from tests.unit.dashboard.desk import NOW, StaticDesk

VIEW = "viewer-token-0123456789"
OPER = "operator-token-0123456789"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Rig:
    app: Any
    audit: ControlAudit
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [100.0])

    def client(self, ip: str = "127.0.0.1") -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(ip, 5000)),
                                 base_url="http://dashboard.test")


@pytest.fixture
async def rig(nats_url: str, db_url: str) -> AsyncIterator[Rig]:
    executor = await Bus.connect(nats_url, service="executor", mode=Mode.SIM)
    dashboard = await Bus.connect(nats_url, service="dashboard", mode=Mode.SIM)
    engine = create_engine(db_url)
    audit = ControlAudit(session_factory(engine), "sim")
    r = Rig(app=None, audit=audit)

    async def pause(req: dict[str, Any]) -> dict[str, Any]:
        r.asked.append(("pause", req))
        return {"paused": True}

    await executor.serve("executor", "pause", pause)  # `resume` is not served: an executor that cannot answer it
    controls = Controls(lambda s, v, p: dashboard.request(s, v, p, timeout=2.0), audit, monotonic=lambda: r.clock[0])
    r.app = create_app(mode="sim", access=Access(VIEW, OPER),
                       builder=PageBuilder(templates(), StaticDesk(), clock=lambda: NOW), controls=controls,
                       refresh_s=2.0)
    try:
        yield r
    finally:
        await executor.close()
        await dashboard.close()
        await engine.dispose()


async def login(c: httpx.AsyncClient, token: str) -> None:
    assert (await c.post("/login", content=f"token={token}", headers=FORM)).status_code == 303


def nonce_of(page: str) -> str:
    m = re.search(r'name="nonce" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


async def test_pause_asks_to_confirm_then_sends_cmd_executor_pause_and_audits_both_steps(rig: Rig) -> None:
    async with rig.client() as c:
        await login(c, OPER)
        asked = await c.post("/control/pause", content="reason=lunch+break", headers=FORM)
        assert asked.status_code == 200 and "Pause trading in SIM?" in asked.text and "lunch break" in asked.text
        assert 'data-mode="sim"' in asked.text
        assert rig.asked == [], "nothing is sent before the confirmation"
        nonce = nonce_of(asked.text)
        done = await c.post("/control/confirm", content=f"nonce={nonce}", headers=FORM)
        assert done.status_code == 200 and 'data-outcome="ok"' in done.text and "PAUSED" in done.text
        assert rig.asked == [("pause", {"reason": "lunch break"})]
        again = await c.post("/control/confirm", content=f"nonce={nonce}", headers=FORM)
        assert again.status_code == 409 and "nothing was done" in again.text
    assert len(rig.asked) == 1, "a nonce confirms once"
    rows = list(reversed(await rig.audit.recent()))
    assert [(r.command, r.outcome, r.authorized) for r in rows] == [
        ("/pause", "awaiting_confirmation", True), ("/pause", "ok", True), ("/confirm", "expired", True)]
    assert all(r.channel == "cli" and r.command_id.startswith("web:") and r.actor == "web:operator@127.0.0.1"
               and r.mode == "sim" for r in rows)
    assert rows[0].args == ["lunch break"] and rows[1].detail == "paused: lunch break" and rows[1].completed_at


async def test_another_session_cannot_confirm_and_a_late_confirmation_does_nothing(rig: Rig) -> None:
    async with rig.client() as mine, rig.client("127.0.0.9") as theirs:
        await login(mine, OPER)
        await login(theirs, OPER)
        nonce = nonce_of((await mine.post("/control/pause", content="reason=x", headers=FORM)).text)
        stolen = await theirs.post("/control/confirm", content=f"nonce={nonce}", headers=FORM)
        assert stolen.status_code == 409 and rig.asked == []
        rig.clock[0] += CONFIRM_WINDOW_S + 1
        late = await mine.post("/control/confirm", content=f"nonce={nonce}", headers=FORM)
        assert late.status_code == 409 and "not confirmed within 60 s" in late.text
    assert rig.asked == []
    outcomes = [(r.command, r.outcome) for r in reversed(await rig.audit.recent())]
    assert outcomes == [("/pause", "awaiting_confirmation"), ("/confirm", "expired"), ("/pause", "expired")]


async def test_a_viewer_is_refused_and_the_refusal_is_audited(rig: Rig) -> None:
    async with rig.client() as c:
        await login(c, VIEW)
        r = await c.post("/control/pause", content="reason=x", headers=FORM)
        assert r.status_code == 403 and "pause needs an operator" in r.text
        assert (await c.post("/control/confirm", content="nonce=abc", headers=FORM)).status_code == 403
    async with rig.client() as anonymous:
        assert (await anonymous.post("/control/resume")).status_code == 403
    rows = list(reversed(await rig.audit.recent()))
    assert [(r.command, r.outcome, r.authorized, r.actor) for r in rows] == [
        ("/pause", "denied", False, "web:viewer@127.0.0.1"), ("/confirm", "denied", False, "web:viewer@127.0.0.1"),
        ("/resume", "denied", False, "web:anonymous@127.0.0.1")]
    assert rig.asked == []


async def test_an_executor_that_does_not_answer_is_an_error_said_and_audited(rig: Rig) -> None:
    async with rig.client() as c:
        await login(c, OPER)
        nonce = nonce_of((await c.post("/control/resume", headers=FORM)).text)
        r = await c.post("/control/confirm", content=f"nonce={nonce}", headers=FORM)
        assert r.status_code == 502 and "resume failed" in r.text and "no executor instance is running" in r.text
    last = (await rig.audit.recent(1))[0]
    assert (last.command, last.outcome) == ("/resume", "error") and "unavailable" in (last.detail or "")
