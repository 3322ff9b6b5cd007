"""Strict models of Kalshi's documented response shapes: the contract the simulator is held to.

Written from the API reference, not from our client: the official OpenAPI (docs.kalshi.com, spec
v3.28, 2026-08-22), the generated SDK `kalshi-python-sync` 3.34.0 (Oct 2026, spec v3.34), the
AsyncAPI for WebSocket v2 and `shared/ref/kalshi_api.md`. Where they differ the newest wins (e.g.
`settlement_bounds_type` and Series `categories` are new in 3.34).

The desk's own models (`libs.common.kalshi.models`) are lenient on purpose: defaults for missing
fields, integers accepted for dollar strings. These are the opposite:
- a field the reference marks required must be present (a nullable one may be `null`);
- an optional field that is not nullable must be absent or of its type, never `null`;
- types are strict (no "1" for 1, no 1 for "1.00"); enums are closed;
- formats are checked: market and order prices are dollar strings with exactly 4 decimals
  (`"0.4200"`), portfolio amounts 4 to 6, counts fixed-point with exactly 2 (`"10.00"`), times
  RFC3339 with a zone, ids UUIDs where the reference says `format: uuid`;
- a few documented identities hold (YES ask = 1 − NO bid, `fill_id` = `trade_id`, ...).
Extra fields are allowed: an addition to the API is not a break.

`validate_rest(route, body)` and `validate_ws(frame)` pick the model; both raise
`pydantic.ValidationError` on a mismatch.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

# -- formats -------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def _time(v: str) -> str:
    if not _RFC3339.match(v):
        raise ValueError(f"not an RFC3339 date-time with a zone: {v!r}")
    datetime.fromisoformat(v.replace("Z", "+00:00"))  # a real date, not just the right digits
    return v


def _uuid(v: str) -> str:
    uuid.UUID(v)
    return v


def _unit(v: str) -> str:
    if not Decimal(0) <= Decimal(v) <= Decimal(1):
        raise ValueError(f"a price must be between 0 and 1 dollars, got {v!r}")
    return v


def _hhmm(v: str) -> str:
    h, m = (int(x) for x in v.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60):
        raise ValueError(f"not HH:MM: {v!r}")
    return v


Str = StrictStr
Int = StrictInt
Bool = StrictBool
Number = StrictInt | StrictFloat
Time = Annotated[StrictStr, AfterValidator(_time)]
Uuid = Annotated[StrictStr, AfterValidator(_uuid)]
# The AsyncAPI's own pattern ^[A-Z0-9-]+$ is contradicted by its examples ("FED-23DEC-T3.00") and by
# real tickers (KXBTCD-26AUG2517-T78499.99): dots are allowed.
Ticker = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9.\-]*$")]
# A market or order price: exactly 4 decimals (kalshi_api.md §3.0: "most market prices come back with 4").
Price = Annotated[StrictStr, StringConstraints(pattern=r"^\d+\.\d{4}$"), AfterValidator(_unit)]
# WebSocket prices: the AsyncAPI examples mix 3 and 4 decimals ("0.960", "0.3500"); the value is still dollars.
WsPrice = Annotated[StrictStr, StringConstraints(pattern=r"^\d+\.\d{2,4}$"), AfterValidator(_unit)]
# Portfolio money: "responses emit up to 6" decimals (FixedPointDollars); we see 4 to 6.
Money = Annotated[StrictStr, StringConstraints(pattern=r"^\d+\.\d{4,6}$")]
SignedMoney = Annotated[StrictStr, StringConstraints(pattern=r"^-?\d+\.\d{4,6}$")]
# FixedPointCount: "responses always emit 2 decimals".
Count = Annotated[StrictStr, StringConstraints(pattern=r"^\d+\.\d{2}$")]
SignedCount = Annotated[StrictStr, StringConstraints(pattern=r"^-?\d+\.\d{2}$")]
HHMM = Annotated[StrictStr, StringConstraints(pattern=r"^\d{2}:\d{2}$"), AfterValidator(_hhmm)]

FeeType = Literal["quadratic", "quadratic_with_maker_fees", "quadratic_with_combo_maker_fees", "flat"]
MarketStatus = Literal["initialized", "inactive", "active", "closed", "determined", "disputed", "amended",
                       "finalized"]
OrderStatus = Literal["resting", "canceled", "executed"]
OutcomeSide = Literal["yes", "no"]
BookSide = Literal["bid", "ask"]
Action = Literal["buy", "sell"]
Stp = Literal["taker_at_cross", "maker"]
StrikeType = Literal["greater", "greater_or_equal", "less", "less_or_equal", "between", "functional", "custom",
                     "structured"]
# The price_level_structure labels the AsyncAPI enumerates (kalshi_api.md §5).
PriceLevelStructure = Literal[
    "linear_cent", "deci_cent", "tapered_deci_cent", "center_whole_edge_half_cent", "center_whole_edge_quint_cent",
    "center_half_edge_half_cent", "center_half_edge_quint_cent", "center_half_edge_deci_cent",
    "center_quint_edge_quint_cent", "center_quint_edge_deci_cent", "center_centi_edge_centi_cent",
    "center_deci_edge_centi_cent"]
CollateralReturnType = Literal["MECNET", "DIRECNET", ""]

# An optional key that is not nullable: absent is fine, `null` is not. Pydantic does not validate
# defaults, so `x: Str = OMITTED` accepts a missing key and rejects an explicit null.
OMITTED: Any = None


class Strict(BaseModel):
    """Base: strict types, required means present, extra fields allowed."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


def _d(v: str) -> Decimal:
    return Decimal(v)


