"""The cluster drill (issue 18): one node of a three-node NATS cluster killed, again and again, under a steady flow.

Beside the fault campaign (whose stack runs a single NATS node), on a cluster of its own: three nats-server nodes
on free ports under `root`, the SIGNALS stream at three replicas. The desk's own `Bus` (one comma-separated URL
naming every node, as `KDESK_NATS_URL` does) publishes typed signals with `publish_js` at ~50/s, recording every id
JetStream acknowledged; a publish that was never acknowledged (`BusError`) is counted as unacked, not as promised.
Two more buses run one durable pull consumer each, sharing the durable (two replicas of a service). On a seeded
schedule (`random.Random(f"{seed}/cluster")`) one node, any of the three, is SIGKILLed every `mean_gap_s` on average
(uniform 0.5-1.5x) and started again 0.2-1.5 s later; the next kill waits until it is back, so at most one node is
ever down (an R3 stream keeps its quorum with two).

Afterwards the faults stop, every node is up, and consuming goes on until every acknowledged id arrived (or
`drain_timeout_s`): `cluster_lost_messages` is the acknowledged ids never consumed, which must be 0. For a lost id
the drill looks its stream sequence up (`cluster_lost_in_stream`): stored but never delivered points at the
consumer, absent at the server. A stuck durable (nats-server 2.15, when the consumer's leader dies) is cured by the
consumer's StallWatch (libs/common/bus.py), counted in `cluster_stalls_recreated`.

`python -m benchmarks.chaos.cluster --seconds 60` runs it alone and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from libs.common import subjects
from libs.common.bus import Bus, BusError, ConsumerSpec, PullConsumer
from libs.common.config import Mode
from libs.common.embedded import EmbeddedNats, free_port
from libs.common.events import Signal, utcnow

RATE_PER_S = 50.0  # signals published per second
IN_FLIGHT = 32  # publishes awaiting their PubAck at once (a node's death holds some for seconds)
PUBLISH_TIMEOUT_S = 2.0  # per attempt; publish_js retries a timed-out publish with the same Nats-Msg-Id
SETTLE_CAP_S = 0.0  # after a restart: how long the next kill may wait for every node's /healthz (0: no wait)
DRAIN_TIMEOUT_S = 60.0  # after the faults: how long to wait for every acknowledged id to arrive
SIGNALS = next(s for s in subjects.STREAMS if s.name == "SIGNALS")
SPEC = ConsumerSpec(stream="SIGNALS", durable="cluster-drill", filter_subjects=("sig.>",), fetch_timeout_s=0.2,
                    backoff_s=(0.1, 0.2, 0.5), ack_wait_s=10.0)


def _signal(seed: int, i: int) -> Signal:
    now = utcnow()
    ticker = f"KXHIGHNY-26NOV22-B{60 + i % 20}.5"
    return Signal(id=f"cluster-{seed}-{i}", ts_event=now, mode=Mode.SIM, family="weather", series_ticker="KXHIGHNY",
                  event_ticker="KXHIGHNY-26NOV22", ticker=ticker, model="wx_ens", model_version="1", p_model=0.62,
                  p_market=0.55, action="buy_yes", limit_price=5_600, edge_maker=600, edge_taker=250, confidence=0.8,
                  valid_until=now + timedelta(minutes=5))


def _died(e: BaseException) -> str:
    """A consumer's fatal error and where the bus raised it (its frames in libs/common/bus.py)."""
    frames = [f"{f.name}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__) if f.filename.endswith("bus.py")]
    return f"{type(e).__name__}: {e} (at {' < '.join(reversed(frames))})"


def _nodes(root: Path) -> list[EmbeddedNats]:
    ports = [free_port("127.0.0.1") for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in ports]
    return [EmbeddedNats(root / f"n{i}", name=f"kdesk-cluster-{i}", cluster_port=ports[i],
                         routes=[r for j, r in enumerate(routes) if j != i]) for i in range(3)]


async def _provisioned(url: str, timeout_s: float = 60.0) -> Bus:
    """A publishing bus, once the cluster elected its JetStream meta leader and accepted SIGNALS at three replicas."""
    bus = await Bus.connect(url, service="cluster-drill", instance="pub", mode=Mode.SIM)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await bus.provision((SIGNALS,), replicas=3)
            return bus
        except Exception:  # no meta leader yet: JetStream answers "unavailable" until the nodes agree
            if time.monotonic() > deadline:
                await bus.close()
                raise
            await asyncio.sleep(0.5)


async def _start(node: EmbeddedNats, attempts: int = 5) -> None:
    for attempt in range(attempts):
        try:
            await asyncio.to_thread(node.start)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


class _Drill:
    def __init__(self, root: Path, duration_s: float, seed: int, mean_gap_s: float, say: Callable[[str], None],
                 drain_timeout_s: float, settle_cap_s: float) -> None:
        self.root, self.duration_s, self.seed, self.mean_gap_s = root, duration_s, seed, mean_gap_s
        self.say, self.drain_timeout_s, self.settle_cap_s = say, drain_timeout_s, settle_cap_s
        self.rng = random.Random(f"{seed}/cluster")
        self.nodes = _nodes(root)
        self.buses: list[Bus] = []
        self.consumers: list[PullConsumer] = []
        self.acked: dict[str, int] = {}  # event id -> stream sequence of its PubAck
        self.unacked = 0
        self.got: Counter[str] = Counter()
        self.outstanding: set[str] = set()  # acknowledged, not consumed yet
        self.all_in = asyncio.Event()  # set once publishing stopped and nothing acknowledged is outstanding
        self.kills = 0
        self.restart_errors = 0
        self.settle_s: list[float] = []  # after each restart: seconds until every node's /healthz said ok
        self.unsettled = 0  # restarts after which the cluster was not healthy within settle_cap_s
        self.stop = asyncio.Event()

    async def _handle(self, ev: Signal) -> None:
        self.got[ev.id] += 1
        self.outstanding.discard(ev.id)
        if self.stop.is_set() and not self.outstanding:
            self.all_in.set()

    async def _publish_one(self, bus: Bus, i: int, slots: asyncio.Semaphore) -> None:
        try:
            ev = _signal(self.seed, i)
            try:
                ack = await bus.publish_js(subjects.sig(ev.family, ev.series_ticker, ev.ticker), ev,
                                           timeout=PUBLISH_TIMEOUT_S)
            except BusError:
                self.unacked += 1  # never acknowledged: the desk would retry it; nothing was promised
                return
            self.acked[ev.id] = ack.seq
            if ev.id not in self.got:  # a consumer may be quicker than the PubAck
                self.outstanding.add(ev.id)
        finally:
            slots.release()

    async def _publisher(self, bus: Bus) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        at, i = loop.time(), 0
        while not self.stop.is_set():
            await slots.acquire()  # a full window holds the next publish back (it is not counted as anything)
            task = asyncio.create_task(self._publish_one(bus, i, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            # A steady pace; after a hold-up, catch up by at most one second's worth.
            at = max(at + 1 / RATE_PER_S, loop.time() - 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, at - loop.time()))
        if tasks:
            await asyncio.gather(*tasks)

    async def _settled(self, http: httpx.AsyncClient) -> bool:
        """Wait until every node's /healthz is ok (its JetStream groups current: the restarted node caught up),
        at most `settle_cap_s` (0: not at all); a node still catching up is as good as down for a quorum."""
        if self.settle_cap_s <= 0:
            return True
        async def ok(node: EmbeddedNats) -> bool:
            try:
                return (await http.get(f"http://{node.host}:{node.monitor_port}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not all(await asyncio.gather(*(ok(n) for n in self.nodes))):
            if loop.time() - t0 > self.settle_cap_s:
                self.unsettled += 1
                return False
            await asyncio.sleep(0.1)
        self.settle_s.append(loop.time() - t0)
        return True

    async def _faults(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.duration_s
        last = loop.time()
        async with httpx.AsyncClient(timeout=1.0) as http:
            await self._settled(http)
            while True:
                at = last + self.rng.uniform(0.5, 1.5) * self.mean_gap_s
                victim = self.rng.choice(self.nodes)
                down_s = self.rng.uniform(0.2, 1.5)
                if at >= end:
                    return
                await asyncio.sleep(max(0.0, at - loop.time()))
                last = loop.time()
                await asyncio.to_thread(victim.kill)
                self.kills += 1
                await asyncio.sleep(down_s)
                try:
                    await _start(victim)  # before the next kill: never two nodes down at once
                except Exception as e:
                    self.restart_errors += 1
                    self.say(f"[cluster] {victim.name} did not start again: {type(e).__name__}: {e}")
                await self._settled(http)

    def _missing(self) -> list[str]:
        return [i for i in self.acked if i not in self.got]

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        for node in self.nodes:
            await _start(node)
        url = ",".join(n.url for n in self.nodes)
        pub = await _provisioned(url)
        self.buses.append(pub)
        for name in ("a", "b"):  # two replicas of one durable, each on a connection of its own
            bus = await Bus.connect(url, service="cluster-drill", instance=f"consumer-{name}", mode=Mode.SIM)
            self.buses.append(bus)
            self.consumers.append(await bus.consume(SPEC, Signal, self._handle))
        self.say(f"[cluster] 3 nodes up, SIGNALS at 3 replicas; killing one node every ~{self.mean_gap_s:g}s "
                 f"for {self.duration_s:g}s")
        publisher = asyncio.create_task(self._publisher(pub))
        faults = asyncio.create_task(self._faults())
        try:
            await faults
        finally:
            self.stop.set()
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
            await publisher
        for node in self.nodes:  # a restart that failed during the window: every node is up for the drain
            if node.proc is None or node.proc.poll() is not None:
                await _start(node)
        faults_s = time.monotonic() - started
        if not self.outstanding:
            self.all_in.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_in.wait(), self.drain_timeout_s)
        drain_s = time.monotonic() - started - faults_s
        lost = self._missing()
        lost_in_stream = 0
        if lost:  # where are they? Stored but never delivered (consumer) or not stored at all (server)
            for ev_id in lost[:50]:
                with contextlib.suppress(Exception):
                    raw = await pub.js.get_msg(pub.stream("SIGNALS"), self.acked[ev_id])
                    lost_in_stream += ev_id.encode() in (raw.data or b"")
        stream_messages = None
        with contextlib.suppress(Exception):
            stream_messages = (await pub.js.stream_info(pub.stream("SIGNALS"))).state.messages
        died = [_died(e) for c in self.consumers if c._task is not None and c._task.done()
                and not c._task.cancelled() and (e := c._task.exception()) is not None]
        out = {
            "cluster_node_kills": self.kills,
            "cluster_acked": len(self.acked),
            "cluster_unacked": self.unacked,
            "cluster_consumed_unique": len(self.got),
            "cluster_lost_messages": len(lost),
            "cluster_lost_ids": sorted(lost, key=lambda i: self.acked[i])[:10],
            "cluster_lost_in_stream": lost_in_stream,
            "cluster_redelivered": sum(n - 1 for n in self.got.values()),
            "cluster_stalls_recreated": sum(c.recreated for c in self.consumers),
            "cluster_restart_errors": self.restart_errors,
            "cluster_settle_seconds_mean": round(sum(self.settle_s) / len(self.settle_s), 2) if self.settle_s else None,
            "cluster_settle_seconds_max": round(max(self.settle_s), 2) if self.settle_s else None,
            "cluster_unsettled_restarts": self.unsettled,
            "cluster_consumers_died": died,
            "cluster_stream_messages": stream_messages,
            "cluster_drain_seconds": round(drain_s, 1),
            "cluster_seconds": round(time.monotonic() - started, 1),
        }
        self.say(f"[cluster] {self.kills} node kills, {len(self.acked)} acked, {self.unacked} unacked, "
                 f"{len(lost)} lost, {out['cluster_redelivered']} redelivered, "
                 f"{out['cluster_stalls_recreated']} stuck durables recreated")
        return out

    async def close(self) -> None:
        self.stop.set()
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.close()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(node.stop)


async def cluster_drill(root: Path, duration_s: float, seed: int, mean_gap_s: float = 2.5,
                        say: Callable[[str], None] = print, *, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                        settle_cap_s: float = SETTLE_CAP_S) -> dict[str, Any]:
    """Kill one node of a three-node cluster every ~`mean_gap_s` for `duration_s` under a steady flow of signals;
    the counts (`cluster_*`, see the module doc). Every node is stopped on the way out, whatever happened."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    drill = _Drill(root, duration_s, seed, mean_gap_s, say, drain_timeout_s, settle_cap_s)
    try:
        return await drill.run()
    finally:
        await drill.close()


def main(argv: list[str] | None = None) -> int:
    from libs.common.logs import configure_logging

    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of node kills (default 60)")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--gap", type=float, default=2.5, help="mean seconds between two node kills (default 2.5)")
    p.add_argument("--settle", type=float, default=SETTLE_CAP_S,
                   help=f"max seconds a kill waits for every node's /healthz (default {SETTLE_CAP_S:g}; 0: none)")
    p.add_argument("--dir", type=Path, default=None, help="where the nodes store and log (default: a temporary dir)")
    args = p.parse_args(argv)
    configure_logging("cluster-drill", level="WARNING", fmt="json")  # to stderr; stdout carries the result

    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        root = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kdesk-cluster-")))
        out = asyncio.run(cluster_drill(root, args.seconds, args.seed, args.gap, say, settle_cap_s=args.settle))
    print(json.dumps(out, indent=1))
    return 0 if out["cluster_lost_messages"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
