"""A thin layer over nats-py: connect, provision, typed publish, consume, commands, drain.

Delivery rules (DESIGN §4):
- JetStream publishes carry `Nats-Msg-Id` = event id, and a timed-out publish is retried with the
  same id, so the stream stores it once. A core publish carries it only where a stream keeps the
  subject's history (`md.spot.>` in MD_SPOT: a trade a venue re-sends is stored once); on subjects
  that a last-per-subject stream keeps (`md.book.>`) or that no stream keeps (heartbeats) there is
  nothing to dedupe, and the header cost a quarter of a bus_core round trip (benchmarks/codec.py).
- Durable pull consumers ack only after the handler returns. A handler that raises is `nak`ed with
  a growing delay; a message that cannot be decoded, that raises `PoisonMessage`, or that fails
  its last allowed delivery is terminated and published to `ops.alert.deadletter` first. If even
  the dead-letter publish fails, the message is `nak`ed instead: nothing is dropped silently.
- An outage is not the message's fault: a handler failing because PostgreSQL (or another socket) is away
  (`is_outage`) keeps its message in hand — `in_progress` so the server does not redeliver it — and is
  retried in place until the dependency is back, without spending the message's delivery budget; a
  database restarting again and again must not dead-letter alerts.
- Dedup protects publishing only; redelivery still happens, so handlers must be idempotent.

Modes (see `subjects`): a bus belongs to one mode and takes logical subjects (`md.book.>`); it
publishes, subscribes, consumes, provisions and answers commands only inside its mode's namespace
(`sim.md.book.>`, stream `SIM_MD_BOOKS`, bucket `control_sim`). As a second line, an event whose
envelope `mode` is not the bus's own is dropped before any handler sees it, counted in
`foreign_dropped`, logged, and alerted once per foreign mode (`ops.alert.mode_mismatch`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import orjson
import stamina
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from libs.common import codec, subjects
from libs.common.config import Mode
from libs.common.events import Alert, Event, utcnow
from libs.common.logs import get_logger, redact_text

log = get_logger(__name__)

E = TypeVar("E", bound=BaseModel)
Handler = Callable[[E], Awaitable[None]]


class BusError(RuntimeError):
    """The bus could not do what was asked (connection, provisioning, publish)."""


class TransientError(Exception):
    """Raise from a handler when a retry later may succeed (database down, exchange 5xx)."""

    def __init__(self, message: str, *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class DependencyDown(TransientError):
    """Raise from a handler when something it needs (a database, a venue) is unreachable: `is_outage`."""


# SQLSTATEs that mean the server went away or is not accepting connections yet (PostgreSQL appendix A):
# class 08 connection exception; 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now.
_OUTAGE_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")


def is_outage(e: BaseException) -> bool:
    """True when `e` (or what caused it) says a dependency is unreachable rather than that the work is bad:
    a refused or reset socket, PostgreSQL shutting down or starting up, a connection SQLAlchemy invalidated,
    a pool that could not hand out a connection. A statement timeout, a constraint violation or a deadlock
    is not an outage: those keep the normal retry budget."""
    import sqlalchemy.exc  # here, not at import: the bus is used by processes that never touch a database

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DependencyDown | ConnectionError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(cur, sqlalchemy.exc.DBAPIError) and cur.connection_invalidated:
            return True
        sqlstate = getattr(cur, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES):
            return True
        # psycopg: a connection that failed or broke client-side has no SQLSTATE at all.
        if type(cur).__module__.startswith("psycopg") and type(cur).__name__ == "OperationalError" \
                and sqlstate is None:
            return True
        orig = cur.orig if isinstance(cur, sqlalchemy.exc.DBAPIError) else None  # the driver's own error
        cur = orig if isinstance(orig, BaseException) else cur.__cause__ or cur.__context__
    return False


class PoisonMessage(Exception):
    """Raise from a handler when the message can never be processed: dead-letter it."""


class CommandError(Exception):
    """A command was refused or failed; `code` is machine-readable, the message is for the operator."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CommandUnavailable(CommandError):
    """No instance of the owning service answered."""


async def _probe(url: str, timeout: float) -> None:
    """Raise OSError unless one of the servers in `url` (comma-separated) accepts a TCP connection."""
    errors: list[str] = []
    for part in url.split(","):
        u = urlsplit(part.strip() if "://" in part else f"nats://{part.strip()}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, u.port or 4222), timeout)
        except (OSError, TimeoutError) as e:
            errors.append(f"{u.hostname}:{u.port or 4222}: {e or type(e).__name__}")
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return
    raise OSError("; ".join(errors))


def _headers(event: Event) -> dict[str, str]:
    return {api.Header.MSG_ID: event.id}


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s, strict=False))
    return len(s) == len(p) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


