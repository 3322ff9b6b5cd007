"""The executor's `RiskGate` on real PostgreSQL: two replicas share one cap budget (DESIGN §6).

Each replica is a `RiskGate` on its own engine (its own connections), as two executor processes are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.db import Order, OrderEvent, RiskReservation, create_engine, session_factory
from libs.common.money import ONE_CONTRACT
from services.executor.ledger import Ledger
from services.executor.risk import Intent, RiskGate, Verdict
from tests.kit.desk import desk_settings

EVENT = "KXHIGHNY-26NOV23"
PRICE = 5_000  # YES at 50¢
COST = 5_000  # one contract at 50¢: what it can lose, in ticks
N = 5  # orders the event cap fits
EVENT_CAP_USD = "2.50"  # exactly N x COST


@pytest.fixture
async def engines(db_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on this test's own migrated database: one per replica."""
    a, b = create_engine(db_url), create_engine(db_url)
    yield a, b
    await a.dispose()
    await b.dispose()


def gate(engine: AsyncEngine, mode: str = "sim", max_event_usd: str = EVENT_CAP_USD) -> RiskGate:
    """One replica's risk gate; only the event cap is tight (no strikes known: each market counts alone)."""
    return RiskGate(session_factory(engine), mode, desk_settings(max_event_usd=max_event_usd).risk, {})


def intent(coid: str, ticker: str = f"{EVENT}-B55.5", *, yes_price: int = PRICE) -> Intent:
    """One contract of YES on a bracket of EVENT.

    Fee-free so that a reservation's amount (which includes the taker fee) is the order's exposure (which
    does not): the sum of reservations is then directly comparable with the cap.
    """
    return Intent(client_order_id=coid, signal_id=f"sig-{coid}", leg="yes", family="weather",
                  series_ticker="KXHIGHNY", event_ticker=EVENT, ticker=ticker, book_side="bid",
                  yes_price=yes_price, count=ONE_CONTRACT, fee_multiplier=Decimal(0))


async def counts(engine: AsyncEngine, mode: str) -> tuple[int, int, int]:
    """Rows of the mode in orders, order_events (the outbox) and risk_reservations."""
    async with session_factory(engine)() as s:
        return tuple([await s.scalar(select(func.count()).select_from(t).where(t.mode == mode))  # type: ignore[return-value]
                      for t in (Order, OrderEvent, RiskReservation)])


async def event_reserved(engine: AsyncEngine, mode: str) -> int:
    """Live (`reserved`) budget held against EVENT in `mode`."""
    async with session_factory(engine)() as s:
        return await s.scalar(select(func.coalesce(func.sum(RiskReservation.amount_ticks), 0)).where(
            RiskReservation.mode == mode, RiskReservation.scope_kind == "event", RiskReservation.scope_key == EVENT,
            RiskReservation.status == "reserved")) or 0


