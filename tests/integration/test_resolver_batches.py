"""Scoring batches are all-or-nothing: a resolver killed mid-batch, or two replicas at once, score each signal once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from benchmarks.resolver import seed_resolved
from libs.common.db import PredictionAccuracy, create_engine, session_factory
from services.resolver.store import ResolverStore


async def test_a_batch_cut_off_midway_leaves_nothing_and_two_replicas_never_score_twice(db_url: str) -> None:
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    n = await seed_resolved(sessions, markets=120, per_market=10)
    store = ResolverStore(sessions, "sim")

    async def count() -> int:
        async with sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(PredictionAccuracy)) or 0)

    # Killed mid-batch: cancel the scoring task while its transaction is open (the process dying looks the
    # same to PostgreSQL: the transaction is rolled back).
    task = asyncio.create_task(store.score_pending(batch=n))
    await asyncio.sleep(0.15)  # well inside the batch's transaction (about 0.5 s for this many here)
    finished = task.done()
    if not finished:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await count() == (n if finished else 0)  # never part of a batch
    # Two replicas now share the rest: SKIP LOCKED hands each signal to one of them.
    a, b = ResolverStore(sessions, "sim"), ResolverStore(sessions, "sim")

    async def drain(st: ResolverStore) -> int:
        total = 0
        while rows := await st.score_pending(batch=97):
            total += len(rows)
        return total

    done = await asyncio.gather(drain(a), drain(b))
    assert await count() == n
    assert sum(done) == (0 if finished else n)
    async with sessions() as s:
        dupes = await s.scalar(select(func.count()).select_from(
            select(PredictionAccuracy.prediction_id).group_by(PredictionAccuracy.prediction_id)
            .having(func.count() > 1).subquery()))
    assert dupes == 0
    await engine.dispose()


async def test_an_exit_before_settlement_is_the_signals_pnl_not_the_settlement(db_url: str) -> None:
    """Signal A bought 10 YES at 40¢ and signal B 5 YES at 50¢; a stop-loss (an order of no signal) bought
    12 NO at 70¢, closing A's 10 and 2 of B's first (FIFO). The market then settled YES."""
    from datetime import UTC, datetime, timedelta

    from libs.common.db import Fill, MarketResolution, Order
    from libs.common.db import signals as sig_tables
    from libs.common.db.upsert import insert_many_if_new

    engine = create_engine(db_url)
    sessions = session_factory(engine)
    t0, ticker, event = datetime(2026, 11, 1, tzinfo=UTC), "KXEXIT-26NOV01-B50", "KXEXIT-26NOV01"

    def order(coid: str, sid: str | None, side: str, yes_price: int, count: int) -> dict[str, object]:
        return {"mode": "sim", "client_order_id": coid, "order_id": f"o-{coid}", "signal_id": sid,
                "event_ticker": event, "ticker": ticker, "book_side": "bid" if side == "yes" else "ask",
                "outcome_side": side, "yes_price": yes_price, "initial_count": count, "fill_count": count,
                "remaining_count": 0, "time_in_force": "good_till_canceled", "status": "executed"}

    def fill(coid: str, side: str, yes_price: int, count: int, fee: int, k: int) -> dict[str, object]:
        return {"mode": "sim", "fill_id": f"t-{coid}:o-{coid}", "order_id": f"o-{coid}", "ticker": ticker,
                "event_ticker": event, "book_side": "bid" if side == "yes" else "ask", "outcome_side": side,
                "action": "buy", "count": count, "yes_price": yes_price, "no_price": 10_000 - yes_price,
                "is_taker": False, "fee_ticks": fee, "filled_at": t0 + timedelta(minutes=k)}

    sigs = [{"signal_id": sid, "mode": "sim", "family": "weather", "series_ticker": "KXEXIT", "event_ticker": event,
             "ticker": ticker, "model": "test", "model_prob": 0.6, "yes_bid_price": 4000, "yes_ask_price": 4100,
             "decision": "trade", "ts_event": t0} for sid in ("sig-a", "sig-b")]
    async with sessions() as s, s.begin():
        await insert_many_if_new(s, MarketResolution, [{"mode": "sim", "ticker": ticker, "event_ticker": event,
                                                        "series_ticker": "KXEXIT", "result": "yes",
                                                        "settled_at": t0 + timedelta(days=1), "source": "test"}],
                                 key=["mode", "ticker"])
        await insert_many_if_new(s, sig_tables.Signal, sigs, key=["signal_id"])
        orders = [order("a", "sig-a", "yes", 4000, 1000), order("b", "sig-b", "yes", 5000, 500),
                  order("x", None, "no", 3000, 1200)]
        await insert_many_if_new(s, Order, orders, key=["mode", "client_order_id"])
        await insert_many_if_new(s, Fill, [fill("a", "yes", 4000, 1000, 60, 1), fill("b", "yes", 5000, 500, 30, 2),
                                           fill("x", "no", 3000, 1200, 120, 3)], key=["mode", "fill_id"])
    rows = {r.prediction_id: r for r in await ResolverStore(sessions, "sim").score_pending()}
    # A: 10 pairs redeemed at $1 less 40¢ and 70¢ = -$0.10 each, its fee 60 and 100 of the exit's 120.
    assert (rows["sig-a"].pnl_ticks, rows["sig-a"].fees_ticks) == (-10 * 1000 - 60 - 100, 160)
    # B: 2 closed at -$0.20 each (and 20 of the exit fee), 3 held to the YES settlement at +$0.50 each.
    assert (rows["sig-b"].pnl_ticks, rows["sig-b"].fees_ticks) == (-2 * 2000 - 20 + 3 * 5000 - 30, 50)
    assert rows["sig-a"].traded and rows["sig-b"].traded
    await engine.dispose()
