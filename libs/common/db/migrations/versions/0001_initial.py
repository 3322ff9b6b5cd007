"""Initial schema: every table of DESIGN §5, grouped by owning service.

Generated with `alembic revision --autogenerate` against an empty database, then reviewed and grouped.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Creation order (parents before children); dropped in reverse.
TABLES: tuple[str, ...] = (
    "series",
    "events",
    "markets",
    "market_snapshots",
    "crypto_spot_bars",
    "weather_forecast_runs",
    "weather_ensemble_members",
    "weather_observations",
    "signals",
    "weather_bracket_probs",
    "model_params",
    "orders",
    "order_events",
    "fills",
    "positions",
    "balance_snapshots",
    "risk_reservations",
    "market_resolutions",
    "climate_reports",
    "prediction_accuracy",
    "alert_events",
    "command_audit",
)


def upgrade() -> None:
    """Create every table with its keys, checks and indexes."""
    # --- feeds -----------------------------------------------------------------------------------------------
    op.create_table(
        "series",
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("frequency", sa.String(), nullable=True),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("fee_type", sa.String(), nullable=True),
        sa.Column("fee_multiplier", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("settlement_sources", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("contract_url", sa.String(), nullable=True),
        sa.Column("contract_terms_url", sa.String(), nullable=True),
        sa.Column("product_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("exchange_index", sa.Integer(), nullable=True),
        sa.Column("exchange_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("ticker", name=op.f("pk_series")),
    )
    op.create_table(
        "events",
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("series_ticker", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("sub_title", sa.String(), nullable=True),
        sa.Column("mutually_exclusive", sa.Boolean(), nullable=True),
        sa.Column("collateral_return_type", sa.String(), nullable=True),
        sa.Column("strike_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("strike_period", sa.String(), nullable=True),
        sa.Column("fee_type_override", sa.String(), nullable=True),
        sa.Column("fee_multiplier_override", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("exchange_index", sa.Integer(), nullable=True),
        sa.Column("exchange_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_ticker", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_series_ticker"), "events", ["series_ticker"], unique=False)
    op.create_table(
        "markets",
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("series_ticker", sa.String(), nullable=False),
        sa.Column("market_type", sa.String(), nullable=True),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("yes_sub_title", sa.String(), nullable=True),
        sa.Column("no_sub_title", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("strike_type", sa.String(), nullable=True),
        sa.Column("floor_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("cap_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("functional_strike", sa.String(), nullable=True),
        sa.Column("custom_strike", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("open_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expected_expiration_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest_expiration_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settlement_timer_seconds", sa.Integer(), nullable=True),
        sa.Column("can_close_early", sa.Boolean(), nullable=True),
        sa.Column("price_level_structure", sa.String(), nullable=True),
        sa.Column("price_ranges", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("notional_value_price", sa.BigInteger(), nullable=True),
        sa.Column("result", sa.String(), nullable=True),
        sa.Column("expiration_value", sa.String(), nullable=True),
        sa.Column("settlement_value_price", sa.BigInteger(), nullable=True),
        sa.Column("settlement_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rules_primary", sa.Text(), nullable=True),
        sa.Column("rules_secondary", sa.Text(), nullable=True),
        sa.Column("is_provisional", sa.Boolean(), nullable=True),
        sa.Column("exchange_index", sa.Integer(), nullable=True),
        sa.Column("exchange_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("ticker", name=op.f("pk_markets")),
    )
    op.create_index(op.f("ix_markets_close_time"), "markets", ["close_time"], unique=False)
    op.create_index(op.f("ix_markets_event_ticker"), "markets", ["event_ticker"], unique=False)
    op.create_index("ix_markets_series_ticker_status", "markets", ["series_ticker", "status"], unique=False)
    op.create_table(
        "market_snapshots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("yes_bid_price", sa.BigInteger(), nullable=True),
        sa.Column("yes_ask_price", sa.BigInteger(), nullable=True),
        sa.Column("yes_bid_count", sa.BigInteger(), nullable=True),
        sa.Column("yes_ask_count", sa.BigInteger(), nullable=True),
        sa.Column("last_price", sa.BigInteger(), nullable=True),
        sa.Column("volume_count", sa.BigInteger(), nullable=True),
        sa.Column("open_interest_count", sa.BigInteger(), nullable=True),
        sa.Column("depth", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_snapshots")),
        sa.UniqueConstraint("ticker", "ts", name=op.f("uq_market_snapshots_ticker_ts")),
    )
    op.create_table(
        "crypto_spot_bars",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("venue", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("open_price", sa.BigInteger(), nullable=False),
        sa.Column("high_price", sa.BigInteger(), nullable=False),
        sa.Column("low_price", sa.BigInteger(), nullable=False),
        sa.Column("close_price", sa.BigInteger(), nullable=False),
        sa.Column("vwap_price", sa.BigInteger(), nullable=True),
        sa.Column("volume_base", sa.Numeric(precision=28, scale=8), nullable=True),
        sa.Column("trade_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crypto_spot_bars")),
        sa.UniqueConstraint(
            "venue", "symbol", "interval_s", "ts", name=op.f("uq_crypto_spot_bars_venue_symbol_interval_s_ts")
        ),
    )
    op.create_table(
        "weather_forecast_runs",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("city", sa.String(), nullable=True),
        sa.Column("models", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latitude", sa.Double(), nullable=True),
        sa.Column("longitude", sa.Double(), nullable=True),
        sa.Column("elevation_m", sa.Double(), nullable=True),
        sa.Column("lst_offset_minutes", sa.Integer(), nullable=True),
        sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_weather_forecast_runs")),
    )
    op.create_index(
        "ix_weather_forecast_runs_station_fetched_at", "weather_forecast_runs", ["station", "fetched_at"], unique=False
    )
    op.create_table(
        "weather_ensemble_members",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("member", sa.Integer(), nullable=False),
        sa.Column("target_date", sa.Date(), nullable=False),
        sa.Column("tmax_f", sa.Double(), nullable=True),
        sa.Column("tmin_f", sa.Double(), nullable=True),
        sa.Column("hours_covered", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["weather_forecast_runs.run_id"],
            name=op.f("fk_weather_ensemble_members_run_id_weather_forecast_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "model", "member", "target_date", name=op.f("pk_weather_ensemble_members")),
    )
    op.create_table(
        "weather_observations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("climate_date", sa.Date(), nullable=False),
        sa.Column("temperature_c", sa.Double(), nullable=True),
        sa.Column("temperature_f", sa.Double(), nullable=True),
        sa.Column("running_max_f", sa.Double(), nullable=True),
        sa.Column("max_last_24h_c", sa.Double(), nullable=True),
        sa.Column("qc", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("raw_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weather_observations")),
        sa.UniqueConstraint("station", "observed_at", name=op.f("uq_weather_observations_station_observed_at")),
    )
    op.create_index(
        "ix_weather_observations_station_climate_date",
        "weather_observations",
        ["station", "climate_date"],
        unique=False,
    )
    # --- signals ---------------------------------------------------------------------------------------------
    op.create_table(
        "signals",
        sa.Column("signal_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("series_ticker", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("model_prob", sa.Double(), nullable=False),
        sa.Column("market_prob", sa.Double(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("edge_maker_ticks", sa.BigInteger(), nullable=True),
        sa.Column("edge_taker_ticks", sa.BigInteger(), nullable=True),
        sa.Column("yes_bid_price", sa.BigInteger(), nullable=True),
        sa.Column("yes_ask_price", sa.BigInteger(), nullable=True),
        sa.Column("book_seq", sa.BigInteger(), nullable=True),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("inputs", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("ts_event", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("decision IN ('trade', 'skip')", name=op.f("ck_signals_decision")),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_signals_mode")),
        sa.PrimaryKeyConstraint("signal_id", name=op.f("pk_signals")),
    )
    op.create_index(op.f("ix_signals_event_ticker"), "signals", ["event_ticker"], unique=False)
    op.create_index("ix_signals_mode_created_at", "signals", ["mode", "created_at"], unique=False)
    op.create_index("ix_signals_ticker_created_at", "signals", ["ticker", "created_at"], unique=False)
    op.create_table(
        "weather_bracket_probs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("climate_date", sa.Date(), nullable=False),
        sa.Column("strike_type", sa.String(), nullable=True),
        sa.Column("floor_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("cap_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("prob", sa.Double(), nullable=False),
        sa.Column("prob_raw", sa.Double(), nullable=True),
        sa.Column("member_count", sa.Integer(), nullable=True),
        sa.Column("bias_f", sa.Double(), nullable=True),
        sa.Column("obs_max_f", sa.Double(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weather_bracket_probs")),
        sa.UniqueConstraint("run_id", "model", "ticker", name=op.f("uq_weather_bracket_probs_run_id_model_ticker")),
    )
    op.create_index(
        op.f("ix_weather_bracket_probs_event_ticker"), "weather_bracket_probs", ["event_ticker"], unique=False
    )
    op.create_index(
        "ix_weather_bracket_probs_ticker_computed_at", "weather_bracket_probs", ["ticker", "computed_at"], unique=False
    )
    op.create_table(
        "model_params",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_params")),
        sa.UniqueConstraint(
            "family", "name", "scope", "valid_from", name=op.f("uq_model_params_family_name_scope_valid_from")
        ),
    )
    # --- executor --------------------------------------------------------------------------------------------
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("order_id", sa.String(), nullable=True),
        sa.Column("signal_id", sa.String(), nullable=True),
        sa.Column("leg", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("family", sa.String(), nullable=True),
        sa.Column("series_ticker", sa.String(), nullable=True),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("book_side", sa.String(), nullable=False),
        sa.Column("outcome_side", sa.String(), nullable=False),
        sa.Column("yes_price", sa.BigInteger(), nullable=False),
        sa.Column("initial_count", sa.BigInteger(), nullable=False),
        sa.Column("fill_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("remaining_count", sa.BigInteger(), nullable=False),
        sa.Column("avg_fill_price", sa.BigInteger(), nullable=True),
        sa.Column("fees_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("time_in_force", sa.String(), nullable=False),
        sa.Column("post_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("reduce_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("expiration_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("self_trade_prevention_type", sa.String(), nullable=True),
        sa.Column("order_group_id", sa.String(), nullable=True),
        sa.Column("subaccount", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("exchange_index", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exchange_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("book_side IN ('bid', 'ask')", name=op.f("ck_orders_book_side")),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_orders_mode")),
        sa.CheckConstraint("outcome_side IN ('yes', 'no')", name=op.f("ck_orders_outcome_side")),
        sa.CheckConstraint(
            "status IN ('intent', 'pending', 'resting', 'executed', 'canceled', 'rejected', 'blocked')",
            name=op.f("ck_orders_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("mode", "client_order_id", name=op.f("uq_orders_mode_client_order_id")),
        sa.UniqueConstraint("mode", "order_id", name=op.f("uq_orders_mode_order_id")),
    )
    op.create_index("ix_orders_mode_status", "orders", ["mode", "status"], unique=False)
    op.create_index("ix_orders_mode_ticker", "orders", ["mode", "ticker"], unique=False)
    op.create_index(op.f("ix_orders_signal_id"), "orders", ["signal_id"], unique=False)
    op.create_table(
        "order_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("order_id", sa.String(), nullable=True),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("yes_price", sa.BigInteger(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=True),
        sa.Column("fill_count", sa.BigInteger(), nullable=True),
        sa.Column("remaining_count", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("ts_event", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_order_events_mode")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_order_events_event_id")),
    )
    op.create_index("ix_order_events_mode_client_order_id", "order_events", ["mode", "client_order_id"], unique=False)
    op.create_table(
        "fills",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("fill_id", sa.String(), nullable=False),
        sa.Column("trade_id", sa.String(), nullable=True),
        sa.Column("order_id", sa.String(), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=True),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=True),
        sa.Column("book_side", sa.String(), nullable=False),
        sa.Column("outcome_side", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("yes_price", sa.BigInteger(), nullable=False),
        sa.Column("no_price", sa.BigInteger(), nullable=False),
        sa.Column("is_taker", sa.Boolean(), nullable=False),
        sa.Column("fee_ticks", sa.BigInteger(), nullable=False),
        sa.Column("exchange_index", sa.Integer(), nullable=True),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("book_side IN ('bid', 'ask')", name=op.f("ck_fills_book_side")),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_fills_mode")),
        sa.CheckConstraint("outcome_side IN ('yes', 'no')", name=op.f("ck_fills_outcome_side")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("mode", "fill_id", name=op.f("uq_fills_mode_fill_id")),
    )
    op.create_index("ix_fills_mode_ticker_filled_at", "fills", ["mode", "ticker", "filled_at"], unique=False)
    op.create_index(op.f("ix_fills_order_id"), "fills", ["order_id"], unique=False)
    op.create_table(
        "positions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("series_ticker", sa.String(), nullable=True),
        sa.Column("family", sa.String(), nullable=True),
        sa.Column("position", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("exposure_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_traded_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("realized_pnl_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("fees_paid_ticks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_fill_id", sa.String(), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exchange_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_positions_mode")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint("mode", "ticker", name=op.f("uq_positions_mode_ticker")),
    )
    op.create_index("ix_positions_mode_event_ticker", "positions", ["mode", "event_ticker"], unique=False)
    op.create_table(
        "balance_snapshots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("balance_ticks", sa.BigInteger(), nullable=False),
        sa.Column("portfolio_value_ticks", sa.BigInteger(), nullable=True),
        sa.Column("breakdown", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_balance_snapshots_mode")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_snapshots")),
        sa.UniqueConstraint("mode", "ts", name=op.f("uq_balance_snapshots_mode_ts")),
    )
    op.create_table(
        "risk_reservations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("scope_kind", sa.String(), nullable=False),
        sa.Column("scope_key", sa.String(), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("amount_ticks", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), server_default=sa.text("'reserved'"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_risk_reservations_mode")),
        sa.CheckConstraint(
            "scope_kind IN ('order', 'market', 'event', 'family', 'portfolio', 'daily_loss')",
            name=op.f("ck_risk_reservations_scope_kind"),
        ),
        sa.CheckConstraint("status IN ('reserved', 'released', 'consumed')", name=op.f("ck_risk_reservations_status")),
        sa.CheckConstraint("amount_ticks >= 0", name=op.f("ck_risk_reservations_amount_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_reservations")),
        sa.UniqueConstraint(
            "mode", "client_order_id", "scope_kind", "scope_key", name="uq_risk_reservations_order_scope"
        ),
    )
    op.create_index(
        "ix_risk_reservations_live", "risk_reservations", ["mode", "scope_kind", "scope_key", "status"], unique=False
    )
    op.create_index(
        "ix_risk_reservations_status_expires_at", "risk_reservations", ["status", "expires_at"], unique=False
    )
    # --- resolver --------------------------------------------------------------------------------------------
    op.create_table(
        "market_resolutions",
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("series_ticker", sa.String(), nullable=True),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("settlement_value_price", sa.BigInteger(), nullable=True),
        sa.Column("expiration_value", sa.String(), nullable=True),
        sa.Column("expiration_numeric", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("determined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("result IN ('yes', 'no', 'scalar', 'void')", name=op.f("ck_market_resolutions_result")),
        sa.PrimaryKeyConstraint("ticker", name=op.f("pk_market_resolutions")),
    )
    op.create_index(op.f("ix_market_resolutions_event_ticker"), "market_resolutions", ["event_ticker"], unique=False)
    op.create_index(op.f("ix_market_resolutions_settled_at"), "market_resolutions", ["settled_at"], unique=False)
    op.create_table(
        "climate_reports",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("cli_code", sa.String(), nullable=True),
        sa.Column("climate_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("product_id", sa.String(), nullable=True),
        sa.Column("max_temp_f", sa.Integer(), nullable=True),
        sa.Column("max_temp_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("min_temp_f", sa.Integer(), nullable=True),
        sa.Column("raw_text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('intermediate', 'final', 'correction')", name=op.f("ck_climate_reports_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_climate_reports")),
        sa.UniqueConstraint(
            "source", "station", "climate_date", "kind", "issued_at", name="uq_climate_reports_issuance"
        ),
    )
    op.create_index(
        "ix_climate_reports_station_climate_date", "climate_reports", ["station", "climate_date"], unique=False
    )
    op.create_table(
        "prediction_accuracy",
        sa.Column("prediction_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("series_ticker", sa.String(), nullable=True),
        sa.Column("event_ticker", sa.String(), nullable=True),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("predicted_prob", sa.Double(), nullable=False),
        sa.Column("market_prob", sa.Double(), nullable=True),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("brier", sa.Double(), nullable=False),
        sa.Column("brier_market", sa.Double(), nullable=True),
        sa.Column("log_loss", sa.Double(), nullable=True),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("horizon_s", sa.BigInteger(), nullable=True),
        sa.Column("traded", sa.Boolean(), nullable=True),
        sa.Column("pnl_ticks", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("mode IN ('sim', 'paper', 'demo', 'live')", name=op.f("ck_prediction_accuracy_mode")),
        sa.PrimaryKeyConstraint("prediction_id", name=op.f("pk_prediction_accuracy")),
    )
    op.create_index(
        "ix_prediction_accuracy_family_resolved_at", "prediction_accuracy", ["family", "resolved_at"], unique=False
    )
    op.create_index(op.f("ix_prediction_accuracy_ticker"), "prediction_accuracy", ["ticker"], unique=False)
    # --- notifier --------------------------------------------------------------------------------------------
    op.create_table(
        "alert_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("alert_id", sa.String(), nullable=False),
        sa.Column("dedupe_key", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("ts_event", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suppressed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')", name=op.f("ck_alert_events_severity")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_alert_events_alert_id")),
    )
    op.create_index("ix_alert_events_dedupe_key_created_at", "alert_events", ["dedupe_key", "created_at"], unique=False)
    op.create_table(
        "command_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("command_id", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=True),
        sa.Column("command", sa.String(), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("authorized", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("channel IN ('telegram', 'cli')", name=op.f("ck_command_audit_channel")),
        sa.CheckConstraint(
            "outcome IN ('ok', 'denied', 'error', 'awaiting_confirmation', 'expired')",
            name=op.f("ck_command_audit_outcome"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_audit")),
        sa.UniqueConstraint("command_id", name=op.f("uq_command_audit_command_id")),
    )
    op.create_index("ix_command_audit_received_at", "command_audit", ["received_at"], unique=False)


def downgrade() -> None:
    """Drop every table (their indexes and constraints go with them)."""
    for table in reversed(TABLES):
        op.drop_table(table)
