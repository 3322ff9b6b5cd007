"""The executor core's seams: each book handled once, arbitrage legs, the order outbox, a resumed intent,
periodic jobs that fail alone — against the sim over real NATS and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Order, OrderEvent
from libs.common.events import Alert, BookUpdate
from libs.common.kalshi import KalshiRest
from libs.common.kalshi import errors as E
from libs.common.kalshi.models import QueuePosition
from libs.common.matching.types import OrderRequest
from services.executor.decide import client_order_id
from services.executor.risk import Intent
from services.executor.service import Executor
from tests.integration.test_executor import eventually, mm_quotes, rows
from tests.integration.test_kalshi_client import until
from tests.kit.desk import executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig

T = TICKERS[2]
CREATE = "POST /trade-api/v2/portfolio/events/orders"


async def feeds_bus(nats_url: str) -> Bus:
    bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
    await bus.provision()
    return bus


@asynccontextmanager
async def quoted_desk(rig: Any, nats_url: str, db_url: str, **kw: Any) -> AsyncIterator[tuple[Bus, Executor]]:
    """A market maker quotes T at 30/34c; one executor runs and holds T's book (per its status answer)."""
    mm_quotes(rig, T, 3000, 3400)
    bus = await feeds_bus(nats_url)
    await publish_definitions(bus, rig, TICKERS)
    try:
        async with executor(rig, nats_url, db_url, **kw) as ex:
            await publish_book(bus, rig, T)
            await eventually(lambda: _holds_books(bus), what="book")
            yield bus, ex
    finally:
        await bus.close()


async def _holds_books(bus: Bus) -> bool:
    return (await bus.request("executor", "status"))["fresh_books"] >= 1


async def crossed_book(bus: Bus, yes_bid: int, no_bid: int, seq: int, size: int = 2_000) -> None:
    """A book as feeds would publish it, crossed (YES ask + NO ask < $1): what arbitrage looks for."""
    await bus.publish(subjects.md_book(SERIES, T), BookUpdate(
        ts_event=datetime.now(UTC), mode=Mode.SIM, ticker=T, series_ticker=SERIES, seq=seq,
        yes_bids=((yes_bid, size),), no_bids=((no_bid, size),)))


