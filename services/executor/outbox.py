"""The drain of the order outbox: committed `order_events` rows, published on `ord.*` until acknowledged.

The database is the record and the bus its echo. An order transition and its event row commit
together (ledger.py, risk.py); this task publishes unpublished rows in id order with
`Nats-Msg-Id` = `event_id` and stamps `published_at`. So a bus outage never blocks or loses a trade,
and nothing committed is ever missing from `ord.*`: the rows wait and go out when JetStream is back.

Replicas drain the same table: `FOR UPDATE SKIP LOCKED` gives each row to one of them at a time, and
a row published by a replica that died before stamping it is published again with the same id,
which JetStream drops as a duplicate within the ORDERS stream's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.backoff import Backoff
from libs.common.db import OrderEvent
from libs.common.events import OrderEvent as OrderEventMsg
from libs.common.logs import get_logger

log = get_logger(__name__)

Publish = Callable[[str, OrderEventMsg], Awaitable[Any]]


class Outbox:
    """Publishes the mode's unpublished order events; `wake()` after a commit, `run(stop)` as a task."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, publish: Publish, *,
                 batch: int = 200, idle_s: float = 1.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 backoff: Backoff | None = None) -> None:
        self.sessions = sessions
        self.mode = mode
        self.publish = publish
        self.batch = batch
        self.idle_s = idle_s  # a sweep even without a wake: rows another replica committed and left
        self.clock = clock
        self.backoff = backoff or Backoff(base_s=0.2, cap_s=10.0)
        self.published = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def _unpublished(self) -> Any:
        return (OrderEvent.mode == self.mode, OrderEvent.published_at.is_(None), OrderEvent.message.is_not(None))

    async def drain_once(self) -> int:
        """Publish one batch in id order; the number published. A failed publish stamps what went out first."""
        async with self.sessions() as s, s.begin():
            rows = (await s.execute(select(OrderEvent.id, OrderEvent.subject, OrderEvent.message)
                                    .where(*self._unpublished()).order_by(OrderEvent.id).limit(self.batch)
                                    .with_for_update(skip_locked=True))).all()
            done: list[int] = []
            try:
                for r in rows:
                    await self.publish(r.subject, OrderEventMsg.model_validate(r.message))
                    done.append(r.id)
            finally:
                if done:
                    await s.execute(update(OrderEvent).where(OrderEvent.id.in_(done))
                                    .values(published_at=self.clock()))
        self.published += len(done)
        return len(done)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()  # a wake during the drain below makes the wait return at once
            try:
                n = await self.drain_once()
            except Exception as e:  # NATS or PostgreSQL away: the rows wait in the table, nothing is lost
                self.failures += 1
                self.consecutive_failures += 1
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.warning("outbox_publish_failed", error=self.last_error, failures=self.failures)
                if await self.backoff.sleep(stop):
                    return
                continue
            self.backoff.reset()
            self.consecutive_failures = 0
            if n >= self.batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_s)

    async def backlog(self) -> dict[str, Any]:
        """Unpublished events: how many, and the age of the oldest in seconds."""
        async with self.sessions() as s:
            n, oldest = (await s.execute(select(func.count(), func.min(OrderEvent.created_at))
                                         .where(*self._unpublished()))).one()
        age = (self.clock() - oldest).total_seconds() if oldest is not None else None
        return {"unpublished": int(n), "oldest_age_s": None if age is None else round(age, 3),
                "published": self.published, "failures": self.failures,
                "failing_in_a_row": self.consecutive_failures, "last_error": self.last_error}


__all__ = ["Outbox"]
