"""The Kalshi client against the simulated exchange over real sockets: REST, orders, fees, settlement, WS books."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from libs.common.kalshi import (
    AuthError,
    KalshiRest,
    KalshiWS,
    LocalBook,
    NotFound,
    OrderRef,
    OrderRejected,
    RateLimited,
    ServerError,
    Signer,
    TradingPaused,
)
from libs.common.money import fee
from services.sim.ratelimit import Tier
from tests.kit.keys import rsa_key
from tests.kit.sim import BTC_TICKERS, EVENT, SERIES, TICKERS, SimRig, coid, hand_world, sim_rig

T0 = TICKERS[2]  # KXHIGHNY-26NOV23-B52.5


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for a condition (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def rig() -> AsyncIterator[SimRig]:
    async with sim_rig() as r:
        yield r


async def test_public_endpoints_and_paging(rig: SimRig) -> None:
    public = KalshiRest(rig.env)  # no key: public data only
    try:
        status = await public.exchange_status()
        assert status.trading_active
        series = await public.series(SERIES)
        assert series.fee_type == "quadratic" and series.fee_multiplier == 1
        assert SERIES in {s.ticker for s in await public.series_list()}
        events = await public.events(series_ticker=SERIES, with_nested_markets=True, limit=1)
        assert [e.event_ticker for e in events] == [EVENT]
        assert sorted(m.ticker for m in events[0].markets) == sorted(TICKERS)
        event = await public.event(EVENT)
        assert event.mutually_exclusive and len(event.markets) == 6
        paged = await public.markets(limit=2)  # 9 markets over 5 pages of 2
        assert sorted(m.ticker for m in paged) == sorted(TICKERS + BTC_TICKERS)
        m = await public.market(T0)
        assert (m.floor_strike, m.cap_strike, m.strike_type) == (52, 53, "between")
        assert (m.yes_bid, m.yes_ask) == (0, 10_000)  # empty-book convention
        assert m.grid.is_valid(4_200)
        with pytest.raises(NotFound):
            await public.market("KXHIGHNY-26NOV23-B99.5")
    finally:
        await public.aclose()


async def test_auth_accepted_and_rejected(rig: SimRig) -> None:
    alice = rig.client("alice")
    assert (await alice.balance()).balance == 10_000 * 10_000
    impostor = KalshiRest(rig.env, Signer("key-alice", rsa_key("not-alice")))
    try:
        with pytest.raises(AuthError, match="check the key id"):
            await impostor.balance()
    finally:
        await impostor.aclose()
    skewed = KalshiRest(rig.env, Signer("key-alice", rsa_key("alice"), clock_ms=lambda: 1_000))
    try:
        with pytest.raises(AuthError):
            await skewed.positions()
    finally:
        await skewed.aclose()


async def test_creates_use_headers_signed_ahead_and_the_exchange_accepts_them(rig: SimRig) -> None:
    alice = rig.client("alice")
    assert alice.signer is not None
    stop = asyncio.Event()
    warm = asyncio.create_task(alice.keep_signed_ahead(stop, every_s=0.05))
    try:
        for _ in range(3):
            for _ in range(100):  # the warmer signs in a worker thread; wait until it has
                if alice.signer.ahead_age_ms("POST", rig.env.rest_url + "/portfolio/events/orders") is not None:
                    break
                await asyncio.sleep(0.01)
            placed = await alice.create_order(T0, "bid", 4_200, 100, client_order_id=coid(), post_only=True)
            assert placed.remaining_count == 100
        assert alice.signer.signed_ahead_used == 3  # each create took a prepared signature, each accepted
        assert len([o for o in await alice.orders(ticker=T0) if o.status == "resting"]) == 3
    finally:
        stop.set()
        await warm


async def test_order_lifecycle_rest_fill_amend_cancel(rig: SimRig) -> None:
    alice, bob = rig.client("alice"), rig.client("bob")
    placed = await alice.create_order(T0, "bid", 4_200, 1_000, client_order_id=coid(), post_only=True)
    assert placed.fill_count == 0 and placed.remaining_count == 1_000
    book = await alice.orderbook(T0)
    assert book.yes == [(4_200, 1_000)] and book.no == []
    [q] = await alice.queue_positions([T0])
    assert q.order_id == placed.order_id and q.queue_position == 0

    # Bob sells 4 YES into Alice's bid (= buys NO at 0.58): a partial fill at the resting price.
    taken = await bob.create_order(T0, "ask", 4_200, 400, client_order_id=coid(), time_in_force="immediate_or_cancel")
    assert taken.fill_count == 400
    order = await alice.order(placed.order_id)
    assert (order.status, order.fill_count, order.remaining_count) == ("resting", 400, 600)

    amended = await alice.amend_order(placed.order_id, ticker=T0, side="bid", price=4_300, count=1_000)
    assert amended.remaining_count == 600
    assert (await alice.orderbook(T0)).yes == [(4_300, 600)]
    decreased = await alice.decrease_order(placed.order_id, reduce_to=200)
    assert decreased.remaining_count == 200
    cancelled = await alice.cancel_order(placed.order_id)
    assert cancelled.reduced_by == 200
    assert (await alice.order(placed.order_id)).status == "canceled"
    assert (await alice.orderbook(T0)).yes == []
    assert {o.order_id for o in await alice.orders(ticker=T0)} == {placed.order_id}


async def test_fees_positions_and_fills_to_the_tick(rig: SimRig) -> None:
    alice, bob = rig.client("alice"), rig.client("bob")
    await bob.create_order(T0, "ask", 5_500, 1_000, client_order_id=coid())  # rests: NO bid at 0.45
    res = await alice.create_order(T0, "bid", 5_600, 1_000, client_order_id=coid())  # crosses at 0.55
    assert res.fill_count == 1_000
    [f] = await alice.fills(ticker=T0)
    expected_fee = fee(1_000, 5_500, rate="taker", fee_type="quadratic", multiplier=1)
    assert expected_fee == 1_733  # ceil(0.07 × 10 × 0.55 × 0.45) = $0.1733
    assert (f.yes_price, f.count, f.is_taker, f.fee) == (5_500, 1_000, True, expected_fee)
    [maker_fill] = await bob.fills(ticker=T0)
    assert maker_fill.fee == 0 and not maker_fill.is_taker  # plain quadratic: makers pay nothing
    [pos] = await alice.positions(ticker=T0)
    assert pos.position == 1_000 and pos.fees_paid == expected_fee
    bal = await alice.balance()
    assert bal.balance == 10_000 * 10_000 - 10 * 5_500 - expected_fee
    [bob_pos] = await bob.positions(ticker=T0)
    assert bob_pos.position == -1_000


async def test_fok_failure_post_only_cross_and_duplicates(rig: SimRig) -> None:
    alice, bob = rig.client("alice"), rig.client("bob")
    await bob.create_order(T0, "ask", 6_000, 300, client_order_id=coid())
    fok = await alice.create_order(T0, "bid", 6_000, 500, client_order_id=coid(), time_in_force="fill_or_kill")
    assert fok.fill_count == 0 and fok.remaining_count == 0
    assert (await alice.order(fok.order_id)).status == "canceled"
    with pytest.raises(OrderRejected) as cross:
        await alice.create_order(T0, "bid", 6_100, 100, client_order_id=coid(), post_only=True)
    assert cross.value.code == "invalid_order"

    cid = coid()
    first = await alice.create_order(T0, "bid", 3_000, 100, client_order_id=cid)
    again = await alice.create_order(T0, "bid", 3_000, 100, client_order_id=cid)
    assert again.already_existed and again.order_id == first.order_id
    assert len([o for o in await alice.orders(ticker=T0) if o.client_order_id == cid]) == 1

    with pytest.raises(OrderRejected) as off_grid:
        await alice.create_order(T0, "bid", 3_050, 100, client_order_id=coid())
    assert off_grid.value.code == "invalid_price"
    rig.exchange.faults.trading_paused = True
    with pytest.raises(TradingPaused):
        await alice.create_order(T0, "bid", 3_000, 100, client_order_id=coid())
    rig.exchange.faults.trading_paused = False


async def test_batch_orders_and_cancel_all(rig: SimRig) -> None:
    alice = rig.client("alice")
    bodies = [KalshiRest.order_body(t, "bid", 1_000 + 100 * i, 100, time_in_force="good_till_canceled",
                                    client_order_id=coid()) for i, t in enumerate(TICKERS[:3])]
    bodies.append(KalshiRest.order_body(TICKERS[3], "bid", 1_050, 100, time_in_force="good_till_canceled",
                                        client_order_id=coid()))  # off-grid: fails alone
    items = await alice.batch_create(bodies)
    assert [i.error is None for i in items] == [True, True, True, False]
    assert items[3].error is not None and items[3].error.code == "invalid_price"
    assert items[0].order_id is not None
    cancelled = await alice.batch_cancel([OrderRef(items[0].order_id, TICKERS[0])])
    assert cancelled[0].reduced_by == 100
    await alice.cancel_all()
    assert [o for o in await alice.orders(status="resting")] == []


async def test_settlement_pays_a_dollar_per_winning_contract(rig: SimRig) -> None:
    alice, bob = rig.client("alice"), rig.client("bob")
    await bob.create_order(T0, "ask", 3_000, 500, client_order_id=coid())
    await alice.create_order(T0, "bid", 3_000, 500, client_order_id=coid())
    before_a, before_b = (await alice.balance()).balance, (await bob.balance()).balance
    engine = rig.exchange.engine
    engine.set_status(T0, "closed")
    engine.settle(T0, "yes")
    [row] = await alice.settlements(ticker=T0)
    assert row.market_result == "yes" and row.yes_count == 500 and row.revenue == 5 * 10_000
    assert (await alice.balance()).balance == before_a + 5 * 10_000
    assert (await bob.balance()).balance == before_b  # NO lost: nothing paid
    assert await alice.positions(ticker=T0) == []


async def test_rate_limit_429_is_retried_then_reported() -> None:
    async with sim_rig(rate_limit=Tier("tiny", read_per_s=20, write_per_s=20, read_capacity=20,
                                       write_capacity=20)) as r:
        patient = r.client("alice")  # client-side bucket: basic tier, retries 429s
        for _ in range(4):
            await patient.positions()  # the server bucket (20 tokens/s) is exceeded; retries absorb it
        hasty = KalshiRest(r.env, r.signer("alice"), tier="prestige", max_attempts=1)
        try:
            with pytest.raises(RateLimited):
                for _ in range(10):
                    await hasty.positions()
        finally:
            await hasty.aclose()


# -- WebSocket books ------------------------------------------------------------------------------


async def random_flow(clients: list[KalshiRest], tickers: list[str], n: int, seed: int) -> None:
    """Random resting orders, crosses and cancels from several users."""
    rng = random.Random(seed)
    resting: list[tuple[KalshiRest, str]] = []
    for _ in range(n):
        c = rng.choice(clients)
        roll = rng.random()
        if roll < 0.15 and resting:
            owner, oid = resting.pop(rng.randrange(len(resting)))
            try:
                await owner.cancel_order(oid)
            except (NotFound, OrderRejected):
                pass
            continue
        side = rng.choice(["bid", "ask"])
        price = rng.randrange(30, 71) * 100
        try:
            r = await c.create_order(rng.choice(tickers), side, price, rng.randrange(1, 20) * 100,
                                     client_order_id=coid())
        except OrderRejected:
            continue
        if r.remaining_count:
            resting.append((c, r.order_id))


async def assert_ws_equals_rest(ws: KalshiWS, rest: KalshiRest, tickers: list[str]) -> None:
    """Once the WS books have caught up, they equal the exchange's REST books."""
    want = await rest.orderbooks(tickers)

    def same() -> bool:
        return all(ws.books[t].valid and ws.books[t].yes_levels() == want[t].yes
                   and ws.books[t].no_levels() == want[t].no for t in tickers)

    await until(same, what="WS books to match REST")


