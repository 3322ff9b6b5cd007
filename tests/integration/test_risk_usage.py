"""The risk usage PostgreSQL keeps by triggers equals the usage computed from scratch, after every change.

Random sequences of what happens to a desk's orders — reservations (sent at once or not, reduce-only
exits, caps that block), acceptance, fills and partial fills (frames in either order), cancels, amends,
local finishes, settlements, reconciliation repairs, strikes learned late — go through the real executor
code paths (RiskGate, OrderLifecycle.on_frame, Ledger) on a real PostgreSQL. After each step the
trigger-maintained totals (`RiskGate.totals`) must equal `RiskGate.totals_from_scratch` (every open
order and position read and netted in Python, the previous gate's way), and the usage a reservation
would see (`RiskGate.usage`, the SQL path of kdesk_reserve) must equal `usage_from_scratch`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.common.config import Mode
from libs.common.db import Order, Position, create_engine, session_factory
from libs.common.db.executor import OPEN_ORDER_STATUSES
from libs.common.money import format_count, format_dollars
from services.executor.exposure import Holding, Strike, event_exposure, gross
from services.executor.ledger import Ledger, OrderState
from services.executor.markets import Markets
from services.executor.orders import OrderLifecycle
from services.executor.paper import PaperBroker
from services.executor.risk import LEG_BUSY, Intent, RiskGate, Send
from tests.kit.desk import desk_settings
from tests.kit.sim import BRACKETS, BTC_EVENT, BTC_TICKERS, EVENT, TICKERS

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
SYN = "KXSYN-26NOV23"  # strikes drawn at random: every rule, ties, near-ties, inverted and unknown ones
ODD = "KXODD-26NOV23"  # one market without strike information, one whose rule is not understood
_ids = itertools.count()


def world(rng: random.Random) -> tuple[dict[str, tuple[str, str | None]], dict[str, Strike | None]]:
    """Markets (ticker -> event, family) and their strikes."""
    markets: dict[str, tuple[str, str | None]] = {t: (EVENT, "weather") for t in TICKERS}
    markets.update({t: (BTC_EVENT, "btc") for t in BTC_TICKERS})
    strikes: dict[str, Strike | None] = {}
    for (_, lo, hi), t in zip(BRACKETS, TICKERS, strict=True):
        strikes[t] = Strike("less" if lo is None else "greater" if hi is None else "between", lo, hi)
    for t in BTC_TICKERS:
        strikes[t] = Strike("greater", Decimal(t.rsplit("-T", 1)[1]), None)
    values = [Decimal(v) for v in ("40", "40.0001", "40.0002", "41", "42.5", "45")]
    family = rng.choice(["llm", "weather"])  # weather: two events of one family
    for i in range(6):
        t = f"{SYN}-M{i}"
        markets[t] = (SYN, family)
        kind = rng.choice(["greater", "greater_or_equal", "less", "less_or_equal", "between", "between"])
        lo, hi = sorted(rng.sample(values, 2)) if rng.random() < 0.8 else (values[2], values[2])
        if kind in ("greater", "greater_or_equal"):
            strikes[t] = Strike(kind, lo, None)
        elif kind in ("less", "less_or_equal"):
            strikes[t] = Strike(kind, None, hi)
        else:  # sometimes inverted: never YES
            strikes[t] = Strike(kind, hi, lo) if rng.random() < 0.15 else Strike(kind, lo, hi)
    markets[f"{ODD}-A"] = (ODD, None)
    markets[f"{ODD}-B"] = (ODD, None)
    strikes[f"{ODD}-B"] = Strike("custom", Decimal(3), None)  # known points, unknown rule: the event counts alone
    return markets, strikes


@dataclass
class Mine:
    """What the test knows of one of its orders."""

    intent: Intent
    order_id: str | None = None
    price: int = 0
    filled: int = 0
    remaining: int = 0
    fees: int = 0
    final: bool = False


class Desk:
    """The executor's parts over one database: a gate, a ledger and the order lifecycle for frames."""

    def __init__(self, engine: AsyncEngine, strikes: dict[str, Strike | None], *, dedicated: bool) -> None:
        sessions = session_factory(engine)
        limits = desk_settings(max_order_usd="6", max_market_usd="8", max_event_usd="15", max_family_usd="30",
                               max_portfolio_usd="60", max_open_orders=14).risk
        self.gate = RiskGate(sessions, "sim", limits, strikes, dedicated=dedicated)
        self.ledger = Ledger(sessions, "sim", clock=lambda: NOW)
        self.orders = OrderLifecycle(PaperBroker(lambda: NOW, 10**8), self.ledger, Markets(), mode=Mode.SIM,
                                     clock=lambda: NOW)


