"""Tables owned by `services/notifier`: operational alerts, the audit trail of operator commands, and
the outbox of Telegram messages (every reply, alert and digest waits there until Telegram took it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Identity, Index, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, in_check, mode_check, mode_column

ALERT_SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
COMMAND_CHANNELS: tuple[str, ...] = ("telegram", "cli")
COMMAND_OUTCOMES: tuple[str, ...] = ("ok", "denied", "error", "awaiting_confirmation", "expired")
OUTBOX_KINDS: tuple[str, ...] = ("reply", "alert", "digest", "notice")
OUTBOX_STATES: tuple[str, ...] = ("pending", "sent", "failed", "expired")


class AlertEvent(Base):
    """One `ops.alert.*` event and what the notifier did with it; owner notifier, key `alert_id`."""

    __tablename__ = "alert_events"
    __table_args__ = (
        mode_check(),
        in_check("severity", ALERT_SEVERITIES, "severity"),
        UniqueConstraint("alert_id"),
        Index("ix_alert_events_dedupe_key_created_at", "dedupe_key", "created_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
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
        mode_check(),
        in_check("channel", COMMAND_CHANNELS, "channel"),
        in_check("outcome", COMMAND_OUTCOMES, "outcome"),
        UniqueConstraint("command_id"),
        Index("ix_command_audit_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
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


class OutboxMessage(Base):
    """One message to one Telegram chat, kept until Telegram accepted it; owner notifier.

    Rows are sent in `id` order. `sent` rows are never sent again (a restarted notifier resumes at the
    first `pending` one); `failed` ones Telegram refused for good (a 400 or 403), `expired` ones waited
    longer than the notifier's bound. Consecutive pending alerts for one chat go out as one message.
    """

    __tablename__ = "notifier_outbox"
    __table_args__ = (
        mode_check(),
        in_check("kind", OUTBOX_KINDS, "kind"),
        in_check("status", OUTBOX_STATES, "status"),
        Index("ix_notifier_outbox_mode_status_id", "mode", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    chat_id: Mapped[int]
    kind: Mapped[str]
    body: Mapped[str | None] = mapped_column(Text)  # HTML (parse_mode=HTML); the caption of a photo
    photo: Mapped[bytes | None] = mapped_column(LargeBinary)  # PNG
    reply_markup: Mapped[dict[str, Any] | None]
    silent: Mapped[bool] = mapped_column(server_default=text("false"))  # disable_notification
    alert_id: Mapped[str | None]
    command_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None]  # Telegram's, once sent
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
