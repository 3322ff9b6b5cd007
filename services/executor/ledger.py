"""The executor's books in PostgreSQL: orders, order events, fills, positions, balances, reservations.

Every write is idempotent (natural keys), so a redelivered WebSocket frame, a REST poll that sees the
same fill again, or a replica doing the same repair changes nothing the second time. Position rows
are updated only inside the transaction that inserts the fill that moves them, under a row lock, so
two replicas applying the same fill cannot both count it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.config import Mode
from libs.common.db import BalanceSnapshot, Fill, Order, OrderEvent, Position, RiskReservation
from libs.common.db.executor import OPEN_ORDER_STATUSES
from libs.common.db.upsert import insert_if_new
from libs.common.events import OrderEvent as OrderEventMsg
from libs.common.logs import get_logger
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, cost, leg_price
from services.executor import order_status

log = get_logger(__name__)

FINAL_STATUSES = tuple(sorted(order_status.FINAL))


@dataclass(frozen=True, slots=True)
class FillFact:
    """One execution of one of our orders, from a WS `fill`, a REST fill or the paper broker."""

    trade_id: str
    order_id: str
    ticker: str
    book_side: str
    outcome_side: str
    yes_price: int
    count: int
    fee: int
    is_taker: bool
    filled_at: datetime
    client_order_id: str | None = None
    raw: dict[str, Any] | None = None

    @property
    def fill_id(self) -> str:
        # Kalshi's fill_id equals the trade id; both our sides of a trade cannot exist (self-trade
        # prevention), but the order id makes the key unique even so.
        return f"{self.trade_id}:{self.order_id}"

    @property
    def leg_price(self) -> int:
        return leg_price(self.book_side, self.yes_price)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order's totals as the venue reports them."""

    order_id: str
    status: str  # resting | canceled | executed
    fill_count: int
    remaining_count: int
    yes_price: int
    fees: int | None = None
    client_order_id: str | None = None
    ts: datetime | None = None
    raw: dict[str, Any] | None = None


def apply_to_position(pos: int, basis: int, realized: int, fill: FillFact) -> tuple[int, int, int]:
    """(position, cost basis, realized P&L) after a fill; YES+NO pairs are redeemed at $1 at once."""
    signed = fill.count if fill.outcome_side == "yes" else -fill.count
    fill_cost = cost(fill.count, fill.leg_price, rounding="up")
    if pos == 0 or (pos > 0) == (signed > 0):
        return pos + signed, basis + fill_cost, realized
    closed = min(abs(signed), abs(pos))
    closed_cost = basis * closed // abs(pos)
    closed_fill_cost = fill_cost * closed // fill.count
    realized += closed * ONE_DOLLAR // ONE_CONTRACT - closed_cost - closed_fill_cost
    new_pos = pos + signed
    if abs(signed) <= abs(pos):
        return new_pos, basis - closed_cost, realized
    return new_pos, fill_cost - closed_fill_cost, realized  # flipped: the rest of the fill is the new basis


