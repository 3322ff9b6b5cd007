"""Market making and quick flip against the simulated exchange over real NATS + PostgreSQL (issue 17).

The maker quotes both sides of its market around the fair value the signals service publishes (here sent
by the test as signals service would: action `none`), skews after a fill, never holds more than its
inventory cap, keeps to its quote budget, pulls its quotes on a stale book and on a fast loss, and quotes
from one replica only. Quick flip rests its exit after its entry fills and gives up at the time limit.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Fill, Order, Position
from libs.common.matching.types import OrderRequest
from libs.common.money import ONE_CONTRACT
from tests.integration.test_executor import mm_quotes, rows
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig

pytestmark = pytest.mark.slow

T = TICKERS[2]
MM = {"allocation": "directional=0.5,market_making=0.5", "mm_series": SERIES, "mm_half_spread": 0.03,
      "mm_uncertainty_spread": 0.0, "mm_quote_contracts": 10, "mm_max_inventory": 10, "mm_risk_aversion": 0.01,
      "mm_pull_before_close_s": 60, "mm_kill_loss_usd": "2.5"}


def desk_quotes(rig, ticker: str = T) -> dict[str, tuple[int, int]]:
    """The desk's resting orders on `ticker` on the exchange: {book_side: (YES price, remaining)}."""
    eng = rig.exchange.engine
    out = {}
    for oid in eng.resting_ids("desk", ticker):
        o = eng.get_order("desk", oid)
        assert o.post_only
        assert o.book_side not in out, "two quotes on one side"
        out[o.book_side] = (o.price, o.remaining_count)
    return out


def fair(p: float, **kw) -> object:
    return signal(T, EVENT, SERIES, p, action="none", **kw)


