"""Strategies on real PostgreSQL (#17): capital capped per strategy by the locked reservation, across
replicas; a market belongs to one strategy at a time; the running strategy totals stay exact.

Each replica is a `RiskGate` on its own engine, as two executor processes are; fills, cancels and
settlements go through the real `Ledger`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.db import Order, Position, create_engine, session_factory
from libs.common.db.migrate import alembic_config, upgrade_to_head
from libs.common.money import ONE_CONTRACT
from libs.common.strategies import STRATEGIES, Strategy, parse_allocation, strategy_caps
from services.executor.ledger import FillFact, Ledger, OrderState
from services.executor.risk import Intent, RiskGate, Verdict
from tests.kit.desk import desk_settings

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
EVENT = "KXHIGHNY-26NOV23"
TICKERS = [f"{EVENT}-B{40 + i}.5" for i in range(60)]
PRICE = 5_000  # YES (or NO) at 50¢
COST = 5_000  # one contract at 50¢: what it can lose, in ticks
_ids = itertools.count()


@pytest.fixture
async def engines(db_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on this test's own migrated database: one per replica."""
    a, b = create_engine(db_url), create_engine(db_url)
    yield a, b
    await a.dispose()
    await b.dispose()


def gate(engine: AsyncEngine, caps: dict[str, int] | None, *, dedicated: bool = False, **limits: str) -> RiskGate:
    """One replica's gate; strikes unknown (each market counts alone), the desk's generous caps otherwise."""
    return RiskGate(session_factory(engine), "sim", desk_settings(**limits).risk, {}, dedicated=dedicated,
                    strategy_caps=caps)


def intent(ticker: str, strategy: Strategy = "directional", *, side: str = "bid", price: int = PRICE,
           count: int = ONE_CONTRACT, reduce_only: bool = False) -> Intent:
    """An order of `strategy` on a bracket of EVENT, fee-free (its reservation is its cost)."""
    return Intent(client_order_id=f"kd-{next(_ids)}", signal_id=None,
                  leg="exit" if reduce_only else "yes" if side == "bid" else "no", family="weather",
                  series_ticker="KXHIGHNY", event_ticker=EVENT, ticker=ticker, book_side=side,  # type: ignore[arg-type]
                  yes_price=price, count=count, reduce_only=reduce_only, fee_multiplier=Decimal(0), strategy=strategy)


def fill_of(it: Intent, order_id: str, count: int) -> FillFact:
    return FillFact(trade_id=f"tr-{next(_ids)}", order_id=order_id, ticker=it.ticker, book_side=it.book_side,
                    outcome_side=it.outcome_side, yes_price=it.yes_price, count=count, fee=0, is_taker=False,
                    filled_at=NOW, client_order_id=it.client_order_id)


async def execute(ledger: Ledger, it: Intent) -> str:
    """The venue accepts the order and fills it completely; its exchange id."""
    oid = f"ex-{it.client_order_id}"
    await ledger.set_state(it.client_order_id, OrderState(oid, "resting", 0, it.count, it.yes_price), accepted=True)
    await ledger.apply_fill(fill_of(it, oid, it.count), event_ticker=EVENT, series_ticker="KXHIGHNY", family="weather")
    await ledger.set_state(it.client_order_id, OrderState(oid, "executed", it.count, 0, it.yes_price))
    return oid


async def position_strategy(engine: AsyncEngine, ticker: str) -> tuple[int, str] | None:
    async with session_factory(engine)() as s:
        row = (await s.execute(select(Position.position, Position.strategy)
                               .where(Position.mode == "sim", Position.ticker == ticker))).one_or_none()
    return None if row is None else (row.position, row.strategy)


