"""Notifier tables per mode, and the outbox of Telegram messages.

`alert_events` and `command_audit` gain `mode` (a paper notifier and a live one share the database);
`notifier_outbox` holds every reply, alert and digest until Telegram accepted it, so an outage or a
restart loses nothing and sends nothing twice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MODES = "mode IN ('sim', 'paper', 'demo', 'live')"


def upgrade() -> None:
    for table in ("alert_events", "command_audit"):
        op.add_column(table, sa.Column("mode", sa.String(length=8), nullable=False, server_default="live"))
        op.alter_column(table, "mode", server_default=None)
        op.create_check_constraint(f"ck_{table}_mode", table, _MODES)
    op.create_table(
        "notifier_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("photo", sa.LargeBinary(), nullable=True),
        sa.Column("reply_markup", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("silent", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("alert_id", sa.String(), nullable=True),
        sa.Column("command_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(_MODES, name="ck_notifier_outbox_mode"),
        sa.CheckConstraint("kind IN ('reply', 'alert', 'digest', 'notice')", name="ck_notifier_outbox_kind"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'expired')", name="ck_notifier_outbox_status"),
        sa.PrimaryKeyConstraint("id", name="pk_notifier_outbox"),
    )
    op.create_index("ix_notifier_outbox_mode_status_id", "notifier_outbox", ["mode", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_notifier_outbox_mode_status_id", table_name="notifier_outbox")
    op.drop_table("notifier_outbox")
    for table in ("command_audit", "alert_events"):
        op.drop_constraint(f"ck_{table}_mode", table, type_="check")
        op.drop_column(table, "mode")