def _check_levels(levels: list[list[str]], where: str, *, ascending: bool) -> None:
    prices = []
    for level in levels:
        price, count = level
        _unit(price)
        if not re.match(r"^\d+\.\d{2,4}$", price) or not re.match(r"^\d+\.\d{2}$", count):
            raise ValueError(f"{where}: level {level!r} is not [dollars, count_fp]")
        if _d(price) <= 0 or _d(price) >= 1 or _d(count) <= 0:
            raise ValueError(f"{where}: level {level!r} has a price outside (0, 1) or no size")
        prices.append(_d(price))
    if ascending and prices != sorted(set(prices)):
        raise ValueError(f"{where}: levels are not strictly ascending by price: {prices}")


Level = Annotated[list[StrictStr], Field(min_length=2, max_length=2)]

# -- REST: catalog -------------------------------------------------------------------------------


class PriceRange(Strict):
    """One band of a market's tick grid."""

    start: Price
    end: Price
    step: Price


class MveSelectedLeg(Strict):
    """A combo leg (optional everywhere)."""

    event_ticker: Str = OMITTED
    market_ticker: Str = OMITTED
    side: Str = OMITTED
    yes_settlement_value_dollars: Price | None = None


class Market(Strict):
    """`Market` (SDK 3.34 `models/market.py`, docs get-market)."""

    ticker: Ticker
    event_ticker: Ticker
    market_type: Literal["binary", "scalar"]
    title: Str = OMITTED  # deprecated, still returned
    subtitle: Str = OMITTED  # deprecated
    yes_sub_title: Str
    no_sub_title: Str
    created_time: Time
    updated_time: Time
    open_time: Time
    close_time: Time
    expected_expiration_time: Time | None = None
    expiration_time: Time = OMITTED  # deprecated
    latest_expiration_time: Time
    settlement_timer_seconds: Int
    status: MarketStatus
    yes_bid_dollars: Price
    yes_bid_size_fp: Count
    yes_ask_dollars: Price
    yes_ask_size_fp: Count
    no_bid_dollars: Price
    no_ask_dollars: Price
    last_price_dollars: Price
    volume_fp: Count
    volume_24h_fp: Count
    result: Literal["yes", "no", "scalar", ""]
    can_close_early: Bool
    open_interest_fp: Count
    notional_value_dollars: Price
    previous_yes_bid_dollars: Price
    previous_yes_ask_dollars: Price
    previous_price_dollars: Price
    liquidity_dollars: Price = OMITTED  # deprecated, always "0.0000"
    settlement_value_dollars: Price | None = None
    settlement_ts: Time | None = None
    settlement_bounds_type: Literal["default", "floor"]
    settlement_floor_dollars: Price | None = None
    expiration_value: Str
    occurrence_datetime: Time | None = None
    fee_waiver_expiration_time: Time | None = None
    early_close_condition: Str | None = None
    strike_type: StrikeType = OMITTED
    floor_strike: Number | None = None
    cap_strike: Number | None = None
    functional_strike: Str | None = None
    custom_strike: dict[str, Any] | None = None
    rules_primary: Str
    rules_secondary: Str
    mve_collection_ticker: Str = OMITTED
    mve_selected_legs: list[MveSelectedLeg] = OMITTED
    primary_participant_key: Str | None = None
    price_level_structure: PriceLevelStructure
    price_ranges: list[PriceRange] = Field(min_length=1)
    is_provisional: Bool = OMITTED
    exchange_index: Int = OMITTED

    @model_validator(mode="after")
    def _documented_identities(self) -> Market:
        # Only bids rest: YES ask = 1 − best NO bid, NO ask = 1 − best YES bid, and the empty book is
        # "0.0000" bid / "1.0000" ask (orderbook_responses guide; kalshi_api.md §3.4, §5).
        if _d(self.yes_ask_dollars) != 1 - _d(self.no_bid_dollars):
            raise ValueError(f"yes_ask_dollars {self.yes_ask_dollars} != 1 - no_bid_dollars {self.no_bid_dollars}")
        if _d(self.no_ask_dollars) != 1 - _d(self.yes_bid_dollars):
            raise ValueError(f"no_ask_dollars {self.no_ask_dollars} != 1 - yes_bid_dollars {self.yes_bid_dollars}")
        # Settlement bounds: "floor" markets include settlement_floor_dollars (settlement_bounds guide).
        if self.settlement_bounds_type == "floor" and self.settlement_floor_dollars is None:
            raise ValueError("settlement_bounds_type 'floor' without settlement_floor_dollars")
        if self.settlement_bounds_type == "default" and self.settlement_floor_dollars is not None:
            raise ValueError("settlement_floor_dollars on a 'default' market (it never has a floor)")
        # price_ranges must tile $0–$1 with steps that divide each band.
        bands = [(_d(r.start), _d(r.end), _d(r.step)) for r in self.price_ranges]
        if bands[0][0] != 0 or bands[-1][1] != 1:
            raise ValueError(f"price_ranges do not cover 0..1: {bands}")
        for (a, b, step), nxt in zip(bands, [*bands[1:], None], strict=True):
            if not (a < b and step > 0 and (b - a) % step == 0):
                raise ValueError(f"price range {a}..{b} step {step} is not a grid")
            if nxt is not None and nxt[0] != b:
                raise ValueError(f"price_ranges are not contiguous at {b}")
        if self.status == "finalized" and (self.result == "" or self.settlement_ts is None):
            raise ValueError("a finalized market has a result and a settlement_ts")
        if self.result in ("yes", "no") and self.settlement_value_dollars is None:
            raise ValueError("a determined market carries settlement_value_dollars")
        return self


