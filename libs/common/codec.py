"""The wire codec of bus events: one encoder and one decoder per event type, chosen once and cached.

Encoding. A validated, frozen event whose every field is a plain JSON type (str, int, float, bool, None,
datetime, date, Decimal, a str/int enum, a Literal, and tuples, unions and str-keyed dicts of those: the
hot `BookUpdate`, `SpotTick` and `Signal`, and most others) is written by orjson straight from its field
dict, with UTC as `Z` and Decimals as strings: the bytes pydantic would write (tests/unit/common/
test_codec.py compares them), at about a quarter of the cost. Any other model (nested models, `Any`,
custom serializers or aliases) goes through pydantic's own serializer, straight to bytes. If orjson
refuses a value (an int beyond 64 bits, a value that `model_copy(update=...)` put in unvalidated), that
one event falls back to pydantic too.

Decoding stays pydantic's validation (`validate_json` of the target's core validator, without
`TypeAdapter`'s per-call Python wrapper): malformed, extra, wrong-typed, naive-datetime or out-of-range
fields raise `pydantic.ValidationError` exactly as before, so the bus's skip / dead-letter paths and every
call site (`model_copy`, `model_dump`, validation when a service builds an event) are unchanged.

Why not msgspec. Measured side by side (benchmarks/codec.py; CPU µs per BookUpdate on the 2-core bench
box while it was busy, so read the ratios): encode 6.5 with `model_dump_json().encode()`, 4.9 with
pydantic's serializer, 1.9 here (orjson over the fields), 1.1 from a msgspec Struct; decode 6.9 through
`TypeAdapter`, 6.2 here (the bare validator), 2.3 into a msgspec Struct, but 5.5 once a pydantic event is
built from msgspec's validated fields. A bus_core round trip went from 52 to 30 µs (nats-py alone: 19):
13 of the 22 µs saved are the header the bus no longer puts on core publishes (see `bus`), most of the
rest is this encoder. Making the hot events msgspec Structs would save about 4 µs more per round trip, and give up
validation when a service builds an event (a Struct's `__init__` checks nothing: a naive timestamp or a
p_model of 1.5 would go out), `model_copy`/`model_dump`/`model_validate*` at their call sites, the one
discriminated union (`ANY_EVENT`) over every event, and pydantic's `ValidationError` in the bus; and it
would add a dependency. So the events stay pydantic models.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, TypeAdapter
from pydantic.functional_serializers import PlainSerializer, WrapSerializer

Encoder = Callable[[BaseModel], bytes]
Decoder = Callable[[bytes | str], Any]

_PLAIN_TYPES = (str, int, float, bool, type(None), datetime, date, Decimal, AwareDatetime)
_OPTIONS = orjson.OPT_UTC_Z  # pydantic writes a UTC offset as `Z`
_encoders: dict[type[BaseModel], Encoder] = {}
_decoders: dict[Any, Decoder] = {}


def _decimal_as_str(value: Any) -> Any:
    """orjson's hook for what it has no native form for: a Decimal is a JSON string, as pydantic writes it."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a plain JSON value")


def _plain(tp: Any) -> bool:
    """True when orjson writes values of annotation `tp` exactly as pydantic's JSON serializer does."""
    if tp in _PLAIN_TYPES:
        return True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return issubclass(tp, str | int)  # orjson and pydantic both write the value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return all(isinstance(a, str | int | bool) or a is None for a in args)
    if origin is typing.Annotated:
        return not any(isinstance(m, PlainSerializer | WrapSerializer) for m in args[1:]) and _plain(args[0])
    if origin in (typing.Union, types.UnionType, tuple, list):
        return all(a is Ellipsis or _plain(a) for a in args)
    if origin is dict:
        return len(args) == 2 and args[0] is str and _plain(args[1])
    return False


def is_plain(cls: type[BaseModel]) -> bool:
    """True when every field of `cls` is a plain JSON type and nothing customises how pydantic writes it."""
    decorators = cls.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or cls.model_computed_fields:
        return False
    if any(k.startswith("ser_") or k in ("json_encoders", "serialize_by_alias") for k in cls.model_config):
        return False
    for f in cls.model_fields.values():
        if f.alias or f.serialization_alias or f.exclude or getattr(f, "exclude_if", None) is not None:
            return False
        if any(isinstance(m, PlainSerializer | WrapSerializer) for m in f.metadata) or not _plain(f.annotation):
            return False
    return True


def encoder(cls: type[BaseModel]) -> Encoder:
    """The cached wire encoder (UTF-8 JSON bytes) of model class `cls`."""
    enc = _encoders.get(cls)
    if enc is None:
        enc = _encoders[cls] = _build_encoder(cls)
    return enc


def _build_encoder(cls: type[BaseModel]) -> Encoder:
    def by_pydantic(event: BaseModel) -> bytes:
        return cls.__pydantic_serializer__.to_json(event)

    if not is_plain(cls):
        return by_pydantic
    dumps = orjson.dumps

    def by_orjson(event: BaseModel) -> bytes:
        try:
            return dumps(event.__dict__, default=_decimal_as_str, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return by_pydantic(event)

    return by_orjson


def encode(event: BaseModel) -> bytes:
    """`event` in its wire form (UTF-8 JSON bytes)."""
    cls = type(event)
    enc = _encoders.get(cls) or encoder(cls)
    return enc(event)


def decoder(target: type[Any] | TypeAdapter[Any]) -> Decoder:
    """A function from wire bytes to a validated `target` (a model class, any type, or a TypeAdapter such as
    `events.ANY_EVENT`); it raises `pydantic.ValidationError` on anything malformed. Cached per type."""
    if isinstance(target, TypeAdapter):
        return target.validator.validate_json
    try:
        dec = _decoders.get(target)
    except TypeError:  # an unhashable annotation (e.g. Annotated with a Field): build, don't cache
        return TypeAdapter(target).validator.validate_json
    if dec is None:
        dec = _decoders[target] = TypeAdapter(target).validator.validate_json
    return dec
