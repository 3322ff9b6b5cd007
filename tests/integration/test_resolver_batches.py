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
