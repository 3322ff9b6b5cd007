"""Tables owned by `services/notifier`: operational alerts and the audit trail of operator commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Identity, Index, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, in_check

ALERT_SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
COMMAND_CHANNELS: tuple[str, ...] = ("telegram", "cli")
COMMAND_OUTCOMES: tuple[str, ...] = ("ok", "denied", "error", "awaiting_confirmation", "expired")


class AlertEvent(Base):
    """One `ops.alert.*` event and what the notifier did with it; owner notifier, key `alert_id`."""

    __tablename__ = "alert_events"
    __table_args__ = (
        in_check("severity", ALERT_SEVERITIES, "severity"),
        UniqueConstraint("alert_id"),
        Index("ix_alert_events_dedupe_key_created_at", "dedupe_key", "created_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    alert_id: Mapped[str]  # bus event id
    dedupe_key: Mapped[str]
    family: Mapped[str]  # feed | order | risk | deadletter | recon ...
    severity: Mapped[str]
    source: Mapped[str | None]  # service/instance that raised it
    title: Mapped[str]
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    ts_event: Mapped[datetime]
    suppressed: Mapped[bool] = mapped_column(server_default=text("false"))  # deduped, not sent
    delivered_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None]
    created_at: Mapped[datetime] = created_at_column()


class CommandAudit(Base):
    """One operator command (Telegram or CLI) and its outcome; owner notifier, key `command_id`."""

    __tablename__ = "command_audit"
    __table_args__ = (
        in_check("channel", COMMAND_CHANNELS, "channel"),
        in_check("outcome", COMMAND_OUTCOMES, "outcome"),
        UniqueConstraint("command_id"),
        Index("ix_command_audit_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    # "telegram:<update_id>" or "cli:<uuid>": a redelivered Telegram update is audited once.
    command_id: Mapped[str]
    channel: Mapped[str]
    actor: Mapped[str]  # Telegram user id or OS user
    chat_id: Mapped[str | None]
    command: Mapped[str]  # e.g. /pause, /mode
    args: Mapped[list[Any] | None]
    authorized: Mapped[bool]
    outcome: Mapped[str | None]  # NULL while in progress
    detail: Mapped[str | None] = mapped_column(Text)  # summary of the answer or the error
    received_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
