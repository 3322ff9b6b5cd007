"""A Kalshi-style matching engine: YES/NO bids, price-time priority, V2 order semantics, fees, settlement.

Pure and synchronous: the simulated exchange calls it from request handlers and turns its events into
REST answers and WebSocket pushes; nothing here does I/O. Semantics are in `types.py`.

Money is integer throughout ($0.0001 ticks, counts in 1/100 contract); the rules for what cannot be exact:
- Cost. count x price / 100 may fall between ticks (fractional counts on sub-cent grids). Every fill is a
  purchase (of YES or of NO), and a buyer's cost is rounded UP, per order and cumulatively: after each fill
  an order has paid exactly ceil(sum of count x price / 100) over its fills, so splitting an order into many
  fills never costs more than one fill would, and collateral reserved for the rest of an order is exactly
  what filling it will take. Both legs rounding up means the exchange can keep a sub-tick remainder, never
  pay one out.
- Pair redemption. Holding YES and buying NO (or the reverse) nets: each YES+NO pair is redeemed at once for
  $1 = 100 ticks per 1/100 contract, which is always exact.
- Fees. Charged per fill with `money.fee` at the YES price (P(1-P) is the same from either leg), taker rate on
  the taker, maker rate on the maker (0 on plain `quadratic`), rounded up to the tick (or cent, legacy mode).
- Collateral. A resting order reserves what filling its remainder at its limit would cost, plus the taker fee
  on it (an upper bound on the maker fee it will actually pay). A reduce-only order reserves nothing: it can
  only close contracts, which releases cash, and it is re-capped to the position whenever it trades.
- Shards. Cash lives per exchange shard (`MarketSpec.exchange_index`, kalshi_api.md §3.12): an order
  reserves, pays and is paid on its market's shard only, so funds on shard 0 cannot back a shard-2 order.
  An account opened without a shard is pooled instead: one wallet serves every shard (synthetic
  traders, a paper broker — venues where the split means nothing).
- Solvency is enforced at each fill: a taker that cannot pay for the next fill stops there (rest cancelled,
  reason "InsufficientBalance"), a maker that cannot is cancelled and matching moves on. Neither happens
  with whole-cent prices and whole-contract counts; they absorb the tick-rounding corner cases so no
  available balance ever goes negative.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

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
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, fee

_TIME_IN_FORCE = ("fill_or_kill", "good_till_canceled", "immediate_or_cancel")
_STP = ("taker_at_cross", "maker")
_CANCELLABLE = ("active", "inactive")  # cancels/decreases are accepted while paused, refused after close
_PAIR = ONE_DOLLAR // ONE_CONTRACT  # ticks one 1/100-contract YES+NO pair redeems for


_Short = Literal["taker_short", "maker_short"]


_O = TypeVar("_O", Order, Position)


def _snap(x: _O) -> _O:
    """A shallow copy of an Order or Position for events and answers (dataclasses.replace is 20x slower)."""
    new = object.__new__(type(x))
    new.__dict__.update(x.__dict__)
    return new


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


@dataclass(slots=True)
class _Resting:
    """A resting order's place in the book and the collateral it holds."""

    order: Order
    entry: Entry
    leg: OutcomeSide  # which bid book it rests in
    reserve: int = 0


@dataclass(slots=True)
class _Wallet:
    """Cash on one shard, including the collateral its resting orders reserve."""

    cash: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.cash - self.reserved


@dataclass(slots=True)
class _User:
    """One account: wallets (per shard, or one pooled), orders, positions, history."""

    wallets: dict[int, _Wallet]
    pooled: bool = False  # one wallet (key 0) serves every shard
    orders: list[str] = field(default_factory=list)  # ids in creation order
    client_ids: dict[str, str] = field(default_factory=dict)  # every client_order_id ever used -> order id
    resting: dict[str, _Resting] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)  # unsettled, by ticker
    fills: list[Fill] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)

    def wallet(self, shard: int) -> _Wallet:
        """The wallet that pays for orders on `shard` (created empty when first used)."""
        key = 0 if self.pooled else shard
        w = self.wallets.get(key)
        if w is None:
            w = self.wallets[key] = _Wallet()
        return w

    def available(self, shard: int) -> int:
        """Cash on `shard` not held by resting orders (0 on a shard never funded)."""
        w = self.wallets.get(0 if self.pooled else shard)
        return w.available if w is not None else 0


@dataclass(slots=True)
class _Market:
    spec: MarketSpec
    yes: LevelBook = field(default_factory=LevelBook)  # YES bids at YES prices
    no: LevelBook = field(default_factory=LevelBook)  # NO bids at NO prices
    resting: dict[str, _Resting] = field(default_factory=dict)
    holders: dict[str, Position] = field(default_factory=dict)  # user -> unsettled position
    trades: list[Trade] = field(default_factory=list)

    def bids(self, leg: OutcomeSide) -> LevelBook:
        return self.yes if leg == "yes" else self.no


def _leg(book_side: BookSide, yes_price: int) -> tuple[OutcomeSide, int]:
    """The bid an order really is: `bid` buys YES at p, `ask` buys NO at $1 - p."""
    return ("yes", yes_price) if book_side == "bid" else ("no", ONE_DOLLAR - yes_price)