class SettlementSource(Strict):
    """Where a series/event is settled from."""

    name: Str = OMITTED
    url: Str = OMITTED


class Series(Strict):
    """`Series` (SDK 3.34; `categories` required since 3.34)."""

    ticker: Ticker
    frequency: Str
    title: Str
    category: Str
    categories: list[Str]
    tags: list[Str] | None
    settlement_sources: list[SettlementSource] | None
    contract_url: Str
    contract_terms_url: Str
    product_metadata: dict[str, Any] | None = None
    fee_type: FeeType
    fee_multiplier: Number = Field(ge=0)
    additional_prohibitions: list[Str] | None
    volume_fp: Count = OMITTED
    last_updated_ts: Time = OMITTED
    exchange_index: Int = OMITTED


class EventData(Strict):
    """`EventData` (docs get-event; SDK 3.34)."""

    event_ticker: Ticker
    series_ticker: Ticker
    sub_title: Str
    title: Str
    collateral_return_type: CollateralReturnType
    mutually_exclusive: Bool
    category: Str = OMITTED  # deprecated
    strike_date: Time | None = None
    strike_period: Str | None = None
    markets: list[Market] = OMITTED  # only with with_nested_markets=true
    available_on_brokers: Bool = OMITTED  # deprecated, always false
    product_metadata: dict[str, Any] | None = None
    settlement_sources: list[SettlementSource] | None
    last_updated_ts: Time = OMITTED
    fee_type_override: FeeType | None = None
    fee_multiplier_override: Number | None = None
    exchange_index: Int = OMITTED

    @model_validator(mode="after")
    def _consistent(self) -> EventData:
        # "mutually_exclusive: True when collateral_return_type is MECNET" (SDK 3.34 EventData).
        if self.mutually_exclusive != (self.collateral_return_type == "MECNET"):
            raise ValueError(f"mutually_exclusive={self.mutually_exclusive} but collateral_return_type="
                             f"{self.collateral_return_type!r}")
        for m in self.markets or ():
            if m.event_ticker != self.event_ticker:
                raise ValueError(f"nested market {m.ticker} belongs to {m.event_ticker}")
            # "Markets in events with a collateral_return_type of MECNET or DIRECNET are always default."
            if self.collateral_return_type in ("MECNET", "DIRECNET") and m.settlement_bounds_type != "default":
                raise ValueError(f"{m.ticker}: a {self.collateral_return_type} event's market must be 'default'")
        return self


class GetMarketResponse(Strict):
    """`GET /markets/{ticker}`."""

    market: Market


class GetMarketsResponse(Strict):
    """`GET /markets`."""

    markets: list[Market]
    cursor: Str


class GetEventResponse(Strict):
    """`GET /events/{event_ticker}`: `markets` is the deprecated top-level twin, still required."""

    event: EventData
    markets: list[Market]


class GetEventsResponse(Strict):
    """`GET /events`."""

    events: list[EventData]
    milestones: list[dict[str, Any]] = OMITTED
    cursor: Str


class GetSeriesResponse(Strict):
    """`GET /series/{series_ticker}`."""

    series: Series


class GetSeriesListResponse(Strict):
    """`GET /series`."""

    series: list[Series]


class ExchangeIndexStatus(Strict):
    """One shard's state."""

    exchange_index: Int
    description: Str
    exchange_active: Bool
    trading_active: Bool
    intra_exchange_transfers_active: Bool


class ExchangeStatus(Strict):
    """`GET /exchange/status`."""

    exchange_active: Bool
    trading_active: Bool
    intra_exchange_transfers_active: Bool = OMITTED
    exchange_estimated_resume_time: Time | None = None
    exchange_index_statuses: list[ExchangeIndexStatus] = OMITTED


class DailySchedule(Strict):
    """One session, "HH:MM" ET."""

    open_time: HHMM
    close_time: HHMM


class WeeklySchedule(Strict):
    """Standard hours for a period."""

    start_time: Time
    end_time: Time
    monday: list[DailySchedule]
    tuesday: list[DailySchedule]
    wednesday: list[DailySchedule]
    thursday: list[DailySchedule]
    friday: list[DailySchedule]
    saturday: list[DailySchedule]
    sunday: list[DailySchedule]


class MaintenanceWindow(Strict):
    """A scheduled maintenance window."""

    start_datetime: Time
    end_datetime: Time


class Schedule(Strict):
    """The exchange schedule."""

    standard_hours: list[WeeklySchedule]
    maintenance_windows: list[MaintenanceWindow]


class GetExchangeScheduleResponse(Strict):
    """`GET /exchange/schedule`."""

    schedule: Schedule


class SeriesFeeChange(Strict):
    """A scheduled series fee change."""

    id: Str
    series_ticker: Ticker
    fee_type: FeeType
    fee_multiplier: Number
    scheduled_ts: Time


class GetSeriesFeeChangesResponse(Strict):
    """`GET /series/fee_changes`."""

    series_fee_change_arr: list[SeriesFeeChange]


class OrderbookFp(Strict):
    """`orderbook_fp`: YES bids and NO bids, `[price_dollars, count_fp]`, ascending, best last."""

    yes_dollars: list[Level]
    no_dollars: list[Level]

    @model_validator(mode="after")
    def _levels(self) -> OrderbookFp:
        _check_levels(self.yes_dollars, "yes_dollars", ascending=True)
        _check_levels(self.no_dollars, "no_dollars", ascending=True)
        return self


class GetMarketOrderbookResponse(Strict):
    """`GET /markets/{ticker}/orderbook`."""

    orderbook_fp: OrderbookFp


class MarketOrderbookFp(Strict):
    """One book of `GET /markets/orderbooks`."""

    ticker: Ticker
    orderbook_fp: OrderbookFp


