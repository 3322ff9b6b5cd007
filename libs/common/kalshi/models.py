"""Typed Kalshi REST objects, converted to integer money at the boundary.

Prices become $0.0001 ticks (from `*_dollars` strings), counts become 1/100 contract (from `*_fp`
strings). Unknown extra fields are kept (`extra="allow"`), so an API addition never breaks us;
a missing or malformed required field raises, and the client turns that into `MalformedResponse`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from libs.common.money import ONE_DOLLAR, MoneyError, PriceGrid, parse_count, parse_dollars


def _dollars(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:  # unsigned, as parse_dollars is for strings: a negative int is not ticks of a price
            raise ValueError(f"negative amount {v}")
        return v
    return parse_dollars(v)


def _signed_dollars(v: Any) -> int:
    # Portfolio amounts may carry up to 6 decimals; we keep $0.0001 and round toward -inf explicitly.
    return v if isinstance(v, int) and not isinstance(v, bool) else parse_dollars(v, signed=True, allow_round="down")


def _count(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:  # unsigned, as parse_count is for strings
            raise ValueError(f"negative count {v}")
        return v
    return parse_count(v)


def _signed_count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else parse_count(v, signed=True)


def _cents(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected integer cents, got {v!r}")
    return v * 100


MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds


def from_ms(ms: Any) -> datetime:
    """Unix milliseconds as a UTC time; ValueError for a number no datetime can hold (garbage on the wire)."""
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= MAX_TS_MS:
        raise ValueError(f"{ms!r} is not a time in Unix milliseconds")
    return datetime.fromtimestamp(ms / 1000, UTC)


def _epoch_or_rfc3339(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(v, UTC)
    return v


def book_price(v: Any) -> int:
    """A price in a book, a trade, an order or a fill: strictly between $0 and $1 ("5.0000" is garbage)."""
    p = _dollars(v)
    if not 0 < p < ONE_DOLLAR:
        raise MoneyError(f"price {v!r} is outside ($0, $1)")
    return p


Dollars = Annotated[int, BeforeValidator(_dollars)]
Price = Annotated[int, BeforeValidator(book_price)]
SignedDollars = Annotated[int, BeforeValidator(_signed_dollars)]
Count = Annotated[int, BeforeValidator(_count)]
SignedCount = Annotated[int, BeforeValidator(_signed_count)]
Cents = Annotated[int, BeforeValidator(_cents)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_epoch_or_rfc3339)]


class KalshiModel(BaseModel):
    """Base: tolerant of new fields, populated from the API's field names."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class ExchangeStatus(KalshiModel):
    """`GET /exchange/status`."""

    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: datetime | None = None


