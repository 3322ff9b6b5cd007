"""A Kalshi-style matching engine: YES/NO bids, price-time priority, V2 order semantics, fees, settlement.

Pure and synchronous: the simulated exchange calls it from request handlers and turns its events into
REST answers and WebSocket pushes; nothing here does I/O. Semantics are in `types.py`.

Money rounding: a contract count is in 1/100, so count × price / 100 may fall between ticks. What a
user pays is rounded up and what a user receives is rounded down, so the exchange never pays out
money that was not paid in.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from libs.common.matching.book import Entry, LevelBook
from libs.common.matching.types import (
    BookDelta,
    BookSide,
    EngineEvent,
    ExchangeError,
    Fill,
    MarketSpec,
    MarketStatus,
    MarketStatusChange,
    Order,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    OutcomeSide,
    PlaceResult,
    Position,
    PositionUpdate,
    Result,
    Settlement,
    Trade,
)
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, UnsupportedFeeTypeError, fee

_ORDER_OPEN = ("active",)


def _pay(count: int, price: int) -> int:
    """What buying `count` (1/100) at `price` costs, rounded up to a tick."""
    return -((-count * price) // ONE_CONTRACT)


def _receive(count: int, price: int) -> int:
    """What `count` at `price` pays out, rounded down to a tick."""
    return (count * price) // ONE_CONTRACT


@dataclass
class _Account:
    cash: int
    reserved: int = 0


@dataclass
class _Market:
    spec: MarketSpec
    yes: LevelBook = field(default_factory=LevelBook)  # YES bids at YES prices
    no: LevelBook = field(default_factory=LevelBook)  # NO bids at NO prices


@dataclass
class _Resting:
    order: Order
    entry: Entry
    leg: OutcomeSide
    reserve: int = 0


class MatchingEngine:
    """Matching, accounts, positions and settlement for a set of markets."""

    def __init__(self, clock: Callable[[], datetime], *, ids: Callable[[], str] | None = None,
                 fee_rounding: Literal["tick", "cent"] = "tick") -> None:
        self.clock = clock
        self._ids = ids or (lambda: str(uuid.uuid4()))
        self.fee_rounding = fee_rounding
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self._markets: dict[str, _Market] = {}
        self._accounts: dict[str, _Account] = {}
        self._orders: dict[str, Order] = {}
        self._by_user: dict[str, list[str]] = {}
        self._client_ids: dict[tuple[str, str], str] = {}
        self._resting: dict[str, _Resting] = {}
        self._positions: dict[tuple[str, str], Position] = {}
        self._fills: list[Fill] = []
        self._trades: list[Trade] = []
        self._settlements: list[Settlement] = []

    # -- plumbing -------------------------------------------------------------------------------

    def listen(self, fn: Callable[[EngineEvent], None]) -> None:
        """Receive every event, synchronously and in causal order."""
        self._listeners.append(fn)

    def _emit(self, ev: EngineEvent) -> None:
        for fn in self._listeners:
            fn(ev)

    def _m(self, ticker: str) -> _Market:
        m = self._markets.get(ticker)
        if m is None:
            raise ExchangeError("not_found", f"market {ticker} not found", status=404)
        return m

    def _acct(self, user_id: str) -> _Account:
        a = self._accounts.get(user_id)
        if a is None:
            raise ExchangeError("not_found", f"no account for user {user_id}", status=404)
        return a

    def _order_of(self, user_id: str, order_id: str) -> Order:
        o = self._orders.get(order_id)
        if o is None or o.user_id != user_id:
            raise ExchangeError("not_found", f"order {order_id} not found", status=404)
        return o

    # -- markets --------------------------------------------------------------------------------

    def add_market(self, spec: MarketSpec) -> None:
        """List a market."""
        self._markets[spec.ticker] = _Market(spec)

    def market(self, ticker: str) -> MarketSpec:
        """A listed market's spec."""
        return self._m(ticker).spec

    def set_status(self, ticker: str, status: MarketStatus) -> None:
        """Change a market's status, cancelling resting orders as Kalshi does."""
        m = self._m(ticker)
        old = m.spec.status
        if old == status:
            return
        m.spec.status = status
        if status == "inactive":
            self._cancel_where(ticker, lambda o: o.cancel_order_on_pause, "MarketPaused")
        elif old == "inactive" and status == "active":
            # Reactivating a paused market cancels every resting order (kalshi_api.md §4.4 lifecycle).
            self._cancel_where(ticker, lambda o: True, "MarketReactivated")
        elif status in ("closed", "determined", "finalized"):
            self._cancel_where(ticker, lambda o: True, "MarketClosed")
        self._emit(MarketStatusChange(ticker, status, m.spec.result, self.clock()))

    def _cancel_where(self, ticker: str, pred: Callable[[Order], bool], reason: str) -> None:
        for r in [r for r in self._resting.values() if r.order.ticker == ticker and pred(r.order)]:
            self._cancel_resting(r, reason)

    def settle(self, ticker: str, result: Result) -> list[Settlement]:
        """Pay $1 per winning contract, record settlements and finalize the market."""
        m = self._m(ticker)
        if m.spec.status == "finalized":
            raise ExchangeError("invalid_parameters", f"market {ticker} is already settled")
        self._cancel_where(ticker, lambda o: True, "MarketClosed")
        m.spec.result = result
        now = self.clock()
        if m.spec.status != "determined":
            m.spec.status = "determined"
            self._emit(MarketStatusChange(ticker, "determined", result, now))
        out = []
        for (user, t), pos in list(self._positions.items()):
            if t != ticker:
                continue
            yes = max(pos.position, 0)
            no = max(-pos.position, 0)
            revenue = _receive(yes, ONE_DOLLAR) if result == "yes" else _receive(no, ONE_DOLLAR)
            self._accounts[user].cash += revenue
            s = Settlement(user_id=user, ticker=ticker, event_ticker=m.spec.event_ticker, market_result=result,
                           yes_count=yes, no_count=no, yes_total_cost=pos.market_exposure if yes else 0,
                           no_total_cost=pos.market_exposure if no else 0, revenue=revenue,
                           fee_cost=pos.fees_paid, settled_time=now)
            self._settlements.append(s)
            out.append(s)
            del self._positions[(user, t)]
            pos.realized_pnl += revenue - pos.market_exposure
            pos.position, pos.market_exposure, pos.last_updated = 0, 0, now
            self._emit(PositionUpdate(replace(pos)))
        m.spec.status = "finalized"
        self._emit(MarketStatusChange(ticker, "finalized", result, now))
        return out

    # -- accounts -------------------------------------------------------------------------------

    def open_account(self, user_id: str, balance: int) -> None:
        """Create (or reset the cash of) an account."""
        a = self._accounts.get(user_id)
        if a is None:
            self._accounts[user_id] = _Account(balance)
        else:
            a.cash = balance + a.reserved

    def balance(self, user_id: str) -> int:
        """Available cash: cash minus collateral reserved by resting orders."""
        a = self._acct(user_id)
        return a.cash - a.reserved

    def portfolio_value(self, user_id: str) -> int:
        """Open positions marked at the best bid of their side."""
        total = 0
        for (user, t), pos in self._positions.items():
            if user != user_id or not pos.position:
                continue
            m = self._markets[t]
            best = (m.yes if pos.position > 0 else m.no).best() or 0
            total += _receive(abs(pos.position), best)
        return total

    # -- orders ---------------------------------------------------------------------------------

    def _check_open(self, spec: MarketSpec) -> None:
        if spec.status == "inactive":
            raise ExchangeError("trading_is_paused", "trading is paused for this market", status=409)
        if spec.status not in _ORDER_OPEN:
            raise ExchangeError("MARKET_INACTIVE", f"market {spec.ticker} is {spec.status}")

    def _check_price(self, spec: MarketSpec, price: int) -> None:
        if not 0 < price < ONE_DOLLAR or not spec.grid.is_valid(price):
            raise ExchangeError("invalid_price", f"price {price / ONE_DOLLAR:.4f} is not on the market's tick grid")

    def _fee(self, spec: MarketSpec, count: int, price: int, taker: bool) -> int:
        try:
            return fee(count, price, rate="taker" if taker else "maker", fee_type=spec.fee_type,
                       multiplier=spec.fee_multiplier, round_to=self.fee_rounding)
        except UnsupportedFeeTypeError:
            return 0

    def _reserve_for(self, spec: MarketSpec, remaining: int, leg_price: int) -> int:
        # Resting orders pay the maker fee when hit; reserve the taker fee to stay on the safe side.
        return _pay(remaining, leg_price) + self._fee(spec, remaining, min(leg_price, ONE_DOLLAR - 1), True)

    def place(self, user_id: str, req: OrderRequest) -> PlaceResult:
        """Create an order: validate, match, rest the remainder (GTC)."""
        self._acct(user_id)
        m = self._m(req.ticker)
        spec = m.spec
        self._check_open(spec)
        self._check_price(spec, req.price)
        if req.count <= 0:
            raise ExchangeError("invalid_order_size", "count must be positive")
        if req.client_order_id and (user_id, req.client_order_id) in self._client_ids:
            raise ExchangeError("order_already_exists", "an order with this client_order_id already exists",
                                status=409)
        now = self.clock()
        if req.expiration_time is not None:
            if req.time_in_force == "immediate_or_cancel":
                raise ExchangeError("invalid_parameters", "Cannot specify both immediate_or_cancel and expiration_ts")
            if req.time_in_force != "good_till_canceled":
                raise ExchangeError("invalid_parameters", "expiration_time is only allowed with good_till_canceled")
            if req.expiration_time <= now:
                raise ExchangeError("invalid_parameters", "Expiration timestamp must be in the future")
        count = req.count
        if req.reduce_only:
            pos = self._positions.get((user_id, req.ticker))
            held = pos.position if pos else 0
            can = -held if req.book_side == "bid" else held
            if can <= 0:
                raise ExchangeError("invalid_order", "reduce only order would not reduce the position",
                                    details="reduce only")
            count = min(count, can)
        leg, leg_price = self._leg(req.book_side, req.price)
        if req.post_only and self._crosses(m, leg, leg_price):
            raise ExchangeError("invalid_order", "post only cross", details="post only cross")
        need = self._reserve_for(spec, count, leg_price)
        if not req.reduce_only and self.balance(user_id) < need:
            raise ExchangeError("available_balance_too_low", "available balance is too low for this order")
        order = Order(order_id=self._ids(), user_id=user_id, client_order_id=req.client_order_id, ticker=req.ticker,
                      book_side=req.book_side, price=req.price, initial_count=count, remaining_count=count,
                      fill_count=0, status="resting", time_in_force=req.time_in_force,
                      self_trade_prevention_type=req.self_trade_prevention_type, post_only=req.post_only,
                      reduce_only=req.reduce_only, expiration_time=req.expiration_time, created_time=now,
                      last_update_time=now, subaccount=req.subaccount, order_group_id=req.order_group_id,
                      cancel_order_on_pause=req.cancel_order_on_pause)
        self._orders[order.order_id] = order
        self._by_user.setdefault(user_id, []).append(order.order_id)
        if req.client_order_id:
            self._client_ids[(user_id, req.client_order_id)] = order.order_id
        if req.time_in_force == "fill_or_kill" and self._fillable(m, order, leg, leg_price) < count:
            order.remaining_count = 0
            order.status = "canceled"
            order.last_update_reason = "FillOrKillNotFilled"
            self._emit(OrderUpdate(replace(order)))
            return PlaceResult(replace(order), [])
        fills = self._match(m, order, leg, leg_price)
        if order.remaining_count > 0 and order.status == "resting":
            if req.time_in_force == "good_till_canceled":
                self._rest(m, order, leg, leg_price)
            else:
                order.remaining_count = 0
                order.status = "canceled" if order.fill_count < count or req.time_in_force != "fill_or_kill" \
                    else "executed"
                order.last_update_reason = "ImmediateOrCancel"
        if order.remaining_count == 0 and order.status == "resting":
            order.status = "executed"
        self._emit(OrderUpdate(replace(order)))
        return PlaceResult(replace(order), fills)

    @staticmethod
    def _leg(book_side: BookSide, yes_price: int) -> tuple[OutcomeSide, int]:
        return ("yes", yes_price) if book_side == "bid" else ("no", ONE_DOLLAR - yes_price)

    @staticmethod
    def _opposite(m: _Market, leg: OutcomeSide) -> LevelBook:
        return m.no if leg == "yes" else m.yes

    def _crosses(self, m: _Market, leg: OutcomeSide, leg_price: int) -> bool:
        best = self._opposite(m, leg).best()
        return best is not None and best + leg_price >= ONE_DOLLAR

    def _fillable(self, m: _Market, order: Order, leg: OutcomeSide, leg_price: int) -> int:
        total = 0
        for e in self._opposite(m, leg).entries_from_best(ONE_DOLLAR - leg_price):
            maker: Order = e.ref  # type: ignore[assignment]
            if maker.user_id == order.user_id:
                if order.self_trade_prevention_type == "taker_at_cross":
                    break
                continue
            total += e.remaining
            if total >= order.remaining_count:
                break
        return total

    def _match(self, m: _Market, order: Order, leg: OutcomeSide, leg_price: int) -> list[Fill]:
        fills: list[Fill] = []
        book = self._opposite(m, leg)
        for e in book.entries_from_best(ONE_DOLLAR - leg_price):
            if order.remaining_count <= 0:
                break
            maker: Order = e.ref  # type: ignore[assignment]
            if maker.user_id == order.user_id:
                if order.self_trade_prevention_type == "taker_at_cross":
                    order.remaining_count = 0
                    order.status = "canceled"
                    order.last_update_reason = "SelfTradePrevention"
                    break
                self._cancel_resting(self._resting[maker.order_id], "SelfTradePrevention")
                continue
            qty = min(order.remaining_count, e.remaining)
            fills.extend(self._execute(m, order, maker, qty, e.price))
        return fills

    def _execute(self, m: _Market, taker: Order, maker: Order, qty: int, maker_leg_price: int) -> list[Fill]:
        spec = m.spec
        now = self.clock()
        r = self._resting[maker.order_id]
        maker_leg = r.leg
        yes_price = maker_leg_price if maker_leg == "yes" else ONE_DOLLAR - maker_leg_price
        taker_leg: OutcomeSide = "no" if maker_leg == "yes" else "yes"
        # The maker's level shrinks; its reservation is recomputed for what remains.
        self._opposite(m, taker_leg).reduce(r.entry, qty)
        self._emit(BookDelta(spec.ticker, maker_leg, maker_leg_price, -qty, now, maker.user_id,
                             maker.client_order_id))
        self._release(r)
        maker.remaining_count -= qty
        maker.fill_count += qty
        taker.remaining_count -= qty
        taker.fill_count += qty
        trade = Trade(self._ids(), spec.ticker, yes_price, qty, taker_leg, taker.book_side, now)
        self._trades.append(trade)
        out = []
        positions = []
        for o, leg, is_taker in ((taker, taker_leg, True), (maker, maker_leg, False)):
            leg_price = yes_price if leg == "yes" else ONE_DOLLAR - yes_price
            f = self._fee(spec, qty, yes_price, is_taker)
            cost = _pay(qty, leg_price)
            if is_taker:
                o.taker_fill_cost += cost
                o.taker_fees += f
            else:
                o.maker_fill_cost += cost
                o.maker_fees += f
            o.last_update_time = now
            pos = self._apply_fill(o.user_id, spec.ticker, leg, qty, leg_price, f, now)
            positions.append(replace(pos))
            fill = Fill(fill_id=trade.trade_id + ("-t" if is_taker else "-m"), trade_id=trade.trade_id,
                        order_id=o.order_id, client_order_id=o.client_order_id, user_id=o.user_id,
                        ticker=spec.ticker, book_side=o.book_side, outcome_side=leg, yes_price=yes_price, count=qty,
                        is_taker=is_taker, fee=f, post_position=pos.position, created_time=now)
            self._fills.append(fill)
            out.append(fill)
        if maker.remaining_count <= 0:
            maker.status = "executed"
            del self._resting[maker.order_id]
        else:
            self._hold(r)
        # Causal order as Kalshi reports it: the trade, each side's fill, then positions and the maker's order.
        self._emit(trade)
        for f in out:
            self._emit(f)
        for p in positions:
            self._emit(PositionUpdate(p))
        self._emit(OrderUpdate(replace(maker)))
        return out

    def _apply_fill(self, user: str, ticker: str, leg: OutcomeSide, qty: int, leg_price: int, f: int,
                    now: datetime) -> Position:
        acct = self._accounts[user]
        pos = self._positions.get((user, ticker))
        if pos is None:
            pos = self._positions[(user, ticker)] = Position(user, ticker)
        signed = qty if leg == "yes" else -qty
        opposite = -pos.position if leg == "yes" else pos.position  # what this fill nets against
        closing = min(qty, max(opposite, 0))
        opening = qty - closing
        cash = -_pay(qty, leg_price) - f
        if closing:
            # Each YES+NO pair is redeemed for $1 at once: closing k contracts pays back k dollars.
            basis = pos.market_exposure * closing // abs(pos.position)
            cash += _receive(closing, ONE_DOLLAR)
            pos.realized_pnl += _receive(closing, ONE_DOLLAR) - _pay(closing, leg_price) - basis
            pos.market_exposure -= basis
        if opening:
            pos.market_exposure += _pay(opening, leg_price)
        acct.cash += cash
        pos.position += signed
        pos.fees_paid += f
        pos.realized_pnl -= f
        pos.total_traded += _pay(qty, leg_price)
        pos.last_updated = now
        return pos

    def _rest(self, m: _Market, order: Order, leg: OutcomeSide, leg_price: int) -> None:
        entry = Entry(order, leg_price, order.remaining_count)
        (m.yes if leg == "yes" else m.no).add(entry)
        r = _Resting(order, entry, leg)
        self._resting[order.order_id] = r
        self._hold(r)
        self._emit(BookDelta(order.ticker, leg, leg_price, order.remaining_count, self.clock(), order.user_id,
                             order.client_order_id))

    def _hold(self, r: _Resting) -> None:
        spec = self._markets[r.order.ticker].spec
        r.reserve = self._reserve_for(spec, r.entry.remaining, r.entry.price)
        self._accounts[r.order.user_id].reserved += r.reserve

    def _release(self, r: _Resting) -> None:
        self._accounts[r.order.user_id].reserved -= r.reserve
        r.reserve = 0

    def _cancel_resting(self, r: _Resting, reason: str) -> int:
        m = self._markets[r.order.ticker]
        qty = r.entry.remaining
        (m.yes if r.leg == "yes" else m.no).remove(r.entry)
        self._release(r)
        del self._resting[r.order.order_id]
        o = r.order
        o.remaining_count = 0
        o.status = "canceled"
        o.last_update_reason = reason
        o.last_update_time = self.clock()
        self._emit(BookDelta(o.ticker, r.leg, r.entry.price, -qty, o.last_update_time, o.user_id, o.client_order_id))
        self._emit(OrderUpdate(replace(o)))
        return qty

    def _resting_of(self, user_id: str, order_id: str) -> _Resting:
        o = self._order_of(user_id, order_id)
        r = self._resting.get(order_id)
        if r is None:
            raise ExchangeError("invalid_order", f"order {order_id} is {o.status}, not resting")
        return r

    def amend(self, user_id: str, order_id: str, *, ticker: str, book_side: BookSide, price: int, count: int,
              client_order_id: str | None = None, updated_client_order_id: str | None = None) -> PlaceResult:
        """Change price and/or total count; only a pure size decrease keeps queue priority."""
        o = self._order_of(user_id, order_id)
        if o.ticker != ticker:
            raise ExchangeError("order_ticker_mismatch", "ticker does not match the order")
        if o.book_side != book_side:
            raise ExchangeError("order_side_mismatch", "side does not match the order")
        if client_order_id is not None and client_order_id != o.client_order_id:
            raise ExchangeError("order_id_and_client_order_id_mismatch", "client_order_id does not match the order")
        m = self._m(ticker)
        self._check_open(m.spec)
        self._check_price(m.spec, price)
        r = self._resting_of(user_id, order_id)
        new_remaining = count - o.fill_count
        if new_remaining <= 0:
            raise ExchangeError("invalid_order_size", "count must exceed the already filled count")
        if updated_client_order_id:
            if (user_id, updated_client_order_id) in self._client_ids:
                raise ExchangeError("order_already_exists", "updated_client_order_id is taken", status=409)
            self._client_ids[(user_id, updated_client_order_id)] = o.order_id
            o.client_order_id = updated_client_order_id
        now = self.clock()
        if price == o.price and new_remaining <= o.remaining_count:
            if new_remaining < o.remaining_count:
                self._shrink(r, o.remaining_count - new_remaining)
            o.initial_count = count
            o.last_update_time = now
            self._emit(OrderUpdate(replace(o)))
            return PlaceResult(replace(o), [])
        leg, leg_price = self._leg(book_side, price)
        if o.post_only and self._crosses_excluding(m, leg, leg_price):
            raise ExchangeError("invalid_order", "post only cross", details="post only cross")
        extra = self._reserve_for(m.spec, new_remaining, leg_price) - r.reserve
        if extra > 0 and self.balance(user_id) < extra:
            raise ExchangeError("available_balance_too_low", "available balance is too low for this amend")
        # Leave the queue, then behave like a new order at the new terms (back of the queue).
        self._cancel_silently(r)
        o.price = price
        o.remaining_count = new_remaining
        o.initial_count = count
        o.last_update_time = now
        o.status = "resting"
        fills = self._match(m, o, leg, leg_price)
        if o.remaining_count > 0 and o.status == "resting":
            self._rest(m, o, leg, leg_price)
        elif o.remaining_count == 0 and o.status == "resting":
            o.status = "executed"
        self._emit(OrderUpdate(replace(o)))
        return PlaceResult(replace(o), fills)

    def _crosses_excluding(self, m: _Market, leg: OutcomeSide, leg_price: int) -> bool:
        return self._crosses(m, leg, leg_price)

    def _cancel_silently(self, r: _Resting) -> None:
        m = self._markets[r.order.ticker]
        qty = r.entry.remaining
        (m.yes if r.leg == "yes" else m.no).remove(r.entry)
        self._release(r)
        del self._resting[r.order.order_id]
        self._emit(BookDelta(r.order.ticker, r.leg, r.entry.price, -qty, self.clock(), r.order.user_id,
                             r.order.client_order_id))

    def _shrink(self, r: _Resting, by: int) -> None:
        m = self._markets[r.order.ticker]
        self._release(r)
        (m.yes if r.leg == "yes" else m.no).reduce(r.entry, by)
        r.order.remaining_count -= by
        self._emit(BookDelta(r.order.ticker, r.leg, r.entry.price, -by, self.clock(), r.order.user_id,
                             r.order.client_order_id))
        if r.order.remaining_count > 0:
            self._hold(r)

    def decrease(self, user_id: str, order_id: str, *, reduce_by: int | None = None,
                 reduce_to: int | None = None) -> Order:
        """Reduce a resting order in place (keeps priority); to zero cancels it."""
        if (reduce_by is None) == (reduce_to is None):
            raise ExchangeError("invalid_parameters", "exactly one of reduce_by and reduce_to is required")
        o = self._order_of(user_id, order_id)
        self._check_open_for_cancel(o.ticker)
        r = self._resting_of(user_id, order_id)
        target = o.remaining_count - reduce_by if reduce_by is not None else reduce_to
        assert target is not None
        if target < 0 or target > o.remaining_count:
            raise ExchangeError("invalid_order_size", "reduce_to must be between 0 and the remaining count")
        if target == 0:
            self._cancel_resting(r, "Decreased")
        elif target < o.remaining_count:
            self._shrink(r, o.remaining_count - target)
            o.last_update_time = self.clock()
            self._emit(OrderUpdate(replace(o)))
        return replace(o)

    def _check_open_for_cancel(self, ticker: str) -> None:
        status = self._m(ticker).spec.status
        if status not in ("active", "inactive"):
            raise ExchangeError("MARKET_INACTIVE", f"market {ticker} is {status}")

    def cancel(self, user_id: str, order_id: str) -> tuple[Order, int]:
        """Cancel a resting order; returns it and how much was cancelled."""
        o = self._order_of(user_id, order_id)
        self._check_open_for_cancel(o.ticker)
        r = self._resting_of(user_id, order_id)
        qty = self._cancel_resting(r, "Canceled")
        return replace(o), qty

    def cancel_all(self, user_id: str) -> list[Order]:
        """Cancel every resting order of a user."""
        out = []
        for r in [r for r in self._resting.values() if r.order.user_id == user_id]:
            self._cancel_resting(r, "Canceled")
            out.append(replace(r.order))
        return out

    def expire(self, now: datetime | None = None) -> list[Order]:
        """Cancel GTC orders whose expiration time has passed."""
        now = now or self.clock()
        out = []
        for r in [r for r in self._resting.values()
                  if r.order.expiration_time is not None and r.order.expiration_time <= now]:
            self._cancel_resting(r, "Expired")
            out.append(replace(r.order))
        return out

    # -- reads ----------------------------------------------------------------------------------

    def get_order(self, user_id: str, order_id: str) -> Order:
        """One order of a user."""
        return replace(self._order_of(user_id, order_id))

    def orders(self, user_id: str, *, ticker: str | None = None, status: OrderStatus | None = None) -> list[Order]:
        """A user's orders, newest first."""
        out = []
        for oid in reversed(self._by_user.get(user_id, [])):
            o = self._orders[oid]
            if (ticker is None or o.ticker == ticker) and (status is None or o.status == status):
                out.append(replace(o))
        return out

    def queue_position(self, user_id: str, order_id: str) -> int:
        """Contracts ahead of a resting order at its price."""
        r = self._resting_of(user_id, order_id)
        m = self._markets[r.order.ticker]
        return (m.yes if r.leg == "yes" else m.no).ahead_of(r.entry)

    def book(self, ticker: str, depth: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(YES bids, NO bids) ascending, best last; NO side at NO prices."""
        m = self._m(ticker)
        return m.yes.levels(depth), m.no.levels(depth)

    def positions(self, user_id: str) -> list[Position]:
        """A user's unsettled positions (markets where they traded)."""
        return [replace(p) for (u, _), p in self._positions.items() if u == user_id]

    def fills(self, user_id: str, *, ticker: str | None = None, order_id: str | None = None) -> list[Fill]:
        """A user's fills, newest first."""
        return [f for f in reversed(self._fills) if f.user_id == user_id and (ticker is None or f.ticker == ticker)
                and (order_id is None or f.order_id == order_id)]

    def settlements(self, user_id: str) -> list[Settlement]:
        """A user's settled positions, newest first."""
        return [s for s in reversed(self._settlements) if s.user_id == user_id]

    def trades(self, ticker: str | None = None) -> list[Trade]:
        """Public trades, newest first."""
        return [t for t in reversed(self._trades) if ticker is None or t.ticker == ticker]