class GetMarketOrderbooksResponse(Strict):
    """`GET /markets/orderbooks`."""

    orderbooks: list[MarketOrderbookFp]


def _legs_sum_to_one(yes: str, no: str, what: str) -> None:
    if _d(yes) + _d(no) != 1:
        raise ValueError(f"{what}: yes_price {yes} + no_price {no} != 1")


def _sides_agree(outcome: str, book: str, what: str) -> None:
    # "'bid' is equivalent to outcome_side 'yes'; 'ask' is equivalent to outcome_side 'no'."
    if (outcome == "yes") != (book == "bid"):
        raise ValueError(f"{what}: outcome_side {outcome!r} disagrees with book_side {book!r}")


class Trade(Strict):
    """A public trade (REST)."""

    trade_id: Str
    ticker: Ticker
    count_fp: Count
    yes_price_dollars: Price
    no_price_dollars: Price
    taker_side: OutcomeSide = OMITTED  # deprecated
    taker_outcome_side: OutcomeSide
    taker_book_side: BookSide
    created_time: Time
    is_block_trade: Bool

    @model_validator(mode="after")
    def _consistent(self) -> Trade:
        _legs_sum_to_one(self.yes_price_dollars, self.no_price_dollars, "trade")
        _sides_agree(self.taker_outcome_side, self.taker_book_side, "trade")
        return self


class GetTradesResponse(Strict):
    """`GET /markets/trades`."""

    trades: list[Trade]
    cursor: Str


class BucketLimit(Strict):
    """A token bucket."""

    refill_rate: Int
    bucket_capacity: Int


class ApiUsageLevelGrant(Strict):
    """An API usage level grant."""

    exchange_instance: Literal["event_contract", "margined"]
    level: Str
    expires_ts: Int | None = None
    source: Literal["volume", "manual"]


class GetAccountApiLimitsResponse(Strict):
    """`GET /account/limits`."""

    usage_tier: Str
    read: BucketLimit
    write: BucketLimit
    grants: list[ApiUsageLevelGrant]


# -- REST: portfolio -----------------------------------------------------------------------------


class IndexedBalance(Strict):
    """A shard's balance."""

    exchange_index: Int
    balance: Money


class GetBalanceResponse(Strict):
    """`GET /portfolio/balance`: `balance`/`portfolio_value` integer cents, `balance_dollars` exact."""

    balance: Int
    balance_dollars: SignedMoney
    portfolio_value: Int
    updated_ts: Int
    balance_breakdown: list[IndexedBalance] = OMITTED

    @model_validator(mode="after")
    def _cents_truncate_dollars(self) -> GetBalanceResponse:
        # "`balance` truncates sub-cent amounts" (changelog 2026-05-28).
        if self.balance != int(_d(self.balance_dollars) * 100):
            raise ValueError(f"balance {self.balance} (cents) is not balance_dollars {self.balance_dollars} truncated")
        # "A separate balance maintained per exchange shard" (sharding guide): one entry per shard.
        shards = [b.exchange_index for b in self.balance_breakdown or ()]
        if len(shards) != len(set(shards)):
            raise ValueError(f"balance_breakdown lists an exchange_index twice: {shards}")
        return self


class MarketPosition(Strict):
    """A MarketPosition (`position_fp` signed: + YES, − NO)."""

    ticker: Ticker
    exchange_index: Int
    total_traded_dollars: Money
    position_fp: SignedCount
    market_exposure_dollars: Money
    realized_pnl_dollars: SignedMoney
    fees_paid_dollars: Money
    last_updated_ts: Time


class EventPosition(Strict):
    """An EventPosition."""

    event_ticker: Ticker
    total_cost_dollars: Money
    total_cost_shares_fp: Count
    event_exposure_dollars: Money
    realized_pnl_dollars: SignedMoney
    fees_paid_dollars: Money


class GetPositionsResponse(Strict):
    """`GET /portfolio/positions`."""

    cursor: Str = OMITTED
    market_positions: list[MarketPosition]
    event_positions: list[EventPosition]


class Fill(Strict):
    """A Fill (REST `/portfolio/fills`)."""

    fill_id: Str
    exchange_index: Int
    trade_id: Str
    order_id: Str
    ticker: Ticker
    market_ticker: Ticker
    side: OutcomeSide = OMITTED  # deprecated
    action: Action = OMITTED  # deprecated
    outcome_side: OutcomeSide
    book_side: BookSide
    count_fp: Count
    yes_price_dollars: Price
    no_price_dollars: Price
    is_taker: Bool
    created_time: Time = OMITTED
    fee_cost: Money
    subaccount_number: Int | None = None
    ts: Int = OMITTED

    @model_validator(mode="after")
    def _consistent(self) -> Fill:
        # get-fills: trade_id is "the legacy field name, same as fill_id"; market_ticker likewise twins ticker.
        if self.fill_id != self.trade_id:
            raise ValueError(f"fill_id {self.fill_id!r} != trade_id {self.trade_id!r}")
        if self.ticker != self.market_ticker:
            raise ValueError(f"ticker {self.ticker!r} != market_ticker {self.market_ticker!r}")
        _legs_sum_to_one(self.yes_price_dollars, self.no_price_dollars, "fill")
        _sides_agree(self.outcome_side, self.book_side, "fill")
        return self


class GetFillsResponse(Strict):
    """`GET /portfolio/fills`."""

    fills: list[Fill]
    cursor: Str


