"""The notifier's records in PostgreSQL: alerts (and whether each was sent or suppressed), the command
audit, and the outbox of Telegram messages.

Everything the notifier will say goes through the outbox first, in the same transaction as the fact
that caused it (an alert row, an audit row), so a crash between "decided to send" and "sent" loses
nothing, and an alert redelivered by JetStream finds its row and enqueues nothing twice. The sender
marks each row sent as soon as Telegram answers; a restart resumes at the first pending row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import AlertEvent, CommandAudit, OutboxMessage, insert_if_new
from libs.common.events import Alert, utcnow


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to enqueue: HTML text (or a PNG with a caption) for one chat."""

    chat_id: int
    kind: str  # reply | alert | digest | notice
    body: str | None = None
    photo: bytes | None = None
    reply_markup: dict[str, Any] | None = None
    silent: bool = False
    alert_id: str | None = None
    command_id: str | None = None


@dataclass(frozen=True, slots=True)
class AlertVerdict:
    """What became of one alert."""

    stored: bool  # False: a redelivery of an alert already stored (nothing else done)
    sent: bool  # enqueued for Telegram
    reason: str | None = None  # why not sent: cooldown | daily_cap | queue_full | no_recipients


def _row(m: Outgoing, mode: str) -> dict[str, Any]:
    return {"mode": mode, "chat_id": m.chat_id, "kind": m.kind, "body": m.body, "photo": m.photo,
            "reply_markup": m.reply_markup, "silent": m.silent, "alert_id": m.alert_id, "command_id": m.command_id}


