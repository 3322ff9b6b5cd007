"""The paper broker (KDESK_MODE=paper): our orders filled in-process against the live Kalshi books.

`PaperBroker` answers the same calls as `KalshiRest` (the `Broker` protocol), raises the same errors
and reports every order change and fill as a Kalshi private-WebSocket frame. Matching, fees, cost
rounding, collateral, positions and settlement are the shared `MatchingEngine`'s (libs/common/matching),
the code the simulator runs, so paper and sim account for money identically.

Queue model. Each displayed live level is mirrored into a private engine as "phantom" resting orders
of a liquidity account with unlimited cash; our orders join the same FIFO queues, so our queue
position is the engine's own:
- Displayed size up at a level: a phantom joins the back of that queue (behind us). If it crosses one
  of our resting orders (the live book moved through our price), it trades with it first: we fill as
  maker at our price.
- Displayed size down with no trade (cancellations): phantoms leave from the front of the queue, so we
  move up; a level that disappears takes all its phantoms with it.
- A public trade consumes its level's queue in order — phantoms ahead, then us (a maker fill against a
  tape account), then phantoms behind. A trade at a price through ours (worse for the taker) fills our
  order directly. The book will then show the trade's size gone from that level; that decrease is
  expected, not counted again as cancellations.
- Our crossing orders take phantom liquidity at the resting prices with the taker fee, like any
  taker. The displayed sizes are remembered apart from the phantoms, so a later book still showing
  that liquidity (the real market never traded it) does not offer it again.

Races. Books and trades arrive on different subjects. A book stamped at or after a trade already shows
that trade's decrease; such a decrease was applied as cancellations, so the trade does not consume the
queue again. That moves us up but cannot fill us — the conservative way to be wrong.

Everything is integer money: prices in $0.0001 ticks, counts in 1/100 contract.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any, Literal

from libs.common.bus import Bus
from libs.common.events import BookUpdate, MarketDefinition, PublicTrade
from libs.common.freshness import FreshnessLimits
from libs.common.kalshi import errors as E
from libs.common.kalshi.models import (
    AmendResult,
    Balance,
    CancelResult,
    CreateOrderResult,
    DecreaseResult,
    Fill,
    MarketPosition,
    Order,
    QueuePosition,
    SettlementRow,
)
from libs.common.logs import get_logger
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE
from libs.common.matching import frames
from libs.common.matching import types as mt
from libs.common.matching.engine import MatchingEngine
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, MoneyError, PriceGrid, fee, format_count
from services.executor.broker import BookSide, FrameCallback, TimeInForce

log = get_logger(__name__)

PAPER_USER = "paper"
_BOOK = "paper:book"  # the mirrored live liquidity
_TAPE = "paper:tape"  # the takers behind public trades
_UNLIMITED = 10**18  # ticks: the synthetic accounts never run short
_PRUNE_AFTER = 20_000  # finished synthetic orders kept before the engine forgets them
_RECENT_BOOKS = 4  # per market, the last books whose decreases a late trade may turn out to explain

# Kalshi market statuses (and the REST filter names) as the engine's. Disputed/amended results are not
# settled on; the market just stays closed until a final yes/no arrives.
_STATUS: dict[str, mt.MarketStatus] = {
    "initialized": "initialized", "unopened": "initialized", "active": "active", "open": "active",
    "inactive": "inactive", "paused": "inactive", "closed": "closed", "disputed": "closed", "amended": "closed",
    "determined": "determined", "finalized": "finalized", "settled": "finalized",
}
_OVER = ("closed", "determined", "finalized")

_ERRORS: dict[str, type[E.OrderRejected]] = {
    "order_already_exists": E.OrderAlreadyExists,
    "trading_is_paused": E.TradingPaused,
    "MARKET_INACTIVE": E.MarketInactive,
}

Side = Literal["yes", "no"]
Decreases = dict[tuple[Side, int], int]


class PaperBroker:
    """A `Broker` that fills our orders against the live books in-process, with a queue-position model."""

    def __init__(self, clock: Callable[[], datetime], balance: int, *, ids: Callable[[], str] | None = None,
                 fee_rounding: Literal["tick", "cent"] = "tick", freshness: FreshnessLimits | None = None) -> None:
        """`clock` returns UTC-aware now; `balance` is the available cash in ticks, as Kalshi's balance reports
        it — without the collateral of orders you will `adopt`; `ids` makes order and trade ids (uuid4);
        `freshness.book_s` is the oldest book (by its own timestamp) the mirror trusts."""
        if isinstance(balance, bool) or not isinstance(balance, int) or balance < 0:
            raise ValueError(f"balance must be a non-negative int number of $0.0001 ticks, got {balance!r}")
        self.clock = clock
        self._engine = MatchingEngine(clock, ids=ids, fee_rounding=fee_rounding)
        self._engine.open_account(PAPER_USER, balance)
        self._engine.open_account(_BOOK, _UNLIMITED)
        self._engine.open_account(_TAPE, _UNLIMITED)
        self._engine.listen(self._on_engine_event)
        self._callbacks: list[FrameCallback] = []
        self._frames: deque[dict[str, Any]] = deque()
        self._shown: dict[str, dict[Side, dict[int, int]]] = {}  # ticker -> side -> price -> displayed size
        self._latest: dict[str, BookUpdate] = {}
        self._mirrored: set[str] = set()  # markets whose phantoms reflect a live book since they (re)opened
        self._recent: dict[str, deque[tuple[datetime, Decreases]]] = {}
        self._waiting: dict[str, Order] = {}  # adopted orders not on the book yet (or canceled while waiting)
        self._refused: dict[str, str] = {}  # ticker -> why we cannot trade it (e.g. an unsupported fee type)
        self._exchange_index: dict[str, int] = {}
        self._finished_synthetic = 0
        self.freshness = freshness or FreshnessLimits()
        self.stale_books_ignored = 0
        self._subs: list[Any] = []

    # -- as the executor's update stream (VenueUpdates) ---------------------------------------------

    @property
    def live(self) -> bool:
        return True  # in-process: every change arrives as a frame, nothing to poll

    async def start(self, bus: Bus, on_frame: FrameCallback, resting: Sequence[Order]) -> None:
        """Follow the market data it fills against, deliver frames to `on_frame`, re-rest `resting`."""
        self.listen(on_frame)
        self._subs.append(await bus.follow("md.market.>", MarketDefinition, self.on_market, replay_last=True))
        # Books: live on core NATS, the last one per market once from JetStream (older ones are ignored).
        self._subs.append(await bus.follow("md.book.>", BookUpdate, self.on_book, replay_last=False))
        self._subs.append(await bus.follow("md.trade.>", PublicTrade, self.on_trade, replay_last=False))
        await bus.replay_last("md.book.>", BookUpdate, self.on_book)
        for order in resting:
            await self.adopt(order)

    async def aclose(self) -> None:
        """Nothing to close: the paper venue holds no connection of its own."""

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as e:  # the connection may be closing already
                log.info("paper_unsubscribe_failed", error=str(e))
        self._subs.clear()

    # -- updates ------------------------------------------------------------------------------------

    def listen(self, callback: FrameCallback) -> None:
        """Receive every `user_order` and `fill` frame (sync or async callback), in order."""
        self._callbacks.append(callback)

    def _on_engine_event(self, ev: mt.EngineEvent) -> None:
        if isinstance(ev, mt.Fill):
            if ev.user_id == PAPER_USER:
                msg = frames.fill_msg(ev, exchange_index=self._exchange_index.get(ev.ticker, 0))
                self._frames.append({"type": "fill", "msg": msg})
        elif isinstance(ev, mt.OrderUpdate):
            if ev.order.user_id == PAPER_USER:
                self._frames.append({"type": "user_order", "msg": frames.user_order_msg(ev.order)})
            elif ev.order.status != "resting":
                self._finished_synthetic += 1

    async def _flush(self) -> None:
        """Deliver queued frames; a callback that calls back into the broker keeps the order intact (one FIFO)."""
        while self._frames:
            frame = self._frames.popleft()
            for callback in list(self._callbacks):
                try:
                    result = callback(frame)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    # A consumer's bug must not turn a placed order into an error for the caller.
                    log.exception("paper_frame_callback_failed", type=frame["type"])
        if self._finished_synthetic >= _PRUNE_AFTER:
            self._engine.prune(_BOOK)
            self._engine.prune(_TAPE)
            self._finished_synthetic = 0

    # -- market data --------------------------------------------------------------------------------

    async def _feed(self, apply: Callable[[Any], None], event: Any) -> None:
        """Expire orders due by now, apply one live event, then deliver the frames it caused (even on error)."""
        self._tick(event.ticker)
        try:
            apply(event)
        finally:
            await self._flush()

    async def on_market(self, defn: MarketDefinition) -> None:
        """A market's definition or lifecycle change: list it, update grid and fees, follow status, settle."""
        await self._feed(self._market, defn)

    async def on_book(self, update: BookUpdate) -> None:
        """A live book (full depth, or the top levels shown): mirror its changes, filling what it crosses."""
        await self._feed(self._book, update)

    async def on_trade(self, trade: PublicTrade) -> None:
        """A public trade: consume its level's queue (phantoms ahead, then us) or fill us if it went through."""
        await self._feed(self._trade, trade)

    def _market(self, defn: MarketDefinition) -> None:
        ticker = defn.ticker
        status = _STATUS.get(defn.status)
        if status is None:
            log.warning("paper_unknown_market_status", ticker=ticker, status=defn.status)
        if defn.exchange_index is not None:
            self._exchange_index[ticker] = defn.exchange_index
        terms = self._terms(defn)
        if not self._listed(ticker):
            if terms is None:
                return
            # A market first seen already determined is listed closed, so that following its status settles it.
            first: mt.MarketStatus = "closed" if status in ("determined", "finalized") else status or "initialized"
            self._engine.add_market(mt.MarketSpec(ticker, defn.event_ticker, defn.series_ticker, *terms,
                                                  status=first))
        elif terms is not None:
            spec = self._engine.market(ticker)
            spec.grid, spec.fee_type, spec.fee_multiplier = terms
        if status is not None:
            self._follow_status(ticker, status, defn.result)
        self._ready(ticker)

    def _terms(self, defn: MarketDefinition) -> tuple[PriceGrid, str, Decimal] | None:
        """Grid and fee terms, or None (logged, and remembered for order rejections) when unusable."""
        ticker = defn.ticker
        fee_type = defn.fee_type or DEFAULT_FEE_TYPE
        multiplier = defn.fee_multiplier if defn.fee_multiplier is not None else DEFAULT_FEE_MULTIPLIER
        try:
            grid = _grid(tuple((r.start, r.end, r.step) for r in defn.price_ranges))
            # Fail here, not at the first fill, when the fee schedule is one we cannot compute (e.g. "flat").
            fee(ONE_CONTRACT, ONE_DOLLAR // 2, rate="taker", fee_type=fee_type, multiplier=multiplier)
        except MoneyError as e:
            if self._listed(ticker):
                log.warning("paper_market_terms_ignored", ticker=ticker, error=str(e))
            else:
                self._refused[ticker] = str(e)
                log.warning("paper_market_refused", ticker=ticker, error=str(e))
            return None
        self._refused.pop(ticker, None)
        return grid, fee_type, multiplier

    def _follow_status(self, ticker: str, status: mt.MarketStatus, result: str | None) -> None:
        spec = self._engine.market(ticker)
        if spec.status == "finalized":
            return  # paid out already; a later amendment cannot be un-settled here
        if status in ("determined", "finalized"):
            if result in ("yes", "no"):
                if spec.status not in ("closed", "determined"):
                    self._set_status(ticker, "closed")
                settlements = self._engine.settle(ticker, result)  # type: ignore[arg-type]
                mine = [s for s in settlements if s.user_id == PAPER_USER]
                log.info("paper_settled", ticker=ticker, result=result,
                         revenue=sum(s.revenue for s in mine), positions=len(mine))
                self._forget_book(ticker)
                return
            log.warning("paper_market_not_settled", ticker=ticker, status=status, result=result)
            status = "closed"  # stays settleable when a yes/no result arrives
        if status != spec.status:
            self._set_status(ticker, status)

    def _set_status(self, ticker: str, status: mt.MarketStatus) -> None:
        old = self._engine.market(ticker).status
        self._engine.set_status(ticker, status)
        if status in _OVER:
            self._forget_book(ticker)
        elif old == "inactive" and status == "active":
            # Reactivation cancels every resting order, the mirror's too: rebuild it from the latest book.
            self._shown.pop(ticker, None)
            self._recent.pop(ticker, None)
            self._mirrored.discard(ticker)

    def _forget_book(self, ticker: str) -> None:
        self._shown.pop(ticker, None)
        self._latest.pop(ticker, None)
        self._recent.pop(ticker, None)
        self._mirrored.discard(ticker)

    def _listed(self, ticker: str) -> bool:
        try:
            self._engine.market(ticker)
        except mt.ExchangeError:
            return False
        return True

    def _tradable(self, ticker: str) -> bool:
        return self._listed(ticker) and self._engine.market(ticker).status == "active"

    def _tick(self, ticker: str | None) -> None:
        """Before anything trades in `ticker`: expire orders due by now, and take its liquidity away if its book
        went stale. Per market, not a scan of all of them: this runs on every live event and every order."""
        self._engine.expire()
        if ticker is None or ticker not in self._mirrored:
            return
        latest = self._latest.get(ticker)
        if latest is None or not self.freshness.fresh("book", latest.ts_event, self.clock()):
            self._unmirror(ticker)
            log.warning("paper_book_stale_liquidity_withdrawn", ticker=ticker,
                        book_ts=None if latest is None else latest.ts_event.isoformat())

    def _unmirror(self, ticker: str) -> None:
        """Withdraw every phantom of a market: with no fresh book, the paper venue shows no liquidity, so
        nothing fills against a picture of the market that may no longer be true."""
        for side, levels in self._shown.pop(ticker, {}).items():
            for price in levels:
                self._withdraw(ticker, side, price, 0, everything=True)
        self._recent.pop(ticker, None)
        self._mirrored.discard(ticker)

    def _ready(self, ticker: str) -> None:
        """Mirror the latest book of a market that just became tradable, then rest orders waiting for it."""
        if self._tradable(ticker) and ticker not in self._mirrored and ticker in self._latest \
                and self.freshness.fresh("book", self._latest[ticker].ts_event, self.clock()):
            self._mirror(self._latest[ticker])
        self._release_adopted(ticker)

    def _book(self, update: BookUpdate) -> None:
        last = self._latest.get(update.ticker)
        if last is not None and (update.id == last.id or update.ts_event < last.ts_event):
            # The same book twice (core NATS and its JetStream copy), or an older one delivered late: re-reading
            # it would put back liquidity a trade has taken since.
            return
        if not self.freshness.fresh("book", update.ts_event, self.clock()):
            # Replayed or long delayed: the market may look nothing like this now. Never fill against it.
            self.stale_books_ignored += 1
            log.debug("paper_stale_book_ignored", ticker=update.ticker, book_ts=update.ts_event.isoformat())
            return
        self._latest[update.ticker] = update
        if self._tradable(update.ticker):
            self._mirror(update)
            self._release_adopted(update.ticker)

    def _mirror(self, update: BookUpdate) -> None:
        """Apply the displayed-size changes: withdrawals first, so a level moving across the spread never
        meets its own stale phantoms; then additions, which may cross (and fill) our resting orders."""
        ticker = update.ticker
        shown = self._shown.setdefault(ticker, {"yes": {}, "no": {}})
        changes: list[tuple[Side, int, int, int]] = []
        gone: list[tuple[Side, int]] = []
        sides: tuple[tuple[Side, Iterable[tuple[int, int]]], ...] = (("yes", update.yes_bids), ("no", update.no_bids))
        for side, levels in sides:
            old, new = shown[side], _levels(shown[side], levels, update.depth)
            for p in sorted(old.keys() | new.keys()):
                if p not in new:
                    gone.append((side, p))  # even one a trade already took to 0: its phantoms go with it
                if old.get(p, 0) != new.get(p, 0):
                    changes.append((side, p, old.get(p, 0), new.get(p, 0)))
            shown[side] = new
        decreases: Decreases = {}
        for side, price, before, after in changes:
            if after < before:
                decreases[(side, price)] = before - after
                if after:
                    self._withdraw(ticker, side, price, before - after)
        for side, price in gone:
            self._withdraw(ticker, side, price, 0, everything=True)
        if decreases:
            # Stamped like trades are when the feed knows the exchange's time; else when the feed published it.
            stamp = update.ts_exchange or update.ts_event
            self._recent.setdefault(ticker, deque(maxlen=_RECENT_BOOKS)).append((stamp, decreases))
        for side, price, before, after in sorted(changes, key=lambda c: -c[1]):
            if after > before:
                self._offer(ticker, side, price, after - before)
        self._mirrored.add(ticker)

    def _withdraw(self, ticker: str, side: Side, price: int, qty: int, *, everything: bool = False) -> None:
        """Take phantom size off a level from the front of its queue (cancellations ahead of us first)."""
        for order_id, user, remaining in self._engine.queue(ticker, side, price):
            if not everything and qty <= 0:
                return
            if user != _BOOK:
                continue
            take = remaining if everything else min(remaining, qty)
            self._engine.decrease(_BOOK, order_id, reduce_by=take)
            qty -= take

    def _offer(self, ticker: str, side: Side, price: int, qty: int) -> None:
        """Add phantom size at the back of a level; STP "maker" clears any stale phantom it would cross."""
        book_side, yes_price = ("bid", price) if side == "yes" else ("ask", ONE_DOLLAR - price)
        try:
            self._engine.place(_BOOK, mt.OrderRequest(ticker, book_side, yes_price, qty, "good_till_canceled",
                                                      "maker"))
        except mt.ExchangeError as e:
            log.debug("paper_level_skipped", ticker=ticker, side=side, price=price, code=e.code)

    def _trade(self, trade: PublicTrade) -> None:
        ticker = trade.ticker
        if not self._tradable(ticker) or trade.count <= 0 or not 0 < trade.yes_price < ONE_DOLLAR:
            return
        # The taker bought `taker_outcome_side`, so it sold into the other side's bids.
        side: Side = "no" if trade.taker_outcome_side == "yes" else "yes"
        price = trade.yes_price if side == "yes" else ONE_DOLLAR - trade.yes_price
        qty = trade.count - self._explained(ticker, side, price, trade.count, trade.ts_event)
        if qty <= 0:
            return
        self._consume_level(ticker, side, price, self._fill_through(ticker, side, price, qty))
        # The real level lost the whole trade; the book showing it will not be read as cancellations.
        shown = self._shown.get(ticker, {}).get(side)
        if shown is not None and price in shown:
            # Kept at 0 rather than dropped, so that the book no longer showing it clears its phantoms.
            shown[price] = max(shown[price] - qty, 0)

    def _explained(self, ticker: str, side: Side, price: int, count: int, ts: datetime) -> int:
        """How much of a trade a book stamped at or after it already showed (and we applied) as a decrease."""
        used = 0
        for when, decreases in self._recent.get(ticker, ()):
            if when < ts or (side, price) not in decreases:
                continue  # a decrease seen before the trade happened was a cancellation
            take = min(decreases[(side, price)], count - used)
            decreases[(side, price)] -= take
            used += take
        return used

    def _fill_through(self, ticker: str, side: Side, price: int, qty: int) -> int:
        """Fill our orders on `side` priced better than the trade (best first); returns what is left of `qty`."""
        better: set[int] = set()
        for o in self._resting_mine(ticker):
            leg, leg_price = _leg(o.book_side, o.price)
            if leg == side and leg_price > price:
                better.add(leg_price)
        for level in sorted(better, reverse=True):
            for order_id, user, remaining in self._engine.queue(ticker, side, level):
                if qty <= 0:
                    return 0
                if user == PAPER_USER:
                    qty -= self._tape_fill(order_id, min(remaining, qty))
        return qty

    def _consume_level(self, ticker: str, side: Side, price: int, qty: int) -> None:
        """A trade of `qty` at one level: its queue trades in order, phantoms and ours alike."""
        for order_id, user, remaining in self._engine.queue(ticker, side, price):
            if qty <= 0:
                return
            take = min(remaining, qty)
            if user == PAPER_USER:
                qty -= self._tape_fill(order_id, take)
            elif user == _BOOK:
                self._engine.decrease(_BOOK, order_id, reduce_by=take)
                qty -= take

    def _tape_fill(self, order_id: str, qty: int) -> int:
        fills = self._engine.fill_resting(order_id, qty, taker_user=_TAPE)
        return sum(f.count for f in fills if f.order_id == order_id)

    def _resting_mine(self, ticker: str) -> list[mt.Order]:
        return [self._engine.get_order(PAPER_USER, oid) for oid in self._engine.resting_ids(PAPER_USER, ticker)]

    # -- restart ------------------------------------------------------------------------------------

    async def adopt(self, order: Order) -> None:
        """Re-rest a resting order known from the ledger after a restart, behind everything displayed at its price.

        Until its market is listed and its book mirrored the order waits off the book (reads, cancels and
        decreases see it). If the live book crossed its price meanwhile, it fills as maker against that
        liquidity, as it would have on the exchange. Its collateral is added to cash: the `balance` the
        broker started with left it out, as Kalshi's balance does. Adopting a known order does nothing.
        """
        if order.status != "resting" or order.remaining_count <= 0:
            raise ValueError(f"only resting orders with a remaining count can be adopted; {order.order_id} is "
                             f"{order.status} with {format_count(order.remaining_count)} left")
        if order.order_id in self._waiting or self._known(order.order_id):
            return
        self._waiting[order.order_id] = order
        try:
            self._release_adopted(order.ticker)
        finally:
            await self._flush()

    def _known(self, order_id: str) -> bool:
        try:
            self._engine.get_order(PAPER_USER, order_id)
        except mt.ExchangeError:
            return False
        return True

    def _release_adopted(self, ticker: str) -> None:
        """Rest the orders waiting for this market once its book is mirrored; cancel them if it closed."""
        if not self._waiting:
            return
        waiting = [o for o in self._waiting.values() if o.ticker == ticker and o.status == "resting"]
        if not waiting or not self._listed(ticker):
            return
        status = self._engine.market(ticker).status
        for o in waiting:
            if status in _OVER:
                self._cancel_waiting(o, "MarketClosed")
            elif status == "active" and ticker in self._mirrored:
                del self._waiting[o.order_id]
                self._rest_adopted(o)

    def _rest_adopted(self, order: Order) -> None:
        available = self._engine.balance(PAPER_USER)
        try:
            self._engine.restore(_engine_order(order, self.clock()))
        except mt.ExchangeError as e:
            log.warning("paper_adopt_failed", order_id=order.order_id, code=e.code, error=e.message)
            self._waiting[order.order_id] = order
            self._cancel_waiting(order, "AdoptFailed")
            return
        self._engine.open_account(PAPER_USER, available)  # fund its collateral: the balance excluded it
        log.info("paper_order_adopted", order_id=order.order_id, ticker=order.ticker)
        self._cross_adopted(order)

    def _cross_adopted(self, order: Order) -> None:
        """If the book moved through an adopted order while we were down, offer the crossing phantoms again:
        they trade with it at its price (it is the maker), and what is left rests at that price again."""
        leg, leg_price = _leg(order.book_side, order.yes_price)
        other: Side = "no" if leg == "yes" else "yes"
        yes_levels, no_levels = self._engine.book(order.ticker)
        crossing = [p for p, _ in (no_levels if other == "no" else yes_levels) if p + leg_price >= ONE_DOLLAR]
        for price in sorted(crossing, reverse=True):
            qty = sum(r for _, user, r in self._engine.queue(order.ticker, other, price) if user == _BOOK)
            if qty:
                self._withdraw(order.ticker, other, price, qty, everything=True)
                self._offer(order.ticker, other, price, qty)

    def _cancel_waiting(self, order: Order, reason: str) -> Order:
        now = self.clock()
        done = order.model_copy(update={"status": "canceled", "remaining_count": 0, "last_update_time": now})
        self._waiting[order.order_id] = done
        log.info("paper_waiting_order_canceled", order_id=order.order_id, reason=reason)
        self._frames.append({"type": "user_order", "msg": frames.user_order_msg(_engine_order(done, now))})
        return done

    # -- orders -------------------------------------------------------------------------------------

    async def create_order(self, ticker: str, side: BookSide, price: int, count: int, *,
                           time_in_force: TimeInForce = "good_till_canceled", client_order_id: str | None = None,
                           post_only: bool = False, reduce_only: bool = False,
                           expiration_time: datetime | None = None, **options: Any) -> CreateOrderResult:
        """Place an order; a reused client_order_id returns the existing order marked `already_existed`."""
        stp = options.pop("self_trade_prevention_type", "taker_at_cross")
        on_pause = bool(options.pop("cancel_order_on_pause", False))
        options.pop("exchange_index", None)  # one in-process venue: no shards
        if options:
            raise TypeError(f"create_order() got unexpected options: {', '.join(sorted(options))}")
        self._tick(ticker)
        try:
            if ticker in self._refused:
                raise E.OrderRejected(f"paper: {ticker} cannot be traded: {self._refused[ticker]}",
                                      status=400, code="invalid_order", details=self._refused[ticker])
            if client_order_id is not None and any(o.client_order_id == client_order_id
                                                   for o in self._waiting.values()):
                return self._recovered(ticker, client_order_id)
            req = mt.OrderRequest(ticker, side, price, count, time_in_force, stp, client_order_id=client_order_id,
                                  post_only=post_only, reduce_only=reduce_only, expiration_time=expiration_time,
                                  cancel_order_on_pause=on_pause)
            try:
                placed = self._engine.place(PAPER_USER, req)
            except mt.ExchangeError as e:
                if e.code == "order_already_exists" and client_order_id is not None:
                    return self._recovered(ticker, client_order_id)
                raise _error(e) from None
            return _created(placed)
        finally:
            await self._flush()

    def _recovered(self, ticker: str, client_order_id: str) -> CreateOrderResult:
        """What `KalshiRest.create_order` answers to a 409 on a reused client_order_id: the existing order."""
        existing = self._find(ticker, client_order_id)
        if existing is None:  # the id was used on another market: Kalshi's 409 stands
            raise E.OrderAlreadyExists(f"paper: client_order_id {client_order_id} is already used on another market",
                                       status=409, code="order_already_exists", details=client_order_id)
        log.info("order_already_placed", ticker=ticker, client_order_id=client_order_id, order_id=existing.order_id)
        return CreateOrderResult(order_id=existing.order_id, client_order_id=client_order_id,
                                 fill_count=existing.fill_count, remaining_count=existing.remaining_count,
                                 already_existed=True)

    # The paper venue has no shards: the routes the Broker calls carry (`exchange_index`) are accepted and ignored.

    async def cancel_order(self, order_id: str, *, ticker: str | None = None,
                           exchange_index: int | None = None) -> CancelResult:
        """Cancel one resting order."""
        self._tick(ticker)
        try:
            waiting = self._waiting.get(order_id)
            if waiting is not None:
                _check_ticker(waiting.ticker, ticker, order_id)
                if waiting.status != "resting":
                    raise E.OrderRejected(f"paper: order {order_id} is {waiting.status}, not resting", status=400,
                                          code="invalid_order", details="order is not resting")
                done = self._cancel_waiting(waiting, "Canceled")
                return CancelResult(order_id=order_id, client_order_id=done.client_order_id,
                                    reduced_by=waiting.remaining_count, ts_ms=frames.ts_ms(self.clock()))
            try:
                _check_ticker(self._engine.get_order(PAPER_USER, order_id).ticker, ticker, order_id)
                o, reduced = self._engine.cancel(PAPER_USER, order_id)
            except mt.ExchangeError as e:
                raise _error(e) from None
            return CancelResult(order_id=o.order_id, client_order_id=o.client_order_id, reduced_by=reduced,
                                ts_ms=frames.ts_ms(o.last_update_time))
        finally:
            await self._flush()

    async def amend_order(self, order_id: str, *, ticker: str, side: BookSide, price: int, count: int,
                          client_order_id: str | None = None, updated_client_order_id: str | None = None,
                          exchange_index: int | None = None) -> AmendResult:
        """Amend price and/or total count (filled + desired remaining); only a pure decrease keeps priority."""
        self._tick(ticker)
        try:
            if order_id in self._waiting:
                raise E.OrderRejected(f"paper: order {order_id} is waiting for its market's book to re-rest; "
                                      "amend it once it rests (or cancel it)", status=400, code="invalid_order",
                                      details="order is not resting yet")
            try:
                res = self._engine.amend(PAPER_USER, order_id, ticker=ticker, book_side=side, price=price, count=count,
                                         client_order_id=client_order_id,
                                         updated_client_order_id=updated_client_order_id)
            except mt.ExchangeError as e:
                raise _error(e) from None
            o = res.order
            return AmendResult(order_id=o.order_id, client_order_id=o.client_order_id, fill_count=o.fill_count,
                               remaining_count=o.remaining_count, ts_ms=frames.ts_ms(o.last_update_time))
        finally:
            await self._flush()

    async def decrease_order(self, order_id: str, *, reduce_by: int | None = None, reduce_to: int | None = None,
                             ticker: str | None = None, exchange_index: int | None = None) -> DecreaseResult:
        """Reduce a resting order, keeping its queue priority; exactly one of reduce_by / reduce_to."""
        if (reduce_by is None) == (reduce_to is None):
            raise ValueError("give exactly one of reduce_by or reduce_to")
        self._tick(None)
        try:
            waiting = self._waiting.get(order_id)
            if waiting is not None:
                _check_ticker(waiting.ticker, ticker, order_id)
                if waiting.status != "resting":
                    raise E.OrderRejected(f"paper: order {order_id} is {waiting.status}, not resting", status=400,
                                          code="invalid_order", details="order is not resting")
                return self._decrease_waiting(waiting, reduce_by, reduce_to)
            try:
                _check_ticker(self._engine.get_order(PAPER_USER, order_id).ticker, ticker, order_id)
                o = self._engine.decrease(PAPER_USER, order_id, reduce_by=reduce_by, reduce_to=reduce_to)
            except mt.ExchangeError as e:
                raise _error(e) from None
            return DecreaseResult(order_id=o.order_id, client_order_id=o.client_order_id,
                                  remaining_count=o.remaining_count, ts_ms=frames.ts_ms(o.last_update_time))
        finally:
            await self._flush()

    def _decrease_waiting(self, order: Order, reduce_by: int | None, reduce_to: int | None) -> DecreaseResult:
        target = order.remaining_count - reduce_by if reduce_by is not None else reduce_to
        assert target is not None
        if target < 0 or target > order.remaining_count or (reduce_by is not None and reduce_by <= 0):
            raise E.OrderRejected(f"paper: cannot decrease order {order.order_id} of "
                                  f"{format_count(order.remaining_count)} to {format_count(target)}",
                                  status=400, code="invalid_order_size", details=f"target={target}")
        if target == 0:
            done = self._cancel_waiting(order, "Decreased")
            return DecreaseResult(order_id=done.order_id, client_order_id=done.client_order_id, remaining_count=0,
                                  ts_ms=frames.ts_ms(self.clock()))
        now = self.clock()
        new = order.model_copy(update={"remaining_count": target, "initial_count": order.fill_count + target,
                                       "last_update_time": now})
        self._waiting[order.order_id] = new
        self._frames.append({"type": "user_order", "msg": frames.user_order_msg(_engine_order(new, now))})
        return DecreaseResult(order_id=new.order_id, client_order_id=new.client_order_id, remaining_count=target,
                              ts_ms=frames.ts_ms(now))

    # -- reads --------------------------------------------------------------------------------------

    async def find_order(self, ticker: str, client_order_id: str, *,
                         exchange_index: int | None = None) -> Order | None:
        """Our order in `ticker` with this client_order_id, if any (every status)."""
        return self._find(ticker, client_order_id)

    def _find(self, ticker: str, client_order_id: str) -> Order | None:
        return next((o for o in self._all_orders(ticker) if o.client_order_id == client_order_id), None)

    async def orders(self, *, ticker: str | None = None, status: str | None = None,
                     event_ticker: str | None = None, exchange_index: int | None = None) -> list[Order]:
        """Our orders, newest first (`event_ticker` may be a comma list, as on Kalshi)."""
        events = set(event_ticker.split(",")) if event_ticker else None
        return [o for o in self._all_orders(ticker)
                if (status is None or o.status == status) and (events is None or self._event_of(o.ticker) in events)]

    def _all_orders(self, ticker: str | None) -> list[Order]:
        out = [_order_model(o) for o in self._engine.orders(PAPER_USER, ticker=ticker)]
        out.extend(o for o in self._waiting.values() if ticker is None or o.ticker == ticker)
        return out

    def _event_of(self, ticker: str) -> str | None:
        return self._engine.market(ticker).event_ticker if self._listed(ticker) else None

    async def order(self, order_id: str, *, exchange_index: int | None = None) -> Order:
        """One of our orders (NotFound otherwise)."""
        if order_id in self._waiting:
            return self._waiting[order_id]
        try:
            return _order_model(self._engine.get_order(PAPER_USER, order_id))
        except mt.ExchangeError as e:
            raise _error(e) from None

    async def fills(self, *, ticker: str | None = None, order_id: str | None = None,
                    min_ts: int | None = None) -> list[Fill]:
        """Our fills, newest first; `min_ts` in Unix seconds."""
        return [Fill(fill_id=f.trade_id, trade_id=f.trade_id, order_id=f.order_id, ticker=f.ticker,
                     outcome_side=f.outcome_side, book_side=f.book_side, count=f.count, yes_price=f.yes_price,
                     no_price=ONE_DOLLAR - f.yes_price, is_taker=f.is_taker, fee=f.fee, created_time=f.created_time)
                for f in self._engine.fills(PAPER_USER, ticker=ticker, order_id=order_id)
                if min_ts is None or frames.ts_ms(f.created_time) >= min_ts * 1000]

    async def positions(self, *, ticker: str | None = None,
                        event_ticker: str | None = None) -> list[MarketPosition]:
        """Unsettled positions (signed: + YES, − NO), flat ones included as Kalshi does."""
        return [MarketPosition(ticker=p.ticker, position=p.position, market_exposure=p.market_exposure,
                               realized_pnl=p.realized_pnl, fees_paid=p.fees_paid, total_traded=p.total_traded,
                               exchange_index=self._exchange_index.get(p.ticker, 0))
                for p in self._engine.positions(PAPER_USER)
                if (ticker is None or p.ticker == ticker)
                and (event_ticker is None or self._event_of(p.ticker) == event_ticker)]

    async def balance(self) -> Balance:
        """Available cash (collateral of resting orders excluded) and open positions marked at the best bid."""
        available = self._engine.balance(PAPER_USER)
        return Balance(balance_cents=available // 100, balance_dollars=available,
                       portfolio_value_cents=self._engine.portfolio_value(PAPER_USER) // 100,
                       updated_ts=frames.ts_ms(self.clock()) // 1000)

    def cash(self) -> int:
        """All our cash in ticks, including the collateral resting orders hold (what conservation adds up)."""
        return self._engine.cash(PAPER_USER)

    async def settlements(self, *, ticker: str | None = None) -> list[SettlementRow]:
        """Our settled positions, newest first ($1 per winning contract)."""
        return [SettlementRow(ticker=s.ticker, event_ticker=s.event_ticker, market_result=s.market_result,
                              yes_count=s.yes_count, no_count=s.no_count, yes_total_cost=s.yes_total_cost,
                              no_total_cost=s.no_total_cost, revenue=s.revenue // 100, fee_cost=s.fee_cost,
                              settled_time=s.settled_time)
                for s in self._engine.settlements(PAPER_USER) if ticker is None or s.ticker == ticker]

    async def queue_position(self, order_id: str, *, exchange_index: int | None = None) -> QueuePosition:
        """Contracts (1/100) ahead of one resting order at its price; 0 = first in line."""
        waiting = self._waiting.get(order_id)
        if waiting is not None and waiting.status == "resting":
            return QueuePosition(order_id=order_id, market_ticker=waiting.ticker, queue_position=self._ahead(waiting))
        try:
            ticker = self._engine.get_order(PAPER_USER, order_id).ticker
            ahead = self._engine.queue_position(PAPER_USER, order_id)
        except mt.ExchangeError as e:
            raise _error(e) from None
        return QueuePosition(order_id=order_id, market_ticker=ticker, queue_position=ahead)

    async def queue_positions(self, market_tickers: Sequence[str], *,
                              exchange_index: int | None = None) -> list[QueuePosition]:
        """Queue positions of our resting orders in these markets."""
        out = []
        for ticker in market_tickers:
            if self._listed(ticker):
                out.extend(QueuePosition(order_id=oid, market_ticker=ticker,
                                         queue_position=self._engine.queue_position(PAPER_USER, oid))
                           for oid in self._engine.resting_ids(PAPER_USER, ticker))
            out.extend(QueuePosition(order_id=o.order_id, market_ticker=ticker, queue_position=self._ahead(o))
                       for o in self._waiting.values() if o.ticker == ticker and o.status == "resting")
        return out

    def _ahead(self, order: Order) -> int:
        """A waiting order will rest behind everything displayed at its price."""
        side, price = _leg(order.book_side, order.yes_price)
        return self._shown.get(order.ticker, {}).get(side, {}).get(price, 0)


# -- conversions --------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _grid(ranges: tuple[tuple[int, int, int], ...]) -> PriceGrid:
    """One grid per distinct `price_ranges`: definitions repeat on every discovery poll."""
    return PriceGrid(ranges)


def _leg(book_side: str, yes_price: int) -> tuple[Side, int]:
    """The bid an order really is: `bid` buys YES at p, `ask` buys NO at $1 - p."""
    return ("yes", yes_price) if book_side == "bid" else ("no", ONE_DOLLAR - yes_price)


def _levels(old: dict[int, int], levels: Iterable[tuple[int, int]], depth: str) -> dict[int, int]:
    """The displayed side after an update: "full" replaces it, "top" replaces the levels from the worst shown up
    (levels below those were not shown and stand; an empty side is empty)."""
    new: dict[int, int] = {}
    for price, size in levels:
        if size > 0:
            new[price] = new.get(price, 0) + size
    if depth == "top" and new:
        floor = min(new)
        new.update((p, s) for p, s in old.items() if p < floor and s > 0)
    return new


def _ratio(num: int, den: int) -> Decimal:
    """`num / den` ticks in dollars: 4 decimals when exact, else rounded to 6 (as Kalshi's portfolio fields)."""
    q = Decimal(num) / Decimal(den) / ONE_DOLLAR
    exact = q.quantize(Decimal("0.0001"))
    return exact if exact == q else q.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


def _created(placed: mt.PlaceResult) -> CreateOrderResult:
    """The V2 create answer; averages over this order's own fills (the result also holds the makers')."""
    o = placed.order
    mine = [f for f in placed.fills if f.order_id == o.order_id]
    n = sum(f.count for f in mine)
    return CreateOrderResult(
        order_id=o.order_id, client_order_id=o.client_order_id, fill_count=o.fill_count,
        remaining_count=o.remaining_count,
        average_fill_price=_ratio(sum(f.yes_price * f.count for f in mine), n) if n else None,
        average_fee_paid=_ratio(sum(f.fee for f in mine) * ONE_CONTRACT, n) if n else None,  # per whole contract
        ts_ms=frames.ts_ms(o.last_update_time))


def _order_model(o: mt.Order) -> Order:
    """An engine order as the REST `Order` model."""
    return Order(order_id=o.order_id, client_order_id=o.client_order_id, ticker=o.ticker, outcome_side=o.outcome_side,
                 book_side=o.book_side, status=o.status, yes_price=o.price, fill_count=o.fill_count,
                 remaining_count=o.remaining_count, initial_count=o.initial_count, taker_fees=o.taker_fees,
                 maker_fees=o.maker_fees, taker_fill_cost=o.taker_fill_cost, maker_fill_cost=o.maker_fill_cost,
                 created_time=o.created_time, last_update_time=o.last_update_time, expiration_time=o.expiration_time)


def _engine_order(o: Order, now: datetime) -> mt.Order:
    """A REST `Order` (from the ledger) as an engine order of ours; what the model lacks takes Kalshi's defaults."""
    return mt.Order(order_id=o.order_id, user_id=PAPER_USER, client_order_id=o.client_order_id, ticker=o.ticker,
                    book_side=o.book_side, price=o.yes_price,
                    initial_count=o.initial_count if o.initial_count is not None else o.fill_count + o.remaining_count,
                    remaining_count=o.remaining_count, fill_count=o.fill_count, status=o.status,
                    time_in_force="good_till_canceled", self_trade_prevention_type="taker_at_cross", post_only=False,
                    reduce_only=False, expiration_time=o.expiration_time, created_time=o.created_time or now,
                    last_update_time=o.last_update_time or now, taker_fill_cost=o.taker_fill_cost,
                    maker_fill_cost=o.maker_fill_cost, taker_fees=o.taker_fees, maker_fees=o.maker_fees)



def _check_ticker(actual: str, given: str | None, order_id: str) -> None:
    if given is not None and given != actual:
        raise E.OrderRejected(f"paper: order {order_id} is on {actual}, not {given}", status=400,
                              code="order_ticker_mismatch", details=given)


def _error(e: mt.ExchangeError) -> E.KalshiError:
    """The engine's refusal as the error `KalshiRest` raises for the same answer."""
    what = f"paper: {e.code}: {e.message}" + (f" ({e.details})" if e.details and e.details != e.message else "")
    kw: dict[str, Any] = {"status": e.status, "code": e.code, "details": e.details or None}
    if e.status == 404:
        return E.NotFound(what, **kw)
    return _ERRORS.get(e.code, E.OrderRejected)(what, **kw)
