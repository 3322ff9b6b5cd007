"""Idempotent writes and column semantics against a real, migrated PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from libs.common.config import Mode
from libs.common.db import (
    MODES,
    BalanceSnapshot,
    Fill,
    Market,
    Order,
    Position,
    RiskReservation,
    UpsertError,
    WeatherEnsembleMember,
    WeatherForecastRun,
    create_engine,
    insert_if_new,
    insert_many_if_new,
    session_factory,
    upsert,
    upsert_many,
)

T0 = datetime(2026, 10, 4, 14, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on this test's own migrated database."""
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """One session; tests commit where they need a fresh transaction."""
    async with session_factory(engine)() as s:
        yield s


def _fill(fill_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": "paper", "fill_id": fill_id, "order_id": "ord-1", "ticker": "KXHIGHNY-26OCT04-B63.5",
        "book_side": "bid", "outcome_side": "yes", "count": 1_000, "yes_price": 4_200, "no_price": 5_800,
        "is_taker": False, "fee_ticks": 0, "filled_at": T0,
    }
    return row | kw


def _market(ticker: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ticker": ticker, "event_ticker": "KXBTCD-26AUG2517", "series_ticker": "KXBTCD", "status": "active",
        "strike_type": "greater", "floor_strike": Decimal("78499.99"),
        "price_ranges": [{"start": 0, "end": 10_000, "step": 100}],
    }
    return row | kw


async def test_insert_if_new_is_true_then_false(session: AsyncSession) -> None:
    assert await insert_if_new(session, Fill, _fill("f-1"), key=["mode", "fill_id"]) is True
    assert await insert_if_new(session, Fill, _fill("f-1", count=999), key=["mode", "fill_id"]) is False
    # The same fill id in another mode is another fill: paper and live never mix.
    assert await insert_if_new(session, Fill, _fill("f-1", mode="live"), key=["mode", "fill_id"]) is True
    await session.commit()

    rows = (await session.execute(select(Fill.mode, Fill.count).where(Fill.fill_id == "f-1"))).all()
    assert sorted(rows) == [("live", 1_000), ("paper", 1_000)]


