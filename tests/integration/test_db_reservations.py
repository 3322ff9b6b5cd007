"""`risk_reservations` supports atomic cap reservation by two executor replicas (DESIGN §6).

`reserve` below is the reference pattern documented on `RiskReservation`; the executor owns the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from libs.common.db import RiskReservation, create_engine, insert_many_if_new, session_factory

RR = RiskReservation


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on this test's own migrated database."""
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


async def reserve(session: AsyncSession, *, mode: str, client_order_id: str, amount: int,
                  caps: dict[tuple[str, str], int]) -> bool:
    """Hold `amount` ticks in every (scope_kind, scope_key) of `caps` if no cap would be exceeded."""
    for kind, key in sorted(caps):  # one global order, so two replicas never deadlock
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                              {"k": f"{mode}:{kind}:{key}"})
    for (kind, key), cap in caps.items():
        used = await session.scalar(
            select(func.coalesce(func.sum(RR.amount_ticks), 0)).where(
                RR.mode == mode, RR.scope_kind == kind, RR.scope_key == key, RR.status == "reserved",
                RR.expires_at > func.now()))
        if used + amount > cap:
            return False
    expires = datetime.now(UTC) + timedelta(minutes=5)
    rows = [{"mode": mode, "scope_kind": kind, "scope_key": key, "client_order_id": client_order_id,
             "amount_ticks": amount, "expires_at": expires} for kind, key in caps]
    await insert_many_if_new(session, RR, rows, key=["mode", "client_order_id", "scope_kind", "scope_key"])
    return True


async def test_two_replicas_cannot_exceed_a_cap_together(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    caps = {("event", "KXHIGHNY-26OCT04"): 10_000, ("portfolio", ""): 50_000}

    async def replica(coid: str) -> bool:
        async with factory() as s, s.begin():
            return await reserve(s, mode="paper", client_order_id=coid, amount=6_000, caps=caps)

    results = await asyncio.gather(*(replica(f"sig-{i}:yes:0") for i in range(4)))
    assert sorted(results) == [False, False, False, True]

    async with factory() as s:
        held = await s.scalar(select(func.sum(RR.amount_ticks)).where(RR.scope_kind == "event"))
        other_mode = await s.scalar(select(func.count()).where(RR.mode != "paper"))
    assert held == 6_000
    assert other_mode == 0


async def test_released_and_expired_reservations_free_the_cap(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    caps = {("market", "KXBTCD-26AUG2517-T78499.99"): 10_000}
    async with factory() as s, s.begin():
        assert await reserve(s, mode="live", client_order_id="a", amount=8_000, caps=caps)
        assert not await reserve(s, mode="live", client_order_id="b", amount=8_000, caps=caps)
        # Paper budget is separate from live budget.
        assert await reserve(s, mode="paper", client_order_id="b", amount=8_000, caps=caps)

    async with factory() as s, s.begin():
        await s.execute(RR.__table__.update().where(RR.client_order_id == "a").values(status="released"))
        assert await reserve(s, mode="live", client_order_id="b", amount=8_000, caps=caps)
        await s.execute(RR.__table__.update().where(RR.client_order_id == "b", RR.mode == "live")
                        .values(expires_at=func.now() - timedelta(seconds=1)))
        assert await reserve(s, mode="live", client_order_id="c", amount=8_000, caps=caps)