class MatchingEngine:
    """Matching, accounts, positions and settlement for a set of markets."""

    def __init__(self, clock: Callable[[], datetime], *, ids: Callable[[], str] | None = None,
                 fee_rounding: Literal["tick", "cent"] = "tick") -> None:
        """`clock` returns UTC-aware now; `ids` makes order/trade ids (uuid4 by default)."""
        if fee_rounding not in ("tick", "cent"):
            raise ValueError(f"fee_rounding must be 'tick' or 'cent', got {fee_rounding!r}")
        self.clock = clock
        self._ids = ids or (lambda: str(uuid.uuid4()))
        self.fee_rounding: Literal["tick", "cent"] = fee_rounding
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self._markets: dict[str, _Market] = {}
        self._users: dict[str, _User] = {}
        self._orders: dict[str, Order] = {}
        self._resting: dict[str, _Resting] = {}
        # order id -> sum of count x leg price over its fills, in 1/100 tick: drives cumulative cost rounding.
        self._cost_num: dict[str, int] = {}
        self._trades: list[Trade] = []
        self._expiry: list[tuple[datetime, int, str]] = []  # heap of GTC expirations
        self._seq = itertools.count()

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
            raise ExchangeError("not_found", f"market {ticker} not found", status=404, details=ticker)
        return m

    def _u(self, user_id: str) -> _User:
        u = self._users.get(user_id)
        if u is None:
            raise ExchangeError("not_found", f"no account for user {user_id}", status=404)
        return u

    def _order_of(self, user_id: str, order_id: str) -> Order:
        o = self._orders.get(order_id)
        if o is None or o.user_id != user_id:
            raise ExchangeError("not_found", f"order {order_id} not found", status=404, details=order_id)
        return o

    def _resting_of(self, o: Order) -> _Resting:
        r = self._resting.get(o.order_id)
        if r is None:
            raise ExchangeError("invalid_order", f"order {o.order_id} is {o.status}, not resting",
                                details="order is not resting")
        return r

    # -- markets --------------------------------------------------------------------------------

    def add_market(self, spec: MarketSpec) -> None:
        """List a market (the engine keeps and updates this spec object)."""
        if spec.ticker in self._markets:
            raise ValueError(f"market {spec.ticker} is already listed")
        # Fail at listing, not at the first trade, when the fee schedule is one we cannot compute.
        fee(ONE_CONTRACT, ONE_DOLLAR // 2, rate="taker", fee_type=spec.fee_type, multiplier=spec.fee_multiplier)
        self._markets[spec.ticker] = _Market(spec)

    def market(self, ticker: str) -> MarketSpec:
        """A listed market's spec (404 `not_found` if unknown)."""
        return self._m(ticker).spec

    def set_status(self, ticker: str, status: MarketStatus) -> None:
        """Change a market's status, cancelling resting orders as Kalshi does."""
        m = self._m(ticker)
        old = m.spec.status
        if old == status:
            return
        m.spec.status = status
        if status == "inactive":
            self._cancel_market(m, "MarketPaused", only_on_pause=True)
        elif old == "inactive" and status == "active":
            # Reactivating a paused market cancels every resting order (kalshi_api.md §8 lifecycle).
            self._cancel_market(m, "MarketReactivated")
        elif status in ("closed", "determined", "finalized"):
            self._cancel_market(m, "MarketClosed")
        self._emit(MarketStatusChange(ticker, status, m.spec.result, self.clock()))

    def _cancel_market(self, m: _Market, reason: str, *, only_on_pause: bool = False) -> None:
        for r in list(m.resting.values()):
            if not only_on_pause or r.order.cancel_order_on_pause:
                self._cancel_resting(r, reason)

    def settle(self, ticker: str, result: Result) -> list[Settlement]:
        """Pay $1 per winning contract, record settlements, drop the positions and finalize the market."""
        m = self._m(ticker)
        if result not in ("yes", "no"):
            raise ExchangeError("invalid_parameters", f"result must be 'yes' or 'no', got {result!r}")
        if m.spec.status not in ("closed", "determined"):
            raise ExchangeError("invalid_parameters",
                                f"market {ticker} is {m.spec.status}; only a closed market can be settled")
        m.spec.result = result
        now = self.clock()
        if m.spec.status != "determined":
            m.spec.status = "determined"
            self._emit(MarketStatusChange(ticker, "determined", result, now))
        out = []
        for user_id, pos in list(m.holders.items()):
            u = self._users[user_id]
            yes, no = max(pos.position, 0), max(-pos.position, 0)
            revenue = (yes if result == "yes" else no) * _PAIR
            u.wallet(m.spec.exchange_index).cash += revenue
            s = Settlement(user_id=user_id, ticker=ticker, event_ticker=m.spec.event_ticker, market_result=result,
                           yes_count=yes, no_count=no, yes_total_cost=pos.market_exposure if yes else 0,
                           no_total_cost=pos.market_exposure if no else 0, revenue=revenue,
                           fee_cost=pos.fees_paid, settled_time=now)
            u.settlements.append(s)
            out.append(s)
            del u.positions[ticker]
            pos.realized_pnl += revenue - pos.market_exposure
            pos.position, pos.market_exposure, pos.last_updated = 0, 0, now
            self._emit(PositionUpdate(_snap(pos)))
        m.holders.clear()
        m.spec.status = "finalized"
        self._emit(MarketStatusChange(ticker, "finalized", result, now))
        return out

    # -- accounts -------------------------------------------------------------------------------

    def open_account(self, user_id: str, balance: int, *, exchange_index: int | None = None) -> None:
        """Create an account with `balance` ticks available, or set an existing one's available balance.

        With `exchange_index` the balance is that shard's and the account keeps one wallet per shard
        (fund each shard with its own call); without, the account is pooled: one wallet for every shard.
        """
        u = self._users.get(user_id)
        if u is None:
            self._users[user_id] = _User({exchange_index or 0: _Wallet(balance)}, pooled=exchange_index is None)
            return
        if u.pooled != (exchange_index is None):
            kind = "pooled (one wallet for every shard)" if u.pooled else "kept per shard"
            raise ValueError(f"the account of {user_id} is {kind}; fund it the same way it was opened")
        w = u.wallet(exchange_index or 0)
        w.cash = balance + w.reserved

    def balance(self, user_id: str, exchange_index: int | None = None) -> int:
        """Available cash (cash minus collateral reserved by resting orders): on one shard, or on all of them."""
        u = self._u(user_id)
        if exchange_index is None:
            return sum(w.available for w in u.wallets.values())
        return u.available(exchange_index)

    def balances(self, user_id: str) -> dict[int, int]:
        """Available cash per shard the account holds a wallet on (a pooled account: all on shard 0)."""
        return {k: w.available for k, w in sorted(self._u(user_id).wallets.items())}

    def cash(self, user_id: str, exchange_index: int | None = None) -> int:
        """All cash, including the collateral resting orders hold (what conservation checks add up)."""
        u = self._u(user_id)
        if exchange_index is None:
            return sum(w.cash for w in u.wallets.values())
        w = u.wallets.get(0 if u.pooled else exchange_index)
        return w.cash if w is not None else 0

    def portfolio_value(self, user_id: str, exchange_index: int | None = None) -> int:
        """Open positions (on one shard, or all) marked at the best bid of their side, rounded down (0 if none)."""
        total = 0
        for ticker, pos in self._u(user_id).positions.items():
            m = self._markets[ticker]
            if pos.position and (exchange_index is None or m.spec.exchange_index == exchange_index):
                best = m.bids("yes" if pos.position > 0 else "no").best() or 0
                total += abs(pos.position) * best // ONE_CONTRACT
        return total

    # -- validation -----------------------------------------------------------------------------

    @staticmethod
    def _check_open(spec: MarketSpec) -> None:
        if spec.status == "inactive":
            raise ExchangeError("trading_is_paused", f"trading is paused for {spec.ticker}", status=409,
                                details="market is paused")
        if spec.status != "active":
            raise ExchangeError("MARKET_INACTIVE", f"market {spec.ticker} is {spec.status}",
                                details=f"market status is {spec.status}")

    def _check_cancellable(self, ticker: str) -> None:
        status = self._m(ticker).spec.status
        if status not in _CANCELLABLE:
            raise ExchangeError("MARKET_INACTIVE", f"market {ticker} is {status}", details=f"market status is {status}")

    @staticmethod
    def _check_price(spec: MarketSpec, price: object) -> None:
        if isinstance(price, bool) or not isinstance(price, int) or not spec.grid.is_valid(price):
            raise ExchangeError("invalid_price", f"price {price!r} ticks is not a valid price on {spec.ticker}'s grid",
                                details="price must be strictly between 0 and 1 and on the market's price_ranges")

    @staticmethod
    def _check_count(count: object, what: str = "count") -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ExchangeError("invalid_order_size", f"{what} must be a positive number of 0.01 contracts",
                                details=f"{what}={count!r}")

    def _fee(self, spec: MarketSpec, count: int, price: int, taker: bool) -> int:
        return fee(count, price, rate="taker" if taker else "maker", fee_type=spec.fee_type,
                   multiplier=spec.fee_multiplier, round_to=self.fee_rounding)

    def _cost(self, order_id: str, count: int, leg_price: int) -> tuple[int, int]:
        """(ticks this fill costs the order, the order's new cost numerator): cumulative round-up."""
        before = self._cost_num.get(order_id, 0)
        after = before + count * leg_price
        return _ceil_div(after, ONE_CONTRACT) - _ceil_div(before, ONE_CONTRACT), after

    def _reserve_for(self, spec: MarketSpec, order: Order, remaining: int, leg_price: int,
                     cost_num: int | None = None) -> int:
        """Collateral for `remaining` more at `leg_price`: its exact cost to this order plus the taker fee."""
        if order.reduce_only or remaining <= 0:
            return 0
        before = self._cost_num.get(order.order_id, 0) if cost_num is None else cost_num
        cost = _ceil_div(before + remaining * leg_price, ONE_CONTRACT) - _ceil_div(before, ONE_CONTRACT)
        return cost + self._fee(spec, remaining, leg_price, True)

    @staticmethod
    def _reducible(u: _User, ticker: str, book_side: BookSide) -> int:
        """How much an order on `book_side` can reduce the user's position (bid reduces NO, ask reduces YES)."""
        pos = u.positions.get(ticker)
        held = pos.position if pos is not None else 0
        return max(-held if book_side == "bid" else held, 0)

    @staticmethod
    def _crosses(m: _Market, leg: OutcomeSide, leg_price: int) -> bool:
        best = m.bids("no" if leg == "yes" else "yes").best()
        return best is not None and best + leg_price >= ONE_DOLLAR

    # -- orders ---------------------------------------------------------------------------------

    def place(self, user_id: str, req: OrderRequest) -> PlaceResult:
        """Create an order: validate, match at resting prices, then rest (GTC) or cancel (IOC/FoK) the rest.

        `PlaceResult.fills` holds both sides of every execution (the taker's fill, then the maker's).
        """
        u = self._u(user_id)
        m = self._m(req.ticker)
        spec = m.spec
        self._check_open(spec)
        self._check_price(spec, req.price)
        self._check_count(req.count)
        if req.book_side not in ("bid", "ask"):
            raise ExchangeError("invalid_parameters", f"side must be bid or ask, got {req.book_side!r}")
        if req.time_in_force not in _TIME_IN_FORCE:
            raise ExchangeError("invalid_parameters", f"unknown time_in_force {req.time_in_force!r}")
        if req.self_trade_prevention_type not in _STP:
            raise ExchangeError("invalid_parameters",
                                f"unknown self_trade_prevention_type {req.self_trade_prevention_type!r}")
        now = self.clock()
        if req.expiration_time is not None:
            if req.time_in_force == "immediate_or_cancel":
                raise ExchangeError("invalid_parameters", "Cannot specify both immediate_or_cancel and expiration_ts",
                                    details="Cannot specify both immediate_or_cancel and expiration_ts")
            if req.time_in_force != "good_till_canceled":
                raise ExchangeError("invalid_parameters", "expiration_time is only allowed with good_till_canceled")
            if req.expiration_time <= now:
                raise ExchangeError("invalid_parameters", "Expiration timestamp must be in the future",
                                    details="Expiration timestamp must be in the future")
        if req.client_order_id is not None and req.client_order_id in u.client_ids:
            raise ExchangeError("order_already_exists", "an order with this client_order_id already exists",
                                status=409, details=req.client_order_id)
        count = req.count
        if req.reduce_only:
            count = min(count, self._reducible(u, req.ticker, req.book_side))
            if count <= 0:
                raise ExchangeError("invalid_order", "reduce only order would not reduce the position",
                                    details="reduce only")
        leg, leg_price = _leg(req.book_side, req.price)
        if req.post_only and self._crosses(m, leg, leg_price):
            raise ExchangeError("invalid_order", "post only cross", details="post only cross")
        order = Order(order_id=self._ids(), user_id=user_id, client_order_id=req.client_order_id, ticker=req.ticker,
                      book_side=req.book_side, price=req.price, initial_count=count, remaining_count=count,
                      fill_count=0, status="resting", time_in_force=req.time_in_force,
                      self_trade_prevention_type=req.self_trade_prevention_type, post_only=req.post_only,
                      reduce_only=req.reduce_only, expiration_time=req.expiration_time, created_time=now,
                      last_update_time=now, subaccount=req.subaccount, order_group_id=req.order_group_id,
                      cancel_order_on_pause=req.cancel_order_on_pause)
        need = self._reserve_for(spec, order, count, leg_price)
        available = u.available(spec.exchange_index)
        if need > available:
            raise ExchangeError("available_balance_too_low", "available balance is too low for this order",
                                details=f"needs {need} ticks, {available} available on exchange index "
                                        f"{spec.exchange_index}")
        self._orders[order.order_id] = order
        u.orders.append(order.order_id)
        if req.client_order_id is not None:
            u.client_ids[req.client_order_id] = order.order_id
        # FoK checks the crossing size up front; matching then follows STP, and fills made before a
        # self-cross stand (kalshi_api.md §5: "FoK with self-cross follows STP rules ... not rolled back").
        if req.time_in_force == "fill_or_kill" and \
                m.bids("no" if leg == "yes" else "yes").size_from(ONE_DOLLAR - leg_price) < count:
            self._finish(order, "canceled", "FillOrKill")
            self._emit(OrderUpdate(_snap(order)))
            return PlaceResult(_snap(order), [])
        fills = self._match(m, order, leg, leg_price)
        if order.status == "resting":
            if order.remaining_count == 0:
                self._finish(order, "executed", None)
            elif req.time_in_force == "good_till_canceled":
                self._rest(m, order, leg, leg_price)
                if order.expiration_time is not None:  # once per order: an amend keeps the expiration
                    heapq.heappush(self._expiry, (order.expiration_time, next(self._seq), order.order_id))
            else:
                self._finish(order, "canceled",
                             "ImmediateOrCancel" if req.time_in_force == "immediate_or_cancel" else "FillOrKill")
        self._emit(OrderUpdate(_snap(order)))
        return PlaceResult(_snap(order), fills)

    def _finish(self, o: Order, status: OrderStatus, reason: str | None) -> None:
        """An order leaves the book for good: no remaining count, no cost accumulator."""
        o.remaining_count = 0
        o.status = status
        if reason is not None:
            o.last_update_reason = reason
        o.last_update_time = self.clock()
        self._cost_num.pop(o.order_id, None)

    def _match(self, m: _Market, order: Order, leg: OutcomeSide, leg_price: int) -> list[Fill]:
        """Trade `order` against the opposite bids it crosses, best price first, FIFO within a price."""
        fills: list[Fill] = []
        book = m.bids("no" if leg == "yes" else "yes")
        floor = ONE_DOLLAR - leg_price  # the lowest opposite bid this order crosses
        u = self._users[order.user_id]
        while order.remaining_count > 0:
            best = book.best()
            if best is None or best < floor:
                break
            r: _Resting = book.first(best).ref  # type: ignore[union-attr, assignment]
            maker = r.order
            if maker.user_id == order.user_id:
                if order.self_trade_prevention_type == "taker_at_cross":
                    self._finish(order, "canceled", "SelfTradePrevention")  # fills so far stand
                    break
                self._cancel_resting(r, "SelfTradePrevention")
                continue
            qty = min(order.remaining_count, r.entry.remaining)
            mu = self._users[maker.user_id]
            if maker.reduce_only:
                # A reduce-only maker never opens a position, even if its owner's position shrank meanwhile.
                qty = min(qty, self._reducible(mu, m.spec.ticker, maker.book_side))
                if qty <= 0:
                    self._cancel_resting(r, "ReduceOnly")
                    continue
            if order.reduce_only:
                qty = min(qty, self._reducible(u, m.spec.ticker, order.book_side))
                if qty <= 0:
                    self._finish(order, "canceled", "ReduceOnly")
                    break
            made = self._execute(m, order, r, qty)
            if made == "taker_short":
                self._finish(order, "canceled", "InsufficientBalance")
                break
            if made == "maker_short":
                self._cancel_resting(r, "InsufficientBalance")
                continue
            fills.extend(made)
        return fills

    def _cash_effect(self, u: _User, ticker: str, leg: OutcomeSide, qty: int, cost: int, f: int) -> int:
        """Signed cash change of a fill: pays cost and fee, gets $1 per pair it nets against the position."""
        pos = u.positions.get(ticker)
        held = pos.position if pos is not None else 0
        closing = min(qty, max(-held if leg == "yes" else held, 0))
        return closing * _PAIR - cost - f

    def _execute(self, m: _Market, taker: Order, r: _Resting, qty: int) -> list[Fill] | _Short:
        """One execution between a taker and the maker at the front of the best level."""
        spec = m.spec
        ticker = spec.ticker
        maker = r.order
        maker_leg, maker_price = r.leg, r.entry.price
        taker_leg: OutcomeSide = "no" if maker_leg == "yes" else "yes"
        taker_price = ONE_DOLLAR - maker_price  # trades at the resting price
        yes_price = maker_price if maker_leg == "yes" else taker_price
        tu, mu = self._users[taker.user_id], self._users[maker.user_id]
        tw, mw = tu.wallet(spec.exchange_index), mu.wallet(spec.exchange_index)
        t_cost, t_num = self._cost(taker.order_id, qty, taker_price)
        m_cost, m_num = self._cost(maker.order_id, qty, maker_price)
        t_fee = self._fee(spec, qty, yes_price, True)
        m_fee = self._fee(spec, qty, yes_price, False)
        # Solvency first, before anything moves (see the module docstring).
        if tw.available + self._cash_effect(tu, ticker, taker_leg, qty, t_cost, t_fee) < 0:
            return "taker_short"
        new_reserve = self._reserve_for(spec, maker, r.entry.remaining - qty, maker_price, m_num)
        if mw.cash - (mw.reserved - r.reserve + new_reserve) + \
                self._cash_effect(mu, ticker, maker_leg, qty, m_cost, m_fee) < 0:
            return "maker_short"

        now = self.clock()
        m.bids(maker_leg).reduce(r.entry, qty)
        self._emit(BookDelta(ticker, maker_leg, maker_price, -qty, now, maker.user_id, maker.client_order_id))
        self._cost_num[taker.order_id] = t_num
        self._cost_num[maker.order_id] = m_num
        mw.reserved += new_reserve - r.reserve
        r.reserve = new_reserve
        for o, c, f, is_taker in ((taker, t_cost, t_fee, True), (maker, m_cost, m_fee, False)):
            o.remaining_count -= qty
            o.fill_count += qty
            o.last_update_time = now
            if is_taker:
                o.taker_fill_cost += c
                o.taker_fees += f
            else:
                o.maker_fill_cost += c
                o.maker_fees += f
        trade = Trade(self._ids(), ticker, yes_price, qty, taker_leg, taker.book_side, now)
        self._trades.append(trade)
        m.trades.append(trade)
        fills: list[Fill] = []
        positions: list[Position] = []
        for o, u, leg, c, f, is_taker in ((taker, tu, taker_leg, t_cost, t_fee, True),
                                          (maker, mu, maker_leg, m_cost, m_fee, False)):
            pos = self._apply_fill(u, m, o.user_id, leg, qty, c, f, now)
            positions.append(_snap(pos))
            fill = Fill(fill_id=f"{trade.trade_id}-{'t' if is_taker else 'm'}", trade_id=trade.trade_id,
                        order_id=o.order_id, client_order_id=o.client_order_id, user_id=o.user_id, ticker=ticker,
                        book_side=o.book_side, outcome_side=leg, yes_price=yes_price, count=qty, is_taker=is_taker,
                        fee=f, post_position=pos.position, created_time=now)
            u.fills.append(fill)
            fills.append(fill)
        if maker.remaining_count == 0:
            self._unrest(r)
            self._finish(maker, "executed", None)
        # Causal order as Kalshi reports it: the trade, each side's fill, the positions, the maker's order.
        self._emit(trade)
        for fill in fills:
            self._emit(fill)
        for p in positions:
            self._emit(PositionUpdate(p))
        self._emit(OrderUpdate(_snap(maker)))
        return fills

    def _apply_fill(self, u: _User, m: _Market, user_id: str, leg: OutcomeSide, qty: int, cost: int, f: int,
                    now: datetime) -> Position:
        """Move cash and the position for one side of a fill, netting YES against NO."""
        ticker = m.spec.ticker
        pos = u.positions.get(ticker)
        if pos is None:
            pos = u.positions[ticker] = m.holders[user_id] = Position(user_id, ticker)
        held = pos.position
        closing = min(qty, max(-held if leg == "yes" else held, 0))
        opening = qty - closing
        close_cost = cost * closing // qty
        if closing:
            # The closed contracts' share of the cost basis leaves the position; the pairs pay $1 each.
            basis = pos.market_exposure * closing // abs(held)
            pos.realized_pnl += closing * _PAIR - close_cost - basis
            pos.market_exposure -= basis
        if opening:
            pos.market_exposure += cost - close_cost
        u.wallet(m.spec.exchange_index).cash += closing * _PAIR - cost - f
        pos.position += qty if leg == "yes" else -qty
        pos.fees_paid += f
        pos.realized_pnl -= f  # realized P&L is net of fees; fees_paid shows them separately
        pos.total_traded += cost
        pos.last_updated = now
        return pos

    def _rest(self, m: _Market, order: Order, leg: OutcomeSide, leg_price: int) -> None:
        """Put an order's remainder at the back of its level and hold its collateral."""
        entry = Entry(None, leg_price, order.remaining_count)
        r = _Resting(order, entry, leg)
        entry.ref = r
        m.bids(leg).add(entry)
        oid = order.order_id
        self._resting[oid] = m.resting[oid] = self._users[order.user_id].resting[oid] = r
        self._hold(r)
        self._emit(BookDelta(order.ticker, leg, leg_price, order.remaining_count, self.clock(), order.user_id,
                             order.client_order_id))

    def _hold(self, r: _Resting) -> None:
        spec = self._markets[r.order.ticker].spec
        w = self._users[r.order.user_id].wallet(spec.exchange_index)
        w.reserved -= r.reserve
        r.reserve = self._reserve_for(spec, r.order, r.entry.remaining, r.entry.price)
        w.reserved += r.reserve

    def _unrest(self, r: _Resting) -> None:
        """Forget a resting order that has left the book; release its collateral."""
        o = r.order
        self._users[o.user_id].wallet(self._markets[o.ticker].spec.exchange_index).reserved -= r.reserve
        r.reserve = 0
        del self._resting[o.order_id]
        del self._markets[o.ticker].resting[o.order_id]
        del self._users[o.user_id].resting[o.order_id]

    def _pull(self, r: _Resting) -> int:
        """Take a resting order out of the book (emitting the level change); returns what it had left."""
        qty = r.entry.remaining
        self._markets[r.order.ticker].bids(r.leg).remove(r.entry)
        self._unrest(r)
        self._emit(BookDelta(r.order.ticker, r.leg, r.entry.price, -qty, self.clock(), r.order.user_id,
                             r.order.client_order_id))
        return qty

    def _cancel_resting(self, r: _Resting, reason: str) -> int:
        qty = self._pull(r)
        self._finish(r.order, "canceled", reason)
        self._emit(OrderUpdate(_snap(r.order)))
        return qty

    def _shrink(self, r: _Resting, by: int) -> None:
        """Reduce a resting order in place: it keeps its queue position."""
        m = self._markets[r.order.ticker]
        m.bids(r.leg).reduce(r.entry, by)
        r.order.remaining_count -= by
        r.order.last_update_time = self.clock()
        self._hold(r)
        self._emit(BookDelta(r.order.ticker, r.leg, r.entry.price, -by, self.clock(), r.order.user_id,
                             r.order.client_order_id))

    def amend(self, user_id: str, order_id: str, *, ticker: str, book_side: BookSide, price: int, count: int,
              client_order_id: str | None = None, updated_client_order_id: str | None = None) -> PlaceResult:
        """Change price and/or total count (filled + remaining); only a pure size decrease keeps priority."""
        u = self._u(user_id)
        o = self._order_of(user_id, order_id)
        if o.ticker != ticker:
            raise ExchangeError("order_ticker_mismatch", f"order {order_id} is on {o.ticker}, not {ticker}")
        if o.book_side != book_side:
            raise ExchangeError("order_side_mismatch", f"order {order_id} is a {o.book_side}, not a {book_side}")
        if client_order_id is not None and client_order_id != o.client_order_id:
            raise ExchangeError("order_id_and_client_order_id_mismatch",
                                f"client_order_id {client_order_id} does not belong to order {order_id}")
        m = self._m(ticker)
        self._check_open(m.spec)
        self._check_price(m.spec, price)
        self._check_count(count)
        r = self._resting_of(o)
        new_remaining = count - o.fill_count
        if new_remaining <= 0:
            raise ExchangeError("invalid_order_size", "count must exceed what the order has already filled",
                                details=f"count {count} <= fill_count {o.fill_count}")
        if o.reduce_only:
            new_remaining = min(new_remaining, self._reducible(u, ticker, book_side))
            if new_remaining <= 0:
                raise ExchangeError("invalid_order", "reduce only order would not reduce the position",
                                    details="reduce only")
        renamed = updated_client_order_id is not None and updated_client_order_id != o.client_order_id
        if renamed and updated_client_order_id in u.client_ids:
            raise ExchangeError("order_already_exists", "updated_client_order_id is already used", status=409,
                                details=str(updated_client_order_id))
        leg, leg_price = _leg(book_side, price)
        keeps_priority = price == o.price and new_remaining <= o.remaining_count
        if not keeps_priority:
            # The order leaves the queue and comes back as if new; check it as a new order would be.
            if o.post_only and self._crosses(m, leg, leg_price):
                raise ExchangeError("invalid_order", "post only cross", details="post only cross")
            need = self._reserve_for(m.spec, o, new_remaining, leg_price)
            if need > u.available(m.spec.exchange_index) + r.reserve:
                raise ExchangeError("available_balance_too_low", "available balance is too low for this amend",
                                    details=f"needs {need} ticks")
        if renamed:
            assert updated_client_order_id is not None
            u.client_ids[updated_client_order_id] = o.order_id
            o.client_order_id = updated_client_order_id
        o.initial_count = o.fill_count + new_remaining
        if keeps_priority:
            if new_remaining < o.remaining_count:
                self._shrink(r, o.remaining_count - new_remaining)
            o.last_update_time = self.clock()
            self._emit(OrderUpdate(_snap(o)))
            return PlaceResult(_snap(o), [])
        self._pull(r)
        o.price = price
        o.remaining_count = new_remaining
        o.last_update_time = self.clock()
        fills = self._match(m, o, leg, leg_price)
        if o.status == "resting":
            if o.remaining_count == 0:
                self._finish(o, "executed", None)
            else:
                self._rest(m, o, leg, leg_price)
        self._emit(OrderUpdate(_snap(o)))
        return PlaceResult(_snap(o), fills)

    def decrease(self, user_id: str, order_id: str, *, reduce_by: int | None = None,
                 reduce_to: int | None = None) -> Order:
        """Reduce a resting order in place (keeps priority); reducing to zero cancels it."""
        if (reduce_by is None) == (reduce_to is None):
            raise ExchangeError("invalid_parameters", "exactly one of reduce_by and reduce_to is required")
        o = self._order_of(user_id, order_id)
        self._check_cancellable(o.ticker)
        r = self._resting_of(o)
        if reduce_by is not None:
            self._check_count(reduce_by, "reduce_by")
            # A fill may race the request: reducing by more than is left simply cancels the rest.
            target = max(o.remaining_count - reduce_by, 0)
        else:
            if isinstance(reduce_to, bool) or not isinstance(reduce_to, int) or reduce_to < 0:
                raise ExchangeError("invalid_order_size", "reduce_to must be a count >= 0",
                                    details=f"reduce_to={reduce_to!r}")
            if reduce_to > o.remaining_count:
                raise ExchangeError("invalid_order_size", "reduce_to cannot exceed the remaining count",
                                    details=f"reduce_to {reduce_to} > remaining {o.remaining_count}")
            target = reduce_to
        if target == 0:
            self._cancel_resting(r, "Decreased")
        elif target < o.remaining_count:
            self._shrink(r, o.remaining_count - target)
            self._emit(OrderUpdate(_snap(o)))
        return _snap(o)

    def cancel(self, user_id: str, order_id: str) -> tuple[Order, int]:
        """Cancel a resting order; returns it and how much was cancelled."""
        o = self._order_of(user_id, order_id)
        self._check_cancellable(o.ticker)
        qty = self._cancel_resting(self._resting_of(o), "Canceled")
        return _snap(o), qty

    def cancel_all(self, user_id: str) -> list[Order]:
        """Cancel every resting order of a user (on markets that still take cancels)."""
        out = []
        for r in list(self._u(user_id).resting.values()):
            if self._markets[r.order.ticker].spec.status in _CANCELLABLE:
                self._cancel_resting(r, "Canceled")
                out.append(_snap(r.order))
        return out

    def expire(self, now: datetime | None = None) -> list[Order]:
        """Cancel GTC orders whose expiration time is at or before `now` (default: the clock)."""
        now = now or self.clock()
        out = []
        while self._expiry and self._expiry[0][0] <= now:
            _, _, order_id = heapq.heappop(self._expiry)
            r = self._resting.get(order_id)
            if r is not None:  # gone already: filled or cancelled
                self._cancel_resting(r, "Expired")
                out.append(_snap(r.order))
        return out

    # -- venues fed from outside (a paper broker mirroring a live book) ---------------------------

    def fill_resting(self, order_id: str, count: int, *, taker_user: str) -> list[Fill]:
        """Trade up to `count` of one resting order at its own price against `taker_user`, ahead of its queue.

        For a venue that learns of executions from outside its own book (a paper broker replaying public
        trades): the resting order is the maker (maker fee), `taker_user` takes through an IOC order of its
        own at the crossing price. Reduce-only and solvency rules apply as in matching. Returns both sides'
        fills (the taker's, then the maker's); [] when nothing could trade.
        """
        self._check_count(count)
        r = self._resting.get(order_id)
        if r is None:
            raise ExchangeError("invalid_order", f"order {order_id} is not resting", details="order is not resting")
        maker = r.order
        if maker.user_id == taker_user:
            raise ExchangeError("invalid_order", "an order cannot trade against its own account",
                                details="self trade")
        m = self._markets[maker.ticker]
        self._check_open(m.spec)
        tu = self._u(taker_user)
        taker_leg: OutcomeSide = "no" if r.leg == "yes" else "yes"
        book_side: BookSide = "bid" if taker_leg == "yes" else "ask"
        now = self.clock()
        qty = min(count, r.entry.remaining)
        taker = Order(order_id=self._ids(), user_id=taker_user, client_order_id=None, ticker=maker.ticker,
                      book_side=book_side, price=maker.price, initial_count=qty, remaining_count=qty, fill_count=0,
                      status="resting", time_in_force="immediate_or_cancel",
                      self_trade_prevention_type="taker_at_cross", post_only=False, reduce_only=False,
                      expiration_time=None, created_time=now, last_update_time=now)
        self._orders[taker.order_id] = taker
        tu.orders.append(taker.order_id)
        if maker.reduce_only:
            qty = min(qty, self._reducible(self._users[maker.user_id], maker.ticker, maker.book_side))
        fills: list[Fill] = []
        reason = "ImmediateOrCancel"
        if qty <= 0:
            self._cancel_resting(r, "ReduceOnly")
        else:
            made = self._execute(m, taker, r, qty)
            if made == "maker_short":
                self._cancel_resting(r, "InsufficientBalance")
            elif made == "taker_short":
                reason = "InsufficientBalance"
            else:
                fills = made
        if taker.remaining_count == 0:
            self._finish(taker, "executed", None)
        else:
            self._finish(taker, "canceled", reason)
        self._emit(OrderUpdate(_snap(taker)))
        return fills

    def restore(self, order: Order) -> Order:
        """Re-rest an order known from outside (a ledger, after a restart) with its id, fills and costs as they were.

        It joins the back of its price level without matching (it was resting already) and takes its
        client_order_id. Its collateral is reserved without a balance check — the venue accepted it long
        ago — so fund the account (`open_account`) if the balance you gave left it out.
        """
        u = self._u(order.user_id)
        m = self._m(order.ticker)
        self._check_open(m.spec)
        self._check_price(m.spec, order.price)
        self._check_count(order.remaining_count, "remaining_count")
        if order.status != "resting":
            raise ExchangeError("invalid_order", f"order {order.order_id} is {order.status}; only resting orders "
                                "can be restored", details="order is not resting")
        if order.order_id in self._orders:
            raise ExchangeError("order_already_exists", f"order {order.order_id} already exists", status=409,
                                details=order.order_id)
        if order.client_order_id is not None and order.client_order_id in u.client_ids:
            raise ExchangeError("order_already_exists", "an order with this client_order_id already exists",
                                status=409, details=order.client_order_id)
        o = _snap(order)
        self._orders[o.order_id] = o
        u.orders.append(o.order_id)
        if o.client_order_id is not None:
            u.client_ids[o.client_order_id] = o.order_id
        # Cumulative cost rounding carries on from what the order has paid so far (whole ticks).
        self._cost_num[o.order_id] = (o.taker_fill_cost + o.maker_fill_cost) * ONE_CONTRACT
        leg, leg_price = _leg(o.book_side, o.price)
        self._rest(m, o, leg, leg_price)
        if o.expiration_time is not None:
            heapq.heappush(self._expiry, (o.expiration_time, next(self._seq), o.order_id))
        self._emit(OrderUpdate(_snap(o)))
        return _snap(o)

    def prune(self, user_id: str) -> int:
        """Forget a user's finished (canceled or executed) orders and their client_order_ids; returns how many.

        For synthetic accounts that place many orders nobody reads back (a paper broker's mirrored
        liquidity): without it the order history grows for as long as the process runs.
        """
        u = self._u(user_id)
        kept = [oid for oid in u.orders if oid in u.resting]
        gone = len(u.orders) - len(kept)
        for oid in u.orders:
            if oid not in u.resting:
                del self._orders[oid]
        u.orders = kept
        u.client_ids = {c: oid for c, oid in u.client_ids.items() if oid in u.resting}
        return gone

    # -- reads ----------------------------------------------------------------------------------

    def get_order(self, user_id: str, order_id: str) -> Order:
        """One order of this user (404 `not_found` otherwise)."""
        return _snap(self._order_of(user_id, order_id))

    def orders(self, user_id: str, *, ticker: str | None = None, status: OrderStatus | None = None) -> list[Order]:
        """A user's orders, newest first."""
        u = self._u(user_id)
        out = []
        for oid in reversed(u.orders):
            o = self._orders[oid]
            if (ticker is None or o.ticker == ticker) and (status is None or o.status == status):
                out.append(_snap(o))
        return out

    def resting_ids(self, user_id: str, ticker: str | None = None) -> list[str]:
        """Ids of a user's resting orders, oldest first (cheap: no copies, no history scan)."""
        return [oid for oid, r in self._u(user_id).resting.items() if ticker is None or r.order.ticker == ticker]

    def queue_position(self, user_id: str, order_id: str) -> int:
        """Contracts (1/100) ahead of a resting order at its price; 0 = first in line."""
        r = self._resting_of(self._order_of(user_id, order_id))
        return self._markets[r.order.ticker].bids(r.leg).ahead_of(r.entry)

    def queue(self, ticker: str, side: OutcomeSide, price: int) -> list[tuple[str, str, int]]:
        """One level's FIFO queue, first in line first, as (order id, user id, remaining); NO bids at NO prices."""
        out = []
        for e in self._m(ticker).bids(side).queue_at(price):
            r: _Resting = e.ref  # type: ignore[assignment]
            out.append((r.order.order_id, r.order.user_id, e.remaining))
        return out

    def book(self, ticker: str, depth: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(YES bids, NO bids) as (price, size), ascending with the best last; the NO side at NO prices."""
        m = self._m(ticker)
        return m.yes.levels(depth), m.no.levels(depth)

    def positions(self, user_id: str) -> list[Position]:
        """A user's unsettled positions (markets where they traded, flat ones included)."""
        return [_snap(p) for p in self._u(user_id).positions.values()]

    def position(self, user_id: str, ticker: str) -> int:
        """A user's signed position in one market (0 if none)."""
        pos = self._u(user_id).positions.get(ticker)
        return pos.position if pos is not None else 0

    def fills(self, user_id: str, *, ticker: str | None = None, order_id: str | None = None) -> list[Fill]:
        """A user's fills, newest first."""
        return [f for f in reversed(self._u(user_id).fills)
                if (ticker is None or f.ticker == ticker) and (order_id is None or f.order_id == order_id)]

    def settlements(self, user_id: str) -> list[Settlement]:
        """A user's settled positions, newest first."""
        return list(reversed(self._u(user_id).settlements))

    def trades(self, ticker: str | None = None) -> list[Trade]:
        """Public trades, newest first."""
        if ticker is None:
            return list(reversed(self._trades))
        m = self._markets.get(ticker)
        return list(reversed(m.trades)) if m is not None else []