class Ledger:
    """Reads and idempotent writes of the executor's tables for one mode.

    Every order transition and every new fill writes its `order_events` row in the same transaction
    (the outbox); `on_event` is called after such a commit so the drain publishes it at once.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_event: Callable[[], None] = lambda: None) -> None:
        self.sessions = sessions
        self.mode = mode
        self.clock = clock
        self.on_event = on_event

    # -- orders ---------------------------------------------------------------------------------

    def _by_coid(self, coid: str) -> Select[tuple[Order]]:
        return select(Order).where(Order.mode == self.mode, Order.client_order_id == coid)

    def _open(self) -> Select[tuple[Order]]:
        return select(Order).where(Order.mode == self.mode, Order.status.in_(OPEN_ORDER_STATUSES)).order_by(Order.id)

    async def order_by_coid(self, coid: str) -> Order | None:
        async with self.sessions() as s:
            return await s.scalar(self._by_coid(coid))

    async def order_by_id(self, order_id: str) -> Order | None:
        async with self.sessions() as s:
            return await s.scalar(select(Order).where(Order.mode == self.mode, Order.order_id == order_id))

    async def open_orders(self) -> list[Order]:
        async with self.sessions() as s:
            return list((await s.scalars(self._open())).all())

    async def working_and_held(self, ticker: str, leg: str) -> tuple[list[Order], int]:
        """Open orders on `leg` of `ticker` and the contracts of that leg held, in one session."""
        async with self.sessions() as s:
            working = list((await s.scalars(self._open().where(Order.ticker == ticker,
                                                                Order.outcome_side == leg))).all())
            pos = await s.scalar(select(Position.position).where(Position.mode == self.mode,
                                                                 Position.ticker == ticker))
        held = pos or 0
        return working, max(held, 0) if leg == "yes" else max(-held, 0)

    async def opposite_working(self, ticker: str, leg: str) -> int:
        """Open buy orders (not reduce-only) on the other leg of `ticker`."""
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(self._open().where(
                Order.ticker == ticker, Order.outcome_side != leg, Order.reduce_only.is_(False)).subquery())) or 0)

    async def orders_for_signals(self, signal_ids: Sequence[str]) -> list[Order]:
        """The newest order row of each of these signals (a repriced signal has several attempts)."""
        async with self.sessions() as s:
            rows = (await s.scalars(select(Order).where(Order.mode == self.mode, Order.signal_id.in_(signal_ids))
                                    .order_by(Order.id))).all()
        return list({o.signal_id: o for o in rows}.values())

    async def recent_orders(self, limit: int = 50) -> list[Order]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Order).where(Order.mode == self.mode)
                                         .order_by(Order.id.desc()).limit(limit))).all())

    async def mark_sent(self, coid: str, sent_at: datetime, *, exchange_index: int | None = None) -> None:
        """The intent is about to leave: `pending`, with the shard it is sent to (its route from now on).

        The desk's own sends are reserved already `pending` (risk.Send); this is for an `intent` row
        resumed after a crash, or reserved without a send."""
        values: dict[str, Any] = {"status": "pending", "sent_at": sent_at}
        if exchange_index is not None:
            values["exchange_index"] = exchange_index
        async with self.sessions() as s, s.begin():
            await s.execute(update(Order).where(Order.mode == self.mode, Order.client_order_id == coid,
                                                Order.status == "intent")
                            .values(**values))

    async def set_state(self, coid: str, state: OrderState, *, accepted: bool = False) -> tuple[Order | None, bool]:
        """Record the venue's view of an order and its events; (the row, whether anything changed).

        The first word from the venue about an order — the create's answer (`accepted`) or a frame that
        brings its exchange id, whichever comes first — is announced once as `accepted`, before the status
        it reports, so `ord.*` reads intent → accepted → resting whatever the order of arrival.
        """
        async with self.sessions() as s, s.begin():
            row = await s.scalar(self._by_coid(coid).with_for_update())
            if row is None:
                return None, False
            # A local final guess (never_reached_exchange) gives way when the venue shows the order after all.
            adopting = row.order_id is None and row.status in FINAL_STATUSES
            if not adopting and not order_status.allowed(row.status, state.status):
                log.info("order_update_ignored", client_order_id=coid, status=row.status, update=state.status)
                return row, False
            # Counts only move forward: a late, older frame must not undo a newer one.
            if state.fill_count < row.fill_count:
                return row, False
            prev_status, prev_price = row.status, row.yes_price
            acknowledged = accepted or (row.order_id is None and state.order_id is not None)
            changed = (row.order_id, row.status, row.fill_count, row.remaining_count, row.yes_price) != (
                state.order_id, state.status, state.fill_count, state.remaining_count, state.yes_price)
            row.order_id = state.order_id
            row.status = state.status
            row.fill_count = state.fill_count
            row.remaining_count = state.remaining_count
            row.yes_price = state.yes_price
            if state.fees is not None:
                # Fees only grow over an order's life; the venue's total and our fills' sum may arrive in
                # either order, so keep the larger.
                row.fees_ticks = max(row.fees_ticks, state.fees)
            if state.ts is not None:
                row.exchange_updated_at = state.ts
            if state.raw is not None:
                row.raw = state.raw
            if state.status in FINAL_STATUSES:
                await self._release(s, coid, "consumed" if state.fill_count else "released")
            if acknowledged:
                await self._order_event(s, row, "accepted", event_id=f"ord:{coid}:accepted")
            if changed:
                amended = prev_status == row.status == "resting" and prev_price != row.yes_price
                await self._order_event(s, row, "amended" if amended else
                                        order_status.event_kind(row.status, row.fill_count))
        if acknowledged or changed:
            self.on_event()
        return row, changed

    async def finish(self, coid: str, status: str, reason: str | None) -> Order | None:
        """Close an order locally (rejected, never sent, blocked after the fact)."""
        async with self.sessions() as s, s.begin():
            row = await s.scalar(self._by_coid(coid).with_for_update())
            if row is None or row.status in FINAL_STATUSES:
                return row
            assert order_status.allowed(row.status, status), (row.status, status)
            row.status, row.reason = status, reason
            await self._release(s, coid, "consumed" if row.fill_count else "released")
            await self._order_event(s, row, order_status.event_kind(status, row.fill_count),
                                    reason=reason)
        self.on_event()
        return row

    async def finish_reason(self, coid: str, reason: str) -> None:
        """Note why we are closing an order before the venue confirms it."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(Order).where(Order.mode == self.mode, Order.client_order_id == coid)
                            .values(reason=reason))

    async def _release(self, s: AsyncSession, coid: str, status: str) -> None:
        await s.execute(update(RiskReservation).where(
            RiskReservation.mode == self.mode, RiskReservation.client_order_id == coid,
            RiskReservation.status == "reserved").values(status=status))

    async def _order_event(self, s: AsyncSession, row: Order, kind: str, *, reason: str | None = None,
                           event_id: str | None = None) -> None:
        """The outbox row announcing `row` as it now is (idempotent by its id, which names the totals)."""
        event_id = event_id or \
            f"ord:{row.client_order_id}:{kind}:{row.fill_count}:{row.remaining_count}:{row.yes_price}"
        await write_event(s, self.mode, OrderEventMsg(
            id=event_id, ts_event=self.clock(), mode=Mode(self.mode), kind=kind,  # type: ignore[arg-type]
            client_order_id=row.client_order_id, order_id=row.order_id, ticker=row.ticker,
            event_ticker=row.event_ticker, book_side=row.book_side,  # type: ignore[arg-type]
            price=row.yes_price, count=row.initial_count, filled_count=row.fill_count,
            remaining_count=row.remaining_count, reason=reason or row.reason))

    # -- fills and positions --------------------------------------------------------------------

    async def apply_fill(self, f: FillFact, *, event_ticker: str, series_ticker: str | None,
                         family: str | None) -> bool:
        """Insert the fill and move the position, once; False when this fill was already applied."""
        async with self.sessions() as s, s.begin():
            new = await insert_if_new(s, Fill, {
                "mode": self.mode, "fill_id": f.fill_id, "trade_id": f.trade_id, "order_id": f.order_id,
                "client_order_id": f.client_order_id, "ticker": f.ticker, "event_ticker": event_ticker,
                "book_side": f.book_side, "outcome_side": f.outcome_side, "action": "buy", "count": f.count,
                "yes_price": f.yes_price, "no_price": ONE_DOLLAR - f.yes_price, "is_taker": f.is_taker,
                "fee_ticks": f.fee, "filled_at": f.filled_at, "raw": f.raw}, key=["mode", "fill_id"])
            if not new:
                return False
            coid = f.client_order_id or await s.scalar(select(Order.client_order_id).where(
                Order.mode == self.mode, Order.order_id == f.order_id))
            await write_event(s, self.mode, OrderEventMsg(
                id=f"ord:fill:{f.fill_id}", ts_event=f.filled_at, mode=Mode(self.mode), kind="fill",
                client_order_id=coid or "", order_id=f.order_id, ticker=f.ticker, event_ticker=event_ticker,
                book_side=f.book_side, price=f.yes_price, count=f.count,  # type: ignore[arg-type]
                fill_id=f.fill_id, fee=f.fee, is_taker=f.is_taker))
            await insert_if_new(s, Position, {"mode": self.mode, "ticker": f.ticker, "event_ticker": event_ticker,
                                              "series_ticker": series_ticker, "family": family},
                                key=["mode", "ticker"])
            # The position row first, then the order's: the risk-usage triggers (migration 0006) take the
            # mode's usage lock at the first change, and no row may be locked after it (set_position and
            # settle lock the position, set_state and finish the order, then the usage lock).
            pos = await s.scalar(select(Position).where(Position.mode == self.mode, Position.ticker == f.ticker)
                                 .with_for_update())
            assert pos is not None
            # The order's fees are at least the sum of its fills we hold (frames may come in any order; the
            # row may not know its exchange id yet, in which case the venue's total arrives with it later).
            # Touching the row also books the fill on it (its trigger counts the order's fills), so the fill
            # moves from the order's risk usage to the position's in this transaction.
            paid = select(func.coalesce(func.sum(Fill.fee_ticks), 0)).where(
                Fill.mode == self.mode, Fill.order_id == f.order_id).scalar_subquery()
            strategy = await s.scalar(update(Order).where(Order.mode == self.mode, Order.order_id == f.order_id)
                                      .values(fees_ticks=func.greatest(Order.fees_ticks, paid))
                                      .returning(Order.strategy))
            if pos.position == 0 and strategy is not None:
                # Opened from flat: the position is the filling order's strategy's (its capital, its market).
                # Otherwise it stays whose it was; a fill of an order not known yet leaves it too.
                pos.strategy = strategy
            pos.position, pos.cost_ticks, pos.realized_pnl_ticks = apply_to_position(
                pos.position, pos.cost_ticks, pos.realized_pnl_ticks, f)
            pos.realized_pnl_ticks -= f.fee
            pos.fees_paid_ticks += f.fee
            pos.total_traded_ticks += cost(f.count, f.leg_price, rounding="up")
            pos.exposure_ticks = pos.cost_ticks
            pos.last_fill_id = f.fill_id
            if family and not pos.family:
                pos.family = family
        self.on_event()
        return True

    async def positions(self, *, nonzero: bool = True) -> list[Position]:
        q = select(Position).where(Position.mode == self.mode)
        if nonzero:
            q = q.where(Position.position != 0)
        async with self.sessions() as s:
            return list((await s.scalars(q.order_by(Position.ticker))).all())

    async def fills(self, limit: int = 50) -> list[Fill]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Fill).where(Fill.mode == self.mode)
                                         .order_by(Fill.filled_at.desc()).limit(limit))).all())

    async def set_position(self, ticker: str, *, position: int, cost: int | None, fees: int | None,
                           event_ticker: str, realized: int | None = None) -> None:
        """Overwrite a position from the exchange's view (reconciliation repair); its strategy stays as it is
        (`directional` for a new row: the exchange does not know whose it is)."""
        async with self.sessions() as s, s.begin():
            await insert_if_new(s, Position, {"mode": self.mode, "ticker": ticker, "event_ticker": event_ticker},
                                key=["mode", "ticker"])
            pos = await s.scalar(select(Position).where(Position.mode == self.mode, Position.ticker == ticker)
                                 .with_for_update())
            assert pos is not None
            pos.position = position
            if cost is not None:
                pos.cost_ticks = pos.exposure_ticks = cost
            if fees is not None:
                pos.fees_paid_ticks = fees
            if realized is not None:
                pos.realized_pnl_ticks = realized

    async def settle(self, ticker: str, result: str, ts: datetime) -> bool:
        """A market resolved: the position pays $1 per winning contract and closes (once)."""
        async with self.sessions() as s, s.begin():
            pos = await s.scalar(select(Position).where(Position.mode == self.mode, Position.ticker == ticker,
                                                        Position.settled_at.is_(None)).with_for_update())
            if pos is None:
                return False
            won = (pos.position > 0 and result == "yes") or (pos.position < 0 and result == "no")
            payout = abs(pos.position) * ONE_DOLLAR // ONE_CONTRACT if won else 0
            pos.realized_pnl_ticks += payout - pos.cost_ticks
            pos.position = pos.cost_ticks = pos.exposure_ticks = 0
            pos.settled_at = ts
            return True

    # -- balance --------------------------------------------------------------------------------

    async def snapshot_balance(self, ts: datetime, balance: int, portfolio_value: int | None, source: str) -> None:
        async with self.sessions() as s, s.begin():
            await insert_if_new(s, BalanceSnapshot, {"mode": self.mode, "ts": ts, "balance_ticks": balance,
                                                     "portfolio_value_ticks": portfolio_value, "source": source},
                                key=["mode", "ts"])

    async def first_balance_since(self, since: datetime) -> BalanceSnapshot | None:
        async with self.sessions() as s:
            return await s.scalar(select(BalanceSnapshot).where(BalanceSnapshot.mode == self.mode,
                                                                BalanceSnapshot.ts >= since)
                                  .order_by(BalanceSnapshot.ts).limit(1))