class Settlement(Strict):
    """A Settlement row: `revenue` and `value` integer cents (legacy)."""

    ticker: Ticker
    exchange_index: Int
    event_ticker: Ticker
    market_result: Literal["yes", "no", "scalar"]
    yes_count_fp: Count
    yes_total_cost_dollars: Money
    no_count_fp: Count
    no_total_cost_dollars: Money
    revenue: Int
    settled_time: Time
    fee_cost: Money
    value: Int | None = None


class GetSettlementsResponse(Strict):
    """`GET /portfolio/settlements`."""

    settlements: list[Settlement]
    cursor: Str = OMITTED


class Order(Strict):
    """An Order (docs get-order; SDK 3.34 `models/order.py`)."""

    order_id: Str
    user_id: Str
    client_order_id: Str
    ticker: Ticker
    side: OutcomeSide = OMITTED  # deprecated
    action: Action = OMITTED  # deprecated
    outcome_side: OutcomeSide
    book_side: BookSide
    type: Literal["limit", "market"]
    status: OrderStatus
    yes_price_dollars: Price
    no_price_dollars: Price
    fill_count_fp: Count
    remaining_count_fp: Count
    initial_count_fp: Count
    taker_fill_cost_dollars: Money
    maker_fill_cost_dollars: Money
    taker_fees_dollars: Money
    maker_fees_dollars: Money
    expiration_time: Time | None = None
    created_time: Time | None = None
    last_update_time: Time | None = None
    self_trade_prevention_type: Stp | None = None
    order_group_id: Str | None = None
    cancel_order_on_pause: Bool = OMITTED
    subaccount_number: Int | None = None
    exchange_index: Int = OMITTED

    @model_validator(mode="after")
    def _consistent(self) -> Order:
        _legs_sum_to_one(self.yes_price_dollars, self.no_price_dollars, "order")
        _sides_agree(self.outcome_side, self.book_side, "order")
        if _d(self.fill_count_fp) + _d(self.remaining_count_fp) > _d(self.initial_count_fp):
            raise ValueError("fill_count_fp + remaining_count_fp exceeds initial_count_fp")
        if self.status == "resting" and _d(self.remaining_count_fp) == 0:
            raise ValueError("a resting order has contracts remaining")
        if self.status != "resting" and _d(self.remaining_count_fp) != 0:
            raise ValueError(f"a {self.status} order has nothing remaining")
        return self


class GetOrdersResponse(Strict):
    """`GET /portfolio/orders`."""

    orders: list[Order]
    cursor: Str


class GetOrderResponse(Strict):
    """`GET /portfolio/orders/{order_id}`."""

    order: Order


class GetOrderQueuePositionResponse(Strict):
    """`GET /portfolio/orders/{order_id}/queue_position` (0-indexed contracts ahead)."""

    queue_position_fp: Count


class OrderQueuePosition(Strict):
    """One order's queue position."""

    order_id: Str
    market_ticker: Ticker
    queue_position_fp: Count


class GetOrderQueuePositionsResponse(Strict):
    """`GET /portfolio/orders/queue_positions`."""

    queue_positions: list[OrderQueuePosition]


class ErrorBody(Strict):
    """`ErrorResponse`: every key optional in the spec, all strings."""

    code: Str = OMITTED
    message: Str = OMITTED
    details: Str = OMITTED


class CreateOrderV2Response(Strict):
    """`POST /portfolio/events/orders` (201)."""

    order_id: Str
    client_order_id: Str | None = None
    fill_count: Count
    remaining_count: Count
    average_fill_price: Money | None = None
    average_fee_paid: Money | None = None
    ts_ms: Int

    @model_validator(mode="after")
    def _averages_only_when_filled(self) -> CreateOrderV2Response:
        if (_d(self.fill_count) > 0) != (self.average_fill_price is not None):
            raise ValueError("average_fill_price is present exactly when something filled")
        return self


class CancelOrderV2Response(Strict):
    """`DELETE /portfolio/events/orders/{order_id}`."""

    order_id: Str
    client_order_id: Str | None = None
    reduced_by: Count
    ts_ms: Int


class AmendOrderV2Response(Strict):
    """`POST /portfolio/events/orders/{order_id}/amend`."""

    order_id: Str
    client_order_id: Str | None = None
    remaining_count: Count | None = None
    fill_count: Count | None = None
    average_fill_price: Money | None = None
    average_fee_paid: Money | None = None
    ts_ms: Int


class DecreaseOrderV2Response(Strict):
    """`POST /portfolio/events/orders/{order_id}/decrease`."""

    order_id: Str
    client_order_id: Str | None = None
    remaining_count: Count
    ts_ms: Int


class BatchCreateItem(Strict):
    """One answer of a batched create: every key optional; `error` set on failure."""

    order_id: Str | None = None
    client_order_id: Str | None = None
    fill_count: Count | None = None
    remaining_count: Count | None = None
    average_fill_price: Money | None = None
    average_fee_paid: Money | None = None
    ts_ms: Int | None = None
    error: ErrorBody | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> BatchCreateItem:
        if self.error is None and (self.order_id is None or self.fill_count is None or self.remaining_count is None):
            raise ValueError("a successful batch item has order_id, fill_count and remaining_count")
        return self


class BatchCreateOrdersV2Response(Strict):
    """`POST /portfolio/events/orders/batched` (201)."""

    orders: list[BatchCreateItem]


class BatchCancelItem(Strict):
    """One answer of a batched cancel."""

    order_id: Str
    client_order_id: Str | None = None
    reduced_by: Count
    ts_ms: Int | None = None
    error: ErrorBody | None = None


class BatchCancelOrdersV2Response(Strict):
    """`DELETE /portfolio/events/orders/batched`."""

    orders: list[BatchCancelItem]


