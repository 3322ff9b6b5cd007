"""Resolver throughput: signals of resolved markets scored per second (PostgreSQL reads, scores, upserts).

3,000 signals over 300 resolved markets (10 each, a quarter of them traded with one fill), scored by
the production `ResolverStore.score_pending` in its 500-row batches on an embedded PostgreSQL.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.harness import private_postgres
from libs.common.db import Fill, MarketResolution, Order, create_engine, session_factory
from libs.common.db import signals as sig_tables
from libs.common.db.upsert import insert_many_if_new
from services.resolver.store import ResolverStore

MARKETS, PER_MARKET = 300, 10


async def seed_resolved(sessions: Any, markets: int = MARKETS, per_market: int = PER_MARKET, *,
                        seed: int = 7) -> int:
    """Resolved markets with signals (a quarter traded, one fill each) as the other services leave them."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    sigs, res, orders, fills = [], [], [], []
    for m in range(markets):
        ticker = f"KXBENCH-26DEC01-B{m}"
        res.append({"mode": "sim", "ticker": ticker, "event_ticker": "KXBENCH-26DEC01", "series_ticker": "KXBENCH",
                    "result": rng.choice(("yes", "no")), "settled_at": now, "source": "bench"})
        for k in range(per_market):
            sid = f"bench:{m}:{k}"
            bid = rng.randrange(500, 9000, 100)
            sigs.append({"signal_id": sid, "mode": "sim", "family": "weather", "series_ticker": "KXBENCH",
                         "event_ticker": "KXBENCH-26DEC01", "ticker": ticker, "model": "bench",
                         "model_prob": rng.random(), "yes_bid_price": bid, "yes_ask_price": bid + 200,
                         "decision": "trade", "ts_event": now - timedelta(hours=1)})
            if k % 4 == 0:
                oid = f"o-{m}-{k}"
                orders.append({"mode": "sim", "client_order_id": f"kd-{m}-{k}", "order_id": oid, "signal_id": sid,
                               "event_ticker": "KXBENCH-26DEC01", "ticker": ticker, "book_side": "bid",
                               "outcome_side": "yes", "yes_price": bid, "initial_count": 1000, "fill_count": 1000,
                               "remaining_count": 0, "time_in_force": "good_till_canceled", "status": "executed"})
                fills.append({"mode": "sim", "fill_id": f"t-{m}-{k}:{oid}", "order_id": oid, "ticker": ticker,
                              "event_ticker": "KXBENCH-26DEC01", "book_side": "bid", "outcome_side": "yes",
                              "action": "buy", "count": 1000, "yes_price": bid, "no_price": 10_000 - bid,
                              "is_taker": False, "fee_ticks": 70, "filled_at": now})
    async with sessions() as s, s.begin():
        await insert_many_if_new(s, MarketResolution, res, key=["mode", "ticker"])
        await insert_many_if_new(s, sig_tables.Signal, sigs, key=["signal_id"])
        await insert_many_if_new(s, Order, orders, key=["mode", "client_order_id"])
        await insert_many_if_new(s, Fill, fills, key=["mode", "fill_id"])
    return len(sigs)


async def _scored_per_s(url: str) -> tuple[float, int]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed_resolved(sessions)
    store = ResolverStore(sessions, "sim")
    started = time.perf_counter()
    n = 0
    while batch := await store.score_pending():
        n += len(batch)
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return n / elapsed, n


async def run() -> dict[str, float | int]:
    with private_postgres() as url:
        rate, n = await _scored_per_s(url)
    return {"resolver_scored_per_s": round(rate, 1), "resolver_scored_n": n}