class Series(KalshiModel):
    """A series: fee terms and settlement sources."""

    ticker: str
    title: str = ""
    category: str = ""
    frequency: str = ""
    fee_type: str
    fee_multiplier: Decimal
    settlement_sources: list[dict[str, Any]] = Field(default_factory=list)
    contract_url: str = ""
    contract_terms_url: str = ""
    tags: list[str] | None = None
    exchange_index: int | None = None

    @field_validator("fee_multiplier", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        return Decimal(str(v)) if isinstance(v, float) else v


class Market(KalshiModel):
    """A market with prices as ticks and its tick grid."""

    ticker: str
    event_ticker: str
    status: str
    market_type: str = "binary"
    title: str = ""
    yes_sub_title: str = ""
    no_sub_title: str = ""
    open_time: AwareDatetime
    close_time: AwareDatetime
    expected_expiration_time: AwareDatetime | None = None
    latest_expiration_time: AwareDatetime | None = None
    yes_bid: Dollars = Field(alias="yes_bid_dollars")
    yes_ask: Dollars = Field(alias="yes_ask_dollars")
    no_bid: Dollars | None = Field(default=None, alias="no_bid_dollars")
    no_ask: Dollars | None = Field(default=None, alias="no_ask_dollars")
    last_price: Dollars | None = Field(default=None, alias="last_price_dollars")
    volume: Count | None = Field(default=None, alias="volume_fp")
    open_interest: Count | None = Field(default=None, alias="open_interest_fp")
    result: str = ""
    strike_type: str | None = None
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None
    price_level_structure: str = ""
    price_ranges: list[dict[str, str]]
    rules_primary: str = ""
    exchange_index: int | None = None
    can_close_early: bool = False
    expiration_value: str = ""
    # Set once the market is determined / paid (null before).
    settlement_value: Dollars | None = Field(default=None, alias="settlement_value_dollars")
    settlement_ts: AwareDatetime | None = None

    @field_validator("floor_strike", "cap_strike", mode="before")
    @classmethod
    def _strike(cls, v: Any) -> Any:
        return Decimal(str(v)) if isinstance(v, float) else v

    @property
    def grid(self) -> PriceGrid:
        """The market's tick grid, from `price_ranges` (never assume whole cents)."""
        return PriceGrid.from_api(self.price_ranges)


class Event(KalshiModel):
    """An event and, when requested, its markets."""

    event_ticker: str
    series_ticker: str
    title: str = ""
    sub_title: str = ""
    mutually_exclusive: bool = False
    strike_date: AwareDatetime | None = None
    markets: list[Market] = Field(default_factory=list)


Level = tuple[int, int]


def _levels(v: Any) -> list[Level]:
    if v is None:
        return []
    try:
        return [(book_price(p), parse_count(c)) for p, c in v]
    except TypeError as e:  # pydantic turns ValueError into a ValidationError, a TypeError it lets through
        raise ValueError(f"levels must be [price, count] pairs: {e}") from None


class Orderbook(KalshiModel):
    """Bids on both sides, ascending by price (best last); NO bids at NO prices."""

    yes: Annotated[list[Level], BeforeValidator(_levels)] = Field(default_factory=list, alias="yes_dollars")
    no: Annotated[list[Level], BeforeValidator(_levels)] = Field(default_factory=list, alias="no_dollars")


class PublicTrade(KalshiModel):
    """A public trade."""

    trade_id: str
    ticker: str
    yes_price: Price = Field(alias="yes_price_dollars")
    no_price: Price = Field(alias="no_price_dollars")
    count: Count = Field(alias="count_fp", gt=0)
    taker_outcome_side: Literal["yes", "no"] | None = None
    created_time: AwareDatetime


class ShardBalance(KalshiModel):
    """One exchange shard's balance (`balance_breakdown[]`): collateral is kept per shard."""

    exchange_index: int
    balance: SignedDollars


class Balance(KalshiModel):
    """Cash balance in ticks (`balance_dollars` is exact; the legacy `balance` is whole cents)."""

    balance_cents: Cents = Field(alias="balance")
    balance_dollars: SignedDollars | None = None
    portfolio_value_cents: Cents | None = Field(default=None, alias="portfolio_value")
    updated_ts: int | None = None
    breakdown: list[ShardBalance] = Field(default_factory=list, alias="balance_breakdown")

    @property
    def balance(self) -> int:
        """Balance in $0.0001 (exact when the API sends `balance_dollars`)."""
        return self.balance_dollars if self.balance_dollars is not None else self.balance_cents

    @property
    def by_shard(self) -> dict[int, int]:
        """Balance per exchange index, in $0.0001 (empty when the API gives no breakdown)."""
        return {b.exchange_index: b.balance for b in self.breakdown}

    @property
    def total(self) -> int:
        """The account's balance over every shard: the breakdown's sum when there is one. Whether `balance`
        without an `exchange_index` means every shard or shard 0 is not documented; the sum is right either way."""
        return sum(b.balance for b in self.breakdown) if self.breakdown else self.balance


class MarketPosition(KalshiModel):
    """A position in one market; `position` > 0 is YES, < 0 is NO."""

    ticker: str
    position: SignedCount = Field(alias="position_fp")
    market_exposure: SignedDollars = Field(alias="market_exposure_dollars")
    realized_pnl: SignedDollars = Field(alias="realized_pnl_dollars")
    fees_paid: SignedDollars = Field(alias="fees_paid_dollars")
    total_traded: SignedDollars = Field(default=0, alias="total_traded_dollars")
    exchange_index: int | None = None


class Fill(KalshiModel):
    """One of our fills."""

    fill_id: str
    trade_id: str | None = None
    order_id: str
    ticker: str
    outcome_side: Literal["yes", "no"]
    book_side: Literal["bid", "ask"]
    count: Count = Field(alias="count_fp", gt=0)  # a fill of no contracts would divide by zero in the ledger
    yes_price: Price = Field(alias="yes_price_dollars")
    no_price: Dollars | None = Field(default=None, alias="no_price_dollars")
    is_taker: bool
    fee: SignedDollars = Field(default=0, alias="fee_cost")
    created_time: AwareDatetime


class SettlementRow(KalshiModel):
    """A settled position."""

    ticker: str
    event_ticker: str | None = None
    market_result: str
    yes_count: Count = Field(alias="yes_count_fp")
    no_count: Count = Field(alias="no_count_fp")
    yes_total_cost: SignedDollars = Field(alias="yes_total_cost_dollars")
    no_total_cost: SignedDollars = Field(alias="no_total_cost_dollars")
    revenue: Cents
    fee_cost: SignedDollars = Field(default=0)
    settled_time: AwareDatetime


class OrderTotals(KalshiModel):
    """An order's identity and totals: what REST orders and WS `user_order` messages share."""

    order_id: str
    client_order_id: str | None = None
    ticker: str
    outcome_side: Literal["yes", "no"]
    book_side: Literal["bid", "ask"]
    status: Literal["resting", "canceled", "executed"]
    yes_price: Price = Field(alias="yes_price_dollars")
    fill_count: Count = Field(alias="fill_count_fp")
    remaining_count: Count = Field(alias="remaining_count_fp")
    initial_count: Count | None = Field(default=None, alias="initial_count_fp")
    taker_fees: SignedDollars = Field(default=0, alias="taker_fees_dollars")
    maker_fees: SignedDollars = Field(default=0, alias="maker_fees_dollars")
    taker_fill_cost: SignedDollars = Field(default=0, alias="taker_fill_cost_dollars")
    maker_fill_cost: SignedDollars = Field(default=0, alias="maker_fill_cost_dollars")


class Order(OrderTotals):
    """An order as `GET /portfolio/orders` shows it."""

    created_time: AwareDatetime | None = None
    last_update_time: AwareDatetime | None = None
    expiration_time: AwareDatetime | None = None
    exchange_index: int | None = None  # the shard it lives on


class CreateOrderResult(KalshiModel):
    """The answer to a V2 create; `already_existed` when Kalshi said the client_order_id was taken."""

    order_id: str
    client_order_id: str | None = None
    fill_count: Count
    remaining_count: Count
    average_fill_price: Decimal | None = None
    average_fee_paid: Decimal | None = None
    ts_ms: int | None = None
    already_existed: bool = False


class CancelResult(KalshiModel):
    """The answer to a V2 cancel."""

    order_id: str
    client_order_id: str | None = None
    reduced_by: Count
    ts_ms: int | None = None


class AmendResult(KalshiModel):
    """The answer to a V2 amend."""

    order_id: str
    client_order_id: str | None = None
    fill_count: Count | None = None
    remaining_count: Count
    ts_ms: int | None = None


class DecreaseResult(KalshiModel):
    """The answer to a V2 decrease."""

    order_id: str
    client_order_id: str | None = None
    remaining_count: Count
    ts_ms: int | None = None


class QueuePosition(KalshiModel):
    """Contracts ahead of an order at its price (0 = first in the queue)."""

    order_id: str
    market_ticker: str | None = None
    queue_position: Count = Field(alias="queue_position_fp")


class BatchItemError(KalshiModel):
    """Per-order error inside a batch answer."""

    code: str = ""
    message: str = ""
    details: str = ""


class BatchCreateItem(KalshiModel):
    """One order of a batched create: a result or an error."""

    order_id: str | None = None
    client_order_id: str | None = None
    fill_count: Count | None = None
    remaining_count: Count | None = None
    error: BatchItemError | None = None


class BatchCancelItem(KalshiModel):
    """One order of a batched cancel."""

    order_id: str
    client_order_id: str | None = None
    reduced_by: Count = 0
    error: BatchItemError | None = None


# -- private WebSocket channels (kalshi_api.md §4) ----------------------------------------------


class WsFill(KalshiModel):
    """A `fill` message: one execution of one of our orders (still carries `client_order_id`)."""

    trade_id: str
    order_id: str
    ticker: str = Field(alias="market_ticker")
    is_taker: bool
    outcome_side: Literal["yes", "no"]
    book_side: Literal["bid", "ask"]
    yes_price: Price = Field(alias="yes_price_dollars")
    count: Count = Field(alias="count_fp", gt=0)
    fee: SignedDollars = Field(default=0, alias="fee_cost")
    client_order_id: str | None = None
    post_position: SignedCount | None = Field(default=None, alias="post_position_fp")
    ts_ms: int = Field(ge=0, le=MAX_TS_MS)  # bounded: `created_time` must be a datetime

    @property
    def created_time(self) -> datetime:
        """When the fill happened (UTC)."""
        return from_ms(self.ts_ms)


class WsUserOrder(OrderTotals):
    """A `user_order` message: the full current state of one of our orders after any change."""

    last_updated_ts_ms: int | None = Field(default=None, ge=0, le=MAX_TS_MS)  # the executor makes it a datetime
