"""The executor against the simulated exchange over real NATS + PostgreSQL (DESIGN §6 done-when list)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Fill, Order, Position, create_engine, session_factory
from libs.common.matching.types import OrderRequest
from libs.common.money import fee
from services.executor.exposure import Holding, Strike, event_exposure
from services.executor.sizing import size_order
from tests.integration.test_kalshi_client import until
from tests.kit.desk import (
    desk_settings,
    executor,
    paper_executor,
    publish_book,
    publish_definitions,
    send_signal,
    signal,
    signals_settled,
)
from tests.kit.sim import BTC_SHARD, EVENT, FUNDS, SERIES, TICKERS, sim_rig

T = TICKERS[2]  # KXHIGHNY-26NOV23-B52.5


def mm_quotes(rig, ticker: str, bid: int, ask: int, size: int = 5_000) -> None:
    """A market maker (another user) quotes `ticker`: YES bid at `bid`, YES ask at `ask` (NO bid $1 - ask)."""
    rig.exchange.fund("mm", {0: FUNDS, BTC_SHARD: FUNDS})  # deep pockets on both shards (once)
    rig.client("mm")  # register
    eng = rig.exchange.engine
    eng.place("mm", OrderRequest(ticker, "bid", bid, size, "good_till_canceled", "taker_at_cross"))
    eng.place("mm", OrderRequest(ticker, "ask", ask, size, "good_till_canceled", "taker_at_cross"))


async def rows(db_url: str, model, *where):
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as s:
            return list((await s.scalars(select(model).where(*where))).all())
    finally:
        await engine.dispose()


async def test_mispriced_market_rests_kelly_sized_post_only_order_that_fills_and_matches_exchange(
        nats_url: str, db_url: str) -> None:
    settings = desk_settings()
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)  # the market says ~32%; our model says 50%
        bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings) as ex:
            await publish_book(bus, rig, T)
            await until(lambda: ex.markets.get(T) is not None and ex.markets.get(T).book is not None, what="book")
            bankroll = ex.desk.bankroll
            await send_signal(bus, signal(T, EVENT, SERIES, 0.50))
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="resting order")
            [oid] = rig.exchange.engine.resting_ids("desk", T)
            o = rig.exchange.engine.get_order("desk", oid)
            # Maker-first: one tick better than the best bid, post-only, Kelly-sized.
            assert (o.book_side, o.price, o.post_only) == ("bid", 3100, True)
            want = size_order(mode="kelly", p_leg=0.50, leg_price=3100, taker=False, confidence=0.9,
                              bankroll=bankroll, kelly_scale=settings.risk.kelly_fraction, fixed_budget=0,
                              max_order=settings.risk.max_order, fee_type="quadratic", fee_multiplier=Decimal(1))
            assert o.initial_count == want.count > 0

            # Background flow: a seller hits bids down to 30c; ours is first at 31c.
            rig.client("flow")
            rig.exchange.engine.place("flow", OrderRequest(T, "ask", 3000, o.initial_count + 1000,
                                                           "immediate_or_cancel", "taker_at_cross"))
            await until(lambda: rig.exchange.engine.get_order("desk", oid).status == "executed", what="filled")
            ex_fills = rig.exchange.engine.fills("desk", ticker=T)

            async def ledger_caught_up() -> bool:
                pos = await rows(db_url, Position, Position.ticker == T)
                return bool(pos) and pos[0].position == o.initial_count

            for _ in range(500):
                if await ledger_caught_up():
                    break
                await asyncio.sleep(0.02)
            [pos] = await rows(db_url, Position, Position.ticker == T, Position.mode == "sim")
            ex_pos = {p.ticker: p for p in rig.exchange.engine.positions("desk")}[T]
            assert pos.position == ex_pos.position == o.initial_count
            assert pos.fees_paid_ticks == ex_pos.fees_paid == sum(f.fee for f in ex_fills)
            assert pos.fees_paid_ticks == fee(o.initial_count, 3100, rate="maker", fee_type="quadratic", multiplier=1)
            assert pos.cost_ticks == ex_pos.market_exposure
            fills = await rows(db_url, Fill, Fill.ticker == T)
            assert sum(f.count for f in fills) == o.initial_count and all(not f.is_taker for f in fills)
            [order] = await rows(db_url, Order, Order.ticker == T, Order.status != "blocked")
            assert (order.order_id, order.post_only, order.fill_count) == (oid, True, o.initial_count)
            assert order.status == "executed" and order.fees_ticks == pos.fees_paid_ticks
        await bus.close()


async def test_pause_cancels_resting_orders_within_a_second_and_resume_trades_again(nats_url: str,
                                                                                     db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url) as ex:
            await publish_book(bus, rig, T)
            await until(lambda: ex.markets.get(T).book is not None, what="book")
            await send_signal(bus, signal(T, EVENT, SERIES, 0.50))
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="resting order")

            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await bus.request("executor", "pause", {"reason": "test"})
            await until(lambda: not rig.exchange.engine.resting_ids("desk"), timeout=1.0, what="cancel within 1 s")
            assert loop.time() - t0 < 1.0
            status = await bus.request("executor", "status")
            assert status["paused"] and status["pause_reason"] == "test"

            # Paused: a fresh signal is declined with the reason, nothing reaches the exchange.
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55, sid="while-paused"))
            await until(lambda: ex.desk.decisions.get("paused", 0) >= 1, what="declined as paused")
            assert not rig.exchange.engine.resting_ids("desk")
            [blocked] = await rows(db_url, Order, Order.signal_id == "while-paused")
            assert (blocked.status, blocked.reason) == ("blocked", "paused")

            # Expired signals and switched-off families are declined with their reason too.
            await bus.request("executor", "resume")
            await until(lambda: not ex.control.state.paused, what="resumed")
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55, sid="stale", valid_s=-1))
            kv = await bus.control()
            await kv.put("family.weather.enabled", b"false")
            await until(lambda: "weather" in ex.control.state.families_off, what="family off")
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55, sid="family-off"))
            await until(lambda: ex.desk.decisions.get("family_off", 0) >= 1, what="declined as family_off")
            reasons = {o.signal_id: o.reason for o in await rows(db_url, Order, Order.status == "blocked")}
            assert reasons["stale"] == "expired" and reasons["family-off"] == "family_off"
            await kv.put("family.weather.enabled", b"true")
            await until(lambda: not ex.control.state.families_off, what="family on")
            assert not rig.exchange.engine.resting_ids("desk")

            await bus.request("executor", "resume")
            await until(lambda: not ex.control.state.paused, what="resumed")
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55))
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="trading again")
        await bus.close()


async def test_two_replicas_never_exceed_the_event_cap_and_act_on_each_signal_once(nats_url: str,
                                                                                  db_url: str) -> None:
    cap_usd = 12
    settings = desk_settings(max_event_usd=str(cap_usd), max_order_usd="5", max_market_usd="12",
                             taker_min_edge=0.02, min_edge=0.02, sizing="fixed", fixed_order_usd="5")
    async with sim_rig() as rig:
        for t in TICKERS:
            mm_quotes(rig, t, 1500, 1700, size=100_000)  # deep books: takers fill completely
        bus = await Bus.connect(nats_url, service="signals-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=settings) as a, \
                executor(rig, nats_url, db_url, settings=settings) as b:
            for t in TICKERS:
                await publish_book(bus, rig, t)
            await until(lambda: all(x.markets.get(t).book for x in (a, b) for t in TICKERS), what="books")
            # A burst: every bracket looks cheap (YES at 17c vs 40% model), several signals each, some repeated.
            sigs = [signal(t, EVENT, SERIES, 0.40, sid=f"burst-{t}-{k}") for t in TICKERS for k in range(3)]
            for s in sigs + sigs[:6]:  # the first six again: redelivery / duplicate publish
                await send_signal(bus, s)
            await until(lambda: sum(x.desk.decisions.get("sent", 0) + sum(
                v for k, v in x.desk.decisions.items() if k != "sent") for x in (a, b)) >= len(sigs),
                what="every signal decided", timeout=20)
            # Nothing else is coming: every delivery (the repeats too) is acknowledged.
            await eventually(lambda: signals_settled(bus), what="signal consumer drained")
        orders = await rows(db_url, Order, Order.event_ticker == EVENT)
        assert len(orders) == len(sigs)  # one decision per signal, none twice
        assert {o.signal_id for o in orders} == {s.id for s in sigs}
        # The event's worst-case loss from the exchange's own positions, over every possible high temperature.
        held = {p.ticker: Holding(yes=max(p.position, 0), no=max(-p.position, 0), cost=p.market_exposure)
                for p in rig.exchange.engine.positions("desk") if p.ticker in TICKERS and p.position}
        strikes = {m.ticker: Strike(m.strike_type, m.floor_strike, m.cap_strike)
                   for m in rig.exchange.catalog.markets_of(EVENT)}
        worst = event_exposure(held, strikes)
        assert held and 0 < worst <= cap_usd * 10_000
        sent = [o for o in orders if o.status != "blocked"]
        assert any(o.reason == "cap_event" for o in orders) and sent
        await bus.close()


async def test_reconciliation_finds_a_hand_placed_order_and_cancels_it_when_configured(nats_url: str,
                                                                                        db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        by_hand = await rig.client("desk").create_order(T, "bid", 2500, 300, client_order_id="typed-by-a-human")
        bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
        await bus.provision()
        alerts = []

        async def on_alert(ev) -> None:
            alerts.append(ev)

        from libs.common.events import ANY_EVENT
        await bus.subscribe("ops.alert.reconcile", ANY_EVENT, on_alert)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=desk_settings(cancel_unknown_orders=False)) as ex:
            assert ex.reconciler.last.unknown == [by_hand.order_id]
            assert rig.exchange.engine.get_order("desk", by_hand.order_id).status == "resting"  # left alone
        await until(lambda: any(a.data.get("order_id") == by_hand.order_id for a in alerts), what="alert")
        async with executor(rig, nats_url, db_url, settings=desk_settings(cancel_unknown_orders=True)) as ex:
            assert ex.reconciler.last.unknown_canceled == [by_hand.order_id]
            assert rig.exchange.engine.get_order("desk", by_hand.order_id).status == "canceled"
            assert not await rows(db_url, Order, Order.order_id == by_hand.order_id)  # never adopted as ours
        await bus.close()


async def executor_process(rig, bus: Bus, nats_url: str, db_url: str, tmp_path, *, private_ws: bool = True):
    """`python -m services.executor` as its own process, trading as "desk"; returns once it answers commands."""
    import os
    import sys

    from libs.common.embedded import free_port
    from tests.kit.keys import private_pem, rsa_key

    rig.client("desk")
    key = tmp_path / "desk.pem"
    key.write_bytes(private_pem(rsa_key("desk")))
    # Without a private WebSocket (a dead port) only REST answers tell the replica what its orders did.
    ws_url = rig.exchange.ws_url if private_ws else f"ws://127.0.0.1:{free_port()}/trade-api/ws/v2"
    env = {**os.environ, "KDESK_MODE": "sim", "KDESK_NATS_URL": nats_url, "KDESK_DATABASE_URL": db_url,
           "KDESK_KALSHI_REST_URL": rig.exchange.rest_url, "KDESK_KALSHI_WS_URL": ws_url,
           "KALSHI_SIM_KEY_ID": "key-desk", "KALSHI_SIM_PRIVATE_KEY_PATH": str(key), "KDESK_LOG_FORMAT": "json",
           "KDESK_MIN_EDGE": "0.02", "KDESK_TAKER_MIN_EDGE": "0.5", "KDESK_CONFIDENCE_FLOOR": "0.1",
           "KDESK_INSTANCE": "proc"}
    log = tmp_path / "executor.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.executor", env=env, stdout=out,
                                                    stderr=out)
    for _ in range(300):  # until the replica answers commands (it reconciled and consumes signals)
        try:
            await bus.request("executor", "status", timeout=1)
            return proc
        except Exception:
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("executor process did not start: " + log.read_text()[-3000:])


async def test_executor_process_stops_cleanly_and_promptly_on_sigterm(nats_url: str, db_url: str, tmp_path) -> None:
    import signal as signals

    async with sim_rig() as rig:
        bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
        await bus.provision()
        proc = await executor_process(rig, bus, nats_url, db_url, tmp_path)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        proc.send_signal(signals.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 15)
        # The supervisor gives a service 7 s before SIGKILL; a clean stop is well inside that.
        assert code == 0 and loop.time() - t0 < 5, (tmp_path / "executor.log").read_text()[-2000:]
        await bus.close()


async def test_killed_between_send_and_answer_restart_leaves_one_order_and_a_true_ledger(
        nats_url: str, db_url: str, tmp_path) -> None:
    """A real executor process is SIGKILLed while the exchange holds its answer; a new replica repairs it."""
    import signal as signals

    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await Bus.connect(nats_url, service="signals-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        proc = await executor_process(rig, bus, nats_url, db_url, tmp_path, private_ws=False)
        await publish_book(bus, rig, T)

        async def book_seen() -> bool:
            return (await bus.request("executor", "status"))["fresh_books"] >= 1

        await eventually(book_seen, what="the process holds the book")
        rig.exchange.faults.response_delay_s = 30  # the exchange does the work, the answer never comes back
        await send_signal(bus, signal(T, EVENT, SERIES, 0.50, sid="the-one"))
        try:
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), timeout=15, what="order on the exchange")
        except AssertionError:
            proc.kill()
            raise AssertionError((tmp_path / "executor.log").read_text()[-4000:]) from None
        proc.send_signal(signals.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        rig.exchange.faults.response_delay_s = 0
        [pending] = await rows(db_url, Order, Order.signal_id == "the-one")
        assert pending.status in ("intent", "pending") and pending.order_id is None  # the answer was never recorded

        async with executor(rig, nats_url, db_url, unanswered_after_s=0.0) as ex:
            assert ex.reconciler.last.adopted == [pending.client_order_id]
            # Published again: JetStream drops it as a duplicate (the unacked first delivery is redelivered
            # after ack_wait and finds its order; see test_executor_core for a resumed intent).
            again = signal(T, EVENT, SERIES, 0.50, sid="the-one")
            ack = await bus.publish_js(subjects.sig(again.family, again.series_ticker, again.ticker), again)
            assert ack.duplicate
        on_exchange = rig.exchange.engine.orders("desk", ticker=T)
        assert len(on_exchange) == 1 and on_exchange[0].client_order_id == pending.client_order_id
        [row] = await rows(db_url, Order, Order.signal_id == "the-one")
        assert (row.order_id, row.status, row.remaining_count) == (on_exchange[0].order_id, "resting",
                                                                   on_exchange[0].remaining_count)
        await bus.close()


async def eventually(probe, *, timeout: float = 5.0, what: str = "condition"):
    """Poll an async probe until it returns something truthy (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_paper_mode_rests_against_the_live_book_and_fills_when_trades_consume_the_queue(
        nats_url: str, db_url: str) -> None:
    """Paper: no exchange; the broker fills our order from live books and trades published on md.*."""
    from datetime import UTC, datetime

    from libs.common import subjects
    from libs.common.events import BookUpdate, MarketDefinition, PriceRange, PublicTrade
    from services.executor.paper import PaperBroker
    from services.executor.service import Executor

    now = datetime.now(UTC)
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.PAPER)
    await bus.provision()
    await bus.publish_js(subjects.md_market(SERIES, T), MarketDefinition(
        ts_event=now, mode=Mode.PAPER, ticker=T, event_ticker=EVENT, series_ticker=SERIES, status="active",
        strike_type="between", floor_strike=Decimal(52), cap_strike=Decimal(53),
        price_ranges=(PriceRange(start=0, end=10_000, step=100),), fee_type="quadratic", fee_multiplier=1))
    paper = PaperBroker(lambda: datetime.now(UTC), 1_000 * 10_000)
    engine = create_engine(db_url)
    ex = Executor(desk_settings(mode=Mode.PAPER), bus, session_factory(engine), paper, updates=paper,
                  loop_interval_s=0.2)
    try:
        await ex.start()
        await bus.publish(subjects.md_book(SERIES, T), BookUpdate(
            ts_event=now, mode=Mode.PAPER, ticker=T, series_ticker=SERIES, seq=1,
            yes_bids=((3000, 2_000),), no_bids=((6600, 2_000),)))
        await until(lambda: ex.markets.get(T) is not None and ex.markets.get(T).book is not None, what="book")
        await bus.publish_js(subjects.sig("weather", SERIES, T),
                             signal(T, EVENT, SERIES, 0.5).model_copy(update={"mode": Mode.PAPER}))
        [resting] = await eventually(lambda: paper.orders(status="resting"), what="paper order resting")
        assert (resting.yes_price, resting.book_side) == (3100, "bid")  # one tick above the live bid
        count = resting.remaining_count
        # A seller hits 31c for more than our size: the level was empty before us, so we are first.
        await bus.publish(subjects.md_trade(SERIES, T), PublicTrade(
            ts_event=datetime.now(UTC), mode=Mode.PAPER, ticker=T, series_ticker=SERIES, trade_id="tr-1",
            yes_price=3100, count=count + 500, taker_outcome_side="no"))

        async def ledger_filled():
            pos = await rows(db_url, Position, Position.mode == "paper", Position.ticker == T)
            return pos if pos and pos[0].position == count else None

        [pos] = await eventually(ledger_filled, what="paper fill in the ledger")
        [mine] = [p for p in await paper.positions() if p.ticker == T]
        assert pos.position == mine.position == count
        want_fee = fee(count, 3100, rate="maker", fee_type="quadratic", multiplier=1)
        assert pos.fees_paid_ticks == mine.fees_paid == want_fee
        fills = await rows(db_url, Fill, Fill.mode == "paper")
        assert sum(f.count for f in fills) == count and not any(f.is_taker for f in fills)
    finally:
        await ex.stop()
        await bus.close()
        await engine.dispose()