class ErrorEnvelope(Strict):
    """A REST error: `{"error": {"code", "message", "details"}}` (kalshi_api.md §3.0)."""

    error: ErrorBody

    @model_validator(mode="after")
    def _has_code(self) -> ErrorEnvelope:
        if not self.error.code:
            raise ValueError("a REST error carries error.code (clients branch on it)")
        return self


class TooManyRequests(Strict):
    """The 429 body is a bare string error (kalshi_api.md §7.1)."""

    error: Literal["too many requests"]


# -- WebSocket -----------------------------------------------------------------------------------

Sid = Annotated[StrictInt, Field(ge=1)]
Seq = Annotated[StrictInt, Field(ge=1)]
CmdId = Annotated[StrictInt, Field(ge=0)]


class SubscribedMsg(Strict):
    """`subscribed.msg`."""

    channel: Str
    sid: Sid


class Subscribed(Strict):
    """`{"id", "type": "subscribed", "msg": {channel, sid}}`."""

    id: CmdId = OMITTED
    type: Literal["subscribed"]
    msg: SubscribedMsg


class Unsubscribed(Strict):
    """`{"id", "sid", "seq", "type": "unsubscribed"}`."""

    id: CmdId = OMITTED
    sid: Sid
    seq: Seq
    type: Literal["unsubscribed"]


class OkUpdateMsg(Strict):
    """The full ticker list after an update."""

    market_tickers: list[Ticker] = OMITTED
    market_ids: list[Uuid] = OMITTED


class OkUpdate(Strict):
    """`ok` reply to update_subscription."""

    id: CmdId = OMITTED
    sid: Sid = OMITTED
    seq: Seq = OMITTED
    type: Literal["ok"]
    msg: OkUpdateMsg = OMITTED


class OkList(Strict):
    """`ok` reply to list_subscriptions: `msg` is a list of {channel, sid}."""

    id: CmdId
    type: Literal["ok"]
    msg: list[SubscribedMsg]


class WsErrorMsg(Strict):
    """`error.msg`: a §4.7 code and text."""

    code: Annotated[StrictInt, Field(ge=1, le=28)]
    msg: Str
    market_id: Str = OMITTED
    market_ticker: Str = OMITTED


class WsError(Strict):
    """`{"id"?, "sid"?, "type": "error", "msg": {code, msg}}`."""

    id: CmdId = OMITTED
    sid: Sid = OMITTED
    type: Literal["error"]
    msg: WsErrorMsg


class SnapshotMsg(Strict):
    """`orderbook_snapshot.msg`: an empty side's key is absent, so a present side is non-empty."""

    market_ticker: Ticker
    market_id: Uuid
    yes_dollars_fp: Annotated[list[Level], Field(min_length=1)] = OMITTED
    no_dollars_fp: Annotated[list[Level], Field(min_length=1)] = OMITTED

    @model_validator(mode="after")
    def _levels(self) -> SnapshotMsg:
        # WS level order is not documented (REST is ascending): check the values only.
        _check_levels(self.yes_dollars_fp or [], "yes_dollars_fp", ascending=False)
        _check_levels(self.no_dollars_fp or [], "no_dollars_fp", ascending=False)
        return self


class OrderbookSnapshot(Strict):
    """`orderbook_snapshot` (seq required)."""

    type: Literal["orderbook_snapshot"]
    sid: Sid
    seq: Seq
    msg: SnapshotMsg


class DeltaMsg(Strict):
    """`orderbook_delta.msg`: a signed size change at one level."""

    market_ticker: Ticker
    market_id: Uuid
    price_dollars: WsPrice
    delta_fp: SignedCount
    side: OutcomeSide
    client_order_id: Str = OMITTED
    subaccount: Int = OMITTED
    ts: Time = OMITTED  # deprecated
    ts_ms: Int = OMITTED

    @model_validator(mode="after")
    def _nonzero(self) -> DeltaMsg:
        if _d(self.delta_fp) == 0:
            raise ValueError("an orderbook_delta changes the size")
        return self


class OrderbookDelta(Strict):
    """`orderbook_delta` (seq required)."""

    type: Literal["orderbook_delta"]
    sid: Sid
    seq: Seq
    msg: DeltaMsg


class TickerMsg(Strict):
    """`ticker.msg`: every key required by the AsyncAPI."""

    market_ticker: Ticker
    market_id: Uuid
    price_dollars: WsPrice
    yes_bid_dollars: WsPrice
    yes_ask_dollars: WsPrice
    yes_bid_size_fp: Count
    yes_ask_size_fp: Count
    last_trade_size_fp: Count
    volume_fp: Count
    open_interest_fp: Count
    dollar_volume: Annotated[StrictInt, Field(ge=0)]
    dollar_open_interest: Annotated[StrictInt, Field(ge=0)]
    ts: Int  # deprecated, Unix seconds
    ts_ms: Int
    time: Time  # deprecated


class TickerFrame(Strict):
    """`ticker` (no seq)."""

    type: Literal["ticker"]
    sid: Sid
    msg: TickerMsg


class TradeMsg(Strict):
    """`trade.msg`."""

    trade_id: Uuid
    market_ticker: Ticker
    yes_price_dollars: WsPrice
    no_price_dollars: WsPrice
    count_fp: Count
    taker_side: OutcomeSide  # deprecated but still required
    taker_outcome_side: OutcomeSide
    taker_book_side: BookSide
    is_block_trade: Bool
    ts: Int
    ts_ms: Int

    @model_validator(mode="after")
    def _consistent(self) -> TradeMsg:
        _legs_sum_to_one(self.yes_price_dollars, self.no_price_dollars, "trade msg")
        _sides_agree(self.taker_outcome_side, self.taker_book_side, "trade msg")
        return self