def event_columns(mode: str, ev: OrderEventMsg, *, as_json: bool = False) -> dict[str, Any]:
    """The `order_events` (outbox) row announcing `ev`; `as_json`: the message as JSON text, not a dict."""
    return {
        "event_id": ev.id, "mode": mode, "client_order_id": ev.client_order_id, "order_id": ev.order_id,
        "ticker": ev.ticker, "kind": ev.kind, "yes_price": ev.price, "count": ev.count,
        "fill_count": ev.filled_count, "remaining_count": ev.remaining_count, "reason": ev.reason,
        "ts_event": ev.ts_event, "subject": subjects.ord_(ev.event_ticker, ev.ticker),
        "message": ev.model_dump_json() if as_json else ev.model_dump(mode="json")}


async def write_event(s: AsyncSession, mode: str, ev: OrderEventMsg) -> bool:
    """Insert one outbox row for `ev` in the caller's transaction; False when it was already there."""
    return await insert_if_new(s, OrderEvent, event_columns(mode, ev), key=["mode", "event_id"])


def order_summary(o: Order) -> dict[str, Any]:
    """An order as plain data for command replies."""
    return {"client_order_id": o.client_order_id, "order_id": o.order_id, "ticker": o.ticker,
            "book_side": o.book_side, "outcome_side": o.outcome_side, "yes_price": o.yes_price,
            "initial_count": o.initial_count, "fill_count": o.fill_count, "remaining_count": o.remaining_count,
            "fees_ticks": o.fees_ticks, "status": o.status, "reason": o.reason, "post_only": o.post_only,
            "signal_id": o.signal_id, "created_at": o.created_at}


def position_summary(p: Position) -> dict[str, Any]:
    return {"ticker": p.ticker, "event_ticker": p.event_ticker, "family": p.family, "position": p.position,
            "cost_ticks": p.cost_ticks, "realized_pnl_ticks": p.realized_pnl_ticks,
            "fees_paid_ticks": p.fees_paid_ticks}


def fill_summary(f: Fill) -> dict[str, Any]:
    return {"fill_id": f.fill_id, "order_id": f.order_id, "ticker": f.ticker, "outcome_side": f.outcome_side,
            "yes_price": f.yes_price, "count": f.count, "fee_ticks": f.fee_ticks, "is_taker": f.is_taker,
            "filled_at": f.filled_at}


__all__: Sequence[str] = ("FillFact", "Ledger", "OrderState", "apply_to_position", "event_columns", "fill_summary",
                          "order_summary", "position_summary", "write_event")
