"""What a hot event costs to encode and decode, path by path, and where a bus_core round trip spends its time.

`python -m benchmarks.codec` prints two tables; `--profile` adds a cProfile of one Bus round trip grouped
into encode / decode / headers / nats-py / asyncio / the rest; `python -m benchmarks benchmarks.codec`
gives the same figures as report keys (`codec_*`).

- Codec table: µs per message for BookUpdate, SpotTick and Signal along each path: the desk's path before
  this module existed (`model_dump_json().encode()`, `TypeAdapter.validate_json`), pydantic's faster
  entry points, orjson with `model_construct` (trusted input only: it validates nothing), msgspec Structs
  (frozen, tagged) and msgspec validation feeding a pydantic event, and the desk's codec
  (`libs.common.codec`). msgspec is not a dependency of the desk: its rows appear when it is installed
  (`pip install msgspec`).
- Round trip: CPU µs per md.book message through a private nats-server, publisher and subscriber in this
  process as in `benchmarks.bus` — raw nats-py bytes without and with a `Nats-Msg-Id` header, the bus
  path of before (emulated here: header, `model_dump_json`, `TypeAdapter`) and `Bus.publish`/`subscribe`.

Timings are CPU time of this process (`time.thread_time` / `process_time`), best of many short repeats,
so that other work on the two shared cores moves them little; wall-clock throughput is `benchmarks.bus`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import nats
import orjson
from nats.aio.msg import Msg
from nats.js import api
from pydantic import BaseModel, TypeAdapter, ValidationError

from benchmarks.harness import private_nats
from libs.common import codec, subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.events import ANY_EVENT, BookUpdate, Signal, SpotTick, utcnow

ROUND_TRIP_N = 20_000
NUMBER, REPEAT = 1_000, 25  # calls per timing, timings per path (the best is kept)


def samples() -> dict[str, BaseModel]:
    """One realistic event of each hot kind (the book is the one benchmarks.bus sends)."""
    now = utcnow()
    return {
        "book": BookUpdate(id="b1", ts_event=now, mode=Mode.SIM, ticker="KXHIGHNY-26NOV22-B63.5",
                           series_ticker="KXHIGHNY", seq=1, yes_bids=((4_200, 1_300), (4_100, 500)),
                           no_bids=((5_600, 1_700),)),
        "spot": SpotTick(id="spot:coinbase:btc-usd:123456789", ts_event=now, mode=Mode.SIM, venue="coinbase",
                         symbol="BTC-USD", kind="trade", price=1_034_567_800, size=Decimal("0.01234567")),
        "signal": Signal(id="sig:weather:KXHIGHNY-26NOV22-B63.5:1", ts_event=now, mode=Mode.SIM, family="weather",
                         series_ticker="KXHIGHNY", event_ticker="KXHIGHNY-26NOV22", ticker="KXHIGHNY-26NOV22-B63.5",
                         model="wx_ens", model_version="1", p_model=0.62, p_market=0.55, action="buy_yes",
                         limit_price=5_600, edge_maker=600, edge_taker=250, confidence=0.8,
                         valid_until=now + timedelta(minutes=5), inputs_ref="run:2026-11-22T06"),
    }


@dataclass
class Path:
    """One way to encode and/or decode an event (None: not measured along this path)."""

    name: str
    encode: Callable[[BaseModel], Any] | None
    decode: Callable[[type[BaseModel]], Callable[[bytes], Any]] | None  # given the class, a bytes -> event


def _default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    raise TypeError


def pydantic_paths() -> list[Path]:
    """The paths that need nothing beyond the desk's dependencies."""
    return [
        Path("before: model_dump_json().encode() / TypeAdapter(cls).validate_json",
             lambda ev: ev.model_dump_json().encode(), lambda cls: TypeAdapter(cls).validate_json),
        Path("pydantic: __pydantic_serializer__.to_json / __pydantic_validator__.validate_json",
             lambda ev: type(ev).__pydantic_serializer__.to_json(ev),
             lambda cls: cls.__pydantic_validator__.validate_json),
        Path("pydantic: validate_json(strict=True)", None,
             lambda cls: lambda b: cls.__pydantic_validator__.validate_json(b, strict=True)),
        Path("pydantic: ANY_EVENT (discriminated union)", None, lambda cls: ANY_EVENT.validate_json),
        Path("orjson: loads + validate_python", None,
             lambda cls: lambda b: cls.__pydantic_validator__.validate_python(orjson.loads(b))),
        Path("orjson: dumps(__dict__) / loads + model_construct (trusted only: validates nothing)",
             lambda ev: orjson.dumps(ev.__dict__, default=_default, option=orjson.OPT_UTC_Z),
             lambda cls: lambda b: cls.model_construct(**orjson.loads(b))),
        Path("desk codec (libs.common.codec): encode / decoder(cls)", codec.encode, codec.decoder),
    ]


