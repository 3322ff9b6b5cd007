"""Bus throughput on one process against a local nats-server (embedded, JetStream on file storage).

- `bus_core_msgs_per_s`: typed events published on core NATS by one process's `Bus.publish` and decoded
  (validated) by another process's `Bus.subscribe` callback, as from feeds to signals: messages from the
  first publish to the last receipt. Beside it: `bus_core_receiver_cpu_us_per_msg` (the receiver's CPU per
  message: decoding is the side that limits) and `bus_core_raw_nats_msgs_per_s`, the same payloads as bytes
  through nats-py alone between the same two processes (the transport's ceiling on this machine).
- `bus_core_one_process_*`: both ends on one connection pair in this one process (one core for both, as the
  figure was first measured), its CPU per message, and raw nats-py the same way. benchmarks/codec.py splits
  the difference.
- `bus_js_acked_msgs_per_s`: typed events published to JetStream with `Nats-Msg-Id` (acks awaited,
  64 in flight) and then consumed by a durable `Bus.consume` loop that acks each after its
  handler: total messages / total time for both halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import nats
from nats.aio.msg import Msg

from benchmarks.harness import private_nats
from libs.common import subjects
from libs.common.bus import Bus, ConsumerSpec
from libs.common.config import Mode
from libs.common.events import BookUpdate, Signal, utcnow

CORE_N = 100_000
JS_N = 20_000


def _book(i: int) -> BookUpdate:
    return BookUpdate(id=f"b{i}", ts_event=utcnow(), mode=Mode.SIM, ticker="KXHIGHNY-26NOV22-B63.5",
                      series_ticker="KXHIGHNY", seq=i, yes_bids=((4_200, 1_300), (4_100, 500)),
                      no_bids=((5_600, 1_700),))


async def _core(url: str) -> tuple[float, float]:
    pub = await Bus.connect(url, service="bench-pub")
    sub = await Bus.connect(url, service="bench-sub")
    got = 0
    done = asyncio.Event()

    async def on_book(_: BookUpdate) -> None:
        nonlocal got
        got += 1
        if got == CORE_N:
            done.set()

    # md.book.> is captured by MD_BOOKS (last per subject), as in production.
    subject = subjects.md_book("bench", "x")
    await sub.subscribe(subject, BookUpdate, on_book)
    await sub.nc.flush()
    events = [_book(i) for i in range(CORE_N)]
    start, cpu = time.perf_counter(), time.process_time()
    for ev in events:
        await pub.publish(subject, ev)
    await pub.nc.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await pub.close()
    await sub.close()
    return CORE_N / elapsed, cpu / CORE_N * 1e6


async def _raw_core(url: str) -> float:
    """The same books, encoded beforehand, as bytes through nats-py alone: no bus, no codec, no header."""
    pub, sub = await nats.connect(url), await nats.connect(url)
    got = 0
    done = asyncio.Event()

    async def cb(_: Msg) -> None:
        nonlocal got
        got += 1
        if got == CORE_N:
            done.set()

    subject = subjects.scoped(Mode.SIM.value, subjects.md_book("bench", "x"))
    await sub.subscribe(subject, cb=cb)
    await sub.flush()
    payloads = [_book(i).to_json() for i in range(CORE_N)]
    start = time.perf_counter()
    for data in payloads:
        await pub.publish(subject, data)
    await pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await pub.close()
    await sub.close()
    return CORE_N / elapsed


async def _subscriber(url: str, n: int, raw: bool) -> None:
    """The receiving service of `_core_between_processes`: count `n` books, then print when the last arrived
    (`time.perf_counter`, CLOCK_MONOTONIC: one clock for every process on the machine) and this process's CPU."""
    got = 0
    done = asyncio.Event()
    if raw:
        nc = await nats.connect(url)

        async def cb(_: Msg) -> None:
            nonlocal got
            got += 1
            if got == n:
                done.set()

        await nc.subscribe(subjects.scoped(Mode.SIM.value, subjects.md_book("bench", "x")), cb=cb)
        await nc.flush()
    else:
        bus = await Bus.connect(url, service="bench-sub")

        async def on_book(_: BookUpdate) -> None:
            nonlocal got
            got += 1
            if got == n:
                done.set()

        await bus.subscribe(subjects.md_book("bench", "x"), BookUpdate, on_book)
        await bus.nc.flush()
    cpu = time.process_time()
    print("ready", flush=True)
    await asyncio.wait_for(done.wait(), 120)
    print(f"{time.perf_counter()} {time.process_time() - cpu}", flush=True)