@pytest.fixture
async def ws_rig(rig: SimRig) -> AsyncIterator[tuple[SimRig, KalshiWS, list[LocalBook]]]:
    updates: list[LocalBook] = []
    ws = KalshiWS(rig.env, rig.signer("watcher"), on_book=updates.append, backoff_base_s=0.05,
                  backoff_cap_s=0.1)
    rig.client("watcher")  # registers the key
    await ws.subscribe_books(TICKERS)
    stop = asyncio.Event()
    task = asyncio.create_task(ws.run(stop))
    await until(lambda: all(b.valid for b in ws.books.values()), what="initial snapshots")
    yield rig, ws, updates
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_ws_book_equals_rest_after_random_flow(ws_rig: tuple[SimRig, KalshiWS, list[LocalBook]]) -> None:
    rig, ws, updates = ws_rig
    users = [rig.client(u) for u in ("alice", "bob", "carol")]
    await random_flow(users, TICKERS, 300, seed=11)
    await assert_ws_equals_rest(ws, users[0], TICKERS)
    assert updates and ws.gaps == 0 and ws.malformed == 0
    assert not any(ws.books[t].crossed() for t in TICKERS)


async def test_ws_recovers_from_seq_gap_error_25_and_disconnect(
        ws_rig: tuple[SimRig, KalshiWS, list[LocalBook]]) -> None:
    rig, ws, _ = ws_rig
    users = [rig.client(u) for u in ("alice", "bob")]
    await random_flow(users, TICKERS, 40, seed=1)
    await assert_ws_equals_rest(ws, users[0], TICKERS)

    rig.exchange.faults.drop_next_seq(T0)
    await random_flow(users, [T0], 30, seed=2)
    await until(lambda: ws.gaps >= 1, what="gap detected")
    await assert_ws_equals_rest(ws, users[0], TICKERS)

    resyncs = ws.resyncs
    assert rig.exchange.faults.send_error_25(None) >= 1
    await random_flow(users, TICKERS, 30, seed=3)
    await until(lambda: ws.resyncs > resyncs, what="resubscribe after error 25")
    await assert_ws_equals_rest(ws, users[0], TICKERS)

    connects = ws.connects
    assert rig.exchange.faults.cut_connections() >= 1
    await until(lambda: ws.connects > connects, what="reconnect")
    await random_flow(users, TICKERS, 30, seed=4)
    await assert_ws_equals_rest(ws, users[0], TICKERS)


