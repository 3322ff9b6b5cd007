"""The bus against a real nats-server: provisioning, dedupe, acks, dead letters, work sharing, KV, reconnect."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.js.errors
import psycopg
import psycopg.errors
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import subjects
from libs.common.bus import (
    Bus,
    CommandError,
    CommandUnavailable,
    ConsumerSpec,
    PoisonMessage,
    TransientError,
    is_outage,
)
from libs.common.config import Mode
from libs.common.db.engine import create_engine
from libs.common.embedded import EmbeddedNats
from libs.common.events import Alert, Signal
from tests.kit.factories import signal_event


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until true (tests wait on conditions, never fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, service="test", mode=Mode.SIM)
    await b.provision()
    yield b
    await b.close()


def sig_spec(durable: str, **kw: object) -> ConsumerSpec:
    return ConsumerSpec(stream="SIGNALS", durable=durable, filter_subjects=("sig.>",), fetch_timeout_s=0.2,
                        backoff_s=(0.05, 0.1, 0.2), **kw)  # type: ignore[arg-type]


async def dead_letters(bus: Bus) -> list[Alert]:
    """Every alert stored on the dead-letter subject."""
    out: list[Alert] = []
    info = await bus.js.stream_info(bus.stream("OPS"))
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await bus.js.get_msg(bus.stream("OPS"), seq)
        except nats.js.errors.NotFoundError:
            continue
        if raw.subject == bus.wire(subjects.DEADLETTER):
            out.append(Alert.model_validate_json(raw.data))
    return out


async def test_provision_is_idempotent_and_creates_design_streams(bus: Bus) -> None:
    await bus.provision()  # second time: nothing to change, no error
    names = {s.config.name for s in await bus.js.streams_info()}
    assert {f"SIM_{s.name}" for s in subjects.STREAMS} <= names
    books = await bus.js.stream_info("SIM_MD_BOOKS")
    assert books.config.max_msgs_per_subject == 1
    assert books.config.subjects == ["sim.md.book.>"]
    kv = await bus.control()
    await kv.put(subjects.ControlKey.PAUSED, b"false")
    assert (await kv.get(subjects.ControlKey.PAUSED)).value == b"false"


async def test_provision_updates_a_stream_whose_config_drifted(bus: Bus) -> None:
    from libs.common.bus import stream_config

    drifted = stream_config(bus.scoped_stream(subjects.STREAMS[0]))
    drifted.max_msgs_per_subject = 5
    await bus.js.update_stream(drifted)
    await bus.provision()
    info = await bus.js.stream_info(bus.stream(subjects.STREAMS[0].name))
    assert info.config.max_msgs_per_subject == 1


async def test_jetstream_dedupes_by_event_id(bus: Bus) -> None:
    ev = signal_event()
    subject = subjects.sig("weather", ev.series_ticker, ev.ticker)
    first = await bus.publish_js(subject, ev)
    again = await bus.publish_js(subject, ev)
    assert not first.duplicate
    assert again.duplicate
    assert (await bus.js.stream_info(bus.stream("SIGNALS"))).state.messages == 1
    other = await bus.publish_js(subject, signal_event())
    assert not other.duplicate
    assert (await bus.js.stream_info(bus.stream("SIGNALS"))).state.messages == 2


async def test_redelivery_after_handler_failure_then_ack(bus: Bus) -> None:
    attempts: Counter[str] = Counter()
    done: list[str] = []

    async def handler(ev: Signal) -> None:
        attempts[ev.id] += 1
        if attempts[ev.id] == 1:
            raise TransientError("database briefly unavailable", delay_s=0.05)
        done.append(ev.id)

    consumer = await bus.consume(sig_spec("redeliver"), Signal, handler)
    ev = signal_event()
    await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: done == [ev.id], what="second delivery")
    assert attempts[ev.id] == 2
    await consumer.stop()
    info = await bus.js.consumer_info(bus.stream("SIGNALS"), "redeliver")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert await dead_letters(bus) == []


async def test_poison_and_malformed_messages_are_dead_lettered_with_payload(bus: Bus) -> None:
    seen: list[str] = []

    async def handler(ev: Signal) -> None:
        if ev.ticker.endswith("POISON"):
            raise PoisonMessage("references a market that does not exist")
        seen.append(ev.ticker)

    consumer = await bus.consume(sig_spec("poison"), Signal, handler)
    await bus.nc.publish(bus.wire("sig.weather.kxhighny.garbage"), b'{"not": "a signal"}')
    bad = signal_event("KXHIGHNY-26NOV22-POISON")
    good = signal_event("KXHIGHNY-26NOV22-B65.5")
    for ev in (bad, good):
        await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: consumer.dead_lettered == 2 and seen == [good.ticker], what="two dead letters")
    letters = await dead_letters(bus)
    reasons = sorted(a.data["reason"] for a in letters)
    assert reasons == ["malformed", "poison"]
    poison = next(a for a in letters if a.data["reason"] == "poison")
    assert json.loads(poison.data["text"])["ticker"] == bad.ticker
    assert poison.data["subject"] == bus.wire(subjects.sig("weather", "KXHIGHNY", bad.ticker))
    await consumer.stop()


async def test_batch_consumer_hands_over_a_fetch_at_once_and_retries_a_failed_batch(bus: Bus) -> None:
    batches: list[list[str]] = []
    failed_once: list[bool] = []

    async def handler(evs: list[Signal]) -> None:
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("database briefly unavailable")
        batches.append([e.ticker for e in evs])

    evs = [signal_event(f"KXHIGHNY-26NOV22-B{60 + i}.5") for i in range(5)]
    await bus.nc.publish(bus.wire("sig.weather.kxhighny.garbage"), b'{"not": "a signal"}')
    for ev in evs:
        await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    consumer = await bus.consume_batches(sig_spec("batches"), Signal, handler)
    want = sorted(e.ticker for e in evs)
    await wait_until(lambda: sorted(t for b in batches for t in b) == want, what="every signal, after one retry")
    assert failed_once and consumer.dead_lettered == 1 and consumer.handled == 5
    assert len(batches[0]) > 1, "a fetch arrives as one batch"
    assert [a.data["reason"] for a in await dead_letters(bus)] == ["malformed"]
    await consumer.stop()
    info = await bus.js.consumer_info(bus.stream("SIGNALS"), "batches")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_message_failing_every_attempt_is_dead_lettered_after_max_deliver(bus: Bus) -> None:
    calls: list[int] = []

    async def handler(ev: Signal) -> None:
        calls.append(1)
        raise RuntimeError("bug in handler")

    consumer = await bus.consume(sig_spec("always-fails", max_deliver=3), Signal, handler)
    ev = signal_event()
    await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: consumer.dead_lettered == 1, what="dead letter after max_deliver")
    assert len(calls) == 3
    [letter] = await dead_letters(bus)
    assert letter.data["reason"] == "max_deliver" and letter.data["deliveries"] == 3
    assert "bug in handler" in letter.detail
    await consumer.stop()


async def test_two_consumers_sharing_a_durable_split_work_without_duplicates(nats_url: str, bus: Bus) -> None:
    other = await Bus.connect(nats_url, service="test-2", mode=Mode.SIM)
    processed: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[Signal], Awaitable[None]]:
        async def handle(ev: Signal) -> None:
            processed[name].append(ev.id)
            await asyncio.sleep(0.001)  # give the other replica a chance to fetch

        return handle

    spec = sig_spec("shared", batch=5)
    ca = await bus.consume(spec, Signal, handler_for("a"))
    cb = await other.consume(spec, Signal, handler_for("b"))
    events = [signal_event(f"KXHIGHNY-26NOV22-B{i}") for i in range(300)]
    for ev in events:
        await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: len(processed["a"]) + len(processed["b"]) >= len(events), what="all processed")
    await asyncio.sleep(0.3)  # any duplicate delivery would arrive now
    every = processed["a"] + processed["b"]
    assert len(every) == len(events)
    assert set(every) == {e.id for e in events}
    assert processed["a"] and processed["b"], "both replicas should have taken work"
    await ca.stop()
    await cb.stop()
    await other.close()


async def test_kv_compare_and_set(bus: Bus) -> None:
    kv = await bus.control()
    rev = await kv.put(subjects.ControlKey.MODE, b"sim")
    new_rev = await kv.update(subjects.ControlKey.MODE, b"paper", last=rev)
    assert new_rev > rev
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.update(subjects.ControlKey.MODE, b"live", last=rev)  # stale revision loses
    assert (await kv.get(subjects.ControlKey.MODE)).value == b"paper"
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.create(subjects.ControlKey.MODE, b"x")  # create only if absent


async def test_commands_request_reply(bus: Bus) -> None:
    async def status(req: dict[str, object]) -> dict[str, object]:
        if req.get("boom"):
            raise CommandError("refused", "not while paused")
        return {"paused": False, "echo": req.get("x")}

    await bus.serve("executor", "status", status)
    assert await bus.request("executor", "status", {"x": 7}) == {"paused": False, "echo": 7}
    with pytest.raises(CommandError) as err:
        await bus.request("executor", "status", {"boom": True})
    assert err.value.code == "refused" and "not while paused" in str(err.value)
    with pytest.raises(CommandUnavailable) as gone:
        await bus.request("resolver", "status", timeout=1)
    assert "no resolver instance is running in sim mode" in str(gone.value)


async def test_hot_path_subscription_skips_malformed_and_keeps_going(bus: Bus) -> None:
    got: list[str] = []

    async def on_sig(ev: Signal) -> None:
        got.append(ev.ticker)

    await bus.subscribe("sig.>", Signal, on_sig)
    await bus.nc.publish(bus.wire("sig.weather.x.y"), b"{broken json")
    ev = signal_event()
    await bus.publish(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: got == [ev.ticker], what="valid message after a malformed one")


@pytest.mark.slow
async def test_reconnect_after_nats_server_restart(private_nats: EmbeddedNats) -> None:
    bus = await Bus.connect(private_nats.url, service="test", mode=Mode.SIM, reconnect_time_wait=0.2)
    await bus.provision()
    done: list[str] = []

    async def handler(ev: Signal) -> None:
        done.append(ev.ticker)

    consumer = await bus.consume(sig_spec("survivor"), Signal, handler)
    before = signal_event("KXHIGHNY-26NOV22-B60.5")
    await bus.publish_js(subjects.sig("weather", "KXHIGHNY", before.ticker), before)
    await wait_until(lambda: done == [before.ticker], what="delivery before restart")

    private_nats.kill()
    await wait_until(lambda: not bus.nc.is_connected, what="client noticing the outage")
    restarted = EmbeddedNats(private_nats.store_dir, port=private_nats.port).start()
    try:
        await wait_until(lambda: bus.nc.is_connected, timeout=20, what="reconnect")
        after = signal_event("KXHIGHNY-26NOV22-B62.5")
        await bus.publish_js(subjects.sig("weather", "KXHIGHNY", after.ticker), after)
        await wait_until(lambda: done == [before.ticker, after.ticker], timeout=20, what="delivery after restart")
        await consumer.stop()
        await bus.close()
    finally:
        restarted.stop()


async def test_a_stuck_durable_is_found_and_cured_without_losing_a_message(bus: Bus) -> None:
    """A durable that holds undelivered work but delivers nothing (here: paused on the server, the shape
    nats-server 2.15 leaves after a consumer leader dies) is rebound, then recreated from its ack floor."""
    got: list[str] = []

    async def handle(ev: Signal) -> None:
        got.append(ev.id)

    spec = sig_spec("stuck", stall_after_s=0.3)
    consumer = await bus.consume(spec, Signal, handle)
    first = signal_event("KXHIGHNY-26NOV22-B1")
    await bus.publish_js(subjects.sig("weather", first.series_ticker, first.ticker), first)
    await wait_until(lambda: got == [first.id], what="the first message")
    pause = {"pause_until": "2099-01-01T00:00:00Z"}
    await bus.nc.request(f"$JS.API.CONSUMER.PAUSE.{bus.stream('SIGNALS')}.stuck", json.dumps(pause).encode())
    rest = [signal_event(f"KXHIGHNY-26NOV22-B{i}") for i in range(2, 12)]
    for ev in rest:
        await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    await wait_until(lambda: set(got) >= {e.id for e in rest}, timeout=15, what="the stuck messages delivered")
    assert consumer.recreated == 1  # rebinding does not lift a pause; recreating from the ack floor does
    assert Counter(got)[first.id] == 1  # acked before the stall: not delivered again
    await consumer.stop()


def refusing_database() -> AsyncEngine:
    """An engine whose server refuses connections: a port nothing listens on (the real driver's real error)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return create_engine(f"postgresql://kdesk:pw@127.0.0.1:{port}/kdesk", connect_args={"connect_timeout": 2})


@pytest.mark.parametrize("batches", [False, True])
async def test_a_database_outage_holds_messages_without_spending_their_delivery_budget(bus: Bus,
                                                                                    batches: bool) -> None:
    """PostgreSQL away for longer than max_deliver attempts (seen in the fault campaign: alerts dead-lettered
    after a database restarting again and again): the message waits in hand, then is handled once."""
    engine, down = refusing_database(), [8]
    handled: list[str] = []

    async def work(tickers: list[str]) -> None:
        if down[0] > 0:
            down[0] -= 1
            async with engine.connect() as conn:  # raises: connection refused
                await conn.execute(sa.text("select 1"))
        handled.extend(tickers)

    ev = signal_event()
    await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    spec = sig_spec(f"outage-{batches}", max_deliver=3, ack_wait_s=2.0)
    if batches:
        consumer = await bus.consume_batches(spec, Signal, lambda evs: work([e.ticker for e in evs]))
    else:
        consumer = await bus.consume(spec, Signal, lambda e: work([e.ticker]))
    await wait_until(lambda: bool(handled), timeout=30, what="the message, once the database is back")
    await consumer.stop()
    await engine.dispose()
    assert handled == [ev.ticker] and down[0] == 0
    assert consumer.dead_lettered == 0 and consumer.held_through_outage == 1 and consumer.failed == 0
    assert await dead_letters(bus) == []
    info = await bus.js.consumer_info(bus.stream("SIGNALS"), spec.durable)
    # Held past its 2 s ack wait by in_progress, never redelivered.
    assert info.num_redelivered == 0 and info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_consumer_stopped_during_an_outage_hands_its_message_back_at_once(bus: Bus) -> None:
    engine = refusing_database()

    async def never_reaches_the_database(_: Signal) -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))

    ev = signal_event()
    await bus.publish_js(subjects.sig("weather", ev.series_ticker, ev.ticker), ev)
    spec = sig_spec("outage-stop", max_deliver=3)
    first = await bus.consume(spec, Signal, never_reaches_the_database)
    await wait_until(lambda: first.held_through_outage == 1, what="held")
    await first.stop()
    await engine.dispose()
    got: list[str] = []

    async def ok(e: Signal) -> None:
        got.append(e.id)

    second = await bus.consume(spec, Signal, ok)
    await wait_until(lambda: got == [ev.id], timeout=5, what="redelivered without waiting for the ack wait")
    await second.stop()
    assert first.dead_lettered == 0 and await dead_letters(bus) == []


