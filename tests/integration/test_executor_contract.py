"""The Kalshi contract tripwire end to end (issue 14): a simulator whose REST answers change format
makes the executor pause at start with an `ops.alert.contract` saying what changed; a clean one
trades on, and a changed fee schedule is alerted. Real NATS + PostgreSQL + the simulator."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.events import ANY_EVENT
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_book, publish_definitions, send_signal, signal
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig

T = TICKERS[2]


async def _alerts(nats_url: str) -> tuple[Bus, list[Any]]:
    bus = await Bus.connect(nats_url, service="contract-test", mode=Mode.SIM)
    await bus.provision()
    seen: list[Any] = []

    async def on_alert(ev: Any) -> None:
        seen.append(ev)
    await bus.subscribe("ops.alert.contract", ANY_EVENT, on_alert)
    return bus, seen


@pytest.mark.parametrize(("fault", "field"), [
    ("cents_prices", "yes_bid_dollars"),
    ("bare_counts", "volume_fp"),
    ("no_fee_type", "fee_type"),
    ("no_settlement_bounds", "settlement_bounds_type"),
])
async def test_a_changed_format_pauses_the_executor_with_a_contract_alert(nats_url: str, db_url: str, fault: str,
                                                                           field: str) -> None:
    async with sim_rig() as rig:
        rig.exchange.faults.contract_break = fault
        bus, alerts = await _alerts(nats_url)
        async with executor(rig, nats_url, db_url, settings=desk_settings(contract_check=True)) as ex:
            # Started means checked: the verdict came before the signal consumer.
            assert ex.contract is not None and not ex.contract.ok
            assert any(field in p for p in ex.contract.problems), ex.contract.problems
            await until(lambda: ex.control.state.paused, what="paused by the contract check")
            assert ex.control.state.pause_reason.startswith("contract: ")
            await until(lambda: alerts, what="ops.alert.contract")
            alert = alerts[0]
            assert alert.severity == "critical" and "trading paused" in alert.title
            assert field in alert.detail
            status = await bus.request("executor", "status", {})
            assert status["paused"] is True and status["contract"]["ok"] is False
            # Nothing is traded while paused: a signal is declined.
            await publish_definitions(bus, rig, TICKERS)
            await publish_book(bus, rig, T)
            await send_signal(bus, signal(T, EVENT, SERIES, 0.9, sid=f"after-contract-{fault}"))
            await until(lambda: ex.desk.decisions.get("paused", 0) >= 1, what="declined as paused")
            assert rig.exchange.engine.resting_ids("desk", T) == []
        await bus.close()


async def test_a_clean_contract_trades_on_and_a_fee_change_is_alerted(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        bus, alerts = await _alerts(nats_url)
        async with executor(rig, nats_url, db_url, settings=desk_settings(contract_check=True)) as ex:
            assert ex.contract is not None and ex.contract.ok, ex.contract.problems if ex.contract else None
            assert not ex.control.state.paused
            before = ex.contract.fee_fingerprint
            assert before and ex.contract.fee_schedule["fee_type"] == "quadratic"
            # The same market's series changes its multiplier: the next check reports the new schedule.
            series = rig.exchange.catalog.series[rig.exchange.catalog.markets[ex.contract.market].series_ticker]
            series.fee_multiplier = Decimal("0.5")
            report = await ex.check_contract()
            assert report is not None and report["ok"] and report["fee_fingerprint"] != before
            await until(lambda: any("fee schedule" in a.title for a in alerts), what="fee change alert")
            assert not ex.control.state.paused
            # A later break is caught by the periodic check too.
            rig.exchange.faults.contract_break = "cents_prices"
            await ex.check_contract()
            await until(lambda: ex.control.state.paused, what="paused by the periodic check")
        await bus.close()