async def test_private_channels_report_our_fills(rig: SimRig) -> None:
    frames: list[dict[str, object]] = []
    alice, bob = rig.client("alice"), rig.client("bob")
    ws = KalshiWS(rig.env, rig.signer("alice"), on_message=frames.append)
    await ws.subscribe("fill")
    await ws.subscribe("user_orders")
    stop = asyncio.Event()
    task = asyncio.create_task(ws.run(stop))
    try:
        await ws.connected.wait()
        await until(lambda: len(ws._by_sid) == 2, what="subscriptions acknowledged")
        await bob.create_order(T0, "ask", 4_000, 200, client_order_id=coid())
        cid = coid()
        await alice.create_order(T0, "bid", 4_000, 200, client_order_id=cid)
        await until(lambda: any(f["type"] == "fill" for f in frames), what="fill message")
        fill = next(f for f in frames if f["type"] == "fill")["msg"]
        assert fill["client_order_id"] == cid and fill["count_fp"] == "2.00"  # type: ignore[index]
        assert fill["yes_price_dollars"] == "0.4000"  # type: ignore[index]
        assert any(f["type"] == "user_order" for f in frames)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_hand_world_has_the_weather_event_shape() -> None:
    world = hand_world()
    assert len(world.catalog.markets_of(EVENT)) == 6


async def test_create_retried_after_a_lost_response_places_exactly_one_order(rig: SimRig) -> None:
    alice = rig.client("alice", backoff_base_s=0.01)
    cid = coid()
    rig.exchange.faults.lose_next_response()  # placed on the book, but the client sees a 503
    res = await alice.create_order(T0, "bid", 2_000, 300, client_order_id=cid)
    assert res.already_existed  # the retry met 409 order_already_exists and found our order
    mine = [o for o in await alice.orders(ticker=T0) if o.client_order_id == cid]
    assert len(mine) == 1 and mine[0].order_id == res.order_id
    assert (await alice.orderbook(T0)).yes == [(2_000, 300)]

    rig.exchange.faults.lose_next_response()
    with pytest.raises(ServerError):  # no client_order_id: not idempotent, so never retried
        await alice.create_order(T0, "bid", 2_100, 100)
    assert (await alice.orderbook(T0)).yes == [(2_000, 300), (2_100, 100)]  # placed once, reported as failed
