"""Resolver tables, made per mode and able to hold what could not be parsed.

`market_resolutions` gains `mode` (sim and live list the same tickers) in its key, a `revision` that
counts changes of result or settlement value, and the official climate report it rests on.
BTC markets record the desk's composite at its last signal before the close and the basis
(settlement value − composite). `climate_reports` keeps unparsed products (`parse_error`, no date
or kind) and is unique per product.
`prediction_accuracy` records the resolution revision it scored and the fees of what traded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("market_resolutions", sa.Column("mode", sa.String(length=8), nullable=False,
                                                  server_default="live"))
    op.alter_column("market_resolutions", "mode", server_default=None)
    op.drop_constraint("pk_market_resolutions", "market_resolutions", type_="primary")
    op.create_primary_key("pk_market_resolutions", "market_resolutions", ["mode", "ticker"])
    op.create_check_constraint("ck_market_resolutions_mode", "market_resolutions",
                               "mode IN ('sim', 'paper', 'demo', 'live')")
    op.add_column("market_resolutions", sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("market_resolutions", sa.Column("climate_report_id", sa.BigInteger(), nullable=True))
    op.add_column("market_resolutions", sa.Column("report_max_f", sa.Integer(), nullable=True))
    op.add_column("market_resolutions", sa.Column("model_underlying", sa.Numeric(18, 4), nullable=True))
    op.add_column("market_resolutions", sa.Column("basis", sa.Numeric(18, 4), nullable=True))

    op.add_column("climate_reports", sa.Column("parse_error", sa.Text(), nullable=True))
    op.alter_column("climate_reports", "climate_date", nullable=True)
    op.alter_column("climate_reports", "kind", nullable=True)
    op.create_unique_constraint("uq_climate_reports_product", "climate_reports", ["source", "product_id"])

    op.add_column("prediction_accuracy", sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("prediction_accuracy", sa.Column("fees_ticks", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("prediction_accuracy", "fees_ticks")
    op.drop_column("prediction_accuracy", "revision")
    op.drop_constraint("uq_climate_reports_product", "climate_reports", type_="unique")
    op.execute("DELETE FROM climate_reports WHERE climate_date IS NULL OR kind IS NULL")
    op.alter_column("climate_reports", "kind", nullable=False)
    op.alter_column("climate_reports", "climate_date", nullable=False)
    op.drop_column("climate_reports", "parse_error")
    op.drop_column("market_resolutions", "basis")
    op.drop_column("market_resolutions", "model_underlying")
    op.drop_column("market_resolutions", "report_max_f")
    op.drop_column("market_resolutions", "climate_report_id")
    op.drop_column("market_resolutions", "revision")
    op.drop_constraint("ck_market_resolutions_mode", "market_resolutions", type_="check")
    op.drop_constraint("pk_market_resolutions", "market_resolutions", type_="primary")
    op.execute("DELETE FROM market_resolutions WHERE mode <> 'live'")
    op.create_primary_key("pk_market_resolutions", "market_resolutions", ["ticker"])
    op.drop_column("market_resolutions", "mode")