@pytest.fixture
async def engines(db_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    a, b = create_engine(db_url), create_engine(db_url)
    yield a, b
    await a.dispose()
    await b.dispose()


def user_order(m: Mine, status: str) -> dict[str, Any]:
    it = m.intent
    return {"type": "user_order", "msg": {
        "order_id": m.order_id, "ticker": it.ticker, "status": status, "outcome_side": it.outcome_side,
        "book_side": it.book_side, "yes_price_dollars": format_dollars(m.price),
        "fill_count_fp": format_count(m.filled), "remaining_count_fp": format_count(m.remaining),
        "initial_count_fp": format_count(it.count), "maker_fees_dollars": format_dollars(m.fees),
        "client_order_id": it.client_order_id, "last_updated_ts_ms": next(_ids)}}


def fill_frame(m: Mine, count: int, fee: int) -> dict[str, Any]:
    it = m.intent
    return {"type": "fill", "msg": {
        "trade_id": f"tr-{next(_ids)}", "order_id": m.order_id, "market_ticker": it.ticker, "is_taker": False,
        "side": it.outcome_side, "outcome_side": it.outcome_side, "book_side": it.book_side,
        "yes_price_dollars": format_dollars(m.price), "count_fp": format_count(count),
        "fee_cost": format_dollars(fee), "action": "buy", "client_order_id": it.client_order_id,
        "ts_ms": int(NOW.timestamp() * 1000)}}


async def previous_usage(sessions: async_sessionmaker[AsyncSession], mode: str, strikes: dict[str, Strike | None],
                         intent: Intent, exclude_coid: str | None = None) -> tuple[dict[str, int], bool]:
    """The previous gate's `RiskGate._usage`, as it was (every open order and position read, one lock per
    mode), and whether no event mixes families — only then is its family figure defined (it followed row
    order), and only then must it match the family scope as the triggers keep it."""
    q = select(Order.ticker, Order.event_ticker, Order.family, Order.book_side, Order.yes_price,
               Order.remaining_count, Order.reduce_only).where(Order.mode == mode,
                                                               Order.status.in_(OPEN_ORDER_STATUSES))
    if exclude_coid is not None:
        q = q.where(Order.client_order_id != exclude_coid)
    async with sessions() as s:
        orders = (await s.execute(q)).all()
        positions = (await s.execute(select(Position.ticker, Position.event_ticker, Position.family,
                                            Position.position, Position.cost_ticks)
                                     .where(Position.mode == mode, Position.position != 0))).all()
    holdings: dict[str, Holding] = defaultdict(Holding)
    event_of: dict[str, str] = {}
    family_of: dict[str, str | None] = {}
    families: dict[str, set[str | None]] = defaultdict(set)
    for p in positions:
        h = holdings[p.ticker]
        if p.position > 0:
            h.yes += p.position
        else:
            h.no += -p.position
        h.cost += p.cost_ticks
        event_of[p.ticker], family_of[p.ticker] = p.event_ticker, p.family
        families[p.event_ticker].add(p.family)
    for o in orders:
        if o.reduce_only:
            continue
        RiskGate._add(holdings[o.ticker], o.book_side, o.yes_price, o.remaining_count)
        event_of[o.ticker], family_of[o.ticker] = o.event_ticker, o.family
        families[o.event_ticker].add(o.family)
    new = Holding()
    RiskGate._add(new, intent.book_side, intent.yes_price, intent.count)
    h = holdings[intent.ticker]
    h.yes, h.no, h.cost = h.yes + new.yes, h.no + new.no, h.cost + new.cost
    event_of[intent.ticker], family_of[intent.ticker] = intent.event_ticker, intent.family
    families[intent.event_ticker].add(intent.family)

    by_event: dict[str, dict[str, Holding]] = defaultdict(dict)
    for t, hold in holdings.items():
        by_event[event_of[t]][t] = hold
    event_exp = {e: event_exposure(hs, strikes) for e, hs in by_event.items()}
    family_of_event = {event_of[t]: family_of[t] for t in holdings}
    return {
        "order": new.cost,
        "market": holdings[intent.ticker].worst(),
        "event": event_exp[intent.event_ticker],
        "family": sum(v for e, v in event_exp.items() if family_of_event.get(e) == intent.family),
        "portfolio": gross(holdings.values()),
        "open_orders": len(orders) + 1,
    }, all(len(f) == 1 for f in families.values())


async def same_as_before(gate: RiskGate, intent: Intent, got: dict[str, int], seen: Counter[str],
                         exclude_coid: str | None = None, *,
                         before: tuple[dict[str, int], bool] | None = None) -> None:
    """`got` (a usage the new gate found) is what the previous gate computed, family where defined."""
    before, unmixed = before or await previous_usage(gate.sessions, gate.mode, gate.strikes, intent, exclude_coid)
    seen["family_compared" if unmixed else "family_mixed"] += 1
    if not unmixed:
        before.pop("family")
        got = {k: v for k, v in got.items() if k != "family"}
    assert got == before


class Run:
    """One random history against one database (two replicas' gates, one ledger)."""

    def __init__(self, rng: random.Random, desks: list[Desk], markets: dict[str, tuple[str, str | None]],
                 strikes: dict[str, Strike | None], late: dict[str, Strike | None] | None = None) -> None:
        self.rng, self.desks, self.markets, self.strikes = rng, desks, markets, strikes
        self.late = dict(late or {})  # strikes whose definitions arrive during the run
        self.mine: dict[str, Mine] = {}
        self.seen: Counter[str] = Counter()  # which paths the run went through

    @property
    def desk(self) -> Desk:
        return self.rng.choice(self.desks)

    def intent(self, *, reduce_only: bool = False, ticker: str | None = None) -> Intent:
        rng = self.rng
        ticker = ticker or rng.choice(sorted(self.markets))
        event, family = self.markets[ticker]
        if rng.random() < 0.05:
            family = rng.choice(["weather", "btc", "llm", None])  # families mixed in one event
        side = rng.choice(["bid", "ask"])
        return Intent(client_order_id=f"kd-{next(_ids)}", signal_id=None,
                      leg="exit" if reduce_only else ("yes" if side == "bid" else "no"), family=family,
                      series_ticker=event.split("-")[0], event_ticker=event, ticker=ticker, book_side=side,
                      yes_price=rng.randrange(100, 9900, 100), count=rng.randrange(100, 1200, 100),
                      reduce_only=reduce_only, fee_multiplier=Decimal(1))

    def open_ones(self, *, accepted: bool | None = None) -> list[Mine]:
        return [m for m in self.mine.values() if not m.final and (accepted is None
                                                                  or (m.order_id is not None) == accepted)]

    async def check(self) -> None:
        gate = self.desks[0].gate
        totals = await gate.totals()
        assert totals == await gate.totals_from_scratch()
        probe = self.intent()
        got = await self.desk.gate.usage(probe)
        assert got == await gate.usage_from_scratch(probe)
        await same_as_before(gate, probe, got, self.seen)
        self.seen["netted"] += any(e == probe.event_ticker and x < sum(
            v[2] for (t, f, ev), v in totals["holdings"].items() if ev == e and f == fam)
            for (e, fam), x in totals["events"].items())

    async def step(self) -> None:
        rng = self.rng
        kind = rng.choices(["reserve", "accept", "fill", "cancel", "amend", "finish", "settle", "repair",
                            "strike", "mark_sent"], weights=[10, 6, 8, 3, 3, 1, 1, 1, 1, 1])[0]
        self.seen[kind] += 1
        await getattr(self, kind)()

    async def reserve(self) -> None:
        reduce_only = self.rng.random() < 0.1
        it = self.intent(reduce_only=reduce_only)
        desk = self.desk
        send = self.rng.choice([None, Send(0), Send(2, only_if_flat=True)])
        want = await desk.gate.usage_from_scratch(it)
        previous = await previous_usage(desk.gate.sessions, desk.gate.mode, desk.gate.strikes, it)
        working, held = await desk.ledger.working_and_held(it.ticker, it.outcome_side)
        # The guard also holds off an entry while the other leg has an order open (any order, exits too).
        other = [o for o in await desk.ledger.open_orders()
                 if o.ticker == it.ticker and o.outcome_side != it.outcome_side]
        v = await desk.gate.reserve(it, now=NOW, reduces_only=reduce_only, send=send)
        if send is not None and send.only_if_flat and (working or held or other):
            assert v.reason == LEG_BUSY and not v.ok
            self.seen["leg_busy"] += 1
            return
        assert v.reason != LEG_BUSY and not v.existing
        assert v.usage == want
        await same_as_before(desk.gate, it, v.usage, self.seen, before=previous)
        assert v.reason == (None if reduce_only else desk.gate._check(it, want))
        self.seen[v.reason or "reserved"] += 1
        if v.ok:
            assert v.status == ("intent" if send is None else "pending")
            self.mine[it.client_order_id] = Mine(it, price=it.yes_price, remaining=it.count)
        again = await self.desk.gate.reserve(it, now=NOW)  # a redelivery: decided once
        assert again.existing and again.status == v.status

    async def accept(self) -> None:
        todo = self.open_ones(accepted=False)
        if todo:
            m = self.rng.choice(todo)
            m.order_id = f"ex-{m.intent.client_order_id}"
            await self.desk.orders.on_frame(user_order(m, "resting"))

    async def fill(self) -> None:
        todo = [m for m in self.open_ones(accepted=True) if m.remaining > 0]
        if not todo:
            return
        m = self.rng.choice(todo)
        count = min(m.remaining, self.rng.randrange(100, 1000, 100))
        fee = self.rng.randrange(0, 50)
        m.filled, m.remaining, m.fees = m.filled + count, m.remaining - count, m.fees + fee
        m.final = m.remaining == 0
        frames = [fill_frame(m, count, fee), user_order(m, "executed" if m.final else "resting")]
        if self.rng.random() < 0.5:
            frames.reverse()  # the order's totals before its fill, as the WebSocket may deliver them
        for f in frames:
            await self.desk.orders.on_frame(f)

    async def cancel(self) -> None:
        todo = self.open_ones(accepted=True)
        if todo:
            m = self.rng.choice(todo)
            m.remaining, m.final = 0, True
            await self.desk.orders.on_frame(user_order(m, "canceled"))

    async def amend(self) -> None:
        todo = [m for m in self.open_ones(accepted=True) if m.remaining > 0]
        if not todo:
            return
        m = self.rng.choice(todo)
        desk = self.desk
        price = self.rng.randrange(100, 9900, 100)
        remaining = max(100, m.remaining - self.rng.choice([0, 0, 100]))
        moved = replace(m.intent, yes_price=price, count=remaining)
        want = await desk.gate.usage_from_scratch(moved, exclude_coid=m.intent.client_order_id)
        await same_as_before(desk.gate, moved, want, self.seen, m.intent.client_order_id)
        want["open_orders"] -= 1
        assert await desk.gate.allows_reprice(moved, exclude_coid=m.intent.client_order_id) \
            == desk.gate._check(moved, want)
        m.price, m.remaining = price, remaining
        await desk.orders.on_frame(user_order(m, "resting"))

    async def finish(self) -> None:
        todo = self.open_ones(accepted=False)
        if todo:
            m = self.rng.choice(todo)
            m.final = True
            await self.desk.ledger.finish(m.intent.client_order_id, self.rng.choice(["rejected", "canceled"]),
                                          "never_reached_exchange")

    async def settle(self) -> None:
        ticker = self.rng.choice(sorted(self.markets))
        await self.desk.ledger.settle(ticker, self.rng.choice(["yes", "no"]), NOW)

    async def repair(self) -> None:
        ticker = self.rng.choice(sorted(self.markets))
        position = self.rng.randrange(-800, 900, 100)
        await self.desk.ledger.set_position(ticker, position=position, cost=abs(position) * 40, fees=None,
                                            event_ticker=self.markets[ticker][0])

    async def strike(self) -> None:
        """A definition arrives for a market whose strike was not known: the events holding it re-net."""
        if self.late:
            t = self.rng.choice(sorted(self.late))
            self.strikes[t] = self.late.pop(t)
            assert await self.desks[0].gate.sync_strikes() == 1  # the one that synced at start

    async def mark_sent(self) -> None:
        todo = [m for m in self.open_ones(accepted=False)]
        if todo:
            await self.desk.ledger.mark_sent(self.rng.choice(todo).intent.client_order_id, NOW, exchange_index=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_trigger_totals_equal_the_from_scratch_usage_after_every_step(
        engines: tuple[AsyncEngine, AsyncEngine], seed: int) -> None:
    rng = random.Random(seed)
    markets, strikes = world(rng)
    late = {t: strikes.pop(t) for t in rng.sample(sorted(t for t in markets if t.startswith(SYN)), 2)}
    desks = [Desk(engines[0], strikes, dedicated=False), Desk(engines[1], strikes, dedicated=True)]
    try:
        await desks[0].gate.sync_strikes()
        run = Run(rng, desks, markets, strikes, late)  # two markets are traded before their strike is known
        for _ in range(140):
            await run.step()
            await run.check()
        assert len(run.mine) > 10 and any(m.filled for m in run.mine.values())
        assert any(m.final for m in run.mine.values())
        # The run went through the paths that matter: netting, a cap, the busy leg, the old family figure.
        assert run.seen["netted"] and run.seen["family_compared"] and run.seen["leg_busy"], run.seen
        assert any(k.startswith("cap_") for k in run.seen), run.seen
    finally:
        for d in desks:
            await d.gate.aclose()


async def test_totals_stay_exact_under_concurrent_fills_cancels_and_reservations(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """Two replicas at once: fills, cancels and amends of one event's orders racing reservations on it."""
    rng = random.Random(7)
    markets, strikes = world(rng)
    markets[TICKERS[5]] = (EVENT, "llm")  # two families in the event: one fill moves two (event, family) rows
    desks = [Desk(engines[0], strikes, dedicated=True), Desk(engines[1], strikes, dedicated=True)]
    try:
        await desks[0].gate.sync_strikes()
        run = Run(rng, desks, {t: markets[t] for t in TICKERS}, strikes)
        for _ in range(40):
            await run.reserve()
        for m in run.open_ones():
            await run.desk.orders.on_frame(user_order(_accepted(m), "resting"))

        async def churn(i: int) -> None:
            d = desks[i % 2]
            for m in list(run.open_ones(accepted=True))[i::4]:
                if m.final:
                    continue
                count = min(m.remaining, 100)
                m.filled, m.remaining = m.filled + count, m.remaining - count
                m.final = m.remaining == 0 or i == 3
                await d.orders.on_frame(fill_frame(m, count, 1))
                await d.orders.on_frame(user_order(m, "executed" if m.remaining == 0 else
                                                   "canceled" if i == 3 else "resting"))

        async def reserve(i: int) -> None:
            for _ in range(10):
                it = run.intent()
                await desks[i % 2].gate.reserve(it, now=NOW, send=Send(0))

        async def reconcile(i: int) -> None:  # repairs and settlements of the same markets meanwhile
            r = random.Random(i)
            for _ in range(8):
                t = r.choice(TICKERS)
                if r.random() < 0.3:
                    await desks[i % 2].ledger.settle(t, r.choice(["yes", "no"]), NOW)
                else:
                    p = r.randrange(-500, 600, 100)
                    await desks[i % 2].ledger.set_position(t, position=p, cost=abs(p) * 30, fees=None,
                                                           event_ticker=EVENT)

        async def learn() -> None:  # a definition with a new strike rule arrives
            strikes[TICKERS[0]] = Strike("less_or_equal", None, Decimal("50.5"))
            await desks[1].gate.sync_strikes()

        async with asyncio.TaskGroup() as tg:  # a failure cancels the rest (none outlives the test)
            for i in range(4):
                tg.create_task(churn(i))
            for i in range(2):
                tg.create_task(reserve(i))
                tg.create_task(reconcile(i))
            tg.create_task(learn())
        gate = desks[0].gate
        assert await gate.totals() == await gate.totals_from_scratch()
        async with session_factory(engines[0])() as s:
            assert await s.scalar(select(Order.id).where(Order.fill_count > 0).limit(1)) is not None
    finally:
        for d in desks:
            await d.gate.aclose()


def _accepted(m: Mine) -> Mine:
    m.order_id = f"ex-{m.intent.client_order_id}"
    return m


async def test_a_state_update_and_a_reservation_of_an_unknown_row_leave_the_totals_alone(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """Updates that do not change what an order holds (pending mark, fees, raw payload) move nothing."""
    markets, strikes = world(random.Random(1))
    d = Desk(engines[0], strikes, dedicated=False)
    run = Run(random.Random(5), [d], {TICKERS[2]: markets[TICKERS[2]]}, strikes)
    it = run.intent(ticker=TICKERS[2])
    assert (await d.gate.reserve(it, now=NOW)).status == "intent"
    before = await d.gate.totals()
    await d.ledger.mark_sent(it.client_order_id, NOW + timedelta(seconds=1), exchange_index=0)
    await d.ledger.finish_reason(it.client_order_id, "why not")
    row, changed = await d.ledger.set_state(it.client_order_id, OrderState(
        "ex-1", "resting", 0, it.count, it.yes_price, fees=3, raw={"x": 1}))
    assert row is not None and changed
    assert await d.gate.totals() == before == await d.gate.totals_from_scratch()


async def test_an_order_answered_executed_before_its_fills_are_booked_still_counts(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """The create's answer says `executed`; the fills reach the position a REST call later. In between, the
    previous gate counted the order nowhere (not open, not in a position) — the window a second replica's
    reservation slipped through above the event cap. Now the reported fills count until they are booked."""
    markets, strikes = world(random.Random(1))
    d = Desk(engines[0], strikes, dedicated=True)
    try:
        run = Run(random.Random(9), [d], {TICKERS[2]: markets[TICKERS[2]]}, strikes)
        it = replace(run.intent(ticker=TICKERS[2]), book_side="bid", leg="yes", yes_price=3000, count=500,
                     family="weather")
        assert (await d.gate.reserve(it, now=NOW, send=Send(0))).ok
        probe = replace(it, client_order_id="kd-probe", ticker=TICKERS[3])
        held = await d.gate.usage(probe)
        m = _accepted(Mine(it, price=it.yes_price, remaining=it.count))
        await d.orders.on_frame(user_order(m, "resting"))
        m.filled, m.remaining = it.count, 0
        await d.orders.on_frame(user_order(m, "executed"))  # the answer, before any fill is booked
        held["open_orders"] -= 1  # no longer open; every exposure stays
        assert await d.gate.usage(probe) == held
        assert await d.gate.totals() == await d.gate.totals_from_scratch()
        before, _ = await previous_usage(d.gate.sessions, "sim", strikes, probe)
        assert before["event"] < held["event"]  # what the previous gate saw here: the order gone
        await d.orders.on_frame(fill_frame(m, it.count, 9))  # booked: the position holds it now
        assert await d.gate.usage(probe) == held
        totals = await d.gate.totals()
        assert totals == await d.gate.totals_from_scratch()
        assert totals["holdings"][(it.ticker, "weather", EVENT)][3] == 0  # nothing left on the order
    finally:
        await d.gate.aclose()


async def test_the_migration_back_fills_the_totals_from_the_rows_already_there(empty_db_url: str) -> None:
    """A database with open, partly filled, executed-but-unbooked and reduce-only orders and positions,
    upgraded to the running totals: they start equal to the from-scratch computation."""
    from alembic import command
    from sqlalchemy import insert

    from libs.common.db import Fill
    from libs.common.db.migrate import alembic_config, upgrade_to_head

    # The schema before the running totals (Alembic's env runs its own event loop: off this one).
    await asyncio.to_thread(command.upgrade, alembic_config(empty_db_url), "0005")
    engine = create_engine(empty_db_url)
    try:
        base = {"mode": "sim", "leg": "yes", "family": "weather", "series_ticker": "KXHIGHNY", "event_ticker": EVENT,
                "book_side": "bid", "outcome_side": "yes", "yes_price": 3_000, "initial_count": 500,
                "time_in_force": "good_till_canceled", "reduce_only": False}
        orders = [  # (client_order_id, ticker, status, fill_count, remaining, order_id)
            ("kd-open", TICKERS[0], "resting", 0, 500, "ex-open"),
            ("kd-part", TICKERS[1], "resting", 200, 300, "ex-part"),  # 200 filled, booked
            ("kd-done", TICKERS[2], "executed", 500, 0, "ex-done"),  # 500 filled, 300 booked
            ("kd-new", TICKERS[3], "intent", 0, 500, None),
            ("kd-gone", TICKERS[4], "canceled", 0, 0, "ex-gone"),
        ]
        async with engine.begin() as c:
            await c.execute(insert(Order.__table__), [
                {**base, "client_order_id": coid, "ticker": t, "status": st, "fill_count": f, "remaining_count": r,
                 "order_id": oid} for coid, t, st, f, r, oid in orders]
                + [{**base, "client_order_id": "kd-exit", "ticker": TICKERS[1], "status": "resting", "leg": "exit",
                    "book_side": "ask", "outcome_side": "no", "reduce_only": True, "fill_count": 0,
                    "remaining_count": 200, "order_id": "ex-exit"}])
            await c.execute(insert(Fill.__table__), [
                {"mode": "sim", "fill_id": f"f-{oid}", "order_id": oid, "ticker": t, "book_side": "bid",
                 "outcome_side": "yes", "count": n, "yes_price": 3_000, "no_price": 7_000, "is_taker": False,
                 "fee_ticks": 0, "filled_at": NOW} for oid, t, n in (("ex-part", TICKERS[1], 200),
                                                                    ("ex-done", TICKERS[2], 300))])
            await c.execute(insert(Position.__table__), [
                {"mode": "sim", "ticker": TICKERS[1], "event_ticker": EVENT, "family": "weather", "position": 200,
                 "cost_ticks": 6_000},
                {"mode": "sim", "ticker": TICKERS[2], "event_ticker": EVENT, "family": "weather", "position": 300,
                 "cost_ticks": 9_000},
                {"mode": "paper", "ticker": BTC_TICKERS[0], "event_ticker": BTC_EVENT, "family": None,
                 "position": -400, "cost_ticks": 8_000}])
        upgrade_to_head(empty_db_url)
        gates = [RiskGate(session_factory(engine), mode, desk_settings().risk, {}) for mode in ("sim", "paper")]
        for gate in gates:
            totals = await gate.totals()
            assert totals == await gate.totals_from_scratch() and totals["gross"] > 0
        sim = await gates[0].totals()
        assert sim["open_orders"] == 4  # open, part, new, exit
        assert sim["holdings"][(TICKERS[2], "weather", EVENT)][0] == 500  # 300 booked + 200 still on the order
    finally:
        await engine.dispose()
