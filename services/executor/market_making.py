"""Market making: two-sided post-only quotes around the model's fair value, skewed against inventory.

Where: the markets of KDESK_MM_SERIES (libs/common/strategies.py). The signals service publishes the
model's probability for them even when there is no edge to take (action `none`): that is the fair value.
Every executor replica follows those signals itself (service.py; the shared signal consumer would hand
each to one replica only), so whichever replica quotes has them all.
A market with a model and no fresh fair value gets no quote (its feed or model is down: the quotes are
pulled). A series no model prices (no family: not weather, BTC or llm) is quoted around the book's mid at
confidence 0, i.e. with the widest spread — there the maker only earns the spread and leans on the inventory
limits and the kill switch.

Why in the executor and not a service of its own: its quotes are orders like any other — the same locked
reservation (caps, the strategy's capital, market ownership), the same order lifecycle, ledger and
reconciliation — and a separate service would have to duplicate all of it or call the executor for every
quote, which is the path that must be fast.

What (`plan_quotes`, pure): an Avellaneda–Stoikov-style reservation price
    r = p − γ · q · p(1 − p) · τ
with p the fair value, q the inventory in contracts (+ YES, − NO), γ KDESK_MM_RISK_AVERSION and τ the time
left as a fraction of a day (capped at 1; p(1 − p) is the variance of the contract's payout), and a
half spread δ = KDESK_MM_HALF_SPREAD + (1 − confidence) · KDESK_MM_UNCERTAINTY_SPREAD + the maker fee of
one contract at r. The bid buys YES at r − δ, the ask sells YES (buys NO) at r + δ, on the market's tick
grid, never crossing the book (post-only). A side whose fill would take the inventory past
KDESK_MM_MAX_INVENTORY in the market, or past KDESK_MM_MAX_EVENT_INVENTORY across the event, is not quoted.

How (`MarketMaker`, one per executor; only the replica holding the mode's maker lock quotes, so two
replicas never quote one market twice): a quote is an `orders` row with leg `mm_yes` / `mm_no` and
strategy `market_making`, reserved through the same locked reservation as every order (its caps and its
share of the capital), then created; moved with an amend when its target moves by KDESK_MM_REFRESH or
its size changes; at most KDESK_MM_QUOTE_PER_MINUTE creates and amends a minute (cancels that pull quotes
are never held back). Quotes are pulled (canceled) when the book or the fair value is stale, the market
is within KDESK_MM_PULL_BEFORE_CLOSE_S of its close or not open, trading is paused, the daily loss stop
tripped, or the kill switch fired: the maker's P&L (realized + open positions at their bid) falling
KDESK_MM_KILL_LOSS_USD within KDESK_MM_KILL_WINDOW_S pulls every quote for KDESK_MM_KILL_COOLDOWN_S and
alerts. A requote runs when the market's book or fair value changes, and every pass of its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from libs.common.config import Settings, usd_to_ticks
from libs.common.db import Fill, Order, Position
from libs.common.db.executor import OPEN_ORDER_STATUSES
from libs.common.edge import BookTop
from libs.common.events import Alert, Signal
from libs.common.logs import get_logger
from libs.common.market_view import MarketState
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, PriceGrid
from libs.common.strategies import parse_series
from services.executor.control import ControlState
from services.executor.decide import client_order_id
from services.executor.desk import RateBudget, intent_of
from services.executor.markets import Markets
from services.executor.orders import OrderLifecycle
from services.executor.risk import Intent, RiskGate
from services.executor.sizing import per_contract_fee

log = get_logger(__name__)

MM_LEGS = ("mm_yes", "mm_no")
ADVERSE_AFTER_S = 30.0  # how long after a fill the price move is measured (adverse selection)
BLOCK_BACKOFF_S = 30.0  # after a quote is refused by a cap, wait this long before asking again
Side = Literal["bid", "ask"]
AlertFn = Callable[[Alert], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MakerParams:
    """The maker's settings in the desk's units (ticks, 1/100 contract)."""

    half_spread: int
    uncertainty_spread: int
    risk_aversion: float  # per contract
    quote_count: int
    max_inventory: int
    max_event_inventory: int
    refresh: int
    pull_before_close_s: float
    kill_loss: int
    kill_window_s: float
    kill_cooldown_s: float
    quotes_per_minute: int

    @classmethod
    def from_settings(cls, s: Settings) -> MakerParams:
        return cls(half_spread=round(s.mm_half_spread * ONE_DOLLAR),
                   uncertainty_spread=round(s.mm_uncertainty_spread * ONE_DOLLAR), risk_aversion=s.mm_risk_aversion,
                   quote_count=s.mm_quote_contracts * ONE_CONTRACT, max_inventory=s.mm_max_inventory * ONE_CONTRACT,
                   max_event_inventory=s.mm_max_event_inventory * ONE_CONTRACT,
                   refresh=round(s.mm_refresh * ONE_DOLLAR), pull_before_close_s=s.mm_pull_before_close_s,
                   kill_loss=usd_to_ticks(s.mm_kill_loss_usd), kill_window_s=s.mm_kill_window_s,
                   kill_cooldown_s=s.mm_kill_cooldown_s, quotes_per_minute=s.mm_quote_per_minute)


@dataclass(frozen=True, slots=True)
class Quote:
    """One side: `bid` buys YES at `yes_price`, `ask` sells YES (buys NO) at `yes_price`."""

    side: Side
    yes_price: int
    count: int


@dataclass(frozen=True, slots=True)
class QuotePlan:
    bid: Quote | None
    ask: Quote | None
    reservation: int  # ticks, YES terms
    half_spread: int
    why: dict[str, str] = field(default_factory=dict)  # a side left out, and why


def _whole(count: int) -> int:
    return max(0, count) // ONE_CONTRACT * ONE_CONTRACT


def plan_quotes(*, fair: float, confidence: float, inventory: int, event_inventory: int, tau: float,
                top: BookTop, grid: PriceGrid, fee_type: str, fee_multiplier: Any, p: MakerParams) -> QuotePlan:
    """The two quotes for a market with fair value `fair`, `inventory` held (1/100, + YES) and `event_inventory`
    (1/100, |held| summed over the event's markets); `tau` the time to close as a fraction of a day."""
    q = inventory / ONE_CONTRACT
    var = fair * (1 - fair)
    r = round((fair - p.risk_aversion * q * var * min(max(tau, 0.0), 1.0)) * ONE_DOLLAR)
    r = min(max(r, 1), ONE_DOLLAR - 1)
    fee = per_contract_fee(r, taker=False, fee_type=fee_type, fee_multiplier=fee_multiplier)
    half = p.half_spread + round((1 - confidence) * p.uncertainty_spread) + fee
    why: dict[str, str] = {}
    bid_price = grid.round_down(r - half)
    ask_price = grid.round_up(r + half)
    # Post-only: never cross the other side (ours included: a quote that would is moved back a tick).
    if bid_price is not None and top.yes_ask is not None and bid_price >= top.yes_ask:
        bid_price = grid.next_below(top.yes_ask)
    if ask_price is not None and top.best_yes_bid is not None and ask_price <= top.best_yes_bid:
        ask_price = grid.next_above(top.best_yes_bid)
    room_event = p.max_event_inventory - event_inventory
    bid_count = _whole(min(p.quote_count, p.max_inventory - inventory,
                           room_event if inventory >= 0 else p.quote_count))
    ask_count = _whole(min(p.quote_count, p.max_inventory + inventory,
                           room_event if inventory <= 0 else p.quote_count))
    bid = ask = None
    if bid_price is None or not 0 < bid_price < ONE_DOLLAR:
        why["bid"] = "no_price"
    elif bid_count <= 0:
        why["bid"] = "inventory_cap"
    else:
        bid = Quote("bid", bid_price, bid_count)
    if ask_price is None or not 0 < ask_price < ONE_DOLLAR:
        why["ask"] = "no_price"
    elif ask_count <= 0:
        why["ask"] = "inventory_cap"
    else:
        ask = Quote("ask", ask_price, ask_count)
    if bid is not None and ask is not None and bid.yes_price >= ask.yes_price:
        return QuotePlan(None, None, r, half, {"bid": "crossed", "ask": "crossed"})
    return QuotePlan(bid, ask, r, half, why)


@dataclass(slots=True)
class Fair:
    p: float
    confidence: float
    valid_until: datetime
    at: datetime


@dataclass(slots=True)
class MakerStats:
    created: int = 0
    amended: int = 0
    canceled: int = 0
    pulled: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # a create or amend held back by the quote budget
    kills: int = 0
    adverse_ticks: int = 0  # summed over measured fills, per contract x contracts
    adverse_contracts: int = 0
    update_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    stages: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=4096))

    def as_dict(self) -> dict[str, Any]:
        ms = sorted(self.update_ms)
        stages = {f"quote_{name}_ms_{q}": _pct(sorted(x[i] for x in self.stages), p)
                  for i, name in enumerate(("wait", "read", "venue")) for q, p in (("p50", 0.5), ("p99", 0.99))}
        return {"created": self.created, "amended": self.amended, "canceled": self.canceled,
                "pulled": dict(self.pulled), "blocked": dict(self.blocked), "deferred": self.deferred,
                "kills": self.kills, "adverse_selection_ticks": (self.adverse_ticks * ONE_CONTRACT
                                                                 // self.adverse_contracts
                                                                 if self.adverse_contracts else None),
                "measured_fills": self.adverse_contracts // ONE_CONTRACT,
                "quote_update_ms_p50": _pct(ms, 0.5), "quote_update_ms_p99": _pct(ms, 0.99), **stages}


