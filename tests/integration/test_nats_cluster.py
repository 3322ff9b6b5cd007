"""A three-node NATS cluster on loopback: streams provisioned at three replicas survive the loss of a node, and
no message JetStream acknowledged is lost (the several-machines deployment's premise).

When the durable's leader is the node that dies, nats-server 2.15 sometimes leaves the durable stuck
(deliveries counted, none received); the consumer's StallWatch rebinds and, if need be, recreates it, so
this test also covers that path in roughly half of its runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.common import subjects
from libs.common.bus import Bus, BusError, ConsumerSpec
from libs.common.config import Mode
from libs.common.embedded import EmbeddedNats, free_port
from libs.common.events import Signal
from tests.integration.test_bus import wait_until
from tests.kit.factories import signal_event


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[EmbeddedNats]]:
    ports = [free_port("127.0.0.1") for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in ports]
    nodes = [EmbeddedNats(tmp_path / f"n{i}", name=f"kdesk-{i}", cluster_port=ports[i],
                          routes=[r for j, r in enumerate(routes) if j != i]) for i in range(3)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


async def _provisioned(url: str) -> Bus:
    """Provision at three replicas once the cluster has elected its JetStream meta leader."""
    bus = await Bus.connect(url, service="cluster-test", mode=Mode.SIM)
    for _ in range(60):
        try:
            await bus.provision(replicas=3)
            return bus
        except Exception:  # no meta leader yet: JetStream answers "unavailable" until the nodes agree
            await asyncio.sleep(0.5)
    await bus.close()
    raise AssertionError("the cluster never accepted the streams")


@pytest.mark.slow
async def test_a_node_dies_mid_flow_and_no_acknowledged_message_is_lost(cluster: list[EmbeddedNats]) -> None:
    # The desk's way of naming a cluster: every node in one comma-separated KDESK_NATS_URL.
    bus = await _provisioned(",".join(n.url for n in cluster))
    info = await bus.js.stream_info(bus.stream("SIGNALS"))
    assert info.config.num_replicas == 3 and info.cluster is not None and len(info.cluster.replicas or []) == 2
    got: list[str] = []

    async def handle(ev: Signal) -> None:
        got.append(ev.id)

    consumer = await bus.consume(ConsumerSpec(stream="SIGNALS", durable="cluster", filter_subjects=("sig.>",),
                                              fetch_timeout_s=0.2, backoff_s=(0.1, 0.2, 0.5)), Signal, handle)
    acked: list[str] = []
    # The stream's leader when it is not the server we are connected to, else a replica.
    here = bus.nc.connected_url.port if bus.nc.connected_url else None
    others = [n for n in cluster if n.port != here]
    victim = next((n for n in others if n.name == info.cluster.leader), others[0])
    for i in range(400):
        ev = signal_event(f"KXHIGHNY-26NOV22-B{i}")
        if i == 150:
            victim.kill()  # mid-flow
        try:
            await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev, timeout=2.0)
        except BusError:
            continue  # never acknowledged: the desk would retry it; it is not counted as promised
        acked.append(ev.id)
    assert len(acked) >= 300, "publishing stopped with a node down"
    await wait_until(lambda: set(acked) <= set(got), timeout=20,
                     what=f"every acknowledged message consumed ({len(set(got))} of {len(acked)})")
    after = await bus.js.stream_info(bus.stream("SIGNALS"))
    assert after.state.messages >= len(acked)
    await consumer.stop()
    await bus.close()
