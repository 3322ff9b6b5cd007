"""Mode isolation and freshness over a real NATS server: one mode never sees another's data, an event of
another mode is dropped and counted, and a replayed book is as old as its own timestamp says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.js.errors
import pytest

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.events import Alert, BookUpdate, Signal
from tests.integration.test_executor import mm_quotes
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings, executor, publish_definitions, send_signal, signal
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig

T = TICKERS[2]


def book(mode: Mode, ts: datetime, seq: int = 1) -> BookUpdate:
    return BookUpdate(ts_event=ts, mode=mode, ticker=T, series_ticker=SERIES, seq=seq,
                      yes_bids=((3_000, 10_000),), no_bids=((6_600, 10_000),))


async def test_a_paper_desk_replays_and_hears_nothing_a_sim_desk_published(nats_url: str) -> None:
    sim = await Bus.connect(nats_url, service="feeds", mode=Mode.SIM)
    paper = await Bus.connect(nats_url, service="executor", mode=Mode.PAPER)
    try:
        await sim.provision()
        await paper.provision()
        await sim.publish_js(subjects.md_book(SERIES, T), book(Mode.SIM, datetime.now(UTC)))
        sim_kv, paper_kv = await sim.control(), await paper.control()
        await sim_kv.put(subjects.ControlKey.PAUSED, b"true")

        heard: dict[str, list[Any]] = {"paper": [], "sim": []}
        await paper.follow("md.book.>", BookUpdate, heard["paper"].append, replay_last=True)
        await paper.follow("md.book.>", BookUpdate, heard["paper"].append, replay_last=False)
        await sim.follow("md.book.>", BookUpdate, heard["sim"].append, replay_last=True)
        await until(lambda: len(heard["sim"]) == 1, what="the sim bus replays its own book")
        await sim.publish(subjects.md_book(SERIES, T), book(Mode.SIM, datetime.now(UTC), seq=2))
        await until(lambda: len(heard["sim"]) == 2, what="the sim bus hears its live book")
        await paper.nc.flush()
        assert heard["paper"] == []  # neither the replay nor the live message crossed over
        assert (await sim_kv.get(subjects.ControlKey.PAUSED)).value == b"true"
        with pytest.raises(nats.js.errors.KeyNotFoundError):  # pausing sim does not pause paper
            await paper_kv.get(subjects.ControlKey.PAUSED)

        # A shared durable name is still one durable per mode: each mode gets its own signals, all of them.
        from libs.common.bus import ConsumerSpec

        spec = ConsumerSpec(stream="SIGNALS", durable="executor", filter_subjects=("sig.>",), fetch_timeout_s=0.2)
        got: dict[str, list[str]] = {"sim": [], "paper": []}

        async def on(name: str, s: Signal) -> None:
            got[name].append(s.id)

        await sim.consume(spec, Signal, lambda s: on("sim", s))
        await paper.consume(spec, Signal, lambda s: on("paper", s))
        for i in range(4):
            s = signal(T, EVENT, SERIES, 0.5, sid=f"s{i}")
            await sim.publish_js(subjects.sig("weather", SERIES, T), s)
            await paper.publish_js(subjects.sig("weather", SERIES, T), s.model_copy(update={"mode": Mode.PAPER}))
        await until(lambda: len(got["sim"]) == 4 and len(got["paper"]) == 4, what="each mode's four signals")
    finally:
        await sim.close()
        await paper.close()


async def test_an_event_of_another_mode_on_our_subject_is_dropped_counted_and_alerted_once(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="signals", mode=Mode.SIM)
    intruder = await Bus.connect(nats_url, service="raw", mode=Mode.SIM)
    try:
        await bus.provision()
        books: list[BookUpdate] = []
        alerts: list[Alert] = []
        await bus.follow("md.book.>", BookUpdate, books.append, replay_last=False)
        await bus.follow("ops.alert.>", Alert, alerts.append, replay_last=False)
        await bus.nc.flush()
        for seq in (1, 2, 3):  # a misconfigured publisher: paper payloads on the sim subjects
            await intruder.nc.publish(bus.wire(subjects.md_book(SERIES, T)), book(Mode.PAPER, datetime.now(UTC),
                                                                                 seq).to_json())
        await intruder.publish(subjects.md_book(SERIES, T), book(Mode.SIM, datetime.now(UTC), 4))
        await until(lambda: len(books) == 1 and bus.foreign_dropped["paper"] == 3, what="three dropped, one kept")
        assert books[0].seq == 4
        await until(lambda: len(alerts) == 1, what="one alert")
        await asyncio.sleep(0.3)
        assert len(alerts) == 1 and alerts[0].family == "mode_mismatch" and alerts[0].severity == "critical"
        assert alerts[0].data["event_mode"] == "paper"
    finally:
        await bus.close()
        await intruder.close()


async def test_a_replayed_book_older_than_the_limit_is_declined_as_stale_book(nats_url: str, db_url: str) -> None:
    async with sim_rig() as rig:
        mm_quotes(rig, T, 3000, 3400)
        bus = await Bus.connect(nats_url, service="feeds-test", mode=Mode.SIM)
        await bus.provision()
        await publish_definitions(bus, rig, TICKERS)
        # Left in JetStream by a session ten minutes ago; it arrives now, by replay.
        yes, no = rig.exchange.engine.book(T)
        old = BookUpdate(ts_event=datetime.now(UTC) - timedelta(minutes=10), mode=Mode.SIM, ticker=T,
                         series_ticker=SERIES, seq=1, yes_bids=tuple(yes), no_bids=tuple(no))
        await bus.publish_js(subjects.md_book(SERIES, T), old)
        async with executor(rig, nats_url, db_url, settings=desk_settings()) as ex:
            await until(lambda: ex.markets.get(T) is not None and ex.markets.get(T).book is not None,
                        what="replayed book")
            status = await bus.request("executor", "status")
            assert status["waiting_for_fresh_data"] is True and status["fresh_books"] == 0
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55, sid="on-a-replayed-book"))
            await until(lambda: ex.desk.decisions.get("stale_book", 0) >= 1, what="declined as stale_book")
            assert not rig.exchange.engine.resting_ids("desk")
            assert ex.orders.sent == 0
            # Fresh data arrives: the same desk trades.
            fresh = old.model_copy(update={"id": "fresh", "ts_event": datetime.now(UTC), "seq": 2})
            await bus.publish(subjects.md_book(SERIES, T), fresh)
            await until(lambda: ex.markets.get(T).book.id == "fresh", what="fresh book")
            assert (await bus.request("executor", "status"))["waiting_for_fresh_data"] is False
            await send_signal(bus, signal(T, EVENT, SERIES, 0.55, sid="on-a-fresh-book"))
            await until(lambda: rig.exchange.engine.resting_ids("desk", T), what="an order on fresh data")
        await bus.close()