async def test_a_strategy_cap_blocks_that_strategy_while_directional_still_trades(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    caps = {"directional": 100 * COST, "market_making": 2 * COST, "quick_flip": 0}
    g = gate(engines[0], caps)
    mm = [await g.reserve(intent(TICKERS[i], "market_making"), now=NOW) for i in range(3)]
    assert [(v.ok, v.reason, v.usage["strategy"]) for v in mm] == [
        (True, None, COST), (True, None, 2 * COST), (False, "cap_strategy", 3 * COST)]
    d = await g.reserve(intent(TICKERS[10]), now=NOW)  # another strategy's capital: untouched
    assert (d.ok, d.usage["strategy"], d.usage["portfolio"]) == (True, COST, 3 * COST)
    flip = await g.reserve(intent(TICKERS[11], "quick_flip"), now=NOW)  # no allocation: no capital at all
    assert (flip.ok, flip.reason) == (False, "cap_strategy")
    # A reduce-only order passes every cap, the strategy's too.
    assert (await g.reserve(intent(TICKERS[0], "market_making", side="ask", reduce_only=True), now=NOW,
                            reduces_only=True)).ok
    async with session_factory(engines[0])() as s:
        rows = (await s.execute(select(Order.strategy, Order.status, Order.reason).order_by(Order.id))).all()
    assert [tuple(r) for r in rows] == [
        ("market_making", "intent", None), ("market_making", "intent", None),
        ("market_making", "blocked", "cap_strategy"), ("directional", "intent", None),
        ("quick_flip", "blocked", "cap_strategy"), ("market_making", "intent", None)]
    assert (await g.totals())["strategies"] == {"market_making": 2 * COST, "directional": COST}

    # Without strategy caps (the gate's default) only the other caps apply, and usage has no strategy entry.
    free = await gate(engines[1], None).reserve(intent(TICKERS[12], "quick_flip"), now=NOW)
    assert free.ok and "strategy" not in free.usage


async def test_a_repriced_order_counts_against_its_strategy_cap(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    g = gate(engines[0], {"directional": 0, "market_making": 2 * COST, "quick_flip": 0})
    first = intent(TICKERS[0], "market_making", price=4_000)  # 4,000 ticks
    assert (await g.reserve(first, now=NOW)).ok
    assert (await g.reserve(intent(TICKERS[1], "market_making"), now=NOW)).ok  # 9,000 of 10,000
    assert await g.allows_reprice(replace(first, yes_price=5_000), exclude_coid=first.client_order_id) is None
    assert await g.allows_reprice(replace(first, yes_price=6_000), exclude_coid=first.client_order_id) \
        == "cap_strategy"
    assert (await g.usage(replace(first, yes_price=6_000), exclude_coid=first.client_order_id))["strategy"] \
        == 11_000 == (await g.usage_from_scratch(replace(first, yes_price=6_000),
                                                 exclude_coid=first.client_order_id))["strategy"]


async def test_two_replicas_reserving_at_once_never_exceed_a_strategy_cap(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    n = 5
    caps = strategy_caps(parse_allocation("directional=0.5,market_making=0.25,quick_flip=0.25"), 4 * n * COST)
    assert (caps["market_making"], caps["directional"]) == (n * COST, 2 * n * COST)
    replicas = [gate(engines[0], caps), gate(engines[1], caps, dedicated=True)]
    try:
        # 16 maker orders on 16 markets and 8 directional ones on 8 others, alternating replicas, all at once.
        mm = [intent(TICKERS[i], "market_making") for i in range(16)]
        di = [intent(TICKERS[30 + i]) for i in range(8)]
        order = [*itertools.chain.from_iterable(zip(mm[::2], mm[1::2], di, strict=True))]
        verdicts: list[Verdict] = await asyncio.gather(
            *(replicas[i % 2].reserve(it, now=NOW) for i, it in enumerate(order)))
        by_coid = {it.client_order_id: v for it, v in zip(order, verdicts, strict=True)}
        won = [by_coid[it.client_order_id] for it in mm if by_coid[it.client_order_id].ok]
        lost = [by_coid[it.client_order_id] for it in mm if not by_coid[it.client_order_id].ok]
        assert len(won) == n
        assert {v.reason for v in lost} == {"cap_strategy"}
        # Serialised across both replicas: each winner saw every earlier one, each loser all n of them.
        assert sorted(v.usage["strategy"] for v in won) == [k * COST for k in range(1, n + 1)]
        assert {v.usage["strategy"] for v in lost} == {(n + 1) * COST}
        assert all(by_coid[it.client_order_id].ok for it in di)
        totals = await replicas[0].totals()
        assert totals["strategies"] == {"market_making": n * COST, "directional": 8 * COST}
        assert totals == await replicas[1].totals_from_scratch()
    finally:
        await replicas[1].aclose()


async def test_a_market_belongs_to_one_strategy_at_a_time(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    a, b = gate(engines[0], None), gate(engines[1], None)  # ownership holds without strategy caps too
    ledger = Ledger(session_factory(engines[0]), "sim", clock=lambda: NOW)
    worked, held = TICKERS[0], TICKERS[1]

    # Directional works an order on one market and holds a position on another.
    resting = intent(worked)
    assert (await a.reserve(resting, now=NOW)).ok
    bought = intent(held, side="ask")
    assert (await a.reserve(bought, now=NOW)).ok
    await execute(ledger, bought)
    assert await position_strategy(engines[0], held) == (-ONE_CONTRACT, "directional")

    for ticker in (worked, held):
        for strategy in ("market_making", "quick_flip"):
            v = await b.reserve(intent(ticker, strategy), now=NOW)  # type: ignore[arg-type]
            assert (v.ok, v.reason) == (False, "market_owned")
        assert (await b.reserve(intent(ticker), now=NOW)).ok  # the owner may add to it
        # Reduce-only orders of any strategy pass (they can only take risk off).
        exit_ = intent(ticker, "market_making", side="ask", reduce_only=True)
        assert (await b.reserve(exit_, now=NOW, reduces_only=True)).ok
    # market_owned comes right after cap_order: a too-large order is still cap_order.
    big = await b.reserve(intent(worked, "market_making", count=200 * ONE_CONTRACT), now=NOW)
    assert big.reason == "cap_order"

    # The order canceled, the position settled: the markets are free again (nothing else directional left
    # there once the orders the owner added are closed too).
    async with session_factory(engines[0])() as s:
        open_ = (await s.scalars(select(Order.client_order_id).where(
            Order.strategy == "directional", Order.status == "intent"))).all()
    for coid in open_:
        await ledger.finish(coid, "canceled", "test")
    assert await ledger.settle(held, "no", NOW)
    assert await position_strategy(engines[0], held) == (0, "directional")
    totals = await a.totals()
    assert totals["strategy_markets"] == {} and totals == await a.totals_from_scratch()
    for ticker in (worked, held):
        v = await b.reserve(intent(ticker, "market_making"), now=NOW)
        assert (v.ok, v.reason) == (True, None)
    assert (await a.reserve(intent(held), now=NOW)).reason == "market_owned"  # now the maker's


async def test_apply_fill_gives_a_position_the_strategy_of_the_order_that_opened_it(
        engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    g = gate(engines[0], None)
    ledger = Ledger(session_factory(engines[0]), "sim", clock=lambda: NOW)
    t = TICKERS[0]
    mm = intent(t, "market_making", count=2 * ONE_CONTRACT)
    assert (await g.reserve(mm, now=NOW)).ok
    await execute(ledger, mm)
    assert await position_strategy(engines[0], t) == (2 * ONE_CONTRACT, "market_making")
    assert (await g.totals())["strategies"] == {"market_making": 2 * COST}

    # A directional exit reduces it: not from flat, so the position stays the maker's.
    out = intent(t, side="ask", reduce_only=True)
    assert (await g.reserve(out, now=NOW, reduces_only=True)).ok
    oid = f"ex-{out.client_order_id}"
    await ledger.set_state(out.client_order_id, OrderState(oid, "resting", 0, out.count, out.yes_price))
    await ledger.apply_fill(fill_of(out, oid, out.count), event_ticker=EVENT, series_ticker=None, family="weather")
    assert await position_strategy(engines[0], t) == (ONE_CONTRACT, "market_making")
    await ledger.set_state(out.client_order_id, OrderState(oid, "executed", out.count, 0, out.yes_price))
    close = intent(t, "market_making", side="ask")  # the maker buys NO against its YES: flat
    assert (await g.reserve(close, now=NOW)).ok
    await execute(ledger, close)
    assert await position_strategy(engines[0], t) == (0, "market_making")

    # Flat: the next strategy's fill takes it over.
    flip = intent(t, "quick_flip")
    assert (await g.reserve(flip, now=NOW)).ok
    await execute(ledger, flip)
    assert await position_strategy(engines[0], t) == (ONE_CONTRACT, "quick_flip")

    # A reconciliation repair leaves the strategy alone; a row it creates is directional.
    await ledger.set_position(t, position=3 * ONE_CONTRACT, cost=3 * COST, fees=None, event_ticker=EVENT)
    await ledger.set_position(TICKERS[1], position=ONE_CONTRACT, cost=COST, fees=None, event_ticker=EVENT)
    assert await position_strategy(engines[0], t) == (3 * ONE_CONTRACT, "quick_flip")
    assert await position_strategy(engines[0], TICKERS[1]) == (ONE_CONTRACT, "directional")
    totals = await g.totals()
    assert totals["strategies"] == {"quick_flip": 3 * COST, "directional": COST}
    assert totals == await g.totals_from_scratch()


@dataclass
class Mine:
    intent: Intent
    order_id: str | None = None
    filled: int = 0
    remaining: int = 0
    final: bool = False


@pytest.mark.parametrize("seed", [1, 2])
async def test_running_strategy_totals_equal_the_from_scratch_ones_after_every_step(
        engines: tuple[AsyncEngine, AsyncEngine], seed: int) -> None:
    rng = random.Random(seed)
    caps = {"directional": 60_000, "market_making": 30_000, "quick_flip": 20_000}
    gates = [gate(engines[0], caps), gate(engines[1], caps, dedicated=True)]
    ledger = Ledger(session_factory(engines[0]), "sim", clock=lambda: NOW)
    sessions = session_factory(engines[1])
    tickers = TICKERS[:6]
    mine: dict[str, Mine] = {}
    seen: dict[str, int] = {}

    def live(accepted: bool | None = None) -> list[Mine]:
        return [m for m in mine.values() if not m.final and (accepted is None or (m.order_id is not None) == accepted)]

    async def reserve() -> None:
        reduce_only = rng.random() < 0.1
        it = intent(rng.choice(tickers), rng.choice(STRATEGIES), side=rng.choice(["bid", "ask"]),
                    price=rng.randrange(1_000, 9_000, 500), count=rng.randrange(100, 600, 100),
                    reduce_only=reduce_only)
        g = rng.choice(gates)
        want = await g.usage_from_scratch(it)
        holders = (await g.totals_from_scratch())["strategy_markets"]
        owned = any(t == it.ticker and st != it.strategy for t, st in holders)
        v = await g.reserve(it, now=NOW, reduces_only=reduce_only)
        assert v.usage == want
        expect = g._check(it, want)
        if expect != "cap_order" and owned:
            expect = "market_owned"
        assert v.reason == (None if reduce_only else expect)
        seen[v.reason or "ok"] = seen.get(v.reason or "ok", 0) + 1
        if v.ok:
            mine[it.client_order_id] = Mine(it, remaining=it.count)

    async def accept() -> None:
        if todo := live(accepted=False):
            m = rng.choice(todo)
            m.order_id = f"ex-{m.intent.client_order_id}"
            await ledger.set_state(m.intent.client_order_id, OrderState(m.order_id, "resting", 0, m.remaining,
                                                                        m.intent.yes_price), accepted=True)

    async def fill() -> None:
        if todo := [m for m in live(accepted=True) if m.remaining > 0]:
            m = rng.choice(todo)
            n = min(m.remaining, rng.randrange(100, 400, 100))
            m.filled, m.remaining = m.filled + n, m.remaining - n
            m.final = m.remaining == 0
            assert m.order_id is not None
            state = OrderState(m.order_id, "executed" if m.final else "resting", m.filled, m.remaining,
                               m.intent.yes_price)
            steps = [ledger.apply_fill(fill_of(m.intent, m.order_id, n), event_ticker=EVENT, series_ticker="KXHIGHNY",
                                       family="weather"), ledger.set_state(m.intent.client_order_id, state)]
            if rng.random() < 0.5:  # the order's totals before its fill, as the WebSocket may deliver them
                steps.reverse()
            for step in steps:
                await step

    async def cancel() -> None:
        if todo := live():
            m = rng.choice(todo)
            m.final = True
            if m.order_id is None:
                await ledger.finish(m.intent.client_order_id, "canceled", "never_reached_exchange")
            else:
                await ledger.set_state(m.intent.client_order_id, OrderState(m.order_id, "canceled", m.filled, 0,
                                                                            m.intent.yes_price))

    async def settle() -> None:
        await ledger.settle(rng.choice(tickers), rng.choice(["yes", "no"]), NOW)

    async def repair() -> None:
        p = rng.randrange(-500, 600, 100)
        await ledger.set_position(rng.choice(tickers), position=p, cost=abs(p) * 40, fees=None, event_ticker=EVENT)

    async def restrategy() -> None:  # a row's strategy changed in place: its holding moves with it
        async with sessions() as s, s.begin():
            if rng.random() < 0.5 and (todo := live()):
                await s.execute(update(Order).where(Order.client_order_id == rng.choice(todo).intent.client_order_id)
                                .values(strategy=rng.choice(STRATEGIES)))
            else:
                await s.execute(update(Position).where(Position.ticker == rng.choice(tickers))
                                .values(strategy=rng.choice(STRATEGIES)))

    steps = {"reserve": (reserve, 10), "accept": (accept, 6), "fill": (fill, 8), "cancel": (cancel, 3),
             "settle": (settle, 1), "repair": (repair, 1), "restrategy": (restrategy, 1)}
    try:
        for _ in range(120):
            name = rng.choices(list(steps), weights=[w for _, w in steps.values()])[0]
            await steps[name][0]()
            totals = await gates[0].totals()
            assert totals == await gates[1].totals_from_scratch(), name
            probe = intent(rng.choice(tickers), rng.choice(STRATEGIES))
            assert await gates[1].usage(probe) == await gates[0].usage_from_scratch(probe)
        assert seen.get("ok") and seen.get("market_owned") and seen.get("cap_strategy"), seen
        assert any(m.filled for m in mine.values())
    finally:
        await gates[1].aclose()


async def _arity(engine: AsyncEngine, name: str) -> list[int]:
    async with engine.connect() as c:
        return sorted((await c.scalars(text("SELECT pronargs FROM pg_proc WHERE proname = :n"), {"n": name})).all())


async def test_downgrade_restores_0006_and_the_upgrade_back_fills_the_strategy_totals(empty_db_url: str) -> None:
    upgrade_to_head(empty_db_url)
    engine = create_engine(empty_db_url)
    try:
        assert await _arity(engine, "kdesk_reserve") == [41]
        assert await _arity(engine, "kdesk_reprice_usage") == [9]
        async with engine.connect() as c:
            checks = set((await c.scalars(text("SELECT conname FROM pg_constraint WHERE conname LIKE '%strategy'"))
                          ).all())
        assert checks == {"ck_orders_strategy", "ck_positions_strategy", "ck_fills_strategy"}
        g = gate(engine, None)
        ledger = Ledger(session_factory(engine), "sim", clock=lambda: NOW)
        held = intent(TICKERS[0], "market_making", count=2 * ONE_CONTRACT)
        assert (await g.reserve(held, now=NOW)).ok
        await execute(ledger, held)
        assert (await g.reserve(intent(TICKERS[1], "quick_flip"), now=NOW)).ok
        await engine.dispose()

        await asyncio.to_thread(command.downgrade, alembic_config(empty_db_url), "0006")
        assert await _arity(engine, "kdesk_reserve") == [39]
        assert await _arity(engine, "kdesk_reprice_usage") == [8]
        await engine.dispose()

        upgrade_to_head(empty_db_url)  # every row is directional again: the back-fill counts them so
        totals = await g.totals()
        assert totals == await g.totals_from_scratch()
        assert totals["strategies"] == {"directional": 3 * COST}
        assert set(totals["strategy_markets"]) == {(TICKERS[0], "directional"), (TICKERS[1], "directional")}
    finally:
        await engine.dispose()