async def test_insert_if_new_works_on_a_connection(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await insert_if_new(conn, Fill.__table__, _fill("f-c"), key=["mode", "fill_id"]) is True
        assert await insert_if_new(conn, Fill.__table__, _fill("f-c"), key=["mode", "fill_id"]) is False


async def test_upsert_inserts_then_updates(session: AsyncSession) -> None:
    ticker = "KXBTCD-26AUG2517-T78499.99"
    assert await upsert(session, Market, _market(ticker), key=["ticker"]) is True
    await session.commit()
    first = (await session.execute(select(Market.updated_at).where(Market.ticker == ticker))).scalar_one()

    assert await upsert(session, Market, _market(ticker, status="closed", result="yes"), key=["ticker"]) is False
    await session.commit()

    row = (await session.execute(select(Market).where(Market.ticker == ticker))).scalar_one()
    assert (row.status, row.result) == ("closed", "yes")
    assert row.floor_strike == Decimal("78499.9900")
    assert row.price_ranges == [{"start": 0, "end": 10_000, "step": 100}]
    assert row.updated_at > first  # bumped by the upsert, not only by ORM flushes
    assert row.created_at.tzinfo is not None


async def test_upsert_only_touches_listed_columns_and_honours_where(session: AsyncSession) -> None:
    ticker = "KXHIGHNY-26OCT04-B63.5"
    base = _market(ticker, event_ticker="KXHIGHNY-26OCT04", series_ticker="KXHIGHNY", strike_type="between",
                   floor_strike=Decimal(63), cap_strike=Decimal(64), exchange_updated_at=T0)
    assert await upsert(session, Market, base, key=["ticker"]) is True

    # `update` limits what changes: the title stays, the status moves.
    changed = base | {"status": "closed", "title": "ignored", "exchange_updated_at": T0 + timedelta(minutes=1)}
    assert await upsert(session, Market, changed, key=["ticker"], update=["status", "exchange_updated_at"]) is False

    # Only-if-newer: an older redelivery leaves the row alone.
    stale = base | {"status": "active", "exchange_updated_at": T0}
    assert await upsert(session, Market, stale, key=["ticker"],
                        where=lambda excluded: Market.exchange_updated_at < excluded.exchange_updated_at) is False

    row = (await session.execute(select(Market).where(Market.ticker == ticker))).scalar_one()
    assert (row.status, row.title, row.exchange_updated_at) == ("closed", None, T0 + timedelta(minutes=1))


async def test_bulk_writes_count_new_rows(session: AsyncSession) -> None:
    key = ["mode", "fill_id"]
    assert await insert_many_if_new(session, Fill, [_fill("b-1"), _fill("b-2")], key=key) == 2
    # One known row, one new row, and a duplicate inside the batch itself.
    assert await insert_many_if_new(session, Fill, [_fill("b-2"), _fill("b-3"), _fill("b-3")], key=key) == 1

    rows = [_fill("b-3", fee_ticks=17), _fill("b-4"), _fill("b-4", fee_ticks=5)]
    assert await upsert_many(session, Fill, rows, key=key, update=["fee_ticks"]) == 1
    fees = {fid: fee for fid, fee in (await session.execute(select(Fill.fill_id, Fill.fee_ticks))).all()}
    assert fees == {"b-1": 0, "b-2": 0, "b-3": 17, "b-4": 5}  # last row wins inside a batch

    assert await insert_many_if_new(session, Fill, [], key=key) == 0


async def test_bulk_insert_spanning_several_statements(session: AsyncSession) -> None:
    run = {"run_id": "om:KNYC:2026-10-04T06", "provider": "open-meteo", "station": "KNYC",
           "models": ["ncep_gefs025", "ecmwf_ifs025_ensemble"], "fetched_at": T0}
    assert await insert_if_new(session, WeatherForecastRun, run, key=["run_id"]) is True
    # 2 models x 51 members x 25 days: more rows than one INSERT carries (pages of 1,000).
    members = [{"run_id": run["run_id"], "model": model, "member": m, "target_date": date(2026, 10, 4) + timedelta(d),
                "tmax_f": 60.0 + m / 10}
               for model in ("ncep_gefs025", "ecmwf_ifs025_ensemble") for m in range(51) for d in range(25)]
    key = ["run_id", "model", "member", "target_date"]
    assert await insert_many_if_new(session, WeatherEnsembleMember, members, key=key) == len(members) == 2_550
    assert await insert_many_if_new(session, WeatherEnsembleMember, members, key=key) == 0
    changed = [m | {"tmax_f": 99.0} for m in members[:1_500]]
    assert await upsert_many(session, WeatherEnsembleMember, changed, key=key) == 0
    hot = (await session.execute(select(func.count()).where(WeatherEnsembleMember.tmax_f == 99.0))).scalar_one()
    assert hot == 1_500


async def test_mode_check_rejects_unknown_modes(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError, match="ck_fills_mode"):
        await insert_if_new(session, Fill, _fill("x-1", mode="bogus"), key=["mode", "fill_id"])
    await session.rollback()

    with pytest.raises(IntegrityError, match="ck_orders_mode"):
        session.add(Order(mode="bogus", client_order_id="sig-1:yes:0", event_ticker="E", ticker="T",
                          book_side="bid", outcome_side="yes", yes_price=4_200, initial_count=100,
                          remaining_count=100, time_in_force="good_till_canceled", status="intent"))
        await session.flush()


async def test_every_mode_is_accepted(session: AsyncSession) -> None:
    # The migration's CHECK must follow libs.common.config.Mode (Alembic does not compare CHECKs).
    for i, mode in enumerate(Mode):
        session.add(BalanceSnapshot(mode=mode.value, ts=T0 + timedelta(seconds=i), balance_ticks=0))
    await session.commit()
    modes = (await session.execute(select(BalanceSnapshot.mode))).scalars().all()
    assert sorted(modes) == sorted(MODES) == sorted(m.value for m in Mode)


async def test_money_columns_hold_big_integers(session: AsyncSession) -> None:
    big = 10**12  # $100M in ticks; also well past int32
    session.add(BalanceSnapshot(mode="live", ts=T0, balance_ticks=big, portfolio_value_ticks=big + 1))
    session.add(Position(mode="live", ticker="KXBTCD-26AUG2517-T78499.99", event_ticker="KXBTCD-26AUG2517",
                         position=-big, cost_ticks=big, realized_pnl_ticks=-big))
    # A price is at most $1 (10,000 ticks; the risk triggers price the order's worst cost from it); the
    # count carries the big integer.
    session.add(Order(mode="live", client_order_id="sig-2:no:0", order_id="ex-2", event_ticker="E", ticker="T",
                      book_side="ask", outcome_side="no", yes_price=9_999, initial_count=big, remaining_count=big,
                      time_in_force="good_till_canceled", status="resting"))
    await session.commit()
    session.expunge_all()

    bal = (await session.execute(select(BalanceSnapshot))).scalar_one()
    pos = (await session.execute(select(Position))).scalar_one()
    order = (await session.execute(select(Order))).scalar_one()
    assert (bal.balance_ticks, bal.portfolio_value_ticks) == (big, big + 1)
    assert (pos.position, pos.cost_ticks, pos.realized_pnl_ticks) == (-big, big, -big)
    assert (order.yes_price, order.initial_count, order.fill_count, order.fees_ticks) == (9_999, big, 0, 0)
    assert all(type(v) is int for v in (bal.balance_ticks, pos.position, order.initial_count))
    assert bal.ts == T0 and bal.ts.tzinfo is not None


async def test_order_natural_keys_are_unique_per_mode(session: AsyncSession) -> None:
    def order(mode: str, coid: str, order_id: str | None) -> Order:
        return Order(mode=mode, client_order_id=coid, order_id=order_id, event_ticker="E", ticker="T",
                     book_side="bid", outcome_side="yes", yes_price=100, initial_count=100, remaining_count=100,
                     time_in_force="good_till_canceled", status="intent")

    session.add_all([order("paper", "c-1", None), order("paper", "c-2", None), order("live", "c-1", "x-1")])
    await session.commit()
    session.add(order("paper", "c-1", None))
    with pytest.raises(IntegrityError, match="uq_orders_mode_client_order_id"):
        await session.flush()


async def test_risk_reservation_checks(session: AsyncSession) -> None:
    row = {"mode": "paper", "scope_kind": "event", "scope_key": "KXHIGHNY-26OCT04", "client_order_id": "c-1",
           "amount_ticks": 5_000, "expires_at": T0}
    key = ["mode", "client_order_id", "scope_kind", "scope_key"]
    assert await insert_if_new(session, RiskReservation, row, key=key) is True
    assert await insert_if_new(session, RiskReservation, row, key=key) is False
    status = (await session.execute(select(RiskReservation.status))).scalar_one()
    assert status == "reserved"
    with pytest.raises(IntegrityError, match="ck_risk_reservations_scope_kind"):
        await insert_if_new(session, RiskReservation, row | {"scope_kind": "galaxy"}, key=key)


async def test_helpers_reject_unknown_columns(session: AsyncSession) -> None:
    with pytest.raises(UpsertError, match="nope"):
        await insert_if_new(session, Fill, _fill("u-1"), key=["nope"])
    with pytest.raises(UpsertError, match="typo_ticks"):
        await upsert(session, Fill, _fill("u-1") | {"typo_ticks": 1}, key=["mode", "fill_id"])
    with pytest.raises(UpsertError, match="do not carry"):
        await upsert(session, Fill, _fill("u-1"), key=["mode", "fill_id"], update=["trade_id"])
    with pytest.raises(UpsertError, match="same columns"):
        await insert_many_if_new(session, Fill, [_fill("u-1"), _fill("u-2", trade_id="t")], key=["mode", "fill_id"])
