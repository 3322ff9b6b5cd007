"""Tables owned by `services/executor`: the order/fill ledger, positions, balances and cap reservations.

Every row carries `mode`, so sim, paper, demo and live books never mix (DESIGN §2). Prices are YES-leg
prices in $0.0001 ticks as Kalshi V2 quotes them (`book_side` bid = buy YES, ask = sell YES ≡ buy NO).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Identity, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db.base import Base, created_at_column, in_check, mode_check, mode_column, updated_at_column
from libs.common.strategies import STRATEGIES

BOOK_SIDES: tuple[str, ...] = ("bid", "ask")
OUTCOME_SIDES: tuple[str, ...] = ("yes", "no")
ORDER_STATUSES: tuple[str, ...] = (
    "intent",  # recorded before sending; the client_order_id is fixed here
    "pending",  # sent, no answer yet (a crash here is resolved by reconciliation)
    "resting",  # on the book
    "executed",  # fully filled
    "canceled",  # canceled by us, the exchange or expiry (possibly partly filled)
    "rejected",  # refused by the exchange; `reason` holds its error code
    "blocked",  # never sent: a local decision not to trade; `reason` says why (cap_event, paused ...)
)
OPEN_ORDER_STATUSES: tuple[str, ...] = ("intent", "pending", "resting")
RESERVATION_SCOPES: tuple[str, ...] = ("order", "market", "event", "family", "portfolio", "daily_loss")
RESERVATION_STATUSES: tuple[str, ...] = ("reserved", "released", "consumed")


def strategy_column() -> Mapped[str]:
    """`strategy` of an order or position (libs/common/strategies.py); pair it with `strategy_check()`."""
    return mapped_column(server_default=text("'directional'"))


def strategy_check() -> CheckConstraint:
    """`CHECK (strategy IN STRATEGIES)`, named `ck_<table>_strategy`."""
    return in_check("strategy", STRATEGIES, "strategy")


class Order(Base):
    """An order from intent to final state; owner executor, keys (`mode`, `client_order_id`), (`mode`, `order_id`)."""

    __tablename__ = "orders"
    __table_args__ = (
        mode_check(),
        in_check("status", ORDER_STATUSES, "status"),
        in_check("book_side", BOOK_SIDES, "book_side"),
        in_check("outcome_side", OUTCOME_SIDES, "outcome_side"),
        strategy_check(),
        UniqueConstraint("mode", "client_order_id"),
        UniqueConstraint("mode", "order_id"),
        Index("ix_orders_mode_status", "mode", "status"),
        Index("ix_orders_mode_ticker", "mode", "ticker"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    # Derived from the intent (signal id + leg + attempt), so a retried intent maps to the same order (§6).
    client_order_id: Mapped[str]
    order_id: Mapped[str | None]  # exchange id, known once accepted
    signal_id: Mapped[str | None] = mapped_column(index=True)
    leg: Mapped[str | None]
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    family: Mapped[str | None]
    # Whose capital the order uses (migration 0007): capped per strategy, and a market is one strategy's.
    strategy: Mapped[str] = strategy_column()
    series_ticker: Mapped[str | None]
    event_ticker: Mapped[str]
    ticker: Mapped[str]
    book_side: Mapped[str]
    outcome_side: Mapped[str]  # the leg we end up exposed to
    yes_price: Mapped[int]  # limit, YES leg, on the market's tick grid
    initial_count: Mapped[int]
    fill_count: Mapped[int] = mapped_column(server_default=text("0"))
    # Of fill_count, what the ledger's position already holds (the sum of this order's `fills` rows; set by
    # a trigger, migration 0006): the rest still counts against the caps with the order (risk.py).
    booked_count: Mapped[int] = mapped_column(server_default=text("0"))
    remaining_count: Mapped[int]
    avg_fill_price: Mapped[int | None]
    fees_ticks: Mapped[int] = mapped_column(server_default=text("0"))
    time_in_force: Mapped[str]  # good_till_canceled | immediate_or_cancel | fill_or_kill
    post_only: Mapped[bool] = mapped_column(server_default=text("false"))
    reduce_only: Mapped[bool] = mapped_column(server_default=text("false"))
    expiration_time: Mapped[datetime | None]
    self_trade_prevention_type: Mapped[str | None]
    order_group_id: Mapped[str | None]
    subaccount: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    exchange_index: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str]
    reason: Mapped[str | None]
    sent_at: Mapped[datetime | None]
    exchange_updated_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]  # last exchange payload for this order
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class OrderEvent(Base):
    """One order lifecycle event (intent, accepted, resting, amended, canceled ...); owner executor.

    Key (`mode`, `event_id`); the row is also the outbox entry its `ord.*` message is published from.
    """

    __tablename__ = "order_events"
    __table_args__ = (
        mode_check(),
        UniqueConstraint("mode", "event_id"),
        Index("ix_order_events_mode_client_order_id", "mode", "client_order_id"),
        Index("ix_order_events_unpublished", "id",
              postgresql_where=text("published_at IS NULL AND message IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    event_id: Mapped[str]  # bus event id (Nats-Msg-Id)
    mode: Mapped[str] = mode_column()
    client_order_id: Mapped[str]
    order_id: Mapped[str | None]
    ticker: Mapped[str]
    kind: Mapped[str]  # intent accepted resting amended decreased filled canceled rejected blocked ...
    yes_price: Mapped[int | None]
    count: Mapped[int | None]  # count this event concerns (e.g. reduced_by, amended size)
    fill_count: Mapped[int | None]  # order totals after the event
    remaining_count: Mapped[int | None]
    reason: Mapped[str | None]
    ts_event: Mapped[datetime]
    payload: Mapped[dict[str, Any] | None]  # raw exchange or paper-broker payload
    # The outbox (DESIGN §6): the row is the event; a drain publishes `message` on `subject` (logical,
    # unscoped `ord.<event>.<ticker>`) with Nats-Msg-Id = event_id and stamps `published_at` once acked.
    subject: Mapped[str | None]
    message: Mapped[dict[str, Any] | None]
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()


class Fill(Base):
    """One execution of one of our orders; owner executor, key (`mode`, `fill_id`)."""

    __tablename__ = "fills"
    __table_args__ = (
        mode_check(),
        in_check("book_side", BOOK_SIDES, "book_side"),
        in_check("outcome_side", OUTCOME_SIDES, "outcome_side"),
        UniqueConstraint("mode", "fill_id"),
        Index("ix_fills_mode_ticker_filled_at", "mode", "ticker", "filled_at"),
        strategy_check(),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    fill_id: Mapped[str]
    trade_id: Mapped[str | None]
    order_id: Mapped[str] = mapped_column(index=True)
    client_order_id: Mapped[str | None]  # REST fills no longer carry it (WS fills do)
    strategy: Mapped[str] = strategy_column()  # its order's (set by a trigger, migration 0007)
    ticker: Mapped[str]
    event_ticker: Mapped[str | None]
    book_side: Mapped[str]
    outcome_side: Mapped[str]
    action: Mapped[str | None]  # buy | sell, when known
    count: Mapped[int]
    yes_price: Mapped[int]
    no_price: Mapped[int]
    is_taker: Mapped[bool]
    fee_ticks: Mapped[int]
    exchange_index: Mapped[int | None] = mapped_column(Integer)
    filled_at: Mapped[datetime]
    raw: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()


class Position(Base):
    """Our position in one market; owner executor, key (`mode`, `ticker`)."""

    __tablename__ = "positions"
    __table_args__ = (
        mode_check(),
        strategy_check(),
        UniqueConstraint("mode", "ticker"),
        Index("ix_positions_mode_event_ticker", "mode", "event_ticker"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    ticker: Mapped[str]
    event_ticker: Mapped[str]
    series_ticker: Mapped[str | None]
    family: Mapped[str | None]
    # The strategy of the order that opened it from flat (ledger.apply_fill); a repair leaves it as it is.
    strategy: Mapped[str] = strategy_column()
    position: Mapped[int] = mapped_column(server_default=text("0"))  # signed: + YES, - NO, 1/100 contract
    cost_ticks: Mapped[int] = mapped_column(server_default=text("0"))  # cost basis of the open position
    exposure_ticks: Mapped[int] = mapped_column(server_default=text("0"))  # market exposure (Kalshi's)
    total_traded_ticks: Mapped[int] = mapped_column(server_default=text("0"))
    realized_pnl_ticks: Mapped[int] = mapped_column(server_default=text("0"))
    fees_paid_ticks: Mapped[int] = mapped_column(server_default=text("0"))
    last_fill_id: Mapped[str | None]
    settled_at: Mapped[datetime | None]
    exchange_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class BalanceSnapshot(Base):
    """Cash balance and portfolio value at a time; owner executor, key (`mode`, `ts`)."""

    __tablename__ = "balance_snapshots"
    __table_args__ = (mode_check(), UniqueConstraint("mode", "ts"))

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    ts: Mapped[datetime]
    balance_ticks: Mapped[int]
    portfolio_value_ticks: Mapped[int | None]
    breakdown: Mapped[list[Any] | None]  # per exchange_index balances, ticks
    source: Mapped[str | None]  # exchange | paper | sim
    created_at: Mapped[datetime] = created_at_column()


class RiskReservation(Base):
    """Cap budget held by one order in one scope; owner executor, key (mode, client_order_id, scope_kind, scope_key).

    A record of what each live order holds (its worst-case cost with the taker fee), released or
    consumed when the order ends. The cap check itself is `services/executor/risk.py` (`kdesk_reserve`,
    migration 0006): one `pg_advisory_xact_lock` per mode, the running usage below read under it, the new
    order counted as if filled — so two replicas can never exceed a cap together. `expires_at` is informative.
    """

    __tablename__ = "risk_reservations"
    __table_args__ = (
        mode_check(),
        in_check("scope_kind", RESERVATION_SCOPES, "scope_kind"),
        in_check("status", RESERVATION_STATUSES, "status"),
        CheckConstraint("amount_ticks >= 0", name="amount_nonnegative"),
        UniqueConstraint("mode", "client_order_id", "scope_kind", "scope_key", name="uq_risk_reservations_order_scope"),
        Index("ix_risk_reservations_live", "mode", "scope_kind", "scope_key", "status"),
        Index("ix_risk_reservations_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    mode: Mapped[str] = mode_column()
    scope_kind: Mapped[str]  # order | market | event | family | portfolio | daily_loss
    scope_key: Mapped[str]  # ticker, event ticker, family name; "" for portfolio-wide scopes
    client_order_id: Mapped[str]
    amount_ticks: Mapped[int]  # worst-case loss held against the cap
    status: Mapped[str] = mapped_column(server_default=text("'reserved'"))
    expires_at: Mapped[datetime]  # a crashed replica's reservations lapse by themselves
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


# -- running risk usage (migrations 0006, 0007) --------------------------------------------------------
# Maintained by triggers on `orders`, `positions` and `risk_strikes` in the transaction of every change,
# read by `kdesk_reserve` under the mode's risk lock; see services/executor/risk.py. Never written from
# Python except `risk_strikes`. `family` is '' for orders and positions without one.


def _mode_key() -> Mapped[str]:
    return mapped_column(String(8), primary_key=True)


def _zero() -> Mapped[int]:
    return mapped_column(server_default=text("0"))


class RiskStrike(Base):
    """A market's strike rule as the executor learned it from `md.market` (event netting); key (mode, ticker)."""

    __tablename__ = "risk_strikes"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    ticker: Mapped[str] = mapped_column(primary_key=True)
    strike_type: Mapped[str | None]  # greater | greater_or_equal | less | less_or_equal | between | other
    floor_strike: Mapped[Decimal | None]
    cap_strike: Mapped[Decimal | None]
    updated_at: Mapped[datetime] = updated_at_column()