class NotifierStore:
    """All reads and writes of the notifier's tables, for one mode."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, *, cooldown_s: float = 900.0,
                 daily_cap: int = 100, max_pending: int = 5000, max_wait_s: float = 86_400.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.mode = mode
        self.cooldown_s = cooldown_s
        self.daily_cap = daily_cap
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self.clock = clock

    # -- command audit --------------------------------------------------------------------------

    async def begin_command(self, *, command_id: str, actor: str, chat_id: str | None, command: str,
                            args: list[Any], authorized: bool, received_at: datetime) -> bool:
        """Audit a command as it arrives; False when this update was audited before (a redelivery)."""
        async with self.sessions() as s, s.begin():
            return await insert_if_new(s, CommandAudit, {
                "mode": self.mode, "command_id": command_id, "channel": "telegram", "actor": actor,
                "chat_id": chat_id, "command": command[:64], "args": args, "authorized": authorized,
                "outcome": None if authorized else "denied", "received_at": received_at,
                "completed_at": None if authorized else self.clock()}, key=["command_id"])

    async def finish_command(self, command_id: str, outcome: str, detail: str | None,
                             replies: Sequence[Outgoing] = ()) -> None:
        """Record how a command ended and enqueue its replies, in one transaction."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(CommandAudit).where(CommandAudit.command_id == command_id).values(
                outcome=outcome, detail=(detail or "")[:2000] or None, completed_at=self.clock()))
            await self._enqueue(s, replies)

    async def audit(self, limit: int = 50) -> list[CommandAudit]:
        async with self.sessions() as s:
            return list((await s.scalars(select(CommandAudit).where(CommandAudit.mode == self.mode)
                                         .order_by(CommandAudit.id.desc()).limit(limit))).all())

    # -- outbox ---------------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[Outgoing]) -> None:
        async with self.sessions() as s, s.begin():
            await self._enqueue(s, messages)

    async def _enqueue(self, s: AsyncSession, messages: Sequence[Outgoing]) -> None:
        if messages:  # executemany: one statement for a burst of alerts, compiled once
            await s.execute(insert(OutboxMessage), [_row(m, self.mode) for m in messages])

    async def _pending_count(self, s: AsyncSession) -> int:
        return int(await s.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.mode == self.mode, OutboxMessage.status == "pending")) or 0)

    async def pending(self, limit: int = 50) -> list[OutboxMessage]:
        """The oldest pending messages, in the order they were enqueued."""
        async with self.sessions() as s:
            return list((await s.scalars(select(OutboxMessage).where(
                OutboxMessage.mode == self.mode, OutboxMessage.status == "pending")
                .order_by(OutboxMessage.id).limit(limit))).all())

    async def mark_sent(self, ids: Sequence[int], message_id: int | None) -> None:
        now = self.clock()
        async with self.sessions() as s, s.begin():
            rows = (await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(
                status="sent", message_id=message_id, sent_at=now, attempts=OutboxMessage.attempts + 1)
                .returning(OutboxMessage.alert_id))).scalars().all()
            alerts = [a for a in rows if a]
            if alerts:
                await s.execute(update(AlertEvent).where(AlertEvent.alert_id.in_(alerts),
                                                         AlertEvent.delivered_at.is_(None)).values(delivered_at=now))

    async def mark_failed(self, ids: Sequence[int], error: str) -> None:
        """Telegram refused these for good (a 400 or 403): they are not tried again."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(
                status="failed", last_error=error[:500], attempts=OutboxMessage.attempts + 1))

    async def note_attempt(self, ids: Sequence[int], error: str) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(
                last_error=error[:500], attempts=OutboxMessage.attempts + 1))

    async def expire_old(self) -> int:
        """Drop (mark expired) pending messages older than the bound; how many."""
        cutoff = self.clock() - timedelta(seconds=self.max_wait_s)
        async with self.sessions() as s, s.begin():
            res = await s.execute(update(OutboxMessage).where(
                OutboxMessage.mode == self.mode, OutboxMessage.status == "pending",
                OutboxMessage.created_at < cutoff).values(status="expired", last_error="waited too long"))
            return res.rowcount or 0

    async def backlog(self) -> dict[str, Any]:
        async with self.sessions() as s:
            n, oldest = (await s.execute(select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.mode == self.mode, OutboxMessage.status == "pending"))).one()
            counts = dict((await s.execute(select(OutboxMessage.status, func.count()).where(
                OutboxMessage.mode == self.mode).group_by(OutboxMessage.status))).all())
        age = None if oldest is None else round((self.clock() - oldest).total_seconds(), 1)
        return {"pending": int(n), "oldest_pending_s": age, "by_status": counts}

    async def sent(self, *, kind: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        async with self.sessions() as s:
            q = select(OutboxMessage).where(OutboxMessage.mode == self.mode, OutboxMessage.status == "sent")
            if kind:
                q = q.where(OutboxMessage.kind == kind)
            return list((await s.scalars(q.order_by(OutboxMessage.id.desc()).limit(limit))).all())

    # -- alerts ---------------------------------------------------------------------------------

    async def record_alerts(self, alerts: Sequence[Alert], recipients: Sequence[int],
                            render: Callable[[Alert], str]) -> list[AlertVerdict]:
        """Store alerts (in order) and decide for each whether it is sent: at most one message per dedupe
        key per cooldown, at most `daily_cap` messages per family per UTC day (critical alerts are exempt
        from the cap), never more than `max_pending` messages waiting. Suppressed alerts are stored and
        counted. One transaction for the whole batch: a burst costs a handful of round trips, not a
        handful per alert."""
        now = self.clock()
        A = AlertEvent
        async with self.sessions() as s, s.begin():
            # One decision at a time per mode: two consumers of one burst must not both find "not sent yet".
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": f"kdesk:notifier:alerts:{self.mode}"})
            rows = {a.id: {"mode": self.mode, "alert_id": a.id, "dedupe_key": a.dedupe_key[:500],
                           "family": a.family, "severity": a.severity, "source": a.data.get("source"),
                           "title": a.title[:500], "message": a.detail or None,
                           "payload": a.model_dump(mode="json"), "ts_event": a.ts_event} for a in alerts}
            # executemany (one statement compiled once, sent in pages), not one ever-different VALUES list
            inserted = set((await s.scalars(insert(A).on_conflict_do_nothing(index_elements=["alert_id"])
                                            .returning(A.alert_id), list(rows.values()))).all())
            verdicts = {a.id: AlertVerdict(stored=False, sent=False, reason="duplicate") for a in alerts}
            new = [a for a in {a.id: a for a in alerts}.values() if a.id in inserted]
            if not new:
                return [verdicts[a.id] for a in alerts]
            earlier = and_(A.mode == self.mode, A.suppressed.is_(False), A.alert_id.not_in(inserted))
            recent: set[str] = set()
            if self.cooldown_s > 0:
                recent = set((await s.scalars(select(A.dedupe_key).distinct().where(
                    earlier, A.dedupe_key.in_({r["dedupe_key"] for r in rows.values()}),
                    A.created_at >= now - timedelta(seconds=self.cooldown_s)))).all())
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            sent_today: dict[str, int] = {f: int(n) for f, n in (await s.execute(
                select(A.family, func.count()).where(earlier, A.family.in_({a.family for a in new}),
                                                     A.created_at >= day).group_by(A.family))).all()}
            pending = await self._pending_count(s)
            suppressed: list[str] = []
            outbox: list[Outgoing] = []
            for a in new:
                key, critical = a.dedupe_key[:500], a.severity == "critical"
                reason = ("cooldown" if key in recent
                          else "daily_cap" if not critical and sent_today.get(a.family, 0) >= self.daily_cap
                          else "no_recipients" if not recipients
                          else "queue_full" if not critical and pending + len(recipients) > self.max_pending
                          else None)
                if reason is not None:
                    suppressed.append(a.id)
                    verdicts[a.id] = AlertVerdict(stored=True, sent=False, reason=reason)
                    continue
                if self.cooldown_s > 0:
                    recent.add(key)
                sent_today[a.family] = sent_today.get(a.family, 0) + 1
                pending += len(recipients)
                body = render(a)
                outbox += [Outgoing(chat_id=c, kind="alert", body=body, alert_id=a.id, silent=not critical)
                           for c in recipients]
                verdicts[a.id] = AlertVerdict(stored=True, sent=True)
            await self._enqueue(s, outbox)
            if suppressed:
                await s.execute(update(A).where(A.alert_id.in_(suppressed)).values(suppressed=True))
        # A repeated id inside one batch: its first occurrence decided, the others are duplicates.
        first = {a.id: i for i, a in reversed(list(enumerate(alerts)))}
        return [verdicts[a.id] if first[a.id] == i else AlertVerdict(False, False, "duplicate")
                for i, a in enumerate(alerts)]

    async def suppressed_since(self, since: datetime) -> dict[str, int]:
        """Alerts not sent since `since`, by family (for the digest's "N more suppressed" line)."""
        async with self.sessions() as s:
            rows = await s.execute(select(AlertEvent.family, func.count()).where(
                AlertEvent.mode == self.mode, AlertEvent.suppressed.is_(True), AlertEvent.created_at >= since)
                .group_by(AlertEvent.family))
            return {f: int(n) for f, n in rows.all()}

    async def alert_counts(self) -> dict[str, int]:
        async with self.sessions() as s:
            total, suppressed, delivered = (await s.execute(select(
                func.count(), func.count().filter(AlertEvent.suppressed.is_(True)),
                func.count(AlertEvent.delivered_at)).where(AlertEvent.mode == self.mode))).one()
        return {"stored": int(total), "suppressed": int(suppressed), "delivered": int(delivered)}


__all__ = ["AlertVerdict", "NotifierStore", "Outgoing"]