def msgspec_paths(events: dict[str, BaseModel]) -> list[Path]:
    """msgspec Structs mirroring the three hot events (frozen, tagged, unknown fields refused), and msgspec's
    validation feeding a pydantic event; empty when msgspec is not installed."""
    try:
        import msgspec
    except ImportError:
        return []
    aware = Annotated[datetime, msgspec.Meta(tz=True)]
    eid = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
    opts: dict[str, Any] = {"frozen": True, "kw_only": True, "forbid_unknown_fields": True, "tag_field": "type"}

    envelope = [("id", eid), ("ts_event", aware), ("ts_init", aware), ("mode", Mode)]
    # defstruct, not class statements: this module's annotations are strings, and these types are locals.
    book = msgspec.defstruct("BookS", [
        *envelope, ("ticker", str), ("series_ticker", str), ("seq", int),
        ("yes_bids", tuple[tuple[int, int], ...], ()), ("no_bids", tuple[tuple[int, int], ...], ()),
        ("depth", Literal["full", "top"], "full"), ("ts_exchange", aware | None, None)], tag="md.book", **opts)
    spot = msgspec.defstruct("SpotS", [
        *envelope, ("venue", str), ("symbol", str), ("kind", Literal["trade", "ticker"]), ("price", int),
        ("size", Decimal | None, None), ("bid", int | None, None), ("ask", int | None, None)], tag="md.spot", **opts)
    signal = msgspec.defstruct("SignalS", [
        *envelope, ("family", str), ("series_ticker", str), ("event_ticker", str), ("ticker", str), ("model", str),
        ("model_version", str), ("p_model", unit), ("p_market", unit),
        ("action", Literal["buy_yes", "buy_no", "none"]), ("limit_price", int | None, None),
        ("edge_maker", int | None, None), ("edge_taker", int | None, None), ("confidence", unit),
        ("valid_until", aware), ("inputs_ref", str | None, None), ("p_raw", unit | None, None)], tag="sig", **opts)

    structs: dict[type[BaseModel], Any] = {BookUpdate: book, SpotTick: spot, Signal: signal}
    as_struct = {id(ev): msgspec.json.decode(ev.to_json(), type=structs[type(ev)]) for ev in events.values()}
    enc = msgspec.json.Encoder()
    setattr_ = object.__setattr__

    def into_pydantic(cls: type[BaseModel]) -> Callable[[bytes], Any]:
        dec, tag, names = msgspec.json.Decoder(structs[cls]), cls.model_fields["type"].default, set(cls.model_fields)

        def decode(b: bytes) -> Any:
            d = msgspec.structs.asdict(dec.decode(b))
            d["type"] = tag
            ev = object.__new__(cls)  # what model_construct does, without its per-field Python loop
            setattr_(ev, "__dict__", d)
            setattr_(ev, "__pydantic_fields_set__", set(names))
            setattr_(ev, "__pydantic_extra__", None)
            setattr_(ev, "__pydantic_private__", None)
            return ev

        return decode

    return [
        Path("msgspec: Struct (frozen, tagged) encode / decode", lambda ev: enc.encode(as_struct[id(ev)]),
             lambda cls: msgspec.json.Decoder(structs[cls]).decode),
        Path("msgspec: validate into Struct, then a pydantic event from its fields", None, into_pydantic),
    ]


def _us(fn: Callable[[], Any]) -> float:
    return min(timeit.repeat(fn, number=NUMBER, repeat=REPEAT, timer=time.thread_time)) / NUMBER * 1e6


def codec_table() -> list[tuple[str, str, float | None, float | None]]:
    """(event, path, encode µs, decode µs) for every path and hot event (each decoder is checked to read back
    the event's id; only the validating paths give back equal, typed values)."""
    events = samples()
    rows: list[tuple[str, str, float | None, float | None]] = []
    for path in pydantic_paths() + msgspec_paths(events):
        for kind, ev in events.items():
            data = ev.to_json()
            enc = _us(lambda ev=ev, f=path.encode: f(ev)) if path.encode else None  # type: ignore[misc]
            dec = None
            if path.decode is not None:
                fn = path.decode(type(ev))
                back = fn(data)
                assert getattr(back, "id", None) == ev.id, (path.name, back)
                dec = _us(lambda fn=fn, data=data: fn(data))  # type: ignore[misc]
            rows.append((kind, path.name, enc, dec))
    return rows