async def test_paper_mode_refuses_a_second_replica(nats_url: str, db_url: str) -> None:
    from libs.common.config import ConfigError

    bus = await Bus.connect(nats_url, service="executor", mode=Mode.PAPER)
    await bus.provision()
    engine = create_engine(db_url)
    settings = desk_settings(mode=Mode.PAPER)
    first = paper_executor(settings, bus, engine)
    second = paper_executor(settings, bus, engine)
    try:
        await first.start()
        try:
            await second.start()
            raise AssertionError("a second paper replica started")
        except ConfigError as e:
            assert "one executor replica" in str(e)
        await first.stop()
        third = paper_executor(settings, bus, engine)
        await third.start()  # the lock went with the first replica
        await third.stop()
    finally:
        await first.stop()
        await bus.close()
        await engine.dispose()


async def test_an_unreachable_exchange_at_start_is_retried_and_reported_not_crashed(nats_url: str, db_url: str,
                                                                                     tmp_path) -> None:
    """The replica waits (signals stay in JetStream), says why in its heartbeat, and stops cleanly."""
    import os
    import signal as signals
    import sys

    from libs.common.embedded import free_port
    from libs.common.health import check
    from tests.kit.keys import private_pem, rsa_key

    key = tmp_path / "desk.pem"
    key.write_bytes(private_pem(rsa_key("desk")))
    dead = free_port()
    env = {**os.environ, "KDESK_MODE": "sim", "KDESK_NATS_URL": nats_url, "KDESK_DATABASE_URL": db_url,
           "KDESK_KALSHI_REST_URL": f"http://127.0.0.1:{dead}/trade-api/v2",
           "KDESK_KALSHI_WS_URL": f"ws://127.0.0.1:{dead}/trade-api/ws/v2", "KALSHI_SIM_KEY_ID": "key-desk",
           "KALSHI_SIM_PRIVATE_KEY_PATH": str(key), "KDESK_LOG_FORMAT": "json", "KDESK_INSTANCE": "waiting",
           "KDESK_HEALTH_INTERVAL_S": "0.5"}
    log = tmp_path / "executor.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.executor", env=env, stdout=out,
                                                    stderr=out)
    bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
    try:
        async def waiting() -> bool:
            _, text = await check(bus, "executor", "waiting", wait_s=2)
            return "starting:" in text and "TransportError" in text
        await eventually(waiting, timeout=20, what="heartbeat saying why start-up waits")
        assert proc.returncode is None  # still alive, not crash-looping
        assert "start_reconcile_failed_retrying" in log.read_text()
        proc.send_signal(signals.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await bus.close()