def test_outages_are_told_from_bad_work() -> None:
    """What holds a message (the server is away) and what spends its budget (the statement is the problem)."""
    def wrapped(err: Exception) -> Exception:
        return sa.exc.OperationalError("select 1", {}, err)

    assert is_outage(wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")))
    assert is_outage(wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")))
    assert is_outage(wrapped(psycopg.OperationalError("connection failed: Connection refused")))
    assert not is_outage(TransientError("exchange 5xx"))
    try:
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as e:
            raise RuntimeError("write failed") from e
    except RuntimeError as e:
        assert is_outage(e)
    assert not is_outage(wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")))
    assert not is_outage(sa.exc.IntegrityError("insert", {}, psycopg.errors.UniqueViolation("duplicate key")))
    assert not is_outage(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert not is_outage(RuntimeError("bug in handler"))


async def test_a_consumer_whose_recovery_fails_keeps_trying_instead_of_dying(bus: Bus) -> None:
    """Its durable vanishes and recreating it fails too (here: the stream is gone; in the cluster drill: the
    add_consumer timed out while a node was down). The fetch loop must survive, and once the stream is back
    (fetches on the vanished durable then only time out) make the durable again and go on."""
    got: list[str] = []

    async def handle(e: Signal) -> None:
        got.append(e.id)

    consumer = await bus.consume(sig_spec("survivor", stall_after_s=0.5), Signal, handle)
    first = signal_event()
    await bus.publish_js(subjects.sig("weather", first.series_ticker, first.ticker), first)
    await wait_until(lambda: got == [first.id], what="the first signal")
    await bus.js.delete_stream(bus.stream("SIGNALS"))
    await asyncio.sleep(2.0)  # fetches fail, the durable cannot be made again: the loop must not end
    assert consumer._task is not None and not consumer._task.done(), "the consumer's fetch loop died"
    await bus.provision()
    second = signal_event()
    await bus.publish_js(subjects.sig("weather", second.series_ticker, second.ticker), second)
    await wait_until(lambda: got == [first.id, second.id], timeout=20, what="the signal after the stream came back")
    await consumer.stop()