def _pct(xs: list[float], q: float) -> float | None:
    return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 2) if xs else None


MAKER_LOCK = "hashtextextended('kdesk:market-maker:' || CAST(:mode AS text), 0)"


class MarketMaker:
    """Quotes the maker's markets; `run()` is its loop (leadership, requotes, pulls, the kill switch)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], markets: Markets,
                 orders: OrderLifecycle, risk: RiskGate, control: ControlState, alert: AlertFn, *,
                 daily_loss_tripped: Callable[[], bool], clock: Callable[[], datetime],
                 interval_s: float = 1.0) -> None:
        self.settings = settings
        self.mode = settings.mode
        self.series = parse_series(settings.mm_series)
        self.params = MakerParams.from_settings(settings)
        self.sessions = sessions
        self.markets = markets
        self.orders = orders
        self.risk = risk
        self.control = control
        self.alert = alert
        self.daily_loss_tripped = daily_loss_tripped
        self.clock = clock
        self.interval_s = interval_s
        self.fair: dict[str, Fair] = {}
        self.budget = RateBudget(self.params.quotes_per_minute)
        self.stats = MakerStats()
        self.leader = False
        self.killed_until: datetime | None = None
        self._pnl: deque[tuple[float, int]] = deque()
        # ticker -> perf_counter() of the change that asked for a requote (None: the periodic pass did)
        self._dirty: dict[str, float | None] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._tops: dict[str, BookTop] = {}
        self._wake = asyncio.Event()
        self._blocked_at: dict[tuple[str, Side], float] = {}
        self._lock_conn: AsyncConnection | None = None
        self._last_fill_id = 0
        self._to_measure: deque[tuple[float, str, Side, int, int]] = deque()  # (due, ticker, side, fair, count)

    @property
    def enabled(self) -> bool:
        return bool(self.series)

    def quotes_market(self, st: MarketState | None) -> bool:
        return st is not None and st.defn.series_ticker.upper() in self.series

    # -- inputs ---------------------------------------------------------------------------------

    def on_signal(self, sig: Signal) -> None:
        """A fair value for one of the maker's markets (any action: `none` means no edge to take, the
        usual case for a maker)."""
        if sig.series_ticker.upper() not in self.series:
            return
        old = self.fair.get(sig.ticker)
        self.fair[sig.ticker] = Fair(sig.p_model, sig.confidence, sig.valid_until, sig.ts_event)
        if old is None or round(abs(old.p - sig.p_model) * ONE_DOLLAR) >= 1 or old.confidence != sig.confidence:
            self.touch(sig.ticker)

    def on_book(self, st: MarketState | None) -> None:
        """A book change requotes only when its top moved: the quotes depend on the book through the best
        prices only (and a fill of ours moves them), and most updates are deeper in the book."""
        if self.quotes_market(st):
            assert st is not None
            top = st.top()
            if top is not None and self._tops.get(st.defn.ticker) != top:
                self._tops[st.defn.ticker] = top
                self.touch(st.defn.ticker)

    def touch(self, ticker: str) -> None:
        if self._dirty.get(ticker) is None:
            self._dirty[ticker] = time.perf_counter()
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Requote markets as they change, each in a task of its own (one at a time per market, markets in
        parallel: a requote waits on the venue, and one market's wait must not hold up the others)."""
        next_pass = 0.0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_pass - time.monotonic()))
                self._wake.clear()
                try:
                    if time.monotonic() >= next_pass:
                        next_pass = time.monotonic() + self.interval_s
                        for ticker in await self.full_pass():
                            self._dirty.setdefault(ticker, None)
                    if self.leader:
                        self._spawn()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the next pass tries again; a quote is never left unmanaged for long
                    log.exception("market_maker_pass_failed", error=f"{type(e).__name__}: {e}")
                    self.leader = False
                    await self._drop_lock()
        finally:
            for t in self._inflight.values():
                t.cancel()

    def _spawn(self) -> None:
        for ticker in [t for t in self._dirty if t not in self._inflight]:
            since = self._dirty.pop(ticker)
            task = asyncio.create_task(self._requote_task(ticker, since), name=f"mm:{ticker}")
            self._inflight[ticker] = task

    async def _requote_task(self, ticker: str, since: float | None) -> None:
        try:
            await self.requote(ticker, since)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # this market's next change or pass tries again
            log.exception("market_maker_requote_failed", ticker=ticker, error=f"{type(e).__name__}: {e}")
        finally:
            self._inflight.pop(ticker, None)
            if ticker in self._dirty:
                self._wake.set()  # it changed while we were at it

    async def full_pass(self) -> list[str]:
        """Leadership, then fills to measure and the kill switch; the maker's markets (all of them are
        requoted every pass: a fair value or a close time ages without any message)."""
        if not await self._lead():
            return []
        now = self.clock()
        await self._measure_fills(now)
        await self._kill_switch(now)
        tickers = {t for t, st in self.markets.by_ticker.items() if self.quotes_market(st)}
        tickers |= {r.ticker for r in await self._working()}
        return sorted(tickers)

    async def _lead(self) -> bool:
        """Hold the mode's maker lock (a PostgreSQL session advisory lock on a connection of our own):
        one replica quotes; when its process or connection dies, another takes over at its next pass."""
        if self._lock_conn is None:
            async with self.sessions() as s:
                engine = s.bind
            self._lock_conn = await engine.connect()  # type: ignore[union-attr]
        try:
            if not self.leader:
                got = await self._lock_conn.scalar(text(f"SELECT pg_try_advisory_lock({MAKER_LOCK})"),
                                                   {"mode": self.mode.value})
                await self._lock_conn.commit()
                if got:
                    log.info("market_maker_leading", instance=self.settings.instance)
                self.leader = bool(got)
            else:
                await self._lock_conn.scalar(text("SELECT 1"))  # still connected, so still holding it
                await self._lock_conn.commit()
        except Exception:
            self.leader = False
            await self._drop_lock()
            raise
        return self.leader

    async def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute(text(f"SELECT pg_advisory_unlock({MAKER_LOCK})"), {"mode": self.mode.value})
                await conn.commit()
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        self.leader = False
        await self._drop_lock()

    # -- one market -----------------------------------------------------------------------------

    def _pull_reason(self, st: MarketState | None, fair: Fair | None, now: datetime) -> str | None:
        if self.killed_until is not None and now < self.killed_until:
            return "kill_switch"
        blocked = self.control.blocks(self.mode, st.family if st else None, now)
        if blocked:
            return blocked
        if self.daily_loss_tripped():
            return "daily_loss"
        if st is None or not self.quotes_market(st):
            return "not_quoted"
        if st.defn.status not in ("active", "open"):
            return "market_closed"
        if st.defn.close_time is not None and (st.defn.close_time - now).total_seconds() \
                <= self.params.pull_before_close_s:
            return "near_close"
        if not self.markets.book_fresh(st, now):
            return "stale_book"
        if fair is None or fair.valid_until <= now:
            return "no_fair_value"
        return None

    @staticmethod
    def _book_fair(st: MarketState, working: list[Order], now: datetime) -> Fair | None:
        """A series no model prices (no family): the mid of the book *without our own quotes* (with them, the
        skewed quotes would move the mid and the mid the quotes: a drift with nothing behind it) as the fair
        value, at confidence 0 (the widest spread). A market with a model never falls back to this: its fair
        value going stale pulls the quotes."""
        if st.book is None:
            return None
        mine: dict[tuple[str, int], int] = {}
        for r in working:
            if r.status == "resting":  # a YES bid rests on the YES side, an ask as a NO bid at $1 - its price
                key = ("yes", r.yes_price) if r.book_side == "bid" else ("no", ONE_DOLLAR - r.yes_price)
                mine[key] = mine.get(key, 0) + r.remaining_count

        def best(side: str, levels: tuple[tuple[int, int], ...]) -> int | None:
            return max((p for p, q in levels if q - mine.get((side, p), 0) > 0), default=None)

        yes, no = best("yes", st.book.yes_bids), best("no", st.book.no_bids)
        if yes is None or no is None:
            return None
        return Fair((yes + ONE_DOLLAR - no) / 2 / ONE_DOLLAR, 0.0, now + timedelta(seconds=1), st.book.ts_event)

    async def requote(self, ticker: str, since: float | None = None) -> None:
        """Bring one market's quotes to the plan, or pull them."""
        t_start = time.perf_counter()
        now = self.clock()
        st = self.markets.get(ticker)
        working, inventory, event_inventory = await self._state(ticker, st.defn.event_ticker if st else None)
        fair = self.fair.get(ticker) if st is None or st.family is not None else self._book_fair(st, working, now)
        why = self._pull_reason(st, fair, now)
        if why is not None:
            await self._pull(working, why)
            return
        assert st is not None and fair is not None
        top = st.top()
        assert top is not None  # book_fresh held
        t_read = time.perf_counter()
        tau = 1.0 if st.defn.close_time is None else (st.defn.close_time - now).total_seconds() / 86_400
        plan = plan_quotes(fair=fair.p, confidence=fair.confidence, inventory=inventory,
                           event_inventory=event_inventory, tau=tau, top=top, grid=st.grid, fee_type=st.fee_type,
                           fee_multiplier=st.fee_multiplier, p=self.params)
        by_side: dict[Side, list[Order]] = {"bid": [], "ask": []}
        for r in working:
            by_side["bid" if r.leg == "mm_yes" else "ask"].append(r)
        # The side moving away from the other goes first, so a moved quote never crosses our own other one.
        order: list[Side] = ["bid", "ask"] if plan.reservation < self._mid_of(working, top) else ["ask", "bid"]
        acted = False
        for side in order:
            want = plan.bid if side == "bid" else plan.ask
            acted |= await self._side(st, side, want, by_side[side], now, plan)
        if acted and since is not None:
            done = time.perf_counter()
            self.stats.update_ms.append((done - since) * 1000)
            # Where it went: waiting for the market's turn, reading its quotes and position, the venue calls.
            self.stats.stages.append(((t_start - since) * 1000, (t_read - t_start) * 1000, (done - t_read) * 1000))

    @staticmethod
    def _mid_of(working: Iterable[Order], top: BookTop) -> float:
        prices = [r.yes_price for r in working if r.status == "resting"]
        if prices:
            return sum(prices) / len(prices)
        if top.best_yes_bid is not None and top.yes_ask is not None:
            return (top.best_yes_bid + top.yes_ask) / 2
        return ONE_DOLLAR / 2

    async def _side(self, st: MarketState, side: Side, want: Quote | None, rows: list[Order], now: datetime,
                    plan: QuotePlan) -> bool:
        """One side to its target; True when the venue was asked to change something."""
        if any(r.status in ("intent", "pending") for r in rows):
            return False  # a create is in flight (or was lost and awaits reconciliation): never a second one
        resting = [r for r in rows if r.status == "resting" and r.order_id is not None]
        extra, row = resting[1:], (resting[0] if resting else None)
        acted = False
        for r in extra:  # more than one quote on a side (a leader change mid-create): keep one
            acted |= await self._cancel(r, "duplicate_quote")
        if want is None:
            if row is not None:
                self.stats.pulled[plan.why.get(side, "no_quote")] = self.stats.pulled.get(
                    plan.why.get(side, "no_quote"), 0) + 1
                acted |= await self._cancel(row, plan.why.get(side, "no_quote"))
            return acted
        if row is None:
            return await self._create(st, side, want, now) or acted
        if abs(row.yes_price - want.yes_price) < self.params.refresh and row.remaining_count == want.count:
            return acted
        if not self.budget.take():
            self.stats.deferred += 1
            return acted
        moved = replace(intent_of(row, st), yes_price=want.yes_price, count=want.count)
        cap = await self.risk.allows_reprice(moved, exclude_coid=row.client_order_id)
        if cap is not None:
            self._count(self.stats.blocked, cap)
            return await self._cancel(row, cap) or acted
        outcome = await self.orders.amend(row, want.yes_price, want.count)
        if outcome == "amended":
            self.stats.amended += 1
            log.info("quote_moved", ticker=row.ticker, side=side, old=row.yes_price, new=want.yes_price,
                     count=want.count, reservation=plan.reservation)
        elif outcome == "would_cross":
            return await self._cancel(row, "would_cross") or acted  # replaced at the next requote
        return True

    async def _create(self, st: MarketState, side: Side, want: Quote, now: datetime) -> bool:
        ticker = st.defn.ticker
        key = (ticker, side)
        if time.monotonic() - self._blocked_at.get(key, -math.inf) < BLOCK_BACKOFF_S:
            return False
        if not self.budget.take():
            self.stats.deferred += 1
            return False
        leg = "mm_yes" if side == "bid" else "mm_no"
        # Unique per quote (a quote that left is never sent again under another id: reconciliation settles
        # a lost create by this id, and a pending row keeps the side from being quoted twice).
        coid = client_order_id(f"mm:{self.mode.value}:{ticker}:{side}", str(time.time_ns()), 0)
        intent = Intent(client_order_id=coid, signal_id=None, leg=leg, family=st.family,
                        series_ticker=st.defn.series_ticker, event_ticker=st.defn.event_ticker, ticker=ticker,
                        book_side=side, yes_price=want.yes_price, count=want.count,
                        time_in_force="good_till_canceled", post_only=True, fee_type=st.fee_type,
                        fee_multiplier=st.fee_multiplier, strategy="market_making")
        send = self.orders.sending(ticker)
        verdict = await self.risk.reserve(intent, now=now, send=send)
        if not verdict.ok:
            self._blocked_at[key] = time.monotonic()
            self._count(self.stats.blocked, verdict.reason or "blocked")
            log.info("quote_declined", ticker=ticker, side=side, reason=verdict.reason, usage=verdict.usage)
            return False
        self._blocked_at.pop(key, None)
        row = await self.orders.send(intent, marked=send)
        self.stats.created += 1
        log.info("quote_placed", ticker=ticker, side=side, price=want.yes_price, count=want.count,
                 status=row.status if row else None)
        return True

    async def _cancel(self, row: Order, reason: str) -> bool:
        if row.status != "resting" or row.order_id is None:
            return False
        ok = await self.orders.cancel(row, reason)
        if ok:
            self.stats.canceled += 1
        return True

    async def _pull(self, rows: list[Order], why: str) -> None:
        live = [r for r in rows if r.status == "resting"]
        if not live:
            return
        self._count(self.stats.pulled, why)
        log.info("quotes_pulled", ticker=live[0].ticker, reason=why, count=len(live))
        for r in live:
            await self._cancel(r, why)

    @staticmethod
    def _count(d: dict[str, int], key: str) -> None:
        d[key] = d.get(key, 0) + 1

    # -- reads ----------------------------------------------------------------------------------

    def _quotes(self) -> Select[tuple[Order]]:
        """The maker's open quotes, oldest first."""
        return select(Order).where(Order.mode == self.mode.value, Order.leg.in_(MM_LEGS),
                                   Order.status.in_(OPEN_ORDER_STATUSES)).order_by(Order.id)

    async def _working(self) -> list[Order]:
        async with self.sessions() as s:
            return list((await s.scalars(self._quotes())).all())

    async def _state(self, ticker: str, event_ticker: str | None) -> tuple[list[Order], int, int]:
        """The market's open quotes, its position and |position| summed over its event's markets (1/100
        contract), in one session."""
        q = self._quotes().where(Order.ticker == ticker)
        async with self.sessions() as s:
            working = list((await s.scalars(q)).all())
            rows = [] if event_ticker is None else (await s.execute(select(Position.ticker, Position.position).where(
                Position.mode == self.mode.value, Position.event_ticker == event_ticker))).all()
        mine = next((p for t, p in rows if t == ticker), 0)
        return working, mine, sum(abs(p) for _, p in rows)

    # -- the kill switch and adverse selection ----------------------------------------------------

    async def pnl(self) -> int:
        """The maker's P&L: realized on its markets plus open positions at their bid, minus their cost."""
        tickers = [t for t, st in self.markets.by_ticker.items() if self.quotes_market(st)]
        if not tickers:
            return 0
        async with self.sessions() as s:
            rows = (await s.execute(select(Position.ticker, Position.position, Position.cost_ticks,
                                           Position.realized_pnl_ticks).where(
                Position.mode == self.mode.value, Position.ticker.in_(tickers)))).all()
        total = 0
        for ticker, pos, cost_ticks, realized in rows:
            total += realized
            if pos:
                st = self.markets.get(ticker)
                bid = st.bid("yes" if pos > 0 else "no") if st else None
                total += (abs(pos) * bid // ONE_CONTRACT if bid is not None else cost_ticks) - cost_ticks
        return total

    async def _kill_switch(self, now: datetime) -> None:
        t = time.monotonic()
        value = await self.pnl()
        self._pnl.append((t, value))
        while self._pnl and t - self._pnl[0][0] > self.params.kill_window_s:
            self._pnl.popleft()
        peak = max(v for _, v in self._pnl)
        if peak - value < self.params.kill_loss or (self.killed_until is not None and now < self.killed_until):
            return
        self.killed_until = now + timedelta(seconds=self.params.kill_cooldown_s)
        self.stats.kills += 1
        self._pnl.clear()
        loss = peak - value
        log.warning("market_maker_killed", loss=loss, until=self.killed_until.isoformat())
        await self.alert(Alert(
            ts_event=now, mode=self.mode, family="market_making", severity="critical",
            dedupe_key=f"mm_kill:{now:%Y-%m-%dT%H:%M}",
            title="market maker pulled every quote: fast loss",
            detail=f"P&L fell ${loss / ONE_DOLLAR:.2f} within {self.params.kill_window_s:.0f} s (limit "
                   f"${self.params.kill_loss / ONE_DOLLAR:.2f}); quoting again after "
                   f"{self.killed_until:%H:%M:%S} UTC",
            data={"loss_ticks": loss, "until": self.killed_until.isoformat()}))
        for r in await self._working():
            await self._cancel(r, "kill_switch")

    async def _measure_fills(self, now: datetime) -> None:
        """Adverse selection: for each maker fill, how far the fair value moved against it from when the fill
        was seen to ADVERSE_AFTER_S later (ticks per contract; positive = a move against us)."""
        async with self.sessions() as s:
            rows = (await s.execute(select(Fill.id, Fill.ticker, Fill.book_side, Fill.yes_price, Fill.count)
                                    .join(Order, (Order.mode == Fill.mode) & (Order.order_id == Fill.order_id))
                                    .where(Fill.mode == self.mode.value, Fill.id > self._last_fill_id,
                                           Order.leg.in_(MM_LEGS))
                                    .order_by(Fill.id).limit(1000))).all()
            if self._last_fill_id == 0 and not rows:
                self._last_fill_id = int(await s.scalar(select(func.coalesce(func.max(Fill.id), 0))) or 0)
        t = time.monotonic()
        for fid, ticker, side, _price, count in rows:
            self._last_fill_id = max(self._last_fill_id, fid)
            fair = self.fair.get(ticker)
            if fair is not None:
                self._to_measure.append((t + ADVERSE_AFTER_S, ticker, side, round(fair.p * ONE_DOLLAR), count))
        while self._to_measure and self._to_measure[0][0] <= t:
            _, ticker, side, then, count = self._to_measure.popleft()
            fair = self.fair.get(ticker)
            if fair is None:
                continue
            later = round(fair.p * ONE_DOLLAR)
            # The information in the fill, not the spread we earned on it: how far the fair value moved against
            # the side we took (down after we bought YES, up after we sold it).
            move = then - later if side == "bid" else later - then
            self.stats.adverse_ticks += move * count // ONE_CONTRACT
            self.stats.adverse_contracts += count

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {"enabled": self.enabled, "leader": self.leader, "series": sorted(self.series),
                "killed_until": self.killed_until.isoformat() if self.killed_until and self.killed_until > now
                else None, "markets_with_fair_value": len(self.fair), **self.stats.as_dict()}


__all__ = ["MM_LEGS", "MakerParams", "MarketMaker", "Quote", "QuotePlan", "plan_quotes"]
