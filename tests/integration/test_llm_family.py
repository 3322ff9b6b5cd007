"""The llm family over real NATS + PostgreSQL against the fake provider (services/sim/llm.py), by the real
`openai` SDK: mispriced markets signal, bad answers are skipped with recorded reasons, the cost controls hold
across replicas, and a spent budget stops only this family until an operator raises it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, Settings, load_settings
from libs.common.control import read_llm_budget, set_llm_budget
from libs.common.db import create_engine, session_factory
from libs.common.db.signals import LlmCall
from libs.common.events import Alert, Signal
from libs.common.families import set_llm_series
from libs.common.llm import LlmClient
from libs.common.simnet import SIM_LLM_KEY
from services.signals.llm import LlmAnalyst, LlmLedger
from services.signals.pipeline import SignalPipeline
from services.sim.llm import FakeLlm, Reply
from tests.integration.test_bus import wait_until
from tests.kit.factories import book_update, market_definition

SERIES = "KXSIMQ"


def ticker(i: int) -> str:
    return f"{SERIES}-26DEC05-Q{i}"


@dataclass
class Replica:
    analyst: LlmAnalyst
    pipeline: SignalPipeline
    signals: list[Signal] = field(default_factory=list)


@dataclass
class Rig:
    fake: FakeLlm
    bus: Bus
    engine: Any
    settings: Settings
    alerts: list[Alert] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    def replica(self, *, timeout_s: float = 5.0) -> Replica:
        client = LlmClient(SIM_LLM_KEY, base_url=self.fake.url, model="grok-4", timeout_s=timeout_s,
                           max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02, structured_output=True)
        got: list[Signal] = []

        async def emit(sig: Signal) -> None:
            got.append(sig)
            await self.bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)

        pipeline = SignalPipeline(emit, mode=Mode.SIM, risk=self.settings.risk, cooldown_s=0)

        async def alert(a: Alert) -> None:
            self.alerts.append(a)
            await self.bus.publish_js(subjects.ops_alert("llm"), a)

        async def override() -> int | None:
            return await read_llm_budget(await self.bus.control())

        analyst = LlmAnalyst(self.settings, client, LlmLedger(session_factory(self.engine), "sim"),
                             evaluate=pipeline.evaluate, alert=alert, budget_override=override)
        pipeline.llm = analyst
        r = Replica(analyst, pipeline, got)
        self.replicas.append(r)
        return r

    async def calls(self) -> list[LlmCall]:
        async with session_factory(self.engine)() as s:
            return list((await s.scalars(select(LlmCall).order_by(LlmCall.started_at, LlmCall.call_id))).all())


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(llm_series=SERIES, llm_daily_budget_usd="5", llm_cooldown_s=3600,
                                llm_max_per_market_day=2, min_edge=0.05, taker_min_edge=0.10, confidence_floor=0.3)
    base.update(kw)
    return load_settings(**base)


@pytest.fixture
async def rig(nats_url: str, db_url: str) -> AsyncIterator[Rig]:
    set_llm_series([SERIES])
    fake = await FakeLlm(seed=5, noise_sd=0.01).start()
    bus = await Bus.connect(nats_url, service="llm-test", mode=Mode.SIM)
    await bus.provision()
    engine = create_engine(db_url)
    r = Rig(fake, bus, engine, settings())
    yield r
    for rep in r.replicas:
        await rep.analyst.stop()
    await engine.dispose()
    await bus.close()
    await fake.stop()
    set_llm_series([])


async def show(rep: Replica, i: int, *, bid: int = 4_800, ask: int = 4_900, hours: float = 30) -> None:
    """A definition and a book of market `i` (YES 48¢ bid / 49¢ ask by default), as feeds would publish them."""
    close = datetime.now(UTC) + timedelta(hours=hours)
    await rep.pipeline.on_market(market_definition(ticker(i), close_time=close, title=f"Will question {i} happen?",
                                                   rules=f"Resolves Yes if question {i} happens."))
    await rep.pipeline.on_book(book_update(ticker(i), yes_bids=((bid - 100, 500), (bid, 1_000)),
                                           no_bids=((10_000 - ask - 100, 500), (10_000 - ask, 1_000))))


async def stored_alerts(bus: Bus) -> int:
    """`ops.alert.llm` messages kept in the OPS stream."""
    info = await bus.js.stream_info(bus.stream("OPS"))
    n = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await bus.js.get_msg(bus.stream("OPS"), seq)
        n += raw.subject == bus.wire(subjects.ops_alert("llm"))
    return n


async def settle(rep: Replica) -> None:
    await wait_until(lambda: not rep.analyst.in_flight, timeout=20, what="analyses finished")


async def test_a_mispriced_market_leads_to_a_signal_with_raw_and_calibrated_probability(rig: Rig) -> None:
    rig.fake.set_truth(ticker(1), 0.80)  # the book says 48.5¢
    rig.fake.set_truth(ticker(2), 0.49)  # fair: the Trader holds
    rep = rig.replica()
    await show(rep, 1)
    await show(rep, 2)
    await settle(rep)
    assert [s.ticker for s in rep.signals] == [ticker(1)]
    sig = rep.signals[0]
    assert sig.family == "llm" and sig.action == "buy_yes" and sig.model == "llm"
    assert sig.p_raw is not None and abs(sig.p_raw - 0.80) < 0.05 and sig.p_model == sig.p_raw  # not yet calibrated
    assert rep.pipeline.suppressed["llm_hold"] + rep.pipeline.suppressed["no_edge"] >= 1
    calls = await rig.calls()
    assert [c.stage for c in calls if c.ticker == ticker(1)] == ["forecaster", "critic", "trader"]
    assert all(c.status == "done" and c.cost_ticks and c.cost_ticks > 0 and c.prompt_tokens for c in calls)
    assert all(f"Market: {c.ticker}" in c.prompt and c.response for c in calls)
    report = await rep.analyst.report()
    assert report["spent_ticks"] == sum(c.cost_ticks or 0 for c in calls) > 0
    assert report["calls_today"] == {"done": 6}


async def test_prose_is_repaired_and_bad_answers_are_skipped_with_their_reasons(rig: Rig) -> None:
    for i in range(1, 6):
        rig.fake.set_truth(ticker(i), 0.85)
    rep = rig.replica(timeout_s=0.5)
    rig.fake.push(Reply.prose(), Reply.fenced(), Reply.prose())  # market 1: every stage wrapped
    await show(rep, 1)
    await settle(rep)
    assert [s.ticker for s in rep.signals] == [ticker(1)]
    for i, reply, reason in ((2, Reply.malformed(), "invalid_schema"), (3, Reply.refusal(), "refusal"),
                             (4, Reply.slow(2.0), "timeout"), (5, Reply.server_error(500), "server_error")):
        rep.analyst.pause_until = 0.0
        rig.fake.override(reply)
        await show(rep, i)
        await settle(rep)
        rig.fake.override(None)
        errors = [c.error or "" for c in await rig.calls() if c.ticker == ticker(i)]
        assert len(errors) == 1 and errors[0].startswith(reason), (i, errors)
    assert [s.ticker for s in rep.signals] == [ticker(1)]  # never a trade from a failed answer
    report = await rep.analyst.report()
    outcomes = {d["ticker"]: d["outcome"] for d in report["decisions"]}
    assert outcomes[ticker(3)] == "refusal" and outcomes[ticker(4)] == "timeout"


async def test_a_429_storm_backs_the_family_off_and_a_success_resets_it(rig: Rig) -> None:
    rig.fake.set_truth(ticker(1), 0.85)
    rig.fake.set_truth(ticker(2), 0.85)
    rep = rig.replica()
    rig.fake.override(Reply.rate_limited(retry_after=0))
    await show(rep, 1)
    await settle(rep)
    asked = len(rig.fake.chat_requests)
    assert asked == 2  # the client's own attempts, then the family waits
    assert rep.analyst.pause_until > asyncio.get_running_loop().time() + 5
    await show(rep, 2)  # inside the pause: not even asked
    await settle(rep)
    assert len(rig.fake.chat_requests) == asked and rep.analyst.skipped["provider_backoff"] >= 1
    rig.fake.override(None)
    rep.analyst.pause_until = 0.0
    await show(rep, 2, bid=4_810)
    await settle(rep)
    assert rep.analyst.pauses == 0 and [s.ticker for s in rep.signals] == [ticker(2)]


async def test_cooldown_and_the_daily_limit_hold_across_two_replicas(rig: Rig) -> None:
    rig.settings = settings(llm_cooldown_s=0.5, llm_max_per_market_day=2)
    rig.fake.set_truth(ticker(1), 0.85)
    a, b = rig.replica(), rig.replica()
    await asyncio.gather(show(a, 1), show(b, 1, bid=4_810))  # both see the market at once
    await settle(a)
    await settle(b)
    first = [c for c in await rig.calls() if c.stage == "forecaster"]
    assert len(first) == 1  # one claim won; the other replica was told "cooldown"
    assert a.analyst.skipped["cooldown"] + b.analyst.skipped["cooldown"] == 1
    for rep in (a, b):
        rep.analyst.next_try.clear()
    await asyncio.sleep(0.6)
    await show(a, 1, bid=4_820)
    await settle(a)
    await asyncio.sleep(0.6)
    b.analyst.next_try.clear()
    await show(b, 1, bid=4_830)
    await settle(b)
    assert len([c for c in await rig.calls() if c.stage == "forecaster"]) == 2  # the day's limit
    assert b.analyst.skipped["market_daily_limit"] == 1


async def test_a_spent_budget_stops_analysis_with_one_alert_and_a_raised_one_resumes_it(rig: Rig) -> None:
    # A call reserves its worst cost (~44 ticks at grok-4's prices) and costs ~5: 60 ticks let one call be in
    # flight at a time, and the four analyses the two replicas start at once cannot all get theirs.
    rig.settings = settings(llm_daily_budget_usd="0.006", llm_cooldown_s=0)
    for i in range(1, 5):
        rig.fake.set_truth(ticker(i), 0.85)
    a, b = rig.replica(), rig.replica()
    await asyncio.gather(show(a, 1), show(b, 2), show(a, 3), show(b, 4))
    await settle(a)
    await settle(b)
    calls = await rig.calls()
    spent = sum(c.cost_ticks or 0 for c in calls)
    assert 0 < spent <= 60, "two replicas together stayed inside the budget"
    assert all(c.status != "reserved" for c in calls)
    analysed = {c.ticker for c in calls if c.stage == "trader" and c.status == "done"}
    assert 1 <= len(analysed) < 4
    assert a.analyst.skipped["budget_spent"] + b.analyst.skipped["budget_spent"] >= 1
    assert {x.id for x in rig.alerts} == {f"alert:llm_budget:sim:{datetime.now(UTC).date().isoformat()}"}
    assert await stored_alerts(rig.bus) == 1  # both replicas may send it; JetStream keeps it once (same id)
    before = len(rig.alerts)
    # The rest of the desk is untouched: this family only stops asking.
    kv = await rig.bus.control()
    assert await set_llm_budget(kv, "1") == 10_000
    waiting = sorted({ticker(i) for i in range(1, 5)} - analysed)
    for rep in (a, b):
        rep.analyst.next_try.clear()
    await show(a, int(waiting[0][-1]), bid=4_820)
    await settle(a)
    assert {c.ticker for c in await rig.calls() if c.stage == "trader"} == analysed | {waiting[0]}
    assert len(rig.alerts) == before  # no new alert: the budget is no longer spent
    assert (await a.analyst.report())["budget_ticks"] == 10_000


async def test_kdesk_llm_shows_the_days_spend_and_sets_the_budget_for_every_replica(rig: Rig, nats_url: str) -> None:
    import os
    import sys

    from services.notifier import render as bot_render

    rig.fake.set_truth(ticker(1), 0.85)
    rep = rig.replica()
    await show(rep, 1)
    await settle(rep)
    await rig.bus.serve("signals", "llm", lambda req: rep.analyst.report(int(req.get("limit", 10))))
    spent = sum(c.cost_ticks or 0 for c in await rig.calls())
    env = {**os.environ, "KDESK_NATS_URL": nats_url, "KDESK_MODE": "sim", "NO_COLOR": "1"}

    async def kdesk(*args: str) -> tuple[int, str, str]:
        p = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.ctl", "llm", *args, env=env,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await p.communicate()
        return p.returncode or 0, out.decode(), err.decode()

    code, out, _ = await kdesk()
    assert code == 0 and "mode SIM" in out and f"${spent / 10_000:,.4f} spent of $5.0000" in out
    assert ticker(1)[-12:] in out.replace("\n", "")
    code, out, err = await kdesk("--budget", "12.5", "--json")
    assert code == 0 and "set to $12.50 a day" in err
    import json

    assert json.loads(out)["budget_ticks"] == 125_000  # the analyst reads the new budget at once
    code, _, err = await kdesk("--budget", "lots")
    assert code != 0 and "not a dollar amount" in err
    text = bot_render.llm("sim", await rep.analyst.report(5))
    assert text.startswith("<b>[SIM]</b>") and f"${spent / 10_000:,.4f}" in text