async def _core_between_processes(url: str, raw: bool) -> tuple[float, float]:
    """As the desk uses the bus: one service publishes (feeds), another receives (signals), each a process of
    its own. Messages per second from the first publish to the last receipt, and the receiver's CPU µs per
    message (the receiving end, decode and validation included, is the side that limits)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bus", "--subscriber", url, str(CORE_N), "raw" if raw else "bus",
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        if (await asyncio.wait_for(child.stdout.readline(), 60)).strip() != b"ready":
            raise RuntimeError("bench subscriber did not start")
        subject = subjects.md_book("bench", "x")
        if raw:
            nc = await nats.connect(url)
            payloads = [_book(i).to_json() for i in range(CORE_N)]
            wire = subjects.scoped(Mode.SIM.value, subject)
            start = time.perf_counter()
            for data in payloads:
                await nc.publish(wire, data)
            await nc.flush()
            await nc.close()
        else:
            pub = await Bus.connect(url, service="bench-pub")
            events = [_book(i) for i in range(CORE_N)]
            start = time.perf_counter()
            for ev in events:
                await pub.publish(subject, ev)
            await pub.nc.flush()
            await pub.close()
        end, cpu = map(float, (await asyncio.wait_for(child.stdout.readline(), 150)).split())
        return CORE_N / (end - start), cpu / CORE_N * 1e6
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()


async def _jetstream(url: str) -> tuple[float, float, float]:
    bus = await Bus.connect(url, service="bench-js")
    now = utcnow()
    events = [Signal(id=f"s{i}", ts_event=now, mode=Mode.SIM, family="weather", series_ticker="KXHIGHNY",
                     event_ticker="KXHIGHNY-26NOV22", ticker=f"KXHIGHNY-26NOV22-B{i % 6}", model="m",
                     model_version="1", p_model=0.6, p_market=0.5, action="buy_yes", confidence=0.8,
                     valid_until=now) for i in range(JS_N)]
    sem = asyncio.Semaphore(64)

    async def send(ev: Signal) -> None:
        async with sem:
            await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)

    start = time.perf_counter()
    await asyncio.gather(*(send(ev) for ev in events))
    published = time.perf_counter()

    got = 0
    done = asyncio.Event()

    async def handle(_: Signal) -> None:
        nonlocal got
        got += 1
        if got == JS_N:
            done.set()

    spec = ConsumerSpec(stream="SIGNALS", durable="bench", filter_subjects=("sig.>",), batch=500,
                        max_ack_pending=10_000)
    consumer = await bus.consume(spec, Signal, handle)
    await asyncio.wait_for(done.wait(), 300)
    consumed = time.perf_counter()
    await consumer.stop()
    await bus.close()
    return JS_N / (consumed - start), JS_N / (published - start), JS_N / (consumed - published)


async def run() -> dict[str, float | int]:
    """Start a private nats-server and measure."""
    async with private_nats() as url:
        core, core_cpu_us = await _core(url)
        raw = await _raw_core(url)
        between, between_cpu_us = await _core_between_processes(url, raw=False)
        between_raw, _ = await _core_between_processes(url, raw=True)
        js_total, js_pub, js_consume = await _jetstream(url)
    return {
        "bus_core_msgs_per_s": round(between),
        "bus_core_receiver_cpu_us_per_msg": round(between_cpu_us, 2),
        "bus_core_raw_nats_msgs_per_s": round(between_raw),
        "bus_core_one_process_msgs_per_s": round(core),
        "bus_core_one_process_cpu_us_per_msg": round(core_cpu_us, 2),
        "bus_core_one_process_raw_nats_msgs_per_s": round(raw),
        "bus_js_acked_msgs_per_s": round(js_total),
        "bus_js_publish_acked_msgs_per_s": round(js_pub),
        "bus_js_consume_acked_msgs_per_s": round(js_consume),
        "bus_core_n": CORE_N,
        "bus_js_n": JS_N,
    }


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--subscriber":
    asyncio.run(_subscriber(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "raw"))