# --- round trip --------------------------------------------------------------------------------

def _books(n: int) -> list[BookUpdate]:
    return [BookUpdate(id=f"b{i}", ts_event=utcnow(), mode=Mode.SIM, ticker="KXHIGHNY-26NOV22-B63.5",
                       series_ticker="KXHIGHNY", seq=i, yes_bids=((4_200, 1_300), (4_100, 500)),
                       no_bids=((5_600, 1_700),)) for i in range(n)]


class _Counter:
    def __init__(self, n: int) -> None:
        self.n, self.got, self.done = n, 0, asyncio.Event()

    def hit(self) -> None:
        self.got += 1
        if self.got == self.n:
            self.done.set()


async def _timed(send: Callable[[], Any], counter: _Counter, flush: Callable[[], Any],
                 profile: cProfile.Profile | None = None) -> float:
    if profile is not None:
        profile.enable()
    c0 = time.process_time()
    await send()
    await flush()
    await asyncio.wait_for(counter.done.wait(), 300)
    cpu = time.process_time() - c0
    if profile is not None:
        profile.disable()
    return cpu / counter.n * 1e6


async def raw_round_trip(url: str, n: int, *, header: bool) -> float:
    """CPU µs per message: nats-py bytes (the events' JSON, encoded beforehand), with or without a header."""
    pub, sub = await nats.connect(url), await nats.connect(url)
    counter = _Counter(n)

    async def cb(_: Msg) -> None:
        counter.hit()

    subject = subjects.scoped("sim", subjects.md_book("bench", "x"))
    await sub.subscribe(subject, cb=cb)
    await sub.flush()
    payloads = [(ev.id, ev.to_json()) for ev in _books(n)]

    async def send() -> None:
        for eid, data in payloads:
            await pub.publish(subject, data, headers={api.Header.MSG_ID: eid} if header else None)

    try:
        return await _timed(send, counter, pub.flush)
    finally:
        await pub.close()
        await sub.close()


async def bus_round_trip(url: str, n: int, *, before: bool = False, profile: cProfile.Profile | None = None) -> float:
    """CPU µs per message through `Bus.publish` / `Bus.subscribe`, or (`before`) the same two buses driven the
    way the bus did before `libs.common.codec`: a header on every publish, `model_dump_json`, `TypeAdapter`."""
    pub, sub = await Bus.connect(url, service="codec-pub"), await Bus.connect(url, service="codec-sub")
    counter = _Counter(n)
    subject = subjects.md_book("bench", "x")
    events = _books(n)
    if before:
        adapter = TypeAdapter(BookUpdate)

        async def cb(msg: Msg) -> None:
            try:
                event = adapter.validate_json(msg.data)
            except ValidationError:
                return
            if sub.is_foreign(event, msg.subject):
                return
            counter.hit()

        await sub.nc.subscribe(sub.wire(subject), cb=cb)

        async def send() -> None:
            for ev in events:
                await pub.nc.publish(pub.wire(subject), ev.model_dump_json().encode(),
                                     headers={api.Header.MSG_ID: ev.id})
    else:
        async def on_book(_: BookUpdate) -> None:
            counter.hit()

        await sub.subscribe(subject, BookUpdate, on_book)

        async def send() -> None:
            for ev in events:
                await pub.publish(subject, ev)
    await sub.nc.flush()
    try:
        return await _timed(send, counter, pub.nc.flush, profile)
    finally:
        await pub.close()
        await sub.close()


async def round_trips(n: int = ROUND_TRIP_N, rounds: int = 3) -> dict[str, float]:
    """The best of `rounds` interleaved runs of each round trip (CPU µs per message)."""
    best: dict[str, float] = {}
    async with private_nats() as url:
        for _ in range(rounds):
            for key, run in (("raw", lambda: raw_round_trip(url, n, header=False)),
                             ("raw_header", lambda: raw_round_trip(url, n, header=True)),
                             ("bus_before", lambda: bus_round_trip(url, n, before=True)),
                             ("bus", lambda: bus_round_trip(url, n))):
                us = await run()
                best[key] = min(best.get(key, us), us)
    return best


