"""Order events as a transactional outbox: the bus subject, the message, and when it was published.

The executor writes an order's transition and its `order_events` row in one transaction; a drain task
publishes rows whose `published_at` is empty (Nats-Msg-Id = `event_id`) and stamps them once acked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("order_events", sa.Column("subject", sa.String(), nullable=True))
    op.add_column("order_events", sa.Column("message", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("order_events", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    # Rows written before the outbox existed were published at the time (or never will be): not a backlog.
    op.execute("UPDATE order_events SET published_at = created_at")
    # Event ids are unique within a mode (each mode has its own streams; a paper run may replay sim ids).
    op.drop_constraint("uq_order_events_event_id", "order_events", type_="unique")
    op.create_unique_constraint("uq_order_events_mode_event_id", "order_events", ["mode", "event_id"])
    op.create_index("ix_order_events_unpublished", "order_events", ["id"], unique=False,
                    postgresql_where=sa.text("published_at IS NULL AND message IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_order_events_unpublished", table_name="order_events")
    op.drop_constraint("uq_order_events_mode_event_id", "order_events", type_="unique")
    op.create_unique_constraint("uq_order_events_event_id", "order_events", ["event_id"])
    op.drop_column("order_events", "published_at")
    op.drop_column("order_events", "message")
    op.drop_column("order_events", "subject")