@functools.lru_cache(maxsize=16_384)
def keeps_history(subject: str) -> bool:
    """True when one of the design's streams keeps more than the last message of logical `subject`: there a
    core publish carries `Nats-Msg-Id`, so an event sent twice within the duplicate window is stored once."""
    return any(spec.max_msgs_per_subject != 1 and any(_matches(p, subject) for p in spec.subjects)
               for spec in subjects.STREAMS)


# --- streams and KV ----------------------------------------------------------------------------

def stream_config(spec: subjects.StreamSpec, replicas: int = 1) -> api.StreamConfig:
    """The nats-py config for one of the design's streams, with `replicas` copies (a cluster: 3)."""
    return api.StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=spec.max_age_s or None,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        duplicate_window=spec.duplicate_window_s,
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
    )


def _differs(want: api.StreamConfig, have: api.StreamConfig) -> bool:
    fields = ("subjects", "max_age", "max_msgs_per_subject", "duplicate_window", "description", "num_replicas")
    return any((getattr(want, f) or None) != (getattr(have, f) or None) for f in fields)


# --- consumers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer: every replica that uses the same `durable` shares the work."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    ack_wait_s: float = 30.0
    batch: int = 64
    fetch_timeout_s: float = 1.0
    max_ack_pending: int = 1000
    deliver_new_only: bool = False
    stall_after_s: float = 5.0  # quiet this long with work pending: look for a stuck durable (StallWatch)
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> api.ConsumerConfig:
        """The nats-py consumer config."""
        return api.ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            # One more than ours: we terminate and dead-letter on the last attempt ourselves; the
            # server's limit only catches a process that dies mid-message every time, and its
            # MAX_DELIVERIES advisory is dead-lettered by the consumer too.
            max_deliver=self.max_deliver + 1,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=api.DeliverPolicy.NEW if self.deliver_new_only else api.DeliverPolicy.ALL,
            filter_subject=self.filter_subjects[0] if len(self.filter_subjects) == 1 else None,
            filter_subjects=list(self.filter_subjects) if len(self.filter_subjects) > 1 else None,
        )

    def delay_for(self, attempt: int) -> float:
        """Redelivery delay after failed attempt number `attempt` (1-based)."""
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]


_NOT_MINE = object()  # what `_admit` returns for a message it settled itself


class _Stopped(Exception):
    """The consumer stopped while holding messages through an outage (they were nak'ed)."""


@dataclass(slots=True)
class StallWatch:
    """When a quiet pull consumer should look whether its durable is stuck, and what to do about it.

    `due()` is true once nothing has been received for `after_s` since the last look; `look()` takes the
    durable's pending count and ack floor: work pending and the floor unmoved since the previous stuck
    look escalates — first "rebind", then "recreate"; anything received or acked starts over.
    """

    after_s: float
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    _since: float | None = None
    _floor: int | None = None
    _strikes: int = 0

    def due(self) -> bool:
        now = self.clock()
        if self._since is None:
            self._since = now
        if now - self._since < self.after_s:
            return False
        self._since = now
        return True

    def received(self) -> None:
        self._since, self._floor, self._strikes = None, None, 0

    def look(self, *, pending: int, ack_floor: int) -> str | None:
        if pending <= 0 or (self._floor is not None and ack_floor != self._floor):
            self._floor, self._strikes = ack_floor, 0
            return None
        self._floor = ack_floor
        self._strikes += 1
        return {1: None, 2: "rebind"}.get(self._strikes, "recreate")


