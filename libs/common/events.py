"""Typed, immutable bus events: one envelope and one model per subject kind of DESIGN §4.

Every event has an `id` (also the JetStream `Nats-Msg-Id`, so derive it from the business fact
when one exists — a retried publish must carry the same id), a `type` tag, `ts_event` (when it
happened at the source), `ts_init` (when we built the event) and the desk `mode`. Money fields
are integers: prices in $0.0001, counts in 1/100 contract. A derived fact is a new event; events
are frozen and never mutated. The wire form is written and read by `libs.common.codec` (orjson for
events of plain fields, pydantic's validation on the way in).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from libs.common import codec
from libs.common.config import Mode

Side = Literal["yes", "no"]
BookSide = Literal["bid", "ask"]
Severity = Literal["info", "warning", "critical"]


def new_id() -> str:
    """A random event id, for events with no natural identity."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every bus message carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_id, min_length=1, max_length=200)
    type: str
    ts_event: AwareDatetime
    ts_init: AwareDatetime = Field(default_factory=utcnow)
    mode: Mode

    def to_json(self) -> bytes:
        """Wire form (UTF-8 JSON; the same as `model_dump_json()`, see `codec`)."""
        return codec.encode(self)


# --- market data -------------------------------------------------------------------------------

class PriceRange(BaseModel):
    """One segment of a market's tick grid, in $0.0001 ticks."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: int
    end: int
    step: int = Field(gt=0)


class MarketDefinition(Event):
    """`md.market.<series>.<ticker>`: a market's terms, times, grid, fees and status."""

    type: Literal["md.market"] = "md.market"
    ticker: str
    event_ticker: str
    series_ticker: str
    status: str
    title: str = ""
    strike_type: str | None = None
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None
    open_time: AwareDatetime | None = None
    close_time: AwareDatetime | None = None
    expected_expiration_time: AwareDatetime | None = None
    price_ranges: tuple[PriceRange, ...] = ()
    fee_type: str | None = None
    fee_multiplier: Decimal | None = None
    exchange_index: int | None = None
    result: str | None = None
    rules: str | None = None  # the market's rules_primary, for whoever reads the terms (the llm family)
    volume: int | None = None  # lifetime volume, 1/100 contract (the llm family's volume filter)


Level = tuple[int, int]  # (price in $0.0001, count in 1/100 contract)


class BookUpdate(Event):
    """`md.book.<series>.<ticker>`: bids on both sides (Kalshi books hold bids only), best last."""

    type: Literal["md.book"] = "md.book"
    ticker: str
    series_ticker: str
    seq: int
    yes_bids: tuple[Level, ...] = ()
    no_bids: tuple[Level, ...] = ()
    depth: Literal["full", "top"] = "full"
    ts_exchange: AwareDatetime | None = None


class PublicTrade(Event):
    """`md.trade.<series>.<ticker>`: one public trade."""

    type: Literal["md.trade"] = "md.trade"
    ticker: str
    series_ticker: str
    trade_id: str
    yes_price: int
    count: int
    taker_outcome_side: Side


class SpotTick(Event):
    """`md.spot.btc.<venue>`: a spot trade or top-of-book update; prices in $0.0001."""

    type: Literal["md.spot"] = "md.spot"
    venue: str
    symbol: str
    kind: Literal["trade", "ticker"]
    price: int
    size: Decimal | None = None
    bid: int | None = None
    ask: int | None = None


class WxMember(BaseModel):
    """One ensemble member's maximum over one climate day, in °F."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    member: int
    target_date: date
    tmax_f: float


class WxForecast(Event):
    """`md.wx.forecast.<city>`: an ensemble run's members' climate-day maxima."""

    type: Literal["md.wx.forecast"] = "md.wx.forecast"
    city: str
    station: str
    run_time: AwareDatetime
    members: tuple[WxMember, ...]
    deterministic: dict[str, float] = Field(default_factory=dict)
    # Hourly values (°F) of each complete member ("<model>:<member>") from `trace_start` on, over
    # today's and tomorrow's climate days: the model conditions on the hours left in the day.
    trace_start: AwareDatetime | None = None
    traces: dict[str, tuple[float, ...]] = Field(default_factory=dict)


class WxObservation(Event):
    """`md.wx.obs.<station>`: an observation and the running max of the station's climate day."""

    type: Literal["md.wx.obs"] = "md.wx.obs"
    station: str
    observed_at: AwareDatetime
    climate_date: date
    temp_f: float | None
    running_max_f: float | None
    qc: str | None = None


