"""Caps, reserved atomically in PostgreSQL before an order is sent (DESIGN §6).

One transaction per intent: take the mode's risk lock (`pg_advisory_xact_lock`), read every open
order and position of the mode, add the new order as if it filled completely, and check each cap;
then insert the order row — status `intent` when it fits, `blocked` with the cap's name when it does
not — plus one `risk_reservations` row per scope it holds. Because every replica takes the same lock
and the new row is committed before the lock is released, the next replica's check sees it: two
replicas can never exceed a cap together. The portfolio-wide caps (gross, open orders) make every
reservation contend anyway, so one lock per mode is both the simplest and the correct granularity.

Open orders are read before positions: a fill committed in between is then counted twice (once as
the order's remaining size, once in the position) — too cautious for a moment, never too loose.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.config import Mode, RiskLimits
from libs.common.db import Order, OrderEvent, Position, RiskReservation
from libs.common.db.executor import OPEN_ORDER_STATUSES
from libs.common.db.upsert import insert_if_new, insert_many_if_new
from libs.common.events import OrderEvent as OrderEventMsg
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE
from libs.common.money import cost, leg_price
from services.executor.exposure import Holding, Strike, event_exposure, gross
from services.executor.ledger import write_event
from services.executor.sizing import order_cost

RESERVATION_TTL = timedelta(hours=6)

Leg = Literal["yes", "no", "exit", "arb_yes", "arb_no"]
BookSide = Literal["bid", "ask"]  # bid buys YES, ask buys NO (V2 orders are in YES terms)
TimeInForce = Literal["good_till_canceled", "immediate_or_cancel", "fill_or_kill"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """An order the desk wants to send; `client_order_id` is derived from the signal, leg and attempt."""

    client_order_id: str
    signal_id: str | None
    leg: Leg
    attempt: int = 0
    family: str | None
    series_ticker: str | None
    event_ticker: str
    ticker: str
    book_side: BookSide
    yes_price: int
    count: int
    time_in_force: TimeInForce = "good_till_canceled"
    post_only: bool = False
    reduce_only: bool = False
    fee_type: str = DEFAULT_FEE_TYPE
    fee_multiplier: Decimal = DEFAULT_FEE_MULTIPLIER

    @property
    def outcome_side(self) -> str:
        return "yes" if self.book_side == "bid" else "no"

    @property
    def leg_price(self) -> int:
        return leg_price(self.book_side, self.yes_price)  # type: ignore[arg-type]

    def worst_cost(self, count: int | None = None) -> int:
        """Cash this order can spend, taker fee assumed (a maker order may still fill as taker after a reprice)."""
        return order_cost(self.count if count is None else count, self.leg_price, taker=True,
                          fee_type=self.fee_type, fee_multiplier=self.fee_multiplier)


@dataclass(slots=True)
class Verdict:
    """The outcome of a reservation; `reason` names the cap that blocked it (cap_event, ...)."""

    ok: bool
    reason: str | None = None
    existing: bool = False  # this client_order_id was already decided (a redelivered signal)
    status: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


class RiskGate:
    """Reserves cap budget for intents; strikes come from the executor's market definitions."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, limits: RiskLimits,
                 strikes: dict[str, Strike | None]) -> None:
        self.sessions = sessions
        self.mode = mode
        self.limits = limits
        self.strikes = strikes

    async def reserve(self, intent: Intent, *, now: datetime, reduces_only: bool = False) -> Verdict:
        """Insert the order as `intent` if every cap holds, else as `blocked`; idempotent per client_order_id."""
        async with self.sessions() as s, s.begin():
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": f"kdesk:risk:{self.mode}"})
            prior = await s.scalar(select(Order.status).where(Order.mode == self.mode,
                                                              Order.client_order_id == intent.client_order_id))
            if prior is not None:
                return Verdict(prior not in ("blocked", "rejected"), "duplicate", existing=True, status=prior)
            usage = await self._usage(s, intent)
            reason = None if reduces_only else self._check(intent, usage)
            await self._insert(s, intent, now, reason)
        return Verdict(reason is None, reason, usage=usage)

    async def allows_reprice(self, intent: Intent, *, exclude_coid: str) -> str | None:
        """Would the caps still hold with this working order at a new price? None if so, else the cap's name.

        Amending a price up raises what the order can lose; it is checked like a new order, with the
        order's old reservation left out, under the same lock.
        """
        async with self.sessions() as s, s.begin():
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": f"kdesk:risk:{self.mode}"})
            usage = await self._usage(s, intent, exclude_coid=exclude_coid)
            usage["open_orders"] -= 1  # the order is already counted among the open ones
            return self._check(intent, usage)

    async def block(self, intent: Intent, *, now: datetime, reason: str) -> bool:
        """Record a decision not to trade as a `blocked` order row (idempotent); True if newly recorded."""
        async with self.sessions() as s, s.begin():
            return await self._insert(s, intent, now, reason)

    def _check(self, intent: Intent, usage: dict[str, int]) -> str | None:
        lim = self.limits
        checks = (("cap_order", usage["order"], lim.max_order), ("cap_market", usage["market"], lim.max_market),
                  ("cap_event", usage["event"], lim.max_event), ("cap_family", usage["family"], lim.max_family),
                  ("cap_portfolio", usage["portfolio"], lim.max_portfolio),
                  ("cap_open_orders", usage["open_orders"], lim.max_open_orders))
        for name, used, cap in checks:
            if used > cap:
                return name
        return None

    async def _usage(self, s: AsyncSession, intent: Intent, *, exclude_coid: str | None = None) -> dict[str, int]:
        """Exposure in every scope with the new order included (as if it filled completely)."""
        q = select(Order.ticker, Order.event_ticker, Order.family, Order.book_side, Order.yes_price,
                   Order.remaining_count, Order.reduce_only).where(Order.mode == self.mode,
                                                                   Order.status.in_(OPEN_ORDER_STATUSES))
        if exclude_coid is not None:
            q = q.where(Order.client_order_id != exclude_coid)
        orders = (await s.execute(q)).all()
        positions = (await s.execute(select(Position.ticker, Position.event_ticker, Position.family,
                                            Position.position, Position.cost_ticks)
                                     .where(Position.mode == self.mode, Position.position != 0))).all()
        holdings: dict[str, Holding] = defaultdict(Holding)
        event_of: dict[str, str] = {}
        family_of: dict[str, str | None] = {}
        for p in positions:
            h = holdings[p.ticker]
            if p.position > 0:
                h.yes += p.position
            else:
                h.no += -p.position
            h.cost += p.cost_ticks
            event_of[p.ticker], family_of[p.ticker] = p.event_ticker, p.family
        for o in orders:
            if o.reduce_only:
                continue
            self._add(holdings[o.ticker], o.book_side, o.yes_price, o.remaining_count)
            event_of[o.ticker], family_of[o.ticker] = o.event_ticker, o.family
        new = Holding()
        self._add(new, intent.book_side, intent.yes_price, intent.count)
        h = holdings[intent.ticker]
        h.yes, h.no, h.cost = h.yes + new.yes, h.no + new.no, h.cost + new.cost
        event_of[intent.ticker], family_of[intent.ticker] = intent.event_ticker, intent.family

        by_event: dict[str, dict[str, Holding]] = defaultdict(dict)
        for t, hold in holdings.items():
            by_event[event_of[t]][t] = hold
        event_exp = {e: event_exposure(hs, self.strikes) for e, hs in by_event.items()}
        family_of_event = {event_of[t]: family_of[t] for t in holdings}
        return {
            "order": new.cost,
            "market": holdings[intent.ticker].worst(),
            "event": event_exp[intent.event_ticker],
            "family": sum(v for e, v in event_exp.items() if family_of_event.get(e) == intent.family),
            "portfolio": gross(holdings.values()),
            "open_orders": len(orders) + 1,
        }

    @staticmethod
    def _add(h: Holding, book_side: str, yes_price: int, count: int) -> None:
        if book_side == "bid":
            h.yes += count
        else:
            h.no += count
        # Cost without the fee here: exposure is what the contracts can lose; fees are in `order`.
        h.cost += cost(count, leg_price(book_side, yes_price), rounding="up")  # type: ignore[arg-type]

    async def _insert(self, s: AsyncSession, intent: Intent, now: datetime, reason: str | None) -> bool:
        status = "intent" if reason is None else "blocked"
        new = await insert_if_new(s, Order, {
            "mode": self.mode, "client_order_id": intent.client_order_id, "signal_id": intent.signal_id,
            "leg": intent.leg, "attempt": intent.attempt, "family": intent.family,
            "series_ticker": intent.series_ticker, "event_ticker": intent.event_ticker, "ticker": intent.ticker,
            "book_side": intent.book_side, "outcome_side": intent.outcome_side, "yes_price": intent.yes_price,
            "initial_count": intent.count, "remaining_count": intent.count if reason is None else 0,
            "time_in_force": intent.time_in_force, "post_only": intent.post_only, "reduce_only": intent.reduce_only,
            "status": status, "reason": reason}, key=["mode", "client_order_id"])
        if not new:
            return False
        if reason is not None:  # a decision not to trade: recorded, not announced on ord.*
            await insert_if_new(s, OrderEvent, {
                "event_id": f"ord:{intent.client_order_id}:blocked", "mode": self.mode,
                "client_order_id": intent.client_order_id, "ticker": intent.ticker, "kind": status,
                "yes_price": intent.yes_price, "count": intent.count, "reason": reason, "ts_event": now},
                key=["mode", "event_id"])
            return True
        # The intent is on the outbox before any byte goes to the venue: the bus learns of it even if
        # this process dies between here and the create.
        await write_event(s, self.mode, OrderEventMsg(
            id=f"ord:{intent.client_order_id}:intent", ts_event=now, mode=Mode(self.mode), kind="intent",
            client_order_id=intent.client_order_id, ticker=intent.ticker, event_ticker=intent.event_ticker,
            book_side=intent.book_side, price=intent.yes_price, count=intent.count, remaining_count=intent.count))
        if reason is None:
            amount = intent.worst_cost()
            scopes = [("order", intent.ticker), ("market", intent.ticker), ("event", intent.event_ticker),
                      ("family", intent.family or ""), ("portfolio", "")]
            await insert_many_if_new(s, RiskReservation, [
                {"mode": self.mode, "scope_kind": k, "scope_key": key, "client_order_id": intent.client_order_id,
                 "amount_ticks": amount, "expires_at": now + RESERVATION_TTL} for k, key in scopes],
                key=["mode", "client_order_id", "scope_kind", "scope_key"])
        return True


async def reserved_total(sessions: async_sessionmaker[AsyncSession], mode: str) -> dict[str, Any]:
    """Live reservation totals per scope kind (for status replies)."""
    async with sessions() as s:
        rows = (await s.execute(select(RiskReservation.scope_kind, func.sum(RiskReservation.amount_ticks))
                                .where(RiskReservation.mode == mode, RiskReservation.status == "reserved")
                                .group_by(RiskReservation.scope_kind))).all()
    return {k: int(v) for k, v in rows}