class PullConsumer:
    """Runs a typed handler over a durable pull consumer until stopped."""

    def __init__(self, bus: Bus, spec: ConsumerSpec, decoder: TypeAdapter[Any], handler: Handler[Any]) -> None:
        self.bus = bus
        self.spec = spec
        self.decoder = decoder
        self._decode = codec.decoder(decoder)
        self.handler = handler
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0
        self.recreated = 0  # times a stuck durable was recreated from its ack floor (StallWatch)
        self._recreate_from: int | None = None  # stream seq a deleted durable must be made again from
        self.held_through_outage = 0  # fetches (or messages) held while a dependency was down (is_outage)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._advisory: Subscription | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> PullConsumer:
        """Create or bind the durable, start the fetch loop and the max-deliveries watcher."""
        adv = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.spec.stream}.{self.spec.durable}"
        self._advisory = await self.bus.nc.subscribe(adv, cb=self._on_max_deliveries)
        psub = await self._subscribe()
        self._task = asyncio.create_task(self._run(psub), name=f"consumer:{self.spec.durable}")
        return self

    async def stop(self) -> None:
        """Stop fetching; the message in hand is finished first."""
        self._stop.set()
        if self._advisory is not None:
            with contextlib.suppress(Exception):
                await self._advisory.unsubscribe()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.bus.js
        cfg = self.spec.config()
        if self._recreate_from is not None:
            # A recreate deleted the durable and failed to make it again: make it from the old ack floor, not
            # from the start of the stream (that would hand every handler the whole stream once more).
            cfg.deliver_policy, cfg.opt_start_seq = api.DeliverPolicy.BY_START_SEQUENCE, self._recreate_from
        try:
            await js.add_consumer(self.spec.stream, config=cfg)
        except (nats.js.errors.BadRequestError, nats.js.errors.ServerError) as e:
            # Already exists with other settings — an older deploy, or a replica that recreated the shared
            # durable first ("deliver policy can not be updated", a 500): keep it, bind to it. Anything else
            # (no such stream) is raised.
            try:
                await js.consumer_info(self.spec.stream, self.spec.durable)
            except nats.js.errors.NotFoundError:
                raise e from None
            log.warning("consumer_config_kept", durable=self.spec.durable, error=str(e))
        psub = await js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
        self._recreate_from = None
        return psub

    async def _run(self, psub: JetStreamContext.PullSubscription) -> None:
        try:
            await self._fetch_loop(psub)
        finally:
            # A fetch's late status reply (408) can land in the inbox after the last fetch; nobody reads it
            # then, and a drain would wait its full timeout on that unread message. Leave the inbox now.
            if self._psub is not None:
                with contextlib.suppress(Exception):
                    await self._psub.unsubscribe()

    async def _fetch_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        self._psub = psub
        watch = StallWatch(self.spec.stall_after_s)
        while not self._stop.is_set():
            try:
                msgs = await psub.fetch(self.spec.batch, timeout=self.spec.fetch_timeout_s)
            except TimeoutError:  # nats' own, or asyncio's when a batch fetch times out between messages
                if watch.due():
                    psub = self._psub = await self._recovering(self._check_stall(psub, watch), psub)
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except nats.js.errors.NotFoundError:
                log.warning("consumer_missing_recreating", durable=self.spec.durable)
                psub = self._psub = await self._recovering(self._resubscribe(psub), psub)
                continue
            except Exception as e:  # reconnecting, server restarting: try again shortly
                log.warning("consumer_fetch_failed", durable=self.spec.durable, error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    psub = self._psub = await self._resubscribe(psub)
                continue
            watch.received()
            await self._handle_fetched(msgs)

    async def _recovering(self, step: Awaitable[JetStreamContext.PullSubscription],
                          psub: JetStreamContext.PullSubscription) -> JetStreamContext.PullSubscription:
        """A recovery step (stall check, rebind, recreate) whose failure must not end the fetch loop: found in the
        cluster drill, where a rebind's add_consumer timed out while a node was down and the consumer's task
        died with it, leaving the service running with nobody fetching. On failure: the old subscription (the
        next fetch fails or times out and the step is tried again), after a short pause."""
        try:
            return await step
        except Exception as e:
            log.warning("consumer_recovery_failed", durable=self.spec.durable, error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.5)
            return psub

    async def _check_stall(self, psub: JetStreamContext.PullSubscription,
                           watch: StallWatch) -> JetStreamContext.PullSubscription:
        """Nothing fetched for a while: is the durable stuck with work waiting? Then bind again, and if that
        does not help, recreate it from its ack floor.

        Seen on a three-node cluster (nats-server 2.15) when the consumer's leader dies: the new leader
        counts deliveries (`delivered` grows) but no fetch, from any client, receives a message, and a
        leader step-down does not cure it. A new consumer on the same stream delivers at once. "Stuck" is
        judged over looks `stall_after_s` apart: messages waiting undelivered, nothing received by us and
        the ack floor unmoved (so no other replica is consuming either). Recreating from the ack
        floor redelivers what was delivered but not acked — at least once, as always; handlers are
        idempotent."""
        try:
            info = await self.bus.js.consumer_info(self.spec.stream, self.spec.durable)
        except nats.js.errors.NotFoundError:
            # The durable is gone (its stream was deleted and made again): fetches on the old one only time out,
            # so nothing else would ever make it again.
            log.warning("consumer_missing_recreating", durable=self.spec.durable)
            return await self._resubscribe(psub)
        except Exception as e:  # no leader right now: look again later
            log.info("consumer_stall_check_failed", durable=self.spec.durable, error=f"{type(e).__name__}: {e}")
            return psub
        # Undelivered messages only: a message in a slow handler elsewhere is not a stall, and neither is a
        # durable held back by its own max_ack_pending.
        saturated = info.num_ack_pending >= self.spec.max_ack_pending
        verdict = watch.look(pending=0 if saturated else info.num_pending,
                             ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0)
        if verdict == "rebind":
            log.warning("consumer_stalled_rebinding", durable=self.spec.durable, pending=info.num_pending,
                        ack_pending=info.num_ack_pending)
            return await self._resubscribe(psub)
        if verdict == "recreate":
            start = (info.ack_floor.stream_seq if info.ack_floor else 0) + 1
            log.error("consumer_stalled_recreating", durable=self.spec.durable, pending=info.num_pending,
                      ack_pending=info.num_ack_pending, from_stream_seq=start)
            self.recreated += 1
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.bus.js.delete_consumer(self.spec.stream, self.spec.durable)
            self._recreate_from = start  # kept until a durable exists again (_subscribe), whatever fails next
            return await self._subscribe()
        return psub

    async def _handle_fetched(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                await self._handle(msg)
            except Exception as e:
                # Ack/nak/term could not reach the server (reconnecting). The message was not
                # acked, so the server redelivers it after ack_wait; nothing is lost.
                log.warning("consumer_ack_failed", durable=self.spec.durable, subject=msg.subject, error=str(e))

    async def _resubscribe(self, old: JetStreamContext.PullSubscription) -> JetStreamContext.PullSubscription:
        with contextlib.suppress(Exception):
            await old.unsubscribe()
        return await self._subscribe()

    async def _handle(self, msg: Msg) -> None:
        event = await self._admit(msg)
        if event is _NOT_MINE:
            return
        try:
            await self._through_outages([msg], lambda: self.handler(event))
        except PoisonMessage as e:
            await self._dead_letter(msg, "poison", str(e))
            return
        except _Stopped:
            return
        except Exception as e:
            self.failed += 1
            delay = await self._give_back(msg, e)
            if delay is not None:
                log.warning("handler_failed_will_retry", durable=self.spec.durable, subject=msg.subject,
                            attempt=msg.metadata.num_delivered, retry_in_s=delay, error=f"{type(e).__name__}: {e}")
            return
        await msg.ack()
        self.handled += 1

    async def _through_outages(self, msgs: list[Msg], call: Callable[[], Awaitable[Any]]) -> None:
        """Run `call`; while it fails with an outage, keep `msgs` in hand (in progress, so the server neither
        redelivers them nor counts a delivery) and try again with a growing delay until it succeeds, fails for
        another reason (raised: the normal budget applies), or the consumer stops (`_Stopped`, after a nak
        without delay: a replica or the next start takes them, one delivery spent)."""
        delay, since, tries = 0.2, asyncio.get_running_loop().time(), 0
        while True:
            try:
                await call()
                if tries:
                    log.info("dependency_back_handled", durable=self.spec.durable, n=len(msgs), tries=tries,
                             held_s=round(asyncio.get_running_loop().time() - since, 1))
                return
            except Exception as e:
                if not is_outage(e):
                    raise
                tries += 1
                self.held_through_outage += tries == 1
                if tries == 1 or tries % 20 == 0:
                    log.warning("dependency_down_holding", durable=self.spec.durable, n=len(msgs), tries=tries,
                                error=redact_text(f"{type(e).__name__}: {e}")[:300])
            # Ack wait restarts with each `in_progress`; the wait below stays well inside it.
            for m in msgs:
                with contextlib.suppress(Exception):  # NATS away too: redelivered after ack_wait, nothing lost
                    await m.in_progress()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(delay, self.spec.ack_wait_s / 3))
            if self._stop.is_set():
                for m in msgs:
                    with contextlib.suppress(Exception):
                        await m.nak()
                raise _Stopped
            delay = min(delay * 2, 5.0)

    async def _admit(self, msg: Msg) -> Any:
        """The message's event, or `_NOT_MINE` once a malformed (dead-lettered) or foreign (terminated)
        message has been settled."""
        try:
            event = self._decode(msg.data)
        except ValidationError as e:
            await self._dead_letter(msg, "malformed", _short(e))
            return _NOT_MINE
        if self.bus.is_foreign(event, msg.subject):
            await msg.term()  # another mode's event: never ours to act on, never worth redelivering
            return _NOT_MINE
        return event

    async def _give_back(self, msg: Msg, e: Exception) -> float | None:
        """After a failed attempt: dead-letter it on its last delivery (None), else nak it for later (the delay)."""
        attempt = msg.metadata.num_delivered
        if attempt >= self.spec.max_deliver:
            await self._dead_letter(msg, "max_deliver", f"{type(e).__name__}: {e}")
            return None
        delay = e.delay_s if isinstance(e, TransientError) and e.delay_s is not None else self.spec.delay_for(attempt)
        await msg.nak(delay=delay)
        return delay

    async def _dead_letter(self, msg: Msg, reason: str, error: str) -> None:
        md = msg.metadata
        try:
            await self.bus.dead_letter(stream=md.stream, consumer=md.consumer, seq=md.sequence.stream,
                                       subject=msg.subject, data=msg.data, reason=reason, error=error,
                                       deliveries=md.num_delivered)
        except Exception as e:
            log.error("deadletter_publish_failed_nak", subject=msg.subject, error=str(e))
            await msg.nak(delay=self.spec.backoff_s[-1])
            return
        await msg.term()
        self.dead_lettered += 1

    async def _on_max_deliveries(self, msg: Msg) -> None:
        # The server gave up on a message whose handler never answered (process died each
        # time). Fetch it by stream sequence and dead-letter it so an operator sees it.
        try:
            adv = json.loads(msg.data)
            seq = int(adv["stream_seq"])
            raw = await self.bus.js.get_msg(self.spec.stream, seq)
            await self.bus.dead_letter(stream=self.spec.stream, consumer=self.spec.durable, seq=seq,
                                       subject=raw.subject or "", data=raw.data or b"", reason="max_deliver",
                                       error="no ack after the server's maximum deliveries",
                                       deliveries=int(adv.get("deliveries", 0)))
            self.dead_lettered += 1
        except Exception as e:
            log.error("max_deliveries_advisory_unhandled", error=str(e))


class BatchPullConsumer(PullConsumer):
    """A pull consumer whose handler takes every good message of one fetch at once (one transaction for a
    burst instead of one per message). Malformed and foreign messages are settled one by one as usual;
    when the handler fails, each message of the batch is retried (or dead-lettered) on its own count."""

    async def _handle_fetched(self, msgs: list[Msg]) -> None:
        good: list[tuple[Msg, Any]] = []
        for msg in msgs:
            try:
                event = await self._admit(msg)
            except Exception as e:  # not settled: redelivered after ack_wait, nothing lost
                log.warning("consumer_ack_failed", durable=self.spec.durable, subject=msg.subject, error=str(e))
                continue
            if event is not _NOT_MINE:
                good.append((msg, event))
        if not good:
            return
        try:
            await self._through_outages([m for m, _ in good], lambda: self.handler([e for _, e in good]))
        except _Stopped:
            return
        except Exception as e:
            self.failed += len(good)
            for msg, _ in good:
                await self._settle(msg, self._give_back(msg, e))
            log.warning("batch_handler_failed_will_retry", durable=self.spec.durable, n=len(good),
                        error=f"{type(e).__name__}: {e}")
            return
        for msg, _ in good:
            await self._settle(msg, msg.ack())
        self.handled += len(good)

    async def _settle(self, msg: Msg, op: Awaitable[Any]) -> None:
        try:
            await op
        except Exception as e:  # not acked: redelivered after ack_wait, nothing lost
            log.warning("consumer_ack_failed", durable=self.spec.durable, subject=msg.subject, error=str(e))


def _typed_callback(bus: Bus, decoder: TypeAdapter[E] | type[E],
                    handler: Callable[[E], Awaitable[Any] | Any]) -> Callable[[Msg], Awaitable[None]]:
    """A nats-py callback that decodes, drops other modes' events, hands over, and logs (never raises):
    one bad message or one failing handler must not stop a subscription."""
    decode = codec.decoder(decoder)
    mine = bus.mode

    async def cb(msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except ValidationError as e:
            log.warning("malformed_message_skipped", subject=msg.subject, error=_short(e))
            return
        # Validated modes are the enum's singletons: `is` settles the usual case; anything else is judged
        # (and counted, logged, alerted) by `is_foreign`.
        if getattr(event, "mode", mine) is not mine and bus.is_foreign(event, msg.subject):
            return
        try:
            res = handler(event)
            if asyncio.iscoroutine(res):
                await res
        except Exception:
            log.exception("subscription_handler_failed", subject=msg.subject)

    return cb


def _short(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors(include_url=False))[:500]


# --- the bus -----------------------------------------------------------------------------------

class Bus:
    """A connected NATS client for one service instance."""

    def __init__(self, nc: Client, service: str, mode: Mode) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.service = service
        self.mode = mode
        self._consumers: list[PullConsumer] = []
        self._subs: list[Subscription] = []
        self._closed = asyncio.Event()
        self._closing = False
        self._prefix = subjects.scoped(mode.value, "")
        self.foreign_dropped: Counter[str] = Counter()  # events of another mode dropped, by their mode
        self._alert_tasks: set[asyncio.Task[None]] = set()

    # -- the mode's namespace --

    def wire(self, subject: str) -> str:
        """The wire subject of a logical subject in this bus's mode (`subjects.scoped`, precomputed: hot path)."""
        return self._prefix + subject

    def stream(self, name: str) -> str:
        """The physical name of one of the design's streams in this bus's mode."""
        return subjects.stream_name(self.mode.value, name)

    def is_foreign(self, event: Any, subject: str) -> bool:
        """True (and counted, logged, alerted once) when `event` carries another mode than ours."""
        mode = getattr(event, "mode", None)
        if mode is None or mode == self.mode:
            return False
        foreign = str(getattr(mode, "value", mode))
        self.foreign_dropped[foreign] += 1
        if self.foreign_dropped[foreign] == 1:
            log.error("foreign_mode_event_dropped", subject=subject, event_mode=foreign, desk_mode=self.mode.value,
                      event_id=getattr(event, "id", None))
            alert = Alert(id=f"mode_mismatch:{self.service}:{foreign}:{utcnow().timestamp():.0f}", ts_event=utcnow(),
                          mode=self.mode, family="mode_mismatch", severity="critical",
                          dedupe_key=f"mode_mismatch:{self.service}:{foreign}",
                          title=f"{self.service} ({self.mode.value}) received {foreign} data and dropped it",
                          detail=f"first on {subject}; something publishes another mode's events into this "
                                 "desk's namespace: check KDESK_MODE of every service on this NATS server",
                          data={"subject": subject, "event_mode": foreign, "event_id": getattr(event, "id", None)})
            task = asyncio.get_running_loop().create_task(self._publish_alert(alert))
            self._alert_tasks.add(task)
            task.add_done_callback(self._alert_tasks.discard)
        return True

    async def _publish_alert(self, alert: Alert) -> None:
        try:
            await self.publish_js(subjects.ops_alert(alert.family), alert)
        except Exception as e:
            log.warning("alert_publish_failed", family=alert.family, error=str(e))

    @classmethod
    async def connect(cls, url: str, *, service: str, mode: Mode = Mode.SIM, instance: str | None = None,
                      max_reconnect_attempts: int = -1, reconnect_time_wait: float = 1.0,
                      connect_timeout: float = 2.0, initial_attempts: int = 30) -> Bus:
        """Connect with a service name and a reconnect policy (forever by default).

        The first connection is retried `initial_attempts` times so that compose start-up order
        does not matter; after that the client reconnects forever and buffers core publishes.
        """
        holder: dict[str, Bus] = {}

        async def on_error(e: Exception) -> None:
            log.warning("nats_error", error=redact_text(str(e)))

        async def on_disconnected() -> None:
            if "bus" in holder and not holder["bus"]._closing:
                log.warning("nats_disconnected")

        async def on_reconnected() -> None:
            log.info("nats_reconnected", server=redact_text(str(nc.connected_url.netloc if nc.connected_url else "")))

        async def on_closed() -> None:
            if "bus" in holder:
                holder["bus"]._closed.set()

        name = f"kdesk-{service}" + (f"-{instance}" if instance else "")
        # nats-py retries the *first* connect inside its reconnect loop, forever with
        # max_reconnect_attempts=-1, so an unreachable server would hang us silently. Probe the
        # TCP port ourselves for the initial attempts, then hand over to nats-py's reconnect.
        # stamina logs each retry (`stamina.retry_scheduled`); the probe's error names the host and port.
        unreachable = (OSError, nats.errors.NoServersError, TimeoutError)
        try:
            async for attempt in stamina.retry_context(on=unreachable, attempts=max(1, initial_attempts), timeout=None,
                                                       wait_initial=0.2, wait_max=2.0, wait_jitter=0.2):
                with attempt:
                    await _probe(url, connect_timeout)
                    # Several servers (a cluster) as one comma-separated URL: nats-py wants them as a list.
                    nc = await nats.connect(
                        [u.strip() for u in url.split(",") if u.strip()], name=name, allow_reconnect=True,
                        max_reconnect_attempts=max_reconnect_attempts,
                        reconnect_time_wait=reconnect_time_wait, connect_timeout=connect_timeout,
                        error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
                        closed_cb=on_closed,
                    )
        except unreachable as e:
            raise BusError(f"cannot connect to NATS at {redact_text(url)}: {redact_text(str(e)) or type(e).__name__}; "
                           "is it running? (set KDESK_NATS_URL or use `make run` for an embedded server)") from e
        bus = cls(nc, service, mode)
        holder["bus"] = bus
        return bus

    # -- provisioning --

    async def provision(self, streams: Sequence[subjects.StreamSpec] = subjects.STREAMS, *, replicas: int = 1) -> None:
        """Create or update this mode's streams and `control` KV bucket (`replicas` copies each); safe to repeat."""
        for spec in streams:
            spec = self.scoped_stream(spec)
            want = stream_config(spec, replicas)
            try:
                info = await self.js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(want)
                log.info("stream_created", stream=spec.name)
                continue
            if _differs(want, info.config):
                await self.js.update_stream(want)
                log.info("stream_updated", stream=spec.name)
        bucket = subjects.control_bucket(self.mode.value)
        try:
            await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            await self.js.create_key_value(bucket=bucket, history=10, replicas=replicas,
                                           description=f"desk control ({self.mode.value}): "
                                                       "paused, mode, live arming, family switches")
            log.info("kv_created", bucket=bucket)

    def scoped_stream(self, spec: subjects.StreamSpec) -> subjects.StreamSpec:
        """One of the design's streams as it exists in this mode (name and subjects in its namespace)."""
        return replace(spec, name=self.stream(spec.name), subjects=tuple(self.wire(s) for s in spec.subjects),
                       description=f"[{self.mode.value}] {spec.description}")

    async def control(self) -> KeyValue:
        """This mode's `control` KV bucket (provisioned)."""
        return await self.js.key_value(subjects.control_bucket(self.mode.value))

    # -- publishing --

    async def publish(self, subject: str, event: Event) -> None:
        """Core NATS publish (at most once; for the hot path and heartbeats); `Nats-Msg-Id` only where a stream
        keeps the subject's history (`keeps_history`)."""
        await self.nc.publish(self.wire(subject), codec.encode(event),
                              headers=_headers(event) if keeps_history(subject) else None)

    async def publish_js(self, subject: str, event: Event, *, timeout: float = 5.0, attempts: int = 5) -> api.PubAck:
        """JetStream publish with `Nats-Msg-Id` = event id, retried with the same id until acked."""
        data = codec.encode(event)
        subject = self.wire(subject)
        unacked = (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError,
                   nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError)
        try:
            # Bound for stamina's `stamina.retry_scheduled` lines, which otherwise name only the nats error.
            with structlog.contextvars.bound_contextvars(subject=subject, event_id=event.id):
                async for attempt in stamina.retry_context(on=unacked, attempts=attempts, timeout=None,
                                                           wait_initial=0.2, wait_max=3.0, wait_jitter=0.2):
                    with attempt:
                        return await self.js.publish(subject, data, timeout=timeout, headers=_headers(event))
        except unacked as e:
            raise BusError(f"JetStream publish to {subject} not acknowledged after {attempts} attempts: {e}") from e
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def dead_letter(self, *, stream: str, consumer: str, seq: int, subject: str, data: bytes, reason: str,
                          error: str, deliveries: int) -> None:
        """Publish a message we are giving up on to `ops.alert.deadletter`, with its payload."""
        try:
            payload: dict[str, Any] = {"text": data.decode()[:65536]}
        except UnicodeDecodeError:
            payload = {"base64": base64.b64encode(data[:65536]).decode()}
        alert = Alert(
            id=f"deadletter:{stream}:{seq}", ts_event=utcnow(), mode=self.mode, family="deadletter",
            severity="warning", dedupe_key=f"deadletter:{stream}:{seq}",
            title=f"message dead-lettered by {consumer}: {reason}", detail=error[:2000],
            data={"stream": stream, "consumer": consumer, "stream_seq": seq, "subject": subject,
                  "deliveries": deliveries, "reason": reason, **payload},
        )
        log.error("message_dead_lettered", stream=stream, consumer=consumer, seq=seq, subject=subject,
                  reason=reason, error=error[:500])
        await self.publish_js(subjects.DEADLETTER, alert)

    # -- consuming --

    async def subscribe(self, subject: str, decoder: TypeAdapter[E] | type[E], handler: Handler[E], *,
                        queue: str = "") -> Subscription:
        """Callback subscription (core NATS) for the hot path; malformed messages are logged and skipped."""
        sub = await self.nc.subscribe(self.wire(subject), queue=queue, cb=_typed_callback(self, decoder, handler))
        self._subs.append(sub)
        return sub

    async def follow(self, subject: str, decoder: type[E], handler: Callable[[E], Awaitable[Any] | Any], *,
                     replay_last: bool) -> Any:
        """Hand every decoded message on `subject` to `handler` (malformed ones are logged and skipped).

        `replay_last`: an ordered JetStream consumer that starts with the last message of every subject
        and then follows live ones (last-value data: market definitions, books, forecasts); otherwise a
        core NATS subscription (the hot path). A failing handler is logged; the stream goes on.
        """
        if not replay_last:
            return await self.subscribe(subject, decoder, handler)
        # A fresh config each time: nats-py writes the filter subject into the config object it is given.
        return await self.js.subscribe(self.wire(subject), cb=_typed_callback(self, decoder, handler),
                                       ordered_consumer=True,
                                       config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT))

    async def replay_last(self, subject: str, decoder: type[E], handler: Callable[[E], Awaitable[Any] | Any], *,
                          batch: int = 256, timeout_s: float = 5.0) -> int:
        """Hand the last stored message of every subject matching `subject` to `handler` once; the count.

        For a hot path that follows core NATS live and needs the last values once at start: subscribe
        (core) first, then replay, and let the handler ignore what is older than what it holds. The
        ephemeral consumer is deleted afterwards, so nothing arrives twice from JetStream.
        """
        cb = _typed_callback(self, decoder, handler)
        psub = await self.js.pull_subscribe(self.wire(subject), config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0, mem_storage=True))
        n = 0
        try:
            pending = (await psub.consumer_info()).num_pending
            while pending > 0:
                msgs = await psub.fetch(min(batch, pending), timeout=timeout_s)
                for m in msgs:
                    await cb(m)
                    n += 1
                    pending = m.metadata.num_pending
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        return n

    async def consume(self, spec: ConsumerSpec, decoder: TypeAdapter[E] | type[E], handler: Handler[E]) -> PullConsumer:
        """Start a durable pull consumer loop (see module doc for the ack policy)."""
        adapter = decoder if isinstance(decoder, TypeAdapter) else TypeAdapter(decoder)
        consumer = await PullConsumer(self, self._scoped_spec(spec), adapter, handler).start()
        self._consumers.append(consumer)
        return consumer

    async def consume_batches(self, spec: ConsumerSpec, decoder: TypeAdapter[E] | type[E],
                              handler: Callable[[list[E]], Awaitable[None]]) -> PullConsumer:
        """Like `consume`, but `handler` gets each fetch's good events as one list (see BatchPullConsumer)."""
        adapter = decoder if isinstance(decoder, TypeAdapter) else TypeAdapter(decoder)
        consumer = await BatchPullConsumer(self, self._scoped_spec(spec), adapter, handler).start()
        self._consumers.append(consumer)
        return consumer

    def _scoped_spec(self, spec: ConsumerSpec) -> ConsumerSpec:
        # The durable lives on this mode's stream: a paper and a live executor never split each other's signals.
        return replace(spec, stream=self.stream(spec.stream),
                       filter_subjects=tuple(map(self.wire, spec.filter_subjects)))

    # -- commands --

    async def serve(self, service: str, verb: str, handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> Subscription:
        """Answer `cmd.<service>.<verb>` requests (one replica answers: queue group per service)."""

        async def cb(msg: Msg) -> None:
            try:
                request = orjson.loads(msg.data) if msg.data else {}
                if not isinstance(request, dict):
                    raise CommandError("bad_request", "the request body must be a JSON object")
                reply: dict[str, Any] = {"ok": True, "data": await handler(request)}
            except CommandError as e:
                reply = {"ok": False, "error": {"code": e.code, "message": str(e)}}
            except orjson.JSONDecodeError:
                reply = {"ok": False, "error": {"code": "bad_request", "message": "the request is not JSON"}}
            except Exception as e:
                log.exception("command_failed", service=service, verb=verb)
                reply = {"ok": False, "error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}}
            if msg.reply:
                await msg.respond(orjson.dumps(to_jsonable_python(reply)))

        sub = await self.nc.subscribe(self.wire(subjects.cmd(service, verb)), queue=f"cmd-{subjects.token(service)}",
                                      cb=cb)
        self._subs.append(sub)
        return sub

    async def request(self, service: str, verb: str, payload: dict[str, Any] | None = None, *,
                      timeout: float = 5.0) -> Any:
        """Send a command and return its data, or raise `CommandError` with the service's reason."""
        subject = self.wire(subjects.cmd(service, verb))
        try:
            msg = await self.nc.request(subject, orjson.dumps(to_jsonable_python(payload or {})), timeout=timeout)
        except nats.errors.NoRespondersError:
            raise CommandUnavailable("unavailable", f"no {service} instance is running in {self.mode.value} mode to "
                                     f"answer '{verb}'{await self._elsewhere(service)}") from None
        except nats.errors.TimeoutError:
            raise CommandUnavailable("timeout", f"{service} did not answer '{verb}' within {timeout:.0f} s") from None
        reply = orjson.loads(msg.data)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise CommandError(err.get("code", "failed"), err.get("message", "command failed"))
        return reply.get("data")

    async def _elsewhere(self, service: str) -> str:
        """A hint naming the modes in which `service` does run (NATS service API pings carry the mode)."""
        from libs.common.health import service_api_name  # health builds on the bus

        inbox = self.nc.new_inbox()
        modes: set[str] = set()

        async def on_pong(msg: Msg) -> None:
            with contextlib.suppress(Exception):
                modes.add(str(orjson.loads(msg.data).get("metadata", {}).get("mode")))

        sub = await self.nc.subscribe(inbox, cb=on_pong)
        try:
            await self.nc.publish(f"$SRV.PING.{service_api_name(service)}", b"", reply=inbox)
            await asyncio.sleep(0.3)
        finally:
            await sub.unsubscribe()
        others = sorted(modes - {self.mode.value, "None"})
        return f" ({service} runs in {', '.join(others)} mode: set KDESK_MODE={others[0]})" if others else ""

    # -- shutdown --

    async def drain(self) -> None:
        """Stop consumers (finishing the message in hand), then drain subscriptions and close."""
        self._closing = True
        for c in self._consumers:
            await c.stop()
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    async def close(self) -> None:
        """Close without draining (tests, fatal errors)."""
        self._closing = True
        for c in self._consumers:
            c._stop.set()
        if not self.nc.is_closed:
            await self.nc.close()
        for c in self._consumers:
            if c._task is not None:
                c._task.cancel()
                with contextlib.suppress(BaseException):
                    await c._task