async def test_two_replicas_reserving_at_once_never_exceed_the_event_cap(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    replicas = [gate(e) for e in engines]
    assert replicas[0].limits.max_event == N * COST
    now = datetime.now(UTC)
    # 20 orders on 20 brackets of one event, alternating between the replicas, all at once.
    intents = [intent(f"kd-{i}", f"{EVENT}-B{40 + i}.5") for i in range(20)]
    verdicts: list[Verdict] = await asyncio.gather(
        *(replicas[i % 2].reserve(it, now=now) for i, it in enumerate(intents)))

    won = [v for v in verdicts if v.ok]
    lost = [v for v in verdicts if not v.ok]
    assert len(won) == N
    assert {(v.reason, v.existing) for v in lost} == {("cap_event", False)}
    # Serialised: each winner saw every earlier winner, each loser saw all N of them.
    assert sorted(v.usage["event"] for v in won) == [k * COST for k in range(1, N + 1)]
    assert {v.usage["event"] for v in lost} == {(N + 1) * COST}

    winners = {it.client_order_id for it, v in zip(intents, verdicts, strict=True) if v.ok}
    async with session_factory(engines[0])() as s:
        rows = (await s.execute(select(Order.client_order_id, Order.status, Order.reason)
                                .where(Order.mode == "sim"))).all()
        reserved = set((await s.scalars(select(RiskReservation.client_order_id).where(
            RiskReservation.mode == "sim", RiskReservation.scope_kind == "event"))).all())
    assert {r.client_order_id for r in rows if r.status == "intent"} == winners
    assert {(r.status, r.reason) for r in rows if r.client_order_id not in winners} == {("blocked", "cap_event")}
    assert reserved == winners  # only the winners hold budget
    assert await event_reserved(engines[1], "sim") == N * COST <= replicas[1].limits.max_event


async def test_a_client_order_id_is_decided_once_whichever_replica_sees_it_again(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    a, b = (gate(e, max_event_usd="0.50") for e in engines)  # room for one order
    now = datetime.now(UTC)
    first = await a.reserve(intent("kd-a"), now=now)
    assert (first.ok, first.existing) == (True, False)
    written = await counts(engines[0], "sim")
    assert written == (1, 1, 5)  # the order, its `intent` outbox event, one reservation per scope

    # A redelivered signal, on the other replica, even at another price: nothing new is written.
    again = await b.reserve(intent("kd-a", yes_price=4_000), now=now)
    assert (again.ok, again.existing, again.status, again.reason) == (True, True, "intent", "duplicate")
    assert await counts(engines[1], "sim") == written
    async with session_factory(engines[1])() as s:
        assert await s.scalar(select(Order.yes_price).where(Order.client_order_id == "kd-a")) == PRICE

    blocked = await a.reserve(intent("kd-b"), now=now)
    assert (blocked.ok, blocked.reason, blocked.existing) == (False, "cap_event", False)
    written = await counts(engines[0], "sim")
    # Both replicas at once, five times each: the blocked decision stands, and is not written twice.
    repeats = await asyncio.gather(*(g.reserve(intent("kd-b"), now=now) for g in (a, b) * 5))
    assert {(v.ok, v.existing, v.status) for v in repeats} == {(False, True, "blocked")}
    assert await counts(engines[0], "sim") == written

    # A new id racing on both replicas is decided exactly once.
    racing = await asyncio.gather(*(g.reserve(intent("kd-c", f"{EVENT}-B60.5"), now=now) for g in (a, b) * 5))
    assert sum(not v.existing for v in racing) == 1
    assert await counts(engines[0], "sim") == (written[0] + 1, written[1] + 1, written[2])  # blocked: no budget held


async def test_paper_reservations_do_not_count_against_sim(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    paper, sim = gate(engines[0], "paper", "0.50"), gate(engines[1], "sim", "0.50")  # room for one order each
    now = datetime.now(UTC)
    assert (await paper.reserve(intent("kd-x"), now=now)).ok
    assert (await paper.reserve(intent("kd-y"), now=now)).reason == "cap_event"  # paper is full

    same_id = await sim.reserve(intent("kd-x"), now=now)  # the same id in another mode is another order
    assert (same_id.ok, same_id.existing, same_id.usage["event"]) == (True, False, COST)
    assert (await sim.reserve(intent("kd-y"), now=now)).reason == "cap_event"  # sim's own cap still bites
    assert await event_reserved(engines[0], "paper") == await event_reserved(engines[0], "sim") == COST


async def test_an_order_closed_by_the_ledger_frees_its_budget(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    a, b = (gate(e, max_event_usd="0.50") for e in engines)
    now = datetime.now(UTC)
    assert (await a.reserve(intent("kd-1"), now=now)).ok
    assert (await b.reserve(intent("kd-2"), now=now)).reason == "cap_event"
    await Ledger(session_factory(engines[0]), "sim").finish("kd-1", "rejected", "test")  # the venue said no
    assert await event_reserved(engines[0], "sim") == 0
    assert (await b.reserve(intent("kd-3"), now=now)).ok
