"""Tables owned by `services/resolver`: market outcomes, official climate reports, per-prediction scores."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, in_check, mode_check, mode_column, updated_at_column

MARKET_RESULTS: tuple[str, ...] = ("yes", "no", "scalar", "void")
CLIMATE_REPORT_KINDS: tuple[str, ...] = ("intermediate", "final", "correction")


class MarketResolution(Base):
    """The official outcome of one market (amendments update it); owner resolver, key (`mode`, `ticker`)."""

    __tablename__ = "market_resolutions"
    __table_args__ = (in_check("result", MARKET_RESULTS, "result"), mode_check())

    mode: Mapped[str] = mapped_column(String(8), primary_key=True)
    ticker: Mapped[str] = mapped_column(primary_key=True)
    event_ticker: Mapped[str] = mapped_column(index=True)
    series_ticker: Mapped[str | None]
    result: Mapped[str]
    status: Mapped[str | None]  # determined | disputed | amended | finalized
    settlement_value_price: Mapped[int | None]  # YES payout per contract
    expiration_value: Mapped[str | None]  # underlying value used, as Kalshi sends it ("66", "78512.34")
    expiration_numeric: Mapped[Decimal | None]  # the same, parsed, for scoring
    determined_at: Mapped[datetime | None]
    settled_at: Mapped[datetime | None] = mapped_column(index=True)
    source: Mapped[str | None]  # kalshi-rest | kalshi-ws | sim
    revision: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # changes of result or value
    climate_report_id: Mapped[int | None] = mapped_column(BigInteger)  # the official report a weather result rests on
    report_max_f: Mapped[int | None] = mapped_column(Integer)  # that report's maximum
    # BTC: the desk's composite spot at its last signal before the close, and settlement value − that.
    model_underlying: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    basis: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    raw: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class ClimateReport(Base):
    """One climate report issuance; owner resolver, key (`source`, `product_id`).

    A product that does not parse is kept with `parse_error` (and no date or kind), never guessed.
    """

    __tablename__ = "climate_reports"
    __table_args__ = (
        in_check("kind", CLIMATE_REPORT_KINDS, "kind"),
        UniqueConstraint("source", "station", "climate_date", "kind", "issued_at", name="uq_climate_reports_issuance"),
        UniqueConstraint("source", "product_id", name="uq_climate_reports_product"),
        Index("ix_climate_reports_station_climate_date", "station", "climate_date"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    source: Mapped[str]  # nws-cli | twc | sim
    station: Mapped[str]  # ICAO, e.g. KNYC
    cli_code: Mapped[str | None]  # AFOS id, e.g. CLINYC
    climate_date: Mapped[date | None]  # the day in the report headline (local standard time)
    kind: Mapped[str | None]  # intermediate (TODAY, valid as of) | final (YESTERDAY) | correction
    issued_at: Mapped[datetime]
    valid_as_of: Mapped[datetime | None]  # intermediate reports cover the day only up to this time
    product_id: Mapped[str | None]  # api.weather.gov product id
    max_temp_f: Mapped[int | None] = mapped_column(Integer)  # whole °F; NULL for MM (missing)
    max_temp_at: Mapped[datetime | None]
    min_temp_f: Mapped[int | None] = mapped_column(Integer)
    raw_text: Mapped[str | None] = mapped_column(Text)
    parse_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class PredictionAccuracy(Base):
    """The score of one prediction (usually a signal) once its market resolved; owner resolver, key `prediction_id`."""

    __tablename__ = "prediction_accuracy"
    __table_args__ = (
        mode_check(),
        Index("ix_prediction_accuracy_family_resolved_at", "family", "resolved_at"),
    )

    prediction_id: Mapped[str] = mapped_column(primary_key=True)  # the signal id for signals
    mode: Mapped[str] = mode_column()
    family: Mapped[str]
    model: Mapped[str | None]
    series_ticker: Mapped[str | None]
    event_ticker: Mapped[str | None]
    ticker: Mapped[str] = mapped_column(index=True)
    predicted_prob: Mapped[float]
    market_prob: Mapped[float | None]
    outcome: Mapped[int] = mapped_column(SmallInteger)  # 1 = YES, 0 = NO
    brier: Mapped[float]
    brier_market: Mapped[float | None]
    log_loss: Mapped[float | None]
    predicted_at: Mapped[datetime]
    resolved_at: Mapped[datetime]
    horizon_s: Mapped[int | None]  # close_time - predicted_at, seconds
    traded: Mapped[bool | None]
    pnl_ticks: Mapped[int | None]  # realised P&L of orders from this prediction, if any
    fees_ticks: Mapped[int | None]
    revision: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # the resolution revision scored
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