async def test_maker_quotes_both_sides_skews_after_a_fill_caps_inventory_and_pulls_on_stale_book_and_fast_loss(
        nats_url: str, db_url: str) -> None:
    settings = desk_settings(**MM, max_book_age_s=3.0)
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 7000)  # another maker's wide quotes: 0.30 / 0.70
        bus = await Bus.connect(nats_url, service="mm-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings) as ex:
            await publish_book(bus, rig, T)
            await send_signal(bus, fair(0.50))
            await until(lambda: len(desk_quotes(rig)) == 2, what="two-sided quotes", timeout=10)
            q = desk_quotes(rig)
            bid, ask = q["bid"][0], q["ask"][0]
            assert bid < 5000 < ask and 5000 - bid == ask - 5000 and ask - bid >= 600  # $0.03 either side
            assert q["bid"][1] == q["ask"][1] == 10 * ONE_CONTRACT

            async def both_in_ledger():  # the exchange may show a quote a moment before its answer is booked
                rs = await rows(db_url, Order, Order.mode == "sim", Order.status == "resting")
                return rs if len(rs) == 2 else None

            assert {o.strategy for o in await until_async_value(both_in_ledger, what="both quotes booked")} \
                == {"market_making"}

            # A seller hits our bid for the full size: we hold 10 YES, our cap.
            rig.client("flow")
            rig.exchange.engine.place("flow", OrderRequest(T, "ask", bid, 10 * ONE_CONTRACT, "immediate_or_cancel",
                                                           "taker_at_cross"))
            await publish_book(bus, rig, T)

            async def skewed() -> bool:
                q = desk_quotes(rig)
                return "bid" not in q and "ask" in q and q["ask"][0] < ask

            await until_async(skewed, what="bid pulled at the inventory cap, ask moved down", timeout=10)
            [pos] = await rows(db_url, Position, Position.mode == "sim", Position.ticker == T)
            assert pos.position == 10 * ONE_CONTRACT and pos.strategy == "market_making"
            fills = await rows(db_url, Fill, Fill.mode == "sim", Fill.ticker == T)
            assert fills and {f.strategy for f in fills} == {"market_making"}

            # Fast loss: the crowd's bid collapses to $0.02; our 10 YES marked there lose more than $2.50.
            eng = rig.exchange.engine
            for oid in eng.resting_ids("mm", T):
                if eng.get_order("mm", oid).book_side == "bid":
                    eng.cancel("mm", oid)
            eng.place("mm", OrderRequest(T, "bid", 200, 5_000, "good_till_canceled", "taker_at_cross"))
            await publish_book(bus, rig, T)
            await until(lambda: ex.maker.stats.kills == 1 and not desk_quotes(rig), what="kill switch", timeout=10)
            assert ex.maker.killed_until is not None and ex.maker.killed_until > datetime.now(UTC)
            await send_signal(bus, fair(0.45))
            await publish_book(bus, rig, T)
            await asyncio.sleep(1.5)
            assert not desk_quotes(rig)  # nothing during the cool-down

            # Stale book: after the cool-down the maker quotes again only on a fresh book.
            ex.maker.killed_until = datetime.now(UTC) - timedelta(seconds=1)
            await publish_book(bus, rig, T)
            await until(lambda: "ask" in desk_quotes(rig), what="quoting again", timeout=10)
            await until(lambda: not desk_quotes(rig), what="quotes pulled on a stale book", timeout=10)
            assert ex.maker.stats.pulled.get("stale_book", 0) >= 1
        await bus.close()


async def until_async_value(probe, *, what: str, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (got := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return got


async def until_async(probe, *, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_maker_refreshes_within_its_quote_budget(nats_url: str, db_url: str) -> None:
    settings = desk_settings(**{**MM, "mm_quote_per_minute": 6, "mm_max_inventory": 50, "mm_refresh": 0.01})
    async with sim_rig() as rig:
        mm_quotes(rig, T, 1000, 9000)
        bus = await Bus.connect(nats_url, service="mm-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings) as ex:
            await publish_book(bus, rig, T)
            await send_signal(bus, fair(0.50))
            await until(lambda: len(desk_quotes(rig)) == 2, what="two-sided quotes", timeout=10)
            first = desk_quotes(rig)
            for i in range(20):  # the fair value moves two cents at a time, far faster than the budget allows
                await send_signal(bus, fair(0.50 + 0.02 * (i + 1) * (-1) ** i))
                await asyncio.sleep(0.05)
            await until(lambda: ex.maker.stats.deferred > 0, what="changes held back by the budget", timeout=10)
            s = ex.maker.stats
            assert s.created + s.amended <= 6  # in a minute, whatever the fair value did
            assert desk_quotes(rig) != first  # it did follow, as far as the budget went
            assert len(desk_quotes(rig)) == 2
        await bus.close()


async def test_only_one_replica_quotes_and_the_other_takes_over(nats_url: str, db_url: str) -> None:
    settings = desk_settings(**MM)
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 7000)
        bus = await Bus.connect(nats_url, service="mm-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings) as a:
            async with executor(rig, nats_url, db_url, settings=settings) as b:
                await publish_book(bus, rig, T)
                for _ in range(3):
                    await send_signal(bus, fair(0.50))
                await until(lambda: len(desk_quotes(rig)) == 2, what="two-sided quotes", timeout=10)
                await asyncio.sleep(2.5)  # several passes of both replicas
                assert len(desk_quotes(rig)) == 2
                assert [a.maker.leader, b.maker.leader].count(True) == 1
                leader, other = (a, b) if a.maker.leader else (b, a)
                await leader.stop()  # its loop ends and its connection (so its lock) goes, as when it dies
                await send_signal(bus, fair(0.52))
                await until(lambda: other.maker.leader, what="the other replica leading", timeout=10)
                await publish_book(bus, rig, T)
                await until(lambda: len(desk_quotes(rig)) == 2 and desk_quotes(rig)["bid"][0] > 2000,
                            what="quotes kept by the new leader", timeout=10)
        await bus.close()


async def test_quick_flip_rests_its_exit_after_the_fill_and_gives_up_at_the_time_limit(
        nats_url: str, db_url: str) -> None:
    settings = desk_settings(allocation="directional=0.5,quick_flip=0.5", quick_flip_series=SERIES,
                             quick_flip_target=0.5, quick_flip_time_limit_s=4)
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400, size=100_000)  # the market says ~32%, and its bid is deep
        bus = await Bus.connect(nats_url, service="flip-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings):
            await publish_book(bus, rig, T)
            await send_signal(bus, signal(T, EVENT, SERIES, 0.50))  # the model says 50%: YES is cheap
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="entry resting", timeout=10)
            [oid] = rig.exchange.engine.resting_ids("desk", T)
            entry = rig.exchange.engine.get_order("desk", oid)
            assert (entry.book_side, entry.price) == ("bid", 3100)
            rig.client("flow")
            rig.exchange.engine.place("flow", OrderRequest(T, "ask", 3100, entry.initial_count, "immediate_or_cancel",
                                                           "taker_at_cross"))
            await publish_book(bus, rig, T)

            def exit_resting():
                eng = rig.exchange.engine
                orders = [eng.get_order("desk", i) for i in eng.resting_ids("desk", T)]
                return [o for o in orders if o.reduce_only]

            await until(exit_resting, what="the exit resting", timeout=10)
            [ex_order] = exit_resting()
            # Half way from the entry ($0.31) to fair value ($0.50), rounded up to the cent: $0.41.
            assert (ex_order.book_side, ex_order.price, ex_order.remaining_count) == ("ask", 4100,
                                                                                      entry.initial_count)

            async def flat() -> bool:
                pos = await rows(db_url, Position, Position.mode == "sim", Position.ticker == T)
                return bool(pos) and pos[0].position == 0

            await until_async(flat, what="given up at the time limit: sold at the bid", timeout=15)
            assert not exit_resting()
            by_leg = {o.leg: o for o in await rows(db_url, Order, Order.mode == "sim", Order.status != "blocked")}
            assert by_leg["yes"].strategy == by_leg["flip_exit"].strategy == "quick_flip"
            assert by_leg["flip_exit"].status == "canceled" and by_leg["flip_exit"].reason == "flip_time_limit"
            assert by_leg["exit"].fill_count == entry.initial_count and by_leg["exit"].yes_price == 3000
        await bus.close()


async def test_paper_maker_quotes_join_the_queue_and_fill_only_behind_the_size_ahead(nats_url: str,
                                                                                   db_url: str) -> None:
    """Paper mode: the maker's quotes rest in the paper broker behind what the live book shows at their price,
    and a trade fills them only once it has consumed that queue (the peers' quick-flip lesson, §d.4)."""
    from libs.common import subjects
    from libs.common.db import create_engine, session_factory
    from libs.common.events import BookUpdate, MarketDefinition, PriceRange, PublicTrade
    from services.executor.paper import PaperBroker
    from services.executor.service import Executor
    from tests.integration.test_executor import eventually

    now = datetime.now(UTC)
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.PAPER)
    await bus.provision()
    await bus.publish_js(subjects.md_market(SERIES, T), MarketDefinition(
        ts_event=now, mode=Mode.PAPER, ticker=T, event_ticker=EVENT, series_ticker=SERIES, status="active",
        strike_type="between", floor_strike=52, cap_strike=53, close_time=now + timedelta(days=1),
        price_ranges=(PriceRange(start=0, end=10_000, step=100),), fee_type="quadratic", fee_multiplier=1))
    paper = PaperBroker(lambda: datetime.now(UTC), 1_000 * 10_000)
    engine = create_engine(db_url)
    settings = desk_settings(mode=Mode.PAPER, **{**MM, "mm_max_inventory": 50})
    ex = Executor(settings, bus, session_factory(engine), paper, updates=paper, loop_interval_s=0.2)
    try:
        await ex.start()
        # The live book: 20 contracts bid at 47c (where our bid will join), NO bid 30c (YES ask 70c).
        await bus.publish(subjects.md_book(SERIES, T), BookUpdate(
            ts_event=now, mode=Mode.PAPER, ticker=T, series_ticker=SERIES, seq=1,
            yes_bids=((4700, 2_000),), no_bids=((3000, 2_000),)))
        await until(lambda: ex.markets.get(T) is not None and ex.markets.get(T).book is not None, what="book")
        await bus.publish_js(subjects.sig("weather", SERIES, T),
                             fair(0.50).model_copy(update={"mode": Mode.PAPER}))

        rest = await eventually(lambda: _paper_resting(paper), what="two paper quotes", timeout=10)
        assert {o.book_side for o in rest} == {"bid", "ask"}
        bid = next(o for o in rest if o.book_side == "bid")
        assert bid.yes_price == 4700 and bid.remaining_count == 10 * ONE_CONTRACT

        async def trade(tid: str, count: int) -> None:
            await bus.publish(subjects.md_trade(SERIES, T), PublicTrade(
                ts_event=datetime.now(UTC), mode=Mode.PAPER, ticker=T, series_ticker=SERIES, trade_id=tid,
                yes_price=4700, count=count, taker_outcome_side="no"))

        await trade("tr-1", 1_500)  # a seller takes 15 of the 20 contracts ahead of us: nothing for us
        await asyncio.sleep(0.5)
        assert not [p for p in await rows(db_url, Position, Position.mode == "paper") if p.position]  # no fill yet
        await trade("tr-2", 1_000)  # 5 more ahead, then 5 of ours

        async def filled():
            pos = await rows(db_url, Position, Position.mode == "paper", Position.ticker == T)
            return pos if pos and pos[0].position == 5 * ONE_CONTRACT else None

        [pos] = await eventually(filled, what="the part of the trade behind the queue filled", timeout=10)
        assert pos.strategy == "market_making"
    finally:
        await ex.stop()
        await bus.close()
        await engine.dispose()


async def _paper_resting(paper) -> list:
    rest = await paper.orders(status="resting")
    return rest if len(rest) == 2 else []
