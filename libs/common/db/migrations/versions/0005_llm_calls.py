"""The llm family's call record and budget (`llm_calls`, owner signals).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_calls",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("analysis_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("prompt_version", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("prompt", sa.String(), nullable=False),
        sa.Column("response", sa.String(), nullable=True),
        sa.Column("parsed", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reserved_ticks", sa.BigInteger(), nullable=False),
        sa.Column("cost_ticks", sa.BigInteger(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name="ck_llm_calls_mode"),
        sa.CheckConstraint("stage IN ('forecaster', 'critic', 'trader')", name="ck_llm_calls_stage"),
        sa.CheckConstraint("status IN ('reserved', 'done', 'failed')", name="ck_llm_calls_status"),
        sa.PrimaryKeyConstraint("call_id", name="pk_llm_calls"),
    )
    op.create_index("ix_llm_calls_analysis_id", "llm_calls", ["analysis_id"])
    op.create_index("ix_llm_calls_mode_day", "llm_calls", ["mode", "day"])
    op.create_index("ix_llm_calls_mode_ticker_started_at", "llm_calls", ["mode", "ticker", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_calls_mode_ticker_started_at", table_name="llm_calls")
    op.drop_index("ix_llm_calls_mode_day", table_name="llm_calls")
    op.drop_index("ix_llm_calls_analysis_id", table_name="llm_calls")
    op.drop_table("llm_calls")
