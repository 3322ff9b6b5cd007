"""The paper broker: queue position against live books, taker fills, order calls, money, settlement, frames, restart."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from libs.common.config import Mode
from libs.common.events import PriceRange, PublicTrade
from libs.common.kalshi import errors as E
from libs.common.kalshi.models import Order, WsFill, WsUserOrder
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, fee
from services.executor.paper import PaperBroker
from tests.kit.factories import book_update, market_definition

T = "KXFED-26DEC-T4.00"
T2 = "KXFED-26DEC-T4.25"
EVENT = "KXFED-26DEC"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
C = ONE_CONTRACT
START = 1_000 * ONE_DOLLAR
MAKER_FEES = "quadratic_with_maker_fees"


def taker_fee(count: int, price: int) -> int:
    return fee(count, price, rate="taker", fee_type=MAKER_FEES, multiplier=1)


def maker_fee(count: int, price: int) -> int:
    return fee(count, price, rate="maker", fee_type=MAKER_FEES, multiplier=1)


class Rig:
    """A paper broker on a hand-driven clock, its frames, and builders for the live events it is fed."""

    def __init__(self, balance: int = START, *, run: str = "a") -> None:
        self.now = NOW
        ids = (f"{run}{i}" for i in itertools.count())  # a new run (restart) never reuses an id
        self.broker = PaperBroker(lambda: self.now, balance, ids=lambda: next(ids))
        self.frames: list[dict[str, Any]] = []
        self.broker.listen(self.frames.append)
        self._seq = itertools.count(1)
        self._trades = itertools.count(1)

    def tick(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)

    async def market(self, status: str = "active", *, ticker: str = T, result: str | None = None,
                     fee_type: str = MAKER_FEES, step: int = 100) -> None:
        await self.broker.on_market(market_definition(
            ticker, ts_event=self.now, mode=Mode.PAPER, event_ticker=EVENT, status=status,
            price_ranges=(PriceRange(start=0, end=ONE_DOLLAR, step=step),), fee_type=fee_type, result=result))

    async def book(self, yes: tuple[tuple[int, int], ...] = (), no: tuple[tuple[int, int], ...] = (), *,
                   depth: str = "full", ticker: str = T, ts: datetime | None = None) -> None:
        await self.broker.on_book(book_update(
            ticker, tuple(sorted(yes)), tuple(sorted(no)), ts_event=ts or self.now, mode=Mode.PAPER,
            seq=next(self._seq), depth=depth))

    async def trade(self, yes_price: int, count: int, *, taker: str, ticker: str = T,
                    ts: datetime | None = None) -> None:
        await self.broker.on_trade(PublicTrade(
            ts_event=ts or self.now, mode=Mode.PAPER, ticker=ticker, series_ticker="KXFED",
            trade_id=f"t{next(self._trades)}", yes_price=yes_price, count=count,
            taker_outcome_side=taker))  # type: ignore[arg-type]

    async def ahead(self, order_id: str) -> int:
        return (await self.broker.queue_position(order_id)).queue_position

    def fills(self) -> list[WsFill]:
        """Every fill frame so far, validated as the executor reads them."""
        return [WsFill.model_validate(f["msg"]) for f in self.frames if f["type"] == "fill"]

    def updates(self, order_id: str | None = None) -> list[WsUserOrder]:
        """Every user_order frame so far (of one order), validated."""
        out = [WsUserOrder.model_validate(f["msg"]) for f in self.frames if f["type"] == "user_order"]
        return [o for o in out if order_id is None or o.order_id == order_id]


async def rig_with(yes: tuple[tuple[int, int], ...] = (), no: tuple[tuple[int, int], ...] = (),
                   balance: int = START) -> Rig:
    rig = Rig(balance)
    await rig.market()
    await rig.book(yes, no)
    return rig


# -- queue position -------------------------------------------------------------------------------


async def test_a_resting_order_waits_behind_displayed_size_moves_up_on_cancels_and_fills_on_trades() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 10 * C),))
    res = await rig.broker.create_order(T, "bid", 5_000, 5 * C, client_order_id="q1")
    oid = res.order_id
    assert (res.fill_count, res.remaining_count) == (0, 5 * C)
    assert await rig.ahead(oid) == 10 * C  # behind everything displayed at 50¢
    rig.tick()
    await rig.book(yes=((5_000, 18 * C),), no=((4_800, 10 * C),))  # 8 more join behind us
    assert await rig.ahead(oid) == 10 * C
    rig.tick()
    await rig.book(yes=((5_000, 14 * C),), no=((4_800, 10 * C),))  # 4 cancelled: ahead of us first
    assert await rig.ahead(oid) == 6 * C
    assert rig.fills() == []
    rig.tick()
    await rig.trade(5_000, 8 * C, taker="no")  # a seller hits 50¢ bids: 6 ahead of us, then 2 of ours
    [f] = rig.fills()
    assert (f.order_id, f.count, f.yes_price, f.is_taker) == (oid, 2 * C, 5_000, False)
    assert (f.outcome_side, f.book_side, f.client_order_id, f.post_position) == ("yes", "bid", "q1", 2 * C)
    assert f.fee == maker_fee(2 * C, 5_000) == 88  # 0.0175 x 2 x 0.5 x 0.5 = $0.00875, up to $0.0088
    assert f.created_time == rig.now
    o = await rig.broker.order(oid)
    assert (o.status, o.fill_count, o.remaining_count, o.maker_fees, o.maker_fill_cost) == (
        "resting", 2 * C, 3 * C, 88, 2 * 5_000)
    assert await rig.ahead(oid) == 0
    [pos] = await rig.broker.positions()
    assert pos.position == 2 * C
    rig.tick()
    await rig.trade(5_000, 4 * C, taker="no")  # first in line now: our last 3 fill, 1 goes to the phantoms behind
    assert [f.count for f in rig.fills()] == [2 * C, 3 * C]
    assert (await rig.broker.order(oid)).status == "executed"
    assert rig.updates(oid)[-1].status == "executed"


async def test_a_trades_own_decrease_on_the_book_is_not_counted_twice_in_either_order() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))
    oid = (await rig.broker.create_order(T, "bid", 5_000, 5 * C)).order_id
    rig.tick()
    await rig.trade(5_000, 4 * C, taker="no")  # trade first ...
    assert await rig.ahead(oid) == 6 * C
    rig.tick()
    await rig.book(yes=((5_000, 6 * C),))  # ... then the book showing it: already accounted for
    assert await rig.ahead(oid) == 6 * C
    rig.tick()
    traded_at = rig.now
    rig.tick()
    await rig.book(yes=((5_000, 3 * C),))  # the book first (stamped after the trade) ...
    assert await rig.ahead(oid) == 3 * C
    await rig.trade(5_000, 3 * C, taker="no", ts=traded_at)  # ... then that trade: nothing more to consume
    assert await rig.ahead(oid) == 3 * C
    assert rig.fills() == []
    rig.tick()
    await rig.trade(5_000, 4 * C, taker="no")  # a later trade does consume: 3 ahead, then 1 of ours
    assert [(f.order_id, f.count) for f in rig.fills()] == [(oid, 1 * C)]


async def test_a_trade_through_our_price_fills_us_directly_and_the_other_sides_trades_do_not() -> None:
    rig = await rig_with(yes=((4_900, 10 * C),), no=((4_800, 10 * C),))
    oid = (await rig.broker.create_order(T, "bid", 5_000, 5 * C)).order_id  # improves the bid: first in line
    assert await rig.ahead(oid) == 0
    await rig.trade(5_200, 3 * C, taker="yes")  # a YES buyer lifts the 52¢ offer: not our side
    assert rig.fills() == []
    await rig.trade(4_900, 3 * C, taker="no")  # a seller accepted 49¢: our 50¢ bid would have been hit first
    [f] = rig.fills()
    assert (f.order_id, f.count, f.yes_price, f.is_taker, f.fee) == (oid, 3 * C, 5_000, False,
                                                                     maker_fee(3 * C, 5_000))
    assert (await rig.broker.order(oid)).remaining_count == 2 * C


async def test_a_live_book_crossing_our_resting_price_fills_us_as_maker_once() -> None:
    rig = await rig_with(yes=((4_800, 10 * C),), no=((4_800, 10 * C),))
    oid = (await rig.broker.create_order(T, "bid", 5_000, 5 * C)).order_id
    crossed = {"yes": ((4_800, 10 * C),), "no": ((4_800, 10 * C), (5_100, 7 * C))}  # a NO bid at 51¢ = YES ask 49¢
    await rig.book(**crossed)  # type: ignore[arg-type]
    [f] = rig.fills()
    assert (f.order_id, f.count, f.yes_price, f.is_taker, f.fee) == (oid, 5 * C, 5_000, False,
                                                                     maker_fee(5 * C, 5_000))
    rig.tick()
    await rig.book(**crossed)  # type: ignore[arg-type]
    assert len(rig.fills()) == 1
    assert (await rig.broker.order(oid)).status == "executed"


# -- taking ---------------------------------------------------------------------------------------


async def test_a_crossing_order_walks_the_displayed_levels_as_taker_and_never_takes_them_twice() -> None:
    asks = ((4_700, 10 * C), (4_800, 5 * C))  # NO bids = YES asks 53¢ x10 and 52¢ x5
    rig = await rig_with(yes=((5_000, 10 * C),), no=asks)
    res = await rig.broker.create_order(T, "bid", 5_300, 12 * C, time_in_force="immediate_or_cancel",
                                        client_order_id="take1")
    assert (res.fill_count, res.remaining_count) == (12 * C, 0)
    fees = taker_fee(5 * C, 5_200) + taker_fee(7 * C, 5_300)
    assert [(f.yes_price, f.count, f.is_taker, f.fee) for f in rig.fills()] == [
        (5_200, 5 * C, True, taker_fee(5 * C, 5_200)), (5_300, 7 * C, True, taker_fee(7 * C, 5_300))]
    assert res.average_fill_price == Decimal("0.525833")  # (5 x 0.52 + 7 x 0.53) / 12, to 6 decimals
    o = await rig.broker.order(res.order_id)
    cost = 5 * 5_200 + 7 * 5_300
    assert (o.status, o.taker_fees, o.taker_fill_cost) == ("executed", fees, cost)
    assert (await rig.broker.balance()).balance == START - cost - fees
    rig.tick()
    await rig.book(yes=((5_000, 10 * C),), no=asks)  # the real market never traded: the same book again
    res2 = await rig.broker.create_order(T, "bid", 5_300, 10 * C, time_in_force="immediate_or_cancel")
    assert (res2.fill_count, res2.remaining_count) == (3 * C, 0)  # only what we had not taken yet
    o2 = await rig.broker.order(res2.order_id)
    assert (o2.status, o2.fill_count) == ("canceled", 3 * C)  # IOC: the rest is cancelled, not rested
    assert rig.updates(res2.order_id)[-1].status == "canceled"
    rig.tick()
    await rig.book(yes=((5_000, 10 * C),), no=((4_700, 14 * C),))  # 4 new contracts offered at 53¢
    res3 = await rig.broker.create_order(T, "bid", 5_300, 10 * C, time_in_force="immediate_or_cancel")
    assert res3.fill_count == 4 * C


async def test_fill_or_kill_is_all_or_nothing_and_a_gtc_remainder_rests_behind_the_level() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 5 * C),))
    fok = await rig.broker.create_order(T, "bid", 5_200, 6 * C, time_in_force="fill_or_kill")
    assert (fok.fill_count, fok.remaining_count) == (0, 0)
    assert (await rig.broker.order(fok.order_id)).status == "canceled"
    gtc = await rig.broker.create_order(T, "bid", 5_200, 8 * C)
    assert (gtc.fill_count, gtc.remaining_count) == (5 * C, 3 * C)
    assert await rig.ahead(gtc.order_id) == 0  # the new best bid
    # Selling YES at 50¢ would first meet our own 52¢ bid: self-trade prevention cancels the taker.
    own = await rig.broker.create_order(T, "ask", 5_000, 10 * C, time_in_force="fill_or_kill")
    assert (own.fill_count, (await rig.broker.order(own.order_id)).status) == (0, "canceled")
    await rig.broker.cancel_order(gtc.order_id)
    fok2 = await rig.broker.create_order(T, "ask", 5_000, 10 * C, time_in_force="fill_or_kill")
    assert fok2.fill_count == 10 * C  # sells YES into the 50¢ bids (buys NO at 50¢)


async def test_post_only_that_would_cross_is_rejected_like_kalshi_and_leaves_nothing() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 5 * C),))
    with pytest.raises(E.OrderRejected) as exc:
        await rig.broker.create_order(T, "bid", 5_200, 1 * C, post_only=True)
    assert (exc.value.code, exc.value.details) == ("invalid_order", "post only cross")
    assert await rig.broker.orders() == [] and rig.frames == []
    ok = await rig.broker.create_order(T, "bid", 5_100, 1 * C, post_only=True)
    assert ok.remaining_count == 1 * C


async def test_rejections_raise_the_clients_errors() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))
    with pytest.raises(E.OrderRejected) as off_grid:
        await rig.broker.create_order(T, "bid", 5_050, 1 * C)
    assert off_grid.value.code == "invalid_price"
    with pytest.raises(E.OrderRejected) as too_big:
        await rig.broker.create_order(T, "bid", 5_000, 10_000 * C)
    assert too_big.value.code == "available_balance_too_low"
    with pytest.raises(E.NotFound):
        await rig.broker.create_order("NOPE-1", "bid", 5_000, 1 * C)
    with pytest.raises(E.NotFound):
        await rig.broker.order("missing")
    with pytest.raises(E.NotFound):
        await rig.broker.cancel_order("missing")
    with pytest.raises(TypeError):
        await rig.broker.create_order(T, "bid", 5_000, 1 * C, bogus=True)
    await rig.market("inactive")
    with pytest.raises(E.TradingPaused):
        await rig.broker.create_order(T, "bid", 5_000, 1 * C)


async def test_a_reused_client_order_id_returns_the_existing_order() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))
    await rig.market(ticker=T2)
    first = await rig.broker.create_order(T, "bid", 4_900, 2 * C, client_order_id="sig-1-a0")
    again = await rig.broker.create_order(T, "bid", 4_900, 2 * C, client_order_id="sig-1-a0")
    assert again.already_existed and not first.already_existed
    assert (again.order_id, again.remaining_count) == (first.order_id, 2 * C)
    assert len(await rig.broker.orders()) == 1
    assert (await rig.broker.find_order(T, "sig-1-a0")).order_id == first.order_id  # type: ignore[union-attr]
    with pytest.raises(E.OrderAlreadyExists):
        await rig.broker.create_order(T2, "bid", 4_900, 2 * C, client_order_id="sig-1-a0")


# -- changing orders ------------------------------------------------------------------------------


async def test_decrease_and_size_down_amend_keep_priority_price_amend_and_cancel_do_not() -> None:
    rig = await rig_with(yes=((4_900, 4 * C), (5_000, 10 * C)))
    oid = (await rig.broker.create_order(T, "bid", 5_000, 10 * C, client_order_id="c1")).order_id
    rig.tick()
    await rig.book(yes=((4_900, 4 * C), (5_000, 15 * C)))  # 5 join behind us
    dec = await rig.broker.decrease_order(oid, reduce_by=3 * C)
    assert (dec.remaining_count, await rig.ahead(oid)) == (7 * C, 10 * C)
    am = await rig.broker.amend_order(oid, ticker=T, side="bid", price=5_000, count=5 * C)
    assert (am.remaining_count, await rig.ahead(oid)) == (5 * C, 10 * C)
    am = await rig.broker.amend_order(oid, ticker=T, side="bid", price=4_900, count=5 * C,
                                      updated_client_order_id="c1b")
    assert (am.remaining_count, am.client_order_id, await rig.ahead(oid)) == (5 * C, "c1b", 4 * C)
    with pytest.raises(E.OrderRejected) as mismatch:
        await rig.broker.amend_order(oid, ticker=T, side="ask", price=4_900, count=5 * C)
    assert mismatch.value.code == "order_side_mismatch"
    with pytest.raises(ValueError):
        await rig.broker.decrease_order(oid)
    cancel = await rig.broker.cancel_order(oid, ticker=T)
    assert (cancel.reduced_by, cancel.client_order_id) == (5 * C, "c1b")
    o = await rig.broker.order(oid)
    assert (o.status, o.remaining_count) == ("canceled", 0)
    assert [u.remaining_count for u in rig.updates(oid)] == [10 * C, 7 * C, 5 * C, 5 * C, 0]
    with pytest.raises(E.OrderRejected):
        await rig.broker.cancel_order(oid)
    assert (await rig.broker.balance()).balance == START  # all collateral back
    assert await rig.broker.orders(status="resting") == []
    assert [x.order_id for x in await rig.broker.orders(event_ticker=EVENT)] == [oid]


# -- money ----------------------------------------------------------------------------------------


async def test_positions_net_yes_against_no_and_cash_is_conserved() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 20 * C),))
    await rig.broker.create_order(T, "bid", 5_200, 10 * C, time_in_force="immediate_or_cancel")  # buy 10 YES @52¢
    await rig.broker.create_order(T, "ask", 5_000, 4 * C, time_in_force="immediate_or_cancel")  # buy 4 NO @50¢
    [pos] = await rig.broker.positions(ticker=T)
    assert pos.position == 6 * C  # 4 YES+NO pairs netted out
    fees = taker_fee(10 * C, 5_200) + taker_fee(4 * C, 5_000)
    paid = 10 * 5_200 + 4 * 5_000
    redeemed = 4 * ONE_DOLLAR  # each pair is $1 at once
    assert pos.fees_paid == fees
    assert rig.broker.cash() == (await rig.broker.balance()).balance == START - paid - fees + redeemed
    assert [f.post_position for f in rig.fills()] == [10 * C, 6 * C]
    rest = await rig.broker.create_order(T, "ask", 5_300, 6 * C)  # rests: sells YES at 53¢ = buys NO at 47¢
    held = 6 * 4_700 + taker_fee(6 * C, 5_300)  # collateral: cost plus the worst-case fee
    assert (await rig.broker.balance()).balance == rig.broker.cash() - held
    await rig.broker.cancel_order(rest.order_id)
    assert (await rig.broker.balance()).balance == rig.broker.cash()


async def test_settlement_pays_a_dollar_per_winning_contract_and_cancels_resting_orders() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 20 * C),))
    await rig.broker.create_order(T, "bid", 5_200, 7 * C, time_in_force="immediate_or_cancel")
    resting = (await rig.broker.create_order(T, "bid", 4_000, 5 * C)).order_id
    before = rig.broker.cash()
    rig.tick()
    await rig.market("closed")
    assert (await rig.broker.order(resting)).status == "canceled"
    assert rig.updates(resting)[-1].status == "canceled"
    await rig.market("determined", result="yes")
    assert rig.broker.cash() == (await rig.broker.balance()).balance == before + 7 * ONE_DOLLAR
    assert await rig.broker.positions() == []
    [s] = await rig.broker.settlements()
    assert (s.ticker, s.market_result, s.yes_count, s.revenue) == (T, "yes", 7 * C, 7 * ONE_DOLLAR)
    await rig.market("finalized", result="yes")  # repeated lifecycle news pays nothing more
    assert rig.broker.cash() == before + 7 * ONE_DOLLAR
    with pytest.raises(E.MarketInactive):
        await rig.broker.create_order(T, "bid", 5_000, 1 * C)


async def test_a_losing_no_position_settles_to_nothing() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))
    await rig.broker.create_order(T, "ask", 5_000, 3 * C, time_in_force="immediate_or_cancel")  # 3 NO @50¢
    before = rig.broker.cash()
    await rig.market("determined", result="yes")
    assert rig.broker.cash() == before
    [s] = await rig.broker.settlements()
    assert (s.no_count, s.revenue) == (3 * C, 0)


# -- frames ---------------------------------------------------------------------------------------


async def test_frames_are_kalshi_private_ws_messages_and_async_callbacks_get_them_in_order() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),), no=((4_800, 5 * C),))
    seen: list[str] = []

    async def consumer(frame: dict[str, Any]) -> None:
        seen.append(frame["type"])

    rig.broker.listen(consumer)
    res = await rig.broker.create_order(T, "bid", 5_200, 8 * C, client_order_id="f1")
    assert [f["type"] for f in rig.frames] == seen == ["fill", "user_order"]
    fill, update = rig.frames
    assert set(fill["msg"]) >= {"trade_id", "order_id", "market_ticker", "is_taker", "side", "outcome_side",
                                "book_side", "yes_price_dollars", "count_fp", "fee_cost", "action", "ts_ms",
                                "client_order_id", "post_position_fp"}
    assert (fill["msg"]["yes_price_dollars"], fill["msg"]["count_fp"]) == ("0.5200", "5.00")
    assert fill["msg"]["fee_cost"] == f"0.{taker_fee(5 * C, 5_200):04d}"
    assert set(update["msg"]) >= {"order_id", "ticker", "status", "outcome_side", "book_side", "yes_price_dollars",
                                  "fill_count_fp", "remaining_count_fp", "initial_count_fp", "taker_fees_dollars",
                                  "maker_fees_dollars", "taker_fill_cost_dollars", "maker_fill_cost_dollars",
                                  "client_order_id", "last_updated_ts_ms"}
    [u] = rig.updates()
    assert (u.order_id, u.status, u.fill_count, u.remaining_count, u.initial_count) == (
        res.order_id, "resting", 5 * C, 3 * C, 8 * C)
    assert (u.taker_fees, u.taker_fill_cost, u.client_order_id) == (taker_fee(5 * C, 5_200), 5 * 5_200, "f1")
    assert u.last_updated_ts_ms == int(NOW.timestamp()) * 1000
    [f] = rig.fills()
    assert (f.ticker, f.count, f.post_position, f.ts_ms) == (T, 5 * C, 5 * C, int(NOW.timestamp()) * 1000)


async def test_a_failing_callback_does_not_fail_the_call() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))

    def broken(frame: dict[str, Any]) -> None:
        raise RuntimeError("consumer bug")

    rig.broker.listen(broken)
    res = await rig.broker.create_order(T, "bid", 4_900, 1 * C)
    assert res.remaining_count == 1 * C and len(rig.frames) == 1


# -- book updates ---------------------------------------------------------------------------------


async def test_a_level_the_live_book_drops_takes_its_phantoms_along_even_after_a_trade_emptied_it() -> None:
    rig = await rig_with(yes=((4_900, 3 * C), (5_000, 10 * C)))
    oid = (await rig.broker.create_order(T, "bid", 5_000, 5 * C)).order_id
    rig.tick()
    await rig.book(yes=((4_900, 3 * C), (5_000, 14 * C)))  # 4 join behind us
    rig.tick()
    await rig.trade(5_000, 14 * C, taker="no")  # the whole displayed level trades: 10 ahead, 4 of ours
    assert [f.count for f in rig.fills()] == [4 * C]
    rig.tick()
    await rig.book(yes=((4_900, 3 * C),))  # 50¢ is gone from the live book
    await rig.broker.cancel_order(oid)
    sell = await rig.broker.create_order(T, "ask", 5_000, 5 * C, time_in_force="immediate_or_cancel")
    assert sell.fill_count == 0  # nothing left to sell into at 50¢


async def test_a_top_of_book_update_replaces_only_the_levels_it_shows() -> None:
    rig = await rig_with(yes=((4_800, 5 * C), (4_900, 5 * C), (5_000, 5 * C)))
    deep = (await rig.broker.create_order(T, "bid", 4_800, 1 * C)).order_id
    mid = (await rig.broker.create_order(T, "bid", 4_900, 1 * C)).order_id
    rig.tick()
    await rig.book(yes=((4_900, 2 * C), (5_000, 5 * C)), depth="top")
    assert (await rig.ahead(deep), await rig.ahead(mid)) == (5 * C, 2 * C)
    rig.tick()
    await rig.book(depth="top")  # an empty top: that side is empty
    assert (await rig.ahead(deep), await rig.ahead(mid)) == (0, 0)


async def test_a_book_seen_before_its_market_is_mirrored_when_it_arrives_and_old_or_repeated_books_are_ignored(
) -> None:
    rig = Rig()
    await rig.book(yes=((5_000, 10 * C),))
    await rig.market()
    oid = (await rig.broker.create_order(T, "bid", 5_000, 1 * C)).order_id
    assert await rig.ahead(oid) == 10 * C
    await rig.book(yes=((5_000, 2 * C),), ts=NOW - timedelta(seconds=5))  # a stale replay
    assert await rig.ahead(oid) == 10 * C
    rig.tick()
    update = book_update(T, ((5_000, 12 * C),), (), id="book:1", ts_event=rig.now, mode=Mode.PAPER, seq=9)
    await rig.broker.on_book(update)
    rig.tick()
    await rig.trade(5_000, 5 * C, taker="no")
    assert await rig.ahead(oid) == 5 * C
    await rig.broker.on_book(update)  # its JetStream copy, after the trade: not read again
    later = (await rig.broker.create_order(T, "bid", 5_000, 1 * C)).order_id
    assert await rig.ahead(later) == 5 * C + 1 * C + 2 * C  # the rest ahead, our first order, the 2 that joined


# -- restart --------------------------------------------------------------------------------------


async def test_an_adopted_order_keeps_its_history_and_rests_behind_the_displayed_size() -> None:
    first = await rig_with(yes=((5_000, 4 * C),))
    placed = await first.broker.create_order(T, "bid", 5_000, 6 * C, client_order_id="keep")
    await first.trade(5_000, 6 * C, taker="no")  # 4 ahead, then 2 of ours
    known: Order = await first.broker.order(placed.order_id)
    assert (known.fill_count, known.remaining_count) == (2 * C, 4 * C)
    available = (await first.broker.balance()).balance

    rig = Rig(balance=available, run="b")  # the restart: a fresh broker, the ledger's balance and orders
    await rig.broker.adopt(known)
    assert (await rig.broker.order(known.order_id)).remaining_count == 4 * C  # waits for its market's book
    await rig.market()
    await rig.market(ticker=T2)
    assert [o.order_id for o in await rig.broker.orders(ticker=T)] == [known.order_id]
    await rig.book(yes=((5_000, 9 * C),))
    assert await rig.ahead(known.order_id) == 9 * C  # behind everything displayed at its price
    assert (await rig.broker.balance()).balance == available  # its collateral was already out of the balance
    with pytest.raises(E.OrderAlreadyExists):
        await rig.broker.create_order(T2, "bid", 5_000, 1 * C, client_order_id="keep")
    again = await rig.broker.create_order(T, "bid", 5_000, 6 * C, client_order_id="keep")
    assert again.already_existed and again.order_id == known.order_id
    rig.tick()
    await rig.trade(5_000, 13 * C, taker="no")  # 9 ahead, then the 4 left of ours
    o = await rig.broker.order(known.order_id)
    assert (o.status, o.fill_count, o.remaining_count, o.maker_fill_cost) == ("executed", 6 * C, 0, 6 * 5_000)
    assert [f.count for f in rig.fills()] == [4 * C]
    assert rig.updates(known.order_id)[-1].status == "executed"


async def test_an_adopted_order_the_market_crossed_meanwhile_fills_as_maker_and_waiting_orders_can_be_cancelled(
) -> None:
    rig = Rig()
    await rig.market()
    await rig.book(yes=((4_800, 5 * C),), no=((5_100, 3 * C),))  # YES ask 49¢: through a 50¢ bid
    crossed = Order(order_id="old1", client_order_id="x1", ticker=T, outcome_side="yes", book_side="bid",
                    status="resting", yes_price=5_000, fill_count=0, remaining_count=5 * C, initial_count=5 * C)
    await rig.broker.adopt(crossed)
    [f] = rig.fills()
    assert (f.order_id, f.count, f.yes_price, f.is_taker) == ("old1", 3 * C, 5_000, False)
    assert (await rig.broker.order("old1")).remaining_count == 2 * C
    waiting = Order(order_id="old2", ticker=T2, outcome_side="no", book_side="ask", status="resting",
                    yes_price=6_000, fill_count=0, remaining_count=2 * C)
    await rig.broker.adopt(waiting)
    await rig.broker.adopt(waiting)  # idempotent
    assert (await rig.broker.queue_position("old2")).queue_position == 0
    dec = await rig.broker.decrease_order("old2", reduce_to=1 * C)
    assert dec.remaining_count == 1 * C
    cancel = await rig.broker.cancel_order("old2")
    assert cancel.reduced_by == 1 * C
    assert (await rig.broker.order("old2")).status == "canceled"
    assert [u.status for u in rig.updates("old2")] == ["resting", "canceled"]
    with pytest.raises(ValueError):
        await rig.broker.adopt(Order(order_id="done", ticker=T, outcome_side="yes", book_side="bid",
                                     status="executed", yes_price=5_000, fill_count=C, remaining_count=0))


# -- lifecycle ------------------------------------------------------------------------------------


async def test_a_gtc_order_expires_on_the_next_event_after_its_time_and_flat_fee_markets_are_refused() -> None:
    rig = await rig_with(yes=((5_000, 10 * C),))
    oid = (await rig.broker.create_order(T, "bid", 4_900, 1 * C, expiration_time=NOW + timedelta(seconds=30))).order_id
    rig.tick(31)
    await rig.book(yes=((5_000, 10 * C),))
    assert (await rig.broker.order(oid)).status == "canceled"
    assert rig.updates(oid)[-1].status == "canceled"
    assert (await rig.broker.balance()).balance == START
    await rig.market(ticker=T2, fee_type="flat")  # fees we cannot compute: never guess them
    with pytest.raises(E.OrderRejected) as exc:
        await rig.broker.create_order(T2, "bid", 5_000, 1 * C)
    assert "flat" in str(exc.value)


# -- freshness ------------------------------------------------------------------------------------


async def test_a_stale_book_is_never_mirrored_and_liquidity_goes_when_the_book_goes_stale() -> None:
    asks = ((4_700, 10 * C),)  # YES asks 53¢ x10
    rig = Rig()
    await rig.market()
    await rig.book(yes=((5_000, 10 * C),), no=asks, ts=NOW - timedelta(minutes=10))  # a replayed old book
    assert rig.broker.stale_books_ignored == 1
    res = await rig.broker.create_order(T, "bid", 5_300, 5 * C, time_in_force="immediate_or_cancel")
    assert res.fill_count == 0  # nothing to take: the old picture of the market is not a market
    await rig.book(yes=((5_000, 10 * C),), no=asks)  # a fresh one
    res = await rig.broker.create_order(T, "bid", 5_300, 2 * C, time_in_force="immediate_or_cancel")
    assert res.fill_count == 2 * C
    rig.tick(31)  # the feed went quiet: the book is older than the 30 s limit now
    res = await rig.broker.create_order(T, "bid", 5_300, 2 * C, time_in_force="immediate_or_cancel")
    assert res.fill_count == 0
    resting = await rig.broker.create_order(T, "bid", 4_900, 2 * C, client_order_id="rest")
    await rig.trade(4_900, 5 * C, taker="no")  # a stale-book market still trades: fills come from trades only
    assert (await rig.broker.order(resting.order_id)).fill_count == 2 * C
