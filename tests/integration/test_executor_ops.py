"""Executor operations against the sim over real NATS + PostgreSQL: repricing, exits, REST fallback,
the daily-loss stop, and the command surface (bus and `kdesk desk`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import Fill, Order, Position
from libs.common.events import ANY_EVENT
from libs.common.matching.types import OrderRequest
from services.ctl import cli
from tests.integration.test_executor import eventually, mm_quotes, rows
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.sim import EVENT, SERIES, TICKERS, SimRig, sim_rig

T = TICKERS[2]


async def _rest_order(rig: SimRig, ex: Any, bus: Bus, p: float = 0.5) -> str:
    await publish_book(bus, rig, T)
    await until(lambda: ex.markets.get(T) is not None and ex.markets.get(T).book is not None, what="book")
    await send_signal(bus, signal(T, EVENT, SERIES, p))
    await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="resting order")
    return rig.exchange.engine.resting_ids("desk", T)[0]


def _sell_into(rig: SimRig, yes_price: int, count: int) -> None:
    rig.client("flow")
    rig.exchange.engine.place("flow", OrderRequest(T, "ask", yes_price, count, "immediate_or_cancel",
                                                   "taker_at_cross"))


async def _buy_position(rig: SimRig, ex: Any, bus: Bus) -> int:
    """The desk rests its maker bid at 31c and a seller fills all of it; the position's size."""
    oid = await _rest_order(rig, ex, bus)
    count = rig.exchange.engine.get_order("desk", oid).initial_count
    _sell_into(rig, 3100, count)
    await until(lambda: rig.exchange.engine.position("desk", T) == count, what="bought")
    return count


def _pull_quotes(rig: SimRig, user: str) -> None:
    for oid in rig.exchange.engine.resting_ids(user, T):
        rig.exchange.engine.cancel(user, oid)


async def _bus(nats_url: str) -> Bus:
    bus = await Bus.connect(nats_url, service="ops-test", mode=Mode.SIM)
    await bus.provision()
    return bus