class TradeFrame(Strict):
    """`trade` (no seq)."""

    type: Literal["trade"]
    sid: Sid
    msg: TradeMsg


class FillMsg(Strict):
    """`fill.msg` (private); unlike REST fills it still carries `client_order_id`."""

    trade_id: Uuid
    order_id: Uuid
    market_ticker: Ticker
    exchange_index: Int
    is_taker: Bool
    side: OutcomeSide  # deprecated but required
    yes_price_dollars: WsPrice
    count_fp: Count
    fee_cost: Money
    action: Action  # deprecated but required
    outcome_side: OutcomeSide
    book_side: BookSide
    ts: Int
    ts_ms: Int
    client_order_id: Str = OMITTED
    post_position_fp: SignedCount
    purchased_side: OutcomeSide  # deprecated but required
    subaccount: Int = OMITTED

    @model_validator(mode="after")
    def _consistent(self) -> FillMsg:
        _sides_agree(self.outcome_side, self.book_side, "fill msg")
        return self


class FillFrame(Strict):
    """`fill` (no seq)."""

    type: Literal["fill"]
    sid: Sid
    msg: FillMsg


class MarketPositionMsg(Strict):
    """`market_position.msg` (private)."""

    user_id: Str
    market_ticker: Ticker
    position_fp: SignedCount
    position_cost_dollars: Money
    realized_pnl_dollars: SignedMoney
    fees_paid_dollars: Money
    position_fee_cost_dollars: Money
    volume_fp: Count
    subaccount: Int = OMITTED


class MarketPositionFrame(Strict):
    """`market_position` (the type is singular)."""

    type: Literal["market_position"]
    sid: Sid
    msg: MarketPositionMsg


class UserOrderMsg(Strict):
    """`user_order.msg` (private): the order's full state."""

    order_id: Uuid
    user_id: Uuid
    ticker: Ticker
    status: OrderStatus
    side: OutcomeSide  # deprecated but required
    is_yes: Bool  # deprecated but required
    outcome_side: OutcomeSide
    book_side: BookSide
    yes_price_dollars: WsPrice
    fill_count_fp: Count
    remaining_count_fp: Count
    initial_count_fp: Count
    taker_fill_cost_dollars: Money
    maker_fill_cost_dollars: Money
    taker_fees_dollars: Money
    maker_fees_dollars: Money
    client_order_id: Str
    order_group_id: Str = OMITTED
    self_trade_prevention_type: Stp = OMITTED
    created_time: Time  # deprecated but required
    created_ts_ms: Int
    last_update_time: Time = OMITTED
    last_updated_ts_ms: Int = OMITTED
    expiration_time: Time = OMITTED
    expiration_ts_ms: Int = OMITTED
    subaccount_number: Int = OMITTED

    @model_validator(mode="after")
    def _consistent(self) -> UserOrderMsg:
        _sides_agree(self.outcome_side, self.book_side, "user_order")
        if self.is_yes != (self.outcome_side == "yes"):
            raise ValueError("is_yes disagrees with outcome_side")
        return self


class UserOrderFrame(Strict):
    """`user_order` (no seq)."""

    type: Literal["user_order"]
    sid: Sid
    msg: UserOrderMsg


class LifecycleMetadata(Strict):
    """`additional_metadata` of a `created` lifecycle message."""

    name: Str = OMITTED
    title: Str = OMITTED
    yes_sub_title: Str = OMITTED
    no_sub_title: Str = OMITTED
    rules_primary: Str = OMITTED
    rules_secondary: Str = OMITTED
    can_close_early: Bool = OMITTED
    event_ticker: Ticker = OMITTED
    expected_expiration_ts: Int = OMITTED
    strike_type: StrikeType = OMITTED
    floor_strike: Number = OMITTED
    cap_strike: Number = OMITTED
    custom_strike: dict[str, Any] = OMITTED


# The keys each lifecycle event type carries (kalshi_api.md §4.4 "conditional keys").
_LIFECYCLE_NEEDS: dict[str, tuple[str, ...]] = {
    "created": ("open_ts", "close_ts", "additional_metadata"),
    "close_date_updated": ("close_ts",),
    "determined": ("result", "determination_ts", "settlement_value"),
    "settled": ("settled_ts",),
    "deactivated": ("is_deactivated",),
    "activated": ("is_deactivated",),
    "price_level_structure_updated": ("price_level_structure", "price_ranges"),
}