# --- signals, orders, resolutions --------------------------------------------------------------

class Signal(Event):
    """`sig.<family>.<series>.<ticker>`: model vs market, best action and fee-aware edges."""

    type: Literal["sig"] = "sig"
    family: str
    series_ticker: str
    event_ticker: str
    ticker: str
    model: str
    model_version: str
    p_model: float = Field(ge=0, le=1)
    p_market: float = Field(ge=0, le=1)
    action: Literal["buy_yes", "buy_no", "none"]
    limit_price: int | None = None
    edge_maker: int | None = None  # $0.0001 per contract, net of the maker fee
    edge_taker: int | None = None  # $0.0001 per contract, net of the taker fee
    confidence: float = Field(ge=0, le=1)
    valid_until: AwareDatetime
    inputs_ref: str | None = None
    # The model's own probability before calibration, when `p_model` is a calibrated one (the llm family
    # recalibrates from its resolved record; the resolver scores both).
    p_raw: float | None = Field(default=None, ge=0, le=1)


OrderEventKind = Literal["intent", "accepted", "resting", "amended", "partially_filled", "filled", "canceled",
                         "rejected", "fill"]


class OrderEvent(Event):
    """`ord.<event>.<ticker>`: one order lifecycle transition or one fill."""

    type: Literal["ord"] = "ord"
    kind: OrderEventKind
    client_order_id: str
    order_id: str | None = None
    ticker: str
    event_ticker: str
    book_side: BookSide
    price: int
    count: int
    filled_count: int = 0
    remaining_count: int = 0
    fill_id: str | None = None
    fee: int | None = None
    is_taker: bool | None = None
    reason: str | None = None


class Resolution(Event):
    """`res.market.<ticker>`: how a market settled."""

    type: Literal["res.market"] = "res.market"
    ticker: str
    event_ticker: str
    result: Literal["yes", "no", "scalar", "void"]
    settlement_value: int | None = None
    settled_time: AwareDatetime | None = None


class AccuracyUpdate(Event):
    """`res.accuracy`: scores of a model over a window."""

    type: Literal["res.accuracy"] = "res.accuracy"
    model: str
    family: str
    n: int
    brier: float | None = None
    log_loss: float | None = None


class ModelParamUpdate(Event):
    """`res.param.<family>.<name>.<scope>`: a model parameter fitted from resolved outcomes (e.g. a
    weather station's forecast bias); the last one per subject is the current value."""

    type: Literal["res.param"] = "res.param"
    family: str
    name: str  # e.g. station_bias_f
    scope: str  # what it applies to, e.g. "KNYC"
    value: float
    n_samples: int
    params: dict[str, Any] = Field(default_factory=dict)


# --- operations --------------------------------------------------------------------------------

class Alert(Event):
    """`ops.alert.<family>`: something an operator should know; `dedupe_key` collapses repeats."""

    type: Literal["ops.alert"] = "ops.alert"
    family: str
    severity: Severity
    dedupe_key: str
    title: str
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class InputFreshness(BaseModel):
    """How old one input of a service is, against its allowed age."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    age_s: float | None  # None: never seen
    max_age_s: float
    stale: bool


class Heartbeat(Event):
    """`ops.health.<service>.<instance>`: liveness and per-input freshness."""

    type: Literal["ops.health"] = "ops.health"
    service: str
    instance: str
    status: Literal["ok", "degraded", "down"]
    started_at: AwareDatetime
    inputs: dict[str, InputFreshness] = Field(default_factory=dict)
    detail: str = ""


AnyEvent = Annotated[
    MarketDefinition | BookUpdate | PublicTrade | SpotTick | WxForecast | WxObservation | Signal | OrderEvent
    | Resolution | AccuracyUpdate | ModelParamUpdate | Alert | Heartbeat,
    Field(discriminator="type"),
]
ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_decode_any = codec.decoder(ANY_EVENT)


def decode_event(data: bytes | str) -> AnyEvent:
    """Decode any bus event by its `type` tag (raises pydantic.ValidationError when malformed)."""
    return _decode_any(data)