async def test_a_book_is_handled_once_and_an_arbitrage_leg_that_fills_nothing_sends_no_second_leg(
        nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        bus = await feeds_bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        alerts = await bus.js.subscribe(bus.wire("ops.alert.arb"), ordered_consumer=True)
        async with executor(rig, nats_url, db_url) as ex:
            # The exchange's real book is empty: leg one (IOC) fills nothing.
            await crossed_book(bus, 6_000, 5_000, seq=10**6)
            await until(lambda: rig.exchange.requests[CREATE] >= 1, what="leg one")
            first = client_order_id(f"arb:{T}:{10**6}", "arb_yes", 0)
            [leg] = await eventually(lambda: rows(db_url, Order, Order.client_order_id == first,
                                                  Order.status == "canceled"), what="leg one final")
            assert leg.fill_count == 0
            # Another book on the hot path proves the first was fully handled (core NATS keeps order per
            # subscription); then exactly one create was made — not four (two books' worth, two legs each).
            await publish_book(bus, rig, TICKERS[0])
            await until(lambda: ex.markets.get(TICKERS[0]).book is not None, what="next book")
            status = await bus.request("executor", "status")
            assert rig.exchange.requests[CREATE] == 1, rig.exchange.requests
            assert not await rows(db_url, Order, Order.client_order_id == client_order_id(
                f"arb:{T}:{10**6}", "arb_no", 0))
            assert status["decisions"] == {}
        try:
            msg = await alerts.next_msg(timeout=0.3)
            raise AssertionError(f"a one-legged alert with no fills: {msg.data!r}")
        except TimeoutError:
            pass
        await bus.close()


async def test_arbitrage_leg_two_is_sized_to_what_leg_one_filled_and_the_excess_is_reported(
        nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        rig.client("mm")
        # Only 3 contracts really offered at YES 0.50 (a NO bid at 0.50); nothing to take on the NO side.
        rig.exchange.engine.place("mm", OrderRequest(T, "ask", 5_000, 300, "good_till_canceled", "taker_at_cross"))
        bus = await feeds_bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        alerts = await bus.js.subscribe(bus.wire("ops.alert.arb"), ordered_consumer=True)
        async with executor(rig, nats_url, db_url):
            # What the desk sees: YES ask 0.50, NO ask 0.40 → buy both for 0.90 + fees.
            await crossed_book(bus, 6_000, 5_000, seq=2 * 10**6)
            msg = await alerts.next_msg(timeout=10)
            alert = Alert.model_validate_json(msg.data)
            assert alert.data["fills"] == [300, 0], alert
            assert "leg two filled 0 of 300" in (alert.detail or "")
            [second] = await rows(db_url, Order, Order.client_order_id == client_order_id(
                f"arb:{T}:{2 * 10**6}", "arb_no", 0))
            assert second.initial_count == 300  # leg two for exactly what leg one got
            assert rig.exchange.requests[CREATE] == 2
        await bus.close()


async def test_an_arbitrage_larger_than_one_order_may_be_is_cut_to_the_order_cap(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        bus = await feeds_bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url) as ex:
            await crossed_book(bus, 6_000, 5_000, seq=3 * 10**6, size=100_000)  # 1,000 contracts shown
            await until(lambda: rig.exchange.requests[CREATE] >= 1, what="leg one")
            [leg] = await eventually(lambda: rows(db_url, Order, Order.client_order_id == client_order_id(
                f"arb:{T}:{3 * 10**6}", "arb_yes", 0)), what="leg one row")
            cap = ex.settings.risk.max_order
            assert leg.status != "blocked" and 0 < leg.initial_count <= cap * 100 // 5_000
            assert leg.initial_count % 100 == 0  # whole contracts
        await bus.close()


async def test_orders_are_sent_while_jetstream_cannot_take_ord_events_and_every_event_follows_once(
        nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, quoted_desk(rig, nats_url, db_url) as (bus, _):
        await bus.js.delete_stream(bus.stream("ORDERS"))  # JetStream cannot store ord.* now
        sig = signal(T, EVENT, SERIES, 0.50)
        await send_signal(bus, sig)
        await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="order on the exchange")
        coid = client_order_id(sig.id, "yes", 0)

        async def held_back() -> Any:
            backlog = (await bus.request("executor", "status"))["outbox"]
            return backlog if backlog["unpublished"] >= 3 and backlog["failing_in_a_row"] else None

        backlog = await eventually(held_back, timeout=10, what="events held in the outbox")
        assert backlog["last_error"]
        await bus.provision()  # ORDERS is back
        await eventually(lambda: _all_published(db_url), timeout=15, what="outbox drained")
        got = await bus.js.subscribe(bus.wire("ord.>"), ordered_consumer=True)
        ids = []
        while True:
            try:
                ids.append(orjson.loads((await got.next_msg(timeout=0.5)).data)["id"])
            except TimeoutError:
                break
        events = await rows(db_url, OrderEvent, OrderEvent.client_order_id == coid, OrderEvent.mode == "sim")
        assert sorted(ids) == sorted(e.event_id for e in events) and len(set(ids)) == len(ids)
        assert [e.kind for e in sorted(events, key=lambda e: e.id)] == ["intent", "accepted", "resting"]


async def _all_published(db_url: str) -> bool:
    pending = await rows(db_url, OrderEvent, OrderEvent.published_at.is_(None), OrderEvent.message.is_not(None))
    return not pending


async def test_a_redelivered_signal_whose_intent_never_left_is_sent_once(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig, quoted_desk(rig, nats_url, db_url) as (bus, ex):
        sig = signal(T, EVENT, SERIES, 0.50)
        coid = client_order_id(sig.id, "yes", 0)
        # A first attempt reserved the intent and died before the create (its row says `intent`).
        await ex.risk.reserve(Intent(client_order_id=coid, signal_id=sig.id, leg="yes", family="weather",
                                     series_ticker=SERIES, event_ticker=EVENT, ticker=T, book_side="bid",
                                     yes_price=3100, count=500, post_only=True,
                                     fee_multiplier=Decimal(1)), now=datetime.now(UTC))
        await send_signal(bus, sig)  # the redelivery
        await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="the intent sent")
        [oid] = rig.exchange.engine.resting_ids("desk", T)
        o = rig.exchange.engine.get_order("desk", oid)
        assert (o.client_order_id, o.price, o.initial_count) == (coid, 3100, 500)
        await eventually(lambda: _decided(bus, "resumed"), what="the resume counted")
        assert rig.exchange.requests[CREATE] == 1


async def _decided(bus: Bus, reason: str) -> bool:
    return (await bus.request("executor", "status"))["decisions"].get(reason, 0) >= 1


class QueueContractChanged(KalshiRest):
    """The real client, except the venue's queue-position answer no longer parses (a contract change)."""

    async def queue_position(self, order_id: str, *, exchange_index: int | None = None) -> QueuePosition:
        raise E.MalformedResponse("queue_position: 'queue_position_fp' missing (contract changed?)")


async def test_a_job_that_keeps_failing_is_counted_and_alerted_and_the_others_keep_running(
        nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        rig.client("desk")
        broker = QueueContractChanged(rig.env, rig.signer("desk"))
        try:
            async with quoted_desk(rig, nats_url, db_url, broker=broker, balance_every_s=0.3) as (bus, _):
                alerts = await bus.js.subscribe(bus.wire("ops.alert.executor"), ordered_consumer=True)
                await send_signal(bus, signal(T, EVENT, SERIES, 0.50))
                await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="resting order")
                # Someone outbids us: the review wants to move the order and asks for its queue position.
                rig.exchange.engine.place("mm", OrderRequest(T, "bid", 3200, 100, "good_till_canceled",
                                                             "taker_at_cross"))
                await publish_book(bus, rig, T)
                alert = Alert.model_validate_json((await alerts.next_msg(timeout=15)).data)
                assert "review_working" in alert.title and "MalformedResponse" in (alert.detail or "")
                jobs = (await bus.request("executor", "status"))["jobs"]
                assert jobs["review_working"]["failing_in_a_row"] >= 3
                assert jobs["review_working"]["last_error"].startswith("MalformedResponse")
                runs = jobs["daily_loss"]["runs"], jobs["exits"]["runs"]

                async def others_ran() -> bool:
                    j = (await bus.request("executor", "status"))["jobs"]
                    return j["daily_loss"]["runs"] > runs[0] and j["exits"]["runs"] > runs[1]

                await eventually(others_ran, what="the daily-loss check and exits still running")
        finally:
            await broker.aclose()