async def test_an_outbid_order_is_repriced_by_amend(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=desk_settings(reprice_after_s=1)) as ex:
            oid = await _rest_order(rig, ex, bus)
            assert rig.exchange.engine.get_order("desk", oid).price == 3100
            # Someone bids 32c, ahead of us: after reprice_after_s the order moves one tick above them.
            rig.exchange.engine.place("mm", OrderRequest(T, "bid", 3200, 1000, "good_till_canceled",
                                                         "taker_at_cross"))
            await publish_book(bus, rig, T)
            await until(lambda: rig.exchange.engine.get_order("desk", oid).price == 3300, timeout=8,
                        what="amended to 33c")

            async def ledger_price():
                [o] = await rows(db_url, Order, Order.order_id == oid)
                return o.yes_price == 3300
            await eventually(ledger_price, what="ledger follows the amend")
            assert len(rig.exchange.engine.orders("desk", ticker=T)) == 1  # amended in place, not re-placed
            moved = rig.exchange.engine.get_order("desk", oid)
            # Sized to the order cap at 31c; at 33c the same size would cost more: it shrinks to fit.
            assert 0 < -(-moved.remaining_count * 3300 // 100) <= ex.settings.risk.max_order
        await bus.close()


async def test_a_partly_filled_order_repriced_keeps_its_fills_and_rest_within_the_order_cap(
        nats_url: str, db_url: str) -> None:
    """Found by the fault campaign: the amend was checked on the rest alone, so a partly filled order moved to a
    better price committed more than KDESK_MAX_ORDER_USD in all ($4.05 on a $4 cap)."""
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, settings=desk_settings(reprice_after_s=1)) as ex:
            oid = await _rest_order(rig, ex, bus)
            first = rig.exchange.engine.get_order("desk", oid)
            assert first.price == 3100
            _sell_into(rig, 3100, first.initial_count // 2)  # half of it fills at 31c
            rig.exchange.engine.place("mm", OrderRequest(T, "bid", 3200, 1000, "good_till_canceled",
                                                         "taker_at_cross"))
            await publish_book(bus, rig, T)
            await until(lambda: rig.exchange.engine.get_order("desk", oid).price == 3300, timeout=8,
                        what="amended to 33c")
            o = rig.exchange.engine.get_order("desk", oid)
            committed = -(-o.fill_count * 3100 // 100) + -(-o.remaining_count * 3300 // 100)
            assert o.fill_count > 0 and committed <= ex.settings.risk.max_order
        await bus.close()


async def test_take_profit_exit_sells_the_position_reduce_only(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        settings = desk_settings(exits="weather:take_profit=0.36")
        async with executor(rig, nats_url, db_url, settings=settings) as ex:
            count = await _buy_position(rig, ex, bus)
            # The market rallies: the old quotes go, a buyer bids 37c for all of it. Take profit at >= 36c.
            _pull_quotes(rig, "mm")
            rig.client("buyer")
            rig.exchange.engine.place("buyer", OrderRequest(T, "bid", 3700, count, "good_till_canceled",
                                                            "taker_at_cross"))
            await publish_book(bus, rig, T)
            await until(lambda: rig.exchange.engine.position("desk", T) == 0, timeout=8, what="exited")

            async def flat():
                pos = await rows(db_url, Position, Position.ticker == T)
                return pos and pos[0].position == 0 and pos[0].realized_pnl_ticks > 0
            await eventually(flat, what="ledger flat with a realized profit")
            exits = await rows(db_url, Order, Order.leg == "exit")
            assert len(exits) == 1 and exits[0].reduce_only and exits[0].status == "executed"
        await bus.close()


async def test_rest_polling_keeps_the_ledger_when_there_is_no_private_websocket(nats_url: str,
                                                                                db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url, private_ws=False) as ex:
            oid = await _rest_order(rig, ex, bus)
            count = rig.exchange.engine.get_order("desk", oid).initial_count
            _sell_into(rig, 3000, count // 2)  # a partial fill, seen only by polling

            async def partial():
                # The exchange rests the order before its answer reaches the ledger: no row with the id yet.
                got = await rows(db_url, Order, Order.order_id == oid)
                return len(got) == 1 and got[0].fill_count == count // 2 and got[0].status == "resting"
            await eventually(partial, what="partial fill polled")
            fills = await rows(db_url, Fill, Fill.order_id == oid)
            assert sum(f.count for f in fills) == count // 2
            assert sum(f.fee_ticks for f in fills) == sum(f.fee for f in rig.exchange.engine.fills("desk"))
        await bus.close()


async def test_daily_loss_limit_pauses_and_alerts(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        alerts: list[Any] = []

        async def on_alert(ev: Any) -> None:
            alerts.append(ev)
        await bus.subscribe("ops.alert.risk", ANY_EVENT, on_alert)
        await publish_definitions(bus, rig, TICKERS)
        settings = desk_settings(daily_loss_limit_usd="0.50")
        async with executor(rig, nats_url, db_url, settings=settings, balance_every_s=0.2) as ex:
            await _buy_position(rig, ex, bus)
            # The bid collapses to 5c: marked at the bid, the position has lost far more than $0.50.
            _pull_quotes(rig, "mm")
            rig.exchange.engine.place("mm", OrderRequest(T, "bid", 500, 1000, "good_till_canceled",
                                                         "taker_at_cross"))
            await publish_book(bus, rig, T)
            await until(lambda: ex.control.state.paused, timeout=8, what="paused by the daily loss")
            assert ex.control.state.pause_reason == "daily_loss"
            await until(lambda: any(a.title.startswith("daily loss") for a in alerts), what="risk alert")
            await send_signal(bus, signal(T, EVENT, SERIES, 0.9, sid="after-loss"))
            await until(lambda: ex.desk.decisions.get("paused", 0) >= 1, what="declined")
        await bus.close()


async def test_commands_answer_with_data_on_the_bus_and_through_kdesk(nats_url: str, db_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400, size=100_000)  # deep enough to flatten into
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url) as ex:
            oid = await _rest_order(rig, ex, bus)
            count = rig.exchange.engine.get_order("desk", oid).initial_count
            _sell_into(rig, 3100, count // 2)
            await until(lambda: rig.exchange.engine.position("desk", T) == count // 2, what="partly filled")

            async def ledger_has_fill():
                return await bus.request("executor", "fills")
            fills = await eventually(ledger_has_fill, what="fills command")
            assert sum(f["count"] for f in fills) == count // 2
            positions = await bus.request("executor", "positions")
            assert [(p["ticker"], p["position"]) for p in positions] == [(T, count // 2)]
            [held] = positions  # marked at the YES leg's best bid in the book the executor holds
            bid = ex.markets.get(T).bid("yes")
            assert held["mark_ticks"] == bid and bid is not None
            assert held["unrealized_pnl_ticks"] == held["position"] * bid // 100 - held["cost_ticks"]
            [open_order] = await bus.request("executor", "orders", {"open": True})
            assert open_order["order_id"] == oid and open_order["remaining_count"] == count - count // 2
            balance = await bus.request("executor", "balance")
            assert balance["balance_ticks"] == rig.exchange.engine.balance("desk")
            status = await bus.request("executor", "status")
            assert status["decisions"]["sent"] == 1 and status["open_orders"] == 1 and not status["paused"]

            monkeypatch.setenv("KDESK_NATS_URL", nats_url)
            rc = await asyncio.to_thread(lambda: _run_cli(["desk", "flatten"]))
            assert rc == 0 and '"canceled": 1' in capsys.readouterr().out
            await until(lambda: not rig.exchange.engine.resting_ids("desk"), what="canceled by flatten")
            await until(lambda: rig.exchange.engine.position("desk", T) == 0, what="exited by flatten")
        await bus.close()


def _run_cli(argv: list[str]) -> int:
    # The command itself, not `cli.main`: main reconfigures process-wide logging onto this test's stderr.
    args = cli.build_parser().parse_args(argv)
    return int(args.func(args))


async def test_reconciliation_settles_a_position_the_exchange_paid_out(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await _bus(nats_url)
        await publish_definitions(bus, rig, TICKERS)
        async with executor(rig, nats_url, db_url) as ex:
            count = await _buy_position(rig, ex, bus)

            async def held():
                pos = await rows(db_url, Position, Position.ticker == T)
                return pos and pos[0].position == count
            await eventually(held, what="position in the ledger")
            # The market closes and settles YES while the desk never saw a market update about it.
            rig.exchange.engine.set_status(T, "closed")
            rig.exchange.engine.settle(T, "yes")
            assert rig.exchange.engine.position("desk", T) == 0
            report = await bus.request("executor", "reconcile")
            assert report["settled"] == [T] and report["disagreements"] == []
            [pos] = await rows(db_url, Position, Position.ticker == T)
            cost = -(-count * 3100 // 100)
            assert pos.position == 0 and pos.settled_at is not None
            assert pos.realized_pnl_ticks == count * 100 - cost - pos.fees_paid_ticks
            assert not ex.control.state.paused
        await bus.close()
