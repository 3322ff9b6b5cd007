"""Tables owned by `services/signals`: emitted signals, weather bracket probabilities, fitted model parameters."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Identity, Index, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, in_check, mode_check, mode_column, updated_at_column

SIGNAL_DECISIONS: tuple[str, ...] = ("trade", "skip")


class Signal(Base):
    """A model-vs-market signal and the decision taken on it; owner signals, key `signal_id`."""

    __tablename__ = "signals"
    __table_args__ = (
        mode_check(),
        in_check("decision", SIGNAL_DECISIONS, "decision"),
        Index("ix_signals_ticker_created_at", "ticker", "created_at"),
        Index("ix_signals_mode_created_at", "mode", "created_at"),
    )

    signal_id: Mapped[str] = mapped_column(primary_key=True)  # the event id, also the JetStream Nats-Msg-Id
    mode: Mapped[str] = mode_column()
    family: Mapped[str]  # weather | btc | llm ...
    series_ticker: Mapped[str]
    event_ticker: Mapped[str] = mapped_column(index=True)
    ticker: Mapped[str]
    model: Mapped[str | None]  # model name and version that produced model_prob
    model_prob: Mapped[float]  # model probability of YES
    market_prob: Mapped[float | None]  # market-implied probability of YES (mid or relevant quote)
    confidence: Mapped[float | None]
    # Best action: buy_yes | buy_no | sell_yes | sell_no | none, at `price` (YES price ticks).
    action: Mapped[str | None]
    price: Mapped[int | None]
    # Expected value per contract net of fee, in ticks, for a maker fill and for a taker fill.
    edge_maker_ticks: Mapped[int | None]
    edge_taker_ticks: Mapped[int | None]
    yes_bid_price: Mapped[int | None]  # book the signal was computed against
    yes_ask_price: Mapped[int | None]
    book_seq: Mapped[int | None]
    decision: Mapped[str]  # trade | skip
    reason: Mapped[str | None]  # why not: no_edge, stale_book, low_confidence, family_off ...
    inputs: Mapped[dict[str, Any] | None]  # inputs or references to them (forecast run id, spot ts ...)
    ts_event: Mapped[datetime]  # when the newest input was observed at its source
    created_at: Mapped[datetime] = created_at_column()  # ts_init


class WeatherBracketProb(Base):
    """A bracket market's weather-model probability; owner signals, key (`run_id`, `model`, `ticker`)."""

    __tablename__ = "weather_bracket_probs"
    __table_args__ = (
        UniqueConstraint("run_id", "model", "ticker"),
        Index("ix_weather_bracket_probs_ticker_computed_at", "ticker", "computed_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    run_id: Mapped[str]  # weather_forecast_runs.run_id the probability was computed from
    model: Mapped[str]  # ensemble model name or the blend label
    event_ticker: Mapped[str] = mapped_column(index=True)
    ticker: Mapped[str]
    station: Mapped[str]
    climate_date: Mapped[date]
    strike_type: Mapped[str | None]
    floor_strike: Mapped[Decimal | None]
    cap_strike: Mapped[Decimal | None]
    prob: Mapped[float]  # calibrated probability of YES
    prob_raw: Mapped[float | None]  # before calibration
    member_count: Mapped[int | None] = mapped_column(Integer)
    bias_f: Mapped[float | None]  # station bias applied, °F
    obs_max_f: Mapped[float | None]  # observed running max the distribution was conditioned on
    computed_at: Mapped[datetime]
    created_at: Mapped[datetime] = created_at_column()


class ModelParam(Base):
    """A fitted model parameter (e.g. station bias); owner signals, key (`family`, `name`, `scope`, `valid_from`)."""

    __tablename__ = "model_params"
    __table_args__ = (UniqueConstraint("family", "name", "scope", "valid_from"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    family: Mapped[str]  # weather | btc ...
    name: Mapped[str]  # e.g. station_bias_f, sigma_scale
    scope: Mapped[str]  # what it applies to, e.g. "KNYC" or "KNYC:ncep_gefs025"; "" for global
    value: Mapped[float | None]
    params: Mapped[dict[str, Any] | None]  # vector/structured parameters
    n_samples: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[datetime]
    fitted_at: Mapped[datetime]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


LLM_STAGES: tuple[str, ...] = ("forecaster", "critic", "trader")
LLM_CALL_STATUSES: tuple[str, ...] = ("reserved", "done", "failed")


class LlmCall(Base):
    """One chat completion of the llm family (or the reservation for one); owner signals, key `call_id`.

    The budget is this table: a call's row is written, with the worst cost it can run up (`reserved_ticks`),
    under the mode's llm lock before the request leaves, and gets its real cost afterwards; a UTC day's
    spend is the sum of `cost_ticks`, or `reserved_ticks` where no cost is known yet (a call in flight, or a
    process that died mid-call), so every replica and every restart sees the same total. One analysis is
    three calls (forecaster, critic, trader) sharing `analysis_id`.
    """

    __tablename__ = "llm_calls"
    __table_args__ = (
        mode_check(),
        in_check("stage", LLM_STAGES, "stage"),
        in_check("status", LLM_CALL_STATUSES, "status"),
        Index("ix_llm_calls_mode_day", "mode", "day"),
        Index("ix_llm_calls_mode_ticker_started_at", "mode", "ticker", "started_at"),
    )

    call_id: Mapped[str] = mapped_column(primary_key=True)  # "<analysis_id>:<stage>"
    analysis_id: Mapped[str] = mapped_column(index=True)
    mode: Mapped[str] = mode_column()
    day: Mapped[date]  # UTC day the budget counts it in
    ticker: Mapped[str]
    stage: Mapped[str]
    prompt_version: Mapped[str]
    model: Mapped[str]  # the model asked (after any fallback: the one that answered)
    status: Mapped[str]
    prompt: Mapped[str]
    response: Mapped[str | None]
    parsed: Mapped[dict[str, Any] | None]  # the validated answer
    error: Mapped[str | None]  # why the call or its answer was not used (rate_limited, invalid_schema: ...)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    reserved_ticks: Mapped[int]
    cost_ticks: Mapped[int | None]
    latency_ms: Mapped[float | None]
    attempts: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