_GROUPS = (  # (group, predicate on (file, function)) — first match wins
    ("encode", lambda f, fn: fn in ("to_json", "dumps", "model_dump_json", "encode", "by_orjson", "by_pydantic")
     or "<method 'to_json'" in fn or "orjson.dumps" in fn),
    ("decode", lambda f, fn: "validate_json" in fn),
    ("headers", lambda f, fn: fn in ("_process_headers", "_parse_header_lines", "<genexpr>") and "nats" in f),
    ("nats-py", lambda f, fn: "/nats/" in f),
    ("asyncio", lambda f, fn: "asyncio" in f),
)


def profile_breakdown(profile: cProfile.Profile) -> dict[str, float]:
    """Share of own (not cumulative) profiled time per group; a builtin (`re.match`, `len`, a dataclass'
    `__init__`) not named by a group counts where its heaviest caller does. cProfile inflates Python frames
    more than C ones, so read the shares, not the seconds."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def group(key: tuple[str, int, str], depth: int = 0) -> str:
        file, _line, fn = key
        named = next((g for g, match in _GROUPS if match(file, fn)), None)
        if named is not None:
            return named
        callers = stats[key][4] if key in stats else {}
        if file in ("~", "<string>") and callers and depth < 3:
            return group(max(callers, key=lambda c: callers[c][2]), depth + 1)
        return "bus, callbacks and the rest"

    totals: dict[str, float] = {}
    for key, (_cc, _nc, tt, _ct, _callers) in stats.items():
        g = group(key)
        totals[g] = totals.get(g, 0.0) + tt
    whole = sum(totals.values()) or 1.0
    return {g: t / whole for g, t in sorted(totals.items(), key=lambda kv: -kv[1])}


async def run() -> dict[str, float | int]:
    """Report keys for `python -m benchmarks benchmarks.codec`."""
    out: dict[str, float | int] = {}
    short = {"before": "before", "pydantic: __": "pydantic", "desk codec": "desk", "msgspec: Struct": "msgspec",
             "msgspec: validate": "msgspec_to_pydantic", "orjson: dumps": "orjson_construct"}
    for kind, name, enc, dec in codec_table():
        tag = next((v for k, v in short.items() if name.startswith(k)), None)
        if tag is None:
            continue
        if enc is not None:
            out[f"codec_{kind}_encode_us_{tag}"] = round(enc, 2)
        if dec is not None:
            out[f"codec_{kind}_decode_us_{tag}"] = round(dec, 2)
    for key, us in (await round_trips()).items():
        out[f"codec_round_trip_cpu_us_{key}"] = round(us, 2)
    out["codec_round_trip_n"] = ROUND_TRIP_N
    return out


async def _main(args: argparse.Namespace) -> None:
    print(f"{'event':7} {'encode µs':>9} {'decode µs':>9}  path")
    for kind, name, enc, dec in codec_table():
        print(f"{kind:7} {'' if enc is None else f'{enc:9.2f}':>9} {'' if dec is None else f'{dec:9.2f}':>9}  {name}")
    rt = await round_trips(args.n, args.rounds)
    rows = {"raw": "nats-py, bytes, no header (transport)", "raw_header": "nats-py, bytes, Nats-Msg-Id header",
            "bus_before": "bus path before (header + model_dump_json + TypeAdapter)",
            "bus": "Bus.publish / Bus.subscribe now"}
    print(f"\nround trip, CPU µs per md.book message (best of {args.rounds} × {args.n}):")
    for key, label in rows.items():
        print(f"  {rt[key]:6.2f}  ({1e6 / rt[key]:8,.0f} msgs per CPU-second)  {label}")
    print(f"  header costs {rt['raw_header'] - rt['raw']:.2f} µs per message over bare transport")
    if args.profile:
        async with private_nats() as url:
            for before in (True, False):
                prof = cProfile.Profile()
                await bus_round_trip(url, args.n, before=before, profile=prof)
                print(f"\nprofile of one {'before' if before else 'current'} bus round trip (share of own time):")
                for group, share in profile_breakdown(prof).items():
                    print(f"  {share:6.1%}  {group}")


if __name__ == "__main__":
    from libs.common.logs import configure_logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="also profile a round trip with cProfile")
    parser.add_argument("--n", type=int, default=ROUND_TRIP_N, help="messages per round trip")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per round trip (best kept)")
    configure_logging("bench", "WARNING", "console")
    asyncio.run(_main(parser.parse_args()))
