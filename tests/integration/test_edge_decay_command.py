"""Edge-decay alerts take held positions from the executor's command, not from its table."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.events import Alert
from services.signals.pipeline import EdgeDecayMonitor
from services.signals.service import check_edge_decay
from tests.unit.signals.test_edge_decay import book, pipeline


async def test_held_positions_come_from_cmd_executor_positions(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="signals", mode=Mode.SIM)
    await bus.provision()
    p = pipeline()
    monitor = EdgeDecayMonitor(p, margin=0.05)
    book(p, "F-A", 4_800, 5_000)  # YES bid 0.48 vs model 0.40: the edge turned against a YES holder
    # No executor running in this mode: nothing is held that we know of, and nothing fails.
    assert await check_edge_decay(bus, monitor) == 0
    asked: list[dict[str, Any]] = []

    async def positions(req: dict[str, Any]) -> list[dict[str, Any]]:
        asked.append(req)
        return [{"ticker": "F-A", "event_ticker": "F", "family": "weather", "position": 500, "cost_ticks": 2_000,
                 "realized_pnl_ticks": 0, "fees_paid_ticks": 10}]

    await bus.serve("executor", "positions", positions)  # the executor's answer, over the bus
    alerts = await bus.js.subscribe(bus.wire("ops.alert.edge_decay"), ordered_consumer=True)
    assert await check_edge_decay(bus, monitor) == 1
    alert = Alert.model_validate_json((await alerts.next_msg(timeout=5)).data)
    assert alert.data["ticker"] == "F-A" and alert.data["side"] == "yes" and alert.mode is Mode.SIM
    assert len(asked) == 1
    await bus.close()
