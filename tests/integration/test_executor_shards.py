"""The desk routes every order call to its market's shard (issue 21), over real sockets, NATS and PostgreSQL.

Weather markets live on exchange index 0, BTC markets on 2 (tests/kit/sim.py). The executor takes each
market's shard from its definition (`md.market`), sends it with every create, amend, cancel, queue
position and order read, keeps it on the ledger row, and never reads a 404 on a cancel as "already
gone". The simulator runs under both readings of an omitted index (routed by the market named, or
shard 0 as the sharding guide words it), so only a call that names its shard passes both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Order
from libs.common.events import MarketDefinition, PriceRange
from libs.common.kalshi import KalshiRest, NotFound
from libs.common.kalshi.models import CancelResult
from libs.common.matching.types import OrderRequest
from services.executor.risk import Intent
from tests.integration.test_executor import eventually, mm_quotes, rows
from tests.integration.test_executor_core import feeds_bus
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.sim import BTC_EVENT, BTC_SERIES, BTC_SHARD, BTC_TICKERS, EVENT, SERIES, TICKERS, SimRig, sim_rig

WX, BTC = TICKERS[2], BTC_TICKERS[0]
MARKETS = {WX: (EVENT, SERIES, "weather", 0), BTC: (BTC_EVENT, BTC_SERIES, "btc", BTC_SHARD)}
READINGS = {"omitted-index-routes-by-ticker": True, "omitted-index-means-shard-0": False}
CANCEL = "DELETE /trade-api/v2/portfolio/events/orders/{order_id}"
LIST = "GET /trade-api/v2/portfolio/orders"


@asynccontextmanager
async def desk_on_both_shards(nats_url: str, db_url: str, *, by_ticker: bool, broker: Any = None,
                              **settings: Any) -> AsyncIterator[tuple[SimRig, Bus, Any]]:
    """A sim with quotes on a weather and a BTC market, their definitions and books out, an executor on them."""
    async with sim_rig(auto_route_by_ticker=by_ticker) as rig:
        for t in MARKETS:
            mm_quotes(rig, t, 3000, 3400, size=100_000)
        bus = await feeds_bus(nats_url)
        try:
            await publish_definitions(bus, rig, list(MARKETS))
            if broker is not None:
                rig.client("desk")
                broker = broker(rig.env, rig.signer("desk"))
            async with executor(rig, nats_url, db_url, settings=desk_settings(**settings), broker=broker) as ex:
                for t in MARKETS:
                    await publish_book(bus, rig, t)
                await until(lambda: all(ex.markets.get(t) is not None and ex.markets.get(t).book is not None
                                        for t in MARKETS), what="definitions and books")
                yield rig, bus, ex
        finally:
            await bus.close()
            if broker is not None:
                await broker.aclose()


def intent(ticker: str, coid: str, yes_price: int = 2_000, count: int = 200) -> Intent:
    event, series, family, _ = MARKETS[ticker]
    return Intent(client_order_id=coid, signal_id=None, leg="yes", family=family, series_ticker=series,
                  event_ticker=event, ticker=ticker, book_side="bid", yes_price=yes_price, count=count)


async def placed(ex: Any, it: Intent) -> Order:
    verdict = await ex.risk.reserve(it, now=datetime.now(UTC))
    assert verdict.ok, verdict
    row = await ex.orders.send(it)
    assert row is not None and row.status == "resting", row
    return row


@pytest.mark.parametrize("by_ticker", list(READINGS.values()), ids=list(READINGS))
async def test_every_desk_call_reaches_the_shard_of_its_market(nats_url: str, db_url: str, by_ticker: bool) -> None:
    async with desk_on_both_shards(nats_url, db_url, by_ticker=by_ticker) as (rig, _, ex):
        engine, calls = rig.exchange.engine, rig.exchange.requests
        for ticker, (_, _, _, shard) in MARKETS.items():
            coid = f"kd-route-{shard}"
            row = await placed(ex, intent(ticker, coid))  # create
            assert row.exchange_index == shard  # the route the order keeps (from its market definition)
            [oid] = engine.resting_ids("desk", ticker)
            assert row.order_id == oid

            assert await ex.orders.queue_position(row) == 0  # queue position, on its shard
            read = await ex.orders.read(row)  # order read by id
            assert read is not None and (read.status, read.exchange_index) == ("resting", shard)
            lists = calls[LIST]
            found = await ex.orders.find(ticker, coid, row)  # order read by client_order_id
            assert found is not None and found.order_id == oid
            assert calls[LIST] == lists + 1  # found where it was first asked for

            assert await ex.orders.amend(row, 2_100, 200) == "amended"  # amend
            assert engine.get_order("desk", oid).price == 2_100

            cancels = calls[CANCEL]
            [row] = await rows(db_url, Order, Order.order_id == oid)
            assert await ex.orders.cancel(row, "test") is True  # cancel
            assert calls[CANCEL] == cancels + 1  # one cancel, answered: not a 404 and a retry
            assert engine.get_order("desk", oid).status == "canceled" and not engine.resting_ids("desk", ticker)

            async def ledger_canceled(oid: str = oid) -> bool:
                [r] = await rows(db_url, Order, Order.order_id == oid)
                return r.status == "canceled" and r.reason == "test"
            await eventually(ledger_canceled, what="ledger canceled")


async def test_pause_and_flatten_take_down_btc_and_weather_at_once(nats_url: str, db_url: str) -> None:
    # Omitted indexes mean shard 0 here: every call must name its shard.
    async with desk_on_both_shards(nats_url, db_url, by_ticker=False) as (rig, bus, ex):
        engine = rig.exchange.engine

        async def rest_on_both(tag: str) -> None:
            for ticker, (event, series, family, _) in MARKETS.items():
                await send_signal(bus, signal(ticker, event, series, 0.50, sid=f"{tag}-{ticker}", family=family))
            await until(lambda: all(engine.resting_ids("desk", t) for t in MARKETS), what=f"{tag}: resting on both")

        await rest_on_both("before-pause")
        await bus.request("executor", "pause", {"reason": "test"})
        await until(lambda: not engine.resting_ids("desk"), timeout=1.0, what="both canceled within 1 s")
        assert all(o.status == "canceled" for t in MARKETS for o in engine.orders("desk", ticker=t))
        await bus.request("executor", "resume")
        await until(lambda: not ex.control.state.paused, what="resumed")

        # Positions on both shards (a seller fills the desk's bids), and an order still resting on each.
        await rest_on_both("after-pause")
        rig.client("flow")
        held = {}
        for t in MARKETS:
            [oid] = engine.resting_ids("desk", t)
            held[t] = engine.get_order("desk", oid).initial_count
            engine.place("flow", OrderRequest(t, "ask", 3100, held[t], "immediate_or_cancel", "taker_at_cross"))
            await publish_book(bus, rig, t)  # best YES bid: the market maker's 30c again
        await until(lambda: all(engine.position("desk", t) == n for t, n in held.items()), what="positions")

        async def ledger_holds() -> bool:
            pos = {p.ticker: p.position for p in await ex.ledger.positions()}
            return all(pos.get(t) == n for t, n in held.items())
        await eventually(ledger_holds, what="ledger positions on both shards")
        await until(lambda: all(ex.markets.get(t).bid("yes") == 3000 for t in MARKETS), what="books after fills")
        for t, (_, _, _, shard) in MARKETS.items():
            await placed(ex, intent(t, f"kd-resting-{shard}", yes_price=2_000, count=100))

        out = await bus.request("executor", "flatten")
        assert out["canceled"] == 2 and sorted(out["exit_orders"]) == sorted(MARKETS)
        await until(lambda: not engine.resting_ids("desk") and all(engine.position("desk", t) == 0 for t in MARKETS),
                    timeout=8, what="flat on both shards")
        exits = await rows(db_url, Order, Order.leg == "exit")
        assert sorted((o.ticker, o.exchange_index, o.status) for o in exits) == sorted(
            (t, shard, "executed") for t, (_, _, _, shard) in MARKETS.items())


class CancelAnswers404(KalshiRest):
    """The real client whose cancels reach a shard that does not hold the order (answered 404)."""

    async def cancel_order(self, order_id: str, *, ticker: str | None = None,
                           exchange_index: int | None = None) -> CancelResult:
        raise NotFound(f"DELETE /portfolio/events/orders/{order_id} -> 404 not_found", status=404, code="not_found")


async def test_a_cancel_answered_404_is_looked_up_and_never_taken_as_gone(nats_url: str, db_url: str) -> None:
    async with desk_on_both_shards(nats_url, db_url, by_ticker=False, broker=CancelAnswers404) as (rig, _, ex):
        row = await placed(ex, intent(BTC, "kd-lost-cancel"))
        assert await ex.orders.cancel(row, "test") is False  # not confirmed: the order still rests
        [oid] = rig.exchange.engine.resting_ids("desk", BTC)
        [row] = await rows(db_url, Order, Order.client_order_id == "kd-lost-cancel")
        assert (row.order_id, row.status) == (oid, "resting")  # the ledger still says so

        # It fills meanwhile: the next 404 finds it executed, and the ledger says executed, not canceled.
        rig.client("flow")
        rig.exchange.engine.fill_resting(oid, 200, taker_user="flow")
        assert await ex.orders.cancel(row, "test") is True
        [row] = await rows(db_url, Order, Order.client_order_id == "kd-lost-cancel")
        assert (row.status, row.fill_count) == ("executed", 200)


async def test_a_cancel_sent_to_the_wrong_shard_finds_the_order_and_cancels_it_where_it_lives(
        nats_url: str, db_url: str) -> None:
    async with desk_on_both_shards(nats_url, db_url, by_ticker=False) as (rig, bus, ex):
        row = await placed(ex, intent(BTC, "kd-wrong-shard"))
        # The market's definition now (wrongly) says shard 0: the cancel goes there and is answered 404.
        m = rig.exchange.catalog.markets[BTC]
        await bus.publish_js(subjects.md_market(BTC_SERIES, BTC), MarketDefinition(
            ts_event=datetime.now(UTC), mode=Mode.SIM, ticker=BTC, event_ticker=BTC_EVENT, series_ticker=BTC_SERIES,
            status="active", strike_type=m.strike_type, floor_strike=m.floor_strike, close_time=m.close_time,
            price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges),
            fee_type="quadratic", fee_multiplier=Decimal(1), exchange_index=0))
        await until(lambda: ex.markets.get(BTC).defn.exchange_index == 0, what="wrong definition")
        cancels = rig.exchange.requests[CANCEL]
        assert await ex.orders.cancel(row, "test") is True
        assert rig.exchange.requests[CANCEL] == cancels + 2  # the 404, then the cancel on shard 2
        assert not rig.exchange.engine.resting_ids("desk", BTC)

        async def ledger_canceled() -> bool:
            [r] = await rows(db_url, Order, Order.client_order_id == "kd-wrong-shard")
            return r.status == "canceled"
        await eventually(ledger_canceled, what="ledger canceled")


async def test_a_lost_create_answer_is_recovered_on_the_orders_shard(nats_url: str, db_url: str) -> None:
    """The create reaches shard 2 but its answer is lost; the retry meets 409 and the client looks the order
    up by client_order_id — on shard 2 (on shard 0 it would not be there, and the intent would be rejected)."""
    async with desk_on_both_shards(nats_url, db_url, by_ticker=False) as (rig, _, ex):
        rig.exchange.faults.lose_next_response()
        row = await placed(ex, intent(BTC, "kd-lost-answer"))
        [oid] = rig.exchange.engine.resting_ids("desk", BTC)
        assert row.order_id == oid and len(rig.exchange.engine.orders("desk", ticker=BTC)) == 1


async def test_reconciliation_finds_our_orders_and_strangers_on_every_shard(nats_url: str, db_url: str) -> None:
    async with desk_on_both_shards(nats_url, db_url, by_ticker=False, cancel_unknown_orders=True) as (rig, _, ex):
        engine = rig.exchange.engine
        strangers = sorted(engine.place("desk", OrderRequest(t, "bid", 1_500, 100, "good_till_canceled",
                                                             "taker_at_cross", client_order_id=f"by-hand-{i}")
                                        ).order.order_id for i, t in enumerate(MARKETS))
        # An intent whose create reached shard 2 but whose answer never came back.
        it = intent(BTC, "kd-unanswered")
        assert (await ex.risk.reserve(it, now=datetime.now(UTC))).ok
        await ex.ledger.mark_sent(it.client_order_id, datetime.now(UTC) - timedelta(minutes=5),
                                  exchange_index=BTC_SHARD)
        lost = engine.place("desk", OrderRequest(BTC, "bid", 2_000, 200, "good_till_canceled", "taker_at_cross",
                                                 client_order_id="kd-unanswered")).order.order_id
        rep = await ex.reconcile()
        assert sorted(rep["unknown_canceled"]) == strangers
        assert all(engine.get_order("desk", oid).status == "canceled" for oid in strangers)
        assert rep["adopted"] == ["kd-unanswered"]
        [row] = await rows(db_url, Order, Order.client_order_id == "kd-unanswered")
        assert (row.order_id, row.status, row.exchange_index) == (lost, "resting", BTC_SHARD)
