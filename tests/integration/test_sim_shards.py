"""Exchange shards over real sockets (issue 21): the simulator routes like production, the client carries routes.

Kalshi's matching engines are sharded (kalshi_api.md §3.12): the weather markets live on exchange index 0,
the BTC markets on 2. An order call goes where its `exchange_index` says, `-1` and (by the reference's
reading) an omitted index go to the shard of the market the call names, and a call that names neither
goes to shard 0 — which does not know a shard-2 order and answers 404 while the order rests on. The
sharding guide of 2026-08-11 reads "if omitted: defaults to 0" even when a market is named: every test
runs under both readings (`auto_route_by_ticker`), so a call is proved routed only if it names its shard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from libs.common.kalshi import AUTO_ROUTE, KalshiRest, NotFound, OrderRef, OrderRejected
from libs.common.money import fee
from tests.kit.sim import BTC_SHARD, BTC_TICKERS, FUNDS, TICKERS, SimRig, coid, sim_rig

WX = TICKERS[2]  # KXHIGHNY-26NOV23-B52.5, shard 0
BTC = BTC_TICKERS[0]  # KXBTCD-26NOV2317-T78499.99, shard 2
SHARD = {WX: 0, BTC: BTC_SHARD}
READINGS = {"omitted-index-routes-by-ticker": True, "omitted-index-means-shard-0": False}


@pytest.fixture(params=list(READINGS.values()), ids=list(READINGS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[SimRig]:
    async with sim_rig(auto_route_by_ticker=request.param) as r:
        yield r


def resting(rig: SimRig, user: str, ticker: str) -> list[str]:
    return rig.exchange.engine.resting_ids(user, ticker)


@pytest.mark.parametrize("ticker", [WX, BTC], ids=["weather-shard-0", "btc-shard-2"])
async def test_every_order_call_with_its_route_works_on_its_shard(rig: SimRig, ticker: str) -> None:
    alice, shard = rig.client("alice"), SHARD[ticker]
    cid = coid()
    placed = await alice.create_order(ticker, "bid", 4_000, 1_000, client_order_id=cid, exchange_index=shard)
    oid = placed.order_id
    assert resting(rig, "alice", ticker) == [oid]

    # Reads: by id, by client id, the list, queue positions — all asked of the order's shard.
    order = await alice.order(oid, exchange_index=shard)
    assert (order.status, order.exchange_index) == ("resting", shard)
    found = await alice.find_order(ticker, cid, exchange_index=shard)
    assert found is not None and found.order_id == oid
    assert [o.order_id for o in await alice.orders(ticker=ticker, status="resting", exchange_index=shard)] == [oid]
    assert (await alice.queue_position(oid, exchange_index=shard)).queue_position == 0
    [q] = await alice.queue_positions([ticker], exchange_index=shard)
    assert (q.order_id, q.queue_position) == (oid, 0)

    # Writes: amend (price up), decrease, cancel.
    amended = await alice.amend_order(oid, ticker=ticker, side="bid", price=4_100, count=1_000, exchange_index=shard)
    assert amended.remaining_count == 1_000
    assert rig.exchange.engine.get_order("alice", oid).price == 4_100
    decreased = await alice.decrease_order(oid, reduce_by=400, ticker=ticker, exchange_index=shard)
    assert decreased.remaining_count == 600
    canceled = await alice.cancel_order(oid, ticker=ticker, exchange_index=shard)
    assert canceled.reduced_by == 600 and resting(rig, "alice", ticker) == []

    # The market alone routes too when Kalshi is asked to route by it (-1).
    again = await alice.create_order(ticker, "bid", 3_000, 100, client_order_id=coid(), exchange_index=AUTO_ROUTE)
    await alice.decrease_order(again.order_id, reduce_to=50, ticker=ticker, exchange_index=AUTO_ROUTE)
    assert (await alice.cancel_order(again.order_id, ticker=ticker, exchange_index=AUTO_ROUTE)).reduced_by == 50


async def test_a_batch_cancel_routes_each_item_on_its_own(rig: SimRig) -> None:
    alice = rig.client("alice")
    wx = await alice.create_order(WX, "bid", 2_000, 100, client_order_id=coid(), exchange_index=0)
    btc = await alice.create_order(BTC, "bid", 2_000, 100, client_order_id=coid(), exchange_index=BTC_SHARD)
    items = await alice.batch_cancel([OrderRef(wx.order_id, WX, 0), OrderRef(btc.order_id, BTC, BTC_SHARD)])
    assert [(i.order_id, i.error, i.reduced_by) for i in items] == [(wx.order_id, None, 100), (btc.order_id, None, 100)]
    assert resting(rig, "alice", WX) == resting(rig, "alice", BTC) == []

    # The same batch with ids only: the weather order is found on shard 0, the BTC one is not and rests on.
    wx = await alice.create_order(WX, "bid", 2_000, 100, client_order_id=coid(), exchange_index=0)
    btc = await alice.create_order(BTC, "bid", 2_000, 100, client_order_id=coid(), exchange_index=BTC_SHARD)
    items = await alice.batch_cancel([OrderRef(wx.order_id), OrderRef(btc.order_id)])
    assert items[0].error is None and items[0].reduced_by == 100
    assert items[1].error is not None and items[1].error.code == "not_found" and items[1].reduced_by == 0
    assert resting(rig, "alice", BTC) == [btc.order_id]


async def test_an_unrouted_call_fails_on_a_shard_2_order_exactly_as_production_would(rig: SimRig) -> None:
    """Neither `exchange_index` nor a market: the call reaches shard 0, which answers 404 not_found (Kalshi's
    error envelope) and does nothing; the shard-2 order keeps resting. The same calls on a shard-0 order work."""
    alice = rig.client("alice")
    btc = await alice.create_order(BTC, "bid", 4_000, 500, client_order_id=coid(), exchange_index=BTC_SHARD)
    oid = btc.order_id
    for call in (lambda: alice.cancel_order(oid), lambda: alice.decrease_order(oid, reduce_by=100),
                 lambda: alice.order(oid), lambda: alice.queue_position(oid)):
        with pytest.raises(NotFound) as e:
            await call()
        assert (e.value.status, e.value.code) == (404, "not_found")
    assert resting(rig, "alice", BTC) == [oid]
    assert rig.exchange.engine.get_order("alice", oid).remaining_count == 500  # nothing was decreased

    # Routed to the wrong shard explicitly: the same 404, and a create is refused by an engine without the market.
    with pytest.raises(NotFound):
        await alice.cancel_order(oid, exchange_index=0)
    with pytest.raises(NotFound):
        await alice.create_order(BTC, "bid", 4_000, 100, client_order_id=coid(), exchange_index=0)
    with pytest.raises(NotFound):
        await alice.cancel_order(oid, ticker=WX)  # routed by a shard-0 market
    # Auto-routing needs the market it routes by.
    with pytest.raises(OrderRejected) as bad:
        await alice.cancel_order(oid, exchange_index=AUTO_ROUTE)
    assert bad.value.status == 400

    wx = await alice.create_order(WX, "bid", 4_000, 500, client_order_id=coid())
    assert (await alice.order(wx.order_id)).exchange_index == 0
    assert (await alice.queue_position(wx.order_id)).queue_position == 0
    await alice.decrease_order(wx.order_id, reduce_by=100)
    assert (await alice.cancel_order(wx.order_id)).reduced_by == 400
    assert resting(rig, "alice", BTC) == [oid]


async def test_a_named_market_without_an_index_routes_only_under_the_references_reading(rig: SimRig) -> None:
    alice = rig.client("alice")
    by_ticker = rig.exchange.auto_route_by_ticker
    if by_ticker:
        placed = await alice.create_order(BTC, "bid", 4_000, 300, client_order_id=coid())
        assert (await alice.find_order(BTC, placed.client_order_id or "")) is not None
        await alice.amend_order(placed.order_id, ticker=BTC, side="bid", price=4_100, count=300)
        await alice.decrease_order(placed.order_id, reduce_by=100, ticker=BTC)
        assert (await alice.cancel_order(placed.order_id, ticker=BTC)).reduced_by == 200
        return
    with pytest.raises(NotFound):
        await alice.create_order(BTC, "bid", 4_000, 300, client_order_id=coid())
    placed = await alice.create_order(BTC, "bid", 4_000, 300, client_order_id=coid(), exchange_index=BTC_SHARD)
    assert await alice.find_order(BTC, placed.client_order_id or "") is None  # listed on shard 0: not there
    for call in (lambda: alice.amend_order(placed.order_id, ticker=BTC, side="bid", price=4_100, count=300),
                 lambda: alice.decrease_order(placed.order_id, reduce_by=100, ticker=BTC),
                 lambda: alice.cancel_order(placed.order_id, ticker=BTC)):
        with pytest.raises(NotFound):
            await call()
    assert resting(rig, "alice", BTC) == [placed.order_id]


async def test_collateral_is_kept_and_reported_per_shard(rig: SimRig) -> None:
    alice, bob = rig.client("alice"), rig.client("bob")
    bal = await alice.balance()
    assert bal.by_shard == {0: FUNDS // 2, BTC_SHARD: FUNDS // 2} and bal.total == bal.balance == FUNDS

    # A resting BTC bid holds collateral on shard 2 only.
    await alice.create_order(BTC, "bid", 4_000, 1_000, client_order_id=coid(), exchange_index=BTC_SHARD)
    held = 10 * 4_000 + fee(1_000, 4_000, rate="taker", fee_type="quadratic", multiplier=1)
    assert (await alice.balance()).by_shard == {0: FUNDS // 2, BTC_SHARD: FUNDS // 2 - held}

    # Shard 0's cash cannot back a shard-2 order: one a shard-2 balance cannot cover is refused.
    too_big = (FUNDS // 2 - held) // 9_900 * 100 + 100
    with pytest.raises(OrderRejected) as low:
        await alice.create_order(BTC, "bid", 9_900, too_big, client_order_id=coid(), exchange_index=BTC_SHARD)
    assert low.value.code == "available_balance_too_low"

    # A fill pays and is paid on the market's shard; positions and fills say which shard.
    await bob.create_order(BTC, "ask", 4_000, 1_000, client_order_id=coid(), exchange_index=BTC_SHARD,
                           time_in_force="immediate_or_cancel")
    by_shard = (await bob.balance()).by_shard
    assert by_shard[0] == FUNDS // 2 and by_shard[BTC_SHARD] < FUNDS // 2
    [pos] = await alice.positions(ticker=BTC)
    assert (pos.position, pos.exchange_index) == (1_000, BTC_SHARD)
    assert (await alice.order((await alice.orders(ticker=BTC, exchange_index=BTC_SHARD))[0].order_id,
                              exchange_index=BTC_SHARD)).exchange_index == BTC_SHARD

    # An account funded on shard 0 only cannot trade BTC at all.
    rig.exchange.fund("carol", {0: FUNDS})
    carol = rig.client("carol")
    assert (await carol.balance()).by_shard == {0: FUNDS}
    with pytest.raises(OrderRejected) as none:
        await carol.create_order(BTC, "bid", 100, 100, client_order_id=coid(), exchange_index=BTC_SHARD)
    assert none.value.code == "available_balance_too_low"
    await carol.create_order(WX, "bid", 100, 100, client_order_id=coid(), exchange_index=0)


async def test_balance_and_lists_narrow_to_one_shard(rig: SimRig) -> None:
    alice = rig.client("alice")
    await alice.create_order(WX, "bid", 1_000, 100, client_order_id=coid(), exchange_index=0)
    await alice.create_order(BTC, "bid", 1_000, 100, client_order_id=coid(), exchange_index=BTC_SHARD)
    for shard, ticker in ((0, WX), (BTC_SHARD, BTC)):
        assert [o.ticker for o in await alice.orders(status="resting", exchange_index=shard)] == [ticker]
    signer = rig.signer("alice")
    async with httpx.AsyncClient() as http:
        url = rig.exchange.rest_url + "/portfolio/balance"
        r = await http.get(url, params={"exchange_index": BTC_SHARD}, headers=signer.sign("GET", url))
        body = r.json()
    held = 1_000 + fee(100, 1_000, rate="taker", fee_type="quadratic", multiplier=1)  # one contract at 10c
    assert body["balance_dollars"] == f"{(FUNDS // 2 - held) / 10_000:.4f}"
    assert [b["exchange_index"] for b in body["balance_breakdown"]] == [0, BTC_SHARD]


async def test_exchange_index_appears_wherever_the_api_returns_it(rig: SimRig) -> None:
    public = KalshiRest(rig.env)
    try:
        assert (await public.market(BTC)).exchange_index == BTC_SHARD
        assert (await public.market(WX)).exchange_index == 0
        assert (await public.series("KXBTCD")).exchange_index == BTC_SHARD
        event = await public.event("KXBTCD-26NOV2317")
        assert event.model_extra is not None and event.model_extra.get("exchange_index") == BTC_SHARD
    finally:
        await public.aclose()