class LifecycleMsg(Strict):
    """`market_lifecycle_v2.msg`: which keys appear depends on `event_type` (kalshi_api.md §4.4)."""

    event_type: Literal["created", "deactivated", "activated", "close_date_updated", "determined", "settled",
                        "price_level_structure_updated", "metadata_updated"]
    market_ticker: Ticker
    exchange_index: Int = OMITTED
    open_ts: Int = OMITTED
    close_ts: Int = OMITTED
    result: Str = OMITTED
    determination_ts: Int = OMITTED
    settlement_value: Price = OMITTED
    settled_ts: Int = OMITTED
    is_deactivated: Bool = OMITTED
    price_level_structure: PriceLevelStructure = OMITTED
    price_ranges: list[PriceRange] = OMITTED
    strike_type: Str = OMITTED
    floor_strike: Number = OMITTED
    cap_strike: Number = OMITTED
    custom_strike: dict[str, Any] = OMITTED
    yes_sub_title: Str = OMITTED
    additional_metadata: LifecycleMetadata = OMITTED

    @model_validator(mode="after")
    def _conditional_keys(self) -> LifecycleMsg:
        missing = [k for k in _LIFECYCLE_NEEDS.get(self.event_type, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.event_type!r} lifecycle message carries {missing}")
        if self.event_type in ("deactivated", "activated") and self.is_deactivated != (
                self.event_type == "deactivated"):
            raise ValueError("is_deactivated disagrees with event_type")
        return self


class LifecycleFrame(Strict):
    """`market_lifecycle_v2` (no seq)."""

    type: Literal["market_lifecycle_v2"]
    sid: Sid
    msg: LifecycleMsg


class EventLifecycleMsg(Strict):
    """`event_lifecycle.msg`."""

    event_ticker: Ticker
    exchange_index: Int
    title: Str
    subtitle: Str
    collateral_return_type: CollateralReturnType
    series_ticker: Ticker
    strike_date: Int = OMITTED
    strike_period: Str = OMITTED


class EventLifecycleFrame(Strict):
    """`event_lifecycle` (on the market_lifecycle_v2 channel)."""

    type: Literal["event_lifecycle"]
    sid: Sid
    msg: EventLifecycleMsg


class EventFeeUpdateMsg(Strict):
    """`event_fee_update.msg`: both overrides null when cleared."""

    event_ticker: Ticker
    fee_type_override: FeeType | None
    fee_multiplier_override: Number | None


class EventFeeUpdateFrame(Strict):
    """`event_fee_update`."""

    type: Literal["event_fee_update"]
    sid: Sid
    msg: EventFeeUpdateMsg


# -- dispatch ------------------------------------------------------------------------------------

# Route (method + aiohttp canonical path under /trade-api/v2) -> model of its 2xx body.
REST: dict[str, type[Strict] | None] = {
    "GET /exchange/status": ExchangeStatus,
    "GET /exchange/schedule": GetExchangeScheduleResponse,
    "GET /series/fee_changes": GetSeriesFeeChangesResponse,
    "GET /series": GetSeriesListResponse,
    "GET /series/{ticker}": GetSeriesResponse,
    "GET /events": GetEventsResponse,
    "GET /events/{ticker}": GetEventResponse,
    "GET /markets": GetMarketsResponse,
    "GET /markets/trades": GetTradesResponse,
    "GET /markets/orderbooks": GetMarketOrderbooksResponse,
    "GET /markets/{ticker}": GetMarketResponse,
    "GET /markets/{ticker}/orderbook": GetMarketOrderbookResponse,
    "GET /account/limits": GetAccountApiLimitsResponse,
    "GET /portfolio/balance": GetBalanceResponse,
    "GET /portfolio/positions": GetPositionsResponse,
    "GET /portfolio/fills": GetFillsResponse,
    "GET /portfolio/settlements": GetSettlementsResponse,
    "POST /portfolio/events/orders/batched": BatchCreateOrdersV2Response,
    "DELETE /portfolio/events/orders/batched": BatchCancelOrdersV2Response,
    "POST /portfolio/events/orders": CreateOrderV2Response,
    "DELETE /portfolio/events/orders": None,  # 204, no body
    "DELETE /portfolio/events/orders/{order_id}": CancelOrderV2Response,
    "POST /portfolio/events/orders/{order_id}/amend": AmendOrderV2Response,
    "POST /portfolio/events/orders/{order_id}/decrease": DecreaseOrderV2Response,
    "GET /portfolio/orders": GetOrdersResponse,
    "GET /portfolio/orders/queue_positions": GetOrderQueuePositionsResponse,
    "GET /portfolio/orders/{order_id}": GetOrderResponse,
    "GET /portfolio/orders/{order_id}/queue_position": GetOrderQueuePositionResponse,
}

WS: dict[str, type[Strict]] = {
    "subscribed": Subscribed,
    "unsubscribed": Unsubscribed,
    "error": WsError,
    "orderbook_snapshot": OrderbookSnapshot,
    "orderbook_delta": OrderbookDelta,
    "ticker": TickerFrame,
    "trade": TradeFrame,
    "fill": FillFrame,
    "market_position": MarketPositionFrame,
    "user_order": UserOrderFrame,
    "market_lifecycle_v2": LifecycleFrame,
    "event_lifecycle": EventLifecycleFrame,
    "event_fee_update": EventFeeUpdateFrame,
}


def validate_rest(route: str, status: int, body: Any) -> Strict | None:
    """Validate one REST answer of `route` ("GET /markets/{ticker}"): 2xx by its model, else an error body."""
    if status == 429:
        return TooManyRequests.model_validate(body)
    if status >= 400:
        return ErrorEnvelope.model_validate(body)
    model = REST[route]
    if model is None:
        if body not in (None, b"", ""):
            raise ValueError(f"{route} answers without a body, got {body!r}")
        return None
    return model.model_validate(body)


class Envelope(Strict):
    """Every frame: a known top-level `type` (a common bug is reading the type from `msg`)."""

    type: Literal["ok", "subscribed", "unsubscribed", "error", "orderbook_snapshot", "orderbook_delta", "ticker",
                  "trade", "fill", "market_position", "user_order", "market_lifecycle_v2", "event_lifecycle",
                  "event_fee_update"]


def validate_ws(frame: dict[str, Any]) -> Strict:
    """Validate one WebSocket frame by its `type` (an `ok` is a list reply when `msg` is a list)."""
    kind = Envelope.model_validate(frame).type
    if kind == "ok":
        return (OkList if isinstance(frame.get("msg"), list) else OkUpdate).model_validate(frame)
    return WS[kind].model_validate(frame)


def required_fields(model: type[BaseModel]) -> list[str]:
    """The keys `model` requires to be present."""
    return [name for name, f in model.model_fields.items() if f.is_required()]