class RiskHolding(Base):
    """Contracts one market can pay out on and their cost, per family: open buy orders' remaining counts and
    reported fills not yet in the position (as if filled at the limit) plus the position; key (mode, ticker,
    family, event_ticker). Trigger-maintained."""

    __tablename__ = "risk_holdings"
    __table_args__ = (mode_check(), Index("ix_risk_holdings_mode_event_ticker", "mode", "event_ticker"))

    mode: Mapped[str] = _mode_key()
    ticker: Mapped[str] = mapped_column(primary_key=True)
    family: Mapped[str] = mapped_column(primary_key=True)
    event_ticker: Mapped[str] = mapped_column(primary_key=True)
    yes_count: Mapped[int] = _zero()  # 1/100 contract
    no_count: Mapped[int] = _zero()
    cost_ticks: Mapped[int] = _zero()  # without fees: what the contracts can lose
    open_buys: Mapped[int] = _zero()  # buy orders holding something here (they make the market count)
    open_yes_orders: Mapped[int] = _zero()  # open orders of any kind, by outcome side (the desk's working check)
    open_no_orders: Mapped[int] = _zero()
    position: Mapped[int] = _zero()  # signed, as in `positions`


class RiskEventUsage(Base):
    """Worst-case loss of one event's holdings of one family, netted across its strikes; trigger-maintained."""

    __tablename__ = "risk_event_usage"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    event_ticker: Mapped[str] = mapped_column(primary_key=True)
    family: Mapped[str] = mapped_column(primary_key=True)
    exposure_ticks: Mapped[int] = _zero()


