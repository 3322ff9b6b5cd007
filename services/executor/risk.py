"""Caps, reserved atomically in PostgreSQL before an order is sent (DESIGN §6), in one round trip.

The check runs inside PostgreSQL, in one statement: `SELECT * FROM kdesk_reserve(...)` (migration 0006)
takes the mode's risk lock (`pg_advisory_xact_lock`), looks for an earlier decision on the
client_order_id, computes the usage of every scope with the new order included as if it filled
completely, checks the caps and inserts the order row — `intent`, or `pending` with `sent_at` and its
shard when the caller sends it right away, or `blocked` with the cap's name — with its outbox event
(`ord.*` intent, or the blocked audit row) and one `risk_reservations` row per scope. The statement is
its own transaction (autocommit), so the lock is held until the row is committed: the next replica's
check sees it, and two replicas can never exceed a cap together. One lock per mode is the right
granularity: the portfolio-wide caps make every reservation contend anyway.

The usage is not read from the open orders and positions (that grew with the book of the desk); it is
kept running, in the same transaction as every change, by triggers on `orders`, `positions` and
`risk_strikes`, so every write path — reservations, fills, cancels, amends, reconciliation, settlement —
keeps it exact without a Python call site knowing:
- `risk_holdings` per (ticker, family, event): YES and NO contracts and their cost (no fees: what the
  contracts can lose) of the orders that are not reduce-only — their remaining count while open, plus
  any fills the venue reported that the position does not hold yet (`fill_count - booked_count`) —
  plus the position; and the open-order counters per outcome side the desk's "anything working here?"
  reads. The unbooked fills close a window the previous gate had: a taker's create is answered
  `executed` a REST call before its fills reach the position, and in between it counted nowhere, so a
  second replica could reserve past a cap (seen in the two-replica test once reservations got fast);
- `risk_event_usage` per (event, family): the event's worst-case loss netted across its strikes,
  recomputed over that event's rows only when one of them changes (exposure.py's algorithm as a sweep:
  every strike point, ±0.0001, beyond both ends; markets without a known strike count alone);
- `risk_family_usage` per family: the sum of its event exposures; `risk_mode_usage`: open orders, gross.
A reservation then costs a few index lookups plus the netting of the one event it touches, whatever
the number of open orders and positions. Every change to a mode's usage happens under the mode's usage
lock (`pg_advisory_xact_lock('kdesk:risk-usage:<mode>')`, taken by the triggers, to the end of the
transaction), so the totals change one transaction at a time and always equal a from-scratch computation
over committed rows (`totals_from_scratch` is that computation, kept for diagnostics and tests). No
transaction takes an order, position or strike row after that lock (a fill locks its position, then its
order; the reservation takes the risk lock, then the usage lock), so none waits on another in a cycle.
Strikes come from the market definitions: the reservation writes its own market's strike when it
changed, `sync_strikes` the rest (at start and periodically); a market whose strike is not written yet
counts alone, which is more cautious, never less.

Family scope: a family's usage is the sum over events of the exposure of that family's own holdings
(orders by their family, a position by its row's family). With one family per event this is what the
previous from-scratch check computed; with families mixed in one event (a position a reconciliation
repair created carries no family) it is defined where the previous one depended on row order.

Strategies (migration 0007; libs/common/strategies.py): every order row carries its intent's strategy, and a
position the strategy of the order that opened it from flat. Triggers of their own keep, under the same
usage lock, `risk_strategy_usage` (a strategy's capital: the cost of its holding orders as above plus its
positions' cost) and `risk_strategy_markets` (the same per market, with open buys and the position).
`kdesk_reserve` refuses an order on a market another strategy holds or works (`market_owned`, right after
`cap_order`: a position is never shared, so per-strategy P&L stays exact) and one that would take its
strategy's capital past `strategy_caps` (`cap_strategy`, after `cap_portfolio`); reduce-only orders skip
both, as they skip every cap. Without `strategy_caps` there is no strategy cap, ownership still holds.

One round trip: the desk decides first as if nothing were working or held on the signal's leg, and the
reservation is made only if that is still true under the lock (`Send.only_if_flat`); when it is not, the
verdict says `leg_busy`, nothing is written, and the desk reads the leg (a pooled read: a checkout ping,
BEGIN, two queries, ROLLBACK) and reserves again — only when it already has something on that leg.
With `dedicated=True` (the executor) the gate
keeps one autocommit connection of its own, so a reservation is that one statement — no checkout ping,
no BEGIN/COMMIT; calls from one process take turns on it, as they would on the lock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Row, TextClause, func, or_, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from libs.common.config import Mode, RiskLimits
from libs.common.db import Fill, Order, OrderEvent, Position, RiskReservation
from libs.common.db.executor import (
    OPEN_ORDER_STATUSES,
    RiskEventUsage,
    RiskFamilyUsage,
    RiskHolding,
    RiskModeUsage,
    RiskStrategyMarket,
    RiskStrategyUsage,
    RiskStrike,
)
from libs.common.db.upsert import insert_if_new, upsert_many
from libs.common.events import OrderEvent as OrderEventMsg
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE
from libs.common.money import cost, leg_price
from libs.common.strategies import Strategy
from services.executor.exposure import Holding, Strike, event_exposure
from services.executor.ledger import event_columns
from services.executor.sizing import order_cost

RESERVATION_TTL = timedelta(hours=6)
LEG_BUSY = "leg_busy"  # Send.only_if_flat did not hold: nothing decided, nothing written

# mm_yes / mm_no: the maker's quotes; flip_exit: quick flip's resting sale of what it bought.
Leg = Literal["yes", "no", "exit", "arb_yes", "arb_no", "mm_yes", "mm_no", "flip_exit"]
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
    strategy: Strategy = "directional"  # whose capital it uses (libs/common/strategies.py)

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


@dataclass(frozen=True, slots=True)
class Send:
    """Reserve and mark the order `pending` in the same statement: the caller sends it right after.

    `exchange_index` is the shard the create goes to (kept on the row as its route); `only_if_flat`
    reserves only while no order is open on the intent's outcome side of its market and none of it is
    held (else the verdict is `leg_busy` and nothing is written).
    """

    exchange_index: int | None
    only_if_flat: bool = False


@dataclass(slots=True)
class Verdict:
    """The outcome of a reservation; `reason` names the cap that blocked it (cap_event, ...)."""

    ok: bool
    reason: str | None = None
    existing: bool = False  # this client_order_id was already decided (a redelivered signal)
    status: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


def holding_of(intent: Intent, count: int | None = None) -> Holding:
    """What the order holds if it fills completely: contracts of its leg and their cost without fees."""
    h = Holding()
    RiskGate._add(h, intent.book_side, intent.yes_price, intent.count if count is None else count)
    return h


_USAGE = "u_market, u_event, u_family, u_portfolio, u_open_orders, u_strategy"
_RESERVE = text(f"""SELECT verdict, reason, status, {_USAGE} FROM kdesk_reserve(
    CAST(:mode AS text), CAST(:coid AS text), CAST(:signal_id AS text), CAST(:leg AS text), CAST(:attempt AS bigint),
    CAST(:family AS text), CAST(:series AS text), CAST(:event AS text), CAST(:ticker AS text),
    CAST(:book_side AS text), CAST(:outcome_side AS text), CAST(:yes_price AS bigint), CAST(:count AS bigint),
    CAST(:tif AS text), CAST(:post_only AS boolean), CAST(:reduce_only AS boolean),
    CAST(:yes AS bigint), CAST(:no AS bigint), CAST(:cost AS bigint), CAST(:amount AS bigint),
    CAST(:check AS boolean), CAST(:max_order AS bigint), CAST(:max_market AS bigint), CAST(:max_event AS bigint),
    CAST(:max_family AS bigint), CAST(:max_portfolio AS bigint), CAST(:max_open_orders AS bigint),
    CAST(:now AS timestamptz), CAST(:expires AS timestamptz), CAST(:send AS boolean),
    CAST(:exchange_index AS bigint), CAST(:only_if_flat AS boolean), CAST(:learn AS boolean),
    CAST(:strike_type AS text), CAST(:floor AS numeric), CAST(:cap AS numeric),
    CAST(:event_id AS text), CAST(:subject AS text), CAST(:message AS jsonb), CAST(:strategy AS text),
    CAST(:max_strategy AS bigint))""")
_REPRICE = text(f"""SELECT {_USAGE} FROM kdesk_reprice_usage(
    CAST(:mode AS text), CAST(:event AS text), CAST(:ticker AS text), CAST(:family AS text),
    CAST(:yes AS bigint), CAST(:no AS bigint), CAST(:cost AS bigint), CAST(:exclude AS text),
    CAST(:strategy AS text))""")


class RiskGate:
    """Reserves cap budget for intents; strikes come from the executor's market definitions.

    `dedicated=True` keeps one connection of the gate's own for its statements (close it with
    `aclose()`); otherwise each call checks one out of the sessions' engine. `strategy_caps` is each
    strategy's capital cap in ticks (`libs.common.strategies.strategy_caps`; a strategy missing from it may
    not trade); None: no strategy cap, and no "strategy" entry in the usage.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, limits: RiskLimits,
                 strikes: dict[str, Strike | None], *, dedicated: bool = False,
                 strategy_caps: Mapping[str, int] | None = None) -> None:
        self.sessions = sessions
        self.mode = mode
        self.limits = limits
        self.strikes = strikes
        self.strategy_caps = dict(strategy_caps) if strategy_caps is not None else None
        self._synced: dict[str, Strike] = {}  # strikes this gate knows are in risk_strikes
        bind = sessions.kw.get("bind")
        # Autocommit: the function call is the whole transaction (no BEGIN, no COMMIT on the wire).
        self._engine: AsyncEngine | None = bind.execution_options(isolation_level="AUTOCOMMIT") \
            if isinstance(bind, AsyncEngine) else None
        self._dedicated = dedicated and self._engine is not None
        self._conn: AsyncConnection | None = None
        self._turn = asyncio.Lock()

    # -- reserving ------------------------------------------------------------------------------

    async def reserve(self, intent: Intent, *, now: datetime, reduces_only: bool = False,
                      send: Send | None = None) -> Verdict:
        """Insert the order as `intent` (`pending` with `send`) if every cap holds, else as `blocked`;
        idempotent per client_order_id. One statement, one round trip."""
        new = holding_of(intent)
        strike = self.strikes.get(intent.ticker)
        learn = strike is not None and self._synced.get(intent.ticker) != strike
        lim = self.limits
        ev = OrderEventMsg(id=f"ord:{intent.client_order_id}:intent", ts_event=now, mode=Mode(self.mode),
                           kind="intent", client_order_id=intent.client_order_id, ticker=intent.ticker,
                           event_ticker=intent.event_ticker, book_side=intent.book_side, price=intent.yes_price,
                           count=intent.count, remaining_count=intent.count)
        outbox = event_columns(self.mode, ev, as_json=True)
        row = await self._one(_RESERVE, {
            "mode": self.mode, "coid": intent.client_order_id, "signal_id": intent.signal_id, "leg": intent.leg,
            "attempt": intent.attempt, "family": intent.family, "series": intent.series_ticker,
            "event": intent.event_ticker, "ticker": intent.ticker, "book_side": intent.book_side,
            "outcome_side": intent.outcome_side, "yes_price": intent.yes_price, "count": intent.count,
            "tif": intent.time_in_force, "post_only": intent.post_only, "reduce_only": intent.reduce_only,
            "yes": new.yes, "no": new.no, "cost": new.cost, "amount": intent.worst_cost(),
            "check": not reduces_only, "max_order": lim.max_order, "max_market": lim.max_market,
            "max_event": lim.max_event, "max_family": lim.max_family, "max_portfolio": lim.max_portfolio,
            "max_open_orders": lim.max_open_orders, "now": now, "expires": now + RESERVATION_TTL,
            "send": send is not None, "exchange_index": send.exchange_index if send else None,
            "only_if_flat": send is not None and send.only_if_flat, "learn": learn,
            "strike_type": strike.strike_type if learn else None, "floor": strike.floor if learn else None,
            "cap": strike.cap if learn else None, "event_id": outbox["event_id"], "subject": outbox["subject"],
            "message": outbox["message"], "strategy": intent.strategy,
            "max_strategy": self._strategy_cap(intent)})
        if row.verdict == "busy":
            return Verdict(False, LEG_BUSY)
        if row.verdict == "existing":
            return Verdict(row.status not in ("blocked", "rejected"), "duplicate", existing=True, status=row.status)
        if learn:
            self._synced[intent.ticker] = strike  # type: ignore[assignment]
        return Verdict(row.verdict == "ok", row.reason, status=row.status, usage=self._usage_of(new, row))

    async def allows_reprice(self, intent: Intent, *, exclude_coid: str) -> str | None:
        """Would the caps still hold with this working order at a new price? None if so, else the cap's name.

        Amending a price up raises what the order can lose; it is checked like a new order, with the
        order's old holding left out, under the same lock.
        """
        usage = await self.usage(intent, exclude_coid=exclude_coid)
        usage["open_orders"] -= 1  # the order is already counted among the open ones
        return self._check(intent, usage)

    async def usage(self, intent: Intent, *, exclude_coid: str | None = None) -> dict[str, int]:
        """Usage in every scope with `intent` included as if filled (and `exclude_coid`'s order left out,
        which must be on the same market), from the running totals under the risk lock; writes nothing."""
        new = holding_of(intent)
        row = await self._one(_REPRICE, {"mode": self.mode, "event": intent.event_ticker, "ticker": intent.ticker,
                                         "family": intent.family, "yes": new.yes, "no": new.no, "cost": new.cost,
                                         "exclude": exclude_coid, "strategy": intent.strategy})
        return self._usage_of(new, row)

    async def block(self, intent: Intent, *, now: datetime, reason: str) -> bool:
        """Record a decision not to trade as a `blocked` order row (idempotent); True if newly recorded."""
        async with self.sessions() as s, s.begin():
            new = await insert_if_new(s, Order, {
                "mode": self.mode, "client_order_id": intent.client_order_id, "signal_id": intent.signal_id,
                "leg": intent.leg, "attempt": intent.attempt, "family": intent.family, "strategy": intent.strategy,
                "series_ticker": intent.series_ticker, "event_ticker": intent.event_ticker, "ticker": intent.ticker,
                "book_side": intent.book_side, "outcome_side": intent.outcome_side, "yes_price": intent.yes_price,
                "initial_count": intent.count, "remaining_count": 0, "time_in_force": intent.time_in_force,
                "post_only": intent.post_only, "reduce_only": intent.reduce_only, "status": "blocked",
                "reason": reason}, key=["mode", "client_order_id"])
            if new:  # recorded, not announced on ord.*
                await insert_if_new(s, OrderEvent, {
                    "event_id": f"ord:{intent.client_order_id}:blocked", "mode": self.mode,
                    "client_order_id": intent.client_order_id, "ticker": intent.ticker, "kind": "blocked",
                    "yes_price": intent.yes_price, "count": intent.count, "reason": reason, "ts_event": now},
                    key=["mode", "event_id"])
            return new

    def _check(self, intent: Intent, usage: dict[str, int]) -> str | None:
        """The first cap `usage` passes, by name (kdesk_reserve checks in the same order), or None.

        `market_owned` is not a usage figure and is not checked here: a reprice keeps its market."""
        lim = self.limits
        strategy_cap = self._strategy_cap(intent)
        checks = (("cap_order", usage["order"], lim.max_order), ("cap_market", usage["market"], lim.max_market),
                  ("cap_event", usage["event"], lim.max_event), ("cap_family", usage["family"], lim.max_family),
                  ("cap_portfolio", usage["portfolio"], lim.max_portfolio),
                  ("cap_strategy", usage.get("strategy", 0), strategy_cap),
                  ("cap_open_orders", usage["open_orders"], lim.max_open_orders))
        for name, used, cap in checks:
            if cap is not None and used > cap:
                return name
        return None

    def _strategy_cap(self, intent: Intent) -> int | None:
        """The intent's strategy's capital cap in ticks (0 when it has no allocation), None without caps."""
        return None if self.strategy_caps is None else self.strategy_caps.get(intent.strategy, 0)

    def _usage_of(self, new: Holding, row: Row[Any]) -> dict[str, int]:
        usage = {"order": new.cost, "market": row.u_market, "event": row.u_event, "family": row.u_family,
                 "portfolio": row.u_portfolio, "open_orders": row.u_open_orders}
        if self.strategy_caps is not None:
            usage["strategy"] = row.u_strategy
        return usage

    @staticmethod
    def _add(h: Holding, book_side: str, yes_price: int, count: int) -> None:
        if book_side == "bid":
            h.yes += count
        else:
            h.no += count
        # Cost without the fee here: exposure is what the contracts can lose; fees are in `order`.
        h.cost += cost(count, leg_price(book_side, yes_price), rounding="up")  # type: ignore[arg-type]

    # -- the connection -------------------------------------------------------------------------

    async def _one(self, stmt: TextClause, params: dict[str, Any]) -> Row[Any]:
        """Run one statement as its own transaction and return its single row."""
        if self._engine is None:  # a session factory without an engine bound: a plain transaction
            async with self.sessions() as s, s.begin():
                return (await s.execute(stmt, params)).one()
        if not self._dedicated:
            async with self._engine.connect() as c:
                return (await c.execute(stmt, params)).one()
        async with self._turn:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = await self._engine.connect()
                try:
                    row = (await self._conn.execute(stmt, params)).one()
                    await self._conn.commit()  # autocommit: no round trip, only the connection's own state
                    return row
                except DBAPIError as e:
                    await self._drop()
                    # A connection that died (a database restart) is replaced and the statement tried once
                    # more: kdesk_reserve is idempotent per client_order_id, and an intent whose first
                    # attempt did commit is found open on its leg (the desk then resumes it).
                    if not e.connection_invalidated or attempt == 2:
                        raise
                except BaseException:  # cancelled mid-statement: the connection's state is unknown
                    await self._drop()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # closed, not returned to the pool
                await conn.close()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Close the dedicated connection (if one is open), after a statement in flight if it ends soon."""
        got = False
        with contextlib.suppress(TimeoutError):
            got = await asyncio.wait_for(self._turn.acquire(), timeout_s)
        try:
            await self._drop()
        finally:
            if got:
                self._turn.release()

    # -- strikes --------------------------------------------------------------------------------

    async def sync_strikes(self) -> int:
        """Write the strikes learned since the last call to `risk_strikes` (one statement); how many.

        Unknown strikes (None) are never written: another replica may know the market better.
        """
        todo = {t: s for t, s in self.strikes.items() if s is not None and self._synced.get(t) != s}
        if not todo:
            return 0
        rows = [{"mode": self.mode, "ticker": t, "strike_type": s.strike_type, "floor_strike": s.floor,
                 "cap_strike": s.cap} for t, s in sorted(todo.items())]  # one order: no lock cycles
        cols = (RiskStrike.strike_type, RiskStrike.floor_strike, RiskStrike.cap_strike)
        async with self.sessions() as s, s.begin():
            # The usage lock before any strike row, as kdesk_reserve takes them (the trigger re-nets events).
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": f"kdesk:risk-usage:{self.mode}"})
            await upsert_many(s, RiskStrike, rows, key=["mode", "ticker"], where=lambda ex: tuple_(*cols)
                              .is_distinct_from(tuple_(ex.strike_type, ex.floor_strike, ex.cap_strike)))
        self._synced.update(todo)
        return len(todo)

    # -- diagnostics: the totals, and the same computed from scratch ----------------------------

    async def totals(self) -> dict[str, Any]:
        """The running usage as the triggers keep it (non-zero entries)."""
        async with self.sessions() as s:
            holdings = (await s.execute(select(RiskHolding).where(RiskHolding.mode == self.mode))).scalars().all()
            events = (await s.execute(select(RiskEventUsage.event_ticker, RiskEventUsage.family,
                                             RiskEventUsage.exposure_ticks)
                                      .where(RiskEventUsage.mode == self.mode))).all()
            families = (await s.execute(select(RiskFamilyUsage.family, RiskFamilyUsage.exposure_ticks)
                                        .where(RiskFamilyUsage.mode == self.mode))).all()
            mode = await s.scalar(select(RiskModeUsage).where(RiskModeUsage.mode == self.mode))
            strategies = (await s.execute(select(RiskStrategyUsage.strategy, RiskStrategyUsage.capital_ticks)
                                          .where(RiskStrategyUsage.mode == self.mode))).all()
            markets = (await s.execute(select(RiskStrategyMarket).where(RiskStrategyMarket.mode == self.mode))
                       ).scalars().all()
        return {
            "holdings": {(h.ticker, h.family, h.event_ticker): (h.yes_count, h.no_count, h.cost_ticks, h.open_buys,
                                                                h.open_yes_orders, h.open_no_orders, h.position)
                         for h in holdings},
            "events": {(e, f): x for e, f, x in events if x},
            "families": {f: x for f, x in families if x},
            "open_orders": mode.open_orders if mode else 0,
            "gross": mode.gross_ticks if mode else 0,
            "strategies": {st: x for st, x in strategies if x},
            "strategy_markets": {(m.ticker, m.strategy): (m.capital_ticks, m.open_buys, m.position) for m in markets},
        }

    async def totals_from_scratch(self) -> dict[str, Any]:
        """`totals()` computed from every open order and position of the mode (strikes from memory)."""
        book = await self._book()
        events = {(e, f): book.exposure(e, f, self.strikes) for e, f in book.groups()}
        families: dict[str, int] = defaultdict(int)
        for (_, f), x in events.items():
            families[f] += x
        return {"holdings": {k: tuple(v) for k, v in book.rows.items() if any(v)},
                "events": {k: x for k, x in events.items() if x},
                "families": {f: x for f, x in families.items() if x},
                "open_orders": book.open_orders, "gross": book.gross,
                "strategies": {st: x for st, x in book.strategies.items() if x},
                "strategy_markets": {k: tuple(v) for k, v in book.markets.items() if any(v)}}

    async def usage_from_scratch(self, intent: Intent, *, exclude_coid: str | None = None) -> dict[str, int]:
        """What `reserve` (or, with `exclude_coid`, `allows_reprice` before its -1) finds as the usage,
        computed from every open order and position of the mode, the way the previous gate did."""
        book = await self._book(exclude_coid)
        new = holding_of(intent)
        fam = intent.family or ""
        extra = (intent.ticker, new)
        market = Holding()
        for (t, _, _), r in book.rows.items():
            if t == intent.ticker:
                market.yes, market.no, market.cost = market.yes + r[0], market.no + r[1], market.cost + r[2]
        market.yes, market.no, market.cost = market.yes + new.yes, market.no + new.no, market.cost + new.cost
        family = sum(book.exposure(e, f, self.strikes) for e, f in book.groups()
                     if f == fam and e != intent.event_ticker)
        usage = {"order": new.cost, "market": market.worst(),
                 "event": book.exposure(intent.event_ticker, None, self.strikes, extra),
                 "family": family + book.exposure(intent.event_ticker, fam, self.strikes, extra),
                 "portfolio": book.gross + new.cost, "open_orders": book.open_orders + 1}
        if self.strategy_caps is not None:
            usage["strategy"] = book.strategies[intent.strategy] + new.cost
        return usage

    async def _book(self, exclude_coid: str | None = None) -> _Book:
        q = select(Order.ticker, Order.event_ticker, Order.family, Order.strategy, Order.book_side,
                   Order.outcome_side, Order.yes_price, Order.remaining_count, Order.reduce_only, Order.status,
                   Order.order_id, Order.fill_count).where(
            Order.mode == self.mode, or_(Order.status.in_(OPEN_ORDER_STATUSES), Order.fill_count > 0))
        if exclude_coid is not None:
            q = q.where(Order.client_order_id != exclude_coid)
        async with self.sessions() as s:
            orders = (await s.execute(q)).all()
            booked = dict((await s.execute(select(Fill.order_id, func.sum(Fill.count)).where(Fill.mode == self.mode)
                                           .group_by(Fill.order_id))).all())
            positions = (await s.execute(select(Position.ticker, Position.event_ticker, Position.family,
                                                Position.strategy, Position.position, Position.cost_ticks)
                                         .where(Position.mode == self.mode, Position.position != 0))).all()
        book = _Book()
        for o in orders:
            is_open = o.status in OPEN_ORDER_STATUSES
            # Remaining while open, plus fills the venue reported that no position holds yet.
            n = 0 if o.reduce_only else max(0, (o.remaining_count if is_open else 0) + o.fill_count
                                            - int(booked.get(o.order_id, 0) if o.order_id is not None else 0))
            if not is_open and n == 0:
                continue
            r = book.rows[(o.ticker, o.family or "", o.event_ticker)]
            if is_open:
                r[4 if o.outcome_side == "yes" else 5] += 1
                book.open_orders += 1
            if o.reduce_only:
                continue
            h = Holding()
            RiskGate._add(h, o.book_side, o.yes_price, n)
            r[0], r[1], r[2], r[3] = r[0] + h.yes, r[1] + h.no, r[2] + h.cost, r[3] + 1
            book.gross += h.cost
            m = book.markets[(o.ticker, o.strategy)]
            m[0], m[1] = m[0] + h.cost, m[1] + 1
            book.strategies[o.strategy] += h.cost
        for p in positions:
            r = book.rows[(p.ticker, p.family or "", p.event_ticker)]
            r[0], r[1], r[2], r[6] = r[0] + max(p.position, 0), r[1] + max(-p.position, 0), r[2] + p.cost_ticks, \
                r[6] + p.position
            book.gross += p.cost_ticks
            m = book.markets[(p.ticker, p.strategy)]
            m[0], m[2] = m[0] + p.cost_ticks, m[2] + p.position
            book.strategies[p.strategy] += p.cost_ticks
        return book


@dataclass(slots=True)
class _Book:
    """Holdings per (ticker, family, event) as the triggers keep them, computed from the rows:
    [yes, no, cost, open_buys, open_yes_orders, open_no_orders, position]; per (ticker, strategy)
    [capital, open_buys, position] and each strategy's capital."""

    rows: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0] * 7))
    open_orders: int = 0
    gross: int = 0
    markets: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0] * 3))
    strategies: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def groups(self) -> set[tuple[str, str]]:
        return {(e, f) for (_, f, e) in self.rows}

    def exposure(self, event: str, family: str | None, strikes: dict[str, Strike | None],
                 extra: tuple[str, Holding] | None = None) -> int:
        """event_exposure of the event's markets that count (an open buy order or a position), of one
        family or all, with `extra` added to its market."""
        hs: dict[str, Holding] = defaultdict(Holding)
        for (t, f, e), r in self.rows.items():
            if e == event and (family is None or f == family) and (r[3] > 0 or r[6] != 0):
                h = hs[t]
                h.yes, h.no, h.cost = h.yes + r[0], h.no + r[1], h.cost + r[2]
        if extra is not None:
            h = hs[extra[0]]
            h.yes, h.no, h.cost = h.yes + extra[1].yes, h.no + extra[1].no, h.cost + extra[1].cost
        return event_exposure(hs, strikes)


async def reserved_total(sessions: async_sessionmaker[AsyncSession], mode: str) -> dict[str, Any]:
    """Live reservation totals per scope kind (for status replies)."""
    async with sessions() as s:
        rows = (await s.execute(select(RiskReservation.scope_kind, func.sum(RiskReservation.amount_ticks))
                                .where(RiskReservation.mode == mode, RiskReservation.status == "reserved")
                                .group_by(RiskReservation.scope_kind))).all()
    return {k: int(v) for k, v in rows}