class RiskFamilyUsage(Base):
    """Sum of a family's event exposures in one mode; trigger-maintained."""

    __tablename__ = "risk_family_usage"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    family: Mapped[str] = mapped_column(primary_key=True)
    exposure_ticks: Mapped[int] = _zero()


class RiskModeUsage(Base):
    """Portfolio-wide usage of one mode: open orders (any kind) and gross cost at risk; trigger-maintained."""

    __tablename__ = "risk_mode_usage"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    open_orders: Mapped[int] = _zero()
    gross_ticks: Mapped[int] = _zero()


class RiskStrategyUsage(Base):
    """Capital one strategy has in use in one mode (migration 0007): the cost of its orders that are not
    reduce-only (as in `risk_holdings`) plus its open positions' cost, by `strategy`; trigger-maintained."""

    __tablename__ = "risk_strategy_usage"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    strategy: Mapped[str] = mapped_column(primary_key=True)
    capital_ticks: Mapped[int] = _zero()


class RiskStrategyMarket(Base):
    """What one strategy holds or works on one market (migration 0007): a market belongs to the one strategy
    with a row here, so "is it another's?" is one primary-key probe; trigger-maintained, empty rows removed."""

    __tablename__ = "risk_strategy_markets"
    __table_args__ = (mode_check(),)

    mode: Mapped[str] = _mode_key()
    ticker: Mapped[str] = mapped_column(primary_key=True)
    strategy: Mapped[str] = mapped_column(primary_key=True)
    capital_ticks: Mapped[int] = _zero()  # as in risk_strategy_usage
    open_buys: Mapped[int] = _zero()  # as in risk_holdings
    position: Mapped[int] = _zero()  # signed: a position of no recorded cost still holds the market
